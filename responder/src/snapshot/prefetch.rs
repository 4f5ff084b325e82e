//! Group prefetching for a receive batch: hiding the memory latency of the
//! lookups behind one another.
//!
//! At 1M names a query's name lookup is a chain of four dependent cache
//! misses (the shard pointer, the table header, the slot, the arena entry),
//! each a trip to memory: bench/README.md measured 680-825 ns of thread CPU
//! per query with 65536 names in rotation against 133-154 ns for one hot
//! name. Answered one after another, a batch pays that chain once per
//! query. Here the batch walks the chain level by level instead (the
//! "group prefetching" of database hash joins, and what DPDK's bulk hash
//! lookups do): every query's first level is requested, then every query's
//! second, and so on, so the misses of different queries overlap and the
//! handler then finds its lines in the cache.
//!
//! It is a hint only: it reads what the handler will read and changes
//! nothing, and a query it misjudges (malformed, not a question, a name
//! below a delegation) merely gets no head start. The one name prefetched
//! is the full question name, the only lookup of the common query (a host
//! directly below its zone's apex, or a missing name there); the zone table
//! it also uses is small and stays cached.

use super::{SHARD_COUNT, Snapshot};
use crate::wire::{HEADER_LEN, NameKey};

/// Queries walked together. A receive batch is at most 1024 datagrams
/// (`udp_batch`), so larger batches go in groups of this many; 64 lines in
/// flight per level is more than a core's fill buffers hold anyway.
const GROUP: usize = 64;

/// Requests the cache line holding `p` (a hint: it never faults, whatever
/// the address, and has no effect the program can observe).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is architecturally a hint that never faults and
    // writes nothing; SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint that never faults and writes nothing.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// See the module documentation and [`Snapshot::prefetch_batch`].
pub(super) fn batch<'q>(
    snapshot: &Snapshot,
    count: usize,
    query: impl Fn(usize) -> Option<&'q [u8]>,
) {
    let mut key = NameKey::new();
    let mut hashes = [0u64; GROUP];
    let mut start = 0;
    while start < count {
        let n = GROUP.min(count - start);
        // Level 1: parse and hash each question name, request its shard
        // pointer. `u64::MAX` marks a skipped query (a real hash hitting it
        // only loses the hint).
        for (k, hash) in hashes[..n].iter_mut().enumerate() {
            *hash = u64::MAX;
            let Some(q) = query(start + k) else { continue };
            // A query: QR clear, something after the header.
            if q.len() <= HEADER_LEN || q[2] & 0x80 != 0 {
                continue;
            }
            if key.parse_into(q, HEADER_LEN).is_ok() {
                let h = snapshot.hasher.hash(key.as_bytes());
                prefetch(&raw const snapshot.shards[h as usize & (SHARD_COUNT - 1)]);
                *hash = h;
            }
        }
        // Level 2: the table headers.
        for &h in &hashes[..n] {
            if h != u64::MAX
                && let Some(table) = snapshot.shards[h as usize & (SHARD_COUNT - 1)]
            {
                prefetch(table.as_ptr());
            }
        }
        // Level 3: the first slot of each probe.
        for &h in &hashes[..n] {
            if h != u64::MAX
                && let Some(slot) = snapshot.table_of(h).and_then(|t| t.first_slot(h))
            {
                prefetch(slot);
            }
        }
        // Level 4: the arena entry the lookup will compare (the first slot
        // of the probe whose tag matches; name, then payload: an entry is
        // 30-100 octets, so it may run into the next line).
        for &h in &hashes[..n] {
            if h == u64::MAX {
                continue;
            }
            if let Some(entry) = snapshot.table_of(h).and_then(|t| t.entry_hint(h)) {
                prefetch(entry);
                prefetch(entry.wrapping_add(64));
            }
        }
        start += n;
    }
}
