//! The network controller: flags Networks whose explicit subnets overlap each other.
//!
//! Every Docker host shares one address space, so two Networks with overlapping subnets
//! cannot both exist on a host. The earlier Network (by creation time) keeps its subnet;
//! the later one gets `Ready` `False` with reason `SubnetOverlap`, naming the earlier one.
//! Agents add what only a host can see (its routes, its other Docker networks) as
//! `HostRouteOverlap` (`node::networks`); this controller keeps that verdict until the
//! Network's spec changes, since it cannot check a host's routes itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::network::{Cidr, NetworkStatus};
use dctl_apis::{Condition, ConditionStatus, Network, Time};
use dctl_runtime::controller::{
    backoff_on_error, Action, Config, Controller, Trigger, TriggerReason,
};
use dctl_runtime::reflector::{self, reflector, Reader};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::{watcher, ObjectKey};
use futures::{stream, StreamExt};

/// The condition this controller (and agents, for host conflicts) keeps on each Network.
pub const CONDITION_READY: &str = "Ready";
/// `Ready` `True`: no conflict is known.
pub const REASON_NO_CONFLICTS: &str = "NoConflicts";
/// `Ready` `False`: the subnet overlaps an earlier Network's subnet.
pub const REASON_SUBNET_OVERLAP: &str = "SubnetOverlap";
/// `Ready` `False`, written by an agent: the subnet overlaps a host route or a Docker
/// network on that agent's host.
pub const REASON_HOST_ROUTE_OVERLAP: &str = "HostRouteOverlap";

/// How often every Network is checked again regardless of events.
const RESYNC: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the status of network {key}: {source}")]
    WriteStatus {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// Runs the network controller until `shutdown` resolves.
pub async fn run(store: Store, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (reader, writer) = reflector::store::<Network>();
    let events = reflector(
        writer,
        watcher::watcher::<Network>(store.clone(), watcher::Config::default()),
    );
    // One Network's change can create or resolve a conflict of any other: queue them all.
    let cache = reader.clone();
    let triggers = events.flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::Apply(changed)) => {
                everyone_after(&cache, &changed, TriggerReason::Applied)
            }
            Ok(watcher::Event::Delete(changed)) => {
                everyone_after(&cache, &changed, TriggerReason::Deleted)
            }
            Ok(watcher::Event::InitDone) => cache
                .state()
                .iter()
                .map(|network| Trigger::new(ObjectKey::of(network.as_ref()), TriggerReason::Listed))
                .collect(),
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "network watch error; it recovers by itself");
                Vec::new()
            }
        };
        stream::iter(triggers)
    });
    let context = Arc::new(Context {
        store,
        networks: reader.clone(),
    });
    Controller::new(
        "network",
        reader,
        Config::default().resync_period(Some(RESYNC)),
    )
    .with_triggers(triggers)
    .with_shutdown(shutdown)
    .run(reconcile, backoff_on_error, context)
    .await;
}

/// The changed Network's own key, then every other cached one as related to it.
fn everyone_after(
    cache: &Reader<Network>,
    changed: &Network,
    reason: TriggerReason,
) -> Vec<Trigger> {
    let key = ObjectKey::of(changed);
    let mut triggers = vec![Trigger::new(key.clone(), reason)];
    triggers.extend(
        cache
            .state()
            .iter()
            .filter(|network| ObjectKey::of(network.as_ref()) != key)
            .map(|network| Trigger::related(ObjectKey::of(network.as_ref()), changed)),
    );
    triggers
}

struct Context {
    store: Store,
    networks: Reader<Network>,
}

async fn reconcile(key: ObjectKey, context: Arc<Context>) -> Result<Action, Error> {
    let Some(network) = context.networks.get(&key) else {
        return Ok(Action::await_change());
    };
    let others: Vec<Arc<Network>> = context.networks.state();
    let others = others.iter().map(AsRef::as_ref);
    let desired = ready_condition(&network, others, now());
    let mut status = network.status.clone().unwrap_or_default();
    if !apply_ready(&mut status, desired, network.metadata.generation) {
        return Ok(Action::await_change());
    }
    let mut updated = (*network).clone();
    updated.status = Some(status);
    // A conflict means the cache is behind; the retry reads the newer object.
    context
        .store
        .update_status(&updated)
        .await
        .map_err(|source| Error::WriteStatus { key, source })?;
    Ok(Action::await_change())
}

