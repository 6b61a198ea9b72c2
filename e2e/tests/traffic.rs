//! Traffic through the proxy on real Docker: readiness gates it, scaling does not drop a
//! request, and without the gate (the experiment switch) requests fail.
//!
//! One agent runs the proxy, bound to 127.0.0.1 on a free port; the other runs none
//! (`--no-proxy`), so its tasks are reached across nodes through their host ports. The
//! client load is a few concurrent loops of short HTTP/1.0 GETs on loopback, bounded in
//! time and count; `GET /` of the test server names the task that answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dctl_apis::{Endpoints, Task};
use dctl_e2e::cluster::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const CONVERGE: Duration = Duration::from_secs(90);
/// Concurrent client loops.
const CLIENTS: usize = 4;
/// Pause between two requests of one loop.
const PACE: Duration = Duration::from_millis(20);
/// No loop sends more than this many requests.
const MAX_REQUESTS: u64 = 20_000;

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A cluster of two nodes: `n1` runs the proxy on 127.0.0.1, `n2` none.
async fn cluster(name: &str) -> Cluster {
    let mut cluster = Cluster::start(name).await;
    cluster.start_agent_with("n1", &["--proxy-bind", "127.0.0.1"]);
    cluster.start_agent_with("n2", &["--no-proxy"]);
    cluster
}

/// A service of the test image, slow to start, with a readiness probe, published on
/// `port`.
fn service(name: &str, replicas: u32, port: u16, annotations: &str, env: &str) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: {name}, namespace: e2e, annotations: {{{annotations}}}}}
spec:
  replicas: {replicas}
  template:
    image: dctl-test/server:1
    env: [{env}]
    ports: [{{name: http, containerPort: 8080}}]
    stopGracePeriod: 2s
    probes:
      readiness: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
  publish:
    - {{port: {port}, targetPort: http}}
"
    )
}

async fn apply(cluster: &Cluster, file: &str, yaml: &str) {
    let path = cluster.env.write(file, yaml);
    cluster
        .env
        .dctl(&["apply", "-f", path.to_str().unwrap()])
        .await
        .success();
}

async fn scale(cluster: &Cluster, service: &str, replicas: u32) {
    let target = format!("{service}={replicas}");
    cluster
        .env
        .dctl(&["scale", &target, "-n", "e2e"])
        .await
        .success();
}

async fn endpoints(cluster: &Cluster, service: &str) -> Option<Endpoints> {
    let store = cluster.env.store().await;
    store
        .try_get::<Endpoints>("e2e", service)
        .await
        .ok()
        .flatten()
}

/// Waits until the service's Endpoints list exactly `n` endpoints, all ready.
async fn wait_ready(cluster: &Cluster, service: &str, n: usize) -> Endpoints {
    cluster
        .wait_for(
            &format!("{n} ready endpoints of {service}"),
            CONVERGE,
            || async {
                let endpoints = endpoints(cluster, service).await?;
                let list = &endpoints.spec.endpoints;
                (list.len() == n && list.iter().all(|e| e.ready)).then_some(endpoints)
            },
        )
        .await
}

/// One `GET /` through the proxy: the name of the task that answered, or what failed.
async fn get_once(port: u16) -> Result<String, String> {
    let request = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        if !text.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {:?}", text.lines().next().unwrap_or("")));
        }
        // `hello from <task> version 1`
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        body.split_whitespace()
            .nth(2)
            .map(ToString::to_string)
            .ok_or_else(|| format!("body: {body:?}"))
    };
    tokio::time::timeout(Duration::from_secs(3), request)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// `POST <path>` straight to a task's container (not through the proxy).
async fn post(address: &str, path: &str) {
    let mut stream = TcpStream::connect((address, 8080)).await.unwrap();
    let request = format!("POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{path}");
}

/// What the client loops saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    by_task: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn by_task(&self) -> BTreeMap<String, u64> {
        self.by_task.lock().unwrap().clone()
    }
}

/// Client loops running until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    loops: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let loops = (0..CLIENTS)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                tokio::spawn(async move {
                    for _ in 0..MAX_REQUESTS {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match get_once(port).await {
                            Ok(task) => {
                                tally.ok.fetch_add(1, Ordering::SeqCst);
                                *tally.by_task.lock().unwrap().entry(task).or_default() += 1;
                            }
                            Err(error) => {
                                tally.failed.fetch_add(1, Ordering::SeqCst);
                                *tally.errors.lock().unwrap().entry(error).or_default() += 1;
                            }
                        }
                        tokio::time::sleep(PACE).await;
                    }
                })
            })
            .collect();
        Load { stop, tally, loops }
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.loops {
            handle.await.unwrap();
        }
        self.tally
    }
}

