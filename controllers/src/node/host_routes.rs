//! Reads the host's routes and addresses from `/proc/net`, for network overlap checks and
//! for the proxy's loopback clients (which bridge a container is reached through).
//!
//! The parsers are pure functions over the files' text; the readers around them only do
//! the I/O. A file that cannot be read (not Linux, a locked-down container) yields an
//! empty list: these checks are a safety net, not a precondition.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dctl_apis::network::Cidr;

const PROC_ROUTE: &str = "/proc/net/route";
const PROC_IPV6_ROUTE: &str = "/proc/net/ipv6_route";
const PROC_FIB_TRIE: &str = "/proc/net/fib_trie";
const PROC_IF_INET6: &str = "/proc/net/if_inet6";

// Route flags from <linux/route.h> and <linux/ipv6_route.h>.
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;
const RTF_CACHE: u32 = 0x0100_0000;
const RTF_LOCAL: u32 = 0x8000_0000;

/// `if_inet6` scope of a global address (link-local is 0x20, host is 0x10).
const IPV6_SCOPE_GLOBAL: u32 = 0x00;

/// One destination the host routes to a device, such as `10.213.0.0/16 via eth0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub destination: Cidr,
    pub interface: String,
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.destination, self.interface)
    }
}

/// The host's IPv4 and IPv6 routes that a new network could shadow.
///
/// Default routes are left out: they "overlap" every subnet, and Docker's own pools live
/// under them too. So are rejected, cached and local-address entries, and IPv6 multicast.
pub async fn read_host_routes() -> Vec<HostRoute> {
    let mut routes = parse_ipv4_routes(&read_or_empty(PROC_ROUTE).await);
    routes.extend(parse_ipv6_routes(&read_or_empty(PROC_IPV6_ROUTE).await));
    routes
}

/// The host's own unicast addresses, IPv4 first, without loopback and IPv6 link-local.
pub async fn read_host_addresses() -> Vec<IpAddr> {
    let mut addresses = parse_fib_trie_addresses(&read_or_empty(PROC_FIB_TRIE).await);
    addresses.extend(parse_if_inet6_addresses(
        &read_or_empty(PROC_IF_INET6).await,
    ));
    addresses
}

async fn read_or_empty(path: &str) -> String {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) => {
            tracing::debug!(path, %error, "cannot read; assuming it lists nothing");
            String::new()
        }
    }
}

/// Parses `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt
/// Use Metric Mask …`, addresses as the kernel's host-order hex of network-order bytes.
pub fn parse_ipv4_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, destination, flags, mask) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(3)?,
                fields.get(7)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let address = ipv4_from_proc_hex(destination)?;
            let prefix = ipv4_from_proc_hex(mask)?.to_bits().count_ones() as u8;
            let destination = Cidr {
                address: IpAddr::V4(address),
                prefix,
            };
            is_shadowable(destination, flags).then(|| HostRoute {
                destination,
                interface: (*interface).to_string(),
            })
        })
        .collect()
}

/// Parses `/proc/net/ipv6_route`: `dest prefix src src_prefix next_hop metric refcnt use
/// flags iface`, addresses as 32 hex digits in network order.
pub fn parse_ipv6_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, prefix, flags, interface) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(8)?,
                fields.get(9)?,
            );
            let address = ipv6_from_proc_hex(destination)?;
            let prefix = u8::from_str_radix(prefix, 16).ok().filter(|p| *p <= 128)?;
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let destination = Cidr {
                address: IpAddr::V6(address),
                prefix,
            };
            let multicast = address.is_multicast();
            (is_shadowable(destination, flags) && !multicast).then(|| HostRoute {
                destination,
                interface: (*interface).to_string(),
            })
        })
        .collect()
}

/// The interface the most specific of `routes` sends `address` through; `None` when none
/// covers it (the default route is not among them).
pub fn interface_of(routes: &[HostRoute], address: IpAddr) -> Option<&str> {
    routes
        .iter()
        .filter(|route| route.destination.contains(address))
        .max_by_key(|route| route.destination.prefix)
        .map(|route| route.interface.as_str())
}

