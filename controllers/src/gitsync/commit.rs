//! A commit's manifests as a GitSync applies them: read and validated whole, or refused.

use std::path::{Path, PathBuf};

use dctl_apis::gitsync::{GitSyncSpec, SyncError};
use dctl_apis::Document;
use dctl_runtime::manifest_files;
use dctl_runtime::ObjectKey;

use super::plan;
use super::status::{self, REASON_EMPTY_PATH, REASON_PATH_NOT_FOUND, REASON_VALIDATION_FAILED};

/// A commit's objects, or why none of them may be applied.
pub type Loaded = Result<Vec<Document>, Refusal>;

#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub errors: Vec<SyncError>,
}

/// Reads and validates every manifest under the GitSync's path in the exported commit at
/// `root` (subfolders included), on the blocking pool.
pub async fn read(root: PathBuf, spec: GitSyncSpec, owner: ObjectKey) -> Loaded {
    let read = tokio::task::spawn_blocking(move || read_now(&root, &spec, &owner)).await;
    read.unwrap_or_else(|err| {
        Err(Refusal {
            reason: REASON_VALIDATION_FAILED,
            errors: vec![SyncError {
                message: format!("reading the manifests failed: {err}"),
                ..SyncError::default()
            }],
        })
    })
}

fn read_now(root: &Path, spec: &GitSyncSpec, owner: &ObjectKey) -> Loaded {
    let relative: Vec<&str> = spec
        .path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    let shown = if relative.is_empty() {
        ".".to_string()
    } else {
        relative.join("/")
    };
    let target = relative
        .iter()
        .fold(root.to_path_buf(), |p, part| p.join(part));
    let root_text = root.display().to_string();
    if !target.exists() {
        return Err(Refusal {
            reason: REASON_PATH_NOT_FOUND,
            errors: vec![SyncError {
                file: shown,
                message: "no such file or directory in the repository".into(),
                ..SyncError::default()
            }],
        });
    }
    let empty = || {
        if spec.allow_empty {
            Ok(Vec::new())
        } else {
            Err(Refusal {
                reason: REASON_EMPTY_PATH,
                errors: vec![SyncError {
                    file: shown.clone(),
                    message: "no manifests here; set spec.allowEmpty to accept an empty path \
                              (and prune everything applied before)"
                        .into(),
                    ..SyncError::default()
                }],
            })
        }
    };
    match manifest_files::read_manifests(&[target], true) {
        Ok(documents) if documents.is_empty() => empty(),
        Ok(mut documents) => {
            for document in &mut documents {
                document.source = status::relative(&document.source, &root_text);
            }
            Ok(plan::desired(documents, owner, &spec.namespace))
        }
        Err(errors)
            if errors.len() == 1
                && errors[0].document == 0
                && errors[0].message.starts_with("no *.yaml") =>
        {
            empty()
        }
        Err(errors) => Err(Refusal {
            reason: REASON_VALIDATION_FAILED,
            errors: errors
                .iter()
                .map(|e| status::sync_error(e, &root_text))
                .collect(),
        }),
    }
}
