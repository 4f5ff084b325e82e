//! Group commit: concurrent requests' changes go to one task that writes
//! whatever has queued up in one transaction, so the commit rate, not the
//! request rate, bounds throughput (one fsync per batch). Also the batched
//! last-seen times of unchanged (`nochg`) updates.
//!
//! A request learns its outcome only after the transaction committed (DESIGN
//! invariant 2). This module must never answer for a change that did not
//! commit: a failed batch fails every request in it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ddserver_store::{HostUpdate, HostUpdateOutcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;

/// Updates per transaction at most: large enough to amortise the commit,
/// small enough to keep one transaction short.
const MAX_BATCH: usize = 256;

/// Why one update did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommitError {
    /// The database failed or is unreachable; nothing of the batch committed.
    #[error("database unavailable")]
    Unavailable,
    /// The host vanished between authentication and commit.
    #[error("unknown host")]
    UnknownHost,
    /// An administrator disabled the host.
    #[error("host disabled")]
    Disabled,
    /// The committer stopped (shutdown).
    #[error("updater stopping")]
    Stopped,
}

type Job = (
    HostUpdate,
    oneshot::Sender<Result<HostUpdateOutcome, CommitError>>,
);

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committing task. It ends when every [`Committer`] is
    /// dropped, after the queued jobs are written.
    pub(crate) fn start(
        store: Store,
        metrics: Arc<Metrics>,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let task = tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
            while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (updates, replies): (Vec<HostUpdate>, Vec<_>) = batch.drain(..).unzip();
                metrics.commit_batches.fetch_add(1, Ordering::Relaxed);
                match store.update_hosts(&updates).await {
                    Ok(results) => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(result.map_err(|e| match e {
                                StoreError::UnknownHost { .. } => CommitError::UnknownHost,
                                StoreError::HostDisabled { .. } => CommitError::Disabled,
                                _ => CommitError::Unavailable,
                            }));
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            updates = updates.len(),
                            "updater: committing a batch of host updates failed: {e}"
                        );
                        for reply in replies {
                            let _ = reply.send(Err(CommitError::Unavailable));
                        }
                    }
                }
            }
        });
        (Committer { jobs }, task)
    }

    /// Queues `update` and waits for its commit.
    pub(crate) async fn commit(
        &self,
        update: HostUpdate,
    ) -> Result<HostUpdateOutcome, CommitError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send((update, reply))
            .await
            .map_err(|_| CommitError::Stopped)?;
        outcome.await.map_err(|_| CommitError::Stopped)?
    }
}

/// Host ids seen by unchanged updates since the last flush.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    ids: Mutex<Vec<i64>>,
}

/// Ids held at most before the oldest are dropped (last-seen times are
/// informational; memory is not).
const MAX_SEEN: usize = 1_000_000;

impl Seen {
    pub(crate) fn record(&self, id: i64) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() < MAX_SEEN {
            ids.push(id);
        }
    }

    async fn flush(&self, store: &Store) {
        let mut ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        ids.dedup();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        if let Err(e) = store.record_seen(&ids, now).await {
            tracing::warn!(
                hosts = ids.len(),
                "updater: recording last-seen times failed: {e}"
            );
        }
    }

    /// Flushes every `interval` until `stop` turns true, then once more.
    pub(crate) fn start_flusher(
        self: Arc<Self>,
        store: Store,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(interval) => self.flush(&store).await,
                }
            }
            self.flush(&store).await;
        })
    }
}
