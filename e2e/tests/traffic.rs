//! Traffic through the proxy on real Docker: readiness gates it, scaling does not drop a
//! request, and without the gate (the experiment switch) requests fail.
//!
//! One agent runs the proxy, bound to 127.0.0.1 on a free port; the other runs none
//! (`--no-proxy`), so its tasks are reached across nodes through their host ports. The
//! client load is a few concurrent loops of short HTTP/1.0 GETs on loopback, bounded in
//! time and count; `GET /` of the test server names the task that answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dctl_apis::{Endpoints, Task};
use dctl_e2e::cluster::Cluster;
use dctl_e2e::load::{free_port, get_once, post, Load, Tally};

const CONVERGE: Duration = Duration::from_secs(90);

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
        tally.errors()
    );
    tally
}

#[tokio::test]
async fn scaling_under_load_drops_no_request() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-gated").await;
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
        tally.errors(),
        cluster.logs()
    );
    assert!(ok > 200, "only {ok} requests answered");
    // Round robin reached all three replicas, on both nodes.
    assert_eq!(tally.by_task().len(), 3, "{:?}", tally.by_task());
}

#[tokio::test]
async fn without_readiness_gating_scaling_drops_requests() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-ungated").await;
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
    let cluster = Cluster::start_with_proxy_on_n1("traffic-readiness").await;
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
        tally.errors()
    );
}

fn tally_of(load: &Load, task: &str) -> u64 {
    load.tally.by_task().get(task).copied().unwrap_or_default()
}
