//! The push side of the feed in the binary: the responder's control socket
//! (a Unix socket on which writers push feed frames), the in-process
//! subscription of `ddserver serve`, and the push targets of writers.
//!
//! A pushed message records the newest serial it names and wakes the
//! follower. A `Commit` frame (a commit's entries with the state they left
//! behind) is also queued for the follower, which applies it without a
//! database read when it continues exactly from what it applied; anything
//! else makes it read the change log at once (DESIGN invariant 1: the log
//! is the truth). Pushes that arrive while the follower works coalesce
//! into its next round, so a burst costs one publish. Nothing here may
//! block a writer or trust a frame: bad frames close their connection and
//! are counted, never applied; a full queue drops commits, which the log
//! then covers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ddserver_store::feed::decode_frame;
use ddserver_store::{Commit, FeedMessage, PushOptions, Store};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast, watch};

use crate::config::Config;
use crate::metrics::FeedMetrics;

/// Change-log entries of pushed commits queued for the follower at most;
/// beyond that, commits are dropped (the follower reads the log instead).
const MAX_QUEUED_ENTRIES: usize = 100_000;

/// Wakes the follower early; shared by every source of pushes.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
    /// The newest serial any push named.
    hinted: AtomicU64,
    /// Pushed commits not yet taken by the follower, and their entries.
    commits: Mutex<(Vec<Commit>, usize)>,
}

impl Wake {
    /// Queues a pushed commit for the follower (then [`Wake::hint`] it).
    /// Returns false when the queue is full and the commit was dropped.
    pub(crate) fn queue_commit(&self, commit: Commit) -> bool {
        let mut queue = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        if queue.1 + commit.changes.len() > MAX_QUEUED_ENTRIES {
            return false;
        }
        queue.1 += commit.changes.len();
        queue.0.push(commit);
        true
    }

    /// The pushed commits queued so far, in arrival order.
    pub(crate) fn take_commits(&self) -> Vec<Commit> {
        let mut queue = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        queue.1 = 0;
        std::mem::take(&mut queue.0)
    }

    /// Records a hint and wakes the follower.
    pub(crate) fn hint(&self, latest: u64) {
        self.hinted.fetch_max(latest, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// The newest serial any push named.
    pub(crate) fn hinted(&self) -> u64 {
        self.hinted.load(Ordering::Relaxed)
    }

    /// Resolves at the next hint (or at once if one came since the last
    /// wait: a burst is one wake-up).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await
    }
}

/// The sockets the writers of this process push to: `[responder]
/// control_socket` unless it is empty or `own` (a `serve` process feeds its
/// own responder in-process), then `[feed] push_sockets`.
pub(crate) fn push_targets(config: &Config, own: Option<&Path>) -> Vec<PathBuf> {
    let mut targets = Vec::new();
    let control = &config.responder.control_socket;
    if !control.as_os_str().is_empty() && own != Some(control.as_path()) {
        targets.push(control.clone());
    }
    for path in &config.feed.push_sockets {
        if !targets.contains(path) && own != Some(path.as_path()) {
            targets.push(path.clone());
        }
    }
    targets
}

/// Makes every commit through `store` push to the configured responders.
/// For any writer: the admin commands, the updater, the web UI.
pub(crate) fn start_pushing(store: &Store, config: &Config, writer: &str, own: Option<&Path>) {
    let timeout = Duration::from_millis(config.feed.push_timeout_ms);
    for path in push_targets(config, own) {
        store.push_to(
            path,
            PushOptions {
                writer: writer.to_owned(),
                io_timeout: timeout,
                ..PushOptions::default()
            },
        );
    }
}

/// Forwards this process's own commits to the follower (`ddserver serve`),
/// as the control socket does for other processes' commits: a commit's
/// data when the store gathered it, else only its serials. A lagging
/// receiver just wakes the follower, which reads the log.
pub(crate) fn follow_in_process(
    store: &Store,
    wake: Arc<Wake>,
    metrics: Arc<FeedMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut announcements = store.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                received = announcements.recv() => match received {
                    Ok(announced) => {
                        if let Some(commit) = &announced.commit
                            && !wake.queue_commit(commit.clone())
                        {
                            metrics.pushed_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        wake.hint(announced.changes.iter().map(|c| c.serial).max().unwrap_or(0))
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => wake.hint(0),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}

/// Opens the control socket: removes a stale socket file first (refusing
/// if a live process still listens on it), then sets its permissions.
pub(crate) async fn bind_control_socket(path: &Path, mode: u32) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "another process is listening on the control socket {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the permissions of {}", path.display()))?;
    Ok(listener)
}

/// Accepts writers on `listener` until `stop`, one task per connection.
pub(crate) fn serve_control_socket(
    listener: UnixListener,
    path: PathBuf,
    wake: Arc<Wake>,
    metrics: Arc<FeedMetrics>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(read_writer(stream, wake.clone(), metrics.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    })
}

/// Reads frames from one writer until it closes or sends something that
/// is not a frame.
async fn read_writer(mut stream: UnixStream, wake: Arc<Wake>, metrics: Arc<FeedMetrics>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut latest = None;
        loop {
            match decode_frame(&buf[used..]) {
                Ok(Some((message, len))) => {
                    used += len;
                    metrics.pushes.fetch_add(1, Ordering::Relaxed);
                    latest = Some(latest.unwrap_or(0).max(message.latest()));
                    match message {
                        FeedMessage::Hello { writer, latest } => {
                            tracing::debug!(writer, latest, "control socket: a writer connected");
                        }
                        FeedMessage::Commit(commit) => {
                            if !wake.queue_commit(commit) {
                                metrics.pushed_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        FeedMessage::Heartbeat { .. } | FeedMessage::Changes(_) => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("control socket: dropping a writer that sent a bad frame: {e}");
                    if let Some(latest) = latest {
                        wake.hint(latest);
                    }
                    return;
                }
            }
        }
        buf.drain(..used);
        // One wake-up for everything this read delivered.
        if let Some(latest) = latest {
            wake.hint(latest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve`'s own commits wake its follower through the in-process
    /// channel, with the serial they wrote.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_commits_wake_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("dd.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let wake = Arc::new(Wake::default());
        let (stop_tx, stop) = watch::channel(false);
        follow_in_process(&store, wake.clone(), Arc::default(), stop);
        let zone = ddserver_store::Name::parse("dyn.example.net").unwrap();
        let ns = ddserver_store::Name::parse("ns1.example.net").unwrap();
        store
            .add_zone(
                &ddserver_store::Actor::cli(),
                ddserver_store::NewZone::new(zone, vec![ns]),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.woken())
            .await
            .expect("woken");
        assert_eq!(wake.hinted(), store.latest_serial().await.unwrap());
        let _ = stop_tx.send(true);
    }

    #[test]
    fn push_targets_skip_the_own_socket_and_duplicates() {
        let mut config = Config::default();
        config.responder.control_socket = PathBuf::from("/run/r.sock");
        config.feed.push_sockets = vec![PathBuf::from("/run/r.sock"), PathBuf::from("/run/o.sock")];
        assert_eq!(
            push_targets(&config, None),
            vec![PathBuf::from("/run/r.sock"), PathBuf::from("/run/o.sock")]
        );
        assert_eq!(
            push_targets(&config, Some(Path::new("/run/r.sock"))),
            vec![PathBuf::from("/run/o.sock")]
        );
        config.responder.control_socket = PathBuf::new();
        config.feed.push_sockets.clear();
        assert!(push_targets(&config, None).is_empty());
    }
}
