//! Probes this node's running tasks: the startup, liveness and readiness controllers.
//!
//! DESIGN §5, node side, and docs/task-lifecycle.md, "Probe conditions": three loops, one
//! per probe kind ([`controller`]), each with one worker per running task of the node.
//! Startup gates the other two (they start once `Started` is `True`); a startup or
//! liveness failure beyond its threshold stops the container, and the task runtime then
//! reports the task `failed`; a readiness failure only flips `Ready`. Docker's own
//! HEALTHCHECK counts too: `unhealthy` is a liveness failure, `starting` keeps the task out
//! of traffic. A condition is written only when it changes, with an Event when a probe
//! failure changed it.

pub mod conditions;
mod controller;
pub mod exec;
pub mod health;
pub mod http;
pub mod prober;
pub mod tcp;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use dctl_apis::event::EventSource;
use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::probe::ProbeKind;
use dctl_apis::task::CONDITION_READY;
use dctl_apis::{Condition, EventType, ObjectReference, Task, TaskState};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::{watcher, ObjectKey};
use futures::StreamExt;
use tokio::sync::watch;

pub use prober::{ProbeResult, Prober, Timings, Verdict};

/// How many times a condition write re-reads the task after losing a race.
const WRITE_ATTEMPTS: usize = 5;

/// The probe controllers' settings; `node_name` is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbesConfig {
    /// The node whose assigned tasks are probed.
    pub node_name: String,
    /// How often a container with a Docker HEALTHCHECK has its health read. Default 1 s.
    pub health_period: Duration,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            node_name: String::new(),
            health_period: Duration::from_secs(1),
        }
    }
}

impl ProbesConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        ProbesConfig {
            node_name: node_name.into(),
            ..Default::default()
        }
    }

    #[must_use]
    pub fn health_period(mut self, period: Duration) -> Self {
        self.health_period = period;
        self
    }
}

/// Why the probe controllers cannot run at all; once running they only stop on shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ProbesError {
    #[error("invalid node name {node:?}: {reason}")]
    InvalidNodeName { node: String, reason: &'static str },
}

/// Probes this node's running tasks until `shutdown` resolves.
///
/// # Errors
/// `InvalidNodeName` for an empty node name or one with `/`.
///
/// # Recovery
/// etcd and Docker outages are logged and retried; a condition that could not be written
/// is written at the next probe.
pub async fn run(
    store: Store,
    docker: Docker,
    config: ProbesConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProbesError> {
    let node = config.node_name.clone();
    if let Some(reason) = super::node_name_problem(&node) {
        return Err(ProbesError::InvalidNodeName { node, reason });
    }
    let (reader, writer) = reflector::store::<Task>();
    let assignments = reflector(
        writer,
        watcher::watcher::<Task>(store.clone(), watcher::Config::assignments(&node)),
    );
    let (changed, changes) = watch::channel(());
    let follow = assignments.for_each(move |event| {
        match event {
            Ok(_) => changed.send_replace(()),
            Err(error) => tracing::warn!(%error, "probes: the assignments' watch paused"),
        }
        futures::future::ready(())
    });
    let recorder = Recorder::new(
        store.clone(),
        EventSource {
            component: "agent".to_string(),
            host: node.clone(),
        },
    );
    let ctx = Arc::new(Context {
        store,
        docker,
        config,
        tasks: reader,
        recorder,
    });
    tracing::info!(node, "probe controllers started");
    let loops = futures::future::join3(
        controller::run(ProbeKind::Startup, ctx.clone(), changes.clone()),
        controller::run(ProbeKind::Liveness, ctx.clone(), changes.clone()),
        controller::run(ProbeKind::Readiness, ctx, changes),
    );
    tokio::select! {
        _ = follow => {}
        _ = loops => {}
        _ = shutdown => {}
    }
    tracing::info!(node, "probe controllers stopped");
    Ok(())
}

/// What the three loops and their workers share.
struct Context {
    store: Store,
    docker: Docker,
    config: ProbesConfig,
    /// The node's assignments, as the watcher last saw them.
    tasks: Reader<Task>,
    recorder: Recorder,
}

/// The one container of one task that a worker probes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    key: ObjectKey,
    uid: String,
    container_id: String,
}

impl Target {
    /// The task's running container, if it has one.
    fn of(task: &Task) -> Option<Target> {
        let status = task.status.as_ref()?;
        if status.state != TaskState::Running {
            return None;
        }
        Some(Target {
            key: ObjectKey::of(task),
            uid: task.metadata.uid.clone(),
            container_id: status.container_id.clone()?,
        })
    }

    /// Whether `task` is still this target's task, running this container.
    fn is(&self, task: &Task) -> bool {
        Target::of(task).as_ref() == Some(self)
    }
}

impl Context {
    /// The target's task as cached, while it still runs the target's container.
    fn task(&self, target: &Target) -> Option<Arc<Task>> {
        self.tasks.get(&target.key).filter(|task| target.is(task))
    }

    /// Sets `conditions` on the target's task, re-reading it after a lost race; never
    /// overwrites a `Ready` that the task runtime set to `Terminating`. Returns whether
    /// anything changed (nothing is written otherwise, nor for a task that moved on).
    async fn set_conditions(
        &self,
        target: &Target,
        conditions: &[Condition],
    ) -> Result<bool, StoreError> {
        let key = &target.key;
        for attempt in 1..=WRITE_ATTEMPTS {
            let Some(mut task) = self
                .store
                .try_get::<Task>(&key.namespace, &key.name)
                .await?
            else {
                return Ok(false);
            };
            if !target.is(&task) {
                return Ok(false);
            }
            let Some(status) = task.status.as_mut() else {
                return Ok(false);
            };
            let terminating = find_condition(&status.conditions, CONDITION_READY)
                .is_some_and(|c| c.reason == conditions::REASON_TERMINATING);
            let mut changed = false;
            for condition in conditions {
                if terminating && condition.type_ == CONDITION_READY {
                    continue;
                }
                changed |= set_condition(&mut status.conditions, condition.clone());
            }
            if !changed {
                return Ok(false);
            }
            match self.store.update_status(&task).await {
                Ok(_) => return Ok(true),
                Err(error) if error.is_conflict() && attempt < WRITE_ATTEMPTS => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(false)
    }

    /// Records an Event about the target's task; a failure is only logged.
    async fn record(&self, task: &Task, type_: EventType, reason: &str, message: &str) {
        let object = ObjectReference::to(task);
        if let Err(error) = self.recorder.publish(&object, type_, reason, message).await {
            tracing::warn!(task = %ObjectKey::of(task), reason, %error, "cannot record an event");
        }
    }
}
