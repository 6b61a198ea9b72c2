//! Finds the etcd endpoint the CLI talks to and connects to it.

use std::path::PathBuf;

use dctl_runtime::store::Store;

use crate::exit::CliError;

/// The endpoint etcd listens on when nothing else is said.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// `--etcd`/`DCTL_ETCD` if given, else the endpoint `dctl up` recorded, else the default.
pub fn endpoints(flag: &[String]) -> Vec<String> {
    let given: Vec<String> = flag
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if !given.is_empty() {
        return given;
    }
    if let Some(recorded) = recorded_endpoint() {
        return vec![recorded];
    }
    vec![DEFAULT_ENDPOINT.to_string()]
}

/// Where `dctl up` keeps its etcd data and records the endpoint:
/// `$XDG_STATE_HOME/dctl`, else `~/.local/state/dctl`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("dctl"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state/dctl"))
}

fn recorded_endpoint() -> Option<String> {
    let text = std::fs::read_to_string(state_dir()?.join("endpoint")).ok()?;
    let endpoint = text.trim();
    (!endpoint.is_empty()).then(|| endpoint.to_string())
}

/// Connects, turning an unreachable etcd into the CLI's one-line error.
pub async fn store(endpoints: &[String]) -> Result<Store, CliError> {
    Store::connect(endpoints).await.map_err(CliError::from)
}
