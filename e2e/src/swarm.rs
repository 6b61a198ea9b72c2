//! Docker Swarm on the local engine, for benchmarks that measure dctl beside it: entered
//! for a bench's duration and always left (`docker swarm leave --force`), so the engine
//! is left as found.

use std::process::Output;
use std::time::Duration;

use bollard::models::LocalNodeState;
use bollard::Docker;

/// Swarm's bridge network, created by `docker swarm init` and left behind by `leave`.
const GWBRIDGE: &str = "docker_gwbridge";

/// This engine in Swarm mode for the bench's duration; dropping it leaves the swarm and
/// removes what `swarm init` added, so the engine is left as found.
pub struct Swarm {
    /// Whether `docker_gwbridge` was there before `init` (then it is not ours to remove).
    had_gwbridge: bool,
}

impl Swarm {
    /// `docker swarm init --advertise-addr 127.0.0.1`, unless the engine is in a swarm
    /// already: that swarm is someone else's, and the side is skipped with the reason.
    pub async fn init(docker: &Docker) -> Result<Swarm, String> {
        let info = docker
            .info()
            .await
            .map_err(|e| format!("docker info: {e}"))?;
        let state = info
            .swarm
            .and_then(|s| s.local_node_state)
            .unwrap_or(LocalNodeState::EMPTY);
        if state != LocalNodeState::INACTIVE {
            return Err(format!(
                "the engine's swarm state is {state:?}, not inactive; it is left untouched"
            ));
        }
        let had_gwbridge = docker_cli(&["network", "inspect", GWBRIDGE])
            .await
            .status
            .success();
        // The guard first: a failed or interrupted init is cleaned up too.
        let swarm = Swarm { had_gwbridge };
        let init = docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).await;
        if !init.status.success() {
            return Err(format!("docker swarm init: {}", stderr(&init)));
        }
        Ok(swarm)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let left = docker(&["swarm", "leave", "--force"]);
        println!(
            "docker swarm leave --force: {}",
            if left { "left" } else { "failed" }
        );
        if !self.had_gwbridge {
            // Its endpoints go with the swarm's containers, a moment after `leave`.
            for _ in 0..50 {
                if docker(&["network", "rm", GWBRIDGE])
                    || !docker(&["network", "inspect", GWBRIDGE])
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `docker ARGS`, to completion.
pub async fn docker_cli(args: &[&str]) -> Output {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("the docker CLI runs")
}

/// A command's standard error, trimmed.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}
