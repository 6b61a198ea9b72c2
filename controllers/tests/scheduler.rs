//! The scheduler against a real etcd: it binds, spreads, explains, and retries when a
//! node changes. No Docker: tasks are created as the service controller would.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use dctl_apis::meta::{Condition, ConditionStatus};
use dctl_apis::node::{NodeAvailability, NodeSpec, NodeStatus, CONDITION_READY};
use dctl_apis::service::{Placement, PlacementPreference};
use dctl_apis::task::{TaskDesiredState, TaskSpec, TaskState};
use dctl_apis::{EventType, Node, ObjectMeta, ObjectReference, Quantity, Service, Task};
use dctl_controllers::scheduler::{self, Config};
use dctl_runtime::events::list_for;
use dctl_runtime::store::{keys, Store};
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Cluster {
    _etcd: LocalEtcd,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    scheduler: Option<JoinHandle<Result<(), scheduler::Error>>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
        let store = Store::connect(&[etcd.endpoint().to_string()])
            .await
            .expect("etcd answers");
        Cluster {
            _etcd: etcd,
            store,
            stop: None,
            scheduler: None,
        }
    }

    /// Starts the scheduler with no resync: everything it does here, a watch event caused.
    fn run_scheduler(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Config::default().resync_period(None).host("test");
        let shutdown = async move {
            let _ = stopped.await;
        };
        self.stop = Some(stop);
        self.scheduler = Some(tokio::spawn(scheduler::run(
            self.store.clone(),
            config,
            shutdown,
        )));
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(scheduler) = self.scheduler.take() {
            let ended = tokio::time::timeout(TIMEOUT, scheduler).await;
            ended.expect("the scheduler stops").unwrap().unwrap();
        }
    }

    /// A ready node with 4 cpus and 8 GiB, as its agent would register it.
    async fn node(&self, name: &str, labels: &[(&str, &str)], availability: NodeAvailability) {
        let spec = NodeSpec {
            availability,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        };
        let meta = ObjectMeta {
            name: name.into(),
            ..Default::default()
        };
        let mut node = self.store.create(&Node::new(meta, spec)).await.unwrap();
        let mut status = NodeStatus {
            hostname: name.into(),
            ..Default::default()
        };
        status.capacity.cpus = Quantity::new("4");
        status.capacity.memory_bytes = 8 << 30;
        status.conditions.push(Condition {
            type_: CONDITION_READY.into(),
            status: ConditionStatus::True,
            reason: "AgentReady".into(),
            message: String::new(),
            last_transition_time: chrono::Utc::now(),
            observed_generation: None,
        });
        node.status = Some(status);
        self.store.update_status(&node).await.unwrap();
    }

    async fn service(&self, name: &str, placement: Placement) {
        let mut service = Service::new(ObjectMeta::named("demo", name), Default::default());
        service.spec.template.image = format!("{name}:1");
        service.spec.placement = placement;
        self.store.create(&service).await.unwrap();
    }

    /// A new task in `slot`, as the service controller creates it: no node, no status.
    async fn task(&self, service: &str, slot: u32) -> Task {
        let spec = TaskSpec {
            service_name: service.into(),
            slot: Some(slot),
            ..Default::default()
        };
        let mut task = Task::new(
            ObjectMeta::named("demo", &format!("{service}.{slot}.x")),
            spec,
        );
        task.spec.template.image = format!("{service}:1");
        self.store.create(&task).await.unwrap()
    }

    async fn get(&self, task: &Task) -> Task {
        self.store.get("demo", &task.metadata.name).await.unwrap()
    }

    /// Waits until every task is bound, and returns them as stored.
    async fn all_bound(&self, tasks: &[Task]) -> Vec<Task> {
        wait_until("every task is bound", || async {
            let mut bound = Vec::new();
            for task in tasks {
                let task = self.get(task).await;
                task.spec.node_name.as_ref()?;
                bound.push(task);
            }
            Some(bound)
        })
        .await
    }
}

/// Polls `check` until it returns `Some`, failing the test after `TIMEOUT`.
async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spread(label: &str) -> PlacementPreference {
    PlacementPreference {
        spread: label.into(),
    }
}

fn count_on<'a>(tasks: &'a [Task], node: &'a str) -> usize {
    tasks
        .iter()
        .filter(|t| t.spec.node_name.as_deref() == Some(node))
        .count()
}

