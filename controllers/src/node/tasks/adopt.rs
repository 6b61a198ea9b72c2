//! Finds this node's containers, so each is adopted by its task or removed if the task is gone.
//!
//! At start and then every resync period, every container labelled with this node
//! triggers its task's key. The reconcile of that key decides: a container whose task uid
//! is assigned here is adopted as it is (never recreated); any other is stopped and
//! removed. The sweep also catches containers no event announced, such as those left by a
//! crashed agent or created by hand with dctl's labels.

use std::collections::BTreeSet;
use std::time::Duration;

use bollard::Docker;
use dctl_runtime::controller::{Trigger, TriggerReason};
use dctl_runtime::ObjectKey;
use futures::{stream, Stream, StreamExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::observed::{self, Listed};

/// Sorts the containers labelled with one task key into the one that belongs to the
/// assigned task (`task_uid`) and the strays: those of an earlier task of the same name,
/// of a task no longer assigned here (`None`), or — never made by dctl, but possible by
/// hand — a second container of the same task, of which the running one is kept.
pub fn sort_out(task_uid: Option<&str>, containers: Vec<Listed>) -> (Option<Listed>, Vec<Listed>) {
    let (mut mine, mut strays): (Vec<Listed>, Vec<Listed>) = containers
        .into_iter()
        .partition(|c| Some(c.task_uid.as_str()) == task_uid && !c.task_uid.is_empty());
    // A stable choice: running first, then by id.
    mine.sort_by(|a, b| b.running.cmp(&a.running).then_with(|| a.id.cmp(&b.id)));
    let mut mine = mine.into_iter();
    let adopted = mine.next();
    strays.extend(mine);
    (adopted, strays)
}

/// Triggers for the task of every container of `node`: at once, then every `period`.
///
/// The controller holds them until its cache has the node's full assignments, so a
/// container is never judged against a half-read list.
pub fn container_sweeps(
    docker: Docker,
    node: String,
    period: Duration,
) -> impl Stream<Item = Trigger> + Send {
    let mut interval =
        tokio::time::interval_at(Instant::now(), period.max(Duration::from_millis(100)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Sweeps {
        docker,
        node,
        interval,
        first: true,
        failing: false,
    };
    stream::unfold(state, |mut state| async move {
        state.interval.tick().await;
        let keys = state.sweep().await;
        let reason = if std::mem::take(&mut state.first) {
            TriggerReason::Listed
        } else {
            TriggerReason::Resync
        };
        let triggers: Vec<Trigger> = keys
            .into_iter()
            .map(|key| Trigger::new(key, reason.clone()))
            .collect();
        Some((stream::iter(triggers), state))
    })
    .flatten()
}

struct Sweeps {
    docker: Docker,
    node: String,
    interval: Interval,
    first: bool,
    /// Whether the last sweep failed, so an outage is logged once, not every period.
    failing: bool,
}

impl Sweeps {
    /// The task keys of the node's containers; none when Docker does not answer (the next
    /// sweep tries again, and the reconciles report the outage too).
    async fn sweep(&mut self) -> BTreeSet<ObjectKey> {
        let node = self.node.as_str();
        match observed::list(&self.docker, node, None).await {
            Ok(containers) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(node, "Docker answers again");
                }
                containers.into_iter().map(|c| c.key).collect()
            }
            Err(error) => {
                let error = crate::node::error_chain(&error);
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!(node, error, "Docker still does not answer");
                } else {
                    tracing::warn!(
                        node,
                        error,
                        "cannot list this node's containers: is Docker running? retrying"
                    );
                }
                BTreeSet::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, uid: &str, running: bool) -> Listed {
        Listed {
            id: id.into(),
            key: ObjectKey::new("demo", "web.1.abcde"),
            task_uid: uid.into(),
            running,
        }
    }

    fn ids(listed: &[Listed]) -> Vec<&str> {
        listed.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn adopts_the_assigned_tasks_container_and_nothing_else() {
        // The assigned task's uid, the containers, then the adopted one and the strays.
        type Case<'a> = (Option<&'a str>, Vec<Listed>, Option<&'a str>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (Some("u1"), vec![listed("a", "u1", true)], Some("a"), vec![]),
            (Some("u1"), vec![], None, vec![]),
            // The task is no longer assigned here: everything goes.
            (
                None,
                vec![listed("a", "u1", true), listed("b", "u0", false)],
                None,
                vec!["a", "b"],
            ),
            // An earlier task of the same name left its container.
            (
                Some("u1"),
                vec![listed("a", "u0", false), listed("b", "u1", false)],
                Some("b"),
                vec!["a"],
            ),
            // Two containers of one task: the running one stays.
            (
                Some("u1"),
                vec![listed("a", "u1", false), listed("b", "u1", true)],
                Some("b"),
                vec!["a"],
            ),
            // A container without a uid label belongs to nobody.
            (Some(""), vec![listed("a", "", true)], None, vec!["a"]),
        ];
        for (uid, containers, adopted, strays) in cases {
            let (got, got_strays) = sort_out(uid, containers);
            assert_eq!(got.as_ref().map(|c| c.id.as_str()), adopted, "{uid:?}");
            assert_eq!(ids(&got_strays), strays, "{uid:?}");
        }
    }
}
