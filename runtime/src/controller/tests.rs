//! The controller loop driven through virtual time: triggers in, recorded runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dctl_apis::{Network, ObjectMeta};
use futures::channel::{mpsc, oneshot};
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use super::*;
use crate::reflector::{self, Writer};
use crate::watcher::Event;

#[derive(Debug, thiserror::Error)]
#[error("the world refused")]
struct Refused;

/// What the n-th run (from 0) of a key does: how long it works, and what it returns.
type Script = dyn Fn(&str, usize) -> (Duration, Result<Action, Refused>) + Send + Sync;

/// One run as observed, in virtual time since the test's start.
#[derive(Clone, Debug)]
struct Run {
    key: String,
    started: Duration,
    finished: Option<Duration>,
}

struct Ctx {
    script: Box<Script>,
    t0: Instant,
    runs: Mutex<Vec<Run>>,
    in_flight_total: AtomicUsize,
    max_in_flight_total: AtomicUsize,
    in_flight_per_key: Mutex<HashMap<String, usize>>,
    max_in_flight_per_key: AtomicUsize,
}

impl Ctx {
    fn new(
        script: impl Fn(&str, usize) -> (Duration, Result<Action, Refused>) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Ctx {
            script: Box::new(script),
            t0: Instant::now(),
            runs: Mutex::default(),
            in_flight_total: AtomicUsize::new(0),
            max_in_flight_total: AtomicUsize::new(0),
            in_flight_per_key: Mutex::default(),
            max_in_flight_per_key: AtomicUsize::new(0),
        })
    }

    fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }

    /// Start times of `key`'s runs, in whole milliseconds since the test's start.
    fn starts_ms(&self, key: &str) -> Vec<u128> {
        self.runs()
            .iter()
            .filter(|run| run.key == key)
            .map(|run| run.started.as_millis())
            .collect()
    }
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Refused> {
    let name = key.name;
    let index = {
        let mut runs = ctx.runs.lock().unwrap();
        let index = runs.iter().filter(|run| run.key == name).count();
        runs.push(Run {
            key: name.clone(),
            started: ctx.t0.elapsed(),
            finished: None,
        });
        index
    };
    let total = ctx.in_flight_total.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.max_in_flight_total.fetch_max(total, Ordering::SeqCst);
    let per_key = {
        let mut in_flight = ctx.in_flight_per_key.lock().unwrap();
        let count = in_flight.entry(name.clone()).or_default();
        *count += 1;
        *count
    };
    ctx.max_in_flight_per_key
        .fetch_max(per_key, Ordering::SeqCst);

    let (work, result) = (ctx.script)(&name, index);
    sleep(work).await;

    *ctx.in_flight_per_key
        .lock()
        .unwrap()
        .get_mut(&name)
        .unwrap() -= 1;
    ctx.in_flight_total.fetch_sub(1, Ordering::SeqCst);
    let mut runs = ctx.runs.lock().unwrap();
    let run = runs
        .iter_mut()
        .rfind(|run| run.key == name && run.finished.is_none())
        .unwrap();
    run.finished = Some(ctx.t0.elapsed());
    result
}

/// A controller running on its own task, with a trigger channel and a shutdown switch.
struct Running {
    triggers: mpsc::UnboundedSender<Trigger>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(name: &'static str, reader: Reader<Network>, config: Config, ctx: Arc<Ctx>) -> Self {
        let (triggers, trigger_stream) = mpsc::unbounded();
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let controller = Controller::new(name, reader, config)
            .with_triggers(trigger_stream)
            .with_shutdown(shutdown_signal.map(|_| ()));
        let task = tokio::spawn(controller.run(reconcile, backoff_on_error, ctx));
        Running {
            triggers,
            shutdown: Some(shutdown),
            task,
        }
    }

    fn trigger(&self, name: &str) {
        self.triggers
            .unbounded_send(Trigger::new(
                ObjectKey::new("demo", name),
                TriggerReason::Applied,
            ))
            .unwrap();
    }

