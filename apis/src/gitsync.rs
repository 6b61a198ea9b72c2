//! The GitSync kind: a git repository, ref and path that the sync controller keeps applied.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::{Condition, Time};
use crate::resource::{resource, Kind};
use crate::validation::{FieldError, FieldPath};

/// The label naming the GitSync that applied an object (with the one below, its namespace).
pub const LABEL_NAME: &str = "dctl.io/gitsync-name";
/// The label naming the namespace of the GitSync that applied an object.
pub const LABEL_NAMESPACE: &str = "dctl.io/gitsync-namespace";
/// Set (to any new value, a time by convention) to ask for a sync now:
/// `dctl gitsync reconcile NAME` writes it.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "dctl.io/reconcile-requested-at";
/// Held by a GitSync with `prune` while it has objects: deleting it deletes them first, as
/// deleting a Flux Kustomization with `prune: true` does.
pub const FINALIZER_PRUNE: &str = "dctl.io/gitsync-prune";

resource!(
    /// GitOps: the manifests under `path` at `ref` of `repo`, applied every `interval`.
    GitSync,
    GitSyncSpec,
    GitSyncStatus
);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncSpec {
    /// Required: `https://…`, `ssh://…`, `git://…`, `file://…`, `user@host:path` or an
    /// absolute local path.
    #[serde(default)]
    pub repo: String,
    /// A branch, tag or commit; `main` by default.
    #[serde(rename = "ref", default)]
    pub ref_: String,
    /// The folder of manifests inside the repository (read with its subfolders); `.` by
    /// default.
    #[serde(default)]
    pub path: String,
    /// How often the repository is fetched; 60s by default (plus up to 10 % jitter), `Some`
    /// once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Delete objects this sync applied before and that the repository no longer has.
    /// `true` by default, `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Put back objects changed or deleted by hand, within seconds. `true` by default,
    /// `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    /// Stop syncing (nothing is fetched, applied or pruned) until set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// Where objects go whose manifest names no namespace (or `default`); empty: `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Accept a path with no manifests (and so prune everything applied before); refused by
    /// default, so a wrong path never deletes everything.
    #[serde(default)]
    pub allow_empty: bool,
}

/// One problem that kept a revision from being applied: a manifest error (file, document,
/// field) or an object another GitSync owns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncError {
    /// The file, relative to the repository's root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// 1-based document index in the file; 0 when the problem is the file itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub document: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The field path, `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}: ", self.file)?;
        }
        match (self.document, self.line) {
            (0, _) => {}
            (document, Some(line)) => write!(f, "document {document} (line {line}): ")?,
            (document, None) => write!(f, "document {document}: ")?,
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// An object a GitSync applied: what it may prune later.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryEntry {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for InventoryEntry {
    /// `service/demo/web`, `node/n1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.as_str().to_ascii_lowercase();
        match self.namespace.as_str() {
            "" => write!(f, "{kind}/{}", self.name),
            namespace => write!(f, "{kind}/{namespace}/{}", self.name),
        }
    }
}

impl GitSyncSpec {
    pub const DEFAULT_REF: &'static str = "main";
    pub const DEFAULT_PATH: &'static str = ".";
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    /// Anything shorter would only hammer the remote.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSyncStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the last attempted revision is applied) and `Stalled` (it cannot be until
    /// someone changes the repository or the spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `ref@sha` of the revision the cluster runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// `ref@sha` of the revision last fetched and tried, applied or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// When a sync last changed something (applied, pruned or moved to a new revision); a
    /// sync that changes nothing leaves it, so it writes nothing at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// The value of the `dctl.io/reconcile-requested-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Why the last attempted revision was not applied: every manifest error of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SyncError>,
    /// The objects applied from the repository, sorted: what prune may delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
}

impl GitSyncStatus {
    /// `abc1234`: the short commit of the applied revision, for tables.
    pub fn short_revision(&self) -> Option<String> {
        let revision = self.last_applied_revision.as_deref()?;
        let sha = revision.rsplit_once('@').map_or(revision, |(_, sha)| sha);
        Some(sha.chars().take(7).collect())
    }
}

impl GitSyncSpec {
    pub fn apply_defaults(&mut self) {
        if self.ref_.is_empty() {
            self.ref_ = Self::DEFAULT_REF.to_string();
        }
        if self.path.is_empty() {
            self.path = Self::DEFAULT_PATH.to_string();
        }
        self.interval.get_or_insert(Self::DEFAULT_INTERVAL);
        self.prune.get_or_insert(true);
        self.self_heal.get_or_insert(true);
    }

    /// Whether objects that left the repository are deleted (default true).
    pub fn prune(&self) -> bool {
        self.prune.unwrap_or(true)
    }

    /// Whether hand edits are put back (default true).
    pub fn self_heal(&self) -> bool {
        self.self_heal.unwrap_or(true)
    }

