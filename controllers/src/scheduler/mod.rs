//! The scheduler: binds pending tasks to the nodes that pass its filters, spread out.
//!
//! One pass places every pending task (swarmkit's batch): it filters the nodes for each
//! task, ranks those left, counts the placement, and goes on to the next task; then it
//! binds them all. A task no node fits stays `pending`, its status saying which filter
//! refused how many nodes. Passes run on every change to a Task, Node or Service, and on
//! a slow resync; a pass is keyed on one sentinel key, so two never overlap.

mod explain;
mod filters;
mod node_info;
mod plan;
mod spread;

#[cfg(test)]
mod fixtures;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use dctl_apis::event::EventSource;
use dctl_apis::task::{TaskDesiredState, TaskState, TaskStatus};
use dctl_apis::{EventType, Node, ObjectReference, Resource, Service, Task};
use dctl_runtime::controller::{
    self, backoff_on_error, Action, Controller, Trigger, TriggerReason,
};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::watcher::{self, watcher};
use dctl_runtime::ObjectKey;
use futures::{stream, Stream, StreamExt};

use node_info::node_infos;
use plan::Decision;

/// The scheduler's settings, built by value.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How often pending tasks are tried again though no change announced a reason to:
    /// 5 minutes by default (kube-scheduler's period for unschedulable pods); `None`
    /// leaves only the watches.
    pub resync_period: Option<Duration>,
    /// How many tasks of a pass are written (bound or explained) at once. Default 8.
    pub writes_in_flight: usize,
    /// The host named as the source of the scheduler's Events; empty by default.
    pub host: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resync_period: Some(Duration::from_secs(5 * 60)),
            writes_in_flight: 8,
            host: String::new(),
        }
    }
}

impl Config {
    #[must_use]
    pub fn resync_period(mut self, period: Option<Duration>) -> Self {
        self.resync_period = period;
        self
    }

    #[must_use]
    pub fn writes_in_flight(mut self, writes: usize) -> Self {
        self.writes_in_flight = writes;
        self
    }

    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
}

/// A write of a pass that failed for a reason other than a lost race; the pass is retried
/// with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the pending status of task {task}: {source}")]
    Status {
        task: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("cannot bind task {task} to node {node}: {source}")]
    Bind {
        task: ObjectKey,
        node: String,
        #[source]
        source: StoreError,
    },
}

/// The Events' component name.
const COMPONENT: &str = "scheduler";

/// Runs the scheduler until `shutdown` resolves: watches Tasks, Nodes and Services and
/// binds pending tasks as they come and as nodes change.
///
/// # Errors
/// None so far: a failed pass is logged and retried with backoff, and the watches recover
/// by themselves. The `Result` leaves room for setup that can fail.
pub async fn run(
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tasks, task_cache) = reflector::store::<Task>();
    let (nodes, node_cache) = reflector::store::<Node>();
    let (services, service_cache) = reflector::store::<Service>();
    let all = watcher::Config::default;
    let task_events = reflector(task_cache, watcher::<Task>(store.clone(), all()));
    let node_events = reflector(node_cache, watcher::<Node>(store.clone(), all()));
    let service_events = reflector(service_cache, watcher::<Service>(store.clone(), all()));

    // The controller's own resync would queue every Task's key; passes have one key.
    let settings = controller::Config::default()
        .concurrency(1)
        .resync_period(None);
    let mut scheduler = Controller::new(COMPONENT, tasks.clone(), settings)
        .with_triggers(passes_on(task_events, may_change_placements))
        .with_triggers(passes_on(node_events, |_| true))
        .with_triggers(passes_on(service_events, |_| true))
        .with_shutdown(shutdown);
    if let Some(period) = config.resync_period {
        scheduler = scheduler.with_triggers(resyncs(period));
    }
    let source = EventSource {
        component: COMPONENT.into(),
        host: config.host.clone(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(store.clone(), source),
        store,
        tasks,
        nodes,
        services,
        written: Mutex::new(HashMap::new()),
        writes_in_flight: config.writes_in_flight.max(1),
    });
    scheduler.run(pass, backoff_on_error, context).await;
    Ok(())
}

/// The one key every pass runs under.
fn pass_key() -> ObjectKey {
    ObjectKey::new("", "pending-tasks")
}

