//! Table tests of the rollout's decisions: batches, delay, failures, deadline, completion.

use dctl_apis::service::{FailureAction, RolloutState, UpdateOrder};
use dctl_apis::task::TaskState;
use dctl_apis::Duration as ApiDuration;

use super::*;
use crate::service::slots::tests::active;
use crate::service::slots::tests::{at, nodes, plan_for, replicated, t, T};
use crate::service::slots::update_tests::ready;

const NOW: i64 = 1_000;

/// A service at web:2 whose status says a rollout to it started at `started`.
fn rolling(replicas: u32, started: i64) -> Service {
    let mut service = replicated(replicas);
    service.spec.template = crate::service::slots::tests::template("web:2");
    let target = target(&service);
    service.status = Some(dctl_apis::service::ServiceStatus {
        rollout: Some(RolloutStatus {
            state: RolloutState::Updating,
            message: String::new(),
            revision: 2,
            target,
            started_at: Some(at(started)),
            completed_at: None,
            last_progress_at: Some(at(started)),
            slots: replicas,
            progress: 0,
            failed_tasks: Vec::new(),
        }),
        ..Default::default()
    });
    service
}

fn rollout_of(service: &mut Service) -> &mut RolloutStatus {
    service.status.as_mut().unwrap().rollout.as_mut().unwrap()
}

fn target(service: &Service) -> String {
    super::super::revisions::current_hash(service)
}

fn step_for(service: &Service, tasks: &[T]) -> Step {
    let fits = nodes(&[("n1", active())]);
    let plan = plan_for(service, tasks, &fits);
    let list: Vec<&Task> = tasks.iter().map(|t| &t.0).collect();
    step(service, &list, &plan.survey, &target(service), 2, at(NOW))
}

fn old(id: &str, slot: u32) -> T {
    t(id, slot)
        .on("n1")
        .state(TaskState::Running)
        .image("web:1")
}

/// A web:2 task created at `created`.
fn new(id: &str, slot: u32, created: i64) -> T {
    t(id, slot).on("n1").created(created).image("web:2")
}

fn state(step: &Step) -> RolloutState {
    step.status.as_ref().expect("a rollout").state
}

#[test]
fn a_new_service_is_no_rollout() {
    let service = replicated(2);
    let tasks = [ready(t("a", 1).on("n1").of(&service), 10)];
    let step = step_for(&service, &tasks);
    assert_eq!((step.status, step.start), (None, 0));
}

#[test]
fn a_template_change_starts_a_rollout_parallelism_slots_at_a_time() {
    let mut service = rolling(3, 0);
    service.status = None;
    let tasks = [old("a", 1), old("b", 2), old("c", 3)];
    for (parallelism, start) in [(1, 1), (2, 2), (0, 3), (5, 3)] {
        service.spec.update.parallelism = Some(parallelism);
        let step = step_for(&service, &tasks);
        assert_eq!(state(&step), RolloutState::Updating);
        assert_eq!(step.start, start, "parallelism {parallelism}");
        assert_eq!(step.events[0].reason, "RolloutStarted");
        let status = step.status.unwrap();
        assert_eq!((status.slots, status.started_at), (3, Some(at(NOW))));
    }
}

#[test]
fn slots_in_flight_hold_the_next_batch() {
    let mut service = rolling(3, 900);
    service.spec.update.parallelism = Some(2);
    let starting = new("a2", 1, 950).state(TaskState::Starting);
    let step = step_for(&service, &[starting, old("b", 2), old("c", 3)]);
    assert_eq!(step.start, 1);
    service.spec.update.parallelism = Some(1);
    let starting = new("a2", 1, 950).state(TaskState::Starting);
    let step = step_for(&service, &[starting, old("b", 2), old("c", 3)]);
    assert_eq!(step.start, 0);
}

