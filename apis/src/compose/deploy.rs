//! `deploy:` and `restart:` → replicas, resources, restart policy, rollouts and placement.

use super::service::Translator;
use super::values;
use super::yaml::Node;
use crate::meta::ObjectMeta;
use crate::quantity::Quantity;
use crate::resources::ResourceList;
use crate::service::{
    FailureAction, PlacementPreference, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder,
};
use crate::template::{RestartCondition, RestartPolicy};

impl Translator<'_> {
    pub(super) fn deploy(
        &mut self,
        node: &Node,
        path: &str,
        spec: &mut ServiceSpec,
        meta: &mut ObjectMeta,
    ) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            match key.name.as_str() {
                "mode" => match value.as_str() {
                    Some("replicated") => spec.mode = ServiceMode::Replicated,
                    Some("global") => spec.mode = ServiceMode::Global,
                    Some(job @ ("replicated-job" | "global-job")) => self.diags.error(
                        value,
                        &at,
                        format!("{job} is not supported: dctl services run until stopped (use restart_policy: {{condition: none}} for a one-off)"),
                    ),
                    _ => self.diags.error(value, &at, "expected replicated or global"),
                },
                "replicas" => spec.replicas = self.number(value, &at),
                "resources" => self.resources(value, &at, spec),
                "restart_policy" => self.restart_policy(value, &at, &mut spec.template.restart_policy),
                "update_config" => self.update_config(value, &at, &mut spec.update),
                "rollback_config" => self.update_config(value, &at, &mut spec.rollback),
                "placement" => self.placement(value, &at, spec),
                // Service labels: annotations, since compose label values are free text.
                "labels" => {
                    for (label, v) in self.key_values(value, &at) {
                        meta.annotations.insert(label, v);
                    }
                }
                "endpoint_mode" if value.as_str() == Some("vip") => {}
                "endpoint_mode" => self.diags.unsupported(key, &at, "dctl's proxy balances over Ready tasks (vip)"),
                _ => self.diags.unsupported(key, &at, "unknown deploy key"),
            }
        }
    }

    fn resources(&mut self, node: &Node, path: &str, spec: &mut ServiceSpec) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            let list = match key.name.as_str() {
                "limits" => &mut spec.template.resources.limits,
                "reservations" => &mut spec.template.resources.reservations,
                _ => {
                    self.diags.unsupported(key, &at, "");
                    continue;
                }
            };
            let mut parsed = ResourceList::default();
            let Some(fields) = self.mapping(value, &at) else {
                continue;
            };
            for (field, v) in fields {
                let at = format!("{at}.{}", field.name);
                match field.name.as_str() {
                    "cpus" => parsed.cpus = self.string(v, &at).map(Quantity::new),
                    "memory" => parsed.memory = self.bytes(v, &at),
                    _ => self.diags.unsupported(field, &at, ""),
                }
            }
            *list = parsed;
        }
    }

    /// Compose's pre-deploy `mem_limit`, `mem_reservation` and `cpus`.
    pub(super) fn legacy_resources(
        &mut self,
        key: &super::yaml::Key,
        node: &Node,
        path: &str,
        spec: &mut ServiceSpec,
    ) {
        let resources = &mut spec.template.resources;
        match key.name.as_str() {
            "mem_limit" => resources.limits.memory = self.bytes(node, path),
            "mem_reservation" => resources.reservations.memory = self.bytes(node, path),
            _ => resources.limits.cpus = self.string(node, path).map(Quantity::new),
        }
    }

    fn bytes(&mut self, node: &Node, path: &str) -> Option<Quantity> {
        let text = self.string(node, path)?;
        match values::bytes(&text) {
            Ok(bytes) => Some(Quantity::from_bytes(bytes)),
            Err(message) => {
                self.diags.error(node, path, message);
                None
            }
        }
    }

    fn restart_policy(&mut self, node: &Node, path: &str, policy: &mut RestartPolicy) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            match key.name.as_str() {
                "condition" => match value.as_str() {
                    Some("none") => policy.condition = RestartCondition::None,
                    Some("on-failure") => policy.condition = RestartCondition::OnFailure,
                    Some("any") => policy.condition = RestartCondition::Any,
                    _ => self
                        .diags
                        .error(value, &at, "expected none, on-failure or any"),
                },
                "delay" => policy.delay = self.duration(value, &at),
                "max_attempts" => policy.max_attempts = self.number(value, &at).unwrap_or(0),
                "window" => policy.window = self.duration(value, &at).unwrap_or_default(),
                _ => self
                    .diags
                    .unsupported(key, &at, "unknown restart_policy key"),
            }
        }
    }

    /// `restart:` (`no`, `always`, `on-failure[:N]`, `unless-stopped`) as a restart policy.
    pub(super) fn restart(&mut self, node: &Node, path: &str, policy: &mut RestartPolicy) {
        let text = node.as_str().unwrap_or_default();
        let (word, attempts) = text.split_once(':').unwrap_or((text, ""));
        policy.condition = match word {
            "no" | "false" => RestartCondition::None,
            "always" | "unless-stopped" => RestartCondition::Any,
            "on-failure" => RestartCondition::OnFailure,
            _ => {
                self.diags.error(
                    node,
                    path,
                    "expected no, always, on-failure[:N] or unless-stopped",
                );
                return;
            }
        };
        if !attempts.is_empty() {
            match attempts.parse() {
                Ok(n) if word == "on-failure" => policy.max_attempts = n,
                _ => self.diags.error(
                    node,
                    path,
                    "only on-failure takes a retry count (on-failure:3)",
                ),
            }
        }
    }

    fn update_config(&mut self, node: &Node, path: &str, config: &mut UpdateConfig) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            match key.name.as_str() {
                "parallelism" => config.parallelism = self.number(value, &at),
                "delay" => config.delay = self.duration(value, &at).unwrap_or_default(),
                "monitor" => config.monitor = self.duration(value, &at),
                "max_failure_ratio" => {
                    config.max_failure_ratio = self.number(value, &at).unwrap_or(0.0)
                }
                "order" => match value.as_str() {
                    Some("stop-first") => config.order = UpdateOrder::StopFirst,
                    Some("start-first") => config.order = UpdateOrder::StartFirst,
                    _ => self
                        .diags
                        .error(value, &at, "expected stop-first or start-first"),
                },
                "failure_action" => match value.as_str() {
                    Some("pause") => config.failure_action = FailureAction::Pause,
                    Some("continue") => config.failure_action = FailureAction::Continue,
                    Some("rollback") => config.failure_action = FailureAction::Rollback,
                    _ => self
                        .diags
                        .error(value, &at, "expected pause, continue or rollback"),
                },
                _ => self
                    .diags
                    .unsupported(key, &at, "unknown update_config key"),
            }
        }
    }

    fn placement(&mut self, node: &Node, path: &str, spec: &mut ServiceSpec) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            match key.name.as_str() {
                "constraints" => spec.placement.constraints = self.strings(value, &at),
                "preferences" => {
                    let Some(items) = self.sequence(value, &at) else {
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        match item.get("spread").and_then(Node::as_str) {
                            Some(spread) => spec.placement.preferences.push(PlacementPreference {
                                spread: spread.to_string(),
                            }),
                            None => self.diags.error(
                                item,
                                &format!("{at}[{i}]"),
                                "expected {spread: node.labels.NAME}",
                            ),
                        }
                    }
                }
                "max_replicas_per_node" => {
                    spec.placement.max_replicas_per_node = self.number(value, &at).unwrap_or(0);
                }
                _ => self.diags.unsupported(key, &at, "unknown placement key"),
            }
        }
    }
}
