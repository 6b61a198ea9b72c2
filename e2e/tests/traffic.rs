//! Traffic through the proxy on real Docker: readiness gates it, scaling does not drop a
//! request, and without the gate (the experiment switch) requests fail.
//!
//! One agent runs the proxy, bound to 127.0.0.1 on a free port (docker0's address for the
//! kernel path off loopback); the other runs none (`--no-proxy`), so its tasks are reached
//! across nodes through their host ports. Both nodes are this host, so loopback clients
//! are balanced inside their own connect() (`--proxy-loopback socket`, the default), or
//! take the nftables rules or user space when the agent is told so. The
//! client load is a few concurrent loops of short HTTP/1.0 GETs on loopback, bounded in
//! time and count; `GET /` of the test server names the task that answered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use dctl_apis::Task;
use dctl_e2e::cluster::{
    docker0_address, nft_table, own_pid_namespace, proxy_rules, proxy_table, proxy_tables, Cluster,
};
use dctl_e2e::load::{free_port, get_once, get_once_at, loopback, post, Load, Tally};
use dctl_e2e::swarm::{docker_cli, stderr};
use dctl_e2e::traffic::{
    endpoints, scale, scale_under_load, scale_under_load_at, service, wait_ready, CONVERGE,
};

#[tokio::test]
async fn scaling_under_load_drops_no_request() {
    let (_cluster, port) = scaling_on_loopback("traffic-gated", &[]).await;
    // Balanced at connect(): the client's socket is connected to the task itself.
    let client = TcpStream::connect(loopback(port)).await.unwrap();
    let local = client.local_addr().unwrap();
    assert!(!local.ip().is_loopback(), "a loopback connection: {local}");
}

/// The same experiment with loopback clients on the nftables rules, as kube-proxy's
/// iptables mode serves them (the fallback where the kernel cannot balance at connect()).
#[tokio::test]
async fn scaling_under_load_drops_no_request_with_loopback_in_nftables() {
    let nftables = ["--proxy-loopback", "nftables"];
    let (cluster, port) = scaling_on_loopback("traffic-gated-nftables", &nftables).await;
    // The rule written for the last scale took connections.
    let rules = proxy_rules(proxy_pid(&cluster)).expect("the proxy's nftables table");
    let rule = format!("ip daddr 127.0.0.1 tcp dport {port} ");
    assert!(dnat_connections(&rules, &rule) > 0, "{rules}");
}

/// The same experiment with loopback clients served in user space, as `docker-proxy`
/// serves them: the agent writes no nftables rules at all.
#[tokio::test]
async fn scaling_under_load_drops_no_request_with_loopback_in_user_space() {
    let userspace = ["--proxy-loopback", "userspace"];
    let (cluster, _port) = scaling_on_loopback("traffic-gated-user-space", &userspace).await;
    assert_eq!(
        proxy_table(proxy_pid(&cluster)),
        None,
        "rules written for a user-space proxy"
    );
}

/// The scaling experiment on loopback, `n1`'s proxy bound to 127.0.0.1 and given
/// `loopback_args`, with its verdict; the cluster and the published port.
async fn scaling_on_loopback(test: &str, loopback_args: &[&str]) -> (Cluster, u16) {
    let mut args = vec!["--proxy-bind", "127.0.0.1"];
    args.extend_from_slice(loopback_args);
    let cluster = Cluster::start_with_proxy_on_n1_args(test, &args).await;
    let port = free_port();
    let tally = scale_under_load(&cluster, port, "").await;
    assert_no_request_lost(&cluster, &tally);
    (cluster, port)
}

/// The experiment's verdict: no request failed, enough were answered, and round robin
/// reached all three replicas, on both nodes.
fn assert_no_request_lost(cluster: &Cluster, tally: &Tally) {
    assert_eq!(
        tally.failed(),
        0,
        "failed requests: {:?}\n{}",
        tally.errors(),
        cluster.logs()
    );
    assert!(tally.ok() > 200, "only {} requests answered", tally.ok());
    assert_eq!(tally.by_task().len(), 3, "{:?}", tally.by_task());
}

