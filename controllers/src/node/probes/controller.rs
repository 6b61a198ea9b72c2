//! One probe controller (startup, liveness or readiness): a worker per running task.
//!
//! The loop only starts and stops workers as the node's assignments change; each worker
//! probes one container on its probe's schedule and acts when its verdict changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::StopContainerOptionsBuilder;
use chrono::{SubsecRound, Utc};
use dctl_apis::meta::find_condition;
use dctl_apis::probe::{Probe, ProbeHandler, ProbeKind};
use dctl_apis::task::{TaskDesiredState, CONDITION_LIVE, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::template::PortRef;
use dctl_apis::{ConditionStatus, EventType, Task, TaskTemplate};
use dctl_runtime::ObjectKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conditions::{self, condition, title};
use super::health::{self, Health};
use super::prober::{ProbeResult, Prober, Timings, Verdict};
use super::{exec, http, tcp, Context, Target};

/// Added to a stop's grace period for the request itself (Docker answers once it is down).
const STOP_SLACK: Duration = Duration::from_secs(30);

/// Runs the `kind` controller until `changes` closes.
pub(super) async fn run(kind: ProbeKind, ctx: Arc<Context>, mut changes: watch::Receiver<()>) {
    ctx.tasks.wait_until_ready().await;
    let mut workers = Workers {
        kind,
        ctx,
        running: HashMap::new(),
    };
    loop {
        workers.sync();
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Whether the `kind` controller should probe `task` now: it runs, and (Kubernetes) the
/// startup probe runs until it passes, the other two only once it has.
pub fn wants(kind: ProbeKind, task: &Task) -> bool {
    let Some(status) = task.status.as_ref() else {
        return false;
    };
    if task.spec.desired_state != TaskDesiredState::Running || Target::of(task).is_none() {
        return false;
    }
    let is = |type_: &str, value: ConditionStatus| {
        find_condition(&status.conditions, type_).is_some_and(|c| c.status == value)
    };
    let started = is(CONDITION_STARTED, ConditionStatus::True);
    match kind {
        ProbeKind::Startup => {
            task.spec.template.probes.startup.is_some()
                && !started
                && find_condition(&status.conditions, CONDITION_STARTED)
                    .is_none_or(|c| c.reason != conditions::REASON_STARTUP_FAILED)
        }
        ProbeKind::Liveness => started && !is(CONDITION_LIVE, ConditionStatus::False),
        ProbeKind::Readiness => {
            started
                && find_condition(&status.conditions, CONDITION_READY)
                    .is_none_or(|c| c.reason != conditions::REASON_TERMINATING)
        }
    }
}

/// The workers of one controller, by task; aborted when dropped.
struct Workers {
    kind: ProbeKind,
    ctx: Arc<Context>,
    running: HashMap<ObjectKey, (Target, JoinHandle<()>)>,
}

impl Workers {
    /// Starts a worker for each task that wants one and has none for its container; ends
    /// the workers of tasks whose container changed or stopped running. A worker that
    /// finished by itself (its probe passed for good, or killed its container) is kept
    /// until its container changes, so that it is not started again.
    fn sync(&mut self) {
        let targets: HashMap<ObjectKey, (Target, bool)> = self
            .ctx
            .tasks
            .state()
            .iter()
            .filter_map(|task| Some((Target::of(task)?, wants(self.kind, task))))
            .map(|(target, wanted)| (target.key.clone(), (target, wanted)))
            .collect();
        self.running.retain(|key, (target, handle)| {
            let keep = targets.get(key).is_some_and(|(t, _)| t == target);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, (target, wanted)) in targets {
            if wanted && !self.running.contains_key(&key) {
                let worker = tokio::spawn(probe(self.kind, self.ctx.clone(), target.clone()));
                self.running.insert(key, (target, worker));
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, handle) in self.running.values() {
            handle.abort();
        }
    }
}

/// What a worker does after acting on a change.
enum Next {
    Continue,
    Done,
}

/// One worker: probes `target` until its task stops wanting it or the probe is done.
async fn probe(kind: ProbeKind, ctx: Arc<Context>, target: Target) {
    let Some(task) = ctx.task(&target) else {
        return;
    };
    let probes = &task.spec.template.probes;
    let probe = match kind {
        ProbeKind::Startup => probes.startup.clone(),
        ProbeKind::Liveness => probes.liveness.clone(),
        ProbeKind::Readiness => probes.readiness.clone(),
    };
    // Docker's HEALTHCHECK matters to liveness and readiness, never to startup.
    let mut health = Health::None;
    if kind != ProbeKind::Startup {
        match health::inspect(&ctx.docker, &target.container_id).await {
            Ok(Some(found)) => health = found,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(task = %target.key, %error, "cannot read container health")
            }
        }
    }
    let watch_health = !health.is_none();
    let mut worker = Worker {
        kind,
        ctx,
        target,
        prober: probe
            .as_ref()
            .map(|p| Prober::new(kind, Timings::of(p), Instant::now())),
        probe,
        health,
    };
    let health_period = worker.ctx.config.health_period;
    let mut next_health = Instant::now() + health_period;
    let mut dirty = true;
    loop {
        if dirty {
            match worker.act().await {
                Ok(Next::Done) => return,
                Ok(Next::Continue) => dirty = false,
                Err(error) => {
                    tracing::warn!(task = %worker.target.key, kind = kind.as_str(), %error, "probe: cannot act on a result; trying again at the next probe");
                }
            }
        }
        if worker.prober.is_none() && !watch_health {
            return;
        }
        let mut due = worker.prober.as_ref().map(Prober::next_probe_at);
        if watch_health {
            due = Some(due.map_or(next_health, |d| d.min(next_health)));
        }
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        let Some(task) = worker.ctx.task(&worker.target) else {
            return;
        };
        if !wants(kind, &task) {
            return;
        }
        if let (Some(prober), Some(probe)) = (worker.prober.as_mut(), worker.probe.as_ref()) {
            if prober.next_probe_at() <= Instant::now() {
                let timeout = prober.timings().timeout;
                let result = probe_once(&worker.ctx, &task, &worker.target, probe, timeout).await;
                if let ProbeResult::Failure(output) = &result {
                    tracing::debug!(task = %worker.target.key, kind = kind.as_str(), output, "probe failed");
                }
                dirty |= prober.record(result, Instant::now()).is_some();
            }
        }
        if watch_health && next_health <= Instant::now() {
            next_health = Instant::now() + health_period;
            match health::inspect(&worker.ctx.docker, &worker.target.container_id).await {
                Ok(Some(found)) => {
                    dirty |= found != worker.health;
                    worker.health = found;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(task = %worker.target.key, %error, "cannot read container health");
                }
            }
        }
    }
}

/// The state of one worker.
struct Worker {
    kind: ProbeKind,
    ctx: Arc<Context>,
    target: Target,
    probe: Option<Probe>,
    prober: Option<Prober>,
    health: Health,
}

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("cannot write the task's conditions: {0}")]
    Write(#[from] dctl_runtime::store::StoreError),
    #[error("cannot stop the container: {0}")]
    Stop(#[from] DockerError),
}

impl Worker {
    fn verdict(&self) -> Option<&Verdict> {
        self.prober.as_ref().map(Prober::verdict)
    }

    /// Acts on the current verdict and health: writes what changed, kills on a fatal failure.
    async fn act(&mut self) -> Result<Next, ActError> {
        let now = Utc::now().trunc_subsecs(3);
        match self.kind {
            ProbeKind::Startup => match self.verdict() {
                Some(Verdict::Passing) => {
                    let started = condition(
                        CONDITION_STARTED,
                        ConditionStatus::True,
                        conditions::REASON_STARTUP_SUCCEEDED,
                        "",
                        now,
                    );
                    self.ctx.set_conditions(&self.target, &[started]).await?;
                    Ok(Next::Done)
                }
                Some(Verdict::Failing(output)) => {
                    let output = output.clone();
                    self.kill(&output).await
                }
                Some(Verdict::Unknown) | None => Ok(Next::Continue),
            },
            ProbeKind::Liveness => {
                if let Health::Unhealthy(output) = &self.health {
                    let output = output.clone();
                    return self.kill(&output).await;
                }
                match self.verdict() {
                    Some(Verdict::Failing(output)) => {
                        let output = output.clone();
                        self.kill(&output).await
                    }
                    _ => Ok(Next::Continue),
                }
            }
            ProbeKind::Readiness => {
                let Some(ready) = conditions::readiness(self.verdict(), &self.health, now) else {
                    return Ok(Next::Continue);
                };
                let failed = (ready.reason == conditions::REASON_READINESS_FAILED)
                    .then(|| ready.message.clone());
                let changed = self.ctx.set_conditions(&self.target, &[ready]).await?;
                if let (true, Some(output), Some(task)) =
                    (changed, failed, self.ctx.task(&self.target))
                {
                    let message = format!("Readiness probe failed: {output}");
                    self.ctx
                        .record(&task, EventType::Warning, "Unhealthy", &message)
                        .await;
                }
                Ok(Next::Continue)
            }
        }
    }

    /// A startup or liveness failure beyond its threshold: out of traffic, then stopped.
    async fn kill(&self, output: &str) -> Result<Next, ActError> {
        let Some(task) = self.ctx.task(&self.target) else {
            return Ok(Next::Done);
        };
        let now = Utc::now().trunc_subsecs(3);
        let failed = conditions::fatal_failure(self.kind, output, now);
        if self.ctx.set_conditions(&self.target, &failed).await? {
            let title = title(self.kind);
            let message = format!("{title} probe failed: {output}");
            self.ctx
                .record(&task, EventType::Warning, "Unhealthy", &message)
                .await;
            let message = format!(
                "Container failed {} probe, will be replaced",
                self.kind.as_str()
            );
            self.ctx
                .record(&task, EventType::Normal, "Killing", &message)
                .await;
        }
        tracing::info!(task = %self.target.key, kind = self.kind.as_str(), output, "probe failed; stopping the container");
        stop(&self.ctx, &task.spec.template, &self.target.container_id).await?;
        Ok(Next::Done)
    }
}

/// Runs `probe`'s handler once against the task's container.
async fn probe_once(
    ctx: &Context,
    task: &Task,
    target: &Target,
    probe: &Probe,
    timeout: Duration,
) -> ProbeResult {
    match probe.handler() {
        Some(ProbeHandler::HttpGet(action)) => {
            match address(task, action.host.as_deref(), &action.port).await {
                Ok(address) => http::http_get(action, address, timeout).await,
                Err(failure) => ProbeResult::Failure(failure),
            }
        }
        Some(ProbeHandler::TcpSocket(action)) => match address(task, None, &action.port).await {
            Ok(address) => tcp::tcp_socket(address, timeout).await,
            Err(failure) => ProbeResult::Failure(failure),
        },
        Some(ProbeHandler::Exec(action)) => {
            exec::exec(&ctx.docker, &target.container_id, &action.command, timeout).await
        }
        None => ProbeResult::Failure("the probe has no handler".into()),
    }
}

/// Where an httpGet or tcpSocket probe connects: `host` when given, else the task's first
/// address (`10.0.0.2`, or `10.0.0.2/24` as some engines report it), and the port, a named
/// one looked up in the template's ports.
async fn address(task: &Task, host: Option<&str>, port: &PortRef) -> Result<SocketAddr, String> {
    let number = port
        .resolve(&task.spec.template.ports)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("no port {port} in the task's ports"))?;
    if let Some(host) = host {
        return tokio::net::lookup_host((host, number))
            .await
            .ok()
            .and_then(|mut found| found.next())
            .ok_or_else(|| format!("cannot resolve host {host:?}"));
    }
    let first = task
        .status
        .as_ref()
        .and_then(|status| status.addresses.first())
        .ok_or("the task has no address")?;
    let ip = first.split('/').next().unwrap_or_default();
    ip.parse()
        .map(|ip| SocketAddr::new(ip, number))
        .map_err(|_| format!("the task's address {first:?} is not an IP address"))
}

/// Stops the container: its stop signal, then SIGKILL after the task's grace period.
async fn stop(ctx: &Context, template: &TaskTemplate, id: &str) -> Result<(), DockerError> {
    let grace = template
        .stop_grace_period
        .unwrap_or(TaskTemplate::DEFAULT_STOP_GRACE_PERIOD)
        .as_std();
    let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let options = StopContainerOptionsBuilder::new()
        .t(i32::try_from(seconds).unwrap_or(i32::MAX))
        .build();
    let mut client = ctx.docker.clone();
    let needed = Duration::from_secs(seconds) + STOP_SLACK;
    if needed > client.timeout() {
        client = client.with_timeout(needed);
    }
    match client.stop_container(id, Some(options)).await {
        Err(DockerError::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use dctl_apis::task::{TaskSpec, TaskStatus};
    use dctl_apis::{ObjectMeta, TaskState};

    use super::*;

    fn task(probes: &str, state: TaskState, conditions: &[(&str, ConditionStatus, &str)]) -> Task {
        let template = format!(r#"{{"image": "x", "probes": {probes}}}"#);
        let spec = TaskSpec {
            template: serde_json::from_str(&template).unwrap(),
            service_name: "web".into(),
            slot: Some(1),
            ..Default::default()
        };
        let mut task = Task::new(ObjectMeta::named("default", "web.1.abcde"), spec);
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        task.status = Some(TaskStatus {
            state,
            container_id: Some("c1".into()),
            addresses: vec!["10.0.0.2".into()],
            conditions: conditions
                .iter()
                .map(|(t, s, r)| condition(t, *s, r, "", now))
                .collect(),
            ..Default::default()
        });
        task
    }

    /// (name, probes, state, conditions, wanted by startup, liveness, readiness).
    type Case<'a> = (
        &'a str,
        &'a str,
        TaskState,
        Vec<(&'a str, ConditionStatus, &'a str)>,
        [bool; 3],
    );

    #[test]
    fn startup_gates_liveness_and_readiness() {
        use ConditionStatus::{False, True};
        use ProbeKind::*;
        let startup = r#"{"startup": {"tcpSocket": {"port": 80}}}"#;
        let none = "{}";
        let cases: Vec<Case<'_>> = vec![
            (
                "not started yet",
                startup,
                TaskState::Running,
                vec![(CONDITION_STARTED, False, "StartupProbePending")],
                [true, false, false],
            ),
            (
                "started",
                startup,
                TaskState::Running,
                vec![
                    (CONDITION_STARTED, True, "StartupProbeSucceeded"),
                    (CONDITION_LIVE, True, ""),
                ],
                [false, true, true],
            ),
            (
                "startup failed: being killed",
                startup,
                TaskState::Running,
                vec![(CONDITION_STARTED, False, "StartupProbeFailed")],
                [false, false, false],
            ),
            (
                "no startup probe",
                none,
                TaskState::Running,
                vec![(CONDITION_STARTED, True, "TaskRunning")],
                [false, true, true],
            ),
            (
                "liveness failed: being killed",
                none,
                TaskState::Running,
                vec![
                    (CONDITION_STARTED, True, ""),
                    (CONDITION_LIVE, False, "LivenessProbeFailed"),
                ],
                [false, false, true],
            ),
            (
                "terminating",
                none,
                TaskState::Running,
                vec![
                    (CONDITION_STARTED, True, ""),
                    (CONDITION_READY, False, "Terminating"),
                ],
                [false, true, false],
            ),
            (
                "not running",
                startup,
                TaskState::Starting,
                vec![],
                [false, false, false],
            ),
        ];
        for (name, probes, state, conditions, expected) in cases {
            let task = task(probes, state, &conditions);
            let got = [Startup, Liveness, Readiness].map(|kind| wants(kind, &task));
            assert_eq!(got, expected, "{name}");
        }
        let mut stopping = task(none, TaskState::Running, &[(CONDITION_STARTED, True, "")]);
        stopping.spec.desired_state = TaskDesiredState::Shutdown;
        assert!(!wants(Readiness, &stopping));
    }

    #[tokio::test]
    async fn probes_connect_to_the_first_address_and_resolve_named_ports() {
        let mut task = task("{}", TaskState::Running, &[]);
        task.spec.template.ports =
            serde_json::from_str(r#"[{"name": "http", "containerPort": 8080}]"#).unwrap();
        let named = PortRef::Name("http".into());
        assert_eq!(
            address(&task, None, &named).await,
            Ok("10.0.0.2:8080".parse().unwrap())
        );
        task.status.as_mut().unwrap().addresses = vec!["10.0.0.3/24".into(), "10.1.0.3".into()];
        assert_eq!(
            address(&task, None, &PortRef::Number(9090)).await,
            Ok("10.0.0.3:9090".parse().unwrap())
        );
        let missing = PortRef::Name("grpc".into());
        assert_eq!(
            address(&task, None, &missing).await,
            Err("no port grpc in the task's ports".into())
        );
        task.status.as_mut().unwrap().addresses.clear();
        assert_eq!(
            address(&task, None, &named).await,
            Err("the task has no address".into())
        );
        assert_eq!(
            address(&task, Some("127.0.0.1"), &named).await,
            Ok("127.0.0.1:8080".parse().unwrap())
        );
    }
}
