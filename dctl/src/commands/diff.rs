//! `dctl diff`: what `apply` would change, as a unified diff of live against manifest.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::{manifest, with_object, Resource};
use dctl_runtime::store::Store;
use similar::TextDiff;

use crate::commands::{object_name, read_manifests};
use crate::exit::CliError;
use crate::{connect, FileArgs};
use dctl_runtime::apply::merged;

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    files: FileArgs,
}

pub async fn run(endpoints: &[String], args: DiffArgs) -> Result<ExitCode, CliError> {
    let files = &args.files;
    let documents = read_manifests(&files.files, files.recursive, &files.compose)?.documents;
    let store = connect::store(endpoints).await?;
    let mut differs = false;
    for document in &documents {
        let object = &document.object;
        let label = object_name(object.kind(), &object.meta().name);
        let label = match object.meta().namespace.as_deref() {
            Some(ns) => format!("{ns}/{label}"),
            None => label,
        };
        let diff = with_object!(object, o => diff_object(&store, o, &label).await)?;
        if let Some(diff) = diff {
            print!("{diff}");
            differs = true;
        }
    }
    Ok(if differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The unified diff between the live object and what `apply` would make of it, or `None`
/// when applying would change nothing.
async fn diff_object<K: Resource>(
    store: &Store,
    desired: &K,
    label: &str,
) -> Result<Option<String>, CliError> {
    let meta = desired.meta();
    let live = store.try_get::<K>(meta.namespace(), &meta.name).await?;
    let (before, after) = match &live {
        Some(live) => (render(live), render(&merged(live, desired))),
        None => (String::new(), render(desired)),
    };
    if before == after {
        return Ok(None);
    }
    let diff = TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{label}"), &format!("manifest/{label}"))
        .to_string();
    Ok(Some(diff))
}

/// The object as YAML without its status: the part `apply` is responsible for.
fn render<K: Resource>(object: &K) -> String {
    let mut value = serde_json::to_value(object).expect("resources always serialize");
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    manifest::to_yaml(&value)
}