/// Sets `desired` as the `Ready` condition, unless an agent's host conflict for this very
/// generation is there and the cluster sees no conflict of its own: a host's routes are
/// only visible on that host. Returns whether the status changed.
pub fn apply_ready(status: &mut NetworkStatus, desired: Condition, generation: i64) -> bool {
    let current = find_condition(&status.conditions, CONDITION_READY);
    let host_conflict = current.is_some_and(|c| {
        c.status == ConditionStatus::False
            && c.reason == REASON_HOST_ROUTE_OVERLAP
            && c.observed_generation == Some(generation)
    });
    if host_conflict && desired.status == ConditionStatus::True {
        return false;
    }
    set_condition(&mut status.conditions, desired)
}

/// The `Ready` condition the cluster-wide check gives `network` among `all` Networks (which
/// may include `network` itself).
pub fn ready_condition<'a>(
    network: &Network,
    all: impl IntoIterator<Item = &'a Network>,
    now: Time,
) -> Condition {
    let (status, reason, message) = match subnet_conflict(network, all) {
        Some(message) => (ConditionStatus::False, REASON_SUBNET_OVERLAP, message),
        None => {
            let message = match subnet_of(network) {
                Some(subnet) => format!("subnet {subnet} overlaps no other network"),
                None => "Docker assigns the subnet from its address pools".to_string(),
            };
            (ConditionStatus::True, REASON_NO_CONFLICTS, message)
        }
    };
    Condition {
        type_: CONDITION_READY.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time: now,
        observed_generation: Some(network.metadata.generation),
    }
}

/// Why `network`'s explicit subnet cannot be used: the first earlier Network whose subnet
/// overlaps it (`subnet 10.213.0.0/24 overlaps network demo/backend (10.213.0.0/16)`).
/// `None` without an explicit subnet, or when none overlaps.
pub fn subnet_conflict<'a>(
    network: &Network,
    all: impl IntoIterator<Item = &'a Network>,
) -> Option<String> {
    let subnet = subnet_of(network)?;
    all.into_iter()
        .filter(|other| precedes(other, network))
        .filter_map(|other| Some((other, subnet_of(other)?)))
        .filter(|(_, theirs)| overlaps(subnet, *theirs))
        .min_by(|(a, _), (b, _)| order(a).cmp(&order(b)))
        .map(|(other, theirs)| {
            format!(
                "subnet {subnet} overlaps network {} ({theirs})",
                ObjectKey::of(other)
            )
        })
}

/// The Network's explicit subnet, as a network address (`10.213.0.5/24` → `10.213.0.0/24`);
/// `None` when unset or unparsable (validation reports the latter).
pub fn subnet_of(network: &Network) -> Option<Cidr> {
    let text = network.spec.subnet.as_deref()?;
    Cidr::parse(text).ok().map(Cidr::network)
}

/// Whether two networks share any address: one contains the other's network address at
/// the shorter of the two prefixes. IPv4 never overlaps IPv6.
pub fn overlaps(a: Cidr, b: Cidr) -> bool {
    let shorter = a.prefix.min(b.prefix);
    Cidr {
        address: a.address,
        prefix: shorter,
    }
    .contains(b.address)
}

/// Whether `a` was there first: creation time, then namespace and name, so two Networks
/// created in the same millisecond still agree on which one yields.
fn precedes(a: &Network, b: &Network) -> bool {
    order(a) < order(b)
}

fn order(network: &Network) -> (Option<Time>, &str, &str) {
    let meta = &network.metadata;
    (
        meta.creation_timestamp,
        meta.namespace(),
        meta.name.as_str(),
    )
}

