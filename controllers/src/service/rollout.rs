//! The rollout: rolls a change of a service's template or placement slot by slot, as
//! Swarm's updater does, and gates it on readiness as Kubernetes' Deployment does.
//!
//! It runs inside the service controller's reconcile rather than as a loop of its own, as
//! Swarm's updater runs inside its orchestrator: both decide which task fills a slot, and
//! two loops writing one slot's tasks would fight. Like [`super::slots`], this is a pure
//! function of the service, its tasks and the slot survey; what it carries from one
//! reconcile to the next is in `status.rollout`.
//!
//! - A rollout starts when the template-and-placement hash differs from the last
//!   rollout's and some slot is outdated; a new service's first tasks are no rollout.
//!   Slots outdated under the same hash (a node's labels or the published ports changed)
//!   restart the last rollout.
//! - At most `parallelism` slots (0: all) are in flight, a slot being in flight from the
//!   moment its new task is created until that task is Ready; after a slot finishes, the
//!   next waits `delay`.
//! - A new task (of this rollout's template, created since it started) that fails, or that
//!   has started but is not Ready within `monitor` after its first readiness probe (its
//!   initial delay plus one period), counts as a failure; beyond
//!   `maxFailureRatio` of the slots, `failureAction` applies. No slot finishing within
//!   `progressDeadline` is a failure too.
//! - The rollout completes when every slot runs the template and every new task has been
//!   Ready for `monitor`.
//! - A rollback is a rollout to the previous revision with the `rollback` config; its
//!   failure pauses it (validation refuses `failureAction: rollback` there).

use std::time::Duration;

use dctl_apis::service::{FailureAction, RolloutState, RolloutStatus, UpdateConfig, UpdateOrder};
use dctl_apis::{EventType, Service, Task, Time};

use super::restart::{self, Ending};
use super::slots::{started_since, Survey};

/// What to start, write and say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// The rollout's status to write (`None`: no rollout, as for a new service).
    pub status: Option<RolloutStatus>,
    /// How many outdated slots to replace now.
    pub start: usize,
    /// Roll back to the previous revision, because of this.
    pub rollback: Option<String>,
    /// Events for `dctl describe service`.
    pub events: Vec<Note>,
    /// Look again after this long though nothing changes (a monitor window, a delay or the
    /// progress deadline running out).
    pub requeue_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// The update order of the rollout `service` is in: the rollback config's during a
/// rollback to `target`, else the update config's.
pub fn order(service: &Service, target: &str) -> UpdateOrder {
    config(service, rolling_back(service, target)).order
}

