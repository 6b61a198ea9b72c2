//! The store's writes: create, update, update_status and delete, each a compare-and-swap.

use chrono::{SubsecRound, Utc};
use dctl_apis::{Kind, Resource, Time};
use etcd_client::{KeyValue, TxnOp};

use super::assignments;
pub(super) use super::commit::Expect;
use super::commit::{Committed, Write};
use super::fields::Fields;
use super::known::{update_shortcut, update_status_shortcut, Shortcut};
use super::{codec, keys, Store, StoreError};
use crate::object_key::ObjectKey;

/// How often `delete` re-reads an object that others keep changing under it.
const DELETE_ATTEMPTS: usize = 5;

/// What [`Store::delete`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Deleted<K> {
    /// The object is gone; this is its last state.
    Gone(K),
    /// The object has finalizers: it is marked with a `deletionTimestamp` and goes once
    /// their controllers have removed them all.
    Pending(K),
}

/// How a compare-and-swap ended.
pub(super) enum Cas {
    Done { revision: i64 },
    Lost { current: Option<KeyValue> },
}

/// The object as stored at the caller's revision, when an update had to read it.
struct Current<K> {
    object: K,
    fields: Fields,
}

impl Store {
    /// Creates `object`, setting its `uid`, `creationTimestamp` and `generation` (1).
    ///
    /// # Errors
    /// `AlreadyExists` when the key is taken; `Invalid` for an empty or ambiguous name.
    pub async fn create<K: Resource>(&self, object: &K) -> Result<K, StoreError> {
        let key = key_of(object)?;
        let mut stored = object.clone();
        let meta = stored.meta_mut();
        normalize_namespace::<K>(meta);
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp = Some(now());
        meta.deletion_timestamp = None;
        meta.generation = 1;
        meta.resource_version = None;
        let fields = Fields::of(&stored)?;
        let mirror = assignments::on_put(None, &stored, fields.json())?;
        match self
            .compare_and_put(&key, Expect::Absent, fields.json(), mirror)
            .await?
        {
            Cas::Done { revision } => {
                self.remember(&key, &fields, revision);
                stored.meta_mut().resource_version = Some(revision);
                Ok(stored)
            }
            Cas::Lost { .. } => Err(StoreError::AlreadyExists {
                kind: K::KIND,
                key: ObjectKey::of(object),
            }),
        }
    }

    /// Writes `object`'s spec and metadata if it is still at its `resourceVersion`.
    ///
    /// The stored status is kept (status has its own writer, [`Store::update_status`]);
    /// `uid`, `creationTimestamp` and `deletionTimestamp` cannot be changed; `generation` is
    /// bumped iff the spec changed. Nothing is written when nothing changed. When the object
    /// is being deleted and this update removes its last finalizer, the object is deleted
    /// instead, and its final state is returned.
    ///
    /// One round trip when the store knows what is stored at that `resourceVersion` (it
    /// read, listed for a watcher, watched or wrote it), the caller kept its status and
    /// something changed; else the object is read first.
    ///
    /// # Errors
    /// `Conflict` when the object changed since it was read; `NotFound` when it is gone;
    /// `Invalid` without a `resourceVersion`.
    pub async fn update<K: Resource>(&self, object: &K) -> Result<K, StoreError> {
        let (key, expected) = target_of(object)?;
        let mut desired = object.clone();
        normalize_namespace::<K>(desired.meta_mut());
        desired.meta_mut().resource_version = None;
        let mut fields = Fields::of(&desired)?;
        let shortcut = match self.known().at(&key, expected) {
            Some(stored) => {
                let mine = self.known().fingerprint(&fields, expected);
                update_shortcut(&stored, &mine, K::KIND == Kind::Task)
            }
            None => Shortcut::Read,
        };
        let current = match shortcut {
            Shortcut::Write { spec_changed } => {
                if spec_changed {
                    desired.meta_mut().generation += 1;
                    fields = Fields::of(&desired)?;
                }
                None
            }
            Shortcut::Read => {
                let current = self.read_current(object).await?;
                let spec_changed = fields.get("spec") != current.fields.get("spec");
                let (meta, was) = (desired.meta_mut(), current.object.meta());
                meta.uid.clone_from(&was.uid);
                meta.creation_timestamp = was.creation_timestamp;
                meta.deletion_timestamp = was.deletion_timestamp;
                meta.generation = was.generation + i64::from(spec_changed);
                let with_status =
                    Fields::of(&desired)?.with("status", current.fields.get("status"));
                desired = codec::decode(key.as_bytes(), &with_status, 0)?;
                desired.meta_mut().resource_version = None;
                fields = Fields::of(&desired)?;
                if fields.json() == current.fields.json() {
                    self.remember(&key, &current.fields, expected);
                    return Ok(current.object);
                }
                Some(current)
            }
        };

        let meta = desired.meta();
        if meta.deletion_timestamp.is_some() && meta.finalizers.is_empty() {
            // Without a read the spec is the stored one (`update_shortcut`), and so is the
            // assignment to remove.
            let mirror = match &current {
                Some(current) => assignments::on_delete(&current.object, current.fields.json())?,
                None => assignments::on_delete(&desired, fields.json())?,
            };
            let outcome = self.compare_and_delete(&key, expected, mirror).await?;
            return self.finish(object, &key, desired, None, outcome);
        }
        self.put_over(object, &key, expected, current.as_ref(), desired, &fields)
            .await
    }

