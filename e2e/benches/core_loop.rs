//! Time from `dctl apply -f` to all replicas running, for 1, 10 and 30 replicas, beside
//! `docker service create --replicas N` (Swarm mode on the same engine) and beside
//! creating and starting N containers straight through the Docker API (the engine's own
//! limit), all in one run.
//!
//! Run with `bash hack/bench/core-loop.sh`. Each side's time runs from the moment its
//! request leaves (the `dctl apply` / `docker service create` process is spawned, the
//! first create call is sent) until every replica is running as that side reports it:
//! dctl's Task `status.state == running` (polled from etcd every 20 ms), Swarm's task
//! state `running` (polled from the engine's task list every 20 ms), the last
//! `start` call answered. Setup (etcd, one controller-manager, one agent, `docker swarm
//! init`) is outside the timing; every run is torn down and waited out before the next.
//! Prints each run, then the medians with the ratios and the targets, then where dctl's
//! time went: when each step was done for all replicas, the CPU each side's run cost
//! (whole machine, the Docker daemons, dctl's own processes) and dctl's etcd writes.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, TaskState as SwarmTaskState};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListTasksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use dctl_apis::meta::find_condition;
use dctl_apis::{ConditionStatus, Node, Task, TaskState};
use dctl_e2e::cluster::Cluster;
use dctl_e2e::swarm::{docker_cli, stderr, Swarm};
use dctl_runtime::store::Store;

/// The replica counts of the issue, each measured `RUNS` times (the median is reported).
const REPLICAS: [usize; 3] = [1, 10, 30];
const RUNS: usize = 5;
/// How often the dctl and Swarm sides look for running replicas.
const POLL: Duration = Duration::from_millis(20);
/// One run's limit, to converge or to be cleaned up.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The whole bench's limit: past it, what was measured is printed and the bench stops.
const BUDGET: Duration = Duration::from_secs(8 * 60);
const IMAGE: &str = "dctl-test/server:1";
const NAMESPACE: &str = "bench";

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let mut results = Results::default();
    let finished = tokio::select! {
        done = tokio::time::timeout(BUDGET, bench(&mut results)) => match done {
            Ok(()) => true,
            Err(_) => {
                println!("\nstopped: the bench's budget of {BUDGET:?} ran out");
                false
            }
        },
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted");
            false
        }
    };
    // Everything `bench` set up (the cluster, the swarm, containers) was dropped with it.
    results.print();
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
    if !finished {
        std::process::exit(1);
    }
}

/// Every run of each side, by replica count.
#[derive(Default)]
struct Results {
    dctl: HashMap<usize, Vec<DctlRun>>,
    swarm: HashMap<usize, Vec<Sample>>,
    direct: HashMap<usize, Vec<Sample>>,
    swarm_skipped: Option<String>,
}

/// One timed run: the time, and the CPU spent in it.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    time: Duration,
    cpu: Cpu,
}

/// CPU time spent, whole machine and by who.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// Both cores, busy with anything (other builds on the machine too).
    machine: Duration,
    /// `dockerd` and `containerd` (not the shims, `runc` or `fuse-overlayfs`).
    engine: Duration,
    /// dctl's own processes: etcd, the controller-manager, the agent.
    stack: Duration,
}

/// One dctl run: its sample, the etcd writes it took, and when each step was first seen
/// done for every replica.
#[derive(Clone, Copy, Debug, Default)]
struct DctlRun {
    sample: Sample,
    /// Write transactions from `apply` to all running (etcd's revision went up by this).
    etcd_writes: i64,
    /// `dctl apply` exited.
    applied: Duration,
    /// All N Task objects exist (the service controller wrote them).
    created: Duration,
    /// All N are bound to the node (the scheduler).
    bound: Duration,
    /// All N accepted by the agent.
    accepted: Duration,
    /// All N at `starting` or later (container created, start under way).
    starting: Duration,
}

