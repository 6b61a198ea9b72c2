//! The service controller against a real etcd; the test plays scheduler and agent.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use dctl_apis::meta::{find_condition, Condition};
use dctl_apis::node::{NodeAvailability, NodeSpec, NodeStatus};
use dctl_apis::service::{ServiceMode, ServiceSpec};
use dctl_apis::task::{TaskDesiredState, TaskState, TaskStatus};
use dctl_apis::template::RestartCondition;
use dctl_apis::{ConditionStatus, Node, ObjectMeta, ObjectReference, Resource, Service, Task};
use dctl_controllers::{gc, service};
use dctl_runtime::controller;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "demo";

/// A real etcd and the controllers under test, stopped by `stop`.
struct Harness {
    _etcd: LocalEtcd,
    store: Store,
    stops: Vec<oneshot::Sender<()>>,
    loops: Vec<JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Harness {
        let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
        let store = Store::connect(&[etcd.endpoint().to_string()])
            .await
            .expect("etcd answers");
        let mut harness = Harness {
            _etcd: etcd,
            store,
            stops: Vec::new(),
            loops: Vec::new(),
        };
        let config = service::Config::default().controller(fast());
        let store = harness.store.clone();
        harness.spawn(|shutdown| async move {
            service::run(store, config, shutdown)
                .await
                .expect("the controller runs");
        });
        harness
    }

    fn with_gc(mut self) -> Harness {
        let store = self.store.clone();
        let config = gc::Config::default().controller(fast());
        self.spawn(|shutdown| async move {
            gc::run(store, config, shutdown)
                .await
                .expect("the collector runs");
        });
        self
    }

    fn spawn<F, Fut>(&mut self, run: F)
    where
        F: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        self.stops.push(stop);
        self.loops.push(tokio::spawn(run(shutdown)));
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for run in self.loops {
            run.await.expect("the loop ends cleanly");
        }
    }

    async fn create_service(&self, name: &str, spec: impl FnOnce(&mut ServiceSpec)) -> Service {
        let mut spec_value = ServiceSpec::default();
        spec_value.template.image = "dctl-test/web:1".into();
        spec_value.template.restart_policy.delay = Some(dctl_apis::Duration::from_millis(200));
        spec(&mut spec_value);
        let mut service = Service::new(ObjectMeta::named(NS, name), spec_value);
        service.metadata.labels.insert("app".into(), name.into());
        service.apply_defaults();
        assert_eq!(service.validate(), vec![]);
        self.store.create(&service).await.expect("service created")
    }

    async fn update_service(&self, name: &str, change: impl Fn(&mut Service)) -> Service {
        self.store
            .modify::<Service, _>(NS, name, |service| {
                change(service);
                Ok(true)
            })
            .await
            .expect("service updated")
    }

    async fn create_node(&self, name: &str, ready: bool) -> Node {
        let mut node = Node::new(
            ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            NodeSpec::default(),
        );
        let status = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        node.status = Some(NodeStatus {
            conditions: vec![condition("Ready", status)],
            ..NodeStatus::default()
        });
        self.store.create(&node).await.expect("node created")
    }

    async fn tasks(&self) -> Vec<Task> {
        self.store
            .list::<Task>(Some(NS))
            .await
            .expect("tasks listed")
            .items
    }

    /// The tasks of `service` meant to run, by slot (or node), once there are `count`.
    async fn current(&self, service: &str, count: usize) -> Vec<Task> {
        eventually(&format!("{count} current tasks of {service}"), || async {
            let mut current: Vec<Task> = self
                .tasks()
                .await
                .into_iter()
                .filter(|t| t.spec.service_name == service && is_current(t))
                .collect();
            current.sort_by_key(|t| (t.spec.slot, t.spec.node.clone()));
            (current.len() == count).then_some(current)
        })
        .await
    }

    /// Plays the scheduler and the agent: binds the task, then reports it running and Ready.
    async fn run_on(&self, task: &Task, node: &str) {
        eventually("the task bound", || async {
            let fresh: Task = self.store.get(NS, &task.metadata.name).await.ok()?;
            self.store.bind_task(&fresh, node).await.ok()
        })
        .await;
        self.report(task, TaskState::Running, None).await;
    }

    /// Plays the agent: reports the task in `state`, now.
    async fn report(&self, task: &Task, state: TaskState, exit_code: Option<i64>) -> Task {
        let name = task.metadata.name.clone();
        eventually(&format!("{name} reported {state}"), || async {
            let mut fresh: Task = self.store.get(NS, &name).await.ok()?;
            let running = state == TaskState::Running;
            let up = if running {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            fresh.status = Some(TaskStatus {
                state,
                timestamp: Some(Utc::now()),
                exit_code,
                conditions: ["Started", "Live", "Ready"]
                    .map(|c| condition(c, up))
                    .to_vec(),
                ..fresh.status.clone().unwrap_or_default()
            });
            self.store.update_status(&fresh).await.ok()
        })
        .await
    }

    async fn events(&self, service: &Service) -> Vec<(String, String)> {
        let object = ObjectReference::to(service);
        dctl_runtime::events::list_for(&self.store, &object)
            .await
            .expect("events listed")
            .into_iter()
            .map(|e| (e.spec.reason, e.spec.message))
            .collect()
    }
}

