//! Runs a single-member etcd as a child process on free loopback ports, kind-style.
//!
//! Tests start one per test in a temp dir; `dctl up` starts one with its data under the
//! user's state directory so the cluster's desired state survives a restart.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where Debian's `etcd-server` package puts the binary; `DCTL_ETCD_BIN` overrides it.
const DEFAULT_ETCD_BIN: &str = "etcd";

/// How many times a start is tried on new ports when one was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

/// How long a fresh etcd gets to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error("cannot start `{binary}`: {source} (install it with `apt-get install etcd-server`, or set DCTL_ETCD_BIN)")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the etcd data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    #[error("etcd at {endpoint} did not become ready within {timeout:?} (exit status: {status}); its log is {log}")]
    NotReady {
        endpoint: String,
        timeout: Duration,
        status: String,
        log: PathBuf,
    },
}

/// A running etcd child process; killed when dropped.
pub struct LocalEtcd {
    child: Child,
    endpoint: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Keeps a test's temp dir alive as long as the etcd using it.
    _temp_dir: Option<tempfile::TempDir>,
}

impl LocalEtcd {
    /// An etcd with its data in a fresh temp dir, removed when this value is dropped.
    ///
    /// # Errors
    /// When the binary is missing or etcd does not answer within 20 seconds.
    pub async fn start_temporary() -> Result<LocalEtcd, LocalEtcdError> {
        let temp_dir = tempfile::Builder::new()
            .prefix("dctl-etcd-")
            .tempdir()
            .map_err(|source| LocalEtcdError::DataDir {
                dir: std::env::temp_dir(),
                source,
            })?;
        let data_dir = temp_dir.path().to_path_buf();
        let mut etcd = LocalEtcd::start(&data_dir).await?;
        etcd._temp_dir = Some(temp_dir);
        Ok(etcd)
    }

    /// An etcd keeping its data in `state_dir` (created if missing, reused if present).
    ///
    /// # Errors
    /// When the binary is missing or etcd does not answer within 20 seconds.
    pub async fn start(state_dir: &Path) -> Result<LocalEtcd, LocalEtcdError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LocalEtcdError::DataDir {
            dir: state_dir.to_path_buf(),
            source,
        })?;
        let data_dir = state_dir.join("etcd");
        let log_path = state_dir.join("etcd.log");
        let mut attempt = 1;
        loop {
            let client_port = free_port()?;
            let peer_port = free_port()?;
            let endpoint = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let child = spawn(&endpoint, &peer_url, &data_dir, &log_path)?;
            let mut etcd = LocalEtcd {
                child,
                endpoint,
                peer_url,
                data_dir: data_dir.clone(),
                log_path: log_path.clone(),
                _temp_dir: None,
            };
            match etcd.wait_ready().await {
                Ok(()) => return Ok(etcd),
                // A port found free was taken before etcd bound it (a client's ephemeral
                // port, on a busy host): other ports, a few times.
                Err(LocalEtcdError::NotReady { .. })
                    if attempt < PORT_ATTEMPTS && lost_a_port(&log_path) =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Kills etcd without giving up its ports or data, to test how others ride out an
    /// outage; `restart` brings the same member back.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts the same member again on the same ports with the same data.
    ///
    /// # Errors
    /// As for `start`.
    pub async fn restart(&mut self) -> Result<(), LocalEtcdError> {
        self.kill().await;
        self.child = spawn(
            &self.endpoint,
            &self.peer_url,
            &self.data_dir,
            &self.log_path,
        )?;
        self.wait_ready().await
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops etcd and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&mut self) -> Result<(), LocalEtcdError> {
        let log = self.log_path.clone();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(&log, status.to_string()));
            }
            if let Ok(mut client) = etcd_client::Client::connect([&self.endpoint], None).await {
                if client.status().await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&log, "still running".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn not_ready(&self, log: &Path, status: String) -> LocalEtcdError {
        LocalEtcdError::NotReady {
            endpoint: self.endpoint.clone(),
            timeout: START_TIMEOUT,
            status,
            log: log.to_path_buf(),
        }
    }
}

fn spawn(
    endpoint: &str,
    peer_url: &str,
    data_dir: &Path,
    log_path: &Path,
) -> Result<Child, LocalEtcdError> {
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|source| LocalEtcdError::DataDir {
                dir: log_path.to_path_buf(),
                source,
            })
    };
    let binary = std::env::var("DCTL_ETCD_BIN").unwrap_or_else(|_| DEFAULT_ETCD_BIN.into());
    Command::new(&binary)
        .arg("--name=dctl")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={endpoint}"))
        .arg(format!("--advertise-client-urls={endpoint}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=dctl={peer_url}"))
        .arg("--initial-cluster-state=new")
        // The peer URL changes from run to run; a reused data dir must not refuse it.
        .arg("--force-new-cluster")
        .stdin(Stdio::null())
        .stdout(Stdio::from(open_log()?))
        .stderr(Stdio::from(open_log()?))
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C goes to dctl, which stops etcd last,
        // after the controllers have let go of their leases.
        .process_group(0)
        .spawn()
        .map_err(|source| LocalEtcdError::Spawn { binary, source })
}

/// Whether the last start in the log at `log_path` failed to bind one of its ports. The
/// log is appended to across starts; the last start's lines are last.
fn lost_a_port(log_path: &Path) -> bool {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    log.lines()
        .rev()
        .take(20)
        .any(|line| line.contains("address already in use"))
}

fn free_port() -> Result<u16, LocalEtcdError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(LocalEtcdError::Port)?;
    Ok(listener.local_addr().map_err(LocalEtcdError::Port)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bind_failure_of_the_last_start_counts_as_a_lost_port() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("etcd.log");
        let bind_failure = "2026-12-07 21:03:55.168834 C | etcdmain: listen tcp \
                            127.0.0.1:57757: bind: address already in use\n";
        std::fs::write(
            &log,
            format!("I | etcdmain: etcd Version: 3.4.23\n{bind_failure}"),
        )
        .unwrap();
        assert!(lost_a_port(&log));
        // A later start that got further failed for another reason.
        let later: String = (0..30)
            .map(|i| format!("I | etcdserver: line {i}\n"))
            .collect();
        std::fs::write(&log, format!("{bind_failure}{later}")).unwrap();
        assert!(!lost_a_port(&log));
        assert!(!lost_a_port(&dir.path().join("missing.log")));
    }
}
