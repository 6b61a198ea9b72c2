//! `dctl delete`: by kind and name, or every object a manifest names.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::{with_kind, Kind, Resource};
use dctl_runtime::store::{Deleted, Store};

use crate::commands::{namespace_for, parse_kind_and_names, read_manifests};
use crate::exit::{CliError, Exit};
use crate::{connect, ComposeArgs};

#[derive(Args)]
pub struct DeleteArgs {
    /// KIND NAME…, or KIND/NAME… (omit with -f).
    #[arg(required_unless_present = "files")]
    args: Vec<String>,
    /// Delete the objects these manifests name (files, directories or `-`).
    #[arg(short = 'f', long = "filename", conflicts_with = "args")]
    files: Vec<std::path::PathBuf>,
    /// With -f: descend into subdirectories.
    #[arg(short = 'R', long)]
    recursive: bool,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Succeed when an object is already gone.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    compose: ComposeArgs,
}

pub async fn run(endpoints: &[String], args: DeleteArgs) -> Result<ExitCode, CliError> {
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if args.files.is_empty() {
        let (first, rest) = args
            .args
            .split_first()
            .ok_or_else(|| CliError::usage("say what to delete: KIND NAME, or -f FILE"))?;
        let (kind, names) = parse_kind_and_names(first, rest)?;
        if names.is_empty() {
            return Err(CliError::usage(format!(
                "name the {} to delete: dctl delete {} NAME",
                kind.plural(),
                kind.as_str().to_ascii_lowercase()
            )));
        }
        let namespace = namespace_for(kind, args.namespace.as_deref());
        targets.extend(names.into_iter().map(|n| (kind, namespace.clone(), n)));
    } else {
        let manifests = read_manifests(&args.files, args.recursive, &args.compose)?;
        let mut documents: Vec<_> = manifests.documents.iter().collect();
        if manifests.stack.is_some() {
            // A stack's services go before the networks their tasks are attached to.
            documents.sort_by_key(|d| d.object.kind() != Kind::Service);
        }
        for document in documents {
            let meta = document.object.meta();
            targets.push((
                document.object.kind(),
                meta.namespace().to_string(),
                meta.name.clone(),
            ));
        }
    }

    let store = connect::store(endpoints).await?;
    let mut failed: Option<CliError> = None;
    for (kind, namespace, name) in targets {
        let lower = kind.as_str().to_ascii_lowercase();
        let result = with_kind!(kind, K => delete_one::<K>(&store, &namespace, &name).await);
        match result {
            Ok(Removal::Gone) => println!("{lower} \"{name}\" deleted"),
            Ok(Removal::WaitingFor(finalizers)) => println!(
                "{lower} \"{name}\" marked for deletion (waiting for finalizers: {})",
                finalizers.join(", ")
            ),
            Err(err) if err.exit == Exit::NotFound && args.ignore_not_found => {}
            Err(err) => {
                eprintln!("error: {}", err.message);
                failed = Some(err);
            }
        }
    }
    match failed {
        Some(err) => Ok(ExitCode::from(err.exit as u8)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What became of an object `delete` was asked to remove.
enum Removal {
    Gone,
    /// Marked for deletion; these finalizers must finish first.
    WaitingFor(Vec<String>),
}

async fn delete_one<K: Resource>(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<Removal, CliError> {
    match store.delete::<K>(namespace, name).await? {
        Deleted::Gone(_) => Ok(Removal::Gone),
        Deleted::Pending(object) => Ok(Removal::WaitingFor(object.meta().finalizers.clone())),
    }
}
