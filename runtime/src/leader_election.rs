//! Leader election on an etcd lease: one identity at a time holds `/dctl/v1/leases/<name>`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use dctl_apis::Time;
use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lease::{Lease, LeaseError};
use crate::store::{keys, Store, StoreError};

/// How an election is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a leader that stopped renewing (crashed, cut off) still counts as leader,
    /// and so the longest a failover takes. A leader that resigns hands over at once.
    pub lease_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Kubernetes' leaseDuration.
            lease_ttl: Duration::from_secs(15),
        }
    }
}

impl Config {
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
}

/// A failure that waiting will not fix (an unreachable etcd is waited out instead).
#[derive(Debug, thiserror::Error)]
#[error("leader election {election:?} for {identity:?} failed: {source}")]
pub struct Error {
    pub election: String,
    pub identity: String,
    #[source]
    pub source: StoreError,
}

/// What the election key holds, Kubernetes Lease style.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaderRecord {
    holder_identity: String,
    lease_ttl_seconds: u64,
    acquire_time: Time,
}

/// One candidate in one election.
pub struct LeaderElector {
    store: Store,
    election: String,
    identity: String,
    config: Config,
}

/// This identity leads until [`Leadership::lost`] resolves; dropping it or
/// [`Leadership::resign`] hands over.
pub struct Leadership {
    identity: String,
    election: String,
    lease: Option<Lease>,
    lost: watch::Receiver<bool>,
    monitor: JoinHandle<()>,
}

enum Attempt {
    Won(Leadership),
    /// Someone else leads; the key was read at this revision.
    Held {
        revision: i64,
    },
}

/// The watcher-like backoff for waiting out an unreachable etcd: 200 ms doubling to 10 s.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

impl LeaderElector {
    pub fn new(
        store: Store,
        election_name: impl Into<String>,
        identity: impl Into<String>,
        config: Config,
    ) -> Self {
        LeaderElector {
            store,
            election: election_name.into(),
            identity: identity.into(),
            config,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this identity leads: takes the election key if it is free (with a lease
    /// of `lease_ttl`), otherwise watches it and tries again when it goes.
    ///
    /// # Errors
    /// Only for what waiting will not fix; an unreachable etcd is logged and waited out.
    pub async fn acquire(&self) -> Result<Leadership, Error> {
        let key = keys::system_key("leases", &self.election);
        let mut lease = None;
        let mut backoff = backoff();
        loop {
            match self.attempt(&key, &mut lease).await {
                Ok(Attempt::Won(leadership)) => {
                    tracing::info!(election = %self.election, identity = %self.identity, "became leader");
                    return Ok(leadership);
                }
                Ok(Attempt::Held { revision }) => {
                    backoff = self::backoff();
                    // A missed event only costs a TTL's wait: try again after that anyway.
                    let _ = tokio::time::timeout(
                        self.config.lease_ttl,
                        wait_for_delete(&self.store, &key, revision + 1),
                    )
                    .await;
                }
                Err(err) if err.is_unavailable() => {
                    tracing::warn!(election = %self.election, error = %err, "cannot reach etcd to campaign; retrying");
                    tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
                }
                Err(source) => {
                    return Err(Error {
                        election: self.election.clone(),
                        identity: self.identity.clone(),
                        source,
                    })
                }
            }
        }
    }

    async fn attempt(&self, key: &str, lease: &mut Option<Lease>) -> Result<Attempt, StoreError> {
        if !lease.as_ref().is_some_and(Lease::is_alive) {
            let granted = Lease::grant(&self.store, self.config.lease_ttl)
                .await
                .map_err(|err| match err {
                    LeaseError::Grant { source, .. } | LeaseError::Revoke { source, .. } => source,
                })?;
            *lease = Some(granted);
        }
        let lease_id = lease.as_ref().map_or(0, Lease::id);
        let record = serde_json::to_vec(&LeaderRecord {
            holder_identity: self.identity.clone(),
            lease_ttl_seconds: self.config.lease_ttl.as_secs(),
            acquire_time: chrono::Utc::now(),
        })
        .expect("a leader record is plain JSON");
        let put = TxnOp::put(key, record, Some(PutOptions::new().with_lease(lease_id)));
        let response = self
            .store
            .retrying(|_, mut kv| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([put.clone()])
                    .or_else([TxnOp::get(key, None)]);
                async move { kv.txn(txn).await }
            })
            .await?;
        let header_revision = response.header().map_or(0, |h| h.revision());
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let ours = match &current {
            None => response.succeeded(),
            // Also true when an earlier try's answer was lost but its put landed.
            Some(kv) => kv.lease() == lease_id || self.take_over_own_key(key, kv, &put).await?,
        };
        if !ours {
            return Ok(Attempt::Held {
                revision: header_revision,
            });
        }
        let revision = current.map_or(header_revision, |kv| kv.mod_revision());
        Ok(Attempt::Won(Leadership::start(
            self,
            key,
            lease.take().expect("a lease was granted above"),
            revision,
        )))
    }

    /// A key held under this identity with another lease is left from an earlier run of
    /// this same candidate (restarted faster than its TTL); take it over instead of
    /// waiting for it to expire.
    async fn take_over_own_key(
        &self,
        key: &str,
        current: &KeyValue,
        put: &TxnOp,
    ) -> Result<bool, StoreError> {
        let holder = serde_json::from_slice::<LeaderRecord>(current.value())
            .map(|record| record.holder_identity)
            .unwrap_or_default();
        if holder != self.identity {
            return Ok(false);
        }
        let response = self
            .store
            .retrying(|_, mut kv| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key,
                        CompareOp::Equal,
                        current.mod_revision(),
                    )])
                    .and_then([put.clone()]);
                async move { kv.txn(txn).await }
            })
            .await?;
        Ok(response.succeeded())
    }
}

