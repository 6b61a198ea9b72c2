//! The endpoints controller: per Service, where its Ready tasks are (DESIGN §5).
//!
//! Level-triggered over four caches: Services (its own key), Tasks (a change triggers the
//! owning Service), Nodes (a change of addresses triggers the Services with tasks on the
//! node) and Endpoints (an edit or deletion by anyone else is put right). For each Service
//! with `publish` entries it writes the `Endpoints` object of the same name from
//! [`build::endpoints_spec`], only when it changed; a Service without published ports has
//! no Endpoints, and the Endpoints of a Service that is gone are deleted here (the garbage
//! collector only handles Tasks). The Endpoints carry an owner reference to their Service.

pub mod build;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dctl_apis::{Endpoints, Node, Resource, Service, Task};
use dctl_runtime::controller::{
    backoff_on_error, Action, Config as ControllerConfig, Controller, Trigger, TriggerReason,
};
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::watcher::{self, watcher};
use dctl_runtime::ObjectKey;
use futures::{stream, Stream, StreamExt};

use crate::service::naming;

/// The controller's name in logs and metrics.
pub const COMPONENT: &str = "endpoints-controller";

/// How long a reconcile waits for the other caches' first list before it looks again.
const CACHE_WAIT: Duration = Duration::from_millis(200);

/// How soon a write that lost a race (the cache lagged behind the store) is tried again.
const CONFLICT_RETRY: Duration = Duration::from_millis(50);

