//! The responder's feed metrics and the small HTTP listener that serves
//! them at `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Off the packet path: counters are atomics written by the follower and the
//! control socket, read when scraped. The listener answers `GET /metrics`
//! and nothing else (404), reads at most 8 KiB of request with a timeout, and
//! must never hold anything the follower or the workers wait for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the feed has done so far.
#[derive(Debug, Default)]
pub(crate) struct FeedMetrics {
    /// Every serial up to this one is applied.
    pub(crate) applied_serial: AtomicU64,
    /// The newest serial in the database, as last read.
    pub(crate) database_serial: AtomicU64,
    /// Changes handed to the snapshot writer since start (not counting
    /// full loads).
    pub(crate) changes_applied: AtomicU64,
    /// Change-log entries read since start.
    pub(crate) entries_read: AtomicU64,
    /// Full reloads after falling behind the pruned log.
    pub(crate) reloads: AtomicU64,
    /// Duration of the last full load, in microseconds.
    pub(crate) load_micros: AtomicU64,
    /// Names loaded by the last full load.
    pub(crate) loaded_names: AtomicU64,
    /// Frames received on the control socket.
    pub(crate) pushes: AtomicU64,
    /// Connections dropped for a bad frame.
    pub(crate) bad_frames: AtomicU64,
    /// Changes applied from pushed `Commit` frames, without reading the
    /// database (part of `changes_applied`).
    pub(crate) pushed_applied: AtomicU64,
    /// Pushed commits not applied from their data: they did not continue
    /// from the applied mark (a gap, a catch-up ahead of them, a zone-level
    /// entry), so the change log covered them.
    pub(crate) pushed_fallbacks: AtomicU64,
    /// Pushed commits dropped because the follower's queue was full.
    pub(crate) pushed_dropped: AtomicU64,
    /// Catch-ups that failed (database unreachable).
    pub(crate) errors: AtomicU64,
    /// Change-log entries pruned by this process.
    pub(crate) pruned: AtomicU64,
}

impl FeedMetrics {
    /// Records that everything up to serial `applied` is served, after
    /// `changes` more changes were handed to the snapshot writer.
    pub(crate) fn applied(&self, applied: u64, changes: usize) {
        self.applied_serial.store(applied, Ordering::Relaxed);
        self.database_serial.fetch_max(applied, Ordering::Relaxed);
        self.changes_applied
            .fetch_add(changes as u64, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let applied = get(&self.applied_serial);
        let database = get(&self.database_serial).max(applied);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "ddserver_feed_applied_serial",
            "gauge",
            "Every change-log serial up to this one is served.",
            applied.to_string(),
        );
        metric(
            "ddserver_feed_database_serial",
            "gauge",
            "The newest change-log serial in the database, as last read.",
            database.to_string(),
        );
        metric(
            "ddserver_feed_lag_serials",
            "gauge",
            "Change-log serials committed but not yet served.",
            (database - applied).to_string(),
        );
        metric(
            "ddserver_feed_changes_applied_total",
            "counter",
            "Changes applied to the snapshot since start (full loads excluded).",
            get(&self.changes_applied).to_string(),
        );
        metric(
            "ddserver_feed_entries_read_total",
            "counter",
            "Change-log entries read since start.",
            get(&self.entries_read).to_string(),
        );
        metric(
            "ddserver_feed_reloads_total",
            "counter",
            "Full reloads after falling behind the pruned change log.",
            get(&self.reloads).to_string(),
        );
        metric(
            "ddserver_feed_load_seconds",
            "gauge",
            "Duration of the last full load.",
            format!("{:.6}", get(&self.load_micros) as f64 / 1e6),
        );
        metric(
            "ddserver_feed_loaded_names",
            "gauge",
            "Names loaded by the last full load.",
            get(&self.loaded_names).to_string(),
        );
        metric(
            "ddserver_feed_pushes_received_total",
            "counter",
            "Feed frames received on the control socket.",
            get(&self.pushes).to_string(),
        );
        metric(
            "ddserver_feed_pushed_changes_applied_total",
            "counter",
            "Changes applied from pushed commit data, without a database read.",
            get(&self.pushed_applied).to_string(),
        );
        metric(
            "ddserver_feed_pushed_fallbacks_total",
            "counter",
            "Pushed commits left to the change log (not continuing from the applied serial).",
            get(&self.pushed_fallbacks).to_string(),
        );
        metric(
            "ddserver_feed_pushed_dropped_total",
            "counter",
            "Pushed commits dropped because the follower's queue was full.",
            get(&self.pushed_dropped).to_string(),
        );
        metric(
            "ddserver_feed_bad_frames_total",
            "counter",
            "Control-socket connections dropped for a frame that did not decode.",
            get(&self.bad_frames).to_string(),
        );
        metric(
            "ddserver_feed_errors_total",
            "counter",
            "Catch-ups that failed, e.g. while the database was unreachable.",
            get(&self.errors).to_string(),
        );
        metric(
            "ddserver_feed_pruned_total",
            "counter",
            "Change-log entries pruned by this process.",
            get(&self.pruned).to_string(),
        );
        out
    }
}

/// Serves `/metrics` on `addr` until `stop`. Returns the bound address.
pub(crate) async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<FeedMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener on {addr}"))?;
    let local = listener
        .local_addr()
        .context("the metrics listener's address")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let metrics = metrics.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                answer(stream, &metrics),
                            )
                            .await;
                        });
                    }
                }
            }
        }
    });
    Ok(local)
}

async fn answer(mut stream: TcpStream, metrics: &FeedMetrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let response = match (method, target) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let body = metrics.render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = FeedMetrics::default();
        metrics.applied_serial.store(10, Ordering::Relaxed);
        metrics.database_serial.store(15, Ordering::Relaxed);
        metrics.load_micros.store(1_500_000, Ordering::Relaxed);
        let text = metrics.render();
        assert!(
            text.contains("\nddserver_feed_applied_serial 10\n"),
            "{text}"
        );
        assert!(text.contains("\nddserver_feed_lag_serials 5\n"), "{text}");
        assert!(
            text.contains("\nddserver_feed_load_seconds 1.500000\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE ddserver_feed_reloads_total counter\n"));
    }

    #[tokio::test]
    async fn answers_get_metrics_only() {
        let metrics = Arc::new(FeedMetrics::default());
        let (_stop_tx, stop) = watch::channel(false);
        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), metrics, stop)
            .await
            .unwrap();
        let fetch = |request: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = fetch("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("ddserver_feed_applied_serial 0"), "{ok}");
        let missing = fetch("GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