#[tokio::test]
async fn binds_pending_tasks_with_their_assignments() {
    let mut cluster = Cluster::start().await;
    for name in ["n1", "n2", "n3"] {
        cluster.node(name, &[], NodeAvailability::Active).await;
    }
    cluster.service("web", Placement::default()).await;
    let mut tasks = Vec::new();
    for slot in 1..=6 {
        tasks.push(cluster.task("web", slot).await);
    }
    let mut stopping = cluster.task("web", 7).await;
    stopping.spec.desired_state = TaskDesiredState::Shutdown;
    let stopping = cluster.store.update(&stopping).await.unwrap();
    cluster.run_scheduler();

    let bound = cluster.all_bound(&tasks).await;
    for node in ["n1", "n2", "n3"] {
        assert_eq!(count_on(&bound, node), 2, "two per node: {node}");
    }
    for task in &bound {
        let node = task.spec.node_name.as_deref().unwrap();
        let status = task.status.as_ref().unwrap();
        assert_eq!(status.state, TaskState::Assigned);
        assert_eq!(status.message, format!("scheduled on {node}"));
        assert!(status.timestamp.is_some());
        // The agent's view: the assignment key holds the task, at the same revision.
        let key = keys::assignment_key(node, "demo", &task.metadata.name);
        assert!(key.starts_with(&format!("/dctl/v1/assignments/{node}/demo/")));
        let response = cluster
            .store
            .client()
            .get(key.as_str(), None)
            .await
            .unwrap();
        let kv = response.kvs().first().expect("assignment written");
        assert_eq!(Some(kv.mod_revision()), task.metadata.resource_version);
        let events = list_for(&cluster.store, &ObjectReference::to(task))
            .await
            .unwrap();
        let scheduled = events.iter().find(|e| e.spec.reason == "Scheduled");
        let message = scheduled.map(|e| e.spec.message.as_str());
        assert_eq!(message, Some(format!("bound to node {node}").as_str()));
    }
    let assigned = cluster.store.list_assigned_tasks("n1").await.unwrap();
    assert_eq!(assigned.items.len(), 2);

    // A task meant to stop is never bound, whatever passes ran.
    let stopping = cluster.get(&stopping).await;
    assert_eq!(stopping.spec.node_name, None);
    assert_eq!(stopping.status, None);
    cluster.stop().await;
}

#[tokio::test]
async fn spreads_over_zones_within_the_constraint() {
    let mut cluster = Cluster::start().await;
    let active = NodeAvailability::Active;
    cluster
        .node("a", &[("tier", "web"), ("zone", "eu")], active)
        .await;
    cluster
        .node("b", &[("tier", "web"), ("zone", "eu")], active)
        .await;
    cluster
        .node("c", &[("tier", "web"), ("zone", "us")], active)
        .await;
    cluster
        .node("d", &[("tier", "db"), ("zone", "us")], active)
        .await;
    let placement = Placement {
        constraints: vec!["node.labels.tier == web".into()],
        preferences: vec![spread("node.labels.zone")],
        ..Placement::default()
    };
    cluster.service("web", placement).await;
    cluster.run_scheduler();
    let mut tasks = Vec::new();
    for slot in 1..=4 {
        tasks.push(cluster.task("web", slot).await);
    }

    let bound = cluster.all_bound(&tasks).await;
    let counts: Vec<usize> = ["a", "b", "c", "d"]
        .iter()
        .map(|node| count_on(&bound, node))
        .collect();
    // Zone us has one web node and zone eu two: half the tasks each, never on d.
    assert_eq!(counts, [1, 1, 2, 0]);
    cluster.stop().await;
}

#[tokio::test]
async fn an_unsatisfiable_task_says_why_and_is_bound_once_a_node_fits() {
    let mut cluster = Cluster::start().await;
    cluster.node("a", &[], NodeAvailability::Active).await;
    cluster
        .node("b", &[("tier", "web")], NodeAvailability::Active)
        .await;
    cluster
        .node("c", &[("tier", "db")], NodeAvailability::Drain)
        .await;
    let placement = Placement {
        constraints: vec!["node.labels.tier == db".into()],
        ..Default::default()
    };
    cluster.service("db", placement).await;
    cluster.run_scheduler();
    let task = cluster.task("db", 1).await;

    let expected = "0/3 nodes are available: 2 nodes lack node.labels.tier == db, \
                    1 node is drained";
    let pending = wait_until("the task explains why it is pending", || async {
        let task = cluster.get(&task).await;
        let status = task.status.as_ref()?;
        (status.message == expected).then_some(task)
    })
    .await;
    let status = pending.status.as_ref().unwrap();
    assert_eq!(status.state, TaskState::Pending);
    assert_eq!(pending.spec.node_name, None);
    let reference = ObjectReference::to(&pending);
    let events = wait_until("a FailedScheduling event", || async {
        let events = list_for(&cluster.store, &reference).await.unwrap();
        events
            .iter()
            .any(|e| e.spec.reason == "FailedScheduling")
            .then_some(events)
    })
    .await;
    let failed = events
        .iter()
        .find(|e| e.spec.reason == "FailedScheduling")
        .unwrap();
    assert_eq!(failed.spec.type_, EventType::Warning);
    assert_eq!(failed.spec.message, expected);
    assert_eq!(failed.spec.source.component, "scheduler");

    // The operator labels a: the node watch brings a pass that binds the task there.
    let mut a: Node = cluster.store.get("", "a").await.unwrap();
    a.spec.labels.insert("tier".into(), "db".into());
    cluster.store.update(&a).await.unwrap();
    let bound = cluster.all_bound(std::slice::from_ref(&task)).await;
    assert_eq!(bound[0].spec.node_name.as_deref(), Some("a"));
    let status = bound[0].status.as_ref().unwrap();
    assert_eq!(
        (status.state, status.message.as_str()),
        (TaskState::Assigned, "scheduled on a")
    );
    cluster.stop().await;
}
