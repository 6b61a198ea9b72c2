//! The agent's task runtime against a real etcd and the local Docker engine: tasks bound
//! to a node become labelled containers, and their status follows what Docker shows.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use dctl_apis::event::EventType;
use dctl_apis::meta::find_condition;
use dctl_apis::network::NetworkSpec;
use dctl_apis::task::{TaskDesiredState, TaskSpec, CONDITION_READY};
use dctl_apis::{ConditionStatus, Network, ObjectMeta, ObjectReference, Resource, Task, TaskState};
use dctl_controllers::node::tasks::{self, TaskRuntimeConfig, TaskRuntimeError};
use dctl_e2e::docker::DockerLeftovers;
use dctl_e2e::ensure_test_image;
use dctl_runtime::events;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const IMAGE: &str = "dctl-test/server:1";

/// How long anything the runtime does may take here (a create and start take well under a
/// second; the slack is for a loaded CI machine).
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

type RunningRuntime = (
    oneshot::Sender<()>,
    JoinHandle<Result<(), TaskRuntimeError>>,
);

/// One test's node: its own etcd, a unique node name and namespace, and a task runtime
/// that can be started, stopped and crashed. Whatever it leaves on the engine carries the
/// test run's label and is removed on drop.
struct TestNode {
    store: Store,
    docker: Docker,
    name: String,
    namespace: String,
    resync: Duration,
    runtime: Option<RunningRuntime>,
    leftovers: DockerLeftovers,
    _etcd: LocalEtcd,
}

impl TestNode {
    async fn start(test: &str, resync: Duration) -> TestNode {
        let mut node = TestNode::start_stopped(test, resync).await;
        node.run();
        node
    }

    /// A node whose task runtime is not running yet.
    async fn start_stopped(test: &str, resync: Duration) -> TestNode {
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
        TestNode {
            store,
            docker,
            name: format!("node-{}", leftovers.run_id),
            // Container names are per engine: a namespace per test keeps them apart.
            namespace: leftovers.run_id.clone(),
            resync,
            runtime: None,
            leftovers,
            _etcd: etcd,
        }
    }

    fn run(&mut self) {
        self.run_on(self.docker.clone());
    }

    /// Runs the task runtime against `docker`.
    fn run_on(&mut self, docker: Docker) {
        let (label, value) = self.leftovers.label();
        let config = TaskRuntimeConfig::new(&self.name)
            .container_label(label, value)
            .resync_period(self.resync);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handle = tokio::spawn(tasks::run(self.store.clone(), docker, config, shutdown));
        self.runtime = Some((stop, handle));
    }

    /// Ends the runtime abruptly, as a killed agent would end.
    async fn crash(&mut self) {
        let (_, handle) = self.runtime.take().expect("the runtime runs");
        handle.abort();
        let _ = handle.await;
    }

    /// Creates a task of service `web` and binds it to this node, as the scheduler would.
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
            .bind_task(&created, &self.name)
            .await
            .expect("bind the task")
    }

    async fn set_desired_state(&self, name: &str, desired: TaskDesiredState) {
        self.store
            .modify::<Task, _>(&self.namespace, name, |task| {
                task.spec.desired_state = desired;
                Ok(true)
            })
            .await
            .expect("update the task");
    }

    /// Waits until the task's status satisfies `check`; returns the task.
    async fn wait_task(&self, name: &str, what: &str, check: impl Fn(&Task) -> bool) -> Task {
        self.wait_task_for(PATIENCE, name, what, check).await
    }

    async fn wait_task_for(
        &self,
        timeout: Duration,
        name: &str,
        what: &str,
        check: impl Fn(&Task) -> bool,
    ) -> Task {
        let what = format!("task {name} to be {what}");
        wait_until(timeout, &what, || async {
            let task: Task = self.store.get(&self.namespace, name).await.ok()?;
            check(&task).then_some(task)
        })
        .await
    }

    async fn wait_state(&self, name: &str, state: TaskState) -> Task {
        self.wait_task(name, state.as_str(), |task| status_of(task).state == state)
            .await
    }

    /// The ids of every container, running or not, labelled with `task`'s uid.
    async fn containers_of(&self, task: &Task) -> Vec<String> {
        let label = format!("dctl.task.uid={}", task.metadata.uid);
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .expect("list containers");
        listed.into_iter().filter_map(|c| c.id).collect()
    }

    async fn inspect(&self, id: &str) -> Option<ContainerInspectResponse> {
        self.docker.inspect_container(id, None).await.ok()
    }

    /// The (reason, count) of every Event about `task`, oldest first.
    async fn events_of(&self, task: &Task) -> Vec<(EventType, String, u32)> {
        let events = events::list_for(&self.store, &ObjectReference::to(task))
            .await
            .expect("list events");
        events
            .into_iter()
            .map(|e| (e.spec.type_, e.spec.reason, e.spec.count))
            .collect()
    }
}

