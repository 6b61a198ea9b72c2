//! Converges one task key: its container to the desired state, its status to what Docker shows.

use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use chrono::{SubsecRound, Utc};
use dctl_apis::task::TaskDesiredState;
use dctl_apis::{EventType, Task, TaskState, TaskTemplate};
use dctl_runtime::controller::Action;
use dctl_runtime::store::StoreError;
use dctl_runtime::ObjectKey;

use super::observed::{self, Observed, Phase};
use super::status::{next_status, Gates, Report};
use super::{adopt, launch, teardown, Context};
use crate::node::container::container_name;
use crate::node::networks::{docker_network_name, NetworkError};

/// How often one reconcile reads the task again after its status write lost a race (the
/// cache lags behind the agent's own writes by a few milliseconds).
const CONFLICT_ATTEMPTS: usize = 3;

/// How soon a container in a passing state (paused, restarting, being removed) is looked at
/// again.
const TRANSIENT_RECHECK: Duration = Duration::from_secs(2);

/// Why a reconcile failed; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("task {key}: cannot {action}: {source} (is Docker running?)")]
    Docker {
        key: ObjectKey,
        action: &'static str,
        #[source]
        source: DockerError,
    },
    #[error("task {key}: cannot write its status: {source}")]
    WriteStatus {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("task {key}: cannot read it again: {source}")]
    Read {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("task {key}: {source}")]
    Network {
        key: ObjectKey,
        #[source]
        source: NetworkError,
    },
}

/// Maps a Docker failure while doing `action` for task `key`.
pub(super) fn docker_error(
    key: &ObjectKey,
    action: &'static str,
) -> impl FnOnce(DockerError) -> ReconcileError {
    let key = key.clone();
    move |source| ReconcileError::Docker {
        key,
        action,
        source,
    }
}

/// The controller's reconcile: the task as cached (or, after a lost race, as stored).
pub(super) async fn reconcile(key: ObjectKey, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let mut task = ctx.tasks.get(&key).map(|task| Task::clone(&task));
    let mut attempt = 1;
    loop {
        match converge(&ctx, &key, task).await {
            Err(ReconcileError::WriteStatus { source, .. })
                if source.is_conflict() && attempt < CONFLICT_ATTEMPTS =>
            {
                attempt += 1;
                task = read_assigned(&ctx, &key).await?;
            }
            other => return other,
        }
    }
}

/// The task as stored now, if it is still bound to this node.
async fn read_assigned(ctx: &Context, key: &ObjectKey) -> Result<Option<Task>, ReconcileError> {
    let task = ctx
        .store
        .try_get::<Task>(&key.namespace, &key.name)
        .await
        .map_err(|source| ReconcileError::Read {
            key: key.clone(),
            source,
        })?;
    Ok(task.filter(|task| task.spec.node_name.as_deref() == Some(ctx.node())))
}

/// Removes the key's stray containers, then converges the task if it is assigned here.
async fn converge(
    ctx: &Context,
    key: &ObjectKey,
    task: Option<Task>,
) -> Result<Action, ReconcileError> {
    let containers = observed::list(&ctx.docker, ctx.node(), Some(key))
        .await
        .map_err(docker_error(key, "list its containers"))?;
    let uid = task.as_ref().map(|task| task.metadata.uid.clone());
    ctx.forget_pull_failure(key, uid.as_deref());
    let (mine, strays) = adopt::sort_out(uid.as_deref(), containers);
    for stray in strays {
        tracing::info!(
            task = %key,
            container = stray.id,
            "removing a container whose task is not assigned to this node"
        );
        teardown::remove_stray(&ctx.docker, &stray.id, stray.running)
            .await
            .map_err(docker_error(key, "remove a stray container"))?;
    }
    let Some(task) = task else {
        return Ok(Action::await_change());
    };
    let container = match &mine {
        Some(listed) => observed::inspect(&ctx.docker, &listed.id)
            .await
            .map_err(docker_error(key, "inspect its container"))?,
        None => None,
    };
    let mut run = TaskRun {
        ctx,
        key: key.clone(),
        task,
    };
    run.converge(container).await
}

/// One reconcile of one assigned task: the task as last read or written.
pub(super) struct TaskRun<'a> {
    pub ctx: &'a Context,
    pub key: ObjectKey,
    pub task: Task,
}

