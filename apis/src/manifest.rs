//! Decodes manifests (multi-document YAML or JSON) into typed, defaulted, validated objects.
//!
//! Every problem in every document is reported, each naming the file, the document, the line
//! and the field path, because `dctl apply` applies nothing while any error remains.

mod document;
mod outline;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::resource::{AnyObject, Kind, Resource};
use document::DocumentDecoder;
use outline::Outline;

/// One object read from a manifest, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file name as the user gave it, or `<stdin>`.
    pub source: String,
    /// 1-based position of the YAML document in the file (every `---` section counts, empty
    /// ones included); the items of a `kind: List` share their list's index.
    pub index: usize,
    /// The line the object starts on.
    pub line: usize,
    /// Defaulted and valid.
    pub object: AnyObject,
}

/// One problem in a manifest.
///
/// Displays as `manifests/web.yaml: document 3 (line 41): spec.replicas: must be at least 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub source: String,
    /// 1-based document index; 0 when the problem is the file itself (unreadable, empty).
    pub document: usize,
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// The field path, `spec.template.ports[0].containerPort`.
    pub path: Option<String>,
    pub message: String,
}

impl ManifestError {
    /// A problem with a whole file or path rather than a document in it.
    pub fn file(source: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError {
            source: source.into(),
            document: 0,
            line: None,
            column: None,
            path: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        match (self.document, self.line) {
            (0, Some(line)) => write!(f, ": line {line}")?,
            (0, None) => {}
            (document, Some(line)) => write!(f, ": document {document} (line {line})")?,
            (document, None) => write!(f, ": document {document}")?,
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Decodes the manifests in `text`, read from `source` (a file name, or `<stdin>`).
///
/// YAML streams of `---`-separated documents and JSON (one object) are both accepted; a
/// document of `kind: List` contributes each of its `items`. Empty and comment-only
/// documents are skipped. Each object is checked for its `apiVersion` and `kind`, decoded
/// strictly into its kind's type (unknown fields, wrong types and unknown enum values are
/// errors), defaulted, and validated.
///
/// # Errors
/// Every problem of every document, each with its document, line and field path; no
/// document is returned when any has a problem.
pub fn decode(source: &str, text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let outline = Outline::parse(text);
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for doc in outline.documents.iter().filter(|d| !d.is_empty()) {
        let decoder = DocumentDecoder { source, text, doc };
        match decoder.decode() {
            Ok(objects) => documents.extend(objects),
            Err(errs) => errors.extend(errs),
        }
    }
    if let Some(syntax) = &outline.syntax_error {
        errors.push(ManifestError {
            source: source.to_string(),
            document: syntax.document,
            line: Some(syntax.line),
            column: Some(syntax.col + 1),
            path: None,
            message: format!("invalid YAML: {}", syntax.message),
        });
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(errors)
    }
}

/// Objects defined more than once (same kind, namespace and name) across `docs`; each
/// repetition is an error pointing back at the first definition.
pub fn check_duplicates(docs: &[Document]) -> Vec<ManifestError> {
    let mut first: HashMap<(Kind, &str, &str), &Document> = HashMap::new();
    let mut errors = Vec::new();
    for doc in docs {
        let meta = doc.object.meta();
        let key = (doc.object.kind(), meta.namespace(), meta.name.as_str());
        match first.get(&key) {
            None => {
                first.insert(key, doc);
            }
            Some(earlier) => {
                let name = match meta.namespace() {
                    "" => meta.name.clone(),
                    namespace => format!("{namespace}/{}", meta.name),
                };
                errors.push(ManifestError {
                    source: doc.source.clone(),
                    document: doc.index,
                    line: Some(doc.line),
                    column: None,
                    path: Some("metadata.name".to_string()),
                    message: format!(
                        "{} {name} is defined twice: first in {} document {} (line {})",
                        key.0, earlier.source, earlier.index, earlier.line
                    ),
                });
            }
        }
    }
    errors
}

/// The object as YAML, for `dctl get -o yaml`.
///
/// # Panics
/// Only if `T`'s `Serialize` fails, as a map with non-string keys would; no dctl type does.
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("dctl objects always serialize to YAML")
}

/// The object as indented JSON, for `dctl get -o json`.
///
/// # Panics
/// Only if `T`'s `Serialize` fails, as a map with non-string keys would; no dctl type does.
pub fn to_json_pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("dctl objects always serialize to JSON")
}

/// Deserializes YAML text into the typed object of `kind`: the one place a document becomes
/// a typed value, shared by `decode` and the round-trip tests.
fn deserialize_kind(kind: Kind, yaml: &str) -> Result<AnyObject, serde_saphyr::Error> {
    fn typed<K: Resource>(yaml: &str) -> Result<K, serde_saphyr::Error> {
        // Snippets are rendered by us from the path and line; building them is wasted work.
        serde_saphyr::from_str_with_options(yaml, serde_saphyr::options! { with_snippet: false })
    }
    Ok(match kind {
        Kind::Service => AnyObject::Service(typed(yaml)?),
        Kind::Task => AnyObject::Task(typed(yaml)?),
        Kind::Node => AnyObject::Node(typed(yaml)?),
        Kind::Network => AnyObject::Network(typed(yaml)?),
        Kind::Event => AnyObject::Event(typed(yaml)?),
        Kind::GitSync => AnyObject::GitSync(typed(yaml)?),
        Kind::Endpoints => AnyObject::Endpoints(typed(yaml)?),
        Kind::ServiceRevision => AnyObject::ServiceRevision(typed(yaml)?),
    })
}