/// The process of `n1`'s agent, which runs the proxy.
fn proxy_pid(cluster: &Cluster) -> u32 {
    let agent = &cluster.agents[&cluster.node("n1")];
    agent.pid().expect("n1's agent runs")
}

#[tokio::test]
async fn without_readiness_gating_scaling_drops_requests() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-ungated").await;
    let port = free_port();
    let annotations = "dctl.io/readiness-gating: \"off\"";
    let tally = scale_under_load(&cluster, port, annotations).await;
    let failed = tally.failed.load(Ordering::SeqCst);
    assert!(
        failed > 0,
        "with readiness gating off, tasks take traffic before they listen: expected \
         failures, got none ({} ok)",
        tally.ok.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_task_that_is_not_ready_gets_no_traffic_and_is_not_restarted() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-readiness").await;
    let (port, idle_port) = (free_port(), free_port());
    cluster
        .apply("web.yaml", &service("web", 3, port, "", ""))
        .await;
    let never_ready = "{name: READY, value: \"false\"}";
    let idle = service("idle", 1, idle_port, "", never_ready);
    cluster.apply("idle.yaml", &idle).await;
    let ready = wait_ready(&cluster, "web", 3).await;

    // No Ready endpoint: refused at once, not left hanging.
    let node = cluster.node("n1");
    cluster
        .wait_for(
            "the proxy to observe idle's endpoints",
            CONVERGE,
            || async {
                let endpoints = endpoints(&cluster, "idle").await?;
                (endpoints.spec.endpoints.len() == 1).then_some(())?;
                let key = format!("/dctl/v1/proxy-observed/{node}/e2e/idle");
                let mut client = cluster.env.store().await.client();
                let seen = client.get(key, None).await.ok()?;
                let seen: i64 = seen.kvs().first()?.value_str().ok()?.parse().ok()?;
                (seen >= endpoints.metadata.resource_version?).then_some(())
            },
        )
        .await;
    refused_at_once(loopback(idle_port)).await;

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = ready.spec.endpoints[0].task.clone();
    let store = cluster.env.store().await;
    let task: Task = store.get("e2e", &victim).await.unwrap();
    let status = task.status.clone().unwrap();
    let address = status.addresses[0].clone();
    let container = status.container_id.clone();

    post(&address, "/ready/fail").await;
    let failed_at = Instant::now();
    cluster
        .wait_for("the victim out of the endpoints", CONVERGE, || async {
            let endpoints = endpoints(&cluster, "web").await?;
            let entry = endpoints.spec.endpoints.iter().find(|e| e.task == victim)?;
            (!entry.ready).then_some(())
        })
        .await;
    let out_after = failed_at.elapsed();
    // period 1 s × failureThreshold 3, plus a bound for the writes and the watches.
    assert!(
        out_after < Duration::from_secs(5),
        "out of traffic after {out_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally_of(&load, &victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = tally_of(&load, &victim) - before;
    assert_eq!(during, 0, "the not-ready task still got {during} requests");
    assert!(load.tally.by_task().len() >= 2);

    // Alive, not restarted: the same task runs the same container.
    let task: Task = store.get("e2e", &victim).await.unwrap();
    let status = task.status.unwrap();
    assert_eq!(status.state, dctl_apis::TaskState::Running);
    assert_eq!(status.container_id, container);

    post(&address, "/ready/ok").await;
    wait_ready(&cluster, "web", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally_of(&load, &victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = tally_of(&load, &victim) - before;
    assert!(after > 0, "the task got no traffic back once ready again");

    let tally = load.stop().await;
    eprintln!(
        "readiness flip: out of traffic after {out_after:?}; ok {} failed {} by task {:?}",
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
        tally.by_task()
    );
    assert_eq!(
        tally.failed.load(Ordering::SeqCst),
        0,
        "{:?}",
        tally.errors()
    );
}

fn tally_of(load: &Load, task: &str) -> u64 {
    load.tally.by_task().get(task).copied().unwrap_or_default()
}

/// Docker's own HEALTHCHECK (from the image; no dctl probe at all): `starting` keeps a
/// task out of traffic, `unhealthy` is a liveness failure that replaces it, and under load
/// no request fails on the way.
#[tokio::test]
async fn a_docker_healthcheck_gates_traffic_and_unhealthy_replaces_the_task() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-healthcheck").await;
    let port = free_port();
    // The image checks GET /ready every second, unhealthy after 3 failures.
    let manifest = format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: hc, namespace: e2e}}
spec:
  replicas: 2
  template:
    image: dctl-test/server-healthcheck:1
    ports: [{{name: http, containerPort: 8080}}]
    stopGracePeriod: 2s
    restartPolicy: {{delay: 200ms}}
  publish:
    - {{port: {port}, targetPort: http}}
"
    );
    cluster.apply("hc.yaml", &manifest).await;
    let ready = wait_ready(&cluster, "hc", 2).await;
    let store = cluster.env.store().await;
    for endpoint in &ready.spec.endpoints {
        let task: Task = store.get("e2e", &endpoint.task).await.unwrap();
        let conditions = task.status.unwrap().conditions;
        let since = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == dctl_apis::ConditionStatus::True)
                .map(|c| c.last_transition_time)
                .unwrap_or_else(|| panic!("{type_} is true: {conditions:?}"))
        };
        // Docker runs the first check one interval (1 s) after the start: until it passes
        // the task is `starting`, not Ready, though it runs and answers.
        let waited = since("Ready") - since("Started");
        assert!(
            waited >= chrono::Duration::milliseconds(600),
            "{} was Ready {waited:?} after it started: the HEALTHCHECK did not gate it",
            endpoint.task
        );
    }

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim: Task = store
        .get("e2e", &ready.spec.endpoints[0].task)
        .await
        .unwrap();
    let slot = victim.spec.slot;
    let address = victim.status.as_ref().unwrap().addresses[0].clone();
    post(&address, "/ready/fail").await;
    let replacement = cluster
        .wait_for("the unhealthy task replaced", CONVERGE, || async {
            let tasks = store.list::<Task>(Some("e2e")).await.ok()?.items;
            let old = tasks
                .iter()
                .find(|t| t.metadata.name == victim.metadata.name)?;
            (old.status.as_ref()?.state == dctl_apis::TaskState::Failed).then_some(())?;
            tasks.into_iter().find(|t| {
                t.metadata.name != victim.metadata.name
                    && t.spec.service_name == "hc"
                    && t.spec.slot == slot
                    && t.status
                        .as_ref()
                        .is_some_and(|s| s.state == dctl_apis::TaskState::Running)
            })
        })
        .await;
    assert_eq!(replacement.status.as_ref().unwrap().restart_count, 1);
    wait_ready(&cluster, "hc", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!("healthcheck: {}", tally.summary());
    assert_eq!(tally.failed(), 0, "{}", tally.summary());
    assert!(tally.ok() > 100, "{}", tally.summary());

    let describe = cluster
        .env
        .dctl(&["describe", "task", &victim.metadata.name, "-n", "e2e"])
        .await
        .success();
    assert!(
        describe.stdout.contains("Liveness probe failed"),
        "{}",
        describe.stdout
    );
}

