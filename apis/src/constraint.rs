//! Swarm placement constraints (`node.labels.zone == eu`) and how a node matches them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::node::{Node, NodeRole};

/// One parsed placement constraint: `key op value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: ConstraintOp,
    pub value: String,
}

/// What a constraint looks at; the names are Swarm's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConstraintKey {
    /// `node.id`: the node's name or its uid.
    NodeId,
    NodeHostname,
    NodeRole,
    /// `node.labels.<name>`: the Node's spec labels, set by the operator.
    NodeLabel(String),
    /// `engine.labels.<name>`: the Docker daemon's labels, reported by the agent.
    EngineLabel(String),
    PlatformOs,
    PlatformArch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConstraintOp {
    Eq,
    NotEq,
}

/// Why a constraint does not parse: `invalid constraint "node.labels.zone = a": expected
/// == or !=`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid constraint {input:?}: {reason}")]
pub struct ConstraintError {
    pub input: String,
    pub reason: String,
}

const KEYS_HELP: &str = "expected node.id, node.hostname, node.role, node.platform.os, \
                         node.platform.arch, node.labels.<name> or engine.labels.<name>";

/// The facts about a node that constraints look at, borrowed from wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub hostname: &'a str,
    pub role: NodeRole,
    pub os: &'a str,
    pub architecture: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub engine_labels: &'a BTreeMap<String, String>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> NodeFacts<'a> {
    /// The facts of a Node object; a node that has not reported status yet has an empty
    /// hostname, platform and engine labels.
    pub fn of(node: &'a Node) -> Self {
        let status = node.status.as_ref();
        NodeFacts {
            name: &node.metadata.name,
            uid: &node.metadata.uid,
            hostname: status.map_or("", |s| s.hostname.as_str()),
            role: node.spec.role,
            os: status.map_or("", |s| s.platform.os.as_str()),
            architecture: status.map_or("", |s| s.platform.architecture.as_str()),
            labels: &node.spec.labels,
            engine_labels: status.map_or(&NO_LABELS, |s| &s.engine_labels),
        }
    }
}

impl Constraint {
    /// Reads `key == value` or `key != value`; spaces around the operator are optional.
    ///
    /// # Errors
    /// A missing or doubled operator, an unknown key, an empty value, or a role other than
    /// `manager` or `worker`; the message quotes the constraint.
    pub fn parse(input: &str) -> Result<Self, ConstraintError> {
        let error = |reason: String| ConstraintError {
            input: input.to_string(),
            reason,
        };
        let operator = [("==", ConstraintOp::Eq), ("!=", ConstraintOp::NotEq)]
            .into_iter()
            .filter_map(|(text, op)| input.find(text).map(|at| (at, op)))
            .min_by_key(|(at, _)| *at);
        let Some((at, op)) = operator else {
            return Err(error("expected == or !=".into()));
        };
        let key = input[..at].trim();
        let value = input[at + 2..].trim();
        // Swarm's value pattern has no '=' or '!': `a === b` is a typo, not the value "= b".
        if value.contains('=') || value.contains('!') {
            return Err(error("expected a single == or !=".into()));
        }
        if key.is_empty() {
            return Err(error(format!("missing key before {}", op.as_str())));
        }
        if value.is_empty() {
            return Err(error(format!("missing value after {}", op.as_str())));
        }
        let key = ConstraintKey::parse(key).map_err(error)?;
        if key == ConstraintKey::NodeRole
            && !["manager", "worker"]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(value))
        {
            return Err(error(format!(
                "node.role must be manager or worker, got {value:?}"
            )));
        }
        Ok(Constraint {
            key,
            op,
            value: value.to_string(),
        })
    }

    /// Whether the node satisfies this constraint. As in Swarm, values compare without
    /// regard to case, and a missing label reads as empty (so `!=` matches a node
    /// without the label).
    pub fn matches(&self, node: &NodeFacts<'_>) -> bool {
        let equal = |candidate: &str| candidate.eq_ignore_ascii_case(&self.value);
        let found = match &self.key {
            ConstraintKey::NodeId => equal(node.name) || equal(node.uid),
            ConstraintKey::NodeHostname => equal(node.hostname),
            ConstraintKey::NodeRole => equal(node.role.as_str()),
            ConstraintKey::NodeLabel(name) => equal(label(node.labels, name)),
            ConstraintKey::EngineLabel(name) => equal(label(node.engine_labels, name)),
            ConstraintKey::PlatformOs => equal(node.os),
            ConstraintKey::PlatformArch => {
                canonical_arch(node.architecture).eq_ignore_ascii_case(canonical_arch(&self.value))
            }
        };
        match self.op {
            ConstraintOp::Eq => found,
            ConstraintOp::NotEq => !found,
        }
    }
}

