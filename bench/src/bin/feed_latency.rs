//! Change-feed latency: commits host address changes through the store at
//! fixed rates (pushing to a running responder's control socket, as the
//! updater does) and measures, for a sample of them, the delay from the
//! commit returning to the new address being answered on the wire.
//!
//! Usage (see bench/README.md, "Change feed", and `bench/feed.sh`):
//!
//! ```text
//! feed_latency --url sqlite://feed.db --socket responder.sock --dns 127.0.0.1:5399 \
//!     --hosts 1000000 --rates 1000,2000,5000,10000 --seconds 5 --writers 8
//! ```
//!
//! Hosts `h0000001..` of `dyn.example.net` must exist. Per rate it prints
//! the changes/s achieved, the samples, median, p99 and max delay, and the
//! samples never answered within one second. Never used by the server.
//!
//! Writers (`--writers N` tokio tasks, each one change at a time, like
//! concurrent update requests) commit through the store:
//! - `--api grouped` (default): `Store::update_host`, the updater's path,
//!   which groups concurrent writers' changes into one transaction;
//! - `--api single`: `Store::update_host_addresses`, one transaction per
//!   change (the web UI's path; what this benchmark measured before the
//!   store had group commit).
//!
//! `--group N` (N > 1, SQLite only) measures the responder alone: one
//! writer, each transaction updates N hosts and writes their N change-log
//! entries with plain SQL, then a `Heartbeat` frame with the new serial goes
//! to the control socket.
//!
//! The prober re-asks each pending sample at most every 50 µs, and all of
//! them together at most `--probe-rate` times per second (default 20000),
//! so a growing backlog of unanswered samples cannot turn the measurement
//! itself into the load that slows the responder down.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ddserver_bench::query;
use ddserver_store::{Actor, HostUpdate, Name, PushOptions, Store};

struct Args {
    url: String,
    socket: Option<PathBuf>,
    dns: SocketAddr,
    hosts: u64,
    rates: Vec<u64>,
    seconds: u64,
    writers: usize,
    samples_per_second: u64,
    group: u64,
    api: Api,
    probe_rate: u64,
}

/// Which store call the writers use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `Store::update_host` (group commit).
    Grouped,
    /// `Store::update_host_addresses` (one transaction per change).
    Single,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        socket: None,
        dns: "127.0.0.1:5399".parse().unwrap(),
        hosts: 1_000_000,
        rates: vec![1000, 2000, 5000, 10_000],
        seconds: 5,
        writers: 8,
        samples_per_second: 500,
        group: 1,
        api: Api::Grouped,
        probe_rate: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--socket" => args.socket = Some(PathBuf::from(value)),
            "--dns" => args.dns = value.parse().expect("--dns ADDR:PORT"),
            "--hosts" => args.hosts = value.parse().expect("--hosts N"),
            "--rates" => {
                args.rates = value
                    .split(',')
                    .map(|r| r.parse().expect("--rates N,N,..."))
                    .collect()
            }
            "--seconds" => args.seconds = value.parse().expect("--seconds N"),
            "--writers" => args.writers = value.parse().expect("--writers N"),
            "--samples" => args.samples_per_second = value.parse().expect("--samples N"),
            "--group" => args.group = value.parse().expect("--group N"),
            "--api" => {
                args.api = match value.as_str() {
                    "grouped" => Api::Grouped,
                    "single" => Api::Single,
                    _ => panic!("--api grouped|single"),
                }
            }
            "--probe-rate" => args.probe_rate = value.parse().expect("--probe-rate N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url is required");
    args
}

/// One sampled change: which name, the address it must answer, when the
/// commit returned.
struct Sample {
    name: String,
    address: [u8; 4],
    committed: Instant,
}

/// The address of change `i`: unique for 2^24 changes.
fn address(i: u64) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// Where this run's change numbers start: random, so a run on a database
/// that an earlier run changed does not set a host to the address it
/// already has (the store would then log nothing, and the "new" answer
/// would be there before the commit).
fn random_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std's per-process random hash keys: a fresh base per run.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() & 0xff_ffff
}

