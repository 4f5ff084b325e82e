//! loadgen: a batched DNS-over-UDP load generator (sendmmsg/recvmmsg, many
//! queries in flight on several sockets, one thread).
//!
//! ```text
//! loadgen [--server 127.0.0.1:5300] [--duration 10] [--sockets 4]
//!         [--inflight 1000] [--batch 64] [--timeout-ms 1000]
//!         [--queries FILE | --names 1000000] [--server-pid PID]
//! ```
//!
//! Queries come from a dnsperf-format file (`name type` per line; A, AAAA,
//! NS, SOA, MX, TXT, CNAME, PTR, SRV, CAA, ANY or TYPEnnn) or are generated
//! as `h%07d.dyn.example.net A` for `--names` random names. Each socket
//! keeps up to `--inflight` queries outstanding (the DNS ID is the slot); a
//! query unanswered after `--timeout-ms` counts as lost. With `--server-pid`
//! the server's on-CPU time (all threads, /proc/PID/task/*/schedstat) is
//! read before and after, giving its CPU time per answered query.
//!
//! Prints one summary line (and a key=value line for scripts). It measures;
//! it must never be pointed at a server you do not run.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Options {
    server: SocketAddr,
    duration: Duration,
    sockets: usize,
    inflight: usize,
    batch: usize,
    timeout: Duration,
    queries: Option<String>,
    names: u32,
    server_pid: Option<u32>,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen [--server ADDR] [--duration SECS] [--sockets N] [--inflight N] [--batch N] \
         [--timeout-ms MS] [--queries FILE | --names N] [--server-pid PID]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        server: "127.0.0.1:5300".parse().unwrap(),
        duration: Duration::from_secs(10),
        sockets: 4,
        inflight: 1000,
        batch: 64,
        timeout: Duration::from_millis(1000),
        queries: None,
        names: 1_000_000,
        server_pid: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--server" => o.server = value.parse().unwrap_or_else(|_| usage()),
            "--duration" => {
                o.duration = Duration::from_secs_f64(value.parse().unwrap_or_else(|_| usage()))
            }
            "--sockets" => o.sockets = value.parse().unwrap_or_else(|_| usage()),
            "--inflight" => o.inflight = value.parse().unwrap_or_else(|_| usage()),
            "--batch" => o.batch = value.parse().unwrap_or_else(|_| usage()),
            "--timeout-ms" => {
                o.timeout = Duration::from_millis(value.parse().unwrap_or_else(|_| usage()))
            }
            "--queries" => o.queries = Some(value),
            "--names" => o.names = value.parse().unwrap_or_else(|_| usage()),
            "--server-pid" => o.server_pid = Some(value.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    o.sockets = o.sockets.max(1);
    o.inflight = o.inflight.clamp(1, 65535);
    o.batch = o.batch.clamp(1, 1024);
    o
}

fn qtype(name: &str) -> Option<u16> {
    Some(match name.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "CAA" => 257,
        "ANY" => 255,
        other => other.strip_prefix("TYPE")?.parse().ok()?,
    })
}

/// A query in wire form with ID 0, RD clear, no EDNS.
fn encode(name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    Some(q)
}

fn load_queries(o: &Options) -> Vec<Vec<u8>> {
    match &o.queries {
        Some(path) => {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                eprintln!("loadgen: reading {path}: {e}");
                std::process::exit(1)
            });
            let queries: Vec<_> = text
                .lines()
                .filter_map(|line| {
                    let mut it = line.split_whitespace();
                    let name = it.next()?;
                    encode(name, qtype(it.next().unwrap_or("A"))?)
                })
                .collect();
            if queries.is_empty() {
                eprintln!("loadgen: no queries in {path}");
                std::process::exit(1);
            }
            queries
        }
        None => {
            // xorshift: fixed seed, uniform random names like gen_zone.py's.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            (0..o.names.clamp(1, 1_000_000))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = x % u64::from(o.names.max(1)) + 1;
                    encode(&format!("h{n:07}.dyn.example.net"), 1).unwrap()
                })
                .collect()
        }
    }
}

