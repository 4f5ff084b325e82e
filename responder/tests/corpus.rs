//! Replays the fuzz seed corpus (`fuzz/corpus/handle/`) through `handle`,
//! plus every truncation and a set of byte mutations of each seed: no
//! panic, replies within the size limit and parseable by `domain`
//! (STYLE habit 9: fuzz seeds that CI replays).

mod common;

use common::*;
use ddserver_responder::{Outcome, Snapshot, Transport, handle};
use domain::base::Message;

fn check(snapshot: &Snapshot, input: &[u8], response: &mut [u8]) -> usize {
    // The workers prefetch every received datagram before answering it.
    snapshot.prefetch_batch(2, |i| (i == 0).then_some(input));
    let mut replies = 0;
    for (transport, buffer) in [
        (Transport::Udp, 512),
        (Transport::Udp, 4096),
        (Transport::Tcp, 65535),
    ] {
        match handle(snapshot, input, &mut response[..buffer], transport) {
            Outcome::Reply(n) => {
                assert!((12..=buffer).contains(&n), "reply of {n} octets");
                Message::from_octets(response[..n].to_vec()).expect("reply has a header");
                replies += 1;
            }
            Outcome::Drop => {}
        }
    }
    replies
}

#[test]
fn seed_corpus_and_mutations_never_panic() {
    let writer = writer();
    let snapshot = writer.current();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/handle");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .expect("seed corpus")
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "seed corpus at {dir:?}");
    let mut response = vec![0u8; 65535];
    let mut replies = 0;
    for path in &seeds {
        let seed = std::fs::read(path).unwrap();
        replies += check(snapshot, &seed, &mut response);
        for len in 0..seed.len() {
            check(snapshot, &seed[..len], &mut response);
        }
        let mut mutated = seed.clone();
        for i in 0..seed.len() {
            for value in [
                0x00,
                0x01,
                0x3F,
                0x40,
                0xC0,
                0xFF,
                seed[i] ^ 0x20,
                seed[i].wrapping_add(1),
            ] {
                mutated[i] = value;
                check(snapshot, &mutated, &mut response);
            }
            mutated[i] = seed[i];
        }
    }
    assert!(replies > seeds.len(), "seeds are mostly answered");
}
