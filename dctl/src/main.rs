//! dctl: the CLI (`apply`, `get`, `describe`, `delete`, `diff`) and, later, the daemons.
#![forbid(unsafe_code)]

mod commands;
mod connect;
mod daemons;
mod exit;
mod printers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit::CliError;

/// A Kubernetes-style declarative reconciler over Docker.
#[derive(Parser)]
#[command(name = "dctl", version, about, propagate_version = true)]
struct Cli {
    /// etcd endpoint(s), comma-separated. Default: the one `dctl up` recorded, else
    /// http://127.0.0.1:2379.
    #[arg(long, global = true, env = "DCTL_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update objects from manifests (files, directories or `-` for stdin).
    Apply(commands::apply::ApplyArgs),
    /// Show how the live objects differ from the manifests (exit 0: none, 1: some, >1: error).
    Diff(commands::diff::DiffArgs),
    /// List objects, or show one.
    Get(commands::get::GetArgs),
    /// Show one object in detail, with its conditions and events.
    Describe(commands::describe::DescribeArgs),
    /// Delete objects by kind and name, or those a manifest names.
    Delete(commands::delete::DeleteArgs),
    /// Print the dctl manifests a compose file translates to, without applying them.
    Convert(commands::convert::ConvertArgs),
    /// Print the output of a service's tasks (`service/web`) or of one task (`task/NAME`).
    Logs(commands::logs::LogsArgs),
    /// Set a replicated service's replica count: `dctl scale service/web=5`.
    Scale(commands::scale::ScaleArgs),
    /// Follow, list, undo, pause or resume a service's rollouts.
    #[command(subcommand)]
    Rollout(commands::rollout::RolloutCommand),
    /// Ask a GitSync to sync now, or suspend and resume it.
    #[command(subcommand)]
    Gitsync(commands::gitsync::GitSyncCommand),
    /// List nodes, or change one's availability and labels.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Run everything on this machine: a local etcd, the controller-manager and an agent.
    Up(daemons::up::UpArgs),
    /// Run the cluster controllers (one of several acts: leader election).
    ControllerManager(daemons::controller_manager::ControllerManagerArgs),
    /// Run a node's agent against the local Docker engine.
    Agent(daemons::agent::AgentArgs),
}

/// `-f` as kubectl takes it; shared by apply, diff and delete.
#[derive(Args, Clone, Debug)]
pub struct FileArgs {
    /// A manifest file, a directory of them, or `-` for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub compose: ComposeArgs,
}

/// How compose files among the `-f` files are translated; shared by apply, diff, delete
/// and convert.
#[derive(Args, Clone, Debug, Default)]
pub struct ComposeArgs {
    /// Compose files: the project, i.e. the namespace (default: the file's `name:`, else
    /// the first file's directory name).
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Compose files: read variables from this file instead of `.env` beside the first file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Compose files: keys dctl cannot honour are errors instead of warnings.
    #[arg(long)]
    pub strict: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons report what they do; CLI verbs stay quiet unless something is wrong.
    let default_level = match cli.command {
        Command::Up(_) | Command::ControllerManager(_) | Command::Agent(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return CliError::internal(format!("cannot start the async runtime: {err}")).report()
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => err.report(),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let endpoints = connect::endpoints(&cli.etcd);
    match cli.command {
        Command::Apply(args) => commands::apply::run(&endpoints, args).await,
        Command::Diff(args) => commands::diff::run(&endpoints, args).await,
        Command::Get(args) => commands::get::run(&endpoints, args).await,
        Command::Describe(args) => commands::describe::run(&endpoints, args).await,
        Command::Delete(args) => commands::delete::run(&endpoints, args).await,
        Command::Convert(args) => commands::convert::run(args),
        Command::Logs(args) => commands::logs::run(&endpoints, args).await,
        Command::Scale(args) => commands::scale::run(&endpoints, args).await,
        Command::Rollout(command) => commands::rollout::run(&endpoints, command).await,
        Command::Node(command) => commands::node::run(&endpoints, command).await,
        Command::Gitsync(command) => commands::gitsync::run(&endpoints, command).await,
        Command::Up(args) => daemons::up::run(args).await,
        Command::ControllerManager(args) => {
            daemons::controller_manager::run(&endpoints, args, daemons::Shutdown::on_signals())
                .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            let clean =
                daemons::agent::run(&endpoints, args, daemons::Shutdown::on_signals()).await;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
