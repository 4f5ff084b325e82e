//! The immutable data the workers answer from, and its publication.
//!
//! # Design
//!
//! Names live in [`SHARD_COUNT`] (65536) shards chosen by a keyed hash of the
//! lower-case wire name; each shard is one compact [`table::Table`] (a hash
//! index over one byte arena holding the name and its pre-rendered RRsets).
//! A [`Snapshot`] is the table of shard pointers plus the zone table and the
//! handler settings; the current one sits in one `ArcSwap<Snapshot>`
//! ([`Shared`]). A worker does **one** atomic load per receive batch
//! ([`Shared::load`]) and then reads any shard through plain pointers.
//!
//! Publishing a batch copies only the touched shards (copy-on-write) and the
//! 512 KiB pointer table, once per batch however many changes it holds, so
//! its cost does not depend on the number of names (DESIGN.md invariant 5).
//! Shards are held by raw pointers, not `Arc`s: cloning 65536 `Arc`s per
//! publish would touch 65536 cache lines twice (clone, then drop).
//!
//! # Who frees a shard
//!
//! A shard is owned by the *last* snapshot that uses it. When snapshot `S_k`
//! is replaced by `S_k+1`, the writer records in `S_k` (once, through a
//! `OnceLock`) the shards it replaced and an `Arc` to `S_k+1`. So every older
//! snapshot keeps all newer ones alive; `S_k` is dropped only after all older
//! snapshots are gone, and then frees exactly the shards no newer snapshot
//! uses. The newest snapshot, never retired, frees all its shards.
//!
//! The writer keeps every retired snapshot and drops it only once
//! `Arc::strong_count == 1`, so memory is freed on the writer's thread, never
//! on a worker (RESEARCH.md; Knot's RCU swap then free). A worker could hold
//! the last reference only after the writer is gone (shutdown).
//!
//! Must never: mutate a published shard, or be read under a lock.

pub(crate) mod prefetch;
mod staged;
mod table;
mod writer;

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

pub use writer::{ApplyError, ApplyReport, HandlerConfig, SnapshotWriter};

use crate::wire::NameKey;
use table::{NameHasher, Table};

/// Number of name shards. A power of two: the shard is the hash's low bits.
pub const SHARD_COUNT: usize = 1 << 16;

/// Immutable, pre-rendered answer data. See the module documentation.
pub struct Snapshot {
    /// `SHARD_COUNT` entries; `None` is an empty shard.
    shards: Box<[Option<NonNull<Table>>]>,
    hasher: NameHasher,
    pub(crate) zones: Arc<ZoneTable>,
    pub(crate) settings: Arc<Settings>,
    names: usize,
    retirement: OnceLock<Retirement>,
}

// SAFETY: the shard pointers point to tables that are immutable after
// publication and are freed only by the last snapshot that uses them (module
// docs), which `retirement.successor` keeps ordered; every other field is
// Send + Sync. Sharing `&Snapshot` across threads therefore only shares
// immutable data that outlives the reference.
unsafe impl Send for Snapshot {}
// SAFETY: see `Send`: all access through `&Snapshot` is read-only.
unsafe impl Sync for Snapshot {}

/// What a replaced snapshot must keep alive and eventually free.
struct Retirement {
    successor: Arc<Snapshot>,
    replaced: Vec<NonNull<Table>>,
}

/// Handler settings carried by the snapshot, so one load gives a worker a
/// consistent view of both data and settings.
pub(crate) struct Settings {
    /// Our EDNS UDP payload size (RFC 6891 §6.2.5).
    pub(crate) udp_payload_size: u16,
    /// Pre-rendered CHAOS TXT payloads; `None`: REFUSED.
    pub(crate) chaos_version: Option<Box<[u8]>>,
    pub(crate) chaos_id: Option<Box<[u8]>>,
}

/// Zone apexes: lower-case apex wire name → pre-rendered negative SOA record
/// (owner placeholder `C0 0C`, TTL = min(SOA TTL, minimum), RFC 2308 §3).
pub(crate) struct ZoneTable {
    table: Table,
    hasher: NameHasher,
    /// Most labels of any apex: longer suffixes of a query name are skipped.
    max_labels: usize,
}