/// Decides the next step of the rollout of `service` to `target` (revision `revision`),
/// given its tasks and where its slots stand.
pub fn step(
    service: &Service,
    tasks: &[&Task],
    survey: &Survey,
    target: &str,
    revision: i64,
    now: Time,
) -> Step {
    let mut step = Step::default();
    let previous = service.status.as_ref().and_then(|s| s.rollout.clone());
    let outdated = survey.outdated.len();
    let mut rollout = match previous {
        Some(rollout) if rollout.target == target => rollout,
        previous => {
            if outdated == 0 {
                // Nothing runs an older template: a new service, or a change its tasks
                // already have. Keep the last rollout's record only if it was for this.
                step.status = previous.filter(|r| r.target == target);
                return step;
            }
            let rollout = start(target, revision, survey, now);
            step.note(
                EventType::Normal,
                "RolloutStarted",
                format!("Rolling out revision {revision} to {outdated} slot(s)"),
            );
            rollout
        }
    };
    rollout.revision = revision;
    let is_rollback = rollout.state.is_rollback();
    let config = config(service, is_rollback);

    // A finished rollout starts again if slots fall behind (a node's labels changed).
    if !rollout.state.is_active() && outdated > 0 && !is_paused(rollout.state) {
        let state = rollout.state;
        rollout = start(target, revision, survey, now);
        if state == RolloutState::RollbackCompleted {
            rollout.state = RolloutState::RollbackStarted;
        }
    }
    if !rollout.state.is_active() {
        step.status = Some(rollout);
        return step;
    }
    if service.spec.paused {
        rollout.state = paused(is_rollback);
        rollout.message = "paused by the user (dctl rollout resume continues it)".into();
        step.note(EventType::Normal, "RolloutPaused", rollout.message.clone());
        step.status = Some(rollout);
        return step;
    }

    let monitor = config
        .monitor
        .unwrap_or(UpdateConfig::DEFAULT_MONITOR)
        .as_std();
    for (task, why) in failures(service, tasks, &rollout, monitor, now, &mut step) {
        step.note(
            EventType::Warning,
            "RolloutTaskFailed",
            format!("Task {task} of revision {revision} {why}"),
        );
        rollout.failed_tasks.push(task);
        rollout.message = format!("task {} {why}", rollout.failed_tasks.last().unwrap());
    }

    let progress = u32::try_from(survey.ready_since.len()).unwrap_or(u32::MAX);
    if progress > rollout.progress {
        rollout.last_progress_at = Some(now);
    }
    rollout.progress = progress;
    let last_progress = rollout.last_progress_at.unwrap_or(now);

    let slots = f64::from(rollout.slots.max(1));
    let failed = rollout.failed_tasks.len();
    let deadline = config
        .progress_deadline
        .unwrap_or(UpdateConfig::DEFAULT_PROGRESS_DEADLINE)
        .as_std();
    let stalled = plus(last_progress, deadline) <= now;
    let failing = failed > 0 && failed as f64 / slots > config.max_failure_ratio;
    if failing || stalled {
        let why = if failing {
            format!(
                "{failed} of {} slot(s) failed, more than maxFailureRatio {}: {}",
                rollout.slots.max(1),
                config.max_failure_ratio,
                rollout.message
            )
        } else {
            format!(
                "progress deadline exceeded: no slot finished updating in {}",
                dctl_apis::Duration::from(deadline)
            )
        };
        match config.failure_action {
            FailureAction::Continue if !stalled => {}
            FailureAction::Rollback if !is_rollback => {
                rollout.message = format!("rolling back: {why}");
                step.rollback = Some(why);
                step.status = Some(rollout);
                return step;
            }
            _ => {
                rollout.state = paused(is_rollback);
                rollout.message = format!("paused: {why}");
                let reason = if stalled {
                    "ProgressDeadlineExceeded"
                } else {
                    "RolloutPaused"
                };
                step.note(EventType::Warning, reason, rollout.message.clone());
                step.status = Some(rollout);
                return step;
            }
        }
    }

    if outdated == 0 && survey.in_flight == 0 {
        // Every slot runs the template: done once the last new task has been Ready for
        // the monitor window.
        let settled_at = survey
            .ready_since
            .iter()
            .map(|since| plus(*since, monitor))
            .max()
            .unwrap_or(now);
        if settled_at <= now {
            rollout.state = if is_rollback {
                RolloutState::RollbackCompleted
            } else {
                RolloutState::Completed
            };
            rollout.completed_at = Some(now);
            rollout.message = if is_rollback {
                // Keep why it rolled back: that is what the user needs to read.
                match rollout.message.strip_prefix("rolling back") {
                    Some(rest) => format!("rolled back{rest}"),
                    None => format!("rolled back to revision {revision}"),
                }
            } else {
                format!("update to revision {revision} completed")
            };
            let reason = if is_rollback {
                "RollbackCompleted"
            } else {
                "RolloutCompleted"
            };
            step.note(EventType::Normal, reason, rollout.message.clone());
        } else {
            step.requeue_at(settled_at, now);
        }
        step.status = Some(rollout);
        return step;
    }

    step.requeue_at(plus(last_progress, deadline), now);
    let next_batch = plus(last_progress, config.delay.as_std());
    if !config.delay.is_zero() && next_batch > now && progress > 0 {
        step.requeue_at(next_batch, now);
    } else {
        step.start = match config.parallelism.unwrap_or(1) {
            0 => outdated,
            n => (n as usize).saturating_sub(survey.in_flight).min(outdated),
        };
    }
    if !is_rollback {
        let done = survey.ready_since.len();
        rollout.message = format!(
            "{done} of {} slot(s) updated and Ready",
            done + survey.in_flight + outdated
        );
    }
    step.status = Some(rollout);
    step
}

