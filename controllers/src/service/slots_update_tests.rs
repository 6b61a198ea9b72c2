//! Table tests of a slot's update: the survey, staging stop-first and start-first, rollback.

use dctl_apis::meta::Condition;
use dctl_apis::task::{TaskDesiredState, TaskState, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::template::RestartCondition;

use super::tests::{active, at, g, global, n, nodes, plan_for, r, replicated, stop, t, T};
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

/// A task that became Ready at `secs`.
pub(in crate::service) fn ready(task: T, secs: i64) -> T {
    let mut task = task.state(TaskState::Running);
    let status = task.0.status.as_mut().unwrap();
    for type_ in [CONDITION_STARTED, CONDITION_READY] {
        status.conditions.push(Condition {
            type_: type_.into(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_transition_time: at(secs),
            observed_generation: None,
        });
    }
    task
}

#[test]
fn the_survey_sorts_slots_by_how_far_they_are_from_the_template() {
    use TaskState::{Pending, Running};
    let fits = nodes(&[("n1", active()), ("n2", active())]);
    let mut service = replicated(4);
    service.spec.placement.constraints = vec!["node.labels.zone == a".into()];
    let mut fits_b = fits.clone();
    fits_b.get_mut("n2").unwrap().matches = false;
    let tasks = [
        t("old", 1).on("n1").state(Running).image("web:0"),
        t("starting", 2).on("n1").state(Pending).of(&service),
        ready(t("done", 3).on("n1").of(&service), 40),
        t("elsewhere", 4).on("n2").state(Running).of(&service),
    ];
    let plan = plan_for(&service, &tasks, &fits_b);
    let outdated: Vec<(&str, bool)> = plan
        .survey
        .outdated
        .iter()
        .map(|o| (o.task.as_str(), o.misplaced))
        .collect();
    assert_eq!(outdated, [("old", false), ("elsewhere", true)]);
    assert_eq!(plan.survey.in_flight, 1);
    assert_eq!(plan.survey.ready_since, [at(40)]);
    assert!(plan.create.is_empty() && plan.stop.is_empty(), "{plan:?}");
}

#[test]
fn publishing_a_port_outdates_tasks_without_its_host_port() {
    use dctl_apis::service::PublishedPort;
    use dctl_apis::template::{ContainerPort, PortRef, Protocol};
    let fits = nodes(&[("n1", active())]);
    let mut service = replicated(2);
    service.spec.template.ports = vec![ContainerPort {
        name: None,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let before = [
        ready(t("a", 1).on("n1").of(&service), 10),
        ready(t("b", 2).on("n1").of(&service), 10),
    ];
    assert!(plan_for(&service, &before, &fits)
        .survey
        .outdated
        .is_empty());

    // Docker cannot add a port binding to a running container: both slots must roll.
    service.spec.publish = vec![PublishedPort {
        port: 80,
        target_port: PortRef::Number(8080),
        protocol: Protocol::Tcp,
        mode: Default::default(),
    }];
    let plan = plan_for(&service, &before, &fits);
    let outdated: Vec<&str> = plan
        .survey
        .outdated
        .iter()
        .map(|o| o.task.as_str())
        .collect();
    assert_eq!(outdated, ["a", "b"]);

    // Tasks created since carry the host port and are up to date.
    let after = [
        ready(t("c", 1).on("n1").of(&service), 20),
        ready(t("d", 2).on("n1").of(&service), 20),
    ];
    assert!(plan_for(&service, &after, &fits).survey.outdated.is_empty());
}

#[test]
fn stop_first_stages_the_new_task_and_stops_the_old_one() {
    use TaskState::Running;
    let fits = nodes(&[("n1", active())]);
    let service = replicated(3);
    let old = |id, slot| t(id, slot).on("n1").state(Running).image("web:0");
    let mut plan = plan_for(&service, &[old("a", 1), old("b", 2), old("c", 3)], &fits);
    assert_eq!(plan.stage_updates(2), [r(1), r(2)]);
    let staged = |replaces: &str, slot| NewTask {
        slot,
        desired_state: TaskDesiredState::Ready,
        reason: CreateReason::Update {
            replaces: replaces.into(),
        },
    };
    assert_eq!(plan.create, [staged("a", r(1)), staged("b", r(2))]);
    assert_eq!(
        plan.stop,
        [
            stop("a", StopReason::Outdated, true),
            stop("b", StopReason::Outdated, true)
        ]
    );
    assert_eq!(plan.survey.outdated.len(), 1);
    assert_eq!(plan.survey.in_flight, 2);
}

#[test]
fn start_first_keeps_the_old_task_until_its_replacement_is_ready() {
    use TaskState::{Pending, Running};
    let fits = nodes(&[("n1", active())]);
    let mut service = replicated(1);
    service.spec.update.order = UpdateOrder::StartFirst;
    let old = t("old", 1).on("n1").state(Running).image("web:0");

    let mut plan = plan_for(&service, std::slice::from_ref(&old), &fits);
    plan.stage_updates(1);
    assert_eq!(plan.create[0].desired_state, TaskDesiredState::Running);
    assert!(plan.stop.is_empty(), "the old task serves meanwhile");

    let starting = t("new", 1).created(10).on("n1").state(Pending).of(&service);
    let plan = plan_for(&service, &[old.clone(), starting], &fits);
    assert!(plan.stop.is_empty() && plan.create.is_empty(), "{plan:?}");
    assert_eq!(plan.survey.in_flight, 1);

    let up = ready(t("new", 1).created(10).on("n1").of(&service), 20);
    let plan = plan_for(&service, &[old.clone(), up], &fits);
    assert_eq!(plan.stop, [stop("old", StopReason::ReplacementReady, true)]);
    assert_eq!(plan.survey.ready_since, [at(20)]);

    // Stop-first would not keep both: the older one is superseded.
    service.spec.update.order = UpdateOrder::StopFirst;
    let starting = t("new", 1).created(10).on("n1").state(Pending).of(&service);
    let plan = plan_for(&service, &[old, starting], &fits);
    assert_eq!(plan.stop, [stop("old", StopReason::Superseded, true)]);
}

#[test]
fn a_rollback_keeps_the_old_task_that_still_runs_the_template() {
    use TaskState::{Pending, Running};
    let fits = nodes(&[("n1", active())]);
    let mut service = replicated(1);
    service.spec.update.order = UpdateOrder::StartFirst;
    // The template went back to web:1 while the web:2 task never became Ready.
    let old = t("old", 1).on("n1").state(Running).of(&service);
    let bad = t("bad", 1)
        .created(10)
        .on("n1")
        .state(Pending)
        .image("web:2");
    let plan = plan_for(&service, &[old, bad], &fits);
    assert_eq!(plan.stop, [stop("bad", StopReason::RolledBack, true)]);
    assert!(plan.create.is_empty());
    assert!(plan.survey.outdated.is_empty());
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

#[test]
fn a_global_service_rolls_node_by_node() {
    use TaskState::{Running, Shutdown};
    let fits = nodes(&[("n1", active()), ("n2", active()), ("n3", active())]);
    let service = global();
    let old = |id, node| g(id, node).state(Running).image("web:0");
    let tasks = [old("a", "n1"), old("b", "n2"), old("c", "n3")];
    let mut plan = plan_for(&service, &tasks, &fits);
    assert_eq!(plan.survey.outdated.len(), 3);
    assert_eq!(plan.stage_updates(1), [n("n1")]);
    let staged = NewTask {
        slot: n("n1"),
        desired_state: TaskDesiredState::Ready,
        reason: CreateReason::Update {
            replaces: "a".into(),
        },
    };
    assert_eq!(plan.create, [staged]);
    assert_eq!(plan.stop, [stop("a", StopReason::Outdated, true)]);

    // n1 runs the template again: the next batch is the next node's, one task per node.
    let tasks = [
        g("a", "n1").stopped().state(Shutdown).image("web:0"),
        ready(g("a2", "n1").created(10).of(&service), 20),
        old("b", "n2"),
        old("c", "n3"),
    ];
    let mut plan = plan_for(&service, &tasks, &fits);
    assert_eq!(plan.survey.in_flight, 0);
    assert_eq!(plan.stage_updates(1), [n("n2")]);
    assert_eq!(plan.stop, [stop("b", StopReason::Outdated, true)]);
}
