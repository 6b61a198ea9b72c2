//! The core loop on real Docker: the `dctl` binary as controller-manager and agents (several
//! nodes sharing this machine's engine), a real etcd, the locally built test image.

use std::time::Duration;

use dctl_apis::node::NodeAvailability;
use dctl_apis::task::TaskState;
use dctl_apis::{Network, Node, Service, Task};
use dctl_e2e::cluster::{Cluster, Container};

const CONVERGE: Duration = Duration::from_secs(60);

/// A replicated service of the test image in namespace `e2e`.
fn service(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: {name}, namespace: e2e}}
spec:
  replicas: {replicas}
  template:
    image: dctl-test/server:1
    ports: [{{name: http, containerPort: 8080}}]
    stopGracePeriod: 2s
{extra}"
    )
}

#[tokio::test]
async fn apply_scale_and_delete_converge_the_containers() {
    let mut cluster = Cluster::start("apply-scale").await;
    cluster.start_agent("n1", &[]);
    cluster.apply("web.yaml", &service("web", 3, "")).await;
    cluster.running(Some("web"), 3, CONVERGE).await;
    wait_until_ready(&cluster, "web", 3).await;

    cluster
        .env
        .dctl(&["scale", "service/web=5", "-n", "e2e"])
        .await
        .success();
    cluster.running(Some("web"), 5, CONVERGE).await;
    cluster
        .env
        .dctl(&["scale", "service/web=1", "-n", "e2e"])
        .await
        .success();
    cluster.running(Some("web"), 1, CONVERGE).await;

    cluster
        .env
        .dctl(&["delete", "svc", "web", "-n", "e2e"])
        .await
        .success();
    cluster.running(Some("web"), 0, CONVERGE).await;
    cluster
        .wait_for("the tasks to be deleted", CONVERGE, || async {
            cluster.tasks("e2e").await.is_empty().then_some(())
        })
        .await;
}

/// A cluster of one node, `n1`, running service `web` with 2 replicas (restart delay
/// 500 ms): the cluster, the node's name and the two containers.
async fn two_web_replicas_on_n1(test_name: &str) -> (Cluster, String, Vec<Container>) {
    let mut cluster = Cluster::start(test_name).await;
    let node = cluster.start_agent("n1", &[]);
    let web = service("web", 2, "    restartPolicy: {delay: 500ms}\n");
    cluster.apply("web.yaml", &web).await;
    let containers = cluster.running(Some("web"), 2, CONVERGE).await;
    (cluster, node, containers)
}

/// `docker rm -f`, as an operator would.
fn remove_by_hand(container: &Container) {
    std::process::Command::new("docker")
        .args(["rm", "-f", &container.id])
        .output()
        .unwrap();
}

#[tokio::test]
async fn a_container_removed_by_hand_is_replaced_and_a_restarted_agent_adopts_its_own() {
    let (mut cluster, node, before) = two_web_replicas_on_n1("replace-adopt").await;
    remove_by_hand(&before[0]);
    let after = cluster
        .wait_for("a replacement container", CONVERGE, || async {
            let now = running_now(&cluster, "web");
            (now.len() == 2 && !now.iter().any(|c| c.id == before[0].id)).then_some(now)
        })
        .await;
    let failed: Vec<Task> = cluster
        .tasks("e2e")
        .await
        .into_iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.state == TaskState::Failed)
        })
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the removed container's task failed and stays as history"
    );

    // A crashed agent comes back: it adopts its containers instead of starting new ones.
    cluster.kill_agent(&node).await;
    cluster.start_agent("n1", &[]);
    tokio::time::sleep(Duration::from_secs(12)).await; // longer than the agent's resync
    let mut ids: Vec<String> = running_now(&cluster, "web")
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut expected: Vec<String> = after.into_iter().map(|c| c.id).collect();
    ids.sort();
    expected.sort();
    assert_eq!(
        ids,
        expected,
        "no duplicate and no replaced container\n{}",
        cluster.logs()
    );
}

