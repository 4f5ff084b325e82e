//! Measures `handle` in thread CPU time per query (CLOCK_THREAD_CPUTIME_ID),
//! which stays meaningful on a shared, busy machine where criterion's wall
//! clock does not. Prints ns/query for each case at 1K and 1M names.
//!
//! Run: `cargo run --release -p ddserver-bench --bin handler_cpu [ITERATIONS]`

use std::hint::black_box;

use ddserver_bench::{query, writer};
use ddserver_responder::{Transport, handle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusive
    // pointer we pass and reads nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Thread CPU per query over `iterations` queries taken in turn from
/// `queries` (a power-of-two count), in batches of 64 with one snapshot load
/// each, as a worker does; with `prefetch`, each batch is prefetched first.
fn ns_per_query(
    shared: &ddserver_responder::Shared,
    queries: &[Vec<u8>],
    iterations: usize,
    prefetch: bool,
    response: &mut [u8],
) -> f64 {
    let mask = queries.len() - 1;
    let start = thread_cpu_ns();
    let mut done = 0;
    while done < iterations {
        let view = shared.load();
        if prefetch {
            view.prefetch_batch(64, |k| Some(&queries[(done + k) & mask][..]));
        }
        for i in done..done + 64 {
            black_box(handle(&view, &queries[i & mask], response, Transport::Udp));
        }
        done += 64;
    }
    (thread_cpu_ns() - start) as f64 / done as f64
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let mut response = vec![0u8; 65535];
    for names in [1_000u32, 1_000_000] {
        let w = writer(names);
        let shared = w.shared();
        let rotating: Vec<Vec<u8>> = (0..65_536u32)
            .map(|i| {
                query(
                    &format!("h{:07}.dyn.example.net", (i * 7919) % names),
                    1,
                    true,
                )
            })
            .collect();
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("a_hit", vec![query("h0000123.dyn.example.net", 1, false)]),
            (
                "a_hit_edns",
                vec![query("h0000123.dyn.example.net", 1, true)],
            ),
            (
                "aaaa_hit",
                vec![query("h0000120.dyn.example.net", 28, false)],
            ),
            (
                "aaaa_hit_edns",
                vec![query("h0000120.dyn.example.net", 28, true)],
            ),
            ("nxdomain", vec![query("nothere.dyn.example.net", 1, false)]),
            (
                "nxdomain_edns",
                vec![query("nothere.dyn.example.net", 1, true)],
            ),
            ("refused", vec![query("www.example.org", 1, false)]),
            ("a_hit_edns_rotating_65536_names", rotating),
            // Missing names in rotation: a lookup that probes to an empty
            // slot, passing other names on the way.
            (
                "nxdomain_edns_rotating_65536_names",
                (0..65_536u32)
                    .map(|i| query(&format!("x{:07}.dyn.example.net", i * 7919), 1, true))
                    .collect(),
            ),
        ];
        for (name, queries) in &cases {
            let ns = ns_per_query(&shared, queries, iterations, false, &mut response);
            println!("handle/{names}/{name}: {ns:.1} ns/query (thread CPU)");
        }
        // The rotating cases again as the I/O workers run them: each batch
        // of 64 prefetched level by level first (Snapshot::prefetch_batch).
        for (name, queries) in &cases[cases.len() - 2..] {
            let ns = ns_per_query(&shared, queries, iterations, true, &mut response);
            println!("handle/{names}/{name}_prefetched: {ns:.1} ns/query (thread CPU)");
        }
    }
}
