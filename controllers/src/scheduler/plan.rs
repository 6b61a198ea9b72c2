//! Places a batch of pending tasks one at a time, counting each placement on its node
//! before the next, so that a batch spreads as if its tasks had come one by one.

use std::collections::HashMap;
use std::sync::Arc;

use dctl_apis::service::Placement;
use dctl_apis::task::{TaskDesiredState, TaskState};
use dctl_apis::{Service, Task};
use dctl_runtime::ObjectKey;

use super::node_info::{service_of, NodeInfo};
use super::{explain, filters, spread};

/// A task to place and the placement of its service.
#[derive(Clone, Copy, Debug)]
pub struct Pending<'a> {
    pub task: &'a Task,
    pub placement: &'a Placement,
}

/// Where a task goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Bind it to this node.
    Bind(String),
    /// No node fits; the task stays pending with this explanation.
    NoNodeFits(String),
}

/// Whether the scheduler should place `task` now: not bound, meant to run, not being
/// deleted, and not yet past `pending`. Tasks meant to be staged (`ready`) or stopped
/// are never bound.
pub fn is_pending(task: &Task) -> bool {
    task.spec.node_name.is_none()
        && task.spec.desired_state == TaskDesiredState::Running
        && task.metadata.deletion_timestamp.is_none()
        && task
            .status
            .as_ref()
            .is_none_or(|status| status.state <= TaskState::Pending)
}

/// The pending tasks among `tasks` with the placement of their service, by namespace,
/// service, slot (or node) and name. A task whose Service is not (yet) in `services`
/// waits: its service's placement is not known, and the task may be an orphan.
pub fn batch<'a>(
    tasks: &'a [Arc<Task>],
    services: &'a HashMap<ObjectKey, Arc<Service>>,
) -> Vec<Pending<'a>> {
    let mut batch: Vec<Pending<'a>> = tasks
        .iter()
        .filter(|task| is_pending(task))
        .filter_map(|task| {
            let service = services.get(&service_of(task))?;
            Some(Pending {
                task,
                placement: &service.spec.placement,
            })
        })
        .collect();
    batch.sort_by(|a, b| order(a.task).cmp(&order(b.task)));
    batch
}

fn order(task: &Task) -> (&str, &str, Option<u32>, Option<&str>, &str) {
    let spec = &task.spec;
    let meta = &task.metadata;
    let node = spec.node.as_deref();
    (
        meta.namespace(),
        &spec.service_name,
        spec.slot,
        node,
        &meta.name,
    )
}