fn status_of(task: &Task) -> dctl_apis::task::TaskStatus {
    task.status.clone().unwrap_or_default()
}

fn running_state(inspect: &ContainerInspectResponse) -> (bool, i64) {
    let state = inspect.state.clone().unwrap_or_default();
    (
        state.running.unwrap_or_default(),
        state.exit_code.unwrap_or_default(),
    )
}

/// `GET path` on `address:port`, the answer's body.
async fn http_get(address: &str, port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect((address, port))
        .await
        .expect("the task's port answers");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
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
async fn runs_an_assigned_task_as_a_labelled_container_and_stops_it() {
    let node = TestNode::start("runs", Duration::from_secs(1)).await;
    let name = "web.1.aaaaa";
    node.assign(
        name,
        server(json!({"env": [{"name": "VERSION", "value": "3"}]})),
    )
    .await;

    let task = node.wait_state(name, TaskState::Running).await;
    let status = status_of(&task);
    let id = status.container_id.clone().expect("a container id");
    let ready = find_condition(&status.conditions, CONDITION_READY).expect("Ready");
    assert_eq!(ready.status, ConditionStatus::True);
    let inspect = node.inspect(&id).await.expect("the container exists");
    assert_eq!(running_state(&inspect), (true, 0));
    assert_eq!(
        inspect.name.as_deref(),
        Some(format!("/dctl.{}.{name}", node.namespace).as_str())
    );
    let config = inspect.config.expect("a config");
    assert_eq!(config.hostname.as_deref(), Some(name));
    let labels = config.labels.expect("labels");
    let (test_label, run_id) = node.leftovers.label();
    for (key, value) in [
        ("dctl.managed", "true"),
        ("dctl.node", node.name.as_str()),
        ("dctl.namespace", node.namespace.as_str()),
        ("dctl.service", "web"),
        ("dctl.task", name),
        ("dctl.task.uid", task.metadata.uid.as_str()),
        (test_label.as_str(), run_id.as_str()),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    // The task answers on the address its status reports.
    let address = status.addresses.first().expect("an address");
    assert_eq!(
        http_get(address, 8080, "/").await,
        format!("hello from {name} version 3\n")
    );
    let reasons: Vec<String> = node
        .events_of(&task)
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert_eq!(reasons, ["Created", "Started"]);

    // Shutdown: SIGTERM, which the server honours at once, well within its grace period.
    let asked = Instant::now();
    node.set_desired_state(name, TaskDesiredState::Shutdown)
        .await;
    let task = node.wait_state(name, TaskState::Shutdown).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let status = status_of(&task);
    assert_eq!(status.exit_code, Some(0));
    let ready = find_condition(&status.conditions, CONDITION_READY).expect("Ready");
    assert_eq!(ready.status, ConditionStatus::False);
    // A shut-down task keeps its stopped container (for logs) until the task goes.
    let inspect = node.inspect(&id).await.expect("the container is kept");
    assert_eq!(running_state(&inspect), (false, 0));
    let reasons: Vec<String> = node
        .events_of(&task)
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert_eq!(reasons, ["Created", "Started", "Killing", "Stopped"]);

    // The task is deleted: gone from the assignments, so its container goes too.
    node.store
        .delete::<Task>(&node.namespace, name)
        .await
        .expect("delete the task");
    wait_until(PATIENCE, "the container to be removed", || async {
        node.inspect(&id).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ignores_its_stop_signal_is_killed_after_its_grace_period() {
    let node = TestNode::start("grace", Duration::from_secs(1)).await;
    let name = "web.1.bbbbb";
    // As PID 1 without a handler for it, the server ignores SIGUSR1.
    let template = server(json!({"stopSignal": "SIGUSR1", "stopGracePeriod": "2s"}));
    node.assign(name, template).await;
    let task = node.wait_state(name, TaskState::Running).await;
    let id = status_of(&task).container_id.expect("a container id");

    let asked = Instant::now();
    node.set_desired_state(name, TaskDesiredState::Remove).await;
    let task = node.wait_state(name, TaskState::Shutdown).await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stopped after {took:?}"
    );
    assert_eq!(status_of(&task).exit_code, Some(137), "SIGKILLed");
    // desiredState remove: the container goes as soon as it is down.
    wait_until(PATIENCE, "the container to be removed", || async {
        node.inspect(&id).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_killed_or_removed_by_hand_fail_their_tasks() {
    // A resync far beyond the waits below: only Docker's events can be this quick.
    let node = TestNode::start("by-hand", Duration::from_secs(300)).await;
    node.assign("web.1.kkkkk", server(json!({}))).await;
    node.assign("web.2.rrrrr", server(json!({}))).await;
    let killed = node.wait_state("web.1.kkkkk", TaskState::Running).await;
    let removed = node.wait_state("web.2.rrrrr", TaskState::Running).await;
    let killed_id = status_of(&killed).container_id.expect("a container id");
    let removed_id = status_of(&removed).container_id.expect("a container id");

    node.docker
        .kill_container(&killed_id, Some(KillContainerOptionsBuilder::new().build()))
        .await
        .expect("docker kill");
    let remove = RemoveContainerOptionsBuilder::new().force(true).build();
    node.docker
        .remove_container(&removed_id, Some(remove))
        .await
        .expect("docker rm -f");

    let quick = Duration::from_secs(10);
    let killed = node
        .wait_task_for(quick, "web.1.kkkkk", "failed", |t| {
            status_of(t).state == TaskState::Failed
        })
        .await;
    let status_killed = status_of(&killed);
    assert_eq!(status_killed.exit_code, Some(137));
    assert_eq!(status_killed.message, "task: non-zero exit (137)");
    let removed = node
        .wait_task_for(quick, "web.2.rrrrr", "failed", |t| {
            status_of(t).state == TaskState::Failed
        })
        .await;
    assert_eq!(status_of(&removed).message, "task: container removed");

    // Never restarted in place: the service controller replaces failed tasks.
    assert_eq!(node.containers_of(&killed).await, [killed_id.as_str()]);
    assert!(node.containers_of(&removed).await.is_empty());
    let inspect = node.inspect(&killed_id).await.expect("kept for its logs");
    assert_eq!(running_state(&inspect), (false, 137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_adopts_its_containers() {
    let mut node = TestNode::start("adopt", Duration::from_secs(1)).await;
    let name = "web.1.ccccc";
    node.assign(name, server(json!({}))).await;
    let task = node.wait_state(name, TaskState::Running).await;
    let id = status_of(&task).container_id.expect("a container id");
    let started_at = |inspect: ContainerInspectResponse| inspect.state.and_then(|s| s.started_at);
    let first_start = started_at(node.inspect(&id).await.expect("exists"));

    node.crash().await;
    node.run();
    // Long enough for the new runtime to list, sweep and reconcile everything twice.
    let settled = node.resync * 3;
    tokio::time::sleep(settled).await;

    assert_eq!(
        node.containers_of(&task).await,
        [id.as_str()],
        "no duplicate"
    );
    let inspect = node.inspect(&id).await.expect("still there");
    assert_eq!(running_state(&inspect), (true, 0));
    assert_eq!(started_at(inspect), first_start, "not restarted");
    let after: Task = node.store.get(&node.namespace, name).await.expect("task");
    assert_eq!(status_of(&after).state, TaskState::Running);
    assert_eq!(status_of(&after).container_id.as_deref(), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_tasks_not_assigned_here_are_removed() {
    let mut node = TestNode::start("strays", Duration::from_secs(1)).await;
    node.crash().await;
    let (test_label, run_id) = node.leftovers.label();
    let create = |owner: &str, task: &str| {
        let labels = HashMap::from([
            ("dctl.managed".to_string(), "true".to_string()),
            ("dctl.node".to_string(), owner.to_string()),
            ("dctl.namespace".to_string(), node.namespace.clone()),
            ("dctl.service".to_string(), "ghost".to_string()),
            ("dctl.task".to_string(), task.to_string()),
            ("dctl.task.uid".to_string(), format!("uid-of-{task}")),
            (test_label.clone(), run_id.clone()),
        ]);
        let name = format!("dctl.{}.{task}", node.namespace);
        let docker = node.docker.clone();
        async move {
            let body = ContainerCreateBody {
                image: Some(IMAGE.into()),
                labels: Some(labels),
                ..Default::default()
            };
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let id = docker
                .create_container(Some(options), body)
                .await
                .expect("create a container by hand")
                .id;
            docker.start_container(&id, None).await.expect("start it");
            id
        }
    };
    // Left by a task deleted while the agent was down, and one of another node that
    // shares this engine.
    let stray = create(&node.name, "ghost.1.zzzzz").await;
    let other_node = format!("other-{}", node.name);
    let foreign = create(&other_node, "ghost.2.yyyyy").await;

    node.run();
    wait_until(PATIENCE, "the stray container to be removed", || async {
        node.inspect(&stray).await.is_none().then_some(())
    })
    .await;
    let inspect = node
        .inspect(&foreign)
        .await
        .expect("another node's container stays");
    assert_eq!(running_state(&inspect), (true, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_image_cannot_be_had_is_rejected_after_one_pull() {
    let node = TestNode::start("no-image", Duration::from_secs(1)).await;
    let image = format!("dctl-test/missing-{}:1", node.leftovers.run_id);
    let name = "web.1.ddddd";
    node.assign(name, json!({"image": image})).await;

    let task = node.wait_state(name, TaskState::Rejected).await;
    let rejected = status_of(&task);
    let expected = format!("image {image:?} not found locally and could not be pulled: ");
    assert!(
        rejected.message.starts_with(&expected),
        "{}",
        rejected.message
    );
    assert_eq!(rejected.error.as_deref(), Some(rejected.message.as_str()));
    assert!(node.containers_of(&task).await.is_empty());

    // No retry storm: several resyncs later, still one Failed event, written once.
    tokio::time::sleep(node.resync * 3).await;
    assert_eq!(
        node.events_of(&task).await,
        [(EventType::Warning, "Failed".to_string(), 1)]
    );
    let later: Task = node.store.get(&node.namespace, name).await.expect("task");
    assert_eq!(
        later.metadata.resource_version,
        task.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_joins_its_networks_under_its_service_name() {
    let node = TestNode::start("networks", Duration::from_secs(1)).await;
    for network in ["backend", "front"] {
        let spec = NetworkSpec {
            driver: "bridge".into(),
            ..Default::default()
        };
        let network = Network::new(ObjectMeta::named(&node.namespace, network), spec);
        node.store
            .create(&network)
            .await
            .expect("create the network");
    }
    let name = "web.1.eeeee";
    let networks =
        json!({"networks": [{"name": "backend", "aliases": ["api"]}, {"name": "front"}]});
    node.assign(name, server(networks)).await;

    let task = node.wait_state(name, TaskState::Running).await;
    let status = status_of(&task);
    let id = status.container_id.clone().expect("a container id");
    let inspect = node.inspect(&id).await.expect("the container exists");
    let attached = inspect
        .network_settings
        .and_then(|settings| settings.networks)
        .expect("networks");
    let backend = &attached[&format!("{}_backend", node.namespace)];
    let front = &attached[&format!("{}_front", node.namespace)];
    for (endpoint, alias) in [(backend, "api"), (front, "web")] {
        let aliases = endpoint.aliases.clone().unwrap_or_default();
        assert!(aliases.contains(&"web".to_string()), "{aliases:?}");
        assert!(aliases.contains(&alias.to_string()), "{aliases:?}");
    }
    // The primary network's address first.
    let backend_address = backend.ip_address.clone().expect("an address");
    assert_eq!(status.addresses.len(), 2, "{:?}", status.addresses);
    assert_eq!(status.addresses[0], backend_address);
    assert_eq!(
        http_get(&backend_address, 8080, "/").await,
        format!("hello from {name} version 1\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wait_while_the_docker_engine_does_not_answer() {
    let mut node = TestNode::start_stopped("engine-down", Duration::from_secs(1)).await;
    let name = "web.1.fffff";
    let assigned = node.assign(name, server(json!({}))).await;
    // A socket file nobody listens on: a stopped engine, as the client sees it.
    let socket = std::env::temp_dir().join(format!("{}.sock", node.leftovers.run_id));
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket"));
    let path = socket.to_str().expect("a UTF-8 path");
    let dead = Docker::connect_with_unix(path, 5, API_DEFAULT_VERSION).expect("a client");
    node.run_on(dead);
    // Several resyncs and retries against an engine that never answers.
    tokio::time::sleep(node.resync * 3).await;
    let waiting: Task = node.store.get(&node.namespace, name).await.expect("task");
    assert_eq!(
        waiting.metadata.resource_version, assigned.metadata.resource_version,
        "an engine outage neither rejects nor fails a task"
    );

    let _ = std::fs::remove_file(&socket);

    // Once an engine answers, the same task runs.
    node.crash().await;
    node.run();
    node.wait_state(name, TaskState::Running).await;
}