/// Whether a network placed over `destination` would take traffic away from it.
fn is_shadowable(destination: Cidr, flags: u32) -> bool {
    flags & RTF_UP != 0
        && flags & (RTF_REJECT | RTF_CACHE | RTF_LOCAL) == 0
        && destination.prefix > 0
}

/// Parses `/proc/net/fib_trie`: an address line `|-- 10.0.0.5` followed by `/32 host
/// LOCAL` is one of the host's own. The Main and Local tables repeat each address, so
/// duplicates are dropped; loopback addresses are left out.
pub fn parse_fib_trie_addresses(text: &str) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    let mut addresses = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines().map(str::trim) {
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(address) = last.filter(|a| !a.is_loopback()) {
                if seen.insert(address) {
                    addresses.push(IpAddr::V4(address));
                }
            }
        }
    }
    addresses
}

/// Parses `/proc/net/if_inet6`: `address ifindex prefix scope flags iface`; only global
/// addresses are kept (no loopback, no link-local).
pub fn parse_if_inet6_addresses(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = ipv6_from_proc_hex(fields.first()?)?;
            let scope = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            (scope == IPV6_SCOPE_GLOBAL && !address.is_loopback()).then_some(IpAddr::V6(address))
        })
        .collect()
}

/// `000011AC` → `172.17.0.0`: the kernel prints the network-order word as a native integer.
fn ipv4_from_proc_hex(hex: &str) -> Option<Ipv4Addr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// 32 hex digits, most significant first.
fn ipv6_from_proc_hex(hex: &str) -> Option<Ipv6Addr> {
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
        .map(Ipv6Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wg0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
vpn0\t0505A8C0\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
down0\t00000B0A\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0
blackhole\t00000C0A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0
garbage line
";

    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    fn shown(routes: &[HostRoute]) -> Vec<String> {
        routes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_ipv4_routes_without_defaults_or_rejects() {
        assert_eq!(
            shown(&parse_ipv4_routes(ROUTE)),
            [
                "172.17.0.0/16 via docker0",
                "192.0.2.0/24 via eth0",
                "10.213.0.0/16 via wg0",
                "192.168.5.5/32 via vpn0",
            ]
        );
        assert_eq!(parse_ipv4_routes(""), []);
        assert_eq!(parse_ipv4_routes(ROUTE.lines().next().unwrap()), []);
    }

    #[test]
    fn the_most_specific_route_names_the_interface() {
        let mut routes = parse_ipv4_routes(ROUTE);
        routes.push(HostRoute {
            destination: Cidr::parse("172.17.3.0/24").unwrap(),
            interface: "br-narrow".into(),
        });
        let via = |address: &str| interface_of(&routes, address.parse().unwrap());
        assert_eq!(via("172.17.0.2"), Some("docker0"));
        assert_eq!(via("172.17.3.9"), Some("br-narrow"));
        assert_eq!(via("192.168.5.5"), Some("vpn0"));
        // Only the default route would take it, and that is not among them.
        assert_eq!(via("203.0.113.7"), None);
    }

    #[test]
    fn reads_ipv6_routes_without_defaults_locals_or_multicast() {
        assert_eq!(
            shown(&parse_ipv6_routes(IPV6_ROUTE)),
            ["fd00::/64 via eth0", "fe80::/64 via eth0"]
        );
        assert_eq!(parse_ipv6_routes("zz 40 x x x x x x 1 eth0"), []);
    }

    #[test]
    fn reads_host_addresses() {
        let fib_trie = "\
Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 172.17.0.1
              /32 host LOCAL
Local:
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
";
        let addresses: Vec<String> = parse_fib_trie_addresses(fib_trie)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addresses, ["192.0.2.2", "172.17.0.1"]);

        let if_inet6 = "\
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
";
        let addresses: Vec<String> = parse_if_inet6_addresses(if_inet6)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addresses, ["fd00::2"]);
    }

    #[tokio::test]
    async fn reads_this_host() {
        // Whatever the machine has, reading it must not fail or panic.
        let _ = read_host_routes().await;
        let addresses = read_host_addresses().await;
        assert!(addresses.iter().all(|a| !a.is_loopback()));
    }
}
