//! Loopback clients on the nftables rules: `route_localnet` on the bridges, behind a guard.
//!
//! This is the fallback for hosts where loopback clients cannot be balanced at `connect()`
//! ([`super::socket_balancer`]: no cgroup v2, an older kernel), and what the agent does
//! when told `--proxy-loopback nftables`.
//!
//! A connection from 127.0.0.1 that the output hook DNATs to a container leaves through
//! the container's bridge with a loopback source, which Linux refuses as a martian unless
//! the bridge has `net.ipv4.conf.<bridge>.route_localnet = 1`; the masquerade then gives
//! it the bridge's address. Docker with `--userland-proxy=false` sets the same on its
//! bridges, and kube-proxy's iptables mode on every interface (its default, localhost
//! node ports).
//!
//! The setting also lets whatever is on that link (here: the containers on the bridge)
//! send packets to the host's 127.0.0.1, and reach services that trust loopback
//! (CVE-2020-8558). So before it sets it anywhere, the proxy puts a guard in place: table
//! `ip dctl_localnet_guard` drops every packet to 127.0.0.0/8 that arrives on another
//! interface than `lo`, ahead of conntrack (priority raw), so that the replies of
//! masqueraded connections, still addressed to the bridge there, pass. kube-proxy keeps
//! a drop rule to the same end.
//!
//! Only the bridges of this node's own containers get the setting, never an uplink: a
//! port with a Ready endpoint on another host keeps its loopback clients in user space.
//! Neither is undone when the proxy stops, as neither Docker nor kube-proxy undoes it: a
//! bridge's setting goes with the bridge, and the guard only drops what Linux drops by
//! itself wherever the setting is off, so it stays for every proxy on the host, now and
//! later.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::kernel::{nft, KernelEndpoint, KernelPort};
use crate::node::host_routes::{interface_of, read_host_addresses, read_host_routes, HostRoute};

/// The guard's table, shared by every proxy on the host.
pub const GUARD_TABLE: &str = "dctl_localnet_guard";

/// The guard, written so that writing it again changes nothing: the table and chain are
/// created when missing, and the chain emptied before its one rule goes in.
pub fn guard_ruleset() -> String {
    format!(
        "table ip {GUARD_TABLE} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type filter hook prerouting priority raw; policy accept;\n\
         \x20 }}\n\
         }}\n\
         flush chain ip {GUARD_TABLE} prerouting\n\
         add rule ip {GUARD_TABLE} prerouting iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop\n"
    )
}

/// The interfaces that must route a loopback source for a loopback client to reach every
/// one of `endpoints` in the kernel; `None` when one of them is on another host (it would
/// take the uplink) or its bridge is unknown.
///
/// An endpoint at one of the host's own addresses (another node's host port, on a host
/// that runs several agents) is reached over `lo` and needs nothing.
pub fn loopback_interfaces(
    endpoints: &[KernelEndpoint],
    routes: &[HostRoute],
    host_addresses: &[IpAddr],
) -> Option<BTreeSet<String>> {
    let mut interfaces = BTreeSet::new();
    for endpoint in endpoints {
        let address = IpAddr::V4(*endpoint.address.ip());
        if address.is_loopback() || host_addresses.contains(&address) {
            continue;
        }
        if endpoint.masquerade {
            return None;
        }
        interfaces.insert(interface_of(routes, address)?.to_string());
    }
    Some(interfaces)
}

/// The bridges whose setting could not be written, so that each is logged once.
#[derive(Default)]
pub struct Localnet {
    refused: BTreeSet<String>,
}

impl Localnet {
    /// The ports of `ports` whose loopback clients can take the kernel path, after setting
    /// `route_localnet` (behind the guard) on the bridges they need. A port stays in user
    /// space for loopback clients when one of its endpoints is on another host, or when a
    /// bridge's setting cannot be written.
    pub async fn ports_in_kernel(&mut self, ports: &[KernelPort]) -> BTreeSet<u16> {
        let routes = read_host_routes().await;
        let host_addresses = read_host_addresses().await;
        let mut in_kernel = BTreeSet::new();
        for port in ports {
            let Some(interfaces) = loopback_interfaces(&port.endpoints, &routes, &host_addresses)
            else {
                continue;
            };
            let mut routed = true;
            for interface in &interfaces {
                routed &= self.route_loopback_sources(interface).await;
            }
            if routed {
                in_kernel.insert(port.port);
            }
        }
        in_kernel
    }

    /// Makes `interface` route a loopback source, the guard first; whether it does.
    async fn route_loopback_sources(&mut self, interface: &str) -> bool {
        let setting = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
        // Read each time: a network deleted and made again is a new bridge of that name.
        if tokio::fs::read_to_string(&setting).await.ok().as_deref() == Some("1\n") {
            return true;
        }
        let written = match nft(&guard_ruleset()).await {
            Ok(_) => tokio::fs::write(&setting, "1\n").await,
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => {
                tracing::info!(
                    interface,
                    guard = GUARD_TABLE,
                    "route_localnet set, so that loopback clients of published ports take the kernel path"
                );
                self.refused.remove(interface);
                true
            }
            Err(error) => {
                if self.refused.insert(interface.to_string()) {
                    tracing::warn!(interface, %error, "cannot let the bridge route loopback clients; they are served in user space");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dctl_apis::network::Cidr;

    fn endpoint(address: &str, masquerade: bool) -> KernelEndpoint {
        KernelEndpoint {
            address: address.parse().unwrap(),
            masquerade,
        }
    }

    fn routes() -> Vec<HostRoute> {
        [("172.18.0.0/16", "br-web"), ("10.0.0.0/24", "eth0")]
            .into_iter()
            .map(|(cidr, interface)| HostRoute {
                destination: Cidr::parse(cidr).unwrap(),
                interface: interface.into(),
            })
            .collect()
    }

    #[test]
    fn only_containers_on_this_host_and_the_hosts_own_addresses_qualify() {
        let host: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        let local = endpoint("172.18.0.2:8080", false);
        let interfaces = |endpoints: &[KernelEndpoint]| {
            loopback_interfaces(endpoints, &routes(), &host)
                .map(|set| set.into_iter().collect::<Vec<_>>())
        };
        assert_eq!(interfaces(&[local]), Some(vec!["br-web".to_string()]));
        // Another agent's host port on this same host, over lo.
        let here = endpoint("10.0.0.1:30001", true);
        let loopback = endpoint("127.0.0.1:30002", true);
        assert_eq!(
            interfaces(&[local, here, loopback]),
            Some(vec!["br-web".to_string()])
        );
        // Another host: its packets would leave through the uplink.
        assert_eq!(interfaces(&[local, endpoint("10.0.0.2:30001", true)]), None);
        // A container whose bridge has no route here.
        assert_eq!(interfaces(&[endpoint("192.0.2.9:80", false)]), None);
        assert_eq!(interfaces(&[]), Some(vec![]));
    }

    #[test]
    fn the_guard_drops_loopback_destinations_from_every_other_interface() {
        let guard = guard_ruleset();
        assert!(guard.contains("type filter hook prerouting priority raw;"));
        assert!(guard.contains(
            "add rule ip dctl_localnet_guard prerouting iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop"
        ));
        // Written again, it replaces its own rule rather than adding a second.
        let flush = guard.find("flush chain").unwrap();
        assert!(flush < guard.find("add rule").unwrap());
    }
}
