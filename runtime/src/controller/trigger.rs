//! Triggers: which key to reconcile and, for tracing only, why.

use std::collections::HashSet;
use std::fmt;

use dctl_apis::{Kind, Resource};
use futures::{stream, Stream, StreamExt};

use crate::object_key::ObjectKey;
use crate::watcher;

/// A request to reconcile `key`. The reconcile reads the object's latest state itself, so a
/// trigger carries no object: many triggers for one key mean the same thing as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub key: ObjectKey,
    pub reason: TriggerReason,
}

/// Why a key was queued; shown on the reconcile's span, never used to decide anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerReason {
    /// The object was created or changed.
    Applied,
    /// The object was deleted (the reconcile will find it gone).
    Deleted,
    /// The object is part of a full (re)list of its kind.
    Listed,
    /// An object of another kind that this one depends on changed (a Task of a Service, say).
    Related { kind: Kind, key: ObjectKey },
    /// The periodic resync, which catches what no event announces.
    Resync,
    /// The previous reconcile asked to run again after a delay.
    Requeue,
    /// The previous reconcile failed; this is the retry.
    Backoff,
}

impl Trigger {
    pub fn new(key: ObjectKey, reason: TriggerReason) -> Self {
        Trigger { key, reason }
    }

    /// Reconcile `owner` because `object`, of kind `R`, changed: how owned or otherwise
    /// dependent objects are mapped to the key that must converge.
    pub fn related<R: Resource>(owner: ObjectKey, object: &R) -> Self {
        Trigger::new(
            owner,
            TriggerReason::Related {
                kind: R::KIND,
                key: ObjectKey::of(object),
            },
        )
    }
}

impl fmt::Display for TriggerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerReason::Applied => f.write_str("applied"),
            TriggerReason::Deleted => f.write_str("deleted"),
            TriggerReason::Listed => f.write_str("listed"),
            TriggerReason::Related { kind, key } => write!(f, "related {kind} {key} changed"),
            TriggerReason::Resync => f.write_str("resync"),
            TriggerReason::Requeue => f.write_str("requeue"),
            TriggerReason::Backoff => f.write_str("retry after error"),
        }
    }
}

/// Maps watcher events of a kind to triggers of their own keys.
///
/// The keys of a (re)list are held back until its `InitDone`, when the reflector has
/// swapped the whole list in: a reconcile started earlier would read the cache from
/// before the relist. At that point, keys that were known before the relist but are
/// missing from it — deleted while the watch was down, so no `Delete` event will ever
/// come — are triggered as `Deleted`.
///
/// Errors are logged and skipped: the watcher recovers from them by itself.
pub fn triggers_from_events<K, E>(
    events: impl Stream<Item = Result<watcher::Event<K>, E>>,
) -> impl Stream<Item = Trigger>
where
    K: Resource,
    E: fmt::Display,
{
    let mut keys = KnownKeys::default();
    events
        .map(move |event| match event {
            Ok(event) => keys.triggers_for(event),
            Err(error) => {
                tracing::warn!(kind = %K::KIND, %error, "watch error; no triggers from it");
                Vec::new()
            }
        })
        .flat_map(stream::iter)
}

/// The keys a kind's event stream has shown to exist, and those of a relist in progress.
#[derive(Debug, Default)]
struct KnownKeys {
    known: HashSet<ObjectKey>,
    relisting: Option<HashSet<ObjectKey>>,
}

