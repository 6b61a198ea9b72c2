//! The CLI against a real etcd: apply, diff, get (and -w), describe, delete, errors.

use std::path::PathBuf;
use std::time::Duration;

use dctl_apis::{ObjectMeta, Service};
use dctl_e2e::TestEnv;

fn demo_manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

const WEB: &str = "\
apiVersion: dctl/v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 3
  template:
    image: shop/web:1
    ports: [{name: http, containerPort: 8080}]
";

#[tokio::test]
async fn the_demo_applies_and_a_second_apply_writes_nothing() {
    let env = TestEnv::start().await;
    let demo = demo_manifests();
    let first = env
        .dctl(&["apply", "-f", demo.to_str().unwrap()])
        .await
        .success();
    assert_eq!(
        first.stdout,
        "service/api created\nnetwork/backend created\nservice/web created\n"
    );
    let revision = env.revision().await;

    let second = env
        .dctl(&["apply", "-f", demo.to_str().unwrap()])
        .await
        .success();
    assert_eq!(
        second.stdout,
        "service/api unchanged\nnetwork/backend unchanged\nservice/web unchanged\n"
    );
    assert_eq!(
        env.revision().await,
        revision,
        "an unchanged apply must not write"
    );

    let listed = env
        .dctl(&["get", "svc", "-n", "demo", "-o", "name"])
        .await
        .success();
    assert_eq!(listed.stdout, "service/api\nservice/web\n");
}

