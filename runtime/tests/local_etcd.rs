use dctl_runtime::LocalEtcd;

#[tokio::test]
async fn local_etcd_starts_and_restarts_on_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = LocalEtcd::start(dir.path()).await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();
    etcd.stop().await;

    // A second start reuses the data directory (on new ports) and still has the key.
    let etcd = LocalEtcd::start(dir.path()).await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
}
