//! Group commit: compare-and-swap writes that wait together go to etcd as one transaction.
//!
//! etcd 3.4 applies every transaction as its own raft entry and its own fsync, so a
//! compare-and-swap runs at about 0.6× a plain put once many are in flight, and typed
//! writes could not keep up with raw puts. Here at most [`BATCHES_IN_FLIGHT`] transactions
//! are on their way at once; the writes that queue behind them go together in the next
//! one, which compares every write's key and, only if all hold, does all their
//! operations. Each write still gets its own answer:
//!
//! - all compares hold: every write is done, at the transaction's revision (writes of one
//!   batch share a revision, as a Task and its assignment always have);
//! - some compare fails: the batch changes nothing and reads every key's revision; the
//!   writes whose compare still holds are queued again, and each loser is sent alone,
//!   which reads what beat it;
//! - etcd refuses the batch as a whole (a limit, say): every write is sent alone.
//!
//! A write alone is one transaction, as before batching: a single writer pays nothing. When
//! no transaction is on its way, the caller's own task sends it, with no hop to a sender
//! task and back (two cross-thread wake-ups, most of a lone write's cost beyond etcd's).
//! Each key is written at most once per batch, so a batch never holds two operations on
//! one key (mirror keys, a Task's assignment, are derived from the object's own key).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::oneshot;

use super::error::cause_chain;
use super::{Store, StoreError};

/// Transactions on their way to etcd at once; the writes behind them wait and batch up.
/// Two keep etcd busy while the next batch forms, and a lone write never waits.
const BATCHES_IN_FLIGHT: usize = 2;

/// The most writes in one transaction.
const MAX_BATCH_WRITES: usize = 64;

/// The most operations in one transaction: etcd's default `--max-txn-ops`.
const MAX_BATCH_OPS: usize = 128;

/// The most value bytes in one transaction, well under etcd's 1.5 MiB request limit.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// What a compare-and-swap expects of its key.
#[derive(Clone, Copy, Debug)]
pub(super) enum Expect {
    Absent,
    ModRevision(i64),
}

impl Expect {
    fn compare(self, key: &str) -> Compare {
        match self {
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(revision) => Compare::mod_revision(key, CompareOp::Equal, revision),
        }
    }

    /// Whether the key, as read (`None`: absent), is as expected.
    fn holds(self, current: Option<&KeyValue>) -> bool {
        match (self, current) {
            (Expect::Absent, None) => true,
            (Expect::ModRevision(revision), Some(kv)) => kv.mod_revision() == revision,
            _ => false,
        }
    }
}

/// One compare-and-swap: `ops` (the write and the keys that mirror it) if `key` is as
/// expected.
pub(super) struct Write {
    pub key: String,
    pub expect: Expect,
    pub ops: Vec<TxnOp>,
    /// The bytes the operations write, to keep a batch under etcd's request limit.
    pub bytes: usize,
}

/// How a compare-and-swap ended.
pub(super) enum Committed {
    Written {
        revision: i64,
    },
    /// The compare failed. `current` is the key as read then, `revision` the store's
    /// revision at that read; `retried` says an earlier attempt of this write may have
    /// landed with its answer lost on the way back.
    Refused {
        current: Option<KeyValue>,
        revision: i64,
        retried: bool,
    },
}

/// The writes waiting for a transaction, shared by every clone of a [`Store`].
#[derive(Default)]
pub(super) struct Committer {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// Sender tasks running: each sends one batch after another until none is waiting.
    senders: usize,
}

