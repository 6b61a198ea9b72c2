//! Computes a task's next status from what the agent observed: forward only, no empty writes.

use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::task::{TaskStatus, CONDITION_LIVE, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::{Condition, ConditionStatus, TaskState, TaskTemplate, Time};

use crate::node::probes::conditions::{
    REASON_HEALTH_STARTING, REASON_LIVENESS_FAILED, REASON_STARTUP_FAILED, REASON_TERMINATING,
};

/// What the probe conditions at `running` wait for: the template's probes, and the
/// container's Docker HEALTHCHECK (docs/task-lifecycle.md, "Probe conditions").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gates {
    pub startup_probe: bool,
    pub readiness_probe: bool,
    pub health_check: bool,
}

impl Gates {
    pub fn of(template: &TaskTemplate, health_check: bool) -> Gates {
        Gates {
            startup_probe: template.probes.startup.is_some(),
            readiness_probe: template.probes.readiness.is_some(),
            health_check,
        }
    }
}

/// What the agent has to report about a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The agent has seen the task and will run it.
    Accepted,
    /// Getting the image, networks and container ready; `message` says which step, or
    /// what the task waits for.
    Preparing { message: String },
    /// The container is created and being started.
    Starting { container_id: String },
    Running {
        container_id: String,
        addresses: Vec<String>,
        gates: Gates,
    },
    /// The container's process ended by itself.
    Exited {
        container_id: String,
        exit_code: i64,
        oom_killed: bool,
    },
    /// The container could not be started (a missing executable, a bad mount).
    StartFailed {
        container_id: String,
        exit_code: Option<i64>,
        message: String,
    },
    /// The container vanished while the task ran: removed by hand, or lost with the engine.
    ContainerRemoved,
    /// Stopped because the managers asked (`desiredState` shutdown or remove).
    Shutdown { exit_code: Option<i64> },
    /// The task can never run here (no image, an impossible container spec).
    Rejected { message: String },
}

impl Report {
    pub fn state(&self) -> TaskState {
        match self {
            Report::Accepted => TaskState::Accepted,
            Report::Preparing { .. } => TaskState::Preparing,
            Report::Starting { .. } => TaskState::Starting,
            Report::Running { .. } => TaskState::Running,
            Report::Exited { exit_code: 0, .. } => TaskState::Complete,
            Report::Exited { .. } | Report::StartFailed { .. } | Report::ContainerRemoved => {
                TaskState::Failed
            }
            Report::Shutdown { .. } => TaskState::Shutdown,
            Report::Rejected { .. } => TaskState::Rejected,
        }
    }

    /// The status message; for failures also the status's `error`.
    fn message(&self) -> String {
        match self {
            Report::Accepted => "accepted".into(),
            Report::Preparing { message } => message.clone(),
            Report::Starting { .. } => "starting".into(),
            Report::Running { .. } => "started".into(),
            Report::Exited { exit_code: 0, .. } => "finished".into(),
            Report::Exited {
                exit_code,
                oom_killed: true,
                ..
            } => format!("task: non-zero exit ({exit_code}): killed for lack of memory (OOM)"),
            Report::Exited { exit_code, .. } => format!("task: non-zero exit ({exit_code})"),
            Report::StartFailed { message, .. } => format!("task: cannot start: {message}"),
            Report::ContainerRemoved => "task: container removed".into(),
            Report::Shutdown { .. } => "shut down".into(),
            Report::Rejected { message } => message.clone(),
        }
    }
}

/// The status after `report`, or `None` when there is nothing to write: the report would
/// move the task backwards or out of a terminal state, or changes nothing.
pub fn next_status(current: Option<&TaskStatus>, report: &Report, now: Time) -> Option<TaskStatus> {
    let current = current.cloned().unwrap_or_default();
    let killed_by = killed_by_probe(&current);
    let state = match (report, &killed_by) {
        // Stopped by its prober: failed, whatever the exit code of the stop.
        (Report::Exited { .. }, Some(_)) => TaskState::Failed,
        _ => report.state(),
    };
    let mut next = current.clone();
    if state != current.state {
        if !current.state.can_move_to(state) {
            return None;
        }
        next.state = state;
        next.timestamp = Some(now);
    }
    next.message = match (report, killed_by) {
        (Report::Exited { exit_code, .. }, Some(failure)) => {
            format!("task: {failure} (exit code {exit_code})")
        }
        _ => report.message(),
    };
    match report {
        Report::Starting { container_id } => next.container_id = Some(container_id.clone()),
        Report::Running {
            container_id,
            addresses,
            ..
        } => {
            next.container_id = Some(container_id.clone());
            next.addresses.clone_from(addresses);
        }
        Report::Exited {
            container_id,
            exit_code,
            ..
        } => {
            next.container_id = Some(container_id.clone());
            next.exit_code = Some(*exit_code);
        }
        Report::StartFailed {
            container_id,
            exit_code,
            ..
        } => {
            next.container_id = Some(container_id.clone());
            next.exit_code = *exit_code;
        }
        Report::Shutdown { exit_code } => next.exit_code = exit_code.or(next.exit_code),
        _ => {}
    }
    if state.is_terminal() {
        // Gone containers have no addresses; stale ones would mislead `get -o wide`.
        next.addresses.clear();
        if state != TaskState::Complete && state != TaskState::Shutdown {
            next.error = Some(next.message.clone());
        }
    }
    match report {
        Report::Running { gates, .. } if state != current.state => {
            set_running_conditions(&mut next.conditions, *gates, now);
        }
        _ if state != current.state => set_lifecycle_conditions(&mut next.conditions, state, now),
        _ => {}
    }
    (next != current).then_some(next)
}

