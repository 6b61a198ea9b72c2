//! Table tests of the slot decisions: which slots need tasks, scale-down order, history;
//! the builders here serve `slots_update_tests.rs` too.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeZone;
use dctl_apis::duration::Duration as ApiDuration;
use dctl_apis::node::NodeAvailability;
use dctl_apis::service::{ServiceMode, ServiceSpec};
use dctl_apis::task::{TaskDesiredState, TaskSpec, TaskState, TaskStatus};
use dctl_apis::template::RestartCondition;
use dctl_apis::{ObjectMeta, Service, Task, TaskTemplate, Time};

use super::*;

const NOW: i64 = 1_000;

pub(in crate::service) fn at(secs: i64) -> Time {
    chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub(in crate::service) fn template(image: &str) -> TaskTemplate {
    let mut template = TaskTemplate {
        image: image.into(),
        ..TaskTemplate::default()
    };
    template.restart_policy.delay = Some(ApiDuration::from_secs(5));
    template
}

pub(in crate::service) fn replicated(replicas: u32) -> Service {
    let mut spec = ServiceSpec {
        mode: ServiceMode::Replicated,
        replicas: Some(replicas),
        template: template("web:1"),
        ..ServiceSpec::default()
    };
    spec.update.parallelism = Some(1);
    Service::new(ObjectMeta::named("demo", "web"), spec)
}

pub(in crate::service) fn global() -> Service {
    let mut service = replicated(0);
    service.spec.mode = ServiceMode::Global;
    service.spec.replicas = None;
    service
}

/// A task builder: `t("a", 1).on("n1").state(Running)`.
#[derive(Clone)]
pub(in crate::service) struct T(pub(in crate::service) Task);

pub(in crate::service) fn t(id: &str, slot: u32) -> T {
    T::new(id, Some(slot), None)
}

pub(in crate::service) fn g(id: &str, node: &str) -> T {
    T::new(id, None, Some(node)).on(node)
}

impl T {
    fn new(id: &str, slot: Option<u32>, node: Option<&str>) -> T {
        let mut meta = ObjectMeta::named("demo", id);
        meta.creation_timestamp = Some(at(0));
        T(Task::new(
            meta,
            TaskSpec {
                template: template("web:1"),
                service_name: "web".into(),
                slot,
                node: node.map(String::from),
                ..TaskSpec::default()
            },
        ))
    }

    pub(in crate::service) fn created(mut self, secs: i64) -> T {
        self.0.metadata.creation_timestamp = Some(at(secs));
        self
    }

    pub(in crate::service) fn on(mut self, node: &str) -> T {
        self.0.spec.node_name = Some(node.into());
        self
    }

    /// Reached `state` at `secs`.
    pub(in crate::service) fn state_at(mut self, state: TaskState, secs: i64) -> T {
        self.0.status = Some(TaskStatus {
            state,
            timestamp: Some(at(secs)),
            ..TaskStatus::default()
        });
        self
    }

    pub(in crate::service) fn state(self, state: TaskState) -> T {
        self.state_at(state, 0)
    }

    pub(in crate::service) fn desired(mut self, desired: TaskDesiredState) -> T {
        self.0.spec.desired_state = desired;
        self
    }

    pub(in crate::service) fn stopped(self) -> T {
        self.desired(TaskDesiredState::Shutdown)
    }

    /// Runs the service's exact template (its restart policy included), with host ports
    /// for what it publishes.
    pub(in crate::service) fn of(mut self, service: &Service) -> T {
        self.0.spec.template = service.spec.template.clone();
        self.0.spec.published_ports = service.spec.published_task_ports();
        self
    }

    pub(in crate::service) fn image(mut self, image: &str) -> T {
        self.0.spec.template = template(image);
        self
    }
}

fn fit(ready: bool, availability: NodeAvailability, matches: bool) -> NodeFit {
    NodeFit {
        ready,
        availability,
        matches,
    }
}

pub(in crate::service) fn active() -> NodeFit {
    fit(true, NodeAvailability::Active, true)
}

pub(in crate::service) fn nodes(list: &[(&str, NodeFit)]) -> BTreeMap<String, NodeFit> {
    list.iter().map(|(n, f)| (n.to_string(), *f)).collect()
}

pub(in crate::service) fn plan_for(
    service: &Service,
    tasks: &[T],
    nodes: &BTreeMap<String, NodeFit>,
) -> Plan {
    let tasks: Vec<&Task> = tasks.iter().map(|t| &t.0).collect();
    plan(&Input {
        service,
        tasks: &tasks,
        nodes,
        history_limit: 5,
        order: service.spec.update.order,
        now: at(NOW),
    })
}

fn new_slot(slot: SlotId) -> NewTask {
    NewTask {
        slot,
        desired_state: TaskDesiredState::Running,
        reason: CreateReason::NewSlot,
    }
}

pub(in crate::service) fn stop(task: &str, reason: StopReason, live: bool) -> Stop {
    Stop {
        task: task.into(),
        reason,
        live,
    }
}

pub(in crate::service) fn r(n: u32) -> SlotId {
    SlotId::Replica(n)
}

pub(in crate::service) fn n(node: &str) -> SlotId {
    SlotId::Node(node.into())
}

#[test]
fn replicated_slots_are_filled_up_to_replicas() {
    use TaskState::Running;
    let two = nodes(&[("n1", active())]);
    let cases: Vec<(&str, u32, Vec<T>, Vec<SlotId>)> = vec![
        ("a new service", 3, vec![], vec![r(1), r(2), r(3)]),
        (
            "all there",
            2,
            vec![t("a", 1).on("n1").state(Running), t("b", 2).on("n1")],
            vec![],
        ),
        ("scale up", 3, vec![t("a", 1), t("b", 2)], vec![r(3)]),
        (
            "holes take the lowest free numbers",
            3,
            vec![t("a", 1), t("d", 4)],
            vec![r(2)],
        ),
        (
            "a slot whose task was stopped is free again",
            2,
            vec![t("a", 1), t("b", 2).stopped()],
            vec![r(2)],
        ),
        (
            "a task that ended is still its slot's (the restart policy decides)",
            1,
            vec![t("a", 1).state_at(TaskState::Complete, NOW - 1)],
            vec![],
        ),
    ];
    for (name, replicas, tasks, expected) in cases {
        let plan = plan_for(&replicated(replicas), &tasks, &two);
        let created: Vec<SlotId> = plan.create.iter().map(|c| c.slot.clone()).collect();
        assert_eq!(created, expected, "{name}");
        assert!(
            plan.create
                .iter()
                .all(|c| c.reason == CreateReason::NewSlot),
            "{name}"
        );
        assert!(plan.stop.is_empty(), "{name}: {:?}", plan.stop);
    }
}

#[test]
fn scale_down_takes_non_running_then_most_loaded_then_highest() {
    use TaskState::{Failed, Pending, Running};
    let tasks = [
        (r(1), t("a", 1).on("n1").state(Running)),
        (r(2), t("b", 2).on("n1").state(Running)),
        (r(3), t("c", 3).state(Pending)),
        (r(4), t("d", 4).on("n2").state(Running)),
        (r(5), t("e", 5).on("n1").state(Running)),
        (r(6), t("f", 6).on("n2").state_at(Failed, 900)),
        (r(7), t("g", 7).on("n3").state(Running)),
    ];
    let occupied: Vec<(SlotId, &Task)> = tasks.iter().map(|(s, t)| (s.clone(), &t.0)).collect();
    // Not running: 6 (n2 has 2 tasks) before 3 (unbound). Running: n1 (3 tasks) high to
    // low, then n2 (2), then n3 (1).
    assert_eq!(
        scale_down_order(&occupied),
        [r(6), r(3), r(5), r(2), r(1), r(4), r(7)]
    );

    let tasks: Vec<T> = tasks.into_iter().map(|(_, t)| t).collect();
    let plan = plan_for(
        &replicated(3),
        &tasks,
        &nodes(&[("n1", active()), ("n2", active()), ("n3", active())]),
    );
    assert_eq!(
        plan.stop,
        [
            stop("f", StopReason::ScaledDown, false),
            stop("c", StopReason::ScaledDown, true),
            stop("e", StopReason::ScaledDown, true),
            stop("b", StopReason::ScaledDown, true),
        ]
    );
    assert_eq!(plan.create, []);
}

/// (name, condition, max attempts, tasks) → (created, stopped, requeue after seconds).
type RestartCase = (
    &'static str,
    RestartCondition,
    u32,
    Vec<T>,
    Vec<CreateReason>,
    Vec<&'static str>,
    Option<u64>,
);

#[test]
fn ended_tasks_are_replaced_per_the_restart_policy() {
    use TaskState::{Complete, Failed, Orphaned};
    let one_node = nodes(&[("n1", active())]);
    let restart = |replaces: &str| CreateReason::Restart {
        replaces: replaces.into(),
    };
    // (name, condition, max attempts, tasks of slot 1) → (created, stopped, requeue)
    let cases: Vec<RestartCase> = vec![
        (
            "failed long ago: replaced now",
            RestartCondition::Any,
            0,
            vec![t("a", 1).on("n1").state_at(Failed, 100)],
            vec![restart("a")],
            vec!["a"],
            None,
        ),
        (
            "failed 2 s ago: replaced after the 5 s delay",
            RestartCondition::Any,
            0,
            vec![t("a", 1).on("n1").created(500).state_at(Failed, NOW - 2)],
            vec![],
            vec![],
            Some(3),
        ),
        (
            "completed under on-failure: left alone",
            RestartCondition::OnFailure,
            0,
            vec![t("a", 1).on("n1").state_at(Complete, 100)],
            vec![],
            vec![],
            None,
        ),
        (
            "orphaned: moved now, whatever the condition",
            RestartCondition::None,
            0,
            vec![t("a", 1).on("n1").state_at(Orphaned, NOW)],
            vec![CreateReason::Moved {
                replaces: "a".into(),
            }],
            vec!["a"],
            None,
        ),
        (
            "max attempts reached: the slot stays empty",
            RestartCondition::OnFailure,
            2,
            vec![
                t("a", 1).on("n1").stopped().state_at(Failed, 100),
                t("b", 1).on("n1").stopped().state_at(Failed, 200),
                t("c", 1).on("n1").created(300).state_at(Failed, 400),
            ],
            vec![],
            vec![],
            None,
        ),
    ];
    for (name, condition, max, tasks, created, stopped, requeue) in cases {
        let mut service = replicated(1);
        service.spec.template.restart_policy.condition = condition;
        service.spec.template.restart_policy.max_attempts = max;
        let tasks: Vec<T> = tasks.into_iter().map(|t| t.of(&service)).collect();
        let plan = plan_for(&service, &tasks, &one_node);
        let reasons: Vec<CreateReason> = plan.create.iter().map(|c| c.reason.clone()).collect();
        assert_eq!(reasons, created, "{name}");
        let names: Vec<&str> = plan.stop.iter().map(|s| s.task.as_str()).collect();
        assert_eq!(names, stopped, "{name}");
        assert!(plan
            .stop
            .iter()
            .all(|s| s.reason == StopReason::Replaced && !s.live));
        assert_eq!(
            plan.requeue_after,
            requeue.map(Duration::from_secs),
            "{name}"
        );
        if max > 0 {
            let held = Held {
                slot: r(1),
                task: "c".into(),
                reason: HeldReason::MaxAttempts {
                    attempts: 2,
                    max: 2,
                },
            };
            assert_eq!(plan.held, [held], "{name}");
        }
    }
}

#[test]
fn a_crash_loop_is_held_with_a_backoff() {
    use TaskState::Failed;
    let tasks = [
        t("a", 1)
            .on("n1")
            .stopped()
            .created(990)
            .state_at(Failed, 992),
        t("b", 1).on("n1").created(995).state_at(Failed, 997),
    ];
    let plan = plan_for(&replicated(1), &tasks, &nodes(&[("n1", active())]));
    let held = Held {
        slot: r(1),
        task: "b".into(),
        reason: HeldReason::BackOff {
            quick_failures: 2,
            at: at(1_007),
        },
    };
    assert_eq!(plan.held, [held]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(7)));
    assert!(plan.create.is_empty());
}

