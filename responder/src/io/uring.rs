//! The io_uring backend: per worker one ring with a multishot `RecvMsgMulti`
//! per UDP socket over a provided-buffer ring (`register_buf_ring`), answers
//! built in per-worker response buffers and sent with batched `Send`
//! submissions (sendto: IORING_OP_SEND with a destination address), one
//! `io_uring_enter` (submit and wait) per batch.
//!
//! Buffer `bid` of the provided-buffer ring has a companion response buffer
//! `bid`: a query received into buffer `bid` is answered from response
//! buffer `bid`, sent to the peer address the kernel wrote into buffer `bid`
//! (no copy), and buffer `bid` goes back to the ring once that send has
//! been issued. In-flight sends therefore never exceed the ring size, and
//! the submission queue is sized so they always fit.
//!
//! Sends post no completion when they succeed (`IOSQE_CQE_SKIP_SUCCESS`)
//! and never wait for socket space (`MSG_DONTWAIT`: a full socket buffer
//! fails the send with EAGAIN, as `sendmmsg` would, instead of parking it
//! in the kernel). A send is therefore done with our memory as soon as the
//! `io_uring_enter` that consumed its submission returns: the kernel issues
//! submissions inline, and a UDP send copies the datagram out at once. Half
//! of the ring's completions (one per answer) are gone that way.
//!
//! TCP is not done with ring operations: the worker's TCP epoll fd (tcp.rs,
//! shared with the portable backend) is watched by a multishot `PollAdd`, and
//! when it fires `Tcp::process` services the sockets with plain syscalls.
//! TCP is the slow path; one implementation for both backends is worth more
//! than saving its syscalls. The shutdown eventfd is watched the same way.
//!
//! Not `tokio-uring`: 0.77x the efficiency of plain sockets in our
//! measurements, no multishot receive or buffer rings, unmaintained
//! (RESEARCH.md). Docker's default seccomp profile forbids io_uring, so this
//! backend is optional; [`probe`] decides at start.
//!
//! Must never: allocate, lock, log or make a syscall per packet (the only
//! syscall in the loop is `io_uring_enter`), or free memory the kernel may
//! still write to (shutdown cancels and drains every operation first).

use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::tcp::Tcp;
use super::{Counter, Counters, IoConfig, IoError, Source, WorkerParts};
use crate::{Outcome, Transport};

/// user_data tags (top byte); the low bits carry a socket index or buffer id.
const TAG_SHIFT: u32 = 56;
const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
const TAG_TCP: u64 = 3;
const TAG_SHUTDOWN: u64 = 4;
const TAG_CANCEL: u64 = 5;
/// The buffer group of the provided-buffer ring (one per ring).
const BUFFER_GROUP: u16 = 0;
/// Room for the peer address in a provided buffer: a sockaddr_in6.
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
/// Header the kernel puts in front of each multishot recvmsg result.
const RECVMSG_OUT_LEN: usize = 16;
/// How long shutdown waits for cancelled operations to complete.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(what: &'static str) -> impl FnOnce(std::io::Error) -> IoError {
    move |source| IoError::IoUringUnavailable { what, source }
}

/// Checks that io_uring can run this backend here: the ring can be created
/// (fails with EPERM under Docker's default seccomp profile or with
/// `kernel.io_uring_disabled`), wait timeouts (EXT_ARG, 5.11), multishot
/// recvmsg (6.0; probed through IORING_OP_SEND_ZC, new in the same release,
/// since multishot has no opcode of its own) and provided-buffer rings
/// (5.19; registered once for real).
///
/// The probe runs on a throwaway thread: tearing down a ring queues kernel
/// task work on the thread that created it, which interrupts that thread's
/// blocking syscalls with EINTR (seen in the tests); the caller's thread
/// must not inherit that.
pub(super) fn probe(config: &IoConfig) -> Result<(), IoError> {
    let config = config.clone();
    std::thread::Builder::new()
        .name("dns-io-probe".into())
        .spawn(move || probe_here(&config))
        .map_err(IoError::Spawn)?
        .join()
        .unwrap_or(Err(IoError::WorkerPanicked { worker: usize::MAX }))
}

