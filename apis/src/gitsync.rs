//! The GitSync kind: a git repository, ref and path that the sync controller keeps applied.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::meta::{Condition, Time};
use crate::resource::resource;
use crate::validation::{FieldError, FieldPath};

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
    /// The folder of manifests inside the repository; `.` by default.
    #[serde(default)]
    pub path: String,
    /// 60s by default, `Some` once defaulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Delete objects this sync applied before and that the repository no longer has.
    #[serde(default)]
    pub prune: bool,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
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
            "repo": "https://example.com/x.git", "ref": "main", "path": ".", "interval": "1m", "prune": false,
        });
        assert_eq!(serde_json::to_value(&spec).unwrap(), expected);
        assert_eq!(
            serde_json::from_value::<GitSyncSpec>(expected).unwrap(),
            spec
        );
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
