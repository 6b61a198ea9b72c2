//! The event recorder against a real etcd: repeats fold into one Event with a count.

use dctl_apis::event::EventSource;
use dctl_apis::{EventType, ObjectMeta, ObjectReference, Service};
use dctl_runtime::events::{list_for, Recorder};
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;

async fn start() -> (LocalEtcd, Store) {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    (etcd, store)
}

fn recorder(store: &Store) -> Recorder {
    Recorder::new(
        store.clone(),
        EventSource {
            component: "test".into(),
            host: "h1".into(),
        },
    )
}

async fn service(store: &Store, name: &str) -> ObjectReference {
    let created = store
        .create(&Service::new(
            ObjectMeta::named("demo", name),
            Default::default(),
        ))
        .await
        .unwrap();
    ObjectReference::to(&created)
}

#[tokio::test]
async fn the_same_event_three_times_is_one_event_with_count_three() {
    let (_etcd, store) = start().await;
    let web = service(&store, "web").await;
    let recorder = recorder(&store);

    let first = recorder
        .publish(
            &web,
            EventType::Warning,
            "Unhealthy",
            "readiness probe failed",
        )
        .await
        .unwrap();
    assert_eq!(first.spec.count, 1);
    recorder
        .publish(
            &web,
            EventType::Warning,
            "Unhealthy",
            "readiness probe failed",
        )
        .await
        .unwrap();
    let third = recorder
        .publish(
            &web,
            EventType::Warning,
            "Unhealthy",
            "readiness probe failed",
        )
        .await
        .unwrap();
    assert_eq!(third.metadata.name, first.metadata.name);
    assert_eq!(third.spec.count, 3);
    assert_eq!(third.spec.first_timestamp, first.spec.first_timestamp);
    assert!(third.spec.last_timestamp >= first.spec.last_timestamp);

    let events = list_for(&store, &web).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0], third);
}

#[tokio::test]
async fn describe_lists_an_objects_events_oldest_first() {
    let (_etcd, store) = start().await;
    let web = service(&store, "web").await;
    let db = service(&store, "db").await;
    let recorder = recorder(&store);

    recorder
        .publish(&web, EventType::Normal, "Scheduled", "bound to n1")
        .await
        .unwrap();
    recorder
        .publish(&db, EventType::Normal, "Scheduled", "bound to n2")
        .await
        .unwrap();
    recorder
        .publish(&web, EventType::Normal, "Started", "started container")
        .await
        .unwrap();

    let reasons: Vec<String> = list_for(&store, &web)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.spec.reason)
        .collect();
    assert_eq!(reasons, ["Scheduled", "Started"]);
}

#[tokio::test]
async fn concurrent_repeats_are_all_counted() {
    let (_etcd, store) = start().await;
    let web = service(&store, "web").await;
    let recorder = recorder(&store);
    let publishes = (0..5).map(|_| {
        let (recorder, web) = (recorder.clone(), web.clone());
        tokio::spawn(async move {
            recorder
                .publish(
                    &web,
                    EventType::Warning,
                    "BackOff",
                    "restarting failed task",
                )
                .await
        })
    });
    for publish in futures::future::join_all(publishes).await {
        publish.unwrap().unwrap();
    }
    let events = list_for(&store, &web).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].spec.count, 5);
}
