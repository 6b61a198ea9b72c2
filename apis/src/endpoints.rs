//! The Endpoints kind: where a Service's published ports reach its tasks, for the proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::resource::resource;
use crate::template::{check_port_number, Protocol};
use crate::validation::{FieldError, FieldPath};

resource!(
    /// One Service's endpoints, under the Service's own name: for each published port, the
    /// node address and host port of each of its running tasks (and the container's own
    /// address and port, for the proxy on the task's node), and whether that task is
    /// Ready and whether it is terminating. Written by the endpoints controller only; the
    /// only input of the proxy (routing mesh) that every agent runs.
    Endpoints,
    EndpointsSpec,
    EndpointsStatus
);

/// The annotation on a Service that switches readiness gating off: `"off"` makes every
/// running, not terminating task count as ready, as Swarm does for a task without a
/// healthcheck. An experiment switch, to show what the gate is for; not for production.
pub const ANNOTATION_READINESS_GATING: &str = "dctl.io/readiness-gating";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointsSpec {
    /// The Service's published ports, in its `publish` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    /// The Service's running tasks that have a host port for at least one published port,
    /// by task name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// A published port: what the proxy listens on, on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// `<port>-<protocol>` (`8080-tcp`), the key of [`Endpoint::host_ports`].
    pub name: String,
    /// The published port.
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

impl EndpointPort {
    /// The name of the published `port`/`protocol`: `8080-tcp`.
    pub fn name_for(port: i32, protocol: Protocol) -> String {
        format!("{port}-{protocol}")
    }
}

/// One task, reachable from every node at `address:hostPorts[<port name>]`, and from its
/// own node also at `taskAddress:containerPorts[<port name>]` (no DNAT on the way).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// The task's name.
    pub task: String,
    /// The node the task runs on.
    pub node: String,
    /// The node's address (its first reported address; `127.0.0.1` when it reports none).
    pub address: String,
    /// The host port the task's container port is bound to, by [`EndpointPort::name`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_ports: BTreeMap<String, i32>,
    /// The container's address on its (first) network: its node's proxy dials it there,
    /// without Docker's port mapping in the way. Absent when the task reports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_address: Option<String>,
    /// The container port each published port targets, by [`EndpointPort::name`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_ports: BTreeMap<String, i32>,
    /// Whether the task receives new connections: its `Ready` condition is `True` and it
    /// is not terminating.
    #[serde(default)]
    pub ready: bool,
    /// The task is being stopped (its desired state is no longer running, or its `Ready`
    /// condition says `Terminating`): out of traffic, its open connections may finish.
    #[serde(default)]
    pub terminating: bool,
}

/// Endpoints have no status: the object is itself an observation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointsStatus {}

impl EndpointsSpec {
    pub fn apply_defaults(&mut self) {}

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut names = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let path = path.child("ports").index(i);
            if let Err(message) = check_port_number(port.port) {
                errors.push(FieldError::new(&path.child("port"), message));
            }
            if !names.insert(port.name.as_str()) {
                let message = format!("duplicate port name {:?}", port.name);
                errors.push(FieldError::new(&path.child("name"), message));
            }
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let path = path.child("endpoints").index(i);
            if endpoint.task.is_empty() {
                errors.push(FieldError::new(&path.child("task"), "required"));
            }
            if let Some(address) = &endpoint.task_address {
                if address.parse::<IpAddr>().is_err() {
                    let message = format!("must be an IP address, got {address:?}");
                    errors.push(FieldError::new(&path.child("taskAddress"), message));
                }
            }
            for (field, ports) in [
                ("hostPorts", &endpoint.host_ports),
                ("containerPorts", &endpoint.container_ports),
            ] {
                for (name, number) in ports {
                    let port_path = path.child(field).child(name);
                    if !names.contains(name.as_str()) {
                        errors.push(FieldError::new(&port_path, "names no port in ports"));
                    } else if let Err(message) = check_port_number(*number) {
                        errors.push(FieldError::new(&port_path, message));
                    }
                }
            }
        }
        errors
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&EndpointPort> {
        self.ports.iter().find(|port| port.name == name)
    }
}

