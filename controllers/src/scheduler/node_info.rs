//! What the scheduler knows of a node: the Node itself and the tasks bound to it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dctl_apis::meta::{find_condition, ConditionStatus};
use dctl_apis::node::CONDITION_READY;
use dctl_apis::task::TaskDesiredState;
use dctl_apis::template::Protocol;
use dctl_apis::{Node, Task};
use dctl_runtime::ObjectKey;

/// Cpus and memory, in the units Docker counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl Amounts {
    /// What `task` reserves. A quantity that does not parse reserves nothing: validation
    /// refuses such services, so only a hand-written Task can carry one.
    pub fn reserved_by(task: &Task) -> Self {
        let reservations = &task.spec.template.resources.reservations;
        Amounts {
            nano_cpus: reservations.nano_cpus().ok().flatten().unwrap_or(0),
            memory_bytes: reservations.memory_bytes().ok().flatten().unwrap_or(0),
        }
    }

    /// What the node's agent reported it can give tasks; nothing before its first report.
    pub fn capacity_of(node: &Node) -> Self {
        let capacity = node.status.as_ref().map(|s| &s.capacity);
        Amounts {
            nano_cpus: capacity.and_then(|c| c.nano_cpus().ok()).unwrap_or(0),
            memory_bytes: capacity.map_or(0, |c| c.memory_bytes),
        }
    }

    fn add(&mut self, other: Amounts) {
        self.nano_cpus = self.nano_cpus.saturating_add(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
    }
}

/// The host ports `task` binds itself (`host` mode publish), with their protocol.
pub fn fixed_host_ports(task: &Task) -> impl Iterator<Item = (i32, Protocol)> + '_ {
    let published = task.spec.published_ports.iter();
    published.filter_map(|port| Some((port.host_port?, port.protocol)))
}

/// The service a task belongs to: its namespace and the service's name.
pub fn service_of(task: &Task) -> ObjectKey {
    ObjectKey::new(task.metadata.namespace(), &task.spec.service_name)
}

/// A Node with the tally of what is bound to it, as swarmkit's `NodeInfo`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub capacity: Amounts,
    /// The reservations of the tasks bound here that have not finished: a task being
    /// stopped holds its share until it has stopped.
    pub reserved: Amounts,
    /// Tasks bound here that are meant to run (not finished, desired running or ready);
    /// tasks being shut down no longer count for spreading.
    pub active_tasks: usize,
    active_by_service: HashMap<ObjectKey, usize>,
    /// The fixed host ports (`host` mode publish) of the tasks bound here that have not
    /// finished: like a reservation, a stopping task holds its port until it has stopped.
    pub host_ports: HashSet<(i32, Protocol)>,
}

impl NodeInfo {
    /// A node with nothing bound to it yet.
    pub fn new(node: Arc<Node>) -> Self {
        NodeInfo {
            capacity: Amounts::capacity_of(&node),
            node,
            reserved: Amounts::default(),
            active_tasks: 0,
            active_by_service: HashMap::new(),
            host_ports: HashSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.node.metadata.name
    }

    /// Whether the node's `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.node.status.as_ref().is_some_and(|status| {
            find_condition(&status.conditions, CONDITION_READY)
                .is_some_and(|c| c.status == ConditionStatus::True)
        })
    }

    /// Active tasks of `service` here.
    pub fn tasks_of(&self, service: &ObjectKey) -> usize {
        self.active_by_service.get(service).copied().unwrap_or(0)
    }

    /// Counts `task` as bound here: a task read from the store, or one placed earlier in
    /// the same batch (still unbound in the store, so the caller says where it goes).
    pub fn add_task(&mut self, task: &Task) {
        if task.status.as_ref().is_some_and(|s| s.state.is_terminal()) {
            return;
        }
        self.reserved.add(Amounts::reserved_by(task));
        self.host_ports.extend(fixed_host_ports(task));
        let desired = task.spec.desired_state;
        if matches!(desired, TaskDesiredState::Running | TaskDesiredState::Ready) {
            self.active_tasks += 1;
            *self.active_by_service.entry(service_of(task)).or_default() += 1;
        }
    }
}

/// One `NodeInfo` per node, sorted by name, with the tasks bound to each counted. Tasks
/// bound to a node that is not (or no longer) registered count nowhere.
pub fn node_infos(nodes: &[Arc<Node>], tasks: &[Arc<Task>]) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = nodes.iter().cloned().map(NodeInfo::new).collect();
    infos.sort_by(|a, b| a.name().cmp(b.name()));
    let index: HashMap<String, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| (info.name().to_string(), i))
        .collect();
    for task in tasks {
        let bound_to = task.spec.node_name.as_deref();
        if let Some(&i) = bound_to.and_then(|name| index.get(name)) {
            infos[i].add_task(task);
        }
    }
    infos
}

#[cfg(test)]
mod tests {
    use dctl_apis::task::TaskState;

    use super::*;
    use crate::scheduler::fixtures::{bound, node, task};

    #[test]
    fn counts_what_is_bound_and_not_finished() {
        let mut silent = node("a").build();
        silent.status = None;
        let nodes = vec![
            Arc::new(node("b").capacity("2", 1 << 30).build()),
            Arc::new(silent),
        ];
        let web = |name: &str, on: &str| bound(task("web", name).reserve("500m", 100 << 20), on);
        let mut stopping = web("web.3", "b");
        stopping.spec.desired_state = TaskDesiredState::Shutdown;
        let mut failed = web("web.4", "b");
        failed.status.as_mut().unwrap().state = TaskState::Failed;
        let tasks: Vec<Arc<Task>> = [
            web("web.1", "b"),
            web("web.2", "b"),
            stopping,
            failed,
            bound(task("db", "db.1"), "b"),
            web("web.5", "gone"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();

        let infos = node_infos(&nodes, &tasks);
        let names: Vec<&str> = infos.iter().map(NodeInfo::name).collect();
        assert_eq!(names, ["a", "b"], "sorted by name");
        let b = &infos[1];
        let expected_reserved = Amounts {
            nano_cpus: 1_500_000_000,
            memory_bytes: 300 << 20,
        };
        assert_eq!(
            b.reserved, expected_reserved,
            "the stopping task still holds"
        );
        assert_eq!(
            b.active_tasks, 3,
            "the stopping and the failed task do not run"
        );
        assert_eq!(b.tasks_of(&ObjectKey::new("demo", "web")), 2);
        assert_eq!(b.tasks_of(&ObjectKey::new("demo", "db")), 1);
        assert_eq!(b.tasks_of(&ObjectKey::new("other", "web")), 0);
        let capacity = Amounts {
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
        };
        assert_eq!(b.capacity, capacity);
        assert_eq!(infos[0].capacity, Amounts::default(), "no status yet");
        assert_eq!(infos[0].active_tasks, 0);
    }

    #[test]
    fn ready_means_the_ready_condition_is_true() {
        assert!(NodeInfo::new(Arc::new(node("a").build())).is_ready());
        assert!(!NodeInfo::new(Arc::new(node("a").not_ready().build())).is_ready());
        let mut silent = node("a").build();
        silent.status = None;
        assert!(!NodeInfo::new(Arc::new(silent)).is_ready());
    }
}
