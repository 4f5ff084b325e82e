//! A fixed-answer DNS server on `ddserver_responder::io`: the Rust
//! counterpart of `/work/shared/bench/limit_responder.c`, for measuring the
//! I/O backends without any DNS lookup. Every query is answered with its
//! header and question, QR/AA set and one A record 192.0.2.1 (TTL 60).
//!
//! ```text
//! cargo run --release -p ddserver-responder --example echo_server -- \
//!     [--listen 127.0.0.1:5300] [--workers 1] [--io auto|uring|portable] [--no-pin]
//!     [--batch 64] [--max-query 2048] [--max-response 4096]
//! ```
//! Runs until killed; prints the backend and the bound addresses on stderr.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ddserver_responder::io::{self, IoConfig, IoMode};
use ddserver_responder::{Outcome, Transport};

/// The fixed answer record: name = pointer to the question, A, IN, TTL 60.
const ANSWER: [u8; 16] = [
    0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3C, 0x00, 0x04, 192, 0, 2, 1,
];

/// Same checks and answer as limit_responder.c's `answer`.
fn answer(_snapshot: &(), q: &[u8], r: &mut [u8], _transport: Transport) -> Outcome {
    if q.len() < 12 || q[2] & 0x80 != 0 || q[4] != 0 || q[5] != 1 {
        return Outcome::Drop;
    }
    let mut off = 12;
    loop {
        let Some(&l) = q.get(off) else {
            return Outcome::Drop;
        };
        off += 1;
        if l == 0 {
            break;
        }
        if l & 0xC0 != 0 {
            return Outcome::Drop;
        }
        off += usize::from(l);
    }
    off += 4;
    if off > q.len() || off + ANSWER.len() > r.len() {
        return Outcome::Drop;
    }
    r[..off].copy_from_slice(&q[..off]);
    r[2] = (r[2] & 0x79) | 0x84;
    r[3] = 0;
    r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
    r[off..off + ANSWER.len()].copy_from_slice(&ANSWER);
    Outcome::Reply(off + ANSWER.len())
}

fn main() {
    let mut config = IoConfig {
        workers: 1,
        ..IoConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("missing value");
        match arg.as_str() {
            "--listen" => config.listen = vec![value().parse().expect("address")],
            "--workers" => config.workers = value().parse().expect("number"),
            "--io" => {
                config.io = match value().as_str() {
                    "auto" => IoMode::Auto,
                    "uring" | "io_uring" => IoMode::IoUring,
                    "portable" => IoMode::Portable,
                    other => panic!("unknown --io {other}"),
                }
            }
            "--no-pin" => config.pin_workers = false,
            "--batch" => config.udp_batch = value().parse().expect("number"),
            "--max-query" => config.udp_max_query = value().parse().expect("number"),
            "--max-response" => config.udp_max_response = value().parse().expect("number"),
            other => panic!("unknown argument {other}"),
        }
    }
    let server = match io::start(&config, Arc::new(ArcSwap::from_pointee(())), answer) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "echo_server: backend {:?}, listening on {:?}, pid {}",
        server.backend(),
        server.local_addrs(),
        std::process::id()
    );
    loop {
        std::thread::park();
    }
}
