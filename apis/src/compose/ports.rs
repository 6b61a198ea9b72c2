//! `ports` and `expose` → container ports and published ports.

use super::service::Translator;
use super::values;
use super::yaml::{Node, Value};
use crate::service::{PublishMode, PublishedPort, ServiceSpec};
use crate::template::{ContainerPort, PortRef, Protocol};

impl Translator<'_> {
    /// Short (`"8080:80/udp"`, `80`) and long (`{target, published, protocol, mode}`) ports.
    pub(super) fn ports(&mut self, node: &Node, path: &str, spec: &mut ServiceSpec) {
        let Some(items) = self.sequence(node, path) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (published, targets, protocol, host_ip, mode) = match &item.value {
                Value::Scalar { text, .. } => match values::short_port(text) {
                    Ok(port) => (
                        port.published,
                        port.targets,
                        port.protocol,
                        port.host_ip,
                        PublishMode::Ingress,
                    ),
                    Err(message) => {
                        self.diags.error(item, &at, message);
                        continue;
                    }
                },
                Value::Map(fields) => {
                    let mut target = Vec::new();
                    let mut published = Vec::new();
                    let mut protocol = Protocol::Tcp;
                    let (mut host_ip, mut mode) = (None, PublishMode::Ingress);
                    for (field, v) in fields {
                        let at = format!("{at}.{}", field.name);
                        let text = v.as_str().unwrap_or_default();
                        let result = match field.name.as_str() {
                            "target" => values::port_range(text).map(|p| target = p),
                            "published" => values::port_range(text).map(|p| published = p),
                            "protocol" => values::protocol(text).map(|p| protocol = p),
                            "host_ip" => {
                                host_ip = Some(text.to_string());
                                Ok(())
                            }
                            "mode" => match text {
                                "ingress" => Ok(()),
                                "host" => {
                                    mode = PublishMode::Host;
                                    Ok(())
                                }
                                _ => Err("expected ingress or host".to_string()),
                            },
                            "name" | "app_protocol" => {
                                self.diags.unsupported(field, &at, "");
                                Ok(())
                            }
                            _ => {
                                self.diags.unsupported(field, &at, "unknown port key");
                                Ok(())
                            }
                        };
                        if let Err(message) = result {
                            self.diags.error(v, &at, message);
                        }
                    }
                    if target.len() != 1 {
                        self.diags.error(
                            item,
                            &format!("{at}.target"),
                            "required: one container port",
                        );
                        continue;
                    }
                    (published, target, protocol, host_ip, mode)
                }
                _ => {
                    self.diags.error(item, &at, "expected \"[IP:][HOST:]CONTAINER[/PROTOCOL]\" or {target, published, protocol, mode}");
                    continue;
                }
            };
            if let Some(ip) = host_ip.filter(|ip| ip != "0.0.0.0" && ip != "::") {
                self.diags.warn(
                    item,
                    &at,
                    format!(
                        "host_ip {ip} ignored: dctl's proxy listens on every address of every node"
                    ),
                );
            }
            for target in &targets {
                add_port(&mut spec.template.ports, *target, protocol);
            }
            for (j, port) in published.iter().enumerate() {
                let target = if targets.len() == 1 {
                    targets[0]
                } else {
                    targets[j]
                };
                spec.publish.push(PublishedPort {
                    port: *port,
                    target_port: PortRef::Number(target),
                    protocol,
                    mode,
                });
            }
        }
    }

    /// `expose`: container ports that are not published.
    pub(super) fn expose(&mut self, node: &Node, path: &str, ports: &mut Vec<ContainerPort>) {
        let Some(items) = self.sequence(node, path) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let text = item.as_str().unwrap_or_default();
            let (range, protocol) = match text.split_once('/') {
                Some((range, p)) => (range, values::protocol(p)),
                None => (text, Ok(Protocol::Tcp)),
            };
            match (values::port_range(range), protocol) {
                (Ok(range), Ok(protocol)) => {
                    for port in range {
                        add_port(ports, port, protocol);
                    }
                }
                (Err(message), _) | (_, Err(message)) => self.diags.error(item, &at, message),
            }
        }
    }
}

pub(super) fn add_port(ports: &mut Vec<ContainerPort>, port: i32, protocol: Protocol) {
    if !ports
        .iter()
        .any(|p| p.container_port == port && p.protocol == protocol)
    {
        ports.push(ContainerPort {
            name: None,
            container_port: port,
            protocol,
        });
    }
}
