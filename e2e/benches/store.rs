//! Typed store throughput beside raw etcd-client puts of the same bytes, on the same etcd,
//! in the same run; and `dctl apply -f` of 1,000 objects beside raw puts of them.
//!
//! Run with `bash hack/bench/store.sh`. Prints each figure and the ratio typed / raw.

use std::time::{Duration, Instant};

use dctl_apis::{manifest, Service};
use dctl_e2e::TestEnv;
use dctl_runtime::store::Store;
use futures::stream::{self, StreamExt};

/// Requests in flight at once in the concurrent runs: a controller-manager's many workers.
const IN_FLIGHT: usize = 32;

#[tokio::main]
async fn main() {
    println!("typed store vs raw etcd-client puts (same etcd, same run); higher ratio is better\n");
    println!(
        "{:<8} {:<10} {:>9} {:>13} {:>13} {:>7}",
        "objects", "operation", "in flight", "raw ops/s", "typed ops/s", "ratio"
    );
    for count in [1_000, 10_000] {
        for in_flight in [1, IN_FLIGHT] {
            bench_store(count, in_flight).await;
        }
    }
    println!();
    bench_apply(1_000).await;
}

fn service(i: usize, image: &str) -> Service {
    let text = format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: svc-{i}, namespace: bench, labels: {{app: svc-{i}, tier: bench}}}}
spec:
  replicas: 3
  template:
    image: {image}
    args: [--port, '8080']
    env: [{{name: GREETING, value: hello}}]
    ports: [{{name: http, containerPort: 8080}}]
    resources: {{limits: {{cpus: '0.5', memory: 128Mi}}}}
    probes:
      readiness: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
      liveness: {{tcpSocket: {{port: http}}}}
  publish: [{{port: {}, targetPort: http}}]
",
        10_000 + i
    );
    let documents = manifest::decode("bench", &text).expect("the bench's manifest is valid");
    match documents.into_iter().next().map(|d| d.object) {
        Some(dctl_apis::AnyObject::Service(service)) => service,
        other => panic!("expected a Service, got {other:?}"),
    }
}

async fn bench_store(count: usize, in_flight: usize) {
    let env = TestEnv::start().await;
    let store = env.store().await;
    let v1: Vec<Service> = (0..count).map(|i| service(i, "bench/web:1")).collect();
    let raw_bytes: Vec<Vec<u8>> = v1.iter().map(|s| serde_json::to_vec(s).unwrap()).collect();

    // create
    let raw = time(|| raw_puts(&store, "/bench/raw/", &raw_bytes, in_flight)).await;
    let stored: Vec<Service> = Vec::with_capacity(count);
    let stored = std::sync::Mutex::new(stored);
    let typed = time(|| async {
        let created: Vec<Service> = stream::iter(&v1)
            .map(|s| store.create(s))
            .buffer_unordered(in_flight)
            .map(|r| r.expect("create"))
            .collect()
            .await;
        *stored.lock().unwrap() = created;
    })
    .await;
    report(count, "create", in_flight, raw, typed);

    // update: a spec change on every object, CAS on the revision just read
    let mut v2 = stored.into_inner().unwrap();
    for s in &mut v2 {
        s.spec.template.image = "bench/web:2".into();
    }
    let raw_v2: Vec<Vec<u8>> = v2.iter().map(|s| serde_json::to_vec(s).unwrap()).collect();
    let raw = time(|| raw_puts(&store, "/bench/raw/", &raw_v2, in_flight)).await;
    let typed = time(|| async {
        stream::iter(&v2)
            .map(|s| store.update(s))
            .buffer_unordered(in_flight)
            .for_each(|r| {
                r.expect("update");
                async {}
            })
            .await;
    })
    .await;
    report(count, "update", in_flight, raw, typed);

    // list: the whole set in one request, decoded into typed objects vs left as bytes
    if in_flight == 1 {
        let mut client = store.client();
        let raw = time(|| async {
            let options = etcd_client::GetOptions::new().with_prefix();
            let response = client
                .get("/bench/raw/", Some(options))
                .await
                .expect("raw list");
            assert_eq!(response.kvs().len(), count);
        })
        .await;
        let typed = time(|| async {
            let list = store.list::<Service>(Some("bench")).await.expect("list");
            assert_eq!(list.items.len(), count);
        })
        .await;
        report(count, "list", 1, raw, typed);
    }
}

async fn raw_puts(store: &Store, prefix: &str, values: &[Vec<u8>], in_flight: usize) {
    stream::iter(values.iter().enumerate())
        .map(|(i, value)| {
            let mut client = store.client();
            let key = format!("{prefix}{i}");
            async move { client.put(key, value.clone(), None).await.expect("raw put") }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
}

async fn bench_apply(count: usize) {
    let env = TestEnv::start().await;
    let store = env.store().await;
    let services: Vec<Service> = (0..count).map(|i| service(i, "bench/web:1")).collect();
    let text: String = services
        .iter()
        .map(|s| format!("---\n{}", manifest::to_yaml(s)))
        .collect();
    let file = env.write("bench.yaml", &text);
    let raw_bytes: Vec<Vec<u8>> = services
        .iter()
        .map(|s| serde_json::to_vec(s).unwrap())
        .collect();

    let raw = time(|| raw_puts(&store, "/bench/raw/", &raw_bytes, 1)).await;
    let apply = time(|| async {
        env.dctl(&["apply", "-f", file.to_str().unwrap()])
            .await
            .success();
    })
    .await;
    let reapply = time(|| async {
        env.dctl(&["apply", "-f", file.to_str().unwrap()])
            .await
            .success();
    })
    .await;
    println!("dctl apply -f of {count} Services (one process, parse + validate + write) vs {count} raw puts one at a time:");
    println!("  raw puts        {:>8.1} ms", ms(raw));
    println!(
        "  dctl apply      {:>8.1} ms   {:.2}x raw (target <= 2x)",
        ms(apply),
        apply.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  apply unchanged {:>8.1} ms   {:.2}x raw",
        ms(reapply),
        reapply.as_secs_f64() / raw.as_secs_f64()
    );
}

async fn time<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    f().await;
    start.elapsed()
}

fn report(count: usize, operation: &str, in_flight: usize, raw: Duration, typed: Duration) {
    let raw_rate = count as f64 / raw.as_secs_f64();
    let typed_rate = count as f64 / typed.as_secs_f64();
    // For `list` (one request for the whole set) the rate is objects read per second.
    println!(
        "{count:<8} {operation:<10} {in_flight:>9} {raw_rate:>13.0} {typed_rate:>13.0} {:>6.2}x",
        typed_rate / raw_rate
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