async fn bench(results: &mut Results) {
    let docker = Docker::connect_with_local_defaults()
        .expect("a Docker client")
        .negotiate_version()
        .await
        .expect("the Docker engine answers");

    // dctl: etcd, one controller-manager, one agent, up before any timing.
    let mut cluster = Cluster::start("core-loop-bench").await;
    let node = cluster.start_agent("n1", &[]);
    let store = cluster.env.store().await;
    wait_until(RUN_LIMIT, || node_ready(&store, &node))
        .await
        .unwrap_or_else(|| panic!("node {node} is not Ready\n{}", cluster.logs()));
    let (label_key, run_id) = cluster.leftovers.label();
    let label = format!("{label_key}={run_id}");

    // Swarm on the same engine, left when `swarm` is dropped (also on a panic).
    let swarm = match Swarm::init(&docker).await {
        Ok(swarm) => Some(swarm),
        Err(reason) => {
            println!("Swarm side skipped: {reason}");
            results.swarm_skipped = Some(reason);
            None
        }
    };

    println!(
        "apply → all replicas running; {RUNS} runs per count, sides interleaved; image {IMAGE}"
    );
    println!("load average before: {}", load_average());
    println!("warm-up (1 replica per side, not counted)");
    dctl_run(&cluster, &store, &docker, 1, "warmup").await;
    if swarm.is_some() {
        swarm_run(&docker, 1, "warmup", &label).await;
    }
    direct_run(&docker, 1, "warmup", &label).await;

    println!(
        "\n{:>3} {:>3}  {:>8} {:>8} {:>9} | CPU ms {:>7} {:>7} {:>7} | engine {:>6} {:>6} {:>6} | {:>10} {:>11}",
        "N", "run", "dctl ms", "swarm ms", "direct ms", "dctl", "swarm", "direct", "dctl",
        "swarm", "direct", "dctl stack", "etcd writes"
    );
    for n in REPLICAS {
        for run in 1..=RUNS {
            let tag = format!("n{n}-r{run}");
            let dctl = dctl_run(&cluster, &store, &docker, n, &tag).await;
            let swarm_sample = match &swarm {
                Some(_) => Some(swarm_run(&docker, n, &tag, &label).await),
                None => None,
            };
            let direct = direct_run(&docker, n, &tag, &label).await;
            let swarm_ms = |f: fn(&Sample) -> Duration| {
                swarm_sample.map_or("-".to_string(), |s| format!("{:.0}", ms(f(&s))))
            };
            println!(
                "{n:>3} {run:>3}  {:>8.0} {:>8} {:>9.0} |        {:>7.0} {:>7} {:>7.0} |        {:>6.0} {:>6} {:>6.0} | {:>10.0} {:>11}",
                ms(dctl.sample.time),
                swarm_ms(|s| s.time),
                ms(direct.time),
                ms(dctl.sample.cpu.machine),
                swarm_ms(|s| s.cpu.machine),
                ms(direct.cpu.machine),
                ms(dctl.sample.cpu.engine),
                swarm_ms(|s| s.cpu.engine),
                ms(direct.cpu.engine),
                ms(dctl.sample.cpu.stack),
                dctl.etcd_writes,
            );
            results.dctl.entry(n).or_default().push(dctl);
            if let Some(sample) = swarm_sample {
                results.swarm.entry(n).or_default().push(sample);
            }
            results.direct.entry(n).or_default().push(direct);
        }
    }
    println!("load average after: {}", load_average());
    drop(swarm);
    drop(cluster);
}

// ---------------------------------------------------------------------------------------
// dctl

/// No `ports`: the agent would publish each on an ephemeral host port (a `docker-proxy`
/// per container), which the Swarm side cannot match here (its routing mesh needs IPVS).
/// All three sides run the same bare container.
fn service_manifest(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  replicas: {replicas}
  template:
    image: {IMAGE}
    stopGracePeriod: 2s
"
    )
}

