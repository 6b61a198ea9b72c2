//! Rolling updates on real Docker, under client load through the proxy: start-first and
//! stop-first without a failed request, a version that never becomes Ready rolled back or
//! paused, a crash inside the monitor window, a rollout stuck on a constraint failing at
//! its progress deadline, undo to a revision, pause and resume.
//!
//! The test server answers `hello from <task> version <VERSION>`, so the load tells which
//! version served each request.

use std::time::{Duration, Instant};

use dctl_apis::service::RolloutState;
use dctl_apis::{Service, Task};
use dctl_e2e::cluster::Cluster;
use dctl_e2e::load::{free_port, get_once, Load};
use dctl_e2e::CommandResult;

const CONVERGE: Duration = Duration::from_secs(90);

/// Service `web` of the test image at `version`, with a readiness probe, published on
/// `port`; `update` is the body of its update config, `extra` more template lines.
fn web(port: u16, replicas: u32, version: &str, update: &str, extra: &str) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: web, namespace: e2e}}
spec:
  replicas: {replicas}
  template:
    image: dctl-test/server:1
    env: [{{name: VERSION, value: \"{version}\"}}{extra}]
    ports: [{{name: http, containerPort: 8080}}]
    stopGracePeriod: 2s
    probes:
      readiness: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
    restartPolicy: {{condition: any, delay: 1s}}
  update: {{{update}}}
  rollback: {{parallelism: 0, monitor: 1s}}
  publish:
    - {{port: {port}, targetPort: http}}
"
    )
}

async fn apply(cluster: &Cluster, yaml: &str, extra_args: &[&str]) -> CommandResult {
    let path = cluster.env.write("web.yaml", yaml);
    let mut args = vec!["apply", "-f", path.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    cluster.env.dctl(&args).await
}

async fn service(cluster: &Cluster) -> Service {
    cluster.env.store().await.get("e2e", "web").await.unwrap()
}

fn version_of(task: &Task) -> String {
    task.spec
        .template
        .env
        .iter()
        .find(|e| e.name == "VERSION")
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

/// The versions of the tasks meant to run.
async fn running_versions(cluster: &Cluster) -> Vec<String> {
    let store = cluster.env.store().await;
    let mut versions: Vec<String> = store
        .list::<Task>(Some("e2e"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|t| t.spec.desired_state == dctl_apis::task::TaskDesiredState::Running)
        .map(version_of)
        .collect();
    versions.sort();
    versions
}

/// Brings `web` up at version 1 with `update`, then applies `version` (with `extra`
/// template lines) and waits: a rollout expected to fail, so it checks that `apply
/// --wait` exits 1.
async fn failed_rollout(
    test_name: &str,
    replicas: u32,
    update: &str,
    version: &str,
    extra: &str,
) -> (Cluster, u16, CommandResult) {
    let cluster = Cluster::start_with_proxy_on_n1(test_name).await;
    let port = free_port();
    web_v1(&cluster, port, replicas, update).await;
    let next = web(port, replicas, version, update, extra);
    let applied = apply(&cluster, &next, &["--wait", "--timeout", "55s"]).await;
    assert_eq!(applied.code, 1, "{applied:#?}\n{}", cluster.logs());
    (cluster, port, applied)
}

/// Two seconds of load: every request answered, all by version 1.
async fn only_v1_serves(port: u16) {
    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    assert_eq!(tally.failed(), 0, "{}", tally.summary());
    assert_eq!(tally.by_version().keys().collect::<Vec<_>>(), ["1"]);
}

/// Brings `web` up at version 1 and waits until the proxy serves it.
async fn web_v1(cluster: &Cluster, port: u16, replicas: u32, update: &str) {
    let v1 = web(port, replicas, "1", update, "");
    apply(cluster, &v1, &["--wait", "--timeout", "50s"])
        .await
        .success();
    cluster
        .wait_for("web to answer through the proxy", CONVERGE, || async {
            get_once(port).await.ok()
        })
        .await;
}

async fn rolls_v1_to_v2_under_load(name: &str, order: &str) {
    let cluster = Cluster::start_with_proxy_on_n1(name).await;
    let port = free_port();
    let update = format!("parallelism: 1, order: {order}, monitor: 2s");
    web_v1(&cluster, port, 2, &update).await;

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v2 = web(port, 2, "2", &update, "");
    let applied = apply(&cluster, &v2, &["--wait", "--timeout", "55s"]).await;
    let done = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    eprintln!("{order}: {}\n{}", tally.summary(), applied.stdout);
    assert_eq!(applied.code, 0, "{applied:#?}\n{}", cluster.logs());
    assert!(
        applied.stdout.contains("2/2 updated, 2/2 ready"),
        "{}",
        applied.stdout
    );
    assert_eq!(tally.failed(), 0, "{}\n{}", tally.summary(), cluster.logs());
    let after = tally.versions_since(done);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["2"], "{after:?}");
    assert!(tally.by_version().contains_key("1"), "v1 served before");

    let status = service(&cluster).await.status.unwrap();
    let rollout = status.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Completed, "{rollout:?}");
    assert_eq!((status.revision, status.updated_replicas), (2, 2));
    assert_eq!(running_versions(&cluster).await, ["2", "2"]);
}

#[tokio::test]
async fn start_first_rolls_v1_to_v2_without_a_failed_request() {
    rolls_v1_to_v2_under_load("rollout-start-first", "start-first").await;
}

#[tokio::test]
async fn stop_first_rolls_v1_to_v2_without_a_failed_request() {
    rolls_v1_to_v2_under_load("rollout-stop-first", "stop-first").await;
}

#[tokio::test]
async fn a_version_that_never_becomes_ready_is_rolled_back_while_v1_serves() {
    let cluster = Cluster::start_with_proxy_on_n1("rollout-rollback").await;
    let port = free_port();
    let update = "parallelism: 1, order: start-first, monitor: 3s, failureAction: rollback";
    web_v1(&cluster, port, 2, update).await;

    let load = Load::start(port);
    let never_ready = ", {name: READY, value: \"false\"}";
    let v3 = web(port, 2, "3", update, never_ready);
    let applied = apply(&cluster, &v3, &["--wait", "--timeout", "55s"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!("{}\n{}", tally.summary(), applied.stdout);
    assert_eq!(
        applied.code, 1,
        "a rollback is a failed rollout: {applied:#?}"
    );
    assert!(
        applied
            .stderr
            .contains("did not become Ready within the monitor window"),
        "{}",
        applied.stderr
    );
    assert_eq!(tally.failed(), 0, "{}", tally.summary());
    assert_eq!(
        tally.by_version().keys().collect::<Vec<_>>(),
        ["1"],
        "v3 never served"
    );

    let service = service(&cluster).await;
    let rollout = service.status.as_ref().unwrap().rollout.clone().unwrap();
    assert_eq!(
        rollout.state,
        RolloutState::RollbackCompleted,
        "{rollout:?}"
    );
    let env = &service.spec.template.env;
    assert_eq!(env.len(), 1, "the template is v1's again: {env:?}");
    assert_eq!(env[0].value, "1");
    assert_eq!(running_versions(&cluster).await, ["1", "1"]);
    // Why is in the events too.
    let described = cluster
        .env
        .dctl(&["describe", "service", "web", "-n", "e2e"])
        .await
        .success();
    assert!(
        described.stdout.contains("RollbackStarted"),
        "{}",
        described.stdout
    );
}

#[tokio::test]
async fn with_failure_action_pause_a_bad_version_stops_the_rollout_and_ready_tasks_serve() {
    let update = "parallelism: 1, order: stop-first, monitor: 3s";
    let never_ready = ", {name: READY, value: \"false\"}";
    let (cluster, port, applied) =
        failed_rollout("rollout-pause-on-failure", 3, update, "3", never_ready).await;
    assert!(applied.stderr.contains("paused"), "{}", applied.stderr);
    let status = cluster
        .env
        .dctl(&["rollout", "status", "service/web", "-n", "e2e"])
        .await;
    assert_eq!(status.code, 1, "{status:#?}");

    // One slot went to v3 and stays there, not Ready; the two others still run v1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running_versions(&cluster).await, ["1", "1", "3"]);
    let rollout = service(&cluster).await.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Paused);
    only_v1_serves(port).await;
}

#[tokio::test]
async fn a_crash_inside_the_monitor_window_counts_as_a_failure() {
    let update = "parallelism: 1, order: start-first, monitor: 15s";
    // v4 becomes Ready, then exits two seconds after it started.
    let crashes = ", {name: CRASH_AFTER, value: 2s}";
    let (cluster, _, _) = failed_rollout("rollout-crash-in-monitor", 2, update, "4", crashes).await;
    let rollout = service(&cluster).await.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Paused, "{rollout:?}");
    assert!(!rollout.failed_tasks.is_empty());
    assert!(rollout.message.contains("failed"), "{}", rollout.message);
}

#[tokio::test]
async fn a_rollout_blocked_by_a_constraint_fails_at_its_progress_deadline() {
    let cluster = Cluster::start_with_proxy_on_n1("rollout-deadline").await;
    let port = free_port();
    let update = "parallelism: 1, order: start-first, monitor: 1s, progressDeadline: 6s";
    web_v1(&cluster, port, 2, update).await;

    let nowhere = web(port, 2, "2", update, "").replace(
        "  update:",
        "  placement: {constraints: [\"node.labels.zone == nowhere\"]}\n  update:",
    );
    let started = Instant::now();
    let applied = apply(&cluster, &nowhere, &["--wait", "--timeout", "55s"]).await;
    let took = started.elapsed();
    assert_eq!(applied.code, 1, "{applied:#?}");
    assert!(
        applied.stderr.contains("progress deadline exceeded"),
        "{}",
        applied.stderr
    );
    assert!(took >= Duration::from_secs(6), "failed after {took:?}");
    // Start-first: the old tasks never stopped, and still serve.
    only_v1_serves(port).await;
}

#[tokio::test]
async fn undo_to_a_revision_and_pause_resume_mid_roll() {
    let cluster = Cluster::start_with_proxy_on_n1("rollout-undo-pause").await;
    let port = free_port();
    let update = "parallelism: 1, order: start-first, monitor: 1s, delay: 4s";
    web_v1(&cluster, port, 3, update).await;
    let dctl = |args: &'static [&'static str]| cluster.env.dctl(args);

    // Pause mid-roll: after the first slot, the 4 s delay gives time to pause.
    apply(&cluster, &web(port, 3, "2", update, ""), &[])
        .await
        .success();
    cluster
        .wait_for("one slot on v2", CONVERGE, || async {
            let status = service(&cluster).await.status?;
            (status.updated_replicas >= 1).then_some(())
        })
        .await;
    dctl(&["rollout", "pause", "service/web", "-n", "e2e"])
        .await
        .success();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let versions = running_versions(&cluster).await;
    assert_eq!(
        versions.iter().filter(|v| *v == "2").count(),
        1,
        "paused after one slot: {versions:?}"
    );
    let rollout = service(&cluster).await.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Paused);
    dctl(&["rollout", "resume", "service/web", "-n", "e2e"])
        .await
        .success();
    dctl(&[
        "rollout",
        "status",
        "service/web",
        "-n",
        "e2e",
        "--timeout",
        "50s",
    ])
    .await
    .success();
    assert_eq!(running_versions(&cluster).await, ["2", "2", "2"]);

    // Scaling is no rollout: no new revision.
    dctl(&["scale", "web=4", "-n", "e2e"]).await.success();
    let history = dctl(&["rollout", "history", "service/web", "-n", "e2e"])
        .await
        .success();
    assert_eq!(history.stdout.lines().count(), 3, "{}", history.stdout);

    // Undo to revision 1: v1's template again, as revision 3.
    let undo = dctl(&[
        "rollout",
        "undo",
        "service/web",
        "-n",
        "e2e",
        "--to-revision",
        "1",
    ])
    .await
    .success();
    assert!(
        undo.stdout.contains("rolled back to revision 1"),
        "{}",
        undo.stdout
    );
    dctl(&[
        "rollout",
        "status",
        "service/web",
        "-n",
        "e2e",
        "--timeout",
        "55s",
    ])
    .await
    .success();
    assert_eq!(running_versions(&cluster).await, ["1", "1", "1", "1"]);
    let history = dctl(&["rollout", "history", "service/web", "-n", "e2e"])
        .await
        .success();
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "revision 1 was renumbered: {lines:?}");
    assert!(
        lines[2].starts_with('3') && lines[2].contains("(current)"),
        "{lines:?}"
    );
    assert_eq!(service(&cluster).await.status.unwrap().revision, 3);
}
