//! Round robin over a published port's Ready endpoints: pure, no I/O.

use std::net::SocketAddr;

use dctl_apis::endpoints::EndpointsSpec;

/// The Ready endpoints of one published port, and whose turn is next: socket addresses
/// for UDP, [`Backend`]s for TCP.
///
/// Replacing the backends keeps the turn counter, so a change of the set does not send
/// a burst of connections to the first backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balancer<B = SocketAddr> {
    backends: Vec<B>,
    turn: usize,
}

impl<B> Default for Balancer<B> {
    fn default() -> Self {
        Balancer {
            backends: Vec::new(),
            turn: 0,
        }
    }
}

impl<B: Clone> Balancer<B> {
    /// The backends new connections go to from now on; open connections are not touched.
    pub fn set_backends(&mut self, backends: Vec<B>) {
        self.backends = backends;
    }

    pub fn backends(&self) -> &[B] {
        &self.backends
    }

    /// The next backend in turn; `None` when no endpoint is Ready.
    pub fn pick(&mut self) -> Option<B> {
        if self.backends.is_empty() {
            return None;
        }
        let backend = self.backends[self.turn % self.backends.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        Some(backend)
    }
}

/// Where one Ready endpoint of a published port is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The node address and host port: reachable from every node, through Docker's port
    /// mapping on the task's node.
    pub host: SocketAddr,
    /// The container's own address and port, for a task on this proxy's node: no port
    /// mapping (DNAT) on the way. `None` for a task elsewhere, or one that reports no
    /// address.
    pub direct: Option<SocketAddr>,
}

/// The Ready endpoints of the port named `port`, in the order the Endpoints list them,
/// with their container address when they run on `local_node`. Endpoints without that
/// port, or whose address does not parse, are left out.
pub fn ready_backends(spec: &EndpointsSpec, port: &str, local_node: &str) -> Vec<Backend> {
    spec.endpoints
        .iter()
        .filter(|endpoint| endpoint.ready && !endpoint.terminating)
        .filter_map(|endpoint| {
            let host = endpoint.socket_address(port)?.parse().ok()?;
            let direct = (endpoint.node == local_node)
                .then(|| endpoint.task_socket_address(port)?.parse().ok())
                .flatten();
            Some(Backend { host, direct })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn turns_go_round_and_survive_a_change_of_backends() {
        let mut balancer = Balancer::default();
        assert_eq!(balancer.pick(), None);
        balancer.set_backends(vec![
            addr("10.0.0.1:1"),
            addr("10.0.0.2:2"),
            addr("10.0.0.3:3"),
        ]);
        let picked: Vec<SocketAddr> = (0..4).filter_map(|_| balancer.pick()).collect();
        assert_eq!(
            picked,
            [
                addr("10.0.0.1:1"),
                addr("10.0.0.2:2"),
                addr("10.0.0.3:3"),
                addr("10.0.0.1:1")
            ]
        );
        // One backend leaves: the next connections only go to the others.
        balancer.set_backends(vec![addr("10.0.0.1:1"), addr("10.0.0.3:3")]);
        let picked: Vec<SocketAddr> = (0..4).filter_map(|_| balancer.pick()).collect();
        assert_eq!(
            picked,
            [
                addr("10.0.0.1:1"),
                addr("10.0.0.3:3"),
                addr("10.0.0.1:1"),
                addr("10.0.0.3:3")
            ]
        );
        balancer.set_backends(Vec::new());
        assert_eq!(balancer.pick(), None);
    }

    #[test]
    fn only_ready_endpoints_with_the_port_are_backends() {
        let spec: EndpointsSpec = serde_json::from_value(json!({
            "ports": [{"name": "80-tcp", "port": 80}, {"name": "53-udp", "port": 53, "protocol": "udp"}],
            "endpoints": [
                {"task": "a", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30001},
                 "taskAddress": "172.18.0.2", "containerPorts": {"80-tcp": 8080}, "ready": true},
                {"task": "b", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30002}, "ready": false},
                {"task": "c", "node": "n2", "address": "10.0.0.2", "hostPorts": {"80-tcp": 30003}, "ready": true, "terminating": true},
                {"task": "d", "node": "n2", "address": "10.0.0.2", "hostPorts": {"53-udp": 30004},
                 "taskAddress": "172.18.0.3", "containerPorts": {"53-udp": 53}, "ready": true},
                {"task": "e", "node": "n3", "address": "fd00::3", "hostPorts": {"80-tcp": 30005}, "ready": true},
                {"task": "f", "node": "n3", "address": "bogus", "hostPorts": {"80-tcp": 30006}, "ready": true},
                // On this node, but written before task addresses: the host port only.
                {"task": "g", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30007}, "ready": true},
            ],
        }))
        .unwrap();
        let host = |host: &str| Backend {
            host: addr(host),
            direct: None,
        };
        assert_eq!(
            ready_backends(&spec, "80-tcp", "n1"),
            [
                Backend {
                    host: addr("10.0.0.1:30001"),
                    direct: Some(addr("172.18.0.2:8080")),
                },
                host("[fd00::3]:30005"),
                host("10.0.0.1:30007"),
            ]
        );
        // From another node, the same task is only reached through its node's host port.
        assert_eq!(
            ready_backends(&spec, "80-tcp", "n2")[0],
            host("10.0.0.1:30001")
        );
        assert_eq!(
            ready_backends(&spec, "53-udp", "n2"),
            [Backend {
                host: addr("10.0.0.2:30004"),
                direct: Some(addr("172.18.0.3:53")),
            }]
        );
        assert_eq!(ready_backends(&spec, "8080-tcp", "n1"), []);
    }
}