struct Pending {
    write: Write,
    /// Whether an earlier transaction holding this write may have landed unanswered.
    retried: bool,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

impl Committer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is consistent between statements; a panic elsewhere cannot break it.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Queue {
    /// The next batch: waiting writes in queue order, within the batch limits, one per key.
    /// Writes whose callers gave up are dropped.
    fn take_batch(&mut self) -> Vec<Pending> {
        let mut batch: Vec<Pending> = Vec::new();
        let (mut ops, mut bytes) = (0, 0);
        let mut keys = HashSet::new();
        let mut left = VecDeque::new();
        while let Some(pending) = self.waiting.pop_front() {
            if pending.reply.is_closed() {
                continue;
            }
            let fits = batch.is_empty()
                || (batch.len() < MAX_BATCH_WRITES
                    && ops + pending.write.ops.len() <= MAX_BATCH_OPS
                    && bytes + pending.write.bytes <= MAX_BATCH_BYTES
                    && !keys.contains(&pending.write.key));
            if !fits {
                left.push_back(pending);
                if batch.len() >= MAX_BATCH_WRITES {
                    break;
                }
                continue;
            }
            ops += pending.write.ops.len();
            bytes += pending.write.bytes;
            keys.insert(pending.write.key.clone());
            batch.push(pending);
        }
        left.append(&mut self.waiting);
        self.waiting = left;
        batch
    }
}

/// Gives a sender's slot back however its task ends, a panic included, so the queue
/// never waits for a sender that is gone.
struct SenderSlot<'a>(&'a Committer);

impl Drop for SenderSlot<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.senders -= 1;
        // A panic left writes behind with nobody to send them: their callers get no answer
        // (their reply is dropped) rather than waiting forever.
        if std::thread::panicking() && queue.senders == 0 {
            queue.waiting.clear();
        }
    }
}