/// Service `echo` of the test image, two replicas, with `publish` entries `publish`: it
/// declares its HTTP port, the same number for UDP (each datagram is answered with the
/// greeting) and a metrics port no test publishes.
fn echo_service(publish: &str) -> String {
    format!(
        "apiVersion: dctl/v1
kind: Service
metadata: {{name: echo, namespace: e2e}}
spec:
  replicas: 2
  template:
    image: dctl-test/server:1
    ports:
      - {{name: http, containerPort: 8080}}
      - {{name: echo, containerPort: 8080, protocol: udp}}
      - {{name: metrics, containerPort: 9090}}
    stopGracePeriod: 2s
    probes:
      readiness: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
  publish:
{publish}"
    )
}

/// UDP through the proxy: each client's datagrams stick to one task, clients spread over
/// the Ready tasks, and a task that stops being Ready gets no more datagrams.
#[tokio::test]
async fn udp_datagrams_go_to_ready_tasks_only() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-udp").await;
    let port = free_port();
    let manifest = echo_service(&format!(
        "    - {{port: {port}, targetPort: echo, protocol: udp}}\n"
    ));
    cluster.apply("echo.yaml", &manifest).await;
    let ready = wait_ready(&cluster, "echo", 2).await;
    let clients = udp_clients(8).await;
    let answers = cluster
        .wait_for("datagrams answered through the proxy", CONVERGE, || async {
            let mut answers = Vec::new();
            for client in &clients {
                answers.push(ask_udp(client, port).await?);
            }
            Some(answers)
        })
        .await;
    for (client, first) in clients.iter().zip(&answers) {
        for _ in 0..3 {
            assert_eq!(ask_udp(client, port).await.as_ref(), Some(first), "sticky");
        }
    }
    let tasks: std::collections::BTreeSet<&String> = answers.iter().collect();
    assert_eq!(tasks.len(), 2, "both tasks answer some client: {answers:?}");

    let victim = ready.spec.endpoints[0].task.clone();
    let task: Task = cluster.env.store().await.get("e2e", &victim).await.unwrap();
    post(&task.status.unwrap().addresses[0], "/ready/fail").await;
    cluster
        .wait_for("the victim out of the endpoints", CONVERGE, || async {
            let endpoints = endpoints(&cluster, "echo").await?;
            let entry = endpoints.spec.endpoints.iter().find(|e| e.task == victim)?;
            (!entry.ready).then_some(())
        })
        .await;
    // The proxy acts on the watch event; give it a moment beyond the etcd write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut clients = clients;
    clients.extend(udp_clients(8).await);
    for client in &clients {
        let answer = ask_udp(client, port).await.expect("answered");
        assert!(
            !answer.contains(&victim),
            "the not-ready task still got a datagram"
        );
    }
}