/// etcd goes away under a running cluster while a container is removed by hand: the
/// daemons say so and retry, the CLI fails with one line, and once etcd is back the
/// missing task is replaced: two containers, two running tasks, none doubled.
#[tokio::test]
async fn an_etcd_outage_is_ridden_out_and_the_cluster_converges_without_duplicates() {
    let (mut cluster, _node, before) = two_web_replicas_on_n1("etcd-outage").await;
    cluster.env.etcd.kill().await;
    remove_by_hand(&before[0]);
    let refused = cluster.env.dctl(&["get", "svc", "-n", "e2e"]).await;
    assert_eq!(refused.code, 6, "{refused:#?}");
    assert!(refused.stderr.contains("cannot reach etcd"), "{refused:#?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster
        .env
        .etcd
        .restart()
        .await
        .expect("etcd restarts on its data");

    let after = cluster
        .wait_for("a replacement container", CONVERGE, || async {
            let now = running_now(&cluster, "web");
            (now.len() == 2 && !now.iter().any(|c| c.id == before[0].id)).then_some(now)
        })
        .await;
    wait_until_ready(&cluster, "web", 2).await;
    // Settled: nothing more starts, and each running task has a slot of its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running_now(&cluster, "web").len(), 2, "{}", cluster.logs());
    let tasks = cluster.tasks("e2e").await;
    let mut slots: Vec<u32> = tasks
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.state == TaskState::Running)
        })
        .filter_map(|t| t.spec.slot)
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2], "{tasks:#?}");
    let running_ids: Vec<String> = tasks
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.state == TaskState::Running)
        })
        .filter_map(|t| t.status.as_ref()?.container_id.clone())
        .collect();
    for container in &after {
        // `docker ps` shows the short id, the status the full one.
        let has_task = running_ids.iter().any(|id| id.starts_with(&container.id));
        assert!(
            has_task,
            "{} has no running task: {running_ids:?}",
            container.id
        );
    }
    let logs = cluster.logs();
    assert!(
        logs.contains("cannot reach etcd"),
        "the outage was said:\n{logs}"
    );
}

fn running_now(cluster: &Cluster, service: &str) -> Vec<Container> {
    cluster
        .containers()
        .into_iter()
        .filter(|c| c.service == service)
        .collect()
}

#[tokio::test]
async fn constraints_and_spread_hold_across_two_nodes_and_drain_moves_tasks() {
    let mut cluster = Cluster::start("placement").await;
    let front = cluster.start_agent("front", &[("tier", "frontend"), ("zone", "a")]);
    let back = cluster.start_agent("back", &[("zone", "b")]);
    cluster
        .wait_for("both nodes ready", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "nodes"]).await;
            (out.stdout.matches(" Ready ").count() == 2).then_some(())
        })
        .await;

    let constrained = "  placement:\n    constraints: [\"node.labels.tier == frontend\"]\n";
    cluster
        .apply("fe.yaml", &service("fe", 2, constrained))
        .await;
    cluster
        .apply("spread.yaml", &service("spread", 4, ""))
        .await;
    let fe = cluster.running(Some("fe"), 2, CONVERGE).await;
    assert!(fe.iter().all(|c| c.node == front), "{fe:?}");
    let spread = cluster.running(Some("spread"), 4, CONVERGE).await;
    let on_front = spread.iter().filter(|c| c.node == front).count();
    assert_eq!(on_front, 2, "4 replicas spread 2/2: {spread:?}");

    cluster
        .env
        .dctl(&["node", "update", "--availability", "drain", &front])
        .await
        .success();
    cluster
        .wait_for("spread's tasks all on the other node", CONVERGE, || async {
            let now = running_now(&cluster, "spread");
            (now.len() == 4 && now.iter().all(|c| c.node == back)).then_some(())
        })
        .await;
    // fe can run nowhere else: its tasks wait, saying why.
    cluster
        .wait_for("fe pending with the reason", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "tasks", "-n", "e2e"]).await;
            out.stdout
                .lines()
                .any(|l| l.starts_with("fe.") && l.contains("0/2 nodes are available"))
                .then_some(())
        })
        .await;
    let node: Node = cluster.env.store().await.get("", &front).await.unwrap();
    assert_eq!(node.spec.availability, NodeAvailability::Drain);
}

