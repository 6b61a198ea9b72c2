//! Node registration, heartbeat leases and the node-lifecycle controller, against a real
//! etcd and the local Docker engine.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use dctl_apis::event::ObjectReference;
use dctl_apis::meta::find_condition;
use dctl_apis::node::{NodeAvailability, NodeSpec, CONDITION_READY};
use dctl_apis::task::{TaskSpec, TaskStatus};
use dctl_apis::{ConditionStatus, Node, ObjectMeta, Task, TaskState, TaskTemplate};
use dctl_controllers::node::node_status;
use dctl_controllers::node::registration::{self, heartbeat_key, RegistrationConfig};
use dctl_controllers::node_lifecycle::{self, NodeLifecycleConfig, REASON_NODE_STATUS_UNKNOWN};
use dctl_runtime::events;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(2);

async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("a Docker client")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

async fn etcd() -> (LocalEtcd, Store) {
    let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .expect("etcd answers");
    (etcd, store)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A registration running in the background, stopped like a crashed agent: its lease is
/// no longer renewed, and not revoked.
struct Agent {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), registration::Error>>,
}

impl Agent {
    async fn start(store: &Store, config: RegistrationConfig) -> Agent {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handle = tokio::spawn(registration::run(
            store.clone(),
            docker().await,
            config,
            shutdown,
        ));
        Agent { stop, handle }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle
            .await
            .expect("registration does not panic")
            .expect("registration stops cleanly");
    }
}

fn ready_of(node: &Node) -> Option<(ConditionStatus, String, String)> {
    let ready = find_condition(&node.status.as_ref()?.conditions, CONDITION_READY)?;
    Some((ready.status, ready.reason.clone(), ready.message.clone()))
}

async fn wait_for_ready(store: &Store, name: &str, wanted: ConditionStatus) -> Node {
    wait_until(
        Duration::from_secs(15),
        &format!("node {name} Ready {wanted:?}"),
        || async {
            let node: Node = store.try_get("", name).await.ok()??;
            (ready_of(&node)?.0 == wanted).then_some(node)
        },
    )
    .await
}

async fn heartbeat_exists(store: &Store, name: &str) -> bool {
    let response = store
        .client()
        .get(heartbeat_key(name), None)
        .await
        .expect("etcd answers");
    !response.kvs().is_empty()
}

#[tokio::test]
async fn registration_reports_the_engine_and_keeps_the_users_spec() {
    let (_etcd, store) = etcd().await;
    let name = unique("node");
    // The user drained the node and labelled it before the agent (re)started.
    let spec = NodeSpec {
        availability: NodeAvailability::Drain,
        labels: BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            ("zone".to_string(), "us".to_string()),
        ]),
        ..Default::default()
    };
    let meta = ObjectMeta {
        name: name.clone(),
        ..Default::default()
    };
    store.create(&Node::new(meta, spec)).await.unwrap();

    let labels = BTreeMap::from([("zone".to_string(), "eu".to_string())]);
    let config = RegistrationConfig::new(&name)
        .labels(labels)
        .heartbeat_ttl(TTL)
        .status_interval(Duration::from_secs(1));
    let agent = Agent::start(&store, config).await;
    let node = wait_for_ready(&store, &name, ConditionStatus::True).await;
    assert!(heartbeat_exists(&store, &name).await);

    let (_, reason, _) = ready_of(&node).unwrap();
    assert_eq!(reason, node_status::REASON_AGENT_READY);
    assert_eq!(node.spec.availability, NodeAvailability::Drain);
    assert_eq!(node.spec.labels["zone"], "eu");
    assert_eq!(node.spec.labels["team"], "a");
    let status = node.status.clone().unwrap();
    let version = docker().await.version().await.unwrap();
    assert_eq!(Some(&status.engine_version), version.version.as_ref());
    assert_eq!(status.platform.os, "linux");
    assert!(!status.platform.architecture.is_empty());
    assert!(status.capacity.nano_cpus().unwrap() >= 1_000_000_000);
    assert!(status.capacity.memory_bytes > 0);
    assert!(!status.hostname.is_empty());
    assert!(status.last_heartbeat_time.is_some());
    wait_for_event(&store, &node, "NodeReady").await;

    // Nothing changes on an idle node: its status rounds write nothing.
    let before = resource_version(&store, &name).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(resource_version(&store, &name).await, before);
    agent.stop().await;
}

async fn resource_version(store: &Store, name: &str) -> Option<i64> {
    let node: Node = store.get("", name).await.unwrap();
    node.metadata.resource_version
}

async fn wait_for_event(store: &Store, node: &Node, reason: &str) {
    let object = ObjectReference::to(node);
    wait_until(
        Duration::from_secs(5),
        &format!("a {reason} event"),
        || async {
            let events = events::list_for(store, &object).await.ok()?;
            events.iter().any(|e| e.spec.reason == reason).then_some(())
        },
    )
    .await;
}

fn task(namespace: &str, name: &str) -> Task {
    let spec = TaskSpec {
        template: TaskTemplate {
            image: "dctl-test/none:1".into(),
            ..Default::default()
        },
        service_name: "web".into(),
        slot: Some(1),
        ..Default::default()
    };
    Task::new(ObjectMeta::named(namespace, name), spec)
}

