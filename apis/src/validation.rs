//! Field paths and the errors validation returns.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::meta::ObjectMeta;
use crate::resource::Kind;

/// A path into an object, as users see it: `spec.template.ports[0].containerPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// `spec` → `spec.template`
    #[must_use]
    pub fn child(&self, field: &str) -> Self {
        FieldPath(format!("{}.{}", self.0, field))
    }

    /// `spec.template.ports` → `spec.template.ports[2]`
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }

    /// `metadata.labels` → `metadata.labels[app]`
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One validation problem: `spec.template.probes.liveness.successThreshold: must be 1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl FieldError {
    pub fn new(path: &FieldPath, message: impl Into<String>) -> Self {
        FieldError {
            path: path.clone(),
            message: message.into(),
        }
    }
}

/// The most bytes an object may take as stored JSON. etcd refuses a request over 1.5 MiB
/// (its `--max-request-bytes`), and a Service's template goes into each of its Tasks,
/// which the store writes twice in one transaction (the Task, and its node's assignment):
/// half a MiB leaves room for that, and for status. Checked with the rest of a manifest,
/// so that an object etcd would refuse fails before anything is written.
pub const MAX_OBJECT_BYTES: usize = 512 * 1024;

/// The most bytes of annotation keys and values one object may have, as in Kubernetes.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// An error when `object` is larger than [`MAX_OBJECT_BYTES`] as JSON, placed at the
/// field that holds most of it (`spec.template.env[0].value`), so the user sees what to cut.
pub fn check_object_size(object: &impl Serialize) -> Option<FieldError> {
    let total = json_len(object);
    if total <= MAX_OBJECT_BYTES {
        return None;
    }
    let value = serde_json::to_value(object).ok()?;
    // Down into the field holding more than half of the bytes, while there is one.
    let (mut path, mut at, mut size) = (None::<FieldPath>, &value, total);
    loop {
        let children: Vec<(FieldPath, &Value)> = match at {
            Value::Object(fields) => fields
                .iter()
                .map(|(name, child)| {
                    let step = match &path {
                        Some(path) => path.child(name),
                        None => FieldPath::new(name),
                    };
                    (step, child)
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, child)| Some((path.as_ref()?.index(i), child)))
                .collect(),
            _ => Vec::new(),
        };
        let largest = children
            .into_iter()
            .map(|(step, child)| (json_len(child), step, child))
            .max_by_key(|(len, ..)| *len);
        match largest {
            Some((len, step, child)) if len * 2 > total => {
                (path, at, size) = (Some(step), child, len);
            }
            _ => break,
        }
    }
    let message = format!(
        "the object is {total} bytes as JSON, more than the {MAX_OBJECT_BYTES} an object may \
         have (etcd refuses requests over 1.5 MiB); {size} of them are here"
    );
    Some(FieldError::new(
        &path.unwrap_or_else(|| FieldPath::new("metadata")),
        message,
    ))
}

/// How many bytes `value` takes as compact JSON, without building the text.
fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail; a value that cannot serialize counts as empty.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// The metadata rules shared by every kind: the name, the namespace, label and annotation
/// keys, label values, the annotations' total size.
///
/// Names are DNS-1123 labels, as they become DNS names and container names; Tasks, Nodes
/// and Events may use dotted subdomains (`web.1.k3x9`, `host.example.com`,
/// `web.17a2b3c4`), as in Kubernetes.
pub fn validate_meta(meta: &ObjectMeta, kind: Kind) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let path = FieldPath::new("metadata");
    let name_path = path.child("name");
    if meta.name.is_empty() {
        errors.push(FieldError::new(&name_path, "required"));
    } else {
        let checked = match kind {
            Kind::Task | Kind::Node | Kind::Event => check_dns1123_subdomain(&meta.name),
            _ => check_dns1123_label(&meta.name),
        };
        if let Err(message) = checked {
            errors.push(FieldError::new(&name_path, message));
        }
    }
    // An un-defaulted object may have no namespace yet; defaulting fills it.
    match (&meta.namespace, kind.namespaced()) {
        (Some(namespace), true) if !namespace.is_empty() => {
            if let Err(message) = check_dns1123_label(namespace) {
                errors.push(FieldError::new(&path.child("namespace"), message));
            }
        }
        (Some(namespace), false) if !namespace.is_empty() => errors.push(FieldError::new(
            &path.child("namespace"),
            format!("must be empty: {kind} is cluster-scoped"),
        )),
        _ => {}
    }
    errors.extend(validate_labels(&meta.labels, &path.child("labels")));
    for key in meta.annotations.keys() {
        if let Err(message) = check_label_key(key) {
            errors.push(FieldError::new(
                &path.child("annotations").key(key),
                message,
            ));
        }
    }
    let annotation_bytes: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        errors.push(FieldError::new(
            &path.child("annotations"),
            format!(
                "too long: {annotation_bytes} bytes of keys and values, at most \
                 {MAX_ANNOTATION_BYTES} (256 KiB, as in Kubernetes)"
            ),
        ));
    }
    errors
}

/// Label keys and values under `path` (`metadata.labels`, `spec.labels`).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels {
        if let Err(message) = check_label_key(key) {
            errors.push(FieldError::new(&path.key(key), message));
        }
        if let Err(message) = check_label_value(value) {
            errors.push(FieldError::new(&path.key(key), message));
        }
    }
    errors
}

/// A lowercase RFC 1123 label: `a-z`, `0-9`, `-`, starting and ending alphanumeric, ≤ 63.
///
/// # Errors
/// A message naming the value, to put after its field path.
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.len() <= 63 && is_dns1123_label(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {value:?}: must be a lowercase RFC 1123 label (a-z, 0-9 and '-', \
             starting and ending with a letter or digit, at most 63 characters)"
        ))
    }
}

/// A lowercase RFC 1123 subdomain: labels joined by `.`, ≤ 253 characters in all.
///
/// # Errors
/// A message naming the value, to put after its field path.
pub fn check_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.len() <= 253 && value.split('.').all(is_dns1123_label) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {value:?}: must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' \
             and '.', each part starting and ending with a letter or digit, at most 253 \
             characters)"
        ))
    }
}

/// A Kubernetes label key: an optional DNS-1123 subdomain prefix and `/`, then a name of
/// at most 63 `[A-Za-z0-9-_.]` starting and ending alphanumeric.
///
/// # Errors
/// A message naming the key, to put after its field path.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || check_dns1123_subdomain(prefix).is_err() {
            return Err(format!(
                "invalid label key {key:?}: the prefix before '/' must be a lowercase RFC 1123 \
                 subdomain such as example.com"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !is_label_text(name) {
        return Err(format!(
            "invalid label key {key:?}: the name must be 1 to 63 characters of a-z, A-Z, 0-9, \
             '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or at most 63 `[A-Za-z0-9-_.]` starting and ending
/// alphanumeric.
///
/// # Errors
/// A message naming the value, to put after its field path.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && is_label_text(value)) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be empty or at most 63 characters of a-z, \
             A-Z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// A port name as Kubernetes accepts it (IANA service name): at most 15 characters of
/// `a-z`, `0-9` and `-`, with a letter, no `--`, starting and ending alphanumeric.
///
/// # Errors
/// A message naming the value, to put after its field path.
pub fn check_port_name(value: &str) -> Result<(), String> {
    let valid = value.len() <= 15
        && is_dns1123_label(value)
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && !value.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {value:?}: must be at most 15 characters of a-z, 0-9 and '-', \
             with at least one letter, no '--', starting and ending with a letter or digit"
        ))
    }
}

fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    value.len() <= 63
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_label_text(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn messages(errors: Vec<FieldError>) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    const LABEL: &str = "must be a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and \
                         ending with a letter or digit, at most 63 characters)";
    const SUBDOMAIN: &str = "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', \
                             each part starting and ending with a letter or digit, at most 253 \
                             characters)";

    #[test]
    fn validates_metadata() {
        let long = "a".repeat(64);
        let cases: Vec<(ObjectMeta, Kind, Vec<String>)> = vec![
            (
                meta(Some("demo"), "web", &[("app", "web")]),
                Kind::Service,
                vec![],
            ),
            (meta(None, "web", &[]), Kind::Service, vec![]),
            (meta(None, "web.1.x7", &[]), Kind::Task, vec![]),
            (meta(None, "host-1.example.com", &[]), Kind::Node, vec![]),
            (
                meta(Some("default"), "", &[]),
                Kind::Service,
                vec!["metadata.name: required".into()],
            ),
            (
                meta(Some("default"), "web.1", &[]),
                Kind::Service,
                vec![format!("metadata.name: invalid name \"web.1\": {LABEL}")],
            ),
            (
                meta(Some("default"), &long, &[]),
                Kind::Network,
                vec![format!("metadata.name: invalid name \"{long}\": {LABEL}")],
            ),
            (
                meta(Some("default"), "Web.1.", &[]),
                Kind::Task,
                vec![format!(
                    "metadata.name: invalid name \"Web.1.\": {SUBDOMAIN}"
                )],
            ),
            (
                meta(Some("demo"), "h1", &[]),
                Kind::Node,
                vec!["metadata.namespace: must be empty: Node is cluster-scoped".into()],
            ),
            (
                // Every problem is reported, not only the first.
                meta(
                    Some("Demo"),
                    "-web",
                    &[("bad key", "ok"), ("tier", "front end")],
                ),
                Kind::Service,
                vec![
                    format!("metadata.name: invalid name \"-web\": {LABEL}"),
                    format!("metadata.namespace: invalid name \"Demo\": {LABEL}"),
                    "metadata.labels[bad key]: invalid label key \"bad key\": the name must be \
                     1 to 63 characters of a-z, A-Z, 0-9, '-', '_' and '.', starting and ending \
                     with a letter or digit"
                        .into(),
                    "metadata.labels[tier]: invalid label value \"front end\": must be empty or \
                     at most 63 characters of a-z, A-Z, 0-9, '-', '_' and '.', starting and \
                     ending with a letter or digit"
                        .into(),
                ],
            ),
        ];
        for (meta, kind, expected) in cases {
            assert_eq!(messages(validate_meta(&meta, kind)), expected, "{meta:?}");
        }
    }

    #[test]
    fn checks_label_keys_and_values() {
        let long = "a".repeat(64);
        for key in [
            "app",
            "app.kubernetes.io/name",
            "A_b-c.D",
            "x/y",
            "dctl.io/Tier_1",
        ] {
            assert_eq!(check_label_key(key), Ok(()), "{key}");
        }
        for key in [
            "",
            "/app",
            "Example.com/app",
            "a/",
            "app-",
            "a/b/c",
            long.as_str(),
        ] {
            assert!(check_label_key(key).is_err(), "{key}");
        }
        for value in ["", "v1", "Front_End.2"] {
            assert_eq!(check_label_value(value), Ok(()), "{value}");
        }
        for value in ["-v", "a b", "v/1", long.as_str()] {
            assert!(check_label_value(value).is_err(), "{value}");
        }
    }

    #[test]
    fn checks_port_names() {
        for name in [
            "http",
            "metrics-2",
            "h2c",
            "a123456789012345"[..15].as_ref(),
        ] {
            assert_eq!(check_port_name(name), Ok(()), "{name}");
        }
        for name in [
            "",
            "8080",
            "Http",
            "web--admin",
            "-http",
            "a1234567890123456",
        ] {
            assert!(check_port_name(name).is_err(), "{name}");
        }
    }
}
