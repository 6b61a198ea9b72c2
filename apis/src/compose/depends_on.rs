//! `depends_on` → `spec.dependsOn`, checked for unknown services and cycles.

use std::collections::{BTreeMap, BTreeSet};

use super::listed;
use super::service::{Origin, Translator};
use super::yaml::{Key, Node};
use crate::resource::AnyObject;
use crate::service::{Dependency, DependencyCondition};

impl Translator<'_> {
    /// `depends_on` as a list of names or a mapping with conditions.
    pub(super) fn depends_on(&mut self, node: &Node, path: &str) -> Vec<Dependency> {
        let Some(entries) = self.mapping(node, path) else {
            return Vec::new();
        };
        let mut dependencies = Vec::new();
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            let Some(service) = self.services.get(&key.name).cloned() else {
                let known: BTreeSet<String> = self.services.keys().cloned().collect();
                self.diags.key_error(
                    key,
                    &at,
                    format!(
                        "no service {:?} in this project (services: {})",
                        key.name,
                        listed(&known)
                    ),
                );
                continue;
            };
            let mut condition = DependencyCondition::Started;
            if let Some(fields) = value.as_map() {
                for (field, v) in fields {
                    let at = format!("{at}.{}", field.name);
                    match field.name.as_str() {
                        "condition" => match v.as_str() {
                            Some("service_started") => condition = DependencyCondition::Started,
                            Some("service_healthy") => condition = DependencyCondition::Ready,
                            Some("service_completed_successfully") => condition = DependencyCondition::Completed,
                            _ => self.diags.error(v, &at, "expected service_started, service_healthy or service_completed_successfully"),
                        },
                        "required" if v.as_bool() == Some(true) => {}
                        "restart" | "required" => self.diags.unsupported(field, &at, ""),
                        _ => self.diags.unsupported(field, &at, "unknown depends_on key"),
                    }
                }
            }
            dependencies.push(Dependency { service, condition });
        }
        dependencies
    }

    /// A `depends_on` cycle would hold every service in it forever.
    pub(super) fn check_cycles(&mut self, entries: &[(Key, Node)]) {
        let edges: BTreeMap<&str, Vec<&str>> = entries
            .iter()
            .map(|(key, node)| {
                let deps = node
                    .get("depends_on")
                    .and_then(Node::as_map)
                    .map(|d| d.iter().map(|(k, _)| k.name.as_str()).collect())
                    .unwrap_or_default();
                (key.name.as_str(), deps)
            })
            .collect();
        for (key, node) in entries {
            let mut stack = vec![vec![key.name.as_str()]];
            while let Some(chain) = stack.pop() {
                let last = chain[chain.len() - 1];
                for next in edges.get(last).into_iter().flatten() {
                    if *next == key.name {
                        let mut cycle = chain.clone();
                        cycle.push(next);
                        let at = format!("services.{}.depends_on", key.name);
                        let place = node.get("depends_on").unwrap_or(node);
                        self.diags.error(
                            place,
                            &at,
                            format!("dependency cycle: {}", cycle.join(" -> ")),
                        );
                        stack.clear();
                        break;
                    }
                    if !chain.contains(next) {
                        let mut longer = chain.clone();
                        longer.push(next);
                        stack.push(longer);
                    }
                }
            }
        }
    }
}

/// A service others wait on to complete (`service_completed_successfully`) is a one-off:
/// unless the file says how it restarts, it is restarted only on failure (compose's
/// default is never to restart; Swarm's, and dctl's, is always, which would run it again
/// and again).
pub(super) fn run_once_by_default(objects: &mut [(AnyObject, Origin)], entries: &[(Key, Node)]) {
    let completed: BTreeSet<String> = objects
        .iter()
        .filter_map(|(object, _)| match object {
            AnyObject::Service(service) => Some(service),
            _ => None,
        })
        .flat_map(|s| s.spec.depends_on.iter())
        .filter(|d| d.condition == DependencyCondition::Completed)
        .map(|d| d.service.clone())
        .collect();
    for (object, origin) in objects.iter_mut() {
        let AnyObject::Service(service) = object else {
            continue;
        };
        if !completed.contains(&service.metadata.name) {
            continue;
        }
        let Some((_, node)) = entries
            .iter()
            .find(|(k, _)| format!("services.{}", k.name) == origin.path)
        else {
            continue;
        };
        let explicit = node.get("restart").is_some()
            || node
                .get("deploy")
                .and_then(|d| d.get("restart_policy"))
                .is_some();
        if !explicit {
            service.spec.template.restart_policy.condition =
                crate::template::RestartCondition::OnFailure;
        }
    }
}