/// Total on-CPU nanoseconds of all threads of `pid`.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|t| {
        let t = t.ok()?;
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        s.split_whitespace().next()?.parse::<u64>().ok()
    })
    .sum()
}

const BUF: usize = 512;

/// One socket's state: outstanding slots by DNS ID and its mmsg vectors.
struct Flow {
    socket: UdpSocket,
    /// Send time in ns since start + 1 per ID; 0 = free.
    sent_at: Vec<u64>,
    outstanding: usize,
    next_id: u16,
    /// IDs taken for the batch being sent.
    batch_ids: Vec<u16>,
    tx_bufs: Vec<u8>,
    tx_iov: Vec<libc::iovec>,
    tx: Vec<libc::mmsghdr>,
    rx_bufs: Vec<u8>,
    rx_iov: Vec<libc::iovec>,
    rx: Vec<libc::mmsghdr>,
}

impl Flow {
    fn new(server: SocketAddr, batch: usize) -> Flow {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.connect(server).expect("connect");
        socket.set_nonblocking(true).unwrap();
        let size: libc::c_int = 4 << 20;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: passes a live c_int and its size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    4,
                )
            };
        }
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut f = Flow {
            socket,
            sent_at: vec![0; 65536],
            outstanding: 0,
            next_id: 0,
            batch_ids: vec![0; batch],
            tx_bufs: vec![0; batch * BUF],
            tx_iov: vec![iov; batch],
            // SAFETY: all-zero is a valid mmsghdr.
            tx: (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect(),
            rx_bufs: vec![0; batch * BUF],
            rx_iov: vec![iov; batch],
            // SAFETY: all-zero is a valid mmsghdr.
            rx: (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect(),
        };
        for i in 0..batch {
            f.tx_iov[i].iov_base = f.tx_bufs[i * BUF..].as_mut_ptr().cast();
            f.tx[i].msg_hdr.msg_iov = &raw mut f.tx_iov[i];
            f.tx[i].msg_hdr.msg_iovlen = 1;
            f.rx_iov[i].iov_base = f.rx_bufs[i * BUF..].as_mut_ptr().cast();
            f.rx_iov[i].iov_len = BUF;
            f.rx[i].msg_hdr.msg_iov = &raw mut f.rx_iov[i];
            f.rx[i].msg_hdr.msg_iovlen = 1;
        }
        f
    }
}

#[derive(Default)]
struct Counts {
    sent: u64,
    answered: u64,
    lost: u64,
    unexpected: u64,
    latency_ns: u64,
}