/// `task: killed after failing its liveness probe: HTTP 503` when a prober stopped the
/// task's container (its `Started` or `Live` condition says so).
fn killed_by_probe(status: &TaskStatus) -> Option<String> {
    [
        (CONDITION_STARTED, REASON_STARTUP_FAILED, "startup"),
        (CONDITION_LIVE, REASON_LIVENESS_FAILED, "liveness"),
    ]
    .into_iter()
    .find_map(|(type_, reason, probe)| {
        let condition = find_condition(&status.conditions, type_)?;
        (condition.status == ConditionStatus::False && condition.reason == reason).then(|| {
            format!(
                "killed after failing its {probe} probe: {}",
                condition.message
            )
        })
    })
}

/// On entering `running`, `True` for what no probe decides (docs/task-lifecycle.md,
/// "Probe conditions"): `Started` without a startup probe, `Live` always (until a
/// liveness failure), `Ready` without a startup or readiness probe or Docker
/// HEALTHCHECK. The probers set the rest. A `Ready` the task runtime already took away
/// (`Terminating`) stays so.
fn set_running_conditions(conditions: &mut Vec<Condition>, gates: Gates, now: Time) {
    let (started, started_reason) = if gates.startup_probe {
        (ConditionStatus::False, "StartupProbePending")
    } else {
        (ConditionStatus::True, "TaskRunning")
    };
    let (ready, ready_reason) = if gates.startup_probe {
        (ConditionStatus::False, "StartupProbePending")
    } else if gates.readiness_probe {
        (ConditionStatus::False, "ReadinessProbePending")
    } else if gates.health_check {
        (ConditionStatus::False, REASON_HEALTH_STARTING)
    } else {
        (ConditionStatus::True, "TaskRunning")
    };
    let terminating =
        find_condition(conditions, CONDITION_READY).is_some_and(|c| c.reason == REASON_TERMINATING);
    for (type_, status, reason) in [
        (CONDITION_STARTED, started, started_reason),
        (CONDITION_LIVE, ConditionStatus::True, "TaskRunning"),
        (CONDITION_READY, ready, ready_reason),
    ] {
        if type_ == CONDITION_READY && terminating {
            continue;
        }
        set_condition(
            conditions,
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: String::new(),
                last_transition_time: now,
                observed_generation: None,
            },
        );
    }
}

