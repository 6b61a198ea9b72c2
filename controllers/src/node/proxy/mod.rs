//! The proxy (routing mesh): every published port on every node, to Ready endpoints only.
//!
//! DESIGN §5, node side. The proxy watches every `Endpoints` object (its only input) and
//! keeps one listener per published port and protocol on the agent's bind address. Each
//! accepted TCP connection goes to the next Ready endpoint, round robin ([`balancer`]): a
//! task on this node at its container's own address and port, so Docker's port mapping
//! (DNAT) is not in the way, falling back to the host port when that fails; a task on
//! another node at its node's address and host port ([`forward`]). An update applies to
//! new connections at once; open connections finish on their own. With no Ready endpoint
//! a connection is reset at once, never left hanging. UDP goes by sessions per client
//! address ([`udp`]). Listeners open and close as publish entries come and go. No IPVS
//! and no overlay.
//!
//! TCP connections take the kernel path instead ([`kernel`]): one nftables DNAT rule per
//! published port, round robin over the same Ready endpoints, so the proxy's process is
//! not in their way at all. Loopback clients on this host are balanced inside their own
//! `connect()` ([`socket_balancer`]), or, where the kernel cannot run that, take the
//! nftables rules when every endpoint of the port is on this host ([`localnet`]). The
//! user-space listener keeps the port and serves the rest: UDP, loopback clients the
//! kernel does not take, and ports with no Ready endpoint (it resets those connections at
//! once).
//!
//! After applying a revision of an Endpoints object, the proxy records it under
//! `/dctl/v1/proxy-observed/<node>/<namespace>/<service>`, so the task runtime can wait,
//! before it signals a task, until every live proxy has stopped sending it traffic. The
//! records are put with the proxy's own lease: a proxy that stops, or a node that dies,
//! leaves none behind.

pub mod balancer;
pub mod forward;
pub mod kernel;
pub mod listener;
pub mod localnet;
#[cfg(target_os = "linux")]
pub mod pipes;
pub mod socket_balancer;
pub mod table_owner;
pub mod udp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dctl_apis::template::Protocol;
use dctl_apis::Endpoints;
use dctl_runtime::lease::Lease;
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{keys, Store};
use dctl_runtime::{watcher, ObjectKey};
use etcd_client::{GetOptions, PutOptions};
use futures::{FutureExt, StreamExt};

use balancer::{ready_backends, Backend};
use kernel::{KernelPath, KernelPort};
use listener::Listener;
use socket_balancer::SocketBalancer;
use udp::UdpRelay;

/// The proxy's settings; `node_name` is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The node this proxy runs on: the key its observations are recorded under.
    pub node_name: String,
    /// The address published ports listen on; `0.0.0.0` by default. Tests that run
    /// several agents on one host give one of them `127.0.0.1` and the others no proxy.
    pub bind: IpAddr,
    /// How long a connection to a backend may take to open before the client's
    /// connection is reset. Default 2 s.
    pub connect_timeout: Duration,
    /// How often ports that could not be bound (in use) are tried again. Default 2 s.
    pub retry_period: Duration,
    /// Whether TCP connections may take the kernel path. Default [`ProxyMode::Nftables`].
    pub mode: ProxyMode,
    /// How TCP clients on this host's loopback reach published ports in nftables mode.
    /// Default [`LoopbackPath::Socket`].
    pub loopback: LoopbackPath,
}

/// How TCP clients on this host's loopback reach published ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoopbackPath {
    /// Balanced inside their own `connect()` by a BPF program, straight to an endpoint;
    /// the nftables rules where the kernel cannot run it.
    #[default]
    Socket,
    /// nftables DNAT on the output hook, with `route_localnet` on this node's bridges
    /// (behind a guard), as kube-proxy's iptables mode does.
    Nftables,
    /// Through the proxy's own sockets, as Docker's `docker-proxy` does.
    Userspace,
}

impl std::str::FromStr for LoopbackPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "socket" => Ok(LoopbackPath::Socket),
            "nftables" => Ok(LoopbackPath::Nftables),
            "userspace" => Ok(LoopbackPath::Userspace),
            other => Err(format!(
                "unknown loopback path {other:?}: expected socket, nftables or userspace"
            )),
        }
    }
}

/// How published TCP ports are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables DNAT rules when `nft` can be used here, user space otherwise.
    #[default]
    Nftables,
    /// Every connection through the proxy's own sockets.
    Userspace,
}

impl std::str::FromStr for ProxyMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "nftables" => Ok(ProxyMode::Nftables),
            "userspace" => Ok(ProxyMode::Userspace),
            other => Err(format!(
                "unknown proxy mode {other:?}: expected nftables or userspace"
            )),
        }
    }
}

