//! Group commit for single host updates: concurrent callers of
//! [`Store::update_host`] queue their update; one task at a time takes
//! everything queued at that moment and writes it in one transaction, so
//! the commit rate (one fsync per batch), not the request rate, bounds
//! throughput. While a batch commits, the next one gathers.
//!
//! Each caller gets its own result and, for a change, the serial of its own
//! change-log entry, only after the transaction committed (DESIGN invariant
//! 2). A failing item must not fail the others: when a grouped transaction
//! fails on a statement, [`Store::update_hosts`] writes the batch again with
//! one savepoint per item, so only the failing item gets the error. When
//! the database itself is unreachable every item fails: no retry would help.
//!
//! No task runs while nothing is queued: the caller that finds the queue
//! idle spawns the draining task, which ends when the queue is empty.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::error::{DatabaseError, StoreError};
use crate::hosts::{HostUpdate, HostUpdateOutcome};
use crate::store::Store;

/// Updates per transaction at most: large enough to amortise the commit,
/// small enough to keep one transaction (and the write lock) short.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<HostUpdateOutcome, StoreError>>;

/// The queue shared by a [`Store`] and its clones.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Grouped transactions committed or attempted.
    batches: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<(HostUpdate, Reply)>,
    /// Whether a draining task runs.
    draining: bool,
}

impl GroupCommit {
    /// Grouped transactions so far.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Store {
    /// Applies one host's update, grouped with the updates of concurrent
    /// callers into one transaction. Same effects and refusals as an item
    /// of [`Store::update_hosts`] (`UnknownHost`, `HostDisabled`); the
    /// outcome carries the serial of the change-log entry when something
    /// changed. A database failure of another caller's update does not fail
    /// this one. Must be called inside a tokio runtime.
    pub async fn update_host(&self, update: HostUpdate) -> Result<HostUpdateOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut queue = self.group.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.jobs.push((update, reply));
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(drain(self.clone()));
        }
        outcome
            .await
            .map_err(|_| StoreError::Internal("the group commit task stopped".into()))?
    }

    /// Grouped transactions written by [`Store::update_host`] so far (for
    /// metrics).
    pub fn group_commit_batches(&self) -> u64 {
        self.group.batches()
    }
}

/// Marks the queue idle if the draining task ends abnormally (a panic, or
/// the runtime shutting down) and drops what is still queued, so that its
/// callers get an error instead of waiting forever.
struct Draining<'a> {
    group: &'a GroupCommit,
    /// Cleared when the task marked the queue idle itself: a new task may
    /// own the queue by the time this guard drops.
    armed: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.group.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.draining = false;
            queue.jobs.clear();
        }
    }
}

/// Commits batches until the queue is empty.
async fn drain(store: Store) {
    let mut guard = Draining {
        group: &store.group,
        armed: true,
    };
    loop {
        let batch: Vec<(HostUpdate, Reply)> = {
            let mut queue = guard.group.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.jobs.is_empty() {
                queue.draining = false;
                guard.armed = false;
                return;
            }
            let n = queue.jobs.len().min(MAX_BATCH);
            queue.jobs.drain(..n).collect()
        };
        store.group.batches.fetch_add(1, Ordering::Relaxed);
        let (updates, replies): (Vec<HostUpdate>, Vec<Reply>) = batch.into_iter().unzip();
        // A statement failure of one item fails only that item (savepoints,
        // see `update_hosts`); an `Err` here failed the whole transaction.
        let results = match store.update_hosts(&updates).await {
            Ok(results) => results,
            Err(e) => failed_batch(e, updates.len()),
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away (cancelled); what committed
            // stays committed all the same.
            let _ = reply.send(result);
        }
    }
}

/// One copy of a batch-wide failure per caller (`StoreError` is not `Clone`).
/// The first caller gets the error itself.
fn failed_batch(error: StoreError, n: usize) -> Vec<Result<HostUpdateOutcome, StoreError>> {
    tracing::warn!(updates = n, "store: a grouped host update failed: {error}");
    let text = error.to_string();
    let mut results = vec![Err(error)];
    results
        .extend((1..n).map(|_| Err(StoreError::Database(DatabaseError::described(text.clone())))));
    results
}
