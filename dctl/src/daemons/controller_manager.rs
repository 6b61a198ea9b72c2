//! `dctl controller-manager`: the cluster-side controllers, run only while this process
//! holds the leader lease, so several can run and one acts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dctl_controllers::{endpoints, gc, gitsync, network, node_lifecycle, scheduler, service};
use dctl_runtime::leader_election::{self, LeaderElector};
use dctl_runtime::store::Store;
use futures::future::join_all;

use super::{connect_store, hostname, Shutdown};

/// The election every controller-manager takes part in.
const ELECTION: &str = "controller-manager";

#[derive(Args, Clone, Debug)]
pub struct ControllerManagerArgs {
    /// This process's name in the leader election (default: host name and process id).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a node may be NotReady before its tasks are replaced elsewhere.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub node_grace_period: Duration,
    /// How long a leader's lease lasts without renewal: how soon a standby takes over
    /// after the leader dies.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub leader_lease: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Where the gitsync controller keeps its git mirrors (default: a directory of this
    /// process's own under the temporary directory, removed when it exits; `dctl up`:
    /// `gitsync/` in its state directory).
    #[arg(long)]
    pub gitsync_cache: Option<PathBuf>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    dctl_apis::Duration::parse(text)
        .map(|d| d.as_std())
        .map_err(|err| err.to_string())
}

/// Runs until `shutdown`: waits to lead, runs the controllers while leading, and stands by
/// again when leadership is lost.
pub async fn run(endpoints: &[String], args: ControllerManagerArgs, shutdown: Shutdown) {
    let Some(store) = connect_store(endpoints, &shutdown).await else {
        return;
    };
    // Each process its own default cache: managers of several clusters may share a host.
    let temporary_cache = args
        .gitsync_cache
        .is_none()
        .then(|| std::env::temp_dir().join(format!("dctl-gitsync-{}", std::process::id())));
    let args = ControllerManagerArgs {
        gitsync_cache: args.gitsync_cache.clone().or(temporary_cache.clone()),
        ..args
    };
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let elector = LeaderElector::new(
        store.clone(),
        ELECTION,
        &identity,
        leader_election::Config::default().lease_ttl(args.leader_lease),
    );
    while !shutdown.is_triggered() {
        let leadership = tokio::select! {
            leadership = elector.acquire() => leadership,
            _ = shutdown.signalled() => break,
        };
        let leadership = match leadership {
            Ok(leadership) => leadership,
            Err(err) => {
                tracing::error!("leader election failed: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(identity, "leading: starting the cluster controllers");
        let (stop, leading) = Shutdown::new();
        let controllers = run_controllers(&store, &args, &leading);
        tokio::pin!(controllers);
        tokio::select! {
            _ = &mut controllers => {}
            _ = leadership.lost() => {
                tracing::warn!(identity, "lost the leader lease: stopping the controllers");
            }
            _ = shutdown.signalled() => {}
        }
        stop.trigger();
        controllers.await;
        // Resigning hands over at once; if it fails the lease simply expires.
        if let Err(err) = leadership.resign().await {
            tracing::warn!("could not resign the leader lease: {err}");
        }
    }
    if let Some(cache) = temporary_cache {
        let _ = std::fs::remove_dir_all(cache);
    }
}

async fn run_controllers(store: &Store, args: &ControllerManagerArgs, leading: &Shutdown) {
    let mut tasks = vec![
        tokio::spawn(report(
            "service",
            service::run(
                store.clone(),
                service::Config::default(),
                leading.signalled(),
            ),
        )),
        tokio::spawn(report(
            "scheduler",
            scheduler::run(
                store.clone(),
                scheduler::Config::default(),
                leading.signalled(),
            ),
        )),
        tokio::spawn(report(
            "endpoints",
            endpoints::run(store.clone(), leading.signalled()),
        )),
        tokio::spawn(report(
            "garbage-collector",
            gc::run(store.clone(), gc::Config::default(), leading.signalled()),
        )),
        // These two retry every failure themselves and end only at shutdown.
        tokio::spawn(node_lifecycle::run(
            store.clone(),
            node_lifecycle::NodeLifecycleConfig {
                grace_period: args.node_grace_period,
            },
            leading.signalled(),
        )),
        tokio::spawn(network::run(store.clone(), leading.signalled())),
        tokio::spawn(report(
            "gitsync",
            gitsync::run(
                store.clone(),
                gitsync::Config::new(args.gitsync_cache.clone().unwrap_or_default()),
                leading.signalled(),
            ),
        )),
    ];
    if let Some(addr) = args.metrics_addr {
        let shutdown = leading.signalled();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = dctl_runtime::metrics::serve(addr, shutdown).await {
                tracing::error!("metrics endpoint on {addr}: {err}");
            }
        }));
    }
    join_all(tasks).await;
}

/// Logs how a controller ended; a controller that fails stops only itself.
async fn report<E: std::fmt::Display>(
    name: &'static str,
    controller: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(err) = controller.await {
        tracing::error!(controller = name, "stopped: {err}");
    }
}