/// `dctl apply -f` of an N-replica service, timed until its N tasks run; then deleted,
/// and waited for until its tasks and containers are gone.
async fn dctl_run(
    cluster: &Cluster,
    store: &Store,
    docker: &Docker,
    n: usize,
    tag: &str,
) -> DctlRun {
    let name = format!("web-{tag}");
    let path = cluster
        .env
        .write(&format!("{name}.yaml"), &service_manifest(&name, n));
    let path = path.to_str().expect("a UTF-8 temp path");

    let revision = cluster.env.revision().await;
    let cpu = Cpu::now();
    let start = Instant::now();
    cluster.env.dctl(&["apply", "-f", path]).await.success();
    let mut times = DctlRun {
        applied: start.elapsed(),
        ..Default::default()
    };
    let mut running = None;
    let deadline = start + RUN_LIMIT;
    while running.is_none() {
        tokio::time::sleep(POLL).await;
        let tasks = service_tasks(store, &name).await;
        let now = start.elapsed();
        let state = |t: &Task| t.status.as_ref().map_or(TaskState::New, |s| s.state);
        let all =
            |reached: &dyn Fn(&Task) -> bool| tasks.iter().filter(|t| reached(t)).count() >= n;
        // Each step implies the ones before it: a poll that sees one sees those too.
        let steps = [
            (tasks.len() >= n, &mut times.created),
            (all(&|t| t.spec.node_name.is_some()), &mut times.bound),
            (
                all(&|t| state(t) >= TaskState::Accepted),
                &mut times.accepted,
            ),
            (
                all(&|t| state(t) >= TaskState::Starting),
                &mut times.starting,
            ),
        ];
        for (done, time) in steps {
            if done && time.is_zero() {
                *time = now;
            }
        }
        if all(&|t| state(t) == TaskState::Running) {
            running = Some(now);
        }
        assert!(
            Instant::now() < deadline,
            "dctl: {n} replicas of {name} not running within {RUN_LIMIT:?}\n{}",
            cluster.logs()
        );
    }
    times.sample = Sample {
        time: running.expect("the loop ends when all run"),
        cpu: Cpu::now().since(cpu),
    };
    // Every write moves the revision by one; the bench's own reads do not.
    times.etcd_writes = cluster.env.revision().await - revision;

    cluster
        .env
        .dctl(&["delete", "service", &name, "-n", NAMESPACE])
        .await
        .success();
    let (key, value) = cluster.leftovers.label();
    let gone = wait_until(RUN_LIMIT, || async {
        let tasks = service_tasks(store, &name).await;
        let labels = [format!("{key}={value}"), format!("dctl.service={name}")];
        let containers = containers_labelled(docker, &labels).await;
        (tasks.is_empty() && containers == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "dctl: {name} not cleaned up\n{}",
        cluster.logs()
    );
    times
}

async fn service_tasks(store: &Store, service: &str) -> Vec<Task> {
    store
        .list::<Task>(Some(NAMESPACE))
        .await
        .expect("etcd answers")
        .items
        .into_iter()
        .filter(|t| t.spec.service_name == service)
        .collect()
}

async fn node_ready(store: &Store, node: &str) -> Option<()> {
    let nodes = store.list::<Node>(None).await.ok()?;
    let node = nodes.items.into_iter().find(|n| n.metadata.name == node)?;
    let ready = find_condition(&node.status?.conditions, "Ready")?.status;
    (ready == ConditionStatus::True).then_some(())
}

// ---------------------------------------------------------------------------------------
// Swarm

/// `docker service create --replicas N`, timed until N of its tasks run; then
/// removed, and waited for until its containers are gone.
async fn swarm_run(docker: &Docker, n: usize, tag: &str, label: &str) -> Sample {
    let name = format!("bench-{tag}");
    let replicas = n.to_string();
    let cpu = Cpu::now();
    let start = Instant::now();
    let create = docker_cli(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--replicas",
        &replicas,
        "--name",
        &name,
        "--container-label",
        label,
        "--stop-grace-period",
        "2s",
        IMAGE,
    ])
    .await;
    assert!(
        create.status.success(),
        "docker service create: {}",
        stderr(&create)
    );
    let filters = HashMap::from([
        ("service", vec![name.as_str()]),
        ("desired-state", vec!["running"]),
    ]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let running = wait_until(RUN_LIMIT, || async {
        let tasks = docker.list_tasks(Some(options.clone())).await.ok()?;
        let running = tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(SwarmTaskState::RUNNING)
            })
            .count();
        (running >= n).then(|| Sample {
            time: start.elapsed(),
            cpu: Cpu::now().since(cpu),
        })
    })
    .await
    .unwrap_or_else(|| {
        panic!("swarm: {n} replicas of {name} not running within {RUN_LIMIT:?}")
    });

    let remove = docker_cli(&["service", "rm", &name]).await;
    assert!(
        remove.status.success(),
        "docker service rm: {}",
        stderr(&remove)
    );
    let service_label = format!("com.docker.swarm.service.name={name}");
    let gone = wait_until(RUN_LIMIT, || async {
        (containers_labelled(docker, std::slice::from_ref(&service_label)).await == 0)
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "swarm: the containers of {name} are not gone"
    );
    running
}

// ---------------------------------------------------------------------------------------
// The Docker API directly

/// Creates and starts N containers at once, timed until the last start is answered; then
/// removes them.
async fn direct_run(docker: &Docker, n: usize, tag: &str, label: &str) -> Sample {
    let (key, value) = label.split_once('=').expect("label is key=value");
    let cpu = Cpu::now();
    let start = Instant::now();
    let ids = futures::future::join_all((0..n).map(|i| async move {
        let name = format!("bench-direct-{value}-{tag}-{i}");
        let body = ContainerCreateBody {
            image: Some(IMAGE.to_string()),
            hostname: Some(format!("direct-{tag}-{i}")),
            labels: Some(HashMap::from([(key.to_string(), value.to_string())])),
            stop_timeout: Some(2),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .unwrap_or_else(|e| panic!("direct: create {name}: {e}"));
        docker
            .start_container(&created.id, None)
            .await
            .unwrap_or_else(|e| panic!("direct: start {name}: {e}"));
        created.id
    }))
    .await;
    let sample = Sample {
        time: start.elapsed(),
        cpu: Cpu::now().since(cpu),
    };

    let remove = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    futures::future::join_all(
        ids.iter()
            .map(|id| docker.remove_container(id, Some(remove.clone()))),
    )
    .await;
    sample
}

// ---------------------------------------------------------------------------------------
// Shared

/// How many containers (running or not) carry every one of `labels`.
async fn containers_labelled(docker: &Docker, labels: &[String]) -> usize {
    let filters = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_or(usize::MAX, |list| list.len())
}

/// Polls `check` every [`POLL`] until it returns `Some`, or gives `None` after `limit`.
async fn wait_until<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

/// Linux's `/proc` counts CPU time in ticks of 1/100 s (`USER_HZ`).
const TICK: Duration = Duration::from_millis(10);

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            machine: machine_cpu(),
            engine: processes_cpu(|_, comm| comm == "dockerd" || comm == "containerd"),
            stack: processes_cpu(|ppid, _| ppid == std::process::id()),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            machine: self.machine.saturating_sub(before.machine),
            engine: self.engine.saturating_sub(before.engine),
            stack: self.stack.saturating_sub(before.stack),
        }
    }
}

