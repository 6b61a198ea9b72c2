//! Registers this host as a Node and keeps its heartbeat lease and status fresh.
//!
//! Liveness is an etcd lease, not a status write per beat: the agent puts
//! `/dctl/v1/heartbeats/<node>` with a lease it keeps alive, and the node-lifecycle
//! controller marks the Node NotReady once that key is gone. The status (what the engine
//! reports, the `Ready` condition) is written only when it changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bollard::Docker;
use chrono::SubsecRound;
use dctl_apis::event::{EventSource, EventType, ObjectReference};
use dctl_apis::meta::find_condition;
use dctl_apis::node::{NodeSpec, CONDITION_READY};
use dctl_apis::{Condition, ConditionStatus, Node, ObjectMeta, Time};
use dctl_runtime::events::Recorder;
use dctl_runtime::lease::{Lease, LeaseError};
use dctl_runtime::store::{keys, Store, StoreError};
use etcd_client::{GetOptions, PutOptions};

use super::node_status::{
    advertised_agent_address, next_status, observe_engine, ready_status, Observation,
};

/// How often a write that keeps losing its race is retried before the next round.
const WRITE_ATTEMPTS: usize = 5;
/// How long one heartbeat request (put or get) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The key whose presence says `node`'s agent is alive: `/dctl/v1/heartbeats/<node>`.
pub fn heartbeat_key(node: &str) -> String {
    keys::system_key("heartbeats", node)
}

/// The prefix under which every node's heartbeat key lives.
pub fn heartbeat_prefix() -> String {
    keys::system_key("heartbeats", "")
}

/// Whether `node`'s heartbeat key exists, read from etcd itself (not a watch that may lag).
///
/// # Errors
/// Why etcd did not answer.
pub async fn heartbeat_exists(store: &Store, node: &str) -> Result<bool, String> {
    let mut client = store.client();
    let options = GetOptions::new().with_count_only();
    let get = client.get(heartbeat_key(node), Some(options));
    match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
        Ok(Ok(response)) => Ok(response.count() > 0),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("etcd did not answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// What the agent registers and how often it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    pub node_name: String,
    /// Set in the Node's `spec.labels` at start (`dctl agent --label k=v`), over what is
    /// there; other labels stay.
    pub labels: BTreeMap<String, String>,
    /// How long the node counts as alive after its last lease renewal. Default 10 s.
    pub heartbeat_ttl: Duration,
    /// How often the engine is asked for the status (capacity, version, labels). Default
    /// 30 s; the status is written only when it changed.
    pub status_interval: Duration,
    /// How old `lastHeartbeatTime` may grow before it is written although nothing else
    /// changed. Default 5 minutes, Kubernetes' `nodeStatusReportFrequency`.
    pub status_report_interval: Duration,
    /// Where the agent's log endpoint listens (as bound, so port 0 is resolved); the
    /// status advertises it as `agentAddress` for `dctl logs`. Default: none.
    pub agent_address: Option<SocketAddr>,
}

impl RegistrationConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        RegistrationConfig {
            node_name: node_name.into(),
            labels: BTreeMap::new(),
            heartbeat_ttl: Duration::from_secs(10),
            status_interval: Duration::from_secs(30),
            status_report_interval: Duration::from_secs(5 * 60),
            agent_address: None,
        }
    }

    #[must_use]
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    #[must_use]
    pub fn heartbeat_ttl(mut self, ttl: Duration) -> Self {
        self.heartbeat_ttl = ttl;
        self
    }

    #[must_use]
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    #[must_use]
    pub fn status_report_interval(mut self, interval: Duration) -> Self {
        self.status_report_interval = interval;
        self
    }

    #[must_use]
    pub fn agent_address(mut self, bound: SocketAddr) -> Self {
        self.agent_address = Some(bound);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot write the status of node {node}: {source}")]
    Status {
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot start the heartbeat lease of node {node}: {source}")]
    Lease {
        node: String,
        #[source]
        source: LeaseError,
    },
    #[error("cannot put the heartbeat key of node {node}: {reason}")]
    Heartbeat { node: String, reason: String },
}

impl Error {
    fn is_node_gone(&self) -> bool {
        matches!(self, Error::Status { source, .. } if source.is_not_found())
    }

    /// Whether retrying cannot help: the node name itself is refused.
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Register {
                source: StoreError::Invalid { .. },
                ..
            }
        )
    }
}

