//! Reports the host ports Docker published a running task's container ports on.

use bollard::models::PortMap;
use dctl_apis::task::HostPort;
use dctl_apis::template::Protocol;

use super::reconcile::{docker_error, ReconcileError, TaskRun};

/// The IPv4 host port of each published container port (`8080/tcp` → `0.0.0.0:32768`),
/// sorted by container port and protocol.
pub fn host_ports(ports: Option<&PortMap>) -> Vec<HostPort> {
    let mut found: Vec<HostPort> = ports
        .into_iter()
        .flatten()
        .filter_map(|(key, bindings)| {
            let (port, protocol) = key.split_once('/')?;
            let protocol = match protocol {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return None,
            };
            let host_port = bindings
                .iter()
                .flatten()
                .filter(|b| !b.host_ip.as_deref().unwrap_or_default().contains(':'))
                .find_map(|b| b.host_port.as_deref()?.parse().ok())?;
            Some(HostPort {
                container_port: port.parse().ok()?,
                host_port,
                protocol,
            })
        })
        .collect();
    found.sort_by_key(|p| (p.container_port, p.protocol));
    found
}

impl TaskRun<'_> {
    /// Writes `status.hostPorts` from the running container `id` when the task has
    /// published ports and has not reported them yet (they never change while it runs).
    pub(super) async fn report_host_ports(&mut self, id: &str) -> Result<(), ReconcileError> {
        let Some(status) = &self.task.status else {
            return Ok(());
        };
        if self.task.spec.published_ports.is_empty() || !status.host_ports.is_empty() {
            return Ok(());
        }
        let inspect = self
            .ctx
            .docker
            .inspect_container(id, None)
            .await
            .map_err(docker_error(&self.key, "inspect its published ports"))?;
        let ports = host_ports(
            inspect
                .network_settings
                .as_ref()
                .and_then(|settings| settings.ports.as_ref()),
        );
        if ports.is_empty() {
            return Ok(());
        }
        let mut changed = self.task.clone();
        if let Some(status) = changed.status.as_mut() {
            status.host_ports = ports;
        }
        self.task = self
            .ctx
            .store
            .update_status(&changed)
            .await
            .map_err(|source| ReconcileError::WriteStatus {
                key: self.key.clone(),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::PortBinding;

    use super::*;

    #[test]
    fn reads_ipv4_bindings() {
        let binding = |ip: &str, port: &str| PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        };
        let ports = PortMap::from([
            (
                "8080/tcp".to_string(),
                Some(vec![binding("::", "40001"), binding("0.0.0.0", "40000")]),
            ),
            (
                "53/udp".to_string(),
                Some(vec![binding("0.0.0.0", "40002")]),
            ),
            // Exposed but not published.
            ("9090/tcp".to_string(), None),
            ("bogus".to_string(), Some(vec![binding("0.0.0.0", "1")])),
        ]);
        assert_eq!(
            host_ports(Some(&ports)),
            [
                HostPort {
                    container_port: 53,
                    host_port: 40002,
                    protocol: Protocol::Udp
                },
                HostPort {
                    container_port: 8080,
                    host_port: 40000,
                    protocol: Protocol::Tcp
                },
            ]
        );
        assert_eq!(host_ports(None), []);
    }
}
