//! The heartbeat keys as the node-lifecycle controller sees them: listed, then watched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use dctl_apis::Time;
use dctl_runtime::controller::{Trigger, TriggerReason};
use dctl_runtime::store::Store;
use dctl_runtime::ObjectKey;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::now;
use crate::node::registration::heartbeat_prefix;

/// How long one etcd request of the watch may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes whose heartbeat key exists, as the watch last saw them.
#[derive(Default)]
pub(super) struct Heartbeats {
    state: Mutex<HeartbeatState>,
    listed: watch::Sender<bool>,
}

#[derive(Default)]
struct HeartbeatState {
    alive: HashSet<String>,
    /// When the watch saw each gone key go (or, for one gone while the watch was down,
    /// when the relist noticed).
    expired_at: HashMap<String, Time>,
}

impl Heartbeats {
    pub(super) async fn wait_until_listed(&self) {
        let mut listed = self.listed.subscribe();
        // The sender lives in `self`, so the wait only ends by being listed.
        let _ = listed.wait_for(|listed| *listed).await;
    }

    pub(super) fn is_alive(&self, node: &str) -> bool {
        self.lock().alive.contains(node)
    }

    pub(super) fn expired_at(&self, node: &str) -> Option<Time> {
        self.lock().expired_at.get(node).copied()
    }

    /// Swaps in a full list; returns the nodes whose liveness changed.
    fn replace(&self, alive: HashSet<String>) -> Vec<String> {
        let now = now();
        let mut state = self.lock();
        let mut changed: Vec<String> = state.alive.symmetric_difference(&alive).cloned().collect();
        let gone: Vec<String> = state.alive.difference(&alive).cloned().collect();
        for node in gone {
            state.expired_at.insert(node, now);
        }
        for node in &alive {
            state.expired_at.remove(node);
        }
        state.alive = alive;
        drop(state);
        self.listed.send_replace(true);
        changed.sort();
        changed
    }

    fn put(&self, node: &str) {
        let mut state = self.lock();
        state.alive.insert(node.to_string());
        state.expired_at.remove(node);
    }

    fn delete(&self, node: &str) {
        let mut state = self.lock();
        state.alive.remove(node);
        state.expired_at.insert(node.to_string(), now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeartbeatState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Lists the heartbeat keys, then watches them from the list's revision, relisting after a
/// compaction or a broken watch; every change triggers its node.
pub(super) async fn watch_heartbeats(
    store: Store,
    heartbeats: Arc<Heartbeats>,
    triggers: mpsc::UnboundedSender<Trigger>,
) {
    let prefix = heartbeat_prefix();
    let mut backoff = heartbeat_watch_backoff();
    let trigger = |node: &str, reason: TriggerReason| {
        // The controller is gone when this fails; the task is about to be aborted.
        let _ = triggers.send(Trigger::new(ObjectKey::new("", node), reason));
    };
    loop {
        if let Err(reason) = list_and_watch(&store, &prefix, &heartbeats, &trigger).await {
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tracing::warn!(%reason, ?delay, "heartbeat watch broke; relisting");
            tokio::time::sleep(delay).await;
        } else {
            backoff = heartbeat_watch_backoff();
        }
    }
}

/// 200 ms doubling to 10 s, with jitter, as the store's watcher does.
fn heartbeat_watch_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// One list and the watch after it; returns when the watch must start over.
async fn list_and_watch(
    store: &Store,
    prefix: &str,
    heartbeats: &Heartbeats,
    trigger: &impl Fn(&str, TriggerReason),
) -> Result<(), String> {
    let mut client = store.client();
    let options = GetOptions::new().with_prefix().with_keys_only();
    let listed = tokio::time::timeout(REQUEST_TIMEOUT, client.get(prefix, Some(options)))
        .await
        .map_err(|_| format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let alive = listed
        .kvs()
        .iter()
        .filter_map(|kv| node_of(kv.key(), prefix))
        .collect();
    for node in heartbeats.replace(alive) {
        trigger(&node, TriggerReason::Listed);
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watch = tokio::time::timeout(REQUEST_TIMEOUT, client.watch(prefix, Some(options)))
        .await
        .map_err(|_| format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    loop {
        let response = match watch.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("etcd closed the watch".to_string()),
            Err(error) => return Err(error.to_string()),
        };
        if response.compact_revision() != 0 {
            // The history is gone: a fresh list is exact.
            return Ok(());
        }
        if response.canceled() {
            return Err(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            ));
        }
        for event in response.events() {
            let Some(node) = event.kv().and_then(|kv| node_of(kv.key(), prefix)) else {
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    heartbeats.put(&node);
                    trigger(&node, TriggerReason::Applied);
                }
                EventType::Delete => {
                    heartbeats.delete(&node);
                    trigger(&node, TriggerReason::Deleted);
                }
            }
        }
    }
}

fn node_of(key: &[u8], prefix: &str) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(prefix)
        .filter(|node| !node.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_heartbeats() {
        let heartbeats = Heartbeats::default();
        let nodes = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert_eq!(heartbeats.replace(nodes(&["a", "b"])), ["a", "b"]);
        assert!(heartbeats.is_alive("a"));
        heartbeats.delete("a");
        assert!(!heartbeats.is_alive("a"));
        assert!(heartbeats.expired_at("a").is_some());
        heartbeats.put("a");
        assert_eq!(heartbeats.expired_at("a"), None);
        // A relist notices what went while the watch was down, and what came.
        assert_eq!(heartbeats.replace(nodes(&["a", "c"])), ["b", "c"]);
        assert!(heartbeats.expired_at("b").is_some());
        assert_eq!(
            node_of(b"/dctl/v1/heartbeats/n1", "/dctl/v1/heartbeats/").as_deref(),
            Some("n1")
        );
        assert_eq!(
            node_of(b"/dctl/v1/heartbeats/", "/dctl/v1/heartbeats/"),
            None
        );
    }
}
