//! GitOps cost: a repository of 500 Services synced by the gitsync controller, beside
//! `dctl apply -f` of the same directory, on the same etcd in the same run.
//!
//! Run with `bash hack/bench/gitsync.sh`. The Services have `replicas: 0`, so no agent,
//! container or image is needed: what is measured is reading, validating and writing
//! manifests, which is all a sync adds over `dctl apply`. Three figures, each beside its
//! `dctl apply` peer:
//! - create: GitSync created → all 500 applied (`status.lastAppliedRevision` is the
//!   commit, polled every 10 ms), beside `dctl apply -f` creating 500 (process start to
//!   exit);
//! - update: a commit changing all 500 and `dctl gitsync reconcile` → applied, beside
//!   `dctl apply -f` of the changed directory;
//! - no-change: the mean duration of the controller's interval syncs when nothing changed
//!   (its own reconcile-duration metric; each sync fetches and re-applies all 500), and
//!   the etcd revision before and after several of them (target: under 1 s, zero writes),
//!   beside `dctl apply -f` of the unchanged directory.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dctl_apis::gitsync::GitSyncSpec;
use dctl_apis::{GitSync, ObjectMeta, Resource, Service};
use dctl_e2e::git_repo::GitRepo;
use dctl_e2e::load::free_port;
use dctl_e2e::{dctl_binary, TestEnv};
use dctl_runtime::store::Store;
use tokio::process::Command;

const OBJECTS: usize = 500;
/// Where the GitSync puts them (its `spec.namespace`); `dctl apply` puts them in
/// `default` (the manifests name no namespace), so the two never touch each other's objects.
const SYNC_NS: &str = "bench-git";
const INTERVAL_SECS: u64 = 2;
/// How long the no-change phase lets the interval run.
const NO_CHANGE_WINDOW: Duration = Duration::from_secs(12);

fn service(i: usize, image: &str) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: svc-{i:03}, labels: {{app: svc-{i:03}, tier: bench}}}}
spec:
  replicas: 0
  template:
    image: {image}
    args: [--port, '8080']
    env: [{{name: GREETING, value: hello}}]
    ports: [{{name: http, containerPort: 8080}}]
"
    )
}

fn write_all(repo: &GitRepo, image: &str) {
    for i in 0..OBJECTS {
        repo.write(&format!("apps/svc-{i:03}.yaml"), &service(i, image));
    }
}

