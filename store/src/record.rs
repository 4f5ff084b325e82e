//! Static record types and the validation of their presentation-form RDATA.
//!
//! RDATA is stored as normalised presentation text (names absolute and
//! lower case, addresses canonical, character-strings quoted) so that the
//! responder can render wire form at publish time without re-validating, and
//! two spellings of the same record compare equal. This module must never
//! let through RDATA that cannot be rendered to wire form.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::name::Name;

/// The static record types the store accepts. SOA and apex NS come from the
/// zone itself; NS records here are delegations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Mail exchange.
    Mx,
    /// Text.
    Txt,
    /// Alias.
    Cname,
    /// Service location (RFC 2782).
    Srv,
    /// CA authorisation (RFC 8659).
    Caa,
    /// Delegation to another server (below the apex only).
    Ns,
}

impl RecordType {
    /// The mnemonic.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Cname => "CNAME",
            RecordType::Srv => "SRV",
            RecordType::Caa => "CAA",
            RecordType::Ns => "NS",
        }
    }

    /// Parses a mnemonic, in any case.
    pub fn parse(text: &str) -> Option<RecordType> {
        Some(match text.to_ascii_uppercase().as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::Aaaa,
            "MX" => RecordType::Mx,
            "TXT" => RecordType::Txt,
            "CNAME" => RecordType::Cname,
            "SRV" => RecordType::Srv,
            "CAA" => RecordType::Caa,
            "NS" => RecordType::Ns,
            _ => return None,
        })
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RDATA in typed form, as the responder renders it to wire form.
/// Character-strings are bytes: TXT and CAA values may hold any octet
/// (`\DDD` escapes), so they are never forced through UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Preference and exchange (absolute, with the trailing dot; `.` for none).
    Mx { preference: u16, exchange: String },
    /// The character-strings of one TXT record, each at most 255 octets.
    Txt(Vec<Vec<u8>>),
    /// The canonical name (absolute, with the trailing dot).
    Cname(String),
    /// RFC 2782 fields; target absolute with the trailing dot.
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    /// RFC 8659 fields; the tag lower-case.
    Caa {
        flags: u8,
        tag: String,
        value: Vec<u8>,
    },
    /// The name server of a delegation (absolute, with the trailing dot).
    Ns(String),
}

impl RecordValue {
    /// Parses RDATA in presentation form (as stored, or as an administrator
    /// types it). Errors say what is wrong in words.
    pub fn parse(rtype: RecordType, rdata: &str) -> Result<RecordValue, String> {
        // Normalising first gives one place that validates; the typed value
        // is then read from the canonical text, whose shape is known.
        let text = normalize_rdata(rtype, rdata)?;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let number = |i: usize| -> u16 { fields[i].parse().unwrap_or(0) };
        Ok(match rtype {
            RecordType::A => RecordValue::A(fields[0].parse().map_err(|_| "not an IPv4 address")?),
            RecordType::Aaaa => {
                RecordValue::Aaaa(fields[0].parse().map_err(|_| "not an IPv6 address")?)
            }
            RecordType::Cname => RecordValue::Cname(fields[0].to_owned()),
            RecordType::Ns => RecordValue::Ns(fields[0].to_owned()),
            RecordType::Mx => RecordValue::Mx {
                preference: number(0),
                exchange: fields[1].to_owned(),
            },
            RecordType::Srv => RecordValue::Srv {
                priority: number(0),
                weight: number(1),
                port: number(2),
                target: fields[3].to_owned(),
            },
            RecordType::Txt => RecordValue::Txt(character_strings(&text)?),
            RecordType::Caa => {
                let mut parts = text.splitn(3, ' ');
                let flags = parts.next().unwrap_or("0").parse().unwrap_or(0);
                let tag = parts.next().unwrap_or("").to_owned();
                let value = unescape(parts.next().unwrap_or(""))?;
                RecordValue::Caa { flags, tag, value }
            }
        })
    }
}

