//! Which nodes a service's tasks may run on: ready, available, matching its constraints
//! and platforms.

use std::collections::BTreeMap;

use dctl_apis::constraint::{matches_all, Constraint, NodeFacts};
use dctl_apis::meta::find_condition;
use dctl_apis::node::{NodeAvailability, CONDITION_READY};
use dctl_apis::service::{platform_fits, PlacementPlatform};
use dctl_apis::{ConditionStatus, Node};

/// How a node stands for one service: what Swarm's global orchestrator looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFit {
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    pub availability: NodeAvailability,
    /// It satisfies the service's placement constraints and is one of its platforms.
    pub matches: bool,
}

impl NodeFit {
    pub fn of(node: &Node, constraints: &[Constraint], platforms: &[PlacementPlatform]) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_READY))
            .is_some_and(|c| c.status == ConditionStatus::True);
        let facts = NodeFacts::of(node);
        NodeFit {
            ready,
            availability: node.spec.availability,
            matches: matches_all(constraints, &facts)
                && platform_fits(platforms, facts.os, facts.architecture),
        }
    }

    /// A new task may be placed here.
    pub fn accepts_new_tasks(self) -> bool {
        self.ready && self.availability == NodeAvailability::Active && self.matches
    }

    /// A task already here may stay: a paused or unreachable node keeps its tasks (the
    /// node-lifecycle controller orphans them if it stays down); a drained one does not.
    pub fn keeps_tasks(self) -> bool {
        self.availability != NodeAvailability::Drain && self.matches
    }
}

/// Every node by name, with how it stands for a service with these constraints and
/// platforms.
pub fn node_fits<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    constraints: &[Constraint],
    platforms: &[PlacementPlatform],
) -> BTreeMap<String, NodeFit> {
    nodes
        .into_iter()
        .map(|node| {
            let fit = NodeFit::of(node, constraints, platforms);
            (node.metadata.name.clone(), fit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use dctl_apis::ObjectMeta;

    use super::*;

    fn fit(ready: bool, availability: NodeAvailability, matches: bool) -> NodeFit {
        NodeFit {
            ready,
            availability,
            matches,
        }
    }

    #[test]
    fn node_fit_reads_ready_availability_and_constraints() {
        use dctl_apis::meta::Condition;
        use dctl_apis::node::{NodeSpec, NodeStatus};
        let mut node = Node::new(
            ObjectMeta {
                name: "n1".into(),
                ..ObjectMeta::default()
            },
            NodeSpec::default(),
        );
        node.spec.labels.insert("zone".into(), "eu".into());
        let eu = [Constraint::parse("node.labels.zone == eu").unwrap()];
        let us = [Constraint::parse("node.labels.zone == us").unwrap()];
        assert_eq!(
            NodeFit::of(&node, &eu, &[]),
            fit(false, NodeAvailability::Active, true)
        );
        let since = chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        node.status = Some(NodeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: String::new(),
                message: String::new(),
                last_transition_time: since,
                observed_generation: None,
            }],
            ..NodeStatus::default()
        });
        assert!(NodeFit::of(&node, &eu, &[]).accepts_new_tasks());
        assert!(!NodeFit::of(&node, &us, &[]).keeps_tasks());
        node.spec.availability = NodeAvailability::Pause;
        let paused = NodeFit::of(&node, &eu, &[]);
        assert!(!paused.accepts_new_tasks() && paused.keeps_tasks());
        let fits = node_fits([&node], &[], &[]);
        assert_eq!(fits.keys().collect::<Vec<_>>(), ["n1"]);
    }
}
