//! The portable backend: poll(2) per worker over its UDP sockets and one
//! epoll set holding its TCP epoll fd (nested) and the shutdown eventfd;
//! UDP moves in recvmmsg/sendmmsg batches through buffers preallocated per
//! worker.
//!
//! Runs wherever Linux does (containers whose seccomp profile forbids
//! io_uring included). Per packet it must never allocate, lock, log or make
//! a syscall: the syscalls are one poll per wake-up, one recvmmsg and one
//! sendmmsg per batch. The UDP sockets are waited for with poll(2), not
//! epoll (see `run`); epoll keeps the TCP sockets and the shutdown eventfd.

use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::Sender;

use super::socket::Epoll;
use super::tcp::Tcp;
use super::{Counter, Counters, IoError, Source, WorkerParts};
use crate::{Outcome, Transport};

const SHUTDOWN: u64 = u64::MAX;
const TCP: u64 = u64::MAX - 1;
/// Full batches read from one socket before looking at the others (and the
/// shutdown flag) again.
const MAX_BATCHES_PER_WAKE: usize = 16;
/// sendmmsg retries when the socket's send buffer is momentarily full; after
/// that the rest of the batch is dropped (UDP: the client retries) rather
/// than stalling every other client of this worker.
const SEND_RETRIES: usize = 8;

/// Per-worker UDP batch buffers. The `mmsghdr`s point into the boxed slices,
/// whose heap addresses never change, so they are wired once at setup.
struct UdpBatch {
    batch: usize,
    max_query: usize,
    max_response: usize,
    queries: Box<[u8]>,
    responses: Box<[u8]>,
    peers: Box<[libc::sockaddr_storage]>,
    rx_iov: Box<[libc::iovec]>,
    rx: Box<[libc::mmsghdr]>,
    tx_iov: Box<[libc::iovec]>,
    tx: Box<[libc::mmsghdr]>,
}

