//! `dctl apply --prune` for compose stacks: what the files no longer define goes.

use std::collections::BTreeSet;

use dctl_apis::compose::LABEL_STACK;
use dctl_apis::manifest::Document;
use dctl_apis::{Network, Resource, Service};
use dctl_runtime::store::Store;

use crate::commands::object_name;
use crate::exit::CliError;

/// Deletes the Services, then the Networks, in the stack's namespace that carry its stack
/// label and that `documents` do not define; returns what went (or would go, on a dry
/// run), as `service/web`.
///
/// # Errors
/// Store errors; what was deleted before one stays deleted.
pub async fn stack(
    store: &Store,
    stack: &str,
    documents: &[Document],
    dry_run: bool,
) -> Result<Vec<String>, CliError> {
    let mut pruned = prune_kind::<Service>(store, stack, documents, dry_run).await?;
    pruned.extend(prune_kind::<Network>(store, stack, documents, dry_run).await?);
    Ok(pruned)
}

async fn prune_kind<K: Resource>(
    store: &Store,
    stack: &str,
    documents: &[Document],
    dry_run: bool,
) -> Result<Vec<String>, CliError> {
    let wanted: BTreeSet<&str> = documents
        .iter()
        .filter(|d| d.object.kind() == K::KIND && d.object.meta().namespace() == stack)
        .map(|d| d.object.meta().name.as_str())
        .collect();
    let mut pruned = Vec::new();
    for object in store.list::<K>(Some(stack)).await?.items {
        let meta = object.meta();
        let in_stack = meta.labels.get(LABEL_STACK).map(String::as_str) == Some(stack);
        if !in_stack || wanted.contains(meta.name.as_str()) || meta.deletion_timestamp.is_some() {
            continue;
        }
        if !dry_run {
            match store.delete::<K>(stack, &meta.name).await {
                Ok(_) => {}
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            }
        }
        pruned.push(object_name(K::KIND, &meta.name));
    }
    Ok(pruned)
}
