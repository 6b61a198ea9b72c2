//! Finds and removes what a test created on the Docker engine, by label.

use std::process::Command;

/// The label every container and network a test run creates carries (through the agent's
/// `--container-label`), so a crashed run's leftovers can be found:
/// `docker ps -a --filter label=dctl.test`.
pub const TEST_LABEL: &str = "dctl.test";

/// How long Docker calls sent by killed daemons are given to land before the second pass.
const LATE_CREATES: std::time::Duration = std::time::Duration::from_secs(1);

/// A unique test-run id; removes everything labelled with it when dropped.
pub struct DockerLeftovers {
    pub run_id: String,
}

impl DockerLeftovers {
    /// A fresh run id; also removes leftovers of earlier runs with the same id (none, as
    /// ids are random — but `remove_all` is also what a developer runs after a crash).
    pub fn new(test_name: &str) -> Self {
        let suffix: u32 = rand_suffix();
        DockerLeftovers {
            run_id: format!("{test_name}-{suffix:08x}"),
        }
    }

    /// `dctl.test=<run id>`, for the agent's container labels.
    pub fn label(&self) -> (String, String) {
        (TEST_LABEL.to_string(), self.run_id.clone())
    }

    /// Removes every container and network labelled with this run id, twice: a create
    /// that a just-killed agent had sent still completes inside dockerd, after the first
    /// pass listed the containers (seen: a `Created` container left by a finished test).
    pub fn remove(&self) {
        let label = format!("{TEST_LABEL}={}", self.run_id);
        remove_labelled(&label);
        std::thread::sleep(LATE_CREATES);
        remove_labelled(&label);
    }
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes every container, then every network, carrying `label` (`key` or `key=value`).
pub fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    let containers = output(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<&str> = containers.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids);
        let _ = output(&args);
    }
    let networks = output(&["network", "ls", "-q", "--filter", &filter]);
    for id in networks.split_whitespace() {
        let _ = output(&["network", "rm", id]);
    }
}

fn output(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id().rotate_left(16)
}
