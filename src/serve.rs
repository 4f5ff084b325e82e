//! The serving commands: `ddserver serve` (every part in one process) and
//! `ddserver responder` (the DNS responder alone).
//!
//! The responder's data path: the store's full state is loaded into a
//! [`SnapshotWriter`] on its own thread before the sockets open (so a
//! restarted responder never answers REFUSED for its own zones), then the
//! change log is followed and each batch of changes is applied with one
//! publish. The packet path (`ddserver_responder::io` + `handle`) sees only
//! snapshots; it never learns that a database exists.
//!
//! The follower runs a catch-up when a push wakes it (control socket, or in
//! `serve` the store's in-process announcements; see `control.rs`) and at
//! least every `[feed] poll_interval_ms`. The same process prunes the
//! change log (`[feed] retention`) and serves `/metrics` if configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ddserver_responder::io::{self, Backend, IoConfig, IoMode};
use ddserver_responder::{Change, HandlerConfig, SnapshotWriter, handle};
use ddserver_store::{Actor, NewUser, Role, Store, UserState};
use tokio::sync::watch;

use crate::config::{Config, IoChoice};
use crate::control::{self, Wake};
use crate::feed::{self, CatchUp, Follower};
use crate::metrics::{self, FeedMetrics};

/// Batches at least this large (full loads, zone reloads) are followed by
/// returning the writer thread's freed memory to the system.
const BIG_BATCH: usize = 10_000;

/// Work for the snapshot writer's thread.
enum WriterJob {
    /// Apply a batch, publishing it (together with every job queued behind
    /// it, and whatever was staged before) unless every one of them says
    /// `Later`; the reply says how many of its changes applied.
    Apply(Vec<Change>, Publish, tokio::sync::oneshot::Sender<usize>),
}

/// Whether a batch handed to the writer is published at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Served from this batch on.
    Now,
    /// Staged: served from the next published batch on. Only the start-up
    /// load stages (nothing is served before it ends, and a failed load
    /// ends the process), so no half-loaded state is ever published.
    Later,
}

/// A reply channel and the number of changes its job handed in.
type JobReply = (tokio::sync::oneshot::Sender<usize>, usize);

/// `first` and every job already queued behind it, as one batch of changes
/// (in queue order), the replies owed, and whether to publish (any job
/// asking for it).
fn drain_jobs(
    first: WriterJob,
    rx: &mpsc::Receiver<WriterJob>,
) -> (Vec<Change>, Vec<JobReply>, Publish) {
    let WriterJob::Apply(mut changes, mut publish, reply) = first;
    let mut replies = vec![(reply, changes.len())];
    while let Ok(WriterJob::Apply(more, also, reply)) = rx.try_recv() {
        replies.push((reply, more.len()));
        changes.extend(more);
        if also == Publish::Now {
            publish = Publish::Now;
        }
    }
    (changes, replies, publish)
}

/// Each job's reply with how many of its own changes applied (the report's
/// rejections are indices into the combined batch).
fn replies_with_counts(
    replies: Vec<JobReply>,
    report: &ddserver_responder::ApplyReport,
) -> Vec<(tokio::sync::oneshot::Sender<usize>, usize)> {
    let mut start = 0;
    replies
        .into_iter()
        .map(|(reply, len)| {
            let end = start + len;
            // Changes with a rejection: a packed batch of hosts
            // (`Change::UpsertAddressHosts`) can have several, listed one
            // after another under its index.
            let mut rejected: Vec<usize> = report
                .rejected
                .iter()
                .map(|&(index, _)| index)
                .filter(|index| (start..end).contains(index))
                .collect();
            rejected.dedup();
            start = end;
            (reply, len - rejected.len())
        })
        .collect()
}

/// The thread that owns the [`SnapshotWriter`]: every publish happens
/// here, and old snapshots are freed here, never on a worker (DESIGN
/// invariant 4).
struct WriterThread {
    handle: WriterHandle,
    thread: JoinHandle<()>,
}

