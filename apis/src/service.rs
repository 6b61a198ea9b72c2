//! The Service kind: a workload and its published endpoint, Swarm-style.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::constraint::{Constraint, ConstraintError};
use crate::duration::Duration;
use crate::meta::{Condition, Time};
use crate::resource::resource;
use crate::task::{TaskPort, TaskSpec};
use crate::template::{check_port_number, PortRef, Protocol, TaskTemplate};
use crate::validation::{check_dns1123_label, FieldError, FieldPath};

resource!(
    /// What should run (the template), how many and where, how it is rolled out, and the
    /// ports published for it (on every node through the proxy, or on its tasks' nodes).
    Service,
    ServiceSpec,
    ServiceStatus
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub mode: ServiceMode,
    /// Replicated mode only; 1 by default, `Some` once defaulted. Kept optional so that a
    /// global service can be told apart from one that asked for a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub template: TaskTemplate,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    #[serde(default)]
    pub update: UpdateConfig,
    #[serde(default)]
    pub rollback: UpdateConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// Holds template rollouts where they are (Kubernetes' `spec.paused`); scaling and
    /// restarts go on. Set by `dctl rollout pause|resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Services in the same namespace that must reach a condition before this one gets
    /// its first tasks (compose's `depends_on`); once it has tasks, it is not held again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
}

/// A service this one waits for, and for what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// Compose's `service_started`, `service_healthy` and `service_completed_successfully`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyCondition {
    /// Every desired task of the dependency is running.
    #[default]
    Started,
    /// Every desired task of the dependency is Ready.
    Ready,
    /// A task of the dependency has exited 0.
    Completed,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Started => "started",
            DependencyCondition::Ready => "ready",
            DependencyCondition::Completed => "completed",
        }
    }
}

impl ServiceSpec {
    pub const DEFAULT_REPLICAS: u32 = 1;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceMode {
    /// `replicas` tasks, one per slot.
    #[default]
    Replicated,
    /// One task on every eligible node.
    Global,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated => "replicated",
            ServiceMode::Global => "global",
        }
    }
}

impl std::fmt::Display for ServiceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where tasks may run (constraints) and how they spread (preferences).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// `node.labels.tier == frontend`; kept as written, parsed by validation and the
    /// scheduler (`Placement::parsed_constraints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// 0 means no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_replicas_per_node: u32,
    /// Swarm's `placement.platforms` (compose's `platform`): a node must be one of these;
    /// none means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlacementPlatform>,
}

/// An operating system and architecture a task can run on (`linux/amd64`); an empty part
/// matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementPlatform {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Docker's or Go's name: `x86_64` and `amd64` are one, as are `aarch64` and `arm64`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
}

impl PlacementPlatform {
    /// Whether a node of this `os` and `architecture` is this platform; as in constraints,
    /// case does not matter.
    pub fn matches(&self, os: &str, architecture: &str) -> bool {
        let os_matches = self.os.is_empty() || self.os.eq_ignore_ascii_case(os);
        let arch_matches = self.architecture.is_empty()
            || crate::constraint::canonical_arch(&self.architecture)
                .eq_ignore_ascii_case(crate::constraint::canonical_arch(architecture));
        os_matches && arch_matches
    }
}

impl std::fmt::Display for PlacementPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = |s: &str| {
            if s.is_empty() {
                "*".to_string()
            } else {
                s.to_string()
            }
        };
        write!(f, "{}/{}", part(&self.os), part(&self.architecture))
    }
}

/// Whether a node of `os` and `architecture` is one of `platforms` (any, when none).
pub fn platform_fits(platforms: &[PlacementPlatform], os: &str, architecture: &str) -> bool {
    platforms.is_empty() || platforms.iter().any(|p| p.matches(os, architecture))
}

/// Spread tasks evenly over the values of a node label (`node.labels.zone`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementPreference {
    #[serde(default)]
    pub spread: String,
}

/// Swarm's `update_config` (and `rollback_config`), plus a progress deadline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConfig {
    /// Tasks updated at once; 1 by default, 0 means all at once (as in Swarm). `Some`
    /// once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Between batches.
    #[serde(default)]
    pub delay: Duration,
    #[serde(default)]
    pub order: UpdateOrder,
    #[serde(default)]
    pub failure_action: FailureAction,
    /// How long each new task is watched for failure after it is Ready; 5s by default,
    /// `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Duration>,
    /// The share of updated tasks that may fail before `failureAction` applies, 0 to 1.
    #[serde(default)]
    pub max_failure_ratio: f64,
    /// A rollout that makes no progress this long has failed; 600s by default (as
    /// Kubernetes' `progressDeadlineSeconds`), `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
}