    async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn network(name: &str) -> Network {
    Network::new(
        ObjectMeta {
            name: name.to_string(),
            namespace: Some("demo".to_string()),
            ..ObjectMeta::default()
        },
        Default::default(),
    )
}

fn list(writer: &mut Writer<Network>, names: &[&str]) {
    writer.apply_watcher_event(&Event::Init);
    for name in names {
        writer.apply_watcher_event(&Event::InitApply(network(name)));
    }
    writer.apply_watcher_event(&Event::InitDone);
}

/// A cache that has had its first list; the writer is returned so it is not dropped.
fn ready_cache(names: &[&str]) -> (Reader<Network>, Writer<Network>) {
    let (reader, mut writer) = reflector::store();
    list(&mut writer, names);
    (reader, writer)
}

fn quiet() -> Config {
    Config::default().resync_period(None)
}

fn succeed(work: Duration) -> (Duration, Result<Action, Refused>) {
    (work, Ok(Action::await_change()))
}

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn no_reconcile_before_the_first_list_and_queued_triggers_are_deduplicated() {
    let (reader, mut writer) = reflector::store();
    let ctx = Ctx::new(|_, _| succeed(Duration::ZERO));
    let controller = Running::start("test-before-ready", reader, quiet(), ctx.clone());
    for name in ["a", "a", "b", "a", "b"] {
        controller.trigger(name);
    }
    sleep(600 * S).await;
    assert_eq!(ctx.runs().len(), 0, "ran before the cache was ready");

    list(&mut writer, &["a", "b"]);
    sleep(S).await;
    assert_eq!(ctx.starts_ms("a"), [600_000]);
    assert_eq!(ctx.starts_ms("b"), [600_000]);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_triggers_already_waiting_is_one_run() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, _| succeed(S));
    let controller = Running::start("test-burst", reader, quiet(), ctx.clone());
    for name in ["a", "b", "a", "a", "b"] {
        controller.trigger(name);
    }
    sleep(60 * S).await;

    assert_eq!(ctx.starts_ms("a"), [0]);
    assert_eq!(ctx.starts_ms("b"), [0]);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_run_collapse_into_one_follow_up() {
    let (reader, _writer) = ready_cache(&["a"]);
    let ctx = Ctx::new(|_, _| succeed(10 * S));
    let controller = Running::start("test-collapse", reader, quiet(), ctx.clone());
    controller.trigger("a");
    sleep(S).await;
    for _ in 0..5 {
        controller.trigger("a");
        sleep(MS).await;
    }
    sleep(60 * S).await;

    assert_eq!(ctx.starts_ms("a"), [0, 10_000]);
    assert_eq!(ctx.max_in_flight_per_key.load(Ordering::SeqCst), 1);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_key_never_runs_twice_at_once_under_a_storm_of_triggers() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, _| succeed(7 * MS));
    let controller = Running::start("test-storm", reader, quiet(), ctx.clone());
    for i in 0..400 {
        controller.trigger(["a", "b"][i % 2]);
        if i % 3 == 0 {
            sleep(MS).await;
        }
    }
    let last_trigger = ctx.t0.elapsed();
    sleep(S).await;

