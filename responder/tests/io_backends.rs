//! Black-box tests of the socket layer (`ddserver_responder::io`) over real
//! sockets on 127.0.0.1 and [::1], run against both backends with a tiny
//! handler instead of the DNS logic: it echoes the query with QR set and
//! appends the snapshot's value and the worker's index.
//!
//! Handler conventions (first bytes of the query = DNS ID):
//! - ID 0xDEAD: `Outcome::Drop`;
//! - ID 0xB16B: a 65000-byte answer (TCP only; shows the 65535-byte buffer);
//! - ID 0xBAD0: the handler panics.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ddserver_responder::io::{self, Backend, IoConfig, IoError, IoMode, Server};
use ddserver_responder::{Outcome, Transport};

const DROP_ID: u16 = 0xDEAD;
const BIG_ID: u16 = 0xB16B;
const BIG_LEN: usize = 65000;
const PANIC_ID: u16 = 0xBAD0;

/// Echo + QR, then 4 bytes of snapshot value, then 1 byte of worker index.
fn handler(snapshot: &u32, query: &[u8], response: &mut [u8], transport: Transport) -> Outcome {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    if id == DROP_ID {
        return Outcome::Drop;
    }
    if id == PANIC_ID {
        panic!("test handler asked to panic");
    }
    if id == BIG_ID && transport == Transport::Tcp {
        response[..12].copy_from_slice(&query[..12]);
        response[2] |= 0x80;
        for (i, b) in response[12..BIG_LEN].iter_mut().enumerate() {
            *b = i as u8;
        }
        return Outcome::Reply(BIG_LEN);
    }
    let n = query.len();
    response[..n].copy_from_slice(query);
    response[2] |= 0x80;
    response[n..n + 4].copy_from_slice(&snapshot.to_be_bytes());
    let worker = std::thread::current()
        .name()
        .and_then(|name| name.strip_prefix("dns-io-"))
        .and_then(|i| i.parse::<u8>().ok())
        .unwrap_or(255);
    response[n + 4] = worker;
    Outcome::Reply(n + 5)
}

fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
    q
}

/// Checks an answer to `query(id)`; returns (snapshot value, worker index).
fn check_answer(answer: &[u8], id: u16) -> (u32, u8) {
    let q = query(id);
    assert_eq!(answer.len(), q.len() + 5, "answer length");
    assert_eq!(&answer[..2], &id.to_be_bytes(), "answer ID");
    assert_eq!(answer[2], q[2] | 0x80, "QR set");
    assert_eq!(&answer[3..q.len()], &q[3..], "echoed question");
    let n = q.len();
    (
        u32::from_be_bytes(answer[n..n + 4].try_into().unwrap()),
        answer[n + 4],
    )
}

struct Fixture {
    server: Server,
    shared: Arc<ArcSwap<u32>>,
}

/// Starts a server, or None when io_uring is asked for and unavailable and
/// DDSERVER_REQUIRE_IO_URING is not set (containers with default seccomp).
fn start(mode: IoMode, tweak: impl FnOnce(&mut IoConfig)) -> Option<Fixture> {
    let mut config = IoConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        workers: 1,
        io: mode,
        pin_workers: false,
        ..IoConfig::default()
    };
    tweak(&mut config);
    let shared = Arc::new(ArcSwap::from_pointee(1u32));
    match io::start(&config, shared.clone(), handler) {
        Ok(server) => {
            let want = match mode {
                IoMode::Portable => Some(Backend::Portable),
                IoMode::IoUring => Some(Backend::IoUring),
                IoMode::Auto => None,
            };
            if let Some(want) = want {
                assert_eq!(server.backend(), want);
            }
            Some(Fixture { server, shared })
        }
        Err(IoError::IoUringUnavailable { .. })
            if std::env::var_os("DDSERVER_REQUIRE_IO_URING").is_none() =>
        {
            eprintln!("io_uring unavailable here: skipping");
            None
        }
        Err(e) => panic!("start: {e}"),
    }
}