impl ProxyConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        ProxyConfig {
            node_name: node_name.into(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(2),
            retry_period: Duration::from_secs(2),
            mode: ProxyMode::default(),
            loopback: LoopbackPath::default(),
        }
    }

    #[must_use]
    pub fn bind(mut self, bind: IpAddr) -> Self {
        self.bind = bind;
        self
    }

    #[must_use]
    pub fn mode(mut self, mode: ProxyMode) -> Self {
        self.mode = mode;
        self
    }

    #[must_use]
    pub fn loopback(mut self, loopback: LoopbackPath) -> Self {
        self.loopback = loopback;
        self
    }
}

/// How long a proxy's observation records outlive it.
const OBSERVED_TTL: Duration = Duration::from_secs(15);

/// How long the proxy waits for etcd to grant or revoke the lease of its observation
/// records before it goes on (and tries again on its next look, or lets them expire).
const ETCD_WAIT: Duration = Duration::from_secs(2);

/// Why the proxy cannot run at all; once running it only stops on shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid node name {node:?}: it must be non-empty and without '/'")]
    InvalidNodeName { node: String },
}

/// `/dctl/v1/proxy-observed/<node>/<namespace>/<service>`: the last revision of that
/// Service's Endpoints the node's proxy has applied.
pub fn observed_key(node: &str, namespace: &str, service: &str) -> String {
    keys::system_key("proxy-observed", &format!("{node}/{namespace}/{service}"))
}

/// Every proxy's observations.
pub fn observed_prefix() -> String {
    keys::system_key("proxy-observed", "")
}

/// The revision of `namespace/service`'s Endpoints each proxy has applied, by node.
///
/// # Errors
/// When etcd does not answer.
pub async fn observed_revisions(
    store: &Store,
    namespace: &str,
    service: &str,
) -> Result<BTreeMap<String, i64>, etcd_client::Error> {
    let prefix = observed_prefix();
    let suffix = format!("/{namespace}/{service}");
    let response = store
        .client()
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            let node = key.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            // `<node>/<namespace>/<service>`: a node name never holds a '/'.
            if node.contains('/') {
                return None;
            }
            let revision = kv.value_str().ok()?.parse().ok()?;
            Some((node.to_string(), revision))
        })
        .collect())
}

/// Runs the proxy until `shutdown` resolves; listeners close then, open connections are
/// cut with the process.
///
/// # Errors
/// `InvalidNodeName` for a node name the observation keys cannot hold.
///
/// # Recovery
/// The Endpoints watch recovers by itself; ports that cannot be bound and observations
/// that cannot be written are tried again every `retry_period`.
pub async fn run(
    store: Store,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    if config.node_name.is_empty() || config.node_name.contains('/') {
        return Err(ProxyError::InvalidNodeName {
            node: config.node_name,
        });
    }
    let (reader, writer) = reflector::store::<Endpoints>();
    let events = reflector(
        writer,
        watcher::watcher::<Endpoints>(store.clone(), watcher::Config::default()),
    );
    tokio::pin!(events);
    let shutdown = shutdown.fuse();
    tokio::pin!(shutdown);
    let mut retry = tokio::time::interval(config.retry_period);
    let (kernel, socket_balancer) = match config.mode {
        ProxyMode::Nftables => start_kernel_paths(config.bind, config.loopback).await,
        ProxyMode::Userspace => (None, None),
    };
    let mut proxy = Proxy {
        store,
        config,
        kernel,
        socket_balancer,
        listeners: HashMap::new(),
        observed: HashMap::new(),
        lease: None,
        reported: HashSet::new(),
    };
    tracing::info!(node = proxy.config.node_name, bind = %proxy.config.bind, "proxy started");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => {
                let Some(event) = event else { break };
                if let Err(error) = event {
                    tracing::warn!(%error, "endpoints watch error");
                }
                // Take what else has arrived, so a burst is applied once.
                while let Some(Some(event)) = events.next().now_or_never() {
                    if let Err(error) = event {
                        tracing::warn!(%error, "endpoints watch error");
                    }
                }
                if reader.is_ready() {
                    proxy.sync(&reader).await;
                }
            }
            _ = retry.tick() => {
                if let Some(kernel) = &mut proxy.kernel {
                    kernel.check().await;
                }
                if reader.is_ready() {
                    proxy.sync(&reader).await;
                }
            }
        }
    }
    if let Some(kernel) = proxy.kernel.take() {
        kernel.remove().await;
    }
    if let Some(lease) = proxy.lease.take() {
        // Nothing is proxied any more: drains need not wait for this node. Bounded, so an
        // etcd that is gone does not hold up the agent's exit; the records expire anyway.
        match tokio::time::timeout(ETCD_WAIT, lease.revoke()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot remove the proxy's observation records; they expire");
            }
            Err(_) => tracing::warn!(
                "etcd did not answer the revoke of the proxy's observation records; they expire"
            ),
        }
    }
    tracing::info!(node = proxy.config.node_name, "proxy stopped");
    Ok(())
}

