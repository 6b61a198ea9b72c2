//! The Task kind: one slot's instance of a Service, never restarted in place.

use serde::{Deserialize, Serialize};

use crate::meta::{Condition, Time};
use crate::resource::resource;
use crate::template::{Protocol, TaskTemplate};
use crate::validation::{FieldError, FieldPath};

resource!(
    /// One instance of a Service's template. A task that stops is replaced by a new task
    /// in the same slot; its own state only ever moves forward.
    Task,
    TaskSpec,
    TaskStatus
);

/// Set by the startup probe (or at once when there is none).
pub const CONDITION_STARTED: &str = "Started";
/// Cleared by a failing liveness probe, just before the task is killed.
pub const CONDITION_LIVE: &str = "Live";
/// Set by the readiness probe; only Ready tasks receive traffic.
pub const CONDITION_READY: &str = "Ready";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The Service's template as it was when the task was created.
    #[serde(default)]
    pub template: TaskTemplate,
    #[serde(default)]
    pub service_name: String,
    /// Replicated services: the slot this task fills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// Global services: the node this task is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node the scheduler bound the task to; unset while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default)]
    pub desired_state: TaskDesiredState,
    /// The template ports a `publish` entry of the Service targets, resolved to number and
    /// protocol when the task was created; only these get a host port. Tasks stored
    /// before the field existed decode with none, so a service that publishes rolls them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<TaskPort>,
}

/// A container port and its protocol (what Docker calls `8080/tcp`) to bind on the host:
/// on an ephemeral port for the routing mesh, or on `hostPort` for a `host` mode publish.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskPort {
    pub container_port: i32,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
}

/// What the managers want of the task; the agent converges the container to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskDesiredState {
    #[default]
    Running,
    /// Staged: prepared (image present, container created) but not started, for
    /// start-first rollouts.
    Ready,
    Shutdown,
    /// Shut down, then delete the Task object.
    Remove,
}

impl TaskDesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskDesiredState::Running => "running",
            TaskDesiredState::Ready => "ready",
            TaskDesiredState::Shutdown => "shutdown",
            TaskDesiredState::Remove => "remove",
        }
    }
}

impl std::fmt::Display for TaskDesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent observed; Swarm's task states, in the order a task moves through them.
/// The derived order is that order, so `a < b` means `a` comes before `b`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    pub const ALL: [TaskState; 12] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// The task's container is gone or will never run again (complete and after).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Whether a task in this state may be moved to `next`: only forward, and never out
    /// of a terminal state, so a late or replayed report cannot revive a finished task.
    /// Staying in the same state is not a move.
    pub fn can_move_to(self, next: TaskState) -> bool {
        next > self && !self.is_terminal()
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskStatus {
    #[serde(default)]
    pub state: TaskState,
    /// When `state` was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// What happened, for a human (`started`, `pulling image`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Why the task failed or was rejected, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The container's IP addresses on its networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `Started`, `Live`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Tasks that filled this slot before this one (a task is never restarted itself);
    /// the restart policy's `maxAttempts` is counted against it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// The host ports the container's ports are published on (ephemeral, picked by
    /// Docker), for the endpoints controller and the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<HostPort>,
}

/// A container port bound to a port of the node: `node address:hostPort` reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPort {
    pub container_port: i32,
    pub host_port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TaskSpec {
    pub fn apply_defaults(&mut self) {
        self.template.apply_defaults();
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = self.template.validate(&path.child("template"));
        if self.service_name.is_empty() {
            errors.push(FieldError::new(&path.child("serviceName"), "required"));
        }
        match (&self.slot, &self.node) {
            (None, None) => errors.push(FieldError::new(
                path,
                "must set slot (replicated service) or node (global service)",
            )),
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    &path.child("node"),
                    "must not be set with slot",
                ));
            }
            _ => {}
        }
        // A global task exists for one node; binding it anywhere else is a bug.
        if let (Some(node), Some(node_name)) = (&self.node, &self.node_name) {
            if node != node_name {
                let message = format!("must be {node:?}, the node this global task is for");
                errors.push(FieldError::new(&path.child("nodeName"), message));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::Resource;

    #[test]
    fn states_move_forward_only() {
        use TaskState::*;
        let cases: &[(TaskState, TaskState, bool)] = &[
            (New, Pending, true),
            (Pending, Assigned, true),
            (Assigned, Running, true),
            (Starting, Running, true),
            (Running, Complete, true),
            (Running, Failed, true),
            (Running, Orphaned, true),
            (New, Rejected, true),
            (Running, Running, false),
            (Running, Starting, false),
            (Assigned, Pending, false),
            (Failed, Running, false),
            (Complete, Failed, false),
            (Shutdown, Orphaned, false),
            (Orphaned, New, false),
        ];
        for &(from, to, expected) in cases {
            assert_eq!(from.can_move_to(to), expected, "{from} -> {to}");
        }
        // The derived order is Swarm's order.
        let mut sorted = TaskState::ALL;
        sorted.sort();
        assert_eq!(sorted, TaskState::ALL);
        assert!(Pending < Running && Running < Complete && Complete < Orphaned);
        let names: Vec<String> = TaskState::ALL.iter().map(ToString::to_string).collect();
        let json = serde_json::to_value(TaskState::ALL).unwrap();
        assert_eq!(json, serde_json::to_value(&names).unwrap());
        use TaskDesiredState as D;
        for desired in [D::Running, D::Ready, D::Shutdown, D::Remove] {
            assert_eq!(serde_json::to_value(desired).unwrap(), desired.to_string());
        }
    }

    #[test]
    fn a_task_defaults_and_validates() {
        let object = json!({
            "apiVersion": "dctl/v1", "kind": "Task",
            "metadata": {"name": "web.1.x7k2"},
            "spec": {"template": {"image": "web:1"}, "serviceName": "web", "slot": 1},
            "status": {"state": "running", "containerId": "c0ffee", "restartCount": 2},
        });
        let mut task: Task = serde_json::from_value(object).unwrap();
        task.apply_defaults();
        assert_eq!(task.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(task.spec.desired_state, TaskDesiredState::Running);
        assert_eq!(task.spec.template.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(task.validate(), vec![]);
        let status = task.status.as_ref().unwrap();
        assert_eq!(
            (status.state, status.restart_count),
            (TaskState::Running, 2)
        );
        let stored = serde_json::to_string(&task).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&stored).unwrap(), task);
    }

    #[test]
    fn validation_errors() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!({"template": {"image": "x"}, "serviceName": "web", "node": "h1", "nodeName": "h1"}),
                vec![],
            ),
            (
                json!({"desiredState": "shutdown"}),
                vec![
                    "spec.template.image: required",
                    "spec.serviceName: required",
                    "spec: must set slot (replicated service) or node (global service)",
                ],
            ),
            (
                json!({"template": {"image": "x"}, "serviceName": "web", "slot": 1, "node": "h1", "nodeName": "h2"}),
                vec![
                    "spec.node: must not be set with slot",
                    r#"spec.nodeName: must be "h1", the node this global task is for"#,
                ],
            ),
        ];
        for (spec, expected) in cases {
            let mut spec: TaskSpec = serde_json::from_value(spec).unwrap();
            spec.apply_defaults();
            let errors: Vec<String> = spec
                .validate(&FieldPath::new("spec"))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(errors, expected);
        }
        assert!(serde_json::from_value::<TaskSpec>(json!({"desiredState": "paused"})).is_err());
    }
}
