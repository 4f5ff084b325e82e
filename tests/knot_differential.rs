//! Differential test against Knot DNS: the same zone, exported by
//! `ddserver zone export`, is served by Knot DNS (Debian's `knotd`, started
//! here on a loopback port) and by our responder; several hundred generated
//! queries are sent to both and the answers compared on RCODE, flags, EDNS
//! and every section.
//!
//! Differences we keep on purpose are listed in `ACCEPTED` with the reason.
//! Anything else fails the test with the query and both answers.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, free_port, write_file};
use domain::base::iana::Rtype;
use domain::base::message_builder::MessageBuilder;
use domain::base::{Message, Name, ParsedName};
use domain::rdata::AllRecordData;

const ZONE: &str = "dyn.example.net";

/// The static part of the zone, imported with `zone import`.
const STATIC_ZONE: &str = "$ORIGIN dyn.example.net.\n$TTL 300\n\
@ 3600 IN SOA ns1 hostmaster 2026112601 3600 900 1209600 60\n\
@ 3600 IN NS ns1\n\
@ 3600 IN NS ns2.example.org.\n\
ns1 IN A 192.0.2.53\n\
ns1 IN AAAA 2001:db8::53\n\
@ IN MX 10 mail\n\
@ IN TXT \"v=spf1 -all\"\n\
@ IN CAA 0 issue \"letsencrypt.org\"\n\
mail IN A 192.0.2.25\n\
www IN CNAME @\n\
alias IN CNAME mail\n\
chain IN CNAME alias\n\
external IN CNAME www.example.org.\n\
_sip._udp IN SRV 0 5 5060 mail\n\
deep.a.b IN A 192.0.2.99\n\
sub IN NS ns.sub\n\
sub IN NS ns.other.example.\n\
ns.sub IN A 192.0.2.77\n\
big IN TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\
big IN TXT \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n\
big IN TXT \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n";

/// Hosts created with `host add`: (label, ipv4, ipv6).
const HOSTS: &[(&str, Option<&str>, Option<&str>)] = &[
    ("home", Some("198.51.100.1"), Some("2001:db8:1::1")),
    ("v4only", Some("198.51.100.2"), None),
    ("v6only", None, Some("2001:db8:1::3")),
    ("noaddr", None, None),
    ("router-7", Some("198.51.100.7"), None),
    ("wild", Some("198.51.100.8"), Some("2001:db8:1::8")),
    ("away", Some("198.51.100.9"), None),
];

/// Differences from Knot DNS that we keep, each with its reason. Matched on
/// the query's description.
const ACCEPTED: &[(&str, &str)] = &[
    (
        "away.",
        "An offline host answers NODATA like an address-less host (below).",
    ),
    (
        "noaddr.",
        "A host without addresses is a name that exists with no records: we answer \
     NODATA (NOERROR, SOA in authority), since the host is in the database and \
     its _acme-challenge or wildcard children may exist (RFC 8020: NXDOMAIN would \
     deny the whole subtree). A master file cannot hold an empty node, so Knot, \
     serving the export, answers NXDOMAIN.",
    ),
];

struct Knot {
    child: Child,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_knot(dir: &std::path::Path, zone_file: &std::path::Path, port: u16) -> Knot {
    let conf = write_file(
        dir,
        "knot.conf",
        &format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             log:\n  - target: stderr\n    any: warning\n\
             database:\n    storage: \"{d}\"\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
             zone:\n  - domain: {ZONE}\n    file: \"{z}\"\n",
            d = dir.display(),
            z = zone_file.display()
        ),
    );
    let child = Command::new("knotd")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("knot.err")).unwrap())
        .spawn()
        .expect("knotd must be installed (scripts/test installs Debian's knot)");
    Knot { child }
}

/// One query variant.
#[derive(Clone)]
struct Probe {
    name: String,
    rtype: Rtype,
    /// EDNS: None = no OPT; Some((payload, version)).
    edns: Option<(u16, u8)>,
    tcp: bool,
}

impl Probe {
    fn describe(&self) -> String {
        format!(
            "{} {} {}{}",
            self.name,
            self.rtype,
            match self.edns {
                None => "no-edns".to_string(),
                Some((size, version)) => format!("edns{version}/{size}"),
            },
            if self.tcp { " tcp" } else { " udp" }
        )
    }

    fn bytes(&self, id: u16) -> Vec<u8> {
        let mut builder = MessageBuilder::new_vec();
        builder.header_mut().set_id(id);
        let mut question = builder.question();
        let name: Name<Vec<u8>> = self.name.parse().unwrap();
        question.push((name, self.rtype)).unwrap();
        let mut additional = question.additional();
        if let Some((size, version)) = self.edns {
            additional
                .opt(|opt| {
                    opt.set_udp_payload_size(size);
                    opt.set_version(version);
                    Ok(())
                })
                .unwrap();
        }
        additional.finish()
    }
}