impl KnownKeys {
    fn triggers_for<K: Resource>(&mut self, event: watcher::Event<K>) -> Vec<Trigger> {
        use watcher::Event;
        match event {
            Event::Apply(object) => {
                let key = ObjectKey::of(&object);
                self.known.insert(key.clone());
                vec![Trigger::new(key, TriggerReason::Applied)]
            }
            Event::Delete(object) => {
                let key = ObjectKey::of(&object);
                self.known.remove(&key);
                vec![Trigger::new(key, TriggerReason::Deleted)]
            }
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let key = ObjectKey::of(&object);
                match &mut self.relisting {
                    Some(listed) => {
                        listed.insert(key);
                        Vec::new()
                    }
                    // Without an `Init`, the reflector applies the object directly too.
                    None => {
                        self.known.insert(key.clone());
                        vec![Trigger::new(key, TriggerReason::Listed)]
                    }
                }
            }
            Event::InitDone => {
                let Some(listed) = self.relisting.take() else {
                    return Vec::new();
                };
                let previous = std::mem::replace(&mut self.known, listed);
                let mut vanished: Vec<_> = previous.difference(&self.known).cloned().collect();
                let mut present: Vec<_> = self.known.iter().cloned().collect();
                // Sorted so a relist triggers in a stable order (and tests can compare).
                vanished.sort();
                present.sort();
                present
                    .into_iter()
                    .map(|key| Trigger::new(key, TriggerReason::Listed))
                    .chain(
                        vanished
                            .into_iter()
                            .map(|key| Trigger::new(key, TriggerReason::Deleted)),
                    )
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::{Network, ObjectMeta};
    use futures::executor::block_on;

    use super::*;
    use crate::watcher::Event;

    fn network(name: &str) -> Network {
        Network::new(
            ObjectMeta {
                name: name.to_string(),
                namespace: Some("demo".to_string()),
                ..ObjectMeta::default()
            },
            Default::default(),
        )
    }

    fn triggers(events: Vec<Event<Network>>) -> Vec<(String, TriggerReason)> {
        let events = stream::iter(events.into_iter().map(Ok::<_, String>));
        block_on(triggers_from_events(events).collect::<Vec<_>>())
            .into_iter()
            .map(|trigger| (trigger.key.name, trigger.reason))
            .collect()
    }

    fn t(name: &str, reason: TriggerReason) -> (String, TriggerReason) {
        (name.to_string(), reason)
    }

    #[test]
    fn applies_and_deletes_trigger_their_own_key_at_once() {
        assert_eq!(
            triggers(vec![
                Event::Apply(network("a")),
                Event::Delete(network("a")),
                Event::Apply(network("b")),
            ]),
            [
                t("a", TriggerReason::Applied),
                t("a", TriggerReason::Deleted),
                t("b", TriggerReason::Applied)
            ]
        );
    }

    #[test]
    fn a_list_triggers_its_keys_only_once_complete() {
        let events = stream::iter(vec![
            Ok::<_, String>(Event::Init),
            Ok(Event::InitApply(network("b"))),
            Ok(Event::InitApply(network("a"))),
            Ok(Event::InitDone),
        ]);
        let mut triggers = Box::pin(triggers_from_events(events));
        let first = block_on(triggers.next()).expect("a trigger after InitDone");
        assert_eq!(
            first,
            Trigger::new(ObjectKey::new("demo", "a"), TriggerReason::Listed)
        );
        assert_eq!(
            block_on(triggers.next()),
            Some(Trigger::new(
                ObjectKey::new("demo", "b"),
                TriggerReason::Listed
            ))
        );
        assert_eq!(block_on(triggers.next()), None);
    }

    #[test]
    fn a_relist_triggers_keys_deleted_while_the_watch_was_down() {
        assert_eq!(
            triggers(vec![
                Event::Init,
                Event::InitApply(network("a")),
                Event::InitApply(network("b")),
                Event::InitDone,
                Event::Apply(network("c")),
                // The watch fell behind compaction; "b" and "c" went meanwhile.
                Event::Init,
                Event::InitApply(network("a")),
                Event::InitApply(network("d")),
                Event::InitDone,
            ]),
            [
                t("a", TriggerReason::Listed),
                t("b", TriggerReason::Listed),
                t("c", TriggerReason::Applied),
                t("a", TriggerReason::Listed),
                t("d", TriggerReason::Listed),
                t("b", TriggerReason::Deleted),
                t("c", TriggerReason::Deleted),
            ]
        );
    }

    #[test]
    fn errors_yield_no_triggers() {
        let events = stream::iter(vec![
            Err("compacted".to_string()),
            Ok(Event::Apply(network("a"))),
        ]);
        let keys: Vec<_> = block_on(triggers_from_events::<Network, _>(events).collect());
        assert_eq!(
            keys,
            [Trigger::new(
                ObjectKey::new("demo", "a"),
                TriggerReason::Applied
            )]
        );
    }

    #[test]
    fn related_triggers_name_the_object_that_changed() {
        let trigger = Trigger::related(ObjectKey::new("demo", "web"), &network("backend"));
        assert_eq!(trigger.key, ObjectKey::new("demo", "web"));
        assert_eq!(
            trigger.reason.to_string(),
            "related Network demo/backend changed"
        );
    }
}
