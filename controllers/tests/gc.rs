//! The garbage collector against a real etcd: tasks go when their Service (by uid) is gone.

use std::future::Future;
use std::time::Duration;

use dctl_apis::service::ServiceSpec;
use dctl_apis::task::TaskSpec;
use dctl_apis::{ObjectMeta, OwnerReference, Resource, Service, Task};
use dctl_controllers::gc;
use dctl_runtime::controller;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;

const NS: &str = "demo";

async fn create_service(store: &Store, name: &str) -> Service {
    let mut spec = ServiceSpec::default();
    spec.template.image = "dctl-test/web:1".into();
    let mut service = Service::new(ObjectMeta::named(NS, name), spec);
    service.apply_defaults();
    store.create(&service).await.expect("service created")
}

/// A task controlled by the owner `name` with `uid` (`None`: no owner at all).
async fn create_task(store: &Store, name: &str, owner: Option<(&str, &str)>) -> Task {
    let mut meta = ObjectMeta::named(NS, name);
    if let Some((owner, uid)) = owner {
        meta.owner_references = vec![OwnerReference {
            api_version: "dctl/v1".into(),
            kind: "Service".into(),
            name: owner.into(),
            uid: uid.into(),
            controller: true,
        }];
    }
    let mut spec = TaskSpec {
        service_name: owner.map_or("none", |(name, _)| name).into(),
        slot: Some(1),
        ..TaskSpec::default()
    };
    spec.template.image = "dctl-test/web:1".into();
    store
        .create(&Task::new(meta, spec))
        .await
        .expect("task created")
}

async fn task_names(store: &Store) -> Vec<String> {
    let tasks = store.list::<Task>(Some(NS)).await.expect("tasks listed");
    tasks.items.into_iter().map(|t| t.metadata.name).collect()
}

/// Polls `check` until it answers, or fails the test after 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_go_when_their_service_uid_is_gone() {
    let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .expect("etcd answers");
    // Already there before the collector starts: found by its first list.
    create_task(&store, "gone.1.aaaaa", Some(("gone", "no-such-uid"))).await;

    let (stop, stopped) = oneshot::channel::<()>();
    let config = gc::Config::default().controller(
        controller::Config::default()
            .backoff(Duration::from_millis(20), Duration::from_millis(500)),
    );
    let collector = tokio::spawn(gc::run(store.clone(), config, async move {
        let _ = stopped.await;
    }));

    let web = create_service(&store, "web").await;
    create_task(&store, "web.1.bbbbb", Some(("web", &web.metadata.uid))).await;
    create_task(&store, "web.2.ccccc", Some(("web", "an-earlier-web"))).await;
    create_task(&store, "loose.1.ddddd", None).await;
    eventually("the orphans deleted", || async {
        task_names(&store).await == ["loose.1.ddddd", "web.1.bbbbb"]
    })
    .await;

    // Deleted, then created again under the same name: a new uid, so a new owner.
    store
        .delete::<Service>(NS, "web")
        .await
        .expect("service deleted");
    let again = create_service(&store, "web").await;
    assert_ne!(again.metadata.uid, web.metadata.uid);
    create_task(&store, "web.1.eeeee", Some(("web", &again.metadata.uid))).await;
    eventually("the old service's task deleted", || async {
        task_names(&store).await == ["loose.1.ddddd", "web.1.eeeee"]
    })
    .await;

    store
        .delete::<Service>(NS, "web")
        .await
        .expect("service deleted");
    eventually("the new service's task deleted", || async {
        task_names(&store).await == ["loose.1.ddddd"]
    })
    .await;

    let _ = stop.send(());
    collector
        .await
        .expect("joins")
        .expect("the collector ends cleanly");
}
