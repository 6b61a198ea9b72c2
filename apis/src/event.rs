//! The Event kind: what happened to an object and why, deduplicated into a count.

use serde::{Deserialize, Serialize};

use crate::meta::Time;
use crate::resource::{resource, Kind, Resource};
use crate::validation::{FieldError, FieldPath};

resource!(
    /// One line for `dctl describe`: `Scheduled`, `Unhealthy`, `Killing` …, written by the
    /// event recorder, which bumps `count` instead of writing a duplicate.
    Event,
    EventSpec,
    EventStatus
);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    pub involved_object: ObjectReference,
    #[serde(rename = "type", default)]
    pub type_: EventType,
    /// One CamelCase word a program can match on (`Scheduled`, `Unhealthy`).
    #[serde(default)]
    pub reason: String,
    /// One line for a human, past tense.
    #[serde(default)]
    pub message: String,
    /// How many times this event happened; 1 by default.
    #[serde(default)]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    #[serde(default)]
    pub source: EventSource,
}

/// Names the object an event is about (Kubernetes' `ObjectReference`, trimmed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Tells this object from an earlier one of the same name.
    #[serde(default)]
    pub uid: String,
}

impl ObjectReference {
    /// A reference to `object`.
    pub fn to<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        ObjectReference {
            kind: K::KIND.as_str().to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[default]
    Normal,
    /// Something went wrong or may need a human.
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who reported the event: a controller (`scheduler`) and the host it ran on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    #[serde(default)]
    pub component: String,
    #[serde(default)]
    pub host: String,
}

/// Events carry no status; the empty struct keeps the kind's shape uniform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventStatus {}

impl EventSpec {
    pub const DEFAULT_COUNT: u32 = 1;

    pub fn apply_defaults(&mut self) {
        // A recorded event happened at least once; 0 only means "not written".
        if self.count == 0 {
            self.count = Self::DEFAULT_COUNT;
        }
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let object = path.child("involvedObject");
        if Kind::ALL
            .iter()
            .all(|k| k.as_str() != self.involved_object.kind)
        {
            let message = format!("unknown kind {:?}", self.involved_object.kind);
            errors.push(FieldError::new(&object.child("kind"), message));
        }
        if self.involved_object.name.is_empty() {
            errors.push(FieldError::new(&object.child("name"), "required"));
        }
        let reason = &self.reason;
        if reason.is_empty() {
            errors.push(FieldError::new(&path.child("reason"), "required"));
        } else if !is_camel_case_word(reason) {
            let message = format!("must be one CamelCase word such as Scheduled, got {reason:?}");
            errors.push(FieldError::new(&path.child("reason"), message));
        }
        if self.source.component.is_empty() {
            errors.push(FieldError::new(
                &path.child("source").child("component"),
                "required",
            ));
        }
        errors
    }
}

fn is_camel_case_word(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::meta::ObjectMeta;
    use crate::service::Service;

    fn value_of(t: EventType) -> serde_json::Value {
        serde_json::to_value(t).unwrap()
    }

    #[test]
    fn references_an_object() {
        let mut meta = ObjectMeta::named("demo", "web");
        meta.uid = "u-1".into();
        let web = Service::new(meta, Default::default());
        let reference = ObjectReference::to(&web);
        let expected = ObjectReference {
            kind: "Service".into(),
            namespace: Some("demo".into()),
            name: "web".into(),
            uid: "u-1".into(),
        };
        assert_eq!(reference, expected);
    }

    #[test]
    fn shape_defaults_and_round_trip() {
        let object = json!({
            "apiVersion": "dctl/v1", "kind": "Event",
            "metadata": {"name": "web.17a2b3c4", "namespace": "demo"},
            "spec": {
                "involvedObject": {"kind": "Task", "namespace": "demo", "name": "web.1.x7", "uid": "u-2"},
                "type": "Warning",
                "reason": "Unhealthy",
                "message": "Readiness probe failed: HTTP 503",
                "firstTimestamp": "2025-01-02T03:04:05Z",
                "source": {"component": "readiness-prober"},
            },
        });
        let mut event: Event = serde_json::from_value(object).unwrap();
        event.apply_defaults();
        assert_eq!(event.spec.type_, EventType::Warning);
        assert_eq!(value_of(EventType::Warning), EventType::Warning.to_string());
        assert_eq!(value_of(EventType::Normal), EventType::Normal.to_string());
        assert_eq!(event.spec.count, 1);
        assert_eq!(event.spec.source.host, "");
        assert_eq!(event.validate(), vec![]);
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["spec"]["type"], "Warning");
        assert_eq!(value["spec"]["count"], 1);
        assert_eq!(value["spec"]["firstTimestamp"], "2025-01-02T03:04:05Z");
        assert_eq!(serde_json::from_value::<Event>(value).unwrap(), event);
    }

    #[test]
    fn validation_errors() {
        let spec = json!({
            "involvedObject": {"kind": "Pod", "name": ""},
            "reason": "probe failed",
        });
        let mut spec: EventSpec = serde_json::from_value(spec).unwrap();
        spec.apply_defaults();
        let errors: Vec<String> = spec
            .validate(&FieldPath::new("spec"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                r#"spec.involvedObject.kind: unknown kind "Pod""#,
                "spec.involvedObject.name: required",
                r#"spec.reason: must be one CamelCase word such as Scheduled, got "probe failed""#,
                "spec.source.component: required",
            ]
        );
        assert!(serde_json::from_value::<EventSpec>(
            json!({"involvedObject": {"kind": "Task", "name": "t"}, "type": "Error"})
        )
        .is_err());
    }
}