fn ask(addr: SocketAddr, probe: &Probe, id: u16) -> Vec<u8> {
    let query = probe.bytes(id);
    if probe.tcp {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        buf
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = vec![0u8; 65535];
        for _ in 0..3 {
            socket.send_to(&query, addr).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                buf.truncate(n);
                return buf;
            }
        }
        panic!("no UDP answer from {addr} for {}", probe.describe());
    }
}

/// The comparable content of an answer: header bits, EDNS, and each section
/// as a sorted set of presentation-form records (owner lower-cased).
fn summarize(bytes: &[u8]) -> String {
    let msg = Message::from_octets(bytes.to_vec()).expect("a DNS message");
    let h = msg.header();
    let counts = msg.header_counts();
    let mut out = format!(
        "rcode={} qr={} aa={} tc={} rd={} ra={} ad={} qd={}\n",
        msg.opt_rcode(),
        h.qr(),
        h.aa(),
        h.tc(),
        h.rd(),
        h.ra(),
        h.ad(),
        counts.qdcount()
    );
    match msg.opt() {
        Some(opt) => out.push_str(&format!(
            "edns version={} do={}\n",
            opt.version(),
            opt.dnssec_ok()
        )),
        None => out.push_str("no edns\n"),
    }
    for (label, section) in [
        ("answer", msg.answer()),
        ("authority", msg.authority()),
        ("additional", msg.additional()),
    ] {
        let mut set = BTreeSet::new();
        for record in section.expect("sections parse") {
            let record = record.expect("record parses");
            if record.rtype() == Rtype::OPT {
                continue;
            }
            let record = record
                .to_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
                .expect("record data parses")
                .expect("known type");
            set.insert(record.to_string().to_ascii_lowercase());
        }
        out.push_str(&format!("{label}: {set:#?}\n"));
    }
    out
}

/// Whether the question section of `answer` is byte-identical to the query's.
fn question_echoed(query: &[u8], answer: &[u8]) -> bool {
    // Both carry exactly one question right after the header.
    let mut end = 12;
    while end < query.len() && query[end] != 0 {
        end += query[end] as usize + 1;
    }
    end += 5;
    answer.len() >= end && answer[12..end] == query[12..end]
}

fn probes() -> Vec<Probe> {
    let mut names: Vec<String> = vec![
        ZONE.into(),
        "DYN.Example.NET".into(),
        "ns1.dyn.example.net".into(),
        "mail.dyn.example.net".into(),
        "www.dyn.example.net".into(),
        "alias.dyn.example.net".into(),
        "chain.dyn.example.net".into(),
        "external.dyn.example.net".into(),
        "_sip._udp.dyn.example.net".into(),
        "_udp.dyn.example.net".into(),
        "deep.a.b.dyn.example.net".into(),
        "a.b.dyn.example.net".into(),
        "b.dyn.example.net".into(),
        "sub.dyn.example.net".into(),
        "x.sub.dyn.example.net".into(),
        "ns.sub.dyn.example.net".into(),
        "big.dyn.example.net".into(),
        "missing.dyn.example.net".into(),
        "x.missing.dyn.example.net".into(),
        "example.net".into(),
        "other.example".into(),
        "x.home.dyn.example.net".into(),
        "x.wild.dyn.example.net".into(),
        "a.b.WILD.dyn.example.net".into(),
        "_acme-challenge.wild.dyn.example.net".into(),
    ];
    for (label, _, _) in HOSTS {
        names.push(format!("{label}.{ZONE}"));
        names.push(format!("{}.{ZONE}", label.to_ascii_uppercase()));
    }
    let types = [
        Rtype::A,
        Rtype::AAAA,
        Rtype::TXT,
        Rtype::MX,
        Rtype::NS,
        Rtype::SOA,
        Rtype::CNAME,
        Rtype::SRV,
        Rtype::CAA,
        Rtype::PTR,
    ];
    let mut probes = Vec::new();
    for name in &names {
        for rtype in types {
            for edns in [None, Some((1232, 0))] {
                probes.push(Probe {
                    name: name.clone(),
                    rtype,
                    edns,
                    tcp: false,
                });
            }
        }
        probes.push(Probe {
            name: name.clone(),
            rtype: Rtype::A,
            edns: Some((1232, 0)),
            tcp: true,
        });
    }
    // Truncation, small buffers, TCP for the full answer, EDNS version 1.
    for (edns, tcp) in [
        (None, false),
        (Some((512, 0)), false),
        (Some((4096, 0)), false),
        (None, true),
        (Some((1232, 1)), false),
    ] {
        probes.push(Probe {
            name: format!("big.{ZONE}"),
            rtype: Rtype::TXT,
            edns,
            tcp,
        });
    }
    probes
}