/// Fast retries so a lost race costs milliseconds, not seconds.
fn fast() -> controller::Config {
    controller::Config::default().backoff(Duration::from_millis(20), Duration::from_millis(500))
}

fn condition(type_: &str, status: ConditionStatus) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: String::new(),
        message: String::new(),
        last_transition_time: Utc::now(),
        observed_generation: None,
    }
}

fn is_current(task: &Task) -> bool {
    matches!(
        task.spec.desired_state,
        TaskDesiredState::Running | TaskDesiredState::Ready
    )
}

fn slot_history(tasks: &[Task], slot: u32) -> Vec<&Task> {
    let mut history: Vec<&Task> = tasks.iter().filter(|t| t.spec.slot == Some(slot)).collect();
    history.sort_by_key(|t| t.metadata.creation_timestamp);
    history
}

/// Polls `check` until it answers, or fails the test after 15 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_service_fills_its_slots_scales_and_reports_status() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    h.create_node("n2", true).await;
    let web = h
        .create_service("web", |spec| spec.replicas = Some(3))
        .await;

    let tasks = h.current("web", 3).await;
    let slots: Vec<Option<u32>> = tasks.iter().map(|t| t.spec.slot).collect();
    assert_eq!(slots, [Some(1), Some(2), Some(3)]);
    for task in &tasks {
        let owner = &task.metadata.owner_references[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", web.metadata.uid.as_str(), true)
        );
        assert_eq!(task.metadata.labels["dctl.service"], "web");
        assert_eq!(task.metadata.labels["app"], "web");
        assert!(task
            .metadata
            .name
            .starts_with(&format!("web.{}.", task.spec.slot.unwrap())));
        assert_eq!(task.spec.template, web.spec.template);
        assert!(
            task.status.is_none(),
            "the scheduler writes the first status"
        );
    }
    // Slots 1 and 2 on n1, slot 3 on n2.
    for (task, node) in tasks.iter().zip(["n1", "n1", "n2"]) {
        h.run_on(task, node).await;
    }
    eventually("3 ready replicas", || async {
        let status = h.store.get::<Service>(NS, "web").await.ok()?.status?;
        let available = find_condition(&status.conditions, "Available")?;
        (status.ready_replicas == 3
            && status.updated_replicas == 3
            && available.status == ConditionStatus::True)
            .then_some(())
    })
    .await;

    h.update_service("web", |s| s.spec.replicas = Some(5)).await;
    let five = h.current("web", 5).await;
    let new: Vec<&Task> = five.iter().filter(|t| t.spec.node_name.is_none()).collect();
    assert_eq!(
        new.iter().map(|t| t.spec.slot).collect::<Vec<_>>(),
        [Some(4), Some(5)]
    );

    // Scale down to 2: the two not running go first, then the busiest node's highest slot.
    let web = h.update_service("web", |s| s.spec.replicas = Some(2)).await;
    let two = h.current("web", 2).await;
    assert_eq!(
        two.iter().map(|t| t.spec.slot).collect::<Vec<_>>(),
        [Some(1), Some(3)]
    );
    let slot2 = h
        .store
        .get::<Task>(NS, &tasks[1].metadata.name)
        .await
        .unwrap();
    assert_eq!(slot2.spec.desired_state, TaskDesiredState::Shutdown);
    for task in &new {
        // Never bound, so finished at once, and their slots are gone: deleted or stopped.
        let left = h
            .store
            .try_get::<Task>(NS, &task.metadata.name)
            .await
            .unwrap();
        assert!(left.is_none_or(|t| t.spec.desired_state == TaskDesiredState::Shutdown));
    }
    eventually("the status of generation 3", || async {
        let service = h.store.get::<Service>(NS, "web").await.ok()?;
        let status = service.status?;
        (status.observed_generation == web.metadata.generation && status.replicas == 2)
            .then_some(())
    })
    .await;
    let events = h.events(&web).await;
    let created = events
        .iter()
        .filter(|(reason, _)| reason == "SuccessfulCreate")
        .count();
    assert_eq!(created, 5, "{events:?}");
    let stopping = format!(
        "Stopping task {}: the service was scaled down",
        tasks[1].metadata.name
    );
    assert!(
        events.contains(&("ScalingDown".into(), stopping)),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_replaced_after_the_delay_backing_off_in_a_crash_loop() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    h.create_service("web", |spec| spec.replicas = Some(1))
        .await;

    let mut failed_at = Vec::new();
    let mut task = h.current("web", 1).await.remove(0);
    for _ in 0..2 {
        h.run_on(&task, "n1").await;
        let failed = h.report(&task, TaskState::Failed, Some(1)).await;
        failed_at.push(failed.status.unwrap().timestamp.unwrap());
        task = eventually("a replacement", || async {
            h.current("web", 1)
                .await
                .into_iter()
                .find(|t| t.metadata.name != task.metadata.name)
        })
        .await;
    }
    let tasks = h.tasks().await;
    let history = slot_history(&tasks, 1);
    assert_eq!(history.len(), 3, "the slot's history counts its restarts");
    for (i, (old, new)) in history.iter().zip(&history[1..]).enumerate() {
        assert_eq!(old.spec.desired_state, TaskDesiredState::Shutdown);
        assert_eq!(old.status.as_ref().unwrap().state, TaskState::Failed);
        // Quick failures: the delay (200 ms), then twice it.
        let waited = new.metadata.creation_timestamp.unwrap() - failed_at[i];
        let delay = 200 << i;
        assert!(
            waited.num_milliseconds() >= delay - 5,
            "replacement {i} after {waited}, expected ≥ {delay} ms"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_with_max_attempts_replaces_exactly_that_many_times() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    let web = h
        .create_service("web", |spec| {
            spec.replicas = Some(1);
            let policy = &mut spec.template.restart_policy;
            policy.condition = RestartCondition::OnFailure;
            policy.max_attempts = 3;
            policy.delay = Some(dctl_apis::Duration::from_millis(50));
        })
        .await;
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let task = eventually("a new task", || async {
            h.current("web", 1)
                .await
                .into_iter()
                .find(|t| !seen.contains(&t.metadata.name))
        })
        .await;
        seen.insert(task.metadata.name.clone());
        h.run_on(&task, "n1").await;
        h.report(&task, TaskState::Failed, Some(2)).await;
    }
    // The reconcile that decides "no more" says so in an event.
    eventually("MaxAttemptsReached", || async {
        let events = h.events(&web).await;
        events
            .iter()
            .any(|(reason, _)| reason == "MaxAttemptsReached")
            .then_some(())
    })
    .await;
    let tasks = h.tasks().await;
    assert_eq!(
        slot_history(&tasks, 1).len(),
        4,
        "one task and exactly 3 replacements"
    );
    let last = tasks
        .iter()
        .find(|t| is_current(t))
        .expect("the last task stays, failed");
    assert_eq!(last.status.as_ref().unwrap().state, TaskState::Failed);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_completes_under_on_failure_is_not_replaced() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    h.create_service("job", |spec| {
        spec.replicas = Some(1);
        spec.template.restart_policy.condition = RestartCondition::OnFailure;
        spec.template.restart_policy.delay = Some(dctl_apis::Duration::ZERO);
    })
    .await;
    let task = h.current("job", 1).await.remove(0);
    h.run_on(&task, "n1").await;
    eventually("the task counted ready", || async {
        let status = h.store.get::<Service>(NS, "job").await.ok()?.status?;
        (status.ready_replicas == 1).then_some(())
    })
    .await;
    h.report(&task, TaskState::Complete, Some(0)).await;
    // The reconcile that saw the completion wrote this status after deciding.
    eventually("the completion seen", || async {
        let status = h.store.get::<Service>(NS, "job").await.ok()?.status?;
        (status.ready_replicas == 0).then_some(())
    })
    .await;
    let tasks = h.tasks().await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].spec.desired_state, TaskDesiredState::Running);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_service_runs_on_each_ready_node_and_leaves_a_drained_one() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    h.create_node("n2", true).await;
    h.create_node("n3", false).await;
    let agent = h
        .create_service("agent", |spec| spec.mode = ServiceMode::Global)
        .await;

    let tasks = h.current("agent", 2).await;
    let nodes: Vec<Option<&str>> = tasks.iter().map(|t| t.spec.node.as_deref()).collect();
    assert_eq!(nodes, [Some("n1"), Some("n2")]);
    assert!(tasks[1].metadata.name.starts_with("agent.n2."));
    for task in &tasks {
        h.run_on(task, task.spec.node.as_deref().unwrap()).await;
    }

    h.store
        .modify::<Node, _>("", "n2", |node| {
            node.spec.availability = NodeAvailability::Drain;
            Ok(true)
        })
        .await
        .unwrap();
    let left = h.current("agent", 1).await;
    assert_eq!(left[0].metadata.name, tasks[0].metadata.name);
    let drained = h
        .store
        .get::<Task>(NS, &tasks[1].metadata.name)
        .await
        .unwrap();
    assert_eq!(drained.spec.desired_state, TaskDesiredState::Shutdown);
    eventually("desired replicas 1", || async {
        let status = h.store.get::<Service>(NS, "agent").await.ok()?.status?;
        (status.replicas == 1).then_some(())
    })
    .await;
    let events = h.events(&agent).await;
    let killing = format!(
        "Stopping task {}: node n2 is drained",
        drained.metadata.name
    );
    assert!(events.contains(&("Killing".into(), killing)), "{events:?}");
    // Still one task only: none was created for the drained node.
    assert_eq!(h.tasks().await.len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_service_lets_the_garbage_collector_delete_its_tasks() {
    let h = Harness::start().await.with_gc();
    h.create_node("n1", true).await;
    h.create_service("web", |spec| spec.replicas = Some(2))
        .await;
    let tasks = h.current("web", 2).await;
    h.run_on(&tasks[0], "n1").await;

    h.store
        .delete::<Service>(NS, "web")
        .await
        .expect("service deleted");
    eventually("no tasks left", || async {
        h.tasks().await.is_empty().then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_replaces_tasks_a_slot_at_a_time_stop_first() {
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    h.create_service("web", |spec| {
        spec.replicas = Some(2);
        spec.update.parallelism = Some(1);
    })
    .await;
    for task in h.current("web", 2).await {
        h.run_on(&task, "n1").await;
    }
    h.update_service("web", |s| s.spec.template.image = "dctl-test/web:2".into())
        .await;

    for round in 0..2 {
        // One slot at a time: its old task told to stop, its new one staged.
        let (old, staged) = eventually("a staged replacement", || async {
            let tasks = h.tasks().await;
            let stopping: Vec<&Task> = tasks
                .iter()
                .filter(|t| {
                    t.spec.desired_state == TaskDesiredState::Shutdown
                        && t.status
                            .as_ref()
                            .is_some_and(|s| s.state == TaskState::Running)
                })
                .collect();
            let staged: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.spec.desired_state == TaskDesiredState::Ready)
                .collect();
            match (stopping.as_slice(), staged.as_slice()) {
                ([old], [new]) => Some(((*old).clone(), (*new).clone())),
                _ => None,
            }
        })
        .await;
        assert_eq!(
            (staged.spec.slot, staged.spec.template.image.as_str()),
            (old.spec.slot, "dctl-test/web:2"),
            "round {round}"
        );
        // The new task starts only once the old one has stopped.
        h.report(&old, TaskState::Shutdown, Some(0)).await;
        eventually("the staged task started", || async {
            let task = h.store.get::<Task>(NS, &staged.metadata.name).await.ok()?;
            (task.spec.desired_state == TaskDesiredState::Running).then_some(())
        })
        .await;
        h.run_on(&staged, "n1").await;
    }
    eventually("both tasks updated", || async {
        let status = h.store.get::<Service>(NS, "web").await.ok()?.status?;
        (status.updated_replicas == 2 && status.ready_replicas == 2).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_service_gets_no_task_until_its_dependency_is_ready() {
    use dctl_apis::service::{Dependency, DependencyCondition};
    let h = Harness::start().await;
    h.create_node("n1", true).await;
    let web = h
        .create_service("web", |spec| {
            spec.depends_on = vec![Dependency {
                service: "db".into(),
                condition: DependencyCondition::Ready,
            }];
        })
        .await;
    // No db yet: web says so and makes no task.
    let waiting = |message: &'static str| {
        let store = h.store.clone();
        async move {
            let web: Service = store.get(NS, "web").await.ok()?;
            let status = web.status?;
            let condition = find_condition(&status.conditions, "DependenciesReady")?;
            (condition.status == ConditionStatus::False && condition.message == message)
                .then_some(())
        }
    };
    eventually("web waits for a db that does not exist", || {
        waiting("waiting for db to be ready (no such service)")
    })
    .await;
    h.create_service("db", |_| {}).await;
    let db_tasks = h.current("db", 1).await;
    eventually("web waits for db's task", || {
        waiting("waiting for db to be ready (0 of 1 tasks ready)")
    })
    .await;
    assert!(h.tasks().await.iter().all(|t| t.spec.service_name != "web"));
    // Held, it still shows what it wants (`get svc`: READY 0/1).
    let held: Service = h.store.get(NS, "web").await.unwrap();
    let wanted = web.spec.replicas.unwrap_or(1);
    assert_eq!(
        held.status.map(|s| (s.replicas, s.ready_replicas)),
        Some((wanted, 0))
    );
    // db running and Ready: web starts.
    h.run_on(&db_tasks[0], "n1").await;
    h.current("web", 1).await;
    // The tasks are written before the status that says why they came.
    eventually("web's dependencies met", || async {
        let web: Service = h.store.get(NS, "web").await.ok()?;
        let condition = find_condition(&web.status?.conditions, "DependenciesReady")?.clone();
        (condition.status == ConditionStatus::True && condition.reason == "DependenciesMet")
            .then_some(())
    })
    .await;
    let reasons: Vec<String> = h.events(&web).await.into_iter().map(|(r, _)| r).collect();
    assert!(
        reasons.contains(&"WaitingForDependencies".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"DependenciesReady".to_string()),
        "{reasons:?}"
    );
    // Once started, web is not held again when db goes away.
    h.store.delete::<Service>(NS, "db").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.current("web", 1).await;
    h.stop().await;
}