/// Registers the node and heartbeats until `shutdown` resolves.
///
/// # Recovery
/// An unreachable etcd is logged and retried with backoff; a lost lease (etcd out of reach
/// for longer than the TTL) is replaced by a new one, and `Ready` set `True` again. An
/// unreachable Docker engine does not stop the heartbeat: `Ready` turns `False`
/// (`EngineUnreachable`) until the engine answers again.
///
/// Shutdown stops renewing the lease without revoking it: the node goes NotReady after the
/// TTL unless an agent takes over by then, so restarting an agent does not flap its node.
///
/// # Errors
/// Only when the node name is refused by the store.
pub async fn run(
    store: Store,
    docker: Docker,
    config: RegistrationConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let source = EventSource {
        component: "agent".to_string(),
        host: config.node_name.clone(),
    };
    let agent = Agent {
        recorder: Recorder::new(store.clone(), source),
        store,
        docker,
        config,
    };
    tokio::pin!(shutdown);
    let mut backoff = retry_backoff();
    loop {
        let result = tokio::select! {
            () = &mut shutdown => return Ok(()),
            result = agent.heartbeat(&mut backoff) => result,
        };
        let error = match result {
            Ok(()) => {
                tracing::warn!(node = agent.name(), "heartbeat lost; registering again");
                continue;
            }
            Err(error) if error.is_permanent() => return Err(error),
            Err(error) => error,
        };
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(node = agent.name(), %error, ?delay, "registration failed; retrying");
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The backoff after a failed round: 200 ms doubling to 10 s, with jitter.
fn retry_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

struct Agent {
    store: Store,
    docker: Docker,
    config: RegistrationConfig,
    recorder: Recorder,
}

impl Agent {
    fn name(&self) -> &str {
        &self.config.node_name
    }

    /// One lease's life: put the heartbeat, register, report, and refresh the status until
    /// the lease is lost (`Ok`) or a step fails.
    async fn heartbeat(&self, backoff: &mut ExponentialBackoff) -> Result<(), Error> {
        // The heartbeat goes first: the node-lifecycle controller marks a Node without one
        // NotReady, and a new Node must not be seen without it even for a moment.
        let lease = Lease::grant(&self.store, self.config.heartbeat_ttl)
            .await
            .map_err(|source| Error::Lease {
                node: self.name().to_string(),
                source,
            })?;
        self.put_heartbeat(&lease).await?;
        self.register().await?;
        let mut engine_backoff = retry_backoff();
        let mut engine_up = self.report().await?;
        *backoff = retry_backoff();
        tracing::info!(node = self.name(), lease = lease.id(), "node registered");
        loop {
            // A dead engine is asked again sooner than the status interval.
            let next = if engine_up {
                engine_backoff = retry_backoff();
                self.config.status_interval
            } else {
                let delay = engine_backoff.next().unwrap_or(self.config.status_interval);
                delay.min(self.config.status_interval)
            };
            tokio::select! {
                () = lease.expired() => return Ok(()),
                () = tokio::time::sleep(next) => {}
            }
            // A key deleted by hand would leave a live agent NotReady for good: start over.
            if heartbeat_exists(&self.store, self.name()).await == Ok(false) {
                tracing::warn!(node = self.name(), "heartbeat key vanished");
                return Ok(());
            }
            match self.report().await {
                Ok(up) => engine_up = up,
                // Someone deleted the Node: register it again, as a kubelet does.
                Err(error) if error.is_node_gone() => return Err(error),
                // etcd trouble is left to the lease: it says when the node is really gone.
                Err(error) => tracing::warn!(node = self.name(), %error, "status not written"),
            }
        }
    }

    /// Creates the Node, or sets the configured labels on the one there (keeping the rest
    /// of its spec, which is the user's).
    async fn register(&self) -> Result<(), Error> {
        let error = |source| Error::Register {
            node: self.name().to_string(),
            source,
        };
        for _ in 0..WRITE_ATTEMPTS {
            let written = match self.store.try_get::<Node>("", self.name()).await {
                Err(source) => return Err(error(source)),
                Ok(None) => {
                    let meta = ObjectMeta {
                        name: self.name().to_string(),
                        ..Default::default()
                    };
                    let spec = NodeSpec {
                        labels: self.config.labels.clone(),
                        ..Default::default()
                    };
                    self.store.create(&Node::new(meta, spec)).await.map(drop)
                }
                Ok(Some(mut node)) => {
                    if !merge_labels(&mut node.spec.labels, &self.config.labels) {
                        return Ok(());
                    }
                    self.store.update(&node).await.map(drop)
                }
            };
            match written {
                Err(source) if source.is_conflict() || source.is_already_exists() => continue,
                written => return written.map_err(error),
            }
        }
        Err(error(StoreError::Conflict {
            kind: dctl_apis::Kind::Node,
            key: dctl_runtime::ObjectKey::new("", self.name()),
        }))
    }

    async fn put_heartbeat(&self, lease: &Lease) -> Result<(), Error> {
        let error = |reason: String| Error::Heartbeat {
            node: self.name().to_string(),
            reason,
        };
        let mut client = self.store.client();
        let value = serde_json::json!({ "node": self.name(), "since": now() }).to_string();
        let put = client.put(
            heartbeat_key(self.name()),
            value,
            Some(PutOptions::new().with_lease(lease.id())),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(error(source.to_string())),
            Err(_) => Err(error(format!(
                "etcd did not answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    /// Observes the engine and writes the status if it changed. Returns whether the engine
    /// answered.
    async fn report(&self) -> Result<bool, Error> {
        let observation = match observe_engine(&self.docker).await {
            Ok(facts) => Observation::Engine(facts),
            Err(error) => {
                tracing::warn!(node = self.name(), %error, "the Docker engine does not answer");
                Observation::EngineUnreachable(format!("cannot reach the Docker engine: {error}"))
            }
        };
        let engine_up = matches!(observation, Observation::Engine(_));
        self.write_status(&observation).await?;
        Ok(engine_up)
    }

    /// Writes the status `observation` gives, re-reading on a lost race (the node-lifecycle
    /// controller may have just marked the node NotReady: this heartbeat wins).
    async fn write_status(&self, observation: &Observation) -> Result<(), Error> {
        let error = |source| Error::Status {
            node: self.name().to_string(),
            source,
        };
        for _ in 0..WRITE_ATTEMPTS {
            let mut node: Node = self.store.get("", self.name()).await.map_err(error)?;
            let current = node.status.clone().unwrap_or_default();
            let mut next = next_status(
                &current,
                observation,
                now(),
                self.config.status_report_interval,
            );
            // From the addresses just observed: a wildcard bind is advertised as one of them.
            if let Some(bound) = self.config.agent_address {
                next.agent_address = Some(advertised_agent_address(bound, &next.addresses));
            }
            if next == current {
                return Ok(());
            }
            let (was, is) = (ready_status(&current), ready_status(&next));
            node.status = Some(next);
            match self.store.update_status(&node).await {
                Err(source) if source.is_conflict() => continue,
                Err(source) => return Err(error(source)),
                Ok(written) => {
                    if was != is {
                        self.record_transition(&written).await;
                    }
                    return Ok(());
                }
            }
        }
        Err(error(StoreError::Conflict {
            kind: dctl_apis::Kind::Node,
            key: dctl_runtime::ObjectKey::new("", self.name()),
        }))
    }

    async fn record_transition(&self, node: &Node) {
        let Some(ready) = node
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_READY))
        else {
            return;
        };
        let (type_, reason) = match ready.status {
            ConditionStatus::True => (EventType::Normal, "NodeReady"),
            _ => (EventType::Warning, "NodeNotReady"),
        };
        let message = format!(
            "node {} is {}: {}",
            self.name(),
            reason_word(ready),
            ready.message
        );
        if let Err(error) = self
            .recorder
            .publish(&ObjectReference::to(node), type_, reason, &message)
            .await
        {
            tracing::warn!(node = self.name(), %error, "cannot record an event");
        }
    }
}

fn reason_word(ready: &Condition) -> &'static str {
    match ready.status {
        ConditionStatus::True => "ready",
        _ => "not ready",
    }
}

/// Sets `wanted` over `labels`; returns whether anything changed.
fn merge_labels(labels: &mut BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for (key, value) in wanted {
        if labels.get(key) != Some(value) {
            labels.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    changed
}

/// Times to the millisecond, as the store writes its own.
fn now() -> Time {
    chrono::Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_labels_over_the_existing_ones() {
        let mut labels = BTreeMap::from([
            ("zone".to_string(), "us".to_string()),
            ("team".to_string(), "a".to_string()),
        ]);
        let wanted = BTreeMap::from([("zone".to_string(), "eu".to_string())]);
        assert!(merge_labels(&mut labels, &wanted));
        assert_eq!(labels["zone"], "eu");
        assert_eq!(labels["team"], "a");
        assert!(!merge_labels(&mut labels, &wanted));
    }

    #[test]
    fn defaults_and_keys() {
        let config = RegistrationConfig::new("n1");
        assert_eq!(config.heartbeat_ttl, Duration::from_secs(10));
        assert_eq!(config.status_interval, Duration::from_secs(30));
        assert_eq!(heartbeat_key("n1"), "/dctl/v1/heartbeats/n1");
        assert_eq!(heartbeat_prefix(), "/dctl/v1/heartbeats/");
    }
}
