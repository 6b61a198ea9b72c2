//! A dctl cluster on this machine for end-to-end tests: a real etcd, `dctl
//! controller-manager` processes and `dctl agent` processes (several nodes sharing the one
//! Docker engine), all started from the built binary.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dctl_apis::Task;
use tokio::process::{Child, Command};

use crate::docker::DockerLeftovers;
use crate::{dctl_binary, TestEnv};

/// How fast failures are noticed in tests: a dead node after 5 s, a dead leader after 3 s.
const NODE_GRACE_PERIOD: &str = "5s";
const LEADER_LEASE: &str = "3s";

/// One dctl process, killed when dropped; its log is kept in the test's temp dir.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: a crash, not a clean stop (heartbeats and leases are left to expire).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGINT, as Ctrl-C; waits for the process to exit and returns its exit code.
    pub async fn interrupt(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()?
            .ok()?;
        status.code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    /// A killed agent leaves its proxy's nftables table behind (the next proxy to start
    /// would sweep it): delete it now, after the kill, so a live proxy cannot write it
    /// again.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let table = proxy_table(pid);
        let _ = self.child.start_kill();
        if let Some(table) = table {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The nftables table of the proxy in process `pid` of this pid namespace
/// (`dctl_proxy_<pid namespace>_<pid>_<start time>`), if it has one.
pub fn proxy_table(pid: u32) -> Option<String> {
    let prefix = format!("dctl_proxy_{}_{pid}_", own_pid_namespace()?);
    proxy_tables()
        .into_iter()
        .find(|table| table.starts_with(&prefix))
}

/// This process's pid namespace, as proxy tables name it (an inode number).
pub fn own_pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let namespace = link.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?;
    Some(namespace.to_string())
}

/// Every proxy's table on this host, by name; none when `nft` cannot list them.
pub fn proxy_tables() -> Vec<String> {
    let Ok(output) = std::process::Command::new("nft")
        .args(["list", "tables", "ip"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("table ip "))
        .filter(|table| table.starts_with("dctl_proxy_"))
        .map(str::to_string)
        .collect()
}

/// The rules of the proxy in process `pid` (`nft list table`), `None` when it has no
/// table.
pub fn proxy_rules(pid: u32) -> Option<String> {
    nft_table(&proxy_table(pid)?)
}

/// `nft list table ip TABLE`, `None` when there is no such table.
pub fn nft_table(table: &str) -> Option<String> {
    let output = std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A non-loopback address of this host that every machine with Docker has: that of the
/// default bridge, docker0.
pub fn docker0_address() -> IpAddr {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("ip addr show docker0");
    // `5: docker0    inet 172.17.0.1/16 brd ...`
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("docker0's address: {text:?}"))
}

/// A running cluster. Drop order matters: the daemons go first, then the Docker leftovers.
pub struct Cluster {
    pub managers: Vec<Daemon>,
    pub agents: BTreeMap<String, Daemon>,
    pub leftovers: DockerLeftovers,
    pub env: TestEnv,
    logs: u32,
}

impl Cluster {
    /// A cluster with one controller-manager and no agent yet.
    pub async fn start(test_name: &str) -> Cluster {
        crate::ensure_test_image();
        let mut cluster = Cluster {
            managers: Vec::new(),
            agents: BTreeMap::new(),
            leftovers: DockerLeftovers::new(test_name),
            env: TestEnv::start().await,
            logs: 0,
        };
        cluster.start_manager();
        cluster
    }

    /// A cluster of two nodes on this host, `n1` running the proxy on 127.0.0.1 and `n2`
    /// none (agents on one host would otherwise all listen on the same published ports),
    /// so `n2`'s tasks are reached across nodes through their host ports.
    pub async fn start_with_proxy_on_n1(test_name: &str) -> Cluster {
        Cluster::start_with_proxy_on_n1_at(test_name, "127.0.0.1".parse().unwrap()).await
    }

    /// Like [`Cluster::start_with_proxy_on_n1`], the proxy bound to `bind`.
    pub async fn start_with_proxy_on_n1_at(test_name: &str, bind: IpAddr) -> Cluster {
        Cluster::start_with_proxy_on_n1_args(test_name, &["--proxy-bind", &bind.to_string()]).await
    }

    /// Like [`Cluster::start_with_proxy_on_n1`], `n1`'s agent started with `proxy_args`.
    pub async fn start_with_proxy_on_n1_args(test_name: &str, proxy_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::start(test_name).await;
        cluster.start_agent_with("n1", proxy_args);
        cluster.start_agent_with("n2", &["--no-proxy"]);
        cluster
    }

    /// The `key=value` label this run's containers carry, for containers a test or bench
    /// creates itself (so a crashed run's leftovers are found with the rest).
    pub fn container_label(&self) -> String {
        let (key, value) = self.leftovers.label();
        format!("{key}={value}")
    }

    /// This run's name for a node: node names are unique per run, because agents of
    /// concurrent tests share one Docker engine and each owns its node's containers.
    pub fn node(&self, short: &str) -> String {
        format!(
            "{short}-{}",
            self.leftovers.run_id.rsplit('-').next().unwrap_or("x")
        )
    }

    pub fn start_manager(&mut self) {
        let identity = format!("manager-{}", self.managers.len());
        let daemon = self.spawn(&[
            "controller-manager",
            "--identity",
            &identity,
            "--node-grace-period",
            NODE_GRACE_PERIOD,
            "--leader-lease",
            LEADER_LEASE,
        ]);
        self.managers.push(daemon);
    }

    /// Starts (or restarts) the agent of node `short` with these node labels.
    pub fn start_agent(&mut self, short: &str, labels: &[(&str, &str)]) -> String {
        let node = self.node(short);
        let (key, value) = self.leftovers.label();
        let container_label = format!("{key}={value}");
        let mut args = vec![
            "agent".to_string(),
            "--node".into(),
            node.clone(),
            "--container-label".into(),
            container_label,
            // Any free port: agents of concurrent tests share this host.
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = self.spawn(&args);
        self.agents.insert(node.clone(), daemon);
        node
    }

    /// Starts (or restarts) the agent of node `short` like [`Cluster::start_agent`], with
    /// `extra` arguments after the others: the traffic tests give one agent
    /// `--proxy-bind 127.0.0.1` and the others `--no-proxy`, since agents on one host
    /// would otherwise all listen on the same published ports.
    pub fn start_agent_with(&mut self, short: &str, extra: &[&str]) -> String {
        self.start_agent_under(&[], short, extra)
    }

    /// Starts the agent of node `short` like [`Cluster::start_agent_with`], in a pid
    /// namespace of its own, as in a container (`unshare`, with its own `/proc`). Killing
    /// it kills the namespace's only process, and with it the namespace.
    pub fn start_agent_in_pid_namespace(&mut self, short: &str, extra: &[&str]) -> String {
        let unshare = ["unshare", "--pid", "--mount-proc", "--kill-child"];
        self.start_agent_under(&unshare, short, extra)
    }

    /// Starts the agent of node `short` as `wrapper` `dctl agent …` (`dctl agent …` when
    /// `wrapper` is empty).
    fn start_agent_under(&mut self, wrapper: &[&str], short: &str, extra: &[&str]) -> String {
        let node = self.node(short);
        let (key, value) = self.leftovers.label();
        let container_label = format!("{key}={value}");
        let mut args = vec![
            "agent",
            "--node",
            &node,
            "--container-label",
            &container_label,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let daemon = self.spawn_under(wrapper, &args);
        self.agents.insert(node.clone(), daemon);
        node
    }

    /// Kills a node's agent as a crash would (its containers keep running).
    pub async fn kill_agent(&mut self, node: &str) {
        if let Some(mut agent) = self.agents.remove(node) {
            agent.kill().await;
        }
    }

    fn spawn(&mut self, args: &[&str]) -> Daemon {
        self.spawn_under(&[], args)
    }

    /// `dctl ARGS`, or `WRAPPER… dctl ARGS`.
    fn spawn_under(&mut self, wrapper: &[&str], args: &[&str]) -> Daemon {
        self.logs += 1;
        let log = self
            .env
            .dir
            .path()
            .join(format!("daemon-{}-{}.log", self.logs, args[0]));
        let file = std::fs::File::create(&log).expect("create daemon log");
        let err = file.try_clone().expect("clone log handle");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(dctl_binary());
                command
            }
            None => Command::new(dctl_binary()),
        };
        let child = command
            .args(args)
            .env("DCTL_ETCD", self.env.endpoint())
            .env("XDG_STATE_HOME", self.env.dir.path().join("state"))
            .env("DCTL_LOG", "info,dctl_runtime=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("dctl starts");
        Daemon { child, log }
    }

    /// Every daemon's log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for daemon in self.managers.iter().chain(self.agents.values()) {
            out.push_str(&format!(
                "==> {}\n{}\n",
                daemon.log.display(),
                daemon.log_text()
            ));
        }
        out
    }

    /// Writes `yaml` as `file` in the test's directory and applies it with `dctl apply -f`;
    /// panics unless that succeeds.
    pub async fn apply(&self, file: &str, yaml: &str) {
        let path = self.env.write(file, yaml);
        self.env
            .dctl(&["apply", "-f", path.to_str().unwrap()])
            .await
            .success();
    }

    /// Waits until exactly `n` of the run's containers run (of `service`, if given);
    /// returns them.
    pub async fn running(
        &self,
        service: Option<&str>,
        n: usize,
        timeout: Duration,
    ) -> Vec<Container> {
        let what = match service {
            Some(service) => format!("{n} running containers of {service}"),
            None => format!("{n} running containers"),
        };
        self.wait_for(&what, timeout, || async {
            let containers: Vec<Container> = self
                .containers()
                .into_iter()
                .filter(|c| service.is_none_or(|s| c.service == s))
                .collect();
            (containers.len() == n).then_some(containers)
        })
        .await
    }

    /// The Tasks stored in `namespace`.
    pub async fn tasks(&self, namespace: &str) -> Vec<Task> {
        self.env
            .store()
            .await
            .list::<Task>(Some(namespace))
            .await
            .expect("tasks listed")
            .items
    }

    /// The ids of this run's running containers, with their labels.
    pub fn containers(&self) -> Vec<Container> {
        let (key, value) = self.leftovers.label();
        let output = std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label={key}={value}"),
                "--format",
                "{{.ID}}\t{{.Label \"dctl.node\"}}\t{{.Label \"dctl.service\"}}\t{{.Label \"dctl.task\"}}",
            ])
            .output()
            .expect("docker ps runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                Some(Container {
                    id: fields.next()?.to_string(),
                    node: fields.next()?.to_string(),
                    service: fields.next()?.to_string(),
                    task: fields.next()?.to_string(),
                })
            })
            .collect()
    }

    /// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with
    /// `what` and the daemons' logs.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A running container of the test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub node: String,
    pub service: String,
    pub task: String,
}
