//! Retries transient etcd failures with exponential backoff and jitter, then gives up as
//! `Unavailable`.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::StoreError;

/// How long one request may take before it counts as a transient failure. Generous for a
/// loaded etcd, short enough that a CLI against a dead one fails within seconds.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one store call may take in all, retries included: a call against an etcd that
/// swallows packets gives up within this, not after every attempt's full timeout.
pub(crate) const CALL_BUDGET: Duration = Duration::from_secs(8);

/// How long connecting to an endpoint may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

// gRPC status codes (the wire protocol's numbers) that mean "try again".
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// The store's one backoff policy for single requests: 50 ms doubling to 800 ms, with
/// jitter so that many clients cut off together do not retry in lockstep, 4 retries
/// (about 1.5 s of waiting in all, plus the attempts themselves).
pub(crate) fn request_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(800))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(4)
}

/// Whether a failure may go away by itself (etcd restarting, a leader election, a dropped
/// connection) rather than being the request's fault.
pub(crate) fn is_transient(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED | GRPC_CANCELLED => true,
            // tonic reports a connection that broke mid-request as Unknown with the
            // transport error as its source; etcd's own Unknowns have none.
            GRPC_UNKNOWN => status.source().is_some() || status.message().contains("transport"),
            _ => false,
        },
        _ => false,
    }
}

/// A request that did not answer within [`REQUEST_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
pub(crate) struct TimedOut(pub Duration);

/// Runs `op` until it succeeds, fails for a reason retrying will not fix, or the retries
/// are spent. `op` gets the attempt number (0 first): a compare-and-swap write uses it to
/// know that an earlier attempt may have landed although its answer was lost.
///
/// # Errors
/// `Unavailable` once the retries or [`CALL_BUDGET`] are spent; `Etcd` for a non-transient failure.
pub(crate) async fn retry<T, F, Fut>(endpoints: &[String], mut op: F) -> Result<T, StoreError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + CALL_BUDGET;
    let mut backoff = request_backoff().build();
    let mut attempt = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let timeout = REQUEST_TIMEOUT.min(left);
        let failure: Box<dyn StdError + Send + Sync> =
            match tokio::time::timeout(timeout, op(attempt)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) if is_transient(&err) => Box::new(err),
                Ok(Err(err)) => return Err(StoreError::Etcd(err)),
                Err(_) => Box::new(TimedOut(timeout)),
            };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match backoff.next().filter(|delay| *delay < left) {
            Some(delay) => {
                tracing::debug!(attempt, ?delay, error = %failure, "etcd request failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            None => {
                return Err(StoreError::Unavailable {
                    endpoints: endpoints.to_vec(),
                    source: failure,
                })
            }
        }
    }
}

/// `err` as the store reports it: transient failures are `Unavailable`.
pub(crate) fn store_error(endpoints: &[String], err: etcd_client::Error) -> StoreError {
    if is_transient(&err) {
        StoreError::Unavailable {
            endpoints: endpoints.to_vec(),
            source: Box::new(err),
        }
    } else {
        StoreError::Etcd(err)
    }
}