fn main() {
    let o = options();
    let queries = load_queries(&o);
    let mut flows: Vec<Flow> = (0..o.sockets)
        .map(|_| Flow::new(o.server, o.batch))
        .collect();
    let mut c = Counts::default();
    let mut next_query = 0usize;
    let cpu_before = o.server_pid.map(cpu_ns);
    let start = Instant::now();
    let mut last_sweep = 0u64;
    let end_ns = o.duration.as_nanos() as u64;
    let timeout_ns = o.timeout.as_nanos() as u64;
    let mut sending = true;
    let mut fds: Vec<libc::pollfd> = flows
        .iter()
        .map(|f| libc::pollfd {
            fd: f.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let now = start.elapsed().as_nanos() as u64 + 1;
        if sending && now >= end_ns {
            sending = false; // stop sending; collect what is in flight
        }
        if !sending && (now >= end_ns + timeout_ns || flows.iter().all(|f| f.outstanding == 0)) {
            break;
        }
        let mut received = 0;
        for f in &mut flows {
            // Receive.
            // SAFETY: `rx` holds `batch` mmsghdrs wired to live buffers.
            let n = unsafe {
                libc::recvmmsg(
                    f.socket.as_raw_fd(),
                    f.rx.as_mut_ptr(),
                    o.batch as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            for i in 0..n.max(0) as usize {
                received += 1;
                let len = f.rx[i].msg_len as usize;
                let r = &f.rx_bufs[i * BUF..i * BUF + len.min(BUF)];
                if len < 12 || r[2] & 0x80 == 0 {
                    c.unexpected += 1;
                    continue;
                }
                let id = usize::from(u16::from_be_bytes([r[0], r[1]]));
                if f.sent_at[id] == 0 {
                    c.unexpected += 1; // late (already counted lost) or bogus
                    continue;
                }
                c.latency_ns += now.saturating_sub(f.sent_at[id]);
                f.sent_at[id] = 0;
                f.outstanding -= 1;
                c.answered += 1;
            }
            // Send up to the in-flight limit.
            while sending && f.outstanding < o.inflight {
                let k = (o.inflight - f.outstanding).min(o.batch);
                for i in 0..k {
                    while f.sent_at[usize::from(f.next_id)] != 0 {
                        f.next_id = f.next_id.wrapping_add(1);
                    }
                    let id = f.next_id;
                    f.next_id = f.next_id.wrapping_add(1);
                    f.batch_ids[i] = id;
                    let q = &queries[next_query];
                    next_query = (next_query + 1) % queries.len();
                    let buf = &mut f.tx_bufs[i * BUF..i * BUF + q.len()];
                    buf.copy_from_slice(q);
                    buf[..2].copy_from_slice(&id.to_be_bytes());
                    f.tx_iov[i].iov_len = q.len();
                    f.sent_at[usize::from(id)] = now;
                }
                // SAFETY: the first `k` tx mmsghdrs point at filled buffers.
                let s = unsafe {
                    libc::sendmmsg(
                        f.socket.as_raw_fd(),
                        f.tx.as_mut_ptr(),
                        k as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                let s = s.max(0) as usize;
                for &id in &f.batch_ids[s..k] {
                    f.sent_at[usize::from(id)] = 0; // not sent: free again
                }
                f.outstanding += s;
                c.sent += s as u64;
                if s < k {
                    break;
                }
            }
        }
        // Expire lost queries every 10 ms.
        if now - last_sweep > 10_000_000 {
            last_sweep = now;
            for f in &mut flows {
                if f.outstanding == 0 {
                    continue;
                }
                for t in f.sent_at.iter_mut() {
                    if *t != 0 && now - *t > timeout_ns {
                        *t = 0;
                        f.outstanding -= 1;
                        c.lost += 1;
                    }
                }
            }
        }
        if received == 0 {
            // SAFETY: `fds` is a live array of `fds.len()` pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
        }
    }
    let elapsed = o.duration.as_secs_f64();
    let server_cpu = match (o.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_ns(pid).saturating_sub(before)),
        _ => None,
    };
    c.lost += flows.iter().map(|f| f.outstanding as u64).sum::<u64>();
    let loss = if c.sent > 0 {
        100.0 * c.lost as f64 / c.sent as f64
    } else {
        0.0
    };
    let us_per_q = server_cpu.map(|ns| ns as f64 / 1000.0 / c.answered.max(1) as f64);
    println!(
        "sent {:.0} q/s, answered {:.0} q/s, lost {} ({loss:.3}%), unexpected {}, avg latency {:.3} ms{}",
        c.sent as f64 / elapsed,
        c.answered as f64 / elapsed,
        c.lost,
        c.unexpected,
        c.latency_ns as f64 / c.answered.max(1) as f64 / 1e6,
        us_per_q.map_or(String::new(), |u| format!(", server CPU {u:.3} us/q")),
    );
    println!(
        "RESULT sent_qps={:.0} answered_qps={:.0} lost={} loss_pct={loss:.4} srv_us_per_q={}",
        c.sent as f64 / elapsed,
        c.answered as f64 / elapsed,
        c.lost,
        us_per_q.map_or("NA".to_string(), |u| format!("{u:.4}")),
    );
}