/// Validates presentation-form RDATA of `rtype` and returns its normalised
/// form, or the reason it was refused.
pub(crate) fn normalize_rdata(rtype: RecordType, rdata: &str) -> Result<String, String> {
    let fields: Vec<&str> = rdata.split_ascii_whitespace().collect();
    let expect = |n: usize| {
        if fields.len() == n {
            Ok(())
        } else {
            Err(format!("{rtype} needs {n} field(s), got {}", fields.len()))
        }
    };
    match rtype {
        RecordType::A => {
            expect(1)?;
            let addr: Ipv4Addr = fields[0]
                .parse()
                .map_err(|_| "not an IPv4 address".to_owned())?;
            Ok(addr.to_string())
        }
        RecordType::Aaaa => {
            expect(1)?;
            let addr: Ipv6Addr = fields[0]
                .parse()
                .map_err(|_| "not an IPv6 address".to_owned())?;
            Ok(addr.to_string())
        }
        RecordType::Cname | RecordType::Ns => {
            expect(1)?;
            target(fields[0], false)
        }
        RecordType::Mx => {
            expect(2)?;
            // RFC 7505: a null MX has the root as exchange.
            Ok(format!(
                "{} {}",
                u16_field(fields[0], "preference")?,
                target(fields[1], true)?
            ))
        }
        RecordType::Srv => {
            expect(4)?;
            Ok(format!(
                "{} {} {} {}",
                u16_field(fields[0], "priority")?,
                u16_field(fields[1], "weight")?,
                u16_field(fields[2], "port")?,
                target(fields[3], true)?
            ))
        }
        RecordType::Txt => {
            let strings = character_strings(rdata)?;
            if strings.is_empty() {
                return Err("TXT needs at least one character-string".to_owned());
            }
            // Wire RDATA is at most 65535 octets (RFC 1035 3.2.1).
            if strings.iter().map(|s| s.len() + 1).sum::<usize>() > 65535 {
                return Err("TXT RDATA longer than 65535 octets".to_owned());
            }
            Ok(strings
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(" "))
        }
        RecordType::Caa => {
            // RFC 8659 4.1: flags, tag (ASCII letters and digits), value.
            let mut parts = rdata.trim().splitn(3, |c: char| c.is_ascii_whitespace());
            let flags = parts.next().unwrap_or("");
            let tag = parts.next().unwrap_or("");
            let value = parts.next().unwrap_or("").trim();
            let flags: u8 = flags
                .parse()
                .map_err(|_| "CAA flags must be 0..=255".to_owned())?;
            if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("CAA tag must be 1..=15 letters or digits".to_owned());
            }
            let value = if value.starts_with('"') {
                let mut strings = character_strings(value)?;
                if strings.len() != 1 {
                    return Err("CAA value must be one string".to_owned());
                }
                strings.remove(0)
            } else if value.is_empty() || value.contains(|c: char| c.is_ascii_whitespace()) {
                return Err("CAA value must be one string (quote it if it has spaces)".to_owned());
            } else {
                unescape(value)?
            };
            Ok(format!(
                "{flags} {} {}",
                tag.to_ascii_lowercase(),
                quote(&value)
            ))
        }
    }
}

fn u16_field(text: &str, what: &str) -> Result<u16, String> {
    text.parse()
        .map_err(|_| format!("{what} must be 0..=65535"))
}

/// A domain name in RDATA, returned absolute (`name.`); `.` (the root) only
/// where `root_ok`.
fn target(text: &str, root_ok: bool) -> Result<String, String> {
    if text == "." {
        return if root_ok {
            Ok(".".to_owned())
        } else {
            Err("the root is not allowed here".to_owned())
        };
    }
    if !text.ends_with('.') {
        // Relative names would depend on an $ORIGIN this API does not have.
        return Err(format!("'{text}' must be absolute (end with '.')"));
    }
    let name = Name::parse(text).map_err(|e| e.to_string())?;
    if name.is_wildcard() {
        return Err("a wildcard is not allowed as a target".to_owned());
    }
    Ok(format!("{name}."))
}

/// Splits presentation text into character-strings (RFC 1035 5.1): quoted
/// strings or bare words, with `\X` and `\DDD` escapes.
fn character_strings(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let quoted = bytes[i] == b'"';
        if quoted {
            i += 1;
        }
        let mut current = Vec::new();
        let mut closed = !quoted;
        while i < bytes.len() {
            let b = bytes[i];
            if quoted && b == b'"' {
                closed = true;
                i += 1;
                break;
            }
            if !quoted && (b.is_ascii_whitespace() || b == b'"') {
                break;
            }
            if b == b'\\' {
                let (byte, used) = escape_at(&bytes[i + 1..])?;
                current.push(byte);
                i += 1 + used;
                continue;
            }
            current.push(b);
            i += 1;
        }
        if !closed {
            return Err("unterminated quoted string".to_owned());
        }
        if current.len() > 255 {
            return Err("a character-string is longer than 255 octets".to_owned());
        }
        out.push(current);
    }
    Ok(out)
}

