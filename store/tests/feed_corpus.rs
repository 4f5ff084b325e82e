//! Replays the `feed_frame` fuzz corpus (`fuzz/corpus/feed_frame/`) through
//! the same checks as the fuzz target, so CI on stable Rust guards the
//! decoder: no panic, and decode-then-encode gives back the same bytes.
//! Then mutates the seeds (a fixed-seed PRNG: bit flips, truncations,
//! insertions, splices) for a few hundred thousand more inputs.

use std::path::PathBuf;

use ddserver_store::feed::{FrameError, decode_frame, encode_frame};

/// The fuzz target's body.
fn check(data: &[u8]) -> Vec<Result<usize, FrameError>> {
    let mut outcomes = Vec::new();
    let mut rest = data;
    loop {
        match decode_frame(rest) {
            Ok(Some((message, used))) => {
                let mut again = Vec::new();
                encode_frame(&message, &mut again).expect("a decoded message encodes");
                assert_eq!(
                    &again[..],
                    &rest[..used],
                    "decode then encode is the identity"
                );
                outcomes.push(Ok(used));
                rest = &rest[used..];
            }
            Ok(None) => return outcomes,
            Err(e) => {
                outcomes.push(Err(e));
                return outcomes;
            }
        }
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/feed_frame");
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
    assert!(seeds.len() >= 10, "the corpus is committed");
    seeds
}

#[test]
fn corpus_replays_with_the_expected_outcomes() {
    for (name, bytes) in corpus() {
        let outcomes = check(&bytes);
        let frames = outcomes.iter().filter(|o| o.is_ok()).count();
        let error = outcomes.iter().find_map(|o| o.clone().err());
        match name.as_str() {
            "hello" | "heartbeat" | "changes" | "changes-idn" | "changes-empty" | "commit"
            | "commit-empty" => {
                assert_eq!((frames, error), (1, None), "{name}")
            }
            "stream" => assert_eq!((frames, error), (3, None), "{name}"),
            "partial" => assert_eq!((frames, error), (1, None), "{name}: then needs more"),
            "bad-version" => assert_eq!(error, Some(FrameError::UnsupportedVersion(2))),
            "bad-type" => assert_eq!(error, Some(FrameError::UnknownType(9))),
            "bad-kind" => assert_eq!(error, Some(FrameError::UnknownKind(99))),
            "bad-name" => assert_eq!(error, Some(FrameError::BadName)),
            "bad-state" => assert_eq!(error, Some(FrameError::BadHostState)),
            "huge-count" => assert!(matches!(error, Some(FrameError::Truncated(_)))),
            "huge-length" => assert_eq!(error, Some(FrameError::BadLength(0xffff_ffff))),
            "trailing" => assert_eq!(error, Some(FrameError::TrailingBytes(1))),
            // Inputs the fuzzer found and saved: only "no panic" applies.
            _ => {}
        }
    }
}

#[test]
fn mutated_corpus_never_panics() {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b)| b).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: deterministic, so a failure reproduces.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..300_000 {
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
