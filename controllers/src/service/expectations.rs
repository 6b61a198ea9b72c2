//! Remembers the controller's own writes per service until its caches show them.
//!
//! A cache lags etcd by one watch event. A reconcile that ran on a view from before its own
//! last writes would create a slot's task twice, or write with a stale resourceVersion. So a
//! service's reconcile waits until every write it made for that service is in the caches:
//! Kubernetes' `ControllerExpectations`, tracked by revision instead of by count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dctl_apis::{Kind, Resource};
use dctl_runtime::ObjectKey;

/// A write still unseen after this long is given up on (and logged): a watch that missed
/// it would have relisted by then, so waiting longer cannot help.
pub const EXPIRY: Duration = Duration::from_secs(30);

/// The writes of each service's reconciles that the caches have not shown yet.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Vec<Write>>>,
}

#[derive(Debug)]
struct Write {
    kind: Kind,
    key: ObjectKey,
    seen_when: Seen,
    at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The cache holds the object at this resourceVersion or later.
    AtLeast(i64),
    /// The cache no longer holds the object.
    Gone,
}

impl Expectations {
    /// `object` was written (created or updated) for `service`, as the store returned it.
    pub fn wrote<K: Resource>(&self, service: &ObjectKey, object: &K) {
        if let Some(revision) = object.meta().resource_version {
            self.push(
                service,
                K::KIND,
                ObjectKey::of(object),
                Seen::AtLeast(revision),
            );
        }
    }

    /// The object `key` of kind `K` was deleted for `service`.
    pub fn deleted<K: Resource>(&self, service: &ObjectKey, key: ObjectKey) {
        self.push(service, K::KIND, key, Seen::Gone);
    }

    /// Whether the caches show every write made for `service`; `cached` answers the
    /// resourceVersion a cache holds for an object (`None`: not cached). Seen writes are
    /// forgotten, and so are expired ones.
    pub fn satisfied(
        &self,
        service: &ObjectKey,
        cached: impl Fn(Kind, &ObjectKey) -> Option<i64>,
    ) -> bool {
        let mut pending = self.lock();
        let Some(writes) = pending.get_mut(service) else {
            return true;
        };
        writes.retain(|write| {
            let seen = match (write.seen_when, cached(write.kind, &write.key)) {
                (Seen::AtLeast(revision), Some(cached)) => cached >= revision,
                (Seen::AtLeast(_), None) => false,
                (Seen::Gone, cached) => cached.is_none(),
            };
            let expired = !seen && write.at.elapsed() >= EXPIRY;
            if expired {
                tracing::warn!(
                    %service,
                    kind = %write.kind,
                    key = %write.key,
                    "the cache never showed this write; going on without it"
                );
            }
            !seen && !expired
        });
        let done = writes.is_empty();
        if done {
            pending.remove(service);
        }
        done
    }

    /// Drops what is expected for `service` (it is gone).
    pub fn forget(&self, service: &ObjectKey) {
        self.lock().remove(service);
    }

    fn push(&self, service: &ObjectKey, kind: Kind, key: ObjectKey, seen_when: Seen) {
        let write = Write {
            kind,
            key,
            seen_when,
            at: Instant::now(),
        };
        self.lock().entry(service.clone()).or_default().push(write);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Vec<Write>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::task::TaskSpec;
    use dctl_apis::{ObjectMeta, Task};

    use super::*;

    fn task(name: &str, revision: i64) -> Task {
        let mut task = Task::new(ObjectMeta::named("demo", name), TaskSpec::default());
        task.metadata.resource_version = Some(revision);
        task
    }

    #[test]
    fn waits_until_the_caches_show_every_write() {
        let web = ObjectKey::new("demo", "web");
        let other = ObjectKey::new("demo", "api");
        let expectations = Expectations::default();
        expectations.wrote(&web, &task("web.1.a", 10));
        expectations.deleted::<Task>(&web, ObjectKey::new("demo", "web.1.old"));

        // (cached revisions of web.1.a and web.1.old) → satisfied; in order, since a write
        // once seen is forgotten (the last case's cache has lost web.1.a: fine by then).
        let cases = [
            (None, Some(3), false),
            (Some(9), Some(3), false),
            (Some(10), Some(3), false),
            (None, None, true),
        ];
        for (new, old, expected) in cases {
            let cached = |kind: Kind, key: &ObjectKey| {
                assert_eq!(kind, Kind::Task);
                if key.name == "web.1.a" {
                    new
                } else {
                    old
                }
            };
            assert_eq!(
                expectations.satisfied(&web, cached),
                expected,
                "{new:?} {old:?}"
            );
        }
        // Seen writes are forgotten: even a cache that lost them is fine now.
        assert!(expectations.satisfied(&web, |_, _| None));
        assert!(expectations.satisfied(&other, |_, _| None));

        expectations.wrote(&web, &task("web.1.b", 20));
        expectations.forget(&web);
        assert!(expectations.satisfied(&web, |_, _| None));
    }
}
