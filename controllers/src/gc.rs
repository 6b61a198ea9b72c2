//! The garbage collector: deletes objects whose controlling owner no longer exists.
//!
//! Level-triggered over the dependents' cache (each dependent is a key) and the owners'
//! cache (an owner's change or deletion triggers its dependents), plus the periodic resync.
//! "No longer exists" means no owner of that kind and name with the uid the dependent
//! names: a Service deleted and created again under the same name is a new owner, and the
//! old one's tasks go. Written for any dependent and owner kinds; today only Tasks are
//! owned, by Services.

use std::future::Future;
use std::sync::Arc;

use dctl_apis::{OwnerReference, Resource, Service, Task};
use dctl_runtime::controller::{
    self, backoff_on_error, Action, Controller, Trigger, TriggerReason,
};
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::watcher::{self, watcher};
use dctl_runtime::ObjectKey;
use futures::{stream, Stream, StreamExt};

/// The garbage collector's name in logs and metrics.
pub const COMPONENT: &str = "garbage-collector";

/// The garbage collector's settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The loop's concurrency, resync (the safety net for a deletion no event announced)
    /// and error backoff.
    pub controller: controller::Config,
}

impl Config {
    #[must_use]
    pub fn controller(mut self, controller: controller::Config) -> Self {
        self.controller = controller;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot check whether {owner} {namespace}/{name}, owner of {dependent}, still exists: \
         {source}"
    )]
    ReadOwner {
        owner: &'static str,
        namespace: String,
        name: String,
        dependent: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot delete {dependent}, whose owner is gone: {source}")]
    Delete {
        dependent: String,
        #[source]
        source: StoreError,
    },
}

/// Deletes Tasks whose Service is gone, until `shutdown` resolves.
///
/// # Errors
/// None today: store failures are retried per object with backoff. The `Result` is the
/// entry point's contract with its callers.
pub async fn run(
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    collect::<Task, Service>(store, config, shutdown).await;
    Ok(())
}

/// Whether a dependent's owner reference still names a live owner, given the owner found
/// under its name (if any).
pub fn owner_exists(reference: &OwnerReference, found: Option<&dctl_apis::ObjectMeta>) -> bool {
    found.is_some_and(|owner| owner.uid == reference.uid)
}

/// The controlling owner reference of kind `O`, if the object has one worth checking.
pub fn controller_of<O: Resource>(object: &impl Resource) -> Option<&OwnerReference> {
    object
        .meta()
        .owner_references
        .iter()
        .find(|owner| owner.controller && owner.kind == O::KIND.as_str() && !owner.uid.is_empty())
}

/// The collector for dependents of kind `D` controlled by owners of kind `O` (same
/// namespace, as in Kubernetes).
async fn collect<D: Resource, O: Resource>(
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let controller = Controller::<D>::for_store(COMPONENT, store.clone(), config.controller);
    let dependents = controller.reader();
    let (owners, owner_cache) = reflector::store::<O>();
    let owner_events = reflector(
        owner_cache,
        watcher::<O>(store.clone(), watcher::Config::default()),
    );
    let ctx = Arc::new(Context {
        store,
        dependents: dependents.clone(),
        owners,
    });
    controller
        .with_triggers(dependents_of_changed_owners::<D, O, _>(
            owner_events,
            dependents,
        ))
        .with_shutdown(shutdown)
        .run(reconcile::<D, O>, backoff_on_error, ctx)
        .await;
}

struct Context<D: Resource, O: Resource> {
    store: Store,
    dependents: Reader<D>,
    owners: Reader<O>,
}

