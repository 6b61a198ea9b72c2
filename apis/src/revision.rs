//! The ServiceRevision kind: one template a Service has run, kept for `dctl rollout
//! history|undo` and for rolling back a failed rollout (Kubernetes' ControllerRevision).

use serde::{Deserialize, Serialize};

use crate::resource::resource;
use crate::service::Placement;
use crate::template::TaskTemplate;
use crate::validation::{FieldError, FieldPath};

resource!(
    /// A Service's template and placement as of one rollout, named `<service>-<hash>` after
    /// them so the same template always maps to the same object. Written by the service
    /// controller only; owned by the Service, so it goes when the Service goes.
    ServiceRevision,
    ServiceRevisionSpec,
    ServiceRevisionStatus
);

/// The annotation a user sets on a Service to say why it changed; copied to the revision
/// and shown by `dctl rollout history` (kubectl's `kubernetes.io/change-cause`).
pub const ANNOTATION_CHANGE_CAUSE: &str = "dctl.io/change-cause";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRevisionSpec {
    /// The Service's name.
    #[serde(default)]
    pub service: String,
    /// Counts up from 1; a template that comes back (an undo) is renumbered as the newest.
    #[serde(default)]
    pub revision: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub change_cause: String,
    #[serde(default)]
    pub template: TaskTemplate,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
}

/// Revisions have no status: they are records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRevisionStatus {}

impl ServiceRevisionSpec {
    pub fn apply_defaults(&mut self) {
        self.template.apply_defaults();
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.service.is_empty() {
            errors.push(FieldError::new(&path.child("service"), "required"));
        }
        if self.revision < 1 {
            let message = format!("must be at least 1, got {}", self.revision);
            errors.push(FieldError::new(&path.child("revision"), message));
        }
        errors.extend(self.template.validate(&path.child("template")));
        errors
    }
}

/// A stable digest of a template and placement, for revision names and for telling
/// whether a task runs the service's current revision: 64-bit FNV-1a of their JSON, which
/// stays the same across processes and releases (std's hasher promises neither).
pub fn template_hash(template: &TaskTemplate, placement: &Placement) -> String {
    let json = serde_json::to_vec(&(template, placement)).expect("templates always serialize");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in json {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_tells_templates_apart() {
        let v1 = TaskTemplate {
            image: "web:1".into(),
            ..TaskTemplate::default()
        };
        let v2 = TaskTemplate {
            image: "web:2".into(),
            ..TaskTemplate::default()
        };
        let placement = Placement::default();
        assert_eq!(
            template_hash(&v1, &placement),
            template_hash(&v1.clone(), &placement)
        );
        assert_ne!(
            template_hash(&v1, &placement),
            template_hash(&v2, &placement)
        );
        let constrained = Placement {
            constraints: vec!["node.labels.zone == a".into()],
            ..Placement::default()
        };
        assert_ne!(
            template_hash(&v1, &placement),
            template_hash(&v1, &constrained)
        );
        assert_eq!(template_hash(&v1, &placement).len(), 10);
    }

    #[test]
    fn validation_names_missing_fields() {
        let errors = ServiceRevisionSpec::default().validate(&FieldPath::new("spec"));
        let paths: Vec<String> = errors.iter().map(|e| e.path.to_string()).collect();
        assert!(paths.contains(&"spec.service".to_string()), "{paths:?}");
        assert!(paths.contains(&"spec.revision".to_string()), "{paths:?}");
    }
}