fn probe_here(config: &IoConfig) -> Result<(), IoError> {
    let ring = IoUring::new(8).map_err(|e| {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .is_ok_and(|v| v.trim() != "0");
        if disabled {
            IoError::IoUringUnavailable {
                what: "io_uring_setup refused, kernel.io_uring_disabled is set",
                source: e,
            }
        } else {
            IoError::IoUringUnavailable {
                what: "io_uring_setup refused (a seccomp profile such as Docker's default?)",
                source: e,
            }
        }
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err(IoError::IoUringUnavailable {
            what: "no IORING_FEAT_EXT_ARG (kernel older than 5.11)",
            source: std::io::Error::from_raw_os_error(libc::ENOSYS),
        });
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(unavailable("IORING_REGISTER_PROBE"))?;
    for (code, what) in [
        (opcode::RecvMsgMulti::CODE, "no IORING_OP_RECVMSG"),
        (opcode::Send::CODE, "no IORING_OP_SEND"),
        (opcode::PollAdd::CODE, "no IORING_OP_POLL_ADD"),
        (
            opcode::SendZc::CODE,
            "no multishot recvmsg (kernel older than 6.0)",
        ),
    ] {
        if !probe.is_supported(code) {
            return Err(IoError::IoUringUnavailable {
                what,
                source: std::io::Error::from_raw_os_error(libc::ENOSYS),
            });
        }
    }
    let buffers = BufferRing::new(config.uring_buffers, buffer_size(config))
        .map_err(unavailable("allocating the provided-buffer ring"))?;
    buffers
        .register(&ring)
        .map_err(unavailable("IORING_REGISTER_PBUF_RING"))?;
    let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    Ok(())
}

fn buffer_size(config: &IoConfig) -> usize {
    RECVMSG_OUT_LEN + NAME_LEN + config.udp_max_query
}

/// A provided-buffer ring: the ring of `io_uring_buf` entries (page-aligned,
/// shared with the kernel) and the buffers it hands out.
struct BufferRing {
    entries: *mut types::BufRingEntry,
    map_len: usize,
    count: u16,
    tail: u16,
    buffers: Box<[u8]>,
    buffer_size: usize,
}

impl BufferRing {
    fn new(count: usize, buffer_size: usize) -> std::io::Result<BufferRing> {
        let count = count.clamp(1, 32768).next_power_of_two();
        let map_len = count * size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping; no pointer arguments.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut ring = BufferRing {
            entries: map.cast(),
            map_len,
            count: count as u16,
            tail: 0,
            buffers: vec![0; count * buffer_size].into_boxed_slice(),
            buffer_size,
        };
        for bid in 0..count {
            ring.give_back(bid as u16);
        }
        ring.publish();
        Ok(ring)
    }

    fn register(&self, ring: &IoUring) -> std::io::Result<()> {
        // SAFETY: `entries` is a page-aligned mapping of `count` entries that
        // lives as long as `self`; callers drop the IoUring (which drops the
        // registration) before `self`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                BUFFER_GROUP,
                0,
            )
        }
    }

    /// Queues buffer `bid` for the kernel again (visible after `publish`).
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index` < `count`, inside the mapping.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(self.buffers[usize::from(bid) * self.buffer_size..].as_ptr() as u64);
        entry.set_len(self.buffer_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's `resv`, inside
        // the mapping and 2-byte aligned; the kernel reads it atomically.
        let tail =
            unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.entries).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buffer(&self, bid: u16) -> &[u8] {
        let start = usize::from(bid) * self.buffer_size;
        &self.buffers[start..start + self.buffer_size]
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping; the kernel no longer uses it (the
        // ring was dropped first, or never registered it).
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}

fn user_data(tag: u64, low: u64) -> u64 {
    (tag << TAG_SHIFT) | low
}

/// The worker loop.
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
    let config = &parts.config;
    let setup = || -> Result<(IoUring, BufferRing, Tcp), IoError> {
        let buffers = BufferRing::new(config.uring_buffers, buffer_size(config))
            .map_err(err("allocating the provided-buffer ring"))?;
        // Each buffer has at most one send in flight, plus one multishot
        // recv per socket, the TCP and shutdown polls and a cancel.
        let sq_entries = (usize::from(buffers.count) + parts.udp.len() + 8).next_power_of_two();
        let ring = new_ring(sq_entries as u32).map_err(err("io_uring_setup"))?;
        buffers
            .register(&ring)
            .map_err(err("IORING_REGISTER_PBUF_RING"))?;
        // The UDP sockets as registered files, named by their index in
        // `udp`: each answer's send then skips the file-table lookup and
        // reference count (`fget`/`fput`, 0.75% of the worker's samples,
        // 0.26% after; bench/README.md).
        let udp_fds: Vec<i32> = parts.udp.iter().map(|fd| fd.as_raw_fd()).collect();
        ring.submitter()
            .register_files(&udp_fds)
            .map_err(err("IORING_REGISTER_FILES"))?;
        let tcp = Tcp::new(
            parts.tcp,
            config.tcp_max_connections_per_worker,
            config.tcp_idle_timeout,
            parts.counters.clone(),
        )
        .map_err(err("TCP epoll set"))?;
        Ok((ring, buffers, tcp))
    };
    let (ring, buffers, tcp) = match setup() {
        Ok(ok) => ok,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let count = usize::from(buffers.count);
    let mut worker = Worker {
        ring,
        buffers,
        tcp,
        udp: parts.udp,
        shutdown_fd: parts.shutdown_fd,
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        recv_msghdr: Box::new(unsafe { std::mem::zeroed() }),
        responses: vec![0; count * config.udp_max_response].into_boxed_slice(),
        max_response: config.udp_max_response,
        unsent: Vec::with_capacity(count),
        recvs_armed: 0,
        cqes: Vec::with_capacity(config.udp_batch),
        counters: parts.counters.clone(),
        batch_received: 0,
        batch_answered: 0,
        batch_send_failures: 0,
        drained: false,
    };
    // The kernel reads only these two lengths from the recvmsg template.
    worker.recv_msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
    worker.recv_msghdr.msg_controllen = 0;
    if let Err(e) = worker.arm() {
        worker.drain();
        let _ = ready.send(Err(err("arming the ring")(e)));
        return Ok(());
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    let result = worker.serve(&parts.shared, &parts.handler);
    worker.drain();
    result.map_err(err("io_uring_enter"))
}

/// Creates the ring with the single-thread hints where the kernel has them
/// (6.1: completions are processed only when we enter, no interrupts),
/// plainly otherwise.
fn new_ring(entries: u32) -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 2)
        .build(entries)
        .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))
}

struct Worker {
    ring: IoUring,
    buffers: BufferRing,
    tcp: Tcp,
    /// `udp[i]` is registered file `i` of the ring.
    udp: Vec<OwnedFd>,
    shutdown_fd: i32,
    /// Template of the multishot recvmsg: only the name/control lengths matter.
    recv_msghdr: Box<libc::msghdr>,
    responses: Box<[u8]>,
    max_response: usize,
    /// Buffers whose answers are queued for sending: back to the ring
    /// once the kernel has consumed every queued submission.
    unsent: Vec<u16>,
    recvs_armed: usize,
    /// Completions being handled (capacity fixed at start).
    cqes: Vec<cqueue::Entry>,
    counters: Arc<Counters>,
    /// Counts of the current batch, added to `counters` once per batch.
    batch_received: u64,
    batch_answered: u64,
    batch_send_failures: u64,
    drained: bool,
}

impl Worker {
    /// Pushes `entry`, submitting first if the queue is full (it is sized
    /// so that this does not happen).
    fn push(&mut self, entry: &squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: every entry we build points only at memory owned by
            // `self` (the recvmsg template, provided and response buffers)
            // that outlives the operation:
            // `drain` waits for all operations before anything is freed.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_recv(&mut self, socket: usize) -> std::io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(
            types::Fixed(socket as u32),
            &raw const *self.recv_msghdr,
            BUFFER_GROUP,
        )
        .build()
        .user_data(user_data(TAG_RECV, socket as u64));
        self.push(&entry)?;
        self.recvs_armed += 1;
        Ok(())
    }

    fn arm_tcp_poll(&mut self) -> std::io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(self.tcp.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(TAG_TCP, 0));
        self.push(&entry)
    }

    /// Starts the multishot receives and the TCP and shutdown polls.
    fn arm(&mut self) -> std::io::Result<()> {
        for socket in 0..self.udp.len() {
            self.arm_recv(socket)?;
        }
        self.arm_tcp_poll()?;
        let shutdown = opcode::PollAdd::new(types::Fd(self.shutdown_fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data(TAG_SHUTDOWN, 0));
        self.push(&shutdown)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Serves until the shutdown eventfd becomes readable.
    fn serve<Src, H>(&mut self, shared: &Src, handler: &H) -> std::io::Result<()>
    where
        Src: Source,
        H: Fn(&Src::Snapshot, &[u8], &mut [u8], Transport) -> Outcome,
    {
        loop {
            self.wait()?;
            self.issued();
            // One snapshot load per batch, after the completions arrived.
            let snapshot = shared.load();
            let snapshot: &Src::Snapshot = &snapshot;
            let mut stop = false;
            // Completions are copied out in chunks (into a vector allocated
            // once) so that `self` can push sends while handling them.
            let mut cqes = std::mem::take(&mut self.cqes);
            loop {
                cqes.clear();
                cqes.extend(self.ring.completion().take(cqes.capacity()));
                if cqes.is_empty() {
                    break;
                }
                Src::prefetch(snapshot, cqes.len(), |i| self.received(&cqes[i]));
                for cqe in &cqes {
                    let data = cqe.user_data();
                    let low = data & ((1 << TAG_SHIFT) - 1);
                    match data >> TAG_SHIFT {
                        TAG_RECV => self.on_recv(low as usize, cqe, snapshot, handler)?,
                        TAG_SEND => {
                            // Only a failed send completes (e.g. EPERM from a
                            // firewall, EAGAIN on a full socket buffer): one
                            // answer lost, as with sendmmsg; nothing to retry.
                            // Its buffer went back when it was issued.
                            self.batch_send_failures += 1;
                        }
                        TAG_TCP => {
                            self.tcp.process(shared, handler)?;
                            if !cqueue::more(cqe.flags()) {
                                self.arm_tcp_poll()?;
                            }
                        }
                        TAG_SHUTDOWN => stop = true,
                        _ => {}
                    }
                }
            }
            self.cqes = cqes;
            self.buffers.publish();
            self.counters.add(
                Counter::UdpReceived,
                std::mem::take(&mut self.batch_received),
            );
            let answered = std::mem::take(&mut self.batch_answered);
            let failed = std::mem::take(&mut self.batch_send_failures);
            self.counters
                .add(Counter::UdpAnswered, answered.saturating_sub(failed));
            if stop {
                return Ok(());
            }
            self.tcp.sweep();
        }
    }

    /// Submits what was queued and waits for at least one completion; with
    /// TCP connections open, at most until the next idle sweep is due.
    fn wait(&mut self) -> std::io::Result<()> {
        let result = match self.tcp.timeout() {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// The query a receive completion carries, if any (for prefetching:
    /// `on_recv` makes the same checks and gives the buffer back).
    fn received(&self, cqe: &cqueue::Entry) -> Option<&[u8]> {
        if cqe.user_data() >> TAG_SHIFT != TAG_RECV || cqe.result() < 0 {
            return None;
        }
        let bid = cqueue::buffer_select(cqe.flags())?;
        let buffer = self.buffers.buffer(bid);
        let message = types::RecvMsgOut::parse(buffer, &self.recv_msghdr).ok()?;
        if message.is_payload_truncated() {
            return None;
        }
        // `payload_data` borrows the parsed header, not the buffer it points
        // into: re-slice the buffer at the same place.
        let payload = message.payload_data();
        let at = (payload.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
        buffer.get(at..at + payload.len())
    }

    fn on_recv<T, H>(
        &mut self,
        socket: usize,
        cqe: &cqueue::Entry,
        snapshot: &T,
        handler: &H,
    ) -> std::io::Result<()>
    where
        H: Fn(&T, &[u8], &mut [u8], Transport) -> Outcome,
    {
        if !cqueue::more(cqe.flags()) {
            // Multishot ended: the buffer ring ran dry (ENOBUFS) or an
            // error; buffers come back as their sends are issued, so re-arm.
            self.recvs_armed -= 1;
            self.arm_recv(socket)?;
        }
        let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
            return Ok(()); // an error result carries no buffer
        };
        if cqe.result() < 0 {
            self.buffers.give_back(bid);
            return Ok(());
        }
        let Ok(message) = types::RecvMsgOut::parse(self.buffers.buffer(bid), &self.recv_msghdr)
        else {
            self.buffers.give_back(bid);
            return Ok(());
        };
        self.batch_received += 1;
        if message.is_payload_truncated() || message.is_name_data_truncated() {
            self.buffers.give_back(bid); // longer than `udp_max_query`
            return Ok(());
        }
        let b = usize::from(bid);
        let response = &mut self.responses[b * self.max_response..(b + 1) * self.max_response];
        let Outcome::Reply(len) =
            handler(snapshot, message.payload_data(), response, Transport::Udp)
        else {
            self.buffers.give_back(bid);
            return Ok(());
        };
        let name = message.name_data();
        // IORING_OP_SEND with a destination address (sendto; kernel 6.0,
        // implied by the probe): cheaper than SendMsg, which would make the
        // kernel copy in a msghdr and an iovec per answer. The peer address
        // stays in the provided buffer, untouched until the send has been
        // issued and the buffer goes back to the ring.
        let len = len.min(self.max_response) as u32;
        let entry = opcode::Send::new(types::Fixed(socket as u32), response.as_ptr(), len)
            .dest_addr(name.as_ptr().cast())
            .dest_addr_len(name.len() as libc::socklen_t)
            .flags(libc::MSG_DONTWAIT)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data(TAG_SEND, u64::from(bid)));
        self.push(&entry)?;
        self.unsent.push(bid);
        Ok(())
    }

    /// After an `io_uring_enter`: when it consumed every queued submission,
    /// every queued send has been issued (see the module comment), so its
    /// buffers go back to the ring. Otherwise (the kernel took only part,
    /// e.g. short of memory) they wait for an enter that takes the rest.
    fn issued(&mut self) {
        if self.unsent.is_empty() || !self.ring.submission().is_empty() {
            return;
        }
        self.batch_answered += self.unsent.len() as u64;
        for bid in self.unsent.drain(..) {
            self.buffers.give_back(bid);
        }
    }

    /// Cancels every operation and waits until none can touch our memory.
    /// Runs once: at shutdown, or from `Drop` when the worker unwinds.
    fn drain(&mut self) {
        if self.drained {
            return;
        }
        self.drained = true;
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(TAG_CANCEL, 0));
        let cancelled = self.push(&cancel).is_ok();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while cancelled
            && (self.recvs_armed > 0 || !self.unsent.is_empty())
            && Instant::now() < deadline
        {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            if self.ring.submission().is_empty() {
                self.unsent.clear(); // issued: done with our memory
            }
            while let Some(cqe) = self.ring.completion().next() {
                if cqe.user_data() >> TAG_SHIFT == TAG_RECV && !cqueue::more(cqe.flags()) {
                    self.recvs_armed -= 1;
                }
            }
        }
        if !cancelled || self.recvs_armed > 0 || !self.unsent.is_empty() {
            // Never free memory the kernel may still use.
            tracing::warn!(
                "responder io_uring: operations still in flight at shutdown; leaking the worker's buffers"
            );
            let buffers = std::mem::replace(&mut self.buffers.buffers, Box::new([]));
            std::mem::forget(buffers);
            std::mem::forget(std::mem::take(&mut self.responses));
            return;
        }
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.drain();
    }
}
