//! The responder's socket layer: per-core worker threads that move DNS
//! messages between UDP/TCP sockets and the pure handler.
//!
//! ```text
//!  start() ── binds SO_REUSEPORT sockets (socket.rs), probes io_uring, spawns workers
//!     │
//!     ├─ worker 0 (pinned) ─ uring.rs | portable.rs   UDP fast path, batched
//!     │                       └─ tcp.rs                TCP slow path (RFC 7766), own epoll fd
//!     ├─ worker 1 ...
//!     └─ Server { local_addrs, backend, shutdown }
//! ```
//!
//! A backend is a small table in the sense of Knot's `udp_api_t`: "receive a
//! batch, load the snapshot once, call the handler per message, send the
//! batch". Both backends share every line of DNS logic (the handler) and the
//! TCP code.
//!
//! Wiring: `start(&config, source, handler)` where `source` is any
//! [`Source`] (an `Arc<ArcSwap<S>>`, or the sharded snapshot's publication
//! type) and `handler` is `handle::handle` or any
//! `Fn(&S, &[u8], &mut [u8], Transport) -> Outcome`. Per-worker counters are
//! summed by [`Server::stats`]. A worker whose handler panics logs it and
//! stops; its sockets close and SO_REUSEPORT gives its traffic to the others.
//!
//! This layer must never: allocate, lock, log or make a syscall per UDP packet
//! beyond the batched receive/send; look inside DNS messages (that is the
//! handler's job); hold any state shared between workers other than the
//! snapshot.
//!
//! `tokio-uring` is deliberately not used: it measured 0.77x the efficiency of
//! plain sockets, has no multishot receive or provided-buffer rings, and is
//! unmaintained (RESEARCH.md). The `io-uring` crate is used directly.

mod portable;
mod socket;
mod tcp;
mod uring;

use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::{Outcome, Transport};

/// Which I/O backend the workers should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring where the kernel offers and permits it, otherwise portable,
    /// with one log line saying why. The default.
    #[default]
    Auto,
    /// io_uring or a start error ([`IoError::IoUringUnavailable`]).
    IoUring,
    /// poll(2) + recvmmsg/sendmmsg; works wherever Linux does.
    Portable,
}

impl std::str::FromStr for IoMode {
    type Err = UnknownIoMode;

    /// The configuration words: `auto`, `io_uring`, `portable`.
    fn from_str(s: &str) -> Result<IoMode, UnknownIoMode> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "io_uring" => Ok(IoMode::IoUring),
            "portable" => Ok(IoMode::Portable),
            _ => Err(UnknownIoMode),
        }
    }
}

impl std::fmt::Display for IoMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoMode::Auto => "auto",
            IoMode::IoUring => "io_uring",
            IoMode::Portable => "portable",
        })
    }
}

/// An I/O mode word other than `auto`, `io_uring` or `portable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown I/O mode (expected auto, io_uring or portable)")]
pub struct UnknownIoMode;

/// The backend the workers actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Multishot `RecvMsgMulti` over a provided-buffer ring, one `Send` per
    /// answer posting no completion unless it fails.
    IoUring,
    /// poll(2) + recvmmsg/sendmmsg.
    Portable,
}

