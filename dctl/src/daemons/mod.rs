//! The long-running processes: `up` (everything in one), `controller-manager`, `agent`.

pub mod agent;
pub mod controller_manager;
pub mod up;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use dctl_runtime::store::{Store, StoreError};
use tokio::sync::watch;

/// A stop signal many tasks can wait on: Ctrl-C or SIGTERM, or a parent's shutdown.
#[derive(Clone)]
pub struct Shutdown {
    stopping: watch::Receiver<bool>,
}

/// The sending half: `trigger` stops every task holding a `Shutdown` from it.
#[derive(Clone)]
pub struct ShutdownTrigger {
    stopping: Arc<watch::Sender<bool>>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.stopping.send_replace(true);
    }
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (
            ShutdownTrigger {
                stopping: Arc::new(tx),
            },
            Shutdown { stopping: rx },
        )
    }

    /// A shutdown fired by Ctrl-C or SIGTERM.
    pub fn on_signals() -> Shutdown {
        Shutdown::on_signals_with_trigger().1
    }

    /// A shutdown fired by Ctrl-C or SIGTERM, or by the returned trigger (a part of the
    /// process that cannot go on stops the rest).
    pub fn on_signals_with_trigger() -> (ShutdownTrigger, Shutdown) {
        let (trigger, shutdown) = Shutdown::new();
        let on_signal = trigger.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: signal received");
            on_signal.trigger();
        });
        (trigger, shutdown)
    }

    /// Resolves once shutdown is triggered (or its trigger is gone).
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.stopping.borrow()
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Connects to etcd, saying so and retrying with backoff while it is unreachable: a
/// daemon started before its etcd waits for it instead of exiting.
pub async fn connect_store(endpoints: &[String], shutdown: &Shutdown) -> Option<Store> {
    while_unavailable(shutdown, || Store::connect(endpoints)).await
}

/// Runs a store call, saying so and retrying with backoff while etcd is unreachable;
/// `None` at shutdown or when it fails for another reason (logged).
pub async fn while_unavailable<T, F, Fut>(shutdown: &Shutdown, call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let retried = call
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_jitter()
                .without_max_times(),
        )
        .when(StoreError::is_unavailable)
        .notify(|err, delay| tracing::warn!("{err}; retrying in {delay:?}"));
    tokio::select! {
        result = retried => match result {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::error!("{err}");
                None
            }
        },
        _ = shutdown.signalled() => None,
    }
}

/// Parses `k=v` flags (`--label zone=eu`).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// This machine's host name, the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