/// Deletes the dependent `key` if its controlling owner is gone.
async fn reconcile<D: Resource, O: Resource>(
    key: ObjectKey,
    ctx: Arc<Context<D, O>>,
) -> Result<Action, Error> {
    let Some(dependent) = ctx.dependents.get(&key) else {
        return Ok(Action::await_change());
    };
    let Some(reference) = controller_of::<O>(&*dependent) else {
        return Ok(Action::await_change());
    };
    let owner_key = ObjectKey::new(&key.namespace, &reference.name);
    if !ctx.owners.is_ready() {
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }
    if owner_exists(
        reference,
        ctx.owners.get(&owner_key).as_deref().map(Resource::meta),
    ) {
        return Ok(Action::await_change());
    }
    // The owners' cache may lag (an owner created just before its dependents, seen on
    // another watch): only the store itself can say the owner is gone.
    let dependent_name = format!("{} {key}", D::KIND.as_str().to_ascii_lowercase());
    let found = ctx
        .store
        .try_get::<O>(&key.namespace, &reference.name)
        .await
        .map_err(|source| Error::ReadOwner {
            owner: O::KIND.as_str(),
            namespace: key.namespace.clone(),
            name: reference.name.clone(),
            dependent: dependent_name.clone(),
            source,
        })?;
    if owner_exists(reference, found.as_ref().map(Resource::meta)) {
        return Ok(Action::await_change());
    }
    match ctx.store.delete::<D>(&key.namespace, &key.name).await {
        Ok(_) => {
            tracing::info!(
                dependent = %dependent_name,
                owner = %format!("{} {owner_key} (uid {})", O::KIND.as_str(), reference.uid),
                "deleted: its owner is gone"
            );
            Ok(Action::await_change())
        }
        Err(error) if error.is_not_found() => Ok(Action::await_change()),
        Err(source) => Err(Error::Delete {
            dependent: dependent_name,
            source,
        }),
    }
}

/// An owner's change or deletion triggers the dependents that name it; a (re)list of
/// owners triggers every dependent that has an owner of that kind.
fn dependents_of_changed_owners<D, O, E>(
    events: impl Stream<Item = Result<watcher::Event<O>, E>>,
    dependents: Reader<D>,
) -> impl Stream<Item = Trigger>
where
    D: Resource,
    O: Resource,
    E: std::fmt::Display,
{
    events.flat_map(move |event| {
        let owner = match &event {
            Ok(watcher::Event::Apply(owner) | watcher::Event::Delete(owner)) => {
                Some(ObjectKey::of(owner))
            }
            Ok(watcher::Event::InitDone) => None,
            Ok(_) => return stream::iter(Vec::new()),
            Err(error) => {
                tracing::warn!(kind = %O::KIND, %error, "owner watch error; no triggers from it");
                return stream::iter(Vec::new());
            }
        };
        let triggers: Vec<Trigger> = dependents
            .state()
            .iter()
            .filter_map(|dependent| {
                let reference = controller_of::<O>(&**dependent)?;
                let key = ObjectKey::of(&**dependent);
                let named = |owner: &ObjectKey| {
                    owner.namespace == key.namespace && owner.name == reference.name
                };
                match &owner {
                    Some(owner) if !named(owner) => None,
                    Some(owner) => Some(Trigger::new(
                        key,
                        TriggerReason::Related {
                            kind: O::KIND,
                            key: owner.clone(),
                        },
                    )),
                    None => Some(Trigger::new(key, TriggerReason::Listed)),
                }
            })
            .collect();
        stream::iter(triggers)
    })
}

#[cfg(test)]
mod tests {
    use dctl_apis::ObjectMeta;

    use super::*;

    #[test]
    fn an_owner_exists_only_with_the_same_uid() {
        let reference = OwnerReference {
            api_version: "dctl/v1".into(),
            kind: "Service".into(),
            name: "web".into(),
            uid: "u-1".into(),
            controller: true,
        };
        let meta = |uid: &str| ObjectMeta {
            uid: uid.into(),
            ..ObjectMeta::named("demo", "web")
        };
        let cases = [
            (None, false),
            (Some(meta("u-1")), true),
            (Some(meta("u-2")), false),
        ];
        for (found, expected) in cases {
            assert_eq!(
                owner_exists(&reference, found.as_ref()),
                expected,
                "{found:?}"
            );
        }

        let mut task = Task::new(ObjectMeta::named("demo", "web.1.abcde"), Default::default());
        assert_eq!(controller_of::<Service>(&task), None);
        let not_controller = OwnerReference {
            controller: false,
            ..reference.clone()
        };
        task.metadata.owner_references = vec![not_controller, reference.clone()];
        assert_eq!(controller_of::<Service>(&task), Some(&reference));
        assert_eq!(controller_of::<Task>(&task), None);
    }
}
