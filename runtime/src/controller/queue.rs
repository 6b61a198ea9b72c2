//! The per-key work queue: deduplicates triggers, serializes each key, keeps earliest deadlines.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use tokio::time::Instant;

use super::TriggerReason;
use crate::object_key::ObjectKey;

#[derive(Debug)]
struct Entry {
    due: Instant,
    /// Ties among equal instants break in scheduling order, so the queue stays FIFO.
    seq: u64,
    reason: TriggerReason,
}

/// Pure bookkeeping: the caller passes the time in and decides how many keys to start, so
/// every rule below is tested without a runtime.
///
/// A key is in at most one of two places:
/// - *waiting*: due at an instant (now for a trigger, later for a requeue or a backoff);
///   scheduling it again keeps the earlier of the two instants;
/// - *running*: handed to a worker. Scheduling it again records one follow-up (again the
///   earliest instant wins), which becomes a waiting entry when the run finishes — so any
///   number of triggers during a run yield exactly one more run, and never a second
///   concurrent one.
#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    waiting: HashMap<ObjectKey, Entry>,
    /// The waiting keys ordered by when they are due.
    by_due: BTreeMap<(Instant, u64), ObjectKey>,
    /// Running keys, each with the follow-up requested during its run, if any.
    running: HashMap<ObjectKey, Option<(Instant, TriggerReason)>>,
    next_seq: u64,
}

impl WorkQueue {
    /// Asks for `key` to be reconciled at `due` (or sooner, if it already is).
    pub(crate) fn schedule(&mut self, key: ObjectKey, due: Instant, reason: TriggerReason) {
        if let Some(follow_up) = self.running.get_mut(&key) {
            match follow_up {
                Some((earliest, _)) if *earliest <= due => {}
                _ => *follow_up = Some((due, reason)),
            }
            return;
        }
        if let Some(entry) = self.waiting.get(&key) {
            if entry.due <= due {
                return;
            }
            self.by_due.remove(&(entry.due, entry.seq));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_due.insert((due, seq), key.clone());
        self.waiting.insert(key, Entry { due, seq, reason });
    }

    /// Takes the waiting key that has been due the longest, and marks it running.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(ObjectKey, TriggerReason)> {
        let first = self.by_due.first_entry()?;
        if first.key().0 > now {
            return None;
        }
        let key = first.remove();
        let entry = self
            .waiting
            .remove(&key)
            .expect("every ordered key is waiting");
        self.running.insert(key.clone(), None);
        Some((key, entry.reason))
    }

    /// Marks `key`'s run over; a follow-up requested during the run starts waiting.
    pub(crate) fn finish(&mut self, key: &ObjectKey) {
        if let Some(Some((due, reason))) = self.running.remove(key) {
            self.schedule(key.clone(), due, reason);
        }
    }

    /// The earliest instant strictly after `now` at which a waiting key becomes due: when
    /// the caller should look again even if nothing else happens.
    pub(crate) fn next_due_after(&self, now: Instant) -> Option<Instant> {
        self.by_due
            .range((Bound::Excluded((now, u64::MAX)), Bound::Unbounded))
            .next()
            .map(|((due, _), _)| *due)
    }

    /// Keys due by `now` and waiting for a worker (not those waiting for a later deadline).
    pub(crate) fn depth(&self, now: Instant) -> usize {
        self.by_due.range(..=(now, u64::MAX)).count()
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("demo", name)
    }

