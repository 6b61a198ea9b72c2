//! selfHeal's ears: a change by hand to an object a GitSync manages triggers that GitSync.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use dctl_apis::{ObjectMeta, Resource};
use dctl_runtime::apply::managed_by;
use dctl_runtime::controller::{Trigger, TriggerReason};
use dctl_runtime::store::Store;
use dctl_runtime::{watcher, ObjectKey};
use futures::{stream, Stream, StreamExt};

/// What of an object an apply sets, hashed: its spec (through `generation`, which only a
/// spec change bumps), labels and annotations. Status writes leave it as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    applied: u64,
    owner: Option<ObjectKey>,
}

impl Seen {
    fn of(meta: &ObjectMeta) -> Seen {
        let mut hasher = DefaultHasher::new();
        (meta.generation, &meta.labels, &meta.annotations).hash(&mut hasher);
        Seen {
            applied: hasher.finish(),
            owner: managed_by(meta),
        }
    }
}

/// Triggers for the GitSyncs whose objects of kind `K` were changed (spec, labels or
/// annotations) or deleted; status writes trigger nothing. Objects seen in a (re)list are
/// only remembered: the GitSyncs' own list syncs them all anyway.
pub fn owner_triggers<K: Resource>(store: Store) -> impl Stream<Item = Trigger> {
    let mut seen: HashMap<ObjectKey, Seen> = HashMap::new();
    watcher::watcher::<K>(store, watcher::Config::default()).flat_map(move |event| {
        let triggers = match event {
            Ok(watcher::Event::InitApply(object)) => {
                seen.insert(ObjectKey::of(&object), Seen::of(object.meta()));
                Vec::new()
            }
            Ok(watcher::Event::Apply(object)) => {
                let now = Seen::of(object.meta());
                let before = seen.insert(ObjectKey::of(&object), now.clone());
                if before.as_ref() == Some(&now) {
                    Vec::new()
                } else {
                    owners(before.and_then(|b| b.owner), now.owner, &object)
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let before = seen.remove(&ObjectKey::of(&object));
                let owner = managed_by(object.meta());
                owners(before.and_then(|b| b.owner), owner, &object)
            }
            Ok(_) => Vec::new(),
            Err(error) => {
                tracing::warn!(kind = %K::KIND, %error, "gitsync selfHeal watch error; it recovers by itself");
                Vec::new()
            }
        };
        stream::iter(triggers)
    })
}

/// The GitSyncs to wake: the one that managed the object and the one that does now.
fn owners<K: Resource>(
    before: Option<ObjectKey>,
    now: Option<ObjectKey>,
    object: &K,
) -> Vec<Trigger> {
    let mut keys: Vec<ObjectKey> = before.into_iter().chain(now).collect();
    keys.dedup();
    keys.into_iter()
        .map(|key| Trigger::new(key, related(object)))
        .collect()
}

fn related<K: Resource>(object: &K) -> TriggerReason {
    TriggerReason::Related {
        kind: K::KIND,
        key: ObjectKey::of(object),
    }
}
