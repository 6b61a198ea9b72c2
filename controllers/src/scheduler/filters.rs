//! The filters a node must pass to take a task, each able to explain its refusals.

use std::cell::Cell;

use dctl_apis::constraint::ConstraintOp;
use dctl_apis::node::NodeAvailability;
use dctl_apis::service::{platform_fits, Placement, PlacementPlatform};
use dctl_apis::template::Protocol;
use dctl_apis::{Constraint, ConstraintError, NodeFacts, Quantity, Task};

use super::explain;
use super::node_info::{fixed_host_ports, service_of, Amounts, NodeInfo};

/// One reason a node may refuse a task, as swarmkit's scheduler filters.
pub trait Filter {
    /// Whether `node` may take `task`.
    fn check(&self, task: &Task, node: &NodeInfo) -> bool;

    /// Why `nodes_refused` nodes were refused, for the task's status (`2 nodes are
    /// drained`).
    fn explain(&self, nodes_refused: usize) -> String;
}

/// The filters for `task` of a service placed by `placement`, in the order refusals are
/// told: a node several filters refuse counts for the first only. Constraints come before
/// resources because a node that lacks a label will not do whatever it frees.
///
/// # Errors
/// A constraint that does not parse (validation refuses those, but a Service written
/// around it may still carry one).
pub fn pipeline(
    task: &Task,
    placement: &Placement,
) -> Result<Vec<Box<dyn Filter>>, ConstraintError> {
    let mut filters: Vec<Box<dyn Filter>> = vec![
        Box::new(NodeReady),
        Box::new(Availability(NodeAvailability::Drain)),
        Box::new(Availability(NodeAvailability::Pause)),
    ];
    for constraint in placement.parsed_constraints()? {
        filters.push(Box::new(MeetsConstraint(constraint)));
    }
    if !placement.platforms.is_empty() {
        filters.push(Box::new(OnPlatform(placement.platforms.clone())));
    }
    let needs = Amounts::reserved_by(task);
    if needs.nano_cpus > 0 {
        filters.push(Box::new(Reservation::cpus(needs.nano_cpus)));
    }
    if needs.memory_bytes > 0 {
        filters.push(Box::new(Reservation::memory(needs.memory_bytes)));
    }
    let host_ports: Vec<(i32, Protocol)> = fixed_host_ports(task).collect();
    if !host_ports.is_empty() {
        filters.push(Box::new(HostPortsFree(host_ports)));
    }
    if placement.max_replicas_per_node > 0 {
        filters.push(Box::new(MaxReplicasPerNode(
            placement.max_replicas_per_node,
        )));
    }
    Ok(filters)
}

/// The node's agent reports it healthy: its `Ready` condition is `True`.
pub struct NodeReady;

impl Filter for NodeReady {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        node.is_ready()
    }

    fn explain(&self, nodes_refused: usize) -> String {
        explain::nodes(nodes_refused, "is not ready", "are not ready")
    }
}

/// Refuses the nodes set to this availability: `pause` and `drain` both keep new tasks
/// away (they differ in what happens to the tasks already there).
pub struct Availability(pub NodeAvailability);

impl Filter for Availability {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        node.node.spec.availability != self.0
    }

    fn explain(&self, nodes_refused: usize) -> String {
        match self.0 {
            NodeAvailability::Active => explain::nodes(nodes_refused, "is active", "are active"),
            NodeAvailability::Pause => explain::nodes(nodes_refused, "is paused", "are paused"),
            NodeAvailability::Drain => explain::nodes(nodes_refused, "is drained", "are drained"),
        }
    }
}

/// One placement constraint; one filter per constraint, so that the explanation names
/// the constraint the nodes failed.
pub struct MeetsConstraint(pub Constraint);

impl Filter for MeetsConstraint {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        self.0.matches(&NodeFacts::of(&node.node))
    }

    fn explain(&self, nodes_refused: usize) -> String {
        let Constraint { key, op, value } = &self.0;
        match op {
            ConstraintOp::Eq => {
                let singular = format!("lacks {}", self.0);
                let plural = format!("lack {}", self.0);
                explain::nodes(nodes_refused, &singular, &plural)
            }
            // A node refused by `x != v` is one that has `x == v`.
            ConstraintOp::NotEq => {
                let singular = format!("has {key} == {value}");
                let plural = format!("have {key} == {value}");
                explain::nodes(nodes_refused, &singular, &plural)
            }
        }
    }
}

/// Room for the task's reservation of one resource beside what the node's unfinished
/// tasks reserve: reserved + needed ≤ capacity. A task that reserves nothing always fits.
pub struct Reservation {
    resource: Resource,
    needed: u64,
    /// The (reserved, capacity) of the refused node with the most room left, for the
    /// explanation: with one node refused it is that node's.
    closest: Cell<Option<(u64, u64)>>,
}

