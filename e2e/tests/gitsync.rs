//! GitOps end to end: the `dctl` binary as controller-manager and agent on real Docker, a
//! GitSync pointing at a local repository, and the CLI showing what it applied.

use std::time::Duration;

use dctl_e2e::cluster::Cluster;
use dctl_e2e::git_repo::GitRepo;

const CONVERGE: Duration = Duration::from_secs(60);

fn service(replicas: u32) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: web, namespace: e2e}}
spec:
  replicas: {replicas}
  template:
    image: dctl-test/server:1
    stopGracePeriod: 2s
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitsync_runs_the_services_of_its_repository() {
    let mut cluster = Cluster::start("gitsync").await;
    cluster.start_agent("n1", &[]);
    let repo = GitRepo::new();
    repo.write("apps/web.yaml", &service(2));
    let first = repo.commit("web, two replicas");

    let sync = cluster.env.write(
        "gitsync.yaml",
        &format!(
            "apiVersion: dctl/v1
kind: GitSync
metadata: {{name: apps, namespace: e2e}}
spec:
  repo: {}
  path: apps
  interval: 2s
",
            repo.url()
        ),
    );
    cluster
        .env
        .dctl(&["apply", "-f", sync.to_str().unwrap()])
        .await
        .success();
    cluster.running(Some("web"), 2, CONVERGE).await;
    let shown = cluster
        .wait_for(
            "dctl get gitsyncs to show the revision",
            CONVERGE,
            || async {
                let out = cluster
                    .env
                    .dctl(&["get", "gitsyncs", "-n", "e2e"])
                    .await
                    .success();
                out.stdout.contains(&first[..7]).then_some(out.stdout)
            },
        )
        .await;
    let row = shown.lines().nth(1).expect("a row for apps");
    assert!(row.starts_with("apps "), "{shown}");
    assert!(row.contains("apps") && row.contains("True"), "{shown}");

    // A commit scales it down: the sync follows, and the table shows the new revision.
    repo.write("apps/web.yaml", &service(1));
    let second = repo.commit("web, one replica");
    cluster.running(Some("web"), 1, CONVERGE).await;
    cluster
        .wait_for("the second revision shown", CONVERGE, || async {
            let out = cluster
                .env
                .dctl(&["get", "gs", "apps", "-n", "e2e"])
                .await
                .success();
            out.stdout.contains(&second[..7]).then_some(())
        })
        .await;
    // A hand edit with dctl apply: warned about, and put back by selfHeal.
    let by_hand = cluster.env.write("web-by-hand.yaml", &service(3));
    let applied = cluster
        .env
        .dctl(&["apply", "-f", by_hand.to_str().unwrap()])
        .await
        .success();
    assert!(
        applied.stderr.contains(
            "warning: service/web is managed by gitsync/apps; the next sync will put it back"
        ),
        "{applied:#?}"
    );
    cluster
        .wait_for("selfHeal to put replicas back to 1", CONVERGE, || async {
            let out = cluster
                .env
                .dctl(&["get", "svc", "web", "-n", "e2e", "-o", "json"])
                .await
                .success();
            let web: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
            (web["spec"]["replicas"] == 1).then_some(())
        })
        .await;
    cluster.running(Some("web"), 1, CONVERGE).await;

    let reconciled = cluster
        .env
        .dctl(&["gitsync", "reconcile", "apps", "-n", "e2e"])
        .await
        .success();
    assert_eq!(reconciled.stdout.trim(), "gitsync/apps reconcile requested");
    let missing = cluster
        .env
        .dctl(&["gitsync", "suspend", "nope", "-n", "e2e"])
        .await;
    assert_eq!(missing.code, 4, "{missing:#?}");

    let described = cluster
        .env
        .dctl(&["describe", "gitsync", "apps", "-n", "e2e"])
        .await
        .success();
    assert!(
        described
            .stdout
            .contains("Inventory:    1 objects (1 services)"),
        "{}",
        described.stdout
    );
    assert!(
        described.stdout.contains("service/e2e/web"),
        "{}",
        described.stdout
    );
}
