//! The traffic experiments the probes issue is about, shared by `tests/traffic.rs` and the
//! proxy benchmark: a slow-starting service of the test image behind the proxy, scaled
//! under client load, with readiness gating on or off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dctl_apis::Endpoints;

use crate::cluster::Cluster;
use crate::load::{get_once_at, loopback, Load, Tally};

pub const CONVERGE: Duration = Duration::from_secs(90);

/// A service of the test image, slow to start, with a readiness probe, published on
/// `port`.
pub fn service(name: &str, replicas: u32, port: u16, annotations: &str, env: &str) -> String {
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

pub async fn scale(cluster: &Cluster, service: &str, replicas: u32) {
    let target = format!("{service}={replicas}");
    cluster
        .env
        .dctl(&["scale", &target, "-n", "e2e"])
        .await
        .success();
}

pub async fn endpoints(cluster: &Cluster, service: &str) -> Option<Endpoints> {
    let store = cluster.env.store().await;
    store
        .try_get::<Endpoints>("e2e", service)
        .await
        .ok()
        .flatten()
}

/// Waits until the service's Endpoints list exactly `n` endpoints, all ready.
pub async fn wait_ready(cluster: &Cluster, service: &str, n: usize) -> Endpoints {
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

/// Scales `web` 1 → 3 → 1 under load through the proxy on loopback; returns what the
/// clients saw.
pub async fn scale_under_load(cluster: &Cluster, port: u16, annotations: &str) -> Arc<Tally> {
    scale_under_load_at(cluster, loopback(port), annotations).await
}

/// Scales `web`, published on `address`'s port, 1 → 3 → 1 under load sent to `address`.
pub async fn scale_under_load_at(
    cluster: &Cluster,
    address: SocketAddr,
    annotations: &str,
) -> Arc<Tally> {
    let port = address.port();
    let env = "{name: STARTUP_DELAY, value: 3s}";
    cluster
        .apply("web.yaml", &service("web", 1, port, annotations, env))
        .await;
    wait_ready(cluster, "web", 1).await;
    cluster
        .wait_for("web to answer through the proxy", CONVERGE, || async {
            get_once_at(address).await.ok()
        })
        .await;

    let load = Load::start_at(address);
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
        tally.ok(),
        tally.failed(),
        tally.by_task(),
        tally.errors()
    );
    tally
}
