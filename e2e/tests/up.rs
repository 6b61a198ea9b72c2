//! `dctl up`: one command brings up etcd, the controller-manager and an agent; the demo in
//! manifests/ converges; Ctrl-C stops dctl, not the workloads; the next `up` carries on.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dctl_apis::Service;
use dctl_e2e::docker::DockerLeftovers;
use dctl_e2e::{dctl_binary, ensure_test_image};
use dctl_runtime::store::Store;
use tokio::process::{Child, Command};

fn demo_manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

struct Up {
    child: Child,
    state: PathBuf,
}

impl Up {
    fn start(state: &std::path::Path, node: &str, leftovers: &DockerLeftovers) -> Up {
        let (key, value) = leftovers.label();
        let log = std::fs::File::create(state.join(format!("up-{}.log", rand_id()))).unwrap();
        let child = Command::new(dctl_binary())
            .args([
                "up",
                "--node",
                node,
                "--container-label",
                &format!("{key}={value}"),
            ])
            .env("XDG_STATE_HOME", state)
            .env_remove("DCTL_ETCD")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Up {
            child,
            state: state.to_path_buf(),
        }
    }

    /// `dctl CLI…` as a user runs it after `up`: no --etcd, the recorded endpoint.
    async fn dctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(dctl_binary())
            .args(args)
            .env("XDG_STATE_HOME", &self.state)
            .env_remove("DCTL_ETCD")
            .output()
            .await
            .unwrap()
    }

    async fn store(&self) -> Store {
        for _ in 0..200 {
            if let Ok(endpoint) = std::fs::read_to_string(self.state.join("dctl/endpoint")) {
                if let Ok(store) = Store::connect(&[endpoint.trim().to_string()]).await {
                    return store;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dctl up recorded no reachable endpoint");
    }

    async fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id()?;
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .ok()?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()?
            .ok()?;
        status.code()
    }
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn containers(leftovers: &DockerLeftovers) -> Vec<String> {
    let (key, value) = leftovers.label();
    let out = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label={key}={value}")])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

async fn wait_ready(store: &Store) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let services = store.list::<Service>(Some("demo")).await.unwrap().items;
        let ready = services.len() == 2
            && services.iter().all(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| Some(st.ready_replicas) == s.spec.replicas)
            });
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "demo not ready: {services:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn up_runs_the_demo_and_a_second_up_adopts_it() {
    ensure_test_image();
    let leftovers = DockerLeftovers::new("up");
    let state = tempfile::tempdir().unwrap();
    let node = format!("up-{}", leftovers.run_id.rsplit('-').next().unwrap());

    let up = Up::start(state.path(), &node, &leftovers);
    let store = up.store().await;
    let applied = up
        .dctl(&["apply", "-f", demo_manifests().to_str().unwrap()])
        .await;
    assert!(applied.status.success(), "{applied:?}");
    wait_ready(&store).await;
    let table = up.dctl(&["get", "svc", "-n", "demo"]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("3/3") && table.contains("2/2"), "{table}");
    let running = containers(&leftovers);
    assert_eq!(running.len(), 5, "3 web + 2 api containers");

    assert_eq!(up.interrupt().await, Some(0), "Ctrl-C stops dctl cleanly");
    assert_eq!(
        containers(&leftovers),
        running,
        "the workloads keep running"
    );

    // The next `up` finds its data again and adopts the containers.
    let up = Up::start(state.path(), &node, &leftovers);
    let store = up.store().await;
    wait_ready(&store).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(containers(&leftovers), running, "adopted, not duplicated");

    let deleted = up
        .dctl(&["delete", "-f", demo_manifests().to_str().unwrap()])
        .await;
    assert!(deleted.status.success(), "{deleted:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !containers(&leftovers).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers left after delete"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(up.interrupt().await, Some(0));
}

/// `dctl up` on a machine lacking etcd or Docker: one line saying what to install.
async fn up_without(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(dctl_binary());
    command
        .args(["up", "--node", "nothing"])
        .env("XDG_STATE_HOME", state.path())
        .env_remove("DCTL_ETCD");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("dctl up gives up quickly")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn up_says_what_to_install_when_etcd_or_docker_is_missing() {
    let (code, stderr) = up_without(&[("DCTL_ETCD_BIN", "/nonexistent/etcd")]).await;
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("apt-get install etcd-server"), "{stderr}");

    let (code, stderr) = up_without(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).await;
    assert_eq!(code, Some(6), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker daemon"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install docker.io"), "{stderr}");
}