impl Endpoint {
    /// `address:hostPort` of the port named `port`, if the task has it.
    pub fn socket_address(&self, port: &str) -> Option<String> {
        let host_port = self.host_ports.get(port)?;
        Some(join_host_port(&self.address, *host_port))
    }

    /// `taskAddress:containerPort` of the port named `port`: the container itself, for
    /// its own node; `None` without a task address or that port.
    pub fn task_socket_address(&self, port: &str) -> Option<String> {
        let address = self.task_address.as_deref()?;
        let container_port = self.container_ports.get(port)?;
        Some(join_host_port(address, *container_port))
    }
}

/// `host:port`, with an IPv6 host in brackets.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::Resource;

    #[test]
    fn round_trips_and_validates() {
        let object = json!({
            "apiVersion": "dctl/v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {
                "ports": [{"name": "8080-tcp", "port": 8080, "protocol": "tcp"}],
                "endpoints": [{"task": "web.1.abcde", "node": "n1", "address": "10.0.0.1",
                               "hostPorts": {"8080-tcp": 32768}, "taskAddress": "172.18.0.2",
                               "containerPorts": {"8080-tcp": 80}, "ready": true, "terminating": false}],
            },
        });
        let mut endpoints: Endpoints = serde_json::from_value(object.clone()).unwrap();
        endpoints.apply_defaults();
        assert_eq!(endpoints.validate(), vec![]);
        assert_eq!(serde_json::to_value(&endpoints).unwrap(), object);
        let endpoint = &endpoints.spec.endpoints[0];
        assert_eq!(
            endpoint.socket_address("8080-tcp").as_deref(),
            Some("10.0.0.1:32768")
        );
        assert_eq!(endpoint.socket_address("53-udp"), None);
        assert_eq!(
            endpoint.task_socket_address("8080-tcp").as_deref(),
            Some("172.18.0.2:80")
        );
        assert_eq!(endpoint.task_socket_address("53-udp"), None);
        assert_eq!(EndpointPort::name_for(53, Protocol::Udp), "53-udp");
    }

    #[test]
    fn validation_errors() {
        let spec: EndpointsSpec = serde_json::from_value(json!({
            "ports": [{"name": "a", "port": 0}, {"name": "a", "port": 80}],
            "endpoints": [
                {"task": "", "node": "n1", "address": "::1", "hostPorts": {"b": 1}},
                {"task": "t", "node": "n1", "address": "::1", "taskAddress": "fd00::7",
                 "hostPorts": {"a": 1}, "containerPorts": {"a": 70000, "c": 80}},
                {"task": "u", "node": "n1", "address": "::1", "taskAddress": "not-an-ip"},
            ],
        }))
        .unwrap();
        let errors: Vec<String> = spec
            .validate(&FieldPath::new("spec"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.ports[0].port: must be between 1 and 65535, got 0",
                "spec.ports[1].name: duplicate port name \"a\"",
                "spec.endpoints[0].task: required",
                "spec.endpoints[0].hostPorts.b: names no port in ports",
                "spec.endpoints[1].containerPorts.a: must be between 1 and 65535, got 70000",
                "spec.endpoints[1].containerPorts.c: names no port in ports",
                "spec.endpoints[2].taskAddress: must be an IP address, got \"not-an-ip\"",
            ]
        );
    }

    #[test]
    fn endpoints_written_before_task_addresses_still_decode() {
        let endpoint: Endpoint = serde_json::from_value(json!({
            "task": "web.1.a", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30001},
        }))
        .unwrap();
        assert_eq!(endpoint.task_address, None);
        assert!(endpoint.container_ports.is_empty());
        assert_eq!(endpoint.task_socket_address("80-tcp"), None);
    }
}
