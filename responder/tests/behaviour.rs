//! Behaviour battery: `handle` over a fixture zone, queries and responses
//! through `domain`. One test per behaviour of the handler's contract.

mod common;

use common::*;
use ddserver_responder::{Change, HandlerConfig, HostData, Transport};
use domain::base::Rtype;
use domain::base::iana::{Class, Rcode};

fn soa_negative_ok(r: &Response) {
    assert_eq!(r.authority.len(), 1, "{r:?}");
    let soa = &r.authority[0];
    assert_eq!(soa.rtype, Rtype::SOA);
    assert_eq!(soa.owner, "dyn.example.net");
    // RFC 2308 §3: min(SOA TTL 3600, minimum 60).
    assert_eq!(soa.ttl, 60);
}

#[test]
fn a_hit_is_authoritative_with_case_kept_question() {
    let w = writer();
    let s = w.current();
    let q = query("H1.Dyn.Example.NET", Rtype::A);
    let r = run(s, &q);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(r.aa());
    assert_eq!(r.message.header().id(), 0xBEEF);
    assert!(r.message.header().rd());
    assert!(!r.message.header().ra());
    // Question echoed byte for byte.
    assert_eq!(&r.bytes[12..q.len()], &q[12..]);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.answer[0].owner, "H1.Dyn.Example.NET");
    assert_eq!(r.answer[0].ttl, 300);
    assert_eq!(r.answer[0].data, "192.0.2.1");
    // The owner is a compression pointer to the question.
    assert_eq!(&r.bytes[q.len()..q.len() + 2], &[0xC0, 0x0C]);
    assert!(r.authority.is_empty() && r.additional.is_empty());
}

#[test]
fn aaaa_hit_and_default_ttl() {
    let w = writer();
    let r = ask(w.current(), "h1.dyn.example.net", Rtype::AAAA);
    assert_eq!(r.answer_data(), ["2001:db8::1"]);
    let r = ask(w.current(), "h2.dyn.example.net", Rtype::A);
    assert_eq!(r.answer[0].ttl, 120, "zone default TTL");
}

#[test]
fn nxdomain_has_soa_with_negative_ttl() {
    let w = writer();
    let r = ask(w.current(), "nope.dyn.example.net", Rtype::A);
    assert_eq!(r.rcode(), Rcode::NXDOMAIN);
    assert!(r.aa());
    assert!(r.answer.is_empty());
    soa_negative_ok(&r);
}

#[test]
fn nodata_has_soa() {
    let w = writer();
    let r = ask(w.current(), "h2.dyn.example.net", Rtype::AAAA);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(r.aa() && r.answer.is_empty());
    soa_negative_ok(&r);
    let r = ask(w.current(), "h1.dyn.example.net", Rtype::MX);
    assert!(r.answer.is_empty());
    soa_negative_ok(&r);
}

#[test]
fn offline_and_disabled_hosts_are_nodata() {
    let w = writer();
    for name in ["off.dyn.example.net", "dis.dyn.example.net"] {
        let r = ask(w.current(), name, Rtype::A);
        assert_eq!(r.rcode(), Rcode::NOERROR, "{name}");
        assert!(r.answer.is_empty());
        soa_negative_ok(&r);
    }
}

#[test]
fn empty_non_terminals_are_nodata() {
    let w = writer();
    for name in ["b.dyn.example.net", "_udp.dyn.example.net"] {
        let r = ask(w.current(), name, Rtype::A);
        assert_eq!(r.rcode(), Rcode::NOERROR, "{name}");
        assert!(r.answer.is_empty());
        soa_negative_ok(&r);
    }
    let r = ask(w.current(), "a.b.dyn.example.net", Rtype::A);
    assert_eq!(r.answer_data(), ["192.0.2.10"]);
    let r = ask(w.current(), "_sip._udp.dyn.example.net", Rtype::SRV);
    assert_eq!(
        r.answer_data(),
        ["0 5 5060 sip.example.net"],
        "domain prints SRV targets without the dot"
    );
}