/// CPU time the whole machine has spent busy (not idle, not waiting on I/O) since boot.
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0);
    TICK * u32::try_from(total - idle).unwrap_or(u32::MAX)
}

/// CPU time spent so far by the live processes for which `select(ppid, comm)` holds. The
/// dctl stack is this process's children: etcd, the controller-manager and the agent (a
/// `dctl` or `docker` CLI run has exited by the time this is read).
fn processes_cpu(select: impl Fn(u32, &str) -> bool) -> Duration {
    let mut ticks: u64 = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid … utime stime: fields 4, 14 and 15; comm may hold spaces.
        let Some((head, after_comm)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, comm)| comm);
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if field(1).is_some_and(|ppid| select(u32::try_from(ppid).unwrap_or(0), comm)) {
            ticks += field(11).unwrap_or(0) + field(12).unwrap_or(0);
        }
    }
    TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Results {
    fn print(&self) {
        println!(
            "\nmedians; targets: dctl < swarm at every N, <= 0.5x swarm at N=1, \
             <= 1.3x direct at N=30"
        );
        println!(
            "{:>3} {:>8} {:>9} {:>10} {:>11} {:>12}  {:<8} {:<14} {:<14}",
            "N",
            "dctl ms",
            "swarm ms",
            "direct ms",
            "dctl/swarm",
            "dctl/direct",
            "< swarm",
            "<= 0.5x swarm",
            "<= 1.3x direct"
        );
        for n in REPLICAS {
            let Some(runs) = self.dctl.get(&n) else {
                continue;
            };
            let dctl = median(runs.iter().map(|r| r.sample.time).collect()).expect("a run");
            let time =
                |samples: Option<&Vec<Sample>>| median(samples?.iter().map(|s| s.time).collect());
            let (swarm, direct) = (time(self.swarm.get(&n)), time(self.direct.get(&n)));
            let ratio =
                |peer: Option<Duration>| peer.map(|peer| dctl.as_secs_f64() / peer.as_secs_f64());
            let (vs_swarm, vs_direct) = (ratio(swarm), ratio(direct));
            let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
            let faster = vs_swarm.map_or("-", |r| verdict(r < 1.0));
            let half = match vs_swarm {
                Some(r) if n == 1 => verdict(r <= 0.5),
                _ => "-",
            };
            let near_limit = match vs_direct {
                Some(r) if n == 30 => verdict(r <= 1.3),
                _ => "-",
            };
            let fmt_ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0}", ms(d)));
            let fmt_x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
            println!(
                "{n:>3} {:>8.0} {:>9} {:>10} {:>11} {:>12}  {faster:<8} {half:<14} {near_limit:<14}",
                ms(dctl),
                fmt_ms(swarm),
                fmt_ms(direct),
                fmt_x(vs_swarm),
                fmt_x(vs_direct),
            );
        }
        if let Some(reason) = &self.swarm_skipped {
            println!("(Swarm skipped: {reason})");
        }

        println!(
            "\nwhere dctl's time goes (medians, ms since `dctl apply` started; a step is \
             \"all N\" as first seen by a {} ms poll), and the CPU each side's run cost",
            POLL.as_millis()
        );
        println!(
            "{:>3} {:>7} {:>7} {:>5} {:>8} {:>8} {:>7} | CPU ms {:>6} {:>6} {:>6} | engine {:>5} {:>6} {:>6} | {:>10} {:>11}",
            "N", "applied", "created", "bound", "accepted", "starting", "running", "dctl",
            "swarm", "direct", "dctl", "swarm", "direct", "dctl stack", "etcd writes"
        );
        for n in REPLICAS {
            let Some(runs) = self.dctl.get(&n) else {
                continue;
            };
            let step = |f: fn(&DctlRun) -> Duration| {
                ms(median(runs.iter().map(f).collect()).expect("a run"))
            };
            let peer = |samples: Option<&Vec<Sample>>, f: fn(&Sample) -> Duration| {
                samples
                    .and_then(|s| median(s.iter().map(f).collect()))
                    .map_or("-".to_string(), |d| format!("{:.0}", ms(d)))
            };
            let mut writes: Vec<i64> = runs.iter().map(|r| r.etcd_writes).collect();
            writes.sort_unstable();
            println!(
                "{n:>3} {:>7.0} {:>7.0} {:>5.0} {:>8.0} {:>8.0} {:>7.0} |        {:>6.0} {:>6} {:>6} |        {:>5.0} {:>6} {:>6} | {:>10.0} {:>11}",
                step(|r| r.applied),
                step(|r| r.created),
                step(|r| r.bound),
                step(|r| r.accepted),
                step(|r| r.starting),
                step(|r| r.sample.time),
                step(|r| r.sample.cpu.machine),
                peer(self.swarm.get(&n), |s| s.cpu.machine),
                peer(self.direct.get(&n), |s| s.cpu.machine),
                step(|r| r.sample.cpu.engine),
                peer(self.swarm.get(&n), |s| s.cpu.engine),
                peer(self.direct.get(&n), |s| s.cpu.engine),
                step(|r| r.sample.cpu.stack),
                writes[writes.len() / 2],
            );
        }
        println!(
            "CPU ms: both cores' busy time during the timed part, whole machine (anything else \
             running counts too); engine: dockerd + containerd alone; dctl stack: etcd + \
             controller-manager + agent alone"
        );
    }
}