fn udp_client(addr: SocketAddr) -> UdpSocket {
    let bind: SocketAddr = if addr.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn udp_ask(s: &UdpSocket, id: u16) -> (u32, u8) {
    s.send(&query(id)).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("UDP answer");
    check_answer(&buf[..n], id)
}

fn tcp_client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn framed(id: u16) -> Vec<u8> {
    let q = query(id);
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&q);
    f
}

fn tcp_read_message(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("TCP length prefix");
    let mut msg = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).expect("TCP message");
    msg
}

/// True when the peer closed the connection (EOF or reset) within 3 s.
fn tcp_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

fn set_rcvbuf(fd: i32, size: i32) {
    // SAFETY: passes a live c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            4,
        )
    };
}

fn udp_round_trip(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    assert_eq!(f.server.local_addrs().len(), 2);
    for &addr in f.server.local_addrs() {
        assert_ne!(addr.port(), 0);
        let c = udp_client(addr);
        for id in 1..=3 {
            assert_eq!(udp_ask(&c, id).0, 1);
        }
    }
    f.server.shutdown().unwrap();
}

/// Receives `n` answers on `r` in a thread: each a valid answer to one of
/// the queries 0..n, each query answered once.
fn receive_answers(r: UdpSocket, n: u16) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seen = vec![false; usize::from(n)];
        let mut buf = [0u8; 512];
        for _ in 0..n {
            let len = r.recv(&mut buf).expect("all queries answered");
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            check_answer(&buf[..len], id);
            assert!(!seen[usize::from(id)], "one answer per query");
            seen[usize::from(id)] = true;
        }
    })
}

fn udp_many_in_flight(mode: IoMode) {
    const N: u16 = 2000;
    let Some(f) = start(mode, |c| c.udp_batch = 32) else {
        return;
    };
    for &addr in f.server.local_addrs() {
        let c = udp_client(addr);
        set_rcvbuf(c.as_raw_fd(), 4 << 20);
        let r = c.try_clone().unwrap();
        let receiver = receive_answers(r, N);
        for id in 0..N {
            c.send(&query(id)).unwrap();
        }
        receiver.join().unwrap();
    }
    f.server.shutdown().unwrap();
}

fn tcp_pipelined(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    for &addr in f.server.local_addrs() {
        let mut s = tcp_client(addr);
        let mut all = Vec::new();
        for id in 100..120 {
            all.extend_from_slice(&framed(id));
        }
        s.write_all(&all).unwrap();
        for id in 100..120 {
            assert_eq!(check_answer(&tcp_read_message(&mut s), id).0, 1);
        }
        // The connection stays usable.
        s.write_all(&framed(7)).unwrap();
        check_answer(&tcp_read_message(&mut s), 7);
    }
    f.server.shutdown().unwrap();
}