/// Whether the node satisfies every constraint.
pub fn matches_all(constraints: &[Constraint], node: &NodeFacts<'_>) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

fn label<'m>(labels: &'m BTreeMap<String, String>, name: &str) -> &'m str {
    labels.get(name).map_or("", String::as_str)
}

/// Docker reports `x86_64` where images and users say `amd64`; both spellings match.
/// Docker's and Go's names for one architecture: `x86_64` is `amd64`, `aarch64` is `arm64`.
pub(crate) fn canonical_arch(arch: &str) -> &str {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        _ => arch,
    }
}

impl ConstraintKey {
    fn parse(key: &str) -> Result<Self, String> {
        let lower = key.to_ascii_lowercase();
        let label_name = |prefix: &str| {
            lower
                .starts_with(prefix)
                .then(|| key[prefix.len()..].to_string())
                .filter(|name| !name.is_empty())
        };
        let parsed = match lower.as_str() {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::NodeHostname,
            "node.role" => ConstraintKey::NodeRole,
            "node.platform.os" => ConstraintKey::PlatformOs,
            "node.platform.arch" => ConstraintKey::PlatformArch,
            _ => match (label_name("node.labels."), label_name("engine.labels.")) {
                (Some(name), _) => ConstraintKey::NodeLabel(name),
                (_, Some(name)) => ConstraintKey::EngineLabel(name),
                _ => return Err(format!("unknown key {key:?}: {KEYS_HELP}")),
            },
        };
        Ok(parsed)
    }
}

impl ConstraintOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintOp::Eq => "==",
            ConstraintOp::NotEq => "!=",
        }
    }
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::NodeHostname => f.write_str("node.hostname"),
            ConstraintKey::NodeRole => f.write_str("node.role"),
            ConstraintKey::NodeLabel(name) => write!(f, "node.labels.{name}"),
            ConstraintKey::EngineLabel(name) => write!(f, "engine.labels.{name}"),
            ConstraintKey::PlatformOs => f.write_str("node.platform.os"),
            ConstraintKey::PlatformArch => f.write_str("node.platform.arch"),
        }
    }
}