#[test]
fn outside_our_zones_is_refused_without_aa() {
    let w = writer();
    for name in ["example.org", "example.net", "net", "."] {
        let r = ask(w.current(), name, Rtype::A);
        assert_eq!(r.rcode(), Rcode::REFUSED, "{name}");
        assert!(!r.aa());
        assert_eq!(r.message.header_counts().qdcount(), 1);
        assert!(r.answer.is_empty() && r.authority.is_empty());
    }
}

#[test]
fn apex_soa_ns_and_static_records() {
    let w = writer();
    let s = w.current();
    let r = ask(s, "dyn.example.net", Rtype::SOA);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.answer[0].ttl, 3600);
    assert_eq!(
        r.answer[0].data,
        "ns1.example.net. hostmaster.example.net. 2026112601 3600 900 604800 60"
    );
    let r = ask(s, "dyn.example.net", Rtype::NS);
    assert_eq!(r.answer_data(), ["ns1.example.net.", "ns2.example.net."]);
    assert_eq!(r.answer[0].ttl, 86400);
    assert_eq!(
        ask(s, "dyn.example.net", Rtype::MX).answer_data(),
        ["10 mail.dyn.example.net."]
    );
    assert_eq!(
        ask(s, "dyn.example.net", Rtype::TXT).answer_data(),
        ["\"v=spf1 -all\""]
    );
    assert_eq!(
        ask(s, "dyn.example.net", Rtype::CAA).answer_data(),
        ["0 issue \"letsencrypt.org\""]
    );
    let r = ask(s, "dyn.example.net", Rtype::A);
    assert!(r.answer.is_empty());
    soa_negative_ok(&r);
}

#[test]
fn cname_is_followed_inside_the_zone() {
    let w = writer();
    let s = w.current();
    let r = ask(s, "WWW.dyn.example.net", Rtype::A);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(r.aa());
    assert_eq!(r.answer.len(), 2, "{r:?}");
    assert_eq!(r.answer[0].owner, "WWW.dyn.example.net");
    assert_eq!(r.answer[0].data, "h1.dyn.example.net.");
    assert_eq!(r.answer[1].owner, "h1.dyn.example.net");
    assert_eq!(r.answer[1].data, "192.0.2.1");
    // Two links.
    let r = ask(s, "chain.dyn.example.net", Rtype::AAAA);
    assert_eq!(
        r.answer_data(),
        ["www.dyn.example.net.", "h1.dyn.example.net.", "2001:db8::1"]
    );
    assert_eq!(r.answer[2].owner, "h1.dyn.example.net");
    // The CNAME itself.
    assert_eq!(
        ask(s, "www.dyn.example.net", Rtype::CNAME).answer_data(),
        ["h1.dyn.example.net."]
    );
    // Target outside the zone: the CNAME alone.
    let r = ask(s, "ext.dyn.example.net", Rtype::A);
    assert_eq!(
        (r.rcode(), r.answer_data()),
        (Rcode::NOERROR, vec!["www.example.org.".to_string()])
    );
    // Dangling target: NXDOMAIN describes the last name (RFC 6604).
    let r = ask(s, "dangling.dyn.example.net", Rtype::A);
    assert_eq!(r.rcode(), Rcode::NXDOMAIN);
    assert_eq!(r.answer.len(), 1);
    soa_negative_ok(&r);
    // Target exists without the type: NODATA after the chain.
    let r = ask(s, "www.dyn.example.net", Rtype::MX);
    assert_eq!(r.answer.len(), 1);
    soa_negative_ok(&r);
}

#[test]
fn cname_loops_stop() {
    let w = writer();
    let r = ask(w.current(), "loop1.dyn.example.net", Rtype::A);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(
        !r.answer.is_empty() && r.answer.len() <= 9,
        "{}",
        r.answer.len()
    );
    assert!(r.answer.iter().all(|a| a.rtype == Rtype::CNAME));
}

