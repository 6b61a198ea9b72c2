//! The Node kind: one Docker host running an agent (cluster-scoped).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{Condition, Time};
use crate::quantity::{Quantity, QuantityError};
use crate::resource::resource;
use crate::validation::{validate_labels, FieldError, FieldPath};

resource!(
    /// A Docker host. Its spec is the operator's (availability, role, labels); its status
    /// is the agent's report.
    Node,
    NodeSpec,
    NodeStatus
);

/// The condition an agent keeps `True` while it heartbeats.
pub const CONDITION_READY: &str = "Ready";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Whether the scheduler may place tasks here (Swarm's `--availability`).
    #[serde(default)]
    pub availability: NodeAvailability,
    #[serde(default)]
    pub role: NodeRole,
    /// Matched by placement constraints as `node.labels.<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Swarm's node availability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAvailability {
    /// New tasks may be scheduled here.
    #[default]
    Active,
    /// Running tasks stay; no new ones are scheduled.
    Pause,
    /// Running tasks are moved elsewhere; no new ones are scheduled.
    Drain,
}

impl NodeAvailability {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAvailability::Active => "active",
            NodeAvailability::Pause => "pause",
            NodeAvailability::Drain => "drain",
        }
    }
}

impl std::fmt::Display for NodeAvailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    #[default]
    Worker,
    Manager,
}

impl NodeRole {
    /// `worker` or `manager`, as constraints and the CLI write it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent observed of its host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub platform: Platform,
    #[serde(default)]
    pub capacity: NodeCapacity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
    /// The Docker daemon's own labels, matched by constraints as `engine.labels.<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last time the agent renewed its lease, as it last reported it; liveness itself
    /// is the lease, not this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// Where the node's agent serves its tasks' logs (`host:port`): `dctl logs` asks it,
    /// since the CLI cannot reach a remote Docker engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_address: Option<String>,
}

/// The host's OS and CPU architecture, as Docker reports them (`linux`, `x86_64`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
}

/// What the host can give tasks in all; the scheduler subtracts reservations from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCapacity {
    /// A quantity (`4`, `1500m`), written by the agent with `Quantity::from_nano_cpus`.
    #[serde(default)]
    pub cpus: Quantity,
    #[serde(default)]
    pub memory_bytes: u64,
}

impl NodeCapacity {
    /// # Errors
    /// When the agent wrote a malformed quantity.
    pub fn nano_cpus(&self) -> Result<u64, QuantityError> {
        if self.cpus.as_str().is_empty() {
            return Ok(0);
        }
        self.cpus.to_nano_cpus()
    }
}

impl NodeSpec {
    pub fn apply_defaults(&mut self) {
        // `availability` and `role` default through serde: unset and the default mean the
        // same, so there is nothing left to fill.
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        validate_labels(&self.labels, &path.child("labels"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;

    #[test]
    fn defaults_and_round_trips() {
        let json = r#"{"apiVersion":"dctl/v1","kind":"Node","metadata":{"name":"h1","namespace":"x"},"spec":{}}"#;
        let mut node: Node = serde_json::from_str(json).unwrap();
        node.apply_defaults();
        assert_eq!(node.metadata.namespace, None);
        assert_eq!(node.spec.availability, NodeAvailability::Active);
        assert_eq!(node.spec.role, NodeRole::Worker);
        let written = serde_json::to_string(&node).unwrap();
        assert_eq!(
            written,
            r#"{"apiVersion":"dctl/v1","kind":"Node","metadata":{"name":"h1"},"spec":{"availability":"active","role":"worker"}}"#
        );
        assert_eq!(serde_json::from_str::<Node>(&written).unwrap(), node);
        assert!(node.validate().is_empty());
    }

    #[test]
    fn validates_labels_and_rejects_unknown_values() {
        let json = r#"{"availability":"drain","role":"manager","labels":{"zone":"eu west"}}"#;
        let spec: NodeSpec = serde_json::from_str(json).unwrap();
        let errors: Vec<String> = spec
            .validate(&FieldPath::new("spec"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.labels[zone]: invalid label value \"eu west\": must be empty or at most 63 \
              characters of a-z, A-Z, 0-9, '-', '_' and '.', starting and ending with a letter \
              or digit"
            ]
        );
        assert!(serde_json::from_str::<NodeSpec>(r#"{"availability":"off"}"#).is_err());
        assert!(serde_json::from_str::<NodeSpec>(r#"{"lables":{}}"#).is_err());
        use NodeAvailability::*;
        for availability in [Active, Pause, Drain] {
            let json = serde_json::to_value(availability).unwrap();
            assert_eq!(json, availability.to_string());
        }
        for role in [NodeRole::Worker, NodeRole::Manager] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.to_string());
        }
    }

    #[test]
    fn capacity_reads_its_quantity() {
        let capacity = NodeCapacity {
            cpus: Quantity::from_nano_cpus(4_000_000_000),
            memory_bytes: 8 << 30,
        };
        assert_eq!(capacity.nano_cpus(), Ok(4_000_000_000));
        assert_eq!(NodeCapacity::default().nano_cpus(), Ok(0));
    }
}
