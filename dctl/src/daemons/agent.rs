//! `dctl agent`: one Docker host's node-side controllers: registration and heartbeat, and
//! the task runtime.

use std::collections::BTreeMap;

use clap::Args;
use dctl_controllers::node::{engine, registration, tasks};
use dctl_runtime::store::Store;

use super::{connect_store, hostname, parse_label, Shutdown};

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
}

impl AgentArgs {
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(hostname)
    }
}

pub async fn run(endpoints: &[String], args: AgentArgs, shutdown: Shutdown) {
    let Some(store) = connect_store(endpoints, &shutdown).await else {
        return;
    };
    run_with_store(store, args, shutdown).await;
}

/// The agent on a store already connected (`dctl up` shares one).
pub async fn run_with_store(store: Store, args: AgentArgs, shutdown: Shutdown) {
    let docker = tokio::select! {
        docker = engine::connect_retrying() => docker,
        _ = shutdown.signalled() => return,
    };
    let node_name = args.node_name();
    tracing::info!(node = node_name, "agent starting");
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let container_labels: BTreeMap<String, String> =
        args.container_labels.iter().cloned().collect();
    let registration = registration::run(
        store.clone(),
        docker.clone(),
        registration::RegistrationConfig::new(&node_name).labels(labels),
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
    let (registered, ran) = tokio::join!(registration, task_runtime);
    if let Err(err) = registered {
        tracing::error!("node registration stopped: {err}");
    }
    if let Err(err) = ran {
        tracing::error!("task runtime stopped: {err}");
    }
}