impl Leadership {
    fn start(elector: &LeaderElector, key: &str, lease: Lease, revision: i64) -> Leadership {
        let (lost_tx, lost) = watch::channel(false);
        let monitor = tokio::spawn(monitor(
            elector.store.clone(),
            key.to_string(),
            lease.id(),
            lease.subscribe(),
            revision + 1,
            lost_tx,
        ));
        Leadership {
            identity: elector.identity.clone(),
            election: elector.election.clone(),
            lease: Some(lease),
            lost,
            monitor,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn election(&self) -> &str {
        &self.election
    }

    /// False once leadership is lost.
    pub fn is_leading(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Resolves when this identity no longer leads: its lease could not be renewed, or the
    /// election key was deleted or taken. Stop acting as leader then.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the monitor stopped, which it does only after losing.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Steps down at once: revokes the lease, which deletes the election key, so the next
    /// candidate takes over without waiting out the TTL.
    ///
    /// # Errors
    /// When etcd does not answer; the others then take over once the TTL runs out.
    pub async fn resign(mut self) -> Result<(), Error> {
        self.monitor.abort();
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        lease.revoke().await.map_err(|err| Error {
            election: self.election.clone(),
            identity: self.identity.clone(),
            source: match err {
                LeaseError::Grant { source, .. } | LeaseError::Revoke { source, .. } => source,
            },
        })
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.monitor.abort();
        // Hand over now rather than after the TTL, if there is still a runtime to do it.
        if let (Some(lease), Ok(runtime)) =
            (self.lease.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = lease.revoke().await;
            });
        }
    }
}

/// The identity leading election `name`, if any.
///
/// # Errors
/// When etcd does not answer, or the key holds something else than a leader record.
pub async fn current_leader(store: &Store, name: &str) -> Result<Option<String>, StoreError> {
    let key = keys::system_key("leases", name);
    let Some(kv) = store.get_raw(&key).await? else {
        return Ok(None);
    };
    let record: LeaderRecord =
        serde_json::from_slice(kv.value()).map_err(|source| StoreError::Decode { key, source })?;
    Ok(Some(record.holder_identity))
}

/// Flips `lost` once the lease is lost or the key is no longer this lease's.
async fn monitor(
    store: Store,
    key: String,
    lease_id: i64,
    mut lease_alive: watch::Receiver<bool>,
    mut from: i64,
    lost: watch::Sender<bool>,
) {
    let mut backoff = backoff();
    loop {
        tokio::select! {
            // (The guard `wait_for` returns is not Send; drop it inside.)
            () = async { let _ = lease_alive.wait_for(|alive| !alive).await; } => break,
            still_ours = still_ours(&store, &key, lease_id, &mut from) => {
                if !still_ours {
                    break;
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
            }
        }
    }
    tracing::warn!(key, "leadership lost");
    lost.send_replace(true);
}

/// Watches `key` from `from`; false as soon as it is deleted or put under another lease,
/// true when the watch broke while the key was still ours (watch again).
async fn still_ours(store: &Store, key: &str, lease_id: i64, from: &mut i64) -> bool {
    let options = WatchOptions::new().with_start_revision(*from);
    if let Ok(mut watch) = store.client().watch(key, Some(options)).await {
        while let Ok(Some(response)) = watch.message().await {
            if response.canceled() || response.compact_revision() != 0 {
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() == EventType::Delete || kv.lease() != lease_id {
                    return false;
                }
                *from = kv.mod_revision() + 1;
            }
        }
    }
    // The watch broke: look at the key itself before watching again.
    match store.get_raw(key).await {
        Ok(Some(kv)) if kv.lease() == lease_id => {
            *from = kv.mod_revision() + 1;
            true
        }
        Ok(_) => false,
        // etcd unreachable: the lease keeper decides when that means lost.
        Err(_) => true,
    }
}

/// Resolves when `key` is deleted at or after revision `from` (or the watch breaks).
async fn wait_for_delete(store: &Store, key: &str, from: i64) {
    let options = WatchOptions::new()
        .with_start_revision(from)
        .with_filters([etcd_client::WatchFilterType::NoPut]);
    let Ok(mut watch) = store.client().watch(key, Some(options)).await else {
        return;
    };
    while let Ok(Some(response)) = watch.message().await {
        if response.canceled()
            || response.compact_revision() != 0
            || response
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
        {
            return;
        }
    }
}
