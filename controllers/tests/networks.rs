//! Networks: the cluster's overlap check and the agent's Docker networks, against a real
//! etcd and the local Docker engine.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use dctl_apis::meta::find_condition;
use dctl_apis::network::{Cidr, NetworkSpec};
use dctl_apis::{ConditionStatus, Network, ObjectMeta};
use dctl_controllers::network::{
    self, CONDITION_READY, REASON_HOST_ROUTE_OVERLAP, REASON_NO_CONFLICTS, REASON_SUBNET_OVERLAP,
};
use dctl_controllers::node::host_routes::{read_host_routes, HostRoute};
use dctl_controllers::node::networks::{
    docker_network_name, ensure_network, remove_unused_networks, NetworkError,
};
use dctl_e2e::docker::DockerLeftovers;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;

async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("a Docker client")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

async fn etcd() -> (LocalEtcd, Store) {
    let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .expect("etcd answers");
    (etcd, store)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `check` every 100 ms until it returns `Some`; panics after `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn network(namespace: &str, name: &str, subnet: &str) -> Network {
    let spec = NetworkSpec {
        driver: "bridge".into(),
        subnet: Some(subnet.into()),
        labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
        ..Default::default()
    };
    Network::new(ObjectMeta::named(namespace, name), spec)
}

/// The `Ready` condition's status, reason and message.
async fn ready(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Option<(ConditionStatus, String, String)> {
    let network: Network = store.try_get(namespace, name).await.ok()??;
    let ready = find_condition(&network.status?.conditions, CONDITION_READY)?.clone();
    Some((ready.status, ready.reason, ready.message))
}

async fn wait_for_reason(store: &Store, namespace: &str, name: &str, reason: &str) -> String {
    let what = format!("network {namespace}/{name} Ready reason {reason}");
    wait_until(Duration::from_secs(10), &what, || async {
        let (_, found, message) = ready(store, namespace, name).await?;
        (found == reason).then_some(message)
    })
    .await
}

/// Every subnet Docker networks on this engine use, and the host's routes.
async fn taken(docker: &Docker) -> (Vec<Cidr>, Vec<HostRoute>) {
    let networks = docker.list_networks(None).await.unwrap();
    let subnets = networks
        .into_iter()
        .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
        .filter_map(|c| Cidr::parse(c.subnet.as_deref()?).ok())
        .collect();
    (subnets, read_host_routes().await)
}

/// A random /24 under 10.0.0.0/8 that nothing on this host uses.
async fn free_subnet(docker: &Docker) -> String {
    let (subnets, routes) = taken(docker).await;
    loop {
        let (a, b) = (rand::random_range(100..=250u8), rand::random::<u8>());
        let candidate = Cidr::parse(&format!("10.{a}.{b}.0/24")).unwrap();
        let clashes = subnets.iter().any(|s| network::overlaps(*s, candidate))
            || routes
                .iter()
                .any(|r| network::overlaps(r.destination, candidate));
        if !clashes {
            return candidate.to_string();
        }
    }
}

async fn start_network_controller(store: &Store) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(network::run(store.clone(), async move {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn ensure_network_creates_a_labelled_network_and_removes_it_when_unused() {
    let leftovers = DockerLeftovers::new("networks-create");
    let labels = BTreeMap::from([leftovers.label()]);
    let (_etcd, store) = etcd().await;
    let docker = docker().await;
    let ns = unique("ns");
    let subnet = free_subnet(&docker).await;
    store
        .create(&network(&ns, "backend", &subnet))
        .await
        .unwrap();

    let name = ensure_network(&docker, &store, &ns, "backend", &labels)
        .await
        .unwrap();
    assert_eq!(name, docker_network_name(&ns, "backend"));
    assert_eq!(name, format!("{ns}_backend"));
    let created = docker.inspect_network(&name, None).await.unwrap();
    let config = &created.ipam.unwrap().config.unwrap()[0];
    assert_eq!(config.subnet.as_deref(), Some(subnet.as_str()));
    let docker_labels = created.labels.unwrap();
    assert_eq!(docker_labels["dctl.managed"], "true");
    assert_eq!(docker_labels["dctl.network"], format!("{ns}/backend"));
    assert_eq!(docker_labels["team"], "a");
    assert_eq!(docker_labels["dctl.test"], leftovers.run_id);

    // Again (another task, another agent on this engine): the same network.
    let again = ensure_network(&docker, &store, &ns, "backend", &labels)
        .await
        .unwrap();
    assert_eq!(again, name);
    let id = docker.inspect_network(&name, None).await.unwrap().id;
    assert_eq!(id, created.id);

    // Still wanted: kept. Gone from the store: removed.
    let removed = remove_unused_networks(&docker, &store, &labels)
        .await
        .unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    store.delete::<Network>(&ns, "backend").await.unwrap();
    let removed = remove_unused_networks(&docker, &store, &labels)
        .await
        .unwrap();
    assert_eq!(removed, std::slice::from_ref(&name));
    assert!(docker.inspect_network(&name, None).await.is_err());

    let missing = ensure_network(&docker, &store, &ns, "nowhere", &labels)
        .await
        .unwrap_err();
    assert!(matches!(missing, NetworkError::NotFound { .. }));
    assert!(
        missing
            .to_string()
            .starts_with(&format!("network {ns}/nowhere does not exist")),
        "{missing}"
    );
}

#[tokio::test]
async fn a_subnet_over_a_host_route_is_refused_with_a_condition() {
    let leftovers = DockerLeftovers::new("networks-route");
    let labels = BTreeMap::from([leftovers.label()]);
    let (_etcd, store) = etcd().await;
    let docker = docker().await;
    let stop = start_network_controller(&store).await;

    // A route of this host that is not one of Docker's own networks, if there is one (the
    // LAN of eth0); else docker0's, which is both.
    let (docker_subnets, routes) = taken(&docker).await;
    let ipv4 = |r: &&HostRoute| r.destination.address.is_ipv4();
    let route = routes
        .iter()
        .filter(ipv4)
        .find(|r| {
            !docker_subnets
                .iter()
                .any(|s| network::overlaps(*s, r.destination))
        })
        .or_else(|| routes.iter().find(ipv4))
        .expect("this host has an IPv4 route besides the default one")
        .clone();
    let subnet = route.destination.network().to_string();

    let ns = unique("ns");
    store
        .create(&network(&ns, "shadow", &subnet))
        .await
        .unwrap();
    wait_for_reason(&store, &ns, "shadow", REASON_NO_CONFLICTS).await;

    let error = ensure_network(&docker, &store, &ns, "shadow", &labels)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, NetworkError::Overlap { .. }), "{message}");
    assert!(
        message.starts_with(&format!(
            "network {ns}/shadow cannot be created: subnet {subnet} overlaps "
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("host route {route}")) || message.contains("Docker network"),
        "{message}"
    );
    assert!(docker
        .inspect_network(&format!("{ns}_shadow"), None)
        .await
        .is_err());

    let (status, reason, condition_message) = ready(&store, &ns, "shadow").await.unwrap();
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, REASON_HOST_ROUTE_OVERLAP)
    );
    assert!(message.ends_with(&condition_message), "{condition_message}");

    // The network controller cannot see host routes, so it keeps the agent's verdict: once
    // it has handled a later change, the condition is still the agent's.
    let other = free_subnet(&docker).await;
    store.create(&network(&ns, "other", &other)).await.unwrap();
    wait_for_reason(&store, &ns, "other", REASON_NO_CONFLICTS).await;
    let (_, reason, _) = ready(&store, &ns, "shadow").await.unwrap();
    assert_eq!(reason, REASON_HOST_ROUTE_OVERLAP);
    let _ = stop.send(());
}

#[tokio::test]
async fn of_two_overlapping_networks_the_later_one_is_not_ready() {
    let leftovers = DockerLeftovers::new("networks-overlap");
    let labels = BTreeMap::from([leftovers.label()]);
    let (_etcd, store) = etcd().await;
    let stop = start_network_controller(&store).await;
    let ns = unique("ns");
    let a = rand::random_range(100..=250u8);

    store
        .create(&network(&ns, "backend", &format!("10.{a}.0.0/16")))
        .await
        .unwrap();
    store
        .create(&network(&ns, "front", &format!("10.{a}.0.0/24")))
        .await
        .unwrap();
    let message = wait_for_reason(&store, &ns, "front", REASON_SUBNET_OVERLAP).await;
    assert_eq!(
        message,
        format!("subnet 10.{a}.0.0/24 overlaps network {ns}/backend (10.{a}.0.0/16)")
    );
    wait_for_reason(&store, &ns, "backend", REASON_NO_CONFLICTS).await;

    // The agent refuses it with the same explanation, before touching Docker.
    let error = ensure_network(&docker().await, &store, &ns, "front", &labels)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("network {ns}/front cannot be created: {message}")
    );

    // Moving it elsewhere resolves the conflict.
    let mut front: Network = store.get(&ns, "front").await.unwrap();
    front.spec.subnet = Some(format!("10.{}.0.0/24", a.wrapping_add(1)));
    store.update(&front).await.unwrap();
    wait_for_reason(&store, &ns, "front", REASON_NO_CONFLICTS).await;
    let _ = stop.send(());
}

#[tokio::test]
async fn agents_sharing_an_engine_end_up_with_one_network() {
    let leftovers = DockerLeftovers::new("networks-race");
    let labels = BTreeMap::from([leftovers.label()]);
    let (_etcd, store) = etcd().await;
    let docker = docker().await;
    let ns = unique("ns");
    // No subnet: nothing but the name tells two creations apart.
    let spec = NetworkSpec::default();
    store
        .create(&Network::new(ObjectMeta::named(&ns, "shared"), spec))
        .await
        .unwrap();

    let agents = (0..4).map(|_| ensure_network(&docker, &store, &ns, "shared", &labels));
    for result in futures::future::join_all(agents).await {
        assert_eq!(result.unwrap(), format!("{ns}_shared"));
    }
    let filters = std::collections::HashMap::from([("name", vec![format!("{ns}_shared")])]);
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&filters)
        .build();
    let networks = docker.list_networks(Some(options)).await.unwrap();
    assert_eq!(networks.len(), 1, "{networks:#?}");
}