impl TaskRun<'_> {
    async fn converge(&mut self, container: Option<Observed>) -> Result<Action, ReconcileError> {
        let desired = self.task.spec.desired_state;
        if matches!(
            desired,
            TaskDesiredState::Shutdown | TaskDesiredState::Remove
        ) {
            return self
                .shut_down(container, desired == TaskDesiredState::Remove)
                .await;
        }
        if self.state().is_terminal() {
            // An orphaned task whose node came back: its replacement runs elsewhere.
            if let Some(container) = container.filter(Observed::is_running) {
                self.stop(&container).await?;
            }
            return Ok(Action::await_change());
        }
        match container {
            Some(container) => self.follow(container).await,
            None if self.state() >= TaskState::Starting => {
                self.report(Report::ContainerRemoved).await?;
                let message = format!("Container {} was removed outside dctl", self.name());
                self.event(EventType::Warning, "Failed", &message).await;
                Ok(Action::await_change())
            }
            None => launch::launch(self).await,
        }
    }

    /// Reports what the task's existing container is doing, starting it if it was only
    /// created.
    pub(super) async fn follow(&mut self, container: Observed) -> Result<Action, ReconcileError> {
        match container.phase {
            Phase::Running => {
                let addresses = container.addresses_in_order(&self.docker_networks());
                let id = container.id.clone();
                let gates = Gates::of(&self.task.spec.template, container.health_check);
                self.report(Report::Running {
                    container_id: container.id,
                    addresses,
                    gates,
                })
                .await?;
                self.report_host_ports(&id).await?;
            }
            Phase::Exited {
                exit_code,
                oom_killed,
            } => {
                let before = self.state();
                self.report(Report::Exited {
                    container_id: container.id,
                    exit_code,
                    oom_killed,
                })
                .await?;
                if self.state() != before {
                    let name = self.name();
                    if exit_code == 0 {
                        let message = format!("Container {name} exited with code 0");
                        self.event(EventType::Normal, "Stopped", &message).await;
                    } else {
                        let oom = if oom_killed { " (out of memory)" } else { "" };
                        let message = format!("Container {name} exited with code {exit_code}{oom}");
                        self.event(EventType::Warning, "Failed", &message).await;
                    }
                }
            }
            Phase::Created if self.task.spec.desired_state == TaskDesiredState::Ready => {
                self.report(Report::Preparing {
                    message: launch::STAGED.to_string(),
                })
                .await?;
            }
            Phase::Created => return launch::start(self, container).await,
            Phase::Transient(status) => {
                tracing::debug!(task = %self.key, status, "container in passing state");
                return Ok(Action::requeue(TRANSIENT_RECHECK));
            }
        }
        Ok(Action::await_change())
    }

    /// desiredState shutdown or remove: stop the container with the task's grace period,
    /// report `shutdown`, and for remove, remove the container.
    async fn shut_down(
        &mut self,
        container: Option<Observed>,
        remove: bool,
    ) -> Result<Action, ReconcileError> {
        let mut exit_code = None;
        if let Some(container) = &container {
            if container.is_running() {
                // Out of traffic first, then signalled (docs/task-lifecycle.md).
                self.drain().await?;
                self.stop(container).await?;
            }
            let after = observed::inspect(&self.ctx.docker, &container.id)
                .await
                .map_err(docker_error(&self.key, "inspect its container"))?;
            if let Some(Phase::Exited {
                exit_code: code, ..
            }) = after.map(|c| c.phase)
            {
                exit_code = Some(code);
            }
        }
        if !self.state().is_terminal() {
            self.report(Report::Shutdown { exit_code }).await?;
        }
        if let Some(container) = container.filter(|_| remove) {
            teardown::remove(&self.ctx.docker, &container.id)
                .await
                .map_err(docker_error(&self.key, "remove its container"))?;
        }
        Ok(Action::await_change())
    }

    /// Stops the running container: its stop signal, then SIGKILL after the grace period.
    async fn stop(&self, container: &Observed) -> Result<(), ReconcileError> {
        let template = &self.task.spec.template;
        let signal = template
            .stop_signal
            .as_deref()
            .unwrap_or(TaskTemplate::DEFAULT_STOP_SIGNAL);
        let grace = template
            .stop_grace_period
            .unwrap_or(TaskTemplate::DEFAULT_STOP_GRACE_PERIOD);
        let name = self.name();
        let message = format!("Sent {signal} to container {name}; SIGKILL follows after {grace}");
        self.event(EventType::Normal, "Killing", &message).await;
        teardown::stop(&self.ctx.docker, &container.id, Some(grace.as_std()))
            .await
            .map_err(docker_error(&self.key, "stop its container"))?;
        let message = format!("Stopped container {name}");
        self.event(EventType::Normal, "Stopped", &message).await;
        Ok(())
    }

    /// Writes the status `report` leads to, if it changes anything.
    pub(super) async fn report(&mut self, report: Report) -> Result<(), ReconcileError> {
        let now = Utc::now().trunc_subsecs(3);
        let Some(status) = next_status(self.task.status.as_ref(), &report, now) else {
            return Ok(());
        };
        let state = status.state;
        let mut changed = self.task.clone();
        changed.status = Some(status);
        self.task = self
            .ctx
            .store
            .update_status(&changed)
            .await
            .map_err(|source| ReconcileError::WriteStatus {
                key: self.key.clone(),
                source,
            })?;
        tracing::debug!(task = %self.key, %state, "status written");
        Ok(())
    }

    pub(super) fn state(&self) -> TaskState {
        self.task
            .status
            .as_ref()
            .map(|status| status.state)
            .unwrap_or_default()
    }

    pub(super) async fn event(&self, type_: EventType, reason: &str, message: &str) {
        self.ctx.record(&self.task, type_, reason, message).await;
    }

    /// The container's name, `dctl.<namespace>.<task>`.
    pub(super) fn name(&self) -> String {
        container_name(&self.key.namespace, &self.key.name)
    }

    /// The Docker names of the task's networks, in the template's order.
    pub(super) fn docker_networks(&self) -> Vec<String> {
        self.task
            .spec
            .template
            .networks
            .iter()
            .map(|network| docker_network_name(&self.key.namespace, &network.name))
            .collect()
    }
}