#[test]
fn delegations_are_referrals_with_glue() {
    let w = writer();
    for name in [
        "sub.dyn.example.net",
        "x.sub.dyn.example.net",
        "ns.sub.dyn.example.net",
    ] {
        let r = ask(w.current(), name, Rtype::A);
        assert_eq!(r.rcode(), Rcode::NOERROR, "{name}");
        assert!(!r.aa(), "referrals are not authoritative");
        assert!(r.answer.is_empty());
        assert_eq!(r.authority.len(), 2);
        assert!(
            r.authority
                .iter()
                .all(|a| a.rtype == Rtype::NS && a.owner == "sub.dyn.example.net")
        );
        assert_eq!(r.additional.len(), 1, "only in-domain glue");
        assert_eq!(r.additional[0].owner, "ns.sub.dyn.example.net");
        assert_eq!(r.additional[0].data, "192.0.2.53");
    }
    // DS is answered by the parent side: NODATA, authoritative.
    let r = ask(w.current(), "sub.dyn.example.net", Rtype::DS);
    assert!(r.aa() && r.answer.is_empty());
    soa_negative_ok(&r);
}

#[test]
fn wildcard_hosts_answer_below_themselves() {
    let w = writer();
    for name in [
        "wild.dyn.example.net",
        "Foo.wild.dyn.example.net",
        "a.b.c.wild.dyn.example.net",
    ] {
        let r = ask(w.current(), name, Rtype::A);
        assert_eq!(r.rcode(), Rcode::NOERROR, "{name}");
        assert!(r.aa());
        assert_eq!(r.answer.len(), 1);
        assert_eq!(r.answer[0].owner, name, "owner is the query name");
        assert_eq!(r.answer[0].data, "192.0.2.9");
    }
    let r = ask(w.current(), "x.wild.dyn.example.net", Rtype::AAAA);
    assert!(r.answer.is_empty());
    soa_negative_ok(&r);
    // Not a wildcard host: below it is NXDOMAIN.
    assert_eq!(
        ask(w.current(), "x.h2.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
}

#[test]
fn acme_challenge_txt() {
    let w = writer();
    let r = ask(
        w.current(),
        "_acme-challenge.h1.dyn.example.net",
        Rtype::TXT,
    );
    assert!(r.aa());
    assert_eq!(r.answer_data(), ["\"token-one\"", "\"token-two\""]);
    assert_eq!(r.answer[0].ttl, 300);
    assert_eq!(
        ask(
            w.current(),
            "_acme-challenge.h2.dyn.example.net",
            Rtype::TXT
        )
        .rcode(),
        Rcode::NXDOMAIN
    );
}

#[test]
fn edns_is_echoed_with_our_payload_size() {
    let w = writer();
    let q = query_class(
        "h1.dyn.example.net",
        Rtype::A,
        Class::IN,
        Some(Edns {
            payload: 4096,
            version: 0,
            dnssec_ok: true,
        }),
    );
    let r = run(w.current(), &q);
    let opt = r.message.opt().expect("OPT in response");
    assert_eq!(opt.udp_payload_size(), 1232);
    assert_eq!(opt.version(), 0);
    assert!(opt.dnssec_ok(), "DO copied (RFC 3225)");
    assert_eq!(r.answer_data(), ["192.0.2.1"]);
    // Configurable.
    let w = writer_with(&HandlerConfig {
        udp_payload_size: 1400,
        ..Default::default()
    });
    let r = run(w.current(), &q);
    assert_eq!(r.message.opt().unwrap().udp_payload_size(), 1400);
    // No OPT without EDNS in the query.
    let r = ask(w.current(), "h1.dyn.example.net", Rtype::A);
    assert!(r.message.opt().is_none());
}

#[test]
fn badvers_for_edns_version_above_zero() {
    let w = writer();
    let q = query_class(
        "h1.dyn.example.net",
        Rtype::A,
        Class::IN,
        Some(Edns {
            payload: 1232,
            version: 1,
            dnssec_ok: false,
        }),
    );
    let r = run(w.current(), &q);
    assert!(r.answer.is_empty());
    assert_eq!(r.message.opt_rcode(), domain::base::iana::OptRcode::BADVERS);
    assert_eq!(r.message.opt().unwrap().version(), 0);
}

#[test]
fn truncation_over_udp_and_full_answer_over_tcp() {
    let w = writer();
    let s = w.current();
    let q = query("big.dyn.example.net", Rtype::TXT);
    let raw = run_raw(s, &q, Transport::Udp).unwrap();
    assert!(raw.len() <= 512);
    let r = parse(&raw);
    assert!(r.tc());
    assert_eq!(r.message.header_counts().qdcount(), 1);
    assert!(r.answer.is_empty() && r.authority.is_empty());
    // With EDNS 1232: still too big (≈2.5 KB), TC and OPT kept.
    let q = query_class("big.dyn.example.net", Rtype::TXT, Class::IN, EDNS);
    let raw = run_raw(s, &q, Transport::Udp).unwrap();
    assert!(raw.len() <= 1232);
    let r = parse(&raw);
    assert!(r.tc() && r.answer.is_empty());
    assert!(r.message.opt().is_some());
    // Client offers less than 512: treated as 512 (RFC 6891 §6.2.5).
    let q = query_class(
        "h1.dyn.example.net",
        Rtype::A,
        Class::IN,
        Some(Edns {
            payload: 100,
            version: 0,
            dnssec_ok: false,
        }),
    );
    assert!(!run(s, &q).tc());
    // TCP: everything.
    let q = query("big.dyn.example.net", Rtype::TXT);
    let r = parse(&run_raw(s, &q, Transport::Tcp).unwrap());
    assert!(!r.tc());
    assert_eq!(r.answer.len(), 2);
    assert!(r.bytes.len() > 2000);
}

#[test]
fn any_is_answered_with_one_rrset() {
    let w = writer();
    let r = ask(w.current(), "h1.dyn.example.net", Rtype::ANY);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.answer[0].rtype, Rtype::A);
    let r = ask(w.current(), "dyn.example.net", Rtype::ANY);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.answer[0].rtype, Rtype::SOA);
    let r = ask(w.current(), "off.dyn.example.net", Rtype::ANY);
    assert!(r.answer.is_empty());
    soa_negative_ok(&r);
}

