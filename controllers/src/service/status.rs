//! Computes a service's status from its tasks: desired, ready and updated replicas, `Available`.

use std::collections::{BTreeMap, BTreeSet};

use dctl_apis::meta::{find_condition, set_condition, Condition};
use dctl_apis::service::{ServiceMode, ServiceStatus};
use dctl_apis::task::{TaskDesiredState, TaskState, CONDITION_READY};
use dctl_apis::{ConditionStatus, Service, Task, Time};

use super::eligibility::NodeFit;
use super::slots::is_current;

/// `True` when at least as many tasks are Ready as the service wants.
pub const CONDITION_AVAILABLE: &str = "Available";

/// How many tasks the service wants: `replicas`, or, for a global service, one per node that
/// takes new tasks or keeps the one it has (a paused node, a node briefly unreachable).
pub fn desired_replicas(
    service: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<String, NodeFit>,
) -> u32 {
    match service.spec.mode {
        ServiceMode::Replicated => service.spec.replicas.unwrap_or(1),
        ServiceMode::Global => {
            let with_task: BTreeSet<&str> = tasks
                .iter()
                .filter(|t| is_current(t))
                .filter_map(|t| t.spec.node.as_deref())
                .collect();
            let wanted = nodes.iter().filter(|(name, fit)| {
                fit.accepts_new_tasks() || (fit.keeps_tasks() && with_task.contains(name.as_str()))
            });
            u32::try_from(wanted.count()).unwrap_or(u32::MAX)
        }
    }
}

/// The status the service should have, keeping what other controllers own (the rollout's
/// state, the revision) and condition transition times that did not change.
pub fn compute(service: &Service, tasks: &[&Task], desired: u32, now: Time) -> ServiceStatus {
    let generation = service.metadata.generation;
    let running: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.spec.desired_state == TaskDesiredState::Running)
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.state == TaskState::Running)
        })
        .collect();
    let ready = running.iter().filter(|t| is_ready(t)).count();
    let updated = running
        .iter()
        .filter(|t| service.spec.is_up_to_date(&t.spec))
        .count();
    let ready = u32::try_from(ready).unwrap_or(u32::MAX);

    let mut status = service.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.replicas = desired;
    status.ready_replicas = ready;
    status.updated_replicas = u32::try_from(updated).unwrap_or(u32::MAX);
    let (condition, reason) = if ready >= desired {
        (ConditionStatus::True, "MinimumReplicasAvailable")
    } else {
        (ConditionStatus::False, "MinimumReplicasUnavailable")
    };
    set_condition(
        &mut status.conditions,
        Condition {
            type_: CONDITION_AVAILABLE.to_string(),
            status: condition,
            reason: reason.to_string(),
            message: format!("{ready} of {desired} tasks ready"),
            last_transition_time: now,
            observed_generation: Some(generation),
        },
    );
    status
}

