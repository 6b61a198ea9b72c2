//! The gitsync controller against a real etcd and a local git repository made by the test
//! with the `git` program.

use std::future::Future;
use std::time::Duration;

use dctl_apis::gitsync::{
    GitSyncSpec, GitSyncStatus, ANNOTATION_RECONCILE_REQUESTED_AT, FINALIZER_PRUNE, LABEL_NAME,
};
use dctl_apis::meta::find_condition;
use dctl_apis::{ConditionStatus, GitSync, Network, ObjectMeta, Resource, Service};
use dctl_controllers::gitsync;
use dctl_e2e::git_repo::GitRepo;
use dctl_runtime::controller;
use dctl_runtime::store::Store;
use dctl_runtime::LocalEtcd;
use tokio::sync::oneshot;

const NS: &str = "demo";

fn network(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: dctl/v1\nkind: Network\nmetadata: {{name: {name}, namespace: {NS}}}\n{extra}"
    )
}

fn service(name: &str, image: &str) -> String {
    format!(
        "apiVersion: dctl/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec: {{replicas: 0, template: {{image: {image}}}}}\n"
    )
}

/// etcd, a store and the gitsync controller; stops the controller when dropped.
struct Harness {
    store: Store,
    _etcd: LocalEtcd,
    _cache: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    async fn start() -> Harness {
        let etcd = LocalEtcd::start_temporary().await.expect("etcd starts");
        let store = Store::connect(&[etcd.endpoint().to_string()])
            .await
            .expect("etcd answers");
        let cache = tempfile::tempdir().unwrap();
        let config = gitsync::Config::new(cache.path()).controller(
            controller::Config::default()
                .backoff(Duration::from_millis(50), Duration::from_millis(500)),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gitsync::run(store.clone(), config, async move {
            let _ = stopped.await;
        }));
        Harness {
            store,
            _etcd: etcd,
            _cache: cache,
            _stop: stop,
        }
    }

    async fn create_sync(&self, name: &str, repo: &GitRepo, edit: impl FnOnce(&mut GitSyncSpec)) {
        let mut spec = GitSyncSpec {
            repo: repo.url(),
            interval: Some(dctl_apis::Duration::from_secs(1)),
            ..GitSyncSpec::default()
        };
        edit(&mut spec);
        let mut sync = GitSync::new(ObjectMeta::named(NS, name), spec);
        sync.apply_defaults();
        assert!(sync.validate().is_empty(), "{:?}", sync.validate());
        self.store.create(&sync).await.expect("gitsync created");
    }

    async fn edit_sync(&self, name: &str, edit: impl Fn(&mut GitSync)) {
        let mut sync: GitSync = self.store.get(NS, name).await.unwrap();
        edit(&mut sync);
        self.store.update(&sync).await.expect("gitsync updated");
    }

    async fn status(&self, name: &str) -> GitSyncStatus {
        let sync: GitSync = self.store.get(NS, name).await.unwrap();
        sync.status.unwrap_or_default()
    }

    async fn applied(&self, name: &str) -> Option<String> {
        self.status(name).await.last_applied_revision
    }