#[test]
fn the_delay_counts_from_the_last_slot_that_finished() {
    let mut service = rolling(2, 900);
    service.spec.update.delay = ApiDuration::from_secs(30);
    // Slot 1 became Ready at 990: progress now, and the next batch waits until 1020.
    let step = step_for(&service, &[ready(new("a2", 1, 950), 990), old("b", 2)]);
    assert_eq!(step.start, 0);
    assert_eq!(
        step.status.as_ref().unwrap().last_progress_at,
        Some(at(NOW))
    );
    assert_eq!(step.requeue_after, Some(std::time::Duration::from_secs(30)));
    rollout_of(&mut service).progress = 1;
    rollout_of(&mut service).last_progress_at = Some(at(960));
    let step = step_for(&service, &[ready(new("a2", 1, 950), 990), old("b", 2)]);
    assert_eq!(step.start, 1);
}

#[test]
fn a_failed_new_task_applies_the_failure_action() {
    let failed = || new("a2", 1, 950).state(TaskState::Failed);
    let cases = [
        (FailureAction::Pause, Some(RolloutState::Paused), false, 0),
        (
            FailureAction::Continue,
            Some(RolloutState::Updating),
            false,
            1,
        ),
        (
            FailureAction::Rollback,
            Some(RolloutState::Updating),
            true,
            0,
        ),
    ];
    for (action, expected, rolls_back, start) in cases {
        let mut service = rolling(2, 900);
        service.spec.update.failure_action = action;
        let step = step_for(&service, &[failed(), old("b", 2)]);
        assert_eq!(
            step.status.as_ref().map(|s| s.state),
            expected,
            "{action:?}"
        );
        assert_eq!(step.rollback.is_some(), rolls_back, "{action:?}");
        assert_eq!(step.start, start, "{action:?}");
        assert_eq!(step.status.unwrap().failed_tasks, ["a2"], "{action:?}");
    }
    // An old task that fails is the restart policy's business, not the rollout's.
    let step = step_for(
        &rolling(2, 900),
        &[old("a", 1).state(TaskState::Failed), old("b", 2)],
    );
    assert_eq!(state(&step), RolloutState::Updating);
}

#[test]
fn the_failure_ratio_tolerates_some_failures() {
    let mut service = rolling(4, 900);
    service.spec.update.max_failure_ratio = 0.25;
    let one = [
        new("a2", 1, 950).state(TaskState::Failed),
        old("b", 2),
        old("c", 3),
        old("d", 4),
    ];
    assert_eq!(state(&step_for(&service, &one)), RolloutState::Updating);
    rollout_of(&mut service).failed_tasks = vec!["x".into()];
    assert_eq!(state(&step_for(&service, &one)), RolloutState::Paused);
}

#[test]
fn a_started_task_not_ready_within_the_monitor_window_fails() {
    let mut service = rolling(1, 900);
    service.spec.update.monitor = Some(ApiDuration::from_secs(5));
    let started_at = |secs| {
        let mut task = ready(new("a2", 1, 950), secs);
        // Started, but its readiness probe fails.
        let conditions = &mut task.0.status.as_mut().unwrap().conditions;
        conditions.retain(|c| c.type_ != dctl_apis::task::CONDITION_READY);
        task
    };
    let step = step_for(&service, &[started_at(998), old("a", 1)]);
    assert_eq!(state(&step), RolloutState::Updating);
    assert_eq!(step.requeue_after, Some(std::time::Duration::from_secs(3)));
    let step = step_for(&service, &[started_at(990), old("a", 1)]);
    assert_eq!(state(&step), RolloutState::Paused);
    let message = &step.status.unwrap().message;
    assert!(
        message.contains("did not become Ready within the monitor window (5s)"),
        "{message}"
    );
}

