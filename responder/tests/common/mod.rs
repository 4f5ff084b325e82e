//! Shared fixture for the responder's tests: a zone with every kind of
//! data, queries built and responses parsed by `domain` (the oracle).
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ddserver_responder::{
    HandlerConfig, HostData, Outcome, RecordData, Snapshot, SnapshotWriter, Soa, StaticRecord,
    Transport, ZoneData, handle,
};
use domain::base::iana::Class;
use domain::base::{Message, MessageBuilder, Name, ParsedName, Rtype};
use domain::rdata::AllRecordData;

pub const ZONE: &str = "dyn.example.net";

fn st(owner: &str, ttl: u32, data: RecordData) -> StaticRecord {
    StaticRecord {
        owner: owner.into(),
        ttl,
        data,
    }
}

pub fn zone() -> ZoneData {
    use RecordData::*;
    ZoneData {
        name: ZONE.into(),
        soa: Soa {
            mname: "ns1.example.net".into(),
            rname: "hostmaster.example.net".into(),
            serial: 2026112601,
            refresh: 3600,
            retry: 900,
            expire: 604800,
            minimum: 60,
            ttl: 3600,
        },
        ns: vec!["ns1.example.net.".into(), "ns2.example.net.".into()],
        ns_ttl: 86400,
        default_ttl: 120,
        records: vec![
            st(
                "@",
                3600,
                Mx {
                    preference: 10,
                    exchange: "mail.dyn.example.net".into(),
                },
            ),
            st("@", 3600, Txt(vec!["v=spf1 -all".into()])),
            st(
                "@",
                3600,
                Caa {
                    flags: 0,
                    tag: "issue".into(),
                    value: "letsencrypt.org".into(),
                },
            ),
            st("mail", 3600, A(Ipv4Addr::new(192, 0, 2, 25))),
            st("www", 300, Cname("h1.dyn.example.net.".into())),
            st("chain", 300, Cname("www.dyn.example.net.".into())),
            st("loop1", 300, Cname("loop2.dyn.example.net.".into())),
            st("loop2", 300, Cname("loop1.dyn.example.net.".into())),
            st("ext", 300, Cname("www.example.org.".into())),
            st("dangling", 300, Cname("nothere.dyn.example.net.".into())),
            st("sub", 86400, Ns("ns.sub.dyn.example.net.".into())),
            st("sub", 86400, Ns("ns.elsewhere.example.".into())),
            st("ns.sub", 86400, A(Ipv4Addr::new(192, 0, 2, 53))),
            st(
                "_sip._udp",
                300,
                Srv {
                    priority: 0,
                    weight: 5,
                    port: 5060,
                    target: "sip.example.net".into(),
                },
            ),
            st(
                "big",
                300,
                Txt((0..12)
                    .map(|i| format!("{i:02}{}", "x".repeat(200)))
                    .collect()),
            ),
            st("big", 300, Txt(vec!["second".into()])),
        ],
    }
}

pub fn hosts() -> Vec<HostData> {
    vec![
        HostData {
            name: "h1".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ipv6: Some(Ipv6Addr::from_str("2001:db8::1").unwrap()),
            txt: vec!["token-one".into(), "token-two".into()],
            ttl: Some(300),
            ..Default::default()
        },
        HostData {
            name: "h2".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 2)),
            ..Default::default()
        },
        HostData {
            name: "off".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 3)),
            offline: true,
            ..Default::default()
        },
        HostData {
            name: "dis".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 4)),
            disabled: true,
            ..Default::default()
        },
        HostData {
            name: "wild".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 9)),
            wildcard: true,
            ..Default::default()
        },
        HostData {
            name: "a.b".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..Default::default()
        },
    ]
}

pub fn writer_with(config: &HandlerConfig) -> SnapshotWriter {
    let mut w = SnapshotWriter::new(config);
    let report = w.load_zone(zone(), hosts()).unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
    w
}

pub fn writer() -> SnapshotWriter {
    writer_with(&HandlerConfig::default())
}

/// EDNS parameters of a test query.
#[derive(Clone, Copy)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

pub const EDNS: Option<Edns> = Some(Edns {
    payload: 1232,
    version: 0,
    dnssec_ok: false,
});

pub fn query_class(name: &str, rtype: Rtype, class: Class, edns: Option<Edns>) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0xBEEF);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    q.push((Name::<Vec<u8>>::from_str(name).unwrap(), rtype, class))
        .unwrap();
    let mut a = q.additional();
    if let Some(e) = edns {
        a.opt(|o| {
            o.set_udp_payload_size(e.payload);
            o.set_version(e.version);
            o.set_dnssec_ok(e.dnssec_ok);
            Ok(())
        })
        .unwrap();
    }
    a.finish()
}

pub fn query(name: &str, rtype: Rtype) -> Vec<u8> {
    query_class(name, rtype, Class::IN, None)
}

/// One record of a parsed response, in presentation form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub owner: String,
    pub rtype: Rtype,
    pub ttl: u32,
    pub data: String,
}

#[derive(Debug)]
pub struct Response {
    pub bytes: Vec<u8>,
    pub message: Message<Vec<u8>>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

impl Response {
    pub fn rcode(&self) -> domain::base::iana::Rcode {
        self.message.header().rcode()
    }
    pub fn aa(&self) -> bool {
        self.message.header().aa()
    }
    pub fn tc(&self) -> bool {
        self.message.header().tc()
    }
    pub fn answer_data(&self) -> Vec<String> {
        self.answer.iter().map(|r| r.data.clone()).collect()
    }
}

fn section(sec: domain::base::message::RecordSection<'_, Vec<u8>>) -> Vec<Rr> {
    sec.map(|rr| {
        let rr = rr.expect("record parses");
        let owner = rr.owner().to_string();
        let rtype = rr.rtype();
        let ttl = rr.ttl().as_secs();
        let data = match rr.to_record::<AllRecordData<_, ParsedName<_>>>() {
            Ok(Some(r)) => r.data().to_string(),
            _ => String::from("?"),
        };
        Rr {
            owner,
            rtype,
            ttl,
            data,
        }
    })
    .collect()
}

pub fn parse(bytes: &[u8]) -> Response {
    let message = Message::from_octets(bytes.to_vec()).expect("response parses");
    let answer = section(message.answer().expect("answer section"));
    let authority = section(message.authority().expect("authority section"));
    let additional = section(message.additional().expect("additional section"))
        .into_iter()
        .filter(|r| r.rtype != Rtype::OPT)
        .collect();
    Response {
        bytes: bytes.to_vec(),
        message,
        answer,
        authority,
        additional,
    }
}

/// Runs `handle` and returns the raw outcome and bytes.
pub fn run_raw(snapshot: &Snapshot, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65535];
    match handle(snapshot, query, &mut buf, transport) {
        Outcome::Reply(n) => Some(buf[..n].to_vec()),
        Outcome::Drop => None,
    }
}

pub fn run(snapshot: &Snapshot, query: &[u8]) -> Response {
    parse(&run_raw(snapshot, query, Transport::Udp).expect("a reply"))
}

pub fn ask(snapshot: &Snapshot, name: &str, rtype: Rtype) -> Response {
    run(snapshot, &query(name, rtype))
}
