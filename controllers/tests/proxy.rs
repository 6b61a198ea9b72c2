//! The proxy's observation records against a real etcd: put with the proxy's lease, so a
//! stopped proxy leaves none behind for the drains of other nodes to wonder about.

use std::time::Duration;

use dctl_apis::endpoints::EndpointsSpec;
use dctl_apis::{Endpoints, ObjectMeta};
use dctl_controllers::node::proxy::{self, observed_key, ProxyConfig};
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;

/// The record's revision and lease, once it exists; `None` after 15 s.
async fn record(store: &Store, key: &str) -> Option<(i64, i64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let found = store.client().get(key, None).await.expect("etcd answers");
        if let Some(kv) = found.kvs().first() {
            return Some((kv.value_str().unwrap().parse().unwrap(), kv.lease()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_are_leased_and_removed_when_the_proxy_stops() {
    let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .expect("etcd answers");
    let endpoints = Endpoints::new(ObjectMeta::named("demo", "web"), EndpointsSpec::default());
    let endpoints = store.create(&endpoints).await.expect("endpoints created");

    let (stop, stopped) = oneshot::channel::<()>();
    let config = ProxyConfig::new("n1").bind("127.0.0.1".parse().unwrap());
    let running = tokio::spawn(proxy::run(store.clone(), config, async {
        let _ = stopped.await;
    }));
    let key = observed_key("n1", "demo", "web");
    let (revision, lease) = record(&store, &key).await.expect("the proxy records it");
    assert_eq!(Some(revision), endpoints.metadata.resource_version);
    assert_ne!(lease, 0, "put with a lease");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let left = store.client().get(key.as_str(), None).await.unwrap();
    assert!(left.kvs().is_empty(), "the record went with the proxy");
}
