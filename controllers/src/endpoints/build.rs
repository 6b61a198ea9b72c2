//! Which tasks are a Service's endpoints, and which of them take traffic: pure decisions.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dctl_apis::endpoints::{Endpoint, EndpointPort, EndpointsSpec, ANNOTATION_READINESS_GATING};
use dctl_apis::meta::find_condition;
use dctl_apis::service::{PublishMode, PublishedPort};
use dctl_apis::task::{TaskDesiredState, CONDITION_READY};
use dctl_apis::{ConditionStatus, Node, Service, Task, TaskState};

/// The `Ready` condition's reason while the task runtime takes a task out of traffic
/// before stopping it (docs/task-lifecycle.md).
pub const REASON_TERMINATING: &str = "Terminating";

/// The address used for a node that reports none (a node of a one-host cluster).
pub const FALLBACK_ADDRESS: &str = "127.0.0.1";

/// Whether the Service asks, through its experiment annotation, that running tasks count
/// as ready without their `Ready` condition.
pub fn readiness_gating_off(service: &Service) -> bool {
    service
        .metadata
        .annotations
        .get(ANNOTATION_READINESS_GATING)
        .is_some_and(|value| value.eq_ignore_ascii_case("off"))
}

/// The address other nodes reach `node`'s host ports at: its first reported address that
/// is not a loopback one (IPv4 first), else its first address, else `127.0.0.1`.
pub fn node_address(node: Option<&Node>) -> String {
    let addresses: Vec<IpAddr> = node
        .and_then(|node| node.status.as_ref())
        .map(|status| {
            status
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let routable = |want_v4: bool| {
        addresses
            .iter()
            .find(|a| a.is_ipv4() == want_v4 && !a.is_loopback() && !a.is_unspecified())
    };
    routable(true)
        .or_else(|| routable(false))
        .or(addresses.first())
        .map_or_else(|| FALLBACK_ADDRESS.to_string(), ToString::to_string)
}

/// The Endpoints spec of `service` given its own tasks: one entry per running task bound
/// to a node with a host port for at least one published port, sorted by task name, with
/// the container's own address and ports beside its node's.
///
/// A task is terminating when its desired state is no longer `running` or its `Ready`
/// condition says `Terminating`; it is ready when its `Ready` condition is `True` (or
/// readiness gating is off) and it is not terminating.
pub fn endpoints_spec(
    service: &Service,
    tasks: &[&Task],
    node_address: impl Fn(&str) -> String,
) -> EndpointsSpec {
    // Host-mode ports are Docker's to bind on the task's node: no proxy serves them.
    let mesh: Vec<&PublishedPort> = service
        .spec
        .publish
        .iter()
        .filter(|publish| publish.mode == PublishMode::Ingress)
        .collect();
    let ports: Vec<EndpointPort> = mesh
        .iter()
        .map(|publish| EndpointPort {
            name: EndpointPort::name_for(publish.port, publish.protocol),
            port: publish.port,
            protocol: publish.protocol,
        })
        .collect();
    let gating_off = readiness_gating_off(service);
    let mut endpoints: Vec<Endpoint> = tasks
        .iter()
        .filter_map(|task| {
            let status = task.status.as_ref()?;
            let node = task.spec.node_name.as_ref()?;
            if status.state != TaskState::Running {
                return None;
            }
            let (mut host_ports, mut container_ports) = (BTreeMap::new(), BTreeMap::new());
            for publish in &mesh {
                let Some(target) = publish.target_port.resolve(&task.spec.template.ports) else {
                    continue;
                };
                let Some(bound) = status.host_ports.iter().find(|bound| {
                    bound.container_port == target && bound.protocol == publish.protocol
                }) else {
                    continue;
                };
                let name = EndpointPort::name_for(publish.port, publish.protocol);
                host_ports.insert(name.clone(), bound.host_port);
                container_ports.insert(name, target);
            }
            if host_ports.is_empty() {
                return None;
            }
            // The first address is the task's first network's: the one its node's proxy
            // can reach without the port mapping.
            let task_address = status
                .addresses
                .iter()
                .find(|address| address.parse::<IpAddr>().is_ok())
                .cloned();
            let ready_condition = find_condition(&status.conditions, CONDITION_READY);
            let terminating = task.spec.desired_state != TaskDesiredState::Running
                || ready_condition.is_some_and(|c| c.reason == REASON_TERMINATING);
            let ready_true = ready_condition.is_some_and(|c| c.status == ConditionStatus::True);
            Some(Endpoint {
                task: task.metadata.name.clone(),
                node: node.clone(),
                address: node_address(node),
                host_ports,
                task_address,
                container_ports,
                ready: !terminating && (ready_true || gating_off),
                terminating,
            })
        })
        .collect();
    endpoints.sort_by(|a, b| a.task.cmp(&b.task));
    EndpointsSpec { ports, endpoints }
}

#[cfg(test)]
mod tests {
    use dctl_apis::Resource;
    use serde_json::json;

    use super::*;

    fn service(annotations: serde_json::Value) -> Service {
        let mut service: Service = serde_json::from_value(json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "uid": "s1", "annotations": annotations},
            "spec": {
                "template": {"image": "x", "ports": [{"name": "http", "containerPort": 8080}]},
                "publish": [{"port": 80, "targetPort": "http"}, {"port": 53, "targetPort": 53, "protocol": "udp"}],
            },
        }))
        .unwrap();
        service.apply_defaults();
        service
    }

    /// A task named `name` on node `n1`, in `state`, with this `Ready` condition.
    fn task(
        name: &str,
        state: &str,
        desired: &str,
        ready: Option<(&str, &str)>,
        host_ports: serde_json::Value,
    ) -> Task {
        let conditions: Vec<serde_json::Value> = ready
            .map(|(status, reason)| {
                json!({"type": "Ready", "status": status, "reason": reason,
                       "lastTransitionTime": "2024-01-01T00:00:00Z"})
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "dctl/v1", "kind": "Task",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"template": {"image": "x", "ports": [{"name": "http", "containerPort": 8080}]},
                     "serviceName": "web", "slot": 1, "nodeName": "n1", "desiredState": desired},
            "status": {"state": state, "conditions": conditions, "hostPorts": host_ports,
                       "addresses": ["172.18.0.5"]},
        }))
        .unwrap()
    }

    fn http_port(port: i32) -> serde_json::Value {
        json!([{"containerPort": 8080, "hostPort": port, "protocol": "tcp"}])
    }

    #[test]
    fn ready_terminating_and_skipped_tasks() {
        let tasks = [
            task(
                "web.1.a",
                "running",
                "running",
                Some(("True", "")),
                http_port(30001),
            ),
            task(
                "web.2.b",
                "running",
                "running",
                Some(("False", "NotReady")),
                http_port(30002),
            ),
            task(
                "web.3.c",
                "running",
                "shutdown",
                Some(("True", "")),
                http_port(30003),
            ),
            task(
                "web.4.d",
                "running",
                "running",
                Some(("False", REASON_TERMINATING)),
                http_port(30004),
            ),
            // Not running, or no host port: no endpoint at all.
            task("web.5.e", "starting", "running", None, http_port(30005)),
            task(
                "web.6.f",
                "running",
                "running",
                Some(("True", "")),
                json!([]),
            ),
            task("web.0.g", "running", "running", None, http_port(30000)),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let spec = endpoints_spec(&service(json!({})), &refs, |_| "10.0.0.1".into());
        assert_eq!(
            spec.ports
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["80-tcp", "53-udp"]
        );
        let seen: Vec<(&str, bool, bool)> = spec
            .endpoints
            .iter()
            .map(|e| (e.task.as_str(), e.ready, e.terminating))
            .collect();
        assert_eq!(
            seen,
            [
                ("web.0.g", false, false),
                ("web.1.a", true, false),
                ("web.2.b", false, false),
                ("web.3.c", false, true),
                ("web.4.d", false, true),
            ]
        );
        let first = &spec.endpoints[1];
        assert_eq!(
            first.socket_address("80-tcp").as_deref(),
            Some("10.0.0.1:30001")
        );
        assert_eq!(first.socket_address("53-udp"), None);
        assert_eq!(
            first.task_socket_address("80-tcp").as_deref(),
            Some("172.18.0.5:8080")
        );
        assert_eq!(first.task_socket_address("53-udp"), None);
        assert_eq!(first.node, "n1");
    }

    #[test]
    fn gating_off_counts_running_tasks_as_ready_but_not_terminating_ones() {
        let tasks = [
            task(
                "web.1.a",
                "running",
                "running",
                Some(("False", "NotReady")),
                http_port(1),
            ),
            task("web.2.b", "running", "remove", None, http_port(2)),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let service = service(json!({ANNOTATION_READINESS_GATING: "off"}));
        assert!(readiness_gating_off(&service));
        let spec = endpoints_spec(&service, &refs, |_| "10.0.0.1".into());
        let ready: Vec<bool> = spec.endpoints.iter().map(|e| e.ready).collect();
        assert_eq!(ready, [true, false]);
    }

    #[test]
    fn node_addresses() {
        let node = |addresses: serde_json::Value| -> Node {
            serde_json::from_value(json!({
                "apiVersion": "dctl/v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": addresses},
            }))
            .unwrap()
        };
        let cases = [
            (json!(["127.0.0.1", "fd00::1", "192.0.2.2"]), "192.0.2.2"),
            (json!(["127.0.0.1", "fd00::1"]), "fd00::1"),
            (json!(["127.0.0.1"]), "127.0.0.1"),
            (json!(["bogus"]), "127.0.0.1"),
            (json!([]), "127.0.0.1"),
        ];
        for (addresses, want) in cases {
            assert_eq!(
                node_address(Some(&node(addresses.clone()))),
                want,
                "{addresses}"
            );
        }
        assert_eq!(node_address(None), FALLBACK_ADDRESS);
    }
}
