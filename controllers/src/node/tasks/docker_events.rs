//! Turns Docker's events about this node's containers into triggers of their tasks.
//!
//! A container that dies, is killed, runs out of memory, starts or is removed — by dctl or
//! by hand — triggers its task's key, read from the container's labels, so the task's
//! status follows within moments instead of at the next resync.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bollard::errors::Error as DockerError;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use dctl_runtime::controller::{Trigger, TriggerReason};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::observed::task_of;
use crate::node::container::LABEL_NODE;
use crate::node::error_chain;

/// The container events that can change a task's status.
const ACTIONS: [&str; 5] = ["start", "die", "kill", "oom", "destroy"];

/// 500 ms doubling to 30 s, with jitter: a restarting engine is back within seconds, a
/// stopped one should not be hammered.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Triggers for the tasks of `node` whose containers Docker reports events about.
///
/// # Recovery
/// When the engine stops answering, the stream logs it, backs off (up to 30 s) and
/// subscribes again from the time of the last event it saw, so events in between are
/// replayed where the engine still has them; the controller's resync covers the rest.
/// The stream never ends.
pub fn docker_event_triggers(docker: Docker, node: String) -> impl Stream<Item = Trigger> + Send {
    let state = Subscription {
        docker,
        node,
        events: None,
        backoff: backoff(),
        delay: None,
        since: None,
        failing: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let trigger = state.next().await;
        Some((trigger, state))
    })
}

struct Subscription {
    docker: Docker,
    node: String,
    events: Option<BoxStream<'static, Result<EventMessage, DockerError>>>,
    backoff: ExponentialBackoff,
    /// Wait this long before subscribing again: set after a failure.
    delay: Option<Duration>,
    /// The time (unix seconds) of the last event seen, to resume from.
    since: Option<i64>,
    /// Whether the last attempt failed (to log the recovery once).
    failing: bool,
}

impl Subscription {
    async fn next(&mut self) -> Trigger {
        loop {
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            let events = match &mut self.events {
                Some(events) => events,
                None => self.events.insert(self.subscribe()),
            };
            match events.next().await {
                Some(Ok(message)) => {
                    if self.failing {
                        tracing::info!(node = self.node, "Docker events are back");
                        self.failing = false;
                    }
                    self.backoff = backoff();
                    self.since = message.time.or(self.since);
                    if let Some(trigger) = trigger_of(&message) {
                        return trigger;
                    }
                }
                Some(Err(error)) => self.broken(&error_chain(&error)),
                None => self.broken("the engine closed the event stream"),
            }
        }
    }

    fn subscribe(&self) -> BoxStream<'static, Result<EventMessage, DockerError>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_NODE}={}", self.node)],
            ),
            (
                "event".to_string(),
                ACTIONS.iter().map(ToString::to_string).collect(),
            ),
        ]);
        let mut options = EventsOptionsBuilder::new().filters(&filters);
        if let Some(since) = self.since {
            options = options.since(&since.to_string());
        }
        self.docker.events(Some(options.build())).boxed()
    }

    fn broken(&mut self, reason: &str) {
        self.events = None;
        self.delay = self.backoff.next();
        let retry_in = self.delay.unwrap_or_default();
        // The first failure is what an operator needs to see; repeats are noise.
        if self.failing {
            tracing::debug!(
                node = self.node,
                reason,
                ?retry_in,
                "Docker events still unavailable"
            );
        } else {
            tracing::warn!(
                node = self.node,
                reason,
                ?retry_in,
                "lost Docker's event stream; task status may lag until it is back"
            );
        }
        self.failing = true;
    }
}

/// The trigger for an event, if it names a task (the contract's labels are among the
/// actor's attributes).
fn trigger_of(message: &EventMessage) -> Option<Trigger> {
    let attributes = message.actor.as_ref()?.attributes.as_ref()?;
    let (key, _) = task_of(attributes)?;
    tracing::debug!(
        task = %key,
        action = message.action.as_deref().unwrap_or(""),
        "Docker event"
    );
    // Docker's event is news about the task's container: the task's own state changed.
    Some(Trigger::new(key, TriggerReason::Applied))
}

#[cfg(test)]
mod tests {
    use bollard::models::EventActor;
    use dctl_runtime::ObjectKey;

    use super::*;
    use crate::node::container::{LABEL_NAMESPACE, LABEL_TASK, LABEL_TASK_UID};

    #[test]
    fn events_trigger_the_task_named_by_the_labels() {
        let attributes = HashMap::from([
            (LABEL_NAMESPACE.to_string(), "demo".to_string()),
            (LABEL_TASK.to_string(), "web.1.abcde".to_string()),
            (LABEL_TASK_UID.to_string(), "u-1".to_string()),
            ("exitCode".to_string(), "137".to_string()),
        ]);
        let message = EventMessage {
            action: Some("die".into()),
            actor: Some(EventActor {
                id: Some("c0ffee".into()),
                attributes: Some(attributes),
            }),
            ..Default::default()
        };
        let trigger = trigger_of(&message).unwrap();
        assert_eq!(trigger.key, ObjectKey::new("demo", "web.1.abcde"));
        let unlabelled = EventMessage {
            action: Some("die".into()),
            ..Default::default()
        };
        assert_eq!(trigger_of(&unlabelled), None);
    }
}