/// The proxy's own state: what listens, and what it has recorded as observed.
struct Proxy {
    store: Store,
    config: ProxyConfig,
    /// The nftables rules for TCP clients; `None` in user-space mode.
    kernel: Option<KernelPath>,
    /// Loopback TCP clients' `connect()` rewritten; `None` where the kernel cannot, or
    /// when loopback clients take another path.
    socket_balancer: Option<SocketBalancer>,
    /// By published port and protocol, with the Endpoints (Service) it serves.
    listeners: HashMap<(Protocol, u16), (ObjectKey, Published)>,
    /// The revision recorded as observed, by Endpoints key.
    observed: HashMap<ObjectKey, i64>,
    /// The lease the records are put with; a new one (and every record again) once lost.
    lease: Option<Lease>,
    /// Problems already logged at warn level: (port, what), not to log every retry.
    reported: HashSet<(i32, &'static str)>,
}

/// A published port's listener.
enum Published {
    Tcp(Listener),
    Udp(UdpRelay),
}

impl Published {
    async fn open(
        protocol: Protocol,
        config: &ProxyConfig,
        port: u16,
    ) -> std::io::Result<Published> {
        Ok(match protocol {
            Protocol::Tcp => {
                Published::Tcp(Listener::open(config.bind, port, config.connect_timeout).await?)
            }
            Protocol::Udp => Published::Udp(UdpRelay::open(config.bind, port).await?),
        })
    }

    fn address(&self) -> SocketAddr {
        match self {
            Published::Tcp(listener) => listener.address,
            Published::Udp(relay) => relay.address,
        }
    }

    fn set_backends(&self, backends: Vec<Backend>) {
        match self {
            Published::Tcp(listener) => listener.set_backends(backends),
            // UDP keeps to the host port, on this node too: a session's socket is
            // connected to one address for its whole life, with no fallback to try when
            // the container's own address does not answer (datagrams are just lost).
            Published::Udp(relay) => {
                relay.set_backends(backends.iter().map(|backend| backend.host).collect());
            }
        }
    }
}

impl Proxy {
    /// Applies every Endpoints object to the listeners, then records what was applied.
    async fn sync(&mut self, reader: &Reader<Endpoints>) {
        let mut objects = reader.state();
        objects.sort_by_key(|object| ObjectKey::of(&**object));
        let wanted = self.wanted_ports(&objects);
        self.listeners.retain(|(protocol, port), (owner, listener)| {
            let keep = wanted.contains_key(&(*protocol, *port));
            if !keep {
                tracing::info!(port, protocol = protocol.as_str(), service = %owner, address = %listener.address(), "closing published port");
            }
            keep
        });
        let mut kernel_ports = Vec::new();
        for ((protocol, port), (owner, backends)) in wanted {
            let published = (protocol, port);
            if !self.listeners.contains_key(&published) {
                match Published::open(protocol, &self.config, port).await {
                    Ok(listener) => {
                        tracing::info!(port, protocol = protocol.as_str(), service = %owner, address = %listener.address(), "listening on published port");
                        self.reported
                            .remove(&(i32::from(port), bind_problem(protocol)));
                        self.listeners.insert(published, (owner.clone(), listener));
                    }
                    Err(error) => {
                        if self
                            .reported
                            .insert((i32::from(port), bind_problem(protocol)))
                        {
                            tracing::warn!(port, protocol = protocol.as_str(), service = %owner, %error, "cannot listen on published port; retrying");
                        }
                        continue;
                    }
                }
            }
            if let Some((current_owner, listener)) = self.listeners.get_mut(&published) {
                *current_owner = owner;
                // Only a port whose listener is ours: the rules would take another
                // program's port from it.
                if protocol == Protocol::Tcp {
                    kernel_ports.extend(KernelPort::of(port, &backends));
                }
                listener.set_backends(backends);
            }
        }
        if let Some(kernel) = &mut self.kernel {
            if let Err(error) = kernel.apply(&kernel_ports).await {
                // Old rules may still send connections to endpoints no longer Ready:
                // nothing is recorded as observed until the rules are right.
                tracing::warn!(%error, "cannot replace the nftables rules of published ports; retrying");
                return;
            }
        }
        if let Some(balancer) = &mut self.socket_balancer {
            if let Err(error) = balancer.apply(&kernel_ports) {
                tracing::warn!(%error, "cannot update the socket balancer's published ports; retrying");
                return;
            }
        }
        self.record_observed(&objects).await;
    }

