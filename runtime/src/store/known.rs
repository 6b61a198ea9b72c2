//! What the store knows was stored at a revision, so that an update can skip its read.
//!
//! `update` must keep the stored status and bump `generation` only when the spec changed;
//! `update_status` must keep the stored spec and metadata. Both used to read the object
//! before their compare-and-swap: two round trips. Like the Kubernetes API server's
//! `GuaranteedUpdate` with a cached object, the store remembers, for the objects it has
//! lately read or written, the revision and hashes of their parts. When the caller's
//! `resourceVersion` is that revision and the caller's parts hash as stored, the write is
//! decided without a read and goes out as one transaction; otherwise (or when the
//! transaction loses) it reads as before.
//!
//! A record can only be missing, never wrong: what a key held at a revision never changes,
//! and the transaction still compares `mod_revision`, so a record that is out of date
//! (the key moved on) fails the compare and becomes a `Conflict` as before.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Mutex, PoisonError};

use super::fields::Fields;

/// How many objects the store remembers: 48 bytes each, so that the map fills exactly
/// 16,384 slots (7/8 of them used), about 800 KiB in all. Past this the eighth written
/// longest ago is forgotten.
pub(super) const CAPACITY: usize = 14_336;

/// The metadata an update takes from the store rather than from the caller.
const SYSTEM_FIELDS: [&str; 4] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "generation",
];

/// What one object was at one revision, as 64-bit keyed hashes of the JSON of its parts
/// (SipHash with a key drawn per process: a changed part hashing like the stored one is a
/// 1 in 2^64 chance that no input can be crafted to raise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub revision: i64,
    pub spec: u64,
    pub status: u64,
    /// `uid`, `creationTimestamp`, `deletionTimestamp` and `generation`.
    pub system: u64,
    /// Everything but the status (spec and metadata included).
    pub all_but_status: u64,
}

impl Fingerprint {
    /// Whether the two are the same object in every part.
    pub fn same_object(&self, other: &Fingerprint) -> bool {
        self.all_but_status == other.all_but_status && self.status == other.status
    }
}

/// The store's records, one per object key.
pub(super) struct Known {
    hasher: RandomState,
    records: Mutex<HashMap<u64, Fingerprint>>,
}

impl Known {
    pub fn new() -> Known {
        Known {
            hasher: RandomState::new(),
            records: Mutex::new(HashMap::new()),
        }
    }

    /// The fingerprint of `fields` as stored at `revision`.
    pub fn fingerprint(&self, fields: &Fields, revision: i64) -> Fingerprint {
        let hash = |write: &dyn Fn(&mut dyn Hasher)| {
            let mut hasher = self.hasher.build_hasher();
            write(&mut hasher);
            hasher.finish()
        };
        let spec = hash(&|h| part(h, fields.get("spec")));
        Fingerprint {
            revision,
            spec,
            status: hash(&|h| part(h, fields.get("status"))),
            system: hash(&|h| {
                for name in SYSTEM_FIELDS {
                    part(h, fields.metadata(name));
                }
            }),
            all_but_status: hash(&|h| {
                for (name, json) in fields.top().filter(|(name, _)| *name != "status") {
                    part(h, Some(name.as_bytes()));
                    if name == "spec" {
                        // Hashed once already.
                        h.write_u64(spec);
                    } else {
                        part(h, Some(json));
                    }
                }
            }),
        }
    }

    /// What `key` held at `revision`, if known.
    pub fn at(&self, key: &str, revision: i64) -> Option<Fingerprint> {
        let slot = self.slot(key);
        self.lock()
            .get(&slot)
            .filter(|known| known.revision == revision)
            .copied()
    }

    /// Remembers what `key` holds, unless a later revision of it is known already (a watch
    /// event may arrive after the store's own newer write).
    pub fn record(&self, key: &str, fingerprint: Fingerprint) {
        let slot = self.slot(key);
        let mut records = self.lock();
        let len = records.len();
        match records.entry(slot) {
            Entry::Occupied(mut known) => {
                if known.get().revision < fingerprint.revision {
                    known.insert(fingerprint);
                }
            }
            Entry::Vacant(vacant) if len < CAPACITY => {
                vacant.insert(fingerprint);
            }
            Entry::Vacant(_) => {
                forget_oldest(&mut records);
                records.insert(slot, fingerprint);
            }
        }
    }

    /// Forgets what `key` held before `revision` (the key has changed or gone since).
    pub fn forget_before(&self, key: &str, revision: i64) {
        let slot = self.slot(key);
        let mut records = self.lock();
        if records
            .get(&slot)
            .is_some_and(|known| known.revision < revision)
        {
            records.remove(&slot);
        }
    }

