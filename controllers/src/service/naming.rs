//! Builds a service's new tasks: Swarm-style names, owner reference, labels, the template.

use dctl_apis::task::{TaskDesiredState, TaskSpec};
use dctl_apis::{ObjectMeta, OwnerReference, Resource, Service, Task, API_VERSION};
use rand::Rng;

use super::slots::SlotId;

/// The label every task carries with its service's name (beside the service's own labels).
pub const SERVICE_LABEL: &str = "dctl.service";

/// Length of the random part of a task name (Swarm's `web.1.abcde`).
const SUFFIX_LEN: usize = 5;

const SUFFIX_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `web.2.x7k2p` for slot 2, `web.n1.x7k2p` for the global task on node n1: the random part
/// keeps each task's name (and its container's) unique, since a slot's tasks come and go.
pub fn task_name(service: &str, slot: &SlotId) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| char::from(SUFFIX_CHARS[rng.random_range(0..SUFFIX_CHARS.len())]))
        .collect();
    match slot {
        SlotId::Replica(n) => format!("{service}.{n}.{suffix}"),
        SlotId::Node(node) => format!("{service}.{node}.{suffix}"),
    }
}

/// The controller owner reference a task of `service` carries; the garbage collector
/// deletes the task once no Service has this uid.
pub fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: Service::KIND.as_str().to_string(),
        name: service.metadata.name.clone(),
        uid: service.metadata.uid.clone(),
        controller: true,
    }
}

/// A new task of `service` for `slot`, with the service's current template. Its status is
/// left unset: the scheduler writes the first one (`new`, `pending`).
pub fn new_task(service: &Service, slot: &SlotId, desired_state: TaskDesiredState) -> Task {
    let service_name = &service.metadata.name;
    let mut metadata =
        ObjectMeta::named(service.metadata.namespace(), &task_name(service_name, slot));
    metadata.labels.clone_from(&service.metadata.labels);
    metadata
        .labels
        .insert(SERVICE_LABEL.to_string(), service_name.clone());
    metadata.owner_references = vec![owner_reference(service)];
    let (slot, node) = match slot {
        SlotId::Replica(n) => (Some(*n), None),
        SlotId::Node(node) => (None, Some(node.clone())),
    };
    Task::new(
        metadata,
        TaskSpec {
            template: service.spec.template.clone(),
            service_name: service_name.clone(),
            slot,
            node,
            node_name: None,
            desired_state,
            published_ports: service.spec.published_task_ports(),
        },
    )
}

/// The uid of the Service that controls `task`, if a Service does.
pub fn controller_uid(task: &Task) -> Option<&str> {
    task.metadata
        .owner_references
        .iter()
        .find(|owner| owner.controller && owner.kind == Service::KIND.as_str())
        .map(|owner| owner.uid.as_str())
}

#[cfg(test)]
mod tests {
    use dctl_apis::service::ServiceSpec;

    use super::*;

    #[test]
    fn a_new_task_names_its_slot_and_owner() {
        let mut meta = ObjectMeta::named("demo", "web");
        meta.uid = "u-1".into();
        meta.labels.insert("app".into(), "web".into());
        let template = dctl_apis::TaskTemplate {
            image: "web:1".into(),
            ..Default::default()
        };
        let spec = ServiceSpec {
            template,
            ..ServiceSpec::default()
        };
        let service = Service::new(meta, spec);

        let task = new_task(&service, &SlotId::Replica(2), TaskDesiredState::Running);
        let name = &task.metadata.name;
        let suffix = name.strip_prefix("web.2.").expect(name);
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| SUFFIX_CHARS.contains(&b)), "{name}");
        assert_eq!(task.metadata.namespace(), "demo");
        assert_eq!(task.metadata.labels["app"], "web");
        assert_eq!(task.metadata.labels[SERVICE_LABEL], "web");
        assert_eq!(controller_uid(&task), Some("u-1"));
        assert_eq!(task.metadata.owner_references[0].api_version, "dctl/v1");
        assert_eq!((task.spec.slot, task.spec.node.as_deref()), (Some(2), None));
        assert!(task.status.is_none());

        let task = new_task(
            &service,
            &SlotId::Node("n1".into()),
            TaskDesiredState::Ready,
        );
        assert!(task.metadata.name.starts_with("web.n1."));
        assert_eq!(
            (task.spec.slot, task.spec.node.as_deref()),
            (None, Some("n1"))
        );
        assert_eq!(task.spec.desired_state, TaskDesiredState::Ready);
        assert!(task.validate().is_empty(), "{:?}", task.validate());
        assert_ne!(
            task_name("web", &SlotId::Replica(1)),
            task_name("web", &SlotId::Replica(1))
        );
    }
}
