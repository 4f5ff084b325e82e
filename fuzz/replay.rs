//! For the tests that replay a fuzz corpus on stable Rust (included with
//! `#[path]` by `store/tests/feed_corpus.rs` and
//! `updater/tests/request_corpus.rs`): the committed seeds, and mutants of
//! them (bit flips, random bytes, truncations, insertions and splices of
//! other seeds) from a fixed-seed PRNG so that a failure reproduces.

use std::path::PathBuf;

/// The seeds in `fuzz/corpus/TARGET/`, by file name, sorted; at least
/// `min` of them.
pub(crate) fn corpus(target: &str, min: usize) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= min,
        "the corpus at {} is committed",
        dir.display()
    );
    seeds
}

/// Calls `check` on `count` mutants of `seeds`, each one to four
/// mutations away from a seed.
pub(crate) fn mutants(seeds: &[Vec<u8>], count: usize, mut check: impl FnMut(&[u8])) {
    assert!(!seeds.is_empty(), "no seeds");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..count {
        let mut input = seeds[next() as usize % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if input.is_empty() {
                0
            } else {
                next() as usize % input.len()
            };
            match next() % 5 {
                0 if !input.is_empty() => input[at] ^= 1 << (next() % 8),
                1 if !input.is_empty() => input[at] = next() as u8,
                2 => input.truncate(at),
                3 => input.insert(at, next() as u8),
                _ => {
                    let other = &seeds[next() as usize % seeds.len()];
                    let from = next() as usize % (other.len() + 1);
                    input.splice(at..at, other[from..].iter().copied());
                }
            }
        }
        check(&input);
    }
}
