//! Creates the Docker networks tasks join, never one that would shadow a host route.
//!
//! A Network object becomes the Docker network `<namespace>_<name>` on each host that runs
//! a task joining it, created on demand by the agent just before the task's container.
//! Several agents may share one engine, so an existing network is reused, and a network
//! another agent created at the same moment counts as success.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;
use chrono::SubsecRound;
use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::network::{Cidr, NetworkSpec};
use dctl_apis::{Condition, ConditionStatus, Network};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::ObjectKey;

use super::host_routes::{read_host_routes, HostRoute};
use crate::network::{
    overlaps, subnet_conflict, subnet_of, CONDITION_READY, REASON_HOST_ROUTE_OVERLAP,
    REASON_SUBNET_OVERLAP,
};

/// On every Docker network dctl creates: `true`.
pub const LABEL_MANAGED: &str = "dctl.managed";
/// On every Docker network dctl creates: the Network's `<namespace>/<name>`.
pub const LABEL_NETWORK: &str = "dctl.network";

/// How often a status write that keeps losing its race is retried.
const STATUS_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {key} does not exist (list them with `dctl get networks -n {}`)", .key.namespace)]
    NotFound { key: ObjectKey },

    /// The subnet overlaps another Network, a host route or a Docker network on this host.
    #[error("network {key} cannot be created: {message}")]
    Overlap { key: ObjectKey, message: String },

    #[error(
        "network {key}: the Docker network {docker_name} exists but was not created by dctl \
         for it; remove or rename that Docker network"
    )]
    NameTaken { key: ObjectKey, docker_name: String },

    #[error("cannot read network {key}: {source}")]
    Store {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },

    #[error("cannot {action} Docker network {docker_name}: {source}")]
    Docker {
        action: &'static str,
        docker_name: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The Docker network name of Network `namespace/name`, compose-style.
pub fn docker_network_name(namespace: &str, name: &str) -> String {
    format!("{namespace}_{name}")
}

/// Makes sure the Docker network for Network `namespace/name` exists on this host and
/// returns its name. `labels` are added to the network's labels (a test run's label).
///
/// # Errors
/// `NotFound` when there is no such Network; `Overlap` when its subnet overlaps an earlier
/// Network (the network controller's verdict), a host route or another Docker network — the
/// latter two are also written into the Network's `Ready` condition as `HostRouteOverlap`;
/// `NameTaken` when a Docker network of that name exists that dctl did not create for it.
pub async fn ensure_network(
    docker: &Docker,
    store: &Store,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String, NetworkError> {
    let key = ObjectKey::new(namespace, name);
    let store_error = |source| NetworkError::Store {
        key: key.clone(),
        source,
    };
    let network = store
        .try_get::<Network>(namespace, name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| NetworkError::NotFound { key: key.clone() })?;
    if let Some(message) = cluster_conflict(&network) {
        return Err(NetworkError::Overlap { key, message });
    }
    let docker_name = docker_network_name(namespace, name);
    if let Some(labels) = existing_network_labels(docker, &docker_name).await? {
        return if labels.get(LABEL_NETWORK) == Some(&key.to_string()) {
            Ok(docker_name)
        } else {
            Err(NetworkError::NameTaken { key, docker_name })
        };
    }

    if let Some(subnet) = subnet_of(&network) {
        // The network controller may not have looked at this Network yet: apply its rule
        // here too, so that the earlier of two overlapping Networks is the one created.
        let all = store.list::<Network>(None).await.map_err(store_error)?;
        if let Some(message) = subnet_conflict(&network, &all.items) {
            return Err(NetworkError::Overlap { key, message });
        }
        let docker_networks = docker_subnets(docker, &docker_name).await?;
        let routes = read_host_routes().await;
        if let Some(message) = host_conflict(subnet, &docker_networks, &routes) {
            // Another task or agent on this engine may have created the network since we
            // looked: the route we found is then its own bridge, not a conflict.
            if let Some(labels) = existing_network_labels(docker, &docker_name).await? {
                if labels.get(LABEL_NETWORK) == Some(&key.to_string()) {
                    return Ok(docker_name);
                }
            }
            if let Err(error) = record_host_conflict(store, &network, &message).await {
                tracing::warn!(network = %key, %error, "cannot record the host conflict");
            }
            return Err(NetworkError::Overlap { key, message });
        }
    }
    create(docker, &network, &docker_name, labels).await?;
    Ok(docker_name)
}

/// The `SubnetOverlap` verdict of the network controller for the Network's current spec.
fn cluster_conflict(network: &Network) -> Option<String> {
    let conditions = &network.status.as_ref()?.conditions;
    let ready = find_condition(conditions, CONDITION_READY)?;
    (ready.status == ConditionStatus::False
        && ready.reason == REASON_SUBNET_OVERLAP
        && ready.observed_generation == Some(network.metadata.generation))
    .then(|| ready.message.clone())
}

/// Why `subnet` cannot be created on this host: an existing Docker network's subnet (named
/// first, as that says more than its bridge's route) or a host route that it overlaps.
pub fn host_conflict(
    subnet: Cidr,
    docker_networks: &[(String, Cidr)],
    routes: &[HostRoute],
) -> Option<String> {
    if let Some((name, theirs)) = docker_networks
        .iter()
        .find(|(_, theirs)| overlaps(subnet, *theirs))
    {
        return Some(format!(
            "subnet {subnet} overlaps Docker network {name} ({theirs})"
        ));
    }
    routes
        .iter()
        .find(|route| overlaps(subnet, route.destination))
        .map(|route| format!("subnet {subnet} overlaps host route {route}"))
}

/// The labels of the Docker network `docker_name`, or `None` when there is none.
async fn existing_network_labels(
    docker: &Docker,
    docker_name: &str,
) -> Result<Option<HashMap<String, String>>, NetworkError> {
    match docker.inspect_network(docker_name, None).await {
        Ok(network) => Ok(Some(network.labels.unwrap_or_default())),
        Err(error) if status_code(&error) == Some(404) => Ok(None),
        Err(source) => Err(NetworkError::Docker {
            action: "inspect",
            docker_name: docker_name.to_string(),
            source,
        }),
    }
}

/// Every Docker network's subnets, by network name, except `skip`'s own.
pub(crate) async fn docker_subnets(
    docker: &Docker,
    skip: &str,
) -> Result<Vec<(String, Cidr)>, NetworkError> {
    let networks = docker
        .list_networks(None)
        .await
        .map_err(|source| NetworkError::Docker {
            action: "list",
            docker_name: skip.to_string(),
            source,
        })?;
    Ok(networks
        .into_iter()
        .filter(|network| network.name.as_deref() != Some(skip))
        .flat_map(|network| {
            let name = network.name.unwrap_or_default();
            let configs = network
                .ipam
                .and_then(|ipam| ipam.config)
                .unwrap_or_default();
            configs
                .into_iter()
                .filter_map(|config| Cidr::parse(config.subnet.as_deref()?).ok())
                .map(move |subnet| (name.clone(), subnet.network()))
        })
        .collect())
}

/// Writes `message` as the Network's `Ready` `False` (`HostRouteOverlap`), for the spec
/// generation that was checked; a newer spec gets checked afresh instead.
async fn record_host_conflict(
    store: &Store,
    checked: &Network,
    message: &str,
) -> Result<(), StoreError> {
    let (namespace, name) = (checked.metadata.namespace(), &checked.metadata.name);
    let generation = checked.metadata.generation;
    for _ in 0..STATUS_ATTEMPTS {
        let Some(mut network) = store.try_get::<Network>(namespace, name).await? else {
            return Ok(());
        };
        if network.metadata.generation != generation {
            return Ok(());
        }
        let status = network.status.get_or_insert_with(Default::default);
        let condition = Condition {
            type_: CONDITION_READY.to_string(),
            status: ConditionStatus::False,
            reason: REASON_HOST_ROUTE_OVERLAP.to_string(),
            message: message.to_string(),
            last_transition_time: chrono::Utc::now().trunc_subsecs(3),
            observed_generation: Some(generation),
        };
        if !set_condition(&mut status.conditions, condition) {
            return Ok(());
        }
        match store.update_status(&network).await {
            Err(error) if error.is_conflict() => continue,
            result => return result.map(drop),
        }
    }
    Ok(())
}

/// Creates the Docker network, treating one that appeared meanwhile as success.
async fn create(
    docker: &Docker,
    network: &Network,
    docker_name: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Result<(), NetworkError> {
    let request = create_request(network, docker_name, extra_labels);
    match docker.create_network(request).await {
        Ok(created) => {
            tracing::info!(
                network = docker_name,
                id = created.id,
                "created Docker network"
            );
            remove_duplicates(docker, docker_name).await;
            Ok(())
        }
        // Another agent on this engine won the race: Docker refuses a second network with
        // the same subnet, or (with a name check) the same name.
        Err(source) => match existing_network_labels(docker, docker_name).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(NetworkError::Docker {
                action: "create",
                docker_name: docker_name.to_string(),
                source,
            }),
        },
    }
}

/// The Docker request for `network`: its driver, address pool and flags, the user's labels,
/// then `extra_labels`, then dctl's own (which nothing may override).
pub fn create_request(
    network: &Network,
    docker_name: &str,
    extra_labels: &BTreeMap<String, String>,
) -> NetworkCreateRequest {
    let spec = &network.spec;
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.extend(extra_labels.clone());
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    labels.insert(
        LABEL_NETWORK.to_string(),
        ObjectKey::of(network).to_string(),
    );
    let ipam = spec.subnet.as_ref().map(|subnet| Ipam {
        config: Some(vec![IpamConfig {
            subnet: Some(subnet.clone()),
            gateway: spec.gateway.clone(),
            ip_range: spec.ip_range.clone(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let driver = if spec.driver.is_empty() {
        NetworkSpec::DEFAULT_DRIVER
    } else {
        &spec.driver
    };
    NetworkCreateRequest {
        name: docker_name.to_string(),
        driver: Some(driver.to_string()),
        internal: Some(spec.internal),
        attachable: Some(spec.attachable),
        ipam,
        labels: Some(labels),
        ..Default::default()
    }
}

/// Engine 20.10 (API 1.41) lets two racing creates make two networks of one name when no
/// subnet tells them apart, and then refuses that name as ambiguous. Every agent that sees
/// this keeps the same one (the lowest id) and removes the others while they are unused.
async fn remove_duplicates(docker: &Docker, docker_name: &str) {
    let filters = HashMap::from([("name", vec![docker_name])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let Ok(networks) = docker.list_networks(Some(options)).await else {
        return;
    };
    let mut ids: Vec<String> = networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(docker_name))
        .filter_map(|n| n.id)
        .collect();
    ids.sort();
    for id in ids.iter().skip(1) {
        tracing::info!(
            network = docker_name,
            id,
            "removing a duplicate Docker network"
        );
        if let Err(error) = docker.remove_network(id).await {
            tracing::warn!(network = docker_name, id, %error, "cannot remove a duplicate");
        }
    }
}

/// Removes the Docker networks dctl created (and that carry all of `labels`) whose Network
/// object is gone and to which no container is attached. Returns the names removed.
///
/// # Errors
/// When Docker or etcd does not answer; a network that is in use or already gone is skipped.
pub async fn remove_unused_networks(
    docker: &Docker,
    store: &Store,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<String>, NetworkError> {
    let mut label_filters = vec![format!("{LABEL_MANAGED}=true")];
    label_filters.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let filters = HashMap::from([("label".to_string(), label_filters)]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let docker_error = |action, docker_name: &str| {
        let docker_name = docker_name.to_string();
        move |source| NetworkError::Docker {
            action,
            docker_name,
            source,
        }
    };
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(docker_error("list", "(all)"))?;
    let mut removed = Vec::new();
    for listed in networks {
        let (Some(docker_name), Some(id)) = (listed.name, listed.id) else {
            continue;
        };
        let labels = listed.labels.unwrap_or_default();
        let Some((namespace, name)) = labels.get(LABEL_NETWORK).and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        let key = ObjectKey::new(namespace, name);
        let object = store
            .try_get::<Network>(namespace, name)
            .await
            .map_err(|source| NetworkError::Store { key, source })?;
        if object.is_some_and(|n| n.metadata.deletion_timestamp.is_none()) {
            continue;
        }
        // The list does not say which containers are attached; the inspect does.
        let inspected = match docker.inspect_network(&id, None).await {
            Ok(inspected) => inspected,
            Err(error) if status_code(&error) == Some(404) => continue,
            Err(source) => return Err(docker_error("inspect", &docker_name)(source)),
        };
        if inspected.containers.is_some_and(|c| !c.is_empty()) {
            continue;
        }
        match docker.remove_network(&id).await {
            Ok(()) => {
                tracing::info!(network = docker_name, "removed unused Docker network");
                removed.push(docker_name);
            }
            // Gone already, or a container joined meanwhile: nothing to do now.
            Err(error) if matches!(status_code(&error), Some(403 | 404 | 409)) => {}
            Err(source) => return Err(docker_error("remove", &docker_name)(source)),
        }
    }
    Ok(removed)
}

fn status_code(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::ObjectMeta;

    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    #[test]
    fn explains_host_conflicts() {
        let docker_networks = vec![("bridge".to_string(), cidr("172.17.0.0/16"))];
        let routes = vec![
            HostRoute {
                destination: cidr("172.17.0.0/16"),
                interface: "docker0".into(),
            },
            HostRoute {
                destination: cidr("10.213.0.0/16"),
                interface: "eth0".into(),
            },
        ];
        let cases = [
            (
                "10.213.0.0/24",
                Some("subnet 10.213.0.0/24 overlaps host route 10.213.0.0/16 via eth0"),
            ),
            (
                "172.17.5.0/24",
                Some("subnet 172.17.5.0/24 overlaps Docker network bridge (172.17.0.0/16)"),
            ),
            ("10.214.0.0/24", None),
            ("fd00:1::/64", None),
        ];
        for (subnet, expected) in cases {
            assert_eq!(
                host_conflict(cidr(subnet), &docker_networks, &routes).as_deref(),
                expected,
                "{subnet}"
            );
        }
    }

    #[test]
    fn builds_the_create_request() {
        let spec = NetworkSpec {
            driver: String::new(),
            subnet: Some("10.213.0.0/24".into()),
            gateway: Some("10.213.0.1".into()),
            ip_range: Some("10.213.0.128/25".into()),
            internal: true,
            attachable: false,
            labels: BTreeMap::from([
                ("team".to_string(), "a".to_string()),
                (LABEL_NETWORK.to_string(), "spoofed".to_string()),
            ]),
        };
        let network = Network::new(ObjectMeta::named("demo", "backend"), spec);
        let extra = BTreeMap::from([("dctl.test".to_string(), "run1".to_string())]);
        let request = create_request(&network, "demo_backend", &extra);
        assert_eq!(request.name, "demo_backend");
        assert_eq!(request.driver.as_deref(), Some("bridge"));
        assert_eq!(
            (request.internal, request.attachable),
            (Some(true), Some(false))
        );
        let config = &request.ipam.unwrap().config.unwrap()[0];
        assert_eq!(config.subnet.as_deref(), Some("10.213.0.0/24"));
        assert_eq!(config.gateway.as_deref(), Some("10.213.0.1"));
        assert_eq!(config.ip_range.as_deref(), Some("10.213.0.128/25"));
        let labels: BTreeMap<String, String> = request.labels.unwrap().into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("dctl.managed", "true"),
            ("dctl.network", "demo/backend"),
            ("dctl.test", "run1"),
            ("team", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, expected);

        let plain = Network::new(ObjectMeta::named("demo", "auto"), NetworkSpec::default());
        assert!(create_request(&plain, "demo_auto", &BTreeMap::new())
            .ipam
            .is_none());
    }

    #[test]
    fn a_subnet_overlap_verdict_counts_for_its_generation_only() {
        let mut network = Network::new(ObjectMeta::named("demo", "front"), NetworkSpec::default());
        network.metadata.generation = 2;
        let verdict = |generation| NetworkStatusWith {
            generation,
            reason: REASON_SUBNET_OVERLAP,
        };
        network.status = Some(verdict(2).status());
        assert_eq!(cluster_conflict(&network).as_deref(), Some("overlap"));
        network.status = Some(verdict(1).status());
        assert_eq!(cluster_conflict(&network), None);
        network.status = Some(
            NetworkStatusWith {
                generation: 2,
                reason: REASON_HOST_ROUTE_OVERLAP,
            }
            .status(),
        );
        assert_eq!(cluster_conflict(&network), None);
    }

    struct NetworkStatusWith {
        generation: i64,
        reason: &'static str,
    }

    impl NetworkStatusWith {
        fn status(&self) -> dctl_apis::network::NetworkStatus {
            dctl_apis::network::NetworkStatus {
                conditions: vec![Condition {
                    type_: CONDITION_READY.into(),
                    status: ConditionStatus::False,
                    reason: self.reason.into(),
                    message: "overlap".into(),
                    last_transition_time: chrono::Utc::now(),
                    observed_generation: Some(self.generation),
                }],
                ..Default::default()
            }
        }
    }
}