#[derive(Clone, Copy)]
enum Resource {
    Cpus,
    Memory,
}

impl Reservation {
    pub fn cpus(nano_cpus: u64) -> Self {
        Reservation::new(Resource::Cpus, nano_cpus)
    }

    pub fn memory(bytes: u64) -> Self {
        Reservation::new(Resource::Memory, bytes)
    }

    fn new(resource: Resource, needed: u64) -> Self {
        Reservation {
            resource,
            needed,
            closest: Cell::new(None),
        }
    }

    fn figures(&self, node: &NodeInfo) -> (u64, u64) {
        match self.resource {
            Resource::Cpus => (node.reserved.nano_cpus, node.capacity.nano_cpus),
            Resource::Memory => (node.reserved.memory_bytes, node.capacity.memory_bytes),
        }
    }

    fn quantity(&self, amount: u64) -> Quantity {
        match self.resource {
            Resource::Cpus => Quantity::from_nano_cpus(amount),
            Resource::Memory => Quantity::from_bytes(amount),
        }
    }
}

impl Filter for Reservation {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        let (reserved, capacity) = self.figures(node);
        if reserved.saturating_add(self.needed) <= capacity {
            return true;
        }
        let room = |(reserved, capacity): (u64, u64)| capacity.saturating_sub(reserved);
        if self
            .closest
            .get()
            .is_none_or(|seen| room((reserved, capacity)) > room(seen))
        {
            self.closest.set(Some((reserved, capacity)));
        }
        false
    }

    fn explain(&self, nodes_refused: usize) -> String {
        let name = match self.resource {
            Resource::Cpus => "cpu",
            Resource::Memory => "memory",
        };
        let (reserved, capacity) = self.closest.get().unwrap_or_default();
        let figures = format!(
            "insufficient {name} (reserved {} of {})",
            self.quantity(reserved),
            self.quantity(capacity)
        );
        explain::nodes(
            nodes_refused,
            &format!("has {figures}"),
            &format!("have {figures}"),
        )
    }
}

/// Swarm's `maxReplicasPerNode`: a node already running that many tasks of the service
/// takes no more.
pub struct MaxReplicasPerNode(pub u32);

impl Filter for MaxReplicasPerNode {
    fn check(&self, task: &Task, node: &NodeInfo) -> bool {
        node.tasks_of(&service_of(task)) < self.0 as usize
    }

    fn explain(&self, nodes_refused: usize) -> String {
        let tasks = explain::tasks(self.0 as usize);
        let rest = "of this service (maxReplicasPerNode)";
        explain::nodes(
            nodes_refused,
            &format!("already runs {tasks} {rest}"),
            &format!("already run {tasks} {rest}"),
        )
    }
}

/// Swarm's platform filter: the node's OS and architecture are one of the placement's
/// platforms.
pub struct OnPlatform(pub Vec<PlacementPlatform>);

impl Filter for OnPlatform {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        let facts = NodeFacts::of(&node.node);
        platform_fits(&self.0, facts.os, facts.architecture)
    }

    fn explain(&self, nodes_refused: usize) -> String {
        let platforms: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        let platforms = platforms.join(" or ");
        explain::nodes(
            nodes_refused,
            &format!("is not {platforms}"),
            &format!("are not {platforms}"),
        )
    }
}

/// The host ports a task publishes in `host` mode are free on the node: no unfinished task
/// bound there binds one of them (swarmkit's host port filter).
pub struct HostPortsFree(pub Vec<(i32, Protocol)>);

impl Filter for HostPortsFree {
    fn check(&self, _task: &Task, node: &NodeInfo) -> bool {
        self.0.iter().all(|port| !node.host_ports.contains(port))
    }