/// Sends batches to the writer thread; cheap to clone.
#[derive(Clone)]
struct WriterHandle {
    jobs: mpsc::Sender<WriterJob>,
}

impl WriterThread {
    fn start(mut writer: SnapshotWriter) -> WriterThread {
        let (jobs, rx) = mpsc::channel::<WriterJob>();
        let thread = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                // Changes staged since the last publish.
                let mut staged = 0;
                loop {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(first) => {
                            // Everything queued meanwhile goes into the same
                            // publish: one publish per drain, never per job.
                            let (changes, replies, publish) = drain_jobs(first, &rx);
                            let count = changes.len();
                            // Names, not changes: a packed batch of hosts
                            // counts as its hosts (a load hands over a few
                            // dozen of them, and must still free memory).
                            staged += changes
                                .iter()
                                .map(|change| match change {
                                    Change::UpsertAddressHosts(hosts) => hosts.len(),
                                    _ => 1,
                                })
                                .sum::<usize>();
                            let report = writer.stage(changes);
                            if publish == Publish::Now {
                                writer.publish();
                                let published = std::mem::take(&mut staged);
                                if published >= BIG_BATCH {
                                    // A load-sized batch leaves large temporaries
                                    // in this thread's heap; give them back.
                                    release_free_memory();
                                    tracing::debug!(
                                        retired = writer.retired_count(),
                                        "snapshot writer: published {published} changes"
                                    );
                                }
                            }
                            for (index, error) in &report.rejected {
                                tracing::error!(
                                    "change {index} of a batch of {count} not applied: {error}"
                                );
                            }
                            for (reply, applied) in replies_with_counts(replies, &report) {
                                let _ = reply.send(applied);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    // Snapshots that workers still held at publish time are
                    // dropped here once released.
                    writer.collect_garbage();
                }
            })
            .expect("spawning the snapshot writer thread");
        WriterThread {
            handle: WriterHandle { jobs },
            thread,
        }
    }

    fn stop(self) {
        drop(self.handle);
        let _ = self.thread.join();
    }
}

impl WriterHandle {
    /// Hands `changes` to the writer at once (published unless staged);
    /// the future waits until it is applied and says how many applied.
    fn apply(
        &self,
        changes: Vec<Change>,
        publish: Publish,
    ) -> impl Future<Output = Result<usize>> + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .jobs
            .send(WriterJob::Apply(changes, publish, tx))
            .is_ok();
        async move {
            anyhow::ensure!(sent, "the snapshot writer stopped");
            rx.await.ok().context("the snapshot writer stopped")
        }
    }
}

/// A running responder: sockets, workers, the writer and the follower.
pub(crate) struct RunningResponder {
    server: io::Server,
    writer: WriterThread,
    follower: tokio::task::JoinHandle<()>,
    control: Option<tokio::task::JoinHandle<()>>,
    stop_follower: watch::Sender<bool>,
    wake: Arc<Wake>,
    feed_metrics: Arc<FeedMetrics>,
    metrics_addr: Option<SocketAddr>,
}

impl RunningResponder {
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        self.server.local_addrs()
    }

    pub(crate) fn backend(&self) -> Backend {
        self.server.backend()
    }

    /// Stops the follower, the workers and the writer, in that order.
    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop_follower.send(true);
        let _ = self.follower.await;
        if let Some(control) = self.control {
            let _ = control.await;
        }
        tokio::task::spawn_blocking(move || {
            let result = self.server.shutdown();
            self.writer.stop();
            result
        })
        .await
        .context("stopping the responder")?
        .context("stopping the responder's workers")
    }
}

fn io_config(config: &Config) -> IoConfig {
    let r = &config.responder;
    IoConfig {
        listen: r.listen.clone(),
        workers: r.workers,
        io: match r.io {
            IoChoice::Auto => IoMode::Auto,
            IoChoice::IoUring => IoMode::IoUring,
            IoChoice::Portable => IoMode::Portable,
        },
        pin_workers: r.pin_workers,
        tcp_idle_timeout: Duration::from_secs(r.tcp_idle_timeout),
        tcp_max_connections_per_worker: r.tcp_max_connections,
        ..IoConfig::default()
    }
}