#[test]
fn malformed_and_unsupported_queries() {
    let w = writer();
    let s = w.current();
    let good = query("h1.dyn.example.net", Rtype::A);
    // Too short for a header: dropped.
    assert_eq!(run_raw(s, &good[..11], Transport::Udp), None);
    assert_eq!(run_raw(s, &[], Transport::Udp), None);
    // Responses are never answered.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert_eq!(run_raw(s, &resp, Transport::Udp), None);
    // Header only, question cut: FORMERR with the header alone.
    let r = parse(&run_raw(s, &good[..20], Transport::Udp).unwrap());
    assert_eq!(r.rcode(), Rcode::FORMERR);
    assert_eq!(r.message.header().id(), 0xBEEF);
    assert_eq!(r.bytes.len(), 12);
    // QDCOUNT 0 and 2.
    for qd in [0u8, 2] {
        let mut q = good.clone();
        q[5] = qd;
        assert_eq!(
            parse(&run_raw(s, &q, Transport::Udp).unwrap()).rcode(),
            Rcode::FORMERR
        );
    }
    // ANCOUNT != 0.
    let mut q = good.clone();
    q[7] = 1;
    assert_eq!(
        parse(&run_raw(s, &q, Transport::Udp).unwrap()).rcode(),
        Rcode::FORMERR
    );
    // Compression pointer in the question name.
    let mut q = good[..12].to_vec();
    q.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(
        parse(&run_raw(s, &q, Transport::Udp).unwrap()).rcode(),
        Rcode::FORMERR
    );
    // ARCOUNT claims a record that is not there.
    let mut q = good.clone();
    q[11] = 1;
    assert_eq!(
        parse(&run_raw(s, &q, Transport::Udp).unwrap()).rcode(),
        Rcode::FORMERR
    );
    // Two OPT records (RFC 6891 §6.1.1).
    let mut q = query_class("h1.dyn.example.net", Rtype::A, Class::IN, EDNS);
    let opt = q[q.len() - 11..].to_vec();
    q.extend_from_slice(&opt);
    q[11] = 2;
    assert_eq!(
        parse(&run_raw(s, &q, Transport::Udp).unwrap()).rcode(),
        Rcode::FORMERR
    );
    // Opcodes other than QUERY: NOTIMP (NOTIFY = 4, UPDATE = 5).
    for opcode in [2u8, 4, 5] {
        let mut q = good.clone();
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let r = parse(&run_raw(s, &q, Transport::Udp).unwrap());
        assert_eq!(r.rcode(), Rcode::NOTIMP);
        assert_eq!(u8::from(r.message.header().opcode()), opcode);
    }
}

