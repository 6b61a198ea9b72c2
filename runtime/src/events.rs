//! Records what happened to objects as Events, folding repeats into one Event with a count.

use dctl_apis::event::{EventSource, EventSpec, EventType, ObjectReference};
use dctl_apis::meta::DEFAULT_NAMESPACE;
use dctl_apis::{Event, ObjectMeta};

use crate::store::{Store, StoreError};

/// How often `publish` re-reads an Event that others keep bumping at the same moment.
const PUBLISH_ATTEMPTS: usize = 10;

/// Publishes events for one component (`scheduler` on host `h1`), Kubernetes style: the
/// same (object, type, reason, message) again bumps `count` and `lastTimestamp` of one
/// Event instead of writing another.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    source: EventSource,
}

impl Recorder {
    pub fn new(store: Store, source: EventSource) -> Self {
        Recorder { store, source }
    }

    /// Records that `reason` (one CamelCase word: `Scheduled`, `Unhealthy`) happened to
    /// `object`, with `message` (one line, past tense), and returns the Event as stored.
    ///
    /// # Errors
    /// When etcd does not answer, or others keep bumping the same Event faster than this
    /// call can (`Conflict`). Events are for humans: callers usually log the error and go on.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event, StoreError> {
        let namespace = event_namespace(object);
        let name = event_name(object, type_, reason, message);
        for _ in 0..PUBLISH_ATTEMPTS {
            let now = crate::store::now();
            let written = match self.store.try_get::<Event>(namespace, &name).await? {
                None => {
                    let spec = EventSpec {
                        involved_object: object.clone(),
                        type_,
                        reason: reason.to_string(),
                        message: message.to_string(),
                        count: 1,
                        first_timestamp: Some(now),
                        last_timestamp: Some(now),
                        source: self.source.clone(),
                    };
                    let event = Event::new(ObjectMeta::named(namespace, &name), spec);
                    self.store.create(&event).await
                }
                Some(mut event) => {
                    event.spec.count = event.spec.count.saturating_add(1);
                    event.spec.last_timestamp = Some(now);
                    event.spec.source = self.source.clone();
                    self.store.update(&event).await
                }
            };
            match written {
                Ok(event) => return Ok(event),
                // Someone else wrote (or removed) it in between: read it again and fold.
                Err(err) if err.is_conflict() || err.is_already_exists() || err.is_not_found() => {
                    continue
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict {
            kind: dctl_apis::Kind::Event,
            key: crate::ObjectKey::new(namespace, &name),
        })
    }
}

/// The Events about `object`, oldest first by `lastTimestamp`, for `dctl describe`.
///
/// Matches on the object's uid when the reference has one (so events of an earlier object
/// of the same name do not show), else on kind and name.
///
/// # Errors
/// When etcd does not answer or holds an Event that does not decode.
pub async fn list_for(store: &Store, object: &ObjectReference) -> Result<Vec<Event>, StoreError> {
    let listed = store.list::<Event>(Some(event_namespace(object))).await?;
    let mut events: Vec<Event> = listed
        .items
        .into_iter()
        .filter(|event| {
            let involved = &event.spec.involved_object;
            if object.uid.is_empty() {
                involved.kind == object.kind && involved.name == object.name
            } else {
                involved.uid == object.uid
            }
        })
        .collect();
    events.sort_by_key(|event| {
        let spec = &event.spec;
        (spec.last_timestamp, spec.first_timestamp)
    });
    Ok(events)
}

/// Events live in their object's namespace; those about cluster-scoped objects (Nodes)
/// in `default`, as in Kubernetes.
fn event_namespace(object: &ObjectReference) -> &str {
    match object.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => namespace,
        _ => DEFAULT_NAMESPACE,
    }
}

/// `<object-name>.<hash>`: the same for every repeat of one event, so repeats find the
/// Event to bump by name alone.
pub fn event_name(
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
) -> String {
    let identity = [
        object.uid.as_str(),
        object.kind.as_str(),
        object.namespace.as_deref().unwrap_or(""),
        object.name.as_str(),
        type_.as_str(),
        reason,
        message,
    ];
    format!("{}.{:016x}", object.name, fnv1a(&identity))
}

/// 64-bit FNV-1a over the parts, each ended by a 0 byte: small, and unlike std's hasher,
/// the same in every build, so names stay stable across upgrades.
fn fnv1a(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    parts
        .iter()
        .flat_map(|part| part.bytes().chain([0]))
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(uid: &str) -> ObjectReference {
        ObjectReference {
            kind: "Task".into(),
            namespace: Some("demo".into()),
            name: "web.1".into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn repeats_share_a_name_and_differences_do_not() {
        let name = event_name(&task("u1"), EventType::Warning, "Unhealthy", "probe failed");
        assert_eq!(
            name,
            event_name(&task("u1"), EventType::Warning, "Unhealthy", "probe failed")
        );
        assert!(name.starts_with("web.1."));
        assert_eq!(name.len(), "web.1.".len() + 16);
        for other in [
            event_name(&task("u2"), EventType::Warning, "Unhealthy", "probe failed"),
            event_name(&task("u1"), EventType::Normal, "Unhealthy", "probe failed"),
            event_name(&task("u1"), EventType::Warning, "Killing", "probe failed"),
            event_name(&task("u1"), EventType::Warning, "Unhealthy", "probe ok"),
        ] {
            assert_ne!(name, other);
        }
    }

    #[test]
    fn names_are_the_same_in_every_build() {
        // FNV-1a of nothing is its offset basis; a name computed once stays the name.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        let name = event_name(&task("u1"), EventType::Normal, "Scheduled", "bound to n1");
        assert_eq!(name, "web.1.8433fbc338f354ce");
    }

    #[test]
    fn cluster_scoped_objects_get_events_in_default() {
        let node = ObjectReference {
            kind: "Node".into(),
            namespace: None,
            name: "n1".into(),
            uid: "u".into(),
        };
        assert_eq!(event_namespace(&node), "default");
        assert_eq!(event_namespace(&task("u")), "demo");
    }
}
