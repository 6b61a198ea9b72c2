//! Lists then watches one kind, relisting when etcd has compacted past the watch.

use std::collections::VecDeque;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use dctl_apis::Resource;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::store::{keys, Store, StoreError, WatchBatch, WatchEvent};

/// What a watcher tells its consumers, kube-runtime style.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// An object was created or changed.
    Apply(K),
    /// An object was removed (the last state seen is attached).
    Delete(K),
    /// A (re)list begins: what follows until `InitDone` is the complete current state.
    Init,
    /// One object of the (re)list.
    InitApply(K),
    /// The (re)list is complete; the cache may swap it in.
    InitDone,
}

/// What to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Only this namespace; `None` (the default) watches every namespace.
    pub namespace: Option<String>,
    /// Instead of the kind's own keys, the Tasks assigned to this node (its agent's view;
    /// see `Store::bind_task`). Only meaningful for `Task`.
    pub assigned_to: Option<String>,
}

impl Config {
    /// The Tasks bound to `node`, read from its assignment keys.
    #[must_use]
    pub fn assignments(node: impl Into<String>) -> Self {
        Config {
            namespace: None,
            assigned_to: Some(node.into()),
        }
    }

    /// The etcd prefix this config covers for kind `K`.
    fn prefix<K: Resource>(&self) -> String {
        match &self.assigned_to {
            Some(node) => keys::assignments_prefix(node),
            None => keys::list_prefix(K::KIND, self.namespace.as_deref()),
        }
    }

    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    #[must_use]
    pub fn all_namespaces(mut self) -> Self {
        self.namespace = None;
        self
    }
}

/// Why the watcher paused; it retries by itself after a backoff, these are for logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("the watch of {kind} broke at revision {revision}: {source}")]
    Watch {
        kind: &'static str,
        revision: i64,
        #[source]
        source: StoreError,
    },
    /// One change could not be read; the watch goes on without it.
    #[error("skipped a change to {kind}: {source}")]
    Decode {
        kind: &'static str,
        #[source]
        source: StoreError,
    },
}

/// The watcher's backoff after a failed list or a broken watch: 200 ms doubling to 10 s,
/// with jitter so that every watcher of every process does not return at once.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Lists the kind's objects (`Init`, `InitApply`…, `InitDone`), then watches from the
/// list's revision (`Apply`, `Delete`).
///
/// # Recovery
/// When etcd has compacted the history the watch needs, it relists: a new `Init` …
/// `InitDone` that a reflector swaps in whole, so objects deleted meanwhile do not linger.
/// When etcd is unreachable it yields the error, backs off (up to 10 s) and resumes the
/// watch from the last revision seen, relisting only if that revision is gone. The stream
/// never ends.
pub fn watcher<K: Resource>(
    store: Store,
    config: Config,
) -> impl Stream<Item = Result<Event<K>, Error>> + Send {
    let state = State::<K> {
        store,
        prefix: config.prefix::<K>(),
        phase: Phase::List,
        watch: None,
        pending: VecDeque::new(),
        backoff: backoff(),
        delay: None,
        listed: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await;
        Some((item, state))
    })
}

enum Phase {
    List,
    /// Watching; `from` is the first revision not yet seen.
    Watch {
        from: i64,
    },
}

struct State<K> {
    store: Store,
    prefix: String,
    phase: Phase,
    watch: Option<BoxStream<'static, Result<WatchBatch<K>, StoreError>>>,
    pending: VecDeque<Result<Event<K>, Error>>,
    backoff: ExponentialBackoff,
    /// Wait this long before the next list or watch: set after a failure.
    delay: Option<Duration>,
    /// Whether a list has succeeded before (the next one is a relist).
    listed: bool,
}

impl<K: Resource> State<K> {
    async fn next(&mut self) -> Result<Event<K>, Error> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            let from = match self.phase {
                Phase::List => {
                    self.list().await?;
                    continue;
                }
                Phase::Watch { from } => from,
            };
            let watch = match &mut self.watch {
                Some(watch) => watch,
                None => match self.store.watch_batches::<K>(&self.prefix, from).await {
                    Ok(watch) => self.watch.insert(watch.boxed()),
                    Err(StoreError::Compacted { revision }) => {
                        self.relist_after(revision);
                        continue;
                    }
                    Err(source) => return Err(self.broken(from, source)),
                },
            };
            match watch.next().await {
                Some(Ok(batch)) => self.receive(batch, from),
                Some(Err(StoreError::Compacted { revision })) => self.relist_after(revision),
                Some(Err(source)) => return Err(self.broken(from, source)),
                None => {
                    // The store's watch ends only after an error it has already reported.
                    self.watch = None;
                    self.delay = self.backoff.next();
                }
            }
        }
    }

    async fn list(&mut self) -> Result<(), Error> {
        let kind = K::KIND.plural();
        let list = match self.store.list_under::<K>(&self.prefix).await {
            Ok(list) => list,
            Err(source) => {
                self.delay = self.backoff.next();
                return Err(Error::List { kind, source });
            }
        };
        if self.listed {
            crate::metrics::record_relist(kind);
        }
        self.listed = true;
        self.backoff = backoff();
        self.pending.push_back(Ok(Event::Init));
        self.pending
            .extend(list.items.into_iter().map(|o| Ok(Event::InitApply(o))));
        self.pending.push_back(Ok(Event::InitDone));
        self.phase = Phase::Watch {
            from: list.revision + 1,
        };
        self.watch = None;
        Ok(())
    }

    fn receive(&mut self, batch: WatchBatch<K>, from: i64) {
        let kind = K::KIND.plural();
        self.backoff = backoff();
        for event in batch.events {
            self.pending.push_back(match event {
                Ok(WatchEvent::Put(object)) => Ok(Event::Apply(object)),
                Ok(WatchEvent::Delete(object)) => Ok(Event::Delete(object)),
                Err(source) => Err(Error::Decode { kind, source }),
            });
        }
        let next = match (batch.last_revision, batch.progress) {
            (Some(last), _) => last + 1,
            (None, Some(progress)) => from.max(progress + 1),
            (None, None) => from,
        };
        self.phase = Phase::Watch { from: next };
    }

    fn relist_after(&mut self, compacted: i64) {
        tracing::info!(
            kind = K::KIND.plural(),
            compacted,
            "etcd compacted past the watch; relisting"
        );
        self.watch = None;
        self.phase = Phase::List;
    }

    fn broken(&mut self, revision: i64, source: StoreError) -> Error {
        self.watch = None;
        self.delay = self.backoff.next();
        Error::Watch {
            kind: K::KIND.plural(),
            revision,
            source,
        }
    }
}