fn handler_config(config: &Config) -> HandlerConfig {
    let r = &config.responder;
    HandlerConfig {
        udp_payload_size: r.udp_payload,
        chaos_version: r
            .chaos
            .then(|| format!("ddserver {}", env!("CARGO_PKG_VERSION"))),
        chaos_id: r.chaos.then(|| {
            r.server_id.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "ddserver".into())
            })
        }),
    }
}

/// Loads everything from the store, opens the sockets and starts following
/// the change log.
pub(crate) async fn start_responder(config: &Config, store: &Store) -> Result<RunningResponder> {
    let metrics = Arc::new(FeedMetrics::default());
    let wake = Arc::new(Wake::default());
    let (stop_follower, stopped) = watch::channel(false);

    // The control socket opens before the load, so writers that commit
    // meanwhile find it; what they push is covered by the load's catch-up.
    let control_path = config.responder.control_socket.clone();
    let control = if control_path.as_os_str().is_empty() {
        None
    } else {
        let listener =
            control::bind_control_socket(&control_path, config.responder.control_socket_mode)
                .await?;
        Some(control::serve_control_socket(
            listener,
            control_path,
            wake.clone(),
            metrics.clone(),
            stopped.clone(),
        ))
    };
    let metrics_addr = match config.responder.metrics_listen {
        Some(addr) => Some(metrics::serve_metrics(addr, metrics.clone(), stopped.clone()).await?),
        None => None,
    };

    let started = Instant::now();
    let writer = SnapshotWriter::new(&handler_config(config));
    let shared = writer.shared();
    let writer = WriterThread::start(writer);

    let mut follower = Follower::new(store.clone());
    let loaded = follower
        .load_all(|batch, publish| writer.handle.apply(batch, publish))
        .await
        .context("loading zones and hosts from the database")?;
    store.release_memory().await;
    release_free_memory();
    let load_time = started.elapsed();
    metrics
        .load_micros
        .store(load_time.as_micros() as u64, Ordering::Relaxed);
    metrics
        .loaded_names
        .store(loaded.names as u64, Ordering::Relaxed);
    metrics
        .applied_serial
        .store(follower.applied(), Ordering::Relaxed);
    metrics
        .database_serial
        .store(loaded.serial, Ordering::Relaxed);
    tracing::info!(
        zones = loaded.zones,
        names = loaded.names,
        serial = loaded.serial,
        "responder: loaded from the database in {load_time:.2?}"
    );

    let io_config = io_config(config);
    let server = tokio::task::spawn_blocking(move || io::start(&io_config, shared, handle))
        .await
        .context("starting the responder's workers")?
        .context("opening the responder's sockets")?;

    let handle = writer.handle.clone();
    let follow = tokio::spawn(follow(
        follower,
        handle,
        Duration::from_millis(config.feed.poll_interval_ms),
        wake.clone(),
        metrics.clone(),
        stopped.clone(),
    ));
    if config.feed.retention > 0 {
        tokio::spawn(prune(
            store.clone(),
            config.feed.retention,
            Duration::from_secs(config.feed.prune_interval),
            metrics.clone(),
            stopped,
        ));
    }
    Ok(RunningResponder {
        server,
        writer,
        follower: follow,
        control,
        stop_follower,
        wake,
        feed_metrics: metrics,
        metrics_addr,
    })
}