impl UpdateConfig {
    pub const DEFAULT_PARALLELISM: u32 = 1;
    pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);
    pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one: never more tasks than replicas.
    #[default]
    StopFirst,
    /// Start the new task and stop the old one once the new one is Ready.
    StartFirst,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

impl ServiceSpec {
    /// Whether `task` is what this spec would create now: the same template, with host
    /// ports for exactly the container ports the `publish` entries target. A task that
    /// falls short is replaced by a rollout like one of an older template, because Docker
    /// cannot add or remove a running container's port bindings.
    pub fn is_up_to_date(&self, task: &TaskSpec) -> bool {
        task.template == self.template && task.published_ports == self.published_task_ports()
    }

    /// The container ports that `publish` entries target, sorted and without repeats,
    /// each with its fixed host port in `host` mode; a named target is looked up in the
    /// template's ports, and one that names no port (validation refuses it) is left out.
    pub fn published_task_ports(&self) -> Vec<TaskPort> {
        let ports: BTreeSet<TaskPort> = self
            .publish
            .iter()
            .filter_map(|publish| {
                let container_port = publish.target_port.resolve(&self.template.ports)?;
                Some(TaskPort {
                    container_port,
                    protocol: publish.protocol,
                    host_port: (publish.mode == PublishMode::Host).then_some(publish.port),
                })
            })
            .collect();
        ports.into_iter().collect()
    }
}

/// A port a Service publishes: on every node through the proxy (`ingress`), or on the
/// nodes that run its tasks, straight to the container (`host`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedPort {
    pub port: i32,
    /// A container port number or the name of a template port.
    pub target_port: PortRef,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
}

/// Swarm's two publish modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishMode {
    /// The routing mesh: every node's proxy listens on the port and forwards to Ready
    /// tasks anywhere; readiness gates the traffic.
    #[default]
    Ingress,
    /// Docker binds the port on the node a task runs on, straight to its container: no
    /// proxy, no readiness gate, and at most one such task per node and port (the
    /// scheduler keeps a second off a node where the port is taken).
    Host,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub observed_generation: i64,
    /// Tasks that exist and are not terminated.
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    /// Tasks running the current template.
    #[serde(default)]
    pub updated_replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The revision of the current template, for `dctl rollout history|undo`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub revision: i64,
    /// The template-and-placement hash of that revision (`revision::template_hash`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision_hash: String,
}

/// The state of the latest rollout, as Swarm's `UpdateStatus`, plus what the rollout
/// controller needs to carry from one reconcile to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStatus {
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The revision being rolled to.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub revision: i64,
    /// The template-and-placement hash of that revision (`revision::template_hash`): what
    /// tells this rollout from the next one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When a slot last finished updating (or the rollout started): the progress deadline
    /// and the delay between batches count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<Time>,
    /// How many slots needed updating when the rollout started: the denominator of the
    /// failure ratio.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slots: u32,
    /// Slots updated and Ready so far; when it grows, the rollout made progress.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub progress: u32,
    /// The new tasks counted as failures so far, so each counts once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
}

impl RolloutState {
    /// Still rolling: new batches are started.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Updating | RolloutState::RollbackStarted)
    }

    /// A rollback is, or was, under way.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            RolloutState::RollbackStarted
                | RolloutState::RollbackPaused
                | RolloutState::RollbackCompleted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Updating => "updating",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RollbackStarted => "rollback_started",
            RolloutState::RollbackPaused => "rollback_paused",
            RolloutState::RollbackCompleted => "rollback_completed",
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Swarm's names (`docker service inspect` shows `rollback_started`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
            && self.preferences.is_empty()
            && self.max_replicas_per_node == 0
            && self.platforms.is_empty()
    }

    /// The constraints, parsed.
    ///
    /// # Errors
    /// The first constraint that does not parse (validation reports them all).
    pub fn parsed_constraints(&self) -> Result<Vec<Constraint>, ConstraintError> {
        self.constraints
            .iter()
            .map(|c| Constraint::parse(c))
            .collect()
    }
}