    /// Writes only `object`'s status, if the object is still at its `resourceVersion`; spec,
    /// metadata and `generation` stay as stored. Nothing is written when the status is
    /// unchanged.
    ///
    /// One round trip when the store knows what is stored at that `resourceVersion` and the
    /// caller changed the status and nothing else; else the object is read first.
    ///
    /// # Errors
    /// `Conflict` when the object changed since it was read; `NotFound` when it is gone;
    /// `Invalid` without a `resourceVersion`.
    pub async fn update_status<K: Resource>(&self, object: &K) -> Result<K, StoreError> {
        let (key, expected) = target_of(object)?;
        let mut desired = object.clone();
        normalize_namespace::<K>(desired.meta_mut());
        desired.meta_mut().resource_version = None;
        let mut fields = Fields::of(&desired)?;
        let shortcut = match self.known().at(&key, expected) {
            Some(stored) => {
                let mine = self.known().fingerprint(&fields, expected);
                update_status_shortcut(&stored, &mine)
            }
            None => Shortcut::Read,
        };
        let current = match shortcut {
            Shortcut::Write { .. } => None,
            Shortcut::Read => {
                let current = self.read_current(object).await?;
                let with_status = current.fields.with("status", fields.get("status"));
                desired = codec::decode(key.as_bytes(), &with_status, 0)?;
                desired.meta_mut().resource_version = None;
                fields = Fields::of(&desired)?;
                if fields.json() == current.fields.json() {
                    self.remember(&key, &current.fields, expected);
                    return Ok(current.object);
                }
                Some(current)
            }
        };
        self.put_over(object, &key, expected, current.as_ref(), desired, &fields)
            .await
    }

