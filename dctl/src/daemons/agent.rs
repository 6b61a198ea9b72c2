//! `dctl agent`: one Docker host's node-side controllers: registration and heartbeat, the
//! task runtime, and the log endpoint `dctl logs` reads from.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Args;
use dctl_controllers::node::{engine, log_access, log_server, probes, proxy, registration, tasks};
use dctl_runtime::store::Store;
use tokio::net::TcpListener;

use super::{connect_store, hostname, parse_label, while_unavailable, Shutdown};

#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// This node's name (default: the host name). Several agents may share one Docker
    /// engine under different names: a multi-node cluster on one machine.
    #[arg(long = "node")]
    pub node: Option<String>,
    /// A node label (`zone=eu`) for placement constraints. Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A label added to every container this agent creates (tests use it to find their
    /// leftovers). Repeatable.
    #[arg(long = "container-label", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
    /// Where this agent serves its tasks' logs to `dctl logs` (the Node advertises it as
    /// status.agentAddress; on 0.0.0.0, with the node's first non-loopback address).
    #[arg(long = "listen", default_value = log_server::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The address the proxy (routing mesh) listens on for every published port.
    #[arg(long = "proxy-bind", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub proxy_bind: IpAddr,
    /// How published TCP ports are served: `nftables` (DNAT rules in the kernel, when
    /// `nft` can be used here) or `userspace`.
    #[arg(long = "proxy-mode", default_value = "nftables")]
    pub proxy_mode: proxy::ProxyMode,
    /// How TCP clients on this host's loopback reach published ports in nftables mode:
    /// `socket` (balanced inside their connect() by a BPF program; the nftables rules
    /// where the kernel cannot), `nftables` (DNAT, with route_localnet on the bridges
    /// behind a guard rule) or `userspace` (as Docker's docker-proxy). See docs/proxy.md.
    #[arg(long = "proxy-loopback", default_value = "socket")]
    pub proxy_loopback: proxy::LoopbackPath,
    /// Run no proxy on this node: its published ports are served by the other nodes only
    /// (several agents on one host would otherwise fight over the same ports).
    #[arg(long = "no-proxy")]
    pub no_proxy: bool,
}

impl AgentArgs {
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(hostname)
    }
}

/// Runs the agent until `shutdown`. Returns `false` when a part of it failed (already
/// logged), so the process exits non-zero.
pub async fn run(endpoints: &[String], args: AgentArgs, shutdown: Shutdown) -> bool {
    let Some(store) = connect_store(endpoints, &shutdown).await else {
        return !shutdown.is_triggered();
    };
    run_with_store(store, args, shutdown).await
}

/// The agent on a store already connected (`dctl up` shares one); `false` when a part
/// of it failed.
pub async fn run_with_store(store: Store, args: AgentArgs, shutdown: Shutdown) -> bool {
    let docker = tokio::select! {
        docker = engine::connect_retrying() => docker,
        _ = shutdown.signalled() => return true,
    };
    let node_name = args.node_name();
    let Some(log_token) = while_unavailable(&shutdown, || log_access::cluster_token(&store)).await
    else {
        return shutdown.is_triggered();
    };
    // Bound before registering, so the Node advertises the port actually bound (`:0`).
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(
                node = node_name,
                "cannot serve logs on {}: {err}; choose another address with --listen",
                args.listen
            );
            return false;
        }
    };
    let listening = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(node = node_name, %listening, "agent starting");
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let container_labels: BTreeMap<String, String> =
        args.container_labels.iter().cloned().collect();
    let routing_mesh = (!args.no_proxy).then(|| {
        tokio::spawn(proxy::run(
            store.clone(),
            proxy::ProxyConfig::new(&node_name)
                .bind(args.proxy_bind)
                .mode(args.proxy_mode)
                .loopback(args.proxy_loopback),
            shutdown.signalled(),
        ))
    });
    let prober = tokio::spawn(probes::run(
        store.clone(),
        docker.clone(),
        probes::ProbesConfig::new(&node_name),
        shutdown.signalled(),
    ));
    let registration = registration::run(
        store.clone(),
        docker.clone(),
        registration::RegistrationConfig::new(&node_name)
            .labels(labels)
            .agent_address(listening),
        shutdown.signalled(),
    );
    let log_endpoint = log_server::serve(
        listener,
        docker.clone(),
        node_name.clone(),
        log_token,
        shutdown.signalled(),
    );
    let task_runtime = tasks::run(
        store,
        docker,
        tasks::TaskRuntimeConfig {
            node_name,
            container_labels,
            ..Default::default()
        },
        shutdown.signalled(),
    );
    let (registered, ran, ()) = tokio::join!(registration, task_runtime, log_endpoint);
    let mut clean = true;
    if let Err(err) = registered {
        tracing::error!("node registration stopped: {err}");
        clean = false;
    }
    if let Err(err) = ran {
        tracing::error!("task runtime stopped: {err}");
        clean = false;
    }
    if let Ok(Err(err)) = prober.await {
        tracing::error!("probe controllers stopped: {err}");
        clean = false;
    }
    if let Some(routing_mesh) = routing_mesh {
        if let Ok(Err(err)) = routing_mesh.await {
            tracing::error!("proxy stopped: {err}");
            clean = false;
        }
    }
    clean
}
