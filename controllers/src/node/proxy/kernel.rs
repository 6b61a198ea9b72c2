//! The kernel path of the routing mesh: published TCP ports DNAT'd by nftables, for
//! connections that do not come from loopback.
//!
//! A user-space proxy pays for every connection twice (a second socket, two copies), and
//! on a busy host that is most of a short request's cost. So, like kube-proxy's iptables
//! and nftables modes and like Docker's own port publishing, the proxy puts one nftables
//! rule per published port in the kernel: a connection's first packet is DNAT'd, in turn
//! (`numgen inc`, round robin), to a Ready endpoint, and conntrack carries the rest of
//! it. A new set of endpoints is one atomic table replacement; connections already open
//! keep their endpoint until they close, as with the user-space listener. Each rule
//! counts the connections it took since it was last written (`nft list table`).
//!
//! Loopback clients are balanced at `connect()` ([`super::socket_balancer`]) and never
//! reach these rules. Where the kernel cannot do that, or when the agent is told
//! `--proxy-loopback nftables`, they take the rules too (the output hook), each
//! masqueraded to its bridge's address, when every endpoint of the port is on this host:
//! that needs `route_localnet` on the bridges, set behind a guard ([`super::localnet`]).
//! Loopback clients of a port with an endpoint on another host then stay in user space,
//! as they do with Docker's `docker-proxy`, and so do all of them when the agent is told
//! `--proxy-loopback userspace`. UDP stays in user space (a conntrack entry would keep a
//! datagram flow on an endpoint after it stops being Ready), as do IPv6 endpoints and
//! every port with no Ready endpoint: the user-space listener still owns the port and
//! resets such connections at once.
//!
//! Each proxy owns one table, `ip dctl_proxy_<pid namespace>_<pid>_<start time>`; it
//! deletes it on a clean stop, and the other proxies on the host delete the tables of
//! processes that are gone (at start, then on every retry tick; [`super::table_owner`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::balancer::Backend;
use super::localnet::{guard_ruleset, Localnet, GUARD_TABLE};
use super::table_owner::{host_liveness, Liveness, Owner};

/// The packet mark of a connection DNAT'd here, so that the masquerade on its way out
/// (to another node) touches no one else's connections to the same address.
const MASQUERADE_MARK: u32 = 0x0020_0000;

/// Priorities just ahead of the standard NAT hooks (dstnat -100, srcnat 100), so a
/// published port is ours before Docker's own chains see the packet.
const DSTNAT_PRIORITY: i32 = -101;
const SRCNAT_PRIORITY: i32 = 99;

/// One published TCP port and its Ready endpoints, in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPort {
    pub port: u16,
    pub endpoints: Vec<KernelEndpoint>,
}

/// Where the kernel sends a connection for one Ready endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEndpoint {
    pub address: SocketAddrV4,
    /// A host port (the task runs on another node): the connection is masqueraded, so
    /// that the reply comes back through this host to be un-NAT'd. A container on this
    /// node answers through this host anyway (its bridge's gateway; a client container on
    /// the same bridge through the bridge's netfilter hooks, which Docker turns on), so
    /// its connections keep the client's address, as with Docker's own DNAT and unlike
    /// Swarm's ingress.
    pub masquerade: bool,
}

impl KernelPort {
    /// The kernel route of a port, or `None` when it stays in user space: no Ready
    /// endpoint, or one that is not IPv4.
    pub fn of(port: u16, backends: &[Backend]) -> Option<KernelPort> {
        let endpoints = backends
            .iter()
            .map(|backend| match backend.direct.unwrap_or(backend.host) {
                SocketAddr::V4(address) => Some(KernelEndpoint {
                    address,
                    masquerade: backend.direct.is_none(),
                }),
                SocketAddr::V6(_) => None,
            })
            .collect::<Option<Vec<_>>>()?;
        (!endpoints.is_empty()).then_some(KernelPort { port, endpoints })
    }
}

/// Which connections the rules catch, by destination address: the matcher of each kind
/// of client, `None` for those the kernel path leaves alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Catch {
    /// Clients of the host's other addresses, on this host or another.
    others: Option<String>,
    /// Clients on this host's loopback.
    loopback: Option<String>,
}

