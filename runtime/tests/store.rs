//! The typed store against a real etcd: CAS, generation, finalizers, lists, watches, outages.

use std::time::{Duration, Instant};

use dctl_apis::{FieldError, Kind, ObjectMeta, Resource};
use dctl_runtime::store::{Deleted, Store, StoreError, WatchEvent};
use dctl_runtime::LocalEtcd;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

/// A kind of our own, so these tests do not depend on any real kind's spec fields; it is
/// stored under the `services` prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Widget {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: WidgetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<WidgetStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct WidgetSpec {
    replicas: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct WidgetStatus {
    ready: u32,
}

impl Resource for Widget {
    const KIND: Kind = Kind::Service;

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn apply_defaults(&mut self) {}

    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

fn widget(namespace: &str, name: &str, replicas: u32) -> Widget {
    Widget {
        api_version: "dctl/v1".into(),
        kind: "Service".into(),
        metadata: ObjectMeta::named(namespace, name),
        spec: WidgetSpec { replicas },
        status: None,
    }
}

async fn start() -> (LocalEtcd, Store) {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    (etcd, store)
}

/// The store's current revision, to tell whether a call wrote anything.
async fn revision(store: &Store) -> i64 {
    store.list::<Widget>(None).await.unwrap().revision
}

async fn next<S: futures::Stream + Unpin>(events: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a watch event within 10 s")
        .expect("an open watch")
}

fn names(items: &[Widget]) -> Vec<String> {
    items
        .iter()
        .map(|w| format!("{}/{}", w.metadata.namespace(), w.metadata.name))
        .collect()
}

#[tokio::test]
async fn create_get_list_and_delete() {
    let (_etcd, store) = start().await;

    let created = store.create(&widget("demo", "b", 1)).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    assert_eq!(created.metadata.generation, 1);
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert_eq!(store.get::<Widget>("demo", "b").await.unwrap(), created);

    let again = store.create(&widget("demo", "b", 2)).await.unwrap_err();
    assert!(again.is_already_exists(), "{again}");
    assert!(again
        .to_string()
        .starts_with("service demo/b already exists"));

    let missing = store.get::<Widget>("demo", "nope").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(store.try_get::<Widget>("demo", "nope").await.unwrap(), None);

    store.create(&widget("demo", "a", 1)).await.unwrap();
    let last = store.create(&widget("demo-x", "a", 1)).await.unwrap();
    let demo = store.list::<Widget>(Some("demo")).await.unwrap();
    assert_eq!(names(&demo.items), ["demo/a", "demo/b"]);
    let all = store.list::<Widget>(None).await.unwrap();
    assert_eq!(names(&all.items), ["demo/a", "demo/b", "demo-x/a"]);
    assert_eq!(all.revision, last.metadata.resource_version.unwrap());

    match store.delete::<Widget>("demo", "b").await.unwrap() {
        Deleted::Gone(gone) => assert_eq!(gone, created),
        Deleted::Pending(_) => panic!("no finalizers, so it should be gone"),
    }
    assert!(store
        .get::<Widget>("demo", "b")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .delete::<Widget>("demo", "b")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn two_writers_race_and_the_second_gets_a_conflict() {
    let (_etcd, store) = start().await;
    let created = store.create(&widget("demo", "web", 1)).await.unwrap();

    let mut first = created.clone();
    first.spec.replicas = 2;
    let mut second = created.clone();
    second.spec.replicas = 3;

    let won = store.update(&first).await.unwrap();
    let lost = store.update(&second).await.unwrap_err();
    assert!(lost.is_conflict(), "{lost}");
    assert!(lost.to_string().contains("service demo/web"), "{lost}");
    assert_eq!(store.get::<Widget>("demo", "web").await.unwrap(), won);
    assert_eq!(won.spec.replicas, 2);

    // Status writes compare revisions too.
    let mut stale = created;
    stale.status = Some(WidgetStatus { ready: 1 });
    assert!(store.update_status(&stale).await.unwrap_err().is_conflict());
}

#[tokio::test]
async fn generation_counts_spec_changes_only() {
    let (_etcd, store) = start().await;
    let created = store.create(&widget("demo", "web", 1)).await.unwrap();

    let mut labelled = created.clone();
    labelled.metadata.labels.insert("app".into(), "web".into());
    let labelled = store.update(&labelled).await.unwrap();
    assert_eq!(labelled.metadata.generation, 1, "labels are not spec");
    assert!(labelled.metadata.resource_version > created.metadata.resource_version);

    let mut scaled = labelled.clone();
    scaled.spec.replicas = 3;
    let scaled = store.update(&scaled).await.unwrap();
    assert_eq!(scaled.metadata.generation, 2);

    let mut observed = scaled.clone();
    observed.status = Some(WidgetStatus { ready: 3 });
    // A status write ignores a spec change smuggled along with it.
    observed.spec.replicas = 99;
    let observed = store.update_status(&observed).await.unwrap();
    assert_eq!(observed.metadata.generation, 2);
    assert_eq!(observed.spec.replicas, 3);
    assert_eq!(observed.status, Some(WidgetStatus { ready: 3 }));

    // An update keeps the stored status whatever the object says, and cannot move the
    // uid or creation time.
    let mut stale_status = observed.clone();
    stale_status.status = None;
    stale_status.metadata.uid = "forged".into();
    stale_status.metadata.generation = 40;
    stale_status.spec.replicas = 4;
    let updated = store.update(&stale_status).await.unwrap();
    assert_eq!(updated.status, Some(WidgetStatus { ready: 3 }));
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    assert_eq!(updated.metadata.generation, 3, "bumped exactly once");
    assert_eq!(store.get::<Widget>("demo", "web").await.unwrap(), updated);

    // Writing what is already stored writes nothing.
    let before = revision(&store).await;
    assert_eq!(store.update(&updated).await.unwrap(), updated);
    assert_eq!(store.update_status(&updated).await.unwrap(), updated);
    assert_eq!(revision(&store).await, before);

    let mut unversioned = updated;
    unversioned.metadata.resource_version = None;
    let err = store.update(&unversioned).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn finalizers_hold_a_delete_until_removed() {
    let (_etcd, store) = start().await;
    let mut held = widget("demo", "web", 1);
    held.metadata.finalizers = vec!["dctl.io/test".into()];
    store.create(&held).await.unwrap();

    let Deleted::Pending(pending) = store.delete::<Widget>("demo", "web").await.unwrap() else {
        panic!("finalizers should hold the delete");
    };
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(store.get::<Widget>("demo", "web").await.unwrap(), pending);

    // Deleting again changes nothing.
    let before = revision(&store).await;
    assert_eq!(
        store.delete::<Widget>("demo", "web").await.unwrap(),
        Deleted::Pending(pending.clone())
    );
    assert_eq!(revision(&store).await, before);

    // An update cannot take the deletion back.
    let mut revived = pending.clone();
    revived.metadata.deletion_timestamp = None;
    revived.metadata.labels.insert("a".into(), "b".into());
    let revived = store.update(&revived).await.unwrap();
    assert_eq!(
        revived.metadata.deletion_timestamp,
        pending.metadata.deletion_timestamp
    );

    let mut finalized = revived;
    finalized.metadata.finalizers.clear();
    store.update(&finalized).await.unwrap();
    assert!(store
        .get::<Widget>("demo", "web")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn a_list_larger_than_a_page_is_complete_and_sorted() {
    let (_etcd, store) = start().await;
    let count = 1_100;
    futures::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            async move { store.create(&widget("bulk", &format!("w{i:05}"), 1)).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let list = store.list::<Widget>(Some("bulk")).await.unwrap();
    assert_eq!(list.items.len(), count);
    let expected: Vec<String> = (0..count).map(|i| format!("bulk/w{i:05}")).collect();
    assert_eq!(names(&list.items), expected);
}

#[tokio::test]
async fn watch_reports_changes_with_the_last_state_of_deleted_objects() {
    let (etcd, store) = start().await;
    let created = store.create(&widget("demo", "web", 1)).await.unwrap();
    let listed = store.list::<Widget>(Some("demo")).await.unwrap();
    let mut events = Box::pin(
        store
            .watch::<Widget>(Some("demo"), listed.revision + 1)
            .await
            .unwrap(),
    );

    store.create(&widget("other", "ignored", 1)).await.unwrap();
    let mut scaled = created.clone();
    scaled.spec.replicas = 2;
    let scaled = store.update(&scaled).await.unwrap();
    store.delete::<Widget>("demo", "web").await.unwrap();

    assert_eq!(
        next(&mut events).await.unwrap(),
        WatchEvent::Put(scaled.clone())
    );
    match next(&mut events).await.unwrap() {
        WatchEvent::Delete(gone) => {
            assert_eq!(gone.spec, scaled.spec, "the last state");
            assert!(gone.metadata.resource_version > scaled.metadata.resource_version);
        }
        other => panic!("expected a delete, got {other:?}"),
    }

    // A watch from before a compaction is told so.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let now = revision(&store).await;
    client
        .compact(
            now,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    let compacted = match store.watch::<Widget>(None, 2).await {
        Err(err) => err,
        Ok(stream) => Box::pin(stream).next().await.unwrap().unwrap_err(),
    };
    assert!(
        matches!(compacted, StoreError::Compacted { revision } if revision == now),
        "{compacted}"
    );
}

#[tokio::test]
async fn a_value_that_is_not_json_is_a_decode_error_naming_the_key() {
    let (etcd, store) = start().await;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .put("/dctl/v1/services/demo/broken", "{not json", None)
        .await
        .unwrap();
    let err = store.get::<Widget>("demo", "broken").await.unwrap_err();
    assert!(matches!(err, StoreError::Decode { .. }), "{err}");
    assert!(
        err.to_string().contains("/dctl/v1/services/demo/broken"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dead_etcd_is_unavailable_within_seconds() {
    let (etcd, store) = start().await;
    store.create(&widget("demo", "web", 1)).await.unwrap();
    let endpoint = etcd.endpoint().to_string();
    etcd.stop().await;

    let started = Instant::now();
    let err = store.get::<Widget>("demo", "web").await.unwrap_err();
    eprintln!("{err:?} {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach etcd at {endpoint}: ")),
        "{err}"
    );

    let started = Instant::now();
    let err = store.create(&widget("demo", "db", 1)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = match Store::connect(std::slice::from_ref(&endpoint)).await {
        Err(err) => err,
        Ok(_) => panic!("connected to a dead etcd"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string()
            .contains("cannot reach etcd at http://127.0.0.1:"),
        "{err}"
    );
    eprintln!("{err}");
}

#[tokio::test]
async fn cluster_scoped_objects_have_no_namespace() {
    let (_etcd, store) = start().await;
    let meta = ObjectMeta::named("ignored", "n1");
    let created = store
        .create(&dctl_apis::Node::new(meta, Default::default()))
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(
        store.get::<dctl_apis::Node>("", "n1").await.unwrap(),
        created
    );
    let listed = store
        .list::<dctl_apis::Node>(Some("ignored"))
        .await
        .unwrap();
    assert_eq!(listed.items, [created]);
}

/// How many reads (Range requests) etcd has answered, from its metrics: an update that
/// goes out as one transaction adds none.
fn reads(etcd: &LocalEtcd) -> u64 {
    handled(etcd, "Range")
}

/// How many requests of a gRPC `method` of the KV service etcd has answered, from its
/// metrics.
fn handled(etcd: &LocalEtcd, method: &str) -> u64 {
    use std::io::{Read, Write};
    let address = etcd.endpoint().trim_start_matches("http://");
    let mut connection = std::net::TcpStream::connect(address).unwrap();
    connection
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    connection.read_to_string(&mut metrics).unwrap();
    let prefix = format!(r#"grpc_server_handled_total{{grpc_code="OK",grpc_method="{method}","#);
    metrics
        .lines()
        .find(|line| line.starts_with(&prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_update_of_an_object_the_store_knows_is_one_transaction() {
    let (etcd, store) = start().await;
    let created = store.create(&widget("demo", "web", 1)).await.unwrap();

    let before = reads(&etcd);
    let mut scaled = created.clone();
    scaled.spec.replicas = 2;
    let scaled = store.update(&scaled).await.unwrap();
    assert_eq!(scaled.metadata.generation, 2);
    let mut observed = scaled.clone();
    observed.status = Some(WidgetStatus { ready: 2 });
    let observed = store.update_status(&observed).await.unwrap();
    let mut labelled = observed.clone();
    labelled.metadata.labels.insert("tier".into(), "web".into());
    let labelled = store.update(&labelled).await.unwrap();
    assert_eq!(reads(&etcd), before, "three writes, no read");

    // What a get or a watch returns is known too.
    let other = Store::connect(store.endpoints()).await.unwrap();
    let mut events = Box::pin(
        other
            .watch::<Widget>(
                Some("demo"),
                labelled.metadata.resource_version.unwrap() + 1,
            )
            .await
            .unwrap(),
    );
    let mut rescaled = labelled.clone();
    rescaled.spec.replicas = 3;
    let rescaled = store.update(&rescaled).await.unwrap();
    let WatchEvent::Put(watched) = next(&mut events).await.unwrap() else {
        panic!("expected the update");
    };
    assert_eq!(watched, rescaled);
    let before = reads(&etcd);
    let mut reported = watched;
    reported.status = Some(WidgetStatus { ready: 3 });
    let reported = other.update_status(&reported).await.unwrap();
    assert_eq!(reads(&etcd), before, "known from the watch");
    let got = store.get::<Widget>("demo", "web").await.unwrap();
    assert_eq!(got, reported);
    let before = reads(&etcd);
    let mut shrunk = got;
    shrunk.spec.replicas = 1;
    store.update(&shrunk).await.unwrap();
    assert_eq!(reads(&etcd), before, "known from the get");

    // A store that knows nothing of the object reads it first, once.
    let fresh = Store::connect(store.endpoints()).await.unwrap();
    let current = other.get::<Widget>("demo", "web").await.unwrap();
    let before = reads(&etcd);
    let mut relabelled = current;
    relabelled
        .metadata
        .labels
        .insert("zone".into(), "eu".into());
    fresh.update(&relabelled).await.unwrap();
    assert_eq!(reads(&etcd), before + 1);
}

#[tokio::test]
async fn a_known_revision_never_lets_a_stale_write_through() {
    let (_etcd, a) = start().await;
    let b = Store::connect(a.endpoints()).await.unwrap();
    // `a` knows what it created; `b` changes it twice behind `a`'s back.
    let created = a.create(&widget("demo", "web", 1)).await.unwrap();
    let mut by_b = b.get::<Widget>("demo", "web").await.unwrap();
    by_b.spec.replicas = 5;
    let by_b = b.update(&by_b).await.unwrap();
    let mut by_b_status = by_b.clone();
    by_b_status.status = Some(WidgetStatus { ready: 5 });
    let by_b = b.update_status(&by_b_status).await.unwrap();

    // Every write from `a`'s old copy is a conflict, whether it changes the spec, the
    // labels, the status, or nothing at all.
    let mut spec = created.clone();
    spec.spec.replicas = 2;
    let mut labels = created.clone();
    labels.metadata.labels.insert("a".into(), "b".into());
    let mut status = created.clone();
    status.status = Some(WidgetStatus { ready: 1 });
    for stale in [&spec, &labels, &created] {
        let err = a.update(stale).await.unwrap_err();
        assert!(err.is_conflict(), "{err}");
    }
    for stale in [&status, &created] {
        let err = a.update_status(stale).await.unwrap_err();
        assert!(err.is_conflict(), "{err}");
    }
    assert_eq!(a.get::<Widget>("demo", "web").await.unwrap(), by_b);

    // Once deleted and created again, the old revision is no good either.
    a.delete::<Widget>("demo", "web").await.unwrap();
    b.create(&widget("demo", "web", 7)).await.unwrap();
    let err = a.update(&spec).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let gone = a.delete::<Widget>("demo", "web").await.unwrap();
    let Deleted::Gone(gone) = gone else {
        panic!("no finalizers")
    };
    let mut after_delete = gone;
    after_delete.spec.replicas = 8;
    let err = a.update(&after_delete).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_status_changed_through_update_is_not_written() {
    let (etcd, store) = start().await;
    let created = store.create(&widget("demo", "web", 1)).await.unwrap();
    let mut observed = created.clone();
    observed.status = Some(WidgetStatus { ready: 1 });
    let observed = store.update_status(&observed).await.unwrap();

    // Status and spec changed together: the spec is written, the stored status kept.
    let mut both = observed.clone();
    both.spec.replicas = 2;
    both.status = Some(WidgetStatus { ready: 9 });
    let updated = store.update(&both).await.unwrap();
    assert_eq!(updated.spec.replicas, 2);
    assert_eq!(updated.status, Some(WidgetStatus { ready: 1 }));
    assert_eq!(updated.metadata.generation, 2);
    assert_eq!(store.get::<Widget>("demo", "web").await.unwrap(), updated);

    // Only the status changed: nothing is written.
    let before = revision(&store).await;
    let mut status_only = updated.clone();
    status_only.status = None;
    assert_eq!(store.update(&status_only).await.unwrap(), updated);
    assert_eq!(revision(&store).await, before);

    // A spec change smuggled into a status write is not written either.
    let reads_before = reads(&etcd);
    let mut smuggled = updated.clone();
    smuggled.spec.replicas = 40;
    smuggled.status = Some(WidgetStatus { ready: 2 });
    let reported = store.update_status(&smuggled).await.unwrap();
    assert_eq!(reported.spec.replicas, 2);
    assert_eq!(reported.metadata.generation, 2);
    assert_eq!(reported.status, Some(WidgetStatus { ready: 2 }));
    assert_eq!(reads(&etcd), reads_before + 1, "it read what to keep");
    assert_eq!(store.get::<Widget>("demo", "web").await.unwrap(), reported);
}

#[tokio::test]
async fn generation_is_bumped_once_per_spec_change_without_reads() {
    let (etcd, store) = start().await;
    let other = Store::connect(store.endpoints()).await.unwrap();
    let mut widget = store.create(&widget("demo", "web", 0)).await.unwrap();
    let before = reads(&etcd);
    for replicas in 1..=5 {
        widget.spec.replicas = replicas;
        widget = store.update(&widget).await.unwrap();
        assert_eq!(widget.metadata.generation, i64::from(replicas) + 1);
        widget
            .metadata
            .labels
            .insert("round".into(), replicas.to_string());
        widget = store.update(&widget).await.unwrap();
        assert_eq!(
            widget.metadata.generation,
            i64::from(replicas) + 1,
            "labels"
        );
        widget.status = Some(WidgetStatus { ready: replicas });
        widget = store.update_status(&widget).await.unwrap();
        assert_eq!(
            widget.metadata.generation,
            i64::from(replicas) + 1,
            "status"
        );
    }
    assert_eq!(reads(&etcd), before);
    // As stored, read by a store that never saw it.
    assert_eq!(other.get::<Widget>("demo", "web").await.unwrap(), widget);
    assert_eq!(widget.metadata.generation, 6);
}

#[tokio::test]
async fn a_list_too_large_for_one_answer_is_read_in_smaller_pages() {
    let (_etcd, store) = start().await;
    // 70 objects of 1 MiB: more than one 64 MiB answer holds.
    let count = 70;
    let filler = "x".repeat(1024 * 1024);
    futures::stream::iter(0..count)
        .map(|i| {
            let (store, filler) = (store.clone(), filler.clone());
            async move {
                let mut big = widget("big", &format!("w{i:03}"), 1);
                big.metadata.annotations.insert("filler".into(), filler);
                store.create(&big).await
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let list = store.list::<Widget>(Some("big")).await.unwrap();
    assert_eq!(list.items.len(), count);
    let expected: Vec<String> = (0..count).map(|i| format!("big/w{i:03}")).collect();
    assert_eq!(names(&list.items), expected);
}

#[tokio::test]
async fn writes_in_flight_together_share_transactions_and_each_gets_its_own_answer() {
    let (etcd, store) = start().await;
    let taken = store.create(&widget("demo", "taken", 1)).await.unwrap();

    // 60 creates and one of a taken name, all at once.
    let before = handled(&etcd, "Txn");
    let creates = (0..60)
        .map(|i| widget("demo", &format!("w{i:02}"), i))
        .chain([widget("demo", "taken", 9)]);
    let results = futures::future::join_all(creates.map(|w| {
        let store = store.clone();
        async move { store.create(&w).await }
    }))
    .await;
    let transactions = handled(&etcd, "Txn") - before;
    assert!(
        transactions <= 10,
        "61 writes in flight together took {transactions} transactions"
    );
    let (taken_result, created) = results.split_last().unwrap();
    let err = taken_result.as_ref().unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let created: Vec<Widget> = created
        .iter()
        .map(|r| r.as_ref().unwrap().clone())
        .collect();
    let listed = store.list::<Widget>(Some("demo")).await.unwrap();
    assert_eq!(listed.items.len(), 61);
    for widget in &created {
        // Stored as returned: the revision each write was told is the one it holds.
        let stored = listed
            .items
            .iter()
            .find(|w| w.metadata.name == widget.metadata.name);
        assert_eq!(stored, Some(widget));
    }
    assert_eq!(store.get::<Widget>("demo", "taken").await.unwrap(), taken);

    // Updates at once: one from a stale copy, two rivals from the same revision, and
    // others that all hold. The stale one and exactly one rival lose.
    let mut stale = taken.clone();
    stale.spec.replicas = 2;
    store.update(&stale).await.unwrap();
    let mut first = created[0].clone();
    first.spec.replicas = 100;
    let mut second = created[0].clone();
    second.spec.replicas = 200;
    let mut others: Vec<Widget> = created[1..].to_vec();
    for widget in &mut others {
        widget.spec.replicas += 1000;
    }
    let updates = [taken.clone(), first, second]
        .into_iter()
        .chain(others.clone());
    let results = futures::future::join_all(updates.map(|w| {
        let store = store.clone();
        async move { store.update(&w).await }
    }))
    .await;
    assert!(results[0].as_ref().unwrap_err().is_conflict());
    let rivals = [&results[1], &results[2]];
    let won: Vec<&Widget> = rivals.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{rivals:?}");
    assert!(rivals
        .iter()
        .any(|r| r.as_ref().is_err_and(StoreError::is_conflict)));
    assert_eq!(&store.get::<Widget>("demo", "w00").await.unwrap(), won[0]);
    for (result, widget) in results[3..].iter().zip(&others) {
        let updated = result.as_ref().unwrap();
        assert_eq!(updated.spec, widget.spec);
        let stored = store
            .get::<Widget>("demo", &widget.metadata.name)
            .await
            .unwrap();
        assert_eq!(&stored, updated);
    }

    // Deletes at once: every one gone, the missing one NotFound.
    let doomed: Vec<String> = (0..60)
        .map(|i| format!("w{i:02}"))
        .chain(["nothing".into()])
        .collect();
    let results = futures::future::join_all(doomed.iter().map(|name| {
        let store = store.clone();
        async move { store.delete::<Widget>("demo", name).await }
    }))
    .await;
    let (missing, deleted) = results.split_last().unwrap();
    assert!(missing.as_ref().unwrap_err().is_not_found());
    assert!(deleted.iter().all(|r| matches!(r, Ok(Deleted::Gone(_)))));
    let left = store.list::<Widget>(Some("demo")).await.unwrap();
    assert_eq!(names(&left.items), ["demo/taken"]);
}

#[tokio::test]
async fn the_first_to_initialize_a_system_key_decides_its_value() {
    let (_etcd, store) = start().await;
    let key = dctl_runtime::store::keys::system_key("credentials", "test");
    let (a, b) = tokio::join!(
        store.get_or_init_system(&key, "from-a"),
        store.get_or_init_system(&key, "from-b"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "both callers see the one stored value");
    assert!(a == "from-a" || a == "from-b", "{a}");
    let later = store.get_or_init_system(&key, "from-c").await.unwrap();
    assert_eq!(later, a);
}