impl PlacementPreference {
    /// The label a spread preference names: `node.labels.zone` → (node label, `zone`).
    pub fn label(&self) -> Option<(SpreadOver, &str)> {
        let (over, name) = if let Some(name) = self.spread.strip_prefix("node.labels.") {
            (SpreadOver::NodeLabel, name)
        } else {
            (
                SpreadOver::EngineLabel,
                self.spread.strip_prefix("engine.labels.")?,
            )
        };
        (!name.is_empty()).then_some((over, name))
    }
}

/// Which labels a spread preference reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpreadOver {
    NodeLabel,
    EngineLabel,
}

impl ServiceSpec {
    pub fn apply_defaults(&mut self) {
        if self.mode == ServiceMode::Replicated {
            self.replicas.get_or_insert(Self::DEFAULT_REPLICAS);
        }
        self.template.apply_defaults();
        self.update.apply_defaults();
        self.rollback.apply_defaults();
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.mode == ServiceMode::Global {
            if self.replicas.is_some() {
                errors.push(FieldError::new(
                    &path.child("replicas"),
                    "not allowed when mode is global",
                ));
            }
            if self.placement.max_replicas_per_node != 0 {
                let max = path.child("placement").child("maxReplicasPerNode");
                errors.push(FieldError::new(&max, "not allowed when mode is global"));
            }
        }
        let template = path.child("template");
        errors.extend(self.template.validate(&template));
        errors.extend(self.placement.validate(&path.child("placement")));
        errors.extend(self.update.validate(&path.child("update"), false));
        errors.extend(self.rollback.validate(&path.child("rollback"), true));
        let mut dependencies = BTreeSet::new();
        for (i, dependency) in self.depends_on.iter().enumerate() {
            let path = path.child("dependsOn").index(i).child("service");
            if let Err(message) = check_dns1123_label(&dependency.service) {
                errors.push(FieldError::new(&path, message));
            } else if !dependencies.insert(&dependency.service) {
                let message = format!("duplicate dependency {:?}", dependency.service);
                errors.push(FieldError::new(&path, message));
            }
        }
        let mut published = BTreeSet::new();
        for (i, port) in self.publish.iter().enumerate() {
            let path = path.child("publish").index(i);
            if let Err(message) = check_port_number(port.port) {
                errors.push(FieldError::new(&path.child("port"), message));
            } else if !published.insert((port.port, port.protocol)) {
                let message = format!(
                    "duplicate published port {}/{}",
                    port.port,
                    port.protocol.as_str()
                );
                errors.push(FieldError::new(&path.child("port"), message));
            }
            let ports = &self.template.ports;
            errors.extend(port.target_port.validate(
                &path.child("targetPort"),
                ports,
                &template.child("ports"),
            ));
        }
        errors
    }
}

impl Placement {
    fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (i, constraint) in self.constraints.iter().enumerate() {
            if let Err(error) = Constraint::parse(constraint) {
                errors.push(FieldError::new(
                    &path.child("constraints").index(i),
                    error.to_string(),
                ));
            }
        }
        for (i, preference) in self.preferences.iter().enumerate() {
            if preference.label().is_none() {
                let spread = path.child("preferences").index(i).child("spread");
                let message = format!(
                    "expected node.labels.<name> or engine.labels.<name>, got {:?}",
                    preference.spread
                );
                errors.push(FieldError::new(&spread, message));
            }
        }
        for (i, platform) in self.platforms.iter().enumerate() {
            if platform.os.is_empty() && platform.architecture.is_empty() {
                let message = "name an os, an architecture or both";
                errors.push(FieldError::new(&path.child("platforms").index(i), message));
            }
        }
        errors
    }
}

impl UpdateConfig {
    pub fn apply_defaults(&mut self) {
        self.parallelism.get_or_insert(Self::DEFAULT_PARALLELISM);
        self.monitor.get_or_insert(Self::DEFAULT_MONITOR);
        self.progress_deadline
            .get_or_insert(Self::DEFAULT_PROGRESS_DEADLINE);
    }

    fn validate(&self, path: &FieldPath, is_rollback: bool) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            let message = format!("must be between 0 and 1, got {}", self.max_failure_ratio);
            errors.push(FieldError::new(&path.child("maxFailureRatio"), message));
        }
        // A failed rollback cannot itself be rolled back: Swarm allows only pause|continue.
        if is_rollback && self.failure_action == FailureAction::Rollback {
            let message = "must be pause or continue for a rollback";
            errors.push(FieldError::new(&path.child("failureAction"), message));
        }
        errors
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
