//! The service controller: keeps one task per slot or eligible node, as DESIGN §5 says.
//!
//! Level-triggered over three caches: Services (its own key), Tasks (a change triggers the
//! owning Service) and Nodes (a change triggers the global Services and those with tasks
//! on the node). The decisions are pure ([`slots`], [`restart`], [`status`]); the reconcile
//! reads the caches, asks them, and writes what they say. Who writes which field is
//! `docs/task-lifecycle.md`: this controller creates Tasks, sets their `desiredState`,
//! deletes old history, and writes `Service.status`.

pub mod dependencies;
pub mod eligibility;
mod expectations;
pub mod naming;
pub mod restart;
pub mod revisions;
pub mod rollout;
pub mod slots;
pub mod status;
mod triggers;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dctl_apis::event::EventSource;
use dctl_apis::service::{RolloutState, RolloutStatus, ServiceStatus};
use dctl_apis::task::{TaskDesiredState, TaskStatus};
use dctl_apis::{EventType, Kind, Node, ObjectReference, Service, Task};
use dctl_runtime::controller::{self, backoff_on_error, Action, Controller};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::watcher::{self, watcher};
use dctl_runtime::ObjectKey;

use eligibility::NodeFit;
use expectations::Expectations;
use slots::{CreateReason, Held, HeldReason, Input, Plan, StopReason};
use triggers::{triggers_from_nodes, triggers_from_tasks};

/// The controller's name in logs, metrics and the events it records.
pub const COMPONENT: &str = "service-controller";

/// How long a reconcile waits for the Task and Node caches' first list before it looks
/// again (the lists themselves trigger every service too; this is the safety net).
const CACHE_WAIT: Duration = Duration::from_millis(200);

/// How long a reconcile waits for its own last writes to reach the caches before it looks
/// again; the writes' watch events normally trigger it well before.
const EXPECTATION_WAIT: Duration = Duration::from_secs(1);

/// How often a service held for its dependencies looks at them again (their changes do
/// not trigger it).
const DEPENDENCY_WAIT: Duration = Duration::from_secs(1);

/// How soon a status write that lost a race (the user changed the spec meanwhile) is tried
/// again; the change's own event normally comes first.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// The service controller's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Finished tasks kept per slot (per node for a global service), for `dctl get tasks`
    /// and the restart policy's `maxAttempts`; 5 by default, Swarm's
    /// `TaskHistoryRetentionLimit`.
    pub task_history_limit: u32,
    /// The host named as the source of the events this controller records.
    pub host: String,
    /// The loop's concurrency, resync and error backoff.
    pub controller: controller::Config,
}

impl Config {
    pub const DEFAULT_TASK_HISTORY_LIMIT: u32 = 5;

    #[must_use]
    pub fn task_history_limit(mut self, limit: u32) -> Self {
        self.task_history_limit = limit;
        self
    }

    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    #[must_use]
    pub fn controller(mut self, controller: controller::Config) -> Self {
        self.controller = controller;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            task_history_limit: Self::DEFAULT_TASK_HISTORY_LIMIT,
            host: String::new(),
            controller: controller::Config::default(),
        }
    }
}