#[tokio::test]
async fn a_changed_manifest_is_configured_and_bumps_the_generation() {
    let env = TestEnv::start().await;
    let file = env.write("web.yaml", WEB);
    env.dctl(&["apply", "-f", file.to_str().unwrap()])
        .await
        .success();
    env.write("web.yaml", &WEB.replace("replicas: 3", "replicas: 5"));
    let out = env
        .dctl(&["apply", "-f", file.to_str().unwrap()])
        .await
        .success();
    assert_eq!(out.stdout, "service/web configured\n");
    let web: Service = env.store().await.get("shop", "web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(5));
    assert_eq!(web.metadata.generation, 2);
}

#[tokio::test]
async fn one_invalid_document_applies_nothing_and_is_named() {
    let env = TestEnv::start().await;
    let bad = format!(
        "{WEB}---\n{}---\n{}",
        WEB.replace("name: web", "name: api"),
        WEB.replace("name: web", "name: cart")
            .replace("containerPort: 8080", "containerPort: 70000")
    );
    let file = env.write("three.yaml", &bad);
    let before = env.revision().await;
    let out = env.dctl(&["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("three.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("document 3"), "{}", out.stderr);
    assert!(
        out.stderr.contains("spec.template.ports[0].containerPort"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    assert_eq!(env.revision().await, before, "nothing may be written");
    let list = env.store().await.list::<Service>(None).await.unwrap();
    assert!(list.items.is_empty());
}

#[tokio::test]
async fn an_unknown_field_is_reported_with_its_line() {
    let env = TestEnv::start().await;
    let file = env.write("typo.yaml", &WEB.replace("    image:", "    imagee:"));
    let out = env.dctl(&["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(out.stderr.contains("typo.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("imagee"), "{}", out.stderr);
    assert!(out.stderr.contains("document 1 (line 7)"), "{}", out.stderr);
}

#[tokio::test]
async fn apply_reads_stdin_and_dry_run_writes_nothing() {
    let env = TestEnv::start().await;
    let before = env.revision().await;
    let dry = env
        .dctl_with_stdin(&["apply", "-f", "-", "--dry-run"], Some(WEB))
        .await
        .success();
    assert_eq!(dry.stdout, "service/web created (dry run)\n");
    assert_eq!(env.revision().await, before);
    let real = env
        .dctl_with_stdin(&["apply", "-f", "-"], Some(WEB))
        .await
        .success();
    assert_eq!(real.stdout, "service/web created\n");
}

#[tokio::test]
async fn diff_exits_0_when_equal_and_1_with_the_change() {
    let env = TestEnv::start().await;
    let file = env.write("web.yaml", WEB);
    let path = file.to_str().unwrap();
    let missing = env.dctl(&["diff", "-f", path]).await;
    assert_eq!(
        missing.code, 1,
        "a missing object is a difference: {missing:#?}"
    );
    env.dctl(&["apply", "-f", path]).await.success();
    let same = env.dctl(&["diff", "-f", path]).await;
    assert_eq!((same.code, same.stdout.as_str()), (0, ""), "{same:#?}");

    env.write("web.yaml", &WEB.replace("replicas: 3", "replicas: 4"));
    let changed = env.dctl(&["diff", "-f", path]).await;
    assert_eq!(changed.code, 1, "{changed:#?}");
    assert!(
        changed.stdout.contains("--- live/shop/service/web"),
        "{}",
        changed.stdout
    );
    assert!(
        changed.stdout.contains("-  replicas: 3"),
        "{}",
        changed.stdout
    );
    assert!(
        changed.stdout.contains("+  replicas: 4"),
        "{}",
        changed.stdout
    );
}

#[tokio::test]
async fn get_prints_tables_json_and_yaml_and_filters_by_label() {
    let env = TestEnv::start().await;
    let both = format!(
        "{WEB}---\n{}",
        WEB.replace("name: web", "name: api")
            .replace("app: web", "app: api")
    );
    let file = env.write("both.yaml", &both);
    env.dctl(&["apply", "-f", file.to_str().unwrap()])
        .await
        .success();

    let table = env.dctl(&["get", "services", "-n", "shop"]).await.success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[0].starts_with("NAME "), "{}", lines[0]);
    assert!(lines[0].contains("READY"), "{}", lines[0]);
    assert!(lines[1].starts_with("api "), "{}", lines[1]);
    assert!(lines[1].contains("0/3"), "{}", lines[1]);

    let all = env.dctl(&["get", "svc", "-A"]).await.success();
    assert!(all.stdout.starts_with("NAMESPACE "), "{}", all.stdout);

    let selected = env
        .dctl(&["get", "svc", "-n", "shop", "-l", "app=web", "-o", "name"])
        .await
        .success();
    assert_eq!(selected.stdout, "service/web\n");

    let json = env
        .dctl(&["get", "svc/web", "-n", "shop", "-o", "json"])
        .await
        .success();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["spec"]["replicas"], 3);
    assert_eq!(value["metadata"]["generation"], 1);

    let yaml = env
        .dctl(&["get", "service", "web", "-n", "shop", "-o", "yaml"])
        .await
        .success();
    assert!(yaml.stdout.contains("replicas: 3"), "{}", yaml.stdout);

    let missing = env.dctl(&["get", "svc", "nope", "-n", "shop"]).await;
    assert_eq!(missing.code, 4);
    assert!(
        missing.stderr.contains("service \"nope\" not found"),
        "{}",
        missing.stderr
    );

    let empty = env.dctl(&["get", "svc", "-n", "elsewhere"]).await.success();
    assert_eq!(empty.stdout, "");
    assert!(empty
        .stderr
        .contains("No resources found in elsewhere namespace."));
}

#[tokio::test]
async fn get_watch_prints_a_change_made_by_another_client() {
    let mut env = TestEnv::start().await;
    let mut watch = env.spawn_dctl(&["get", "svc", "-n", "shop", "-w"]);
    // Give the watch time to list before the change lands; the change must show either way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = env.store().await;
    let mut web = Service::new(ObjectMeta::named("shop", "web"), Default::default());
    web.spec.template.image = "shop/web:1".into();
    store.create(&web).await.unwrap();
    let lines = watch.read_until("web", Duration::from_secs(10)).await;
    assert!(lines.last().unwrap().starts_with("web "), "{lines:#?}");

    // The watch rides out an etcd restart and a compaction, and still prints what changed.
    env.etcd
        .restart()
        .await
        .expect("etcd restarts on the same port");
    let store = env.store().await;
    let mut api = web.clone();
    api.metadata.name = "api".into();
    store.create(&api).await.unwrap();
    let revision = env.revision().await;
    store.client().compact(revision, None).await.unwrap();
    let mut cart = web.clone();
    cart.metadata.name = "cart".into();
    store.create(&cart).await.unwrap();
    watch.read_until("cart", Duration::from_secs(20)).await;
    watch.stop().await;
}

#[tokio::test]
async fn describe_shows_metadata_spec_and_events() {
    let env = TestEnv::start().await;
    let file = env.write("web.yaml", WEB);
    env.dctl(&["apply", "-f", file.to_str().unwrap()])
        .await
        .success();
    let out = env
        .dctl(&["describe", "svc", "web", "-n", "shop"])
        .await
        .success();
    assert!(out.stdout.contains("Name:         web"), "{}", out.stdout);
    assert!(out.stdout.contains("Namespace:    shop"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Labels:       app=web"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("replicas: 3"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Events:       <none>"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn delete_by_name_and_by_file() {
    let env = TestEnv::start().await;
    let both = format!("{WEB}---\n{}", WEB.replace("name: web", "name: api"));
    let file = env.write("both.yaml", &both);
    env.dctl(&["apply", "-f", file.to_str().unwrap()])
        .await
        .success();

    let one = env
        .dctl(&["delete", "svc", "web", "-n", "shop"])
        .await
        .success();
    assert_eq!(one.stdout, "service \"web\" deleted\n");
    let again = env.dctl(&["delete", "svc", "web", "-n", "shop"]).await;
    assert_eq!(again.code, 4, "{again:#?}");
    env.dctl(&["delete", "svc", "web", "-n", "shop", "--ignore-not-found"])
        .await
        .success();

    let rest = env
        .dctl(&["delete", "-f", file.to_str().unwrap(), "--ignore-not-found"])
        .await
        .success();
    assert_eq!(rest.stdout, "service \"api\" deleted\n");
    assert!(env
        .store()
        .await
        .list::<Service>(None)
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn a_dead_etcd_is_one_clear_line_and_exit_code_6() {
    let env = TestEnv::start().await;
    let out = env
        .dctl(&["--etcd", "http://127.0.0.1:1", "get", "svc"])
        .await;
    assert_eq!(out.code, 6, "{out:#?}");
    assert!(
        out.stderr
            .starts_with("error: cannot reach etcd at http://127.0.0.1:1"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn unknown_kinds_are_usage_errors() {
    let env = TestEnv::start().await;
    let out = env.dctl(&["get", "pods"]).await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("\"pods\""), "{}", out.stderr);
    assert!(out.stderr.contains("services (svc)"), "{}", out.stderr);
}
