//! Runs this node's tasks as Docker containers: the agent's task runtime.
//!
//! DESIGN §5, node side: create with labels that tie the container to its task uid,
//! start, watch Docker events, report status, stop with the grace period, remove; adopt
//! our own containers after a restart instead of duplicating them; remove containers of
//! tasks that are gone. Who writes which field is in docs/task-lifecycle.md: this loop
//! writes `Task.status` from `accepted` on, for the tasks bound to its node only.
//!
//! The loop is a [`Controller`] over the node's assignments (never every Task), triggered
//! by the assignments' changes, by Docker's container events, and by a periodic sweep of
//! the node's containers; each reconcile converges one task key ([`reconcile`]).

mod adopt;
mod docker_events;
mod drain;
mod host_ports;
mod launch;
mod observed;
mod reconcile;
mod status;
mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use dctl_apis::event::EventSource;
use dctl_apis::{EventType, ObjectReference, Task};
use dctl_runtime::controller::{
    backoff_on_error, triggers_from_events, Config as ControllerConfig, Controller,
};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::Store;
use dctl_runtime::{watcher, ObjectKey};

pub use reconcile::ReconcileError;
pub use status::{next_status, Gates, Report};

/// The controller's name in logs, spans and metrics.
const CONTROLLER: &str = "tasks";

/// The task runtime's settings; `node_name` is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRuntimeConfig {
    /// The node whose assignments this runtime runs, and whose `dctl.node` label it puts
    /// on (and looks for on) containers.
    pub node_name: String,
    /// Extra labels on every container (tests add `dctl.test=<run id>`). The contract's
    /// labels win over these.
    pub container_labels: BTreeMap<String, String>,
    /// How often every task and every container of the node is checked again, to catch
    /// what no event announced (a container removed while Docker's events were down).
    /// Default 10 s.
    pub resync_period: Duration,
    /// How long the one pull of a missing image may take before the task is rejected.
    /// Default 60 s.
    pub pull_timeout: Duration,
}

impl Default for TaskRuntimeConfig {
    fn default() -> Self {
        TaskRuntimeConfig {
            node_name: String::new(),
            container_labels: BTreeMap::new(),
            resync_period: Duration::from_secs(10),
            pull_timeout: Duration::from_secs(60),
        }
    }
}

impl TaskRuntimeConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        TaskRuntimeConfig {
            node_name: node_name.into(),
            ..Default::default()
        }
    }

    #[must_use]
    pub fn container_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.container_labels.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn resync_period(mut self, period: Duration) -> Self {
        self.resync_period = period;
        self
    }

    #[must_use]
    pub fn pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }
}

/// Why the task runtime cannot run at all; once running it only stops on shutdown.
#[derive(Debug, thiserror::Error)]
pub enum TaskRuntimeError {
    #[error("invalid node name {node:?}: {reason}")]
    InvalidNodeName { node: String, reason: &'static str },
}

/// Runs this node's tasks until `shutdown` resolves; runs in flight finish first (a stop
/// in progress gets its grace period). Containers are left running at shutdown: the next
/// start adopts them.
///
/// # Errors
/// `InvalidNodeName` for an empty node name or one with `/`, which the assignment keys
/// cannot hold.
///
/// # Recovery
/// etcd and Docker outages are retried with backoff and logged; no task is lost, and no
/// container is judged before the node's assignments have been fully read.
pub async fn run(
    store: Store,
    docker: Docker,
    config: TaskRuntimeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TaskRuntimeError> {
    let node = config.node_name.clone();
    if let Some(reason) = super::node_name_problem(&node) {
        return Err(TaskRuntimeError::InvalidNodeName { node, reason });
    }

    let (reader, writer) = reflector::store::<Task>();
    let assignments = reflector(
        writer,
        watcher::watcher::<Task>(store.clone(), watcher::Config::assignments(&node)),
    );
    let recorder = Recorder::new(
        store.clone(),
        EventSource {
            component: "agent".to_string(),
            host: node.clone(),
        },
    );
    let controller_config = ControllerConfig::default()
        // Docker calls wait on the engine, and a stop waits out a grace period: more
        // keys in flight than cores is what keeps a mass stop short.
        .concurrency(16)
        .resync_period(Some(config.resync_period))
        .backoff(Duration::from_millis(200), Duration::from_secs(30));
    let controller = Controller::new(CONTROLLER, reader.clone(), controller_config)
        .with_triggers(triggers_from_events(assignments))
        .with_triggers(docker_events::docker_event_triggers(
            docker.clone(),
            node.clone(),
        ))
        .with_triggers(adopt::container_sweeps(
            docker.clone(),
            node.clone(),
            config.resync_period,
        ))
        .with_shutdown(shutdown);
    let context = Arc::new(Context {
        store,
        docker,
        config,
        tasks: reader,
        recorder,
        pull_failures: Mutex::new(HashMap::new()),
        networks: tokio::sync::Mutex::new(()),
    });
    tracing::info!(node, "task runtime started");
    controller
        .run(reconcile::reconcile, backoff_on_error, context)
        .await;
    tracing::info!(node, "task runtime stopped");
    Ok(())
}

/// What every reconcile shares.
struct Context {
    store: Store,
    docker: Docker,
    config: TaskRuntimeConfig,
    /// The node's assignments, as the watcher last saw them.
    tasks: Reader<Task>,
    recorder: Recorder,
    /// The failed pull of each task, by key, with the task's uid: a task's image is
    /// pulled at most once, however often its rejection has to be retried.
    pull_failures: Mutex<HashMap<ObjectKey, (String, String)>>,
    /// Held while the networks of one task are ensured: the tasks of a service start
    /// together, and concurrent creates of one Docker network with a subnet fail with
    /// "Pool overlaps" for all but the first.
    networks: tokio::sync::Mutex<()>,
}

impl Context {
    fn node(&self) -> &str {
        &self.config.node_name
    }

    /// Records an Event about `task`. Events are for humans: a failure is logged, not
    /// returned, so it never holds up the task itself.
    async fn record(&self, task: &Task, type_: EventType, reason: &str, message: &str) {
        let object = ObjectReference::to(task);
        if let Err(error) = self.recorder.publish(&object, type_, reason, message).await {
            tracing::warn!(task = %ObjectKey::of(task), reason, %error, "cannot record an event");
        }
    }

    /// The earlier failed pull of this task's image, if any.
    fn pull_failure(&self, key: &ObjectKey, uid: &str) -> Option<String> {
        let failures = self.pull_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(key)
            .filter(|(failed_uid, _)| failed_uid == uid)
            .map(|(_, message)| message.clone())
    }

    fn remember_pull_failure(&self, key: &ObjectKey, uid: &str, message: &str) {
        let mut failures = self.pull_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.insert(key.clone(), (uid.to_string(), message.to_string()));
    }

    /// Forgets pull failures of tasks no longer assigned as they were.
    fn forget_pull_failure(&self, key: &ObjectKey, current_uid: Option<&str>) {
        let mut failures = self.pull_failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures
            .get(key)
            .is_some_and(|(uid, _)| Some(uid.as_str()) != current_uid)
        {
            failures.remove(key);
        }
    }
}
