//! Host payloads decided by the batch being built, stored compactly.
//!
//! A bulk load (a million hosts at start, or a reload) used to put every
//! name into the writer's general overlay, a `HashMap<Vec<u8>, Vec<u8>>`:
//! two allocations per name, a SipHash-free but still full hash of each name
//! per insert, and a map of a million boxed keys to walk at publish. A
//! profile of the 1M-name start showed that overlay, its lookups and the
//! page faults of its growth as the largest costs after the database read.
//!
//! Here a staged entry is appended to a byte arena in the shard table's
//! own entry format (`name_len name payload_len payload`), and indexed by
//! the writer's keyed name hash, which the publish reuses to pick the shard
//! and the slot: the name is hashed once. [`Staged::into_shard_order`] hands
//! the live entries to the publish sorted by shard (a counting sort), so
//! each shard is built once from a contiguous run.
//!
//! The arena is a list of chunks that are never reallocated: one arena
//! grown by doubling copied (and page-faulted in) everything staged so far
//! at each growth, 11% of the 1M-name load's CPU (profile, bench/README.md).
//!
//! The writer keeps every name in at most one of its overlay and this store
//! (see `SnapshotWriter::put`), so the two never disagree.

use super::SHARD_COUNT;
use super::table::{entry_at, write_entry};
use crate::hash_index::HashIndex;

/// See the module documentation.
#[derive(Default)]
pub(super) struct Staged {
    arena: Arena,
    /// Name hash → position of the live entry in `arena`.
    index: HashIndex,
}

/// Largest arena chunk: `CHUNK_BITS` bits of an entry's position are its
/// offset in the chunk, the rest the chunk's number. Every entry fits
/// (at most 1 + 255 + 2 + 65535 octets).
const CHUNK_BITS: u32 = 20;
const MAX_CHUNK: usize = 1 << CHUNK_BITS;
/// First chunk: a batch of a few changes (the change feed) stays small;
/// each further chunk doubles, up to `MAX_CHUNK`.
const FIRST_CHUNK: usize = 4096;

/// Entries in chunks that never move once written.
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
}

impl Arena {
    /// Appends an entry; returns its position.
    fn push(&mut self, name: &[u8], payload: &[u8]) -> usize {
        let len = 3 + name.len() + payload.len();
        let room = self
            .chunks
            .last()
            .map_or(0, |chunk| chunk.capacity() - chunk.len());
        if room < len {
            let next = self
                .chunks
                .last()
                .map_or(FIRST_CHUNK, |chunk| (chunk.capacity() * 2).min(MAX_CHUNK));
            self.chunks.push(Vec::with_capacity(next.max(len)));
        }
        let number = self.chunks.len() - 1;
        let chunk = &mut self.chunks[number];
        let offset = chunk.len();
        write_entry(chunk, name, payload);
        (number << CHUNK_BITS) | offset
    }

    fn entry(&self, at: usize) -> (&[u8], &[u8]) {
        entry_at(&self.chunks[at >> CHUNK_BITS], at & (MAX_CHUNK - 1))
    }
}

/// What [`Staged::upsert`] found at the name's hash.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Upserted {
    /// Nothing: `name` is new here.
    New,
    /// `name` itself, replaced; its former payload's first octet (the kind).
    Replaced(u8),
    /// Another name with the same 64-bit hash (never seen in practice,
    /// but possible), displaced: its name and payload, for the caller to
    /// keep elsewhere.
    Displaced(Vec<u8>, Vec<u8>),
}

/// Live staged entries in shard order, with the arena they point into.
pub(super) struct ShardOrder {
    arena: Arena,
    /// `(hash, position)`, sorted by `hash % SHARD_COUNT`.
    entries: Vec<(u64, usize)>,
}

impl Staged {
    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Asks for the memory [`Self::upsert`] of `hash` will probe first: a
    /// load renders and hashes a few names ahead, so that their probes find
    /// their cache lines already on the way.
    pub(super) fn prefetch(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Room for `names` more entries in the index (the arena needs none).
    pub(super) fn reserve(&mut self, names: usize) {
        self.index.reserve(names);
    }

    pub(super) fn get(&self, hash: u64, name: &[u8]) -> Option<&[u8]> {
        let at = self.index.get(hash)?;
        let (stored, payload) = self.arena.entry(at);
        (stored == name).then_some(payload)
    }

    /// Forgets `name` (its arena bytes stay until the publish).
    pub(super) fn remove(&mut self, hash: u64, name: &[u8]) {
        if self.get(hash, name).is_some() {
            self.index.remove(hash);
        }
    }

    /// Stores `payload` for `name`, replacing what it had, and says what
    /// was there: one probe of the index where a lookup and an insert took
    /// two (at a million names, each probe is a cache miss).
    pub(super) fn upsert(&mut self, hash: u64, name: &[u8], payload: &[u8]) -> Upserted {
        let at = self.arena.push(name, payload);
        match self.index.insert(hash, at) {
            None => Upserted::New,
            Some(old) => {
                let (old_name, old_payload) = self.arena.entry(old);
                if old_name == name {
                    // Payloads always begin with their kind octet.
                    Upserted::Replaced(old_payload.first().copied().unwrap_or_default())
                } else {
                    Upserted::Displaced(old_name.to_vec(), old_payload.to_vec())
                }
            }
        }
    }

    /// Every live `(name, payload)` entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.index.entries().map(|(_, at)| self.arena.entry(at))
    }

