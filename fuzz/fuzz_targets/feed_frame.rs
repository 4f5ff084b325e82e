//! Fuzz target: arbitrary bytes into the feed's frame decoder (what a
//! responder reads from its control socket), every message type included
//! (`Commit` with its host states). Must never panic or allocate
//! beyond the frame limit; whatever decodes must encode back to exactly the
//! bytes it came from (the format has one encoding per message).
//! Seeds: `corpus/feed_frame/` (replayed by `store/tests/feed_corpus.rs`).
//! Run: `cargo +nightly fuzz run feed_frame` in this directory.
#![no_main]

use ddserver_store::feed::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = decode_frame(rest) {
        let mut again = Vec::new();
        encode_frame(&message, &mut again).expect("a decoded message encodes");
        assert_eq!(&again[..], &rest[..used], "decode then encode is the identity");
        rest = &rest[used..];
    }
});