    /// How many objects are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Records are kept by a keyed hash of the object's key rather than the key itself:
    /// half the memory, and two keys sharing a slot only means one forgets the other (a
    /// record must also match the caller's revision and uid to be used).
    fn slot(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Fingerprint>> {
        // A panic elsewhere cannot leave a half-written record: each is one insert.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A part of an object, or its absence, as hash input that no other can be confused with.
fn part(hasher: &mut dyn Hasher, json: Option<&[u8]>) {
    match json {
        None => hasher.write_u8(0),
        Some(json) => {
            hasher.write_u8(1);
            hasher.write_usize(json.len());
            hasher.write(json);
        }
    }
}

/// Drops the eighth of the records with the lowest revisions (those written longest ago).
fn forget_oldest(records: &mut HashMap<u64, Fingerprint>) {
    let mut revisions: Vec<i64> = records.values().map(|known| known.revision).collect();
    let cut = revisions.len() / 8;
    let (_, &mut oldest_kept, _) = revisions.select_nth_unstable(cut);
    records.retain(|_, known| known.revision >= oldest_kept);
    // Ties at the cut (many records at one revision cannot happen, one key per revision,
    // but be safe) could leave the map full: then drop arbitrary ones.
    if records.len() >= CAPACITY {
        let excess: Vec<u64> = records.keys().take(CAPACITY / 8).copied().collect();
        for slot in excess {
            records.remove(&slot);
        }
    }
}

/// What an update can do knowing only the fingerprint of what is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shortcut {
    /// Write the caller's object as it is (with `generation` bumped if the spec changed).
    Write { spec_changed: bool },
    /// Read the stored object first: the fingerprint does not tell enough, or nothing
    /// would change (and only a read tells whether the object is still at that revision:
    /// a stale caller gets a `Conflict`, as the Kubernetes API server refreshes its cached
    /// object before it answers "nothing to do").
    Read,
}

/// `update`: the caller's status and system metadata must be the stored ones (the update
/// keeps those, and only their hashes are known); a mirrored kind whose spec changes needs
/// the stored spec to move its mirror.
pub(super) fn update_shortcut(
    stored: &Fingerprint,
    caller: &Fingerprint,
    mirrored: bool,
) -> Shortcut {
    if caller.status != stored.status || caller.system != stored.system {
        return Shortcut::Read;
    }
    let spec_changed = caller.spec != stored.spec;
    if !spec_changed && caller.all_but_status == stored.all_but_status {
        return Shortcut::Read;
    }
    if spec_changed && mirrored {
        return Shortcut::Read;
    }
    Shortcut::Write { spec_changed }
}

/// `update_status`: everything but the status must be as stored (it is kept).
pub(super) fn update_status_shortcut(stored: &Fingerprint, caller: &Fingerprint) -> Shortcut {
    if caller.all_but_status != stored.all_but_status || caller.status == stored.status {
        Shortcut::Read
    } else {
        Shortcut::Write {
            spec_changed: false,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn print(spec: u64, status: u64, system: u64, rest: u64) -> Fingerprint {
        Fingerprint {
            revision: 5,
            spec,
            status,
            system,
            // spec and system are part of everything-but-status
            all_but_status: spec * 100 + system * 10 + rest,
        }
    }

    #[test]
    fn update_decisions() {
        let stored = print(1, 1, 1, 1);
        let write = |spec_changed| Shortcut::Write { spec_changed };
        let table = [
            (
                "same object: is it still?",
                print(1, 1, 1, 1),
                false,
                Shortcut::Read,
            ),
            ("labels changed", print(1, 1, 1, 2), false, write(false)),
            ("spec changed", print(2, 1, 1, 1), false, write(true)),
            (
                "spec and labels changed",
                print(2, 1, 1, 2),
                false,
                write(true),
            ),
            (
                "status changed: keep the stored one",
                print(1, 2, 1, 1),
                false,
                Shortcut::Read,
            ),
            (
                "uid or generation changed",
                print(1, 1, 2, 1),
                false,
                Shortcut::Read,
            ),
            (
                "mirrored, spec changed",
                print(2, 1, 1, 1),
                true,
                Shortcut::Read,
            ),
            (
                "mirrored, labels changed",
                print(1, 1, 1, 2),
                true,
                write(false),
            ),
        ];
        for (case, caller, mirrored, expected) in table {
            assert_eq!(
                update_shortcut(&stored, &caller, mirrored),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn update_status_decisions() {
        let stored = print(1, 1, 1, 1);
        let table = [
            (
                "same object: is it still?",
                print(1, 1, 1, 1),
                Shortcut::Read,
            ),
            (
                "status changed",
                print(1, 2, 1, 1),
                Shortcut::Write {
                    spec_changed: false,
                },
            ),
            (
                "spec changed: keep the stored one",
                print(2, 2, 1, 1),
                Shortcut::Read,
            ),
            ("labels changed", print(1, 2, 1, 2), Shortcut::Read),
        ];
        for (case, caller, expected) in table {
            assert_eq!(update_status_shortcut(&stored, &caller), expected, "{case}");
        }
    }

    fn fingerprint(revision: i64) -> Fingerprint {
        Fingerprint {
            revision,
            spec: 0,
            status: 0,
            system: 0,
            all_but_status: 0,
        }
    }

    #[test]
    fn a_record_is_found_only_at_its_revision() {
        let known = Known::new();
        known.record("/k", fingerprint(7));
        assert_eq!(known.at("/k", 7), Some(fingerprint(7)));
        assert_eq!(known.at("/k", 6), None);
        assert_eq!(known.at("/other", 7), None);
        // An older revision arriving late does not replace a newer one.
        known.record("/k", fingerprint(5));
        assert_eq!(known.at("/k", 7), Some(fingerprint(7)));
        known.record("/k", fingerprint(9));
        assert_eq!(known.at("/k", 9), Some(fingerprint(9)));
        known.forget_before("/k", 9);
        assert_eq!(known.at("/k", 9), Some(fingerprint(9)), "not older than 9");
        known.forget_before("/k", 10);
        assert_eq!(known.at("/k", 9), None);
    }

    #[test]
    fn records_are_bounded_and_the_oldest_go_first() {
        let known = Known::new();
        for revision in 1..=(CAPACITY as i64 * 3) {
            known.record(&format!("/k/{revision}"), fingerprint(revision));
            assert!(known.len() <= CAPACITY);
        }
        let last = CAPACITY as i64 * 3;
        assert!(known.at(&format!("/k/{last}"), last).is_some());
        assert!(known.at("/k/1", 1).is_none());
        assert!(known.len() > CAPACITY / 2);
    }
}
