//! Measures the responder's memory per name: builds the benchmark zone with
//! N names (default 1,000,000; `snapshot_memory 10000000` for 10M) and
//! prints resident bytes per name and shard heap bytes per name, then the
//! time to apply 100-change batches (one publish each).
//!
//! Run: `cargo run --release -p ddserver-bench --bin snapshot_memory [N [BATCHES]]`

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ddserver_bench::{batch, resident_bytes, writer};

/// The allocator of the `ddserver` binary, counting live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to mimalloc and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let names: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let before = resident_bytes().unwrap_or(0);
    let live_before = LIVE.load(Ordering::Relaxed);
    let empty = writer(0);
    let with_table = resident_bytes().unwrap_or(0);
    drop(empty);
    let start = Instant::now();
    let w = writer(names);
    let built = start.elapsed();
    // The load's temporary maps are freed; have mimalloc hand free pages
    // back to the OS so that RSS shows what stays.
    // SAFETY: mi_collect only releases unused heap memory; no pointers change.
    unsafe { mi_collect(true) };
    let after = resident_bytes().unwrap_or(0);
    let live_after = LIVE.load(Ordering::Relaxed);
    let snapshot = w.current();
    let names_stored = snapshot.name_count();
    println!("names: {names} (entries: {names_stored}), build: {built:.2?}");
    println!(
        "resident: {:.1} MiB before, {:.1} MiB after ({:.1} MiB of it the empty snapshot's pointer table)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (with_table.saturating_sub(before)) as f64 / 1048576.0
    );
    println!(
        "resident bytes per name: {:.1}",
        (after.saturating_sub(before)) as f64 / names as f64
    );
    println!(
        "live heap bytes per name: {:.1}",
        (live_after - live_before) as f64 / names as f64
    );
    println!(
        "shard heap bytes per name: {:.1}",
        snapshot.shard_heap_bytes() as f64 / names as f64
    );

    // Publishing cost: batches of 100 host updates, one publish each.
    let rounds: u32 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut w = w;
    let batches: Vec<_> = (1..=rounds).map(|round| batch(names, round)).collect();
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut rebuilt = 0;
    for changes in batches {
        rebuilt += w.apply(changes).shards_rebuilt;
    }
    let per_batch = start.elapsed() / rounds;
    let cpu_us = (thread_cpu_ns() - cpu_start) as f64 / 1000.0 / f64::from(rounds);
    println!(
        "apply 100-change batch: {per_batch:.2?} wall, {cpu_us:.0} µs thread CPU ({} shards rebuilt per batch)",
        rebuilt / rounds as usize
    );
}

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

unsafe extern "C" {
    /// mimalloc's `mi_collect`: frees and purges unused pages (part of the
    /// mimalloc library that the `mimalloc` crate links).
    fn mi_collect(force: bool);
}