/// Scales `web` 1 → 3 → 1 under load; returns what the clients saw.
async fn scale_under_load(cluster: &Cluster, port: u16, annotations: &str) -> Arc<Tally> {
    let env = "{name: STARTUP_DELAY, value: 3s}";
    apply(
        cluster,
        "web.yaml",
        &service("web", 1, port, annotations, env),
    )
    .await;
    wait_ready(cluster, "web", 1).await;
    cluster
        .wait_for("web to answer through the proxy", CONVERGE, || async {
            get_once(port).await.ok()
        })
        .await;

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    scale(cluster, "web", 3).await;
    wait_ready(cluster, "web", 3).await;
    // Past the new tasks' startup delay, whether or not anything waited for it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    scale(cluster, "web", 1).await;
    wait_ready(cluster, "web", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    eprintln!(
        "{annotations:?}: ok {} failed {} by task {:?} errors {:?}",
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        tally.by_task(),
        tally.errors.lock().unwrap()
    );
    tally
}

#[tokio::test]
async fn scaling_under_load_drops_no_request() {
    let cluster = cluster("traffic-gated").await;
    let port = free_port();
    let tally = scale_under_load(&cluster, port, "").await;
    let (ok, failed) = (
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
    );
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}\n{}",
        tally.errors.lock().unwrap(),
        cluster.logs()
    );
    assert!(ok > 200, "only {ok} requests answered");
    // Round robin reached all three replicas, on both nodes.
    assert_eq!(tally.by_task().len(), 3, "{:?}", tally.by_task());
}

#[tokio::test]
async fn without_readiness_gating_scaling_drops_requests() {
    let cluster = cluster("traffic-ungated").await;
    let port = free_port();
    let annotations = "dctl.io/readiness-gating: \"off\"";
    let tally = scale_under_load(&cluster, port, annotations).await;
    let failed = tally.failed.load(Ordering::SeqCst);
    assert!(
        failed > 0,
        "with readiness gating off, tasks take traffic before they listen: expected \
         failures, got none ({} ok)",
        tally.ok.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_task_that_is_not_ready_gets_no_traffic_and_is_not_restarted() {
    let cluster = cluster("traffic-readiness").await;
    let (port, idle_port) = (free_port(), free_port());
    apply(&cluster, "web.yaml", &service("web", 3, port, "", "")).await;
    let never_ready = "{name: READY, value: \"false\"}";
    let idle = service("idle", 1, idle_port, "", never_ready);
    apply(&cluster, "idle.yaml", &idle).await;
    let ready = wait_ready(&cluster, "web", 3).await;

    // No Ready endpoint: refused at once, not left hanging.
    let node = cluster.node("n1");
    cluster
        .wait_for(
            "the proxy to observe idle's endpoints",
            CONVERGE,
            || async {
                let endpoints = endpoints(&cluster, "idle").await?;
                (endpoints.spec.endpoints.len() == 1).then_some(())?;
                let key = format!("/dctl/v1/proxy-observed/{node}/e2e/idle");
                let mut client = cluster.env.store().await.client();
                let seen = client.get(key, None).await.ok()?;
                let seen: i64 = seen.kvs().first()?.value_str().ok()?.parse().ok()?;
                (seen >= endpoints.metadata.resource_version?).then_some(())
            },
        )
        .await;
    let started = Instant::now();
    let refused = get_once(idle_port).await;
    let took = started.elapsed();
    assert!(refused.is_err(), "{refused:?}");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    eprintln!("no ready endpoint: {refused:?} after {took:?}");

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = ready.spec.endpoints[0].task.clone();
    let store = cluster.env.store().await;
    let task: Task = store.get("e2e", &victim).await.unwrap();
    let status = task.status.clone().unwrap();
    let address = status.addresses[0].clone();
    let container = status.container_id.clone();

    post(&address, "/ready/fail").await;
    let failed_at = Instant::now();
    cluster
        .wait_for("the victim out of the endpoints", CONVERGE, || async {
            let endpoints = endpoints(&cluster, "web").await?;
            let entry = endpoints.spec.endpoints.iter().find(|e| e.task == victim)?;
            (!entry.ready).then_some(())
        })
        .await;
    let out_after = failed_at.elapsed();
    // period 1 s × failureThreshold 3, plus a bound for the writes and the watches.
    assert!(
        out_after < Duration::from_secs(5),
        "out of traffic after {out_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally_of(&load, &victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = tally_of(&load, &victim) - before;
    assert_eq!(during, 0, "the not-ready task still got {during} requests");
    assert!(load.tally.by_task().len() >= 2);

    // Alive, not restarted: the same task runs the same container.
    let task: Task = store.get("e2e", &victim).await.unwrap();
    let status = task.status.unwrap();
    assert_eq!(status.state, dctl_apis::TaskState::Running);
    assert_eq!(status.container_id, container);

    post(&address, "/ready/ok").await;
    wait_ready(&cluster, "web", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally_of(&load, &victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = tally_of(&load, &victim) - before;
    assert!(after > 0, "the task got no traffic back once ready again");

    let tally = load.stop().await;
    eprintln!(
        "readiness flip: out of traffic after {out_after:?}; ok {} failed {} by task {:?}",
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        tally.by_task()
    );
    assert_eq!(
        tally.failed.load(Ordering::SeqCst),
        0,
        "{:?}",
        tally.errors.lock().unwrap()
    );
}

fn tally_of(load: &Load, task: &str) -> u64 {
    load.tally.by_task().get(task).copied().unwrap_or_default()
}