/// Settings of the socket layer. Every field has a documented default
/// ([`IoConfig::default`]); values outside a range are clamped at start.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Addresses to serve UDP and TCP on. Port 0 picks one free port per
    /// address, shared by all workers (see [`Server::local_addrs`]).
    /// Default: `127.0.0.1:5300`.
    pub listen: Vec<SocketAddr>,
    /// Worker threads, each with its own sockets. 0 = one per CPU the process
    /// may run on. Default: 0.
    pub workers: usize,
    /// Backend choice. Default: [`IoMode::Auto`].
    pub io: IoMode,
    /// Pin worker `i` to the `i`-th allowed CPU (EPERM is ignored).
    /// Default: true.
    pub pin_workers: bool,
    /// A TCP connection with no complete read for this long is closed
    /// (RFC 7766 §6.2.3). Default: 10 s; minimum 10 ms.
    pub tcp_idle_timeout: Duration,
    /// Connections a worker keeps open; excess connections are closed right
    /// after accept. Default: 1024; minimum 1.
    pub tcp_max_connections_per_worker: usize,
    /// Datagrams per receive/send batch (recvmmsg/sendmmsg vector length, and
    /// completions handled per loop iteration in io_uring). Default: 64,
    /// range 1..=1024.
    pub udp_batch: usize,
    /// Largest UDP query accepted, in bytes; longer ones are dropped.
    /// Default: 2048 (queries are small; RFC 6891 payloads of 1232 fit),
    /// range 512..=65535.
    pub udp_max_query: usize,
    /// Size of the response buffer the handler gets for UDP, in bytes. The
    /// handler must still respect the client's advertised size (RFC 6891
    /// §6.2.5). Default: 4096, range 512..=65535.
    pub udp_max_response: usize,
    /// SO_RCVBUF / SO_SNDBUF of each UDP socket, in bytes (capped by the
    /// kernel's rmem_max/wmem_max). Default: 4 MiB.
    pub udp_socket_buffer: usize,
    /// Provided buffers per io_uring worker (each holds one query; the
    /// answer to it is built in a matching response buffer). Default: 512,
    /// range 16..=16384, rounded up to a power of two.
    pub uring_buffers: usize,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5300))],
            workers: 0,
            io: IoMode::Auto,
            pin_workers: true,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_max_connections_per_worker: 1024,
            udp_batch: 64,
            udp_max_query: 2048,
            udp_max_response: 4096,
            udp_socket_buffer: 4 << 20,
            uring_buffers: 512,
        }
    }
}

impl IoConfig {
    /// The same settings with every value clamped into its range.
    fn clamped(&self) -> IoConfig {
        let mut c = self.clone();
        if c.workers == 0 {
            c.workers = socket::allowed_cpus().len().max(1);
        }
        c.tcp_idle_timeout = c.tcp_idle_timeout.max(Duration::from_millis(10));
        c.tcp_max_connections_per_worker = c.tcp_max_connections_per_worker.max(1);
        c.udp_batch = c.udp_batch.clamp(1, 1024);
        c.udp_max_query = c.udp_max_query.clamp(512, 65535);
        c.udp_max_response = c.udp_max_response.clamp(512, 65535);
        c.uring_buffers = c.uring_buffers.clamp(16, 16384).next_power_of_two();
        c
    }
}

/// Why the socket layer could not start or a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `IoConfig::listen` is empty.
    #[error("no listen address configured")]
    NoListenAddress,
    /// bind/listen failed (address in use, not local, no permission).
    #[error("binding {transport} socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// socket() or a socket option failed.
    #[error("setting up {transport} socket for {addr} ({what}): {source}")]
    Socket {
        addr: SocketAddr,
        transport: &'static str,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `IoMode::IoUring` was asked for and the probe failed (EPERM under a
    /// seccomp profile, kernel.io_uring_disabled, old kernel).
    #[error("io_uring is unavailable ({what}): {source}")]
    IoUringUnavailable {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A worker's setup or loop failed on a syscall.
    #[error("worker {worker}: {what}: {source}")]
    Worker {
        worker: usize,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// eventfd() failed.
    #[error("creating the shutdown eventfd: {0}")]
    ShutdownFd(#[source] std::io::Error),
    /// The OS refused a thread.
    #[error("spawning worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The handler (or this layer) panicked in that worker.
    #[error("worker {worker} panicked")]
    WorkerPanicked { worker: usize },
}

/// Counts since start, summed over all workers by [`Server::stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStats {
    /// UDP datagrams received (including ones the handler dropped).
    pub udp_received: u64,
    /// UDP answers handed to the kernel successfully.
    pub udp_answered: u64,
    /// TCP connections accepted and kept.
    pub tcp_accepted: u64,
    /// TCP connections closed right after accept (connection limit).
    pub tcp_refused: u64,
    /// TCP connections closed for idleness (RFC 7766 §6.2.3).
    pub tcp_idle_closed: u64,
    /// Complete queries read from TCP connections.
    pub tcp_queries: u64,
    /// TCP answers queued for sending.
    pub tcp_answered: u64,
    /// Times the portable backend found a UDP socket busy (its batch came
    /// back full) and went on reading it without sleeping in poll(2).
    pub udp_busy_periods: u64,
}

/// One worker's counters. Written only by that worker, with one relaxed add
/// per counter and batch (never per packet), read by [`Server::stats`]. On
/// its own cache line so workers never share one (Knot's per-thread stats).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Counters {
    udp_received: AtomicU64,
    udp_answered: AtomicU64,
    tcp_accepted: AtomicU64,
    tcp_refused: AtomicU64,
    tcp_idle_closed: AtomicU64,
    tcp_queries: AtomicU64,
    tcp_answered: AtomicU64,
    udp_busy_periods: AtomicU64,
}

/// Which counter to add to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    UdpReceived,
    UdpAnswered,
    TcpAccepted,
    TcpRefused,
    TcpIdleClosed,
    TcpQueries,
    TcpAnswered,
    UdpBusyPeriods,
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        let c = match counter {
            Counter::UdpReceived => &self.udp_received,
            Counter::UdpAnswered => &self.udp_answered,
            Counter::TcpAccepted => &self.tcp_accepted,
            Counter::TcpRefused => &self.tcp_refused,
            Counter::TcpIdleClosed => &self.tcp_idle_closed,
            Counter::TcpQueries => &self.tcp_queries,
            Counter::TcpAnswered => &self.tcp_answered,
            Counter::UdpBusyPeriods => &self.udp_busy_periods,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn add_to(&self, s: &mut IoStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.udp_received += get(&self.udp_received);
        s.udp_answered += get(&self.udp_answered);
        s.tcp_accepted += get(&self.tcp_accepted);
        s.tcp_refused += get(&self.tcp_refused);
        s.tcp_idle_closed += get(&self.tcp_idle_closed);
        s.tcp_queries += get(&self.tcp_queries);
        s.tcp_answered += get(&self.tcp_answered);
        s.udp_busy_periods += get(&self.udp_busy_periods);
    }
}

/// The running socket layer. Dropping it shuts down like [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    backend: Backend,
    shutdown_fd: OwnedFd,
    workers: Vec<JoinHandle<Result<(), IoError>>>,
    counters: Vec<Arc<Counters>>,
}