/// Queries each pending sample's name until the answer carries its
/// address; returns the delays and how many were never answered.
fn prober(
    dns: SocketAddr,
    probe_rate: u64,
    samples: mpsc::Receiver<Sample>,
) -> (Vec<Duration>, usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(dns).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut pending: HashMap<u16, Sample> = HashMap::new();
    let mut next_id: u16 = 0;
    let mut delays = Vec::new();
    let mut lost = 0;
    let mut open = true;
    let mut buf = [0u8; 1500];
    let mut last_sent: HashMap<u16, Instant> = HashMap::new();
    while open || !pending.is_empty() {
        loop {
            match samples.try_recv() {
                Ok(sample) => {
                    next_id = next_id.wrapping_add(1);
                    pending.insert(next_id, sample);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        // Each pending sample is re-asked at most every 50 µs, and all
        // together at most `probe_rate` times per second.
        let every = Duration::from_micros(50)
            .max(Duration::from_secs(1) * pending.len() as u32 / probe_rate.max(1) as u32);
        pending.retain(|id, sample| {
            if now.duration_since(sample.committed) > Duration::from_secs(1) {
                lost += 1;
                last_sent.remove(id);
                return false;
            }
            if last_sent
                .get(id)
                .is_none_or(|t| now.duration_since(*t) > every)
            {
                let mut q = query(&sample.name, 1, false);
                q[0..2].copy_from_slice(&id.to_be_bytes());
                let _ = socket.send(&q);
                last_sent.insert(*id, now);
            }
            true
        });
        while let Ok(n) = socket.recv(&mut buf) {
            let answered = Instant::now();
            if n < 12 {
                continue;
            }
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let Some(sample) = pending.get(&id) else {
                continue;
            };
            // The A record's RDATA ends the answer (no EDNS in the query).
            if n >= 16 && buf[7] >= 1 && buf[n - 4..n] == sample.address {
                delays.push(answered.duration_since(sample.committed));
                pending.remove(&id);
                last_sent.remove(&id);
            }
        }
        if pending.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    (delays, lost)
}

/// The `--group` mode: one writer, `group` changes per transaction.
fn grouped(args: &Args) {
    use tokio::io::AsyncWriteExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // As the store's own connections (`Store::connect`).
                    for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&args.url)
            .await
            .unwrap();
        let socket_path = args.socket.clone().expect("--group needs --socket");
        let mut socket = tokio::net::UnixStream::connect(&socket_path).await.unwrap();
        let mut hello = Vec::new();
        ddserver_store::feed::encode_frame(
            &ddserver_store::FeedMessage::Hello {
                latest: 0,
                writer: "feed_latency --group".into(),
            },
            &mut hello,
        )
        .unwrap();
        socket.write_all(&hello).await.unwrap();
        header();
        let mut base = random_base();
        for &rate in &args.rates {
            let (tx, rx) = mpsc::channel();
            let dns = args.dns;
            let probe_rate = args.probe_rate;
            let prober = std::thread::spawn(move || prober(dns, probe_rate, rx));
            let total = rate * args.seconds;
            let sample_every = (rate / args.samples_per_second).max(1);
            let start = tokio::time::Instant::now();
            let mut i = 0;
            while i < total {
                let n = args.group.min(total - i);
                let due = start + Duration::from_nanos((i + n) * 1_000_000_000 / rate);
                tokio::time::sleep_until(due).await;
                let changes: Vec<(u64, u64)> = (i..i + n)
                    .map(|j| {
                        let change = base + j;
                        (
                            1 + (change.wrapping_mul(2_654_435_761) % args.hosts),
                            change,
                        )
                    })
                    .collect();
                let latest = group_commit(&pool, &changes).await;
                let committed = Instant::now();
                let mut frame = Vec::new();
                ddserver_store::feed::encode_frame(
                    &ddserver_store::FeedMessage::Heartbeat { latest },
                    &mut frame,
                )
                .unwrap();
                socket.write_all(&frame).await.unwrap();
                for &(host, change) in &changes {
                    if (change - base).is_multiple_of(sample_every) {
                        let _ = tx.send(Sample {
                            name: format!("h{host:07}.dyn.example.net"),
                            address: address(change),
                            committed,
                        });
                    }
                }
                i += n;
            }
            drop(tx);
            let elapsed = start.elapsed();
            base += total;
            let (mut delays, lost) = tokio::task::spawn_blocking(move || prober.join().unwrap())
                .await
                .unwrap();
            delays.sort();
            let seconds = elapsed.as_secs_f64();
            let commits = total.div_ceil(args.group) as f64 / seconds;
            report(rate, total as f64 / seconds, commits, &delays, lost);
        }
    });
}

/// The header matching [`report`].
fn header() {
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>6}",
        "target/s", "changes/s", "commits/s", "samples", "median ms", "p99 ms", "max ms", "lost"
    );
}