#[test]
fn answers_match_knot_dns_io_uring() {
    answers_match_knot_dns("io = \"io-uring\"");
}

#[test]
fn answers_match_knot_dns_portable() {
    answers_match_knot_dns("io = \"portable\"");
}

fn answers_match_knot_dns(io: &str) {
    let scratch = Scratch::sqlite(io);
    let zone_file = write_file(scratch.dir.path(), "static.zone", STATIC_ZONE);
    scratch.ok(&["zone", "import", zone_file.to_str().unwrap()]);
    scratch.ok_stdin(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.org",
            "--max-hosts",
            "20",
            "--password-stdin",
        ],
        "correct horse battery staple\n",
    );
    for (label, v4, v6) in HOSTS {
        let fqdn = format!("{label}.{ZONE}");
        let mut args = vec!["host", "add", fqdn.as_str(), "--user", "alice"];
        if let Some(v4) = v4 {
            args.extend(["--ipv4", v4]);
        }
        if let Some(v6) = v6 {
            args.extend(["--ipv6", v6]);
        }
        args.push("--password-stdin");
        scratch.ok_stdin(&args, "update-secret-0123456789\n");
    }
    scratch.ok(&["host", "set", &format!("wild.{ZONE}"), "--wildcard", "on"]);
    scratch.ok(&["host", "set", &format!("away.{ZONE}"), "--offline", "on"]);
    let exported = scratch.ok(&["zone", "export", ZONE]);
    let export_file = write_file(scratch.dir.path(), "exported.zone", &exported);

    let knot_port = free_port();
    let _knot = start_knot(scratch.dir.path(), &export_file, knot_port);
    let knot: SocketAddr = ([127, 0, 0, 1], knot_port).into();
    let ours: SocketAddr = ([127, 0, 0, 1], scratch.dns_port).into();
    let _daemon = scratch.start(&["responder"], &format!("home.{ZONE}"));
    // Knot loads the file in the background; wait for its answer too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = Probe {
            name: format!("home.{ZONE}"),
            rtype: Rtype::A,
            edns: None,
            tcp: false,
        };
        let answer = ask(knot, &probe, 1);
        if answer.len() > 12 && answer[3] & 0x0f == 0 && answer[7] > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Knot DNS did not load the exported zone:\n{exported}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let probes = probes();
    assert!(probes.len() >= 300, "only {} probes", probes.len());
    let mut differences = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let id = i as u16;
        let query = probe.bytes(id);
        let theirs = ask(knot, probe, id);
        let mine = ask(ours, probe, id);
        assert_eq!(
            &mine[..2],
            &query[..2],
            "ID not echoed for {}",
            probe.describe()
        );
        assert!(
            question_echoed(&query, &mine),
            "question not echoed byte for byte for {}",
            probe.describe()
        );
        let (a, b) = (summarize(&theirs), summarize(&mine));
        if a != b {
            let what = probe.describe();
            if ACCEPTED
                .iter()
                .any(|(pattern, _)| what.to_ascii_lowercase().contains(pattern))
            {
                continue;
            }
            differences.push(format!("== {what}\n-- knot:\n{a}-- ddserver:\n{b}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} answers differ from Knot DNS:\n{}",
        differences.len(),
        probes.len(),
        differences.join("\n")
    );

    // The same server through Debian's own clients, UDP and TCP.
    let port = scratch.dns_port;
    let short = |client: fn(u16, &[&str]) -> String, args: &[&str]| {
        let mut lines: Vec<String> = client(port, args).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    for transport in ["+notcp", "+tcp"] {
        assert_eq!(
            short(
                common::dig,
                &[&format!("home.{ZONE}"), "AAAA", "+short", transport]
            ),
            ["2001:db8:1::1"]
        );
        assert_eq!(
            short(
                common::kdig,
                &[&format!("a.b.wild.{ZONE}"), "A", "+short", transport]
            ),
            ["198.51.100.8"]
        );
        let mx = common::kdig(port, &[ZONE, "MX", transport]);
        assert!(
            mx.contains("mail.dyn.example.net.") && mx.contains("192.0.2.25"),
            "MX answer without the exchange's address ({transport}):\n{mx}"
        );
    }
    // Over UDP without EDNS the big TXT set does not fit: TC, then dig
    // retries over TCP by itself and gets all three strings.
    let udp = common::dig(port, &[&format!("big.{ZONE}"), "TXT", "+noedns", "+ignore"]);
    assert!(udp.contains(" tc"), "no TC over UDP:\n{udp}");
    let retried = short(
        common::dig,
        &[&format!("big.{ZONE}"), "TXT", "+noedns", "+short"],
    );
    assert_eq!(retried.len(), 3, "{retried:?}");
}
