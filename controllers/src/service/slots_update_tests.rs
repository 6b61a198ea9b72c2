//! Table tests of the interim rollout: template changes replace tasks slot by slot, stop-first.

use dctl_apis::task::{TaskDesiredState, TaskState};
use dctl_apis::template::RestartCondition;

use super::tests::{active, nodes, plan_for, r, replicated, stop, t, T};
use super::*;

#[test]
fn a_new_template_restarts_a_held_slot_with_fresh_attempts() {
    use TaskState::{Complete, Failed};
    let fits = nodes(&[("n1", active())]);
    let mut service = replicated(1);
    service.spec.template.restart_policy.condition = RestartCondition::None;
    service.spec.template.restart_policy.max_attempts = 1;
    // A one-shot task that completed, under condition none: held, until the template changes.
    let done = [t("a", 1).on("n1").state_at(Complete, 100).image("web:0")];
    let plan = plan_for(&service, &done, &fits);
    let update = NewTask {
        slot: r(1),
        desired_state: TaskDesiredState::Running,
        reason: CreateReason::Update {
            replaces: "a".into(),
        },
    };
    assert_eq!(plan.create, [update]);
    assert_eq!(plan.stop, [stop("a", StopReason::Replaced, false)]);

    // maxAttempts used up under the old template does not hold the new one.
    service.spec.template.restart_policy.condition = RestartCondition::Any;
    let tasks = [
        t("a", 1)
            .on("n1")
            .stopped()
            .state_at(Failed, 100)
            .image("web:0"),
        t("b", 1)
            .on("n1")
            .created(200)
            .state_at(Failed, 300)
            .of(&service),
    ];
    let plan = plan_for(&service, &tasks, &fits);
    let restart = CreateReason::Restart {
        replaces: "b".into(),
    };
    assert_eq!(
        plan.create.iter().map(|c| &c.reason).collect::<Vec<_>>(),
        [&restart]
    );
}

#[test]
fn template_changes_roll_parallelism_slots_at_a_time_stop_first() {
    use TaskState::{Pending, Running};
    let fits = nodes(&[("n1", active())]);
    let old = |id, slot| t(id, slot).on("n1").state(Running).image("web:0");
    let staged = |replaces: &str, slot| NewTask {
        slot,
        desired_state: TaskDesiredState::Ready,
        reason: CreateReason::Update {
            replaces: replaces.into(),
        },
    };
    // (parallelism, tasks) → staged replacements
    let cases: Vec<(&str, u32, Vec<T>, Vec<NewTask>)> = vec![
        (
            "one at a time",
            1,
            vec![old("a", 1), old("b", 2), old("c", 3)],
            vec![staged("a", r(1))],
        ),
        (
            "zero means all",
            0,
            vec![old("a", 1), old("b", 2)],
            vec![staged("a", r(1)), staged("b", r(2))],
        ),
        (
            "a new task not yet running holds the batch",
            1,
            vec![t("a2", 1).on("n1").state(Pending), old("b", 2)],
            vec![],
        ),
        (
            "a staged task holds the batch",
            2,
            vec![
                t("a2", 1).desired(TaskDesiredState::Ready),
                old("a", 1).stopped(),
                old("b", 2),
                old("c", 3),
            ],
            vec![staged("b", r(2))],
        ),
        (
            "a running new task frees its place",
            1,
            vec![t("a2", 1).on("n1").state(Running), old("b", 2)],
            vec![staged("b", r(2))],
        ),
    ];
    for (name, parallelism, tasks, expected) in cases {
        let mut service =
            replicated(u32::try_from(tasks.iter().filter(|t| is_current(&t.0)).count()).unwrap());
        service.spec.update.parallelism = Some(parallelism);
        let plan = plan_for(&service, &tasks, &fits);
        assert_eq!(plan.create, expected, "{name}");
        let stopped: Vec<&str> = plan.stop.iter().map(|s| s.task.as_str()).collect();
        let replaced: Vec<&str> = expected
            .iter()
            .map(|c| match &c.reason {
                CreateReason::Update { replaces } => replaces.as_str(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(stopped, replaced, "{name}");
    }
}

#[test]
fn a_staged_task_starts_once_its_predecessor_stopped() {
    use TaskState::{Running, Shutdown};
    let fits = nodes(&[("n1", active())]);
    let staged = t("new", 1).created(10).desired(TaskDesiredState::Ready);
    let cases = [
        (
            "still stopping",
            t("old", 1).on("n1").stopped().state(Running),
            vec![],
        ),
        (
            "stopped",
            t("old", 1).on("n1").stopped().state(Shutdown),
            vec!["new".to_string()],
        ),
        (
            "never bound",
            t("old", 1).stopped(),
            vec!["new".to_string()],
        ),
    ];
    for (name, old, expected) in cases {
        let plan = plan_for(&replicated(1), &[staged.clone(), old], &fits);
        assert_eq!(plan.start, expected, "{name}");
    }
}
