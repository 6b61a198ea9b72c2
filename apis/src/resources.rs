//! Resource limits and reservations of a task, written as Kubernetes quantities.

use serde::{Deserialize, Serialize};

use crate::quantity::{Quantity, QuantityError};
use crate::validation::{FieldError, FieldPath};

/// Docker's resource controls, written as Kubernetes quantities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Enforced by Docker (`--cpus`, `--memory`).
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
    /// Subtracted from a node's capacity by the scheduler.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub reservations: ResourceList,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Resources {
    /// Docker refuses a memory limit under 6 MiB when it creates the container; saying so
    /// at apply time is kinder.
    pub const MIN_MEMORY_LIMIT: u64 = 6 << 20;

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.reservations.is_empty()
    }

    /// Each quantity parses as its unit, the memory limit is above Docker's floor, and a
    /// reservation does not exceed its limit (a task reserving more than it may use is a
    /// mistake that would only show as an odd scheduling result).
    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut parsed = |list: &ResourceList, path: &FieldPath| {
            let cpus = list
                .nano_cpus()
                .map_err(|e| errors.push(FieldError::new(&path.child("cpus"), e.to_string())));
            let memory = list
                .memory_bytes()
                .map_err(|e| errors.push(FieldError::new(&path.child("memory"), e.to_string())));
            (cpus.ok().flatten(), memory.ok().flatten())
        };
        let (limit_cpus, limit_memory) = parsed(&self.limits, &path.child("limits"));
        let (reserved_cpus, reserved_memory) =
            parsed(&self.reservations, &path.child("reservations"));
        if limit_memory.is_some_and(|m| m < Self::MIN_MEMORY_LIMIT) {
            errors.push(FieldError::new(
                &path.child("limits").child("memory"),
                "must be at least 6Mi (Docker's minimum)",
            ));
        }
        let reservations = path.child("reservations");
        let pairs = [
            ("cpus", reserved_cpus, limit_cpus, &self.limits.cpus),
            ("memory", reserved_memory, limit_memory, &self.limits.memory),
        ];
        for (field, reserved, limit, limit_text) in pairs {
            if let (Some(reserved), Some(limit), Some(text)) = (reserved, limit, limit_text) {
                if reserved > limit {
                    errors.push(FieldError::new(
                        &reservations.child(field),
                        format!("must not exceed limits.{field} ({text})"),
                    ));
                }
            }
        }
        errors
    }
}

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none()
    }

    /// # Errors
    /// The cpus quantity does not parse (validation has reported it already).
    pub fn nano_cpus(&self) -> Result<Option<u64>, QuantityError> {
        self.cpus.as_ref().map(Quantity::to_nano_cpus).transpose()
    }

    /// # Errors
    /// The memory quantity does not parse (validation has reported it already).
    pub fn memory_bytes(&self) -> Result<Option<u64>, QuantityError> {
        self.memory.as_ref().map(Quantity::to_bytes).transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errors(resources: serde_json::Value) -> Vec<String> {
        let resources: Resources = serde_json::from_value(resources).unwrap();
        resources
            .validate(&FieldPath::new("r"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reads_quantities_in_their_units() {
        let resources: Resources = serde_json::from_value(json!({
            "limits": {"cpus": 0.5, "memory": "128Mi"},
            "reservations": {"cpus": "100m"},
        }))
        .unwrap();
        assert_eq!(resources.limits.nano_cpus(), Ok(Some(500_000_000)));
        assert_eq!(resources.limits.memory_bytes(), Ok(Some(128 << 20)));
        assert_eq!(resources.reservations.nano_cpus(), Ok(Some(100_000_000)));
        assert_eq!(resources.reservations.memory_bytes(), Ok(None));
        assert_eq!(resources.validate(&FieldPath::new("r")), vec![]);
    }

    #[test]
    fn validates_limits_and_reservations() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!({"limits": {"memory": "6Mi"}, "reservations": {"memory": "6Mi"}}),
                vec![],
            ),
            (
                json!({"limits": {"memory": "1M"}}),
                vec!["r.limits.memory: must be at least 6Mi (Docker's minimum)"],
            ),
            (
                json!({"limits": {"cpus": "1", "memory": "1Gi"}, "reservations": {"cpus": "2", "memory": "2Gi"}}),
                vec![
                    "r.reservations.cpus: must not exceed limits.cpus (1)",
                    "r.reservations.memory: must not exceed limits.memory (1Gi)",
                ],
            ),
            (
                json!({"limits": {"cpus": "-1"}, "reservations": {"cpus": "1x"}}),
                vec![
                    r#"r.limits.cpus: invalid quantity "-1": must not be negative"#,
                    r#"r.reservations.cpus: invalid quantity "1x": expected a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)"#,
                ],
            ),
        ];
        for (resources, expected) in cases {
            assert_eq!(errors(resources.clone()), expected, "{resources}");
        }
    }
}
