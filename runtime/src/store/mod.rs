//! The typed etcd store: objects as JSON under `/dctl/v1/…`, compare-and-swap on revisions.

mod assignments;
mod codec;
mod commit;
mod error;
mod fields;
pub mod keys;
mod known;
mod modify;
pub(crate) mod retry;
mod watch;
mod write;

use std::sync::Arc;
use std::time::Duration;

use dctl_apis::Resource;
use etcd_client::{
    Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};

pub use error::StoreError;
pub(crate) use watch::WatchBatch;
pub use watch::WatchEvent;
pub(crate) use write::now;
pub use write::Deleted;

use crate::object_key::ObjectKey;
use fields::Fields;
use known::Known;
use retry::{retry, CONNECT_TIMEOUT};

/// How many objects one list request fetches; larger lists are read page by page at the
/// revision of the first page, so the result is still one consistent snapshot. etcd 3.4
/// walks the rest of the range's index for every page, so pages are large; a page whose
/// answer would exceed [`MAX_MESSAGE`] (objects near etcd's 1.5 MiB value limit) is asked
/// again at half the size.
const LIST_PAGE: i64 = 1000;

/// How many objects of a list one blocking task decodes: a page is decoded in chunks on
/// the blocking pool while the next page is fetched. Smaller lists decode in place.
const DECODE_CHUNK: usize = 128;

/// The largest response accepted: a page of big objects, or a burst of watch events.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of the dctl store; cheap to clone, every clone shares one connection.
///
/// `resourceVersion` is the key's etcd `mod_revision`: reads fill it in, writes compare it,
/// and a lost race is a [`StoreError::Conflict`], never a silent overwrite. Transient
/// failures (etcd restarting, a leader election) are retried with backoff for a few
/// seconds before they surface as [`StoreError::Unavailable`].
#[derive(Clone)]
pub struct Store {
    // etcd_client::Client is a few kilobytes of per-service handles: share one.
    inner: Arc<Connection>,
}

struct Connection {
    client: etcd_client::Client,
    kv: KvClient,
    endpoints: Arc<[String]>,
    /// What the objects lately read or written held, for updates without a read.
    known: Known,
    /// The writes waiting to go to etcd together.
    committer: commit::Committer,
}

/// The objects of one kind at one etcd revision; watch from `revision + 1` to miss nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectList<K> {
    /// Sorted by namespace, then name.
    pub items: Vec<K>,
    pub revision: i64,
}