fn report(rate: u64, achieved: f64, commits: f64, delays: &[Duration], lost: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:>8} {:>10.0} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>6}",
        rate,
        achieved,
        commits,
        delays.len(),
        ms(percentile(delays, 0.5)),
        ms(percentile(delays, 0.99)),
        ms(delays.last().copied().unwrap_or_default()),
        lost
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Commits `changes` (host number, change number) in one transaction with
/// plain SQL and returns the newest serial.
async fn group_commit(pool: &sqlx::AnyPool, changes: &[(u64, u64)]) -> u64 {
    use sqlx::Row;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for &(host, change) in changes {
        sqlx::query("UPDATE hosts SET ipv4 = ?, updated_at = ? WHERE fqdn = ?")
            .bind(Ipv4Addr::from(address(change)).to_string())
            .bind(now)
            .bind(format!("h{host:07}.dyn.example.net"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE zones SET serial = serial + 1 WHERE name = 'dyn.example.net'")
        .execute(&mut *tx)
        .await
        .unwrap();
    for &(host, _) in changes {
        sqlx::query(
            "INSERT INTO changes (zone, name, kind, committed_at) \
             VALUES ('dyn.example.net', ?, 'host_changed', ?)",
        )
        .bind(format!("h{host:07}.dyn.example.net"))
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let latest: i64 = sqlx::query("SELECT MAX(serial) FROM changes")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    latest as u64
}

fn main() {
    let args = parse_args();
    if args.group > 1 {
        return grouped(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::connect(&args.url)
            .await
            .expect("opening the database");
        if let Some(socket) = &args.socket {
            store.push_to(socket.clone(), PushOptions::default());
        }
        header();
        let mut base = random_base();
        for &rate in &args.rates {
            let (tx, rx) = mpsc::channel();
            let dns = args.dns;
            let probe_rate = args.probe_rate;
            let prober = std::thread::spawn(move || prober(dns, probe_rate, rx));
            let total = rate * args.seconds;
            let sample_every = (rate / args.samples_per_second).max(1);
            let next = Arc::new(AtomicU64::new(0));
            let batches = store.group_commit_batches();
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..args.writers {
                let (store, next, tx) = (store.clone(), next.clone(), tx.clone());
                let (hosts, api) = (args.hosts, args.api);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                        tokio::time::sleep_until(due).await;
                        let change = base + i;
                        // Spread over the names (a multiplicative hash).
                        let host = 1 + (change.wrapping_mul(2_654_435_761) % hosts);
                        let name = format!("h{host:07}.dyn.example.net");
                        let fqdn = Name::parse(&name).unwrap();
                        let ip = Ipv4Addr::from(address(change));
                        match api {
                            Api::Grouped => {
                                store
                                    .update_host(HostUpdate {
                                        fqdn,
                                        ipv4: Some(Some(ip)),
                                        ipv6: None,
                                        offline: None,
                                        wildcard: None,
                                        actor: Actor::cli(),
                                        user_agent: "feed_latency".into(),
                                    })
                                    .await
                                    .expect("update");
                            }
                            Api::Single => {
                                store
                                    .update_host_addresses(
                                        &Actor::cli(),
                                        &fqdn,
                                        Some(Some(ip)),
                                        None,
                                    )
                                    .await
                                    .expect("update");
                            }
                        }
                        if i.is_multiple_of(sample_every) {
                            let _ = tx.send(Sample {
                                name,
                                address: address(change),
                                committed: Instant::now(),
                            });
                        }
                    }
                }));
            }
            drop(tx);
            for task in tasks {
                task.await.unwrap();
            }
            let elapsed = start.elapsed();
            base += total;
            let (mut delays, lost) = tokio::task::spawn_blocking(move || prober.join().unwrap())
                .await
                .unwrap();
            delays.sort();
            let seconds = elapsed.as_secs_f64();
            let commits = match args.api {
                Api::Grouped => (store.group_commit_batches() - batches) as f64 / seconds,
                Api::Single => total as f64 / seconds,
            };
            report(rate, total as f64 / seconds, commits, &delays, lost);
        }
        store.flush_pushes(Duration::from_secs(1)).await;
        store.close().await;
    });
}
