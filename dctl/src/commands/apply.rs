//! `dctl apply`: creates what is missing, updates what changed, leaves the rest untouched.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::{with_object, Resource};
use dctl_runtime::store::Store;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::commands::object_name;
use crate::exit::{CliError, Exit};
use crate::{connect, manifest_files, FileArgs};

/// How many times a write that lost a race re-reads and tries again.
const CONFLICT_RETRIES: usize = 5;

/// Objects applied at once.
const APPLY_IN_FLIGHT: usize = 16;

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    files: FileArgs,
    /// Compare with the live objects and print what would happen, writing nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

pub async fn run(endpoints: &[String], args: ApplyArgs) -> Result<ExitCode, CliError> {
    // Every document is read and validated before anything is written.
    let documents = manifest_files::read_manifests(&args.files.files, args.files.recursive)
        .map_err(|errors| CliError::manifests(&errors))?;
    if documents.is_empty() {
        return Err(CliError::new(Exit::Invalid, "no objects passed to apply"));
    }
    let store = connect::store(endpoints).await?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    // Objects are independent (controllers are level-triggered, so order carries no
    // meaning), so several are written at once; results print in document order.
    let mut results = stream::iter(&documents)
        .map(|document| {
            let store = &store;
            async move {
                with_object!(&document.object, o => apply_object(store, o, args.dry_run).await)
            }
        })
        .buffered(APPLY_IN_FLIGHT);
    let mut first_error: Option<CliError> = None;
    let mut index = 0;
    while let Some(result) = results.next().await {
        let object = &documents[index].object;
        index += 1;
        let name = object_name(object.kind(), &object.meta().name);
        match result {
            Ok(outcome) => println!("{name} {outcome}{suffix}"),
            Err(err) => {
                eprintln!("error: {name}: {}", err.message);
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Ok(ExitCode::from(err.exit as u8)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Makes the stored object match `desired`, writing only when something differs.
///
/// # Errors
/// Store errors; a conflict only after `CONFLICT_RETRIES` re-reads all lost their race.
pub async fn apply_object<K: Resource>(
    store: &Store,
    desired: &K,
    dry_run: bool,
) -> Result<Outcome, CliError> {
    let meta = desired.meta();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match store.try_get::<K>(meta.namespace(), &meta.name).await? {
            None if dry_run => return Ok(Outcome::Created),
            None => store.create(desired).await.map(|_| Outcome::Created),
            Some(live) => {
                let target = merged(&live, desired);
                if target == live {
                    return Ok(Outcome::Unchanged);
                }
                if dry_run {
                    return Ok(Outcome::Configured);
                }
                store.update(&target).await.map(|_| Outcome::Configured)
            }
        };
        match result {
            // Someone created or changed it between our read and our write: read again.
            Err(err)
                if (err.is_conflict() || err.is_already_exists()) && attempt < CONFLICT_RETRIES =>
            {
                continue
            }
            other => return Ok(other?),
        }
    }
}

/// What applying `desired` over `live` stores: the manifest owns the spec, the labels and
/// the annotations; everything the cluster set (status, uid, generation, finalizers,
/// owners, timestamps) stays as it is.
pub fn merged<K: Resource>(live: &K, desired: &K) -> K {
    let mut target = to_value(live);
    let wanted = to_value(desired);
    target["spec"] = wanted["spec"].clone();
    for field in ["labels", "annotations"] {
        match wanted["metadata"].get(field) {
            Some(value) => target["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = target["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    serde_json::from_value(target).expect("a merge of two valid objects of one kind is valid")
}

fn to_value<K: Resource>(object: &K) -> Value {
    serde_json::to_value(object).expect("resources always serialize")
}

#[cfg(test)]
mod tests {
    use dctl_apis::{ObjectMeta, Service};

    use super::*;

    fn service(json: Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn merge_takes_spec_and_labels_from_the_manifest_and_keeps_the_rest() {
        let live = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "generation": 4,
                         "resourceVersion": 17, "labels": {"old": "x"}, "finalizers": ["f"]},
            "spec": {"replicas": 2, "template": {"image": "web:1"}},
            "status": {"replicas": 2}
        }));
        let desired = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "template": {"image": "web:2"}}
        }));
        let target = to_value(&merged(&live, &desired));
        assert_eq!(target["spec"], to_value(&desired)["spec"]);
        assert_eq!(
            target["metadata"]["labels"],
            serde_json::json!({"app": "web"})
        );
        assert_eq!(target["metadata"]["uid"], "u-1");
        assert_eq!(target["metadata"]["generation"], 4);
        assert_eq!(target["metadata"]["resourceVersion"], 17);
        assert_eq!(target["metadata"]["finalizers"], serde_json::json!(["f"]));
        assert_eq!(target["status"], to_value(&live)["status"]);
    }

    #[test]
    fn merge_of_the_same_manifest_changes_nothing() {
        let mut live = Service::new(ObjectMeta::named("demo", "web"), Default::default());
        live.metadata.uid = "u-1".into();
        live.metadata.resource_version = Some(3);
        let desired = Service::new(ObjectMeta::named("demo", "web"), Default::default());
        assert_eq!(merged(&live, &desired), live);
    }
}
