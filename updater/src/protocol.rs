//! The dyndns2 protocol as clients really speak it: parameters in, answer
//! lines out. Pure functions, no I/O.
//!
//! References: the DynDNS "Remote Access API" (dyndns2, archived at
//! help.dyn.com/remote-access-api/, "Return Codes" and "Perform Update"),
//! and what ddclient, inadyn, pfSense, OPNsense and FRITZ!Box send
//! (RESEARCH.md). Unknown parameters are ignored, never an error; this module
//! must never reject a request for a parameter it does not know.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// At most this many host names per request (dyndns2 `numhost`).
pub(crate) const MAX_HOSTS: usize = 20;

/// The update's parameters, from the query string (and a form body).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    /// `hostname`, split on commas, empty entries dropped, at most
    /// `MAX_HOSTS + 1` kept; `None` if absent.
    pub(crate) hostnames: Option<Vec<String>>,
    /// Addresses found in `myip`, `myipv4`, `myipv6`, `ip`, `ipv6`.
    pub(crate) ipv4: Option<Ipv4Addr>,
    pub(crate) ipv6: Option<Ipv6Addr>,
    /// `offline=YES` (true) or `NO` (false).
    pub(crate) offline: Option<bool>,
    /// `wildcard=ON` (true), `OFF` (false); `NOCHG` or absent: `None`.
    pub(crate) wildcard: Option<bool>,
    /// `txt=` present (possibly empty).
    pub(crate) txt: Option<String>,
    /// `username=` and `password=` for routers that cannot send Basic auth.
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Params {
    /// Reads `key=value` pairs (already percent-decoded). Later duplicates
    /// of a single-valued parameter are ignored, except that addresses of
    /// both families accumulate.
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Params {
        let mut params = Params::default();
        for (key, value) in pairs {
            match key.to_ascii_lowercase().as_str() {
                "hostname" | "hostnames" | "host" if params.hostnames.is_none() => {
                    params.hostnames = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|h| !h.is_empty())
                            // One more than allowed is enough to answer
                            // `numhost`; a URI of 100k names costs no more.
                            .take(MAX_HOSTS + 1)
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                // `myip` may hold one address or `v4,v6` (ddclient, inadyn
                // with dual stack); `ip`/`ipv6` are other services' names.
                "myip" | "myipv4" | "myipv6" | "ip" | "ipv4" | "ipv6" => {
                    for item in value.split(',') {
                        match parse_address(item) {
                            Some(IpAddr::V4(a)) if params.ipv4.is_none() => params.ipv4 = Some(a),
                            Some(IpAddr::V6(a)) if params.ipv6.is_none() => params.ipv6 = Some(a),
                            _ => {}
                        }
                    }
                }
                "offline" if params.offline.is_none() => {
                    params.offline = match value.to_ascii_uppercase().as_str() {
                        "YES" | "ON" | "1" | "TRUE" => Some(true),
                        "NO" | "OFF" | "0" | "FALSE" => Some(false),
                        _ => None,
                    };
                }
                "wildcard" if params.wildcard.is_none() => {
                    params.wildcard = match value.to_ascii_uppercase().as_str() {
                        "ON" | "YES" | "1" | "TRUE" => Some(true),
                        "OFF" | "NO" | "0" | "FALSE" => Some(false),
                        _ => None,
                    };
                }
                "txt" if params.txt.is_none() => params.txt = Some(value.to_owned()),
                "username" | "user" if params.username.is_none() => {
                    params.username = Some(value.to_owned())
                }
                "password" | "pass" | "pwd" if params.password.is_none() => {
                    params.password = Some(value.to_owned())
                }
                // mx, backmx, system, and anything else: accepted, ignored.
                _ => {}
            }
        }
        params
    }
}

/// One address as clients send it: IPv4, IPv6, IPv6 in brackets, or with a
/// `/len` prefix length (FRITZ!Box's `<ip6lanprefix>`), which is stripped.
/// IPv4-mapped IPv6 counts as IPv4. Anything else is `None`: the dyndns2
/// specification says a malformed address is ignored and the server's best
/// guess used instead.
pub(crate) fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text.split('/').next().unwrap_or(text);
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let ip: IpAddr = text.parse().ok()?;
    Some(crate::proxy::canonical(ip))
}

/// The addresses an answer line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shown {
    pub(crate) ipv4: Option<Ipv4Addr>,
    pub(crate) ipv6: Option<Ipv6Addr>,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ipv4, self.ipv6) {
            (Some(v4), Some(v6)) => write!(f, " {v4},{v6}"),
            (Some(v4), None) => write!(f, " {v4}"),
            (None, Some(v6)) => write!(f, " {v6}"),
            (None, None) => Ok(()),
        }
    }
}

