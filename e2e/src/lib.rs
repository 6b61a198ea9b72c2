//! End-to-end test support: a real etcd per test and the built `dctl` binary.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod docker;
pub mod git_repo;
pub mod load;
pub mod stats;
pub mod swarm;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Builds the test workload image (`dctl-test/server:1`, also tagged `dctl-demo/web:1`)
/// with `hack/images.sh`, once per test process; quick when it is already built.
pub fn ensure_test_image() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("bash runs hack/images.sh");
        assert!(
            output.status.success(),
            "{} failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The `dctl` binary under test: `DCTL_BIN`, else the one cargo built next to this test
/// (`hack/test.sh` builds the workspace before running the tests).
pub fn dctl_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DCTL_BIN") {
        return PathBuf::from(bin);
    }
    let test_exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/dctl
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("dctl");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p dctl` (hack/test.sh does)",
        bin.display()
    );
    bin
}

/// One test's world: its own etcd and a scratch directory for manifests.
pub struct TestEnv {
    pub etcd: LocalEtcd,
    pub dir: TempDir,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        TestEnv {
            etcd: LocalEtcd::start_temporary().await.expect("etcd starts"),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn endpoint(&self) -> &str {
        self.etcd.endpoint()
    }

    pub async fn store(&self) -> Store {
        Store::connect(&[self.endpoint().to_string()])
            .await
            .expect("the test's etcd is reachable")
    }

    /// The etcd cluster's current revision: unchanged means nothing was written.
    pub async fn revision(&self) -> i64 {
        let mut client = self.store().await.client();
        let response = client.get("/", None).await.expect("etcd answers");
        response
            .header()
            .expect("etcd responses carry a header")
            .revision()
    }

    /// Writes a manifest into the scratch directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create manifest dir");
        }
        std::fs::write(&path, content).expect("write manifest");
        path
    }

    /// `dctl ARGS` against this test's etcd, to completion.
    pub async fn dctl(&self, args: &[&str]) -> CommandResult {
        self.dctl_with_stdin(args, None).await
    }

    /// `dctl ARGS` with `stdin` as its standard input.
    pub async fn dctl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> CommandResult {
        let mut command = self.command(args);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("dctl starts");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("dctl finishes within a minute")
            .expect("dctl runs");
        CommandResult::from(output)
    }

    /// `dctl ARGS` left running (for `get -w`), its stdout readable line by line.
    pub fn spawn_dctl(&self, args: &[&str]) -> RunningDctl {
        let mut command = self.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("dctl starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        RunningDctl { child, stdout }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(dctl_binary());
        command
            .args(args)
            .env("DCTL_ETCD", self.endpoint())
            // Never pick up an endpoint a developer's own `dctl up` recorded.
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("DCTL_LOG");
        command
    }
}

/// What a finished `dctl` printed and how it exited.
#[derive(Debug)]
pub struct CommandResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CommandResult {
    fn from(output: Output) -> Self {
        CommandResult {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl CommandResult {
    /// Panics with everything dctl printed unless it exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(self.code, 0, "dctl failed: {self:#?}");
        self
    }
}

/// A `dctl` still running.
pub struct RunningDctl {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl RunningDctl {
    /// Reads lines until one contains `needle`; returns every line read. Panics after
    /// `timeout` with what was printed so far.
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut line = String::new();
            match tokio::time::timeout_at(deadline, self.stdout.read_line(&mut line)).await {
                Ok(Ok(0)) => panic!("dctl exited before printing {needle:?}; printed {lines:#?}"),
                Ok(Ok(_)) => {
                    let found = line.contains(needle);
                    lines.push(line.trim_end().to_string());
                    if found {
                        return lines;
                    }
                }
                Ok(Err(err)) => panic!("reading dctl's output: {err}"),
                Err(_) => {
                    panic!("dctl did not print {needle:?} within {timeout:?}; printed {lines:#?}")
                }
            }
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for dctl to end on its own: what it printed from here on, and its exit code.
    /// Panics after `timeout`, killing it.
    pub async fn exit(mut self, timeout: Duration) -> CommandResult {
        use tokio::io::AsyncReadExt;
        let mut stdout = String::new();
        let ended = tokio::time::timeout(timeout, async {
            self.stdout.read_to_string(&mut stdout).await?;
            self.child.wait().await
        })
        .await;
        match ended {
            Ok(Ok(status)) => CommandResult {
                code: status.code().unwrap_or(-1),
                stdout,
                stderr: String::new(),
            },
            Ok(Err(err)) => panic!("waiting for dctl: {err}"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("dctl still running after {timeout:?}; printed {stdout:?}")
            }
        }
    }
}