impl Server {
    /// The bound addresses, in the order of [`IoConfig::listen`], with the
    /// ports chosen for port 0 filled in. UDP and TCP share each port.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend the workers run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Counters summed over all workers (each worker updates its own once
    /// per batch, so a just-sent answer may show up a moment later).
    pub fn stats(&self) -> IoStats {
        let mut s = IoStats::default();
        for c in &self.counters {
            c.add_to(&mut s);
        }
        s
    }

    /// Stops every worker and joins it; returns the first worker error.
    /// Workers notice within one loop iteration (they all poll one eventfd).
    pub fn shutdown(mut self) -> Result<(), IoError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), IoError> {
        signal_shutdown(&self.shutdown_fd);
        let mut first = Ok(());
        for (worker, handle) in self.workers.drain(..).enumerate() {
            let result = handle
                .join()
                .unwrap_or(Err(IoError::WorkerPanicked { worker }));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::warn!("responder I/O shutdown: {e}");
        }
    }
}

/// Writes to the shutdown eventfd. It is never read, so it stays readable
/// (level-triggered) and wakes every worker polling it.
fn signal_shutdown(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Everything a worker thread needs; built in `start`, moved into the thread.
struct WorkerParts<Src, H> {
    index: usize,
    config: IoConfig,
    udp: Vec<OwnedFd>,
    tcp: Vec<OwnedFd>,
    shutdown_fd: std::os::fd::RawFd,
    shared: Src,
    handler: H,
    cpu: Option<usize>,
    counters: Arc<Counters>,
}

/// Where workers get the current snapshot from: one `load` per receive
/// batch, the guard is dropped before the batch's answers are sent.
///
/// Implemented for `Arc<ArcSwap<S>>` (tests, examples) and for the
/// responder's own [`crate::snapshot::Shared`] (in `lib.rs`).
pub trait Source: Clone + Send + 'static {
    /// What the handler reads.
    type Snapshot;
    /// Keeps the loaded snapshot alive for one batch.
    type Guard: Deref<Target = Self::Snapshot>;
    /// One lock-free load (an atomic operation, no allocation).
    fn load(&self) -> Self::Guard;

    /// Called once per receive batch before its queries are answered, with
    /// `query(i)` giving the `i`th received message of `count` (`None`:
    /// skip it): a chance to start the batch's memory loads together (the
    /// responder's snapshot prefetches each question's lookup chain, see
    /// `Snapshot::prefetch_batch`). A hint only; nothing by default.
    #[inline]
    fn prefetch<'q>(
        snapshot: &Self::Snapshot,
        count: usize,
        query: impl Fn(usize) -> Option<&'q [u8]>,
    ) {
        let _ = (snapshot, count, query);
    }
}