    /// Empties the store, handing its live entries over in shard order.
    pub(super) fn take_in_shard_order(&mut self) -> ShardOrder {
        let Staged { arena, index } = std::mem::take(self);
        let shard = |hash: u64| hash as usize & (SHARD_COUNT - 1);
        // Counting sort: one pass to count, one to place.
        let mut starts = vec![0usize; SHARD_COUNT + 1];
        for (hash, _) in index.entries() {
            starts[shard(hash) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut entries = vec![(0u64, 0usize); index.len()];
        for (hash, at) in index.entries() {
            let next = &mut starts[shard(hash)];
            entries[*next] = (hash, at);
            *next += 1;
        }
        ShardOrder { arena, entries }
    }
}

impl ShardOrder {
    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The runs of entries of one shard each: `(shard, [(name, hash, payload)])`.
    pub(super) fn runs(&self) -> impl Iterator<Item = (usize, Run<'_>)> + '_ {
        let mut rest = &self.entries[..];
        std::iter::from_fn(move || {
            let &(first, _) = rest.first()?;
            let shard = first as usize & (SHARD_COUNT - 1);
            let end = rest
                .iter()
                .position(|&(h, _)| h as usize & (SHARD_COUNT - 1) != shard)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            rest = tail;
            Some((
                shard,
                Run {
                    arena: &self.arena,
                    entries: run,
                },
            ))
        })
    }
}

/// The staged entries of one shard.
pub(super) struct Run<'a> {
    arena: &'a Arena,
    entries: &'a [(u64, usize)],
}

impl<'a> Run<'a> {
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'a [u8], u64, &'a [u8])> + 'a {
        let arena = self.arena;
        self.entries.iter().map(move |&(hash, at)| {
            let (name, payload) = arena.entry(at);
            (name, hash, payload)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::table::NameHasher;

    #[test]
    fn insert_replace_remove_and_shard_order() {
        let h = NameHasher::random();
        let mut s = Staged::default();
        let names: Vec<Vec<u8>> = (0..5000)
            .map(|i| format!("\x05n{i:04}\x00").into_bytes())
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(s.upsert(h.hash(n), n, &[i as u8]), Upserted::New);
        }
        // Replacing keeps one live entry with the new payload.
        assert_eq!(
            s.upsert(h.hash(&names[7]), &names[7], b"new"),
            Upserted::Replaced(7)
        );
        assert_eq!(s.get(h.hash(&names[7]), &names[7]), Some(&b"new"[..]));
        s.remove(h.hash(&names[8]), &names[8]);
        assert_eq!(s.get(h.hash(&names[8]), &names[8]), None);
        // Removing a name that is not there (same hash slot or not) is harmless.
        s.remove(h.hash(b"\x01x\x00"), b"\x01x\x00");
        assert_eq!(s.len(), 4999);

        // A forced hash collision displaces the older name.
        let hash = h.hash(&names[9]);
        let displaced = s.upsert(hash, b"\x05other\x00", b"o");
        assert_eq!(displaced, Upserted::Displaced(names[9].clone(), vec![9u8]));

        let order = s.take_in_shard_order();
        assert!(s.is_empty());
        let mut seen = 0;
        let mut last_shard = None;
        for (shard, run) in order.runs() {
            assert!(
                last_shard < Some(shard),
                "runs come in shard order, once each"
            );
            last_shard = Some(shard);
            for (name, hash, _) in run.iter() {
                assert_eq!(hash as usize & (SHARD_COUNT - 1), shard);
                if name != b"\x05other\x00" {
                    assert_eq!(h.hash(name), hash);
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 4999);
    }

    #[test]
    fn entries_of_every_size_cross_chunks_intact() {
        let h = NameHasher::random();
        let mut s = Staged::default();
        // Payloads from empty to the largest a table takes (u16 length),
        // so chunks fill up, grow and start anew.
        let sizes = [0usize, 1, 60, 4000, 65535, 100, 65535, 65535, 7];
        let names: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("\x05n{i:04}\x00").into_bytes())
            .collect();
        let payload = |i: usize| vec![(i % 251) as u8; sizes[i % sizes.len()]];
        for (i, n) in names.iter().enumerate() {
            s.upsert(h.hash(n), n, &payload(i));
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(s.get(h.hash(n), n), Some(&payload(i)[..]), "entry {i}");
        }
        assert!(s.arena.chunks.iter().all(|c| c.capacity() <= MAX_CHUNK));
        assert!(s.arena.chunks.len() > 1);
    }
}
