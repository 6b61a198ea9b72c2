//! `dctl apply`: creates what is missing, updates what changed, leaves the rest untouched.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::{GitSync, Kind};
use dctl_runtime::apply::{batches, Applier, Outcome, IN_FLIGHT};
use dctl_runtime::ObjectKey;
use futures::stream::{self, StreamExt};

use crate::commands::{object_name, prune, read_manifests, wait};
use crate::exit::{CliError, Exit};
use crate::{connect, FileArgs};

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    files: FileArgs,
    /// Compare with the live objects and print what would happen, writing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then wait until the rollouts of the services it created or changed have finished
    /// (exit 1 if one pauses or rolls back).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (`90s`, `5m`).
    #[arg(long, requires = "wait")]
    timeout: Option<dctl_apis::Duration>,
    /// Compose stacks: delete the stack's services and networks that the files no longer
    /// define (those in the project's namespace labelled with its stack).
    #[arg(long)]
    prune: bool,
}

pub async fn run(endpoints: &[String], args: ApplyArgs) -> Result<ExitCode, CliError> {
    // Every document is read and validated before anything is written.
    let files = &args.files;
    let manifests = read_manifests(&files.files, files.recursive, &files.compose)?;
    let documents = manifests.documents;
    if documents.is_empty() {
        return Err(CliError::new(Exit::Invalid, "no objects passed to apply"));
    }
    if args.prune && manifests.stack.is_none() {
        return Err(CliError::usage(
            "--prune works on compose stacks: it deletes what the compose files no longer define",
        ));
    }
    let store = connect::store(endpoints).await?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let applier = Applier::new(&store, &documents, args.dry_run);
    let mut first_error: Option<CliError> = None;
    let mut changed_services = Vec::new();
    let mut self_healing = std::collections::HashMap::new();
    // What is printed, and which error decides the exit code, follow the documents' order.
    for batch in batches(&documents) {
        let mut outcomes = stream::iter(batch)
            .map(|document| {
                let applier = &applier;
                async move {
                    let applied = applier.apply_noting_manager(&document.object).await;
                    (document, applied.map_err(CliError::from))
                }
            })
            .buffered(IN_FLIGHT);
        while let Some((document, applied)) = outcomes.next().await {
            let object = &document.object;
            let name = object_name(object.kind(), &object.meta().name);
            match applied {
                Ok((outcome, manager)) => {
                    println!("{name} {outcome}{suffix}");
                    if let Some(sync) = manager.filter(|_| outcome == Outcome::Configured) {
                        if heals(&store, &sync, &mut self_healing).await {
                            eprintln!(
                                "warning: {name} is managed by gitsync/{}; the next sync will put it back",
                                sync.name
                            );
                        }
                    }
                    if object.kind() == Kind::Service && outcome != Outcome::Unchanged {
                        changed_services.push(ObjectKey::new(
                            object.meta().namespace(),
                            &object.meta().name,
                        ));
                    }
                }
                Err(err) => {
                    eprintln!("error: {name}: {}", err.message);
                    first_error.get_or_insert(err);
                }
            }
        }
    }
    if let Some(err) = first_error {
        return Ok(ExitCode::from(err.exit as u8));
    }
    if let (true, Some(stack)) = (args.prune, &manifests.stack) {
        let pruned = prune::stack(&store, stack, &documents, args.dry_run).await?;
        for name in pruned {
            println!("{name} pruned{suffix}");
        }
    }
    if args.wait && !args.dry_run && !changed_services.is_empty() {
        wait::rollouts(&store, &changed_services, args.timeout.map(|t| t.as_std())).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the GitSync `key` puts back hand edits (selfHeal), read once per apply.
async fn heals(
    store: &dctl_runtime::store::Store,
    key: &ObjectKey,
    known: &mut std::collections::HashMap<ObjectKey, bool>,
) -> bool {
    if let Some(heals) = known.get(key) {
        return *heals;
    }
    let heals = match store.try_get::<GitSync>(&key.namespace, &key.name).await {
        Ok(Some(sync)) => !sync.spec.suspend && sync.spec.self_heal(),
        _ => false,
    };
    known.insert(key.clone(), heals);
    heals
}
