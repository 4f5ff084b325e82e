//! A compact, immutable hash index over one byte arena: the storage of one
//! shard (and of the zone table).
//!
//! Per name it costs one `u32` slot (at most 3/4 full) plus the arena entry
//! `name_len:u8 name payload_len:u16le payload`: no allocation per name.
//! Lookups are open addressing with linear probing on a keyed hash
//! ([`NameHasher`]), so crafted names cannot force long probe chains.
//!
//! Built on the writer thread, then only read. Never mutated once published:
//! a change makes a new table (copy-on-write of one shard). The common
//! change, a host's address, is a copy of the slots and the arena with the
//! payload overwritten (same length); other changes append to the copied
//! arena and leave a tombstone, until dead space passes a quarter and the
//! table is rebuilt. So a change costs two `memcpy`s of one shard, not a
//! re-insertion of every name in it.

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
    /// `EMPTY`, `TOMBSTONE`, or arena offset + 1. Length is a power of two (or 0).
    slots: Box<[u32]>,
    arena: Box<[u8]>,
    /// Live entries.
    len: u32,
    /// Slots holding `TOMBSTONE`.
    tombstones: u32,
    /// Arena octets of replaced or removed entries.
    dead: u32,
}

const EMPTY: u32 = 0;
/// A removed entry: lookups probe past it, inserts may reuse it.
const TOMBSTONE: u32 = u32::MAX;

/// One change to a table: name, its hash, new payload (`None`: remove).
pub(crate) type TableUpdate<'a> = (&'a [u8], u64, Option<&'a [u8]>);

fn entry_len(name: &[u8], payload: &[u8]) -> usize {
    3 + name.len() + payload.len()
}

fn push_entry(arena: &mut Vec<u8>, name: &[u8], payload: &[u8]) -> u32 {
    let offset = arena.len();
    write_entry(arena, name, payload);
    u32::try_from(offset + 1).expect("shard arena below 4 GiB")
}

/// Appends one arena entry (`name_len name payload_len payload`).
pub(super) fn write_entry(arena: &mut Vec<u8>, name: &[u8], payload: &[u8]) {
    arena.push(name.len() as u8);
    arena.extend_from_slice(name);
    arena.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    arena.extend_from_slice(payload);
}

/// Where `name` is in `slots` over `arena`, if present.
#[inline]
fn find_slot(slots: &[u32], arena: &[u8], hash: u64, name: &[u8]) -> Option<usize> {
    let mask = slots.len() - 1;
    let mut i = slot_of(hash) & mask;
    loop {
        match slots[i] {
            EMPTY => return None,
            TOMBSTONE => {}
            slot => {
                let (entry_name, _) = entry_at(arena, (slot - 1) as usize);
                if entry_name == name {
                    return Some(i);
                }
            }
        }
        i = (i + 1) & mask;
    }
}

#[inline]
pub(super) fn entry_at(arena: &[u8], at: usize) -> (&[u8], &[u8]) {
    let name_len = usize::from(arena[at]);
    let name = &arena[at + 1..at + 1 + name_len];
    let p = at + 1 + name_len;
    let payload_len = usize::from(u16::from_le_bytes([arena[p], arena[p + 1]]));
    (name, &arena[p + 2..p + 2 + payload_len])
}

impl Table {
    pub(crate) fn empty() -> Self {
        Self {
            slots: Box::default(),
            arena: Box::default(),
            len: 0,
            tombstones: 0,
            dead: 0,
        }
    }

    /// Builds a table from `(name, hash, payload)` entries with distinct names.
    pub(crate) fn build(entries: &[(&[u8], u64, &[u8])]) -> Self {
        if entries.is_empty() {
            return Self::empty();
        }
        let arena_len: usize = entries.iter().map(|(n, _, p)| entry_len(n, p)).sum();
        let mut arena = Vec::with_capacity(arena_len);
        // Load factor at most 3/4 keeps linear probing short.
        let capacity = (entries.len() * 4).div_ceil(3).next_power_of_two().max(2);
        let mut slots = vec![0u32; capacity].into_boxed_slice();
        let mask = capacity - 1;
        for &(name, hash, payload) in entries {
            let slot = push_entry(&mut arena, name, payload);
            let mut i = slot_of(hash) & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = slot;
        }
        Self {
            slots,
            arena: arena.into_boxed_slice(),
            len: entries.len() as u32,
            tombstones: 0,
            dead: 0,
        }
    }