    fn drain(queue: &mut WorkQueue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| queue.pop_due(now))
            .map(|(key, _)| key.name)
            .collect()
    }

    #[test]
    fn repeated_triggers_of_a_waiting_key_are_one_entry() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        for _ in 0..3 {
            queue.schedule(key("a"), now, TriggerReason::Applied);
        }
        queue.schedule(key("b"), now, TriggerReason::Applied);
        queue.schedule(key("a"), now, TriggerReason::Applied);

        assert_eq!(queue.depth(now), 2);
        assert_eq!(drain(&mut queue, now), ["a", "b"]);
    }

    #[test]
    fn a_running_key_is_not_handed_out_again_and_gets_one_follow_up() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        queue.schedule(key("a"), now, TriggerReason::Applied);
        assert_eq!(drain(&mut queue, now), ["a"]);

        for _ in 0..5 {
            queue.schedule(key("a"), now, TriggerReason::Applied);
        }
        assert_eq!(drain(&mut queue, now), Vec::<String>::new());
        assert_eq!(queue.running(), 1);

        queue.finish(&key("a"));
        assert_eq!(queue.running(), 0);
        assert_eq!(drain(&mut queue, now), ["a"]);
        queue.finish(&key("a"));
        assert_eq!(drain(&mut queue, now), Vec::<String>::new());
    }

    #[test]
    fn a_run_without_triggers_leaves_nothing_behind() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        queue.schedule(key("a"), now, TriggerReason::Applied);
        drain(&mut queue, now);
        queue.finish(&key("a"));
        assert_eq!(queue.depth(now), 0);
        assert_eq!(queue.next_due_after(now), None);
    }

    #[test]
    fn the_earliest_deadline_wins_and_a_later_one_does_not_postpone() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut queue = WorkQueue::default();
        queue.schedule(key("a"), now + 10 * s, TriggerReason::Requeue);
        queue.schedule(key("a"), now + 3 * s, TriggerReason::Requeue);
        queue.schedule(key("a"), now + 20 * s, TriggerReason::Requeue);

        assert_eq!(queue.next_due_after(now), Some(now + 3 * s));
        assert_eq!(queue.depth(now + 2 * s), 0);
        assert_eq!(drain(&mut queue, now + 2 * s), Vec::<String>::new());
        assert_eq!(drain(&mut queue, now + 3 * s), ["a"]);
    }

    #[test]
    fn a_trigger_overrides_a_pending_requeue_and_keeps_its_reason() {
        let now = Instant::now();
        let mut queue = WorkQueue::default();
        queue.schedule(
            key("a"),
            now + Duration::from_secs(30),
            TriggerReason::Backoff,
        );
        queue.schedule(key("a"), now, TriggerReason::Deleted);

        assert_eq!(queue.pop_due(now), Some((key("a"), TriggerReason::Deleted)));
        assert_eq!(queue.next_due_after(now), None);
    }

    #[test]
    fn the_earliest_follow_up_of_a_running_key_wins() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut queue = WorkQueue::default();
        queue.schedule(key("a"), now, TriggerReason::Applied);
        drain(&mut queue, now);

        queue.schedule(key("a"), now + 10 * s, TriggerReason::Requeue);
        queue.schedule(key("a"), now + 4 * s, TriggerReason::Requeue);
        queue.schedule(key("a"), now + 8 * s, TriggerReason::Requeue);
        queue.finish(&key("a"));

        assert_eq!(queue.next_due_after(now), Some(now + 4 * s));
        // The run's own requeue, scheduled after it finished, merges the same way.
        queue.schedule(key("a"), now + 2 * s, TriggerReason::Requeue);
        assert_eq!(queue.next_due_after(now), Some(now + 2 * s));
    }

    #[test]
    fn keys_come_out_in_deadline_order_then_scheduling_order() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut queue = WorkQueue::default();
        queue.schedule(key("late"), now + 5 * s, TriggerReason::Requeue);
        queue.schedule(key("first"), now, TriggerReason::Applied);
        queue.schedule(key("second"), now, TriggerReason::Applied);
        queue.schedule(key("early"), now + s, TriggerReason::Requeue);

        assert_eq!(queue.depth(now), 2);
        assert_eq!(queue.depth(now + 5 * s), 4);
        assert_eq!(
            drain(&mut queue, now + 5 * s),
            ["first", "second", "early", "late"]
        );
    }

    #[test]
    fn next_due_after_skips_keys_already_due() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut queue = WorkQueue::default();
        queue.schedule(key("now"), now, TriggerReason::Applied);
        queue.schedule(key("later"), now + 7 * s, TriggerReason::Requeue);

        assert_eq!(queue.next_due_after(now), Some(now + 7 * s));
        assert_eq!(queue.next_due_after(now + 7 * s), None);
    }
}
