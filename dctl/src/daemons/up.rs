//! `dctl up`: a local etcd, the controller-manager and one agent, in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dctl_controllers::node::engine;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;

use super::agent::{self, AgentArgs};
use super::controller_manager::{self, ControllerManagerArgs};
use super::Shutdown;
use crate::connect;
use crate::exit::{CliError, Exit};

#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    /// Where etcd keeps its data and the endpoint is recorded for the CLI (default:
    /// $XDG_STATE_HOME/dctl, else ~/.local/state/dctl). Reused by the next `up`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub manager: ControllerManagerArgs,
}

pub async fn run(args: UpArgs) -> Result<ExitCode, CliError> {
    let state_dir = args
        .state_dir
        .clone()
        .or_else(connect::state_dir)
        .ok_or_else(|| {
            CliError::usage("no state directory: set --state-dir, XDG_STATE_HOME or HOME")
        })?;
    let endpoint_file = state_dir.join("endpoint");
    if let Ok(recorded) = std::fs::read_to_string(&endpoint_file) {
        let recorded = recorded.trim().to_string();
        if Store::connect(std::slice::from_ref(&recorded))
            .await
            .is_ok()
        {
            return Err(CliError::new(
                Exit::Failure,
                format!(
                    "dctl up is already running here (etcd at {recorded}, state in {})",
                    state_dir.display()
                ),
            ));
        }
    }
    // Say what is missing before starting anything.
    if let Err(err) = engine::connect().await {
        return Err(CliError::new(
            Exit::Unavailable,
            format!("{err}; dctl runs tasks on the local Docker engine: install it (apt-get install docker.io) and start it"),
        ));
    }
    let etcd = LocalEtcd::start(&state_dir)
        .await
        .map_err(|err| CliError::new(Exit::Unavailable, err.to_string()))?;
    let endpoint = etcd.endpoint().to_string();
    std::fs::write(&endpoint_file, format!("{endpoint}\n")).map_err(|err| {
        CliError::internal(format!(
            "cannot record the endpoint in {}: {err}",
            endpoint_file.display()
        ))
    })?;
    println!(
        "etcd listening on {endpoint} (data in {})",
        etcd.data_dir().display()
    );
    println!(
        "node {} ready to run tasks; the CLI finds this etcd through {}",
        args.agent.node_name(),
        endpoint_file.display()
    );
    println!("Ctrl-C stops dctl; containers keep running and desired state stays in etcd");

    let (stop, shutdown) = Shutdown::on_signals_with_trigger();
    let endpoints = vec![endpoint];
    let store = Store::connect(&endpoints).await.map_err(CliError::from)?;
    // The git mirrors live with the rest of this machine's state, kept across restarts.
    let manager = ControllerManagerArgs {
        gitsync_cache: args
            .manager
            .gitsync_cache
            .clone()
            .or_else(|| Some(state_dir.join("gitsync"))),
        ..args.manager.clone()
    };
    let ((), agent_clean) = tokio::join!(
        controller_manager::run(&endpoints, manager, shutdown.clone()),
        async {
            let clean = agent::run_with_store(store, args.agent.clone(), shutdown.clone()).await;
            // Without its agent this node runs nothing: stop the rest rather than linger.
            stop.trigger();
            clean
        },
    );
    etcd.stop().await;
    let _ = std::fs::remove_file(&endpoint_file);
    if !agent_clean {
        return Err(CliError::internal("the agent failed; see the log above"));
    }
    println!("dctl stopped");
    Ok(ExitCode::SUCCESS)
}
