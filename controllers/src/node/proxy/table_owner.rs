//! Which process owns a proxy's nftables table, and whether it is gone.
//!
//! A table is named `dctl_proxy_<pid namespace>_<pid>_<start time>`: the owner's pid
//! namespace (the inode number `/proc/<pid>/ns/pid` names), its process id in that
//! namespace, and its start time (the kernel's, in clock ticks since boot), which tells a
//! live owner from a later process given the same pid.
//!
//! A proxy judges the tables of its own pid namespace by pid and start time. A pid from
//! another namespace means nothing here, so a table from there is judged by its namespace
//! only, and only by a proxy in the host's initial pid namespace, which sees every
//! process: the table is gone with its namespace's last process (an agent's container
//! that stopped). A proxy in a container leaves other namespaces' tables alone; their own
//! proxies, or one on the host, judge them.

/// The tables of every proxy are named this, then the owner.
pub const TABLE_PREFIX: &str = "dctl_proxy_";

/// The initial pid namespace, by its inode number: fixed (`PROC_PID_INIT_INO` in the
/// kernel's `proc_ns.h`).
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// The process a table belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid_namespace: u64,
    pub pid: u32,
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Option<Owner> {
        let pid_namespace = pid_namespace_of("self")?;
        let pid = std::process::id();
        let start_time = start_time_of(pid)?;
        Some(Owner {
            pid_namespace,
            pid,
            start_time,
        })
    }

    /// The name of the table this process owns.
    pub fn table(&self) -> String {
        let Owner {
            pid_namespace,
            pid,
            start_time,
        } = self;
        format!("{TABLE_PREFIX}{pid_namespace}_{pid}_{start_time}")
    }

    /// The owner a table is named for; `None` for a table that is not a proxy's. A name
    /// without a namespace (`dctl_proxy_<pid>_<start time>`, from dctl before 2026-12-07)
    /// is taken for `own_namespace`'s.
    pub fn of_table(table: &str, own_namespace: u64) -> Option<Owner> {
        let numbers: Vec<u64> = table
            .strip_prefix(TABLE_PREFIX)?
            .split('_')
            .map(|part| part.parse().ok())
            .collect::<Option<_>>()?;
        let (pid_namespace, pid, start_time) = match numbers[..] {
            [namespace, pid, start_time] => (namespace, pid, start_time),
            [pid, start_time] => (own_namespace, pid, start_time),
            _ => return None,
        };
        Some(Owner {
            pid_namespace,
            pid: u32::try_from(pid).ok()?,
            start_time,
        })
    }
}

/// How a proxy in `own_namespace` tells whether an owner is gone.
pub struct Liveness {
    pub own_namespace: u64,
    /// The start time of a live process of the own namespace.
    pub start_time_of: Box<dyn Fn(u32) -> Option<u64>>,
    /// Whether any process is in a pid namespace.
    pub namespace_in_use: Box<dyn Fn(u64) -> bool>,
}

impl Liveness {
    /// Whether `owner` is known to be gone: no live process of this namespace has its pid,
    /// or the one that has it started later; or, seen from the initial namespace, no
    /// process is left in its namespace.
    pub fn is_gone(&self, owner: &Owner) -> bool {
        if owner.pid_namespace == self.own_namespace {
            (self.start_time_of)(owner.pid) != Some(owner.start_time)
        } else {
            self.own_namespace == INITIAL_PID_NAMESPACE
                && !(self.namespace_in_use)(owner.pid_namespace)
        }
    }
}

/// How this process tells whether an owner is gone, from `/proc`. The processes' pid
/// namespaces are read once, and only when a table of another namespace asks for them.
pub fn host_liveness() -> Option<Liveness> {
    let in_use = std::cell::OnceCell::new();
    Some(Liveness {
        own_namespace: pid_namespace_of("self")?,
        start_time_of: Box::new(start_time_of),
        namespace_in_use: Box::new(move |namespace| {
            in_use
                .get_or_init(namespaces_in_use)
                .as_ref()
                .is_none_or(|in_use| in_use.contains(&namespace))
        }),
    })
}

