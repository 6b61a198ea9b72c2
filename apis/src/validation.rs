//! Field paths and the errors validation returns.

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

/// The metadata rules shared by every kind. (Filled in by the apis work: DNS-1123 names,
/// label keys and values, namespace presence.)
pub fn validate_meta(meta: &ObjectMeta, kind: Kind) -> Vec<FieldError> {
    let _ = (meta, kind);
    Vec::new()
}
