//! What a reconcile, or the error policy after a failed one, asks the controller to do next.

use std::time::Duration;

use crate::object_key::ObjectKey;

/// The outcome of a successful reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile the key again after `delay`, even if nothing changes (a timeout to check,
    /// a probe to run). A trigger or an earlier requeue meanwhile runs it sooner.
    pub fn requeue(delay: Duration) -> Self {
        Action {
            requeue_after: Some(delay),
        }
    }

    /// Nothing more to do until a trigger (or the periodic resync) comes.
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// What to do about a failed reconcile; the error policy chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorAction {
    /// Retry after the key's next exponential backoff delay (the default).
    Backoff,
    /// Retry after this fixed delay; the key's backoff neither grows nor resets.
    Requeue(Duration),
    /// Do not retry; wait for a trigger (for errors only a change can fix).
    AwaitChange,
}

/// The default error policy: every failure backs off.
pub fn backoff_on_error<E, Ctx>(_key: &ObjectKey, _error: &E, _ctx: &Ctx) -> ErrorAction {
    ErrorAction::Backoff
}
