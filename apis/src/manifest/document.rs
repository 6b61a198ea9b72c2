//! Decodes one YAML document: its header, its typed object, and errors placed on fields.

use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::outline::{
    format_path, parse_path, DocumentOutline, Node, Prefer, Role, Segment, Shape,
};
use super::{deserialize_kind, Document, ManifestError};
use crate::resource::{Kind, API_VERSION};

/// Decodes one YAML document of a file.
pub(super) struct DocumentDecoder<'a> {
    pub source: &'a str,
    pub text: &'a str,
    pub doc: &'a DocumentOutline,
}

impl DocumentDecoder<'_> {
    pub fn decode(&self) -> Result<Vec<Document>, Vec<ManifestError>> {
        let root = self.doc.root().expect("non-empty documents have a root");
        if root.shape != Shape::Mapping {
            return Err(vec![self.error_at(
                root,
                None,
                "a manifest must be an object with apiVersion, kind and metadata",
            )]);
        }
        let kind_node = self.doc.value(&[Segment::Key("kind".into())]);
        if scalar(kind_node) != Some("List") {
            return self.decode_object(root).map(|object| vec![object]);
        }
        // A `kind: List` (as `kubectl get -o json` writes) holds its objects in `items`.
        let items_path = [Segment::Key("items".into())];
        let Some(items) = self.doc.value(&items_path) else {
            return Err(vec![self.error_at(
                root,
                Some("items".into()),
                "required field is missing",
            )]);
        };
        if items.shape != Shape::Sequence {
            return Err(vec![self.error_at(
                items,
                Some("items".into()),
                "must be a list",
            )]);
        }
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for item in self.children(items) {
            match self.decode_object(item) {
                Ok(object) => objects.push(object),
                Err(errs) => errors.extend(errs),
            }
        }
        if errors.is_empty() {
            Ok(objects)
        } else {
            Err(errors)
        }
    }

    /// The direct elements of a sequence node.
    fn children<'n>(&'n self, parent: &'n Node) -> impl Iterator<Item = &'n Node> + 'n {
        let depth = parent.path.len() + 1;
        self.doc.nodes.iter().filter(move |n| {
            n.path.len() == depth
                && n.path.starts_with(&parent.path)
                && matches!(n.path.last(), Some(Segment::Index(_)))
        })
    }

    /// Checks the header of the object at `node`, then decodes, defaults and validates it.
    fn decode_object(&self, node: &Node) -> Result<Document, Vec<ManifestError>> {
        let kind = self.check_header(node)?;
        // The object's own text, indented as in the file so block indentation still parses;
        // positions in it are the file's except for the line count, restored in `serde_error`.
        let yaml = format!(
            "{}{}",
            " ".repeat(node.start.col),
            // A closed node always ends after it starts; the fallback only avoids a panic.
            self.text
                .get(node.start.byte..node.end.byte)
                .unwrap_or(&self.text[node.start.byte..])
        );
        let mut object =
            deserialize_kind(kind, &yaml).map_err(|e| vec![self.serde_error(node, &e)])?;
        object.apply_defaults();
        let errors: Vec<_> = object
            .validate()
            .into_iter()
            .map(|e| self.error_for_path(node, e.path.as_str(), &e.message))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Document {
            source: self.source.to_string(),
            index: self.doc.index,
            line: node.start.line,
            object,
        })
    }

    /// The kind named by the object's `apiVersion` and `kind`, which are checked first so a
    /// wrong header is reported as such rather than as a field error of some other kind.
    fn check_header(&self, node: &Node) -> Result<Kind, Vec<ManifestError>> {
        let field = |name: &str| {
            let mut path = node.path.clone();
            path.push(Segment::Key(name.to_string()));
            (self.doc.value(&path), format_path(&path))
        };
        let mut errors = Vec::new();
        let (version_node, version_path) = field("apiVersion");
        match (version_node, scalar(version_node)) {
            (None, _) => errors.push(self.error_at(
                node,
                Some(version_path),
                format!("required field is missing (this API serves {API_VERSION})"),
            )),
            (Some(_), Some(API_VERSION)) => {}
            (Some(at), version) => errors.push(self.error_at(
                at,
                Some(version_path),
                match version {
                    Some(v) => {
                        format!("unsupported apiVersion {v:?}, this API serves {API_VERSION}")
                    }
                    None => format!("must be a string: {API_VERSION}"),
                },
            )),
        }
        let known = Kind::ALL.map(Kind::as_str).join(", ");
        let (kind_node, kind_path) = field("kind");
        let kind = match (kind_node, scalar(kind_node)) {
            (None, _) => {
                errors.push(self.error_at(
                    node,
                    Some(kind_path),
                    format!("required field is missing, expected one of: {known}"),
                ));
                None
            }
            (Some(at), None) => {
                errors.push(self.error_at(
                    at,
                    Some(kind_path),
                    format!("must be a string, one of: {known}"),
                ));
                None
            }
            (Some(at), Some(name)) => {
                let kind = Kind::ALL.into_iter().find(|k| k.as_str() == name);
                if kind.is_none() {
                    // `kind` is exact in a manifest, unlike on the command line; say so
                    // when the user wrote a name the CLI would have accepted.
                    let hint = Kind::from_name(name)
                        .map(|k| format!(" (did you mean {k}?)"))
                        .unwrap_or_default();
                    errors.push(self.error_at(
                        at,
                        Some(kind_path),
                        format!("unknown kind {name:?}{hint}, expected one of: {known}"),
                    ));
                }
                kind
            }
        };
        match kind {
            Some(kind) if errors.is_empty() => Ok(kind),
            _ => Err(errors),
        }
    }

    /// A deserialization error of the object at `node`, with its position in the file and
    /// the path of the field it points at.
    fn serde_error(&self, node: &Node, err: &serde_saphyr::Error) -> ManifestError {
        use serde_saphyr::Error as E;
        let err = err.without_snippet();
        let position = err.location().map(|l| {
            let line = node.start.line + l.line() as usize - 1;
            (line, l.column() as usize)
        });
        let prefer = match err {
            E::SerdeUnknownField { .. } | E::DuplicateMappingKey { .. } => Prefer::Key,
            _ => Prefer::Value,
        };
        let found =
            position.and_then(|(line, col)| self.doc.node_at(line, col.saturating_sub(1), prefer));
        let mut path = found.map(|n| n.path.clone());
        let mut position = position;
        if let (E::SerdeMissingField { .. }, Some(n)) = (err, found) {
            // The error points somewhere inside the mapping that lacks the field (its first
            // or its last key); report the mapping itself, from its start.
            let mapping = if n.shape == Shape::Mapping && n.role == Role::Value {
                Some(n)
            } else {
                self.doc.value(&n.path[..n.path.len().saturating_sub(1)])
            };
            if let Some(mapping) = mapping {
                path = Some(mapping.path.clone());
                position = Some((mapping.start.line, mapping.start.col + 1));
            }
        }
        let value = scalar(found);
        let found_shape = || match found.map(|n| &n.shape) {
            Some(Shape::Scalar { text, .. }) => format!("{text:?}"),
            Some(Shape::Mapping) => "a mapping".to_string(),
            Some(Shape::Sequence) => "a list".to_string(),
            Some(Shape::Alias) | None => "something else".to_string(),
        };
        let message = match err {
            E::SerdeUnknownField {
                field, expected, ..
            } => {
                let named =
                    path.as_ref().and_then(|p| p.last()) == Some(&Segment::Key(field.clone()));
                let mut m = if named {
                    "unknown field".to_string()
                } else {
                    format!("unknown field {field:?}")
                };
                if !expected.is_empty() {
                    m.push_str(&format!(", expected one of: {}", expected.join(", ")));
                }
                m
            }
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => {
                format!(
                    "unknown value {variant:?}, expected one of: {}",
                    expected.join(", ")
                )
            }
            E::SerdeMissingField { field, .. } => {
                // The error points at the mapping that lacks the field.
                if let Some(p) = path.as_mut() {
                    p.push(Segment::Key((*field).to_string()));
                }
                "required field is missing".to_string()
            }
            E::SerdeInvalidType {
                unexpected,
                expected,
                ..
            } => {
                format!("expected {expected}, found {unexpected}")
            }
            E::SerdeInvalidValue {
                unexpected,
                expected,
                ..
            } => {
                format!("invalid value {unexpected}, expected {expected}")
            }
            E::InvalidScalar { ty, .. } => match value {
                Some(v) => format!("invalid value {v:?}, expected {}", describe_type(ty)),
                None => format!("expected {}", describe_type(ty)),
            },
            E::DuplicateMappingKey { .. } => "field is set twice".to_string(),
            E::Unexpected { expected, .. } => {
                let expected = match *expected {
                    "mapping start" => "a mapping",
                    "sequence start" => "a list",
                    "string scalar" => "a string",
                    other => other,
                };
                format!("expected {expected}, found {}", found_shape())
            }
            // A custom error of a field's own parser (a timestamp, a quantity): name the
            // value unless the parser already did.
            E::Message { msg, .. } => match value {
                Some(v) if !msg.contains(v) => format!("invalid value {v:?}: {msg}"),
                _ => msg.clone(),
            },
            other => UserMessageFormatter.format_message(other).into_owned(),
        };
        ManifestError {
            source: self.source.to_string(),
            document: self.doc.index,
            line: Some(position.map_or(node.start.line, |(line, _)| line)),
            column: position.map(|(_, col)| col),
            path: path.map(|p| format_path(&p)).filter(|p| !p.is_empty()),
            message,
        }
    }

    /// A validation error at `path` (relative to the object at `object`), placed on the
    /// field's line when the user wrote the field, else on its nearest written ancestor.
    fn error_for_path(&self, object: &Node, path: &str, message: &str) -> ManifestError {
        let mut segments = object.path.clone();
        segments.extend(parse_path(path));
        let (line, column) = match self.doc.locate(&segments) {
            Some((node, true)) => (node.start.line, Some(node.start.col + 1)),
            Some((node, false)) => (node.start.line, None),
            None => (object.start.line, None),
        };
        // The validator's own spelling of the path, behind the `items[i]` of a List item.
        let path = match format_path(&object.path) {
            prefix if prefix.is_empty() => path.to_string(),
            prefix => format!("{prefix}.{path}"),
        };
        ManifestError {
            source: self.source.to_string(),
            document: self.doc.index,
            line: Some(line),
            column,
            path: Some(path),
            message: message.to_string(),
        }
    }

    fn error_at(
        &self,
        node: &Node,
        path: Option<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        ManifestError {
            source: self.source.to_string(),
            document: self.doc.index,
            line: Some(node.start.line),
            column: Some(node.start.col + 1),
            path,
            message: message.into(),
        }
    }
}

/// A scalar node's text.
fn scalar(node: Option<&Node>) -> Option<&str> {
    match node.map(|n| &n.shape) {
        Some(Shape::Scalar { text, .. }) => Some(text.as_str()),
        _ => None,
    }
}

/// What a Rust primitive accepts, in a manifest author's words.
fn describe_type(ty: &str) -> String {
    let range = |min: i128, max: i128| format!("an integer from {min} to {max}");
    match ty {
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "u64" | "usize" => "a non-negative integer".to_string(),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" | "i128" | "u128" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "bool" => "true or false".to_string(),
        other => other.to_string(),
    }
}
