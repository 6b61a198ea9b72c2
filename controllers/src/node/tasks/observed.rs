//! What Docker shows of a task's containers: found by label, read into plain facts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, HealthStatusEnum,
};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use dctl_runtime::ObjectKey;

use crate::node::container::{LABEL_NAMESPACE, LABEL_NODE, LABEL_TASK, LABEL_TASK_UID};

/// One container of this node, as listed: enough to tell whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// The task it belongs to, from its labels.
    pub key: ObjectKey,
    pub task_uid: String,
    pub running: bool,
}

/// Where a container is in its life, as far as the task runtime cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, never started (or a start that failed before the process ran).
    Created,
    Running,
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    /// Paused, restarting, being removed: wait and look again.
    Transient(String),
}

/// One container, inspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub phase: Phase,
    /// The Docker networks the container is attached to (a created one has no address
    /// on them yet).
    pub networks: BTreeSet<String>,
    /// IP address by Docker network name, for the networks the container has one on.
    pub addresses: BTreeMap<String, String>,
    /// Docker's own error text when a start failed (`exec: "/x": not found`).
    pub error: Option<String>,
    /// The container has a Docker HEALTHCHECK (from its image or its create options).
    pub health_check: bool,
}

impl Observed {
    /// Reads an inspect answer; `None` when it lacks an id (never from a real engine).
    pub fn from_inspect(inspect: ContainerInspectResponse) -> Option<Observed> {
        let id = inspect.id?;
        let state = inspect.state.unwrap_or_default();
        let phase = match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => Phase::Running,
            Some(ContainerStateStatusEnum::CREATED) => Phase::Created,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                Phase::Exited {
                    exit_code: state.exit_code.unwrap_or_default(),
                    oom_killed: state.oom_killed.unwrap_or_default(),
                }
            }
            other => Phase::Transient(other.map(|s| s.to_string()).unwrap_or_default()),
        };
        let endpoints = inspect
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default();
        let networks = endpoints.keys().cloned().collect();
        let addresses = endpoints
            .into_iter()
            .filter_map(|(network, endpoint)| {
                let address = endpoint.ip_address.filter(|a| !a.is_empty())?;
                Some((network, address))
            })
            .collect();
        let health_check = state.health.as_ref().is_some_and(|health| {
            !matches!(
                health.status,
                None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY)
            )
        });
        Some(Observed {
            id,
            phase,
            networks,
            addresses,
            error: state.error.filter(|e| !e.is_empty()),
            health_check,
        })
    }

    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The container's addresses, those on `networks` first and in that order (the
    /// task's primary network leads), then any others by network name.
    pub fn addresses_in_order(&self, networks: &[String]) -> Vec<String> {
        let mut ordered: Vec<String> = networks
            .iter()
            .filter_map(|network| self.addresses.get(network).cloned())
            .collect();
        ordered.extend(
            self.addresses
                .iter()
                .filter(|(network, _)| !networks.contains(network))
                .map(|(_, address)| address.clone()),
        );
        ordered
    }
}

/// The task a container belongs to, from its labels; `None` for a container without the
/// contract's labels, which the task runtime never touches.
pub fn task_of(labels: &HashMap<String, String>) -> Option<(ObjectKey, String)> {
    let namespace = labels.get(LABEL_NAMESPACE).filter(|n| !n.is_empty())?;
    let task = labels.get(LABEL_TASK).filter(|n| !n.is_empty())?;
    let uid = labels.get(LABEL_TASK_UID).cloned().unwrap_or_default();
    Some((ObjectKey::new(namespace, task), uid))
}

fn listed(summary: ContainerSummary) -> Option<Listed> {
    let (key, task_uid) = task_of(summary.labels.as_ref()?)?;
    let running = summary
        .state
        .is_some_and(|state| state.to_string() == "running");
    Some(Listed {
        id: summary.id?,
        key,
        task_uid,
        running,
    })
}