async fn udp_clients(n: usize) -> Vec<tokio::net::UdpSocket> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    clients
}

/// One datagram to the published port, and who answered it (`hello from TASK version V`).
async fn ask_udp(client: &tokio::net::UdpSocket, port: u16) -> Option<String> {
    client.send_to(b"who?", ("127.0.0.1", port)).await.ok()?;
    let mut buffer = [0u8; 256];
    let received = tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buffer));
    let length = received.await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buffer[..length]);
    text.split_whitespace().nth(2).map(String::from)
}

/// The host ports Docker bound for a container: `["8080/tcp"]`.
fn bound_ports(container: &str) -> Vec<String> {
    let output = std::process::Command::new("docker")
        .args(["port", container])
        .output()
        .expect("docker port runs");
    let mut ports: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(" -> ").next().map(String::from))
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Declared but unpublished ports get no host port; publishing one more port replaces the
/// tasks (Docker cannot add a binding to a running container) without a failed request.
#[tokio::test]
async fn only_published_ports_get_host_ports_and_publishing_one_rolls_the_tasks() {
    let cluster = Cluster::start_with_proxy_on_n1("traffic-publish").await;
    let (port, udp_port) = (free_port(), free_port());
    let tcp = format!("    - {{port: {port}, targetPort: http}}\n");
    cluster.apply("echo.yaml", &echo_service(&tcp)).await;
    wait_ready(&cluster, "echo", 2).await;
    let first: Vec<String> = cluster.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(first.len(), 2);
    for container in &first {
        // Declared but unpublished ports stay off the host, as `docker run` without -p.
        assert_eq!(bound_ports(container), ["8080/tcp"], "{container}");
    }
    cluster
        .wait_for("web to answer through the proxy", CONVERGE, || async {
            get_once(port).await.ok()
        })
        .await;

    let load = Load::start(port);
    let udp = format!("    - {{port: {udp_port}, targetPort: echo, protocol: udp}}\n");
    cluster
        .apply("echo.yaml", &echo_service(&(tcp + &udp)))
        .await;
    let client = udp_clients(1).await.remove(0);
    cluster
        .wait_for(
            "a datagram answered through the proxy",
            CONVERGE,
            || async { ask_udp(&client, udp_port).await },
        )
        .await;
    let second = cluster
        .wait_for("both tasks replaced", CONVERGE, || async {
            let ids: Vec<String> = cluster.containers().into_iter().map(|c| c.id).collect();
            let replaced = ids.len() == 2 && ids.iter().all(|id| !first.contains(id));
            replaced.then_some(ids)
        })
        .await;
    wait_ready(&cluster, "echo", 2).await;
    let tally = load.stop().await;
    eprintln!("publishing a port rolled the tasks: {}", tally.summary());
    for container in &second {
        assert_eq!(
            bound_ports(container),
            ["8080/tcp", "8080/udp"],
            "{container}"
        );
    }
    assert_eq!(tally.failed(), 0, "{}\n{}", tally.summary(), cluster.logs());
    assert!(tally.ok() > 0, "{}", tally.summary());
}