#[tokio::test]
async fn a_constraint_no_node_meets_leaves_the_task_pending_with_the_reason() {
    let mut cluster = Cluster::start("pending").await;
    cluster.start_agent("n1", &[("tier", "web")]);
    let constrained = "  placement:\n    constraints: [\"node.labels.tier == db\"]\n";
    cluster
        .apply("db.yaml", &service("db", 1, constrained))
        .await;
    let line = cluster
        .wait_for("the pending explanation", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "tasks", "-n", "e2e"]).await;
            // The final explanation: while the node registers it may first read "not ready".
            out.stdout
                .lines()
                .find(|l| l.starts_with("db.1."))
                .filter(|l| l.contains("pending") && l.contains("lacks"))
                .map(str::to_string)
        })
        .await;
    assert!(
        line.contains("0/1 nodes are available: 1 node lacks node.labels.tier == db"),
        "{line}"
    );
    let describe = cluster
        .env
        .dctl(&[
            "describe",
            "task",
            line.split_whitespace().next().unwrap(),
            "-n",
            "e2e",
        ])
        .await
        .success();
    assert!(
        describe.stdout.contains("FailedScheduling"),
        "{}",
        describe.stdout
    );

    // A platform no node is (Swarm's placement.platforms, compose's `platform`).
    let windows = "  placement:\n    platforms: [{os: windows}]\n";
    cluster.apply("win.yaml", &service("win", 1, windows)).await;
    cluster
        .wait_for("the platform explanation", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "tasks", "-n", "e2e"]).await;
            out.stdout
                .lines()
                .any(|l| {
                    l.starts_with("win.1.")
                        && l.contains("0/1 nodes are available: 1 node is not windows/*")
                })
                .then_some(())
        })
        .await;
}

/// Swarm's host mode: the task's node binds the published port itself, straight to the
/// container (no proxy), and a second task needing that port waits for a node where it is
/// free, saying so.
#[tokio::test]
async fn a_host_mode_port_is_bound_on_the_tasks_node_and_keeps_a_second_task_off_it() {
    let mut cluster = Cluster::start("host-port").await;
    cluster.start_agent("n1", &[]);
    let port = dctl_e2e::load::free_port();
    let publish = format!("  publish:\n    - {{port: {port}, targetPort: http, mode: host}}\n");
    cluster
        .apply("edge.yaml", &service("edge", 2, &publish))
        .await;
    let running = cluster.running(Some("edge"), 1, CONVERGE).await;
    let in_use = format!("0/1 nodes are available: 1 node has host port {port}/tcp in use");
    cluster
        .wait_for(
            "the second task pending with the reason",
            CONVERGE,
            || async {
                let out = cluster.env.dctl(&["get", "tasks", "-n", "e2e"]).await;
                out.stdout
                    .lines()
                    .any(|l| l.starts_with("edge.") && l.contains("pending") && l.contains(&in_use))
                    .then_some(())
            },
        )
        .await;
    let answer = dctl_e2e::load::get_once(port).await;
    assert_eq!(answer.map(|a| a.task), Ok(running[0].task.clone()));

    // Scaling down takes the task that does not run; the one that does keeps its port.
    cluster
        .env
        .dctl(&["scale", "edge=1", "-n", "e2e"])
        .await
        .success();
    cluster
        .wait_for("no pending task left", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "tasks", "-n", "e2e"]).await;
            (!out.stdout.contains("pending")).then_some(())
        })
        .await;
    assert_eq!(cluster.running(Some("edge"), 1, CONVERGE).await, running);

    // An update (stop-first, the default) frees the port before the new task takes it.
    let v2 = format!("    env: [{{name: VERSION, value: \"2\"}}]\n{publish}");
    cluster.apply("edge.yaml", &service("edge", 1, &v2)).await;
    let answer = cluster
        .wait_for("version 2 answering on the host port", CONVERGE, || async {
            let answer = dctl_e2e::load::get_once(port).await.ok()?;
            (answer.version == "2").then_some(answer)
        })
        .await;
    assert_ne!(answer.task, running[0].task);
}

#[tokio::test]
async fn on_failure_with_max_attempts_3_replaces_exactly_3_times() {
    let mut cluster = Cluster::start("max-attempts").await;
    cluster.start_agent("n1", &[]);
    let crashing = "    env: [{name: CRASH_AFTER, value: 1s}]\n    restartPolicy: {condition: on-failure, delay: 200ms, maxAttempts: 3}\n";
    cluster
        .apply("crash.yaml", &service("crash", 1, crashing))
        .await;
    cluster
        .wait_for("four failed tasks", Duration::from_secs(90), || async {
            let failed = cluster
                .tasks("e2e")
                .await
                .iter()
                .filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.state == TaskState::Failed)
                })
                .count();
            (failed == 4).then_some(())
        })
        .await;
    // Past the longest backoff the policy could still wait: no fifth task comes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = cluster.tasks("e2e").await;
    assert_eq!(
        all.len(),
        4,
        "the first task and exactly 3 replacements: {:#?}",
        names(&all)
    );
    assert!(running_now(&cluster, "crash").is_empty());
}

fn names(tasks: &[Task]) -> Vec<String> {
    tasks.iter().map(|t| t.metadata.name.clone()).collect()
}