impl ZoneTable {
    /// Finds the zone of `name` by longest suffix match. Returns the label
    /// index where the apex starts and the negative SOA record.
    #[inline]
    pub(crate) fn find(&self, name: &NameKey) -> Option<(usize, &[u8])> {
        let count = name.label_count();
        for i in count.saturating_sub(self.max_labels)..=count {
            let suffix = name.suffix(i);
            if let Some(soa) = self.table.get(self.hasher.hash(suffix), suffix) {
                return Some((i, soa));
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

impl Snapshot {
    /// The payload of `name` (lower-case wire form), if the name exists.
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.get_hashed(self.hasher.hash(name), name)
    }

    /// [`Self::get`] with the name's hash already computed (by the writer,
    /// whose hasher is this snapshot's).
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, name: &[u8]) -> Option<&[u8]> {
        let shard = self.shards[hash as usize & (SHARD_COUNT - 1)]?;
        // SAFETY: a shard pointer in a live snapshot points to a table that
        // is freed only after this snapshot is dropped (module docs), and
        // `&self` keeps this snapshot alive for the returned lifetime.
        let table = unsafe { shard.as_ref() };
        table.get(hash, name)
    }

    /// Warms the cache for the first lookup of each query of a batch before
    /// the batch is answered: [`crate::handle::handle`] then finds the lines
    /// it needs already loaded. See [`prefetch`].
    ///
    /// `query(i)` for `i` in `0..count` gives the received message (or
    /// `None` to skip one). Anything that is not a plausible query is
    /// skipped; the handler judges it later. Never allocates.
    #[inline]
    pub fn prefetch_batch<'q>(&self, count: usize, query: impl Fn(usize) -> Option<&'q [u8]>) {
        prefetch::batch(self, count, query);
    }

    /// The table of the shard `hash` falls in.
    #[inline]
    fn table_of(&self, hash: u64) -> Option<&Table> {
        let shard = self.shards[hash as usize & (SHARD_COUNT - 1)]?;
        // SAFETY: as in `get_hashed`.
        Some(unsafe { shard.as_ref() })
    }

    /// Whether `name` exists (has an entry: records, a host, or names below).
    pub fn contains(&self, name: &NameKey) -> bool {
        self.get(name.as_bytes()).is_some()
    }

    /// Number of names (entries) in all shards.
    pub fn name_count(&self) -> usize {
        self.names
    }

    /// Number of zones served.
    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// Our EDNS UDP payload size.
    pub fn udp_payload_size(&self) -> u16 {
        self.settings.udp_payload_size
    }

    /// Heap bytes held by the name shards (tables, not the pointer array).
    pub fn shard_heap_bytes(&self) -> usize {
        self.tables()
            .map(|t| t.heap_bytes() + std::mem::size_of::<Table>())
            .sum()
    }

    fn tables(&self) -> impl Iterator<Item = &Table> + '_ {
        self.shards.iter().flatten().map(|p| {
            // SAFETY: as in `get`: the table outlives `&self`.
            unsafe { p.as_ref() }
        })
    }

    /// All `(name, payload)` entries; writer-side use (zone removal).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.tables().flat_map(Table::iter)
    }
}

impl Snapshot {
    /// Drops a retired snapshot (freeing what it owns, exactly as `drop`
    /// does) but hands back its pointer table for reuse: allocating a fresh
    /// 512 KiB table per publish cost more in page zeroing than the copy.
    /// Returns `None` (and simply drops) for a snapshot never replaced.
    pub(crate) fn recycle(mut self) -> Option<Box<[Option<NonNull<Table>>]>> {
        self.retirement.get()?;
        // With its table emptied, `drop` frees only the `replaced` list and
        // the successor chain: the shards it points to are not its own.
        Some(std::mem::take(&mut self.shards))
    }
}

/// Frees a table that no snapshot uses any more.
///
/// # Safety
/// `table` came from `Box::into_raw` and no live snapshot refers to it.
unsafe fn free_table(table: NonNull<Table>) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { Box::from_raw(table.as_ptr()) });
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let Some(retirement) = self.retirement.take() else {
            // Never replaced: the last user of all its shards.
            for table in self.shards.iter().flatten() {
                // SAFETY: no newer snapshot exists, and every older one holds
                // an `Arc` to this one, so none is alive: nobody else uses it.
                unsafe { free_table(*table) };
            }
            return;
        };
        // Walk the successor chain iteratively (no recursion on long chains).
        let mut retirement = retirement;
        loop {
            for table in retirement.replaced.drain(..) {
                // SAFETY: `replaced` lists the shards that this snapshot used
                // and its successor does not; older snapshots are all gone
                // (each keeps this one alive), so nobody uses them.
                unsafe { free_table(table) };
            }
            match Arc::try_unwrap(retirement.successor) {
                // Someone else still holds the successor: it is freed later.
                Err(_) => return,
                Ok(mut next) => match next.retirement.take() {
                    // `next` drops here as a never-replaced snapshot.
                    None => return,
                    Some(r) => {
                        // Its shards are handled by this loop: empty them so
                        // its own `drop` frees nothing twice.
                        next.shards = Box::default();
                        retirement = r;
                    }
                },
            }
        }
    }
}

/// The publication point shared by the writer and all workers.
#[derive(Clone)]
pub struct Shared {
    current: Arc<ArcSwap<Snapshot>>,
}

impl Shared {
    /// One atomic load; call once per receive batch and pass the view to
    /// every [`crate::handle::handle`] call of the batch.
    #[inline]
    pub fn load(&self) -> SnapshotView {
        SnapshotView {
            guard: self.current.load(),
        }
    }
}

/// A loaded snapshot, held for the duration of a batch. Dereferences to
/// [`Snapshot`]. Hold it briefly: the writer frees old snapshots only after
/// every view of them is dropped.
pub struct SnapshotView {
    guard: arc_swap::Guard<Arc<Snapshot>>,
}

impl std::ops::Deref for SnapshotView {
    type Target = Snapshot;

    #[inline]
    fn deref(&self) -> &Snapshot {
        &self.guard
    }
}
