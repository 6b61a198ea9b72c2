//! Startup, liveness and readiness probes, with Kubernetes' fields and defaults.

use serde::{Deserialize, Serialize};

use crate::template::{ContainerPort, PortRef};
use crate::validation::{FieldError, FieldPath};

/// The three probes of a task template; each is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// Until it succeeds once, the other two probes do not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
    /// Its failure kills the task; the service controller replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Its failure takes the task out of traffic, alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
}

/// Which of the three a probe is; the rules differ slightly (`successThreshold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// `startup`, `liveness`, `readiness`: the field names.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// One probe: exactly one handler and its timings. The timings are integer seconds as in
/// Kubernetes; a zero means unset and is replaced by the default, as Kubernetes does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Seconds after the container starts before the first probe; 0 by default.
    #[serde(default)]
    pub initial_delay_seconds: i32,
    /// Seconds between probes; 10 by default.
    #[serde(default)]
    pub period_seconds: i32,
    /// Seconds before a probe attempt counts as failed; 1 by default.
    #[serde(default)]
    pub timeout_seconds: i32,
    /// Consecutive successes to count as passing after a failure; 1 by default and the
    /// only value allowed for startup and liveness.
    #[serde(default)]
    pub success_threshold: i32,
    /// Consecutive failures to count as failing; 3 by default.
    #[serde(default)]
    pub failure_threshold: i32,
}

impl Probe {
    pub const DEFAULT_PERIOD_SECONDS: i32 = 10;
    pub const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
    pub const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
    pub const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

    /// The probe's handler; `None` unless exactly one is set (validation refuses that).
    pub fn handler(&self) -> Option<ProbeHandler<'_>> {
        match (&self.http_get, &self.tcp_socket, &self.exec) {
            (Some(http), None, None) => Some(ProbeHandler::HttpGet(http)),
            (None, Some(tcp), None) => Some(ProbeHandler::TcpSocket(tcp)),
            (None, None, Some(exec)) => Some(ProbeHandler::Exec(exec)),
            _ => None,
        }
    }
}

/// A borrowed view of the one handler a probe has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeHandler<'a> {
    HttpGet(&'a HttpGetAction),
    TcpSocket(&'a TcpSocketAction),
    Exec(&'a ExecAction),
}

/// Passes on an HTTP status from 200 to 399.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// `/` by default.
    #[serde(default)]
    pub path: String,
    pub port: PortRef,
    /// The task's own address when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Passes when a TCP connection opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    pub port: PortRef,
}

/// Passes when the command, run inside the container, exits 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }

    /// The probes that are set, in the order they gate each other.
    pub fn iter(&self) -> impl Iterator<Item = (ProbeKind, &Probe)> {
        [
            (ProbeKind::Startup, &self.startup),
            (ProbeKind::Liveness, &self.liveness),
            (ProbeKind::Readiness, &self.readiness),
        ]
        .into_iter()
        .filter_map(|(kind, probe)| probe.as_ref().map(|p| (kind, p)))
    }

    pub fn apply_defaults(&mut self) {
        for probe in [&mut self.startup, &mut self.liveness, &mut self.readiness]
            .into_iter()
            .flatten()
        {
            probe.apply_defaults();
        }
    }

    /// `ports` (at `ports_path`) are the template's, for probes that name a port.
    pub fn validate(
        &self,
        path: &FieldPath,
        ports: &[ContainerPort],
        ports_path: &FieldPath,
    ) -> Vec<FieldError> {
        self.iter()
            .flat_map(|(kind, probe)| {
                probe.validate(kind, &path.child(kind.as_str()), ports, ports_path)
            })
            .collect()
    }
}

impl Probe {
    pub fn apply_defaults(&mut self) {
        for (field, default) in [
            (&mut self.period_seconds, Self::DEFAULT_PERIOD_SECONDS),
            (&mut self.timeout_seconds, Self::DEFAULT_TIMEOUT_SECONDS),
            (&mut self.success_threshold, Self::DEFAULT_SUCCESS_THRESHOLD),
            (&mut self.failure_threshold, Self::DEFAULT_FAILURE_THRESHOLD),
        ] {
            if *field == 0 {
                *field = default;
            }
        }
        if let Some(http) = &mut self.http_get {
            if http.path.is_empty() {
                http.path = "/".to_string();
            }
        }
    }

