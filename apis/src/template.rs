//! The task template: what one task of a Service runs, copied into each Task at creation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;
use crate::probe::Probes;
use crate::resources::Resources;
use crate::validation::{check_dns1123_label, check_port_name, FieldError, FieldPath};

/// The container a task runs and how it is kept healthy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskTemplate {
    /// Required. Images are never pulled implicitly from a registry the node cannot reach;
    /// that is the task runtime's concern, not validation's.
    #[serde(default)]
    pub image: String,
    /// Overrides the image's ENTRYPOINT when non-empty (Kubernetes' `command`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Overrides the image's CMD when non-empty (Kubernetes' `args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `SIGTERM` by default; `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// How long a task has between its stop signal and SIGKILL; 10s by default (Docker's),
    /// `Some` once defaulted. Optional because `0s` (kill at once) is a real choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Probes::is_empty")]
    pub probes: Probes,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The process's working directory inside the container (`docker run -w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The container's host name; the task's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` lines, `HOST:IP` (`docker run --add-host`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Runs an init process as PID 1 that reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Mounts the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Namespaced kernel parameters (`net.core.somaxconn: "1024"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Linux capabilities added to Docker's default set (`NET_ADMIN`, or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Linux capabilities removed from Docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Docker labels put on the container (below the labels dctl itself sets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A resource limit of the container's processes (`docker run --ulimit nofile=1024:2048`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `core`, …
    #[serde(default)]
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

impl TaskTemplate {
    pub const DEFAULT_STOP_SIGNAL: &'static str = "SIGTERM";
    pub const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// A port the container listens on; its `name` lets probes and published ports refer to
/// it without repeating the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 1–65535; a wider type so that validation, not the parser, reports a bad number.
    pub container_port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port given by number (`8080`) or by the name of a template port (`http`), as
/// Kubernetes' IntOrString.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl PortRef {
    /// The port number, looking a name up in the template's ports.
    pub fn resolve(&self, ports: &[ContainerPort]) -> Option<i32> {
        match self {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port),
        }
    }

    /// A number in range, or a name that `ports` (found at `ports_path`) defines.
    pub(crate) fn validate(
        &self,
        path: &FieldPath,
        ports: &[ContainerPort],
        ports_path: &FieldPath,
    ) -> Option<FieldError> {
        match self {
            PortRef::Number(n) => check_port_number(*n)
                .err()
                .map(|m| FieldError::new(path, m)),
            PortRef::Name(_) if self.resolve(ports).is_some() => None,
            PortRef::Name(name) => Some(FieldError::new(
                path,
                format!("no port named {name:?} in {ports_path}"),
            )),
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => serializer.serialize_i32(*n),
            PortRef::Name(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = PortRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or the name of a port in template.ports")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortRef, E> {
                i32::try_from(n)
                    .map(PortRef::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortRef, E> {
                i32::try_from(n)
                    .map(PortRef::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<PortRef, E> {
                Ok(PortRef::Name(name.to_string()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type", default)]
    pub type_: MountType,
    /// A volume name (none: an anonymous volume), a host path for `bind`, empty for `tmpfs`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default)]
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// Docker's mount types; `volume` is Docker's default for `--mount`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    #[default]
    Volume,
    Bind,
    Tmpfs,
}

/// A Network (by name, in the task's namespace) the task joins, and its DNS aliases there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachment {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// When the service controller replaces a task that stopped (Swarm's restart policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: RestartCondition,
    /// Between a task stopping and its replacement starting; 5s by default, `Some` once
    /// defaulted (`0s` is a real choice, so it is optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Replacements allowed within `window`; 0 means no limit.
    #[serde(default)]
    pub max_attempts: u32,
    /// The span `maxAttempts` counts over; 0s means the task's whole life.
    #[serde(default)]
    pub window: Duration,
}

impl RestartPolicy {
    pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TaskTemplate {
    pub fn apply_defaults(&mut self) {
        self.stop_signal
            .get_or_insert_with(|| Self::DEFAULT_STOP_SIGNAL.to_string());
        self.stop_grace_period
            .get_or_insert(Self::DEFAULT_STOP_GRACE_PERIOD);
        self.restart_policy
            .delay
            .get_or_insert(RestartPolicy::DEFAULT_DELAY);
        self.probes.apply_defaults();
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.image.trim().is_empty() {
            errors.push(FieldError::new(&path.child("image"), "required"));
        }
        for (i, env) in self.env.iter().enumerate() {
            let name_path = path.child("env").index(i).child("name");
            if env.name.is_empty() {
                errors.push(FieldError::new(&name_path, "required"));
            } else if env.name.contains('=') {
                errors.push(FieldError::new(&name_path, "must not contain '='"));
            }
        }
        self.validate_ports(&path.child("ports"), &mut errors);
        errors.extend(self.resources.validate(&path.child("resources")));
        self.validate_mounts(&path.child("mounts"), &mut errors);
        self.validate_networks(&path.child("networks"), &mut errors);
        if let Some(signal) = &self.stop_signal {
            if let Err(message) = check_signal(signal) {
                errors.push(FieldError::new(&path.child("stopSignal"), message));
            }
        }
        errors.extend(self.probes.validate(
            &path.child("probes"),
            &self.ports,
            &path.child("ports"),
        ));
        self.validate_container_settings(path, &mut errors);
        errors
    }

    /// The Docker settings beyond the process: working directory, host name and hosts,
    /// ulimits, sysctls and capabilities.
    fn validate_container_settings(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') {
                errors.push(FieldError::new(
                    &path.child("workingDir"),
                    format!("must be an absolute path, got {dir:?}"),
                ));
            }
        }
        if let Some(hostname) = &self.hostname {
            if let Err(message) = check_hostname(hostname) {
                errors.push(FieldError::new(&path.child("hostname"), message));
            }
        }
        for (i, entry) in self.extra_hosts.iter().enumerate() {
            // `HOST:IP`; an IPv6 address has colons of its own, so split at the first.
            let valid = entry.split_once(':').is_some_and(|(host, ip)| {
                check_hostname(host).is_ok()
                    && (ip == "host-gateway"
                        || ip.trim_matches(['[', ']']).parse::<IpAddr>().is_ok())
            });
            if !valid {
                errors.push(FieldError::new(
                    &path.child("extraHosts").index(i),
                    format!("expected HOST:IP, got {entry:?}"),
                ));
            }
        }
        let mut ulimit_names = BTreeSet::new();
        for (i, ulimit) in self.ulimits.iter().enumerate() {
            let path = path.child("ulimits").index(i);
            if ulimit.name.is_empty() {
                errors.push(FieldError::new(&path.child("name"), "required"));
            } else if !ulimit_names.insert(&ulimit.name) {
                errors.push(FieldError::new(
                    &path.child("name"),
                    format!("duplicate ulimit {:?}", ulimit.name),
                ));
            }
            if ulimit.soft > ulimit.hard && ulimit.hard >= 0 {
                errors.push(FieldError::new(
                    &path.child("soft"),
                    format!(
                        "must not exceed hard ({}), got {}",
                        ulimit.hard, ulimit.soft
                    ),
                ));
            }
        }
        for name in self.labels.keys() {
            if name.is_empty() {
                errors.push(FieldError::new(
                    &path.child("labels"),
                    "a label name must not be empty",
                ));
            }
        }
        for name in self.sysctls.keys() {
            if name.is_empty() || name.contains(char::is_whitespace) {
                errors.push(FieldError::new(
                    &path.child("sysctls").key(name),
                    "must be a kernel parameter name such as net.core.somaxconn",
                ));
            }
        }
        for (field, caps) in [("capAdd", &self.cap_add), ("capDrop", &self.cap_drop)] {
            for (i, cap) in caps.iter().enumerate() {
                let valid =
                    !cap.is_empty() && cap.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(FieldError::new(
                        &path.child(field).index(i),
                        format!("expected a capability name such as NET_ADMIN, got {cap:?}"),
                    ));
                }
            }
        }
    }

    fn validate_ports(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        let mut names = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let path = path.index(i);
            if let Err(message) = check_port_number(port.container_port) {
                errors.push(FieldError::new(&path.child("containerPort"), message));
            }
            let Some(name) = &port.name else { continue };
            if let Err(message) = check_port_name(name) {
                errors.push(FieldError::new(&path.child("name"), message));
            } else if !names.insert(name) {
                errors.push(FieldError::new(
                    &path.child("name"),
                    format!("duplicate port name {name:?}"),
                ));
            }
        }
    }

    fn validate_mounts(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        let mut targets = BTreeSet::new();
        for (i, mount) in self.mounts.iter().enumerate() {
            let path = path.index(i);
            let target = &mount.target;
            if target.is_empty() {
                errors.push(FieldError::new(&path.child("target"), "required"));
            } else if !target.starts_with('/') {
                errors.push(FieldError::new(
                    &path.child("target"),
                    format!("must be an absolute path, got {target:?}"),
                ));
            } else if !targets.insert(target.trim_end_matches('/')) {
                errors.push(FieldError::new(
                    &path.child("target"),
                    format!("duplicate mount target {target:?}"),
                ));
            }
            let source = &mount.source;
            let problem = match mount.type_ {
                MountType::Bind if source.is_empty() => Some("required for a bind mount".to_string()),
                MountType::Bind if !source.starts_with('/') => {
                    Some(format!("a bind mount needs an absolute host path, got {source:?}"))
                }
                MountType::Volume if source.contains('/') => Some(format!(
                    "a volume mount's source is a volume name, got {source:?} (use type: bind for a host path)"
                )),
                MountType::Tmpfs if !source.is_empty() => Some("must be empty for a tmpfs mount".to_string()),
                _ => None,
            };
            if let Some(message) = problem {
                errors.push(FieldError::new(&path.child("source"), message));
            }
        }
    }

    fn validate_networks(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        let mut names = BTreeSet::new();
        for (i, network) in self.networks.iter().enumerate() {
            let path = path.index(i);
            let name = &network.name;
            if name.is_empty() {
                errors.push(FieldError::new(&path.child("name"), "required"));
            } else if let Err(message) = check_dns1123_label(name) {
                errors.push(FieldError::new(&path.child("name"), message));
            } else if !names.insert(name) {
                errors.push(FieldError::new(
                    &path.child("name"),
                    format!("duplicate network {name:?}"),
                ));
            }
            for (j, alias) in network.aliases.iter().enumerate() {
                if alias.trim().is_empty() {
                    errors.push(FieldError::new(
                        &path.child("aliases").index(j),
                        "must not be empty",
                    ));
                }
            }
        }
    }
}

/// A host name as Linux takes it: 1–63 characters of letters, digits, `-` and `.`.
///
/// # Errors
/// A message naming the host name.
fn check_hostname(hostname: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&hostname.len())
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !hostname.starts_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid host name {hostname:?}: 1-63 letters, digits, '-' or '.'"
        ))
    }
}

/// # Errors
/// A message for a port outside 1–65535.
pub(crate) fn check_port_number(port: i32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("must be between 1 and 65535, got {port}"))
    }
}