/// Triggers a pass on each change of the watched kind for which `matters` holds, on each
/// deletion, and once each (re)list is in the cache.
fn passes_on<K: Resource>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    matters: fn(&K) -> bool,
) -> impl Stream<Item = Trigger> + Send + 'static {
    events.filter_map(move |event| {
        let trigger = match event {
            Ok(watcher::Event::Apply(object)) if matters(&object) => {
                Some(Trigger::related(pass_key(), &object))
            }
            Ok(watcher::Event::Delete(object)) => Some(Trigger::related(pass_key(), &object)),
            Ok(watcher::Event::InitDone) => Some(Trigger::new(pass_key(), TriggerReason::Listed)),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "scheduler watch error; it recovers by itself");
                None
            }
        };
        std::future::ready(trigger)
    })
}

/// Whether a changed task can change what a pass decides: it waits to be placed, or it
/// stopped counting on its node (finished, or being shut down). An agent's progress
/// reports on a running task do not.
fn may_change_placements(task: &Task) -> bool {
    let finished = task.status.as_ref().is_some_and(|s| s.state.is_terminal());
    let leaving = !matches!(
        task.spec.desired_state,
        TaskDesiredState::Running | TaskDesiredState::Ready
    );
    plan::is_pending(task) || finished || leaving
}

/// A pass every `period`, the first one period from now (the first list triggers one).
fn resyncs(period: Duration) -> impl Stream<Item = Trigger> + Send + 'static {
    let start = tokio::time::Instant::now() + period;
    let interval = tokio::time::interval_at(start, period);
    stream::unfold(interval, |mut interval| async move {
        interval.tick().await;
        Some((Trigger::new(pass_key(), TriggerReason::Resync), interval))
    })
}

/// What passes share.
struct Context {
    store: Store,
    recorder: Recorder,
    tasks: Reader<Task>,
    nodes: Reader<Node>,
    services: Reader<Service>,
    /// The scheduler's own writes that the cache has not shown yet. A pass that follows
    /// a bind before its watch event arrives would otherwise count the node without it.
    written: Mutex<HashMap<ObjectKey, Arc<Task>>>,
    writes_in_flight: usize,
}

/// One pass: place every pending task, then write the decisions.
async fn pass(_key: ObjectKey, context: Arc<Context>) -> Result<Action, Error> {
    if !context.nodes.is_ready() || !context.services.is_ready() {
        // Their first list triggers a pass.
        return Ok(Action::await_change());
    }
    let writes: Vec<(Task, Decision)> = {
        let tasks = context.tasks_seen();
        let services: HashMap<ObjectKey, Arc<Service>> = context
            .services
            .state()
            .into_iter()
            .map(|service| (ObjectKey::of(&*service), service))
            .collect();
        let batch = plan::batch(&tasks, &services);
        if batch.is_empty() {
            return Ok(Action::await_change());
        }
        let mut nodes = node_infos(&context.nodes.state(), &tasks);
        let decisions = plan::place(&mut nodes, &batch);
        let batch = batch.iter().map(|pending| pending.task.clone());
        batch.zip(decisions).collect()
    };
    tracing::debug!(tasks = writes.len(), "placed a batch");
    let results: Vec<Result<(), Error>> = stream::iter(writes)
        .map(|(task, decision)| context.write(task, decision))
        .buffer_unordered(context.writes_in_flight)
        .collect()
        .await;
    // Every decision was tried; the first failure sends the pass to backoff.
    results.into_iter().collect::<Result<(), Error>>()?;
    Ok(Action::await_change())
}