/// Clients off loopback take the kernel path: the proxy's nftables rules DNAT each new
/// connection to a Ready endpoint, and the gate holds there as in user space.
#[tokio::test]
async fn off_loopback_the_kernel_path_gates_traffic_and_its_rules_go_with_the_proxy() {
    let host = docker0_address();
    let mut cluster = Cluster::start_with_proxy_on_n1_at("traffic-kernel", host).await;
    let port = free_port();
    let address = SocketAddr::new(host, port);
    let tally = scale_under_load_at(&cluster, address, "").await;
    assert_no_request_lost(&cluster, &tally);

    // The connections were DNAT'd by the proxy's own table, one rule for the port.
    let node = cluster.node("n1");
    let pid = proxy_pid(&cluster);
    let rules = proxy_rules(pid).expect("the proxy's nftables table");
    let connections = dnat_connections(&rules, &format!("ip daddr {host} tcp dport {port} "));
    assert!(connections > 0, "no connection took the rule:\n{rules}");

    // A container on the tasks' own network reaches the published port at the host's
    // address too, whichever task it lands on (one of them on its own bridge: hairpin).
    scale(&cluster, "web", 2).await;
    let ready = wait_ready(&cluster, "web", 2).await;
    let network = task_network(&cluster, &ready.spec.endpoints[0].task).await;
    let url = format!("http://{address}/");
    for _ in 0..4 {
        let output = run_on(&cluster, &network, &["dctl-test/server:1", "--check", &url]).await;
        assert!(
            output.status.success(),
            "from a container on {network}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
    }

    // No Ready endpoint: the rule goes, and the user-space listener refuses at once.
    scale(&cluster, "web", 0).await;
    cluster
        .wait_for("the port's rule to go", CONVERGE, || async {
            let rules = proxy_rules(pid)?;
            (!rules.contains(&format!("tcp dport {port} "))).then_some(())
        })
        .await;
    refused_at_once(address).await;

    // A clean stop takes the table with it.
    let agent = cluster.agents.get_mut(&node).unwrap();
    assert_eq!(agent.interrupt().await, Some(0));
    assert_eq!(proxy_rules(pid), None, "the table outlived its proxy");
}

/// A proxy in a pid namespace of its own (an agent in a container; here `unshare`) keeps
/// its table beside the host's: neither takes the other's pids for its own processes.
/// Once the namespace's last process is gone, the host's proxy deletes its table.
#[tokio::test]
async fn proxies_in_other_pid_namespaces_keep_their_tables_until_the_namespace_is_gone() {
    let mut cluster = Cluster::start_with_proxy_on_n1_at("traffic-pidns", docker0_address()).await;
    // Loopback on the nftables rules, so that this proxy has a table too.
    let args = ["--proxy-bind", "127.0.0.1", "--proxy-loopback", "nftables"];
    let n3 = cluster.start_agent_in_pid_namespace("n3", &args);
    let own = own_pid_namespace().expect("a pid namespace");
    let host_table = cluster
        .wait_for("n1's table", CONVERGE, || async {
            proxy_table(proxy_pid(&cluster))
        })
        .await;
    let foreign = cluster
        .wait_for("n3's table, of another pid namespace", CONVERGE, || async {
            proxy_tables()
                .into_iter()
                .find(|table| !table.starts_with(&format!("dctl_proxy_{own}_")))
        })
        .await;

    // Three retry periods of each proxy looking at the other's table.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tables = proxy_tables();
    assert!(
        tables.contains(&host_table),
        "{tables:?}\n{}",
        cluster.logs()
    );
    assert!(tables.contains(&foreign), "{tables:?}\n{}", cluster.logs());
    for node in [cluster.node("n1"), n3.clone()] {
        let log = cluster.agents[&node].log_text();
        assert!(!log.contains("deleted the nftables table"), "{node}: {log}");
        assert!(!log.contains("removed by something else"), "{node}: {log}");
    }

    cluster.kill_agent(&n3).await;
    cluster
        .wait_for(
            "the gone namespace's table to be deleted",
            CONVERGE,
            || async { (!proxy_tables().contains(&foreign)).then_some(()) },
        )
        .await;
    assert!(proxy_tables().contains(&host_table), "{}", cluster.logs());
}

/// Loopback clients are balanced inside their own connect(): the socket is connected to
/// a Ready task's address (on this host's bridge, or another node's host port), while
/// getpeername() still answers what the client asked for. A container's own loopback is
/// left alone, and the hook goes with the agent, even a killed one.
#[tokio::test]
async fn on_loopback_connect_goes_straight_to_a_ready_task_and_the_hook_goes_with_the_agent() {
    let mut cluster = Cluster::start_with_proxy_on_n1("traffic-socket").await;
    let port = free_port();
    cluster.apply("web.yaml", &one_task_per_node(port)).await;
    let ready = wait_ready(&cluster, "web", 2).await;
    // The proxy applies the Endpoints a moment after they are written.
    cluster
        .wait_for("the port to answer on loopback", CONVERGE, || async {
            get_once(port).await.ok()
        })
        .await;
    assert_round_robin_over_both_tasks(&cluster, port).await;

    for _ in 0..2 {
        let client = TcpStream::connect(loopback(port)).await.unwrap();
        assert_eq!(client.peer_addr().unwrap(), loopback(port), "getpeername()");
        let local = client.local_addr().unwrap();
        assert!(!local.ip().is_loopback(), "a loopback connection: {local}");
    }
    // No rule and no proxy process in the way: the proxy, bound to 127.0.0.1, wrote no
    // nftables table at all.
    let pid = proxy_pid(&cluster);
    assert_eq!(
        proxy_table(pid),
        None,
        "nftables rules for loopback clients"
    );

    // A container's 127.0.0.1 is its own: the same port there is refused.
    let network = network_of_n1s_task(&cluster, &ready).await;
    let url = format!("http://127.0.0.1:{port}/");
    let output = run_on(&cluster, &network, &["dctl-test/server:1", "--check", &url]).await;
    assert!(
        !output.status.success(),
        "a container's own loopback reached a task: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    // No Ready endpoint: the entry goes, and the user-space listener refuses at once.
    scale(&cluster, "web", 0).await;
    cluster
        .wait_for("the port to be refused", CONVERGE, || async {
            get_once(port).await.is_err().then_some(())
        })
        .await;
    refused_at_once(loopback(port)).await;

    // A killed agent's hook is gone with it: with the task still running and nothing
    // listening on the port, a loopback client is refused.
    scale(&cluster, "web", 1).await;
    wait_ready(&cluster, "web", 1).await;
    cluster
        .wait_for("the task to answer on loopback", CONVERGE, || async {
            get_once(port).await.ok()
        })
        .await;
    let node = cluster.node("n1");
    cluster.kill_agent(&node).await;
    // The kernel drops the link as it closes the dead process's files; bounded, not
    // assumed to be done the instant the process is reaped.
    cluster
        .wait_for(
            "a loopback client to be refused, the agent gone",
            Duration::from_secs(5),
            || async { get_once(port).await.is_err().then_some(()) },
        )
        .await;
}

/// Eight requests on loopback `port` are answered by two tasks.
async fn assert_round_robin_over_both_tasks(cluster: &Cluster, port: u16) {
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let answer = get_once(port).await;
        answered.insert(
            answer
                .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
                .task,
        );
    }
    assert_eq!(
        answered.len(),
        2,
        "round robin over both tasks: {answered:?}"
    );
}

/// The Docker network of `n1`'s task among the Ready endpoints.
async fn network_of_n1s_task(cluster: &Cluster, ready: &dctl_apis::Endpoints) -> String {
    let local = ready
        .spec
        .endpoints
        .iter()
        .find(|endpoint| endpoint.node == cluster.node("n1"))
        .expect("a task on n1");
    task_network(cluster, &local.task).await
}

/// Service `web` with two tasks, one on each node, published on `port`.
fn one_task_per_node(port: u16) -> String {
    service("web", 2, port, "", "").replace(
        "  publish:",
        "  placement: {maxReplicasPerNode: 1}\n  publish:",
    )
}

/// Loopback clients on the nftables rules (`--proxy-loopback nftables`) take them when
/// every endpoint is on this host: their connections are DNAT'd on output and masqueraded
/// out of the task's bridge, which needs `route_localnet` there. That setting would let
/// the containers on the bridge reach the host's loopback services (CVE-2020-8558); the
/// guard table drops what they send there.
#[tokio::test]
async fn on_loopback_the_nftables_path_serves_clients_and_keeps_containers_off_the_hosts_loopback()
{
    let cluster = Cluster::start_with_proxy_on_n1_args(
        "traffic-loopback",
        &["--proxy-bind", "127.0.0.1", "--proxy-loopback", "nftables"],
    )
    .await;
    let port = free_port();
    // One task on each node: n1's is reached at its container's address, through its
    // bridge, n2's at its host port on this host's address.
    cluster.apply("web.yaml", &one_task_per_node(port)).await;
    let ready = wait_ready(&cluster, "web", 2).await;
    // The proxy applies the Endpoints a moment after they are written.
    let pid = proxy_pid(&cluster);
    let rule = format!("ip daddr 127.0.0.1 tcp dport {port} ");
    cluster
        .wait_for(
            "the port's loopback rule over both tasks",
            CONVERGE,
            || async {
                let rules = proxy_rules(pid)?;
                let line = rules.lines().find(|line| line.contains(&rule))?;
                line.contains("numgen inc mod 2").then_some(())
            },
        )
        .await;
    assert_round_robin_over_both_tasks(&cluster, port).await;

    let rules = proxy_rules(pid).expect("the proxy's nftables table");
    let connections = dnat_connections(&rules, &rule);
    assert!(
        connections >= 8,
        "{connections} connections took the rule:\n{rules}"
    );

    // The bridge of n1's task routes loopback sources now.
    let network = network_of_n1s_task(&cluster, &ready).await;
    let bridge = bridge_of(&network).await;
    let setting = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    assert_eq!(
        std::fs::read_to_string(&setting).unwrap(),
        "1\n",
        "{setting}"
    );

    // A container on that bridge sends a datagram to the host's 127.0.0.1 (routed through
    // its gateway, as an attacker would) and one to the gateway's own address. A host
    // socket on every address gets the second only, and the guard counts the first.
    let dropped_before = guard_drops();
    let host = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let host_port = host.local_addr().unwrap().port();
    let script = format!(
        "gateway=$(ip route | awk '/default/ {{print $3}}') && \
         ip route del 127.0.0.0/8 dev lo table local && \
         ip route del 127.0.0.1 dev lo table local && \
         ip route add 127.0.0.1/32 via $gateway dev eth0 && \
         (tftp -g -r to-loopback -l /tmp/a 127.0.0.1 {host_port} & \
          tftp -g -r to-gateway -l /tmp/b $gateway {host_port} & sleep 2)"
    );
    let run = [
        "--cap-add",
        "NET_ADMIN",
        "dctl-test/busybox:1",
        "sh",
        "-c",
        &script,
    ];
    let output = run_on(&cluster, &network, &run).await;
    assert!(
        output.status.success(),
        "the container's script: {}",
        stderr(&output)
    );
    let mut received = std::collections::BTreeSet::new();
    let mut datagram = [0u8; 512];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), host.recv_from(&mut datagram)).await
    {
        // A TFTP read request: opcode 1, then the file name.
        let name = datagram[2..n]
            .split(|byte| *byte == 0)
            .next()
            .unwrap_or_default();
        received.insert(String::from_utf8_lossy(name).into_owned());
    }
    assert!(
        received.contains("to-gateway"),
        "the control datagram was lost: {received:?}"
    );
    assert!(
        !received.contains("to-loopback"),
        "a container reached the host's loopback"
    );
    assert!(guard_drops() > dropped_before, "the guard dropped nothing");

    // Something else removes the rules, as a firewall reload that flushes the ruleset
    // would (the bridges keep route_localnet: the guard must come back, and does within a
    // retry period).
    let table = proxy_table(pid).expect("the proxy's table");
    for gone in [table.as_str(), "dctl_localnet_guard"] {
        let deleted = std::process::Command::new("nft")
            .args(["delete", "table", "ip", gone])
            .status()
            .expect("nft runs");
        assert!(deleted.success(), "nft delete table ip {gone}");
    }
    cluster
        .wait_for(
            "the table and the guard to be written again",
            CONVERGE,
            || async {
                nft_table("dctl_localnet_guard")?;
                proxy_rules(pid)?.contains(&rule).then_some(())
            },
        )
        .await;
    get_once(port)
        .await
        .expect("answered through the rules written again");
}