    /// Deletes an object, or, while it has finalizers, marks it with a `deletionTimestamp`
    /// (again and again: a second delete of a pending object changes nothing).
    ///
    /// # Errors
    /// `NotFound` when there is no such object; `Conflict` when others kept changing it.
    pub async fn delete<K: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Deleted<K>, StoreError> {
        let key = keys::object_key(K::KIND, namespace, name)?;
        let not_found = || StoreError::NotFound {
            kind: K::KIND,
            key: ObjectKey::new(namespace, name),
        };
        // Delete is not conditional on what the caller read, so a lost race only means
        // reading again and deciding again.
        for _ in 0..DELETE_ATTEMPTS {
            let Some(kv) = self.get_raw(&key).await? else {
                return Err(not_found());
            };
            let mut object: K = codec::decode(kv.key(), kv.value(), kv.mod_revision())?;
            if object.meta().finalizers.is_empty() {
                let mirror = assignments::on_delete(&object, kv.value())?;
                match self
                    .compare_and_delete(&key, kv.mod_revision(), mirror)
                    .await?
                {
                    Cas::Done { revision } => {
                        self.known().forget_before(&key, revision);
                        return Ok(Deleted::Gone(object));
                    }
                    Cas::Lost { current: None } => return Err(not_found()),
                    Cas::Lost { current: Some(_) } => continue,
                }
            }
            if object.meta().deletion_timestamp.is_some() {
                return Ok(Deleted::Pending(object));
            }
            object.meta_mut().deletion_timestamp = Some(now());
            let fields = Fields::of(&object)?;
            // Only the deletionTimestamp changes: the assignment stays where it is.
            let mirror = assignments::on_put(None, &object, fields.json())?;
            match self
                .compare_and_put(
                    &key,
                    Expect::ModRevision(kv.mod_revision()),
                    fields.json(),
                    mirror,
                )
                .await?
            {
                Cas::Done { revision } => {
                    self.remember(&key, &fields, revision);
                    object.meta_mut().resource_version = Some(revision);
                    return Ok(Deleted::Pending(object));
                }
                Cas::Lost { current: None } => return Err(not_found()),
                Cas::Lost { current: Some(_) } => continue,
            }
        }
        Err(StoreError::Conflict {
            kind: K::KIND,
            key: ObjectKey::new(namespace, name),
        })
    }

    /// Writes `desired` (stored as `fields`) over the object at `expected`: `current` when
    /// it was read, else known to have the same spec and so the same assignment.
    async fn put_over<K: Resource>(
        &self,
        object: &K,
        key: &str,
        expected: i64,
        current: Option<&Current<K>>,
        desired: K,
        fields: &Fields,
    ) -> Result<K, StoreError> {
        let old = current.map(|c| (&c.object, c.fields.json()));
        let mirror = assignments::on_put(old, &desired, fields.json())?;
        let outcome = self
            .compare_and_put(key, Expect::ModRevision(expected), fields.json(), mirror)
            .await?;
        self.finish(object, key, desired, Some(fields), outcome)
    }

    /// The key, the revision the caller read, and the object as stored now.
    pub(super) async fn read_for_update<K: Resource>(
        &self,
        object: &K,
    ) -> Result<(String, i64, K), StoreError> {
        let (key, expected) = target_of(object)?;
        let Some(kv) = self.get_raw(&key).await? else {
            return Err(not_found(object));
        };
        if kv.mod_revision() != expected {
            return Err(conflict(object));
        }
        let current = codec::decode(kv.key(), kv.value(), kv.mod_revision())?;
        Ok((key, expected, current))
    }

    /// The object as stored at the caller's revision, read.
    async fn read_current<K: Resource>(&self, object: &K) -> Result<Current<K>, StoreError> {
        let (_, _, object) = self.read_for_update(object).await?;
        let fields = Fields::of(&object)?;
        Ok(Current { object, fields })
    }

    /// Remembers that `key` holds `fields` at `revision`.
    pub(super) fn remember(&self, key: &str, fields: &Fields, revision: i64) {
        let known = self.known();
        known.record(key, known.fingerprint(fields, revision));
    }

    /// The object as written by an update (`fields` as stored; `None` when the update
    /// deleted it), or why the write lost.
    pub(super) fn finish<K: Resource>(
        &self,
        object: &K,
        key: &str,
        mut written: K,
        fields: Option<&Fields>,
        outcome: Cas,
    ) -> Result<K, StoreError> {
        match outcome {
            Cas::Done { revision } => {
                match fields {
                    Some(fields) => self.remember(key, fields, revision),
                    None => self.known().forget_before(key, revision),
                }
                written.meta_mut().resource_version = Some(revision);
                Ok(written)
            }
            Cas::Lost { current: None } => {
                self.known().forget_before(key, i64::MAX);
                Err(not_found(object))
            }
            Cas::Lost { current: Some(kv) } => {
                self.known().forget_before(key, kv.mod_revision());
                Err(conflict(object))
            }
        }
    }

