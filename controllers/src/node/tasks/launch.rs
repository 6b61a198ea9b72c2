//! Prepares and starts a task's container: image, networks, create, connect, start.
//!
//! Each step is idempotent, so a reconcile that stops halfway (an agent restart, a lost
//! status race) picks up where it left: the container is found by its labels or, if a
//! create raced another, by its deterministic name, and never made twice.

use std::collections::BTreeSet;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::NetworkConnectRequest;
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use dctl_apis::task::TaskDesiredState;
use dctl_apis::{EventType, TaskState};
use dctl_runtime::controller::Action;
use futures::TryStreamExt;

use super::observed::{self, engine_message, status_code, Observed, Phase};
use super::reconcile::{docker_error, ReconcileError, TaskRun};
use super::status::{Gates, Report};
use crate::node::container::{self, ContainerPlan, NetworkJoin, LABEL_TASK_UID};
use crate::node::networks::{ensure_network, NetworkError};

/// The status message of a staged task (desiredState `ready`).
pub const STAGED: &str = "container created; waiting for desiredState running";

/// How soon a task waiting for its network (not yet applied, or overlapping) tries again.
const NETWORK_RETRY: Duration = Duration::from_secs(5);

/// From no container to a running one (or to a staged one for desiredState `ready`).
pub(super) async fn launch(run: &mut TaskRun<'_>) -> Result<Action, ReconcileError> {
    run.report(Report::Accepted).await?;
    if run.state() < TaskState::Preparing {
        let message = "preparing".to_string();
        run.report(Report::Preparing { message }).await?;
    }
    if let Some(message) = ensure_image(run).await? {
        return reject(run, message).await;
    }
    let networks = match ensure_networks(run).await? {
        Ok(networks) => networks,
        Err(message) => {
            run.report(Report::Preparing { message }).await?;
            return Ok(Action::requeue(NETWORK_RETRY));
        }
    };
    let plan = match plan(run, &networks) {
        Ok(plan) => plan,
        Err(message) => return reject(run, message).await,
    };
    let id = match create(run, &plan).await? {
        Created::New(id) => {
            let message = format!("Created container {}", plan.name);
            run.event(EventType::Normal, "Created", &message).await;
            id
        }
        Created::Existing(id) => id,
        Created::Refused(message) => return reject(run, message).await,
    };
    connect(run, &id, &plan.connect, &BTreeSet::new()).await?;
    if run.task.spec.desired_state == TaskDesiredState::Ready {
        run.report(Report::Preparing {
            message: STAGED.to_string(),
        })
        .await?;
        return Ok(Action::await_change());
    }
    start_and_report(run, id).await
}

/// Starts a container that was created earlier (staged, or adopted after a restart that
/// came between create and start), joining any network it still lacks first.
pub(super) async fn start(
    run: &mut TaskRun<'_>,
    container: Observed,
) -> Result<Action, ReconcileError> {
    let networks = match ensure_networks(run).await? {
        Ok(networks) => networks,
        Err(message) => {
            run.report(Report::Preparing { message }).await?;
            return Ok(Action::requeue(NETWORK_RETRY));
        }
    };
    // The plan only for its network joins: the container itself exists.
    if let Ok(plan) = plan(run, &networks) {
        connect(run, &container.id, &plan.connect, &container.networks).await?;
    }
    start_and_report(run, container.id).await
}