impl UdpBatch {
    fn new(batch: usize, max_query: usize, max_response: usize) -> UdpBatch {
        // SAFETY (for the zeroed() calls below): all-zero is a valid value of
        // these plain C structs (null pointers, zero lengths).
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = UdpBatch {
            batch,
            max_query,
            max_response,
            queries: vec![0; batch * max_query].into_boxed_slice(),
            responses: vec![0; batch * max_response].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            peers: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            rx_iov: vec![zero_iov; batch].into_boxed_slice(),
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            rx: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            tx_iov: vec![zero_iov; batch].into_boxed_slice(),
            // SAFETY: all-zero is a valid mmsghdr.
            tx: (0..batch).map(|_| unsafe { zeroed() }).collect(),
        };
        for i in 0..batch {
            b.rx_iov[i].iov_base = b.queries[i * max_query..].as_mut_ptr().cast();
            b.rx_iov[i].iov_len = max_query;
            let h = &mut b.rx[i].msg_hdr;
            h.msg_name = (&raw mut b.peers[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut b.rx_iov[i];
            h.msg_iovlen = 1;
            let h = &mut b.tx[i].msg_hdr;
            h.msg_iov = &raw mut b.tx_iov[i];
            h.msg_iovlen = 1;
        }
        b
    }

    /// Receives up to one batch from `fd`, answers it and sends the answers.
    /// Returns how many datagrams were received (0: nothing was queued).
    fn run_once<Src, H>(&mut self, fd: i32, shared: &Src, handler: &H, counters: &Counters) -> usize
    where
        Src: Source,
        H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome,
    {
        // SAFETY: `rx` holds `batch` mmsghdrs wired to live buffers of the
        // advertised sizes (see `new`); the kernel writes only into those.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.rx.as_mut_ptr(),
                self.batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            // EAGAIN: drained. Other errors (ENOMEM, pending ICMP errors) are
            // transient on an unconnected UDP socket; epoll tells us to retry.
            return 0;
        }
        let n = n as usize;
        let snapshot = shared.load();
        Src::prefetch(&snapshot, n, |i| {
            let got = self.rx[i].msg_len as usize;
            (self.rx[i].msg_hdr.msg_flags & libc::MSG_TRUNC == 0)
                .then(|| &self.queries[i * self.max_query..i * self.max_query + got])
        });
        let mut m = 0;
        for i in 0..n {
            let got = self.rx[i].msg_len as usize;
            let namelen = self.rx[i].msg_hdr.msg_namelen;
            let truncated = self.rx[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // The kernel overwrote the name length; restore it for the next batch.
            self.rx[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if truncated {
                continue; // longer than `udp_max_query`: not a query we answer
            }
            let query = &self.queries[i * self.max_query..i * self.max_query + got];
            let response = &mut self.responses[i * self.max_response..(i + 1) * self.max_response];
            let Outcome::Reply(len) = handler(&snapshot, query, response, Transport::Udp) else {
                continue;
            };
            self.tx_iov[m].iov_base = response.as_mut_ptr().cast();
            self.tx_iov[m].iov_len = len.min(self.max_response);
            let h = &mut self.tx[m].msg_hdr;
            h.msg_name = (&raw mut self.peers[i]).cast();
            h.msg_namelen = namelen;
            m += 1;
        }
        drop(snapshot);
        let sent = self.send(fd, m);
        counters.add(Counter::UdpReceived, n as u64);
        counters.add(Counter::UdpAnswered, sent as u64);
        n
    }

    /// Sends the first `m` prepared answers; returns how many the kernel took.
    fn send(&mut self, fd: i32, m: usize) -> usize {
        let mut ok = 0;
        let mut sent = 0;
        let mut retries = 0;
        while sent < m {
            // SAFETY: the first `m` tx mmsghdrs point at live peer addresses
            // and response buffers filled above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.tx[sent..].as_mut_ptr(),
                    (m - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                ok += r as usize;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) if retries < SEND_RETRIES => retries += 1,
                Some(libc::EAGAIN | libc::ENOBUFS) => return ok,
                // This one datagram cannot be sent (e.g. EINVAL, EPERM by a
                // firewall): skip it, send the rest.
                _ => sent += 1,
            }
        }
        ok
    }
}

/// The worker loop. Reports setup success or failure through `ready`, then
/// serves until the shutdown eventfd becomes readable.
pub(super) fn run<Src, H>(
    parts: WorkerParts<Src, H>,
    ready: Sender<Result<(), IoError>>,
) -> Result<(), IoError>
where
    Src: Source,
    H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome + Clone + Send + 'static,
{
    let worker = parts.index;
    let err = |what| {
        move |source| IoError::Worker {
            worker,
            what,
            source,
        }
    };
    let setup = || -> Result<(Epoll, Tcp), IoError> {
        let epoll = Epoll::new().map_err(err("epoll_create1"))?;
        let tcp = Tcp::new(
            parts.tcp,
            parts.config.tcp_max_connections_per_worker,
            parts.config.tcp_idle_timeout,
            parts.counters.clone(),
        )
        .map_err(err("TCP epoll set"))?;
        let ev = libc::EPOLLIN as u32;
        epoll.add(tcp.fd(), ev, TCP).map_err(err("epoll_ctl TCP"))?;
        epoll
            .add(parts.shutdown_fd, ev, SHUTDOWN)
            .map_err(err("epoll_ctl shutdown"))?;
        Ok((epoll, tcp))
    };
    let (epoll, mut tcp) = match setup() {
        Ok(ok) => ok,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let udp: Vec<OwnedFd> = parts.udp;
    let shared = parts.shared;
    let counters = parts.counters;
    let handler = parts.handler;
    let mut batch = UdpBatch::new(
        parts.config.udp_batch,
        parts.config.udp_max_query,
        parts.config.udp_max_response,
    );
    let _ = ready.send(Ok(()));
    drop(ready);

    // The UDP sockets are waited for with poll(2), not kept in the epoll
    // set. A socket in an epoll set (or under an io_uring multishot
    // receive) has a waiter on its queue for as long as it is registered,
    // and the kernel wakes that waiter (a spinlock with interrupts off, and
    // epoll's callback) each time it frees one of the socket's sent
    // datagrams: at full load that was 5-8% of the worker's CPU (perf,
    // bench/README.md). poll(2) puts its waiters on the queues only while
    // it sleeps, when the socket is empty and nothing of ours is being
    // sent, and not at all with a zero timeout: the blocking recvmmsg loop
    // of the echo responder pays no more. The epoll set keeps TCP and the
    // shutdown eventfd and is itself one of the polled descriptors.
    let mut fds: Vec<libc::pollfd> = udp
        .iter()
        .map(|s| s.as_raw_fd())
        .chain([epoll.raw()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let epoll_at = udp.len();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
    // Whether a socket's last batch came back full (more is likely queued):
    // then the next poll does not sleep.
    let mut full = vec![false; udp.len()];
    loop {
        let timeout = if full.iter().any(|&f| f) {
            0
        } else {
            tcp.timeout()
                .map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32)
        };
        // SAFETY: `fds` is a live array of pollfds of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(err("poll")(e));
            }
            continue;
        }
        if fds[epoll_at].revents != 0 {
            let n = epoll.wait(&mut events, 0).map_err(err("epoll_wait"))?;
            for ev in &events[..n] {
                match ev.u64 {
                    SHUTDOWN => return Ok(()),
                    _ => tcp
                        .process(&shared, &handler)
                        .map_err(err("epoll_wait TCP"))?,
                }
            }
        }
        for (i, socket) in udp.iter().enumerate() {
            if fds[i].revents == 0 && !full[i] {
                continue;
            }
            let fd = socket.as_raw_fd();
            let was_full = std::mem::take(&mut full[i]);
            for _ in 0..MAX_BATCHES_PER_WAKE {
                // A short batch means the queue was empty a moment ago: go
                // back to poll rather than pay a recvmmsg that returns
                // EAGAIN.
                full[i] = batch.run_once(fd, &shared, &handler, &counters) == batch.batch;
                if !full[i] {
                    break;
                }
            }
            if full[i] && !was_full {
                counters.add(Counter::UdpBusyPeriods, 1);
            }
        }
        tcp.sweep();
    }
}
