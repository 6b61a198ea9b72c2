//! The exec handler: runs a command inside the container; passes when it exits 0.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;

use super::prober::ProbeResult;
use super::tcp::timed_out;

/// How much of the command's output a failure reports.
const OUTPUT_LIMIT: usize = 256;

/// Runs `command` in container `container_id` and waits up to `timeout` for it to exit.
/// A command still running at the timeout fails the probe (and is left to finish).
pub async fn exec(
    docker: &Docker,
    container_id: &str,
    command: &[String],
    timeout: Duration,
) -> ProbeResult {
    match tokio::time::timeout(timeout, run(docker, container_id, command)).await {
        Err(_) => ProbeResult::Failure(timed_out(timeout)),
        Ok(Err(error)) => ProbeResult::Failure(format!("cannot run {command:?}: {error}")),
        Ok(Ok((0, _))) => ProbeResult::Success,
        Ok(Ok((code, output))) => ProbeResult::Failure(failure(command, code, &output)),
    }
}

/// The command's exit code and its output (stdout and stderr together).
async fn run(
    docker: &Docker,
    container_id: &str,
    command: &[String],
) -> Result<(i64, String), bollard::errors::Error> {
    let options = CreateExecOptions {
        cmd: Some(command.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let created = docker.create_exec(container_id, options).await?;
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker.start_exec(&created.id, Some(start)).await?
    {
        while let Some(chunk) = stream.next().await {
            if output.len() < OUTPUT_LIMIT {
                output.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
        }
    }
    // The output ends when the process does; its exit code may lag a moment behind.
    for _ in 0..50 {
        let inspected = docker.inspect_exec(&created.id).await?;
        if inspected.running != Some(true) {
            if let Some(code) = inspected.exit_code {
                return Ok((code, output));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((-1, output))
}

/// `command ["/check"] exited with 1: not ready`.
fn failure(command: &[String], code: i64, output: &str) -> String {
    let mut output: String = output.trim().chars().take(OUTPUT_LIMIT).collect();
    output = output.replace('\n', " ");
    if output.is_empty() {
        format!("command {command:?} exited with {code}")
    } else {
        format!("command {command:?} exited with {code}: {output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_command_and_its_output() {
        let command = vec!["/check".to_string()];
        assert_eq!(
            failure(&command, 1, "not ready\nat all\n"),
            r#"command ["/check"] exited with 1: not ready at all"#
        );
        assert_eq!(
            failure(&command, 2, " "),
            r#"command ["/check"] exited with 2"#
        );
    }
}
