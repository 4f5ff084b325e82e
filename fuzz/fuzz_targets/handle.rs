//! Fuzz target: arbitrary bytes into `handle` over a small fixed snapshot,
//! over UDP and TCP, after the workers' batch prefetch. Must never panic;
//! replies must stay within the limits.
//! Seeds: `corpus/handle/` (replayed by `responder/tests/corpus.rs`).
//! Run: `cargo +nightly fuzz run handle` in this directory.
#![no_main]

use std::sync::OnceLock;

use ddserver_responder::{
    HandlerConfig, HostData, Outcome, RecordData, SnapshotWriter, Soa, StaticRecord, Transport,
    ZoneData, handle,
};
use libfuzzer_sys::fuzz_target;

fn writer() -> SnapshotWriter {
    let zone = ZoneData {
        name: "dyn.example.net".into(),
        soa: Soa {
            mname: "ns1.example.net".into(),
            rname: "hostmaster.example.net".into(),
            serial: 1,
            refresh: 3600,
            retry: 900,
            expire: 604800,
            minimum: 60,
            ttl: 3600,
        },
        ns: vec!["ns1.example.net".into()],
        ns_ttl: 3600,
        default_ttl: 60,
        records: vec![
            StaticRecord {
                owner: "www".into(),
                ttl: 60,
                data: RecordData::Cname("h1.dyn.example.net".into()),
            },
            StaticRecord {
                owner: "sub".into(),
                ttl: 60,
                data: RecordData::Ns("ns.sub.dyn.example.net".into()),
            },
            StaticRecord {
                owner: "ns.sub".into(),
                ttl: 60,
                data: RecordData::A([192, 0, 2, 53].into()),
            },
            StaticRecord {
                owner: "big".into(),
                ttl: 60,
                data: RecordData::Txt((0..20).map(|_| "x".repeat(200)).collect()),
            },
        ],
    };
    let hosts = [
        HostData {
            name: "h1".into(),
            ipv4: Some([192, 0, 2, 1].into()),
            ipv6: Some("2001:db8::1".parse().unwrap()),
            txt: vec!["token".into()],
            ..Default::default()
        },
        HostData {
            name: "wild".into(),
            ipv4: Some([192, 0, 2, 9].into()),
            wildcard: true,
            ..Default::default()
        },
    ];
    let config = HandlerConfig {
        chaos_version: Some("fuzz".into()),
        ..Default::default()
    };
    let mut w = SnapshotWriter::new(&config);
    w.load_zone(zone, hosts).unwrap();
    w
}

static WRITER: OnceLock<SnapshotWriter> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let snapshot = WRITER.get_or_init(writer).current();
    // As a worker does: the batch prefetch sees every datagram first.
    snapshot.prefetch_batch(1, |_| Some(data));
    let mut response = [0u8; 65535];
    for (transport, limit) in [(Transport::Udp, 4096), (Transport::Tcp, 65535)] {
        if let Outcome::Reply(n) = handle(snapshot, data, &mut response, transport) {
            assert!(n >= 12 && n <= limit);
        }
    }
});