/// A task bound to `node` and reported in `state`, as the scheduler and agent leave it.
async fn bound_task(store: &Store, namespace: &str, name: &str, node: &str, state: TaskState) {
    let created = store.create(&task(namespace, name)).await.unwrap();
    let mut bound = store.bind_task(&created, node).await.unwrap();
    bound.status = Some(TaskStatus {
        state,
        ..bound.status.unwrap_or_default()
    });
    store.update_status(&bound).await.unwrap();
}

async fn task_state(store: &Store, namespace: &str, name: &str) -> (TaskState, String) {
    let task: Task = store.get(namespace, name).await.unwrap();
    let status = task.status.unwrap_or_default();
    (status.state, status.message)
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_goes_not_ready_and_its_tasks_are_orphaned() {
    let (_etcd, store) = etcd().await;
    let (stop_controller, controller_stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(node_lifecycle::run(
        store.clone(),
        NodeLifecycleConfig::default().grace_period(GRACE),
        async move {
            let _ = controller_stopped.await;
        },
    ));

    let name = unique("node");
    let config = RegistrationConfig::new(&name)
        .heartbeat_ttl(TTL)
        .status_interval(Duration::from_secs(1));
    let agent = Agent::start(&store, config.clone()).await;
    wait_for_ready(&store, &name, ConditionStatus::True).await;

    let ns = "demo";
    bound_task(&store, ns, "web.1.run", &name, TaskState::Running).await;
    bound_task(&store, ns, "web.2.done", &name, TaskState::Complete).await;
    bound_task(&store, ns, "web.3.else", "elsewhere", TaskState::Running).await;

    // A live node is left alone, however long it lives.
    tokio::time::sleep(TTL + GRACE).await;
    assert_eq!(
        task_state(&store, ns, "web.1.run").await.0,
        TaskState::Running
    );

    // The agent dies: no renewal, no revoke.
    agent.stop().await;
    let stopped_at = tokio::time::Instant::now();
    let node = wait_for_ready(&store, &name, ConditionStatus::False).await;
    let (_, reason, message) = ready_of(&node).unwrap();
    assert_eq!(reason, REASON_NODE_STATUS_UNKNOWN);
    assert!(
        message.starts_with("heartbeat lease expired at "),
        "{message}"
    );
    assert!(!heartbeat_exists(&store, &name).await);
    // NotReady is not yet orphaned: the grace period runs first.
    assert_eq!(
        task_state(&store, ns, "web.1.run").await.0,
        TaskState::Running
    );
    wait_for_event(&store, &node, "NodeNotReady").await;

    let (state, message) = wait_until(
        GRACE + Duration::from_secs(10),
        "the task orphaned",
        || async {
            let (state, message) = task_state(&store, ns, "web.1.run").await;
            (state == TaskState::Orphaned).then_some((state, message))
        },
    )
    .await;
    assert!(stopped_at.elapsed() >= GRACE);
    assert_eq!(state, TaskState::Orphaned);
    assert_eq!(message, format!("node {name} down for more than 2s"));
    assert_eq!(
        task_state(&store, ns, "web.2.done").await.0,
        TaskState::Complete
    );
    assert_eq!(
        task_state(&store, ns, "web.3.else").await.0,
        TaskState::Running
    );

    // The agent comes back: Ready again, by its own report; the orphan stays orphaned.
    let agent = Agent::start(&store, config).await;
    let node = wait_for_ready(&store, &name, ConditionStatus::True).await;
    assert_eq!(ready_of(&node).unwrap().1, node_status::REASON_AGENT_READY);
    assert!(heartbeat_exists(&store, &name).await);
    assert_eq!(
        task_state(&store, ns, "web.1.run").await.0,
        TaskState::Orphaned
    );

    agent.stop().await;
    let _ = stop_controller.send(());
    controller.await.unwrap();
}

#[tokio::test]
async fn a_lost_lease_or_heartbeat_key_is_replaced() {
    let (_etcd, store) = etcd().await;
    let name = unique("node");
    let config = RegistrationConfig::new(&name)
        .heartbeat_ttl(TTL)
        .status_interval(Duration::from_secs(1));
    let agent = Agent::start(&store, config).await;
    wait_for_ready(&store, &name, ConditionStatus::True).await;

    // Revoke the agent's lease behind its back, as an etcd outage longer than the TTL does.
    let mut client = store.client();
    let key = heartbeat_key(&name);
    let lease = client.get(key.clone(), None).await.unwrap().kvs()[0].lease();
    client.lease_revoke(lease).await.unwrap();
    assert!(!heartbeat_exists(&store, &name).await);

    wait_until(
        TTL * 3 + Duration::from_secs(5),
        "a new heartbeat lease",
        || async {
            let response = store.client().get(key.clone(), None).await.ok()?;
            let kv = response.kvs().first()?;
            (kv.lease() != lease).then_some(())
        },
    )
    .await;
    wait_for_ready(&store, &name, ConditionStatus::True).await;

    // A heartbeat key deleted by hand comes back too.
    client.delete(key.clone(), None).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the heartbeat key back",
        || async { heartbeat_exists(&store, &name).await.then_some(()) },
    )
    .await;
    agent.stop().await;
}