/// `node.labels.zone == eu`: what the scheduler prints when it explains a refusal.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.key, self.op.as_str(), self.value)
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Constraint::parse(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_constraints() {
        let cases: &[(&str, ConstraintKey, ConstraintOp, &str)] = &[
            (
                "node.labels.zone == eu",
                ConstraintKey::NodeLabel("zone".into()),
                ConstraintOp::Eq,
                "eu",
            ),
            (
                "node.role!=manager",
                ConstraintKey::NodeRole,
                ConstraintOp::NotEq,
                "manager",
            ),
            (
                "Node.ID == h1",
                ConstraintKey::NodeId,
                ConstraintOp::Eq,
                "h1",
            ),
            (
                "node.hostname == a.b",
                ConstraintKey::NodeHostname,
                ConstraintOp::Eq,
                "a.b",
            ),
            (
                "engine.labels.Disk == ssd",
                ConstraintKey::EngineLabel("Disk".into()),
                ConstraintOp::Eq,
                "ssd",
            ),
            (
                "node.platform.os == linux",
                ConstraintKey::PlatformOs,
                ConstraintOp::Eq,
                "linux",
            ),
            (
                "node.platform.arch != arm64",
                ConstraintKey::PlatformArch,
                ConstraintOp::NotEq,
                "arm64",
            ),
        ];
        for (text, key, op, value) in cases {
            let parsed = Constraint::parse(text).unwrap();
            assert_eq!(
                parsed,
                Constraint {
                    key: key.clone(),
                    op: *op,
                    value: value.to_string()
                },
                "{text}"
            );
        }
        let round_trip = Constraint::parse("node.labels.zone==eu")
            .unwrap()
            .to_string();
        assert_eq!(round_trip, "node.labels.zone == eu");
    }

    #[test]
    fn rejects_bad_constraints() {
        let cases: &[(&str, String)] = &[
            ("node.labels.zone = a", "expected == or !=".into()),
            ("node.labels.zone", "expected == or !=".into()),
            ("a == b == c", "expected a single == or !=".into()),
            (
                "node.labels.tier === frontend",
                "expected a single == or !=".into(),
            ),
            (
                "node.labels.tier ==! frontend",
                "expected a single == or !=".into(),
            ),
            ("== eu", "missing key before ==".into()),
            ("node.role !=", "missing value after !=".into()),
            (
                "node.labels. == x",
                format!("unknown key \"node.labels.\": {KEYS_HELP}"),
            ),
            (
                "node.name == x",
                format!("unknown key \"node.name\": {KEYS_HELP}"),
            ),
            (
                "node.role == boss",
                "node.role must be manager or worker, got \"boss\"".into(),
            ),
        ];
        for (text, reason) in cases {
            let error = Constraint::parse(text).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("invalid constraint {text:?}: {reason}")
            );
        }
    }

    #[test]
    fn matches_node_facts() {
        let node_labels = labels(&[("zone", "eu"), ("tier", "frontend")]);
        let engine_labels = labels(&[("disk", "ssd")]);
        let node = NodeFacts {
            name: "h1",
            uid: "0b5e",
            hostname: "host-1",
            role: NodeRole::Worker,
            os: "linux",
            architecture: "x86_64",
            labels: &node_labels,
            engine_labels: &engine_labels,
        };
        let cases: &[(&str, bool)] = &[
            ("node.labels.zone == eu", true),
            ("node.labels.zone == EU", true),
            ("node.labels.zone != eu", false),
            ("node.labels.rack == r1", false),
            ("node.labels.rack != r1", true),
            ("engine.labels.disk == ssd", true),
            ("node.id == h1", true),
            ("node.id == 0b5e", true),
            ("node.id != h2", true),
            ("node.hostname == host-1", true),
            ("node.role == manager", false),
            ("node.role != manager", true),
            ("node.platform.os == linux", true),
            ("node.platform.arch == amd64", true),
            ("node.platform.arch == x86_64", true),
            ("node.platform.arch == arm64", false),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Constraint::parse(text).unwrap().matches(&node),
                *expected,
                "{text}"
            );
        }
        let all = ["node.labels.zone == eu", "node.role != manager"].map(|c| c.parse().unwrap());
        assert!(matches_all(&all, &node));
        let some = ["node.labels.zone == eu", "node.role == manager"].map(|c| c.parse().unwrap());
        assert!(!matches_all(&some, &node));
    }

    #[test]
    fn facts_of_a_node_without_status() {
        let mut node = Node::new(crate::meta::ObjectMeta::default(), Default::default());
        node.metadata.name = "h2".into();
        node.spec.labels = labels(&[("zone", "us")]);
        let facts = NodeFacts::of(&node);
        assert_eq!((facts.name, facts.hostname, facts.os), ("h2", "", ""));
        assert!(Constraint::parse("node.labels.zone == us")
            .unwrap()
            .matches(&facts));
        assert!(Constraint::parse("engine.labels.disk != ssd")
            .unwrap()
            .matches(&facts));
    }
}
