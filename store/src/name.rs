//! Validated DNS names: the `Name` newtype every zone, host and record owner
//! goes through before it reaches SQL.
//!
//! A `Name` is always a lower-case A-label string without the trailing dot
//! (`xn--bcher-kva.example`), so equality is case-insensitive by
//! construction and the database can compare bytes. Unicode input is mapped
//! with UTS #46 (the `idna` crate) and shown back with [`Name::to_unicode`].
//!
//! This module must never accept a name that cannot be written in wire
//! format (RFC 1035 section 2.3.4: labels of 1..=63 octets, 255 octets in
//! all, which is 253 characters in presentation form without the final dot).

use std::fmt;

/// The longest name in presentation form without the final dot: 255 wire
/// octets minus the root label and the first length octet (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// The longest label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name was refused. Every variant carries the input as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name breaks a rule other than a length limit.
    #[error("invalid name '{name}': {reason}")]
    InvalidName {
        /// The input as given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// One label is longer than 63 octets.
    #[error("invalid name '{name}': label '{label}' is longer than 63 octets")]
    LabelTooLong {
        /// The input as given.
        name: String,
        /// The offending label (A-label form).
        label: String,
    },
    /// The whole name is longer than 253 characters (255 wire octets).
    #[error("invalid name '{name}': {len} characters, at most 253 allowed")]
    NameTooLong {
        /// The input as given.
        name: String,
        /// Its length in A-label presentation form.
        len: usize,
    },
}

/// A validated, lower-case A-label domain name without the trailing dot.
///
/// The leftmost label may be `*` (a wildcard owner for static records);
/// letters, digits, hyphens and underscores are allowed elsewhere. Host
/// names are stricter: see [`Name::is_hostname`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates `input` (ASCII or Unicode, any case, optional trailing dot)
    /// and returns its canonical form.
    pub fn parse(input: &str) -> Result<Name, NameError> {
        let invalid = |reason| NameError::InvalidName {
            name: input.to_owned(),
            reason,
        };
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(invalid("empty name (the root is not allowed here)"));
        }
        // Pure ASCII without A-labels needs no UTS #46 processing, which keeps
        // bulk imports cheap; anything else (Unicode, or `xn--` labels that
        // must decode to valid Unicode) goes through idna.
        let lower = trimmed.is_ascii().then(|| trimmed.to_ascii_lowercase());
        let ascii = if let Some(lower) = lower.filter(|l| !l.contains("xn--")) {
            lower
        } else {
            // The wildcard label is not UTS #46 input: split it off first.
            let (star, rest) = match trimmed.strip_prefix("*.") {
                Some(rest) => ("*.", rest),
                None => ("", trimmed),
            };
            let mapped = idna::domain_to_ascii_cow(rest.as_bytes(), idna::AsciiDenyList::EMPTY)
                .map_err(|_| invalid("not a valid internationalised name (UTS #46)"))?;
            format!("{star}{mapped}")
        };
        if ascii.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong {
                name: input.to_owned(),
                len: ascii.len(),
            });
        }
        for (index, label) in ascii.split('.').enumerate() {
            if label.is_empty() {
                return Err(invalid("empty label (two dots in a row, or a leading dot)"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong {
                    name: input.to_owned(),
                    label: label.to_owned(),
                });
            }
            if label == "*" {
                if index != 0 {
                    return Err(invalid("'*' is only allowed as the leftmost label"));
                }
                continue;
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "labels may contain only letters, digits, '-' and '_'",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label must not start or end with '-'"));
            }
        }
        Ok(Name(ascii))
    }

    /// The canonical A-label form, lower case, without the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name for people: A-labels decoded to Unicode.
    pub fn to_unicode(&self) -> String {
        // `parse` has validated the A-labels, so decoding cannot fail; if it
        // ever did, idna returns the input with the error marked, and the
        // A-label form is the honest fallback.
        let (unicode, result) = idna::domain_to_unicode(&self.0);
        match result {
            Ok(()) => unicode,
            Err(_) => self.0.clone(),
        }
    }

    /// Whether this name lies strictly below `zone` (the apex itself is not
    /// below its zone).
    pub fn is_below(&self, zone: &Name) -> bool {
        self.label_under(zone).is_some()
    }

    /// The part of this name below `zone` (`"www"` for `www.example.org`
    /// under `example.org`, `"a.b"` for `a.b.example.org`), or `None` when
    /// the name is the apex or outside the zone.
    pub fn label_under(&self, zone: &Name) -> Option<&str> {
        let prefix = self.0.strip_suffix(zone.as_str())?;
        prefix.strip_suffix('.').filter(|label| !label.is_empty())
    }

    /// Whether every label is a host name label (RFC 952/1123: letters,
    /// digits, interior hyphens): no underscore and no wildcard.
    pub fn is_hostname(&self) -> bool {
        self.0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    }

    /// Whether the leftmost label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0 == "*" || self.0.starts_with("*.")
    }

    /// The name and all its ancestors, longest first (`a.b.c`, `b.c`, `c`).
    pub fn suffixes(&self) -> impl Iterator<Item = &str> {
        let s = self.0.as_str();
        std::iter::once(s).chain(s.match_indices('.').map(move |(i, _)| &s[i + 1..]))
    }

    /// Builds a `Name` from text the store wrote itself (database columns).
    /// Falls back to full validation, so a hand-edited row cannot smuggle in
    /// a name `parse` would reject.
    pub(crate) fn from_db(text: String) -> Result<Name, NameError> {
        Name::parse(&text)
    }
}

