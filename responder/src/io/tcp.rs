//! DNS over TCP (RFC 7766, RFC 1035 §4.2.2) for one worker: its listeners
//! and connections, driven by a private epoll instance.
//!
//! Both backends use this code unchanged. The portable backend nests this
//! epoll fd in its own epoll set; the io_uring backend polls it through the
//! ring with a multishot `PollAdd`. Either way, when the fd is readable the
//! backend calls [`Tcp::process`], which services ready sockets with plain
//! non-blocking syscalls. TCP is the slow path: each connection has its own
//! buffers (allocated per connection, grown at most to one maximum-size
//! message, never per query).
//!
//! Must never: block, let one connection starve the others (work per event
//! is bounded by the output high-water mark), keep more than
//! `tcp_max_connections_per_worker` connections, or keep an idle connection
//! past `tcp_idle_timeout`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::socket::{Epoll, close_now, setsockopt_int};
use super::{Counter, Counters, Source};
use crate::{Outcome, Transport};

/// Largest DNS message over TCP (the 2-byte length prefix).
const MAX_MESSAGE: usize = 65535;
/// Initial receive buffer of a connection; grows to the largest message seen.
const INITIAL_INPUT: usize = 4096;
/// Stop answering (and reading) while this much output waits for the peer.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// Events taken from the epoll set per `epoll_wait`.
const EVENTS: usize = 64;
/// Token bit marking a listener (otherwise: generation << 32 | slot).
const LISTENER: u64 = 1 << 63;

struct Connection {
    fd: OwnedFd,
    input: Vec<u8>,
    input_len: usize,
    output: Vec<u8>,
    output_pos: usize,
    last_activity: Instant,
    interest: u32,
    eof: bool,
}

struct Slot {
    generation: u32,
    connection: Option<Connection>,
}

/// One worker's TCP side.
pub(super) struct Tcp {
    epoll: Epoll,
    listeners: Vec<OwnedFd>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    max_connections: usize,
    idle_timeout: Duration,
    sweep_every: Duration,
    next_sweep: Instant,
    /// The handler's response buffer: 2 bytes of length prefix + 65535.
    scratch: Box<[u8]>,
    events: Box<[libc::epoll_event]>,
    counters: Arc<Counters>,
}

/// What servicing a connection decided.
enum Next {
    Keep,
    Close,
}