/// Returns the calling thread's freed memory to the operating system, so
/// the resident size reflects the snapshot (mimalloc otherwise keeps freed
/// pages for reuse for a while, per thread: call it on the thread that
/// freed them).
fn release_free_memory() {
    unsafe extern "C" {
        /// mimalloc's `mi_collect` (libmimalloc-sys links it).
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect only releases memory no allocation uses; it takes
    // no pointers and is safe to call from any thread.
    unsafe { mi_collect(true) };
    // SQLite allocates with the C library's malloc, whose per-thread heaps
    // keep freed pages until trimmed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// SIGTERM and SIGINT, caught from the moment this is created: install it
/// before opening any socket, so a signal that arrives while the service
/// starts still stops it cleanly instead of killing it. SIGHUP (systemd's
/// `reload`) is caught too, so it never kills a service either.
pub(crate) struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub(crate) fn install() -> Result<ShutdownSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT; calls `reload` at each
    /// SIGHUP before that.
    pub(crate) async fn wait(mut self, reload: impl Fn()) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break tracing::info!("SIGTERM received, stopping"),
                _ = self.int.recv() => break tracing::info!("SIGINT received, stopping"),
                _ = self.hup.recv() => reload(),
            }
        }
    }
}

/// The longest one catch-up may take before it counts as failed. The
/// database pool retries connecting for much longer, which would hide an
/// outage from the logs and metrics. Cancelling a catch-up is harmless:
/// each batch moves the applied mark only after it was applied, and
/// applying again is idempotent; progress made by earlier batches stays.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// The follower's loop: a catch-up at every wake-up by a push and at every
/// poll tick, until `stop`.
async fn follow(
    mut follower: Follower,
    handle: WriterHandle,
    poll: Duration,
    wake: Arc<Wake>,
    metrics: Arc<FeedMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_poll = tokio::time::Instant::now() + poll;
    let mut failing = false;
    // The database's newest serial at the previous poll.
    let mut polled_latest = 0;
    loop {
        let polled = tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(next_poll) => true,
            _ = wake.woken() => false,
        };
        if polled {
            next_poll = tokio::time::Instant::now() + poll;
            let latest = follower.store().latest_serial();
            if let Ok(Ok(latest)) = tokio::time::timeout(CATCH_UP_TIMEOUT, latest).await {
                metrics.database_serial.store(latest, Ordering::Relaxed);
                // Everything committed a poll ago is served: what came
                // since is most likely still in flight as pushes, and
                // reading it now would only make them stale. A change no
                // push brings is read at the next poll, so the log still
                // bounds its delay (two intervals); a lost push shows as
                // a gap at the next push and is read at once.
                let keeping_up = follower.applied() >= polled_latest;
                polled_latest = latest;
                if keeping_up && !failing && latest > follower.applied() {
                    continue;
                }
            }
        } else {
            // Read before taking the queue: a reader queues a commit
            // before it records the commit's serial, so every serial
            // hinted by now has its commit (if it had data) in the queue.
            let hinted = wake.hinted();
            // Commits that arrive while one batch is applied are taken in
            // the next round here, not mistaken for a gap.
            loop {
                let commits = wake.take_commits();
                if commits.is_empty() {
                    break;
                }
                let count = commits.len();
                let pushed = tokio::time::timeout(
                    CATCH_UP_TIMEOUT,
                    follower.apply_pushed(commits, |batch| handle.apply(batch, Publish::Now)),
                )
                .await;
                match pushed {
                    Ok(Ok(done)) => {
                        metrics.applied(follower.applied(), done.changes);
                        metrics
                            .pushed_applied
                            .fetch_add(done.changes as u64, Ordering::Relaxed);
                        metrics
                            .pushed_fallbacks
                            .fetch_add(done.left as u64, Ordering::Relaxed);
                        if done.left > 0 {
                            break; // the log, below
                        }
                    }
                    // Only the snapshot writer can fail here; the log
                    // catch-up below covers these commits.
                    Ok(Err(e)) => {
                        tracing::warn!("responder: applying {count} pushed commits failed: {e:#}");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("responder: applying {count} pushed commits timed out");
                        break;
                    }
                }
            }
            if hinted <= follower.applied() && hinted != 0 {
                // Pushes about what is applied already (their data, or a
                // catch-up that covered them): nothing to read.
                continue;
            }
        }
        let started = Instant::now();
        let caught_up = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            follower.catch_up(|batch| handle.apply(batch, Publish::Now)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no answer from the database within {CATCH_UP_TIMEOUT:?}"
            ))
        });
        match caught_up {
            Ok(done) => {
                let applied = follower.applied();
                metrics.applied(applied, done.changes);
                metrics
                    .entries_read
                    .fetch_add(done.read as u64, Ordering::Relaxed);
                metrics.reloads.store(follower.reloads(), Ordering::Relaxed);
                log_catch_up(done, applied, started.elapsed(), failing);
                failing = false;
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                // The database may be down: keep serving the snapshot we
                // have and try again at the next tick; say so once.
                if !failing {
                    tracing::warn!(
                        "responder: reading the change log failed; serving the last snapshot \
                         until the database answers again: {e:#}"
                    );
                } else {
                    tracing::debug!("responder: reading the change log failed: {e:#}");
                }
                failing = true;
            }
        }
    }
}