impl Store {
    /// Connects and checks that etcd answers.
    ///
    /// # Errors
    /// `Unavailable` ("cannot reach etcd at http://…: …") when no endpoint answers within a
    /// few seconds.
    pub async fn connect(endpoints: &[String]) -> Result<Store, StoreError> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| with_scheme(e.trim())).collect();
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Unavailable {
                endpoints: endpoints.clone(),
                source,
            };
        if endpoints.is_empty() {
            return Err(unavailable("no endpoint given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // Notices a silently dead connection (a partition, a suspended host) under a
            // watch; etcd refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the majority must not serve stale watches.
            .with_require_leader(true);
        let client = etcd_client::Client::connect(&endpoints, Some(options))
            .await
            .map_err(|err| unavailable(Box::new(err)))?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let store = Store {
            inner: Arc::new(Connection {
                client,
                kv,
                endpoints: endpoints.clone().into(),
                known: Known::new(),
                committer: commit::Committer::default(),
            }),
        };
        let probe = store.retrying(|_, mut kv| async move {
            kv.get(
                keys::ROOT,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        });
        match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(unavailable(Box::new(retry::TimedOut(CONNECT_TIMEOUT)))),
        }
    }

    /// The endpoints as connected to, each with its scheme (`http://127.0.0.1:2379`).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The raw etcd client, for what the typed API does not cover (leases, benchmarks).
    pub fn client(&self) -> etcd_client::Client {
        self.inner.client.clone()
    }

    /// # Errors
    /// `NotFound` when there is no such object; `Decode` when its stored value is not valid.
    pub async fn get<K: Resource>(&self, namespace: &str, name: &str) -> Result<K, StoreError> {
        self.try_get(namespace, name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: K::KIND,
                key: ObjectKey::new(namespace, name),
            })
    }

    /// Like [`Store::get`], with a missing object as `None`.
    ///
    /// # Errors
    /// `Decode` when the stored value is not valid; `Unavailable` when etcd does not answer.
    pub async fn try_get<K: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        let key = keys::object_key(K::KIND, namespace, name)?;
        let Some(kv) = self.get_raw(&key).await? else {
            return Ok(None);
        };
        let object: K = codec::decode(kv.key(), kv.value(), kv.mod_revision())?;
        // What is read is usually written back next: remember it, to write in one trip.
        self.remember(&key, &Fields::of(&object)?, kv.mod_revision());
        Ok(Some(object))
    }

    /// Every object of the kind in `namespace` (all namespaces for `None`), as one snapshot.
    ///
    /// # Errors
    /// `Decode` when a stored value is not valid; `Unavailable` when etcd does not answer.
    pub async fn list<K: Resource>(
        &self,
        namespace: Option<&str>,
    ) -> Result<ObjectList<K>, StoreError> {
        self.list_snapshot::<K>(&keys::list_prefix(K::KIND, namespace), Remember::No)
            .await
    }

    /// Every object of the kind stored under `prefix`, as one snapshot, remembered for
    /// updates without a read: this is the watcher's list, which fills the caches that
    /// controllers write back from.
    pub(crate) async fn list_under<K: Resource>(
        &self,
        prefix: &str,
    ) -> Result<ObjectList<K>, StoreError> {
        self.list_snapshot::<K>(prefix, Remember::Yes).await
    }

    async fn list_snapshot<K: Resource>(
        &self,
        prefix: &str,
        remember: Remember,
    ) -> Result<ObjectList<K>, StoreError> {
        let end = keys::prefix_end(prefix);
        // A compaction between two pages loses the snapshot; start over a few times.
        let mut restarts = 0;
        let (mut items, revision) = loop {
            match self.list_pages::<K>(prefix, &end, remember).await {
                Err(StoreError::Compacted { .. }) if restarts < 3 => restarts += 1,
                other => break other?,
            }
        };
        // etcd's key order is nearly this one (exactly, within one namespace).
        items.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            (a.namespace(), a.name.as_str()).cmp(&(b.namespace(), b.name.as_str()))
        });
        Ok(ObjectList { items, revision })
    }

    /// The pages of one snapshot, each decoded on the blocking pool while the next one is
    /// fetched.
    async fn list_pages<K: Resource>(
        &self,
        prefix: &str,
        end: &[u8],
        remember: Remember,
    ) -> Result<(Vec<K>, i64), StoreError> {
        let mut decoding = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = LIST_PAGE;
        loop {
            let options = GetOptions::new()
                .with_range(end.to_vec())
                .with_limit(limit)
                .with_revision(revision);
            let from = start.clone();
            let result = self
                .retrying(|_, mut kv| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })
                .await;
            let mut page = match result {
                Ok(page) => page,
                Err(StoreError::Etcd(etcd_client::Error::GRpcStatus(status)))
                    if status.message().contains("compacted") =>
                {
                    return Err(StoreError::Compacted { revision });
                }
                Err(StoreError::Etcd(err)) if limit > 1 && too_large(&err) => {
                    limit /= 2;
                    continue;
                }
                Err(err) => return Err(err),
            };
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let mut batch = page.take_kvs();
            if let Some(last) = batch.last() {
                // The next page starts just after the last key of this one.
                start = last.key().to_vec();
                start.push(0);
            }
            if !more && decoding.is_empty() && batch.len() <= DECODE_CHUNK {
                // One small page: not worth a thread hop.
                return Ok((self.decode_all(&batch, remember)?, revision));
            }
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(DECODE_CHUNK));
                let (chunk, store) = (std::mem::replace(&mut batch, rest), self.clone());
                decoding.push(tokio::task::spawn_blocking(move || {
                    store.decode_all::<K>(&chunk, remember)
                }));
            }
            if !more {
                break;
            }
        }
        let mut items = Vec::new();
        for chunk in decoding {
            match chunk.await {
                Ok(decoded) => items.extend(decoded?),
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => panic!("a list's decoding task was cancelled: {err}"),
            }
        }
        Ok((items, revision))
    }

    /// Decodes listed values, remembering each when asked to.
    fn decode_all<K: Resource>(
        &self,
        kvs: &[etcd_client::KeyValue],
        remember: Remember,
    ) -> Result<Vec<K>, StoreError> {
        kvs.iter()
            .map(|kv| {
                let object: K = codec::decode(kv.key(), kv.value(), kv.mod_revision())?;
                if remember == Remember::Yes {
                    self.remember_object(&object, kv.mod_revision());
                }
                Ok(object)
            })
            .collect()
    }

    /// Remembers an object read elsewhere than by key (a list, a watch): under its own
    /// key, whatever key it was read from (a Task's assignment holds the Task).
    pub(super) fn remember_object<K: Resource>(&self, object: &K, revision: i64) {
        // An object that has no valid key or does not encode is simply not remembered.
        let parts = write::key_of(object).and_then(|key| Ok((key, Fields::of(object)?)));
        if let Ok((key, fields)) = parts {
            self.remember(&key, &fields, revision);
        }
    }

    fn known(&self) -> &Known {
        &self.inner.known
    }

    /// The raw value at `key`, if any.
    pub(crate) async fn get_raw(
        &self,
        key: &str,
    ) -> Result<Option<etcd_client::KeyValue>, StoreError> {
        let mut response = self
            .retrying(|_, mut kv| {
                let key = key.to_string();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// The value at system key `key` (see [`keys::system_key`]), first setting it to
    /// `initial` if the key does not exist: whoever comes first decides, in one
    /// transaction, and everyone after reads the same value.
    ///
    /// # Errors
    /// `Unavailable` when etcd does not answer.
    pub async fn get_or_init_system(&self, key: &str, initial: &str) -> Result<String, StoreError> {
        let response = self
            .retrying(|_, mut kv| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, initial, None)])
                    .or_else([TxnOp::get(key, None)]);
                async move { kv.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return Ok(initial.to_string());
        }
        let stored = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        // A retry after a put whose answer was lost lands here and reads that put.
        Ok(String::from_utf8_lossy(&stored.unwrap_or_default()).into_owned())
    }

    /// Runs one kv request with the store's retry policy; `op` gets the attempt number.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(u32, KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        retry(&self.inner.endpoints, |attempt| {
            op(attempt, self.inner.kv.clone())
        })
        .await
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

/// Whether a request failed because its answer exceeds [`MAX_MESSAGE`] (tonic's words).
fn too_large(err: &etcd_client::Error) -> bool {
    const GRPC_OUT_OF_RANGE: i32 = 11;
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if status.code() as i32 == GRPC_OUT_OF_RANGE
            && status.message().contains("message length too large"))
}

/// Whether a list remembers what it read, for updates without a read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Remember {
    Yes,
    No,
}

/// `127.0.0.1:2379` → `http://127.0.0.1:2379`, so messages show what was dialled.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}
