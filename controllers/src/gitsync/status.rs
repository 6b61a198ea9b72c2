//! The GitSync's status as a sync leaves it: conditions, errors, revisions.

use dctl_apis::gitsync::{GitSyncStatus, SyncError};
use dctl_apis::meta::set_condition;
use dctl_apis::{Condition, ConditionStatus, ManifestError, Time};

/// `True` when the last attempted revision is applied in full.
pub const CONDITION_READY: &str = "Ready";
/// `True` when the sync cannot progress until the repository or the spec changes.
pub const CONDITION_STALLED: &str = "Stalled";

/// `Ready` `True`: the revision is applied.
pub const REASON_SYNCED: &str = "Synced";
/// A manifest of the revision is invalid: nothing of it was applied.
pub const REASON_VALIDATION_FAILED: &str = "ValidationFailed";
/// The path does not exist in the commit.
pub const REASON_PATH_NOT_FOUND: &str = "PathNotFound";
/// The path holds no manifests and `allowEmpty` is off.
pub const REASON_EMPTY_PATH: &str = "EmptyPath";
/// Objects of the revision are managed by another GitSync and were left alone.
pub const REASON_OWNERSHIP_CONFLICT: &str = "OwnershipConflict";
/// The repository could not be fetched or the ref resolved; retried with backoff.
pub const REASON_FETCH_FAILED: &str = "FetchFailed";
/// The store refused a write; retried with backoff.
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";

/// How a sync ended, for the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Verdict {
        Verdict {
            reason,
            message: message.into(),
        }
    }

    fn ready(&self) -> bool {
        self.reason == REASON_SYNCED
    }

    /// Waiting for a person, not for a retry.
    fn stalled(&self) -> bool {
        matches!(
            self.reason,
            REASON_VALIDATION_FAILED
                | REASON_EMPTY_PATH
                | REASON_PATH_NOT_FOUND
                | REASON_OWNERSHIP_CONFLICT
        )
    }
}

/// Sets `Ready` and `Stalled` from `verdict`; returns whether they changed.
pub fn set_verdict(
    status: &mut GitSyncStatus,
    verdict: &Verdict,
    generation: i64,
    now: Time,
) -> bool {
    let condition = |type_: &str, on: bool, reason: &str, message: &str| Condition {
        type_: type_.to_string(),
        status: if on {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: now,
        observed_generation: Some(generation),
    };
    let ready = condition(
        CONDITION_READY,
        verdict.ready(),
        verdict.reason,
        &verdict.message,
    );
    let stalled = if verdict.stalled() {
        condition(CONDITION_STALLED, true, verdict.reason, &verdict.message)
    } else {
        condition(CONDITION_STALLED, false, verdict.reason, "")
    };
    let a = set_condition(&mut status.conditions, ready);
    let b = set_condition(&mut status.conditions, stalled);
    a || b
}

/// A manifest error as status shows it: the file relative to the repository's root.
pub fn sync_error(error: &ManifestError, root: &str) -> SyncError {
    SyncError {
        file: relative(&error.source, root),
        document: error.document,
        line: error.line,
        field: error.path.clone(),
        message: error.message.clone(),
    }
}

/// `root/apps/web.yaml` → `apps/web.yaml`.
pub fn relative(path: &str, root: &str) -> String {
    let root = root.trim_end_matches('/');
    match path.strip_prefix(root) {
        Some(rest) => {
            let rest = rest.trim_start_matches('/');
            if rest.is_empty() {
                ".".to_string()
            } else {
                rest.to_string()
            }
        }
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::meta::find_condition;

    use super::*;

    fn now() -> Time {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn verdicts_set_ready_and_stalled_once() {
        let mut status = GitSyncStatus::default();
        let bad = Verdict::new(REASON_VALIDATION_FAILED, "web.yaml: spec.replicas: bad");
        assert!(set_verdict(&mut status, &bad, 2, now()));
        assert!(!set_verdict(&mut status, &bad, 2, now()));
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        let stalled = find_condition(&status.conditions, CONDITION_STALLED).unwrap();
        assert_eq!(
            (ready.status, stalled.status, stalled.reason.as_str()),
            (
                ConditionStatus::False,
                ConditionStatus::True,
                REASON_VALIDATION_FAILED
            )
        );
        let fetch = Verdict::new(REASON_FETCH_FAILED, "no answer");
        assert!(set_verdict(&mut status, &fetch, 2, now()));
        let stalled = find_condition(&status.conditions, CONDITION_STALLED).unwrap();
        assert_eq!(stalled.status, ConditionStatus::False);
        let good = Verdict::new(REASON_SYNCED, "Applied revision main@abc");
        assert!(set_verdict(&mut status, &good, 2, now()));
        let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
    }

    #[test]
    fn files_are_shown_relative_to_the_checkout() {
        assert_eq!(relative("/c/abc/apps/web.yaml", "/c/abc"), "apps/web.yaml");
        assert_eq!(relative("/c/abc/apps/web.yaml", "/c/abc/"), "apps/web.yaml");
        assert_eq!(relative("/c/abc", "/c/abc"), ".");
        assert_eq!(relative("/elsewhere/x.yaml", "/c/abc"), "/elsewhere/x.yaml");
    }
}
