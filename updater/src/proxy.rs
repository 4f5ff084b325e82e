//! The client's address: the TCP peer, or what a trusted reverse proxy says
//! in `Forwarded` (RFC 7239) or `X-Forwarded-For`.
//!
//! Headers are believed only when the peer itself is a configured trusted
//! proxy; anyone else could write them. This module must never believe a
//! header from an untrusted peer.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hyper::HeaderMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a trusted-proxy entry did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The address part is not an IP address.
    #[error("'{0}' is not an IP address or network (e.g. 10.0.0.0/8, ::1)")]
    Address(String),
    /// The prefix length is not a number within the family's width.
    #[error("'{0}' has a prefix length outside the address family's width")]
    Prefix(String),
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Network, NetworkError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| NetworkError::Address(text.to_owned()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| NetworkError::Prefix(text.to_owned()))?,
            None => width,
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Network {
    /// Whether `ip` lies in this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports
/// for an IPv4 peer) as plain IPv4; everything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[Network]) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// The client's address for a request that arrived from `peer`.
///
/// When `peer` is a trusted proxy, the forwarding chain (`Forwarded`'s `for=`
/// values if that header is present, else `X-Forwarded-For`) is walked from
/// the right, skipping trusted proxies; the first untrusted hop is the
/// client. A hop that does not parse (`unknown`, an obfuscated identifier,
/// garbage) ends the walk at the last address we could trust.
pub(crate) fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &[Network]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    let forwarded: Vec<_> = headers.get_all("forwarded").iter().collect();
    if !forwarded.is_empty() {
        for value in forwarded {
            let Ok(text) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for element in text.split(',') {
                let node = element.split(';').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
                });
                if let Some(node) = node {
                    hops.push(parse_forwarded_node(node));
                }
            }
        }
    } else {
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for item in text.split(',') {
                hops.push(parse_forwarded_node(item.trim()));
            }
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !trusted(client, proxies) {
                    return client;
                }
            }
            None => return client,
        }
    }
    client
}

/// One node of `Forwarded: for=` (RFC 7239 §6: `192.0.2.43`,
/// `"192.0.2.43:47011"`, `"[2001:db8:cafe::17]:4711"`) or one entry of
/// `X-Forwarded-For`.
fn parse_forwarded_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv4 with a port.
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.1.2.3")));
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(!n.contains(ip("11.0.0.1")));
        let n: Network = "2001:db8::/32".parse().unwrap();
        assert!(n.contains(ip("2001:db8:1::1")));
        assert!(!n.contains(ip("2001:db9::1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let one: Network = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("nonsense".parse::<Network>().is_err());
        assert!("::/129".parse::<Network>().is_err());
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_address(ip("192.0.2.1"), &h, &[]), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let proxies = ["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &proxies),
            ip("203.0.113.9")
        );
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &proxies),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "for=\"192.0.2.43:47011\"")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &proxies),
            ip("192.0.2.43")
        );
        // `unknown` stops the walk at the proxy.
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &proxies),
            ip("127.0.0.1")
        );
        let h = headers(&[("x-forwarded-for", "garbage, 10.0.0.3")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &proxies),
            ip("10.0.0.3")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), &HeaderMap::new(), &proxies),
            ip("127.0.0.1")
        );
    }
}
