//! Shared workload for ddserver's benchmarks: the benchmark zone
//! (`h0000001.dyn.example.net` A, every 10th host also AAAA) and queries
//! built by hand (no DNS library in the measured loop).
//!
//! Never used by the server itself.

use std::net::{Ipv4Addr, Ipv6Addr};

use ddserver_responder::{Change, HandlerConfig, HostData, SnapshotWriter, Soa, ZoneData};

/// The benchmark zone's name.
pub const ZONE: &str = "dyn.example.net";

/// The benchmark zone without hosts.
pub fn zone() -> ZoneData {
    ZoneData {
        name: ZONE.into(),
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
        ns: vec!["ns1.example.net".into(), "ns2.example.net".into()],
        ns_ttl: 86400,
        default_ttl: 60,
        records: Vec::new(),
    }
}

/// Host number `i`: `h{i:07}` with an A record, every 10th also AAAA.
pub fn host(i: u32, generation: u8) -> HostData {
    HostData {
        name: format!("h{i:07}"),
        // 10.x.y.z from the host number; the generation moves the first octet.
        ipv4: Some(Ipv4Addr::from_bits(
            (0x0A00_0000 | (i & 0x00FF_FFFF)).wrapping_add(u32::from(generation) << 24),
        )),
        ipv6: i
            .is_multiple_of(10)
            .then(|| Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i))),
        ..Default::default()
    }
}

/// A writer with the benchmark zone and `names` hosts (`h0000000`...).
pub fn writer(names: u32) -> SnapshotWriter {
    let mut w = SnapshotWriter::new(&HandlerConfig::default());
    w.load_zone(zone(), (0..names).map(|i| host(i, 0)))
        .expect("benchmark zone loads");
    w
}

/// A batch of 100 host updates spread over the zone, as the feed delivers.
pub fn batch(names: u32, round: u32) -> Vec<Change> {
    (0..100u32)
        .map(|k| {
            let i = (round
                .wrapping_mul(7919)
                .wrapping_add(k.wrapping_mul(104_729)))
                % names.max(1);
            Change::UpsertHost(ZONE.into(), host(i, round as u8))
        })
        .collect()
}

/// A query for `name` (presentation form, no trailing dot) with `qtype`,
/// with an EDNS OPT (payload 1232) when `edns`.
pub fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