#[tokio::test]
async fn overlapping_subnets_are_refused_with_a_condition() {
    let mut cluster = Cluster::start("subnets").await;
    cluster.start_agent("n1", &[]);
    let networks = "apiVersion: dctl/v1
kind: Network
metadata: {name: first, namespace: e2e}
spec: {subnet: 10.231.0.0/16}
---
apiVersion: dctl/v1
kind: Network
metadata: {name: second, namespace: e2e}
spec: {subnet: 10.231.7.0/24}
";
    cluster.apply("nets.yaml", networks).await;
    let store = cluster.env.store().await;
    let message = cluster
        .wait_for("the overlap condition", CONVERGE, || async {
            let second: Network = store.get("e2e", "second").await.ok()?;
            let ready = second
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == "SubnetOverlap").then_some(ready.message)
        })
        .await;
    assert!(message.contains("e2e/first"), "{message}");
    let table = cluster
        .env
        .dctl(&["get", "networks", "-n", "e2e"])
        .await
        .success();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("second") && l.contains("False")),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn a_silent_node_has_its_tasks_replaced_and_a_standby_manager_takes_over() {
    let mut cluster = Cluster::start("failover").await;
    cluster.start_manager(); // a standby
    let n1 = cluster.start_agent("n1", &[]);
    let n2 = cluster.start_agent("n2", &[]);
    cluster
        .wait_for("both nodes ready", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "nodes"]).await;
            (out.stdout.matches(" Ready ").count() == 2).then_some(())
        })
        .await;

    // The leader dies; the standby must do the work from here on.
    cluster.managers[0].kill().await;
    cluster.apply("web.yaml", &service("web", 2, "")).await;
    let placed = cluster.running(Some("web"), 2, CONVERGE).await;
    assert_eq!(
        placed.iter().filter(|c| c.node == n1).count(),
        1,
        "{placed:?}"
    );

    // n1's agent dies (its container keeps running, as on a partitioned host): after the
    // heartbeat TTL and the grace period its task runs on n2.
    cluster.kill_agent(&n1).await;
    cluster
        .wait_for(
            "web running twice on n2",
            Duration::from_secs(90),
            || async {
                let on_n2 = running_now(&cluster, "web")
                    .into_iter()
                    .filter(|c| c.node == n2)
                    .count();
                (on_n2 == 2).then_some(())
            },
        )
        .await;
    // n1 comes back: the task that was replaced is stopped there.
    cluster.start_agent("n1", &[]);
    cluster
        .wait_for("n1's stale container stopped", CONVERGE, || async {
            let on_n1 = running_now(&cluster, "web")
                .into_iter()
                .filter(|c| c.node == n1)
                .count();
            (on_n1 == 0).then_some(())
        })
        .await;
    let service: Service = cluster.env.store().await.get("e2e", "web").await.unwrap();
    assert_eq!(service.status.unwrap().ready_replicas, 2);
}

/// One HTTP GET from the host to a task's address (the host routes to bridge networks).
async fn http_get(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(format!("{address}:8080"));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(response)
}