    pub fn validate(
        &self,
        kind: ProbeKind,
        path: &FieldPath,
        ports: &[ContainerPort],
        ports_path: &FieldPath,
    ) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match self.handler() {
            None => errors.push(FieldError::new(
                path,
                "must specify exactly one of httpGet, tcpSocket, exec",
            )),
            Some(ProbeHandler::HttpGet(http)) => {
                let path = path.child("httpGet");
                if !http.path.is_empty() && !http.path.starts_with('/') {
                    errors.push(FieldError::new(
                        &path.child("path"),
                        format!("must start with '/', got {:?}", http.path),
                    ));
                }
                errors.extend(http.port.validate(&path.child("port"), ports, ports_path));
                for (i, header) in http.http_headers.iter().enumerate() {
                    if header.name.is_empty() {
                        let name = path.child("httpHeaders").index(i).child("name");
                        errors.push(FieldError::new(&name, "required"));
                    }
                }
            }
            Some(ProbeHandler::TcpSocket(tcp)) => {
                let port = path.child("tcpSocket").child("port");
                errors.extend(tcp.port.validate(&port, ports, ports_path));
            }
            Some(ProbeHandler::Exec(exec)) => {
                if exec.command.is_empty() {
                    errors.push(FieldError::new(
                        &path.child("exec").child("command"),
                        "required",
                    ));
                }
            }
        }
        if self.initial_delay_seconds < 0 {
            errors.push(FieldError::new(
                &path.child("initialDelaySeconds"),
                format!("must not be negative, got {}", self.initial_delay_seconds),
            ));
        }
        // A liveness or startup probe that needed two successes would keep a container
        // that just recovered marked as failing; Kubernetes forbids it for that reason.
        let single_success = matches!(kind, ProbeKind::Liveness | ProbeKind::Startup);
        for (field, value) in [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            let path = path.child(field);
            if field == "successThreshold" && single_success && value != 1 {
                errors.push(FieldError::new(&path, "must be 1"));
            } else if value < 1 {
                errors.push(FieldError::new(
                    &path,
                    format!("must be at least 1, got {value}"),
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<ContainerPort> {
        serde_json::from_str(r#"[{"name": "http", "containerPort": 8080}]"#).unwrap()
    }

    fn errors_of(kind: ProbeKind, json: &str) -> Vec<String> {
        let mut probe: Probe = serde_json::from_str(json).unwrap();
        probe.apply_defaults();
        let path = FieldPath::new("p").child(kind.as_str());
        probe
            .validate(kind, &path, &ports(), &FieldPath::new("ports"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let mut probe: Probe = serde_json::from_str(r#"{"httpGet": {"port": "http"}}"#).unwrap();
        probe.apply_defaults();
        let timings = (
            probe.initial_delay_seconds,
            probe.period_seconds,
            probe.timeout_seconds,
            probe.success_threshold,
            probe.failure_threshold,
        );
        assert_eq!(timings, (0, 10, 1, 1, 3));
        let http = probe.http_get.as_ref().unwrap();
        assert_eq!((http.path.as_str(), http.scheme), ("/", Scheme::Http));
        assert_eq!(probe.handler(), Some(ProbeHandler::HttpGet(http)));
    }

    #[test]
    fn validates_probes() {
        use ProbeKind::*;
        let one_handler = "must specify exactly one of httpGet, tcpSocket, exec";
        let cases: Vec<(ProbeKind, &str, Vec<String>)> = vec![
            (
                Liveness,
                r#"{"httpGet": {"port": "http", "path": "/healthz"}}"#,
                vec![],
            ),
            (
                Readiness,
                r#"{"tcpSocket": {"port": 8080}, "successThreshold": 2}"#,
                vec![],
            ),
            (
                Startup,
                r#"{"exec": {"command": ["/check"]}, "failureThreshold": 30}"#,
                vec![],
            ),
            (
                Liveness,
                r#"{}"#,
                vec![format!("p.liveness: {one_handler}")],
            ),
            (
                Liveness,
                r#"{"exec": {"command": ["/c"]}, "tcpSocket": {"port": 1}}"#,
                vec![format!("p.liveness: {one_handler}")],
            ),
            (
                Startup,
                r#"{"exec": {"command": []}}"#,
                vec!["p.startup.exec.command: required".into()],
            ),
            (
                Readiness,
                r#"{"httpGet": {"port": "metrics", "path": "ready"}}"#,
                vec![
                    "p.readiness.httpGet.path: must start with '/', got \"ready\"".into(),
                    "p.readiness.httpGet.port: no port named \"metrics\" in ports".into(),
                ],
            ),
            (
                Liveness,
                r#"{"tcpSocket": {"port": 0}, "successThreshold": 2, "initialDelaySeconds": -1,
                    "periodSeconds": -5, "timeoutSeconds": -1, "failureThreshold": -3}"#,
                vec![
                    "p.liveness.tcpSocket.port: must be between 1 and 65535, got 0".into(),
                    "p.liveness.initialDelaySeconds: must not be negative, got -1".into(),
                    "p.liveness.periodSeconds: must be at least 1, got -5".into(),
                    "p.liveness.timeoutSeconds: must be at least 1, got -1".into(),
                    "p.liveness.successThreshold: must be 1".into(),
                    "p.liveness.failureThreshold: must be at least 1, got -3".into(),
                ],
            ),
            (
                Readiness,
                r#"{"httpGet": {"port": 70000, "httpHeaders": [{"value": "x"}]}, "successThreshold": -1}"#,
                vec![
                    "p.readiness.httpGet.port: must be between 1 and 65535, got 70000".into(),
                    "p.readiness.httpGet.httpHeaders[0].name: required".into(),
                    "p.readiness.successThreshold: must be at least 1, got -1".into(),
                ],
            ),
        ];
        for (kind, json, expected) in cases {
            assert_eq!(errors_of(kind, json), expected, "{json}");
        }
    }

    #[test]
    fn an_undefaulted_probe_validates_without_panicking() {
        let probe: Probe = serde_json::from_str(r#"{"exec": {"command": ["/c"]}}"#).unwrap();
        let path = FieldPath::new("p");
        let errors = probe.validate(ProbeKind::Readiness, &path, &[], &FieldPath::new("ports"));
        assert_eq!(errors.len(), 4);
    }
}