/// The containers of `node`, running or not; only those of task `key` when given.
///
/// # Errors
/// When Docker does not answer.
pub async fn list(
    docker: &Docker,
    node: &str,
    key: Option<&ObjectKey>,
) -> Result<Vec<Listed>, DockerError> {
    let mut labels = vec![format!("{LABEL_NODE}={node}")];
    if let Some(key) = key {
        labels.push(format!("{LABEL_NAMESPACE}={}", key.namespace));
        labels.push(format!("{LABEL_TASK}={}", key.name));
    }
    let filters = HashMap::from([("label".to_string(), labels)]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker.list_containers(Some(options)).await?;
    Ok(summaries.into_iter().filter_map(listed).collect())
}

/// The container `id` inspected; `None` when it is gone.
///
/// # Errors
/// When Docker does not answer.
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<Observed>, DockerError> {
    match docker.inspect_container(id, None).await {
        Ok(inspect) => Ok(Observed::from_inspect(inspect)),
        Err(error) if status_code(&error) == Some(404) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The HTTP status of an error the engine answered with; `None` when it did not answer.
pub fn status_code(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message for an error it answered with, else the error itself.
pub fn engine_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => crate::node::error_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState, EndpointSettings, NetworkSettings};

    use super::*;

    fn inspect(status: ContainerStateStatusEnum, exit_code: i64, oom: bool) -> Observed {
        let networks = HashMap::from([
            (
                "demo_backend".to_string(),
                EndpointSettings {
                    ip_address: Some("10.1.0.2".into()),
                    ..Default::default()
                },
            ),
            (
                "demo_metrics".to_string(),
                EndpointSettings {
                    ip_address: Some("10.3.0.2".into()),
                    ..Default::default()
                },
            ),
            (
                "demo_frontend".to_string(),
                EndpointSettings {
                    ip_address: Some(String::new()),
                    ..Default::default()
                },
            ),
        ]);
        Observed::from_inspect(ContainerInspectResponse {
            id: Some("c0ffee".into()),
            state: Some(ContainerState {
                status: Some(status),
                exit_code: Some(exit_code),
                oom_killed: Some(oom),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(networks),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn reads_the_phase() {
        use ContainerStateStatusEnum as S;
        let cases = [
            (S::RUNNING, 0, false, Phase::Running),
            (S::CREATED, 0, false, Phase::Created),
            (
                S::EXITED,
                137,
                true,
                Phase::Exited {
                    exit_code: 137,
                    oom_killed: true,
                },
            ),
            (
                S::DEAD,
                1,
                false,
                Phase::Exited {
                    exit_code: 1,
                    oom_killed: false,
                },
            ),
            (S::PAUSED, 0, false, Phase::Transient("paused".into())),
        ];
        for (status, code, oom, expected) in cases {
            assert_eq!(inspect(status, code, oom).phase, expected, "{status}");
        }
    }

    #[test]
    fn orders_addresses_by_the_task_networks() {
        let observed = inspect(ContainerStateStatusEnum::RUNNING, 0, false);
        assert_eq!(
            observed.addresses_in_order(&["demo_metrics".into(), "demo_backend".into()]),
            ["10.3.0.2", "10.1.0.2"]
        );
        assert_eq!(
            observed.addresses_in_order(&["demo_backend".into()]),
            ["10.1.0.2", "10.3.0.2"]
        );
    }

    #[test]
    fn reads_the_task_from_labels() {
        let labels = HashMap::from([
            (LABEL_NAMESPACE.to_string(), "demo".to_string()),
            (LABEL_TASK.to_string(), "web.1.abcde".to_string()),
            (LABEL_TASK_UID.to_string(), "u-1".to_string()),
        ]);
        assert_eq!(
            task_of(&labels),
            Some((ObjectKey::new("demo", "web.1.abcde"), "u-1".to_string()))
        );
        assert_eq!(task_of(&HashMap::new()), None);
    }
}
