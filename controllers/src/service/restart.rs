//! Decides when a task that ended is replaced: Swarm's restart policy plus crash-loop backoff.
//!
//! A task is never restarted in place: "restarting" a slot means creating a new task in it.
//! Everything here is computed from the slot's tasks (the one that ended and the history
//! kept of earlier ones), never from memory, so a controller restart changes nothing.

use std::time::Duration;

use dctl_apis::task::{TaskDesiredState, TaskState};
use dctl_apis::template::{RestartCondition, RestartPolicy};
use dctl_apis::{Task, Time};

/// A task that ran less than this, from creation to its end, failed "quickly": several in a
/// row are a crash loop. One that ran at least this long resets the backoff. (Kubernetes
/// uses 10 minutes for the reset; a task here is a whole new container, and ten seconds is
/// long enough to tell "dies at start" from "died after working".)
pub const STABLE_RUN: Duration = Duration::from_secs(10);

/// The crash-loop backoff stops growing here, as Kubernetes' CrashLoopBackOff does: a
/// broken task is still retried every five minutes, so a fix (an image pushed, a volume
/// mounted) is picked up without a human.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// A zero restart delay still backs off from this once a crash loop starts, so a task that
/// dies at once cannot spin the cluster.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// What to do about a slot whose task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Create the replacement now.
    Now,
    /// Create it at `at`: the restart delay, doubled for each of the `quick_failures` in a
    /// row after the first, has not passed yet.
    At { at: Time, quick_failures: u32 },
    /// The slot stays empty: `attempts` replacements already happened within the window,
    /// which is `maxAttempts`. With a window, the oldest of them leaves it at `until`.
    Exhausted { attempts: u32, until: Option<Time> },
    /// The restart condition asks for no replacement (`none`, or `on-failure` after a
    /// success).
    NotWanted,
}

/// How a task ended, as far as the restart policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It completed with exit code 0.
    Succeeded,
    /// It failed, was rejected, or was stopped by something other than dctl.
    Failed,
    /// dctl stopped it (scale-down, update, drain): not the task's doing.
    Stopped,
    /// Its node went away (orphaned): not the task's doing either.
    Displaced,
}

/// How `task` ended, or `None` while it has not.
pub fn ending(task: &Task) -> Option<Ending> {
    let status = task.status.as_ref()?;
    let wanted_running = matches!(
        task.spec.desired_state,
        TaskDesiredState::Running | TaskDesiredState::Ready
    );
    Some(match status.state {
        TaskState::Complete if status.exit_code.unwrap_or(0) == 0 => Ending::Succeeded,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected => Ending::Failed,
        TaskState::Shutdown if wanted_running => Ending::Failed,
        TaskState::Shutdown => Ending::Stopped,
        TaskState::Orphaned => Ending::Displaced,
        _ => return None,
    })
}

/// When the task's state last changed: for a task that ended, when it ended.
pub fn ended_at(task: &Task) -> Option<Time> {
    task.status
        .as_ref()
        .and_then(|s| s.timestamp)
        .or(task.metadata.creation_timestamp)
}

/// Decides about `task`, which ended while it was meant to run, given the `earlier` tasks
/// of its slot (its history, in any order) and the service's `policy`.
///
/// - A displaced task (its node was lost) is replaced at once, whatever the policy: the
///   policy governs what happens when a task's own process ends, and this did not.
/// - `condition: none` never replaces; `on-failure` replaces all but a success.
/// - `maxAttempts` (0: no limit) counts the earlier tasks of the slot that ended by
///   themselves and were replaced, within `window` (0: all time).
/// - The replacement waits `delay` after the task ended; the n-th quick failure in a row
///   (see [`STABLE_RUN`]) waits `delay × 2^(n−1)`, at most [`MAX_BACKOFF`].
pub fn decide(policy: &RestartPolicy, task: &Task, earlier: &[&Task], now: Time) -> Restart {
    let Some(how) = ending(task) else {
        return Restart::NotWanted;
    };
    match (how, policy.condition) {
        (Ending::Displaced, _) => return Restart::Now,
        (Ending::Stopped, _) | (_, RestartCondition::None) => return Restart::NotWanted,
        (Ending::Succeeded, RestartCondition::OnFailure) => return Restart::NotWanted,
        (Ending::Succeeded | Ending::Failed, _) => {}
    }

    if policy.max_attempts > 0 {
        let mut attempts: Vec<Time> = earlier
            .iter()
            .filter(|t| matches!(ending(t), Some(Ending::Succeeded | Ending::Failed)))
            .filter_map(|t| ended_at(t))
            .filter(|end| policy.window.is_zero() || *end >= minus(now, policy.window.as_std()))
            .collect();
        let max = policy.max_attempts as usize;
        if attempts.len() >= max {
            attempts.sort();
            // Below the limit again once the oldest `len - max + 1` have left the window.
            let until = (!policy.window.is_zero())
                .then(|| plus(attempts[attempts.len() - max], policy.window.as_std()));
            let attempts = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
            return Restart::Exhausted { attempts, until };
        }
    }

    let quick_failures = quick_failures(task, earlier);
    let delay = policy
        .delay
        .unwrap_or(RestartPolicy::DEFAULT_DELAY)
        .as_std();
    let at = match ended_at(task) {
        Some(end) => plus(end, backoff(delay, quick_failures)),
        None => now,
    };
    if at <= now {
        Restart::Now
    } else {
        Restart::At { at, quick_failures }
    }
}

/// How long to wait before replacing the n-th quick failure in a row (0: the task ran
/// stably, so just the delay).
pub fn backoff(delay: Duration, quick_failures: u32) -> Duration {
    if quick_failures <= 1 {
        return delay;
    }
    let doublings = (quick_failures - 1).min(31);
    let grown = delay
        .max(MIN_BACKOFF)
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    // A delay the user set above the ceiling is still honoured.
    grown.max(delay)
}

/// The quick failures in a row ending with `task`: it and the slot's earlier tasks, newest
/// first, until one that ran stably or did not end by itself.
fn quick_failures(task: &Task, earlier: &[&Task]) -> u32 {
    let mut history: Vec<&Task> = earlier.to_vec();
    history.sort_by_key(|t| std::cmp::Reverse(ended_at(t)));
    let chain = std::iter::once(task).chain(history);
    let quick = chain
        .take_while(|t| {
            matches!(ending(t), Some(Ending::Succeeded | Ending::Failed))
                && lifetime(t).is_some_and(|life| life < STABLE_RUN)
        })
        .count();
    u32::try_from(quick).unwrap_or(u32::MAX)
}

/// From creation to the end: it includes scheduling and image pulls, which a crash loop
/// repeats too. `None` when either time is unknown (not counted as quick).
fn lifetime(task: &Task) -> Option<Duration> {
    let created = task.metadata.creation_timestamp?;
    let ended = task.status.as_ref()?.timestamp?;
    Some((ended - created).to_std().unwrap_or(Duration::ZERO))
}

pub(crate) fn plus(time: Time, by: Duration) -> Time {
    let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    time.checked_add_signed(by).unwrap_or(time)
}

fn minus(time: Time, by: Duration) -> Time {
    let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    time.checked_sub_signed(by).unwrap_or(Time::MIN_UTC)
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