#[test]
fn tasks_on_a_drained_or_vanished_node_move_at_once() {
    use TaskState::Running;
    let fits = nodes(&[
        ("n1", active()),
        ("n2", fit(true, NodeAvailability::Drain, true)),
    ]);
    let tasks = [
        t("a", 1).on("n1").state(Running),
        t("b", 2).on("n2").state(Running),
        t("c", 3).on("n9").state(Running),
    ];
    let plan = plan_for(&replicated(3), &tasks, &fits);
    let moved = |replaces: &str, slot| NewTask {
        slot,
        desired_state: TaskDesiredState::Running,
        reason: CreateReason::Moved {
            replaces: replaces.into(),
        },
    };
    assert_eq!(plan.create, [moved("b", r(2)), moved("c", r(3))]);
    assert_eq!(
        plan.stop,
        [
            stop("b", StopReason::NodeDrained("n2".into()), true),
            stop("c", StopReason::NodeGone("n9".into()), true),
        ]
    );
}

#[test]
fn global_services_run_one_task_per_eligible_node() {
    use NodeAvailability::{Active, Drain, Pause};
    use TaskState::Running;
    let fits = nodes(&[
        ("ready", active()),
        ("drained", fit(true, Drain, true)),
        ("down", fit(false, Active, true)),
        ("down-with-task", fit(false, Active, true)),
        ("paused", fit(true, Pause, true)),
        ("paused-with-task", fit(true, Pause, true)),
        ("unmatched", fit(true, Active, false)),
    ]);
    let tasks = [
        g("d", "drained").state(Running),
        g("w", "down-with-task").state(Running),
        g("p", "paused-with-task").state(Running),
        g("u", "unmatched").state(Running),
        g("x", "deleted").state(Running),
        t("r", 1).state(Running),
    ];
    let plan = plan_for(&global(), &tasks, &fits);
    assert_eq!(plan.create, [new_slot(n("ready"))]);
    assert_eq!(
        plan.stop,
        [
            stop("d", StopReason::NodeDrained("drained".into()), true),
            stop("u", StopReason::NodeIneligible("unmatched".into()), true),
            stop("r", StopReason::ModeChanged, true),
            stop("x", StopReason::NodeGone("deleted".into()), true),
        ]
    );
}