#[tokio::test]
async fn tasks_reach_each_other_by_service_name_on_a_shared_network() {
    let mut cluster = Cluster::start("dns").await;
    cluster.start_agent("n1", &[]);
    let manifests = format!(
        "apiVersion: dctl/v1
kind: Network
metadata: {{name: shared, namespace: e2e}}
spec: {{driver: bridge}}
---
{}---
{}",
        service("api", 1, "    networks: [{name: shared}]\n"),
        service(
            "web",
            1,
            "    args: [--upstream, 'http://api:8080']\n    networks: [{name: shared, aliases: [front]}]\n"
        )
    );
    cluster.apply("app.yaml", &manifests).await;
    cluster.running(Some("api"), 1, CONVERGE).await;
    cluster.running(Some("web"), 1, CONVERGE).await;
    let web_address = cluster
        .wait_for("web's address", CONVERGE, || async {
            let web = cluster
                .tasks("e2e")
                .await
                .into_iter()
                .find(|t| t.spec.service_name == "web")?;
            web.status?
                .addresses
                .first()
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
        })
        .await;
    let answer = cluster
        .wait_for("web to reach api by its service name", CONVERGE, || async {
            let response = http_get(&web_address, "/upstream").await?;
            response.contains("hello from api.1.").then_some(response)
        })
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_task_failing_its_liveness_probe_is_killed_and_replaced_with_its_restart_count() {
    let mut cluster = Cluster::start("liveness").await;
    cluster.start_agent("n1", &[]);
    // Probes on a named port, with the tcp and http handlers.
    let probes = "    restartPolicy: {delay: 200ms}
    probes:
      liveness: {httpGet: {path: /healthz, port: http}, periodSeconds: 1, failureThreshold: 2}
      readiness: {tcpSocket: {port: http}, periodSeconds: 1}
";
    cluster
        .apply("live.yaml", &service("live", 1, probes))
        .await;
    let first = cluster.running(Some("live"), 1, CONVERGE).await.remove(0);
    let address = cluster
        .wait_for("the task ready with an address", CONVERGE, || async {
            let task = cluster.tasks("e2e").await.into_iter().next()?;
            let status = task.status?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == dctl_apis::ConditionStatus::True);
            let address = status.addresses.first()?.split('/').next()?.to_string();
            ready.then_some(address)
        })
        .await;
    let failed = http_post(&address, "/healthz/fail").await;
    assert!(failed.is_some(), "the test server takes the switch");

    let replacement = cluster
        .wait_for("a replacement task running", CONVERGE, || async {
            let all = cluster.tasks("e2e").await;
            let old = all.iter().find(|t| t.metadata.name == first.task)?;
            let old_status = old.status.as_ref()?;
            if old_status.state != TaskState::Failed {
                return None;
            }
            all.into_iter().find(|t| {
                t.metadata.name != first.task
                    && t.spec.slot == Some(1)
                    && t.status
                        .as_ref()
                        .is_some_and(|s| s.state == TaskState::Running)
            })
        })
        .await;
    assert_eq!(replacement.status.as_ref().unwrap().restart_count, 1);
    let wide = cluster
        .env
        .dctl(&["get", "tasks", "-n", "e2e", "-o", "wide"])
        .await
        .success();
    let row = wide
        .stdout
        .lines()
        .find(|l| l.starts_with(&replacement.metadata.name))
        .unwrap_or_default()
        .to_string();
    let header: Vec<&str> = wide
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let restarts = header.iter().position(|h| *h == "RESTARTS").unwrap();
    assert_eq!(
        row.split_whitespace().nth(restarts),
        Some("1"),
        "{}",
        wide.stdout
    );
    let describe = cluster
        .env
        .dctl(&["describe", "task", &first.task, "-n", "e2e"])
        .await
        .success();
    assert!(
        describe.stdout.contains("Liveness probe failed"),
        "{}",
        describe.stdout
    );
}

/// The object-size limit (512 KiB as JSON) leaves etcd room to spare: a Service just under
/// it applies, and its Tasks, each a copy of the template written with its node's
/// assignment in one transaction, are stored, run and get Ready. Just over it, `dctl
/// apply` refuses it before anything is written and names the field that holds the bytes.
#[tokio::test]
async fn a_service_just_under_the_size_limit_runs_and_one_over_is_refused() {
    let mut cluster = Cluster::start("size-limit").await;
    cluster.start_agent("n1", &[]);
    // Environment strings of 120,000 bytes each: exec takes at most 128 KiB per string.
    let padded = |strings: usize| {
        let env: Vec<String> = (0..strings)
            .map(|i| format!("{{name: PAD{i}, value: {}}}", "x".repeat(120_000)))
            .collect();
        service("big", 2, &format!("    env: [{}]\n", env.join(", ")))
    };

    let over = cluster.env.write("over.yaml", &padded(5));
    let refused = cluster
        .env
        .dctl(&["apply", "-f", over.to_str().unwrap()])
        .await;
    assert_eq!(refused.code, 3, "{refused:#?}");
    for expected in ["over.yaml", "spec.template.env", "more than the 524288"] {
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
    }
    let store = cluster.env.store().await;
    let services = store.list::<Service>(None).await.unwrap();
    assert!(services.items.is_empty(), "written: {:?}", services.items);

    cluster.apply("under.yaml", &padded(4)).await;
    cluster.running(Some("big"), 2, CONVERGE).await;
    wait_until_ready(&cluster, "big", 2).await;
    for task in cluster.tasks("e2e").await {
        let stored = serde_json::to_vec(&task).unwrap().len();
        assert!(stored > 480_000, "{} is {stored} bytes", task.metadata.name);
    }
}

/// Waits until `dctl get svc` shows all `replicas` of service `name` Ready.
async fn wait_until_ready(cluster: &Cluster, name: &str, replicas: u32) {
    let ready = format!("{replicas}/{replicas}");
    cluster
        .wait_for(&format!("READY {ready}"), CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "svc", name, "-n", "e2e"]).await;
            out.stdout.contains(&ready).then_some(())
        })
        .await;
}

async fn http_post(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(format!("{address}:8080"))
        .await
        .ok()?;
    let request = format!("POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}
