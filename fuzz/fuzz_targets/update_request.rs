//! Fuzz target: arbitrary bytes as an update request's untrusted parts
//! (query string, form body, `Authorization`, `Forwarded`,
//! `X-Forwarded-For`, `User-Agent`, separated by `\n`) through the
//! updater's own parsing: credentials, parameters, client address, host
//! names and answer lines. Must never panic; the checks are in
//! `ddserver_updater::fuzzing`.
//! Seeds: `corpus/update_request/` (replayed by
//! `updater/tests/request_corpus.rs`).
//! Run: `cargo +nightly fuzz run update_request` in this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ddserver_updater::fuzzing::update_request(data);
});
