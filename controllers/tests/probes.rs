//! The probe controllers against a real etcd and the local Docker engine, with the task
//! runtime running the containers: readiness flips `Ready` and leaves the container alive,
//! liveness and startup failures stop it and the task fails.

use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use dctl_apis::meta::find_condition;
use dctl_apis::task::{TaskSpec, TaskStatus, CONDITION_LIVE, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::{ConditionStatus, ObjectMeta, ObjectReference, Resource, Task, TaskState};
use dctl_controllers::node::probes::{self, ProbesConfig};
use dctl_controllers::node::tasks::{self, TaskRuntimeConfig};
use dctl_e2e::docker::DockerLeftovers;
use dctl_e2e::ensure_test_image;
use dctl_runtime::events;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

const IMAGE: &str = "dctl-test/server:1";

/// How long starting a container may take here, with slack for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One test's node: its own etcd, namespace and node name, the task runtime and the probe
/// controllers; whatever it leaves on the engine is removed on drop.
struct TestNode {
    store: Store,
    docker: Docker,
    node: String,
    namespace: String,
    _stop: oneshot::Sender<()>,
    _leftovers: DockerLeftovers,
    _etcd: LocalEtcd,
}

impl TestNode {
    async fn start(test: &str) -> TestNode {
        tokio::task::spawn_blocking(ensure_test_image)
            .await
            .expect("the test image builds");
        let leftovers = DockerLeftovers::new(test);
        let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
        let store = Store::connect(&[etcd.endpoint().to_string()])
            .await
            .expect("etcd answers");
        let docker = Docker::connect_with_local_defaults()
            .expect("a Docker client")
            .negotiate_version()
            .await
            .expect("the Docker engine answers");
        let node = format!("node-{}", leftovers.run_id);
        let (label, value) = leftovers.label();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = futures::future::FutureExt::shared(async move {
            let _ = stopped.await;
        });
        let runtime = TaskRuntimeConfig::new(&node)
            .container_label(label, value)
            .resync_period(Duration::from_secs(1));
        tokio::spawn(tasks::run(
            store.clone(),
            docker.clone(),
            runtime,
            stopped.clone(),
        ));
        tokio::spawn(probes::run(
            store.clone(),
            docker.clone(),
            ProbesConfig::new(&node),
            stopped,
        ));
        TestNode {
            store,
            docker,
            node,
            namespace: leftovers.run_id.clone(),
            _stop: stop,
            _leftovers: leftovers,
            _etcd: etcd,
        }
    }

    /// Creates a task of service `web` from `template` and binds it to this node.
    async fn assign(&self, name: &str, template: serde_json::Value) -> Task {
        let spec = TaskSpec {
            template: serde_json::from_value(template).expect("a valid template"),
            service_name: "web".into(),
            slot: Some(1),
            ..Default::default()
        };
        let mut task = Task::new(ObjectMeta::named(&self.namespace, name), spec);
        task.apply_defaults();
        assert_eq!(task.validate(), vec![]);
        let created = self.store.create(&task).await.expect("create the task");
        self.store
            .bind_task(&created, &self.node)
            .await
            .expect("bind the task")
    }

    async fn wait_task(
        &self,
        timeout: Duration,
        name: &str,
        what: &str,
        check: impl Fn(&TaskStatus) -> bool,
    ) -> Task {
        let what = format!("task {name} to be {what}");
        wait_until(timeout, &what, || async {
            let task: Task = self.store.get(&self.namespace, name).await.ok()?;
            check(&status_of(&task)).then_some(task)
        })
        .await
    }

    async fn running(&self, id: &str) -> bool {
        let inspect = self.docker.inspect_container(id, None).await.ok();
        inspect
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            .unwrap_or_default()
    }

    /// (reason, message) of every Event about `task`.
    async fn events_of(&self, task: &Task) -> Vec<(String, String)> {
        events::list_for(&self.store, &ObjectReference::to(task))
            .await
            .expect("list events")
            .into_iter()
            .map(|e| (e.spec.reason, e.spec.message))
            .collect()
    }
}

fn status_of(task: &Task) -> TaskStatus {
    task.status.clone().unwrap_or_default()
}

/// The condition's (status, reason, message), if set.
fn condition(status: &TaskStatus, type_: &str) -> Option<(ConditionStatus, String, String)> {
    find_condition(&status.conditions, type_)
        .map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

fn is(status: &TaskStatus, type_: &str, value: ConditionStatus) -> bool {
    condition(status, type_).is_some_and(|(s, _, _)| s == value)
}

fn running_and(status: &TaskStatus, type_: &str, value: ConditionStatus) -> bool {
    status.state == TaskState::Running && is(status, type_, value)
}

/// `POST path` to the task's server; panics unless it answers 200.
async fn post(task: &Task, path: &str) {
    let address = status_of(task)
        .addresses
        .first()
        .cloned()
        .expect("an address");
    let mut stream = tokio::net::TcpStream::connect((address.as_str(), 8080))
        .await
        .expect("the task's port answers");
    let request = format!("POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn server(extra: serde_json::Value) -> serde_json::Value {
    let mut template = json!({
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "stopGracePeriod": "5s",
    });
    for (key, value) in extra.as_object().expect("an object") {
        template[key] = value.clone();
    }
    template
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_ready_and_leaves_the_container_alive() {
    let node = TestNode::start("probe-ready").await;
    let name = "web.1.ready";
    let probes =
        json!({"readiness": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}});
    node.assign(name, server(json!({ "probes": probes }))).await;

    let task = node
        .wait_task(PATIENCE, name, "ready", |s| {
            running_and(s, CONDITION_READY, ConditionStatus::True)
        })
        .await;
    let id = status_of(&task).container_id.expect("a container id");

    post(&task, "/ready/fail").await;
    // period × failureThreshold, and 2 s for the watch and the write.
    let window = Duration::from_secs(3 + 2);
    let task = node
        .wait_task(window, name, "not ready", |s| {
            is(s, CONDITION_READY, ConditionStatus::False)
        })
        .await;
    let status = status_of(&task);
    assert_eq!(status.state, TaskState::Running);
    assert_eq!(status.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        condition(&status, CONDITION_READY),
        Some((
            ConditionStatus::False,
            "ReadinessProbeFailed".into(),
            "HTTP 503".into()
        ))
    );
    assert!(is(&status, CONDITION_LIVE, ConditionStatus::True));
    assert!(node.running(&id).await, "the container lives on");
    let events = node.events_of(&task).await;
    assert!(
        events.contains(&(
            "Unhealthy".into(),
            "Readiness probe failed: HTTP 503".into()
        )),
        "{events:?}"
    );

    post(&task, "/ready/ok").await;
    let task = node
        .wait_task(window, name, "ready again", |s| {
            is(s, CONDITION_READY, ConditionStatus::True)
        })
        .await;
    assert_eq!(status_of(&task).container_id.as_deref(), Some(id.as_str()));
    assert!(node.running(&id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liveness_failure_stops_the_container_and_fails_the_task() {
    let node = TestNode::start("probe-live").await;
    let name = "web.1.live";
    let probes = json!({"liveness": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}});
    node.assign(name, server(json!({ "probes": probes }))).await;
    let task = node
        .wait_task(PATIENCE, name, "ready", |s| {
            running_and(s, CONDITION_READY, ConditionStatus::True)
        })
        .await;
    let id = status_of(&task).container_id.expect("a container id");

    post(&task, "/healthz/fail").await;
    let task = node
        .wait_task(Duration::from_secs(10), name, "failed", |s| {
            s.state == TaskState::Failed
        })
        .await;
    let status = status_of(&task);
    assert_eq!(
        condition(&status, CONDITION_LIVE),
        Some((
            ConditionStatus::False,
            "LivenessProbeFailed".into(),
            "HTTP 503".into()
        ))
    );
    assert!(is(&status, CONDITION_READY, ConditionStatus::False));
    assert!(
        status
            .message
            .starts_with("task: killed after failing its liveness probe: HTTP 503"),
        "{}",
        status.message
    );
    // Not restarted in place: the one container is stopped, and stays so.
    assert_eq!(status.container_id.as_deref(), Some(id.as_str()));
    assert!(!node.running(&id).await);
    let reasons: Vec<String> = node
        .events_of(&task)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for reason in ["Unhealthy", "Killing"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
    let events = node.events_of(&task).await;
    assert!(
        events.contains(&(
            "Killing".into(),
            "Container failed liveness probe, will be replaced".into()
        )),
        "{events:?}"
    );
}

fn slow_starter(failure_threshold: i32) -> serde_json::Value {
    let startup = json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": failure_threshold});
    server(json!({
        "env": [{"name": "STARTUP_DELAY", "value": "4s"}],
        "probes": {"startup": startup},
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starter_within_its_startup_window_becomes_ready() {
    let node = TestNode::start("probe-slow").await;
    let name = "web.1.slow";
    node.assign(name, slow_starter(10)).await;
    let task = node
        .wait_task(PATIENCE, name, "running", |s| s.state == TaskState::Running)
        .await;
    let status = status_of(&task);
    // Not started, hence not ready, until the startup probe passes.
    assert_eq!(
        condition(&status, CONDITION_STARTED).map(|(s, r, _)| (s, r)),
        Some((ConditionStatus::False, "StartupProbePending".into()))
    );
    assert!(is(&status, CONDITION_READY, ConditionStatus::False));
    let task = node
        .wait_task(PATIENCE, name, "ready", |s| {
            running_and(s, CONDITION_READY, ConditionStatus::True)
        })
        .await;
    let status = status_of(&task);
    assert!(is(&status, CONDITION_STARTED, ConditionStatus::True));
    assert!(node.running(status.container_id.as_deref().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starter_beyond_its_startup_window_is_killed() {
    let node = TestNode::start("probe-late").await;
    let name = "web.1.late";
    node.assign(name, slow_starter(2)).await;
    let task = node
        .wait_task(PATIENCE, name, "failed", |s| s.state == TaskState::Failed)
        .await;
    let status = status_of(&task);
    let (started, reason, _) = condition(&status, CONDITION_STARTED).expect("Started");
    assert_eq!(
        (started, reason.as_str()),
        (ConditionStatus::False, "StartupProbeFailed")
    );
    assert!(
        status.message.contains("startup probe"),
        "{}",
        status.message
    );
    let events = node.events_of(&task).await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Startup probe failed: ")),
        "{events:?}"
    );
    assert!(
        events.contains(&(
            "Killing".into(),
            "Container failed startup probe, will be replaced".into()
        )),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_probe_runs_in_the_container() {
    let node = TestNode::start("probe-exec").await;
    let name = "web.1.exec";
    let check = ["/dctl-testserver", "--check", "http://127.0.0.1:8080/ready"];
    let probes = json!({"readiness": {"exec": {"command": check}, "periodSeconds": 1, "failureThreshold": 1}});
    node.assign(name, server(json!({ "probes": probes }))).await;
    let task = node
        .wait_task(PATIENCE, name, "ready", |s| {
            running_and(s, CONDITION_READY, ConditionStatus::True)
        })
        .await;
    post(&task, "/ready/fail").await;
    let task = node
        .wait_task(Duration::from_secs(5), name, "not ready", |s| {
            is(s, CONDITION_READY, ConditionStatus::False)
        })
        .await;
    let (_, reason, message) = condition(&status_of(&task), CONDITION_READY).unwrap();
    assert_eq!(reason, "ReadinessProbeFailed");
    assert!(message.contains("exited with 1: HTTP 503"), "{message}");
}
