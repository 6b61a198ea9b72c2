//! Loopback clients balanced at `connect()`: a BPF program rewrites the address.
//!
//! A client on this host that connects to `127.0.0.1:<published port>` gets, inside its
//! own `connect()`, the address of the port's next Ready endpoint instead, round robin.
//! Its connection is then exactly one opened to the endpoint directly: no NAT, no
//! `route_localnet` on a bridge, no proxy process in its way, and the same throughput as
//! a direct connection. Cilium's socket-LB serves Kubernetes services so. `getpeername()`
//! still answers the address the client asked for.
//!
//! The program (`bpf/socket_balancer.bpf.c`, compiled by `build.rs`) is attached to the
//! root of the cgroup v2 hierarchy, so it sees every process on the host, and acts only on
//! TCP connects to loopback from the host's own network namespace: a container's
//! 127.0.0.1 is its own. The proxy writes each published port's Ready endpoints into the
//! program's map; a port with none is absent, and its clients reach the user-space
//! listener, which resets them at once. The attachment is a BPF link held by the agent's
//! process, so the kernel removes it when the agent exits, however it exits: a killed
//! agent leaves nothing behind.
//!
//! Needs cgroup v2 mounted, CAP_BPF or root, and a kernel with the connect and getpeername
//! hooks, network namespace cookies, and socket storage in those hooks: 5.8 at the very
//! least, and tested on 6.18 only. A kernel that lacks a part refuses the program when it
//! is loaded, before anything is attached, and the proxy falls back to the nftables rules
//! of [`super::localnet`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddrV4};

use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};

use super::kernel::KernelPort;

/// The program, as `build.rs` compiled it.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/socket_balancer.bpf.o"));

/// The most Ready endpoints one port's entry holds (`MAX_ENDPOINTS` in the program). A
/// port with more is left to the other paths.
pub const MAX_ENDPOINTS: usize = 256;

/// An entry of the program's `published_ports` map, as `u32` words: the turn of the next
/// connection, the endpoint count, then the endpoints' addresses (network byte order) and
/// their ports.
const ENTRY_WORDS: usize = 2 + 2 * MAX_ENDPOINTS;
type Entry = [u32; ENTRY_WORDS];

/// Why the socket balancer cannot be used on this host.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no cgroup v2 hierarchy is mounted at its root")]
    NoCgroup2,
    #[error("the agent is not in the host's initial network namespace")]
    NotInitialNetns,
    #[error("cannot open the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("the kernel refused the program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the kernel refused the program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the program's map: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// The loaded, attached program and what its map holds.
pub struct SocketBalancer {
    /// Holds the program's links: dropping it detaches the program.
    _program: Ebpf,
    ports: HashMap<MapData, u32, Entry>,
    /// What the map holds, by port.
    written: BTreeMap<u16, Vec<SocketAddrV4>>,
    /// Ports left out for having more than [`MAX_ENDPOINTS`], so that each is logged once.
    too_many: BTreeSet<u16>,
}

impl SocketBalancer {
    /// The balancer for loopback clients of a proxy listening on `bind`: all of
    /// 127.0.0.0/8 for the unspecified address, one loopback address for itself. `None`
    /// when `bind` takes no loopback client; logged when the host cannot run it.
    pub fn start(bind: IpAddr) -> Option<SocketBalancer> {
        let catch_address = match bind {
            IpAddr::V4(v4) if v4.is_unspecified() => 0,
            IpAddr::V6(v6) if v6.is_unspecified() => 0,
            IpAddr::V4(v4) if v4.is_loopback() => u32::from_ne_bytes(v4.octets()),
            _ => return None,
        };
        match SocketBalancer::load(catch_address) {
            Ok(balancer) => {
                tracing::info!(%bind, "loopback clients of published TCP ports are balanced at connect()");
                Some(balancer)
            }
            Err(error) => {
                let error = crate::node::error_chain(&error);
                tracing::warn!(%error, "cannot balance loopback clients at connect(); they take the nftables rules");
                None
            }
        }
    }

    fn load(catch_address: u32) -> Result<SocketBalancer, Unavailable> {
        if !in_initial_netns() {
            return Err(Unavailable::NotInitialNetns);
        }
        let root = cgroup2_root().ok_or(Unavailable::NoCgroup2)?;
        let cgroup = std::fs::File::open(&root).map_err(|source| Unavailable::Cgroup {
            path: root.clone(),
            source,
        })?;
        let mut program = EbpfLoader::new()
            .override_global("catch_address", &catch_address, true)
            .load(PROGRAM)?;
        const HOOKS: [&str; 2] = ["connect4", "getpeername4"];
        // Both are verified before either is attached: a kernel that refuses one gets
        // neither.
        for hook in HOOKS {
            hook_of(&mut program, hook)?.load()?;
        }
        for hook in HOOKS {
            // A BPF link (aya's choice from Linux 5.7 on), which always runs beside the
            // other programs there (other proxies on this host have their own) and takes
            // no flags: the kernel refuses ALLOW_MULTI on a link.
            hook_of(&mut program, hook)?.attach(&cgroup, CgroupAttachMode::Single)?;
        }
        let map = program
            .take_map("published_ports")
            .expect("the program has its map");
        Ok(SocketBalancer {
            ports: HashMap::try_from(map)?,
            _program: program,
            written: BTreeMap::new(),
            too_many: BTreeSet::new(),
        })
    }

