//! Table tests of the restart policy: condition × ending × attempts × window × backoff.

use std::time::Duration;

use chrono::TimeZone;
use dctl_apis::duration::Duration as ApiDuration;
use dctl_apis::task::{TaskDesiredState, TaskSpec, TaskState, TaskStatus};
use dctl_apis::template::{RestartCondition, RestartPolicy};
use dctl_apis::{ObjectMeta, Task, Time};

use super::*;

fn at(secs: i64) -> Time {
    chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A task of slot 1 created at `created` (seconds) that reached `state` at `ended`.
fn task(state: TaskState, desired: TaskDesiredState, created: i64, ended: i64) -> Task {
    let mut meta = ObjectMeta::named("demo", &format!("web.1.t{created}"));
    meta.creation_timestamp = Some(at(created));
    let mut task = Task::new(
        meta,
        TaskSpec {
            service_name: "web".into(),
            slot: Some(1),
            desired_state: desired,
            ..TaskSpec::default()
        },
    );
    task.status = Some(TaskStatus {
        state,
        timestamp: Some(at(ended)),
        exit_code: (state == TaskState::Complete).then_some(0),
        ..TaskStatus::default()
    });
    task
}

/// The task that ended while meant to run.
fn dead(state: TaskState, created: i64, ended: i64) -> Task {
    task(state, TaskDesiredState::Running, created, ended)
}

/// An earlier task of the slot, replaced after it ended.
fn replaced(state: TaskState, created: i64, ended: i64) -> Task {
    task(state, TaskDesiredState::Shutdown, created, ended)
}

fn policy(condition: RestartCondition, delay_ms: u64, max: u32, window_s: u64) -> RestartPolicy {
    RestartPolicy {
        condition,
        delay: Some(ApiDuration::from_millis(delay_ms)),
        max_attempts: max,
        window: ApiDuration::from_secs(window_s),
    }
}

#[test]
fn the_condition_decides_which_endings_are_replaced() {
    use RestartCondition::{Any, None as Never, OnFailure};
    use TaskState::*;
    // Each task ran 60 s (stable) and ended at t=100; now is t=200, past any delay.
    let cases = [
        (Any, Complete, Restart::Now),
        (Any, Failed, Restart::Now),
        (Any, Rejected, Restart::Now),
        (Any, Shutdown, Restart::Now),
        (Any, Orphaned, Restart::Now),
        (OnFailure, Complete, Restart::NotWanted),
        (OnFailure, Failed, Restart::Now),
        (OnFailure, Rejected, Restart::Now),
        // Stopped, but not by dctl (the task is still meant to run): a failure.
        (OnFailure, Shutdown, Restart::Now),
        (OnFailure, Orphaned, Restart::Now),
        (Never, Complete, Restart::NotWanted),
        (Never, Failed, Restart::NotWanted),
        // Losing the node is not the task's ending: it moves whatever the policy.
        (Never, Orphaned, Restart::Now),
        // Not ended at all.
        (Any, Running, Restart::NotWanted),
    ];
    for (condition, state, expected) in cases {
        let policy = policy(condition, 5_000, 0, 0);
        let got = decide(&policy, &dead(state, 40, 100), &[], at(200));
        assert_eq!(got, expected, "{condition:?} × {state}");
    }
}

#[test]
fn a_complete_task_with_a_nonzero_exit_code_failed() {
    let mut task = dead(TaskState::Complete, 40, 100);
    task.status.as_mut().unwrap().exit_code = Some(3);
    assert_eq!(ending(&task), Some(Ending::Failed));
    let policy = policy(RestartCondition::OnFailure, 0, 0, 0);
    assert_eq!(decide(&policy, &task, &[], at(200)), Restart::Now);
}

#[test]
fn max_attempts_count_replaced_endings_within_the_window() {
    use TaskState::*;
    let failed_at = |ended| replaced(Failed, ended - 60, ended);
    let cases: Vec<(&str, u32, u64, Vec<Task>, Restart)> = vec![
        (
            "no limit",
            0,
            0,
            vec![failed_at(10), failed_at(20)],
            Restart::Now,
        ),
        (
            "below the limit",
            3,
            0,
            vec![failed_at(10), failed_at(20)],
            Restart::Now,
        ),
        (
            "at the limit, all time",
            2,
            0,
            vec![failed_at(10), failed_at(20)],
            Restart::Exhausted {
                attempts: 2,
                until: None,
            },
        ),
        (
            "stopped and displaced tasks are not attempts",
            2,
            0,
            vec![
                failed_at(10),
                replaced(Shutdown, 0, 20),
                replaced(Orphaned, 0, 30),
            ],
            Restart::Now,
        ),
        (
            "only attempts inside the window count",
            2,
            50,
            vec![failed_at(10), failed_at(160)],
            Restart::Now,
        ),
        (
            "at the limit within the window: retried when the oldest leaves it",
            2,
            100,
            vec![failed_at(110), failed_at(150), failed_at(170)],
            Restart::Exhausted {
                attempts: 3,
                until: Some(at(250)),
            },
        ),
    ];
    for (name, max, window, earlier, expected) in cases {
        let policy = policy(RestartCondition::Any, 0, max, window);
        let earlier: Vec<&Task> = earlier.iter().collect();
        let got = decide(&policy, &dead(Failed, 120, 180), &earlier, at(200));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn the_delay_runs_from_the_end_and_grows_in_a_crash_loop() {
    use TaskState::Failed;
    // (earlier tasks as (created, ended), the dead one, now) → expected decision
    let stable = |c, e| replaced(Failed, c, e);
    let cases: Vec<(&str, Vec<Task>, Task, i64, Restart)> = vec![
        (
            "stable run: the plain delay",
            vec![],
            dead(Failed, 0, 100),
            102,
            at_(105, 0),
        ),
        (
            "delay passed",
            vec![],
            dead(Failed, 0, 100),
            105,
            Restart::Now,
        ),
        (
            "first quick failure: the plain delay",
            vec![],
            dead(Failed, 98, 100),
            101,
            at_(105, 1),
        ),
        (
            "third quick failure in a row: delay × 4",
            vec![stable(90, 92), stable(94, 96)],
            dead(Failed, 98, 100),
            101,
            at_(120, 3),
        ),
        (
            "a stable run resets the count",
            vec![stable(0, 50), stable(94, 96), stable(60, 90)],
            dead(Failed, 98, 100),
            101,
            at_(110, 2),
        ),
    ];
    for (name, earlier, task, now, expected) in cases {
        let policy = policy(RestartCondition::Any, 5_000, 0, 0);
        let earlier: Vec<&Task> = earlier.iter().collect();
        assert_eq!(
            decide(&policy, &task, &earlier, at(now)),
            expected,
            "{name}"
        );
    }
}

fn at_(secs: i64, quick_failures: u32) -> Restart {
    Restart::At {
        at: at(secs),
        quick_failures,
    }
}

#[test]
fn backoff_doubles_from_a_floor_up_to_a_ceiling() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let cases = [
        (s(5), 0, s(5)),
        (s(5), 1, s(5)),
        (s(5), 2, s(10)),
        (s(5), 4, s(40)),
        (s(5), 10, MAX_BACKOFF),
        (s(5), 1000, MAX_BACKOFF),
        (Duration::ZERO, 1, Duration::ZERO),
        (Duration::ZERO, 2, ms(200)),
        (ms(200), 3, ms(800)),
        // A delay above the ceiling is the user's choice and stays.
        (s(600), 3, s(600)),
    ];
    for (delay, quick, expected) in cases {
        assert_eq!(backoff(delay, quick), expected, "{delay:?} × {quick}");
    }
}
