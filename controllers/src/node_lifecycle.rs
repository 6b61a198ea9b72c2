//! The node-lifecycle controller: marks a node NotReady when its heartbeat lease expires,
//! and orphans its tasks once it stays down past a grace period.
//!
//! The agent's heartbeat key (`node::registration::heartbeat_key`) vanishes with its lease.
//! Orphaned tasks are replaced elsewhere by the service controller; when the node comes
//! back, its agent sets `Ready` `True` itself and stops what is no longer its to run.

mod heartbeats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, SubsecRound};
use dctl_apis::event::{EventSource, EventType, ObjectReference};
use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::node::CONDITION_READY;
use dctl_apis::task::CONDITION_READY as TASK_READY;
use dctl_apis::{Condition, ConditionStatus, Node, Task, TaskState, Time};
use dctl_runtime::controller::{backoff_on_error, Action, Config, Controller};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::Reader;
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::ObjectKey;
use tokio::sync::mpsc;

use crate::node::registration::heartbeat_exists;
use heartbeats::{watch_heartbeats, Heartbeats};

/// `Ready` `False`: the node's heartbeat lease is gone.
pub const REASON_NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// The reason of a task's `Ready` `False` once it is orphaned.
pub const REASON_NODE_DOWN: &str = "NodeDown";

/// How often every node is looked at again: catches tasks bound to a node after it went
/// down, which no node event announces.
const RESYNC: Duration = Duration::from_secs(30);
/// How often a status write that keeps losing its race is retried.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may be NotReady before its tasks are orphaned. Default 30 s.
    pub grace_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(30),
        }
    }
}

impl NodeLifecycleConfig {
    #[must_use]
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the heartbeat of node {node}: {reason}")]
    Heartbeat { node: String, reason: String },
    #[error("cannot mark node {node} NotReady: {source}")]
    NodeStatus {
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot list the tasks of node {node}: {source}")]
    Tasks {
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot orphan task {task} of node {node}: {source}")]
    Orphan {
        task: ObjectKey,
        node: String,
        #[source]
        source: StoreError,
    },
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    store: Store,
    config: NodeLifecycleConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let heartbeats = Arc::new(Heartbeats::default());
    let (triggers, triggered) = mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_heartbeats(
        store.clone(),
        heartbeats.clone(),
        triggers,
    ));
    let controller = Controller::<Node>::for_store(
        "node-lifecycle",
        store.clone(),
        Config::default().resync_period(Some(RESYNC)),
    );
    let source = EventSource {
        component: "node-lifecycle".to_string(),
        host: String::new(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(store.clone(), source),
        store,
        nodes: controller.reader(),
        heartbeats,
        config,
    });
    let heartbeat_triggers = futures::stream::unfold(triggered, |mut triggered| async move {
        triggered.recv().await.map(|trigger| (trigger, triggered))
    });
    controller
        .with_triggers(heartbeat_triggers)
        .with_shutdown(shutdown)
        .run(reconcile, backoff_on_error, context)
        .await;
    watch.abort();
}

struct Context {
    store: Store,
    nodes: Reader<Node>,
    heartbeats: Arc<Heartbeats>,
    config: NodeLifecycleConfig,
    recorder: Recorder,
}

async fn reconcile(key: ObjectKey, context: Arc<Context>) -> Result<Action, Error> {
    // Before the first list of heartbeats every node would look dead.
    context.heartbeats.wait_until_listed().await;
    let Some(node) = context.nodes.get(&key) else {
        return Ok(Action::await_change());
    };
    let name = node.metadata.name.as_str();
    if context.heartbeats.is_alive(name) {
        return Ok(Action::await_change());
    }
    // The watch may lag behind an agent that just came back: ask etcd itself before acting.
    let exists = heartbeat_exists(&context.store, name)
        .await
        .map_err(|reason| Error::Heartbeat {
            node: name.to_string(),
            reason,
        })?;
    if exists {
        return Ok(Action::await_change());
    }
    let now = now();
    let since = mark_not_ready(&context, &node, now).await?;
    let grace = context.config.grace_period;
    let down_for = (now - since).to_std().unwrap_or(Duration::ZERO);
    if down_for < grace {
        return Ok(Action::requeue(grace - down_for));
    }
    orphan_tasks(&context, name).await?;
    Ok(Action::await_change())
}

/// Sets `Ready` `False` (`NodeStatusUnknown`) unless it already is; returns since when the
/// node has been NotReady.
async fn mark_not_ready(context: &Context, node: &Node, now: Time) -> Result<Time, Error> {
    let name = node.metadata.name.as_str();
    let status = node.status.clone().unwrap_or_default();
    let ready = find_condition(&status.conditions, CONDITION_READY);
    if let Some(ready) = ready
        .filter(|r| r.status == ConditionStatus::False && r.reason == REASON_NODE_STATUS_UNKNOWN)
    {
        return Ok(ready.last_transition_time);
    }
    let was_ready = ready.is_none_or(|r| r.status != ConditionStatus::False);
    let message = not_ready_message(
        context.heartbeats.expired_at(name),
        status.last_heartbeat_time,
    );
    let mut marked = node.clone();
    let conditions = &mut marked
        .status
        .get_or_insert_with(Default::default)
        .conditions;
    set_condition(
        conditions,
        Condition {
            type_: CONDITION_READY.to_string(),
            status: ConditionStatus::False,
            reason: REASON_NODE_STATUS_UNKNOWN.to_string(),
            message: message.clone(),
            last_transition_time: now,
            observed_generation: None,
        },
    );
    // Compared with the cached version: an agent that wrote Ready True meanwhile wins.
    let written = context
        .store
        .update_status(&marked)
        .await
        .map_err(|source| Error::NodeStatus {
            node: name.to_string(),
            source,
        })?;
    tracing::warn!(node = name, %message, "node is NotReady");
    if was_ready {
        let message = format!("node {name} is not ready: {message}");
        record(
            context,
            &ObjectReference::to(&written),
            "NodeNotReady",
            &message,
        )
        .await;
    }
    let ready = written
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_READY));
    Ok(ready.map_or(now, |r| r.last_transition_time))
}

