//! Writes to the objects a GitSync manages besides a sync's apply: putting the running
//! revision back, and pruning.

use dctl_apis::gitsync::InventoryEntry;
use dctl_apis::{with_kind, Document, Resource};
use dctl_runtime::apply::{managed_by, Applier, Outcome, Owned};
use dctl_runtime::store::Store;
use dctl_runtime::ObjectKey;

use super::{plan, Error};

/// Puts the objects of the running revision back as they were, while a newer commit is
/// refused: no prune, no status, only what differs is written.
pub async fn keep_running_revision(
    store: &Store,
    owner: &ObjectKey,
    documents: &[Document],
) -> Result<(), Error> {
    let applier = Applier::new(store, documents, false);
    for document in documents {
        match applier.apply_owned(&document.object, owner).await {
            Ok(Owned::Applied(Outcome::Unchanged) | Owned::OwnedBy(_)) => {}
            Ok(Owned::Applied(outcome)) => {
                let object = plan::entry_of(&document.object);
                tracing::info!(gitsync = %owner, %object, %outcome, "put back while a newer commit is refused");
            }
            Err(source) => {
                return Err(Error::Apply {
                    key: owner.clone(),
                    object: plan::entry_of(&document.object).to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Deletes the object `entry` names if it still carries `owner`'s labels; returns whether
/// it did. An object gone already, or taken over by something else, is only forgotten.
pub async fn prune(
    store: &Store,
    owner: &ObjectKey,
    entry: &InventoryEntry,
) -> Result<bool, Error> {
    let failed = |source| Error::Prune {
        key: owner.clone(),
        object: entry.to_string(),
        source,
    };
    let live = with_kind!(entry.kind, K => store
        .try_get::<K>(&entry.namespace, &entry.name)
        .await
        .map(|o| o.map(|o| o.meta().clone())))
    .map_err(failed)?;
    let Some(meta) = live else {
        return Ok(false);
    };
    if managed_by(&meta).as_ref() != Some(owner) {
        tracing::info!(gitsync = %owner, object = %entry, "not pruned: no longer labelled as this GitSync's");
        return Ok(false);
    }
    let deleted = with_kind!(entry.kind, K => store
        .delete::<K>(&entry.namespace, &entry.name)
        .await
        .map(|_| ()));
    match deleted {
        Ok(()) => Ok(true),
        Err(err) if err.is_not_found() => Ok(false),
        Err(source) => Err(failed(source)),
    }
}