impl Catch {
    /// What a proxy listening on `bind` catches; `None` when nothing.
    fn of(bind: IpAddr, loopback_in_kernel: bool) -> Option<Catch> {
        let loopback = |matcher: String| loopback_in_kernel.then_some(matcher);
        let catch = match bind {
            IpAddr::V4(v4) if v4.is_unspecified() => Catch::any(loopback_in_kernel),
            IpAddr::V6(v6) if v6.is_unspecified() => Catch::any(loopback_in_kernel),
            IpAddr::V4(v4) if v4.is_loopback() => Catch {
                others: None,
                loopback: loopback(format!("ip daddr {v4}")),
            },
            IpAddr::V4(v4) => Catch {
                others: Some(format!("ip daddr {v4}")),
                loopback: None,
            },
            // The rules are IPv4 only.
            IpAddr::V6(_) => return None,
        };
        (catch.others.is_some() || catch.loopback.is_some()).then_some(catch)
    }

    /// Every local address.
    fn any(loopback_in_kernel: bool) -> Catch {
        Catch {
            others: Some("ip daddr != 127.0.0.0/8 fib daddr type local".into()),
            loopback: loopback_in_kernel.then(|| "ip daddr 127.0.0.0/8".into()),
        }
    }
}

/// This proxy's nftables table, and what it holds.
pub struct KernelPath {
    table: String,
    catch: Catch,
    localnet: Localnet,
    /// The ports last written, and those of them open to loopback clients; `None` until a
    /// write succeeded (or after one failed, so the next sync writes again).
    applied: Option<(Vec<KernelPort>, BTreeSet<u16>)>,
}

impl KernelPath {
    /// The kernel path for a proxy listening on `bind`, after deleting the tables of
    /// proxies that are gone. `None` when there is nothing for it to do (an IPv6 address,
    /// or loopback with `loopback_in_kernel` off), or, logged, when nftables cannot be
    /// used here (no `nft`, no privilege).
    pub async fn start(bind: IpAddr, loopback_in_kernel: bool) -> Option<KernelPath> {
        let catch = Catch::of(bind, loopback_in_kernel)?;
        let Some(table) = Owner::this_process().map(|owner| owner.table()) else {
            tracing::warn!("no /proc to name this proxy's nftables table by; published ports are served in user space only");
            return None;
        };
        let _ = remove_tables_of_dead_proxies().await;
        let mut path = KernelPath {
            table,
            catch,
            localnet: Localnet::default(),
            applied: None,
        };
        match path.apply(&[]).await {
            Ok(()) => {
                tracing::info!(
                    table = path.table,
                    others = path.catch.others.is_some(),
                    loopback = path.catch.loopback.is_some(),
                    "published TCP ports go through nftables"
                );
                Some(path)
            }
            Err(error) => {
                tracing::warn!(%error, "nftables cannot be used; published ports are served in user space only");
                None
            }
        }
    }

    /// Makes the table hold exactly `ports`, in one atomic replacement. Does nothing when
    /// they are what was last written.
    ///
    /// # Errors
    /// When `nft` fails; the old rules may then still be in place, and the next call
    /// writes again.
    pub async fn apply(&mut self, ports: &[KernelPort]) -> std::io::Result<()> {
        let loopback_ports = match self.catch.loopback {
            Some(_) => self.localnet.ports_in_kernel(ports).await,
            None => BTreeSet::new(),
        };
        let wanted = (ports.to_vec(), loopback_ports);
        if self.applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        self.applied = None;
        nft(&self.ruleset(&wanted.0, &wanted.1)).await?;
        tracing::debug!(table = self.table, ?ports, loopback = ?wanted.1, "nftables rules replaced");
        self.applied = Some(wanted);
        Ok(())
    }