    /// How often the repository is fetched (default 60s).
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    pub fn validate(&self, path: &FieldPath) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.repo.is_empty() {
            errors.push(FieldError::new(&path.child("repo"), "required"));
        } else if !is_repo_url(&self.repo) {
            let message = format!(
                "invalid repository {:?}: expected https://, http://, ssh://, git:// or file:// \
                 URL, user@host:path, or an absolute path",
                self.repo
            );
            errors.push(FieldError::new(&path.child("repo"), message));
        }
        if self.ref_.chars().any(char::is_whitespace) || self.ref_.contains("..") {
            let message = format!(
                "invalid ref {:?}: must not contain spaces or '..'",
                self.ref_
            );
            errors.push(FieldError::new(&path.child("ref"), message));
        }
        // The path is joined to the checkout; it must not lead out of it.
        let escapes = self.path.starts_with('/') || self.path.split('/').any(|part| part == "..");
        if escapes {
            let message = format!(
                "must be a relative path inside the repository, got {:?}",
                self.path
            );
            errors.push(FieldError::new(&path.child("path"), message));
        }
        if !self.namespace.is_empty() {
            if let Err(message) = crate::validation::check_dns1123_label(&self.namespace) {
                errors.push(FieldError::new(&path.child("namespace"), message));
            }
        }
        if let Some(interval) = self.interval.filter(|i| *i < Self::MIN_INTERVAL) {
            let message = format!("must be at least {}, got {interval}", Self::MIN_INTERVAL);
            errors.push(FieldError::new(&path.child("interval"), message));
        }
        errors
    }
}

fn is_repo_url(repo: &str) -> bool {
    if repo.starts_with('/') {
        return true;
    }
    if let Some((scheme, rest)) = repo.split_once("://") {
        return ["https", "http", "ssh", "git", "file"].contains(&scheme) && !rest.is_empty();
    }
    // scp-like syntax, as git reads it: a colon before any slash.
    match repo.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let mut spec: GitSyncSpec = serde_json::from_value(spec).unwrap();
        spec.apply_defaults();
        spec.validate(&FieldPath::new("spec"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults() {
        let mut spec: GitSyncSpec =
            serde_json::from_value(json!({"repo": "https://example.com/x.git"})).unwrap();
        spec.apply_defaults();
        let expected = json!({
            "repo": "https://example.com/x.git", "ref": "main", "path": ".", "interval": "1m", "prune": true,
            "selfHeal": true, "suspend": false, "allowEmpty": false,
        });
        assert_eq!(serde_json::to_value(&spec).unwrap(), expected);
        assert_eq!(
            serde_json::from_value::<GitSyncSpec>(expected).unwrap(),
            spec
        );
    }

    #[test]
    fn errors_and_revisions_print_for_humans() {
        let error = SyncError {
            file: "apps/web.yaml".into(),
            document: 2,
            line: Some(9),
            field: Some("spec.replicas".into()),
            message: "must be at least 0".into(),
        };
        assert_eq!(
            error.to_string(),
            "apps/web.yaml: document 2 (line 9): spec.replicas: must be at least 0"
        );
        let entry = InventoryEntry {
            kind: Kind::Service,
            namespace: "demo".into(),
            name: "web".into(),
        };
        assert_eq!(entry.to_string(), "service/demo/web");
        let status = GitSyncStatus {
            last_applied_revision: Some("main@0123456789abcdef0123456789abcdef01234567".into()),
            ..Default::default()
        };
        assert_eq!(status.short_revision().as_deref(), Some("0123456"));
    }

    #[test]
    fn validates() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!({"repo": "git@example.com:ops/cluster.git", "ref": "v1.2", "path": "envs/prod"}),
                vec![],
            ),
            (
                json!({"repo": "/srv/git/cluster", "interval": "5m"}),
                vec![],
            ),
            (json!({"repo": "file:///tmp/repo"}), vec![]),
            (json!({}), vec!["spec.repo: required"]),
            (
                json!({"repo": "example.com/x", "ref": "a b", "path": "../other", "interval": "500ms"}),
                vec![
                    r#"spec.repo: invalid repository "example.com/x": expected https://, http://, ssh://, git:// or file:// URL, user@host:path, or an absolute path"#,
                    r#"spec.ref: invalid ref "a b": must not contain spaces or '..'"#,
                    r#"spec.path: must be a relative path inside the repository, got "../other""#,
                    "spec.interval: must be at least 1s, got 500ms",
                ],
            ),
            (
                json!({"repo": "ftp://example.com/x", "path": "/etc"}),
                vec![
                    r#"spec.repo: invalid repository "ftp://example.com/x": expected https://, http://, ssh://, git:// or file:// URL, user@host:path, or an absolute path"#,
                    r#"spec.path: must be a relative path inside the repository, got "/etc""#,
                ],
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(errors(spec.clone()), expected, "{spec}");
        }
        let error = serde_json::from_value::<GitSyncSpec>(json!({"interval": "soon"})).unwrap_err();
        assert!(
            error.to_string().starts_with(r#"invalid duration "soon""#),
            "{error}"
        );
    }
}