/// Linux signal names without the `SIG` prefix, as Docker accepts them.
const SIGNALS: [&str; 35] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN",
];

/// A signal as Docker parses it: a name with or without `SIG`, any case (`SIGTERM`,
/// `term`), `RTMIN+n` / `RTMAX-n`, or a number 1–64. A typo caught here would otherwise
/// only surface when the task is stopped.
///
/// # Errors
/// A message naming the signal.
pub fn check_signal(signal: &str) -> Result<(), String> {
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |prefix: &str, sep: char| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sep)
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| (1..=15).contains(&n))
        })
    };
    let valid = signal.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n))
        || SIGNALS.contains(&name)
        || realtime("RTMIN", '+')
        || realtime("RTMAX", '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid signal {signal:?}: expected a name like SIGTERM or TERM, or a number like 15"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_signals() {
        for signal in [
            "SIGTERM",
            "TERM",
            "term",
            "SIGKILL",
            "15",
            "64",
            "SIGRTMIN+3",
            "RTMAX-1",
            "SIGUSR1",
        ] {
            assert_eq!(check_signal(signal), Ok(()), "{signal}");
        }
        for signal in [
            "", "SIGTREM", "0", "65", "SIG", "RTMIN+16", "-15", "SIGTERM ",
        ] {
            assert_eq!(
                check_signal(signal),
                Err(format!("invalid signal {signal:?}: expected a name like SIGTERM or TERM, or a number like 15")),
            );
        }
    }

    #[test]
    fn port_refs_read_numbers_and_names() {
        let refs: Vec<PortRef> = serde_json::from_str(r#"[8080, "http"]"#).unwrap();
        assert_eq!(refs, [PortRef::Number(8080), PortRef::Name("http".into())]);
        assert_eq!(serde_json::to_string(&refs).unwrap(), r#"[8080,"http"]"#);
        assert!(serde_json::from_str::<PortRef>("true").is_err());
        assert!(serde_json::from_str::<PortRef>("4294967296").is_err());
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            protocol: Protocol::Tcp,
        }];
        assert_eq!(PortRef::Name("http".into()).resolve(&ports), Some(8080));
        assert_eq!(PortRef::Name("grpc".into()).resolve(&ports), None);
        assert_eq!(PortRef::Number(9090).resolve(&ports), Some(9090));
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(
                serde_json::to_value(protocol).unwrap(),
                protocol.to_string()
            );
        }
    }

    #[test]
    fn defaults_fill_stop_and_restart_settings() {
        let mut template: TaskTemplate = serde_json::from_str(r#"{"image": "web:1"}"#).unwrap();
        template.apply_defaults();
        assert_eq!(template.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(template.stop_grace_period, Some(Duration::from_secs(10)));
        let policy = &template.restart_policy;
        assert_eq!(
            (
                policy.condition,
                policy.delay,
                policy.max_attempts,
                policy.window
            ),
            (
                RestartCondition::Any,
                Some(Duration::from_secs(5)),
                0,
                Duration::ZERO
            )
        );
        // Explicit values, zero included, survive defaulting.
        let json = r#"{"image": "web:1", "stopGracePeriod": "0s", "restartPolicy": {"delay": "0s", "condition": "on-failure"}}"#;
        let mut template: TaskTemplate = serde_json::from_str(json).unwrap();
        template.apply_defaults();
        assert_eq!(template.stop_grace_period, Some(Duration::ZERO));
        assert_eq!(template.restart_policy.delay, Some(Duration::ZERO));
        assert_eq!(
            template.restart_policy.condition,
            RestartCondition::OnFailure
        );
    }
}
