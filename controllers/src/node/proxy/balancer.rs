//! Round robin over a published port's Ready endpoints: pure, no I/O.

use std::net::SocketAddr;

use dctl_apis::endpoints::EndpointsSpec;

/// The Ready endpoints of one published port, and whose turn is next.
///
/// Replacing the backends keeps the turn counter, so a change of the set does not send
/// a burst of connections to the first backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balancer {
    backends: Vec<SocketAddr>,
    turn: usize,
}

impl Balancer {
    /// The backends new connections go to from now on; open connections are not touched.
    pub fn set_backends(&mut self, backends: Vec<SocketAddr>) {
        self.backends = backends;
    }

    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// The next backend in turn; `None` when no endpoint is Ready.
    pub fn pick(&mut self) -> Option<SocketAddr> {
        if self.backends.is_empty() {
            return None;
        }
        let backend = self.backends[self.turn % self.backends.len()];
        self.turn = self.turn.wrapping_add(1);
        Some(backend)
    }
}

/// The socket addresses of the Ready endpoints of the port named `port`, in the order
/// the Endpoints list them. Endpoints without that port, or whose address does not
/// parse, are left out.
pub fn ready_backends(spec: &EndpointsSpec, port: &str) -> Vec<SocketAddr> {
    spec.endpoints
        .iter()
        .filter(|endpoint| endpoint.ready && !endpoint.terminating)
        .filter_map(|endpoint| endpoint.socket_address(port)?.parse().ok())
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
                {"task": "a", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30001}, "ready": true},
                {"task": "b", "node": "n1", "address": "10.0.0.1", "hostPorts": {"80-tcp": 30002}, "ready": false},
                {"task": "c", "node": "n2", "address": "10.0.0.2", "hostPorts": {"80-tcp": 30003}, "ready": true, "terminating": true},
                {"task": "d", "node": "n2", "address": "10.0.0.2", "hostPorts": {"53-udp": 30004}, "ready": true},
                {"task": "e", "node": "n3", "address": "fd00::3", "hostPorts": {"80-tcp": 30005}, "ready": true},
                {"task": "f", "node": "n3", "address": "bogus", "hostPorts": {"80-tcp": 30006}, "ready": true},
            ],
        }))
        .unwrap();
        assert_eq!(
            ready_backends(&spec, "80-tcp"),
            [addr("10.0.0.1:30001"), addr("[fd00::3]:30005")]
        );
        assert_eq!(ready_backends(&spec, "53-udp"), [addr("10.0.0.2:30004")]);
        assert_eq!(ready_backends(&spec, "8080-tcp"), []);
    }
}
