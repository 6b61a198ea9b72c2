//! Nodes, tasks and placements for the scheduler's unit tests.

use dctl_apis::meta::{Condition, ConditionStatus};
use dctl_apis::node::{NodeAvailability, NodeStatus, CONDITION_READY};
use dctl_apis::service::{Placement, PlacementPreference};
use dctl_apis::task::{TaskPort, TaskState, TaskStatus};
use dctl_apis::template::Protocol;
use dctl_apis::{Node, ObjectMeta, Quantity, Task};

/// A ready, active node with 4 cpus and 8 GiB, to be adjusted.
pub fn node(name: &str) -> NodeBuilder {
    let mut node = Node::new(
        ObjectMeta {
            name: name.to_string(),
            ..Default::default()
        },
        Default::default(),
    );
    let mut status = NodeStatus {
        hostname: format!("{name}.example"),
        ..Default::default()
    };
    status.capacity.cpus = Quantity::new("4");
    status.capacity.memory_bytes = 8 << 30;
    status.platform.os = "linux".into();
    status.platform.architecture = "x86_64".into();
    status.conditions.push(Condition {
        type_: CONDITION_READY.into(),
        status: ConditionStatus::True,
        reason: String::new(),
        message: String::new(),
        last_transition_time: chrono::Utc::now(),
        observed_generation: None,
    });
    node.status = Some(status);
    NodeBuilder(node)
}

pub struct NodeBuilder(Node);

impl NodeBuilder {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.spec.labels.insert(key.into(), value.into());
        self
    }

    pub fn capacity(mut self, cpus: &str, memory_bytes: u64) -> Self {
        let capacity = &mut self.status().capacity;
        capacity.cpus = Quantity::new(cpus);
        capacity.memory_bytes = memory_bytes;
        self
    }

    pub fn availability(mut self, availability: NodeAvailability) -> Self {
        self.0.spec.availability = availability;
        self
    }

    pub fn not_ready(mut self) -> Self {
        self.status().conditions[0].status = ConditionStatus::False;
        self
    }

    pub fn build(self) -> Node {
        self.0
    }

    fn status(&mut self) -> &mut NodeStatus {
        self.0.status.as_mut().expect("fixtures have a status")
    }
}

/// A new task of service `service` in namespace `demo`, desired running, never seen by
/// the scheduler (no status).
pub fn task(service: &str, name: &str) -> TaskBuilder {
    let mut task = Task::new(ObjectMeta::named("demo", name), Default::default());
    task.spec.service_name = service.into();
    task.spec.template.image = format!("{service}:1");
    task.spec.slot = Some(1);
    task.metadata.resource_version = Some(1);
    TaskBuilder(task)
}

pub struct TaskBuilder(Task);

impl TaskBuilder {
    pub fn reserve(mut self, cpus: &str, memory_bytes: u64) -> Self {
        let reservations = &mut self.0.spec.template.resources.reservations;
        reservations.cpus = (!cpus.is_empty()).then(|| Quantity::new(cpus));
        reservations.memory = (memory_bytes > 0).then(|| Quantity::from_bytes(memory_bytes));
        self
    }

    /// Publishes container port 80 on host port `port` (`host` mode).
    pub fn host_port(mut self, port: i32) -> Self {
        self.0.spec.published_ports.push(TaskPort {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_port: Some(port),
        });
        self
    }

    /// A global service's task, for `node` only.
    pub fn global(mut self, node: &str) -> Self {
        self.0.spec.slot = None;
        self.0.spec.node = Some(node.into());
        self
    }

    pub fn build(self) -> Task {
        self.0
    }
}

/// The task as bound to `node` and running there.
pub fn bound(task: TaskBuilder, node: &str) -> Task {
    let mut task = task.build();
    task.spec.node_name = Some(node.into());
    task.status = Some(TaskStatus {
        state: TaskState::Running,
        ..Default::default()
    });
    task
}

/// A placement from its parts as a manifest writes them.
pub fn placement(constraints: &[&str], spread: &[&str], max_replicas_per_node: u32) -> Placement {
    Placement {
        constraints: constraints.iter().map(ToString::to_string).collect(),
        preferences: spread
            .iter()
            .map(|s| PlacementPreference {
                spread: s.to_string(),
            })
            .collect(),
        max_replicas_per_node,
        platforms: Vec::new(),
    }
}