/// `Started`, `Live` and `Ready` are `False` once the task ends; one already `False` keeps
/// its reason (`LivenessProbeFailed`, `Terminating`), which says more.
fn set_lifecycle_conditions(conditions: &mut Vec<Condition>, state: TaskState, now: Time) {
    let (status, reason) = match state {
        TaskState::Complete => (ConditionStatus::False, "TaskComplete"),
        TaskState::Shutdown => (ConditionStatus::False, "TaskShutdown"),
        TaskState::Failed => (ConditionStatus::False, "TaskFailed"),
        TaskState::Rejected => (ConditionStatus::False, "TaskRejected"),
        TaskState::Orphaned => (ConditionStatus::False, "TaskOrphaned"),
        _ => return,
    };
    for type_ in [CONDITION_STARTED, CONDITION_LIVE, CONDITION_READY] {
        if find_condition(conditions, type_).is_some_and(|c| c.status == status) {
            continue;
        }
        set_condition(
            conditions,
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: String::new(),
                last_transition_time: now,
                observed_generation: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use dctl_apis::meta::find_condition;

    use super::*;

    fn at(seconds: i64) -> Time {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap() + Duration::seconds(seconds)
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state,
            timestamp: Some(at(0)),
            ..Default::default()
        }
    }

    fn running() -> Report {
        running_with(Gates::default())
    }

    fn running_with(gates: Gates) -> Report {
        Report::Running {
            container_id: "c1".into(),
            addresses: vec!["10.0.0.2".into()],
            gates,
        }
    }

    fn exited(code: i64) -> Report {
        Report::Exited {
            container_id: "c1".into(),
            exit_code: code,
            oom_killed: false,
        }
    }

    #[test]
    fn moves_forward_only() {
        use TaskState::*;
        let cases: Vec<(TaskState, Report, Option<TaskState>)> = vec![
            (Assigned, Report::Accepted, Some(Accepted)),
            (
                Accepted,
                Report::Preparing {
                    message: "pulling".into(),
                },
                Some(Preparing),
            ),
            (
                Preparing,
                Report::Starting {
                    container_id: "c1".into(),
                },
                Some(Starting),
            ),
            (Starting, running(), Some(Running)),
            // Straight to running: an adopted container that ran all along.
            (Assigned, running(), Some(Running)),
            (Running, exited(0), Some(Complete)),
            (Running, exited(2), Some(Failed)),
            (Running, Report::ContainerRemoved, Some(Failed)),
            (
                Running,
                Report::Shutdown { exit_code: Some(0) },
                Some(Shutdown),
            ),
            (
                Accepted,
                Report::Rejected {
                    message: "no image".into(),
                },
                Some(Rejected),
            ),
            // Never backwards, never out of a terminal state.
            (Running, Report::Accepted, None),
            (
                Running,
                Report::Starting {
                    container_id: "c1".into(),
                },
                None,
            ),
            (Failed, running(), None),
            (Shutdown, exited(1), None),
            (Complete, Report::ContainerRemoved, None),
            (Orphaned, Report::Shutdown { exit_code: None }, None),
        ];
        for (from, report, expected) in cases {
            let next = next_status(Some(&status(from)), &report, at(5));
            assert_eq!(next.map(|s| s.state), expected, "{from} + {report:?}");
        }
    }

    #[test]
    fn writes_nothing_when_nothing_changed() {
        let first = next_status(None, &running(), at(1)).unwrap();
        assert_eq!(next_status(Some(&first), &running(), at(2)), None);
        // A new address is a change; the state's timestamp stays.
        let moved = Report::Running {
            container_id: "c1".into(),
            addresses: vec!["10.0.0.9".into()],
            gates: Gates::default(),
        };
        let next = next_status(Some(&first), &moved, at(3)).unwrap();
        assert_eq!(next.addresses, ["10.0.0.9"]);
        assert_eq!(next.timestamp, Some(at(1)));
        let waiting = Report::Preparing {
            message: "waiting for network backend".into(),
        };
        let preparing = next_status(None, &waiting, at(1)).unwrap();
        assert_eq!(next_status(Some(&preparing), &waiting, at(2)), None);
    }

    #[test]
    fn running_sets_conditions_true_and_leaving_sets_them_false() {
        let running = next_status(Some(&status(TaskState::Starting)), &running(), at(1)).unwrap();
        assert_eq!(running.container_id.as_deref(), Some("c1"));
        assert_eq!(running.message, "started");
        for type_ in [CONDITION_STARTED, CONDITION_LIVE, CONDITION_READY] {
            let condition = find_condition(&running.conditions, type_).unwrap();
            assert_eq!(condition.status, ConditionStatus::True, "{type_}");
            assert_eq!(condition.last_transition_time, at(1));
        }
        let failed = next_status(Some(&running), &exited(3), at(9)).unwrap();
        assert_eq!(failed.state, TaskState::Failed);
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.message, "task: non-zero exit (3)");
        assert_eq!(failed.error.as_deref(), Some("task: non-zero exit (3)"));
        assert!(failed.addresses.is_empty());
        assert_eq!(failed.timestamp, Some(at(9)));
        for type_ in [CONDITION_STARTED, CONDITION_LIVE, CONDITION_READY] {
            let condition = find_condition(&failed.conditions, type_).unwrap();
            assert_eq!(
                (condition.status, condition.reason.as_str()),
                (ConditionStatus::False, "TaskFailed")
            );
            assert_eq!(condition.last_transition_time, at(9));
        }
    }

    #[test]
    fn messages() {
        let cases: Vec<(Report, &str, Option<i64>)> = vec![
            (exited(0), "finished", Some(0)),
            (
                Report::Exited {
                    container_id: "c1".into(),
                    exit_code: 137,
                    oom_killed: true,
                },
                "task: non-zero exit (137): killed for lack of memory (OOM)",
                Some(137),
            ),
            (Report::ContainerRemoved, "task: container removed", None),
            (
                Report::StartFailed {
                    container_id: "c1".into(),
                    exit_code: Some(127),
                    message: "exec: \"/nope\": not found".into(),
                },
                "task: cannot start: exec: \"/nope\": not found",
                Some(127),
            ),
            (
                Report::Shutdown { exit_code: Some(0) },
                "shut down",
                Some(0),
            ),
        ];
        for (report, message, exit_code) in cases {
            let next = next_status(Some(&status(TaskState::Running)), &report, at(1)).unwrap();
            assert_eq!(
                (next.message.as_str(), next.exit_code),
                (message, exit_code)
            );
        }
        let rejected = Report::Rejected {
            message: "image \"x\" not found locally and could not be pulled: nope".into(),
        };
        let next = next_status(Some(&status(TaskState::Accepted)), &rejected, at(1)).unwrap();
        assert_eq!(next.error.as_deref(), Some(next.message.as_str()));
    }

    fn conditions_of(status: &TaskStatus) -> Vec<(&str, ConditionStatus, &str)> {
        [CONDITION_STARTED, CONDITION_LIVE, CONDITION_READY]
            .into_iter()
            .map(|type_| {
                let c = find_condition(&status.conditions, type_).unwrap();
                (type_, c.status, c.reason.as_str())
            })
            .collect()
    }

    #[test]
    fn running_sets_true_only_what_no_probe_decides() {
        use ConditionStatus::{False, True};
        let gates = |startup_probe, readiness_probe, health_check| Gates {
            startup_probe,
            readiness_probe,
            health_check,
        };
        let cases = [
            (
                gates(false, false, false),
                [
                    (True, "TaskRunning"),
                    (True, "TaskRunning"),
                    (True, "TaskRunning"),
                ],
            ),
            (
                gates(true, true, false),
                [
                    (False, "StartupProbePending"),
                    (True, "TaskRunning"),
                    (False, "StartupProbePending"),
                ],
            ),
            (
                gates(false, true, true),
                [
                    (True, "TaskRunning"),
                    (True, "TaskRunning"),
                    (False, "ReadinessProbePending"),
                ],
            ),
            (
                gates(false, false, true),
                [
                    (True, "TaskRunning"),
                    (True, "TaskRunning"),
                    (False, "HealthStarting"),
                ],
            ),
        ];
        for (gates, expected) in cases {
            let next = next_status(
                Some(&status(TaskState::Starting)),
                &running_with(gates),
                at(1),
            )
            .unwrap();
            let got: Vec<(ConditionStatus, &str)> = conditions_of(&next)
                .into_iter()
                .map(|(_, s, r)| (s, r))
                .collect();
            assert_eq!(got, expected, "{gates:?}");
        }
        // A later report while running leaves the probers' conditions alone.
        let mut probed =
            next_status(Some(&status(TaskState::Starting)), &running(), at(1)).unwrap();
        probed.conditions[2].status = False;
        probed.conditions[2].reason = "ReadinessProbeFailed".into();
        let moved = Report::Running {
            container_id: "c1".into(),
            addresses: vec!["10.0.0.9".into()],
            gates: Gates::default(),
        };
        let next = next_status(Some(&probed), &moved, at(2)).unwrap();
        assert_eq!(
            conditions_of(&next)[2],
            (CONDITION_READY, False, "ReadinessProbeFailed")
        );
    }

    #[test]
    fn a_task_its_prober_killed_fails_with_the_probe_failure() {
        let mut running =
            next_status(Some(&status(TaskState::Starting)), &running(), at(1)).unwrap();
        for condition in running.conditions.iter_mut().skip(1) {
            condition.status = ConditionStatus::False;
            condition.reason = REASON_LIVENESS_FAILED.into();
            condition.message = "HTTP 503".into();
        }
        // SIGTERM made the process exit 0: still failed, not complete.
        let failed = next_status(Some(&running), &exited(0), at(5)).unwrap();
        assert_eq!(failed.state, TaskState::Failed);
        let message = "task: killed after failing its liveness probe: HTTP 503 (exit code 0)";
        assert_eq!(failed.message, message);
        assert_eq!(failed.error.as_deref(), Some(message));
        assert_eq!(
            conditions_of(&failed),
            [
                (CONDITION_STARTED, ConditionStatus::False, "TaskFailed"),
                (
                    CONDITION_LIVE,
                    ConditionStatus::False,
                    REASON_LIVENESS_FAILED
                ),
                (
                    CONDITION_READY,
                    ConditionStatus::False,
                    REASON_LIVENESS_FAILED
                ),
            ]
        );
    }
}