/// One log line per catch-up worth reporting: large ones, slow ones, reloads
/// and the first after an outage; the everyday small ones at debug level.
fn log_catch_up(done: CatchUp, applied: u64, took: Duration, recovering: bool) {
    if done.read == 0 && !recovering && !done.reloaded {
        return;
    }
    if done.read >= 1000 || took >= Duration::from_secs(1) || recovering || done.reloaded {
        tracing::info!(
            read = done.read,
            changes = done.changes,
            applied,
            reloaded = done.reloaded,
            "responder: caught up with the change log in {took:.2?}"
        );
    } else {
        tracing::debug!(
            read = done.read,
            changes = done.changes,
            applied,
            "responder: caught up with the change log in {took:.2?} (reading {:.2?}, publishing {:.2?})",
            done.reading,
            done.publishing,
        );
    }
}

/// Deletes change-log entries older than `retention` seconds every
/// `interval`, until `stop`. On a read-only replica this fails; that is
/// logged once and the responder keeps serving.
async fn prune(
    store: Store,
    retention: u64,
    interval: Duration,
    metrics: Arc<FeedMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let older_than = i64::try_from(now.saturating_sub(retention)).unwrap_or(0);
        let actor = Actor {
            name: "change-log pruning".into(),
            address: None,
        };
        match store.prune_changes(&actor, older_than).await {
            Ok(0) => {}
            Ok(deleted) => {
                metrics.pruned.fetch_add(deleted, Ordering::Relaxed);
                tracing::info!(
                    deleted,
                    "feed: pruned change-log entries older than {retention} s"
                );
                warned = false;
            }
            Err(e) if !warned => {
                tracing::warn!("feed: pruning the change log failed: {e}");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

fn describe(responder: &RunningResponder) -> String {
    format!(
        "{} (UDP and TCP, {} I/O)",
        responder
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        match responder.backend() {
            Backend::IoUring => "io_uring",
            Backend::Portable => "portable",
        }
    )
}

fn announce(config: &Config, responder: &RunningResponder) {
    println!("DNS responder listening on {}", describe(responder));
    let control = &config.responder.control_socket;
    if !control.as_os_str().is_empty() {
        println!("control socket {}", control.display());
    }
    if let Some(addr) = responder.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
}

/// `ddserver responder`.
pub(crate) async fn responder(config: &Config, store: &Store) -> Result<()> {
    let shutdown = ShutdownSignal::install()?;
    let responder = start_responder(config, store).await?;
    announce(config, &responder);
    shutdown
        .wait(|| {
            tracing::info!("SIGHUP received: the responder reads its configuration only at start")
        })
        .await;
    responder.stop().await
}

/// `ddserver serve`: every part in one process. Each part is one
/// `start_*` call here and one `stop` at the end.
pub(crate) async fn serve(config: &Config, store: &Store) -> Result<()> {
    let shutdown = ShutdownSignal::install()?;
    first_start(store).await?;
    let responder = start_responder(config, store).await?;
    // This process's own commits reach its responder in-process; other
    // responders get them pushed.
    control::follow_in_process(
        store,
        responder.wake.clone(),
        responder.feed_metrics.clone(),
        responder.stop_follower.subscribe(),
    );
    let own = config.responder.control_socket.clone();
    control::start_pushing(store, config, "ddserver serve", Some(own.as_path()));
    announce(config, &responder);
    let updater = crate::updater::start_updater(config, store).await?;
    println!("ddserver is running; stop it with Ctrl-C or SIGTERM");
    shutdown.wait(|| updater.reload()).await;
    updater.stop().await;
    responder.stop().await
}

/// On the very first start (no account at all), creates the administrator
/// `admin` with a random password and prints the password once.
async fn first_start(store: &Store) -> Result<()> {
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let password = crate::admin::generate_secret();
    store
        .create_user(
            &Actor::cli(),
            NewUser {
                name: "admin".into(),
                email: "admin@localhost".into(),
                password: Some(password.clone()),
                role: Role::Admin,
                state: UserState::Active,
                max_hosts: None,
            },
        )
        .await
        .context("creating the first administrator")?;
    println!("first start: created the administrator account 'admin'");
    println!("  password: {password}");
    println!("  (shown only now; it is stored as an argon2id hash)");
    Ok(())
}

/// `ddserver zone export`: the zone's master file exactly as the responder
/// renders it, from the same data and the same code.
pub(crate) async fn export_zone(store: &Store, zone: &ddserver_store::Name) -> Result<String> {
    let (data, hosts) = feed::zone_with_hosts(store, zone).await?;
    Ok(ddserver_responder::export::master_file(&data, &hosts)?)
}

#[cfg(test)]
mod tests {
    use ddserver_responder::{HandlerConfig, HostData, Soa, ZoneData};

    use super::*;

    fn zone(name: &str) -> ZoneData {
        ZoneData {
            name: name.into(),
            soa: Soa {
                mname: "ns1.example.net".into(),
                rname: "hostmaster.example.net".into(),
                serial: 1,
                refresh: 3600,
                retry: 900,
                expire: 604800,
                minimum: 60,
                ttl: 3600,
            },
            ns: vec!["ns1.example.net.".into()],
            ns_ttl: 3600,
            default_ttl: 60,
            records: Vec::new(),
        }
    }

    fn host(zone: &str, name: &str) -> Change {
        Change::UpsertHost(
            zone.into(),
            HostData {
                name: name.into(),
                ipv4: Some("192.0.2.1".parse().unwrap()),
                ..HostData::default()
            },
        )
    }

    /// Jobs queued while the writer was busy are applied with one publish,
    /// in queue order, and each job learns how many of its own changes
    /// applied.
    #[test]
    fn queued_jobs_share_one_publish() {
        let (jobs, rx) = mpsc::channel();
        let mut replies = Vec::new();
        for (batch, publish) in [
            (
                vec![Change::UpsertZone(zone("dyn.example.net"))],
                Publish::Later,
            ),
            (
                vec![host("dyn.example.net", "a"), host("nope.example", "b")],
                Publish::Now,
            ),
            (vec![], Publish::Later),
            (vec![host("dyn.example.net", "c")], Publish::Later),
        ] {
            let (tx, reply) = tokio::sync::oneshot::channel();
            jobs.send(WriterJob::Apply(batch, publish, tx)).unwrap();
            replies.push(reply);
        }
        let first = rx.recv().unwrap();
        let (changes, owed, publish) = drain_jobs(first, &rx);
        assert_eq!(changes.len(), 4);
        assert_eq!(publish, Publish::Now, "one job asked for a publish");
        assert!(rx.try_recv().is_err(), "the queue is drained");

        let mut writer = SnapshotWriter::new(&HandlerConfig::default());
        let report = writer.apply(changes);
        assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
        for (reply, applied) in replies_with_counts(owed, &report) {
            reply.send(applied).unwrap();
        }
        let counts: Vec<usize> = replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect();
        assert_eq!(counts, vec![1, 1, 0, 1]);
        assert_eq!(writer.current().name_count(), 3, "apex, a and c");
    }
}
