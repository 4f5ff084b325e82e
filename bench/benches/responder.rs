//! Criterion benchmarks of the responder's packet path and publish path.
//! See bench/README.md for the command and the recorded numbers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ddserver_bench::{batch, query, writer};
use ddserver_responder::wire::NameKey;
use ddserver_responder::{Outcome, Transport, handle};

const A: u16 = 1;
const AAAA: u16 = 28;

fn handler(c: &mut Criterion) {
    let mut response = vec![0u8; 65535];
    for names in [1_000u32, 1_000_000] {
        let w = writer(names);
        let shared = w.shared();
        let view = shared.load();
        let cases = [
            ("a_hit", query("h0000123.dyn.example.net", A, false)),
            ("a_hit_edns", query("h0000123.dyn.example.net", A, true)),
            ("aaaa_hit", query("h0000120.dyn.example.net", AAAA, false)),
            (
                "aaaa_hit_edns",
                query("h0000120.dyn.example.net", AAAA, true),
            ),
            ("nxdomain", query("nothere.dyn.example.net", A, false)),
            ("nxdomain_edns", query("nothere.dyn.example.net", A, true)),
            (
                "nodata_aaaa",
                query("h0000123.dyn.example.net", AAAA, false),
            ),
            ("refused", query("www.example.org", A, false)),
        ];
        for (name, q) in &cases {
            c.bench_function(&format!("handle/{names}/{name}"), |b| {
                b.iter(|| {
                    let outcome = handle(&view, black_box(q), &mut response, Transport::Udp);
                    debug_assert!(matches!(outcome, Outcome::Reply(_)));
                    black_box(outcome)
                })
            });
        }
        // Rotating over many names: closer to real traffic at 1M names,
        // where cache misses dominate.
        let rotating: Vec<Vec<u8>> = (0..65_536u32)
            .map(|i| {
                query(
                    &format!("h{:07}.dyn.example.net", (i * 7919) % names),
                    A,
                    true,
                )
            })
            .collect();
        let mut next = 0usize;
        c.bench_function(&format!("handle/{names}/a_hit_edns_rotating"), |b| {
            b.iter(|| {
                next = (next + 1) & 0xFFFF;
                black_box(handle(
                    &view,
                    &rotating[next],
                    &mut response,
                    Transport::Udp,
                ))
            })
        });
        // The same as the I/O workers answer it: batches of 64, prefetched
        // level by level first (`Snapshot::prefetch_batch`); one iteration
        // is a whole batch, so divide by 64 for a query.
        c.bench_function(
            &format!("handle/{names}/a_hit_edns_rotating_batch64_prefetched"),
            |b| {
                b.iter(|| {
                    let base = next;
                    next = (next + 64) & 0xFFFF;
                    view.prefetch_batch(64, |k| Some(&rotating[(base + k) & 0xFFFF][..]));
                    for k in 0..64 {
                        black_box(handle(
                            &view,
                            &rotating[(base + k) & 0xFFFF],
                            &mut response,
                            Transport::Udp,
                        ));
                    }
                })
            },
        );
        // Parse the question name (lower-casing it) and look it up: the
        // lookup part of `handle` without the zone search and the encoding.
        c.bench_function(&format!("lookup/{names}/rotating"), |b| {
            b.iter(|| {
                next = (next + 1) & 0xFFFF;
                let (key, _) = NameKey::parse(&rotating[next], 12).unwrap();
                black_box(view.contains(&key))
            })
        });
    }
}

fn apply(c: &mut Criterion) {
    let mut sizes = vec![1_000u32, 1_000_000];
    if std::env::var_os("DDSERVER_BENCH_10M").is_some() {
        sizes.push(10_000_000);
    }
    for names in sizes {
        let mut w = writer(names);
        let mut round = 0u32;
        c.bench_function(&format!("apply_100/{names}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    batch(names, round)
                },
                |changes| black_box(w.apply(changes)),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = handler, apply
}
criterion_main!(benches);