    /// A copy of this table with `updates` (distinct names) applied, or
    /// `None` when it should be rebuilt instead (too full, or a quarter of
    /// the arena dead).
    pub(crate) fn patched(&self, updates: &[TableUpdate<'_>]) -> Option<Self> {
        if self.slots.is_empty() {
            return None;
        }
        let extra: usize = updates
            .iter()
            .map(|(n, _, p)| p.map_or(0, |p| entry_len(n, p)))
            .sum();
        let mut arena = Vec::with_capacity(self.arena.len() + extra);
        arena.extend_from_slice(&self.arena);
        let mut slots = self.slots.clone();
        let (mut len, mut tombstones, mut dead) = (
            self.len as usize,
            self.tombstones as usize,
            self.dead as usize,
        );
        let mask = slots.len() - 1;
        for &(name, hash, payload) in updates {
            let found = find_slot(&slots, &arena, hash, name);
            if let Some(i) = found {
                let at = (slots[i] - 1) as usize;
                let (_, old) = entry_at(&arena, at);
                let old_len = old.len();
                if let Some(new) = payload
                    && new.len() == old_len
                {
                    // Same size (an address change): overwrite in the copy.
                    let start = at + 3 + name.len();
                    arena[start..start + old_len].copy_from_slice(new);
                    continue;
                }
                slots[i] = TOMBSTONE;
                tombstones += 1;
                dead += entry_len(name, old);
                len -= 1;
            }
            let Some(payload) = payload else { continue };
            // Never fill the last free slots: probing relies on an EMPTY
            // slot, and chains stay short (checked per insert, not once at
            // the end, so a batch of inserts cannot fill the table).
            if (len + tombstones + 1) * 4 > slots.len() * 3 {
                return None;
            }
            let slot = push_entry(&mut arena, name, payload);
            let mut i = slot_of(hash) & mask;
            while slots[i] != EMPTY && slots[i] != TOMBSTONE {
                i = (i + 1) & mask;
            }
            if slots[i] == TOMBSTONE {
                tombstones -= 1;
            }
            slots[i] = slot;
            len += 1;
        }
        // Keep the arena mostly live.
        if dead * 4 > arena.len() {
            return None;
        }
        Some(Self {
            slots,
            arena: arena.into_boxed_slice(),
            len: len as u32,
            tombstones: tombstones as u32,
            dead: dead as u32,
        })
    }

    /// The payload stored for `name` (lower-case wire form) with hash `hash`.
    #[inline]
    pub(crate) fn get(&self, hash: u64, name: &[u8]) -> Option<&[u8]> {
        if self.slots.is_empty() {
            return None;
        }
        let i = find_slot(&self.slots, &self.arena, hash, name)?;
        Some(entry_at(&self.arena, (self.slots[i] - 1) as usize).1)
    }

    /// The slot where a lookup of `hash` starts (`None`: empty table).
    /// For [`super::prefetch`]: a hint, read before the real lookup.
    #[inline]
    pub(super) fn first_slot(&self, hash: u64) -> Option<&u32> {
        self.slots
            .get(slot_of(hash) & self.slots.len().wrapping_sub(1))
    }

    /// Where the entry of a (non-empty, non-tombstone) slot value starts;
    /// for prefetching only, so it is not bounds-checked and never read.
    #[inline]
    pub(super) fn entry_ptr(&self, slot: u32) -> Option<*const u8> {
        (slot != EMPTY && slot != TOMBSTONE)
            .then(|| self.arena.as_ptr().wrapping_add((slot - 1) as usize))
    }

    /// All live `(name, payload)` entries, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.slots
            .iter()
            .filter(|&&slot| slot != EMPTY && slot != TOMBSTONE)
            .map(|&slot| entry_at(&self.arena, (slot - 1) as usize))
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

    #[test]
    fn patched_overwrites_appends_and_removes() {
        let h = NameHasher::random();
        let names: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("\x03n{i:02}\x00").into_bytes())
            .collect();
        let entries: Vec<(&[u8], u64, &[u8])> = names
            .iter()
            .map(|n| (n.as_slice(), h.hash(n), &b"AAAA"[..]))
            .collect();
        let t = Table::build(&entries);
        let new_name = b"\x03new\x00".to_vec();
        let updates: Vec<TableUpdate<'_>> = vec![
            (&names[0], h.hash(&names[0]), Some(&b"BBBB"[..])), // same size
            (&names[1], h.hash(&names[1]), Some(&b"CC"[..])),   // other size
            (&names[2], h.hash(&names[2]), None),               // removed
            (&new_name, h.hash(&new_name), Some(&b"DDDDDD"[..])), // new
        ];
        let p = t.patched(&updates).expect("small change patches");
        assert_eq!(p.get(h.hash(&names[0]), &names[0]), Some(&b"BBBB"[..]));
        assert_eq!(p.get(h.hash(&names[1]), &names[1]), Some(&b"CC"[..]));
        assert_eq!(p.get(h.hash(&names[2]), &names[2]), None);
        assert_eq!(p.get(h.hash(&new_name), &new_name), Some(&b"DDDDDD"[..]));
        assert_eq!(p.get(h.hash(&names[3]), &names[3]), Some(&b"AAAA"[..]));
        assert_eq!(p.len(), 40);
        assert_eq!(p.iter().count(), 40);
        // The original is untouched (copy-on-write).
        assert_eq!(t.get(h.hash(&names[0]), &names[0]), Some(&b"AAAA"[..]));
        // Many inserts into a small table ask for a rebuild (it must grow)
        // instead of filling every slot.
        let more: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("\x03m{i:02}\x00").into_bytes())
            .collect();
        let inserts: Vec<TableUpdate<'_>> = more
            .iter()
            .map(|n| (n.as_slice(), h.hash(n), Some(&b"x"[..])))
            .collect();
        assert!(t.patched(&inserts).is_none());
        let small = Table::build(&entries[..1]);
        assert!(small.patched(&inserts[..3]).is_none());
        // Removing most names asks for a rebuild (dead space).
        let removals: Vec<TableUpdate<'_>> = names[..30]
            .iter()
            .map(|n| (n.as_slice(), h.hash(n), None))
            .collect();
        assert!(t.patched(&removals).is_none());
    }
}