/// `heartbeat lease expired at …`, when the watch saw it go; else what is known.
pub fn not_ready_message(expired_at: Option<Time>, last_heartbeat: Option<Time>) -> String {
    let time = |t: Time| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    match (expired_at, last_heartbeat) {
        (Some(expired), _) => format!("heartbeat lease expired at {}", time(expired)),
        (None, Some(last)) => format!(
            "no heartbeat lease (last heartbeat reported at {})",
            time(last)
        ),
        (None, None) => "no heartbeat lease; the agent never reported".to_string(),
    }
}

/// Moves every task bound to `node` that has not finished to `orphaned`.
async fn orphan_tasks(context: &Context, node: &str) -> Result<(), Error> {
    let tasks = context
        .store
        .list_assigned_tasks(node)
        .await
        .map_err(|source| Error::Tasks {
            node: node.to_string(),
            source,
        })?;
    let message = format!(
        "node {node} down for more than {}",
        dctl_apis::Duration::from(context.config.grace_period)
    );
    let now = now();
    for task in tasks.items.iter().filter(|t| is_orphanable(t, node)) {
        let key = ObjectKey::of(task);
        let error = |source| Error::Orphan {
            task: key.clone(),
            node: node.to_string(),
            source,
        };
        let Some(orphaned) = orphan_task(&context.store, task.clone(), node, &message, now)
            .await
            .map_err(error)?
        else {
            continue;
        };
        tracing::info!(task = %key, node, "task orphaned");
        record(
            context,
            &ObjectReference::to(&orphaned),
            "Orphaned",
            &message,
        )
        .await;
    }
    Ok(())
}

/// Whether `task` is bound to `node` and has not finished.
pub fn is_orphanable(task: &Task, node: &str) -> bool {
    let state = task.status.as_ref().map_or(TaskState::New, |s| s.state);
    task.spec.node_name.as_deref() == Some(node) && state.can_move_to(TaskState::Orphaned)
}

/// `task`'s status as orphaned: the state, why, and out of traffic (its agent, which would
/// clear `Ready`, is gone).
pub fn orphaned_status(task: &Task, message: &str, now: Time) -> dctl_apis::task::TaskStatus {
    let mut status = task.status.clone().unwrap_or_default();
    status.state = TaskState::Orphaned;
    status.timestamp = Some(now);
    status.message = message.to_string();
    if find_condition(&status.conditions, TASK_READY).is_some() {
        set_condition(
            &mut status.conditions,
            Condition {
                type_: TASK_READY.to_string(),
                status: ConditionStatus::False,
                reason: REASON_NODE_DOWN.to_string(),
                message: message.to_string(),
                last_transition_time: now,
                observed_generation: None,
            },
        );
    }
    status
}

