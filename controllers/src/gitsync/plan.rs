//! Pure decisions of a sync: when to fetch, what to apply, what to prune.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dctl_apis::gitsync::{InventoryEntry, LABEL_NAME, LABEL_NAMESPACE};
use dctl_apis::meta::DEFAULT_NAMESPACE;
use dctl_apis::{AnyObject, Document};
use dctl_runtime::ObjectKey;

/// `main@0123abcd…`: the ref as the spec names it and the commit it resolved to.
pub fn revision(reference: &str, sha: &str) -> String {
    format!("{reference}@{sha}")
}

/// The commit of a `ref@sha` revision.
pub fn sha_of(revision: &str) -> &str {
    revision.rsplit_once('@').map_or(revision, |(_, sha)| sha)
}

/// Up to a tenth of `interval` more, so GitSyncs created together do not fetch together.
pub fn with_jitter(interval: Duration, random: f64) -> Duration {
    interval + interval.mul_f64(random.clamp(0.0, 1.0) / 10.0)
}

/// The inventory entry of an object.
pub fn entry_of(object: &AnyObject) -> InventoryEntry {
    let meta = object.meta();
    InventoryEntry {
        kind: object.kind(),
        namespace: meta.namespace().to_string(),
        name: meta.name.clone(),
    }
}

/// The objects of a commit as the GitSync `owner` applies them: with its ownership labels,
/// and in `namespace` (when set) if their manifest left them in `default`.
pub fn desired(mut documents: Vec<Document>, owner: &ObjectKey, namespace: &str) -> Vec<Document> {
    for document in &mut documents {
        let namespaced = document.object.kind().namespaced();
        let meta = document.object.meta_mut();
        if namespaced && !namespace.is_empty() && meta.namespace() == DEFAULT_NAMESPACE {
            meta.namespace = Some(namespace.to_string());
        }
        meta.labels
            .insert(LABEL_NAME.to_string(), owner.name.clone());
        meta.labels
            .insert(LABEL_NAMESPACE.to_string(), owner.namespace.clone());
    }
    documents
}

/// Which of `desired` to apply: all of them, or (`only_changed`, for a GitSync without
/// selfHeal moving to a new commit) those new or different from the `previous` commit's,
/// so hand edits of objects the commit did not touch stay.
pub fn to_apply<'a>(
    desired: &'a [Document],
    previous: Option<&[Document]>,
    only_changed: bool,
) -> Vec<&'a Document> {
    let Some(previous) = previous.filter(|_| only_changed) else {
        return desired.iter().collect();
    };
    let before: HashMap<InventoryEntry, &AnyObject> = previous
        .iter()
        .map(|d| (entry_of(&d.object), &d.object))
        .collect();
    desired
        .iter()
        .filter(|d| before.get(&entry_of(&d.object)) != Some(&&d.object))
        .collect()
}

/// What left the repository: entries of the previous inventory not in the new one, sorted
/// by kind in its declared order (Services before the Networks they use).
pub fn to_prune(
    previous: &[InventoryEntry],
    now: &BTreeSet<InventoryEntry>,
) -> Vec<InventoryEntry> {
    let mut gone: Vec<InventoryEntry> = previous
        .iter()
        .filter(|entry| !now.contains(entry))
        .cloned()
        .collect();
    gone.sort();
    gone
}

#[cfg(test)]
mod tests {
    use dctl_apis::manifest::decode;
    use dctl_apis::Kind;

    use super::*;

    fn docs(yaml: &str) -> Vec<Document> {
        decode("x.yaml", yaml).unwrap()
    }

    fn entry(kind: Kind, namespace: &str, name: &str) -> InventoryEntry {
        InventoryEntry {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    const TWO: &str = "apiVersion: dctl/v1\nkind: Network\nmetadata: {name: a}\n---\n\
                       apiVersion: dctl/v1\nkind: Network\nmetadata: {name: b, namespace: prod}\n";

    #[test]
    fn desired_objects_carry_the_owner_and_the_namespace_override() {
        let owner = ObjectKey::new("ops", "apps");
        let objects = desired(docs(TWO), &owner, "staging");
        let shown: Vec<(String, String, String)> = objects
            .iter()
            .map(|d| {
                let meta = d.object.meta();
                (
                    meta.namespace().to_string(),
                    meta.labels[LABEL_NAME].clone(),
                    meta.labels[LABEL_NAMESPACE].clone(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("staging".into(), "apps".into(), "ops".into()),
                ("prod".into(), "apps".into(), "ops".into())
            ]
        );
        let kept = desired(docs(TWO), &owner, "");
        assert_eq!(kept[0].object.meta().namespace(), "default");
    }

    #[test]
    fn without_self_heal_only_what_the_commit_changed_is_applied() {
        let before = docs(TWO);
        let after = docs(
            "apiVersion: dctl/v1\nkind: Network\nmetadata: {name: a}\nspec: {internal: true}\n---\n\
             apiVersion: dctl/v1\nkind: Network\nmetadata: {name: b, namespace: prod}\n---\n\
             apiVersion: dctl/v1\nkind: Network\nmetadata: {name: c}\n",
        );
        let names = |list: Vec<&Document>| -> Vec<String> {
            list.iter().map(|d| d.object.meta().name.clone()).collect()
        };
        assert_eq!(names(to_apply(&after, Some(&before), true)), ["a", "c"]);
        assert_eq!(
            names(to_apply(&after, Some(&before), false)),
            ["a", "b", "c"]
        );
        assert_eq!(names(to_apply(&after, None, true)), ["a", "b", "c"]);
    }

    #[test]
    fn prune_takes_only_what_left_the_inventory() {
        let previous = vec![
            entry(Kind::Service, "demo", "web"),
            entry(Kind::Network, "demo", "backend"),
            entry(Kind::Service, "demo", "api"),
        ];
        let now: BTreeSet<_> = [entry(Kind::Service, "demo", "web")].into();
        assert_eq!(
            to_prune(&previous, &now),
            [
                entry(Kind::Service, "demo", "api"),
                entry(Kind::Network, "demo", "backend")
            ]
        );
        assert!(to_prune(&[], &now).is_empty());
    }

    #[test]
    fn revisions_and_jitter() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(revision("main", sha), format!("main@{sha}"));
        assert_eq!(sha_of(&revision("release/1.2", sha)), sha);
        let minute = Duration::from_secs(60);
        assert_eq!(with_jitter(minute, 0.0), minute);
        assert_eq!(with_jitter(minute, 1.0), Duration::from_secs(66));
        assert_eq!(with_jitter(minute, 7.0), Duration::from_secs(66));
    }
}
