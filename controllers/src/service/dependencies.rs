//! `spec.dependsOn`: a service gets its first tasks only once its dependencies are started,
//! Ready or completed (compose's `depends_on`, which Swarm's stack deploy ignores).
//!
//! Pure: [`waiting_for`] reads the dependencies and their tasks and says what is missing;
//! the reconcile holds the service and reports it in the `DependenciesReady` condition.

use dctl_apis::meta::{find_condition, Condition};
use dctl_apis::service::{Dependency, DependencyCondition, ServiceMode};
use dctl_apis::task::{TaskDesiredState, TaskState, CONDITION_READY};
use dctl_apis::{ConditionStatus, Service, Task, Time};

/// The condition on a service with dependencies: `False` while it is held.
pub const CONDITION_DEPENDENCIES_READY: &str = "DependenciesReady";

/// One dependency that is not there yet, and why, for the status and the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    pub service: String,
    pub condition: DependencyCondition,
    /// `0 of 2 tasks ready`, `no such service`.
    pub detail: String,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.condition {
            DependencyCondition::Started => "to start",
            DependencyCondition::Ready => "to be ready",
            DependencyCondition::Completed => "to complete",
        };
        write!(f, "{} {word} ({})", self.service, self.detail)
    }
}

/// The dependencies of `service` that are not met. `lookup` gives a dependency (by name, in
/// the service's namespace) and its tasks, or `None` when there is no such service.
pub fn waiting_for<'a>(
    service: &Service,
    lookup: impl Fn(&str) -> Option<(&'a Service, Vec<&'a Task>)>,
) -> Vec<Wait> {
    service
        .spec
        .depends_on
        .iter()
        .filter_map(|dependency| {
            let detail = match lookup(&dependency.service) {
                None => Some("no such service".to_string()),
                Some((other, tasks)) => unmet(dependency, other, &tasks),
            };
            detail.map(|detail| Wait {
                service: dependency.service.clone(),
                condition: dependency.condition,
                detail,
            })
        })
        .collect()
}

/// What `dependency` lacks, or `None` when it is met.
fn unmet(dependency: &Dependency, service: &Service, tasks: &[&Task]) -> Option<String> {
    let state = |t: &Task| t.status.as_ref().map(|s| s.state);
    let current: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.spec.desired_state == TaskDesiredState::Running)
        .collect();
    // A global service wants a task per eligible node; it is met when it has some and
    // all of them are there.
    let desired = match service.spec.mode {
        ServiceMode::Replicated => service.spec.replicas.unwrap_or(1) as usize,
        ServiceMode::Global => current.len().max(1),
    };
    match dependency.condition {
        DependencyCondition::Started => {
            let running = current
                .iter()
                .filter(|t| state(t) == Some(TaskState::Running))
                .count();
            (running < desired).then(|| format!("{running} of {desired} tasks running"))
        }
        DependencyCondition::Ready => {
            let ready = current
                .iter()
                .filter(|t| state(t) == Some(TaskState::Running) && is_ready(t))
                .count();
            (ready < desired).then(|| format!("{ready} of {desired} tasks ready"))
        }
        DependencyCondition::Completed => {
            let completed = tasks.iter().any(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.state == TaskState::Complete && s.exit_code.unwrap_or(0) == 0
                })
            });
            (!completed).then(|| "no task has exited 0 yet".to_string())
        }
    }
}

fn is_ready(task: &Task) -> bool {
    task.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_READY))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// The `DependenciesReady` condition: `False` with what is awaited, or `True`.
