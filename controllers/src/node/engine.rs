//! Connects to the local Docker engine, the one way every node-side controller gets it.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bollard::Docker;

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Docker daemon at {socket}: {source}")]
pub struct EngineError {
    socket: String,
    #[source]
    source: bollard::errors::Error,
}

/// The socket bollard uses unless `DOCKER_HOST` says otherwise.
fn socket() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// The local engine, speaking the newest API version both sides know (Debian's Engine
/// 20.10 stops at 1.41; without negotiation every request would be refused).
///
/// # Errors
/// When there is no engine, or it does not answer.
pub async fn connect() -> Result<Docker, EngineError> {
    let error = |source| EngineError {
        socket: socket(),
        source,
    };
    let docker = Docker::connect_with_local_defaults().map_err(error)?;
    let docker = docker.negotiate_version().await.map_err(error)?;
    docker.ping().await.map_err(error)?;
    Ok(docker)
}

/// [`connect`], saying so and retrying with backoff (up to 30 s apart) until the engine
/// answers: an agent started before Docker waits for it.
pub async fn connect_retrying() -> Docker {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    connect
        .retry(backoff)
        .notify(|err, delay| tracing::warn!("{err}; retrying in {delay:?}"))
        .await
        .expect("retries without limit never give up")
}
