//! A rolling update of a 10-replica service, parallelism 2, start-first, under client load:
//! dctl beside Swarm's `docker service update` with the same update config and a
//! HEALTHCHECK, on the same engine, in one run.
//!
//! Run with `bash hack/bench/rollout.sh`. Each rollout changes the `VERSION` variable (a
//! new template, the same image). dctl's time runs from `dctl apply --wait` being spawned
//! until it exits (the rollout completed: every slot runs the new version, Ready for the
//! monitor window); Swarm's from `docker service update` being spawned until it returns
//! (it waits until the service converged, its own monitor window included). Both gate on
//! the same check of the same server: dctl's readiness probe `GET /ready` every second,
//! Swarm's HEALTHCHECK running the server's `--check` of `/ready` every second (a Swarm
//! task counts as running only once healthy). Failed requests are measured through
//! dctl's proxy only: Swarm's routing mesh needs IPVS, which this kernel lacks. Both sides
//! also report how many tasks the rollout started.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::TaskState as SwarmTaskState;
use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::Docker;
use dctl_apis::Task;
use dctl_e2e::cluster::Cluster;
use dctl_e2e::load::{free_port, get_once, Load};
use dctl_e2e::swarm::{docker_cli, stderr, Swarm};

const REPLICAS: u32 = 10;
const PARALLELISM: u32 = 2;
/// Both sides' monitor window after each task is up.
const MONITOR: &str = "2s";
const RUNS: usize = 3;
const IMAGE: &str = "dctl-test/server:1";
const SWARM_SERVICE: &str = "bench-rollout";
/// One rollout's limit.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() {
    let docker = Docker::connect_with_local_defaults().expect("a Docker client");
    let mut cluster = Cluster::start("bench-rollout").await;
    cluster.start_agent_with("n1", &["--proxy-bind", "127.0.0.1"]);
    let port = free_port();
    let label = cluster.container_label();

    println!(
        "rollout of {REPLICAS} replicas, parallelism {PARALLELISM}, start-first, monitor \
         {MONITOR}, under load; {RUNS} runs per side, interleaved; image {IMAGE}"
    );
    let swarm = match Swarm::init(&docker).await {
        Ok(swarm) => Some(swarm),
        Err(reason) => {
            println!("Swarm side skipped: {reason}");
            None
        }
    };
    apply_version(&cluster, port, 0).await;
    cluster
        .wait_for("web through the proxy", RUN_LIMIT, || async {
            get_once(port).await.ok()
        })
        .await;
    if swarm.is_some() {
        swarm_create(&docker, &label).await;
    }

    let (mut dctl_times, mut swarm_times) = (Vec::new(), Vec::new());
    let (mut failed, mut answered) = (0, 0);
    println!(
        "\n{:>3}  {:>8} {:>8}  {:>10} {:>10}  {:>8} {:>6}",
        "run", "dctl ms", "swarm ms", "dctl tasks", "swarm tasks", "answered", "failed"
    );
    for run in 1..=RUNS {
        let version = u32::try_from(run).unwrap();
        let tasks_before = dctl_tasks(&cluster).await;
        let load = Load::start(port);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        apply_version(&cluster, port, version).await;
        let dctl_time = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tally = load.stop().await;
        let dctl_started = dctl_tasks(&cluster).await - tasks_before;
        failed += tally.failed();
        answered += tally.ok();
        if tally.failed() > 0 {
            println!("  failed requests: {:?}", tally.errors());
        }
        dctl_times.push(dctl_time);

        let swarm_run = match swarm {
            Some(_) => Some(swarm_update(&docker, version).await),
            None => None,
        };
        if let Some((time, _)) = swarm_run {
            swarm_times.push(time);
        }
        println!(
            "{run:>3}  {:>8.0} {:>8}  {:>10} {:>10}  {:>8} {:>6}",
            ms(dctl_time),
            swarm_run.map_or("-".into(), |(t, _)| format!("{:.0}", ms(t))),
            dctl_started,
            swarm_run.map_or("-".into(), |(_, n)| n.to_string()),
            tally.ok(),
            tally.failed()
        );
    }

    let dctl = median(dctl_times).expect("at least one run");
    let swarm_median = median(swarm_times);
    println!("\nmedians; targets: 0 failed requests, dctl rollout time <= Swarm's");
    println!(
        "dctl {:.0} ms, swarm {}, dctl/swarm {}; failed requests {failed} of {} ({})",
        ms(dctl),
        swarm_median.map_or("-".into(), |s| format!("{:.0} ms", ms(s))),
        swarm_median.map_or("-".into(), |s| format!("{:.2}x", ms(dctl) / ms(s))),
        answered + failed,
        if failed == 0 { "met" } else { "NOT met" },
    );
    if let Some(swarm_median) = swarm_median {
        let met = dctl <= swarm_median;
        println!("rollout time: {}", if met { "met" } else { "NOT met" });
    }
    if swarm.is_some() {
        let removed = docker_cli(&["service", "rm", SWARM_SERVICE]).await;
        if !removed.status.success() {
            println!("docker service rm: {}", stderr(&removed));
        }
    }
    drop(swarm);
}

