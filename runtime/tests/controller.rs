//! A controller over a real etcd: watcher, cache and work queue wired by `for_store`.

use std::sync::Arc;
use std::time::Duration;

use dctl_apis::{FieldError, Kind, ObjectMeta, Resource};
use dctl_runtime::controller::{backoff_on_error, Action, Config, Controller};
use dctl_runtime::reflector::Reader;
use dctl_runtime::store::Store;
use dctl_runtime::{metrics, LocalEtcd, ObjectKey};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// A kind of our own, so the test does not depend on a real kind's spec fields; it is
/// stored under the `networks` prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Gadget {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: GadgetSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct GadgetSpec {
    size: u32,
}

impl Resource for Gadget {
    const KIND: Kind = Kind::Network;

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

fn gadget(name: &str, size: u32) -> Gadget {
    Gadget {
        api_version: "dctl/v1".into(),
        kind: "Network".into(),
        metadata: ObjectMeta::named("demo", name),
        spec: GadgetSpec { size },
    }
}

/// What one reconcile saw in the cache: the key, and the size if the object exists.
type Seen = (String, Option<u32>);

struct Ctx {
    cache: Reader<Gadget>,
    seen: mpsc::UnboundedSender<Seen>,
}

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct Never;

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Never> {
    let size = ctx.cache.get(&key).map(|gadget| gadget.spec.size);
    let _ = ctx.seen.send((key.name, size));
    Ok(Action::await_change())
}

/// Everything the reconciles have seen so far, in arrival order.
struct Observations {
    incoming: mpsc::UnboundedReceiver<Seen>,
    seen: Vec<Seen>,
}

impl Observations {
    /// Waits (on real time: etcd is real) until some reconcile has seen `expected`; runs
    /// of distinct keys finish in any order, so earlier observations count too.
    async fn wait_for(&mut self, name: &str, size: Option<u32>) {
        let expected = (name.to_string(), size);
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while !self.seen.contains(&expected) {
                let observation = self
                    .incoming
                    .recv()
                    .await
                    .expect("the controller is running");
                self.seen.push(observation);
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no reconcile saw {expected:?} within 20 s; saw {:?}",
            self.seen
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_listed_changed_and_deleted_objects_from_etcd() {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let store = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    store.create(&gadget("a", 1)).await.unwrap();
    store.create(&gadget("b", 2)).await.unwrap();

    let controller = Controller::<Gadget>::for_store(
        "it-gadgets",
        store.clone(),
        Config::default().resync_period(None),
    );
    let (seen_tx, incoming) = mpsc::unbounded_channel();
    let mut seen = Observations {
        incoming,
        seen: Vec::new(),
    };
    let ctx = Arc::new(Ctx {
        cache: controller.reader(),
        seen: seen_tx,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(
        controller
            .with_shutdown(async {
                let _ = stopped.await;
            })
            .run(reconcile, backoff_on_error, ctx),
    );

    // The first list: both objects, read from a cache that already holds them.
    seen.wait_for("a", Some(1)).await;
    seen.wait_for("b", Some(2)).await;

    let mut a: Gadget = store.get("demo", "a").await.unwrap();
    a.spec.size = 5;
    store.update(&a).await.unwrap();
    seen.wait_for("a", Some(5)).await;

    store.delete::<Gadget>("demo", "b").await.unwrap();
    seen.wait_for("b", None).await;

    store.create(&gadget("c", 3)).await.unwrap();
    seen.wait_for("c", Some(3)).await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the controller stops on its signal")
        .unwrap();

    let metrics = metrics::global().controller("it-gadgets");
    assert!(
        metrics.reconciles.get() >= 5,
        "{}",
        metrics.reconciles.get()
    );
    assert_eq!(metrics.reconcile_errors.get(), 0);
    let text = metrics::encode();
    assert!(text.contains("dctl_controller_reconcile_total{controller=\"it-gadgets\"}"));
}