/// Condition times to the millisecond, as the store writes its own timestamps.
fn now() -> Time {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use dctl_apis::network::NetworkSpec;
    use dctl_apis::ObjectMeta;

    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    fn network(name: &str, created_secs: i64, subnet: Option<&str>) -> Network {
        let mut meta = ObjectMeta::named("demo", name);
        meta.creation_timestamp = Some(chrono::Utc.timestamp_opt(created_secs, 0).unwrap());
        meta.generation = 1;
        let spec = NetworkSpec {
            subnet: subnet.map(str::to_string),
            ..Default::default()
        };
        Network::new(meta, spec)
    }

    #[test]
    fn overlap_of_cidrs() {
        let cases = [
            ("10.213.0.0/24", "10.213.0.0/16", true),
            ("10.213.0.0/16", "10.213.0.0/24", true),
            ("10.213.0.0/24", "10.213.0.0/24", true),
            ("10.213.0.0/24", "10.213.1.0/24", false),
            ("10.213.0.128/25", "10.213.0.0/25", false),
            ("10.0.0.0/8", "10.255.255.255/32", true),
            ("0.0.0.0/0", "192.168.1.0/24", true),
            ("fd00:1::/64", "fd00::/16", true),
            ("fd00:1::/64", "fd00:2::/64", false),
            ("10.0.0.0/8", "::/0", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(overlaps(cidr(a), cidr(b)), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn the_later_network_yields() {
        let backend = network("backend", 100, Some("10.213.0.0/16"));
        let front = network("front", 200, Some("10.213.0.0/24"));
        let other = network("other", 50, Some("10.214.0.0/24"));
        let auto = network("auto", 10, None);
        let all = [&backend, &front, &other, &auto];
        assert_eq!(subnet_conflict(&backend, all), None);
        assert_eq!(
            subnet_conflict(&front, all).as_deref(),
            Some("subnet 10.213.0.0/24 overlaps network demo/backend (10.213.0.0/16)")
        );
        assert_eq!(subnet_conflict(&other, all), None);
        assert_eq!(subnet_conflict(&auto, all), None);

        // Same creation time: the name decides, the same way for both.
        let a = network("a", 100, Some("10.9.0.0/24"));
        let b = network("b", 100, Some("10.9.0.0/24"));
        assert_eq!(subnet_conflict(&a, [&a, &b]), None);
        assert!(subnet_conflict(&b, [&a, &b]).is_some());

        // Of several earlier overlapping networks, the earliest is named.
        let wide = network("wide", 1, Some("10.0.0.0/8"));
        let message = subnet_conflict(&front, [&backend, &front, &wide]).unwrap();
        assert!(
            message.ends_with("network demo/wide (10.0.0.0/8)"),
            "{message}"
        );
    }

    #[test]
    fn ready_condition_explains() {
        let now = chrono::Utc.timestamp_opt(1000, 0).unwrap();
        let backend = network("backend", 100, Some("10.213.0.0/16"));
        let front = network("front", 200, Some("10.213.0.0/24"));
        let ready = ready_condition(&backend, [&backend, &front], now);
        assert_eq!(
            (ready.status, ready.reason.as_str(), ready.message.as_str()),
            (
                ConditionStatus::True,
                REASON_NO_CONFLICTS,
                "subnet 10.213.0.0/16 overlaps no other network"
            )
        );
        assert_eq!(ready.observed_generation, Some(1));
        let not_ready = ready_condition(&front, [&backend, &front], now);
        assert_eq!(not_ready.status, ConditionStatus::False);
        assert_eq!(not_ready.reason, REASON_SUBNET_OVERLAP);
        let auto = network("auto", 1, None);
        assert_eq!(
            ready_condition(&auto, [&auto], now).message,
            "Docker assigns the subnet from its address pools"
        );
    }

    #[test]
    fn a_host_conflict_stands_until_the_spec_changes() {
        let now = chrono::Utc.timestamp_opt(1000, 0).unwrap();
        let host_conflict = Condition {
            type_: CONDITION_READY.into(),
            status: ConditionStatus::False,
            reason: REASON_HOST_ROUTE_OVERLAP.into(),
            message: "subnet 10.213.0.0/24 overlaps host route 10.213.0.0/16 via eth0".into(),
            last_transition_time: now,
            observed_generation: Some(1),
        };
        let network = network("n", 1, Some("10.213.0.0/24"));
        let clear = ready_condition(&network, [&network], now);
        let mut status = NetworkStatus {
            conditions: vec![host_conflict.clone()],
            ..Default::default()
        };
        assert!(!apply_ready(&mut status, clear.clone(), 1));
        assert_eq!(status.conditions, std::slice::from_ref(&host_conflict));

        // A cluster conflict replaces it.
        let overlap = Condition {
            status: ConditionStatus::False,
            reason: REASON_SUBNET_OVERLAP.into(),
            ..clear.clone()
        };
        assert!(apply_ready(&mut status.clone(), overlap, 1));

        // A new generation clears it.
        let clear = Condition {
            observed_generation: Some(2),
            ..clear
        };
        assert!(apply_ready(&mut status, clear, 2));
        assert_eq!(status.conditions[0].status, ConditionStatus::True);
        let same = status.conditions[0].clone();
        assert!(!apply_ready(&mut status, same, 2));
    }
}
