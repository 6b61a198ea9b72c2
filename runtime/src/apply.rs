//! Apply: makes stored objects match manifests, creating what is missing, updating what
//! changed and leaving the rest untouched. `dctl apply` and the gitsync controller share it,
//! so a commit applies exactly as the command line would.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;

use dctl_apis::gitsync::{ANNOTATION_RECONCILE_REQUESTED_AT, LABEL_NAME, LABEL_NAMESPACE};
use dctl_apis::manifest::Document;
use dctl_apis::{with_object, AnyObject, Kind, ObjectMeta, Resource};
use serde_json::Value;

use crate::store::{Store, StoreError};
use crate::ObjectKey;

/// Labels and annotations that the cluster, not a manifest, sets: applying a manifest that
/// lacks them keeps the live values, so `dctl apply` of a file never silently takes an
/// object away from its GitSync or drops a pending reconcile request.
const KEPT_LABELS: [&str; 2] = [LABEL_NAME, LABEL_NAMESPACE];
const KEPT_ANNOTATIONS: [&str; 1] = [ANNOTATION_RECONCILE_REQUESTED_AT];

/// How many times a write that lost a race re-reads and tries again.
const CONFLICT_RETRIES: usize = 5;

/// Objects applied at once. Their writes go to etcd together (the store's group commit),
/// so a manifest of many objects applies several times faster than one after another.
pub const IN_FLIGHT: usize = 16;

/// From how many objects of one kind in one namespace a manifest's live objects are read
/// with one list rather than a get each.
const LIST_THRESHOLD: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// The documents in the runs that may be applied at once ([`IN_FLIGHT`] at a time): a
/// Network alone, in its place (of two overlapping subnets the one applied first wins, as
/// the files order them), and everything between two Networks together.
pub fn batches<D: Borrow<Document>>(documents: &[D]) -> Vec<&[D]> {
    let is_network = |d: &D| d.borrow().object.kind() == Kind::Network;
    let mut batches = Vec::new();
    let mut rest = documents;
    while !rest.is_empty() {
        let end = if is_network(&rest[0]) {
            1
        } else {
            rest.iter().position(is_network).unwrap_or(rest.len())
        };
        let (batch, after) = rest.split_at(end);
        batches.push(batch);
        rest = after;
    }
    batches
}

/// What [`Applier::apply_owned`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owned {
    Applied(Outcome),
    /// Nothing was written: the live object is managed by this other GitSync.
    OwnedBy(ObjectKey),
}

/// The GitSync (namespace and name) whose ownership labels `meta` carries, if any.
pub fn managed_by(meta: &ObjectMeta) -> Option<ObjectKey> {
    let name = meta.labels.get(LABEL_NAME)?;
    let namespace = meta.labels.get(LABEL_NAMESPACE).map_or("", String::as_str);
    Some(ObjectKey::new(namespace, name))
}

/// Applies objects, reading the live objects of a (kind, namespace) pair with one list when
/// the batch names many of them. Shared: several objects may be applied at once.
pub struct Applier<'a> {
    store: &'a Store,
    dry_run: bool,
    live: LiveObjects,
}

impl<'a> Applier<'a> {
    /// An applier for `documents`, which it may prefetch live objects for.
    pub fn new(store: &'a Store, documents: &[Document], dry_run: bool) -> Self {
        Applier {
            store,
            dry_run,
            live: LiveObjects::new(documents),
        }
    }

