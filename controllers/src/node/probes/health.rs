//! Docker's own HEALTHCHECK, read as probe results: `unhealthy` fails liveness, `starting`
//! keeps the task out of traffic.

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerState, HealthStatusEnum};
use bollard::Docker;

/// How long a HEALTHCHECK's last output may be in a message.
const OUTPUT_LIMIT: usize = 200;

/// What the engine says of a container's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// The container has no HEALTHCHECK (or it is disabled).
    None,
    Starting,
    Healthy,
    /// With the last check's output.
    Unhealthy(String),
}

impl Health {
    /// Reads a container's state from an inspect answer.
    pub fn of(state: Option<&ContainerState>) -> Health {
        let Some(health) = state.and_then(|s| s.health.as_ref()) else {
            return Health::None;
        };
        match health.status {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => {
                let last = health
                    .log
                    .as_ref()
                    .and_then(|log| log.last())
                    .map(|result| {
                        let output = result.output.as_deref().unwrap_or_default().trim();
                        let output: String = output.chars().take(OUTPUT_LIMIT).collect();
                        match (result.exit_code, output.is_empty()) {
                            (Some(code), true) => format!("exit code {code}"),
                            (Some(code), false) => format!("exit code {code}: {output}"),
                            (None, _) => output,
                        }
                    })
                    .filter(|text| !text.is_empty());
                Health::Unhealthy(match last {
                    Some(last) => format!("Docker HEALTHCHECK unhealthy: {last}"),
                    None => "Docker HEALTHCHECK unhealthy".into(),
                })
            }
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Health::None
    }
}

/// The health of container `id`; `None` when the container is gone.
///
/// # Errors
/// When Docker does not answer.
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<Health>, DockerError> {
    match docker.inspect_container(id, None).await {
        Ok(inspect) => Ok(Some(Health::of(inspect.state.as_ref()))),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{Health as DockerHealth, HealthcheckResult};

    use super::*;

    fn state(status: Option<HealthStatusEnum>, log: Vec<(i64, &str)>) -> ContainerState {
        let log = log
            .into_iter()
            .map(|(code, output)| HealthcheckResult {
                exit_code: Some(code),
                output: Some(output.to_string()),
                ..Default::default()
            })
            .collect();
        ContainerState {
            health: Some(DockerHealth {
                status,
                failing_streak: None,
                log: Some(log),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_docker_health() {
        use HealthStatusEnum::*;
        let cases = [
            (None, Health::None),
            (Some(state(Some(NONE), vec![])), Health::None),
            (Some(state(Some(STARTING), vec![])), Health::Starting),
            (Some(state(Some(HEALTHY), vec![(0, "ok")])), Health::Healthy),
            (
                Some(state(Some(UNHEALTHY), vec![(0, "ok"), (1, "HTTP 500\n")])),
                Health::Unhealthy("Docker HEALTHCHECK unhealthy: exit code 1: HTTP 500".into()),
            ),
            (
                Some(state(Some(UNHEALTHY), vec![])),
                Health::Unhealthy("Docker HEALTHCHECK unhealthy".into()),
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(Health::of(state.as_ref()), expected, "{state:?}");
        }
        assert!(Health::of(Some(&ContainerState::default())).is_none());
    }
}