/// `docker run --rm` of `args` (options, image, command) on Docker network `network`,
/// labelled as this run's.
async fn run_on(cluster: &Cluster, network: &str, args: &[&str]) -> std::process::Output {
    let label = cluster.container_label();
    let mut run = vec!["run", "--rm", "--label", &label, "--network", network];
    run.extend_from_slice(args);
    docker_cli(&run).await
}

/// The bridge interface of Docker network `network`: its name option (`docker0` for the
/// default one), else Docker's `br-<id>`.
async fn bridge_of(network: &str) -> String {
    let format = "{{index .Options \"com.docker.network.bridge.name\"}} {{.Id}}";
    let output = docker_cli(&["network", "inspect", "-f", format, network]).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [id] => format!("br-{}", &id[..12]),
        [name, _] => name.to_string(),
        _ => panic!("network {network}: {text:?} {}", stderr(&output)),
    }
}

/// The connections a proxy's DNAT rule that starts with `rule` has taken since it was
/// written, from `nft list table` output.
fn dnat_connections(rules: &str, rule: &str) -> u64 {
    let line = rules
        .lines()
        .find(|line| line.trim_start().starts_with(rule) && line.contains("dnat ip to"))
        .unwrap_or_else(|| panic!("no rule {rule:?} in:\n{rules}"));
    counted_packets(line)
}