fn tcp_byte_by_byte(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    for &addr in f.server.local_addrs() {
        let mut s = tcp_client(addr);
        let mut all = framed(1);
        all.extend_from_slice(&framed(2));
        for b in &all {
            s.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        check_answer(&tcp_read_message(&mut s), 1);
        check_answer(&tcp_read_message(&mut s), 2);
    }
    f.server.shutdown().unwrap();
}

fn tcp_large_answers(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    let addr = f.server.local_addrs()[0];
    let mut s = tcp_client(addr);
    // Several 65000-byte answers pipelined: more than the socket buffers,
    // so the server must handle partial writes and resume on EPOLLOUT.
    for _ in 0..8 {
        s.write_all(&framed(BIG_ID)).unwrap();
    }
    s.write_all(&framed(3)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..8 {
        let m = tcp_read_message(&mut s);
        assert_eq!(m.len(), BIG_LEN);
        assert_eq!(&m[..2], &BIG_ID.to_be_bytes());
        assert!(m[12..].iter().enumerate().all(|(i, &b)| b == i as u8));
    }
    check_answer(&tcp_read_message(&mut s), 3);
    f.server.shutdown().unwrap();
}

fn tcp_idle_timeout(mode: IoMode) {
    let Some(f) = start(mode, |c| c.tcp_idle_timeout = Duration::from_millis(200)) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    let mut s = tcp_client(addr);
    s.write_all(&framed(1)).unwrap();
    check_answer(&tcp_read_message(&mut s), 1);
    let t = Instant::now();
    assert!(tcp_closed(&mut s), "idle connection closed");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "not before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "soon after the timeout: {waited:?}"
    );
    let stats = stats_reach(&f.server, |s| s.tcp_idle_closed == 1);
    assert_eq!(stats.tcp_idle_closed, 1);
    f.server.shutdown().unwrap();
}

fn tcp_connection_limit(mode: IoMode) {
    let Some(f) = start(mode, |c| c.tcp_max_connections_per_worker = 2) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    let mut a = tcp_client(addr);
    let mut b = tcp_client(addr);
    for s in [&mut a, &mut b] {
        s.write_all(&framed(5)).unwrap();
        check_answer(&tcp_read_message(s), 5);
    }
    let mut c = tcp_client(addr);
    let _ = c.write_all(&framed(6));
    assert!(tcp_closed(&mut c), "connection over the limit closed");
    // The first two still work; closing one makes room again.
    a.write_all(&framed(8)).unwrap();
    check_answer(&tcp_read_message(&mut a), 8);
    drop(b);
    std::thread::sleep(Duration::from_millis(100));
    let mut d = tcp_client(addr);
    d.write_all(&framed(9)).unwrap();
    check_answer(&tcp_read_message(&mut d), 9);
    f.server.shutdown().unwrap();
}

fn drop_sends_nothing(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    let addr = f.server.local_addrs()[0];
    let c = udp_client(addr);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send(&query(DROP_ID)).unwrap();
    let mut buf = [0u8; 512];
    let e = c.recv(&mut buf).expect_err("no answer to a dropped query");
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    udp_ask(&c, 4);
    // Over TCP: nothing for the dropped one, the next is answered.
    let mut s = tcp_client(addr);
    let mut both = framed(DROP_ID);
    both.extend_from_slice(&framed(10));
    s.write_all(&both).unwrap();
    check_answer(&tcp_read_message(&mut s), 10);
    f.server.shutdown().unwrap();
}

fn workers_share_the_port(mode: IoMode) {
    let Some(f) = start(mode, |c| c.workers = 2) else {
        return;
    };
    for &addr in f.server.local_addrs() {
        // SO_REUSEPORT spreads by source address/port: many client sockets.
        let mut workers = [false; 2];
        for i in 0..64 {
            let c = udp_client(addr);
            let (_, w) = udp_ask(&c, i);
            workers[usize::from(w)] = true;
        }
        assert_eq!(workers, [true, true], "both workers answered UDP on {addr}");
        let mut workers = [false; 2];
        for i in 0..64 {
            let mut s = tcp_client(addr);
            s.write_all(&framed(i)).unwrap();
            let (_, w) = check_answer(&tcp_read_message(&mut s), i);
            workers[usize::from(w)] = true;
        }
        assert_eq!(workers, [true, true], "both workers answered TCP on {addr}");
    }
    f.server.shutdown().unwrap();
}

fn snapshot_swap_is_seen(mode: IoMode) {
    let Some(f) = start(mode, |_| {}) else { return };
    let addr = f.server.local_addrs()[0];
    let c = udp_client(addr);
    let mut s = tcp_client(addr);
    assert_eq!(udp_ask(&c, 1).0, 1);
    f.shared.store(Arc::new(2));
    assert_eq!(udp_ask(&c, 2).0, 2);
    s.write_all(&framed(3)).unwrap();
    assert_eq!(check_answer(&tcp_read_message(&mut s), 3).0, 2);
    f.shared.store(Arc::new(3));
    s.write_all(&framed(4)).unwrap();
    assert_eq!(check_answer(&tcp_read_message(&mut s), 4).0, 3);
    f.server.shutdown().unwrap();
}

fn shutdown_is_prompt(mode: IoMode) {
    let Some(f) = start(mode, |c| c.workers = 2) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    // An open TCP connection and served traffic must not delay shutdown.
    let mut s = tcp_client(addr);
    s.write_all(&framed(1)).unwrap();
    check_answer(&tcp_read_message(&mut s), 1);
    udp_ask(&udp_client(addr), 2);
    let t = Instant::now();
    f.server.shutdown().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    assert!(tcp_closed(&mut s), "connections closed at shutdown");
}

/// Polls `Server::stats` until `want` holds (workers add once per batch).
fn stats_reach(server: &Server, want: impl Fn(&io::IoStats) -> bool) -> io::IoStats {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let s = server.stats();
        if want(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stats_count_what_happened(mode: IoMode) {
    let Some(f) = start(mode, |c| c.tcp_max_connections_per_worker = 1) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    let c = udp_client(addr);
    udp_ask(&c, 1);
    udp_ask(&c, 2);
    c.send(&query(DROP_ID)).unwrap();
    let mut s = tcp_client(addr);
    let mut both = framed(DROP_ID);
    both.extend_from_slice(&framed(3));
    s.write_all(&both).unwrap();
    check_answer(&tcp_read_message(&mut s), 3);
    let mut refused = tcp_client(addr);
    assert!(tcp_closed(&mut refused));
    let want = io::IoStats {
        udp_received: 3,
        udp_answered: 2,
        tcp_accepted: 1,
        tcp_refused: 1,
        tcp_idle_closed: 0,
        tcp_queries: 2,
        tcp_answered: 1,
        udp_busy_periods: 0,
    };
    assert_eq!(stats_reach(&f.server, |s| *s == want), want);
    f.server.shutdown().unwrap();
}

fn oversized_query_dropped(mode: IoMode) {
    let Some(f) = start(mode, |c| c.udp_max_query = 1024) else {
        return;
    };
    for &addr in f.server.local_addrs() {
        let c = udp_client(addr);
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut big = query(77);
        big.resize(1500, 0); // a valid header, then more than udp_max_query
        c.send(&big).unwrap();
        let mut buf = [0u8; 2048];
        assert!(c.recv(&mut buf).is_err(), "no answer to a truncated query");
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        udp_ask(&c, 78);
    }
    f.server.shutdown().unwrap();
}

fn panicking_handler_stops_one_worker(mode: IoMode) {
    let Some(f) = start(mode, |c| c.workers = 2) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    udp_client(addr).send(&query(PANIC_ID)).unwrap();
    // Until the panicking worker has unwound (the panic hook may spend a
    // while printing a backtrace), queries hashed to its socket are lost;
    // after that the other worker's socket takes all the traffic.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered_in_a_row = 0;
    let mut id = 0;
    while answered_in_a_row < 16 {
        assert!(Instant::now() < deadline, "the surviving worker answers");
        let c = udp_client(addr);
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        c.send(&query(id)).unwrap();
        let mut buf = [0u8; 512];
        match c.recv(&mut buf) {
            Ok(n) => {
                check_answer(&buf[..n], id);
                answered_in_a_row += 1;
            }
            Err(_) => answered_in_a_row = 0,
        }
        id += 1;
    }
    let e = f.server.shutdown().unwrap_err();
    assert!(matches!(e, IoError::WorkerPanicked { .. }), "{e:?}");
}

macro_rules! battery {
    ($module:ident, $mode:expr) => {
        mod $module {
            use super::*;
            #[test]
            fn udp_round_trip() {
                super::udp_round_trip($mode)
            }
            #[test]
            fn udp_many_in_flight() {
                super::udp_many_in_flight($mode)
            }
            #[test]
            fn tcp_pipelined() {
                super::tcp_pipelined($mode)
            }
            #[test]
            fn tcp_byte_by_byte() {
                super::tcp_byte_by_byte($mode)
            }
            #[test]
            fn tcp_large_answers() {
                super::tcp_large_answers($mode)
            }
            #[test]
            fn tcp_idle_timeout() {
                super::tcp_idle_timeout($mode)
            }
            #[test]
            fn tcp_connection_limit() {
                super::tcp_connection_limit($mode)
            }
            #[test]
            fn drop_sends_nothing() {
                super::drop_sends_nothing($mode)
            }
            #[test]
            fn workers_share_the_port() {
                super::workers_share_the_port($mode)
            }
            #[test]
            fn snapshot_swap_is_seen() {
                super::snapshot_swap_is_seen($mode)
            }
            #[test]
            fn stats_count_what_happened() {
                super::stats_count_what_happened($mode)
            }
            #[test]
            fn oversized_query_dropped() {
                super::oversized_query_dropped($mode)
            }
            #[test]
            fn panicking_handler_stops_one_worker() {
                super::panicking_handler_stops_one_worker($mode)
            }
            #[test]
            fn udp_busy_socket_read_directly_then_waited_for() {
                super::udp_busy_socket_read_directly_then_waited_for($mode)
            }
            #[test]
            fn shutdown_is_prompt() {
                super::shutdown_is_prompt($mode)
            }
        }
    };
}

battery!(portable, IoMode::Portable);
battery!(uring, IoMode::IoUring);

/// A socket whose batches come back full is read on without waiting (the
/// portable backend: no poll(2) in between), and waited for again once a
/// batch comes back short: through both, every query is answered once, TCP
/// is served while UDP is busy, a lone query after the flood is answered,
/// and shutdown is prompt.
fn udp_busy_socket_read_directly_then_waited_for(mode: IoMode) {
    const N: u16 = 4000;
    let Some(f) = start(mode, |c| c.udp_batch = 4) else {
        return;
    };
    let addr = f.server.local_addrs()[0];
    let c = udp_client(addr);
    set_rcvbuf(c.as_raw_fd(), 4 << 20);
    let r = c.try_clone().unwrap();
    let receiver = receive_answers(r, N);
    let mut s = tcp_client(addr);
    for id in 0..N {
        c.send(&query(id)).unwrap();
        if id == N / 2 {
            s.write_all(&framed(7)).unwrap();
        }
    }
    check_answer(&tcp_read_message(&mut s), 7);
    receiver.join().unwrap();
    let stats = stats_reach(&f.server, |s| s.udp_answered == u64::from(N));
    if mode == IoMode::Portable {
        assert!(stats.udp_busy_periods >= 1, "{stats:?}");
    }
    // Drained and idle: the worker sleeps in poll again, and a lone query
    // wakes it.
    std::thread::sleep(Duration::from_millis(100));
    for id in 1..=3 {
        assert_eq!(udp_ask(&c, id).0, 1);
    }
    let started = std::time::Instant::now();
    f.server.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn auto_picks_io_uring_where_it_works() {
    let Some(f) = start(IoMode::Auto, |_| {}) else {
        return;
    };
    let uring_works = start(IoMode::IoUring, |_| {}).is_some();
    let want = if uring_works {
        Backend::IoUring
    } else {
        Backend::Portable
    };
    assert_eq!(f.server.backend(), want);
    if std::env::var_os("DDSERVER_REQUIRE_IO_URING").is_some() {
        assert_eq!(f.server.backend(), Backend::IoUring);
    }
    udp_ask(&udp_client(f.server.local_addrs()[0]), 1);
}

#[test]
fn io_mode_parses_from_config_words() {
    assert_eq!("auto".parse::<IoMode>(), Ok(IoMode::Auto));
    assert_eq!("io_uring".parse::<IoMode>(), Ok(IoMode::IoUring));
    assert_eq!("portable".parse::<IoMode>(), Ok(IoMode::Portable));
    assert!("uring2".parse::<IoMode>().is_err());
    for mode in [IoMode::Auto, IoMode::IoUring, IoMode::Portable] {
        assert_eq!(mode.to_string().parse::<IoMode>(), Ok(mode));
    }
}

#[test]
fn binding_a_taken_address_names_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = IoConfig {
        listen: vec![addr],
        workers: 1,
        io: IoMode::Portable,
        ..IoConfig::default()
    };
    let e = io::start(&config, Arc::new(ArcSwap::from_pointee(0u32)), handler).unwrap_err();
    assert!(
        matches!(e, IoError::Bind { addr: a, .. } if a == addr),
        "{e:?}"
    );
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

/// A publication type other than `Arc<ArcSwap<_>>` (as a sharded snapshot
/// has) plugs in through `io::Source`.
#[derive(Clone)]
struct CountingSource {
    value: Arc<ArcSwap<u32>>,
    loads: Arc<std::sync::atomic::AtomicUsize>,
}

impl io::Source for CountingSource {
    type Snapshot = u32;
    type Guard = io::Loaded<u32>;
    fn load(&self) -> io::Loaded<u32> {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        io::Source::load(&self.value)
    }
}

#[test]
fn custom_source_loaded_once_per_batch() {
    for mode in [IoMode::Portable, IoMode::IoUring] {
        let source = CountingSource {
            value: Arc::new(ArcSwap::from_pointee(7)),
            loads: Arc::default(),
        };
        let config = IoConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 1,
            io: mode,
            pin_workers: false,
            ..IoConfig::default()
        };
        let server = match io::start(&config, source.clone(), handler) {
            Ok(s) => s,
            Err(IoError::IoUringUnavailable { .. }) => continue,
            Err(e) => panic!("{e}"),
        };
        let c = udp_client(server.local_addrs()[0]);
        set_rcvbuf(c.as_raw_fd(), 1 << 20);
        // 200 queries sent before any is read arrive in few batches.
        for id in 0..200 {
            c.send(&query(id)).unwrap();
        }
        let mut buf = [0u8; 512];
        for _ in 0..200 {
            let n = c.recv(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert_eq!(check_answer(&buf[..n], id).0, 7);
        }
        let loads = source.loads.load(std::sync::atomic::Ordering::Relaxed);
        assert!(loads < 200, "{mode:?}: {loads} loads for 200 queries");
        server.shutdown().unwrap();
    }
}

/// Forbids io_uring_setup (EPERM) for the calling thread and the threads it
/// spawns, as Docker's default seccomp profile does for a whole container.
#[cfg(target_arch = "x86_64")]
fn forbid_io_uring_in_this_thread() {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: 0x05 | 0x10, // BPF_JMP | BPF_JEQ | BPF_K
        jt,
        jf,
        k,
    };
    let load_word = 0x20; // BPF_LD | BPF_W | BPF_ABS
    let ret = 0x06; // BPF_RET | BPF_K
    let mut filter = [
        stmt(load_word, 4), // seccomp_data.arch
        jump(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load_word, 0), // seccomp_data.nr
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` points at a live filter array that
    // the kernel copies. Without TSYNC only this thread (and threads it
    // spawns later) are filtered, not the rest of the test binary.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog
            ),
            0
        );
    }
}

/// Docker's default seccomp profile: Auto falls back to the portable
/// backend (and serves), IoUring fails with a reason naming the refusal.
#[cfg(target_arch = "x86_64")]
#[test]
fn auto_falls_back_when_seccomp_forbids_io_uring() {
    std::thread::spawn(|| {
        forbid_io_uring_in_this_thread();
        let Some(f) = start(IoMode::Auto, |_| {}) else {
            panic!("Auto must not fail")
        };
        assert_eq!(f.server.backend(), Backend::Portable);
        udp_ask(&udp_client(f.server.local_addrs()[0]), 1);
        let mut s = tcp_client(f.server.local_addrs()[1]);
        s.write_all(&framed(2)).unwrap();
        check_answer(&tcp_read_message(&mut s), 2);
        f.server.shutdown().unwrap();

        let config = IoConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 1,
            io: IoMode::IoUring,
            ..IoConfig::default()
        };
        let e = io::start(&config, Arc::new(ArcSwap::from_pointee(0u32)), handler).unwrap_err();
        let IoError::IoUringUnavailable { source, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{e}");
        assert!(e.to_string().contains("seccomp"), "{e}");
    })
    .join()
    .unwrap();
}
