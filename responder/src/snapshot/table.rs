//! A compact, immutable hash index over one byte arena: the storage of one
//! shard (and of the zone table).
//!
//! Per name it costs one `u64` slot (at most 3/4 full) plus the arena entry
//! `name_len:u8 name payload_len:u16le payload`: no allocation per name.
//! Lookups are open addressing with linear probing on a keyed hash
//! ([`NameHasher`]), so crafted names cannot force long probe chains.
//!
//! A slot holds 16 more bits of the name's hash beside the arena offset (the
//! tag), so a probe passes the other names of its chain without reading
//! their arena entries: at 1M names each such read was a cache miss of its
//! own (a successful search at 3/4 load probes 2.5 slots on average, an
//! unsuccessful one 8.5), and a missing name (NXDOMAIN) paid them all. The
//! tag costs 4 bytes per slot, about 7-9 bytes per name.
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
    /// `EMPTY`, `TOMBSTONE`, or `tag | (arena offset + 1)` (see [`slot`]).
    /// Length is a power of two (or 0).
    slots: Box<[u64]>,
    arena: Box<[u8]>,
    /// Live entries.
    len: u32,
    /// Slots holding `TOMBSTONE`.
    tombstones: u32,
    /// Arena octets of replaced or removed entries.
    dead: u32,
}

const EMPTY: u64 = 0;
/// A removed entry: lookups probe past it, inserts may reuse it. Above every
/// tag, so no live slot equals it.
const TOMBSTONE: u64 = 1 << 63;
/// Where the tag sits in a slot: bits 32-47.
const TAG_MASK: u64 = 0xFFFF << 32;

/// The tag bits of `hash` in slot position: hash bits 16-31, which neither
/// the shard number (bits 0-15) nor the slot index (bits 32 and up) uses.
#[inline]
fn tag(hash: u64) -> u64 {
    (hash << 16) & TAG_MASK
}

/// The slot value for the entry at arena offset + 1 `at` of a name hashing
/// to `hash`.
#[inline]
fn slot(hash: u64, at: u32) -> u64 {
    tag(hash) | u64::from(at)
}

/// The arena offset a live slot points at.
#[inline]
fn offset(slot: u64) -> usize {
    (slot as u32 - 1) as usize
}

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