/// `counter packets N bytes M` in a rule: a NAT rule sees each connection's first packet
/// only.
fn counted_packets(rule: &str) -> u64 {
    rule.split_whitespace()
        .skip_while(|word| *word != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {rule}"))
}

/// The packets the localnet guard has dropped since it was written.
fn guard_drops() -> u64 {
    let rules = nft_table("dctl_localnet_guard").expect("the guard table");
    let rule = rules
        .lines()
        .find(|line| line.contains("drop"))
        .unwrap_or_else(|| panic!("no guard rule: {rules}"));
    counted_packets(rule)
}

/// Asserts that a request to `address`, a port with no Ready endpoint, is refused in
/// under a second rather than left hanging.
async fn refused_at_once(address: SocketAddr) {
    let started = Instant::now();
    let refused = get_once_at(address).await;
    let took = started.elapsed();
    assert!(refused.is_err(), "{refused:?}");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    eprintln!("no ready endpoint: {refused:?} after {took:?}");
}

/// The Docker network a task's container is attached to.
async fn task_network(cluster: &Cluster, task: &str) -> String {
    let store = cluster.env.store().await;
    let task: Task = store.get("e2e", task).await.expect("the task is stored");
    let container = task
        .status
        .and_then(|s| s.container_id)
        .expect("a container");
    let format = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}";
    let output = docker_cli(&["inspect", "-f", format, &container]).await;
    let names = String::from_utf8_lossy(&output.stdout);
    names
        .split_whitespace()
        .next()
        .expect("a network")
        .to_string()
}
