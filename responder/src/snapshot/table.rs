//! A compact, immutable hash index over one byte arena: the storage of one
//! shard (and of the zone table).
//!
//! Per name it costs one `u32` slot (at most 3/4 full) plus the arena entry
//! `name_len:u8 name payload_len:u16le payload`: no allocation per name.
//! Lookups are open addressing with linear probing on a keyed hash
//! ([`NameHasher`]), so crafted names cannot force long probe chains.
//!
//! Built once on the writer thread, then only read. Never mutated in place:
//! a change builds a new table (copy-on-write of one shard).

use std::hash::{BuildHasher, Hasher};

/// Keyed hash of lower-case wire names, seeded from OS randomness once per
/// writer (foldhash's quality variant; the seed is secret to the process).
#[derive(Clone, Debug)]
pub(crate) struct NameHasher {
    state: foldhash::quality::SeedableRandomState,
}

impl NameHasher {
    pub(crate) fn random() -> Self {
        let mut seed = [0u8; 8];
        // If the OS has no randomness to give we still run, with foldhash's
        // own per-process random state (address and time based).
        let state = match getrandom::fill(&mut seed) {
            Ok(()) => foldhash::quality::SeedableRandomState::with_seed(
                u64::from_le_bytes(seed),
                foldhash::SharedSeed::global_random(),
            ),
            Err(_) => foldhash::quality::SeedableRandomState::random(),
        };
        Self { state }
    }

    #[inline]
    pub(crate) fn hash(&self, name: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        h.write(name);
        h.finish()
    }
}

/// See the module documentation.
pub(crate) struct Table {
    /// 0 = empty, otherwise arena offset + 1. Length is a power of two (or 0).
    slots: Box<[u32]>,
    arena: Box<[u8]>,
    len: u32,
}

impl Table {
    pub(crate) fn empty() -> Self {
        Self {
            slots: Box::default(),
            arena: Box::default(),
            len: 0,
        }
    }

    /// Builds a table from `(name, hash, payload)` entries with distinct names.
    pub(crate) fn build(entries: &[(&[u8], u64, &[u8])]) -> Self {
        if entries.is_empty() {
            return Self::empty();
        }
        let arena_len: usize = entries.iter().map(|(n, _, p)| 3 + n.len() + p.len()).sum();
        let mut arena = Vec::with_capacity(arena_len);
        // Load factor at most 3/4 keeps linear probing short.
        let capacity = (entries.len() * 4).div_ceil(3).next_power_of_two().max(2);
        let mut slots = vec![0u32; capacity].into_boxed_slice();
        let mask = capacity - 1;
        for &(name, hash, payload) in entries {
            let offset = arena.len();
            arena.push(name.len() as u8);
            arena.extend_from_slice(name);
            arena.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            arena.extend_from_slice(payload);
            let mut i = slot_of(hash) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = u32::try_from(offset + 1).expect("shard arena below 4 GiB");
        }
        Self {
            slots,
            arena: arena.into_boxed_slice(),
            len: entries.len() as u32,
        }
    }

    /// The payload stored for `name` (lower-case wire form) with hash `hash`.
    #[inline]
    pub(crate) fn get(&self, hash: u64, name: &[u8]) -> Option<&[u8]> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = slot_of(hash) & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            let at = (slot - 1) as usize;
            let (entry_name, payload) = self.entry_at(at);
            if entry_name == name {
                return Some(payload);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn entry_at(&self, at: usize) -> (&[u8], &[u8]) {
        let name_len = usize::from(self.arena[at]);
        let name = &self.arena[at + 1..at + 1 + name_len];
        let p = at + 1 + name_len;
        let payload_len = usize::from(u16::from_le_bytes([self.arena[p], self.arena[p + 1]]));
        (name, &self.arena[p + 2..p + 2 + payload_len])
    }

    /// All `(name, payload)` entries, in arena order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.arena.len() {
                return None;
            }
            let (name, payload) = self.entry_at(at);
            at += 3 + name.len() + payload.len();
            Some((name, payload))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Heap bytes owned by this table.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 4 + self.arena.len()
    }
}

/// The slot index uses the high half of the hash; the shard number uses the
/// low bits, so the two are independent.
#[inline]
fn slot_of(hash: u64) -> usize {
    (hash >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_get_iter() {
        let h = NameHasher::random();
        let names: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("\x04n{i:03}\x00").into_bytes())
            .collect();
        let payloads: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; i % 7]).collect();
        let entries: Vec<(&[u8], u64, &[u8])> = names
            .iter()
            .zip(&payloads)
            .map(|(n, p)| (n.as_slice(), h.hash(n), p.as_slice()))
            .collect();
        let t = Table::build(&entries);
        assert_eq!(t.len(), 100);
        for (n, _, p) in &entries {
            assert_eq!(t.get(h.hash(n), n), Some(*p));
        }
        assert_eq!(t.get(h.hash(b"\x01x\x00"), b"\x01x\x00"), None);
        assert_eq!(t.iter().count(), 100);
        assert_eq!(Table::empty().get(1, b"\x00"), None);
    }
}
