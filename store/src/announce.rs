//! Commit announcements: after a write transaction commits, the store tells
//! whoever listens which change-log entries it wrote.
//!
//! Two kinds of listeners, both fed from [`crate::Store`]'s commit path so
//! that every writer (updater, web UI, admin CLI) feeds responders without
//! code of its own:
//! - in-process subscribers ([`crate::Store::subscribe`]): a bounded
//!   `tokio::sync::broadcast` channel; a subscriber that lags loses the
//!   oldest announcements and learns it did (`RecvError::Lagged`), then falls
//!   back to the change log;
//! - push targets ([`crate::Store::push_to`]): one task per responder control
//!   socket with a bounded queue; a full queue drops the frame, a dead socket
//!   drops the connection. The writer never waits for either.
//!
//! This module must never block or fail a commit: an announcement is a
//! hint; the change log is the truth (DESIGN invariant 1). It holds no SQL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::feed::{FeedMessage, encode_changes, encode_frame};
use crate::model::Change;

/// Announcements buffered for in-process subscribers before the slowest
/// one starts losing the oldest.
const SUBSCRIBER_CAPACITY: usize = 4096;
/// Announcements queued per push target before new ones are dropped.
const PUSH_QUEUE: usize = 4096;

/// How a push target behaves.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Written into the `Hello` frame, for the responder's logs.
    pub writer: String,
    /// Longest wait to connect or to write one frame batch.
    pub io_timeout: Duration,
    /// After a failed connect, frames are dropped (not retried) for this
    /// long, so a writer with a dead responder costs one failed connect per
    /// interval.
    pub retry_after: Duration,
    /// An idle connection gets a `Heartbeat` this often.
    pub heartbeat: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            writer: "ddserver".into(),
            io_timeout: Duration::from_millis(500),
            retry_after: Duration::from_millis(200),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Counters of one push target (for tests and metrics).
#[derive(Debug, Default)]
pub struct PushStats {
    /// Frames batches written to the socket.
    pub sent: AtomicU64,
    /// Announcements dropped: queue full, no connection, or a write error.
    pub dropped: AtomicU64,
}

enum PushItem {
    Frames(Arc<Vec<u8>>, u64),
    Flush(oneshot::Sender<()>),
}

struct PushTarget {
    queue: mpsc::Sender<PushItem>,
    stats: Arc<PushStats>,
}

/// The shared announcement hub of one `Store` and its clones.
pub(crate) struct Announcer {
    subscribers: broadcast::Sender<Arc<[Change]>>,
    targets: Mutex<Vec<PushTarget>>,
    latest: AtomicU64,
}

impl Announcer {
    pub(crate) fn new() -> Announcer {
        Announcer {
            subscribers: broadcast::channel(SUBSCRIBER_CAPACITY).0,
            targets: Mutex::new(Vec::new()),
            latest: AtomicU64::new(0),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<[Change]>> {
        self.subscribers.subscribe()
    }

    /// Called after a commit with the entries it wrote. Never blocks.
    pub(crate) fn announce(&self, changes: Vec<Change>) {
        let Some(latest) = changes.iter().map(|c| c.serial).max() else {
            return;
        };
        self.latest.fetch_max(latest, Ordering::Relaxed);
        let changes: Arc<[Change]> = changes.into();
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if !targets.is_empty() {
            let mut frames = Vec::new();
            encode_changes(&changes, &mut frames);
            let frames = Arc::new(frames);
            for target in targets.iter() {
                if target
                    .queue
                    .try_send(PushItem::Frames(frames.clone(), latest))
                    .is_err()
                {
                    target.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(targets);
        // No subscriber is not an error: nobody listens in this process.
        let _ = self.subscribers.send(changes);
    }

    /// Starts pushing to the control socket at `path`. Must be called
    /// inside a tokio runtime.
    pub(crate) fn push_to(&self, path: PathBuf, options: PushOptions) -> Arc<PushStats> {
        let (queue, rx) = mpsc::channel(PUSH_QUEUE);
        let stats = Arc::new(PushStats::default());
        tokio::spawn(push_task(path, options, rx, stats.clone()));
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PushTarget {
                queue,
                stats: stats.clone(),
            });
        stats
    }

    /// Waits until every push target has handled what was queued before
    /// this call (written it or given up on it), at most `timeout`.
    /// Returns whether all finished in time.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let queues: Vec<_> = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| t.queue.clone())
            .collect();
        let all = async {
            let mut done = true;
            for queue in queues {
                let (tx, rx) = oneshot::channel();
                if queue.send(PushItem::Flush(tx)).await.is_err() || rx.await.is_err() {
                    done = false;
                }
            }
            done
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }
}

/// One push target's connection loop.
async fn push_task(
    path: PathBuf,
    options: PushOptions,
    mut rx: mpsc::Receiver<PushItem>,
    stats: Arc<PushStats>,
) {
    let mut conn: Option<UnixStream> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut latest = 0u64;
    loop {
        let item = match tokio::time::timeout(options.heartbeat, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(_idle) => {
                if let Some(stream) = conn.as_mut() {
                    let mut frame = Vec::new();
                    let _ = encode_frame(&FeedMessage::Heartbeat { latest }, &mut frame);
                    if !write(stream, &frame, options.io_timeout).await {
                        conn = None;
                    }
                }
                continue;
            }
        };
        match item {
            PushItem::Flush(reply) => {
                let _ = reply.send(());
            }
            PushItem::Frames(frames, serial) => {
                latest = latest.max(serial);
                if conn.is_none() && tokio::time::Instant::now() >= retry_at {
                    conn = connect(&path, &options, latest).await;
                    if conn.is_none() {
                        retry_at = tokio::time::Instant::now() + options.retry_after;
                    }
                }
                let Some(stream) = conn.as_mut() else {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if write(stream, &frames, options.io_timeout).await {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!(
                        "feed: pushing to {} failed; the log covers it",
                        path.display()
                    );
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
            }
        }
    }
}

async fn connect(path: &PathBuf, options: &PushOptions, latest: u64) -> Option<UnixStream> {
    let mut stream = match tokio::time::timeout(options.io_timeout, UnixStream::connect(path)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!("feed: no responder at {}: {e}", path.display());
            return None;
        }
        Err(_) => return None,
    };
    let mut hello = Vec::new();
    let writer = truncate_utf8(&options.writer, 255).to_owned();
    let _ = encode_frame(&FeedMessage::Hello { latest, writer }, &mut hello);
    write(&mut stream, &hello, options.io_timeout)
        .await
        .then_some(stream)
}

async fn write(stream: &mut UnixStream, bytes: &[u8], timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