impl<S: Send + Sync + 'static> Source for Arc<ArcSwap<S>> {
    type Snapshot = S;
    type Guard = Loaded<S>;

    #[inline]
    fn load(&self) -> Loaded<S> {
        Loaded(ArcSwap::load(self))
    }
}

/// A snapshot loaded from an `ArcSwap` (dereferences to the snapshot).
pub struct Loaded<S>(arc_swap::Guard<Arc<S>>);

impl<S> Deref for Loaded<S> {
    type Target = S;

    #[inline]
    fn deref(&self) -> &S {
        &self.0
    }
}

/// Binds the sockets, picks the backend and starts the workers. Returns once
/// every worker has finished its setup (so the server answers when this
/// returns) or with the first error.
///
/// `handler(snapshot, query, response, transport)` is called once per query;
/// the snapshot is loaded from `shared` once per receive batch. For UDP
/// `response` is [`IoConfig::udp_max_response`] bytes long, for TCP 65535
/// bytes.
pub fn start<Src, H>(config: &IoConfig, shared: Src, handler: H) -> Result<Server, IoError>
where
    Src: Source,
    H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome + Clone + Send + 'static,
{
    let config = config.clamped();
    if config.listen.is_empty() {
        return Err(IoError::NoListenAddress);
    }
    let backend = match config.io {
        IoMode::Portable => Backend::Portable,
        IoMode::IoUring => {
            uring::probe(&config)?;
            Backend::IoUring
        }
        IoMode::Auto => match uring::probe(&config) {
            Ok(()) => Backend::IoUring,
            Err(e) => {
                tracing::info!("responder I/O: using the portable backend (poll + recvmmsg): {e}");
                Backend::Portable
            }
        },
    };
    let (local_addrs, per_worker) = socket::bind_all(&config)?;
    let cpus = socket::allowed_cpus();

    // SAFETY: plain syscall, no pointers.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(IoError::ShutdownFd(std::io::Error::last_os_error()));
    }
    // SAFETY: `efd` is a fresh descriptor we own exclusively.
    let shutdown_fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };

    let mut server = Server {
        local_addrs,
        backend,
        shutdown_fd,
        workers: Vec::with_capacity(config.workers),
        counters: Vec::with_capacity(config.workers),
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), IoError>>();
    for (index, (udp, tcp)) in per_worker.into_iter().enumerate() {
        let counters = Arc::new(Counters::default());
        server.counters.push(counters.clone());
        let parts = WorkerParts {
            index,
            config: config.clone(),
            udp,
            tcp,
            shutdown_fd: server.shutdown_fd.as_raw_fd(),
            shared: shared.clone(),
            handler: handler.clone(),
            cpu: (config.pin_workers && !cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            counters,
        };
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dns-io-{index}"))
            .spawn(move || {
                // A panic in the handler is a bug (DESIGN.md invariant 6);
                // say so at once instead of at shutdown. The worker's
                // sockets close, so SO_REUSEPORT hands its share of the
                // traffic to the other workers.
                let run = std::panic::AssertUnwindSafe(|| run_worker(parts, backend, ready));
                std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    tracing::error!("responder I/O worker {index} panicked and stopped");
                    Err(IoError::WorkerPanicked { worker: index })
                })
            });
        match spawned {
            Ok(h) => server.workers.push(h),
            Err(e) => {
                drop(server);
                return Err(IoError::Spawn(e));
            }
        }
    }
    drop(ready_tx);
    for _ in 0..server.workers.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = server.stop_and_join();
                return Err(e);
            }
            // A worker died before reporting; joining tells why.
            Err(_) => {
                server.stop_and_join()?;
                break;
            }
        }
    }
    Ok(server)
}

fn run_worker<Src, H>(
    parts: WorkerParts<Src, H>,
    backend: Backend,
    ready: mpsc::Sender<Result<(), IoError>>,
) -> Result<(), IoError>
where
    Src: Source,
    H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome + Clone + Send + 'static,
{
    if let Some(cpu) = parts.cpu {
        socket::pin_to_cpu(cpu);
    }
    match backend {
        Backend::Portable => portable::run(parts, ready),
        Backend::IoUring => uring::run(parts, ready),
    }
}