impl Context {
    /// The cached tasks, with the scheduler's own newer writes in place of their entries.
    fn tasks_seen(&self) -> Vec<Arc<Task>> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the writes the cache has caught up with, and those of deleted tasks.
        written.retain(|key, mine| {
            self.tasks.get(key).is_some_and(|cached| {
                cached.metadata.resource_version < mine.metadata.resource_version
            })
        });
        let mut tasks = self.tasks.state();
        for task in &mut tasks {
            if let Some(mine) = written.get(&ObjectKey::of(&**task)) {
                *task = mine.clone();
            }
        }
        tasks
    }

    fn remember(&self, task: Task) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.insert(ObjectKey::of(&task), Arc::new(task));
    }

    async fn write(&self, task: Task, decision: Decision) -> Result<(), Error> {
        match decision {
            Decision::Bind(node) => self.bind(task, &node).await,
            Decision::NoNodeFits(explanation) => self.leave_pending(task, explanation).await,
        }
    }

    /// Marks the task pending if it has never been (the contract's order of states), then
    /// binds it.
    async fn bind(&self, mut task: Task, node: &str) -> Result<(), Error> {
        let key = ObjectKey::of(&task);
        if task
            .status
            .as_ref()
            .is_none_or(|s| s.state < TaskState::Pending)
        {
            let message = task.status.as_ref().map(|s| s.message.clone());
            let status = pending(task.status.as_ref(), message.unwrap_or_default());
            match self.write_status(task, status).await? {
                Some(written) => task = written,
                None => return Ok(()),
            }
        }
        let bound = match self.store.bind_task(&task, node).await {
            Ok(bound) => bound,
            Err(error) if lost_race(&error) => {
                tracing::debug!(task = %key, %error, "the task changed; next pass");
                return Ok(());
            }
            // Bound elsewhere meanwhile: another scheduler won (one acts at a time, but a
            // former leader may still be finishing a pass).
            Err(error @ StoreError::Invalid { .. }) => {
                tracing::warn!(task = %key, %error, "not bound");
                return Ok(());
            }
            Err(source) => {
                let node = node.to_string();
                return Err(Error::Bind {
                    task: key,
                    node,
                    source,
                });
            }
        };
        tracing::debug!(task = %key, node, "bound");
        let message = format!("bound to node {node}");
        self.record(&bound, EventType::Normal, "Scheduled", &message)
            .await;
        self.remember(bound);
        Ok(())
    }

    /// Writes the explanation into the pending status when it changed, with a
    /// `FailedScheduling` event.
    async fn leave_pending(&self, task: Task, explanation: String) -> Result<(), Error> {
        let status = pending(task.status.as_ref(), explanation.clone());
        if task.status.as_ref() == Some(&status) {
            return Ok(());
        }
        if let Some(written) = self.write_status(task, status).await? {
            let warning = EventType::Warning;
            self.record(&written, warning, "FailedScheduling", &explanation)
                .await;
        }
        Ok(())
    }

    /// Writes `status`; `None` when the task changed or went meanwhile (the next pass
    /// sees it as it is now).
    async fn write_status(
        &self,
        mut task: Task,
        status: TaskStatus,
    ) -> Result<Option<Task>, Error> {
        task.status = Some(status);
        match self.store.update_status(&task).await {
            Ok(written) => {
                self.remember(written.clone());
                Ok(Some(written))
            }
            Err(error) if lost_race(&error) => {
                tracing::debug!(task = %ObjectKey::of(&task), %error, "the task changed; next pass");
                Ok(None)
            }
            Err(source) => Err(Error::Status {
                task: ObjectKey::of(&task),
                source,
            }),
        }
    }

    /// Events are for humans: one that cannot be written is logged, never fatal.
    async fn record(&self, task: &Task, type_: EventType, reason: &str, message: &str) {
        let object = ObjectReference::to(task);
        if let Err(error) = self.recorder.publish(&object, type_, reason, message).await {
            let task = ObjectKey::of(task);
            tracing::warn!(%task, reason, %error, "cannot record an event");
        }
    }
}

/// `previous` moved to (or kept at) `pending` with `message`; the timestamp is when the
/// task became pending.
fn pending(previous: Option<&TaskStatus>, message: String) -> TaskStatus {
    let mut status = previous.cloned().unwrap_or_default();
    if status.state != TaskState::Pending {
        status.state = TaskState::Pending;
        // The store keeps timestamps to the millisecond.
        status.timestamp = Some(Utc::now().trunc_subsecs(3));
    }
    status.message = message;
    status
}

/// A write lost to someone else's: the task changed or went. The task's own watch event
/// brings the next pass.
fn lost_race(error: &StoreError) -> bool {
    error.is_conflict() || error.is_not_found()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixtures::{bound, task};

    #[test]
    fn pending_keeps_the_time_the_task_became_pending() {
        let first = pending(None, String::new());
        assert_eq!(
            (first.state, first.message.as_str()),
            (TaskState::Pending, "")
        );
        let became = first.timestamp.expect("set on the move to pending");
        let explained = pending(Some(&first), "0/1 nodes are available: x".into());
        assert_eq!(explained.timestamp, Some(became));
        assert_eq!(explained.message, "0/1 nodes are available: x");
        let new = TaskStatus {
            state: TaskState::New,
            message: "created".into(),
            ..Default::default()
        };
        let moved = pending(Some(&new), "created".into());
        assert_eq!(
            (moved.state, moved.message.as_str()),
            (TaskState::Pending, "created")
        );
        assert!(moved.timestamp.is_some());
    }

    #[test]
    fn which_task_changes_bring_a_pass() {
        let running = bound(task("web", "web.1"), "a");
        let mut finished = running.clone();
        finished.status.as_mut().unwrap().state = TaskState::Failed;
        let mut stopping = running.clone();
        stopping.spec.desired_state = TaskDesiredState::Shutdown;
        let cases = [
            (task("web", "web.2").build(), true),
            (running, false),
            (finished, true),
            (stopping, true),
        ];
        for (task, expected) in cases {
            assert_eq!(may_change_placements(&task), expected, "{:?}", task.status);
        }
    }
}