/// The new tasks that failed since the last look: each new task of the rollout's template
/// (created since it started, not counted before) that ended badly, or that started more
/// than `monitor` ago and is not Ready. Asks for a look when a started task's window ends.
fn failures(
    service: &Service,
    tasks: &[&Task],
    rollout: &RolloutStatus,
    monitor: Duration,
    now: Time,
    step: &mut Step,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let started = rollout.started_at;
    let new_tasks = tasks.iter().filter(|t| {
        service.spec.is_up_to_date(&t.spec)
            && t.metadata.creation_timestamp >= started
            && !rollout.failed_tasks.contains(&t.metadata.name)
    });
    for task in new_tasks {
        let name = task.metadata.name.clone();
        if restart::ending(task) == Some(Ending::Failed) {
            let status = task.status.as_ref();
            let why = status
                .and_then(|s| s.error.clone())
                .or_else(|| {
                    status
                        .and_then(|s| s.exit_code)
                        .map(|c| format!("exit code {c}"))
                })
                .unwrap_or_else(|| "no reason given".into());
            found.push((name, format!("failed: {why}")));
            continue;
        }
        let Some(started) = started_since(task) else {
            continue;
        };
        if super::slots::ready_since(task).is_some() {
            continue;
        }
        let window_ends = plus(started, monitor + first_readiness_probe(task));
        if window_ends <= now {
            let why = format!(
                "did not become Ready within the monitor window ({}) after its first \
                 readiness probe",
                dctl_apis::Duration::from(monitor)
            );
            found.push((name, why));
        } else {
            step.requeue_at(window_ends, now);
        }
    }
    found
}

/// How long after starting a task's first readiness probe runs (its initial delay and one
/// period): the monitor window counts from there, so a short window never fails a task
/// whose probe has not had the chance to pass.
fn first_readiness_probe(task: &Task) -> Duration {
    let Some(probe) = task.spec.template.probes.readiness.as_ref() else {
        return Duration::ZERO;
    };
    let seconds = probe.initial_delay_seconds.max(0) + probe.period_seconds.max(1);
    Duration::from_secs(u64::try_from(seconds).unwrap_or_default())
}

fn start(target: &str, revision: i64, survey: &Survey, now: Time) -> RolloutStatus {
    let slots = survey.outdated.len() + survey.in_flight;
    RolloutStatus {
        state: RolloutState::Updating,
        message: String::new(),
        revision,
        target: target.to_string(),
        started_at: Some(now),
        completed_at: None,
        last_progress_at: Some(now),
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        progress: 0,
        failed_tasks: Vec::new(),
    }
}

/// The service's rollout is a rollback to `target`: the controller wrote that state just
/// before it set the template back.
fn rolling_back(service: &Service, target: &str) -> bool {
    service
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .is_some_and(|r| r.target == target && r.state.is_rollback())
}

fn config(service: &Service, rollback: bool) -> &UpdateConfig {
    if rollback {
        &service.spec.rollback
    } else {
        &service.spec.update
    }
}

fn paused(rollback: bool) -> RolloutState {
    if rollback {
        RolloutState::RollbackPaused
    } else {
        RolloutState::Paused
    }
}

fn is_paused(state: RolloutState) -> bool {
    matches!(state, RolloutState::Paused | RolloutState::RollbackPaused)
}

fn plus(at: Time, after: Duration) -> Time {
    at + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
}

impl Step {
    fn note(&mut self, type_: EventType, reason: &'static str, message: String) {
        self.events.push(Note {
            type_,
            reason,
            message,
        });
    }

    fn requeue_at(&mut self, at: Time, now: Time) {
        let after = (at - now).to_std().unwrap_or(Duration::ZERO);
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
