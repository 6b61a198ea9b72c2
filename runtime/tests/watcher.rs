//! The watcher and reflector against a real etcd, through a proxy the test can cut.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dctl_apis::{ObjectMeta, Service};
use dctl_runtime::reflector::{self, Reader};
use dctl_runtime::store::Store;
use dctl_runtime::watcher::{self, watcher, Event};
use dctl_runtime::LocalEtcd;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A TCP proxy in front of etcd that can cut every connection and refuse new ones, the
/// way a network partition looks to the watcher.
struct Proxy {
    endpoint: String,
    cut: Arc<Mutex<bool>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(Mutex::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut.lock().unwrap() {
                        continue; // dropped: the client sees its connection closed
                    }
                    let upstream = upstream.clone();
                    let connection = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(connection);
                }
            }
        });
        Proxy {
            endpoint,
            cut,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        *self.cut.lock().unwrap() = true;
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        *self.cut.lock().unwrap() = false;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What the watcher reported, in order: `Init`, `InitDone`, and every error.
#[derive(Debug, PartialEq)]
enum Seen {
    Init,
    InitDone,
    Error,
    Change,
}

/// Runs watcher → reflector over `store` in the background.
fn reflect(
    store: Store,
) -> (
    Reader<Service>,
    mpsc::UnboundedReceiver<Seen>,
    JoinHandle<()>,
) {
    let (reader, writer) = reflector::store::<Service>();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let events = reflector::reflector(
        writer,
        watcher::<Service>(store, watcher::Config::default()),
    );
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let seen = match event {
                Ok(Event::Init) => Seen::Init,
                Ok(Event::InitDone) => Seen::InitDone,
                Ok(_) => Seen::Change,
                Err(err) => {
                    eprintln!("watcher: {err}");
                    Seen::Error
                }
            };
            let _ = seen_tx.send(seen);
        }
    });
    (reader, seen, task)
}

fn service(namespace: &str, name: &str) -> Service {
    Service::new(ObjectMeta::named(namespace, name), Default::default())
}

/// The cache and the store, each as key → resourceVersion.
fn versions<'a>(objects: impl IntoIterator<Item = &'a Service>) -> BTreeMap<String, i64> {
    objects
        .into_iter()
        .map(|s| {
            let key = format!("{}/{}", s.metadata.namespace(), s.metadata.name);
            (key, s.metadata.resource_version.unwrap())
        })
        .collect()
}

/// Waits until the cache holds exactly what the store lists.
async fn converge(reader: &Reader<Service>, store: &Store) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = versions(&store.list::<Service>(None).await.unwrap().items);
        let cached = versions(reader.state().iter().map(|s| s.as_ref()));
        if reader.is_ready() && cached == listed {
            return cached;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never matched the store:\n cached {cached:?}\n listed {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the watcher to report `what`, returning everything seen until then.
async fn wait_for(seen: &mut mpsc::UnboundedReceiver<Seen>, what: Seen) -> Vec<Seen> {
    let mut all = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what:?} within 30 s; saw {all:?}"))
            .unwrap();
        let done = next == what;
        all.push(next);
        if done {
            return all;
        }
    }
}

/// Changes made while the watcher is cut off: a delete, an update, a create, and an object
/// that comes and goes entirely unseen.
async fn change_behind_its_back(store: &Store) {
    store.delete::<Service>("demo", "a").await.unwrap();
    let mut b = store.get::<Service>("demo", "b").await.unwrap();
    b.metadata.labels.insert("changed".into(), "yes".into());
    store.update(&b).await.unwrap();
    store.create(&service("demo", "d")).await.unwrap();
    store.create(&service("other", "e")).await.unwrap();
    store.delete::<Service>("other", "e").await.unwrap();
}

async fn next<S, K>(events: &mut S) -> Event<K>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("a watcher never ends")
        .expect("no error")
}

async fn setup() -> (LocalEtcd, Proxy, Store, Store) {
    let etcd = LocalEtcd::start_temporary().await.unwrap();
    let proxy = Proxy::start(etcd.endpoint()).await;
    let direct = Store::connect(&[etcd.endpoint().to_string()])
        .await
        .unwrap();
    let proxied = Store::connect(std::slice::from_ref(&proxy.endpoint))
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        direct.create(&service("demo", name)).await.unwrap();
    }
    (etcd, proxy, direct, proxied)
}

#[tokio::test]
async fn the_watcher_relists_after_a_compaction_with_no_phantoms_and_none_lost() {
    let (etcd, proxy, direct, proxied) = setup().await;
    let (reader, mut seen, _task) = reflect(proxied);
    wait_for(&mut seen, Seen::InitDone).await;
    assert_eq!(converge(&reader, &direct).await.len(), 3);

    proxy.cut();
    wait_for(&mut seen, Seen::Error).await;
    change_behind_its_back(&direct).await;
    // Compact away the history the watcher would resume from.
    let now = direct.list::<Service>(None).await.unwrap().revision;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .compact(
            now,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    proxy.restore();

    let after = wait_for(&mut seen, Seen::InitDone).await;
    assert!(after.contains(&Seen::Init), "a relist: {after:?}");
    let cached = converge(&reader, &direct).await;
    assert_eq!(
        cached.keys().collect::<Vec<_>>(),
        ["demo/b", "demo/c", "demo/d"],
        "a and e are gone, d is there"
    );
    assert!(dctl_runtime::metrics::encode().contains("kind=\"services\""));

    // And it watches again after the relist.
    direct.create(&service("demo", "f")).await.unwrap();
    assert_eq!(converge(&reader, &direct).await.len(), 4);
}

#[tokio::test]
async fn the_watcher_resumes_after_an_outage_without_relisting() {
    let (_etcd, proxy, direct, proxied) = setup().await;
    let (reader, mut seen, _task) = reflect(proxied);
    wait_for(&mut seen, Seen::InitDone).await;
    converge(&reader, &direct).await;

    proxy.cut();
    wait_for(&mut seen, Seen::Error).await;
    change_behind_its_back(&direct).await;
    proxy.restore();

    let cached = converge(&reader, &direct).await;
    assert_eq!(
        cached.keys().collect::<Vec<_>>(),
        ["demo/b", "demo/c", "demo/d"]
    );
    // Everything came from the watch history: no second list.
    while let Ok(next) = seen.try_recv() {
        assert_ne!(next, Seen::Init, "resumed without a relist");
    }
}

#[tokio::test]
async fn a_namespaced_watcher_sees_only_its_namespace() {
    let (_etcd, _proxy, direct, _) = setup().await;
    direct.create(&service("other", "x")).await.unwrap();
    let events = watcher::<Service>(
        direct.clone(),
        watcher::Config::default().namespace("other"),
    );
    let mut events = std::pin::pin!(events);
    assert_eq!(next(&mut events).await, Event::Init);
    let Event::InitApply(x) = next(&mut events).await else {
        panic!("expected the one object of namespace other");
    };
    assert_eq!(x.metadata.name, "x");
    assert_eq!(next(&mut events).await, Event::InitDone);
    direct.create(&service("demo", "ignored")).await.unwrap();
    let y = direct.create(&service("other", "y")).await.unwrap();
    assert_eq!(next(&mut events).await, Event::Apply(y));
}
