//! Replays the `feed_frame` fuzz corpus (`fuzz/corpus/feed_frame/`) through
//! the same checks as the fuzz target, so CI on stable Rust guards the
//! decoder: no panic, and decode-then-encode gives back the same bytes.
//! Then mutates the seeds (a fixed-seed PRNG: bit flips, truncations,
//! insertions, splices) for a few hundred thousand more inputs.

#[path = "../../fuzz/replay.rs"]
mod replay;

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
    replay::corpus("feed_frame", 10)
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
    replay::mutants(&seeds, 300_000, |input| {
        check(input);
    });
}