#[test]
fn no_progress_within_the_deadline_fails_the_rollout() {
    let mut service = rolling(2, 0);
    service.spec.update.order = UpdateOrder::StartFirst;
    service.spec.update.progress_deadline = Some(ApiDuration::from_secs(600));
    // The new task cannot be placed: it stays pending.
    let pending = t("a2", 1)
        .created(10)
        .image("web:2")
        .state(TaskState::Pending);
    let step = step_for(&service, &[pending.clone(), old("a", 1), old("b", 2)]);
    assert_eq!(state(&step), RolloutState::Paused);
    assert_eq!(step.events[0].reason, "ProgressDeadlineExceeded");
    service.spec.update.progress_deadline = Some(ApiDuration::from_secs(1200));
    let step = step_for(&service, &[pending, old("a", 1), old("b", 2)]);
    assert_eq!(state(&step), RolloutState::Updating);
    assert_eq!(
        step.requeue_after,
        Some(std::time::Duration::from_secs(200))
    );
}

#[test]
fn the_rollout_completes_once_the_last_new_task_was_ready_for_the_monitor_window() {
    let mut service = rolling(2, 900);
    service.spec.update.monitor = Some(ApiDuration::from_secs(5));
    let tasks = |last_ready| {
        [
            ready(new("a2", 1, 950), 960),
            ready(new("b2", 2, 970), last_ready),
        ]
    };
    let step = step_for(&service, &tasks(998));
    assert_eq!(state(&step), RolloutState::Updating);
    assert_eq!(step.requeue_after, Some(std::time::Duration::from_secs(3)));
    let step = step_for(&service, &tasks(990));
    assert_eq!(state(&step), RolloutState::Completed);
    assert_eq!(step.status.unwrap().completed_at, Some(at(NOW)));
}

#[test]
fn a_rollback_uses_the_rollback_config_and_pauses_on_failure() {
    let mut service = rolling(2, 900);
    rollout_of(&mut service).state = RolloutState::RollbackStarted;
    service.spec.update.failure_action = FailureAction::Rollback;
    service.spec.update.order = UpdateOrder::StartFirst;
    service.spec.rollback.parallelism = Some(0);
    assert_eq!(order(&service, &target(&service)), UpdateOrder::StopFirst);
    let step = step_for(&service, &[old("a", 1), old("b", 2)]);
    assert_eq!(
        (state(&step), step.start),
        (RolloutState::RollbackStarted, 2)
    );
    let step = step_for(
        &service,
        &[new("a2", 1, 950).state(TaskState::Failed), old("b", 2)],
    );
    assert_eq!(state(&step), RolloutState::RollbackPaused);
    assert!(
        step.rollback.is_none(),
        "a rollback never rolls back itself"
    );
}

#[test]
fn a_paused_service_starts_no_batch() {
    let mut service = rolling(2, 900);
    service.spec.paused = true;
    let step = step_for(&service, &[old("a", 1), old("b", 2)]);
    assert_eq!((state(&step), step.start), (RolloutState::Paused, 0));
}

#[test]
fn the_monitor_window_starts_once_the_first_readiness_probe_could_run() {
    let mut service = rolling(1, 900);
    service.spec.update.monitor = Some(ApiDuration::from_secs(5));
    let probe = serde_json::json!({
        "httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 10, "periodSeconds": 5,
    });
    service.spec.template.probes.readiness = Some(serde_json::from_value(probe).unwrap());
    rollout_of(&mut service).target = target(&service);
    let started_at = |secs| {
        let mut task = ready(new("a2", 1, 950).of(&service), secs);
        let conditions = &mut task.0.status.as_mut().unwrap().conditions;
        conditions.retain(|c| c.type_ != dctl_apis::task::CONDITION_READY);
        task
    };
    // 10 s after its start: its first probe (10 s delay + one 5 s period) is still due, so
    // the 5 s window runs until 20 s after the start.
    let step = step_for(&service, &[started_at(990), old("a", 1)]);
    assert_eq!(state(&step), RolloutState::Updating);
    assert_eq!(step.requeue_after, Some(std::time::Duration::from_secs(10)));
    // 25 s after its start and still not Ready: a failure.
    let step = step_for(&service, &[started_at(975), old("a", 1)]);
    assert_eq!(state(&step), RolloutState::Paused);
}