    /// Looks at the host's tables: deletes those of proxies that are gone since the last
    /// look (a killed agent's rules would otherwise go on taking its old ports'
    /// connections, ahead of the proxy that listens on them now), and has the next
    /// [`KernelPath::apply`] write this proxy's table and the guard again when either is
    /// missing (a firewall reload that flushed the ruleset): the guard must not stay away
    /// while bridges route loopback sources.
    pub async fn check(&mut self) {
        let Some(listing) = remove_tables_of_dead_proxies().await else {
            return;
        };
        let loopback_in_use = self
            .applied
            .as_ref()
            .is_some_and(|(_, loopback_ports)| !loopback_ports.is_empty());
        let missing = |table: &str| !listed(&listing, table);
        if self.applied.is_some()
            && (missing(&self.table) || (loopback_in_use && missing(GUARD_TABLE)))
        {
            tracing::warn!(
                table = self.table,
                guard = GUARD_TABLE,
                "the proxy's nftables rules were removed by something else; writing them again"
            );
            self.applied = None;
        }
    }

    /// Deletes the table: nothing is proxied by this process any more.
    pub async fn remove(self) {
        if let Err(error) = nft(&format!("delete table ip {}\n", self.table)).await {
            tracing::warn!(table = self.table, %error, "cannot delete the proxy's nftables table");
        }
    }

    /// The whole table, created empty first so that deleting it cannot fail, then
    /// deleted and written again: `nft -f` applies all of it as one transaction. Loopback
    /// clients are caught for `loopback_ports` only, and the guard they rely on is written
    /// again with them (in case someone flushed it).
    fn ruleset(&self, ports: &[KernelPort], loopback_ports: &BTreeSet<u16>) -> String {
        let table = &self.table;
        let mut published = String::new();
        let mut loopback = String::new();
        let mut masqueraded = BTreeSet::new();
        for KernelPort { port, endpoints } in ports {
            let mut turns = Vec::new();
            for (turn, endpoint) in endpoints.iter().enumerate() {
                let (ip, port) = (endpoint.address.ip(), endpoint.address.port());
                turns.push(format!("{turn} : {ip} . {port}"));
                if endpoint.masquerade {
                    masqueraded.insert(format!("{ip} . {port}"));
                }
            }
            let dnat = format!(
                "tcp dport {port} counter meta mark set meta mark | {MASQUERADE_MARK:#x} \
                 dnat ip to numgen inc mod {} map {{ {} }}\n",
                endpoints.len(),
                turns.join(", ")
            );
            if let Some(matcher) = &self.catch.others {
                published.push_str(&format!("    {matcher} {dnat}"));
            }
            if let Some(matcher) = self
                .catch
                .loopback
                .as_ref()
                .filter(|_| loopback_ports.contains(port))
            {
                loopback.push_str(&format!("    {matcher} {dnat}"));
            }
        }
        let mut masquerade = String::new();
        if !masqueraded.is_empty() {
            let remote: Vec<String> = masqueraded.into_iter().collect();
            masquerade.push_str(&format!(
                "    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} \
                 ip daddr . tcp dport {{ {} }} masquerade\n",
                remote.join(", ")
            ));
        }
        let mut guard = String::new();
        if !loopback.is_empty() {
            // A loopback source must not reach the container: it would answer itself.
            masquerade.push_str(&format!(
                "    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} \
                 ip saddr 127.0.0.0/8 oifname != \"lo\" masquerade\n"
            ));
            guard = guard_ruleset();
        }
        format!(
            "{guard}\
             add table ip {table}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \x20 chain prerouting {{\n\
             \x20   type nat hook prerouting priority {DSTNAT_PRIORITY}; policy accept;\n\
             \x20   jump published\n\
             \x20 }}\n\
             \x20 chain output {{\n\
             \x20   type nat hook output priority {DSTNAT_PRIORITY}; policy accept;\n\
             {loopback}\
             \x20   jump published\n\
             \x20 }}\n\
             \x20 chain published {{\n\
             {published}\
             \x20 }}\n\
             \x20 chain postrouting {{\n\
             \x20   type nat hook postrouting priority {SRCNAT_PRIORITY}; policy accept;\n\
             {masquerade}\
             \x20 }}\n\
             }}\n"
        )
    }
}