/// Decodes one escape after a backslash: `\DDD` (decimal octet) or `\X`.
fn escape_at(rest: &[u8]) -> Result<(u8, usize), String> {
    match rest {
        [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let value = u32::from(a - b'0') * 100 + u32::from(b - b'0') * 10 + u32::from(c - b'0');
            u8::try_from(value)
                .map(|v| (v, 3))
                .map_err(|_| "\\DDD escape above 255".to_owned())
        }
        [x, ..] => Ok((*x, 1)),
        [] => Err("dangling backslash".to_owned()),
    }
}

fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut strings = character_strings(text)?;
    Ok(if strings.len() == 1 {
        strings.remove(0)
    } else {
        Vec::new()
    })
}

/// Writes a character-string quoted: printable ASCII as is, `"` and `\`
/// escaped, everything else as `\DDD`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values() {
        let v = |t, r| RecordValue::parse(t, r).unwrap();
        assert_eq!(
            v(RecordType::A, "192.0.2.1"),
            RecordValue::A("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            v(RecordType::Txt, "\"a b\" \"\\255\\034\""),
            RecordValue::Txt(vec![b"a b".to_vec(), vec![255, b'"']])
        );
        assert_eq!(
            v(RecordType::Caa, "0 Issue \"letsencrypt.org\""),
            RecordValue::Caa {
                flags: 0,
                tag: "issue".into(),
                value: b"letsencrypt.org".to_vec()
            }
        );
        assert_eq!(
            v(RecordType::Srv, "1 2 5060 Sip.Example.org."),
            RecordValue::Srv {
                priority: 1,
                weight: 2,
                port: 5060,
                target: "sip.example.org.".into()
            }
        );
        assert_eq!(
            v(RecordType::Mx, "10 ."),
            RecordValue::Mx {
                preference: 10,
                exchange: ".".into()
            }
        );
        assert!(RecordValue::parse(RecordType::Mx, "x mail.example.").is_err());
    }

    #[test]
    fn normalises() {
        let n = |t, r| normalize_rdata(t, r);
        assert_eq!(n(RecordType::A, " 192.0.2.1 ").unwrap(), "192.0.2.1");
        assert_eq!(n(RecordType::Aaaa, "2001:DB8:0::1").unwrap(), "2001:db8::1");
        assert_eq!(
            n(RecordType::Mx, "10 Mail.Example.ORG.").unwrap(),
            "10 mail.example.org."
        );
        assert_eq!(n(RecordType::Mx, "0 .").unwrap(), "0 .");
        assert_eq!(
            n(RecordType::Srv, "0 5 5060 sip.example.org.").unwrap(),
            "0 5 5060 sip.example.org."
        );
        assert_eq!(
            n(RecordType::Txt, "hello \"a b\\\" c\" x\\065").unwrap(),
            "\"hello\" \"a b\\\" c\" \"xA\""
        );
        assert_eq!(
            n(RecordType::Txt, "\"caf\\195\\169\"").unwrap(),
            "\"caf\\195\\169\""
        );
        assert_eq!(
            n(RecordType::Caa, "0 issue \"letsencrypt.org\"").unwrap(),
            "0 issue \"letsencrypt.org\""
        );
        assert_eq!(
            n(RecordType::Caa, "128 ISSUEWILD ;").unwrap(),
            "128 issuewild \";\""
        );
        assert_eq!(
            n(RecordType::Cname, "Target.example.org.").unwrap(),
            "target.example.org."
        );
    }

    #[test]
    fn refuses() {
        let bad = [
            (RecordType::A, "300.1.1.1"),
            (RecordType::A, "1.2.3.4 5.6.7.8"),
            (RecordType::Aaaa, "192.0.2.1"),
            (RecordType::Mx, "70000 mx.example.org."),
            (RecordType::Mx, "10 mx.example.org"),
            (RecordType::Cname, "."),
            (RecordType::Ns, "bad..name."),
            (RecordType::Srv, "1 2 3"),
            (RecordType::Txt, ""),
            (RecordType::Txt, "\"open"),
            (RecordType::Caa, "256 issue x"),
            (RecordType::Caa, "0 is-sue x"),
        ];
        for (t, r) in bad {
            assert!(normalize_rdata(t, r).is_err(), "{t} {r:?} accepted");
        }
        let long = format!("\"{}\"", "x".repeat(256));
        assert!(normalize_rdata(RecordType::Txt, &long).is_err());
    }
}