    /// Makes the stored object match `object`, writing only when something differs (and
    /// never on a dry run).
    ///
    /// # Errors
    /// Store errors; a conflict only after `CONFLICT_RETRIES` re-reads all lost their race.
    pub async fn apply(&self, object: &AnyObject) -> Result<Outcome, StoreError> {
        self.apply_noting_manager(object)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// Like [`Applier::apply`], also naming the GitSync whose labels the live object
    /// carried, so `dctl apply` can warn that the next sync may put it back.
    ///
    /// # Errors
    /// As [`Applier::apply`].
    pub async fn apply_noting_manager(
        &self,
        object: &AnyObject,
    ) -> Result<(Outcome, Option<ObjectKey>), StoreError> {
        let (store, dry_run, live) = (self.store, self.dry_run, &self.live);
        let (owned, manager) =
            with_object!(object, o => apply_object(store, o, dry_run, live, None).await)?;
        match owned {
            Owned::Applied(outcome) => Ok((outcome, manager)),
            Owned::OwnedBy(_) => unreachable!("no owner was given to check"),
        }
    }

    /// Like [`Applier::apply`] for the GitSync `owner`: a live object labelled as managed
    /// by another GitSync is left alone (`OwnedBy`); one without the labels is adopted.
    ///
    /// # Errors
    /// As [`Applier::apply`].
    pub async fn apply_owned(
        &self,
        object: &AnyObject,
        owner: &ObjectKey,
    ) -> Result<Owned, StoreError> {
        let (store, dry_run, live) = (self.store, self.dry_run, &self.live);
        with_object!(object, o => apply_object(store, o, dry_run, live, Some(owner)).await)
            .map(|(owned, _)| owned)
    }
}

/// The live objects of the (kind, namespace) pairs a manifest names many objects of, each
/// read with one list instead of a get per object.
struct LiveObjects {
    /// How many documents name each pair.
    counts: HashMap<(Kind, String), usize>,
    /// `HashMap<String, K>` of the live objects by name, for the pairs listed so far. An
    /// async lock: the first of several applies at once lists, the others wait for it.
    listed: tokio::sync::Mutex<HashMap<(Kind, String), Box<dyn Any + Send>>>,
}

impl LiveObjects {
    fn new(documents: &[Document]) -> Self {
        let mut counts = HashMap::new();
        for document in documents {
            let pair = (
                document.object.kind(),
                document.object.meta().namespace().to_string(),
            );
            *counts.entry(pair).or_insert(0) += 1;
        }
        LiveObjects {
            counts,
            listed: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The live object (or its absence) from a list, when its pair is worth listing;
    /// `None` when the caller should read it itself.
    async fn lookup<K: Resource>(
        &self,
        store: &Store,
        desired: &K,
    ) -> Result<Option<Option<K>>, StoreError> {
        let meta = desired.meta();
        let pair = (K::KIND, meta.namespace().to_string());
        if self.counts.get(&pair).copied().unwrap_or(0) < LIST_THRESHOLD {
            return Ok(None);
        }
        let mut listed = self.listed.lock().await;
        if !listed.contains_key(&pair) {
            let namespace = K::KIND.namespaced().then_some(pair.1.as_str());
            let items: HashMap<String, K> = store
                .list::<K>(namespace)
                .await?
                .items
                .into_iter()
                .map(|o| (o.meta().name.clone(), o))
                .collect();
            listed.insert(pair.clone(), Box::new(items));
        }
        let items = listed[&pair]
            .downcast_ref::<HashMap<String, K>>()
            .expect("each pair is listed as its own kind");
        Ok(Some(items.get(&meta.name).cloned()))
    }
}

/// Makes the stored object match `desired`, writing only when something differs; also
/// returns the GitSync the live object was managed by.
///
/// # Errors
/// Store errors; a conflict only after `CONFLICT_RETRIES` re-reads all lost their race.
async fn apply_object<K: Resource>(
    store: &Store,
    desired: &K,
    dry_run: bool,
    live: &LiveObjects,
    owner: Option<&ObjectKey>,
) -> Result<(Owned, Option<ObjectKey>), StoreError> {
    let meta = desired.meta();
    let mut known = live.lookup(store, desired).await?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = match known.take() {
            Some(current) => current,
            None => store.try_get::<K>(meta.namespace(), &meta.name).await?,
        };
        let manager = current.as_ref().and_then(|live| managed_by(live.meta()));
        let result = match current {
            None if dry_run => return Ok((Owned::Applied(Outcome::Created), None)),
            None => store.create(desired).await.map(|_| Outcome::Created),
            Some(live) => {
                if let (Some(owner), Some(other)) = (owner, &manager) {
                    if other != owner {
                        return Ok((Owned::OwnedBy(other.clone()), manager));
                    }
                }
                let target = merged(&live, desired);
                if target == live {
                    return Ok((Owned::Applied(Outcome::Unchanged), manager));
                }
                if dry_run {
                    return Ok((Owned::Applied(Outcome::Configured), manager));
                }
                store.update(&target).await.map(|_| Outcome::Configured)
            }
        };
        match result {
            // Someone created or changed it between our read and our write: read again.
            Err(err)
                if (err.is_conflict() || err.is_already_exists()) && attempt < CONFLICT_RETRIES =>
            {
                continue
            }
            other => return other.map(|outcome| (Owned::Applied(outcome), manager)),
        }
    }
}

/// What applying `desired` over `live` stores: the manifest owns the spec, the labels and
/// the annotations, except the GitSync ownership labels and the reconcile request, which
/// stay as they are unless the manifest sets them; everything the cluster set (status,
/// uid, generation, finalizers, owners, timestamps) stays as it is.
pub fn merged<K: Resource>(live: &K, desired: &K) -> K {
    let mut target = to_value(live);
    let wanted = to_value(desired);
    target["spec"] = wanted["spec"].clone();
    for field in ["labels", "annotations"] {
        match wanted["metadata"].get(field) {
            Some(value) => target["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = target["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    let mut target: K =
        serde_json::from_value(target).expect("a merge of two valid objects of one kind is valid");
    let (from, to) = (live.meta(), target.meta_mut());
    for key in KEPT_LABELS {
        if let Some(value) = from.labels.get(key) {
            to.labels.entry(key.to_string()).or_insert(value.clone());
        }
    }
    for key in KEPT_ANNOTATIONS {
        if let Some(value) = from.annotations.get(key) {
            to.annotations
                .entry(key.to_string())
                .or_insert(value.clone());
        }
    }
    target
}

fn to_value<K: Resource>(object: &K) -> Value {
    serde_json::to_value(object).expect("resources always serialize")
}

#[cfg(test)]
mod tests {
    use dctl_apis::{ObjectMeta, Service};

    use super::*;

    fn service(json: Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn merge_takes_spec_and_labels_from_the_manifest_and_keeps_the_rest() {
        let live = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "uid": "u-1", "generation": 4,
                         "resourceVersion": 17, "labels": {"old": "x"}, "finalizers": ["f"]},
            "spec": {"replicas": 2, "template": {"image": "web:1"}},
            "status": {"replicas": 2}
        }));
        let desired = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "template": {"image": "web:2"}}
        }));
        let target = to_value(&merged(&live, &desired));
        assert_eq!(target["spec"], to_value(&desired)["spec"]);
        assert_eq!(
            target["metadata"]["labels"],
            serde_json::json!({"app": "web"})
        );
        assert_eq!(target["metadata"]["uid"], "u-1");
        assert_eq!(target["metadata"]["generation"], 4);
        assert_eq!(target["metadata"]["resourceVersion"], 17);
        assert_eq!(target["metadata"]["finalizers"], serde_json::json!(["f"]));
        assert_eq!(target["status"], to_value(&live)["status"]);
    }

    #[test]
    fn merge_keeps_gitsync_ownership_and_the_reconcile_request() {
        let live = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo",
                         "labels": {"app": "web", "dctl.io/gitsync-name": "apps",
                                    "dctl.io/gitsync-namespace": "ops"},
                         "annotations": {"dctl.io/reconcile-requested-at": "t1", "note": "x"}},
            "spec": {"template": {"image": "web:1"}}
        }));
        let desired = service(serde_json::json!({
            "apiVersion": "dctl/v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web2"}},
            "spec": {"template": {"image": "web:2"}}
        }));
        let target = merged(&live, &desired);
        assert_eq!(
            managed_by(&target.metadata),
            Some(ObjectKey::new("ops", "apps"))
        );
        assert_eq!(target.metadata.labels["app"], "web2");
        assert_eq!(
            target.metadata.annotations.keys().collect::<Vec<_>>(),
            ["dctl.io/reconcile-requested-at"]
        );
    }

    #[test]
    fn merge_of_the_same_manifest_changes_nothing() {
        let mut live = Service::new(ObjectMeta::named("demo", "web"), Default::default());
        live.metadata.uid = "u-1".into();
        live.metadata.resource_version = Some(3);
        let desired = Service::new(ObjectMeta::named("demo", "web"), Default::default());
        assert_eq!(merged(&live, &desired), live);
    }

    #[test]
    fn networks_go_alone_in_their_place_and_the_rest_together() {
        let object = |kind: &str, name: &str| {
            let spec = if kind == "Service" {
                "spec: {template: {image: x}}\n"
            } else {
                ""
            };
            format!("apiVersion: dctl/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: demo}}\n{spec}")
        };
        let text = [
            object("Service", "a"),
            object("Service", "b"),
            object("Network", "n1"),
            object("Network", "n2"),
            object("Service", "c"),
        ]
        .join("---\n");
        let documents = dctl_apis::manifest::decode("m.yaml", &text).unwrap();
        let names: Vec<Vec<&str>> = batches(&documents)
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|d| d.object.meta().name.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(names, [vec!["a", "b"], vec!["n1"], vec!["n2"], vec!["c"]]);
        assert!(batches::<Document>(&[]).is_empty());
    }
}
