//! Ranks the nodes that passed the filters: spread preferences, then the fewest tasks of
//! the service, then the fewest tasks in all, then the name.

use std::collections::HashMap;

use dctl_apis::service::{PlacementPreference, SpreadOver};
use dctl_apis::Node;
use dctl_runtime::ObjectKey;

use super::node_info::NodeInfo;

/// The node (an index into `nodes`) that should take the next task of `service` among
/// the `eligible` ones (indices into `nodes`); `None` when none is eligible.
///
/// As swarmkit's decision tree, preferences come first: the tasks of the service are
/// balanced over the values of the first preference's label (nodes without the label
/// share the value ""), then within that value over the second's, and so on; each
/// value's count takes in every node with it, eligible or not. Among the nodes of the
/// chosen branch, the one with the fewest tasks of the service wins, then the one with
/// the fewest tasks in all, then the first by name, so that the choice never depends on
/// the order nodes were listed in. Placing a batch one task at a time through this
/// ranking, counting each placement, spreads it as swarmkit's tree does.
pub fn best_node(
    nodes: &[NodeInfo],
    eligible: &[usize],
    service: &ObjectKey,
    preferences: &[PlacementPreference],
) -> Option<usize> {
    let branches = Branches::count(nodes, service, preferences);
    eligible.iter().copied().min_by_key(|&i| {
        let node = &nodes[i];
        (
            branches.counts_along(&node.node, preferences),
            node.tasks_of(service),
            node.active_tasks,
            node.name(),
        )
    })
}

/// The tasks of one service under each branch of the preference tree: a branch is the
/// node label values of its first `n` preferences.
struct Branches<'a> {
    tasks: HashMap<Vec<&'a str>, usize>,
}

impl<'a> Branches<'a> {
    fn count(
        nodes: &'a [NodeInfo],
        service: &ObjectKey,
        preferences: &[PlacementPreference],
    ) -> Self {
        let mut tasks = HashMap::new();
        if preferences.is_empty() {
            return Branches { tasks };
        }
        for node in nodes {
            let path = branch(&node.node, preferences);
            for depth in 1..=path.len() {
                *tasks.entry(path[..depth].to_vec()).or_default() += node.tasks_of(service);
            }
        }
        Branches { tasks }
    }

    /// The task count of each branch the node sits in, from the root down.
    fn counts_along(&self, node: &Node, preferences: &[PlacementPreference]) -> Vec<usize> {
        let path = branch(node, preferences);
        (1..=path.len())
            .map(|depth| self.tasks.get(&path[..depth]).copied().unwrap_or(0))
            .collect()
    }
}

