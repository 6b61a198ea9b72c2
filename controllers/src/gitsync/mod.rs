//! The gitsync controller: keeps the manifests under a path of a git repository applied.
//!
//! Each GitSync is fetched every `interval` (with jitter), at once when its spec changes or
//! its `dctl.io/reconcile-requested-at` annotation does. The commit's manifests are read
//! and validated whole with the code `dctl apply` uses (`runtime::manifest_files`), then
//! applied with the same `Applier`: a commit with any invalid document applies nothing and
//! the previous revision keeps running. Objects carry the GitSync's ownership labels;
//! those that left the repository are pruned only while they still carry them. With
//! selfHeal, a change by hand to a managed Service, Network or GitSync triggers a sync at
//! once (other kinds are put back at the next interval). A sync that changes nothing writes
//! nothing: not the objects, not the status, not an event.
//!
//! A GitSync with `prune` holds the finalizer `dctl.io/gitsync-prune`: deleting it deletes
//! the objects of its inventory that still carry its labels, then lets it go, as Flux
//! does for a Kustomization. Without `prune`, or while suspended, its objects stay.

mod commit;
mod git;
mod heal;
mod objects;
mod plan;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dctl_apis::event::{EventSource, EventType, ObjectReference};
use dctl_apis::gitsync::{
    GitSyncSpec, GitSyncStatus, InventoryEntry, SyncError, ANNOTATION_RECONCILE_REQUESTED_AT,
    FINALIZER_PRUNE,
};
use dctl_apis::{Document, GitSync, Network, Service};
use dctl_runtime::apply::{batches, Applier, Outcome, Owned, IN_FLIGHT};
use dctl_runtime::controller::{self, backoff_on_error, Action, Controller};
use dctl_runtime::events::Recorder;
use dctl_runtime::reflector::Reader;
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::ObjectKey;
use futures::stream::{FuturesOrdered, StreamExt};
use rand::Rng;
use tokio::time::Instant;

use commit::Loaded;
pub use git::{GitError, Mirror};
use status::{set_verdict, Verdict};
pub use status::{
    CONDITION_READY, CONDITION_STALLED, REASON_APPLY_FAILED, REASON_EMPTY_PATH,
    REASON_FETCH_FAILED, REASON_OWNERSHIP_CONFLICT, REASON_PATH_NOT_FOUND, REASON_SYNCED,
    REASON_VALIDATION_FAILED,
};

/// The controller's name in logs, metrics and events.
pub const COMPONENT: &str = "gitsync";

/// The gitsync controller's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where each GitSync's mirror and exported commits are kept (`<namespace>/<name>/`).
    pub cache_dir: PathBuf,
    /// How long one git command may take (a fetch from a slow remote). Default 2 minutes.
    pub git_timeout: Duration,
    /// The loop's concurrency, resync and error backoff.
    pub controller: controller::Config,
}

impl Config {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Config {
        Config {
            cache_dir: cache_dir.into(),
            git_timeout: Duration::from_secs(120),
            controller: controller::Config::default(),
        }
    }

    #[must_use]
    pub fn controller(mut self, controller: controller::Config) -> Self {
        self.controller = controller;
        self
    }