/// The dctl side's service at `version`, applied with `--wait` (the rollout's end).
async fn apply_version(cluster: &Cluster, port: u16, version: u32) {
    let manifest = format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: web, namespace: bench}}
spec:
  replicas: {REPLICAS}
  template:
    image: {IMAGE}
    env: [{{name: VERSION, value: \"{version}\"}}]
    ports: [{{name: http, containerPort: 8080}}]
    stopGracePeriod: 2s
    probes:
      readiness: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
  update: {{parallelism: {PARALLELISM}, order: start-first, monitor: {MONITOR}}}
  publish:
    - {{port: {port}, targetPort: http}}
"
    );
    let path = cluster.env.write("web.yaml", &manifest);
    let applied = cluster
        .env
        .dctl(&["apply", "-f", path.to_str().unwrap(), "--wait", "--timeout", "110s"])
        .await;
    assert_eq!(applied.code, 0, "dctl apply --wait: {applied:#?}");
}

/// How many tasks the dctl side's service has created so far (history included: the
/// service keeps 5 per slot, more than a rollout adds).
async fn dctl_tasks(cluster: &Cluster) -> usize {
    let store = cluster.env.store().await;
    let tasks = store.list::<Task>(Some("bench")).await.unwrap().items;
    tasks.iter().filter(|t| t.spec.service_name == "web").count()
}

/// The Swarm side's service at version 0, waited for until all its tasks run (healthy).
async fn swarm_create(docker: &Docker, label: &str) {
    let replicas = REPLICAS.to_string();
    let parallelism = PARALLELISM.to_string();
    let created = docker_cli(&[
        "service",
        "create",
        "--detach=false",
        "--quiet",
        "--no-resolve-image",
        "--name",
        SWARM_SERVICE,
        "--replicas",
        &replicas,
        "--container-label",
        label,
        "--env",
        "VERSION=0",
        "--stop-grace-period",
        "2s",
        "--health-cmd",
        "/dctl-testserver --check http://127.0.0.1:8080/ready",
        "--health-interval",
        "1s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "3",
        "--update-parallelism",
        &parallelism,
        "--update-order",
        "start-first",
        "--update-monitor",
        MONITOR,
        "--update-failure-action",
        "pause",
        IMAGE,
    ])
    .await;
    assert!(
        created.status.success(),
        "docker service create: {}",
        stderr(&created)
    );
    assert_eq!(swarm_running(docker).await, REPLICAS as usize);
}

/// `docker service update --env-add VERSION=<version>`, timed until it returns (it waits
/// for convergence); returns the time and how many tasks the update started.
async fn swarm_update(docker: &Docker, version: u32) -> (Duration, usize) {
    let before = swarm_tasks(docker).await;
    let env = format!("VERSION={version}");
    let started = Instant::now();
    let updated = tokio::time::timeout(
        RUN_LIMIT,
        docker_cli(&[
            "service",
            "update",
            "--detach=false",
            "--quiet",
            "--no-resolve-image",
            "--env-add",
            &env,
            SWARM_SERVICE,
        ]),
    )
    .await
    .expect("docker service update returns within the run limit");
    let time = started.elapsed();
    assert!(
        updated.status.success(),
        "docker service update: {}",
        stderr(&updated)
    );
    (time, swarm_tasks(docker).await - before)
}

/// The Swarm service's tasks, history included.
async fn swarm_tasks(docker: &Docker) -> usize {
    let filters = HashMap::from([("service", vec![SWARM_SERVICE])]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    docker
        .list_tasks(Some(options))
        .await
        .map_or(0, |tasks| tasks.len())
}

/// The Swarm service's running tasks.
async fn swarm_running(docker: &Docker) -> usize {
    let filters = HashMap::from([
        ("service", vec![SWARM_SERVICE]),
        ("desired-state", vec!["running"]),
    ]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let tasks = docker.list_tasks(Some(options)).await.unwrap_or_default();
    tasks
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(SwarmTaskState::RUNNING))
        .count()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}
