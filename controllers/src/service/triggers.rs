//! Which Services a Task or Node change concerns: the service controller's trigger sources.

use std::collections::HashSet;

use dctl_apis::service::ServiceMode;
use dctl_apis::{Node, Resource, Service, Task};
use dctl_runtime::controller::{Trigger, TriggerReason};
use dctl_runtime::reflector::Reader;
use dctl_runtime::watcher;
use dctl_runtime::ObjectKey;
use futures::{stream, Stream, StreamExt};

/// The Service that controls a task, by its controller owner reference.
fn owner_key(task: &Task) -> Option<ObjectKey> {
    let owner = task
        .metadata
        .owner_references
        .iter()
        .find(|owner| owner.controller && owner.kind == Service::KIND.as_str())?;
    Some(ObjectKey::new(task.metadata.namespace(), &owner.name))
}

/// A task's change triggers its Service; a (re)list of tasks triggers every Service.
pub(super) fn triggers_from_tasks<E: std::fmt::Display>(
    events: impl Stream<Item = Result<watcher::Event<Task>, E>>,
    services: Reader<Service>,
) -> impl Stream<Item = Trigger> {
    events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(task) | watcher::Event::Delete(task)) => owner_key(&task)
                .map(|owner| Trigger::related(owner, &task))
                .into_iter()
                .collect(),
            Ok(watcher::Event::InitDone) => every_service(&services),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "task watch error; no triggers from it");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

/// A node's change triggers the global Services and those with tasks on it; a (re)list
/// of nodes triggers every Service.
pub(super) fn triggers_from_nodes<E: std::fmt::Display>(
    events: impl Stream<Item = Result<watcher::Event<Node>, E>>,
    services: Reader<Service>,
    tasks: Reader<Task>,
) -> impl Stream<Item = Trigger> {
    events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::Delete(node)) => {
                let name = node.metadata.name.as_str();
                let mut owners: HashSet<ObjectKey> = services
                    .state()
                    .iter()
                    .filter(|s| s.spec.mode == ServiceMode::Global)
                    .map(|s| ObjectKey::of(&**s))
                    .collect();
                owners.extend(
                    tasks
                        .state()
                        .iter()
                        .filter(|t| t.spec.node_name.as_deref() == Some(name))
                        .filter_map(|t| owner_key(t)),
                );
                owners
                    .into_iter()
                    .map(|owner| Trigger::related(owner, &node))
                    .collect()
            }
            Ok(watcher::Event::InitDone) => every_service(&services),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "node watch error; no triggers from it");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

fn every_service(services: &Reader<Service>) -> Vec<Trigger> {
    services
        .state()
        .iter()
        .map(|service| Trigger::new(ObjectKey::of(&**service), TriggerReason::Listed))
        .collect()
}
