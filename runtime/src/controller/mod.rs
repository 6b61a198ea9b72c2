//! Runs a reconcile per object key from a work queue, in the manner of kube-runtime.

mod action;
mod backoff;
mod config;
mod queue;
mod trigger;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dctl_apis::{Kind, Resource};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::Instrument;

pub use action::{backoff_on_error, Action, ErrorAction};
pub use config::Config;
pub use trigger::{triggers_from_events, Trigger, TriggerReason};

use crate::metrics::{self, ControllerMetrics};
use crate::object_key::ObjectKey;
use crate::reflector::{self, reflector, Reader};
use crate::store::Store;
use crate::watcher;
use backoff::KeyBackoff;
use queue::WorkQueue;

/// How many already-arrived triggers are taken in one go before starting work: enough to
/// deduplicate a burst (a relist), few enough that finished runs are not kept waiting.
const TRIGGER_BATCH: usize = 256;

/// A control loop over the objects of kind `K` in `reader`'s cache.
///
/// Level-triggered: a trigger names a key, the reconcile reads the latest object from the
/// cache itself (it may be gone) and converges idempotently. The loop guarantees what
/// DESIGN §4 asks: one run per key at a time, triggers during a run collapse into one
/// follow-up, requeues keep the earliest deadline, failures back off per key, nothing runs
/// before the cache's first full list, and a periodic resync queues every cached key.
pub struct Controller<K: Resource> {
    name: &'static str,
    reader: Reader<K>,
    config: Config,
    triggers: Vec<BoxStream<'static, Trigger>>,
    shutdown: BoxFuture<'static, ()>,
}

impl<K: Resource> Controller<K> {
    /// A controller with no trigger sources yet (only the resync, if enabled) that runs
    /// until its shutdown signal, by default never.
    pub fn new(name: &'static str, reader: Reader<K>, config: Config) -> Self {
        Controller {
            name,
            reader,
            config,
            triggers: Vec::new(),
            shutdown: futures::future::pending().boxed(),
        }
    }

    /// A controller over every object of kind `K` in `store`, in all namespaces: the
    /// kind's watcher fills the controller's cache and triggers each object's own key.
    ///
    /// Nothing is spawned: the controller drives the watcher as it polls its triggers, so
    /// the cache lives as long as [`Controller::run`]. Get the cache with
    /// [`Controller::reader`] before running, to hand it to the reconcile's context.
    pub fn for_store(name: &'static str, store: Store, config: Config) -> Self {
        let (reader, writer) = reflector::store();
        let events = reflector(
            writer,
            watcher::watcher::<K>(store, watcher::Config::default()),
        );
        Controller::new(name, reader, config).with_triggers(triggers_from_events(events))
    }

    /// The cache the controller waits on and resyncs from.
    pub fn reader(&self) -> Reader<K> {
        self.reader.clone()
    }

    /// Adds a source of triggers: the kind's own events ([`triggers_from_events`]), owned
    /// objects mapped to their owners ([`Trigger::related`]), anything else. Sources are
    /// polled even before the cache is ready (the cache may be filled by the same stream);
    /// their keys then wait. A source that ends is dropped; the others go on.
    #[must_use]
    pub fn with_triggers(mut self, triggers: impl Stream<Item = Trigger> + Send + 'static) -> Self {
        self.triggers.push(triggers.boxed());
        self
    }

    /// Stops the controller when `signal` resolves: no new runs start, runs in flight
    /// finish, then [`Controller::run`] returns. Replaces any earlier signal.
    #[must_use]
    pub fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = signal.boxed();
        self
    }

    /// Reconciles keys as they are triggered until the shutdown signal.
    ///
    /// Each run is a task of its own (so keys run in parallel on a multi-threaded runtime)
    /// inside a `reconcile` span with the controller, kind, key and trigger reason.
    /// A failed run goes to `error_policy` ([`backoff_on_error`] by default); a run that
    /// panics backs off like an error, and the controller goes on.
    ///
    /// # Warning
    /// Dropping this future instead of signalling shutdown aborts the runs in flight at
    /// their next await point.
    pub async fn run<Ctx, R, Fut, E, P>(self, reconcile: R, error_policy: P, ctx: Arc<Ctx>)
    where
        Ctx: Send + Sync + 'static,
        R: Fn(ObjectKey, Arc<Ctx>) -> Fut,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
        P: Fn(&ObjectKey, &E, &Ctx) -> ErrorAction,
    {
        let Controller {
            name,
            reader,
            config,
            triggers,
            mut shutdown,
        } = self;
        let mut loop_state = Loop {
            name,
            kind: K::KIND,
            metrics: metrics::global().controller(name),
            queue: WorkQueue::default(),
            backoff: KeyBackoff::new(&config),
            workers: JoinSet::new(),
            running: HashMap::new(),
        };
        let mut triggers: SelectAll<_> = stream::select_all(triggers);
        let mut triggers_open = !triggers.is_empty();
        let mut resync = config.resync_period.map(resync_interval);
        let wait_ready = reader.wait_until_ready();
        tokio::pin!(wait_ready);
        let mut ready = false;
        let mut cache_gone = false;

        loop {
            let wake = loop_state.queue.next_due_after(Instant::now());
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                finished = loop_state.workers.join_next_with_id(),
                    if !loop_state.workers.is_empty() =>
                {
                    let finished = finished.expect("the set is not empty");
                    loop_state.finish(finished, &error_policy, &ctx);
                }
                trigger = triggers.next(), if triggers_open => {
                    let mut next = Some(trigger);
                    let mut taken = 0;
                    while let Some(trigger) = next {
                        match trigger {
                            Some(Trigger { key, reason }) => {
                                loop_state.queue.schedule(key, Instant::now(), reason);
                            }
                            None => {
                                triggers_open = false;
                                break;
                            }
                        }
                        taken += 1;
                        next = if taken < TRIGGER_BATCH {
                            triggers.next().now_or_never()
                        } else {
                            None
                        };
                    }
                }
                () = &mut wait_ready, if !ready && !cache_gone => {
                    // The wait also ends when the cache's writer is dropped before any list.
                    ready = reader.is_ready();
                    cache_gone = !ready;
                    if cache_gone {
                        tracing::error!(
                            controller = name,
                            kind = %K::KIND,
                            "the cache was dropped before its first list; nothing will run"
                        );
                    }
                }
                () = tick(&mut resync), if ready => loop_state.resync(&reader),
                () = sleep_until(wake) => {}
            }
            if ready {
                loop_state.start_due(config.workers(), &reconcile, &ctx);
            }
            let depth = loop_state.queue.depth(Instant::now());
            loop_state.metrics.queue_depth.set(depth as i64);
        }

        tracing::debug!(
            controller = name,
            in_flight = loop_state.workers.len(),
            "shutting down; waiting for runs in flight"
        );
        while let Some(finished) = loop_state.workers.join_next_with_id().await {
            loop_state.finish(finished, &error_policy, &ctx);
        }
        loop_state.metrics.queue_depth.set(0);
    }
}

