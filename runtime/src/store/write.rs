//! The store's writes: create, update, update_status and delete, each a compare-and-swap.

use chrono::{SubsecRound, Utc};
use dctl_apis::{Resource, Time};
use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use serde_json::Value;

use super::{assignments, codec, keys, Store, StoreError};
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

/// What a compare-and-swap expects of the key.
#[derive(Clone, Copy)]
pub(super) enum Expect {
    Absent,
    ModRevision(i64),
}

/// How a compare-and-swap ended.
pub(super) enum Cas {
    Done { revision: i64 },
    Lost { current: Option<KeyValue> },
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
        let value = codec::encode(&stored)?;
        let mirror = assignments::on_put(K::KIND, None, &value)?;
        match self
            .compare_and_put(&key, Expect::Absent, value, mirror)
            .await?
        {
            Cas::Done { revision } => {
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
    /// # Errors
    /// `Conflict` when the object changed since it was read; `NotFound` when it is gone;
    /// `Invalid` without a `resourceVersion`.
    pub async fn update<K: Resource>(&self, object: &K) -> Result<K, StoreError> {
        let (key, expected, current) = self.read_for_update(object).await?;
        let current_value = codec::to_value(&current)?;
        let spec_changed = codec::to_value(object)?.get("spec") != current_value.get("spec");

        let mut desired = object.clone();
        let (meta, was) = (desired.meta_mut(), current.meta());
        normalize_namespace::<K>(meta);
        meta.uid.clone_from(&was.uid);
        meta.creation_timestamp = was.creation_timestamp;
        meta.deletion_timestamp = was.deletion_timestamp;
        meta.generation = was.generation + i64::from(spec_changed);
        meta.resource_version = None;
        let mut value = codec::to_value(&desired)?;
        set_field(&mut value, "status", current_value.get("status").cloned());
        if value == current_value {
            return Ok(current);
        }

        let meta = desired.meta();
        let outcome = if meta.deletion_timestamp.is_some() && meta.finalizers.is_empty() {
            let mirror = assignments::on_delete(K::KIND, &current_value);
            self.compare_and_delete(&key, expected, mirror).await?
        } else {
            let bytes = serde_json::to_vec(&value).map_err(|err| invalid(object, err))?;
            let mirror = assignments::on_put(K::KIND, Some(&current_value), &bytes)?;
            self.compare_and_put(&key, Expect::ModRevision(expected), bytes, mirror)
                .await?
        };
        self.written(object, &key, value, outcome)
    }

    /// Writes only `object`'s status, if the object is still at its `resourceVersion`; spec,
    /// metadata and `generation` stay as stored. Nothing is written when the status is
    /// unchanged.
    ///
    /// # Errors
    /// `Conflict` when the object changed since it was read; `NotFound` when it is gone;
    /// `Invalid` without a `resourceVersion`.
    pub async fn update_status<K: Resource>(&self, object: &K) -> Result<K, StoreError> {
        let (key, expected, current) = self.read_for_update(object).await?;
        let current_value = codec::to_value(&current)?;
        let mut value = current_value.clone();
        set_field(
            &mut value,
            "status",
            codec::to_value(object)?.get("status").cloned(),
        );
        if value == current_value {
            return Ok(current);
        }
        let bytes = serde_json::to_vec(&value).map_err(|err| invalid(object, err))?;
        let mirror = assignments::on_put(K::KIND, Some(&current_value), &bytes)?;
        let outcome = self
            .compare_and_put(&key, Expect::ModRevision(expected), bytes, mirror)
            .await?;
        self.written(object, &key, value, outcome)
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
                let stored = codec::to_value(&object)?;
                let mirror = assignments::on_delete(K::KIND, &stored);
                match self
                    .compare_and_delete(&key, kv.mod_revision(), mirror)
                    .await?
                {
                    Cas::Done { .. } => return Ok(Deleted::Gone(object)),
                    Cas::Lost { current: None } => return Err(not_found()),
                    Cas::Lost { current: Some(_) } => continue,
                }
            }
            if object.meta().deletion_timestamp.is_some() {
                return Ok(Deleted::Pending(object));
            }
            let before = codec::to_value(&object)?;
            object.meta_mut().deletion_timestamp = Some(now());
            let value = codec::encode(&object)?;
            let mirror = assignments::on_put(K::KIND, Some(&before), &value)?;
            match self
                .compare_and_put(&key, Expect::ModRevision(kv.mod_revision()), value, mirror)
                .await?
            {
                Cas::Done { revision } => {
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

    /// The key, the revision the caller read, and the object as stored now.
    pub(super) async fn read_for_update<K: Resource>(
        &self,
        object: &K,
    ) -> Result<(String, i64, K), StoreError> {
        let key = key_of(object)?;
        let Some(expected) = object.meta().resource_version else {
            return Err(StoreError::Invalid {
                kind: K::KIND,
                key: ObjectKey::of(object),
                message: "it has no resourceVersion; read it first and update what was read".into(),
            });
        };
        let Some(kv) = self.get_raw(&key).await? else {
            return Err(not_found(object));
        };
        if kv.mod_revision() != expected {
            return Err(conflict(object));
        }
        let current = codec::decode(kv.key(), kv.value(), kv.mod_revision())?;
        Ok((key, expected, current))
    }

    /// The object as written by an update, or why the write lost.
    pub(super) fn written<K: Resource>(
        &self,
        object: &K,
        key: &str,
        value: Value,
        outcome: Cas,
    ) -> Result<K, StoreError> {
        match outcome {
            Cas::Done { revision } => codec::from_value(key, value, revision),
            Cas::Lost { current: None } => Err(not_found(object)),
            Cas::Lost { current: Some(_) } => Err(conflict(object)),
        }
    }

    /// Puts `value` at `key` if the key is as expected, with `also` (the keys that mirror
    /// it) in the same transaction.
    pub(super) async fn compare_and_put(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        also: Vec<TxnOp>,
    ) -> Result<Cas, StoreError> {
        let compare = match expect {
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(revision) => Compare::mod_revision(key, CompareOp::Equal, revision),
        };
        let (response, retried) = self
            .retrying(|attempt, mut kv| {
                let mut ops = vec![TxnOp::put(key, value.clone(), None)];
                ops.extend(also.iter().cloned());
                let txn = Txn::new()
                    .when([compare.clone()])
                    .and_then(ops)
                    .or_else([TxnOp::get(key, None)]);
                async move { kv.txn(txn).await.map(|r| (r, attempt > 0)) }
            })
            .await?;
        let revision = header_revision(&response);
        if response.succeeded() {
            return Ok(Cas::Done { revision });
        }
        let current = current_value(&response);
        // An earlier attempt may have landed with its answer lost on the way back; if etcd
        // holds exactly what this call wrote (a fresh uid makes that unambiguous for a
        // create), that attempt won.
        if let Some(kv) = current.as_ref().filter(|kv| retried && kv.value() == value) {
            return Ok(Cas::Done {
                revision: kv.mod_revision(),
            });
        }
        Ok(Cas::Lost { current })
    }

    /// Deletes `key` if it is still at `revision`, with `also` in the same transaction.
    async fn compare_and_delete(
        &self,
        key: &str,
        revision: i64,
        also: Vec<TxnOp>,
    ) -> Result<Cas, StoreError> {
        let (response, retried) = self
            .retrying(|attempt, mut kv| {
                let mut ops = vec![TxnOp::delete(key, None)];
                ops.extend(also.iter().cloned());
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
                    .and_then(ops)
                    .or_else([TxnOp::get(key, None)]);
                async move { kv.txn(txn).await.map(|r| (r, attempt > 0)) }
            })
            .await?;
        let revision = header_revision(&response);
        if response.succeeded() {
            return Ok(Cas::Done { revision });
        }
        match current_value(&response) {
            // Gone after an attempt whose answer was lost: that attempt deleted it.
            None if retried => Ok(Cas::Done { revision }),
            current => Ok(Cas::Lost { current }),
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

fn key_of<K: Resource>(object: &K) -> Result<String, StoreError> {
    let meta = object.meta();
    keys::object_key(K::KIND, meta.namespace(), &meta.name)
}

/// Sets (or, for `None`, removes) a top-level field of an object's JSON.
fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) if !value.is_null() => map.insert(field.to_string(), value),
            _ => map.remove(field),
        };
    }
}

fn header_revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// The key's value as returned by the `get` in a failed transaction's else branch.
fn current_value(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
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

fn invalid<K: Resource>(object: &K, err: serde_json::Error) -> StoreError {
    StoreError::Invalid {
        kind: K::KIND,
        key: ObjectKey::of(object),
        message: format!("cannot encode it as JSON: {err}"),
    }
}
