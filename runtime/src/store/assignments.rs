//! Mirrors every bound Task to its node's assignment key, in the same transaction, so an
//! agent watches only its own node's work instead of every Task in the cluster.
//!
//! `/dctl/v1/assignments/<node>/<namespace>/<task>` holds the whole Task, written in the
//! transaction that writes the Task itself: both keys share one `mod_revision`, so an
//! agent can `update_status` a Task it read from its assignments.

use std::any::Any;

use chrono::{DateTime, Utc};
use dctl_apis::task::{TaskState, TaskStatus};
use dctl_apis::{Kind, Resource, Task};
use etcd_client::TxnOp;
use serde_json::Value;

use super::fields::Fields;
use super::write::{key_of, now, target_of, Expect};
use super::{keys, ObjectList, Store, StoreError};
use crate::object_key::ObjectKey;

/// The assignment key of a Task bound to a node, if it is bound; `json` is its stored JSON,
/// read only when the object is a Task kind of a type other than [`Task`] (tests).
///
/// # Errors
/// `Decode` when such an object's `json` is not JSON (it was just encoded: a bug).
fn assignment_key<K: Resource>(object: &K, json: &[u8]) -> Result<Option<String>, StoreError> {
    if K::KIND != Kind::Task {
        return Ok(None);
    }
    if let Some(task) = (object as &dyn Any).downcast_ref::<Task>() {
        return Ok(task.spec.node_name.as_deref().map(|node| {
            keys::assignment_key(node, task.metadata.namespace(), &task.metadata.name)
        }));
    }
    let task: Value = serde_json::from_slice(json).map_err(|source| StoreError::Decode {
        key: "a task being written".into(),
        source,
    })?;
    let field = |pointer: &str| task.pointer(pointer).and_then(Value::as_str);
    Ok(
        match (
            field("/spec/nodeName"),
            field("/metadata/namespace"),
            field("/metadata/name"),
        ) {
            (Some(node), Some(namespace), Some(name)) => {
                Some(keys::assignment_key(node, namespace, name))
            }
            _ => None,
        },
    )
}

/// The operations that keep the assignment in step with a Task written as `new` (stored as
/// `new_json`) over `old` (stored as `old_json`). Other kinds have no mirror.
///
/// # Errors
/// `Decode` when a JSON that has to be read is not JSON (it was just encoded: a bug).
pub(super) fn on_put<K: Resource>(
    old: Option<(&K, &[u8])>,
    new: &K,
    new_json: &[u8],
) -> Result<Vec<TxnOp>, StoreError> {
    if K::KIND != Kind::Task {
        return Ok(Vec::new());
    }
    let new_key = assignment_key(new, new_json)?;
    let mut ops = Vec::new();
    // A task is bound once and never moves; this only matters if someone rebinds by hand.
    if let Some((old, old_json)) = old {
        if let Some(old_key) = assignment_key(old, old_json)? {
            if Some(&old_key) != new_key.as_ref() {
                ops.push(TxnOp::delete(old_key, None));
            }
        }
    }
    if let Some(new_key) = new_key {
        ops.push(TxnOp::put(new_key, new_json.to_vec(), None));
    }
    Ok(ops)
}

/// The operation that removes a deleted Task's assignment.
///
/// # Errors
/// As for [`on_put`].
pub(super) fn on_delete<K: Resource>(old: &K, old_json: &[u8]) -> Result<Vec<TxnOp>, StoreError> {
    Ok(assignment_key(old, old_json)?
        .map(|key| vec![TxnOp::delete(key, None)])
        .unwrap_or_default())
}

impl Store {
    /// Binds a pending task to a node: sets `spec.nodeName`, moves its state to `assigned`
    /// and writes the node's assignment key, all in one transaction.
    ///
    /// # Errors
    /// `Conflict` when the task changed since it was read; `Invalid` when it is already
    /// bound to another node; `NotFound` when it is gone.
    pub async fn bind_task(&self, task: &Task, node_name: &str) -> Result<Task, StoreError> {
        let current = self.current(task).await?;
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
        let key = key_of(&current)?;
        let expected = current.metadata.resource_version.unwrap_or_default();
        let mut bound = current.clone();
        bound.spec.node_name = Some(node_name.to_string());
        bound.metadata.generation += 1;
        bound.metadata.resource_version = None;
        bound.status = Some(assigned(current.status.clone(), node_name, now()));
        let fields = Fields::of(&bound)?;
        // Unbound before, so there is no old assignment to remove.
        let mirror = on_put(None, &bound, fields.json())?;
        let outcome = self
            .compare_and_put(&key, Expect::ModRevision(expected), fields.json(), mirror)
            .await?;
        self.finish(task, &key, bound, Some(&fields), outcome)
    }

    /// The task as stored at its `resourceVersion`: the caller's own when the store knows
    /// it is exactly that and it is unbound (the bind's transaction then checks that it is
    /// still at that revision), else read.
    async fn current(&self, task: &Task) -> Result<Task, StoreError> {
        let (key, expected) = target_of(task)?;
        let known = self.known().at(&key, expected);
        if let Some(stored) = known.filter(|_| task.spec.node_name.is_none()) {
            let mine = self.known().fingerprint(&Fields::of(task)?, expected);
            if mine.same_object(&stored) {
                return Ok(task.clone());
            }
        }
        let (_, _, current) = self.read_for_update(task).await?;
        Ok(current)
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