async fn start_and_report(run: &mut TaskRun<'_>, id: String) -> Result<Action, ReconcileError> {
    run.report(Report::Starting {
        container_id: id.clone(),
    })
    .await?;
    let docker = run.ctx.docker.clone();
    let name = run.name();
    match docker.start_container(&id, None).await {
        Ok(()) => {
            let message = format!("Started container {name}");
            run.event(EventType::Normal, "Started", &message).await;
        }
        // The engine refused: the task cannot run (a missing executable, a bad mount).
        Err(error) if status_code(&error).is_some() => {
            let message = engine_message(&error);
            let exit_code = match observed::inspect(&docker, &id).await {
                Ok(Some(Observed {
                    phase: Phase::Exited { exit_code, .. },
                    ..
                })) => Some(exit_code),
                _ => None,
            };
            let before = run.state();
            run.report(Report::StartFailed {
                container_id: id,
                exit_code,
                message: message.clone(),
            })
            .await?;
            if run.state() != before {
                let message = format!("Failed to start container {name}: {message}");
                run.event(EventType::Warning, "Failed", &message).await;
            }
            return Ok(Action::await_change());
        }
        Err(error) => return Err(docker_error(&run.key, "start its container")(error)),
    }
    let started = observed::inspect(&docker, &id)
        .await
        .map_err(docker_error(&run.key, "inspect its container"))?;
    match started {
        Some(container) if container.is_running() => {
            let addresses = container.addresses_in_order(&run.docker_networks());
            let gates = Gates::of(&run.task.spec.template, container.health_check);
            run.report(Report::Running {
                container_id: container.id,
                addresses,
                gates,
            })
            .await?;
            Ok(Action::await_change())
        }
        // Exited or gone already: the next run reports it as for any other container.
        _ => Ok(Action::requeue(Duration::ZERO)),
    }
}

/// Rejects the task: it can never run here. Terminal; the service controller replaces it
/// per its restart policy, so there is no retry (and no retry storm) here.
async fn reject(run: &mut TaskRun<'_>, message: String) -> Result<Action, ReconcileError> {
    let before = run.state();
    run.report(Report::Rejected {
        message: message.clone(),
    })
    .await?;
    if run.state() != before {
        run.event(EventType::Warning, "Failed", &message).await;
    }
    Ok(Action::await_change())
}

/// Makes sure the task's image is on this host, pulling it once if not. Returns the
/// rejection message when it is not and cannot be had.
async fn ensure_image(run: &mut TaskRun<'_>) -> Result<Option<String>, ReconcileError> {
    let docker = run.ctx.docker.clone();
    let image = run.task.spec.template.image.clone();
    match docker.inspect_image(&image).await {
        Ok(_) => return Ok(None),
        Err(error) if status_code(&error) == Some(404) => {}
        Err(error) => return Err(docker_error(&run.key, "inspect its image")(error)),
    }
    let uid = run.task.metadata.uid.clone();
    if let Some(message) = run.ctx.pull_failure(&run.key, &uid) {
        return Ok(Some(message));
    }
    run.report(Report::Preparing {
        message: format!("pulling image {image:?}"),
    })
    .await?;
    let timeout = run.ctx.config.pull_timeout;
    match pull(&docker, &image, timeout)
        .await
        .map_err(docker_error(&run.key, "pull its image"))?
    {
        Ok(()) => {
            let message = format!("Pulled image {image:?}");
            run.event(EventType::Normal, "Pulled", &message).await;
            Ok(None)
        }
        Err(reason) => {
            let message =
                format!("image {image:?} not found locally and could not be pulled: {reason}");
            run.ctx.remember_pull_failure(&run.key, &uid, &message);
            Ok(Some(message))
        }
    }
}

/// Pulls `image` once. The outer error is Docker not answering (retry later); the inner
/// one is the engine's or the registry's refusal, or the timeout.
async fn pull(
    docker: &Docker,
    image: &str,
    timeout: Duration,
) -> Result<Result<(), String>, DockerError> {
    let (repository, tag) = split_image(image);
    let options = CreateImageOptionsBuilder::new()
        .from_image(repository)
        .tag(tag)
        .build();
    let pulling = docker
        .create_image(Some(options), None, None)
        .try_for_each(|_| futures::future::ready(Ok(())));
    match tokio::time::timeout(timeout, pulling).await {
        Err(_) => Ok(Err(format!("no answer within {timeout:?}"))),
        Ok(Ok(())) => Ok(Ok(())),
        Ok(Err(
            error @ (DockerError::DockerResponseServerError { .. }
            | DockerError::DockerStreamError { .. }),
        )) => Ok(Err(engine_message(&error))),
        Ok(Err(error)) => Err(error),
    }
}

/// `repo:tag` or `repo@digest` into the pull's two parts; no tag means `latest`, since
/// an empty tag would pull every tag of the repository.
fn split_image(image: &str) -> (&str, &str) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository, digest);
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    }
}

