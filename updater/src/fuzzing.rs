//! The updater's untrusted-input parsing, for the fuzz target
//! `update_request` (`fuzz/fuzz_targets/update_request.rs`) and the test
//! that replays its corpus (`updater/tests/request_corpus.rs`). Not an API.
//!
//! One input is the parts of an update request, separated by `\n`: query
//! string, form body, `Authorization`, `Forwarded`, `X-Forwarded-For`,
//! `User-Agent` (a missing or empty part is absent, and so is a header
//! value hyper would not accept). The request comes from 127.0.0.1, a trusted
//! proxy, so the forwarding headers are read. It goes through the same
//! [`UpdateRequest::read`] and host-name parsing as a real request, then
//! the answer lines are rendered from its addresses; [`update_request`]
//! panics if anything that must always hold does not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue, USER_AGENT};

use crate::protocol::{self, Answer, MAX_HOSTS, Shown};
use crate::proxy::{self, Network};
use crate::service::{self, Target, UpdateRequest};

/// What the updater read from one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The client's address (the peer is 127.0.0.1, a trusted proxy).
    pub client: IpAddr,
    /// The user name of the credentials found, if any.
    pub user: Option<String>,
    /// The requested addresses.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The named hosts (`None`: not a usable name, `notfqdn` for that
    /// line), or the code word answered for the whole request; `None`
    /// without credentials.
    pub hosts: Option<Result<Vec<Option<String>>, &'static str>>,
}

/// Reads one input (see the module comment) and checks it.
pub fn update_request(data: &[u8]) -> Read {
    let mut parts = data.split(|&b| b == b'\n');
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for name in [
        AUTHORIZATION,
        HeaderName::from_static("forwarded"),
        HeaderName::from_static("x-forwarded-for"),
        USER_AGENT,
    ] {
        let part = parts.next().filter(|v| !v.is_empty());
        if let Some(value) = part.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let proxies: [Network; 2] = [
        "127.0.0.0/8".parse().expect("a network"),
        "10.0.0.0/8".parse().expect("a network"),
    ];
    let request = UpdateRequest::read(peer, &headers, query, body, &proxies);

    assert_eq!(
        proxy::canonical(request.client),
        request.client,
        "client address is canonical"
    );
    if !headers.contains_key("forwarded") && !headers.contains_key("x-forwarded-for") {
        assert_eq!(
            request.client, peer,
            "a client address without forwarding headers"
        );
    }
    assert_eq!(request.agent.trim(), request.agent, "agent is trimmed");
    let params = &request.params;
    for name in params.hostnames.iter().flatten() {
        assert!(
            !name.is_empty() && name.trim() == name && !name.contains(','),
            "host name list entry {name:?}"
        );
    }
    if let Some(ipv6) = params.ipv6 {
        // An address given as IPv4-mapped IPv6 is an IPv4 address.
        assert!(
            ipv6.to_ipv4_mapped().is_none(),
            "IPv4-mapped {ipv6} kept as IPv6"
        );
    }
    let hosts = request.credentials.as_ref().map(|credentials| {
        assert!(!credentials.user.is_empty(), "empty user name accepted");
        match service::targets(params, credentials) {
            Ok(targets) => {
                assert!(
                    (1..=MAX_HOSTS).contains(&targets.len()),
                    "{} targets",
                    targets.len()
                );
                Ok(targets
                    .into_iter()
                    .map(|target| match target {
                        Target::Invalid => None,
                        Target::Host { fqdn, .. } => {
                            assert!(fqdn.is_hostname() && fqdn.as_str().contains('.'), "{fqdn}");
                            Some(fqdn.as_str().to_owned())
                        }
                    })
                    .collect())
            }
            Err(answer) => {
                assert!(
                    matches!(answer, Answer::Notfqdn | Answer::Numhost),
                    "{answer:?}"
                );
                Err(answer.code())
            }
        }
    });
    // The answer lines show exactly the addresses stored, one line each.
    let shown = Shown {
        ipv4: params.ipv4,
        ipv6: params.ipv6,
    };
    let body = protocol::render(&[Answer::Good(shown), Answer::Nochg(shown), Answer::Nohost]);
    let lines: Vec<&str> = body.split_terminator('\n').collect();
    assert_eq!(lines.len(), 3, "{body:?}");
    for (line, code) in lines.iter().zip(["good", "nochg"]) {
        let shown_again = line
            .strip_prefix(code)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|list| {
                list.split(',')
                    .filter_map(protocol::parse_address)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let expected: Vec<IpAddr> = [params.ipv4.map(IpAddr::V4), params.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(shown_again, expected, "{line:?}");
    }
    Read {
        client: request.client,
        user: request.credentials.map(|c| c.user),
        ipv4: params.ipv4,
        ipv6: params.ipv6,
        hosts,
    }
}
