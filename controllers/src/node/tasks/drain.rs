//! Takes a task out of traffic before it is stopped, and waits until the proxies agree.
//!
//! docs/task-lifecycle.md: before a task is stopped (scale-down, update, delete, drain)
//! its `Ready` condition goes `False` with reason `Terminating`; the endpoints controller
//! then marks it not ready, every live proxy applies that, and only then is the task
//! signalled. The wait is bounded: a proxy that never confirms delays a stop by at most
//! [`DRAIN_TIMEOUT`] (or the task's grace period, if shorter).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use dctl_apis::meta::{find_condition, set_condition};
use dctl_apis::task::CONDITION_READY;
use dctl_apis::{Condition, ConditionStatus, Endpoints, TaskState, TaskTemplate};
use dctl_runtime::store::Store;
use etcd_client::GetOptions;

use super::reconcile::{ReconcileError, TaskRun};
use crate::endpoints::build::REASON_TERMINATING;
use crate::node::proxy::observed_revisions;
use crate::node::registration::heartbeat_prefix;

/// The longest a stop waits for the proxies to take the task out of traffic.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the wait looks at the Endpoints and the proxies' observations again.
const POLL: Duration = Duration::from_millis(50);

/// Whether no proxy will send `task` a new connection: the Endpoints (if any) do not list
/// it as ready, and every live proxy (`alive`) that has observed these Endpoints has
/// observed at least their current revision. A proxy that never observed them has no
/// listener for them either.
pub fn drained(
    endpoints: Option<&Endpoints>,
    task: &str,
    observed: &BTreeMap<String, i64>,
    alive: &HashSet<String>,
) -> bool {
    let Some(endpoints) = endpoints else {
        return true;
    };
    if endpoints
        .spec
        .endpoints
        .iter()
        .any(|endpoint| endpoint.task == task && endpoint.ready)
    {
        return false;
    }
    let revision = endpoints.metadata.resource_version.unwrap_or_default();
    observed
        .iter()
        .all(|(node, seen)| *seen >= revision || !alive.contains(node))
}

/// The nodes whose heartbeat lease is alive.
async fn live_nodes(store: &Store) -> Result<HashSet<String>, etcd_client::Error> {
    let prefix = heartbeat_prefix();
    let response = store
        .client()
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| Some(kv.key_str().ok()?.strip_prefix(&prefix)?.to_string()))
        .collect())
}

/// One look at the store: whether the task is out of traffic everywhere.
async fn look(store: &Store, namespace: &str, service: &str, task: &str) -> Result<bool, String> {
    let endpoints = store
        .try_get::<Endpoints>(namespace, service)
        .await
        .map_err(|e| e.to_string())?;
    if endpoints.is_none() {
        return Ok(true);
    }
    let observed = observed_revisions(store, namespace, service)
        .await
        .map_err(|e| e.to_string())?;
    let alive = live_nodes(store).await.map_err(|e| e.to_string())?;
    Ok(drained(endpoints.as_ref(), task, &observed, &alive))
}

impl TaskRun<'_> {
    /// Before stopping a running task that has published ports: sets `Ready` `False`
    /// (`Terminating`), then waits until the proxies no longer send it connections,
    /// at most [`DRAIN_TIMEOUT`] or the task's grace period, whichever is shorter.
    pub(super) async fn drain(&mut self) -> Result<(), ReconcileError> {
        let Some(status) = &self.task.status else {
            return Ok(());
        };
        if status.state != TaskState::Running || status.host_ports.is_empty() {
            return Ok(());
        }
        let mut conditions = status.conditions.clone();
        let already = find_condition(&conditions, CONDITION_READY)
            .is_some_and(|c| c.reason == REASON_TERMINATING);
        if !already {
            let now = Utc::now().trunc_subsecs(3);
            set_condition(
                &mut conditions,
                Condition {
                    type_: CONDITION_READY.to_string(),
                    status: ConditionStatus::False,
                    reason: REASON_TERMINATING.to_string(),
                    message: "the task is being stopped; taken out of traffic first".into(),
                    last_transition_time: now,
                    observed_generation: None,
                },
            );
            let mut changed = self.task.clone();
            if let Some(status) = changed.status.as_mut() {
                status.conditions = conditions;
            }
            self.task = self
                .ctx
                .store
                .update_status(&changed)
                .await
                .map_err(|source| ReconcileError::WriteStatus {
                    key: self.key.clone(),
                    source,
                })?;
        }
        let grace = self
            .task
            .spec
            .template
            .stop_grace_period
            .unwrap_or(TaskTemplate::DEFAULT_STOP_GRACE_PERIOD)
            .as_std();
        let timeout = DRAIN_TIMEOUT.min(grace);
        let started = tokio::time::Instant::now();
        let service = self.task.spec.service_name.clone();
        loop {
            match look(
                &self.ctx.store,
                &self.key.namespace,
                &service,
                &self.key.name,
            )
            .await
            {
                Ok(true) => {
                    tracing::debug!(task = %self.key, waited = ?started.elapsed(), "out of traffic");
                    return Ok(());
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(task = %self.key, %error, "cannot check whether the proxies took the task out of traffic")
                }
            }
            if started.elapsed() >= timeout {
                tracing::warn!(task = %self.key, ?timeout, "the proxies did not confirm the task out of traffic in time; stopping it anyway");
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::endpoints::{Endpoint, EndpointsSpec};
    use dctl_apis::ObjectMeta;

    use super::*;

    fn endpoints(revision: i64, ready: bool) -> Endpoints {
        let mut meta = ObjectMeta::named("demo", "web");
        meta.resource_version = Some(revision);
        let endpoint = Endpoint {
            task: "web.1.a".into(),
            ready,
            terminating: !ready,
            ..Default::default()
        };
        Endpoints::new(
            meta,
            EndpointsSpec {
                ports: Vec::new(),
                endpoints: vec![endpoint],
            },
        )
    }

    #[test]
    fn waits_for_the_endpoints_then_for_every_live_proxy() {
        let observed = |list: &[(&str, i64)]| -> BTreeMap<String, i64> {
            list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        let alive: HashSet<String> = ["n1".to_string(), "n2".to_string()].into();
        let cases = [
            // Still listed as ready: not drained, whatever the proxies say.
            (Some(endpoints(10, true)), observed(&[("n1", 10)]), false),
            (
                Some(endpoints(10, false)),
                observed(&[("n1", 10), ("n2", 9)]),
                false,
            ),
            (
                Some(endpoints(10, false)),
                observed(&[("n1", 10), ("n2", 11)]),
                true,
            ),
            // A dead node's proxy is not waited for.
            (
                Some(endpoints(10, false)),
                observed(&[("n1", 10), ("n3", 2)]),
                true,
            ),
            (Some(endpoints(10, false)), observed(&[]), true),
            (None, observed(&[("n1", 1)]), true),
        ];
        for (endpoints, observed, want) in cases {
            assert_eq!(
                drained(endpoints.as_ref(), "web.1.a", &observed, &alive),
                want,
                "{observed:?}"
            );
        }
        // Another task's readiness does not matter.
        assert!(drained(
            Some(&endpoints(10, true)),
            "web.2.b",
            &observed(&[]),
            &alive
        ));
    }
}
