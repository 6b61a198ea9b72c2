//! A service's revision history: one ServiceRevision per template-and-placement it has
//! run, numbered as Kubernetes numbers a Deployment's, kept for `dctl rollout
//! history|undo` and for rolling a failed rollout back.

use dctl_apis::revision::{template_hash, ServiceRevisionSpec, ANNOTATION_CHANGE_CAUSE};
use dctl_apis::{ObjectMeta, Service, ServiceRevision};
use dctl_runtime::store::{Store, StoreError};

use super::naming::{owner_reference, SERVICE_LABEL};

/// Revisions kept per service (Kubernetes' `revisionHistoryLimit` default).
pub const HISTORY_LIMIT: usize = 10;

/// `web-3f9a0c21be`: the same template and placement always name the same revision.
pub fn revision_name(service: &str, hash: &str) -> String {
    format!("{service}-{hash}")
}

/// The hash of what `service` wants its tasks to run, and where.
pub fn current_hash(service: &Service) -> String {
    template_hash(&service.spec.template, &service.spec.placement)
}

/// The revisions of `service`, newest (highest number) first.
///
/// # Errors
/// Store errors.
pub async fn list(store: &Store, service: &Service) -> Result<Vec<ServiceRevision>, StoreError> {
    let namespace = service.metadata.namespace();
    let mut revisions: Vec<ServiceRevision> = store
        .list::<ServiceRevision>(Some(namespace))
        .await?
        .items
        .into_iter()
        .filter(|r| r.spec.service == service.metadata.name)
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .any(|o| o.controller && o.uid == service.metadata.uid)
        })
        .collect();
    revisions.sort_by_key(|r| std::cmp::Reverse(r.spec.revision));
    Ok(revisions)
}

/// Makes the service's current template its newest revision: creates it, or renumbers it
/// as the newest when an older revision's template comes back (an undo, a rollback), then
/// deletes the oldest beyond [`HISTORY_LIMIT`]. Returns its number.
///
/// # Errors
/// Store errors (a lost race included: the reconcile runs again).
pub async fn record(store: &Store, service: &Service, hash: &str) -> Result<i64, StoreError> {
    let revisions = list(store, service).await?;
    let name = revision_name(&service.metadata.name, hash);
    let newest = revisions.first().map_or(0, |r| r.spec.revision);
    let change_cause = service
        .metadata
        .annotations
        .get(ANNOTATION_CHANGE_CAUSE)
        .cloned()
        .unwrap_or_default();
    let number = match revisions.iter().find(|r| r.metadata.name == name) {
        Some(existing) if existing.spec.revision == newest => newest,
        Some(existing) => {
            let mut renumbered = existing.clone();
            renumbered.spec.revision = newest + 1;
            if !change_cause.is_empty() {
                renumbered.spec.change_cause = change_cause;
            }
            store.update(&renumbered).await?;
            newest + 1
        }
        None => {
            let mut meta = ObjectMeta::named(service.metadata.namespace(), &name);
            meta.labels
                .insert(SERVICE_LABEL.to_string(), service.metadata.name.clone());
            meta.owner_references = vec![owner_reference(service)];
            let revision = ServiceRevision::new(
                meta,
                ServiceRevisionSpec {
                    service: service.metadata.name.clone(),
                    revision: newest + 1,
                    change_cause,
                    template: service.spec.template.clone(),
                    placement: service.spec.placement.clone(),
                },
            );
            match store.create(&revision).await {
                Ok(_) => {}
                // An earlier run created it and failed after: it is there, renumber later.
                Err(error) if error.is_already_exists() => {}
                Err(error) => return Err(error),
            }
            newest + 1
        }
    };
    let older = revisions.iter().filter(|r| r.metadata.name != name);
    for old in older.skip(HISTORY_LIMIT - 1) {
        match store
            .delete::<ServiceRevision>(old.metadata.namespace(), &old.metadata.name)
            .await
        {
            Ok(_) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(number)
}

/// The revision a failed rollout to `hash` goes back to: the newest other one.
///
/// # Errors
/// Store errors.
pub async fn previous(
    store: &Store,
    service: &Service,
    hash: &str,
) -> Result<Option<ServiceRevision>, StoreError> {
    let name = revision_name(&service.metadata.name, hash);
    Ok(list(store, service)
        .await?
        .into_iter()
        .find(|r| r.metadata.name != name))
}