/// A write the reconcile could not make; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the endpoints of service {service}: {source}")]
    Write {
        service: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("cannot delete the endpoints {endpoints}, whose service is gone or publishes nothing: {source}")]
    Delete {
        endpoints: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// Runs the endpoints controller until `shutdown` resolves.
///
/// # Errors
/// None today: store failures are retried per service with backoff. The `Result` is the
/// entry point's contract with its callers.
pub async fn run(
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Endpoints gate traffic: a task's readiness must reach the proxies within moments.
    let config = ControllerConfig::default()
        .concurrency(4)
        .backoff(Duration::from_millis(100), Duration::from_secs(10));
    let controller = Controller::<Service>::for_store(COMPONENT, store.clone(), config);
    let services = controller.reader();
    let (tasks, task_cache) = reflector::store::<Task>();
    let (nodes, node_cache) = reflector::store::<Node>();
    let (endpoints, endpoints_cache) = reflector::store::<Endpoints>();
    let task_events = reflector(
        task_cache,
        watcher(store.clone(), watcher::Config::default()),
    );
    let node_events = reflector(
        node_cache,
        watcher(store.clone(), watcher::Config::default()),
    );
    let endpoints_events = reflector(
        endpoints_cache,
        watcher(store.clone(), watcher::Config::default()),
    );
    let ctx = Arc::new(Context {
        store,
        services: services.clone(),
        tasks: tasks.clone(),
        nodes,
        endpoints: endpoints.clone(),
    });
    controller
        .with_triggers(triggers_from_tasks(task_events, services.clone()))
        .with_triggers(triggers_from_nodes(node_events, services.clone(), tasks))
        .with_triggers(triggers_from_endpoints(endpoints_events, endpoints))
        .with_shutdown(shutdown)
        .run(reconcile, backoff_on_error, ctx)
        .await;
    Ok(())
}

struct Context {
    store: Store,
    services: Reader<Service>,
    tasks: Reader<Task>,
    nodes: Reader<Node>,
    endpoints: Reader<Endpoints>,
}

/// Writes the Service's Endpoints from its tasks, or deletes them when the Service is gone
/// or publishes nothing.
async fn reconcile(key: ObjectKey, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.tasks.is_ready() || !ctx.nodes.is_ready() || !ctx.endpoints.is_ready() {
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let current = ctx.endpoints.get(&key);
    let service = ctx
        .services
        .get(&key)
        .filter(|service| !service.spec.publish.is_empty());
    let Some(service) = service else {
        if current.is_some() {
            delete(&ctx.store, &key).await?;
        }
        return Ok(Action::await_change());
    };
    let uid = service.metadata.uid.as_str();
    let owned: Vec<Arc<Task>> = ctx
        .tasks
        .state()
        .into_iter()
        .filter(|t| {
            t.metadata.namespace() == key.namespace && naming::controller_uid(t) == Some(uid)
        })
        .collect();
    let tasks: Vec<&Task> = owned.iter().map(AsRef::as_ref).collect();
    let spec = build::endpoints_spec(&service, &tasks, |node| {
        build::node_address(ctx.nodes.get(&ObjectKey::new("", node)).as_deref())
    });
    let owner = vec![naming::owner_reference(&service)];
    let written = match current {
        Some(current) if current.spec == spec && current.metadata.owner_references == owner => {
            return Ok(Action::await_change());
        }
        Some(current) => {
            let mut next = Endpoints::clone(&current);
            next.spec = spec;
            next.metadata.owner_references = owner;
            ctx.store.update(&next).await.map(drop)
        }
        None => {
            let mut meta = dctl_apis::ObjectMeta::named(&key.namespace, &key.name);
            meta.owner_references = owner;
            ctx.store
                .create(&Endpoints::new(meta, spec))
                .await
                .map(drop)
        }
    };
    match written {
        Ok(()) => Ok(Action::await_change()),
        // The cache lags behind the store: its own event will bring the fresh object.
        Err(error) if error.is_conflict() || error.is_already_exists() || error.is_not_found() => {
            Ok(Action::requeue(CONFLICT_RETRY))
        }
        Err(source) => Err(Error::Write {
            service: key,
            source,
        }),
    }
}

async fn delete(store: &Store, key: &ObjectKey) -> Result<(), Error> {
    match store.delete::<Endpoints>(&key.namespace, &key.name).await {
        Err(error) if !error.is_not_found() => Err(Error::Delete {
            endpoints: key.clone(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// The Service that controls a task, by its controller owner reference.
fn owner_key(task: &Task) -> Option<ObjectKey> {
    let owner = task
        .metadata
        .owner_references
        .iter()
        .find(|owner| owner.controller && owner.kind == Service::KIND.as_str())?;
    Some(ObjectKey::new(task.metadata.namespace(), &owner.name))
}

/// A task's change triggers its Service; a (re)list triggers every Service.
fn triggers_from_tasks<E: std::fmt::Display>(
    events: impl Stream<Item = Result<watcher::Event<Task>, E>>,
    services: Reader<Service>,
) -> impl Stream<Item = Trigger> {
    events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(task) | watcher::Event::Delete(task)) => owner_key(&task)
                .map(|owner| Trigger::related(owner, &task))
                .into_iter()
                .collect(),
            Ok(watcher::Event::InitDone) => every(&services),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "task watch error; no triggers from it");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

/// A node's change (its addresses) triggers the Services with tasks on it.
fn triggers_from_nodes<E: std::fmt::Display>(
    events: impl Stream<Item = Result<watcher::Event<Node>, E>>,
    services: Reader<Service>,
    tasks: Reader<Task>,
) -> impl Stream<Item = Trigger> {
    events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::Delete(node)) => {
                let name = node.metadata.name.as_str();
                let mut owners: Vec<ObjectKey> = tasks
                    .state()
                    .iter()
                    .filter(|t| t.spec.node_name.as_deref() == Some(name))
                    .filter_map(|t| owner_key(t))
                    .collect();
                owners.sort();
                owners.dedup();
                owners
                    .into_iter()
                    .map(|owner| Trigger::related(owner, &node))
                    .collect()
            }
            Ok(watcher::Event::InitDone) => every(&services),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "node watch error; no triggers from it");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

/// An Endpoints object's change triggers the Service of the same name (to put back what
/// someone else changed, or delete what outlived its Service).
fn triggers_from_endpoints<E: std::fmt::Display>(
    events: impl Stream<Item = Result<watcher::Event<Endpoints>, E>>,
    endpoints: Reader<Endpoints>,
) -> impl Stream<Item = Trigger> {
    events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                vec![Trigger::related(ObjectKey::of(&object), &object)]
            }
            Ok(watcher::Event::InitDone) => endpoints
                .state()
                .iter()
                .map(|object| Trigger::new(ObjectKey::of(&**object), TriggerReason::Listed))
                .collect(),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "endpoints watch error; no triggers from it");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

fn every(services: &Reader<Service>) -> Vec<Trigger> {
    services
        .state()
        .iter()
        .map(|service| Trigger::new(ObjectKey::of(&**service), TriggerReason::Listed))
        .collect()
}