/// The Docker names of the task's networks, created where missing; `Err(message)` when
/// the task has to wait for one (not applied yet, or refused for an address overlap).
async fn ensure_networks(run: &TaskRun<'_>) -> Result<Result<Vec<String>, String>, ReconcileError> {
    let ctx = run.ctx;
    let mut names = Vec::new();
    let _one_at_a_time = ctx.networks.lock().await;
    for attachment in &run.task.spec.template.networks {
        let ensured = ensure_network(
            &ctx.docker,
            &ctx.store,
            &run.key.namespace,
            &attachment.name,
            &ctx.config.container_labels,
        )
        .await;
        match ensured {
            Ok(name) => names.push(name),
            Err(source @ (NetworkError::Docker { .. } | NetworkError::Store { .. })) => {
                return Err(ReconcileError::Network {
                    key: run.key.clone(),
                    source,
                })
            }
            Err(error) => {
                let message = format!("waiting for network {}: {error}", attachment.name);
                return Ok(Err(message));
            }
        }
    }
    Ok(Ok(names))
}

fn plan(run: &TaskRun<'_>, networks: &[String]) -> Result<ContainerPlan, String> {
    let ctx = run.ctx;
    container::plan(
        &run.task,
        ctx.node(),
        &ctx.config.container_labels,
        networks,
    )
    .map_err(|error| format!("cannot build the container: {error}"))
}

enum Created {
    New(String),
    /// An earlier attempt made it: its answer was lost, or a racing reconcile won.
    Existing(String),
    /// The engine refused the container; the message says why.
    Refused(String),
}

async fn create(run: &TaskRun<'_>, plan: &ContainerPlan) -> Result<Created, ReconcileError> {
    let docker = &run.ctx.docker;
    let options = CreateContainerOptionsBuilder::new()
        .name(&plan.name)
        .build();
    let error = match docker
        .create_container(Some(options), plan.create.clone())
        .await
    {
        Ok(response) => return Ok(Created::New(response.id)),
        Err(error) => error,
    };
    match status_code(&error) {
        Some(409) => {
            let existing =
                docker
                    .inspect_container(&plan.name, None)
                    .await
                    .map_err(docker_error(
                        &run.key,
                        "inspect the container holding its name",
                    ))?;
            let uid = existing
                .config
                .and_then(|config| config.labels)
                .and_then(|labels| labels.get(LABEL_TASK_UID).cloned());
            let id = existing.id.unwrap_or_default();
            if uid.as_deref() == Some(run.task.metadata.uid.as_str()) {
                Ok(Created::Existing(id))
            } else {
                Ok(Created::Refused(format!(
                    "the container name {} is taken by container {id}, which dctl did not \
                     create for this task; remove it",
                    plan.name
                )))
            }
        }
        // The image went away since it was checked: check (and pull) again.
        Some(404) => Err(docker_error(&run.key, "create its container")(error)),
        Some(_) => Ok(Created::Refused(format!(
            "cannot create container {}: {}",
            plan.name,
            engine_message(&error)
        ))),
        None => Err(docker_error(&run.key, "create its container")(error)),
    }
}

/// Connects container `id` to each of `joins` not in `joined`; Docker attaches only one
/// network at create.
async fn connect(
    run: &TaskRun<'_>,
    id: &str,
    joins: &[NetworkJoin],
    joined: &BTreeSet<String>,
) -> Result<(), ReconcileError> {
    for join in joins.iter().filter(|join| !joined.contains(&join.network)) {
        let request = NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(join.endpoint()),
        };
        match run.ctx.docker.connect_network(&join.network, request).await {
            Ok(()) => {}
            // 403 "endpoint … already exists in network": joined by an earlier attempt.
            Err(error) if matches!(status_code(&error), Some(403 | 409)) => {}
            Err(error) => return Err(docker_error(&run.key, "connect its networks")(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_images_for_the_pull() {
        let cases = [
            ("web:1", ("web", "1")),
            ("web", ("web", "latest")),
            ("dctl-demo/web:1", ("dctl-demo/web", "1")),
            ("localhost:5000/web", ("localhost:5000/web", "latest")),
            ("localhost:5000/web:2", ("localhost:5000/web", "2")),
            ("web@sha256:abc", ("web", "sha256:abc")),
        ];
        for (image, expected) in cases {
            assert_eq!(split_image(image), expected, "{image}");
        }
    }
}
