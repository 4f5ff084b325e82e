//! The serving commands: `ddserver serve` (every part in one process) and
//! `ddserver responder` (the DNS responder alone).
//!
//! The responder's data path: the store's full state is loaded into a
//! [`SnapshotWriter`] on its own thread before the sockets open (so a
//! restarted responder never answers REFUSED for its own zones), then the
//! change log is followed and each batch of changes is applied with one
//! publish. The packet path (`ddserver_responder::io` + `handle`) sees only
//! snapshots; it never learns that a database exists.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ddserver_responder::io::{self, Backend, IoConfig, IoMode};
use ddserver_responder::{Change, HandlerConfig, SnapshotWriter, handle};
use ddserver_store::{Actor, NewUser, Role, Store, UserState};
use tokio::sync::watch;

use crate::config::{Config, IoChoice};
use crate::feed::{self, Follower};

/// How often the change log is read when nothing is pushed. Small enough
/// that a change is served quickly, large enough to cost the database
/// nothing (one indexed range query).
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Work for the snapshot writer's thread.
enum WriterJob {
    /// Apply a batch with one publish; the reply says how many applied.
    Apply(Vec<Change>, Option<tokio::sync::oneshot::Sender<usize>>),
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
                loop {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(WriterJob::Apply(changes, reply)) => {
                            let count = changes.len();
                            let report = writer.apply(changes);
                            for (index, error) in &report.rejected {
                                tracing::error!(
                                    "change {index} of a batch of {count} not applied: {error}"
                                );
                            }
                            if let Some(reply) = reply {
                                let _ = reply.send(report.applied);
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
    /// Applies `changes` with one publish and waits until it is done;
    /// returns how many applied.
    async fn apply(&self, changes: Vec<Change>) -> Result<usize> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(WriterJob::Apply(changes, Some(tx)))
            .ok()
            .context("the snapshot writer stopped")?;
        rx.await.ok().context("the snapshot writer stopped")
    }
}

/// A running responder: sockets, workers, the writer and the follower.
pub(crate) struct RunningResponder {
    server: io::Server,
    writer: WriterThread,
    follower: tokio::task::JoinHandle<()>,
    stop_follower: watch::Sender<bool>,
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
    let started = Instant::now();
    let writer = SnapshotWriter::new(&handler_config(config));
    let shared = writer.shared();
    let writer = WriterThread::start(writer);

    let mut follower = Follower::new(store.clone());
    let loaded = follower
        .load_all(|batch| writer.handle.apply(batch))
        .await
        .context("loading zones and hosts from the database")?;
    tracing::info!(
        zones = loaded.zones,
        names = loaded.names,
        serial = loaded.serial,
        "responder: loaded from the database in {:.2?}",
        started.elapsed()
    );

    let io_config = io_config(config);
    let server = tokio::task::spawn_blocking(move || {
        io::start(
            &io_config,
            shared,
            |snapshot, query, response, transport| handle(snapshot, query, response, transport),
        )
    })
    .await
    .context("starting the responder's workers")?
    .context("opening the responder's sockets")?;

    let (stop_follower, mut stopped) = watch::channel(false);
    let handle = writer.handle.clone();
    let follow = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            match follower.catch_up(|batch| handle.apply(batch)).await {
                Ok(0) => {}
                Ok(read) => tracing::debug!(
                    read,
                    applied = follower.applied(),
                    "responder: caught up with the change log"
                ),
                Err(e) => {
                    // The database may be down: keep serving the snapshot we
                    // have and try again at the next tick.
                    tracing::warn!("responder: reading the change log failed: {e:#}");
                }
            }
        }
    });
    Ok(RunningResponder {
        server,
        writer,
        follower: follow,
        stop_follower,
    })
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
    }
    Ok(())
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

/// `ddserver responder`.
pub(crate) async fn responder(config: &Config, store: &Store) -> Result<()> {
    let responder = start_responder(config, store).await?;
    println!("DNS responder listening on {}", describe(&responder));
    shutdown_signal().await?;
    responder.stop().await
}

/// `ddserver serve`: every part in one process. Each part is one
/// `start_*` call here and one `stop` at the end.
pub(crate) async fn serve(config: &Config, store: &Store) -> Result<()> {
    first_start(store).await?;
    let responder = start_responder(config, store).await?;
    println!("DNS responder listening on {}", describe(&responder));
    let updater = crate::updater::start_updater(config, store).await?;
    println!("ddserver is running; stop it with Ctrl-C or SIGTERM");
    shutdown_signal().await?;
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
