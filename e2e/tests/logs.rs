//! `dctl logs` end to end: the CLI reads task output from the agent's log endpoint, which
//! reads it from Docker; a real etcd, a real engine, the test image.

use std::time::Duration;

use dctl_apis::task::TaskState;
use dctl_apis::{Node, Task};
use dctl_e2e::cluster::Cluster;

const CONVERGE: Duration = Duration::from_secs(60);

/// What the test server prints when it starts.
const STARTED: &str = "listening on :8080";

const WEB: &str = "apiVersion: dctl/v1
kind: Service
metadata: {name: web, namespace: e2e}
spec:
  replicas: 2
  template:
    image: dctl-test/server:1
    ports: [{name: http, containerPort: 8080}]
    stopGracePeriod: 2s
";

/// The service's running tasks, once both have an address and a container.
async fn running_tasks(cluster: &Cluster) -> Vec<Task> {
    cluster
        .wait_for("2 running tasks with addresses", CONVERGE, || async {
            let tasks: Vec<Task> = cluster
                .env
                .store()
                .await
                .list::<Task>(Some("e2e"))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.state == TaskState::Running && !s.addresses.is_empty())
                })
                .collect();
            (tasks.len() == 2).then_some(tasks)
        })
        .await
}

/// The task's first address, without a prefix length.
fn address(task: &Task) -> String {
    let status = task.status.as_ref().expect("a running task has a status");
    let first = &status.addresses[0];
    first.split('/').next().unwrap_or(first).to_string()
}

/// One HTTP GET to `host:port`: to a task (the host routes to Docker's bridge; the test
/// server logs it) or to an agent.
async fn http_get(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(address);
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
async fn logs_of_a_service_and_of_a_task_come_from_the_agent() {
    let mut cluster = Cluster::start("logs").await;
    let node = cluster.start_agent("n1", &[]);
    let path = cluster.env.write("web.yaml", WEB);
    cluster
        .env
        .dctl(&["apply", "-f", path.to_str().unwrap()])
        .await
        .success();
    let tasks = running_tasks(&cluster).await;
    let advertised = cluster
        .wait_for("the node to advertise its agent", CONVERGE, || async {
            let node: Node = cluster.env.store().await.get("", &node).await.ok()?;
            node.status?.agent_address
        })
        .await;
    assert!(advertised.starts_with("127.0.0.1:"), "{advertised}");
    // Without the cluster's token (dctl reads it from etcd) the agent shows no log.
    let path = format!("/v1/logs/e2e/{}", tasks[0].metadata.name);
    let refused = http_get(&advertised, &path).await.unwrap_or_default();
    assert!(refused.contains(" 401 Unauthorized\r\n"), "{refused}");

    // Every task's lines, each behind Swarm's `task@node    | ` prefix.
    let prefixes: Vec<String> = tasks
        .iter()
        .map(|t| format!("{}@{node}    | ", t.metadata.name))
        .collect();
    let out = cluster
        .wait_for("both tasks' startup lines", CONVERGE, || async {
            let out = cluster
                .env
                .dctl(&["logs", "service/web", "-n", "e2e"])
                .await
                .success();
            let started = |prefix: &String| {
                out.stdout
                    .lines()
                    .any(|l| l.starts_with(prefix.as_str()) && l.contains(STARTED))
            };
            prefixes.iter().all(started).then_some(out)
        })
        .await;
    for line in out.stdout.lines() {
        assert!(
            prefixes.iter().any(|p| line.starts_with(p.as_str())),
            "{line:?} lacks a task prefix"
        );
    }

    // One task, unprefixed: with a request logged after its start, --tail 1 is that line.
    let first = &tasks[0];
    let answer = http_get(&format!("{}:8080", address(first)), "/?marker=tail").await;
    assert!(answer.is_some_and(|a| a.contains("hello from")));
    let task = format!("task/{}", first.metadata.name);
    let out = cluster
        .wait_for("the request in the task's log", CONVERGE, || async {
            let out = cluster
                .env
                .dctl(&["logs", &task, "--tail", "1", "-n", "e2e"])
                .await
                .success();
            out.stdout.contains("marker=tail").then_some(out)
        })
        .await;
    assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
    assert!(
        out.stdout.starts_with("GET /?marker=tail 200 from "),
        "{out:#?}"
    );
    let all = cluster
        .env
        .dctl(&["logs", &task, "-n", "e2e"])
        .await
        .success();
    assert!(all.stdout.contains(STARTED) && all.stdout.lines().count() >= 2);

    // Followed: a request made now shows up, prefixed, while dctl keeps running.
    let mut follow = cluster
        .env
        .spawn_dctl(&["logs", "service/web", "-f", "-n", "e2e"]);
    follow.read_until(STARTED, CONVERGE).await;
    let second = &tasks[1];
    assert!(
        http_get(&format!("{}:8080", address(second)), "/?marker=follow")
            .await
            .is_some()
    );
    let lines = follow.read_until("marker=follow", CONVERGE).await;
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "{}@{node}    | GET /?marker=follow 200",
            second.metadata.name
        )),
        "{lines:#?}"
    );

    // A task that starts while the service is followed joins, lined up with the others,
    // as in `docker service logs -f`.
    cluster
        .env
        .dctl(&["scale", "service/web=3", "-n", "e2e"])
        .await
        .success();
    // The other tasks' older lines may still be arriving (each task's stream is its own),
    // an earlier startup line among them: wait for web.3's.
    let joined = loop {
        let lines = follow.read_until(STARTED, CONVERGE).await;
        let last = lines.last().unwrap().clone();
        if last.starts_with("web.3.") {
            break last;
        }
    };
    assert!(joined.contains(&format!("@{node}    | ")), "{joined}");
    follow.stop().await;

    // Deleting a followed service ends the follow, once its containers' logs end.
    let api = cluster
        .env
        .write("api.yaml", &WEB.replace("name: web", "name: api"));
    cluster
        .env
        .dctl(&["apply", "-f", api.to_str().unwrap()])
        .await
        .success();
    let mut follow = cluster
        .env
        .spawn_dctl(&["logs", "service/api", "-f", "-n", "e2e"]);
    follow.read_until(STARTED, CONVERGE).await;
    cluster
        .env
        .dctl(&["delete", "service", "api", "-n", "e2e"])
        .await
        .success();
    let ended = follow.exit(CONVERGE).await;
    assert_eq!(ended.code, 0, "{ended:#?}");

    // Unknown names are exit 4, with kubectl's wording.
    let missing = cluster
        .env
        .dctl(&["logs", "service/nope", "-n", "e2e"])
        .await;
    assert_eq!(missing.code, 4, "{missing:#?}");
    assert!(
        missing.stderr.contains("service \"nope\" not found"),
        "{missing:#?}"
    );
    let missing = cluster
        .env
        .dctl(&["logs", "task/web.9.zzzzz", "-n", "e2e"])
        .await;
    assert_eq!(missing.code, 4, "{missing:#?}");
    assert!(missing.stderr.contains("task \"web.9.zzzzz\" not found"));

    // The agent gone: each task fails on its own line naming the node and address, exit 1.
    cluster.kill_agent(&node).await;
    let out = cluster
        .env
        .dctl(&["logs", "service/web", "-n", "e2e"])
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    for task in &tasks {
        let line = format!(
            "error: cannot read the log of task {} from node {node}: cannot reach the agent at {advertised}",
            task.metadata.name
        );
        assert!(out.stderr.contains(&line), "{line:?} missing: {out:#?}");
    }
}