/// The node's value for each preference's label, "" where it has none (and for a
/// preference that names no label, which validation refuses).
fn branch<'n>(node: &'n Node, preferences: &[PlacementPreference]) -> Vec<&'n str> {
    preferences
        .iter()
        .map(|preference| {
            let labels = match preference.label() {
                Some((SpreadOver::NodeLabel, name)) => node.spec.labels.get(name),
                Some((SpreadOver::EngineLabel, name)) => node
                    .status
                    .as_ref()
                    .and_then(|status| status.engine_labels.get(name)),
                None => None,
            };
            labels.map_or("", String::as_str)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dctl_apis::Task;

    use super::*;
    use crate::scheduler::fixtures::{bound, node, placement, task};
    use crate::scheduler::node_info::node_infos;

    fn web() -> ObjectKey {
        ObjectKey::new("demo", "web")
    }

    /// NodeInfos for `nodes`, each with the given number of web and db tasks bound.
    fn cluster(nodes: Vec<(Node, usize, usize)>) -> Vec<NodeInfo> {
        let mut tasks = Vec::new();
        for (node, webs, dbs) in &nodes {
            let name = &node.metadata.name;
            for i in 0..*webs {
                tasks.push(bound(task("web", &format!("web.{name}{i}")), name));
            }
            for i in 0..*dbs {
                tasks.push(bound(task("db", &format!("db.{name}{i}")), name));
            }
        }
        let nodes: Vec<Arc<Node>> = nodes.into_iter().map(|n| Arc::new(n.0)).collect();
        let tasks: Vec<Arc<Task>> = tasks.into_iter().map(Arc::new).collect();
        node_infos(&nodes, &tasks)
    }

    fn pick(nodes: &[NodeInfo], eligible: &[usize], spread: &[&str]) -> Option<String> {
        let preferences = placement(&[], spread, 0).preferences;
        best_node(nodes, eligible, &web(), &preferences).map(|i| nodes[i].name().to_string())
    }

    #[test]
    fn fewest_tasks_of_the_service_then_fewest_tasks_then_the_name() {
        // (node, web tasks, db tasks) per node, and the pick.
        type Case<'a> = (&'a [(&'a str, usize, usize)], &'a str);
        let cases: &[Case] = &[
            (&[("a", 2, 0), ("b", 1, 5), ("c", 3, 0)], "b"),
            (&[("a", 1, 3), ("b", 1, 1), ("c", 1, 2)], "b"),
            (&[("a", 0, 1), ("b", 0, 0), ("c", 0, 0)], "b"),
            (&[("c", 0, 0), ("a", 0, 0), ("b", 0, 0)], "a"),
        ];
        for (nodes, expected) in cases {
            let infos = cluster(
                nodes
                    .iter()
                    .map(|(n, w, d)| (node(n).build(), *w, *d))
                    .collect(),
            );
            let all: Vec<usize> = (0..infos.len()).collect();
            assert_eq!(
                pick(&infos, &all, &[]).as_deref(),
                Some(*expected),
                "{nodes:?}"
            );
        }
    }

    #[test]
    fn only_eligible_nodes_are_chosen() {
        let infos = cluster(vec![(node("a").build(), 0, 0), (node("b").build(), 4, 0)]);
        assert_eq!(pick(&infos, &[1], &[]).as_deref(), Some("b"));
        assert_eq!(pick(&infos, &[], &[]), None);
    }

    #[test]
    fn preferences_balance_label_values_before_nodes() {
        // Zone eu has one task on a; us has none. Node counts alone would pick b.
        let zoned = |name, zone| node(name).label("zone", zone).build();
        let infos = cluster(vec![
            (zoned("a", "eu"), 1, 0),
            (zoned("b", "eu"), 0, 0),
            (zoned("c", "us"), 0, 0),
        ]);
        assert_eq!(pick(&infos, &[0, 1, 2], &[]).as_deref(), Some("b"));
        let spread = ["node.labels.zone"];
        assert_eq!(pick(&infos, &[0, 1, 2], &spread).as_deref(), Some("c"));
        // A zone's count takes in its ineligible nodes too.
        let infos = cluster(vec![
            (zoned("a", "eu"), 2, 0),
            (zoned("b", "eu"), 0, 0),
            (zoned("c", "us"), 1, 0),
        ]);
        assert_eq!(pick(&infos, &[1, 2], &spread).as_deref(), Some("c"));
    }

    #[test]
    fn nodes_without_the_label_share_one_branch() {
        let infos = cluster(vec![
            (node("a").label("zone", "eu").build(), 1, 0),
            (node("b").build(), 1, 0),
            (node("c").build(), 0, 0),
        ]);
        // "" holds b and c (1 task), eu holds a (1 task): a tie, so c's own count wins.
        assert_eq!(
            pick(&infos, &[0, 1, 2], &["node.labels.zone"]).as_deref(),
            Some("c")
        );
        let infos = cluster(vec![
            (node("a").label("zone", "eu").build(), 1, 0),
            (node("b").build(), 2, 0),
            (node("c").build(), 0, 0),
        ]);
        assert_eq!(
            pick(&infos, &[0, 1, 2], &["node.labels.zone"]).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn one_task_at_a_time_spreads_over_zones_then_nodes() {
        let zoned = |name, zone| node(name).label("zone", zone).build();
        let mut infos = cluster(vec![
            (zoned("a", "eu"), 0, 0),
            (zoned("b", "eu"), 0, 0),
            (zoned("c", "us"), 0, 0),
        ]);
        let preferences = placement(&[], &["node.labels.zone"], 0).preferences;
        let mut picked = Vec::new();
        for i in 0..6 {
            let best = best_node(&infos, &[0, 1, 2], &web(), &preferences).unwrap();
            infos[best].add_task(&task("web", &format!("web.{i}")).build());
            picked.push(infos[best].name().to_string());
        }
        // eu and us alternate; within eu, a and b alternate.
        assert_eq!(picked, ["a", "c", "b", "c", "a", "c"]);
    }

    #[test]
    fn nested_preferences_and_engine_labels() {
        let host = |name: &str, zone: &str, disk: &str| {
            let mut node = node(name).label("zone", zone).build();
            let status = node.status.as_mut().unwrap();
            status.engine_labels.insert("disk".into(), disk.into());
            node
        };
        // eu holds 2 tasks, us 2: a tie at the first level; within us, ssd (d) is empty.
        let infos = cluster(vec![
            (host("a", "eu", "ssd"), 1, 0),
            (host("b", "eu", "hdd"), 1, 0),
            (host("c", "us", "hdd"), 2, 0),
            (host("d", "us", "ssd"), 0, 0),
        ]);
        let spread = ["node.labels.zone", "engine.labels.disk"];
        assert_eq!(pick(&infos, &[0, 1, 2, 3], &spread).as_deref(), Some("d"));
    }
}
