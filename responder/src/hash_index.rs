//! A hash → position index whose probes can be started ahead of time.
//!
//! Bulk loads (the snapshot writer's staged hosts, the zone loader's
//! splitter) insert a million names one after another; in a general hash
//! map each of those probes is a cache miss waited for in turn. Here the
//! caller hashes a few names ahead and [`HashIndex::prefetch`]es their
//! slots, so the misses overlap. Keys are full 64-bit keyed hashes: two
//! names with the same hash are the caller's to tell apart.

/// A slot holds `(hash, code)`: code 0 is an empty slot, so a new table
/// is all zeros and is allocated zeroed, which the allocator can serve
/// from fresh pages without writing them: a table reserved far larger than
/// it gets (a zone's id range is only an upper bound of its records)
/// faults in the pages its entries land on, not all of them. `GONE` marks
/// a removed entry; any other code is an entry's position plus one.
const EMPTY: usize = 0;
const GONE: usize = usize::MAX;

/// Name hash → position: linear probing over a power-of-two array of
/// `(hash, position)` slots, at most three quarters full.
///
/// Not a `HashMap<u64, usize>`: at a million names every probe of a
/// start-up load is a cache miss (the largest single cost of the 1M-name
/// load's profile, bench/README.md), and only a table whose slots we can
/// address can be asked for them ahead of time ([`HashIndex::prefetch`]).
/// The keys are already keyed, uniform hashes, so their low bits pick the
/// slot as they are.
#[derive(Default)]
pub struct HashIndex {
    slots: Vec<(u64, usize)>,
    /// Live entries.
    len: usize,
    /// Live entries and removal marks (what fills the probe sequences).
    used: usize,
}

fn live(code: usize) -> Option<usize> {
    (code != EMPTY && code != GONE).then(|| code - 1)
}

impl HashIndex {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Room for `additional` more entries without growing.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.used.saturating_add(additional);
        if needed.saturating_mul(4) > self.slots.len().saturating_mul(3) {
            // As full as a `HashMap` of the same entries would be (one
            // power of two less than a half-full table: at 10M names a
            // quarter of a GiB less to fault in), and probes stay short.
            self.resize(needed.saturating_mul(4) / 3 + 1);
        }
    }

    fn resize(&mut self, at_least: usize) {
        let slots = at_least.max(16).next_power_of_two();
        let old = std::mem::replace(&mut self.slots, vec![(0, EMPTY); slots]);
        self.used = self.len;
        let mask = self.mask();
        for (hash, code) in old {
            if live(code).is_some() {
                let mut i = hash as usize & mask;
                while self.slots[i].1 != EMPTY {
                    i = (i + 1) & mask;
                }
                self.slots[i] = (hash, code);
            }
        }
    }

    /// Asks for the cache line of `hash`'s first slot (a hint).
    pub fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            crate::snapshot::prefetch::prefetch(&raw const self.slots[hash as usize & self.mask()]);
        }
    }

    /// The slot holding `hash`, if any.
    fn find(&self, hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            match self.slots[i] {
                (_, EMPTY) => return None,
                (h, code) if h == hash && code != GONE => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The position stored for `hash`.
    pub fn get(&self, hash: u64) -> Option<usize> {
        self.find(hash).and_then(|i| live(self.slots[i].1))
    }

    /// Points `hash` at `at`; returns the position it pointed at before.
    pub fn insert(&mut self, hash: u64, at: usize) -> Option<usize> {
        // `at + 1` is a code; `usize::MAX - 1` is no position anything
        // holds (an arena or a vector that large cannot exist).
        let code = at.saturating_add(1).min(GONE - 1);
        self.reserve(1);
        let mask = self.mask();
        let mut i = hash as usize & mask;
        let mut free = None;
        loop {
            match self.slots[i] {
                (_, EMPTY) => break,
                (_, GONE) => {
                    free.get_or_insert(i);
                }
                (h, old) if h == hash => {
                    self.slots[i].1 = code;
                    return live(old);
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
        match free {
            Some(gone) => self.slots[gone] = (hash, code),
            None => {
                self.slots[i] = (hash, code);
                self.used += 1;
            }
        }
        self.len += 1;
        None
    }

    pub fn remove(&mut self, hash: u64) {
        if let Some(i) = self.find(hash) {
            self.slots[i].1 = GONE;
            self.len -= 1;
        }
    }

    /// Live `(hash, position)` entries, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.slots
            .iter()
            .filter_map(|&(hash, code)| live(code).map(|at| (hash, at)))
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes that share their first slot probe past each other, past
    /// removal marks, and keep their entries through growth.
    #[test]
    fn index_probes_past_neighbours_and_removal_marks() {
        let mut index = HashIndex::default();
        // Same low 12 bits: one probe sequence for all of them.
        let hash = |i: u64| (i << 32) | 0x0abc;
        for i in 0..40 {
            assert_eq!(index.insert(hash(i), i as usize), None);
        }
        for i in (0..40).step_by(3) {
            index.remove(hash(i));
        }
        index.remove(hash(1000));
        for i in 0..40 {
            let want = (i % 3 != 0).then_some(i as usize);
            assert_eq!(index.get(hash(i)), want, "entry {i}");
        }
        // Re-inserting reuses removal marks; replacing says what was there.
        assert_eq!(index.insert(hash(3), 300), None);
        assert_eq!(index.insert(hash(4), 400), Some(4));
        let used = index.used;
        assert_eq!(index.insert(hash(6), 600), None);
        assert_eq!(index.used, used, "a removal mark was reused");
        // Position 0 is a position like any other.
        assert_eq!(index.insert(7, 0), None);
        assert_eq!(index.get(7), Some(0));
        index.remove(7);
        assert_eq!(index.get(7), None);
        // Growth keeps every live entry and drops the marks.
        index.reserve(10_000);
        assert_eq!(index.used, index.len);
        let mut live: Vec<(u64, usize)> = index.entries().collect();
        live.sort();
        let mut want: Vec<(u64, usize)> = (0..40)
            .filter(|i| i % 3 != 0 || [3, 6].contains(i))
            .map(|i| {
                (
                    hash(i),
                    [(3, 300), (4, 400), (6, 600)]
                        .iter()
                        .find(|p| p.0 == i)
                        .map_or(i as usize, |p| p.1),
                )
            })
            .collect();
        want.sort();
        assert_eq!(live, want);
    }
}