/// Deletes every proxy table whose process is gone (killed, crashed): its rules would
/// go on sending connections to endpoints nobody keeps up to date. Returns the listing
/// it looked at; `None` when `nft` could not list the tables.
async fn remove_tables_of_dead_proxies() -> Option<String> {
    let listing = nft("list tables\n").await.ok()?;
    let dead =
        host_liveness().map_or_else(Vec::new, |liveness| dead_proxy_tables(&listing, &liveness));
    for table in dead {
        match nft(&format!("delete table ip {table}\n")).await {
            Ok(_) => tracing::info!(table, "deleted the nftables table of a proxy that is gone"),
            Err(error) => {
                tracing::warn!(table, %error, "cannot delete a dead proxy's nftables table")
            }
        }
    }
    Some(listing)
}

/// Whether `nft list tables` output names IPv4 table `table`.
fn listed(listing: &str, table: &str) -> bool {
    listing
        .lines()
        .any(|line| line.trim().strip_prefix("table ip ") == Some(table))
}

/// The IPv4 proxy tables in `nft list tables` output whose owner is gone.
fn dead_proxy_tables(listing: &str, liveness: &Liveness) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table ip "))
        .filter(|table| {
            Owner::of_table(table, liveness.own_namespace)
                .is_some_and(|owner| liveness.is_gone(&owner))
        })
        .map(str::to_string)
        .collect()
}