#[tokio::main]
async fn main() {
    let env = TestEnv::start().await;
    let store = env.store().await;
    let metrics_port = free_port();
    let log_path = env.dir.path().join("controller-manager.log");
    let log = std::fs::File::create(&log_path).expect("manager log");
    let mut manager = Command::new(dctl_binary())
        .args([
            "controller-manager",
            "--etcd",
            env.endpoint(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("controller-manager starts");
    let repo = GitRepo::new();
    write_all(&repo, "bench/web:1");
    let first = repo.commit("500 services");
    let apps = repo.path().join("apps");
    let apps = apps.to_str().unwrap();
    wait_for_leader(&store).await;

    println!("gitsync vs dctl apply -f, {OBJECTS} Services (replicas 0), same etcd, same run");
    println!("(writes: the etcd revision's move until it settles, other controllers' included)");
    println!(
        "{:<10} {:>12} {:>12} {:>8} {:>14} {:>14}",
        "phase", "dctl apply", "gitsync", "ratio", "apply writes", "sync writes"
    );

    // Create.
    let before = env.revision().await;
    let apply_create = dctl_apply(&env, apps).await;
    settle(&env).await;
    let apply_writes = env.revision().await - before;
    let before = env.revision().await;
    let started = Instant::now();
    create_sync(&store, &repo.url()).await;
    wait_applied(&store, &first).await;
    let sync_create = started.elapsed();
    settle(&env).await;
    let sync_writes = env.revision().await - before;
    row(
        "create",
        apply_create,
        sync_create,
        apply_writes,
        sync_writes,
    );
    assert_eq!(count(&store, SYNC_NS).await, OBJECTS);

    // Update: every object changes (the files first, for dctl apply; the commit after, so
    // the GitSync's interval cannot see it early).
    write_all(&repo, "bench/web:2");
    settle(&env).await;
    let before = env.revision().await;
    let apply_update = dctl_apply(&env, apps).await;
    settle(&env).await;
    let apply_writes = env.revision().await - before;
    let before = env.revision().await;
    let started = Instant::now();
    let second = repo.commit("all to web:2");
    dctl(&env, &["gitsync", "reconcile", "apps", "-n", SYNC_NS]).await;
    wait_applied(&store, &second).await;
    let sync_update = started.elapsed();
    settle(&env).await;
    let sync_writes = env.revision().await - before;
    row(
        "update",
        apply_update,
        sync_update,
        apply_writes,
        sync_writes,
    );

    // No change: interval syncs against an unchanged repository.
    settle(&env).await;
    let before = env.revision().await;
    let apply_same = dctl_apply(&env, apps).await;
    settle(&env).await;
    let apply_writes = env.revision().await - before;
    let (count_before, sum_before) = reconcile_metrics(metrics_port);
    let before = env.revision().await;
    tokio::time::sleep(NO_CHANGE_WINDOW).await;
    let sync_writes = env.revision().await - before;
    let (count_after, sum_after) = reconcile_metrics(metrics_port);
    let syncs = count_after - count_before;
    assert!(syncs > 0.0, "no interval sync ran in {NO_CHANGE_WINDOW:?}");
    let sync_same = Duration::from_secs_f64((sum_after - sum_before) / syncs);
    row(
        "no-change",
        apply_same,
        sync_same,
        apply_writes,
        sync_writes,
    );
    println!(
        "no-change: {syncs} interval syncs in {NO_CHANGE_WINDOW:?} (interval {INTERVAL_SECS}s), \
         mean {} ms each, {sync_writes} etcd writes in all",
        sync_same.as_millis()
    );
    println!(
        "target: no-change sync under 1 s: {}; zero writes: {}",
        pass(sync_same < Duration::from_secs(1)),
        pass(sync_writes == 0)
    );
    let _ = manager.kill().await;
    println!("where the syncs' time went (the controller's own log):");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("fetch_ms") && l.contains(SYNC_NS))
    {
        println!("  {}", without_colours(line));
    }
}

/// The line without its terminal colour codes.
fn without_colours(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn row(phase: &str, apply: Duration, sync: Duration, apply_writes: i64, sync_writes: i64) {
    println!(
        "{phase:<10} {:>9} ms {:>9} ms {:>7.2}x {apply_writes:>14} {sync_writes:>14}",
        apply.as_millis(),
        sync.as_millis(),
        sync.as_secs_f64() / apply.as_secs_f64()
    );
}

async fn dctl(env: &TestEnv, args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new(dctl_binary())
        .args(args)
        .env("DCTL_ETCD", env.endpoint())
        .output()
        .await
        .expect("dctl runs");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "dctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

async fn dctl_apply(env: &TestEnv, dir: &str) -> Duration {
    dctl(env, &["apply", "-f", dir]).await
}

/// The controllers are running once a GitSync of an empty path is Ready.
async fn wait_for_leader(store: &Store) {
    let empty = GitRepo::new();
    empty.commit("nothing");
    let mut spec = GitSyncSpec {
        repo: empty.url(),
        allow_empty: true,
        ..GitSyncSpec::default()
    };
    spec.interval = Some(dctl_apis::Duration::from_secs(3600));
    let mut sync = GitSync::new(ObjectMeta::named("warmup", "warmup"), spec);
    sync.apply_defaults();
    store.create(&sync).await.expect("warm-up gitsync created");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sync: GitSync = store.get("warmup", "warmup").await.unwrap();
        if sync.status.and_then(|s| s.last_applied_revision).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the controller-manager never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_sync(store: &Store, repo: &str) {
    let spec = GitSyncSpec {
        repo: repo.to_string(),
        path: "apps".into(),
        namespace: SYNC_NS.into(),
        interval: Some(dctl_apis::Duration::from_secs(INTERVAL_SECS)),
        ..GitSyncSpec::default()
    };
    let mut sync = GitSync::new(ObjectMeta::named(SYNC_NS, "apps"), spec);
    sync.apply_defaults();
    store.create(&sync).await.expect("gitsync created");
}

async fn wait_applied(store: &Store, sha: &str) {
    let want = format!("main@{sha}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sync: GitSync = store.get(SYNC_NS, "apps").await.unwrap();
        let status = sync.status.unwrap_or_default();
        if status.last_applied_revision.as_deref() == Some(want.as_str()) {
            return;
        }
        assert!(Instant::now() < deadline, "not applied: {status:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(store: &Store, namespace: &str) -> usize {
    store
        .list::<Service>(Some(namespace))
        .await
        .unwrap()
        .items
        .len()
}

/// Waits until etcd's revision has not moved for a second: the other controllers (service
/// status, endpoints, revisions) have caught up with what was just written.
async fn settle(env: &TestEnv) {
    let mut last = env.revision().await;
    let mut still = 0;
    while still < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = env.revision().await;
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
}

/// The gitsync controller's reconcile count and total seconds, from its metrics endpoint.
fn reconcile_metrics(port: u16) -> (f64, f64) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name) && line.contains("controller=\"gitsync\""))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for gitsync in:\n{text}"))
    };
    (
        value("dctl_controller_reconcile_duration_seconds_count"),
        value("dctl_controller_reconcile_duration_seconds_sum"),
    )
}