/// The start time of live process `pid`, from `/proc/<pid>/stat`.
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_time(&stat)
}

/// The start time in a `/proc/<pid>/stat` line: its 22nd field, the 20th after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The pid namespace of `/proc/<process>` (a pid, or `self`), by inode number.
fn pid_namespace_of(process: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{process}/ns/pid")).ok()?;
    link.to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The pid namespaces of the processes this one can see; `None` when `/proc` cannot be
/// listed, which counts every namespace as in use, so that nothing is deleted.
fn namespaces_in_use() -> Option<std::collections::BTreeSet<u64>> {
    let processes = std::fs::read_dir("/proc").ok()?;
    Some(
        processes
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let pid = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?;
                pid_namespace_of(pid)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_named_by_namespace_pid_and_start_time() {
        let owner = Owner {
            pid_namespace: 4_026_531_836,
            pid: 42,
            start_time: 7,
        };
        assert_eq!(owner.table(), "dctl_proxy_4026531836_42_7");
        assert_eq!(Owner::of_table(&owner.table(), 1), Some(owner));
        // The name dctl gave before, without a namespace: taken for the own one.
        let old = Owner::of_table("dctl_proxy_42_7", 4_026_531_836);
        assert_eq!(old, Some(owner));
        for other in ["dctl_proxy_x", "dctl_proxy_1_2_3_4", "nat", "dctl_proxy_"] {
            assert_eq!(Owner::of_table(other, 1), None, "{other}");
        }
    }

    #[test]
    fn this_process_owns_the_table_of_its_namespace_pid_and_start_time() {
        // The command name may hold spaces and parentheses.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 3 1 0 0 20 0 \
                    9 0 123456 2000000 300";
        assert_eq!(start_time(stat), Some(123_456));
        let me = Owner::this_process().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(Some(me.pid_namespace), pid_namespace_of("self"));
        assert_eq!(Owner::this_process(), Some(me));
        assert!(!host_liveness().unwrap().is_gone(&me));
    }

    /// In the initial namespace: process 2 started at 200, 3 at 999; namespace 50 has
    /// processes, 60 none.
    fn seen_from(own_namespace: u64) -> Liveness {
        Liveness {
            own_namespace,
            start_time_of: Box::new(|pid| match pid {
                2 => Some(200),
                3 => Some(999),
                _ => None,
            }),
            namespace_in_use: Box::new(|namespace| namespace == 50),
        }
    }

    fn owner(pid_namespace: u64, pid: u32, start_time: u64) -> Owner {
        Owner {
            pid_namespace,
            pid,
            start_time,
        }
    }

    #[test]
    fn an_owner_of_the_own_namespace_is_judged_by_pid_and_start_time() {
        let host = seen_from(INITIAL_PID_NAMESPACE);
        assert!(!host.is_gone(&owner(INITIAL_PID_NAMESPACE, 2, 200)));
        // A later process was given the same pid.
        assert!(host.is_gone(&owner(INITIAL_PID_NAMESPACE, 3, 300)));
        assert!(host.is_gone(&owner(INITIAL_PID_NAMESPACE, 1, 100)));
    }

    #[test]
    fn an_owner_of_another_namespace_is_judged_by_it_from_the_initial_one_only() {
        let host = seen_from(INITIAL_PID_NAMESPACE);
        // Its pid means nothing here (no process 9), but its namespace is in use.
        assert!(!host.is_gone(&owner(50, 9, 1)));
        assert!(host.is_gone(&owner(60, 9, 1)));
        // From a container, another container's namespace cannot be seen: left alone.
        let container = seen_from(70);
        assert!(!container.is_gone(&owner(60, 9, 1)));
        assert!(!container.is_gone(&owner(INITIAL_PID_NAMESPACE, 1, 100)));
        assert!(container.is_gone(&owner(70, 1, 100)));
    }
}