/// Writes the orphaned status, re-reading on a lost race; `None` when the task finished or
/// went away meanwhile.
async fn orphan_task(
    store: &Store,
    mut task: Task,
    node: &str,
    message: &str,
    now: Time,
) -> Result<Option<Task>, StoreError> {
    for _ in 0..WRITE_ATTEMPTS {
        if !is_orphanable(&task, node) {
            return Ok(None);
        }
        task.status = Some(orphaned_status(&task, message, now));
        match store.update_status(&task).await {
            Ok(written) => return Ok(Some(written)),
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) if error.is_conflict() => {
                let (namespace, name) = (
                    task.metadata.namespace().to_string(),
                    task.metadata.name.clone(),
                );
                match store.try_get::<Task>(&namespace, &name).await? {
                    Some(fresh) => task = fresh,
                    None => return Ok(None),
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Conflict {
        kind: dctl_apis::Kind::Task,
        key: ObjectKey::of(&task),
    })
}

async fn record(context: &Context, object: &ObjectReference, reason: &str, message: &str) {
    if let Err(error) = context
        .recorder
        .publish(object, EventType::Warning, reason, message)
        .await
    {
        tracing::warn!(object = object.name, %error, "cannot record an event");
    }
}

/// Times to the millisecond, as the store writes its own.
fn now() -> Time {
    chrono::Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use dctl_apis::task::{TaskSpec, TaskStatus};
    use dctl_apis::ObjectMeta;

    use super::*;

    fn at(secs: i64) -> Time {
        chrono::Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn task(node: Option<&str>, state: TaskState) -> Task {
        let spec = TaskSpec {
            node_name: node.map(str::to_string),
            ..Default::default()
        };
        let mut task = Task::new(ObjectMeta::named("demo", "web.1.abcde"), spec);
        task.status = Some(TaskStatus {
            state,
            ..Default::default()
        });
        task
    }

    #[test]
    fn orphans_unfinished_tasks_of_the_node_only() {
        use TaskState::*;
        let cases = [
            (Some("n1"), Running, true),
            (Some("n1"), Assigned, true),
            (Some("n1"), Preparing, true),
            (Some("n1"), Complete, false),
            (Some("n1"), Failed, false),
            (Some("n1"), Shutdown, false),
            (Some("n1"), Orphaned, false),
            (Some("n2"), Running, false),
            (None, Pending, false),
        ];
        for (node, state, expected) in cases {
            assert_eq!(
                is_orphanable(&task(node, state), "n1"),
                expected,
                "{node:?} {state}"
            );
        }
    }

    #[test]
    fn an_orphaned_task_leaves_traffic() {
        let mut running = task(Some("n1"), TaskState::Running);
        let ready = Condition {
            type_: TASK_READY.into(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_transition_time: at(0),
            observed_generation: None,
        };
        running.status.as_mut().unwrap().conditions.push(ready);
        let status = orphaned_status(&running, "node n1 down for more than 30s", at(100));
        assert_eq!(status.state, TaskState::Orphaned);
        assert_eq!(status.timestamp, Some(at(100)));
        assert_eq!(status.message, "node n1 down for more than 30s");
        let ready = find_condition(&status.conditions, TASK_READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, REASON_NODE_DOWN)
        );
        // No Ready condition is invented for a task that never had one.
        let assigned = task(Some("n1"), TaskState::Assigned);
        assert!(orphaned_status(&assigned, "m", at(1)).conditions.is_empty());
    }

    #[test]
    fn explains_why_a_node_is_not_ready() {
        assert_eq!(
            not_ready_message(Some(at(60)), Some(at(0))),
            "heartbeat lease expired at 1970-01-01T00:01:00Z"
        );
        assert_eq!(
            not_ready_message(None, Some(at(0))),
            "no heartbeat lease (last heartbeat reported at 1970-01-01T00:00:00Z)"
        );
        assert_eq!(
            not_ready_message(None, None),
            "no heartbeat lease; the agent never reported"
        );
    }
}