/// A write the reconcile could not make; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create task {task} of service {service}: {source}")]
    CreateTask {
        service: ObjectKey,
        task: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "cannot set the desired state of task {task} of service {service} to {state}: {source}"
    )]
    SetDesiredState {
        service: ObjectKey,
        task: String,
        state: TaskDesiredState,
        #[source]
        source: StoreError,
    },
    #[error("cannot delete task {task} from the history of service {service}: {source}")]
    DeleteTask {
        service: ObjectKey,
        task: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot read node {node}, where tasks of service {service} are: {source}")]
    ReadNode {
        service: ObjectKey,
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot record the revision history of service {service}: {source}")]
    Revision {
        service: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("cannot roll service {service} back: {source}")]
    RollBack {
        service: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("cannot write the status of service {service}: {source}")]
    WriteStatus {
        service: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// Runs the service controller until `shutdown` resolves; the runs in flight finish first.
///
/// # Errors
/// None today: store failures are retried per service with backoff, and the watches
/// recover by themselves. The `Result` is the entry point's contract with its callers.
pub async fn run(
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let controller =
        Controller::<Service>::for_store(COMPONENT, store.clone(), config.controller.clone());
    let services = controller.reader();
    let (tasks, task_cache) = reflector::store::<Task>();
    let (nodes, node_cache) = reflector::store::<Node>();
    let task_events = reflector(
        task_cache,
        watcher(store.clone(), watcher::Config::default()),
    );
    let node_events = reflector(
        node_cache,
        watcher(store.clone(), watcher::Config::default()),
    );
    let source = EventSource {
        component: COMPONENT.to_string(),
        host: config.host.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(store.clone(), source),
        store,
        services: services.clone(),
        tasks: tasks.clone(),
        nodes,
        config,
        expectations: Expectations::default(),
        reported: Mutex::default(),
    });
    controller
        .with_triggers(triggers_from_tasks(task_events, services.clone()))
        .with_triggers(triggers_from_nodes(node_events, services, tasks))
        .with_shutdown(shutdown)
        .run(reconcile, backoff_on_error, ctx)
        .await;
    Ok(())
}

struct Context {
    store: Store,
    recorder: Recorder,
    services: Reader<Service>,
    tasks: Reader<Task>,
    nodes: Reader<Node>,
    config: Config,
    expectations: Expectations,
    /// Held slots already told about in an event, per service: (task, reason).
    reported: Mutex<HashMap<ObjectKey, HashSet<(String, &'static str)>>>,
}

/// Keeps one task per slot (replicated) or per eligible node (global), replaces failed
/// tasks per the restart policy, scales down non-running and most-loaded first, and keeps
/// a bounded task history; then reports what it sees in the service's status.
async fn reconcile(key: ObjectKey, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.tasks.is_ready() || !ctx.nodes.is_ready() {
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let Some(service) = ctx.services.get(&key) else {
        // Its tasks go with it: the garbage collector deletes them, their owner uid gone.
        ctx.expectations.forget(&key);
        ctx.reported_for(&key, None);
        return Ok(Action::await_change());
    };
    if !ctx
        .expectations
        .satisfied(&key, |kind, key| ctx.cached_revision(kind, key))
    {
        return Ok(Action::requeue(EXPECTATION_WAIT));
    }
    let owned = ctx.tasks_of(&service);
    let tasks: Vec<&Task> = owned.iter().map(AsRef::as_ref).collect();
    let now = chrono::Utc::now();
    // Only a service that never had a task is held: dependencies order the start-up.
    let holding = tasks.is_empty() && !service.spec.depends_on.is_empty();
    let waits = if holding {
        ctx.dependency_waits(&service)
    } else {
        Vec::new()
    };
    let nodes = ctx.node_fits(&service, &tasks).await?;
    if !waits.is_empty() {
        let desired = status::desired_replicas(&service, &tasks, &nodes);
        ctx.hold_for_dependencies(&service, &waits, desired, now)
            .await?;
        return Ok(Action::requeue(DEPENDENCY_WAIT));
    }
    let hash = revisions::current_hash(&service);
    let revision = ctx.revision(&service, &hash).await?;
    let mut plan = slots::plan(&Input {
        service: &service,
        tasks: &tasks,
        nodes: &nodes,
        history_limit: ctx.config.task_history_limit,
        order: rollout::order(&service, &hash),
        now,
    });
    let desired = status::desired_replicas(&service, &tasks, &nodes);
    let step = rollout::step(&service, &tasks, &plan.survey, &hash, revision, now);
    if let Some(why) = &step.rollback {
        ctx.roll_back(&service, &hash, why, desired, now).await?;
        return Ok(Action::requeue(EXPECTATION_WAIT));
    }
    let batch = plan.stage_updates(step.start);
    if !batch.is_empty() {
        let slots: Vec<String> = batch.iter().map(ToString::to_string).collect();
        let message = format!(
            "Updating {} to revision {revision} ({})",
            slots.join(", "),
            plan.survey.order_word()
        );
        ctx.event(&service, EventType::Normal, "RolloutBatch", &message)
            .await;
    }
    let requeue = [plan.requeue_after, step.requeue_after]
        .into_iter()
        .flatten()
        .min();
    ctx.carry_out(&service, &tasks, plan).await?;
    for note in &step.events {
        ctx.event(&service, note.type_, note.reason, &note.message)
            .await;
    }

    let mut status = status::compute(&service, &tasks, desired, now);
    if holding {
        let met = dependencies::condition(&[], service.metadata.generation, now);
        if dctl_apis::meta::set_condition(&mut status.conditions, met) {
            let message = "Dependencies met: creating tasks";
            ctx.event(&service, EventType::Normal, "DependenciesReady", message)
                .await;
        }
    }
    status.rollout = step.status;
    status.revision = revision;
    status.revision_hash = hash;
    if !ctx.write_status(&service, status).await? {
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

impl Context {
    /// The service's own tasks: in its namespace, controlled by its uid (tasks of an
    /// earlier Service of the same name are the garbage collector's).
    fn tasks_of(&self, service: &Service) -> Vec<Arc<Task>> {
        let namespace = service.metadata.namespace();
        let uid = service.metadata.uid.as_str();
        self.tasks
            .state()
            .into_iter()
            .filter(|t| {
                t.metadata.namespace() == namespace && naming::controller_uid(t) == Some(uid)
            })
            .collect()
    }

    /// How every node stands for the service. A node that a current task names but the
    /// cache lacks is read from the store: the Node watch may lag the Task watch (etcd
    /// catches a watch up in rounds), and a node not seen yet must not read as one gone.
    async fn node_fits(
        &self,
        service: &Service,
        tasks: &[&Task],
    ) -> Result<BTreeMap<String, NodeFit>, Error> {
        let mut nodes = self.nodes.state();
        let cached: HashSet<String> = nodes.iter().map(|n| n.metadata.name.clone()).collect();
        let unseen: BTreeSet<&str> = tasks
            .iter()
            .filter(|t| slots::is_current(t))
            .flat_map(|t| [t.spec.node_name.as_deref(), t.spec.node.as_deref()])
            .flatten()
            .filter(|name| !cached.contains(*name))
            .collect();
        for name in unseen {
            let found = self.store.try_get::<Node>("", name).await;
            let found = found.map_err(|source| Error::ReadNode {
                service: ObjectKey::of(service),
                node: name.to_string(),
                source,
            })?;
            nodes.extend(found.map(Arc::new));
        }
        let nodes = nodes.iter().map(AsRef::as_ref);
        let platforms = &service.spec.placement.platforms;
        Ok(match service.spec.placement.parsed_constraints() {
            Ok(constraints) => eligibility::node_fits(nodes, &constraints, platforms),
            Err(error) => {
                // Validation refuses this at apply; a service written around it fits nowhere.
                let service = ObjectKey::of(service);
                tracing::warn!(%service, %error, "placement unusable");
                let mut fits = eligibility::node_fits(nodes, &[], &[]);
                fits.values_mut().for_each(|fit| fit.matches = false);
                fits
            }
        })
    }

    /// The number of the service's current revision, recording it in the history when the
    /// template or placement changed since the last look.
    async fn revision(&self, service: &Service, hash: &str) -> Result<i64, Error> {
        if let Some(status) = service.status.as_ref().filter(|s| s.revision_hash == hash) {
            return Ok(status.revision);
        }
        revisions::record(&self.store, service, hash)
            .await
            .map_err(|source| Error::Revision {
                service: ObjectKey::of(service),
                source,
            })
    }

    /// Rolls a failed rollout back: records the rollback in the status, then sets the
    /// template and placement of the previous revision, which the next reconcile rolls out
    /// with the `rollback` config. With no earlier revision, the rollout pauses instead.
    async fn roll_back(
        &self,
        service: &Service,
        hash: &str,
        why: &str,
        slots: u32,
        now: dctl_apis::Time,
    ) -> Result<(), Error> {
        let key = ObjectKey::of(service);
        let failed = |source| Error::RollBack {
            service: key.clone(),
            source,
        };
        let previous = revisions::previous(&self.store, service, hash)
            .await
            .map_err(failed)?;
        let mut status = service.status.clone().unwrap_or_default();
        let Some(previous) = previous else {
            if let Some(rollout) = status.rollout.as_mut() {
                rollout.state = RolloutState::Paused;
                rollout.message = format!("paused: {why}; no earlier revision to roll back to");
            }
            let message = status.rollout.as_ref().map(|r| r.message.clone());
            self.write_status(service, status).await?;
            let message = message.unwrap_or_default();
            self.event(service, EventType::Warning, "RolloutPaused", &message)
                .await;
            return Ok(());
        };
        let spec = &previous.spec;
        let message = format!("rolling back to revision {}: {why}", spec.revision);
        status.rollout = Some(RolloutStatus {
            state: RolloutState::RollbackStarted,
            message: message.clone(),
            revision: spec.revision,
            target: dctl_apis::revision::template_hash(&spec.template, &spec.placement),
            started_at: Some(now),
            completed_at: None,
            last_progress_at: Some(now),
            slots,
            progress: 0,
            failed_tasks: Vec::new(),
        });
        let mut updated = service.clone();
        updated.status = Some(status);
        let written = self.store.update_status(&updated).await.map_err(failed)?;
        self.expectations.wrote(&key, &written);
        let mut rolled_back = written;
        rolled_back.spec.template = spec.template.clone();
        rolled_back.spec.placement = spec.placement.clone();
        let written = self.store.update(&rolled_back).await.map_err(failed)?;
        self.expectations.wrote(&key, &written);
        self.event(service, EventType::Warning, "RollbackStarted", &message)
            .await;
        Ok(())
    }

    /// The service's dependencies that are not met, from the caches.
    fn dependency_waits(&self, service: &Service) -> Vec<dependencies::Wait> {
        let namespace = service.metadata.namespace();
        let found: Vec<(Arc<Service>, Vec<Arc<Task>>)> = service
            .spec
            .depends_on
            .iter()
            .filter_map(|d| self.services.get(&ObjectKey::new(namespace, &d.service)))
            .map(|other| {
                let tasks = self.tasks_of(&other);
                (other, tasks)
            })
            .collect();
        dependencies::waiting_for(service, |name| {
            found
                .iter()
                .find(|(other, _)| other.metadata.name == name)
                .map(|(other, tasks)| (other.as_ref(), tasks.iter().map(AsRef::as_ref).collect()))
        })
    }

    /// Says in the status (and, when it changes, in an event) what the service waits for;
    /// its desired replicas show meanwhile (`get svc`: READY 0/3, not 0/0).
    async fn hold_for_dependencies(
        &self,
        service: &Service,
        waits: &[dependencies::Wait],
        desired: u32,
        now: dctl_apis::Time,
    ) -> Result<(), Error> {
        let mut status = service.status.clone().unwrap_or_default();
        status.observed_generation = service.metadata.generation;
        status.replicas = desired;
        let condition = dependencies::condition(waits, service.metadata.generation, now);
        let message = condition.message.clone();
        let previous = dctl_apis::meta::find_condition(
            &status.conditions,
            dependencies::CONDITION_DEPENDENCIES_READY,
        )
        .map(|c| c.message.clone());
        dctl_apis::meta::set_condition(&mut status.conditions, condition);
        self.write_status(service, status).await?;
        if previous.as_deref() != Some(message.as_str()) {
            // The condition's "waiting for …" as a sentence: "Waiting for …".
            let message = format!("W{}", message.strip_prefix('w').unwrap_or(&message));
            self.event(
                service,
                EventType::Normal,
                "WaitingForDependencies",
                &message,
            )
            .await;
        }
        Ok(())
    }

    fn cached_revision(&self, kind: Kind, key: &ObjectKey) -> Option<i64> {
        match kind {
            Kind::Task => self.tasks.get(key)?.metadata.resource_version,
            Kind::Service => self.services.get(key)?.metadata.resource_version,
            _ => None,
        }
    }

    /// Writes the plan: creates, then stops (a replacement exists before its predecessor
    /// is let go), then starts, then deletes; records an event for what a human wants to
    /// read in `dctl describe`.
    async fn carry_out(&self, service: &Service, tasks: &[&Task], plan: Plan) -> Result<(), Error> {
        let key = ObjectKey::of(service);
        for new in &plan.create {
            let mut task = naming::new_task(service, &new.slot, new.desired_state);
            let restarts = restart_count(tasks, &new.reason);
            if restarts > 0 {
                task.status = Some(TaskStatus {
                    restart_count: restarts,
                    ..TaskStatus::default()
                });
            }
            let name = task.metadata.name.clone();
            let created = self
                .store
                .create(&task)
                .await
                .map_err(|source| Error::CreateTask {
                    service: key.clone(),
                    task: name.clone(),
                    source,
                })?;
            self.expectations.wrote(&key, &created);
            let message = match &new.reason {
                CreateReason::NewSlot => format!("Created task {name}"),
                CreateReason::Restart { replaces } => {
                    format!("Created task {name} to replace {replaces}, which ended")
                }
                CreateReason::Moved { replaces } => {
                    format!("Created task {name} to replace {replaces}, whose node is unavailable")
                }
                CreateReason::Update { replaces } => {
                    format!("Created task {name} with the new template to replace {replaces}")
                }
            };
            self.event(service, EventType::Normal, "SuccessfulCreate", &message)
                .await;
        }
        for stop in &plan.stop {
            let stopped = self
                .set_desired_state(&key, &stop.task, TaskDesiredState::Shutdown)
                .await?;
            if stopped && stop.live {
                let reason = match stop.reason {
                    StopReason::ScaledDown => "ScalingDown",
                    _ => "Killing",
                };
                let message = format!("Stopping task {}: {}", stop.task, stop.reason);
                self.event(service, EventType::Normal, reason, &message)
                    .await;
            }
        }
        for task in &plan.start {
            self.set_desired_state(&key, task, TaskDesiredState::Running)
                .await?;
        }
        for task in &plan.delete {
            match self
                .store
                .delete::<Task>(key.namespace.as_str(), task)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {}
                Err(source) => {
                    return Err(Error::DeleteTask {
                        service: key.clone(),
                        task: task.clone(),
                        source,
                    })
                }
            }
            let task_key = ObjectKey::new(&key.namespace, task);
            self.expectations.deleted::<Task>(&key, task_key);
        }
        let names: HashSet<&str> = tasks.iter().map(|t| t.metadata.name.as_str()).collect();
        self.reported_for(&key, Some(&names));
        for held in &plan.held {
            self.report_held(service, held).await;
        }
        Ok(())
    }

    /// Sets a task's desired state (this controller is its only writer): `shutdown` from
    /// anything before it, `running` only from `ready` (a staged task is started, a stopped
    /// one never revived). Returns whether it changed anything.
    async fn set_desired_state(
        &self,
        service: &ObjectKey,
        task: &str,
        state: TaskDesiredState,
    ) -> Result<bool, Error> {
        let mut changed = false;
        let result = self
            .store
            .modify::<Task, _>(&service.namespace, task, |task| {
                let from = task.spec.desired_state;
                changed = match state {
                    TaskDesiredState::Running => from == TaskDesiredState::Ready,
                    _ => matches!(from, TaskDesiredState::Running | TaskDesiredState::Ready),
                };
                if changed {
                    task.spec.desired_state = state;
                }
                Ok(changed)
            })
            .await;
        match result {
            Ok(written) => {
                self.expectations.wrote(service, &written);
                Ok(changed)
            }
            // Gone already (deleted by hand, or by the garbage collector): nothing to stop.
            Err(error) if error.is_not_found() => Ok(false),
            Err(source) => Err(Error::SetDesiredState {
                service: service.clone(),
                task: task.to_string(),
                state,
                source,
            }),
        }
    }

    /// Writes `status` if it differs from the cached one. Returns `false` when the write
    /// lost a race with a spec change (the change's event will trigger a new run).
    async fn write_status(&self, service: &Service, status: ServiceStatus) -> Result<bool, Error> {
        if service.status.as_ref() == Some(&status) {
            return Ok(true);
        }
        let key = ObjectKey::of(service);
        let mut updated = service.clone();
        updated.status = Some(status);
        match self.store.update_status(&updated).await {
            Ok(written) => {
                self.expectations.wrote(&key, &written);
                Ok(true)
            }
            Err(error) if error.is_conflict() || error.is_not_found() => {
                tracing::debug!(service = %key, %error, "status write lost a race; looking again");
                Ok(false)
            }
            Err(source) => Err(Error::WriteStatus {
                service: key,
                source,
            }),
        }
    }

    /// A Warning event for a slot the restart policy holds, once per ended task and reason.
    async fn report_held(&self, service: &Service, held: &Held) {
        let (reason, message) = match &held.reason {
            HeldReason::BackOff { quick_failures, at } => {
                let wait = (*at - chrono::Utc::now()).num_milliseconds().max(0);
                let wait = Duration::from_millis(u64::try_from(wait).unwrap_or_default());
                let message = format!(
                    "Back-off restarting failed task {} in {}: {quick_failures} quick failures \
                     in a row, next try in {}",
                    held.task,
                    held.slot,
                    dctl_apis::Duration::from(wait),
                );
                ("BackOff", message)
            }
            HeldReason::MaxAttempts { attempts, max } => {
                let message = format!(
                    "Task {} in {} ended and is not replaced: {attempts} restarts used up \
                     maxAttempts {max}",
                    held.task, held.slot,
                );
                ("MaxAttemptsReached", message)
            }
        };
        let first = self
            .lock_reported()
            .entry(ObjectKey::of(service))
            .or_default()
            .insert((held.task.clone(), reason));
        if first {
            self.event(service, EventType::Warning, reason, &message)
                .await;
        }
    }

    /// Forgets reports about tasks no longer among `names` (all of them for `None`).
    fn reported_for(&self, service: &ObjectKey, names: Option<&HashSet<&str>>) {
        let mut reported = self.lock_reported();
        match names {
            Some(names) => {
                if let Some(set) = reported.get_mut(service) {
                    set.retain(|(task, _)| names.contains(task.as_str()));
                }
            }
            None => {
                reported.remove(service);
            }
        }
    }

    fn lock_reported(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, HashSet<(String, &'static str)>>> {
        self.reported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event on the service; events are for humans, so a failure is only logged.
    async fn event(&self, service: &Service, type_: EventType, reason: &str, message: &str) {
        let object = ObjectReference::to(service);
        if let Err(error) = self.recorder.publish(&object, type_, reason, message).await {
            let service = ObjectKey::of(service);
            tracing::warn!(%service, reason, %error, "cannot record event");
        }
    }
}

/// How many times the slot's task has been restarted, counting the one `reason` replaces:
/// a restart adds one to its predecessor's count; moving off a node or an update keeps it.
fn restart_count(tasks: &[&Task], reason: &CreateReason) -> u32 {
    let (replaces, restarted) = match reason {
        CreateReason::NewSlot => return 0,
        CreateReason::Restart { replaces } => (replaces, 1),
        CreateReason::Moved { replaces } | CreateReason::Update { replaces } => (replaces, 0),
    };
    let before = tasks
        .iter()
        .find(|t| &t.metadata.name == replaces)
        .and_then(|t| t.status.as_ref())
        .map_or(0, |s| s.restart_count);
    before + restarted
}