    fn explain(&self, nodes_refused: usize) -> String {
        let ports: Vec<String> = self
            .0
            .iter()
            .map(|(port, protocol)| format!("{port}/{}", protocol.as_str()))
            .collect();
        let ports = if ports.len() == 1 {
            format!("host port {} in use", ports[0])
        } else {
            format!("one of host ports {} in use", ports.join(", "))
        };
        explain::nodes(
            nodes_refused,
            &format!("has {ports}"),
            &format!("have {ports}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dctl_apis::Node;

    use super::*;
    use crate::scheduler::fixtures::{bound, node, placement, task};
    use crate::scheduler::node_info::node_infos;

    fn info(node: Node) -> NodeInfo {
        NodeInfo::new(Arc::new(node))
    }

    /// Runs `filter` over `nodes` for `task` and returns which passed and the explanation
    /// of the refusals, as the scheduler would tell them.
    fn run(filter: &dyn Filter, task: &Task, nodes: &[NodeInfo]) -> (Vec<bool>, String) {
        let passed: Vec<bool> = nodes.iter().map(|n| filter.check(task, n)).collect();
        let refused = passed.iter().filter(|p| !**p).count();
        (passed, filter.explain(refused))
    }

    #[test]
    fn node_ready() {
        let web = task("web", "web.1").build();
        let nodes = [info(node("a").build()), info(node("b").not_ready().build())];
        assert_eq!(
            run(&NodeReady, &web, &nodes),
            (vec![true, false], "1 node is not ready".into())
        );
        assert_eq!(NodeReady.explain(2), "2 nodes are not ready");
    }

    #[test]
    fn availability() {
        use NodeAvailability::*;
        let web = task("web", "web.1").build();
        let nodes: Vec<NodeInfo> = [Active, Pause, Drain, Drain]
            .into_iter()
            .map(|a| info(node("n").availability(a).build()))
            .collect();
        let cases = [
            (Drain, vec![true, true, false, false], "2 nodes are drained"),
            (Pause, vec![true, false, true, true], "1 node is paused"),
        ];
        for (refused, passed, explanation) in cases {
            assert_eq!(
                run(&Availability(refused), &web, &nodes),
                (passed, explanation.to_string())
            );
        }
    }

    #[test]
    fn constraints_name_the_one_a_node_failed() {
        let web = task("web", "web.1").build();
        let nodes = [
            info(node("a").label("tier", "db").build()),
            info(node("b").label("tier", "web").build()),
            info(node("c").build()),
        ];
        let cases: &[(&str, &[bool], &str)] = &[
            (
                "node.labels.tier == db",
                &[true, false, false],
                "2 nodes lack node.labels.tier == db",
            ),
            (
                "node.labels.tier != db",
                &[false, true, true],
                "1 node has node.labels.tier == db",
            ),
            (
                "node.hostname == c.example",
                &[false, false, true],
                "2 nodes lack node.hostname == c.example",
            ),
            (
                "node.role != worker",
                &[false, false, false],
                "3 nodes have node.role == worker",
            ),
            (
                "node.platform.os == linux",
                &[true, true, true],
                "0 nodes lack node.platform.os == linux",
            ),
            (
                "node.platform.arch == arm64",
                &[false, false, false],
                "3 nodes lack node.platform.arch == arm64",
            ),
            (
                "node.id == a",
                &[true, false, false],
                "2 nodes lack node.id == a",
            ),
        ];
        for (text, passed, explanation) in cases {
            let filter = MeetsConstraint(text.parse().unwrap());
            assert_eq!(
                run(&filter, &web, &nodes),
                (passed.to_vec(), explanation.to_string()),
                "{text}"
            );
        }
        let one = MeetsConstraint("node.labels.tier == db".parse().unwrap());
        assert_eq!(one.explain(1), "1 node lacks node.labels.tier == db");
    }

    #[test]
    fn reservations_add_up_to_the_capacity() {
        let nodes = vec![
            Arc::new(node("a").capacity("1", 256 << 20).build()),
            Arc::new(node("b").capacity("2", 1 << 30).build()),
        ];
        let tasks = vec![Arc::new(bound(
            task("db", "db.1").reserve("500m", 200 << 20),
            "a",
        ))];
        let infos = node_infos(&nodes, &tasks);
        let cases: &[(&str, u64, &[bool], &str)] = &[
            (
                "",
                56 << 20,
                &[true, true],
                "0 nodes have insufficient memory (reserved 0 of 0)",
            ),
            (
                "",
                57 << 20,
                &[false, true],
                "1 node has insufficient memory (reserved 200Mi of 256Mi)",
            ),
            (
                "",
                2 << 30,
                &[false, false],
                "2 nodes have insufficient memory (reserved 0 of 1Gi)",
            ),
            (
                "500m",
                0,
                &[true, true],
                "0 nodes have insufficient cpu (reserved 0 of 0)",
            ),
            (
                "600m",
                0,
                &[false, true],
                "1 node has insufficient cpu (reserved 500m of 1)",
            ),
            (
                "3",
                0,
                &[false, false],
                "2 nodes have insufficient cpu (reserved 0 of 2)",
            ),
        ];
        for (cpus, memory, passed, explanation) in cases {
            let web = task("web", "web.1").reserve(cpus, *memory).build();
            let needs = Amounts::reserved_by(&web);
            let filter = if needs.nano_cpus > 0 {
                Reservation::cpus(needs.nano_cpus)
            } else {
                Reservation::memory(needs.memory_bytes)
            };
            assert_eq!(
                run(&filter, &web, &infos),
                (passed.to_vec(), explanation.to_string()),
                "{cpus} {memory}"
            );
        }
    }

    #[test]
    fn max_replicas_per_node() {
        let nodes = vec![Arc::new(node("a").build()), Arc::new(node("b").build())];
        let tasks: Vec<Arc<Task>> = [
            bound(task("web", "web.1"), "a"),
            bound(task("web", "web.2"), "a"),
            bound(task("web", "web.3"), "b"),
            bound(task("db", "db.1"), "b"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let infos = node_infos(&nodes, &tasks);
        let web = task("web", "web.4").build();
        let cases: &[(u32, &[bool], &str)] = &[
            (
                3,
                &[true, true],
                "0 nodes already run 3 tasks of this service (maxReplicasPerNode)",
            ),
            (
                2,
                &[false, true],
                "1 node already runs 2 tasks of this service (maxReplicasPerNode)",
            ),
            (
                1,
                &[false, false],
                "2 nodes already run 1 task of this service (maxReplicasPerNode)",
            ),
        ];
        for (max, passed, explanation) in cases {
            assert_eq!(
                run(&MaxReplicasPerNode(*max), &web, &infos),
                (passed.to_vec(), explanation.to_string()),
                "max {max}"
            );
        }
    }

    #[test]
    fn platforms_match_os_and_either_name_of_the_architecture() {
        let mut arm = node("arm").build();
        arm.status.as_mut().unwrap().platform.architecture = "aarch64".into();
        let infos = [info(node("x86").build()), info(arm)];
        let web = task("web", "web.1").build();
        let platform = |os: &str, architecture: &str| PlacementPlatform {
            os: os.into(),
            architecture: architecture.into(),
        };
        let cases: &[(Vec<PlacementPlatform>, &[bool], &str)] = &[
            (
                vec![platform("linux", "amd64")],
                &[true, false],
                "1 node is not linux/amd64",
            ),
            (
                vec![platform("linux", "")],
                &[true, true],
                "0 nodes are not linux/*",
            ),
            (
                vec![platform("windows", ""), platform("", "arm64")],
                &[false, true],
                "1 node is not windows/* or */arm64",
            ),
        ];
        for (platforms, passed, explanation) in cases {
            assert_eq!(
                run(&OnPlatform(platforms.clone()), &web, &infos),
                (passed.to_vec(), explanation.to_string()),
                "{platforms:?}"
            );
        }
    }

    #[test]
    fn host_ports_taken_by_unfinished_tasks() {
        let nodes = vec![
            Arc::new(node("a").build()),
            Arc::new(node("b").build()),
            Arc::new(node("c").build()),
        ];
        let mut stopping = bound(task("web", "web.2").host_port(8080), "b");
        stopping.spec.desired_state = dctl_apis::task::TaskDesiredState::Shutdown;
        let mut failed = bound(task("web", "web.3").host_port(8080), "c");
        failed.status.as_mut().unwrap().state = dctl_apis::task::TaskState::Failed;
        let tasks: Vec<Arc<Task>> = [
            bound(task("web", "web.1").host_port(8080), "a"),
            stopping,
            failed,
            bound(task("db", "db.1").host_port(5432), "c"),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let infos = node_infos(&nodes, &tasks);
        let web = task("web", "web.4").host_port(8080).build();
        let filter = HostPortsFree(fixed_host_ports(&web).collect());
        assert_eq!(
            run(&filter, &web, &infos),
            (
                vec![false, false, true],
                "2 nodes have host port 8080/tcp in use".to_string()
            ),
            "a running and a stopping task hold the port; a failed one does not"
        );
        let both = task("web", "web.5").host_port(8080).host_port(5432).build();
        let filter = HostPortsFree(fixed_host_ports(&both).collect());
        assert_eq!(
            run(&filter, &both, &infos),
            (
                vec![false, false, false],
                "3 nodes have one of host ports 8080/tcp, 5432/tcp in use".to_string()
            )
        );
    }

    #[test]
    fn the_pipeline_holds_what_the_task_and_placement_ask_for() {
        let count = |task: &Task, placement| pipeline(task, &placement).unwrap().len();
        let plain = task("web", "web.1").build();
        assert_eq!(
            count(&plain, Default::default()),
            3,
            "ready and availability"
        );
        let reserving = task("web", "web.1").reserve("1", 1 << 20).build();
        let constrained = placement(&["node.labels.a == 1", "node.role == worker"], &[], 2);
        assert_eq!(count(&reserving, constrained), 3 + 2 + 2 + 1);
        let publishing = task("web", "web.1").host_port(80).build();
        assert_eq!(count(&publishing, Default::default()), 3 + 1);
        let broken = placement(&["node.labels.a = 1"], &[], 0);
        let error = pipeline(&plain, &broken).err().unwrap();
        assert_eq!(
            error.to_string(),
            "invalid constraint \"node.labels.a = 1\": expected == or !="
        );
    }
}
