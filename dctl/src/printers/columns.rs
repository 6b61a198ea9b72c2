//! The table columns of each kind, as `kubectl get` and `docker service ls|ps` show them.

use chrono::{DateTime, Utc};
use dctl_apis::meta::find_condition;
use dctl_apis::service::PublishMode;
use dctl_apis::task::TaskState;
use dctl_apis::{
    Condition, ConditionStatus, Endpoints, Event, GitSync, Network, Node, Resource, Service,
    ServiceRevision, Task,
};

/// A kind that `dctl get` can print as a table.
pub trait Printable: Resource {
    /// Column titles after NAMESPACE (which the printer adds with `-A`).
    fn columns(wide: bool) -> &'static [&'static str];
    /// The cells, in the order of `columns`.
    fn row(&self, wide: bool, now: DateTime<Utc>) -> Vec<String>;
}

impl Printable for Service {
    fn columns(wide: bool) -> &'static [&'static str] {
        if wide {
            &[
                "NAME",
                "MODE",
                "READY",
                "UP-TO-DATE",
                "IMAGE",
                "PORTS",
                "AGE",
            ]
        } else {
            &["NAME", "MODE", "READY", "IMAGE", "AGE"]
        }
    }

    fn row(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let desired = match self.spec.mode {
            dctl_apis::service::ServiceMode::Replicated => {
                self.spec.replicas.unwrap_or(1).to_string()
            }
            // A global service wants one task per eligible node; status knows how many.
            dctl_apis::service::ServiceMode::Global => status.replicas.to_string(),
        };
        let mode = self.spec.mode.to_string();
        let ready = format!("{}/{}", status.ready_replicas, desired);
        let age = age(&self.metadata.creation_timestamp, now);
        if wide {
            let ports = self
                .spec
                .publish
                .iter()
                .map(|p| match p.mode {
                    // Like `docker service ls`: `*` is every node, through the mesh.
                    PublishMode::Ingress => {
                        format!("*:{}->{}/{}", p.port, p.target_port, p.protocol)
                    }
                    PublishMode::Host => {
                        format!("{}->{}/{} (host)", p.port, p.target_port, p.protocol)
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            vec![
                self.metadata.name.clone(),
                mode,
                ready,
                status.updated_replicas.to_string(),
                self.spec.template.image.clone(),
                none_if_empty(ports),
                age,
            ]
        } else {
            vec![
                self.metadata.name.clone(),
                mode,
                ready,
                self.spec.template.image.clone(),
                age,
            ]
        }
    }
}

impl Printable for Task {
    fn columns(wide: bool) -> &'static [&'static str] {
        if wide {
            &[
                "NAME",
                "SERVICE",
                "NODE",
                "DESIRED",
                "STATE",
                "READY",
                "RESTARTS",
                "AGE",
                "IMAGE",
                "CONTAINER",
                "ERROR",
            ]
        } else {
            &[
                "NAME", "SERVICE", "NODE", "DESIRED", "STATE", "READY", "AGE", "ERROR",
            ]
        }
    }

    fn row(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let node = self
            .spec
            .node_name
            .clone()
            .unwrap_or_else(|| "<none>".into());
        let desired = self.spec.desired_state.to_string();
        let state = status.state.to_string();
        let ready = condition_word(find_condition(&status.conditions, "Ready"));
        // Like `docker service ps`: why a task failed, or why it is still waiting.
        let error = match (&status.error, status.state) {
            (Some(error), _) => error.clone(),
            (None, TaskState::Pending) => status.message.clone(),
            (None, _) => String::new(),
        };
        let error = none_if_empty(error);
        let mut row = vec![
            self.metadata.name.clone(),
            self.spec.service_name.clone(),
            node,
            desired,
            state,
            ready,
        ];
        if wide {
            row.push(status.restart_count.to_string());
            row.push(age(&self.metadata.creation_timestamp, now));
            row.push(self.spec.template.image.clone());
            row.push(none_if_empty(
                status
                    .container_id
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect(),
            ));
        } else {
            row.push(age(&self.metadata.creation_timestamp, now));
        }
        row.push(error);
        row
    }
}

impl Printable for Node {
    fn columns(wide: bool) -> &'static [&'static str] {
        if wide {
            &[
                "NAME",
                "STATUS",
                "AVAILABILITY",
                "ROLE",
                "AGE",
                "VERSION",
                "ADDRESS",
                "OS/ARCH",
                "LABELS",
            ]
        } else {
            &["NAME", "STATUS", "AVAILABILITY", "ROLE", "AGE", "VERSION"]
        }
    }

    fn row(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let ready = match find_condition(&status.conditions, "Ready") {
            Some(c) if c.status == ConditionStatus::True => "Ready",
            Some(c) if c.status == ConditionStatus::False => "NotReady",
            _ => "Unknown",
        };
        let mut row = vec![
            self.metadata.name.clone(),
            ready.to_string(),
            self.spec.availability.to_string(),
            self.spec.role.to_string(),
            age(&self.metadata.creation_timestamp, now),
            none_if_empty(status.engine_version.clone()),
        ];
        if wide {
            row.push(none_if_empty(status.addresses.join(",")));
            let platform = &status.platform;
            row.push(if platform.os.is_empty() {
                "<none>".into()
            } else {
                format!("{}/{}", platform.os, platform.architecture)
            });
            let labels: Vec<String> = self
                .spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.push(none_if_empty(labels.join(",")));
        }
        row
    }
}

