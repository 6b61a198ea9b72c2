//! Stops containers with their grace period and removes them; both idempotent.

use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};
use bollard::Docker;

use super::observed::status_code;

/// Added to a stop's grace period for the request itself: Docker answers only once the
/// container is down, and bollard gives up on a request after its own timeout (2 min).
const STOP_SLACK: Duration = Duration::from_secs(30);

/// Stops container `id`: Docker sends its stop signal, then SIGKILL after `grace` (the
/// container's own stop timeout, set at create, when `None`). Returns once it is down.
/// A container already stopped or gone is not an error.
///
/// # Errors
/// When Docker does not answer or refuses.
pub async fn stop(docker: &Docker, id: &str, grace: Option<Duration>) -> Result<(), DockerError> {
    let mut options = StopContainerOptionsBuilder::new();
    let mut client = docker.clone();
    if let Some(grace) = grace {
        // Docker counts whole seconds; round up so the task gets at least its period.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        options = options.t(i32::try_from(seconds).unwrap_or(i32::MAX));
        let needed = Duration::from_secs(seconds) + STOP_SLACK;
        if needed > client.timeout() {
            client = client.with_timeout(needed);
        }
    }
    match client.stop_container(id, Some(options.build())).await {
        Err(error) if status_code(&error) == Some(404) => Ok(()),
        other => other,
    }
}

/// Removes container `id` and its anonymous volumes (named volumes stay), killing it if it
/// still runs. A container already gone or being removed is not an error.
///
/// # Errors
/// When Docker does not answer or refuses.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        // 409: "removal of container … is already in progress".
        Err(error) if matches!(status_code(&error), Some(404 | 409)) => Ok(()),
        other => other,
    }
}

/// Stops (with its own timeout) and removes a container that belongs to no assigned task.
///
/// # Errors
/// When Docker does not answer or refuses.
pub async fn remove_stray(docker: &Docker, id: &str, running: bool) -> Result<(), DockerError> {
    if running {
        stop(docker, id, None).await?;
    }
    remove(docker, id).await
}