fn is_ready(task: &Task) -> bool {
    task.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_READY))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use dctl_apis::node::NodeAvailability;
    use dctl_apis::service::{RolloutState, RolloutStatus, ServiceSpec};
    use dctl_apis::task::{TaskSpec, TaskStatus};
    use dctl_apis::{ObjectMeta, TaskTemplate};

    use super::*;

    fn at(secs: i64) -> Time {
        chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn service(mode: ServiceMode, replicas: Option<u32>) -> Service {
        let mut meta = ObjectMeta::named("demo", "web");
        meta.generation = 4;
        let spec = ServiceSpec {
            mode,
            replicas,
            template: TaskTemplate {
                image: "web:2".into(),
                ..TaskTemplate::default()
            },
            ..ServiceSpec::default()
        };
        Service::new(meta, spec)
    }

    /// A task on `node` (global slot) running `image`, in `state`, Ready or not.
    fn task(image: &str, state: TaskState, ready: bool, desired: TaskDesiredState) -> Task {
        let mut task = Task::new(
            ObjectMeta::named("demo", "web.1.abcde"),
            TaskSpec {
                template: TaskTemplate {
                    image: image.into(),
                    ..TaskTemplate::default()
                },
                node: Some("n1".into()),
                desired_state: desired,
                ..TaskSpec::default()
            },
        );
        let condition = Condition {
            type_: CONDITION_READY.into(),
            status: if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: String::new(),
            message: String::new(),
            last_transition_time: at(0),
            observed_generation: None,
        };
        task.status = Some(TaskStatus {
            state,
            conditions: vec![condition],
            ..TaskStatus::default()
        });
        task
    }

    /// (tasks, desired) → (ready, updated, available).
    type Case = (Vec<Task>, u32, (u32, u32, ConditionStatus));

    #[test]
    fn counts_ready_and_updated_tasks() {
        use TaskDesiredState::{Running, Shutdown};
        use TaskState::{Failed, Running as Up, Starting};
        // (tasks, desired) → (ready, updated, available)
        let cases: Vec<Case> = vec![
            (vec![], 0, (0, 0, ConditionStatus::True)),
            (vec![], 2, (0, 0, ConditionStatus::False)),
            (
                vec![
                    task("web:2", Up, true, Running),
                    task("web:1", Up, true, Running),
                    task("web:2", Up, false, Running),
                ],
                2,
                (2, 2, ConditionStatus::True),
            ),
            (
                vec![
                    task("web:2", Starting, false, Running),
                    task("web:2", Failed, false, Running),
                    // Being stopped: neither ready nor updated for the service.
                    task("web:2", Up, true, Shutdown),
                ],
                1,
                (0, 0, ConditionStatus::False),
            ),
        ];
        let service = service(ServiceMode::Replicated, Some(3));
        for (tasks, desired, (ready, updated, available)) in cases {
            let tasks: Vec<&Task> = tasks.iter().collect();
            let status = compute(&service, &tasks, desired, at(10));
            assert_eq!(status.observed_generation, 4);
            assert_eq!(status.replicas, desired);
            assert_eq!(
                (status.ready_replicas, status.updated_replicas),
                (ready, updated)
            );
            let condition = find_condition(&status.conditions, CONDITION_AVAILABLE).unwrap();
            assert_eq!(condition.status, available);
            assert_eq!(
                condition.message,
                format!("{ready} of {desired} tasks ready")
            );
        }
    }

    #[test]
    fn keeps_what_others_own_and_unchanged_transition_times() {
        let mut service = service(ServiceMode::Replicated, Some(1));
        let rollout = RolloutStatus {
            state: RolloutState::Completed,
            message: String::new(),
            revision: 7,
            target: "abc".into(),
            started_at: None,
            completed_at: None,
            last_progress_at: None,
            slots: 1,
            progress: 1,
            failed_tasks: Vec::new(),
        };
        let mut before = compute(&service, &[], 1, at(10));
        before.rollout = Some(rollout.clone());
        before.revision = 7;
        service.status = Some(before.clone());
        let after = compute(&service, &[], 1, at(20));
        assert_eq!(after, before, "nothing changed, so nothing to write");
        let up = task("web:2", TaskState::Running, true, TaskDesiredState::Running);
        let after = compute(&service, &[&up], 1, at(30));
        assert_eq!((after.rollout, after.revision), (Some(rollout), 7));
        let condition = &after.conditions[0];
        assert_eq!(
            (condition.status, condition.last_transition_time),
            (ConditionStatus::True, at(30))
        );
    }

    #[test]
    fn desired_replicas_of_each_mode() {
        let fit = |ready, availability, matches| NodeFit {
            ready,
            availability,
            matches,
        };
        let nodes: BTreeMap<String, NodeFit> = [
            ("n1", fit(true, NodeAvailability::Active, true)),
            ("n2", fit(true, NodeAvailability::Pause, true)),
            ("n3", fit(true, NodeAvailability::Drain, true)),
            ("n4", fit(false, NodeAvailability::Active, true)),
            ("n5", fit(true, NodeAvailability::Active, false)),
        ]
        .into_iter()
        .map(|(n, f)| (n.to_string(), f))
        .collect();
        let replicated = service(ServiceMode::Replicated, Some(3));
        assert_eq!(desired_replicas(&replicated, &[], &nodes), 3);
        let global = service(ServiceMode::Global, None);
        assert_eq!(desired_replicas(&global, &[], &nodes), 1);
        // A paused node keeps its task, so it still counts; a drained one does not.
        let on = |node: &str| {
            let mut t = task("web:2", TaskState::Running, true, TaskDesiredState::Running);
            t.spec.node = Some(node.into());
            t
        };
        let (paused, drained) = (on("n2"), on("n3"));
        assert_eq!(desired_replicas(&global, &[&paused, &drained], &nodes), 2);
    }
}