    /// Puts `value` at `key` if the key is as expected, with `also` (the keys that mirror
    /// it) in the same transaction.
    pub(super) async fn compare_and_put(
        &self,
        key: &str,
        expect: Expect,
        value: &[u8],
        also: Vec<TxnOp>,
    ) -> Result<Cas, StoreError> {
        let mut ops = vec![TxnOp::put(key, value.to_vec(), None)];
        ops.extend(also);
        let write = Write {
            key: key.to_string(),
            expect,
            bytes: value.len(),
            ops,
        };
        match self.commit(write).await? {
            Committed::Written { revision } => Ok(Cas::Done { revision }),
            // An earlier attempt may have landed with its answer lost on the way back; if
            // etcd holds exactly what this call wrote (a fresh uid makes that unambiguous
            // for a create), that attempt won.
            Committed::Refused {
                current: Some(kv),
                retried: true,
                ..
            } if kv.value() == value => Ok(Cas::Done {
                revision: kv.mod_revision(),
            }),
            Committed::Refused { current, .. } => Ok(Cas::Lost { current }),
        }
    }

    /// Deletes `key` if it is still at `revision`, with `also` in the same transaction.
    async fn compare_and_delete(
        &self,
        key: &str,
        revision: i64,
        also: Vec<TxnOp>,
    ) -> Result<Cas, StoreError> {
        let mut ops = vec![TxnOp::delete(key, None)];
        ops.extend(also);
        let write = Write {
            key: key.to_string(),
            expect: Expect::ModRevision(revision),
            bytes: 0,
            ops,
        };
        match self.commit(write).await? {
            Committed::Written { revision } => Ok(Cas::Done { revision }),
            // Gone after an attempt whose answer was lost: that attempt deleted it.
            Committed::Refused {
                current: None,
                revision,
                retried: true,
            } => Ok(Cas::Done { revision }),
            Committed::Refused { current, .. } => Ok(Cas::Lost { current }),
        }
    }
}

/// Timestamps are kept to the millisecond: enough to order events, short in YAML.
pub(crate) fn now() -> Time {
    Utc::now().trunc_subsecs(3)
}

/// A cluster-scoped object stores no namespace, whatever it was given: its key has none.
fn normalize_namespace<K: Resource>(meta: &mut dctl_apis::ObjectMeta) {
    if !K::KIND.namespaced() {
        meta.namespace = None;
    }
}

pub(super) fn key_of<K: Resource>(object: &K) -> Result<String, StoreError> {
    let meta = object.meta();
    keys::object_key(K::KIND, meta.namespace(), &meta.name)
}

/// The key an update writes and the revision it compares.
///
/// # Errors
/// `Invalid` without a `resourceVersion`, or for an ambiguous key.
pub(super) fn target_of<K: Resource>(object: &K) -> Result<(String, i64), StoreError> {
    let key = key_of(object)?;
    let Some(expected) = object.meta().resource_version else {
        return Err(StoreError::Invalid {
            kind: K::KIND,
            key: ObjectKey::of(object),
            message: "it has no resourceVersion; read it first and update what was read".into(),
        });
    };
    Ok((key, expected))
}

fn not_found<K: Resource>(object: &K) -> StoreError {
    StoreError::NotFound {
        kind: K::KIND,
        key: ObjectKey::of(object),
    }
}

fn conflict<K: Resource>(object: &K) -> StoreError {
    StoreError::Conflict {
        kind: K::KIND,
        key: ObjectKey::of(object),
    }
}
