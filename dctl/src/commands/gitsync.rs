//! `dctl gitsync reconcile|suspend|resume NAME`: ask a GitSync to sync now, or stop and
//! restart its syncing.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dctl_apis::gitsync::ANNOTATION_RECONCILE_REQUESTED_AT;
use dctl_apis::{GitSync, Kind};

use crate::commands::namespace_for;
use crate::connect;
use crate::exit::CliError;

#[derive(Subcommand)]
pub enum GitSyncCommand {
    /// Fetch and apply now instead of at the next interval.
    Reconcile(Target),
    /// Stop syncing: nothing is fetched, applied or pruned until `resume`.
    Suspend(Target),
    /// Sync again after `suspend` (at once).
    Resume(Target),
}

#[derive(Args)]
pub struct Target {
    /// The GitSync's name.
    name: String,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

pub async fn run(endpoints: &[String], command: GitSyncCommand) -> Result<ExitCode, CliError> {
    let (target, verb) = match &command {
        GitSyncCommand::Reconcile(t) => (t, "reconcile requested"),
        GitSyncCommand::Suspend(t) => (t, "suspended"),
        GitSyncCommand::Resume(t) => (t, "resumed"),
    };
    let namespace = namespace_for(Kind::GitSync, target.namespace.as_deref());
    let store = connect::store(endpoints).await?;
    // A new value every time, so each request is one the controller has not handled yet.
    let requested_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    store
        .modify::<GitSync, _>(&namespace, &target.name, |sync| {
            Ok(match &command {
                GitSyncCommand::Reconcile(_) => {
                    sync.metadata.annotations.insert(
                        ANNOTATION_RECONCILE_REQUESTED_AT.to_string(),
                        requested_at.clone(),
                    );
                    true
                }
                GitSyncCommand::Suspend(_) => !std::mem::replace(&mut sync.spec.suspend, true),
                GitSyncCommand::Resume(_) => std::mem::replace(&mut sync.spec.suspend, false),
            })
        })
        .await?;
    println!("gitsync/{} {verb}", target.name);
    Ok(ExitCode::SUCCESS)
}
