//! The Node status an agent reports: what its engine says, and the `Ready` condition.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::{SystemInfo, SystemVersion};
use bollard::Docker;
use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::node::{NodeCapacity, NodeStatus, Platform, CONDITION_READY};
use dctl_apis::{Condition, ConditionStatus, Quantity, Time};

use super::host_routes::read_host_addresses;
use super::networks::docker_subnets;

/// `Ready` `True`: the agent runs and heartbeats.
pub const REASON_AGENT_READY: &str = "AgentReady";
/// `Ready` `False`, from the agent itself: its Docker engine does not answer, so nothing
/// can be scheduled here although the agent is alive.
pub const REASON_ENGINE_UNREACHABLE: &str = "EngineUnreachable";

/// Asks the engine for its `info` and `version`, and this host for its addresses.
///
/// # Errors
/// When the engine does not answer.
pub async fn observe_engine(docker: &Docker) -> Result<EngineFacts, bollard::errors::Error> {
    let info = docker.info().await?;
    let version = docker.version().await?;
    // Addresses inside Docker's own networks (docker0's 172.17.0.1) do not reach the host
    // from elsewhere; leave them out.
    let docker_subnets = docker_subnets(docker, "").await.unwrap_or_default();
    let addresses = read_host_addresses()
        .await
        .into_iter()
        .filter(|a| !docker_subnets.iter().any(|(_, s)| s.contains(*a)))
        .collect();
    Ok(engine_facts(&info, &version, addresses))
}

/// What the engine says about its host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineFacts {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub platform: Platform,
    pub capacity: NodeCapacity,
    pub engine_version: String,
    pub engine_labels: BTreeMap<String, String>,
}

/// One round's look at the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Engine(EngineFacts),
    /// The engine did not answer; the message says why.
    EngineUnreachable(String),
}

/// The engine's `info` and `version` as a Node sees them: `NCPU` as a cpu quantity,
/// `MemTotal` in bytes, the daemon's `k=v` labels as a map.
pub fn engine_facts(
    info: &SystemInfo,
    version: &SystemVersion,
    addresses: Vec<IpAddr>,
) -> EngineFacts {
    let cpus = u64::try_from(info.ncpu.unwrap_or(0)).unwrap_or(0);
    let engine_labels = info
        .labels
        .iter()
        .flatten()
        .map(|label| match label.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (label.clone(), String::new()),
        })
        .collect();
    EngineFacts {
        hostname: info.name.clone().unwrap_or_default(),
        addresses: addresses.iter().map(ToString::to_string).collect(),
        platform: Platform {
            os: info
                .os_type
                .clone()
                .or(version.os.clone())
                .unwrap_or_default(),
            architecture: info
                .architecture
                .clone()
                .or(version.arch.clone())
                .unwrap_or_default(),
        },
        capacity: NodeCapacity {
            cpus: Quantity::from_nano_cpus(cpus.saturating_mul(1_000_000_000)),
            memory_bytes: u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0),
        },
        engine_version: version
            .version
            .clone()
            .or(info.server_version.clone())
            .unwrap_or_default(),
        engine_labels,
    }
}

/// The status to write after `observation`: the engine's facts (kept as they were when it
/// does not answer) and the `Ready` condition. `lastHeartbeatTime` moves only with another
/// change or once it is `report_interval` old, so an idle node is not rewritten every round.
pub fn next_status(
    current: &NodeStatus,
    observation: &Observation,
    now: Time,
    report_interval: Duration,
) -> NodeStatus {
    let mut next = current.clone();
    let (status, reason, message) = match observation {
        Observation::Engine(facts) => {
            next.hostname.clone_from(&facts.hostname);
            next.addresses.clone_from(&facts.addresses);
            next.platform = facts.platform.clone();
            next.capacity = facts.capacity.clone();
            next.engine_version.clone_from(&facts.engine_version);
            next.engine_labels.clone_from(&facts.engine_labels);
            let message = "agent is posting heartbeats".to_string();
            (ConditionStatus::True, REASON_AGENT_READY, message)
        }
        Observation::EngineUnreachable(message) => (
            ConditionStatus::False,
            REASON_ENGINE_UNREACHABLE,
            message.clone(),
        ),
    };
    set_condition(
        &mut next.conditions,
        Condition {
            type_: CONDITION_READY.to_string(),
            status,
            reason: reason.to_string(),
            message,
            last_transition_time: now,
            observed_generation: None,
        },
    );
    let stale = current
        .last_heartbeat_time
        .is_none_or(|last| (now - last).to_std().unwrap_or(Duration::ZERO) >= report_interval);
    if next != *current || stale {
        next.last_heartbeat_time = Some(now);
    }
    next
}