pub fn condition(waits: &[Wait], generation: i64, now: Time) -> Condition {
    let (status, reason, message) = if waits.is_empty() {
        (
            ConditionStatus::True,
            "DependenciesMet",
            "every dependency is met".to_string(),
        )
    } else {
        let list: Vec<String> = waits.iter().map(ToString::to_string).collect();
        (
            ConditionStatus::False,
            "WaitingForDependencies",
            format!("waiting for {}", list.join(", ")),
        )
    };
    Condition {
        type_: CONDITION_DEPENDENCIES_READY.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time: now,
        observed_generation: Some(generation),
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::service::ServiceSpec;
    use dctl_apis::task::{TaskSpec, TaskStatus};
    use dctl_apis::ObjectMeta;

    use super::*;

    fn service(name: &str, replicas: u32, depends_on: &[(&str, DependencyCondition)]) -> Service {
        let spec = ServiceSpec {
            replicas: Some(replicas),
            depends_on: depends_on
                .iter()
                .map(|(service, condition)| Dependency {
                    service: service.to_string(),
                    condition: *condition,
                })
                .collect(),
            ..ServiceSpec::default()
        };
        Service::new(ObjectMeta::named("demo", name), spec)
    }

    fn task(state: TaskState, ready: bool, exit_code: Option<i64>) -> Task {
        let mut status = TaskStatus {
            state,
            exit_code,
            ..TaskStatus::default()
        };
        if ready {
            status.conditions.push(Condition {
                type_: CONDITION_READY.to_string(),
                status: ConditionStatus::True,
                reason: String::new(),
                message: String::new(),
                last_transition_time: Time::default(),
                observed_generation: None,
            });
        }
        let spec = TaskSpec {
            desired_state: if state.is_terminal() {
                TaskDesiredState::Shutdown
            } else {
                TaskDesiredState::Running
            },
            ..TaskSpec::default()
        };
        let mut task = Task::new(ObjectMeta::named("demo", "t"), spec);
        task.status = Some(status);
        task
    }

    #[test]
    fn each_condition_waits_for_its_own_state() {
        use DependencyCondition::{Completed, Ready, Started};
        let web = service(
            "web",
            1,
            &[("db", Ready), ("cache", Started), ("migrate", Completed)],
        );
        let db = service("db", 2, &[]);
        let cache = service("cache", 1, &[]);
        let migrate = service("migrate", 1, &[]);
        // (db tasks, cache tasks, migrate tasks) → what web waits for.
        type Case = (Vec<Task>, Vec<Task>, Vec<Task>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![],
                vec![],
                vec![],
                vec![
                    "db to be ready (0 of 2 tasks ready)",
                    "cache to start (0 of 1 tasks running)",
                    "migrate to complete (no task has exited 0 yet)",
                ],
            ),
            (
                vec![
                    task(TaskState::Running, true, None),
                    task(TaskState::Running, false, None),
                ],
                vec![task(TaskState::Starting, false, None)],
                vec![task(TaskState::Failed, false, Some(1))],
                vec![
                    "db to be ready (1 of 2 tasks ready)",
                    "cache to start (0 of 1 tasks running)",
                    "migrate to complete (no task has exited 0 yet)",
                ],
            ),
            (
                vec![
                    task(TaskState::Running, true, None),
                    task(TaskState::Running, true, None),
                ],
                vec![task(TaskState::Running, false, None)],
                vec![task(TaskState::Complete, false, Some(0))],
                vec![],
            ),
        ];
        for (db_tasks, cache_tasks, migrate_tasks, want) in cases {
            let lookup = |name: &str| match name {
                "db" => Some((&db, db_tasks.iter().collect())),
                "cache" => Some((&cache, cache_tasks.iter().collect())),
                "migrate" => Some((&migrate, migrate_tasks.iter().collect())),
                _ => None,
            };
            let got: Vec<String> = waiting_for(&web, lookup)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want);
        }
        let lonely = service("lonely", 1, &[("ghost", Started)]);
        let waits = waiting_for(&lonely, |_| None);
        assert_eq!(waits[0].to_string(), "ghost to start (no such service)");
        let condition = condition(&waits, 3, Time::default());
        assert_eq!(
            (
                condition.status,
                condition.reason.as_str(),
                condition.message.as_str()
            ),
            (
                ConditionStatus::False,
                "WaitingForDependencies",
                "waiting for ghost to start (no such service)"
            )
        );
    }
}