/// One answer line (dyndns2 "Return Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Committed.
    Good(Shown),
    /// Nothing to change.
    Nochg(Shown),
    /// Wrong or missing credentials.
    Badauth,
    /// The host name is not a fully-qualified name.
    Notfqdn,
    /// The host does not exist or is not the caller's.
    Nohost,
    /// More than [`MAX_HOSTS`] hosts.
    Numhost,
    /// Disabled by an administrator (`None`), or rate limited (`Some`
    /// seconds until the client may retry).
    Abuse(Option<u64>),
    /// The User-Agent is missing or empty and one is required.
    Badagent,
    /// The update itself is not acceptable (e.g. a TXT value out of range).
    Dnserr,
    /// The database is unavailable; nothing was written.
    ServerError,
}

impl Answer {
    /// The code word, also the `code` label in metrics.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Answer::Good(_) => "good",
            Answer::Nochg(_) => "nochg",
            Answer::Badauth => "badauth",
            Answer::Notfqdn => "notfqdn",
            Answer::Nohost => "nohost",
            Answer::Numhost => "numhost",
            Answer::Abuse(_) => "abuse",
            Answer::Badagent => "badagent",
            Answer::Dnserr => "dnserr",
            Answer::ServerError => "911",
        }
    }

    /// Every code word, for metrics.
    pub(crate) const CODES: [&'static str; 10] = [
        "good", "nochg", "badauth", "notfqdn", "nohost", "numhost", "abuse", "badagent", "dnserr",
        "911",
    ];
}

/// The body: one line per answer, in request order.
pub(crate) fn render(answers: &[Answer]) -> String {
    let mut body = String::new();
    for answer in answers {
        body.push_str(answer.code());
        match answer {
            Answer::Good(shown) | Answer::Nochg(shown) => {
                let _ = write!(body, "{shown}");
            }
            _ => {}
        }
        body.push('\n');
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Params::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn what_ddclient_sends() {
        let p = params("system=dyndns&hostname=a.dyn.example,b.dyn.example&myip=192.0.2.1");
        assert_eq!(
            p.hostnames,
            Some(vec!["a.dyn.example".into(), "b.dyn.example".into()])
        );
        assert_eq!(p.ipv4, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.ipv6, None);
        let p = params("hostname=a&myip=192.0.2.1,2001:db8::1");
        assert_eq!(p.ipv4, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.ipv6, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn what_routers_send() {
        // FRITZ!Box: a prefix with its length.
        let p = params("hostname=a&myip=192.0.2.1&myipv6=2001:db8:1:2::/64");
        assert_eq!(p.ipv6, Some("2001:db8:1:2::".parse().unwrap()));
        // pfSense: empty mx; OPNsense: wildcard=NOCHG; unknown parameters.
        let p = params("hostname=a&mx=&backmx=NO&wildcard=NOCHG&foo=bar&myip=");
        assert_eq!(p.wildcard, None);
        assert_eq!(p.ipv4, None);
        let p = params("hostname=a&wildcard=ON&offline=YES");
        assert_eq!((p.wildcard, p.offline), (Some(true), Some(true)));
        let p = params("hostname=a&myip=not-an-address");
        assert_eq!((p.ipv4, p.ipv6), (None, None));
        let p = params("username=u&password=p%26w&hostname=");
        assert_eq!(p.password.as_deref(), Some("p&w"));
        assert_eq!(p.hostnames, Some(vec![]));
        let p = params("myip=::ffff:192.0.2.7");
        assert_eq!(p.ipv4, Some("192.0.2.7".parse().unwrap()));
        let p = params("txt=");
        assert_eq!(p.txt.as_deref(), Some(""));
    }

    /// Bad input never panics and never becomes an address.
    #[test]
    fn hostile_input_is_ignored() {
        for text in [
            "",
            "/",
            "[",
            "[]",
            "::/",
            "1.2.3.4/",
            "1.2.3.4/99999999999999999999",
            "%",
            "\u{0}",
            "[::1",
            "::1]",
            "999.1.1.1",
            "1.2.3.4.5",
            "fe80::1%eth0",
            ",,,,",
            "\u{1F600}",
        ] {
            let _ = parse_address(text);
            let _ = Params::from_pairs([("myip", text), ("hostname", text), ("offline", text)]);
        }
        assert_eq!(parse_address("fe80::1%eth0"), None);
        assert_eq!(
            parse_address("[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        let many = "h.example,".repeat(100_000);
        let hosts = Params::from_pairs([("hostname", many.as_str())]).hostnames;
        assert_eq!(hosts.map(|h| h.len()), Some(MAX_HOSTS + 1));
        let long = ",".repeat(100_000);
        assert_eq!(
            Params::from_pairs([("hostname", long.as_str())]).hostnames,
            Some(vec![])
        );
    }

    #[test]
    fn answers_render_one_line_each() {
        let shown = Shown {
            ipv4: Some("192.0.2.1".parse().unwrap()),
            ipv6: Some("2001:db8::1".parse().unwrap()),
        };
        assert_eq!(
            render(&[
                Answer::Good(shown),
                Answer::Nochg(Shown {
                    ipv4: shown.ipv4,
                    ipv6: None
                }),
                Answer::Nohost,
                Answer::ServerError
            ]),
            "good 192.0.2.1,2001:db8::1\nnochg 192.0.2.1\nnohost\n911\n"
        );
        assert_eq!(render(&[Answer::Abuse(Some(3))]), "abuse\n");
    }
}
