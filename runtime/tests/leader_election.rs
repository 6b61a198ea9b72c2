//! Leases and leader election against a real etcd.

use std::time::Duration;

use dctl_runtime::leader_election::{current_leader, Config, LeaderElector};
use dctl_runtime::lease::Lease;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use etcd_client::PutOptions;
use tokio::time::{timeout, Instant};

async fn start() -> (LocalEtcd, Store) {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    (etcd, store)
}

fn elector(store: &Store, identity: &str) -> LeaderElector {
    LeaderElector::new(
        store.clone(),
        "controller-manager",
        identity,
        Config::default().lease_ttl(Duration::from_secs(3)),
    )
}

async fn key_exists(store: &Store, key: &str) -> bool {
    let response = store.client().get(key, None).await.unwrap();
    !response.kvs().is_empty()
}

/// Polls until `key` is gone, returning how long that took.
async fn wait_until_gone(store: &Store, key: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while key_exists(store, key).await {
        assert!(
            started.elapsed() < limit,
            "{key} still there after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_leased_key_lives_while_renewed_and_vanishes_after_the_ttl() {
    let (_etcd, store) = start().await;
    let lease = Lease::grant(&store, Duration::from_secs(2)).await.unwrap();
    let options = PutOptions::new().with_lease(lease.id());
    store
        .client()
        .put("/dctl/v1/heartbeats/n1", "alive", Some(options))
        .await
        .unwrap();

    // Well past the TTL, the keep-alive still holds it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(lease.is_alive());
    assert!(key_exists(&store, "/dctl/v1/heartbeats/n1").await);

    // Dropping the lease stops renewing it: the key goes within the TTL (and a bit).
    drop(lease);
    wait_until_gone(&store, "/dctl/v1/heartbeats/n1", Duration::from_secs(6)).await;
}

#[tokio::test]
async fn a_revoked_lease_takes_its_keys_at_once() {
    let (_etcd, store) = start().await;
    let lease = Lease::grant(&store, Duration::from_secs(30)).await.unwrap();
    let options = PutOptions::new().with_lease(lease.id());
    store
        .client()
        .put("/dctl/v1/heartbeats/n1", "alive", Some(options))
        .await
        .unwrap();
    lease.revoke().await.unwrap();
    assert!(!key_exists(&store, "/dctl/v1/heartbeats/n1").await);
}

#[tokio::test]
async fn leadership_fails_over_to_the_next_candidate() {
    let (_etcd, store) = start().await;
    assert_eq!(
        current_leader(&store, "controller-manager").await.unwrap(),
        None
    );

    let first = elector(&store, "cm-a").acquire().await.unwrap();
    assert_eq!(first.identity(), "cm-a");
    assert!(first.is_leading());
    assert_eq!(
        current_leader(&store, "controller-manager").await.unwrap(),
        Some("cm-a".to_string())
    );

    // The second candidate waits while the first leads…
    let second = tokio::spawn({
        let elector = elector(&store, "cm-b");
        async move { elector.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished());

    // …and takes over promptly once the first resigns.
    let resigned = Instant::now();
    first.resign().await.unwrap();
    let second = timeout(Duration::from_secs(3), second)
        .await
        .expect("the second candidate takes over within 3 s")
        .unwrap()
        .unwrap();
    assert!(resigned.elapsed() < Duration::from_secs(3));
    assert_eq!(
        current_leader(&store, "controller-manager").await.unwrap(),
        Some("cm-b".to_string())
    );

    // Dropping a leadership hands over too.
    let third = tokio::spawn({
        let elector = elector(&store, "cm-c");
        async move { elector.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(second);
    let third = timeout(Duration::from_secs(5), third)
        .await
        .expect("the third candidate takes over")
        .unwrap()
        .unwrap();
    assert_eq!(
        current_leader(&store, "controller-manager").await.unwrap(),
        Some(third.identity().to_string())
    );
}

#[tokio::test]
async fn a_leader_whose_key_is_deleted_knows_it_lost() {
    let (_etcd, store) = start().await;
    let leadership = elector(&store, "cm-a").acquire().await.unwrap();
    store
        .client()
        .delete("/dctl/v1/leases/controller-manager", None)
        .await
        .unwrap();
    timeout(Duration::from_secs(3), leadership.lost())
        .await
        .expect("loss noticed within 3 s");
    assert!(!leadership.is_leading());
}

#[tokio::test]
async fn a_restarted_candidate_takes_over_its_own_key() {
    let (_etcd, store) = start().await;
    let before = elector(&store, "cm-a").acquire().await.unwrap();
    // Same identity again (a restart faster than the TTL): no wait for the old lease.
    let after = timeout(Duration::from_secs(2), elector(&store, "cm-a").acquire())
        .await
        .expect("took over its own key at once")
        .unwrap();
    timeout(Duration::from_secs(3), before.lost())
        .await
        .expect("the old leadership noticed");
    assert!(after.is_leading());
}