/// Decides where each task of `batch` goes, in order. Each placement is counted on its
/// node (tasks of the service, tasks in all, reservations) before the next task is
/// placed, so `nodes` ends as it would be once every `Bind` has been written.
pub fn place(nodes: &mut [NodeInfo], batch: &[Pending<'_>]) -> Vec<Decision> {
    batch
        .iter()
        .map(|pending| match place_one(nodes, pending) {
            Ok(chosen) => {
                nodes[chosen].add_task(pending.task);
                Decision::Bind(nodes[chosen].name().to_string())
            }
            Err(explanation) => Decision::NoNodeFits(explanation),
        })
        .collect()
}

/// The node for one task, or why there is none.
fn place_one(nodes: &[NodeInfo], pending: &Pending<'_>) -> Result<usize, String> {
    let task = pending.task;
    // A global service's task exists for one node; nowhere else will do.
    let candidates: Vec<usize> = match task.spec.node.as_deref() {
        Some(only) => (0..nodes.len())
            .filter(|&i| nodes[i].name() == only)
            .collect(),
        None => (0..nodes.len()).collect(),
    };
    let filters = filters::pipeline(task, pending.placement).map_err(|e| e.to_string())?;
    let mut refused = vec![0; filters.len()];
    let mut eligible = Vec::new();
    for &candidate in &candidates {
        match filters
            .iter()
            .position(|f| !f.check(task, &nodes[candidate]))
        {
            Some(filter) => refused[filter] += 1,
            None => eligible.push(candidate),
        }
    }
    let service = service_of(task);
    let preferences = &pending.placement.preferences;
    spread::best_node(nodes, &eligible, &service, preferences).ok_or_else(|| {
        let refusals = filters
            .iter()
            .zip(refused)
            .map(|(filter, count)| (count, filter.explain(count)))
            .collect();
        let no_candidates = match task.spec.node.as_deref() {
            Some(only) => format!("node {only} is not registered"),
            None => "no node is registered".to_string(),
        };
        explain::no_node_fits(candidates.len(), refusals, &no_candidates)
    })
}

#[cfg(test)]
mod tests {
    use dctl_apis::node::NodeAvailability;
    use dctl_apis::task::TaskStatus;
    use dctl_apis::{Node, ObjectMeta};

    use super::*;
    use crate::scheduler::fixtures::{bound, node, placement, task};
    use crate::scheduler::node_info::node_infos;

    fn infos(nodes: Vec<Node>, bound: Vec<Task>) -> Vec<NodeInfo> {
        let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
        let tasks: Vec<Arc<Task>> = bound.into_iter().map(Arc::new).collect();
        node_infos(&nodes, &tasks)
    }

    /// Places `count` new web tasks with `placement` and returns the decisions.
    fn place_web(nodes: &mut [NodeInfo], count: usize, placement: &Placement) -> Vec<Decision> {
        let tasks: Vec<Task> = (0..count)
            .map(|i| {
                task("web", &format!("web.{i}"))
                    .reserve("", 300 << 20)
                    .build()
            })
            .collect();
        let batch: Vec<Pending> = tasks
            .iter()
            .map(|task| Pending { task, placement })
            .collect();
        place(nodes, &batch)
    }

    fn bind(node: &str) -> Decision {
        Decision::Bind(node.into())
    }

    #[test]
    fn a_batch_of_ten_spreads_four_three_three() {
        let mut nodes = infos(
            vec![node("a").build(), node("b").build(), node("c").build()],
            vec![],
        );
        let decisions = place_web(&mut nodes, 10, &Placement::default());
        let on = |name: &str| decisions.iter().filter(|d| **d == bind(name)).count();
        assert_eq!((on("a"), on("b"), on("c")), (4, 3, 3), "{decisions:?}");
        assert_eq!(decisions[..3], [bind("a"), bind("b"), bind("c")]);
        let counts: Vec<usize> = nodes.iter().map(|n| n.active_tasks).collect();
        assert_eq!(counts, [4, 3, 3], "placements are counted");
    }

    #[test]
    fn max_replicas_per_node_leaves_the_rest_pending() {
        let mut nodes = infos(
            vec![node("a").build(), node("b").build(), node("c").build()],
            vec![],
        );
        let decisions = place_web(&mut nodes, 5, &placement(&[], &[], 1));
        let full = "0/3 nodes are available: 3 nodes already run 1 task of this service \
                    (maxReplicasPerNode)";
        assert_eq!(
            decisions,
            [
                bind("a"),
                bind("b"),
                bind("c"),
                Decision::NoNodeFits(full.into()),
                Decision::NoNodeFits(full.into()),
            ]
        );
    }

    #[test]
    fn reservations_count_what_is_bound_and_what_the_batch_placed() {
        let db = bound(task("db", "db.1").reserve("", 200 << 20), "a");
        let mut finished = bound(task("db", "db.0").reserve("", 1 << 30), "b");
        finished.status.as_mut().unwrap().state = TaskState::Complete;
        let mut nodes = infos(
            vec![
                node("a").capacity("4", 1 << 30).build(),
                node("b").capacity("4", 512 << 20).build(),
            ],
            vec![db, finished],
        );
        let decisions = place_web(&mut nodes, 4, &Placement::default());
        let insufficient = "0/2 nodes are available: 2 nodes have insufficient memory \
                            (reserved 800Mi of 1Gi)";
        // b first (no tasks at all), then a; b has no room for a second 300Mi.
        assert_eq!(
            decisions,
            [
                bind("b"),
                bind("a"),
                bind("a"),
                Decision::NoNodeFits(insufficient.into())
            ]
        );
    }

    #[test]
    fn explanations_count_each_node_once_most_first() {
        let mut nodes = infos(
            vec![
                node("a").build(),
                node("b").label("tier", "web").build(),
                node("c")
                    .label("tier", "db")
                    .availability(NodeAvailability::Drain)
                    .build(),
            ],
            vec![],
        );
        let decisions = place_web(
            &mut nodes,
            1,
            &placement(&["node.labels.tier == db"], &[], 0),
        );
        let expected = "0/3 nodes are available: 2 nodes lack node.labels.tier == db, \
                        1 node is drained";
        assert_eq!(decisions, [Decision::NoNodeFits(expected.into())]);

        let broken = placement(&["node.labels.tier = db"], &[], 0);
        let decisions = place_web(&mut nodes, 1, &broken);
        let expected = "invalid constraint \"node.labels.tier = db\": expected == or !=";
        assert_eq!(decisions, [Decision::NoNodeFits(expected.into())]);
    }

    #[test]
    fn a_global_task_goes_to_its_own_node_only() {
        let mut nodes = infos(
            vec![
                node("a").build(),
                node("b").availability(NodeAvailability::Pause).build(),
            ],
            vec![],
        );
        let none = Placement::default();
        let cases = [
            ("a", bind("a")),
            (
                "b",
                Decision::NoNodeFits("0/1 nodes are available: 1 node is paused".into()),
            ),
            (
                "gone",
                Decision::NoNodeFits("0/0 nodes are available: node gone is not registered".into()),
            ),
        ];
        for (only, expected) in cases {
            let global = task("agent", "agent.x").global(only).build();
            let batch = [Pending {
                task: &global,
                placement: &none,
            }];
            assert_eq!(place(&mut nodes, &batch), [expected], "{only}");
        }
        let decisions = place_web(&mut infos(vec![], vec![]), 1, &none);
        let expected = "0/0 nodes are available: no node is registered";
        assert_eq!(decisions, [Decision::NoNodeFits(expected.into())]);
    }

    #[test]
    fn which_tasks_are_pending() {
        let with = |state: Option<TaskState>, desired, node_name: Option<&str>| {
            let mut task = task("web", "web.1").build();
            task.status = state.map(|state| TaskStatus {
                state,
                ..Default::default()
            });
            task.spec.desired_state = desired;
            task.spec.node_name = node_name.map(Into::into);
            task
        };
        use TaskDesiredState::*;
        let cases = [
            (with(None, Running, None), true),
            (with(Some(TaskState::New), Running, None), true),
            (with(Some(TaskState::Pending), Running, None), true),
            (with(Some(TaskState::Assigned), Running, Some("a")), false),
            (with(Some(TaskState::Pending), Running, Some("a")), false),
            (with(Some(TaskState::Rejected), Running, None), false),
            (with(Some(TaskState::Pending), Shutdown, None), false),
            (with(Some(TaskState::Pending), Ready, None), false),
            (with(None, Remove, None), false),
        ];
        for (task, expected) in cases {
            assert_eq!(
                is_pending(&task),
                expected,
                "{:?} {:?}",
                task.status,
                task.spec
            );
        }
        let mut deleting = with(None, Running, None);
        deleting.metadata.deletion_timestamp = Some(chrono::Utc::now());
        assert!(!is_pending(&deleting));
    }

    #[test]
    fn a_batch_is_ordered_and_waits_for_its_service() {
        let service = |name: &str, max| {
            let mut service = Service::new(ObjectMeta::named("demo", name), Default::default());
            service.spec.placement.max_replicas_per_node = max;
            (ObjectKey::new("demo", name), Arc::new(service))
        };
        let services: HashMap<_, _> = [service("web", 1), service("db", 2)].into_iter().collect();
        let slot = |service: &str, slot: u32, name: &str| {
            let mut task = task(service, name).build();
            task.spec.slot = Some(slot);
            Arc::new(task)
        };
        let tasks = vec![
            slot("web", 2, "web.2.x"),
            slot("orphan", 1, "orphan.1.x"),
            slot("web", 1, "web.1.y"),
            slot("db", 1, "db.1.z"),
            Arc::new(bound(task("db", "db.2.z"), "a")),
        ];
        let batch = batch(&tasks, &services);
        let names: Vec<(&str, u32)> = batch
            .iter()
            .map(|p| {
                (
                    p.task.metadata.name.as_str(),
                    p.placement.max_replicas_per_node,
                )
            })
            .collect();
        assert_eq!(names, [("db.1.z", 2), ("web.1.y", 1), ("web.2.x", 1)]);
    }
}
