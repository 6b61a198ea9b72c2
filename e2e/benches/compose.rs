//! A 50-service compose file: `dctl apply -f` to every service ready, beside `docker stack
//! deploy` of the same file on the same engine, in one run.
//!
//! Run with `bash hack/bench/compose.sh`. dctl's time runs from `dctl apply -f` being
//! spawned (translation included) until every Service reports its one replica Ready (read
//! from etcd every 20 ms); Swarm's from `docker stack deploy` being spawned until the
//! engine's task list shows all 50 tasks running (polled every 20 ms). The services have no
//! healthcheck, so Ready and running mean the same on both sides. Each run is removed and
//! waited out before the next; the sides are interleaved.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::TaskState as SwarmTaskState;
use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::Docker;
use dctl_apis::Service;
use dctl_e2e::cluster::Cluster;
use dctl_e2e::stats::{median, ms};
use dctl_e2e::swarm::{docker_cli, stderr, Swarm};

const SERVICES: usize = 50;
const RUNS: usize = 3;
/// The dctl side's project (namespace); its Docker network is `bench-compose_default`.
const PROJECT: &str = "bench-compose";
/// The Swarm side's stack: another name, as its network would clash with dctl's.
const STACK: &str = "bench-stack";
const RUN_LIMIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);

/// The compose file both sides deploy: `SERVICES` one-replica services of the test image
/// on the default network. `version:` because Docker 20.10's stack deploy needs it.
fn compose_file(label: &str) -> String {
    let mut file = String::from("version: \"3.8\"\nservices:\n");
    for i in 0..SERVICES {
        file.push_str(&format!(
            "  svc{i:02}:\n    image: dctl-test/server:1\n    environment: {{GREETING: \"hello from {i}\"}}\n    labels: [\"{label}\"]\n    stop_grace_period: 1s\n"
        ));
    }
    file
}

#[tokio::main]
async fn main() {
    let docker = Docker::connect_with_local_defaults().expect("a Docker client");
    let mut cluster = Cluster::start("bench-compose").await;
    cluster.start_agent_with("n1", &["--no-proxy"]);
    let label = cluster.container_label();
    let path = cluster.env.write(
        &format!("{PROJECT}/docker-compose.yml"),
        &compose_file(&label),
    );
    let file = path.to_str().unwrap().to_string();

    let convert = Instant::now();
    cluster.env.dctl(&["convert", "-f", &file]).await.success();
    println!(
        "{SERVICES} services; dctl convert (read, translate, validate; process start included): {:.0} ms",
        ms(convert.elapsed())
    );
    let swarm = match Swarm::init(&docker).await {
        Ok(swarm) => Some(swarm),
        Err(reason) => {
            println!("Swarm side skipped: {reason}");
            None
        }
    };

    let (mut dctl_times, mut swarm_times) = (Vec::new(), Vec::new());
    println!("\n{:>3}  {:>8} {:>9}", "run", "dctl ms", "stack ms");
    for run in 1..=RUNS {
        let dctl = dctl_run(&cluster, &file).await;
        dctl_times.push(dctl);
        let stack = match swarm {
            Some(_) => Some(stack_run(&docker, &file).await),
            None => None,
        };
        swarm_times.extend(stack);
        println!(
            "{run:>3}  {:>8.0} {:>9}",
            ms(dctl),
            stack.map_or("-".into(), |t| format!("{:.0}", ms(t)))
        );
    }
    let dctl = median(dctl_times).expect("at least one run");
    let stack = median(swarm_times);
    println!("\nmedians; target: dctl faster than docker stack deploy");
    println!(
        "dctl {:.0} ms, stack deploy {}, dctl/stack {}{}",
        ms(dctl),
        stack.map_or("-".into(), |s| format!("{:.0} ms", ms(s))),
        stack.map_or("-".into(), |s| format!("{:.2}x", ms(dctl) / ms(s))),
        stack.map_or(String::new(), |s| if dctl < s {
            ": met".into()
        } else {
            ": NOT met".into()
        }),
    );
    drop(swarm);
}

/// `dctl apply -f` until every service is ready; then the stack is deleted and waited out.
async fn dctl_run(cluster: &Cluster, file: &str) -> Duration {
    let store = cluster.env.store().await;
    let started = Instant::now();
    cluster.env.dctl(&["apply", "-f", file]).await.success();
    loop {
        let services = store.list::<Service>(Some(PROJECT)).await.unwrap().items;
        let ready = services
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.ready_replicas >= 1))
            .count();
        if ready == SERVICES {
            break;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "dctl: {ready} of {SERVICES} ready"
        );
        tokio::time::sleep(POLL).await;
    }
    let time = started.elapsed();
    cluster.env.dctl(&["delete", "-f", file]).await.success();
    cluster
        .wait_for("the dctl stack's containers gone", RUN_LIMIT, || async {
            cluster.containers().is_empty().then_some(())
        })
        .await;
    time
}

/// `docker stack deploy` until all tasks run; then `docker stack rm`, waited out.
async fn stack_run(docker: &Docker, file: &str) -> Duration {
    let started = Instant::now();
    let deployed = docker_cli(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        file,
        STACK,
    ])
    .await;
    assert!(
        deployed.status.success(),
        "docker stack deploy: {}",
        stderr(&deployed)
    );
    loop {
        let running = stack_tasks(docker, Some(SwarmTaskState::RUNNING)).await;
        if running == SERVICES {
            break;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "stack: {running} of {SERVICES} running"
        );
        tokio::time::sleep(POLL).await;
    }
    let time = started.elapsed();
    let removed = docker_cli(&["stack", "rm", STACK]).await;
    assert!(
        removed.status.success(),
        "docker stack rm: {}",
        stderr(&removed)
    );
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let containers = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.stack.namespace={STACK}"),
        ])
        .await;
        let networks =
            docker_cli(&["network", "ls", "-q", "--filter", &format!("name={STACK}_")]).await;
        if containers.stdout.is_empty() && networks.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stack's containers and network linger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    time
}

/// The stack's tasks, in `state` if given.
async fn stack_tasks(docker: &Docker, state: Option<SwarmTaskState>) -> usize {
    let namespace = format!("com.docker.stack.namespace={STACK}");
    let filters = HashMap::from([
        ("label", vec![namespace.as_str()]),
        ("desired-state", vec!["running"]),
    ]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let tasks = docker.list_tasks(Some(options)).await.unwrap_or_default();
    tasks
        .iter()
        .filter(|t| state.is_none() || t.status.as_ref().and_then(|s| s.state) == state)
        .count()
}
