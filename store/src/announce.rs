//! Commit announcements: after a write transaction commits, the store tells
//! whoever listens which change-log entries it wrote.
//!
//! Two kinds of listeners, both fed from [`crate::Store`]'s commit path so
//! that every writer (updater, web UI, admin CLI) feeds responders without
//! code of its own:
//! - in-process subscribers ([`crate::Store::subscribe`]): a bounded
//!   `tokio::sync::broadcast` channel of [`Announcement`]s (the entries and,
//!   as in a `Commit` frame, the state the commit left behind); a subscriber
//!   that lags loses the oldest announcements and learns it did
//!   (`RecvError::Lagged`), then falls back to the change log;
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

use crate::feed::{Commit, FeedMessage, HostState, encode_changes, encode_commit, encode_frame};
use crate::model::{Change, ChangeKind};
use crate::name::Name;

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

/// What a transaction left behind, gathered inside it for a `Commit`
/// frame: the SOA serial of every zone it touched and the state of every
/// host it changed (`None`: the host is gone), by full name.
#[derive(Debug, Default)]
pub(crate) struct CommitStates {
    pub(crate) zones: Vec<(Name, u32)>,
    pub(crate) hosts: std::collections::HashMap<String, Option<HostState>>,
}

impl CommitStates {
    /// The `Commit` for `changes`, if these states cover every one of them:
    /// host entries only, each with its host's state and its zone's serial.
    fn commit_for(self, changes: &[Change]) -> Option<Commit> {
        let mut hosts = self.hosts;
        let mut entries = Vec::with_capacity(changes.len());
        for change in changes {
            if !matches!(
                change.kind,
                ChangeKind::HostAdded | ChangeKind::HostChanged | ChangeKind::HostRemoved
            ) || !self.zones.iter().any(|(zone, _)| *zone == change.zone)
            {
                return None;
            }
            let state = hosts.get(change.name.as_str())?.clone();
            entries.push((change.clone(), state));
        }
        hosts.clear();
        Some(Commit {
            zones: self.zones,
            changes: entries,
        })
    }
}

/// One commit as an in-process subscriber receives it: the same things a
/// control socket receives, so `ddserver serve` feeds its own responder as
/// a separate responder is fed (DESIGN invariant 7).
#[derive(Debug)]
pub struct Announcement {
    /// The change-log entries the commit wrote, in serial order.
    pub changes: Vec<Change>,
    /// The state the commit left behind, when the transaction gathered it
    /// and it covers every entry (a `Commit` frame's data); `None`: only
    /// the entries, the log has the rest.
    pub commit: Option<Commit>,
}

/// The shared announcement hub of one `Store` and its clones.
pub(crate) struct Announcer {
    subscribers: broadcast::Sender<Arc<Announcement>>,
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

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Announcement>> {
        self.subscribers.subscribe()
    }

    /// Whether anybody receives frames or announcements, so that a
    /// transaction should gather the [`CommitStates`] a `Commit` needs.
    pub(crate) fn wants_states(&self) -> bool {
        self.subscribers.receiver_count() > 0
            || !self
                .targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Called after a commit with the entries it wrote and, if the
    /// transaction gathered them, the states it left behind. Never blocks.
    pub(crate) fn announce(&self, changes: Vec<Change>, states: Option<CommitStates>) {
        let Some(latest) = changes.iter().map(|c| c.serial).max() else {
            return;
        };
        self.latest.fetch_max(latest, Ordering::Relaxed);
        let commit = states.and_then(|states| states.commit_for(&changes));
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if !targets.is_empty() {
            let mut frames = Vec::new();
            // The data when it covers the whole commit and fits one frame,
            // else the hint (the responder then reads the log).
            let encoded = commit
                .as_ref()
                .is_some_and(|commit| encode_commit(commit, &mut frames).is_ok());
            if !encoded {
                encode_changes(&changes, &mut frames);
            }
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
        let _ = self
            .subscribers
            .send(Arc::new(Announcement { changes, commit }));
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
                // A new connection starts with `Hello`, written together
                // with the first frames: apart, the responder could see
                // the `Hello`'s serial first and read the log for what the
                // next frame brings as data.
                let mut greeting = Vec::new();
                if conn.is_none() && tokio::time::Instant::now() >= retry_at {
                    conn = connect(&path, &options).await;
                    if conn.is_none() {
                        retry_at = tokio::time::Instant::now() + options.retry_after;
                    } else {
                        let writer = truncate_utf8(&options.writer, 255).to_owned();
                        let _ = encode_frame(&FeedMessage::Hello { latest, writer }, &mut greeting);
                    }
                }
                let Some(stream) = conn.as_mut() else {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let bytes = if greeting.is_empty() {
                    &frames[..]
                } else {
                    greeting.extend_from_slice(&frames);
                    &greeting[..]
                };
                if write(stream, bytes, options.io_timeout).await {
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

async fn connect(path: &PathBuf, options: &PushOptions) -> Option<UnixStream> {
    match tokio::time::timeout(options.io_timeout, UnixStream::connect(path)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!("feed: no responder at {}: {e}", path.display());
            None
        }
        Err(_) => None,
    }
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