#[test]
fn transfers_and_other_classes_are_refused() {
    let w = writer();
    let s = w.current();
    for t in [Rtype::AXFR, Rtype::IXFR] {
        let r = parse(&run_raw(s, &query("dyn.example.net", t), Transport::Tcp).unwrap());
        assert_eq!(r.rcode(), Rcode::REFUSED);
    }
    for class in [Class::CH, Class::HS, Class::ANY, Class::NONE] {
        let r = run(s, &query_class("h1.dyn.example.net", Rtype::A, class, None));
        assert_eq!(r.rcode(), Rcode::REFUSED, "{class}");
        assert!(!r.aa());
    }
    // CHAOS identity is off by default.
    let r = run(s, &query_class("version.bind", Rtype::TXT, Class::CH, None));
    assert_eq!(r.rcode(), Rcode::REFUSED);
}

#[test]
fn chaos_identity_when_enabled() {
    let config = HandlerConfig {
        chaos_version: Some("ddserver".into()),
        chaos_id: Some("node-1".into()),
        ..Default::default()
    };
    let w = writer_with(&config);
    let s = w.current();
    let r = run(s, &query_class("VERSION.bind", Rtype::TXT, Class::CH, None));
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert_eq!(r.answer_data(), ["\"ddserver\""]);
    assert_eq!(r.answer[0].owner, "VERSION.bind");
    let r = run(s, &query_class("id.server", Rtype::TXT, Class::CH, None));
    assert_eq!(r.answer_data(), ["\"node-1\""]);
    let r = run(s, &query_class("other.bind", Rtype::TXT, Class::CH, None));
    assert_eq!(r.rcode(), Rcode::REFUSED);
}