    #[must_use]
    pub fn git_timeout(mut self, timeout: Duration) -> Self {
        self.git_timeout = timeout;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gitsync {key}: {source}")]
    Fetch {
        key: ObjectKey,
        #[source]
        source: GitError,
    },
    #[error("gitsync {key}: cannot apply {object}: {source}")]
    Apply {
        key: ObjectKey,
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("gitsync {key}: cannot prune {object}: {source}")]
    Prune {
        key: ObjectKey,
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot update the finalizers of gitsync {key}: {source}")]
    WriteFinalizer {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("cannot write the status of gitsync {key}: {source}")]
    WriteStatus {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// Keeps every GitSync's repository applied until `shutdown` resolves.
///
/// # Errors
/// None today: failures are retried per GitSync with backoff.
pub async fn run(
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let controller =
        Controller::<GitSync>::for_store(COMPONENT, store.clone(), config.controller.clone());
    let context = Arc::new(Context {
        syncs: controller.reader(),
        recorder: Recorder::new(
            store.clone(),
            EventSource {
                component: COMPONENT.to_string(),
                host: String::new(),
            },
        ),
        store: store.clone(),
        config,
        memory: Mutex::new(HashMap::new()),
    });
    controller
        .with_triggers(heal::owner_triggers::<Service>(store.clone()))
        .with_triggers(heal::owner_triggers::<Network>(store.clone()))
        .with_triggers(heal::owner_triggers::<GitSync>(store))
        .with_shutdown(shutdown)
        .run(reconcile, backoff_on_error, context)
        .await;
    Ok(())
}

struct Context {
    store: Store,
    syncs: Reader<GitSync>,
    recorder: Recorder,
    config: Config,
    memory: Mutex<HashMap<ObjectKey, Memory>>,
}

/// What the controller remembers of a GitSync between syncs (lost on restart: the next
/// sync then fetches and applies everything, which writes only what differs).
#[derive(Clone, Debug, Default)]
struct Memory {
    uid: String,
    /// The generation the last fetch was for.
    generation: i64,
    sha: Option<String>,
    next_fetch: Option<Instant>,
    /// The commit's objects as this GitSync applies them, for (sha, generation).
    loaded: Option<(String, i64, Arc<Loaded>)>,
    /// The objects of the last applied revision, to tell what a new commit changed.
    applied: Option<(String, Arc<Vec<Document>>)>,
}

/// What one sync did to the objects, for its event.
#[derive(Debug, Default)]
struct Counts {
    created: usize,
    configured: usize,
    unchanged: usize,
    pruned: Vec<String>,
}

impl Counts {
    fn changed(&self) -> bool {
        self.created + self.configured + self.pruned.len() > 0
    }
}

/// What applying a commit's selected documents did.
#[derive(Default)]
struct Applied {
    counts: Counts,
    /// Objects left alone because another GitSync manages them.
    conflicts: Vec<SyncError>,
    conflicted: BTreeSet<InventoryEntry>,
    /// Every object written or found unchanged.
    entries: Vec<InventoryEntry>,
    /// The first error in the documents' order; nothing was sent after it.
    failed: Option<(InventoryEntry, StoreError)>,
}

/// Applies `selected` as `dctl apply` does: up to IN_FLIGHT objects at once, their writes
/// sharing etcd transactions, a Network alone in its place. After the first error (in the
/// documents' order) no more are sent, but those on their way are seen through, so that
/// every object written is in the inventory.
async fn apply_documents(
    applier: &Applier<'_>,
    key: &ObjectKey,
    selected: &[&Document],
) -> Applied {
    let mut applied = Applied::default();
    for batch in batches(selected) {
        // A FuturesOrdered filled by hand: a buffered stream's closure would make the
        // reconcile future not provably Send (a limit of rustc's with such closures).
        let mut documents = batch.iter();
        let mut in_flight = FuturesOrdered::new();
        loop {
            while applied.failed.is_none() && in_flight.len() < IN_FLIGHT {
                let Some(document) = documents.next() else {
                    break;
                };
                in_flight.push_back(async move {
                    (document, applier.apply_owned(&document.object, key).await)
                });
            }
            let Some((document, outcome)) = in_flight.next().await else {
                break;
            };
            let entry = plan::entry_of(&document.object);
            match outcome {
                Ok(Owned::Applied(outcome)) => {
                    match outcome {
                        Outcome::Created => applied.counts.created += 1,
                        Outcome::Configured => applied.counts.configured += 1,
                        Outcome::Unchanged => applied.counts.unchanged += 1,
                    }
                    applied.entries.push(entry);
                }
                Ok(Owned::OwnedBy(other)) => {
                    applied.conflicts.push(SyncError {
                        file: document.source.clone(),
                        document: document.index,
                        line: Some(document.line),
                        field: None,
                        message: format!("{entry} is managed by gitsync {other}: left alone"),
                    });
                    applied.conflicted.insert(entry);
                }
                Err(source) => {
                    applied.failed.get_or_insert((entry, source));
                }
            }
        }
        if applied.failed.is_some() {
            break;
        }
    }
    applied
}

async fn reconcile(key: ObjectKey, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(sync) = ctx.syncs.get(&key) else {
        ctx.forget(&key).await;
        return Ok(Action::await_change());
    };
    if sync.metadata.deletion_timestamp.is_some() {
        return finalize(&ctx, &key, &sync).await;
    }
    if holds_prune_finalizer(&sync) != wants_prune_finalizer(&sync) {
        // One write; the update's watch event brings the GitSync back for its sync.
        return set_prune_finalizer(&ctx, &sync).await;
    }
    if sync.spec.suspend {
        return Ok(Action::await_change());
    }
    let mut memory = ctx.recall(&key, &sync.metadata.uid);
    let generation = sync.metadata.generation;
    let status = sync.status.clone().unwrap_or_default();
    let mut next = status.clone();
    next.observed_generation = Some(generation);
    let requested = sync
        .metadata
        .annotations
        .get(ANNOTATION_RECONCILE_REQUESTED_AT)
        .cloned();
    let requested_now = requested.is_some() && requested != status.last_handled_reconcile_at;
    if requested_now {
        next.last_handled_reconcile_at = requested;
    }

    // Fetch when due: first sight, a new spec, a request, or the interval.
    let started = Instant::now();
    let due = memory.sha.is_none()
        || memory.generation != generation
        || requested_now
        || memory.next_fetch.is_none_or(|at| started >= at);
    if due {
        match fetch(&ctx, &key, &sync.spec).await {
            Ok(sha) => {
                let jitter = rand::rng().random::<f64>();
                memory.sha = Some(sha);
                memory.generation = generation;
                memory.next_fetch =
                    Some(started + plan::with_jitter(sync.spec.interval().as_std(), jitter));
            }
            Err(source) => {
                let verdict = Verdict::new(REASON_FETCH_FAILED, source.to_string());
                ctx.remember(&key, memory);
                ctx.finish(&sync, next, &verdict, None).await?;
                return Err(Error::Fetch { key, source });
            }
        }
    }
    let sha = memory.sha.clone().unwrap_or_default();
    let revision = plan::revision(&sync.spec.ref_, &sha);
    next.last_attempted_revision = Some(revision.clone());
    let requeue = Action::requeue(
        memory
            .next_fetch
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(started)),
    );

    let fetched = started.elapsed();
    let loaded = match ctx.load(&key, &sync, &sha, &mut memory).await {
        Ok(loaded) => loaded,
        Err(source) => {
            let verdict = Verdict::new(REASON_FETCH_FAILED, source.to_string());
            ctx.remember(&key, memory);
            ctx.finish(&sync, next, &verdict, None).await?;
            return Err(Error::Fetch { key, source });
        }
    };
    let documents = match &*loaded {
        Ok(documents) => documents,
        Err(refusal) => {
            // The previous revision keeps running, and with selfHeal it is kept as it was.
            if sync.spec.self_heal() {
                if let Some(previous) = ctx
                    .previous_documents(&key, &sync, &status, &mut memory)
                    .await
                {
                    objects::keep_running_revision(&ctx.store, &key, &previous).await?;
                }
            }
            next.errors = refusal.errors.clone();
            let running = status
                .last_applied_revision
                .as_deref()
                .map_or(String::new(), |r| format!("; {r} keeps running"));
            let first = refusal
                .errors
                .first()
                .map_or(String::new(), ToString::to_string);
            let more = match refusal.errors.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let message = format!("revision {revision} not applied: {first}{more}{running}");
            ctx.remember(&key, memory);
            ctx.finish(&sync, next, &Verdict::new(refusal.reason, message), None)
                .await?;
            return Ok(requeue);
        }
    };

    // Which objects to apply: all of them with selfHeal; without, only what a new commit
    // changed (all after a spec change), and nothing while the revision stays.
    let self_heal = sync.spec.self_heal();
    let new_spec = status.observed_generation != Some(generation);
    let new_revision = status.last_applied_revision.as_deref() != Some(revision.as_str());
    if !self_heal && !new_spec && !new_revision {
        // Back at the applied revision (a bad commit reverted, say): its errors are gone.
        next.errors.clear();
        ctx.remember(&key, memory);
        let verdict = Verdict::new(REASON_SYNCED, format!("Applied revision {revision}"));
        ctx.finish(&sync, next, &verdict, None).await?;
        return Ok(requeue);
    }
    let previous = if !self_heal && !new_spec {
        ctx.previous_documents(&key, &sync, &status, &mut memory)
            .await
    } else {
        None
    };
    let selected = plan::to_apply(
        documents,
        previous.as_deref().map(Vec::as_slice),
        !self_heal,
    );

    let read = started.elapsed();
    let applier = Applier::new(&ctx.store, documents, false);
    let Applied {
        mut counts,
        conflicts,
        conflicted,
        entries: applied,
        failed,
    } = apply_documents(&applier, &key, &selected).await;
    if let Some((entry, source)) = failed {
        // Keep what may need pruning later: the old inventory and what was applied.
        let mut inventory: BTreeSet<InventoryEntry> = status.inventory.iter().cloned().collect();
        inventory.extend(applied);
        next.inventory = inventory.into_iter().collect();
        let verdict = Verdict::new(REASON_APPLY_FAILED, format!("{entry}: {source}"));
        ctx.remember(&key, memory);
        ctx.finish(&sync, next, &verdict, None).await?;
        return Err(Error::Apply {
            key,
            object: entry.to_string(),
            source,
        });
    }

    let inventory: BTreeSet<InventoryEntry> = documents
        .iter()
        .map(|d| plan::entry_of(&d.object))
        .filter(|entry| !conflicted.contains(entry))
        .collect();
    if sync.spec.prune() {
        for entry in plan::to_prune(&status.inventory, &inventory) {
            if objects::prune(&ctx.store, &key, &entry).await? {
                counts.pruned.push(entry.to_string());
            }
        }
    }
    next.inventory = inventory.into_iter().collect();
    next.errors = conflicts;
    let verdict = if next.errors.is_empty() {
        next.last_applied_revision = Some(revision.clone());
        memory.applied = Some((revision.clone(), Arc::new(documents.clone())));
        Verdict::new(REASON_SYNCED, format!("Applied revision {revision}"))
    } else {
        let message = format!(
            "revision {revision}: {} object(s) managed by another GitSync were left alone: {}",
            next.errors.len(),
            next.errors[0]
        );
        Verdict::new(REASON_OWNERSHIP_CONFLICT, message)
    };
    // lastSyncTime moves only when something changed, so a no-change sync writes nothing.
    let moved = next.last_applied_revision != status.last_applied_revision;
    if counts.changed() || moved {
        next.last_sync_time = Some(now());
    }
    ctx.remember(&key, memory);
    let synced = (counts.changed() || moved).then(|| summary(&revision, &counts));
    ctx.finish(&sync, next, &verdict, synced.as_ref()).await?;
    if let Some(message) = &synced {
        let ms = |d: Duration| d.as_millis();
        tracing::info!(
            gitsync = %key,
            fetch_ms = ms(fetched),
            read_ms = ms(read - fetched),
            apply_ms = ms(started.elapsed() - read),
            "{message}"
        );
    }
    if !counts.pruned.is_empty() {
        let message = format!(
            "Deleted {}: they left the repository",
            counts.pruned.join(", ")
        );
        ctx.event(&sync, EventType::Normal, "Pruned", &message)
            .await;
    }
    Ok(requeue)
}

fn holds_prune_finalizer(sync: &GitSync) -> bool {
    sync.metadata
        .finalizers
        .iter()
        .any(|f| f == FINALIZER_PRUNE)
}

/// Deleting a GitSync prunes its objects iff it prunes them while it lives and is not
/// suspended (a suspended GitSync touches nothing).
fn wants_prune_finalizer(sync: &GitSync) -> bool {
    sync.spec.prune() && !sync.spec.suspend
}

async fn set_prune_finalizer(ctx: &Context, sync: &GitSync) -> Result<Action, Error> {
    let mut updated = sync.clone();
    updated.metadata.finalizers.retain(|f| f != FINALIZER_PRUNE);
    if wants_prune_finalizer(sync) {
        updated
            .metadata
            .finalizers
            .push(FINALIZER_PRUNE.to_string());
    }
    let key = ObjectKey::of(sync);
    match ctx.store.update(&updated).await {
        Ok(_) => Ok(Action::await_change()),
        // Changed meanwhile: the newer version's event brings it back.
        Err(err) if err.is_conflict() || err.is_not_found() => Ok(Action::await_change()),
        Err(source) => Err(Error::WriteFinalizer { key, source }),
    }
}

/// A GitSync being deleted: with the prune finalizer, its inventory's objects that still
/// carry its labels are deleted, then the finalizer goes and with it the GitSync.
async fn finalize(ctx: &Context, key: &ObjectKey, sync: &GitSync) -> Result<Action, Error> {
    if !holds_prune_finalizer(sync) {
        return Ok(Action::await_change());
    }
    let inventory = sync
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let mut pruned = Vec::new();
    // Everything leaves, in the order a sync prunes in (Services before Networks).
    for entry in plan::to_prune(&inventory, &BTreeSet::new()) {
        if objects::prune(&ctx.store, key, &entry).await? {
            pruned.push(entry.to_string());
        }
    }
    if !pruned.is_empty() {
        let message = format!(
            "Deleted {}: their GitSync is being deleted",
            pruned.join(", ")
        );
        ctx.event(sync, EventType::Normal, "Pruned", &message).await;
    }
    let mut released = sync.clone();
    released
        .metadata
        .finalizers
        .retain(|f| f != FINALIZER_PRUNE);
    match ctx.store.update(&released).await {
        Ok(_) => Ok(Action::await_change()),
        Err(err) if err.is_not_found() => Ok(Action::await_change()),
        Err(source) => Err(Error::WriteFinalizer {
            key: key.clone(),
            source,
        }),
    }
}

/// `Applied revision main@0123abc: 2 created, 1 configured, 40 unchanged, 1 pruned`.
fn summary(revision: &str, counts: &Counts) -> String {
    let short = match revision.rsplit_once('@') {
        Some((reference, sha)) => format!("{reference}@{}", &sha[..sha.len().min(7)]),
        None => revision.to_string(),
    };
    format!(
        "Applied revision {short}: {} created, {} configured, {} unchanged, {} pruned",
        counts.created,
        counts.configured,
        counts.unchanged,
        counts.pruned.len()
    )
}

/// Fetches the GitSync's repository and resolves its ref to a commit.
async fn fetch(ctx: &Context, key: &ObjectKey, spec: &GitSyncSpec) -> Result<String, GitError> {
    let mirror = ctx.mirror(key);
    mirror.fetch(&spec.repo).await?;
    mirror.resolve(&spec.ref_, &spec.repo).await
}

impl Context {
    fn mirror(&self, key: &ObjectKey) -> Mirror {
        let dir = self
            .config
            .cache_dir
            .join(if key.namespace.is_empty() {
                "_"
            } else {
                &key.namespace
            })
            .join(&key.name);
        Mirror::new(dir, self.config.git_timeout)
    }

    /// What was remembered of the GitSync, unless it is a new object under an old name.
    fn recall(&self, key: &ObjectKey, uid: &str) -> Memory {
        let memory = self.memory.lock().expect("memory lock");
        match memory.get(key) {
            Some(m) if m.uid == uid => m.clone(),
            _ => Memory {
                uid: uid.to_string(),
                ..Memory::default()
            },
        }
    }

    fn remember(&self, key: &ObjectKey, memory: Memory) {
        self.memory
            .lock()
            .expect("memory lock")
            .insert(key.clone(), memory);
    }

    /// A deleted GitSync: its memory and its mirror go; its objects stay (see the docs).
    async fn forget(&self, key: &ObjectKey) {
        let known = self.memory.lock().expect("memory lock").remove(key);
        if known.is_some() {
            let dir = self.mirror(key).dir().to_path_buf();
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
    }

    /// The objects of commit `sha` as the GitSync applies them, read once per commit and
    /// generation.
    async fn load(
        &self,
        key: &ObjectKey,
        sync: &GitSync,
        sha: &str,
        memory: &mut Memory,
    ) -> Result<Arc<Loaded>, GitError> {
        let generation = sync.metadata.generation;
        if let Some((s, g, loaded)) = &memory.loaded {
            if s == sha && *g == generation {
                return Ok(loaded.clone());
            }
        }
        let mirror = self.mirror(key);
        let root = mirror.checkout(sha).await?;
        let loaded = Arc::new(commit::read(root, sync.spec.clone(), key.clone()).await);
        memory.loaded = Some((sha.to_string(), generation, loaded.clone()));
        let applied = sync
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .map(plan::sha_of);
        let keep: Vec<&str> = [Some(sha), applied].into_iter().flatten().collect();
        mirror.forget_checkouts_except(&keep).await;
        Ok(loaded)
    }

    /// The objects of the last applied revision, from memory or read again from git.
    async fn previous_documents(
        &self,
        key: &ObjectKey,
        sync: &GitSync,
        status: &GitSyncStatus,
        memory: &mut Memory,
    ) -> Option<Arc<Vec<Document>>> {
        let applied = status.last_applied_revision.as_deref()?;
        if let Some((revision, documents)) = &memory.applied {
            if revision == applied {
                return Some(documents.clone());
            }
        }
        let root = self
            .mirror(key)
            .checkout(plan::sha_of(applied))
            .await
            .ok()?;
        let loaded = commit::read(root, sync.spec.clone(), key.clone()).await;
        let documents = Arc::new(loaded.ok()?);
        memory.applied = Some((applied.to_string(), documents.clone()));
        Some(documents)
    }

    /// Sets the verdict, writes the status if anything in it changed, and records the
    /// event that goes with the change: `Synced` (its message given) or `SyncFailed`.
    async fn finish(
        &self,
        sync: &GitSync,
        mut next: GitSyncStatus,
        verdict: &Verdict,
        synced: Option<&String>,
    ) -> Result<(), Error> {
        let current = sync.status.clone().unwrap_or_default();
        set_verdict(&mut next, verdict, sync.metadata.generation, now());
        if next == current {
            return Ok(());
        }
        let mut updated = sync.clone();
        updated.status = Some(next);
        self.store
            .update_status(&updated)
            .await
            .map_err(|source| Error::WriteStatus {
                key: ObjectKey::of(sync),
                source,
            })?;
        match synced {
            Some(message) => self.event(sync, EventType::Normal, "Synced", message).await,
            None if verdict.reason != REASON_SYNCED => {
                self.event(sync, EventType::Warning, "SyncFailed", &verdict.message)
                    .await;
            }
            None => {}
        }
        Ok(())
    }

    async fn event(&self, sync: &GitSync, type_: EventType, reason: &str, message: &str) {
        let object = ObjectReference::to(sync);
        if let Err(err) = self.recorder.publish(&object, type_, reason, message).await {
            tracing::warn!(gitsync = %ObjectKey::of(sync), "cannot record event {reason}: {err}");
        }
    }
}

/// Times to the millisecond, as the store writes its own timestamps.
fn now() -> dctl_apis::Time {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}