impl Tcp {
    pub(super) fn new(
        listeners: Vec<OwnedFd>,
        max_connections: usize,
        idle_timeout: Duration,
        counters: Arc<Counters>,
    ) -> std::io::Result<Tcp> {
        let epoll = Epoll::new()?;
        for (i, l) in listeners.iter().enumerate() {
            epoll.add(l.as_raw_fd(), libc::EPOLLIN as u32, LISTENER | i as u64)?;
        }
        Ok(Tcp {
            epoll,
            listeners,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            max_connections,
            idle_timeout,
            sweep_every: (idle_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
            next_sweep: Instant::now(),
            scratch: vec![0; 2 + MAX_MESSAGE].into_boxed_slice(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS].into_boxed_slice(),
            counters,
        })
    }

    /// The epoll fd to watch for readability.
    pub(super) fn fd(&self) -> RawFd {
        self.epoll.raw()
    }

    /// How long the backend may sleep before calling [`Tcp::sweep`]:
    /// None while no connection is open.
    pub(super) fn timeout(&self) -> Option<Duration> {
        (self.open > 0).then_some(self.sweep_every)
    }

    /// Closes connections idle for longer than the timeout (RFC 7766 §6.2.3).
    /// Cheap when nothing is open; otherwise rate-limited to one pass per
    /// `sweep_every`.
    pub(super) fn sweep(&mut self) {
        if self.open == 0 {
            return;
        }
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.sweep_every;
        for i in 0..self.slots.len() {
            let idle = self.slots[i]
                .connection
                .as_ref()
                .is_some_and(|c| now.duration_since(c.last_activity) >= self.idle_timeout);
            if idle {
                self.close(i);
                self.counters.add(Counter::TcpIdleClosed, 1);
            }
        }
    }

    /// Services every ready listener and connection.
    pub(super) fn process<Src, H>(&mut self, shared: &Src, handler: &H) -> std::io::Result<()>
    where
        Src: Source,
        H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome,
    {
        loop {
            let mut events = std::mem::take(&mut self.events);
            let n = match self.epoll.wait(&mut events, 0) {
                Ok(n) => n,
                Err(e) => {
                    self.events = events;
                    return Err(e);
                }
            };
            for ev in &events[..n] {
                let token = ev.u64;
                if token & LISTENER != 0 {
                    self.accept((token & !LISTENER) as usize);
                    continue;
                }
                let slot = (token & 0xffff_ffff) as usize;
                let generation = (token >> 32) as u32;
                let live = self
                    .slots
                    .get(slot)
                    .is_some_and(|s| s.generation == generation && s.connection.is_some());
                if !live {
                    continue; // closed earlier in this batch
                }
                let Some(conn) = self.slots[slot].connection.as_mut() else {
                    continue;
                };
                let next = service(conn, &mut self.scratch, shared, handler, &self.counters);
                let next = match next {
                    Next::Keep => update_interest(&self.epoll, conn, token),
                    Next::Close => Next::Close,
                };
                if let Next::Close = next {
                    self.close(slot);
                }
            }
            self.events = events;
            if n < EVENTS {
                break;
            }
        }
        self.sweep();
        Ok(())
    }

    fn accept(&mut self, listener: usize) {
        let lfd = self.listeners[listener].as_raw_fd();
        loop {
            // SAFETY: null address pointers are allowed; returns a new fd or -1.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR | libc::ECONNABORTED) => {}
                    // Out of descriptors or memory: retried on the next readiness.
                    _ => tracing::debug!("responder TCP accept: {e}"),
                }
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::ECONNABORTED)
                {
                    continue;
                }
                return;
            }
            if self.open >= self.max_connections {
                close_now(fd);
                self.counters.add(Counter::TcpRefused, 1);
                continue;
            }
            // Answers are whole messages; do not let Nagle hold back the
            // second of two pipelined answers.
            let _ = setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            // SAFETY: `fd` is a fresh descriptor we own exclusively.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let slot = match self.free.pop() {
                Some(s) => s as usize,
                None => {
                    self.slots.push(Slot {
                        generation: 0,
                        connection: None,
                    });
                    self.slots.len() - 1
                }
            };
            let generation = self.slots[slot].generation;
            let token = (u64::from(generation) << 32) | slot as u64;
            let interest = libc::EPOLLIN as u32;
            if self.epoll.add(fd.as_raw_fd(), interest, token).is_err() {
                self.free.push(slot as u32);
                continue; // `fd` closes on drop
            }
            self.slots[slot].connection = Some(Connection {
                fd,
                input: vec![0; INITIAL_INPUT],
                input_len: 0,
                output: Vec::new(),
                output_pos: 0,
                last_activity: Instant::now(),
                interest,
                eof: false,
            });
            self.open += 1;
            self.counters.add(Counter::TcpAccepted, 1);
        }
    }

    fn close(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if s.connection.take().is_some() {
            // Closing the fd removes it from the epoll set.
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot as u32);
            self.open -= 1;
        }
    }
}

/// Answers buffered queries, writes, reads; until the socket would block,
/// the output is backlogged, or the peer closed.
fn service<Src, H>(
    conn: &mut Connection,
    scratch: &mut [u8],
    shared: &Src,
    handler: &H,
    counters: &Counters,
) -> Next
where
    Src: Source,
    H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome,
{
    loop {
        if conn.pending() < OUTPUT_HIGH_WATER && !answer(conn, scratch, shared, handler, counters) {
            return Next::Close;
        }
        match flush(conn) {
            Ok(()) => {}
            Err(()) => return Next::Close,
        }
        if conn.pending() >= OUTPUT_HIGH_WATER {
            break; // wait for EPOLLOUT
        }
        if conn.has_complete_message() {
            continue; // left unanswered while the output was backlogged
        }
        if conn.eof {
            break;
        }
        let space = conn.input.len() - conn.input_len;
        if space == 0 {
            break; // cannot happen: `answer` makes room for the next message
        }
        // SAFETY: writes at most `space` bytes into the tail of `input`.
        let n = unsafe {
            libc::read(
                conn.fd.as_raw_fd(),
                conn.input.as_mut_ptr().add(conn.input_len).cast(),
                space,
            )
        };
        if n > 0 {
            conn.input_len += n as usize;
            conn.last_activity = Instant::now();
        } else if n == 0 {
            conn.eof = true;
        } else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => {}
                _ => return Next::Close,
            }
        }
    }
    if conn.eof && conn.pending() == 0 {
        return Next::Close;
    }
    Next::Keep
}

