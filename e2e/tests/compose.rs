//! A compose file applied to real Docker: three services on two networks, `.env` values,
//! a healthcheck and `depends_on: {condition: service_healthy}`.

use std::time::Duration;

use dctl_apis::meta::find_condition;
use dctl_apis::task::{TaskDesiredState, TaskState, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::{ConditionStatus, Task, Time};
use dctl_e2e::cluster::Cluster;

const CONVERGE: Duration = Duration::from_secs(90);
/// Unique per test so its Docker networks (`PROJECT_NAME`) clash with no other test's.
const PROJECT: &str = "compose-e2e";

/// db answers on 7070 (alias `database`) only after 3 s; api (`$API_PORT`, greeting from
/// `.env`) waits until db is healthy and fetches from `database`; web waits until api has
/// started and fetches from `api`.
const COMPOSE: &str = r#"
name: compose-e2e
services:
  db:
    image: dctl-test/server:1
    environment:
      PORT: "7070"
      STARTUP_DELAY: 3s
    networks:
      back:
        aliases: [database]
    healthcheck:
      test: ["CMD", "/dctl-testserver", "--check", "http://127.0.0.1:7070/ready"]
      interval: 1s
      timeout: 1s
      retries: 3
      start_period: 5s
    stop_grace_period: 1s
  api:
    image: dctl-test/server:1
    environment:
      PORT: ${API_PORT}
      GREETING: ${GREETING:?GREETING comes from .env}
      UPSTREAM: http://database:7070
    networks: [back, front]
    depends_on:
      db: {condition: service_healthy}
    healthcheck:
      test: ["CMD", "/dctl-testserver", "--check", "http://127.0.0.1:${API_PORT}/ready"]
      interval: 1s
    stop_grace_period: 1s
  web:
    image: dctl-test/server:1
    environment:
      UPSTREAM: http://api:${API_PORT}
    networks: [front]
    depends_on: [api]
    stop_grace_period: 1s
networks:
  back:
  front:
"#;

#[tokio::test]
async fn a_compose_stack_comes_up_in_dependency_order_and_rolls_only_what_changed() {
    let mut cluster = Cluster::start("compose").await;
    cluster.start_agent("n1", &[]);
    let file = cluster.env.write("shop/docker-compose.yml", COMPOSE);
    cluster
        .env
        .write("shop/.env", "API_PORT=9090\nGREETING=hello from dotenv\n");
    let file = file.to_str().unwrap().to_string();

    let applied = cluster.env.dctl(&["apply", "-f", &file]).await.success();
    assert_eq!(
        applied.stdout,
        "network/back created\nnetwork/front created\nservice/db created\nservice/api created\nservice/web created\n"
    );
    assert!(
        !applied.stderr.contains("warning"),
        "no key went untranslated: {}",
        applied.stderr
    );

    // Up in dependency order: api's task is created only once db is Ready; web's only
    // once api's task runs.
    let containers = cluster.running(None, 3, CONVERGE).await;
    let tasks = cluster.tasks(PROJECT).await;
    let db_ready = ready_since(&tasks, "db").expect("db is Ready");
    let api_created = created(&tasks, "api");
    assert!(
        api_created >= db_ready,
        "api created {api_created} before db was Ready at {db_ready}"
    );
    let api_running = running_since(&tasks, "api").expect("api runs");
    assert!(
        created(&tasks, "web") >= api_running,
        "web created before api ran"
    );

    // They reach each other by name and alias: web → api → database.
    let web = containers.iter().find(|c| c.service == "web").unwrap();
    cluster
        .wait_for("web reaches api, which reaches db", CONVERGE, || async {
            let out = docker_exec(&web.id, "http://api:9090/upstream");
            out.then_some(())
        })
        .await;
    let api = containers.iter().find(|c| c.service == "api").unwrap();
    assert!(docker_exec(&api.id, "http://database:7070/"));

    let stacks = cluster.env.dctl(&["get", "stacks"]).await.success();
    cluster
        .wait_for("the stack ready", CONVERGE, || async {
            let out = cluster.env.dctl(&["get", "stacks"]).await;
            out.stdout.contains("3/3 services ready").then_some(())
        })
        .await;
    assert!(stacks.stdout.starts_with("NAME"), "{}", stacks.stdout);
    let described = cluster
        .env
        .dctl(&["describe", "stack", PROJECT])
        .await
        .success();
    assert!(
        described.stdout.contains("db (ready)"),
        "{}",
        described.stdout
    );

    // A new greeting in .env changes api's template only: api rolls, db and web stay.
    cluster
        .env
        .write("shop/.env", "API_PORT=9090\nGREETING=hello again\n");
    let diff = cluster.env.dctl(&["diff", "-f", &file]).await;
    assert_eq!(diff.code, 1, "diff finds the change: {diff:#?}");
    assert!(
        diff.stdout.contains("compose-e2e/service/api"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("+      value: hello again"),
        "{}",
        diff.stdout
    );
    assert!(!diff.stdout.contains("service/db"), "{}", diff.stdout);
    let applied = cluster.env.dctl(&["apply", "-f", &file]).await.success();
    assert_eq!(
        applied.stdout,
        "network/back unchanged\nnetwork/front unchanged\nservice/db unchanged\nservice/api configured\nservice/web unchanged\n"
    );
    let after = cluster
        .wait_for("api replaced", CONVERGE, || async {
            let now = cluster.containers();
            let new_api = now.iter().any(|c| c.service == "api" && c.id != api.id);
            (now.len() == 3 && new_api).then_some(now)
        })
        .await;
    for service in ["db", "web"] {
        let before = containers.iter().find(|c| c.service == service).unwrap();
        let now = after.iter().find(|c| c.service == service).unwrap();
        assert_eq!(before.id, now.id, "{service} was not touched");
    }

    // web dropped from the file: apply --prune deletes it, and nothing else.
    let web_section = COMPOSE.find("  web:").unwrap();
    let networks_section = COMPOSE.find("networks:\n  back:").unwrap();
    let without_web = format!(
        "{}{}",
        &COMPOSE[..web_section],
        &COMPOSE[networks_section..]
    );
    cluster.env.write("shop/docker-compose.yml", &without_web);
    let pruned = cluster
        .env
        .dctl(&["apply", "--prune", "-f", &file])
        .await
        .success();
    assert!(
        pruned
            .stdout
            .ends_with("service/api unchanged\nservice/web pruned\n"),
        "{}",
        pruned.stdout
    );
    cluster.running(None, 2, CONVERGE).await;

    let deleted = cluster.env.dctl(&["delete", "-f", &file]).await.success();
    assert!(
        deleted.stdout.starts_with("service \"db\" deleted"),
        "{}",
        deleted.stdout
    );
    cluster
        .wait_for("the stack's containers gone", CONVERGE, || async {
            cluster.containers().is_empty().then_some(())
        })
        .await;
}

fn current<'a>(tasks: &'a [Task], service: &str) -> &'a Task {
    tasks
        .iter()
        .find(|t| {
            t.spec.service_name == service && t.spec.desired_state == TaskDesiredState::Running
        })
        .unwrap_or_else(|| panic!("a current task of {service}"))
}

fn created(tasks: &[Task], service: &str) -> Time {
    current(tasks, service)
        .metadata
        .creation_timestamp
        .expect("stored tasks have a creation time")
}

fn ready_since(tasks: &[Task], service: &str) -> Option<Time> {
    let status = current(tasks, service).status.as_ref()?;
    find_condition(&status.conditions, CONDITION_READY)
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time)
}

fn running_since(tasks: &[Task], service: &str) -> Option<Time> {
    let status = current(tasks, service).status.as_ref()?;
    (status.state == TaskState::Running).then_some(())?;
    find_condition(&status.conditions, CONDITION_STARTED).map(|c| c.last_transition_time)
}

/// Whether `/dctl-testserver --check URL` passes inside the container.
fn docker_exec(container: &str, url: &str) -> bool {
    std::process::Command::new("docker")
        .args(["exec", container, "/dctl-testserver", "--check", url])
        .output()
        .is_ok_and(|out| out.status.success())
}
