//! Mirrors every bound Task to its node's assignment key, in the same transaction, so an
//! agent watches only its own node's work instead of every Task in the cluster.
//!
//! `/dctl/v1/assignments/<node>/<namespace>/<task>` holds the whole Task, written in the
//! transaction that writes the Task itself: both keys share one `mod_revision`, so an
//! agent can `update_status` a Task it read from its assignments.

use chrono::{DateTime, Utc};
use dctl_apis::task::{TaskState, TaskStatus};
use dctl_apis::{Kind, Task};
use etcd_client::TxnOp;
use serde_json::Value;

use super::write::{now, Cas, Expect};
use super::{codec, keys, ObjectList, Store, StoreError};
use crate::object_key::ObjectKey;

/// The assignment key of a Task (as JSON) bound to a node, if it is bound.
fn assignment_key(task: &Value) -> Option<String> {
    let node = task.pointer("/spec/nodeName")?.as_str()?;
    let namespace = task.pointer("/metadata/namespace")?.as_str()?;
    let name = task.pointer("/metadata/name")?.as_str()?;
    Some(keys::assignment_key(node, namespace, name))
}

/// The operations that keep the assignment in step with a Task written as `new` (JSON
/// bytes) over `old`. Other kinds have no mirror.
///
/// # Errors
/// `Decode` when `new` is not JSON (it was just encoded, so this means a bug).
pub(super) fn on_put(
    kind: Kind,
    old: Option<&Value>,
    new: &[u8],
) -> Result<Vec<TxnOp>, StoreError> {
    if kind != Kind::Task {
        return Ok(Vec::new());
    }
    let new_value: Value = serde_json::from_slice(new).map_err(|source| StoreError::Decode {
        key: "a task being written".into(),
        source,
    })?;
    let new_key = assignment_key(&new_value);
    let mut ops = Vec::new();
    // A task is bound once and never moves; this only matters if someone rebinds by hand.
    if let Some(old_key) = old.and_then(assignment_key) {
        if Some(&old_key) != new_key.as_ref() {
            ops.push(TxnOp::delete(old_key, None));
        }
    }
    if let Some(new_key) = new_key {
        ops.push(TxnOp::put(new_key, new.to_vec(), None));
    }
    Ok(ops)
}

/// The operation that removes a deleted Task's assignment.
pub(super) fn on_delete(kind: Kind, old: &Value) -> Vec<TxnOp> {
    if kind != Kind::Task {
        return Vec::new();
    }
    assignment_key(old)
        .map(|key| vec![TxnOp::delete(key, None)])
        .unwrap_or_default()
}

impl Store {
    /// Binds a pending task to a node: sets `spec.nodeName`, moves its state to `assigned`
    /// and writes the node's assignment key, all in one transaction.
    ///
    /// # Errors
    /// `Conflict` when the task changed since it was read; `Invalid` when it is already
    /// bound to another node; `NotFound` when it is gone.
    pub async fn bind_task(&self, task: &Task, node_name: &str) -> Result<Task, StoreError> {
        let (key, expected, current) = self.read_for_update(task).await?;
        if let Some(bound) = current.spec.node_name.as_deref() {
            if bound == node_name {
                return Ok(current);
            }
            return Err(StoreError::Invalid {
                kind: Kind::Task,
                key: ObjectKey::of(task),
                message: format!("it is already bound to node {bound}"),
            });
        }
        let current_value = codec::to_value(&current)?;
        let mut bound = current.clone();
        bound.spec.node_name = Some(node_name.to_string());
        bound.metadata.generation += 1;
        bound.metadata.resource_version = None;
        bound.status = Some(assigned(current.status.clone(), node_name, now()));
        let bytes = codec::encode(&bound)?;
        let mirror = on_put(Kind::Task, Some(&current_value), &bytes)?;
        let outcome = self
            .compare_and_put(&key, Expect::ModRevision(expected), bytes.clone(), mirror)
            .await?;
        match outcome {
            Cas::Done { revision } => {
                bound.metadata.resource_version = Some(revision);
                Ok(bound)
            }
            lost => {
                let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                self.written(task, &key, value, lost)
            }
        }
    }

    /// The tasks bound to `node`, read from its assignment keys, as one snapshot.
    ///
    /// # Errors
    /// As for [`Store::list`].
    pub async fn list_assigned_tasks(&self, node: &str) -> Result<ObjectList<Task>, StoreError> {
        self.list_under::<Task>(&keys::assignments_prefix(node))
            .await
    }
}

/// The status of a task just bound: `assigned`, unless it somehow moved further already.
fn assigned(status: Option<TaskStatus>, node: &str, at: DateTime<Utc>) -> TaskStatus {
    let mut status = status.unwrap_or_default();
    if status.state.can_move_to(TaskState::Assigned) {
        status.state = TaskState::Assigned;
        status.timestamp = Some(at);
        status.message = format!("scheduled on {node}");
    }
    status
}