/// Answers every complete query in the input buffer (in order, RFC 7766
/// §6.2.1.1 pipelining) until the output is backlogged; compacts the input
/// and makes room for the next message. False: the stream is unusable.
///
/// The snapshot is loaded here, after the read, once per call: a query
/// sent after a swap is always answered from the new snapshot.
fn answer<Src, H>(
    conn: &mut Connection,
    scratch: &mut [u8],
    shared: &Src,
    handler: &H,
    counters: &Counters,
) -> bool
where
    Src: Source,
    H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome,
{
    if !conn.has_complete_message() {
        make_room(conn);
        return true;
    }
    let snapshot = shared.load();
    let snapshot: &Src::Snapshot = &snapshot;
    let mut start = 0;
    let (mut queries, mut answers) = (0, 0);
    while conn.input_len - start >= 2 && conn.pending() < OUTPUT_HIGH_WATER {
        let len = usize::from(u16::from_be_bytes([
            conn.input[start],
            conn.input[start + 1],
        ]));
        if len == 0 {
            return false; // no DNS message is empty; the stream is out of step
        }
        if conn.input_len - start < 2 + len {
            break;
        }
        let query = &conn.input[start + 2..start + 2 + len];
        queries += 1;
        if let Outcome::Reply(n) = handler(snapshot, query, &mut scratch[2..], Transport::Tcp) {
            let n = n.min(MAX_MESSAGE);
            scratch[..2].copy_from_slice(&(n as u16).to_be_bytes());
            conn.output.extend_from_slice(&scratch[..2 + n]);
            answers += 1;
        }
        start += 2 + len;
    }
    counters.add(Counter::TcpQueries, queries);
    counters.add(Counter::TcpAnswered, answers);
    if start > 0 {
        conn.input.copy_within(start..conn.input_len, 0);
        conn.input_len -= start;
    }
    make_room(conn);
    true
}

fn make_room(conn: &mut Connection) {
    // Room for the whole next message (or at least its length prefix).
    if conn.input_len >= 2 {
        let need = 2 + usize::from(u16::from_be_bytes([conn.input[0], conn.input[1]]));
        if need > conn.input.len() {
            conn.input.resize(need, 0);
        }
    }
}

/// Writes pending output until done or the socket would block.
fn flush(conn: &mut Connection) -> Result<(), ()> {
    while conn.output_pos < conn.output.len() {
        let rest = &conn.output[conn.output_pos..];
        // SAFETY: reads `rest.len()` initialised bytes from `rest`.
        let n = unsafe {
            libc::send(
                conn.fd.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            conn.output_pos += n as usize;
            conn.last_activity = Instant::now();
        } else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::EINTR) => {}
                _ => return Err(()),
            }
        }
    }
    conn.output.clear();
    conn.output_pos = 0;
    Ok(())
}

/// Registers for what the connection waits on now.
fn update_interest(epoll: &Epoll, conn: &mut Connection, token: u64) -> Next {
    let mut want = 0;
    if !conn.eof && conn.pending() < OUTPUT_HIGH_WATER {
        want |= libc::EPOLLIN as u32;
    }
    if conn.pending() > 0 {
        want |= libc::EPOLLOUT as u32;
    }
    if want == 0 {
        return Next::Close;
    }
    if want != conn.interest {
        if epoll
            .ctl(libc::EPOLL_CTL_MOD, conn.fd.as_raw_fd(), want, token)
            .is_err()
        {
            return Next::Close;
        }
        conn.interest = want;
    }
    Next::Keep
}

impl Connection {
    fn pending(&self) -> usize {
        self.output.len() - self.output_pos
    }

    fn has_complete_message(&self) -> bool {
        self.input_len >= 2
            && self.input_len >= 2 + usize::from(u16::from_be_bytes([self.input[0], self.input[1]]))
    }
}