#[test]
fn changes_apply_in_batches() {
    let mut w = writer();
    let shared = w.shared();
    let host = |name: &str, last: u8| HostData {
        name: name.into(),
        ipv4: Some(std::net::Ipv4Addr::new(198, 51, 100, last)),
        ..Default::default()
    };
    let report = w.apply([
        Change::UpsertHost(ZONE.into(), host("h2", 7)),
        Change::UpsertHost(ZONE.into(), host("new", 8)),
        Change::UpsertHost("unknown.example".into(), host("x", 1)),
        Change::RemoveHost(ZONE.into(), "a.b".into()),
        Change::SetSoaSerial(ZONE.into(), 2026112602),
    ]);
    assert_eq!(report.applied, 4);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, 2);
    let view = shared.load();
    assert_eq!(
        ask(&view, "h2.dyn.example.net", Rtype::A).answer_data(),
        ["198.51.100.7"]
    );
    assert_eq!(
        ask(&view, "new.dyn.example.net", Rtype::A).answer_data(),
        ["198.51.100.8"]
    );
    // The host and its empty non-terminal are gone.
    assert_eq!(
        ask(&view, "a.b.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    assert_eq!(
        ask(&view, "b.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    let r = ask(&view, "dyn.example.net", Rtype::SOA);
    assert!(r.answer[0].data.contains(" 2026112602 "));
    let r = ask(&view, "nope.dyn.example.net", Rtype::A);
    assert!(
        r.authority[0].data.contains(" 2026112602 "),
        "negative SOA follows the serial"
    );
    drop(view);

    // ACME tokens removed: the name goes, the host stays; offline: NODATA.
    let mut h1 = common::hosts()[0].clone();
    h1.txt.clear();
    h1.offline = true;
    w.apply([Change::UpsertHost(ZONE.into(), h1)]);
    let view = shared.load();
    assert_eq!(
        ask(&view, "_acme-challenge.h1.dyn.example.net", Rtype::TXT).rcode(),
        Rcode::NXDOMAIN
    );
    let r = ask(&view, "h1.dyn.example.net", Rtype::A);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(r.answer.is_empty());
    drop(view);

    // A host over a static name hides it; removing the host shows it again.
    w.apply([Change::UpsertHost(ZONE.into(), host("mail", 99))]);
    assert_eq!(
        ask(w.current(), "mail.dyn.example.net", Rtype::A).answer_data(),
        ["198.51.100.99"]
    );
    w.apply([Change::RemoveHost(ZONE.into(), "mail".into())]);
    assert_eq!(
        ask(w.current(), "mail.dyn.example.net", Rtype::A).answer_data(),
        ["192.0.2.25"]
    );

    // Replacing the zone's static records keeps its hosts.
    let mut z = common::zone();
    z.records
        .retain(|r| r.owner != "mail" && r.owner != "_sip._udp");
    w.apply([Change::UpsertZone(z)]);
    assert_eq!(
        ask(w.current(), "mail.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    assert_eq!(
        ask(w.current(), "_udp.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    assert_eq!(
        ask(w.current(), "h2.dyn.example.net", Rtype::A).answer_data(),
        ["198.51.100.7"]
    );

    // Removing the zone: REFUSED, nothing left.
    let report = w.apply([Change::RemoveZone(ZONE.into())]);
    assert!(report.rejected.is_empty());
    assert_eq!(
        ask(w.current(), "h2.dyn.example.net", Rtype::A).rcode(),
        Rcode::REFUSED
    );
    assert_eq!(w.current().name_count(), 0);
    assert_eq!(w.current().zone_count(), 0);
}

#[test]
fn nested_zones_and_clear() {
    let mut w = writer();
    let mut child = common::zone();
    child.name = "kid.dyn.example.net".into();
    child.records.clear();
    w.load_zone(
        child,
        [HostData {
            name: "h1".into(),
            ipv4: Some([10, 0, 0, 1].into()),
            ..Default::default()
        }],
    )
    .unwrap();
    assert_eq!(
        ask(w.current(), "h1.kid.dyn.example.net", Rtype::A).answer_data(),
        ["10.0.0.1"]
    );
    let r = ask(w.current(), "x.kid.dyn.example.net", Rtype::A);
    assert_eq!(r.authority[0].owner, "kid.dyn.example.net");
    assert_eq!(
        ask(w.current(), "h1.dyn.example.net", Rtype::A).answer_data(),
        ["192.0.2.1"]
    );
    // Removing the parent keeps the child.
    w.apply([Change::RemoveZone(ZONE.into())]);
    assert_eq!(
        ask(w.current(), "h1.kid.dyn.example.net", Rtype::A).answer_data(),
        ["10.0.0.1"]
    );
    assert_eq!(
        ask(w.current(), "h1.dyn.example.net", Rtype::A).rcode(),
        Rcode::REFUSED
    );
    w.clear();
    assert_eq!(w.current().name_count(), 0);
    assert_eq!(
        ask(w.current(), "h1.kid.dyn.example.net", Rtype::A).rcode(),
        Rcode::REFUSED
    );
}

#[test]
fn old_snapshots_are_freed_by_the_writer_once_released() {
    let mut w = writer();
    let shared = w.shared();
    let held = shared.load();
    for i in 0..5u8 {
        w.apply([Change::UpsertHost(
            ZONE.into(),
            HostData {
                name: format!("n{i}"),
                ..Default::default()
            },
        )]);
    }
    // The held view pins its snapshot and every newer one.
    assert_eq!(w.retired_count(), 5);
    assert_eq!(
        ask(&held, "h1.dyn.example.net", Rtype::A).answer_data(),
        ["192.0.2.1"]
    );
    assert_eq!(
        ask(&held, "n4.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    drop(held);
    w.collect_garbage();
    assert_eq!(w.retired_count(), 0);
    assert_eq!(
        ask(&shared.load(), "n4.dyn.example.net", Rtype::A).rcode(),
        Rcode::NOERROR
    );
}

#[test]
fn export_is_a_valid_master_file_as_served() {
    let text = ddserver_responder::export::master_file(&common::zone(), &common::hosts()).unwrap();
    assert!(text.contains("dyn.example.net. 3600 IN SOA ns1.example.net. hostmaster.example.net. 2026112601 3600 900 604800 60\n"));
    assert!(text.contains("h1.dyn.example.net. 300 IN A 192.0.2.1\n"));
    assert!(text.contains("h2.dyn.example.net. 120 IN A 192.0.2.2\n"));
    assert!(text.contains("*.wild.dyn.example.net. 120 IN A 192.0.2.9\n"));
    assert!(text.contains("_acme-challenge.h1.dyn.example.net. 300 IN TXT \"token-one\"\n"));
    assert!(!text.contains("192.0.2.3"), "offline host has no address");
    // domain's zone file parser reads it back, record for record.
    let mut reader = domain::zonefile::inplace::Zonefile::new();
    reader.extend_from_slice(text.as_bytes());
    let mut count = 0;
    while let Some(entry) = reader.next_entry().expect("valid master file") {
        if let domain::zonefile::inplace::Entry::Record(_) = entry {
            count += 1;
        }
    }
    assert_eq!(count, text.lines().filter(|l| !l.starts_with('$')).count());
}

#[test]
fn readers_run_while_the_writer_publishes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut w = writer();
    let shared = w.shared();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let q = query("h2.dyn.example.net", Rtype::A);
                let mut buf = vec![0u8; 512];
                let mut answered = 0u32;
                while !stop.load(Ordering::Relaxed) || answered == 0 {
                    let view = shared.load();
                    for _ in 0..16 {
                        let ddserver_responder::Outcome::Reply(n) =
                            ddserver_responder::handle(&view, &q, &mut buf, Transport::Udp)
                        else {
                            panic!("dropped")
                        };
                        let r = parse(&buf[..n]);
                        assert_eq!(r.rcode(), Rcode::NOERROR);
                        assert_eq!(r.answer.len(), 1);
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    for round in 0..200u32 {
        let last = (round % 250) as u8;
        let changes = (0..20).map(|k| {
            let name = if k == 0 {
                "h2".to_string()
            } else {
                format!("x{k}")
            };
            Change::UpsertHost(
                ZONE.into(),
                HostData {
                    name,
                    ipv4: Some(std::net::Ipv4Addr::new(198, 51, 100, last)),
                    ..Default::default()
                },
            )
        });
        w.apply(changes);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    w.collect_garbage();
    assert_eq!(
        w.retired_count(),
        0,
        "everything freed on the writer once readers are gone"
    );
    assert_eq!(
        ask(w.current(), "h2.dyn.example.net", Rtype::A).answer_data(),
        ["198.51.100.199"]
    );
}

#[test]
fn removing_a_host_removes_its_acme_name() {
    let mut w = writer();
    let report = w.apply([Change::RemoveHost(ZONE.into(), "H1".into())]);
    assert_eq!(report.applied, 1);
    assert_eq!(
        ask(w.current(), "h1.dyn.example.net", Rtype::A).rcode(),
        Rcode::NXDOMAIN
    );
    assert_eq!(
        ask(
            w.current(),
            "_acme-challenge.h1.dyn.example.net",
            Rtype::TXT
        )
        .rcode(),
        Rcode::NXDOMAIN
    );
    // Re-adding with tokens brings both back; updating keeps them.
    let h1 = common::hosts()[0].clone();
    w.apply([Change::UpsertHost(ZONE.into(), h1.clone())]);
    w.apply([Change::UpsertHost(ZONE.into(), h1)]);
    let r = ask(
        w.current(),
        "_acme-challenge.h1.dyn.example.net",
        Rtype::TXT,
    );
    assert_eq!(r.answer.len(), 2);
    let names = w.current().name_count();
    w.apply([Change::RemoveHost(ZONE.into(), "h1".into())]);
    assert_eq!(w.current().name_count(), names - 2);
}

/// Random batches of upserts and removals against a model: exercises the
/// copy-and-patch path, tombstones, and rebuilds of shards.
#[test]
fn random_batches_match_a_model() {
    let mut w = writer();
    let base = w.current().name_count();
    let mut model: std::collections::BTreeMap<u32, (u8, bool)> = Default::default();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50 {
        let size = (next() % 40) as usize + 1;
        let mut batch = Vec::new();
        for _ in 0..size {
            let n = (next() % 300) as u32;
            let name = format!("r{n}");
            if next() % 4 == 0 {
                batch.push(Change::RemoveHost(ZONE.into(), name));
                model.remove(&n);
            } else {
                let last = (next() % 250) as u8;
                let acme = next() % 5 == 0;
                // Addresses of varying presence change payload sizes.
                let ipv6 = (next() % 3 == 0).then_some(std::net::Ipv6Addr::LOCALHOST);
                let host = HostData {
                    name,
                    ipv4: Some(std::net::Ipv4Addr::new(10, 0, 0, last)),
                    ipv6,
                    txt: if acme {
                        vec![format!("t{last}")]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                };
                batch.push(Change::UpsertHost(ZONE.into(), host));
                model.insert(n, (last, acme));
            }
        }
        let report = w.apply(batch);
        assert!(report.rejected.is_empty());
        let s = w.current();
        let acme_names = model.values().filter(|(_, a)| *a).count();
        assert_eq!(s.name_count(), base + model.len() + acme_names);
        for n in 0..300u32 {
            let r = ask(s, &format!("r{n}.dyn.example.net"), Rtype::A);
            let acme = ask(
                s,
                &format!("_acme-challenge.r{n}.dyn.example.net"),
                Rtype::TXT,
            );
            match model.get(&n) {
                Some((last, has_acme)) => {
                    assert_eq!(r.answer_data(), [format!("10.0.0.{last}")], "r{n}");
                    assert_eq!(acme.rcode() == Rcode::NOERROR, *has_acme, "acme r{n}");
                }
                None => {
                    assert_eq!(r.rcode(), Rcode::NXDOMAIN, "r{n}");
                    assert_eq!(acme.rcode(), Rcode::NXDOMAIN, "acme r{n}");
                }
            }
        }
    }
}

/// The writer runs on its own thread; workers share views of snapshots.
#[test]
fn thread_safety_of_the_public_types() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<ddserver_responder::SnapshotWriter>();
    sync::<ddserver_responder::SnapshotWriter>();
    send::<ddserver_responder::Shared>();
    sync::<ddserver_responder::Shared>();
    send::<ddserver_responder::Snapshot>();
    sync::<ddserver_responder::Snapshot>();
    // Moving a populated writer to another thread and back.
    let w = writer();
    let w = std::thread::spawn(move || w).join().unwrap();
    assert_eq!(
        ask(w.current(), "h1.dyn.example.net", Rtype::A).answer_data(),
        ["192.0.2.1"]
    );
}

/// RFC 1035 §3.3.9: an MX answer carries the in-zone exchange's address in
/// the additional section, its owner pointing at the name in the answer.
#[test]
fn mx_answer_adds_the_exchange_address() {
    let writer = writer();
    let response = ask(writer.current(), "DYN.example.net", Rtype::MX);
    assert_eq!(response.answer.len(), 1);
    let additional: Vec<(String, String)> = response
        .additional
        .iter()
        .map(|r| (r.owner.to_ascii_lowercase(), r.data.clone()))
        .collect();
    assert_eq!(
        additional,
        [("mail.dyn.example.net".to_string(), "192.0.2.25".to_string())]
    );
    // Targets outside the zone add nothing: the apex NS set here is
    // ns1/ns2.example.net.
    let response = ask(writer.current(), "dyn.example.net", Rtype::NS);
    assert!(
        response.additional.is_empty(),
        "{:?}",
        response.additional.len()
    );
}