    /// Makes the map hold exactly `ports`, rewriting only the entries that changed (each
    /// rewrite starts its round robin again). Each entry is replaced atomically: a
    /// connect sees the old endpoints or the new ones.
    ///
    /// # Errors
    /// When the kernel refuses an update; what was written before stays, and the next
    /// call tries again.
    pub fn apply(&mut self, ports: &[KernelPort]) -> Result<(), aya::maps::MapError> {
        let too_many: BTreeSet<u16> = ports
            .iter()
            .filter(|port| port.endpoints.len() > MAX_ENDPOINTS)
            .map(|port| port.port)
            .collect();
        for port in too_many.difference(&self.too_many) {
            tracing::warn!(port, max = MAX_ENDPOINTS, "more Ready endpoints than the socket balancer holds; the port's loopback clients go through user space");
        }
        self.too_many = too_many;
        let wanted: BTreeMap<u16, Vec<SocketAddrV4>> = ports
            .iter()
            .filter(|port| !self.too_many.contains(&port.port))
            .map(|port| {
                let addresses = port.endpoints.iter().map(|endpoint| endpoint.address);
                (port.port, addresses.collect())
            })
            .collect();
        let gone: Vec<u16> = self
            .written
            .keys()
            .filter(|port| !wanted.contains_key(port))
            .copied()
            .collect();
        for port in gone {
            match self.ports.remove(&u32::from(port)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => return Err(error),
            }
            self.written.remove(&port);
        }
        for (port, endpoints) in wanted {
            if self.written.get(&port) == Some(&endpoints) {
                continue;
            }
            self.ports.insert(u32::from(port), entry(&endpoints), 0)?;
            tracing::debug!(port, ?endpoints, "socket balancer entry written");
            self.written.insert(port, endpoints);
        }
        Ok(())
    }
}

/// One of the program's two hooks.
fn hook_of<'a>(program: &'a mut Ebpf, hook: &str) -> Result<&'a mut CgroupSockAddr, Unavailable> {
    Ok(program
        .program_mut(hook)
        .expect("the program has both hooks")
        .try_into()?)
}

/// The map entry of a port with these Ready endpoints (at most [`MAX_ENDPOINTS`]).
fn entry(endpoints: &[SocketAddrV4]) -> Entry {
    let mut entry = [0; ENTRY_WORDS];
    entry[1] = u32::try_from(endpoints.len()).expect("at most MAX_ENDPOINTS");
    for (turn, endpoint) in endpoints.iter().enumerate() {
        entry[2 + turn] = u32::from_ne_bytes(endpoint.ip().octets());
        entry[2 + MAX_ENDPOINTS + turn] = u32::from(endpoint.port());
    }
    entry
}

/// Where the cgroup v2 hierarchy is mounted with its root: `/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_root_in(&mounts)
}

/// [`cgroup2_root`] from the text of `/proc/self/mountinfo`.
fn cgroup2_root_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional fields] - type source ...
        let (mount, filesystem) = line.split_once(" - ")?;
        let mount: Vec<&str> = mount.split(' ').collect();
        let is_root = mount.get(3) == Some(&"/");
        (filesystem.starts_with("cgroup2 ") && is_root)
            .then(|| mount.get(4).map(|p| (*p).to_string()))?
    })
}

/// Whether this process is in the host's initial network namespace: the program takes
/// only clients of that namespace, which must then be the proxy's own.
fn in_initial_netns() -> bool {
    std::fs::read_link("/proc/self/ns/net")
        .is_ok_and(|namespace| namespace.as_os_str() == INITIAL_NETNS)
}

/// The initial network namespace, as `/proc/<pid>/ns/net` names it: its inode number is
/// fixed (`PROC_NET_INIT_INO` in the kernel's `proc_ns.h`).
const INITIAL_NETNS: &str = "net:[4026531833]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_the_count_then_addresses_then_ports() {
        let endpoints = [
            "172.17.0.2:8080".parse().unwrap(),
            "10.0.0.7:30001".parse().unwrap(),
        ];
        let entry = entry(&endpoints);
        assert_eq!(entry[0], 0, "the round robin starts at the first");
        assert_eq!(entry[1], 2);
        assert_eq!(entry[2].to_ne_bytes(), [172, 17, 0, 2]);
        assert_eq!(entry[3].to_ne_bytes(), [10, 0, 0, 7]);
        assert_eq!(entry[2 + MAX_ENDPOINTS], 8080);
        assert_eq!(entry[3 + MAX_ENDPOINTS], 30001);
        assert!(entry[4..2 + MAX_ENDPOINTS].iter().all(|word| *word == 0));
    }

    #[test]
    fn the_cgroup2_root_is_found_on_hybrid_and_unified_hosts() {
        let hybrid = "\
35 24 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(
            cgroup2_root_in(hybrid).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(cgroup2_root_in(unified).as_deref(), Some("/sys/fs/cgroup"));
        // In a container with its own cgroup namespace view of a subtree: not the root.
        let subtree = "40 30 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_root_in(subtree), None);
        let v1_only = "37 35 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_root_in(v1_only), None);
    }
}