/// What a run hands back to the loop: its result and how long it took.
type RunOutcome<E> = (Result<Action, E>, Duration);

/// The loop's mutable state, apart from its inputs.
struct Loop<E> {
    name: &'static str,
    kind: Kind,
    metrics: ControllerMetrics,
    queue: WorkQueue,
    backoff: KeyBackoff,
    workers: JoinSet<RunOutcome<E>>,
    /// The key of each run in flight, to find it again even when its task panicked.
    running: HashMap<task::Id, ObjectKey>,
}

impl<E: std::error::Error + Send + 'static> Loop<E> {
    /// Starts runs for due keys while workers are free.
    fn start_due<Ctx, R, Fut>(&mut self, workers: usize, reconcile: &R, ctx: &Arc<Ctx>)
    where
        R: Fn(ObjectKey, Arc<Ctx>) -> Fut,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        while self.workers.len() < workers {
            let Some((key, reason)) = self.queue.pop_due(Instant::now()) else {
                return;
            };
            let span = tracing::info_span!(
                "reconcile",
                controller = self.name,
                kind = %self.kind,
                key = %key,
                reason = %reason,
            );
            let run = span.in_scope(|| reconcile(key.clone(), ctx.clone()));
            let handle = self.workers.spawn(
                async move {
                    let started = Instant::now();
                    let result = run.await;
                    (result, started.elapsed())
                }
                .instrument(span),
            );
            self.running.insert(handle.id(), key);
        }
    }

    /// Queues every cached key.
    fn resync<K: Resource>(&mut self, reader: &Reader<K>) {
        let now = Instant::now();
        for object in reader.state() {
            self.queue
                .schedule(ObjectKey::of(&*object), now, TriggerReason::Resync);
        }
    }

    /// Books a finished run and schedules what it, or the error policy, asks for next.
    fn finish<Ctx, P>(
        &mut self,
        finished: Result<(task::Id, RunOutcome<E>), JoinError>,
        error_policy: &P,
        ctx: &Ctx,
    ) where
        P: Fn(&ObjectKey, &E, &Ctx) -> ErrorAction,
    {
        let (id, outcome) = match finished {
            Ok((id, outcome)) => (id, Ok(outcome)),
            Err(error) => (error.id(), Err(error)),
        };
        let key = self
            .running
            .remove(&id)
            .expect("every run's task id is recorded at spawn");
        self.queue.finish(&key);
        self.metrics.reconciles.inc();
        let now = Instant::now();

        let error_action = match outcome {
            Ok((result, elapsed)) => {
                self.metrics
                    .reconcile_duration
                    .observe(elapsed.as_secs_f64());
                match result {
                    Ok(action) => {
                        self.backoff.reset(&key);
                        if let Some(delay) = action.requeue_after() {
                            self.queue
                                .schedule(key, now + delay, TriggerReason::Requeue);
                        }
                        return;
                    }
                    Err(error) => {
                        let action = error_policy(&key, &error, ctx);
                        tracing::warn!(
                            controller = self.name,
                            %key,
                            error = &error as &dyn std::error::Error,
                            next = ?action,
                            "reconcile failed"
                        );
                        action
                    }
                }
            }
            Err(panic) => {
                tracing::error!(controller = self.name, %key, %panic, "reconcile panicked");
                ErrorAction::Backoff
            }
        };
        self.metrics.reconcile_errors.inc();
        let retry_in = match error_action {
            ErrorAction::Backoff => self.backoff.next_delay(&key),
            ErrorAction::Requeue(delay) => delay,
            ErrorAction::AwaitChange => return,
        };
        self.queue
            .schedule(key, now + retry_in, TriggerReason::Backoff);
    }
}

/// The first resync comes one period after start: the first list triggers everything.
fn resync_interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, one resync is enough; a burst of them would queue the same keys.
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Never resolves when there is no resync.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => futures::future::pending().await,
    }
}

/// Never resolves when nothing waits for a deadline.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => futures::future::pending().await,
    }
}
