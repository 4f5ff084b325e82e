//! The batched last-seen times of unchanged (`nochg`) updates.
//!
//! Changed updates are committed by the store's group commit
//! ([`ddserver_store::Store::update_host`]): concurrent requests' changes
//! share one transaction, so the commit rate, not the request rate, bounds
//! throughput, and each request learns its own outcome only after the
//! commit (DESIGN invariant 2).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ddserver_store::Store;
use tokio::sync::watch;

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