/// Where `name` is in `slots` over `arena`, if present. Only slots whose
/// tag matches have their entry read.
#[inline]
fn find_slot(slots: &[u64], arena: &[u8], hash: u64, name: &[u8]) -> Option<usize> {
    let mask = slots.len() - 1;
    let tag = tag(hash);
    let mut i = slot_of(hash) & mask;
    loop {
        match slots[i] {
            EMPTY => return None,
            TOMBSTONE => {}
            s if s & TAG_MASK == tag => {
                let (entry_name, _) = entry_at(arena, offset(s));
                if entry_name == name {
                    return Some(i);
                }
            }
            _ => {}
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
        let mut slots = vec![EMPTY; capacity].into_boxed_slice();
        let mask = capacity - 1;
        for &(name, hash, payload) in entries {
            let at = push_entry(&mut arena, name, payload);
            let mut i = slot_of(hash) & mask;
            while slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = slot(hash, at);
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
                let at = offset(slots[i]);
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
            let at = push_entry(&mut arena, name, payload);
            let mut i = slot_of(hash) & mask;
            while slots[i] != EMPTY && slots[i] != TOMBSTONE {
                i = (i + 1) & mask;
            }
            if slots[i] == TOMBSTONE {
                tombstones -= 1;
            }
            slots[i] = slot(hash, at);
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
        Some(entry_at(&self.arena, offset(self.slots[i])).1)
    }

    /// The slot where a lookup of `hash` starts (`None`: empty table).
    /// For [`super::prefetch`]: a hint, read before the real lookup.
    #[inline]
    pub(super) fn first_slot(&self, hash: u64) -> Option<&u64> {
        self.slots
            .get(slot_of(hash) & self.slots.len().wrapping_sub(1))
    }

    /// Where the entry a lookup of `hash` will compare first starts: the
    /// first slot of its probe whose tag matches, looking at most as far as
    /// the first slot's cache line reaches. For prefetching only (after
    /// [`Self::first_slot`]'s line was requested): the pointer is never
    /// read here.
    #[inline]
    pub(super) fn entry_hint(&self, hash: u64) -> Option<*const u8> {
        let mask = self.slots.len().checked_sub(1)?;
        let tag = tag(hash);
        let mut i = slot_of(hash) & mask;
        for _ in 0..8 {
            match self.slots[i] {
                EMPTY => return None,
                s if s != TOMBSTONE && s & TAG_MASK == tag => {
                    return Some(self.arena.as_ptr().wrapping_add(offset(s)));
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// All live `(name, payload)` entries, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.slots
            .iter()
            .filter(|&&slot| slot != EMPTY && slot != TOMBSTONE)
            .map(|&slot| entry_at(&self.arena, offset(slot)))
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Heap bytes owned by this table.
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of_val(&*self.slots) + self.arena.len()
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

    /// Hashes are chosen by hand so that every name starts its probe at the
    /// same slot: half of them share one tag (so their entries must be
    /// compared by name), the rest have tags of their own. Every name is
    /// found, a missing name with a shared or unshared tag is not, and the
    /// prefetch hint points at the entry the lookup compares first.
    #[test]
    fn colliding_probes_and_tags() {
        let names: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("\x03c{i:02}\x00").into_bytes())
            .collect();
        // Same slot index (bits 32+), tag (bits 16-31) 7 for even names and
        // 100+i for odd ones, shard bits (0-15) anything.
        let hash_of = |i: usize| -> u64 {
            let tag = if i.is_multiple_of(2) {
                7
            } else {
                100 + i as u64
            };
            (5 << 32) | (tag << 16) | i as u64
        };
        let payloads: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 3]).collect();
        let entries: Vec<(&[u8], u64, &[u8])> = (0..10)
            .map(|i| (names[i].as_slice(), hash_of(i), payloads[i].as_slice()))
            .collect();
        let t = Table::build(&entries);
        for (i, (n, h, p)) in entries.iter().enumerate() {
            assert_eq!(t.get(*h, n), Some(*p), "name {i}");
        }
        // Missing: a shared tag (compares names), a tag of its own (never
        // reads an entry), a tag of another name (compares, differs).
        assert_eq!(t.get(hash_of(0), b"\x03zzz\x00"), None);
        assert_eq!(t.get((5 << 32) | (999 << 16), b"\x03zzz\x00"), None);
        assert_eq!(t.get(hash_of(1), &names[3]), None);
        // The hint is the first slot of the probe with a matching tag.
        let first_even = t.entry_hint(hash_of(0)).expect("tag 7 in the probe");
        let first = t.first_slot(hash_of(0)).expect("non-empty table");
        assert_eq!(first_even, t.arena.as_ptr().wrapping_add(offset(*first)));
        assert_eq!(t.entry_hint((5 << 32) | (999 << 16)), None);
        // Patching keeps tags: overwrite, remove and re-add colliders.
        let updates: Vec<TableUpdate<'_>> = vec![
            (&names[2], hash_of(2), Some(&b"XYZ"[..])),
            (&names[4], hash_of(4), None),
            (&names[5], hash_of(5), Some(&b"longer"[..])),
        ];
        let p = t.patched(&updates).expect("small change patches");
        assert_eq!(p.get(hash_of(2), &names[2]), Some(&b"XYZ"[..]));
        assert_eq!(p.get(hash_of(4), &names[4]), None);
        assert_eq!(p.get(hash_of(5), &names[5]), Some(&b"longer"[..]));
        for i in [0, 1, 3, 6, 7, 8, 9] {
            assert_eq!(p.get(hash_of(i), &names[i]), Some(&payloads[i][..]));
        }
        assert_eq!(p.iter().count(), 9);
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