impl Printable for Network {
    fn columns(_wide: bool) -> &'static [&'static str] {
        &["NAME", "DRIVER", "SUBNET", "GATEWAY", "READY", "AGE"]
    }

    fn row(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        vec![
            self.metadata.name.clone(),
            self.spec.driver.clone(),
            none_if_empty(self.spec.subnet.clone().unwrap_or_default()),
            none_if_empty(self.spec.gateway.clone().unwrap_or_default()),
            condition_word(find_condition(&status.conditions, "Ready")),
            age(&self.metadata.creation_timestamp, now),
        ]
    }
}

impl Printable for Event {
    fn columns(_wide: bool) -> &'static [&'static str] {
        &["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"]
    }

    fn row(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let object = &self.spec.involved_object;
        vec![
            age(&self.spec.last_timestamp, now),
            self.spec.type_.to_string(),
            self.spec.reason.clone(),
            format!("{}/{}", object.kind.to_ascii_lowercase(), object.name),
            self.spec.count.to_string(),
            self.spec.message.clone(),
        ]
    }
}

impl Printable for GitSync {
    fn columns(wide: bool) -> &'static [&'static str] {
        if wide {
            &[
                "NAME",
                "REPO",
                "REF/PATH",
                "REVISION",
                "READY",
                "AGE",
                "INVENTORY",
                "LAST SYNC",
                "MESSAGE",
            ]
        } else {
            &["NAME", "REPO", "REF/PATH", "REVISION", "READY", "AGE"]
        }
    }

    fn row(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let ready = find_condition(&status.conditions, "Ready");
        let ready_word = if self.spec.suspend {
            "Suspended".to_string()
        } else {
            condition_word(ready)
        };
        let mut row = vec![
            self.metadata.name.clone(),
            self.spec.repo.clone(),
            format!("{}:{}", self.spec.ref_, self.spec.path),
            none_if_empty(status.short_revision().unwrap_or_default()),
            ready_word,
            age(&self.metadata.creation_timestamp, now),
        ];
        if wide {
            row.push(status.inventory.len().to_string());
            row.push(age(&status.last_sync_time, now));
            row.push(none_if_empty(
                ready.map(|c| c.message.clone()).unwrap_or_default(),
            ));
        }
        row
    }
}

impl Printable for Endpoints {
    fn columns(_wide: bool) -> &'static [&'static str] {
        &["NAME", "ENDPOINTS", "AGE"]
    }

    /// kubectl's `10.0.0.1:31234,10.0.0.2:31240 + 3 more...`: Ready endpoints only.
    fn row(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        const SHOWN: usize = 3;
        let ready: Vec<String> = self
            .spec
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.ready)
            .flat_map(|endpoint| {
                self.spec
                    .ports
                    .iter()
                    .filter_map(|port| endpoint.socket_address(&port.name))
            })
            .collect();
        let mut text = ready
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if ready.len() > SHOWN {
            text.push_str(&format!(" + {} more...", ready.len() - SHOWN));
        }
        vec![
            self.metadata.name.clone(),
            none_if_empty(text),
            age(&self.metadata.creation_timestamp, now),
        ]
    }
}

impl Printable for ServiceRevision {
    fn columns(_wide: bool) -> &'static [&'static str] {
        &["NAME", "SERVICE", "REVISION", "IMAGE", "AGE"]
    }

    fn row(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        vec![
            self.metadata.name.clone(),
            self.spec.service.clone(),
            self.spec.revision.to_string(),
            self.spec.template.image.clone(),
            age(&self.metadata.creation_timestamp, now),
        ]
    }
}

/// `True` / `False` / `Unknown` for a condition, `<none>` when it is not set at all.
fn condition_word(condition: Option<&Condition>) -> String {
    match condition {
        Some(c) => format!("{:?}", c.status),
        None => "<none>".into(),
    }
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

/// An age as kubectl prints it (`45s`, `5m30s`, `3h`, `2d4h`, `400d`, `3y`).
pub fn age(since: &Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match since {
        Some(t) => human_duration((now - *t).num_seconds().max(0)),
        None => "<unknown>".into(),
    }
}

/// Kubernetes' `duration.HumanDuration`: precision falls as the duration grows.
fn human_duration(seconds: i64) -> String {
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if hours < 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_lose_precision_as_kubectl_does() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (180, "3m"),
            (45 * 60, "45m"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (100 * 86_400, "100d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(seconds), want, "{seconds}s");
        }
    }
}
