//! Replays the `update_request` fuzz corpus (`fuzz/corpus/update_request/`:
//! what ddclient, inadyn, FRITZ!Box, pfSense and others send, and hostile
//! variants) through the same parsing and checks as the fuzz target, so CI
//! on stable Rust guards it: the real clients' requests read as expected,
//! and no input panics or breaks an invariant. Then a few hundred thousand
//! mutants of the seeds.

#[path = "../../fuzz/replay.rs"]
mod replay;

use ddserver_updater::fuzzing::{Read, update_request};
use std::net::IpAddr;

fn corpus() -> Vec<(String, Vec<u8>)> {
    replay::corpus("update_request", 15)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn hosts(names: &[Option<&str>]) -> Option<Result<Vec<Option<String>>, &'static str>> {
    Some(Ok(names.iter().map(|n| n.map(str::to_owned)).collect()))
}

const HOME: &str = "home.dyn.example.net";

#[test]
fn real_clients_requests_read_as_expected() {
    let localhost = ip("127.0.0.1");
    let alice = Some("alice".to_owned());
    let mut checked = 0;
    for (name, bytes) in corpus() {
        let read = update_request(&bytes);
        let expected = |user: &Option<String>, v4: Option<&str>, v6: Option<&str>, h| Read {
            client: localhost,
            user: user.clone(),
            ipv4: v4.map(|a| a.parse().unwrap()),
            ipv6: v6.map(|a| a.parse().unwrap()),
            hosts: h,
        };
        let want = match name.as_str() {
            "ddclient" | "pfsense" | "query-credentials" => {
                expected(&alice, Some("192.0.2.7"), None, hosts(&[Some(HOME)]))
            }
            "ddclient-dual" => expected(
                &alice,
                Some("192.0.2.7"),
                Some("2001:db8::7"),
                hosts(&[Some("a.dyn.example.net"), Some("b.dyn.example.net")]),
            ),
            "inadyn-v6" => expected(&alice, None, Some("2001:db8::7"), hosts(&[Some(HOME)])),
            // The `/64` is stripped; the scheme is case-insensitive; the
            // user name is the host.
            "fritzbox" => expected(
                &Some(HOME.to_owned()),
                Some("192.0.2.7"),
                Some("2001:db8:1:2::"),
                hosts(&[Some(HOME)]),
            ),
            "post-form" => expected(&alice, Some("192.0.2.8"), None, hosts(&[Some(HOME)])),
            // No `hostname`: the user name is the host.
            "user-is-host" => expected(&Some(HOME.to_owned()), None, None, hosts(&[Some(HOME)])),
            // The challenge's name is the host's.
            "acme" => expected(&alice, None, None, hosts(&[Some(HOME)])),
            "numhost" => expected(&alice, None, None, Some(Err("numhost"))),
            // Bad names answer `notfqdn` on their own lines; a trailing dot
            // is dropped; a bad address is ignored.
            "notfqdn" => expected(&alice, None, None, hosts(&[None, None, Some(HOME)])),
            // An empty user name is no credentials; IPv4-mapped IPv6 is IPv4.
            "no-user" => expected(&None, Some("192.0.2.9"), None, None),
            "unicode" => expected(
                &alice,
                None,
                Some("2001:db8::1"),
                hosts(&[Some("xn--h-bga.dyn.example.net")]),
            ),
            // `Forwarded` wins over `X-Forwarded-For`; trusted hops are
            // skipped from the right.
            "forwarded" => Read {
                client: ip("2001:db8:cafe::17"),
                ..expected(&alice, None, None, hosts(&[Some(HOME)]))
            },
            // A port is dropped; the walk from the right stops at the first
            // untrusted hop, before the garbage.
            "x-forwarded-for" => Read {
                client: ip("203.0.113.5"),
                ..expected(&alice, None, None, hosts(&[Some(HOME)]))
            },
            // Inputs the fuzzer found and saved: only the checks apply.
            _ => continue,
        };
        assert_eq!(read, want, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 15, "every named seed is checked");
}

#[test]
fn mutated_corpus_never_panics() {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b)| b).collect();
    replay::mutants(&seeds, 300_000, |input| {
        update_request(input);
    });
}