    /// Waits until the GitSync `name` has applied commit `sha`; on timeout, fails showing
    /// its status.
    async fn wait_applied(&self, name: &str, sha: &str, seconds: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while self.applied(name).await != at(sha) {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "gitsync {name} did not apply {sha} within {seconds}s: {:#?}",
                    self.status(name).await
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn networks(&self) -> Vec<String> {
        let list = self.store.list::<Network>(Some(NS)).await.unwrap();
        list.items.into_iter().map(|n| n.metadata.name).collect()
    }

    async fn revision(&self) -> i64 {
        let mut client = self.store.client();
        client
            .get("/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    }
}

/// Polls `check` until it answers, or fails the test after `seconds`.
async fn within<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn at(sha: &str) -> Option<String> {
    Some(format!("main@{sha}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_applied_within_the_interval_and_update_only_what_changed() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("net.yaml", &network("backend", ""));
    repo.write("apps/web.yaml", &service("web", "web:1"));
    repo.write("apps/api.yaml", &service("api", "api:1"));
    let first = repo.commit("first");
    h.create_sync("apps", &repo, |spec| {
        spec.interval = Some(dctl_apis::Duration::from_secs(2))
    })
    .await;
    h.wait_applied("apps", &first, 5).await;
    let web: Service = h.store.get(NS, "web").await.unwrap();
    let api: Service = h.store.get(NS, "api").await.unwrap();
    assert_eq!(web.metadata.labels[LABEL_NAME], "apps");
    let status = h.status("apps").await;
    assert_eq!(status.inventory.len(), 3, "{:?}", status.inventory);
    let ready = find_condition(&status.conditions, gitsync::CONDITION_READY).unwrap();
    assert_eq!(ready.status, ConditionStatus::True);

    repo.write("apps/web.yaml", &service("web", "web:2"));
    let second = repo.commit("web 2");
    // Fetched on the interval: at most 2 s plus 10 % jitter after the last fetch, plus the
    // sync itself (a generous second on a loaded machine).
    h.wait_applied("apps", &second, 4).await;
    let web2: Service = h.store.get(NS, "web").await.unwrap();
    let api2: Service = h.store.get(NS, "api").await.unwrap();
    assert_eq!(web2.spec.template.image, "web:2");
    assert_ne!(
        web2.metadata.resource_version,
        web.metadata.resource_version
    );
    assert_eq!(
        api2.metadata.resource_version,
        api.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_more_objects_than_go_at_once_applies_each_of_them_once() {
    // More Services than are applied at once, with a Network before and after them.
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("a-net.yaml", &network("front", ""));
    for i in 0..40 {
        repo.write(
            &format!("b-apps/svc-{i:02}.yaml"),
            &service(&format!("svc-{i:02}"), "web:1"),
        );
    }
    repo.write("c-net.yaml", &network("back", ""));
    let commit = repo.commit("many");
    h.create_sync("apps", &repo, |_| {}).await;
    h.wait_applied("apps", &commit, 10).await;

    let services = h.store.list::<Service>(Some(NS)).await.unwrap().items;
    assert_eq!(services.len(), 40);
    for service in &services {
        assert_eq!(service.metadata.labels[LABEL_NAME], "apps");
        // Written once: created, never updated again by the same sync.
        assert_eq!(service.metadata.generation, 1, "{}", service.metadata.name);
    }
    let mut networks = h.networks().await;
    networks.sort();
    assert_eq!(networks, ["back", "front"]);
    let status = h.status("apps").await;
    assert_eq!(status.inventory.len(), 42, "{:?}", status.inventory);
    assert!(status.errors.is_empty(), "{:?}", status.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_file_is_pruned_and_objects_outside_the_inventory_are_not() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("a.yaml", &network("a", ""));
    repo.write("b.yaml", &network("b", ""));
    let first = repo.commit("a and b");
    // Made by hand, never in the repository; and one adopted from the repository.
    let mut by_hand = Network::new(ObjectMeta::named(NS, "by-hand"), Default::default());
    by_hand.apply_defaults();
    h.store.create(&by_hand).await.unwrap();
    h.create_sync("nets", &repo, |_| {}).await;
    h.wait_applied("nets", &first, 5).await;
    assert_eq!(h.networks().await, ["a", "b", "by-hand"]);

    repo.remove("b.yaml");
    let second = repo.commit("b goes");
    within("b pruned", 5, || async {
        h.applied("nets").await == at(&second) && h.networks().await == ["a", "by-hand"]
    })
    .await;
    let inventory = h.status("nets").await.inventory;
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].name, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gitsync_prunes_its_objects_unless_it_does_not_prune() {
    let h = Harness::start().await;
    let (pruning, keeping) = (GitRepo::new(), GitRepo::new());
    pruning.write("a.yaml", &network("a", ""));
    keeping.write("b.yaml", &network("b", ""));
    let (first, second) = (pruning.commit("a"), keeping.commit("b"));
    // Made by hand, never in a repository: no deletion may touch it.
    let mut by_hand = Network::new(ObjectMeta::named(NS, "by-hand"), Default::default());
    by_hand.apply_defaults();
    h.store.create(&by_hand).await.unwrap();
    h.create_sync("pruning", &pruning, |_| {}).await;
    h.create_sync("keeping", &keeping, |spec| spec.prune = Some(false))
        .await;
    h.wait_applied("pruning", &first, 5).await;
    h.wait_applied("keeping", &second, 5).await;
    let pruning_sync: GitSync = h.store.get(NS, "pruning").await.unwrap();
    let keeping_sync: GitSync = h.store.get(NS, "keeping").await.unwrap();
    assert_eq!(pruning_sync.metadata.finalizers, [FINALIZER_PRUNE]);
    assert!(keeping_sync.metadata.finalizers.is_empty());

    h.store.delete::<GitSync>(NS, "pruning").await.unwrap();
    h.store.delete::<GitSync>(NS, "keeping").await.unwrap();
    within("the pruning GitSync and its network gone", 5, || async {
        let gone = h
            .store
            .try_get::<GitSync>(NS, "pruning")
            .await
            .unwrap()
            .is_none();
        gone && h.networks().await == ["b", "by-hand"]
    })
    .await;
    assert!(h
        .store
        .try_get::<GitSync>(NS, "keeping")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_commit_applies_nothing_and_reports_file_and_field() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("a.yaml", &network("a", ""));
    let good = repo.commit("good");
    h.create_sync("nets", &repo, |_| {}).await;
    h.wait_applied("nets", &good, 5).await;
    let a: Network = h.store.get(NS, "a").await.unwrap();

    // One valid change and one invalid document: none of it may be applied.
    repo.write("a.yaml", &network("a", "spec: {internal: true}\n"));
    repo.write(
        "sub/bad.yaml",
        &network("bad", "spec: {subnet: 10.213.0.0/33}\n"),
    );
    let bad = repo.commit("bad");
    within("the bad commit reported", 5, || async {
        h.status("nets").await.last_attempted_revision == at(&bad)
    })
    .await;
    let status = h.status("nets").await;
    assert_eq!(status.last_applied_revision, at(&good));
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    assert_eq!(status.errors[0].file, "sub/bad.yaml");
    assert_eq!(status.errors[0].document, 1);
    assert_eq!(status.errors[0].field.as_deref(), Some("spec.subnet"));
    let ready = find_condition(&status.conditions, gitsync::CONDITION_READY).unwrap();
    let stalled = find_condition(&status.conditions, gitsync::CONDITION_STALLED).unwrap();
    assert_eq!(ready.status, ConditionStatus::False);
    assert_eq!(stalled.status, ConditionStatus::True);
    assert_eq!(stalled.reason, gitsync::REASON_VALIDATION_FAILED);
    assert!(ready.message.contains("sub/bad.yaml"), "{}", ready.message);
    // Nothing written: the running revision's object is as it was.
    let a_now: Network = h.store.get(NS, "a").await.unwrap();
    assert_eq!(a_now.metadata.resource_version, a.metadata.resource_version);
    assert_eq!(h.networks().await, ["a"]);

    // The running revision is still kept as it was: a hand edit goes (selfHeal).
    let mut edited = a_now.clone();
    edited.spec.driver = "macvlan".into();
    h.store.update(&edited).await.unwrap();
    within("the running revision's object put back", 3, || async {
        let a: Network = h.store.get(NS, "a").await.unwrap();
        a.spec.driver == "bridge" && !a.spec.internal
    })
    .await;

    // Fixed: applied, and the errors go.
    repo.write(
        "sub/bad.yaml",
        &network("bad", "spec: {subnet: 10.213.0.0/24}\n"),
    );
    let fixed = repo.commit("fixed");
    h.wait_applied("nets", &fixed, 5).await;
    assert!(h.status("nets").await.errors.is_empty());
    assert_eq!(h.networks().await, ["a", "bad"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_revert_rolls_back() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("web.yaml", &service("web", "web:1"));
    let first = repo.commit("web 1");
    h.create_sync("apps", &repo, |_| {}).await;
    h.wait_applied("apps", &first, 5).await;
    repo.write("web.yaml", &service("web", "web:2"));
    repo.write("extra.yaml", &network("extra", ""));
    let second = repo.commit("web 2");
    h.wait_applied("apps", &second, 5).await;
    assert_eq!(h.networks().await, ["extra"]);
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let reverted = repo.git(&["rev-parse", "HEAD"]);
    h.wait_applied("apps", &reverted, 5).await;
    let web: Service = h.store.get(NS, "web").await.unwrap();
    assert_eq!(web.spec.template.image, "web:1");
    assert!(h.networks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_heal_puts_back_hand_edits_and_deletions_within_seconds() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("web.yaml", &service("web", "web:1"));
    let first = repo.commit("web");
    // An hour between fetches: only selfHeal can act within the test.
    h.create_sync("apps", &repo, |spec| {
        spec.interval = Some(dctl_apis::Duration::from_secs(3600))
    })
    .await;
    h.wait_applied("apps", &first, 5).await;

    let mut web: Service = h.store.get(NS, "web").await.unwrap();
    web.spec.template.image = "edited:by-hand".into();
    h.store.update(&web).await.unwrap();
    within("the edit undone", 3, || async {
        let web: Service = h.store.get(NS, "web").await.unwrap();
        web.spec.template.image == "web:1"
    })
    .await;

    h.store.delete::<Service>(NS, "web").await.unwrap();
    within("the deleted service back", 3, || async {
        h.store
            .try_get::<Service>(NS, "web")
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_self_heal_hand_edits_stay_until_a_commit_changes_the_object() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("web.yaml", &service("web", "web:1"));
    repo.write("api.yaml", &service("api", "api:1"));
    let first = repo.commit("web and api");
    h.create_sync("apps", &repo, |spec| spec.self_heal = Some(false))
        .await;
    h.wait_applied("apps", &first, 5).await;

    for name in ["web", "api"] {
        let mut service: Service = h.store.get(NS, name).await.unwrap();
        service.spec.template.image = "edited:by-hand".into();
        h.store.update(&service).await.unwrap();
    }
    // Several intervals go by: the edits stay.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for name in ["web", "api"] {
        let service: Service = h.store.get(NS, name).await.unwrap();
        assert_eq!(service.spec.template.image, "edited:by-hand", "{name}");
    }
    // A commit that changes web puts web right, and leaves api's edit alone.
    repo.write("web.yaml", &service("web", "web:2"));
    let second = repo.commit("web 2");
    h.wait_applied("apps", &second, 5).await;
    let web: Service = h.store.get(NS, "web").await.unwrap();
    let api: Service = h.store.get(NS, "api").await.unwrap();
    assert_eq!(web.spec.template.image, "web:2");
    assert_eq!(api.spec.template.image, "edited:by-hand");

    // A bad commit, reverted: back at the applied revision, its errors go.
    repo.write("bad.yaml", &network("bad", "spec: {subnet: nope}\n"));
    let bad = repo.commit("bad");
    within("the bad commit reported", 5, || async {
        let status = h.status("apps").await;
        status.last_attempted_revision == at(&bad) && !status.errors.is_empty()
    })
    .await;
    repo.git(&["reset", "--quiet", "--hard", &second]);
    within("the errors cleared", 5, || async {
        let status = h.status("apps").await;
        status.last_attempted_revision == at(&second) && status.errors.is_empty()
    })
    .await;
    let status = h.status("apps").await;
    let ready = find_condition(&status.conditions, gitsync::CONDITION_READY).unwrap();
    assert_eq!(ready.status, ConditionStatus::True);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_syncing_and_resume_catches_up() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("a.yaml", &network("a", ""));
    let first = repo.commit("a");
    h.create_sync("nets", &repo, |_| {}).await;
    h.wait_applied("nets", &first, 5).await;
    h.edit_sync("nets", |sync| sync.spec.suspend = true).await;
    repo.write("b.yaml", &network("b", ""));
    repo.commit("b");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(h.networks().await, ["a"]);
    assert_eq!(h.applied("nets").await, at(&first));
    h.edit_sync("nets", |sync| sync.spec.suspend = false).await;
    within("b applied after resume", 5, || async {
        h.networks().await == ["a", "b"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_path_is_refused_unless_allow_empty() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("apps/a.yaml", &network("a", ""));
    repo.write("empty/README.md", "no manifests here\n");
    let first = repo.commit("a");
    h.create_sync("nets", &repo, |spec| spec.path = "apps".into())
        .await;
    h.wait_applied("nets", &first, 5).await;

    // A wrong path must not prune everything.
    h.edit_sync("nets", |sync| sync.spec.path = "empty".into())
        .await;
    within("refused", 5, || async {
        let status = h.status("nets").await;
        find_condition(&status.conditions, gitsync::CONDITION_STALLED).is_some_and(|c| {
            c.status == ConditionStatus::True && c.reason == gitsync::REASON_EMPTY_PATH
        })
    })
    .await;
    assert_eq!(h.networks().await, ["a"]);
    assert_eq!(h.status("nets").await.errors[0].file, "empty");

    h.edit_sync("nets", |sync| sync.spec.allow_empty = true)
        .await;
    // The objects go first and the status that records it after: wait for both.
    within("everything pruned and recorded", 5, || async {
        h.networks().await.is_empty() && h.status("nets").await.inventory.is_empty()
    })
    .await;
    let status = h.status("nets").await;
    let ready = find_condition(&status.conditions, gitsync::CONDITION_READY).unwrap();
    assert_eq!(ready.status, ConditionStatus::True);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_annotation_syncs_at_once() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    repo.write("a.yaml", &network("a", ""));
    let first = repo.commit("a");
    h.create_sync("nets", &repo, |spec| {
        spec.interval = Some(dctl_apis::Duration::from_secs(3600))
    })
    .await;
    h.wait_applied("nets", &first, 5).await;
    repo.write("b.yaml", &network("b", ""));
    let second = repo.commit("b");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.applied("nets").await,
        at(&first),
        "no fetch before an hour"
    );
    h.edit_sync("nets", |sync| {
        sync.metadata.annotations.insert(
            ANNOTATION_RECONCILE_REQUESTED_AT.into(),
            "2026-01-01T00:00:00Z".into(),
        );
    })
    .await;
    h.wait_applied("nets", &second, 3).await;
    assert_eq!(
        h.status("nets").await.last_handled_reconcile_at.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_changes_nothing_writes_nothing() {
    let h = Harness::start().await;
    let repo = GitRepo::new();
    for i in 0..20 {
        repo.write(&format!("n{i:02}.yaml"), &network(&format!("n{i:02}"), ""));
    }
    let first = repo.commit("twenty");
    h.create_sync("nets", &repo, |_| {}).await;
    h.wait_applied("nets", &first, 5).await;
    // Let the Synced event and any follow-up reconcile settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = h.revision().await;
    let synced_at = h.status("nets").await.last_sync_time;
    // Three fetches at a 1 s interval, each re-applying everything (selfHeal).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(h.revision().await, before, "a no-change sync wrote to etcd");
    assert_eq!(h.status("nets").await.last_sync_time, synced_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_another_gitsync_are_left_alone() {
    let h = Harness::start().await;
    let one = GitRepo::new();
    one.write("shared.yaml", &network("shared", ""));
    let first = one.commit("shared");
    h.create_sync("one", &one, |_| {}).await;
    h.wait_applied("one", &first, 5).await;

    let two = GitRepo::new();
    two.write(
        "shared.yaml",
        &network("shared", "spec: {internal: true}\n"),
    );
    two.write("own.yaml", &network("own", ""));
    two.commit("shared too");
    h.create_sync("two", &two, |_| {}).await;
    within("two reports the conflict", 5, || async {
        let status = h.status("two").await;
        find_condition(&status.conditions, gitsync::CONDITION_STALLED)
            .is_some_and(|c| c.reason == gitsync::REASON_OWNERSHIP_CONFLICT)
    })
    .await;
    let status = h.status("two").await;
    assert_eq!(status.errors[0].file, "shared.yaml");
    assert!(
        status.errors[0].message.contains("gitsync demo/one"),
        "{}",
        status.errors[0].message
    );
    let shared: Network = h.store.get(NS, "shared").await.unwrap();
    assert!(!shared.spec.internal);
    assert_eq!(shared.metadata.labels[LABEL_NAME], "one");
    assert_eq!(h.networks().await, ["own", "shared"]);
}