impl fmt::Display for Name {
    /// Displays the A-label form; use [`Name::to_unicode`] for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form() {
        let name = Name::parse("WWW.Example.ORG.").unwrap();
        assert_eq!(name.as_str(), "www.example.org");
        assert_eq!(
            Name::parse("_acme-challenge.h.example.org")
                .unwrap()
                .as_str(),
            "_acme-challenge.h.example.org"
        );
        assert!(Name::parse("*.example.org").unwrap().is_wildcard());
    }

    #[test]
    fn idn_round_trip() {
        let name = Name::parse("Bücher.Example").unwrap();
        assert_eq!(name.as_str(), "xn--bcher-kva.example");
        assert_eq!(name.to_unicode(), "bücher.example");
        assert_eq!(Name::parse("xn--bcher-kva.example").unwrap(), name);
        assert!(Name::parse("xn--zz-.example").is_err());
    }

    #[test]
    fn limits() {
        let label63 = "a".repeat(63);
        assert!(Name::parse(&format!("{label63}.example")).is_ok());
        assert!(matches!(
            Name::parse(&format!("{label63}b.example")),
            Err(NameError::LabelTooLong { .. })
        ));
        let long = [label63.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(matches!(
            Name::parse(&long),
            Err(NameError::NameTooLong { len: 255, .. })
        ));
        let fits = format!("{}.{}", [label63.as_str(); 3].join("."), "a".repeat(61));
        assert_eq!(fits.len(), 253);
        assert!(Name::parse(&fits).is_ok());
    }

    #[test]
    fn bad_characters() {
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a.b",
            "a-.b",
            "a b.c",
            "a/b",
            "a.*.b",
            "ä\u{0}.b",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn relations() {
        let zone = Name::parse("example.org").unwrap();
        let host = Name::parse("a.b.example.org").unwrap();
        assert_eq!(host.label_under(&zone), Some("a.b"));
        assert!(host.is_below(&zone));
        assert!(!zone.is_below(&zone));
        assert!(!Name::parse("badexample.org").unwrap().is_below(&zone));
        assert_eq!(
            host.suffixes().collect::<Vec<_>>(),
            ["a.b.example.org", "b.example.org", "example.org", "org"]
        );
        assert!(host.is_hostname());
        assert!(!Name::parse("_x.example.org").unwrap().is_hostname());
    }
}
