//! Bound tasks are mirrored to their node's assignment keys, in the same transaction.

use std::time::Duration;

use dctl_apis::task::TaskState;
use dctl_apis::{ObjectMeta, Task};
use dctl_runtime::store::{keys, Store, StoreError};
use dctl_runtime::watcher::{self, Event};
use dctl_runtime::LocalEtcd;
use futures::StreamExt;

async fn task(store: &Store, name: &str) -> Task {
    let mut task = Task::new(ObjectMeta::named("demo", name), Default::default());
    task.spec.service_name = "web".into();
    task.spec.template.image = "web:1".into();
    store.create(&task).await.unwrap()
}

async fn raw(store: &Store, key: &str) -> Option<(Vec<u8>, i64)> {
    let response = store.client().get(key, None).await.unwrap();
    response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision()))
}

#[tokio::test]
async fn binding_writes_the_assignment_and_every_later_write_mirrors_it() {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    let created = task(&store, "web.1.abcde").await;
    let assignment = keys::assignment_key("node-a", "demo", "web.1.abcde");
    assert_eq!(raw(&store, &assignment).await, None, "not bound yet");

    let bound = store.bind_task(&created, "node-a").await.unwrap();
    assert_eq!(bound.spec.node_name.as_deref(), Some("node-a"));
    let status = bound.status.clone().unwrap();
    assert_eq!(status.state, TaskState::Assigned);
    assert_eq!(status.message, "scheduled on node-a");
    let (bytes, revision) = raw(&store, &assignment).await.expect("assignment written");
    assert_eq!(
        Some(revision),
        bound.metadata.resource_version,
        "one transaction"
    );
    let mirrored: Task = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(mirrored.spec.node_name.as_deref(), Some("node-a"));

    // The agent reads its assignments and writes status with that resourceVersion.
    let mut assigned = store.list_assigned_tasks("node-a").await.unwrap().items;
    assert_eq!(assigned.len(), 1);
    let mut running = assigned.remove(0);
    running.status.as_mut().unwrap().state = TaskState::Running;
    let written = store.update_status(&running).await.unwrap();
    let (bytes, revision) = raw(&store, &assignment).await.unwrap();
    assert_eq!(Some(revision), written.metadata.resource_version);
    let mirrored: Task = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(mirrored.status.unwrap().state, TaskState::Running);

    // Rebinding elsewhere is refused; a stale bind is a conflict.
    let elsewhere = store.bind_task(&written, "node-b").await.unwrap_err();
    assert!(
        matches!(elsewhere, StoreError::Invalid { .. }),
        "{elsewhere}"
    );
    let other = task(&store, "web.2.fghij").await;
    let mut stale = other.clone();
    let _ = store.bind_task(&other, "node-b").await.unwrap();
    stale.metadata.labels.insert("x".into(), "y".into());
    let stale = store.bind_task(&stale, "node-c").await.unwrap_err();
    assert!(stale.is_conflict(), "{stale}");

    store.delete::<Task>("demo", "web.1.abcde").await.unwrap();
    assert_eq!(
        raw(&store, &assignment).await,
        None,
        "deleted with its task"
    );
    assert_eq!(
        store
            .list_assigned_tasks("node-b")
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn an_agent_watch_sees_only_its_own_node() {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    let mut events =
        watcher::watcher::<Task>(store.clone(), watcher::Config::assignments("node-a")).boxed();
    assert!(matches!(next(&mut events).await, Ok(Event::Init)));
    assert!(matches!(next(&mut events).await, Ok(Event::InitDone)));

    let elsewhere = task(&store, "web.1.aaaaa").await;
    store.bind_task(&elsewhere, "node-b").await.unwrap();
    let mine = task(&store, "web.2.bbbbb").await;
    store.bind_task(&mine, "node-a").await.unwrap();
    match next(&mut events).await {
        Ok(Event::Apply(task)) => assert_eq!(task.metadata.name, "web.2.bbbbb"),
        other => panic!("expected my task, got {other:?}"),
    }
    store.delete::<Task>("demo", "web.2.bbbbb").await.unwrap();
    match next(&mut events).await {
        Ok(Event::Delete(task)) => assert_eq!(task.metadata.name, "web.2.bbbbb"),
        other => panic!("expected my task's removal, got {other:?}"),
    }
}

async fn next<S: futures::Stream + Unpin>(events: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the watcher never ends")
}
