//! Watching one kind's keys from a revision on: etcd's events decoded into objects.

use dctl_apis::Resource;
use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use futures::{stream, Stream, StreamExt};

use super::{codec, keys, retry, Store, StoreError, MAX_MESSAGE};

/// One change to one object, as etcd reported it.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent<K> {
    /// Created or changed; `resourceVersion` is the change's revision.
    Put(K),
    /// Removed: the object's last state, with `resourceVersion` set to the revision of the
    /// removal (only the key's name and namespace if etcd no longer has that state).
    Delete(K),
}

/// One answer of the watch: the events of whole revisions, never half of one.
pub(crate) struct WatchBatch<K> {
    /// Each event, or why its value could not be read (the watch goes on regardless).
    pub events: Vec<Result<WatchEvent<K>, StoreError>>,
    /// The revision after which to resume so that none of these events is seen twice.
    pub last_revision: Option<i64>,
    /// A progress notification: every change up to this revision has been delivered.
    pub progress: Option<i64>,
}

impl Store {
    /// The changes to the kind's objects in `namespace` (all for `None`) from `from_revision`
    /// on (inclusive); watch from a list's `revision + 1` to see every change after it.
    ///
    /// The stream ends after an error, except `Decode` (one value that does not parse).
    ///
    /// # Errors
    /// `Compacted` (in the stream, or at once) when etcd no longer has `from_revision`:
    /// list again. `Unavailable` when etcd does not answer or drops the watch.
    pub async fn watch<K: Resource>(
        &self,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>, StoreError>> + Send + 'static, StoreError>
    {
        let prefix = keys::list_prefix(K::KIND, namespace);
        let batches = self.watch_batches::<K>(&prefix, from_revision).await?;
        Ok(batches.flat_map(|batch| match batch {
            Ok(batch) => stream::iter(batch.events),
            Err(err) => stream::iter(vec![Err(err)]),
        }))
    }

    /// The watch as etcd answers it, a batch per answer, for the watcher (which tracks
    /// revisions to resume from).
    pub(crate) async fn watch_batches<K: Resource>(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<impl Stream<Item = Result<WatchBatch<K>, StoreError>> + Send + 'static, StoreError>
    {
        let prefix = prefix.to_string();
        let options = WatchOptions::new()
            .with_range(keys::prefix_end(&prefix))
            .with_start_revision(from_revision)
            .with_prev_key()
            .with_progress_notify();
        let client = self.inner.client.watch_client();
        let watch = retry::retry(self.endpoints(), |_| {
            let mut client = client.clone().max_decoding_message_size(MAX_MESSAGE);
            let (prefix, options) = (prefix.clone(), options.clone());
            async move { client.watch(prefix, Some(options)).await }
        })
        .await?;
        let endpoints = self.inner.endpoints.clone();
        let store = self.clone();
        Ok(stream::unfold(Some(watch), move |watch| {
            let (endpoints, store) = (endpoints.clone(), store.clone());
            async move {
                let mut watch: WatchStream = watch?;
                loop {
                    let response = match watch.message().await {
                        Ok(Some(response)) => response,
                        // etcd closed the stream (shutting down): as broken as an error.
                        Ok(None) => {
                            let closed = StoreError::Unavailable {
                                endpoints: endpoints.to_vec(),
                                source: "etcd closed the watch".into(),
                            };
                            return Some((Err(closed), None));
                        }
                        Err(err) => return Some((Err(retry::store_error(&endpoints, err)), None)),
                    };
                    if response.compact_revision() != 0 {
                        let compacted = StoreError::Compacted {
                            revision: response.compact_revision(),
                        };
                        return Some((Err(compacted), None));
                    }
                    if response.canceled() {
                        let cancelled = StoreError::Unavailable {
                            endpoints: endpoints.to_vec(),
                            source: format!(
                                "etcd cancelled the watch: {}",
                                response.cancel_reason()
                            )
                            .into(),
                        };
                        return Some((Err(cancelled), None));
                    }
                    if response.created() && response.events().is_empty() {
                        continue;
                    }
                    return Some((Ok(batch(&response, &store)), Some(watch)));
                }
            }
        }))
    }
}

/// The events of one answer. Each object put is remembered for updates without a read: the
/// watch feeds the caches that controllers write back from.
fn batch<K: Resource>(response: &WatchResponse, store: &Store) -> WatchBatch<K> {
    let mut last_revision = None;
    let events = response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            last_revision = Some(kv.mod_revision());
            Some(match event.event_type() {
                EventType::Put => codec::decode(kv.key(), kv.value(), kv.mod_revision())
                    .inspect(|object| store.remember_object(object, kv.mod_revision()))
                    .map(WatchEvent::Put),
                EventType::Delete => match event.prev_kv() {
                    // A last state that does not decode still names the key that went.
                    Some(prev) => codec::decode(prev.key(), prev.value(), kv.mod_revision())
                        .or_else(|err| codec::tombstone(kv.key(), kv.mod_revision()).ok_or(err))
                        .map(WatchEvent::Delete),
                    None => codec::tombstone(kv.key(), kv.mod_revision())
                        .map(WatchEvent::Delete)
                        .ok_or_else(|| StoreError::Decode {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            source: <serde_json::Error as serde::de::Error>::custom(
                                "a deleted key that names no object",
                            ),
                        }),
                },
            })
        })
        .collect();
    // Only an empty answer on a synced watch is progress; an answer with events may carry
    // the store's revision while older events are still to come.
    let progress = (response.events().is_empty() && !response.created())
        .then(|| response.header().map(|h| h.revision()))
        .flatten();
    WatchBatch {
        events,
        last_revision,
        progress,
    }
}
