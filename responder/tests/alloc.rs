//! The packet path allocates nothing (DESIGN.md invariant 4): a counting
//! global allocator watches `Shared::load`, the batch prefetch and `handle`
//! over a mixed workload.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ddserver_responder::{Outcome, Transport, handle};
use domain::base::Rtype;
use domain::base::iana::Class;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only this thread's allocations count: the test harness may allocate
    // on other threads meanwhile.
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if WATCHING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; the
// counting touches only an atomic and a const-initialised thread local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn handle_allocates_nothing() {
    let writer = writer();
    let shared = writer.shared();
    let big_edns = Some(Edns {
        payload: 4096,
        version: 0,
        dnssec_ok: true,
    });
    let queries: Vec<(Vec<u8>, Transport)> = vec![
        (query("h1.dyn.example.net", Rtype::A), Transport::Udp),
        (query("H1.DYN.example.net", Rtype::AAAA), Transport::Udp),
        (query("nope.dyn.example.net", Rtype::A), Transport::Udp),
        (query("h2.dyn.example.net", Rtype::AAAA), Transport::Udp),
        (
            query_class("h1.dyn.example.net", Rtype::A, Class::IN, EDNS),
            Transport::Udp,
        ),
        (
            query_class("h1.dyn.example.net", Rtype::A, Class::IN, big_edns),
            Transport::Udp,
        ),
        (query("big.dyn.example.net", Rtype::TXT), Transport::Udp),
        (query("big.dyn.example.net", Rtype::TXT), Transport::Tcp),
        (query("example.org", Rtype::A), Transport::Udp),
        (query("chain.dyn.example.net", Rtype::A), Transport::Udp),
        // Additional-section processing: the MX target's address.
        (query("dyn.example.net", Rtype::MX), Transport::Udp),
        (query("dyn.example.net", Rtype::NS), Transport::Udp),
        (query("loop1.dyn.example.net", Rtype::A), Transport::Udp),
        (query("x.sub.dyn.example.net", Rtype::A), Transport::Udp),
        (query("x.y.wild.dyn.example.net", Rtype::A), Transport::Udp),
        (query("b.dyn.example.net", Rtype::A), Transport::Udp),
        (query("h1.dyn.example.net", Rtype::ANY), Transport::Udp),
        (
            query_class("version.bind", Rtype::TXT, Class::CH, None),
            Transport::Udp,
        ),
        (query("dyn.example.net", Rtype::AXFR), Transport::Tcp),
        (
            query_class(
                "h1.dyn.example.net",
                Rtype::A,
                Class::IN,
                Some(Edns {
                    payload: 1232,
                    version: 1,
                    dnssec_ok: false,
                }),
            ),
            Transport::Udp,
        ),
        (vec![0u8; 11], Transport::Udp),
        (
            query("h1.dyn.example.net", Rtype::A)[..20].to_vec(),
            Transport::Udp,
        ),
    ];
    let mut response = vec![0u8; 65535];
    let mut replies = 0usize;
    let mut run = |rounds: usize| {
        for _ in 0..rounds {
            // One load per batch, as a worker does.
            let view = shared.load();
            // The workers' batch prefetch runs on the packet path too.
            view.prefetch_batch(queries.len(), |i| Some(&queries[i].0[..]));
            for (q, transport) in &queries {
                if let Outcome::Reply(n) = handle(&view, q, &mut response, *transport) {
                    replies += n.min(1);
                }
            }
        }
    };
    run(10); // warm-up: thread-local state of arc-swap, lazy statics
    WATCHING.with(|w| w.set(true));
    run(1000);
    WATCHING.with(|w| w.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations on the packet path"
    );
    assert_eq!(replies, 1010 * (queries.len() - 1));
}