    assert_eq!(ctx.max_in_flight_per_key.load(Ordering::SeqCst), 1);
    // Two keys and four workers: the keys did run side by side.
    assert_eq!(ctx.max_in_flight_total.load(Ordering::SeqCst), 2);
    let runs = ctx.runs();
    assert!(runs.iter().all(|run| run.finished.is_some()));
    for key in ["a", "b"] {
        let starts = ctx.starts_ms(key);
        // Collapsing bounds the runs by the time spent, not by the 200 triggers per key:
        // one run per 7 ms of work over ~134 ms, plus the final follow-up.
        assert!(starts.len() <= 134 / 7 + 2, "{key}: {} runs", starts.len());
        // The last trigger was not lost: a run started at or after it.
        assert!(*starts.last().unwrap() >= last_trigger.as_millis() - 7);
    }
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn distinct_keys_run_in_parallel_up_to_the_concurrency() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, _| succeed(10 * S));
    let config = quiet().concurrency(3);
    let controller = Running::start("test-parallel", reader, config, ctx.clone());
    for name in ["a", "b", "c", "d", "e"] {
        controller.trigger(name);
    }
    sleep(60 * S).await;

    let starts: Vec<_> = ctx
        .runs()
        .iter()
        .map(|run| (run.key.clone(), run.started.as_secs()))
        .collect();
    let expected: Vec<_> = [("a", 0), ("b", 0), ("c", 0), ("d", 10), ("e", 10)]
        .iter()
        .map(|(key, at)| (key.to_string(), *at))
        .collect();
    assert_eq!(starts, expected);
    assert_eq!(ctx.max_in_flight_total.load(Ordering::SeqCst), 3);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_with_jitter_and_a_success_resets() {
    let (reader, _writer) = ready_cache(&["a"]);
    // Runs 0-3 fail, 4 succeeds, 5 fails, 6 succeeds.
    let ctx = Ctx::new(|_, run| match run {
        0..=3 | 5 => (Duration::ZERO, Err(Refused)),
        _ => succeed(Duration::ZERO),
    });
    let controller = Running::start("test-backoff", reader, quiet(), ctx.clone());
    controller.trigger("a");
    sleep(60 * S).await;
    controller.trigger("a");
    sleep(60 * S).await;

    let starts = ctx.starts_ms("a");
    assert_eq!(starts.len(), 7, "{starts:?}");
    let gaps: Vec<u128> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Jitter adds [0, delay); the timer rounds up to the next millisecond.
    for (gap, base) in gaps[..4].iter().zip([100, 200, 400, 800]) {
        assert!(
            (base..2 * base + 1).contains(gap),
            "gap {gap} ms outside [{base}, {}] ms; gaps {gaps:?}",
            2 * base
        );
    }
    assert!(gaps[..4].windows(2).all(|pair| pair[0] < pair[1]));
    // The success reset the backoff: the next failure waits the minimum again.
    assert!((100..=200).contains(&gaps[5]), "gaps {gaps:?}");

    let metrics = metrics::global().controller("test-backoff");
    assert_eq!(metrics.reconciles.get(), 7);
    assert_eq!(metrics.reconcile_errors.get(), 5);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_error_policy_decides_whether_and_when_to_retry() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, _| (Duration::ZERO, Err(Refused)));
    let (_triggers_tx, triggers) = mpsc::unbounded::<Trigger>();
    let controller = Controller::new("test-policy", reader, quiet())
        .with_triggers(futures::stream::iter([
            Trigger::new(ObjectKey::new("demo", "fixed"), TriggerReason::Applied),
            Trigger::new(ObjectKey::new("demo", "hopeless"), TriggerReason::Applied),
        ]))
        .with_triggers(triggers)
        .with_shutdown(sleep(35 * S));
    let policy = |key: &ObjectKey, _: &Refused, _: &Ctx| match key.name.as_str() {
        "fixed" => ErrorAction::Requeue(10 * S),
        _ => ErrorAction::AwaitChange,
    };
    controller.run(reconcile, policy, ctx.clone()).await;

    assert_eq!(ctx.starts_ms("fixed"), [0, 10_000, 20_000, 30_000]);
    assert_eq!(ctx.starts_ms("hopeless"), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_requeue_fires_at_its_deadline() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, run| match run {
        0 | 1 => (Duration::ZERO, Ok(Action::requeue(10 * S))),
        _ => succeed(Duration::ZERO),
    });
    let controller = Running::start("test-requeue", reader, quiet(), ctx.clone());
    controller.trigger("a");
    sleep(60 * S).await;

    assert_eq!(ctx.starts_ms("a"), [0, 10_000, 20_000]);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sooner_trigger_wins_over_a_requeue_and_a_later_requeue_does_not_postpone() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, run| match run {
        // Asks for 30 s, but a trigger comes at 5 s: the run at 5 s replaces it.
        0 => (Duration::ZERO, Ok(Action::requeue(30 * S))),
        // Works 2 s, asks for 60 s; a trigger during the work wins.
        1 => (2 * S, Ok(Action::requeue(60 * S))),
        _ => succeed(Duration::ZERO),
    });
    let controller = Running::start("test-earliest", reader, quiet(), ctx.clone());
    controller.trigger("a");
    sleep(5 * S).await;
    controller.trigger("a");
    sleep(S).await;
    controller.trigger("a");
    sleep(120 * S).await;

    assert_eq!(ctx.starts_ms("a"), [0, 5_000, 7_000]);
    controller.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_resync_queues_every_cached_key_each_period() {
    let (reader, _writer) = ready_cache(&["a", "b", "c"]);
    let ctx = Ctx::new(|_, _| succeed(Duration::ZERO));
    let config = Config::default().resync_period(Some(60 * S));
    // No trigger source at all: only the resync brings work.
    let controller = Controller::new("test-resync", reader, config).with_shutdown(sleep(150 * S));
    controller
        .run(reconcile, backoff_on_error, ctx.clone())
        .await;

    for key in ["a", "b", "c"] {
        assert_eq!(ctx.starts_ms(key), [60_000, 120_000], "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_runs_in_flight_finish_and_starts_no_more() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|_, _| succeed(10 * S));
    let config = quiet().concurrency(1);
    let controller = Running::start("test-shutdown", reader, config, ctx.clone());
    controller.trigger("a");
    controller.trigger("b");
    sleep(S).await;
    controller.trigger("c");

    let stopping = Instant::now();
    controller.stop().await;
    assert_eq!(
        stopping.elapsed(),
        9 * S,
        "returned before the run in flight finished"
    );
    let runs = ctx.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].key, "a");
    assert_eq!(runs[0].finished, Some(10 * S));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_backs_off_and_the_controller_goes_on() {
    let (reader, _writer) = ready_cache(&[]);
    let ctx = Ctx::new(|key, run| {
        if key == "a" && run == 0 {
            panic!("a bug in the reconcile");
        }
        succeed(Duration::ZERO)
    });
    let controller = Running::start("test-panic", reader, quiet(), ctx.clone());
    controller.trigger("a");
    sleep(S).await;
    controller.trigger("b");
    sleep(S).await;

    let a = ctx.starts_ms("a");
    assert_eq!(a.len(), 2, "{a:?}");
    assert!((100..=200).contains(&a[1]), "{a:?}");
    assert_eq!(ctx.starts_ms("b"), [1_000]);
    assert_eq!(
        metrics::global()
            .controller("test-panic")
            .reconcile_errors
            .get(),
        1
    );
    controller.stop().await;
}