#[test]
fn a_global_task_that_ended_waits_for_its_node() {
    use TaskState::Orphaned;
    let tasks = [g("a", "n1").state_at(Orphaned, 900)];
    let down = nodes(&[("n1", fit(false, NodeAvailability::Active, true))]);
    assert_eq!(plan_for(&global(), &tasks, &down), Plan::default());
    let back = nodes(&[("n1", active())]);
    let plan = plan_for(&global(), &tasks, &back);
    assert_eq!(plan.create[0].slot, n("n1"));
    assert_eq!(plan.stop, [stop("a", StopReason::Replaced, false)]);
}

#[test]
fn a_slot_keeps_its_newest_current_task() {
    use TaskState::{Failed, Running};
    let tasks = [
        t("old", 1).on("n1").state(Running),
        t("new", 1).created(10),
        t("dead", 2).on("n1").state_at(Failed, 5),
        t("fresh", 2).created(10),
    ];
    let plan = plan_for(&replicated(2), &tasks, &nodes(&[("n1", active())]));
    assert_eq!(
        plan.stop,
        [
            stop("old", StopReason::Superseded, true),
            stop("dead", StopReason::Replaced, false),
        ]
    );
    assert_eq!(plan.create, []);
}

#[test]
fn history_keeps_the_newest_finished_tasks_of_wanted_slots() {
    use TaskState::{Failed, Running, Shutdown};
    let fits = nodes(&[("n1", active())]);
    let finished = |id: &str, slot, ended| t(id, slot).on("n1").stopped().state_at(Failed, ended);
    let mut tasks: Vec<T> = (1..=7)
        .map(|i| finished(&format!("h{i}"), 1, i * 10))
        .collect();
    tasks.push(t("a", 1).on("n1").state(Running));
    // Slot 2 is no longer wanted: its finished tasks all go, a stopping one stays.
    tasks.push(finished("x", 2, 10));
    tasks.push(t("y", 2).on("n1").stopped().state(Running));
    tasks.push(t("z", 2).stopped().state_at(Shutdown, 20));

    let plan = plan_for(&replicated(1), &tasks, &fits);
    assert_eq!(plan.delete, ["h2", "h1", "z", "x"]);

    // maxAttempts is counted from the history, so at least that much is kept.
    let mut service = replicated(1);
    service.spec.template.restart_policy.max_attempts = 6;
    assert_eq!(plan_for(&service, &tasks, &fits).delete, ["h1", "z", "x"]);

    // The pure trimmer, alone.
    let past: Vec<&Task> = tasks[..3].iter().map(|t| &t.0).collect();
    assert_eq!(trim_history(&past, 1), ["h2", "h1"]);
}
