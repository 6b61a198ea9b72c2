//! etcd leases kept alive in the background; a key put with one vanishes when it expires.

use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::store::retry::{self, REQUEST_TIMEOUT};
use crate::store::{Store, StoreError};

/// The gRPC status code etcd answers for a lease it does not know (expired or revoked).
const GRPC_NOT_FOUND: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot grant an etcd lease of {ttl:?}: {source}")]
    Grant {
        ttl: Duration,
        #[source]
        source: StoreError,
    },
    #[error("cannot revoke etcd lease {id:x}: {source}")]
    Revoke {
        id: i64,
        #[source]
        source: StoreError,
    },
}

/// A granted lease, renewed every third of its TTL until dropped or revoked. Node liveness
/// and leader election are keys put with one: they vanish when their holder stops.
///
/// # Warning
/// Dropping a `Lease` only stops renewing it: its keys vanish once the TTL runs out.
/// [`Lease::revoke`] removes them at once.
pub struct Lease {
    id: i64,
    ttl: Duration,
    store: Store,
    alive: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds; etcd may round it up) and starts renewing it.
    ///
    /// # Errors
    /// When etcd does not answer (`Unavailable` inside) or refuses the TTL.
    pub async fn grant(store: &Store, ttl: Duration) -> Result<Lease, LeaseError> {
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let response = retry::retry(store.endpoints(), |_| {
            let mut client = store.client();
            async move { client.lease_grant(seconds, None).await }
        })
        .await
        .map_err(|source| LeaseError::Grant { ttl, source })?;
        let granted = Duration::from_secs(response.ttl().max(1) as u64);
        let (alive_tx, alive) = watch::channel(true);
        let keeper = tokio::spawn(keep_alive(
            store.clone(),
            response.id(),
            granted,
            Instant::now(),
            alive_tx,
        ));
        Ok(Lease {
            id: response.id(),
            ttl: granted,
            store: store.clone(),
            alive,
            keeper,
        })
    }

    /// The id to put keys with (`PutOptions::with_lease`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// False once renewing failed for a whole TTL or etcd said the lease is gone.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves once the lease is (or may be) gone: etcd refused to renew it, or no renewal
    /// got through for a whole TTL. Its keys are gone with it.
    pub async fn expired(&self) {
        let mut alive = self.alive.clone();
        // An error means the keeper has stopped, which it does only once the lease is lost.
        let _ = alive.wait_for(|alive| !alive).await;
    }

    /// A receiver that turns false when the lease is lost, for tasks that outlive a borrow.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.alive.clone()
    }

    /// Stops renewing and revokes the lease, deleting every key put with it.
    ///
    /// # Errors
    /// When etcd does not answer; the lease then still expires after its TTL.
    pub async fn revoke(self) -> Result<(), LeaseError> {
        self.keeper.abort();
        revoke(&self.store, self.id)
            .await
            .map_err(|source| LeaseError::Revoke {
                id: self.id,
                source,
            })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Revokes lease `id`; one that is already gone counts as revoked.
pub(crate) async fn revoke(store: &Store, id: i64) -> Result<(), StoreError> {
    let result = retry::retry(store.endpoints(), |_| {
        let mut client = store.client();
        async move { client.lease_revoke(id).await }
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(StoreError::Etcd(etcd_client::Error::GRpcStatus(status)))
            if status.code() as i32 == GRPC_NOT_FOUND =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Renews lease `id` every third of its TTL over one keep-alive stream, reopening the
/// stream when it breaks, until etcd says the lease is gone or no renewal got through
/// for a whole TTL; then flips `alive` to false.
async fn keep_alive(
    store: Store,
    id: i64,
    ttl: Duration,
    granted_at: Instant,
    alive: watch::Sender<bool>,
) {
    let period = ttl / 3;
    let mut renewed_at = granted_at;
    let mut backoff = retry::request_backoff().without_max_times().build();
    'streams: loop {
        if renewed_at.elapsed() >= ttl {
            tracing::warn!(
                lease = id,
                ?ttl,
                "no renewal got through for a whole TTL; lease lost"
            );
            break;
        }
        let sent_at = Instant::now();
        let mut client = store.client();
        let (mut keeper, mut responses) =
            match timeout(REQUEST_TIMEOUT, client.lease_keep_alive(id)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) if !retry::is_transient(&err) => {
                    tracing::warn!(lease = id, error = %err, "etcd refused to renew the lease");
                    break;
                }
                Ok(Err(_)) | Err(_) => {
                    sleep(backoff_delay(&mut backoff)).await;
                    continue;
                }
            };
        // Opening the stream renewed the lease once already.
        renewed_at = sent_at;
        backoff = retry::request_backoff().without_max_times().build();
        loop {
            sleep(period).await;
            let sent_at = Instant::now();
            let renewal = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match timeout(REQUEST_TIMEOUT, renewal).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => renewed_at = sent_at,
                Ok(Ok(Some(_))) => {
                    tracing::warn!(lease = id, "etcd says the lease has expired");
                    break 'streams;
                }
                // A broken stream or no answer: open a new one while the TTL lasts.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => continue 'streams,
            }
        }
    }
    alive.send_replace(false);
}

fn backoff_delay(backoff: &mut backon::ExponentialBackoff) -> Duration {
    backoff.next().unwrap_or(Duration::from_secs(1))
}