/// The address the agent's log endpoint is reached at, as the Node advertises it: the
/// bound address itself, unless it is a wildcard (`0.0.0.0`, `::`), which no peer can dial;
/// then the node's first non-loopback address with the bound port, else 127.0.0.1 (a
/// single-host cluster still works).
pub fn advertised_agent_address(bound: SocketAddr, addresses: &[String]) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = addresses
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(host, bound.port()).to_string()
}

pub(crate) fn ready_status(status: &NodeStatus) -> Option<ConditionStatus> {
    find_condition(&status.conditions, CONDITION_READY).map(|c| c.status)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(secs: i64) -> Time {
        chrono::Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn facts() -> EngineFacts {
        let info = SystemInfo {
            name: Some("host-1".into()),
            ncpu: Some(4),
            mem_total: Some(8 << 30),
            os_type: Some("linux".into()),
            architecture: Some("x86_64".into()),
            labels: Some(vec!["zone=eu".into(), "ssd".into(), "k=v=w".into()]),
            ..Default::default()
        };
        let version = SystemVersion {
            version: Some("20.10.24".into()),
            ..Default::default()
        };
        engine_facts(&info, &version, vec!["192.0.2.2".parse().unwrap()])
    }

    #[test]
    fn reads_the_engine() {
        let facts = facts();
        assert_eq!(facts.hostname, "host-1");
        assert_eq!(facts.addresses, ["192.0.2.2"]);
        assert_eq!(facts.capacity.cpus.as_str(), "4");
        assert_eq!(facts.capacity.memory_bytes, 8 << 30);
        assert_eq!(
            (
                facts.platform.os.as_str(),
                facts.platform.architecture.as_str()
            ),
            ("linux", "x86_64")
        );
        assert_eq!(facts.engine_version, "20.10.24");
        let labels: Vec<(&str, &str)> = facts
            .engine_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("k", "v=w"), ("ssd", ""), ("zone", "eu")]);
        let empty = engine_facts(&SystemInfo::default(), &SystemVersion::default(), vec![]);
        assert_eq!(empty.capacity.cpus.as_str(), "0");
    }

    #[test]
    fn advertises_a_dialable_agent_address() {
        let any: SocketAddr = "0.0.0.0:7950".parse().unwrap();
        let addresses = ["127.0.0.1".to_string(), "bogus".into(), "192.0.2.2".into()];
        assert_eq!(advertised_agent_address(any, &addresses), "192.0.2.2:7950");
        assert_eq!(advertised_agent_address(any, &[]), "127.0.0.1:7950");
        let v6 = ["::1".to_string(), "2001:db8::2".into()];
        let any6: SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(advertised_agent_address(any6, &v6), "[2001:db8::2]:80");
        let bound: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        assert_eq!(
            advertised_agent_address(bound, &addresses),
            "127.0.0.1:40123"
        );
    }

    #[test]
    fn writes_only_what_changed() {
        let report = Duration::from_secs(300);
        let up = Observation::Engine(facts());
        let first = next_status(&NodeStatus::default(), &up, at(0), report);
        let ready = find_condition(&first.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::True, REASON_AGENT_READY)
        );
        assert_eq!(first.last_heartbeat_time, Some(at(0)));

        // Nothing changed, and the heartbeat time is fresh enough: the same status.
        assert_eq!(next_status(&first, &up, at(30), report), first);
        // Old enough: only the heartbeat time moves.
        let refreshed = next_status(&first, &up, at(300), report);
        assert_eq!(refreshed.last_heartbeat_time, Some(at(300)));
        assert_eq!(refreshed.conditions, first.conditions);

        // The engine went away: Ready False, the facts stay as last seen.
        let down = Observation::EngineUnreachable("cannot reach the Docker engine".into());
        let unreachable = next_status(&first, &down, at(60), report);
        let ready = find_condition(&unreachable.conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (
                ready.status,
                ready.reason.as_str(),
                ready.last_transition_time
            ),
            (ConditionStatus::False, REASON_ENGINE_UNREACHABLE, at(60))
        );
        assert_eq!(unreachable.capacity, first.capacity);
        assert_eq!(unreachable.last_heartbeat_time, Some(at(60)));

        // A Ready False written by the node-lifecycle controller is set back to True.
        let mut marked_down = first.clone();
        marked_down.conditions[0].status = ConditionStatus::False;
        marked_down.conditions[0].reason = "NodeStatusUnknown".into();
        let back = next_status(&marked_down, &up, at(90), report);
        assert_eq!(back.conditions[0].status, ConditionStatus::True);
        assert_eq!(back.conditions[0].last_transition_time, at(90));
    }
}