/// Runs `nft -f -` on `script`; what it printed (a `list` command's answer).
pub(super) async fn nft(script: &str) -> std::io::Result<String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_with(bind: &str, loopback_in_kernel: bool) -> Option<KernelPath> {
        Some(KernelPath {
            table: "dctl_proxy_42_7".into(),
            catch: Catch::of(bind.parse().unwrap(), loopback_in_kernel)?,
            localnet: Localnet::default(),
            applied: None,
        })
    }

    fn path(bind: &str) -> Option<KernelPath> {
        path_with(bind, true)
    }

    #[test]
    fn ipv6_binds_and_loopback_kept_in_user_space_leave_nothing_to_the_kernel() {
        assert!(path("fd00::1").is_none());
        assert!(path("::1").is_none());
        assert!(path_with("127.0.0.1", false).is_none());
        assert!(path("127.0.0.1").is_some());
        assert!(path("0.0.0.0").is_some());
        assert!(path_with("0.0.0.0", false).is_some());
        assert!(path("::").is_some());
        assert!(path("192.0.2.2").is_some());
    }

    fn backend(host: &str, direct: Option<&str>) -> Backend {
        Backend {
            host: host.parse().unwrap(),
            direct: direct.map(|direct| direct.parse().unwrap()),
        }
    }

    #[test]
    fn a_port_without_ready_ipv4_endpoints_stays_in_user_space() {
        assert_eq!(KernelPort::of(80, &[]), None);
        let local = backend("10.0.0.1:30001", Some("172.18.0.2:8080"));
        let v6 = backend("[fd00::2]:30002", None);
        assert_eq!(KernelPort::of(80, &[local, v6]), None);
        assert_eq!(
            KernelPort::of(80, &[local, backend("10.0.0.2:30003", None)]),
            Some(KernelPort {
                port: 80,
                endpoints: vec![
                    KernelEndpoint {
                        address: "172.18.0.2:8080".parse().unwrap(),
                        masquerade: false,
                    },
                    KernelEndpoint {
                        address: "10.0.0.2:30003".parse().unwrap(),
                        masquerade: true,
                    },
                ],
            })
        );
    }

    #[test]
    fn every_port_is_one_round_robin_rule_and_loopback_is_left_out() {
        let local = backend("10.0.0.1:30001", Some("172.18.0.2:8080"));
        let remote = backend("10.0.0.2:30001", None);
        let ports = [KernelPort::of(80, &[local, remote]).unwrap()];
        let none = BTreeSet::new();
        let any = path("0.0.0.0").unwrap().ruleset(&ports, &none);
        assert!(any.starts_with(
            "add table ip dctl_proxy_42_7\ndelete table ip dctl_proxy_42_7\ntable ip dctl_proxy_42_7 {"
        ));
        assert!(any.contains(
            "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 80 counter meta mark set meta mark | 0x200000 \
             dnat ip to numgen inc mod 2 map { 0 : 172.18.0.2 . 8080, 1 : 10.0.0.2 . 30001 }"
        ));
        // Only the connections sent to another node are masqueraded.
        assert!(any.contains(
            "meta mark & 0x200000 == 0x200000 ip daddr . tcp dport { 10.0.0.2 . 30001 } masquerade"
        ));
        assert!(!any.contains("ip daddr 127.0.0.0/8 tcp"));
        assert!(!any.contains("dctl_localnet_guard"));
        let one = path("192.0.2.2").unwrap().ruleset(&ports, &none);
        assert!(one.contains("ip daddr 192.0.2.2 tcp dport 80 "));
        let local_only = path("0.0.0.0")
            .unwrap()
            .ruleset(&[KernelPort::of(80, &[local]).unwrap()], &none);
        assert!(!local_only.contains("masquerade"));
        let empty = path("0.0.0.0").unwrap().ruleset(&[], &none);
        assert!(!empty.contains("dnat"));
    }

    #[test]
    fn loopback_clients_are_caught_on_output_for_their_ports_only_and_masqueraded() {
        let web = KernelPort::of(80, &[backend("10.0.0.1:30001", Some("172.18.0.2:8080"))]);
        let api = KernelPort::of(81, &[backend("10.0.0.2:30001", None)]);
        let ports = [web.unwrap(), api.unwrap()];
        let loopback_ports = BTreeSet::from([80]);
        let any = path("0.0.0.0").unwrap().ruleset(&ports, &loopback_ports);
        let output = &any[any.find("chain output").unwrap()..any.find("chain published").unwrap()];
        assert!(output.contains(
            "ip daddr 127.0.0.0/8 tcp dport 80 counter meta mark set meta mark | 0x200000 \
             dnat ip to numgen inc mod 1 map { 0 : 172.18.0.2 . 8080 }"
        ));
        assert!(!output.contains("dport 81"), "{output}");
        assert!(any.contains(
            "meta mark & 0x200000 == 0x200000 ip saddr 127.0.0.0/8 oifname != \"lo\" masquerade"
        ));
        // The guard goes in first, in the same transaction.
        assert!(any.starts_with("table ip dctl_localnet_guard {"));

        // Bound to loopback, nothing else is caught.
        let lo = path("127.0.0.1").unwrap().ruleset(&ports, &loopback_ports);
        assert!(lo.contains("ip daddr 127.0.0.1 tcp dport 80 "));
        let published = &lo[lo.find("chain published").unwrap()..];
        assert!(!published[..published.find('}').unwrap()].contains("dnat"));
    }

    #[test]
    fn only_tables_of_dead_proxies_are_swept() {
        let listing = "table ip nat\ntable ip dctl_proxy_5_1_100\ntable ip dctl_proxy_5_2_200\n\
                       table ip dctl_proxy_5_3_300\ntable ip6 dctl_proxy_5_4_400\n\
                       table ip dctl_proxy_6_1_100\ntable ip dctl_proxy_2_200\n\
                       table ip dctl_proxy_x\ntable inet filter\n";
        // Process 2 is the table's owner; 3 is a later process given the same pid; a
        // table of namespace 6 is judged by whoever can see it.
        let liveness = Liveness {
            own_namespace: 5,
            start_time_of: Box::new(|pid| match pid {
                2 => Some(200),
                3 => Some(999),
                _ => None,
            }),
            namespace_in_use: Box::new(|_| false),
        };
        assert_eq!(
            dead_proxy_tables(listing, &liveness),
            ["dctl_proxy_5_1_100", "dctl_proxy_5_3_300"]
        );
    }

    #[test]
    fn a_table_is_listed_by_its_whole_name() {
        let listing = "table ip nat\ntable ip dctl_proxy_2_200\ntable ip6 dctl_localnet_guard\n";
        assert!(listed(listing, "dctl_proxy_2_200"));
        assert!(!listed(listing, "dctl_proxy_2_20"));
        // Only IPv4 tables: the guard is one.
        assert!(!listed(listing, GUARD_TABLE));
    }
}