impl Store {
    /// Does `write` in the next transaction that has room for it.
    ///
    /// # Errors
    /// `Unavailable` when etcd does not answer; `Etcd` when it refuses the write.
    pub(super) async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        let inline = {
            let mut queue = self.committer().lock();
            // Only when nothing at all is on its way: under load, the second slot carries
            // batches of the writes queued behind the first, not writes one by one.
            let idle = queue.waiting.is_empty() && queue.senders == 0;
            if idle {
                queue.senders += 1;
            }
            idle
        };
        if inline {
            let _slot = InlineSlot(self);
            return self.write_alone(&write, false).await;
        }
        let (reply, answer) = oneshot::channel();
        let start_sender = {
            let mut queue = self.committer().lock();
            queue.waiting.push_back(Pending {
                write,
                retried: false,
                reply,
            });
            let start = queue.senders < BATCHES_IN_FLIGHT;
            if start {
                queue.senders += 1;
            }
            start
        };
        if start_sender {
            let store = self.clone();
            tokio::spawn(async move { store.send_batches().await });
        }
        answer.await.unwrap_or_else(|_| {
            // Only a panic in the sender drops a reply unanswered.
            Err(StoreError::Unavailable {
                endpoints: self.endpoints().to_vec(),
                source: "the store's writer stopped before etcd answered".into(),
            })
        })
    }

    fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    /// Sends batches until no write is waiting.
    async fn send_batches(self) {
        let slot = SenderSlot(self.committer());
        loop {
            let batch = {
                let mut queue = self.committer().lock();
                let batch = queue.take_batch();
                if batch.is_empty() {
                    // The slot is given back under the same lock that saw the queue empty,
                    // so a write queued after this look starts a sender of its own.
                    queue.senders -= 1;
                    std::mem::forget(slot);
                    return;
                }
                batch
            };
            match <[Pending; 1]>::try_from(batch) {
                Ok([alone]) => self.answer_alone(alone).await,
                Err(batch) => self.send_batch(batch).await,
            }
        }
    }

    /// One transaction for several writes, and every write's answer.
    async fn send_batch(&self, batch: Vec<Pending>) {
        let (compares, ops): (Vec<Compare>, Vec<TxnOp>) = (
            batch
                .iter()
                .map(|p| p.write.expect.compare(&p.write.key))
                .collect(),
            batch
                .iter()
                .flat_map(|p| p.write.ops.iter().cloned())
                .collect(),
        );
        let reads: Vec<TxnOp> = batch
            .iter()
            .map(|p| {
                TxnOp::get(
                    p.write.key.as_str(),
                    Some(GetOptions::new().with_keys_only()),
                )
            })
            .collect();
        let result = self
            .retrying(|attempt, mut kv| {
                let txn = Txn::new()
                    .when(compares.clone())
                    .and_then(ops.clone())
                    .or_else(reads.clone());
                async move { kv.txn(txn).await.map(|r| (r, attempt > 0)) }
            })
            .await;
        match result {
            Ok((response, _)) if response.succeeded() => {
                let revision = header_revision(&response);
                for pending in batch {
                    let _ = pending.reply.send(Ok(Committed::Written { revision }));
                }
            }
            Ok((response, retried)) => {
                let current = read_keys(&response);
                let mut again = Vec::new();
                for (mut pending, current) in batch.into_iter().zip(current) {
                    pending.retried |= retried;
                    if pending.write.expect.holds(current.as_ref()) {
                        again.push(pending);
                    } else {
                        // Alone it reads what beat it (or finds its own earlier attempt).
                        let store = self.clone();
                        tokio::spawn(async move { store.answer_alone(pending).await });
                    }
                }
                let mut queue = self.committer().lock();
                for pending in again.into_iter().rev() {
                    queue.waiting.push_front(pending);
                }
            }
            Err(StoreError::Unavailable { endpoints, source }) => {
                let cause = cause_chain(source.as_ref());
                for pending in batch {
                    let _ = pending.reply.send(Err(StoreError::Unavailable {
                        endpoints: endpoints.clone(),
                        source: cause.clone().into(),
                    }));
                }
            }
            Err(error) => {
                // Refused as a whole (a limit of etcd's, most likely): each write alone
                // gets etcd's answer to itself.
                tracing::debug!(%error, writes = batch.len(), "etcd refused a batch; writing one by one");
                for pending in batch {
                    self.answer_alone(pending).await;
                }
            }
        }
    }

    /// Answers a queued write from a transaction of its own.
    async fn answer_alone(&self, pending: Pending) {
        let result = self.write_alone(&pending.write, pending.retried).await;
        let _ = pending.reply.send(result);
    }

    /// One write in a transaction of its own, which reads the key if the compare fails.
    async fn write_alone(&self, write: &Write, retried: bool) -> Result<Committed, StoreError> {
        self.retrying(|attempt, mut kv| {
            let txn = Txn::new()
                .when([write.expect.compare(&write.key)])
                .and_then(write.ops.clone())
                .or_else([TxnOp::get(write.key.as_str(), None)]);
            async move { kv.txn(txn).await.map(|r| (r, attempt > 0)) }
        })
        .await
        .map(|(response, again)| {
            let revision = header_revision(&response);
            if response.succeeded() {
                return Committed::Written { revision };
            }
            Committed::Refused {
                current: read_keys(&response).into_iter().next().flatten(),
                revision,
                retried: retried || again,
            }
        })
    }
}

/// The transaction slot of a write its caller sends itself. Given back however the write
/// ends (its caller may give up mid-way); writes that queued meanwhile, finding every slot
/// taken, get a sender then.
struct InlineSlot<'a>(&'a Store);

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        let start_sender = {
            let mut queue = self.0.committer().lock();
            let start = !queue.waiting.is_empty();
            if !start {
                queue.senders -= 1;
            }
            // Else the slot passes straight to the new sender.
            start
        };
        if start_sender {
            let store = self.0.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(async move { store.send_batches().await })),
                // The runtime is going away: nobody is left to wait for an answer.
                Err(_) => store.committer().lock().senders -= 1,
            }
        }
    }
}

fn header_revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// What each `get` of a failed transaction's else branch read, in order (`None`: absent).
fn read_keys(response: &TxnResponse) -> Vec<Option<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs().into_iter().next()),
            _ => None,
        })
        .collect()
}