    /// The ports to listen on, by protocol, each with its Service and Ready backends. A
    /// port two Services publish goes to the first by namespace and name.
    fn wanted_ports(
        &mut self,
        objects: &[std::sync::Arc<Endpoints>],
    ) -> BTreeMap<(Protocol, u16), (ObjectKey, Vec<Backend>)> {
        let mut wanted: BTreeMap<(Protocol, u16), (ObjectKey, Vec<Backend>)> = BTreeMap::new();
        for object in objects {
            let key = ObjectKey::of(&**object);
            for port in &object.spec.ports {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                if let Some((owner, _)) = wanted.get(&(port.protocol, number)) {
                    if self.reported.insert((port.port, "taken")) {
                        tracing::warn!(port = port.port, service = %key, owner = %owner, "published port already taken by another service");
                    }
                    continue;
                }
                let backends = ready_backends(&object.spec, &port.name, &self.config.node_name);
                wanted.insert((port.protocol, number), (key.clone(), backends));
            }
        }
        wanted
    }

    /// Puts the revision of every Endpoints object applied since the last time, and
    /// deletes the records of those gone.
    async fn record_observed(&mut self, objects: &[std::sync::Arc<Endpoints>]) {
        if !self.lease.as_ref().is_some_and(Lease::is_alive) {
            // Bounded: the proxy's loop waits on this, and shutdown with it.
            let grant = Lease::grant(&self.store, OBSERVED_TTL);
            match tokio::time::timeout(ETCD_WAIT, grant).await {
                Ok(Ok(lease)) => {
                    // The records of a lost lease are gone with it.
                    self.observed.clear();
                    self.lease = Some(lease);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot record the endpoints observed; retrying");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "etcd did not grant a lease for the endpoints observed; retrying"
                    );
                    return;
                }
            }
        }
        let Some(lease) = self.lease.as_ref().map(Lease::id) else {
            return;
        };
        let mut client = self.store.client();
        let node = self.config.node_name.clone();
        let mut present = HashSet::new();
        for object in objects {
            let key = ObjectKey::of(&**object);
            let revision = object.metadata.resource_version.unwrap_or_default();
            present.insert(key.clone());
            if self.observed.get(&key) == Some(&revision) {
                continue;
            }
            let record = observed_key(&node, &key.namespace, &key.name);
            let leased = PutOptions::new().with_lease(lease);
            match client.put(record, revision.to_string(), Some(leased)).await {
                Ok(_) => {
                    self.observed.insert(key, revision);
                }
                Err(error) => {
                    tracing::warn!(service = %key, %error, "cannot record the endpoints observed; retrying");
                }
            }
        }
        let gone: Vec<ObjectKey> = self
            .observed
            .keys()
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            let record = observed_key(&node, &key.namespace, &key.name);
            if client.delete(record, None).await.is_ok() {
                self.observed.remove(&key);
            }
        }
    }
}

/// The nftables rules and the socket balancer of a proxy listening on `bind`, as far as
/// this host allows: loopback clients take the nftables rules only when they are meant to,
/// or when the socket balancer cannot run here.
async fn start_kernel_paths(
    bind: IpAddr,
    loopback: LoopbackPath,
) -> (Option<KernelPath>, Option<SocketBalancer>) {
    let socket_balancer = match loopback {
        LoopbackPath::Socket => SocketBalancer::start(bind),
        LoopbackPath::Nftables | LoopbackPath::Userspace => None,
    };
    let loopback_in_nftables = match loopback {
        LoopbackPath::Socket => socket_balancer.is_none(),
        LoopbackPath::Nftables => true,
        LoopbackPath::Userspace => false,
    };
    (
        KernelPath::start(bind, loopback_in_nftables).await,
        socket_balancer,
    )
}

/// The `reported` key of a port that cannot be bound, per protocol.
fn bind_problem(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "bind tcp",
        Protocol::Udp => "bind udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observation_keys() {
        assert_eq!(
            observed_key("n1", "demo", "web"),
            "/dctl/v1/proxy-observed/n1/demo/web"
        );
        assert!(observed_key("n1", "demo", "web").starts_with(&observed_prefix()));
    }
}
