//! Reading RFC 1035 master files for `ddserver zone import`.
//!
//! The parser is `domain`'s (`zonefile` feature, ~3M records/s); this module
//! only sorts what it yields into the zone's SOA, its apex NS set and the
//! static records, and rejects what a dynamic zone cannot hold with an error
//! that names the record. It never writes anything: the caller commits the
//! result in one transaction, or nothing at all.

use std::path::Path;

use domain::base::iana::{Class, Rtype};
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};

/// Why a master file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    #[error("reading '{path}'")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}': syntax error: {message}")]
    Syntax { path: String, message: String },
    #[error("'{path}': $INCLUDE is not supported; concatenate the files first")]
    Include { path: String },
    #[error("'{path}': record '{owner} {rtype}' has class {class}; only IN is served")]
    Class {
        path: String,
        owner: String,
        rtype: String,
        class: String,
    },
    #[error(
        "'{path}': the file has no SOA record, so the zone's name is unknown (give --origin and add a SOA)"
    )]
    NoSoa { path: String },
    #[error("'{path}': more than one SOA record ({first} and {second})")]
    TwoSoa {
        path: String,
        first: String,
        second: String,
    },
    #[error("'{path}': the zone apex {zone} has no NS record")]
    NoNs { path: String, zone: String },
    #[error("'{path}': record '{owner} {rtype}' is outside the zone {zone}")]
    OutOfZone {
        path: String,
        owner: String,
        rtype: String,
        zone: String,
    },
    #[error(
        "'{path}': record type {rtype} at '{owner}' is not supported (A, AAAA, MX, TXT, CNAME, SRV, CAA, NS)"
    )]
    Unsupported {
        path: String,
        owner: String,
        rtype: String,
    },
}

/// The SOA of an imported zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedSoa {
    pub(crate) mname: String,
    pub(crate) rname: String,
    pub(crate) serial: u32,
    pub(crate) refresh: u32,
    pub(crate) retry: u32,
    pub(crate) expire: u32,
    pub(crate) minimum: u32,
    pub(crate) ttl: u32,
}

/// One static record: names absolute without the trailing dot, lower-case;
/// rdata in presentation form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedRecord {
    pub(crate) owner: String,
    pub(crate) rtype: Rtype,
    pub(crate) ttl: u32,
    pub(crate) rdata: String,
}

/// A whole master file, sorted.
#[derive(Debug, Clone)]
pub(crate) struct ParsedZone {
    pub(crate) name: String,
    pub(crate) soa: ParsedSoa,
    /// The apex NS set. (Its TTL is not kept: the store serves the apex NS
    /// set with the SOA's TTL.)
    pub(crate) ns: Vec<String>,
    /// Everything else, in file order.
    pub(crate) records: Vec<ParsedRecord>,
}

/// An absolute domain name as we store it: lower-case, no trailing dot.
fn plain(name: impl std::fmt::Display) -> String {
    let mut s = name.to_string().to_ascii_lowercase();
    if s.ends_with('.') && s.len() > 1 {
        s.pop();
    }
    s
}

/// Reads and sorts the master file at `path`. `origin` is used when the file
/// does not set `$ORIGIN` itself.
pub(crate) fn read(path: &Path, origin: Option<&str>) -> Result<ParsedZone, ImportError> {
    let shown = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| ImportError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut zonefile = Zonefile::load(&mut file).map_err(|source| ImportError::Read {
        path: shown.clone(),
        source,
    })?;
    if let Some(origin) = origin {
        let absolute = if origin.ends_with('.') {
            origin.to_string()
        } else {
            format!("{origin}.")
        };
        let name = absolute.parse().map_err(|e| ImportError::Syntax {
            path: shown.clone(),
            message: format!("--origin '{origin}': {e}"),
        })?;
        zonefile.set_origin(name);
    }
    parse(zonefile, &shown)
}

fn parse(mut zonefile: Zonefile, path: &str) -> Result<ParsedZone, ImportError> {
    let mut soa: Option<(String, ParsedSoa)> = None;
    let mut rest = Vec::new();
    loop {
        let entry = zonefile.next_entry().map_err(|e| ImportError::Syntax {
            path: path.to_string(),
            message: format!("{e} (at byte {})", zonefile.current_offset()),
        })?;
        let record = match entry {
            None => break,
            Some(Entry::Include { .. }) => {
                return Err(ImportError::Include {
                    path: path.to_string(),
                });
            }
            Some(Entry::Record(record)) => record,
        };
        let owner = plain(record.owner());
        if record.class() != Class::IN {
            return Err(ImportError::Class {
                path: path.to_string(),
                owner,
                rtype: record.rtype().to_string(),
                class: record.class().to_string(),
            });
        }
        let ttl = record.ttl().as_secs();
        match record.data() {
            ZoneRecordData::Soa(s) => {
                let parsed = ParsedSoa {
                    mname: plain(s.mname()),
                    rname: plain(s.rname()),
                    serial: s.serial().into_int(),
                    refresh: s.refresh().as_secs(),
                    retry: s.retry().as_secs(),
                    expire: s.expire().as_secs(),
                    minimum: s.minimum().as_secs(),
                    ttl,
                };
                if let Some((first, _)) = &soa {
                    return Err(ImportError::TwoSoa {
                        path: path.to_string(),
                        first: first.clone(),
                        second: owner,
                    });
                }
                soa = Some((owner, parsed));
            }
            ZoneRecordData::A(_)
            | ZoneRecordData::Aaaa(_)
            | ZoneRecordData::Mx(_)
            | ZoneRecordData::Txt(_)
            | ZoneRecordData::Cname(_)
            | ZoneRecordData::Srv(_)
            | ZoneRecordData::Caa(_)
            | ZoneRecordData::Ns(_) => rest.push(ParsedRecord {
                owner,
                rtype: record.rtype(),
                ttl,
                rdata: mend_names(record.rtype(), record.data().to_string()),
            }),
            _ => {
                return Err(ImportError::Unsupported {
                    path: path.to_string(),
                    owner,
                    rtype: record.rtype().to_string(),
                });
            }
        }
    }
    let Some((name, soa)) = soa else {
        return Err(ImportError::NoSoa {
            path: path.to_string(),
        });
    };
    let mut ns = Vec::new();
    let mut records = Vec::with_capacity(rest.len());
    for record in rest {
        if !is_at_or_below(&record.owner, &name) {
            return Err(ImportError::OutOfZone {
                path: path.to_string(),
                owner: record.owner,
                rtype: record.rtype.to_string(),
                zone: name,
            });
        }
        if record.owner == name && record.rtype == Rtype::NS {
            ns.push(plain(&record.rdata));
        } else {
            records.push(record);
        }
    }
    if ns.is_empty() {
        return Err(ImportError::NoNs {
            path: path.to_string(),
            zone: name,
        });
    }
    Ok(ParsedZone {
        name,
        soa,
        ns,
        records,
    })
}

/// Puts the domain names inside RDATA in the form the store expects:
/// absolute, with the trailing dot. Two quirks of `domain` 0.12's master
/// file scanner are mended here:
/// - RFC 1035 §5.1: "A free standing @ is used to denote the current
///   origin", in RDATA too (`www CNAME @`); the scanner reads it there as a
///   label, giving `@.<origin>`. `@` cannot be a label of a host name.
/// - SRV's presentation form prints its target without the trailing dot.
fn mend_names(rtype: Rtype, rdata: String) -> String {
    let name_field = match rtype {
        Rtype::CNAME | Rtype::NS => 0,
        Rtype::MX => 1,
        Rtype::SRV => 3,
        _ => return rdata,
    };
    rdata
        .split(' ')
        .enumerate()
        .map(|(i, field)| {
            if i != name_field {
                return field.to_owned();
            }
            let field = field.strip_prefix("@.").unwrap_or(field);
            if field.ends_with('.') {
                field.to_owned()
            } else {
                format!("{field}.")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `name` is `zone` or below it (both lower-case, no trailing dot).
fn is_at_or_below(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> Result<ParsedZone, ImportError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.zone");
        std::fs::write(&path, text).unwrap();
        read(&path, None)
    }

    const ZONE: &str = "$ORIGIN Dyn.Example.NET.\n$TTL 60\n\
        @ 300 IN SOA ns1 hostmaster 7 3600 900 604800 30\n\
        @ 3600 IN NS ns1\n@ 3600 IN NS ns2.other.example.\n\
        ns1 IN A 127.0.0.1\n\
        @ IN MX 10 mail\n\
        www IN CNAME @\n\
        mx2 IN MX 20 @\n\
        txt IN TXT \"hello world\" \"two\"\n\
        _sip._udp IN SRV 0 5 5060 sip\n\
        sub IN NS ns.sub\nns.sub IN A 192.0.2.1\n\
        @ IN CAA 0 issue \"letsencrypt.org\"\n\
        v6 IN AAAA 2001:db8::1\n";

    #[test]
    fn sorts_a_zone() {
        let zone = read_str(ZONE).unwrap();
        assert_eq!(zone.name, "dyn.example.net");
        assert_eq!(zone.soa.mname, "ns1.dyn.example.net");
        assert_eq!(zone.soa.rname, "hostmaster.dyn.example.net");
        assert_eq!(
            (zone.soa.serial, zone.soa.minimum, zone.soa.ttl),
            (7, 30, 300)
        );
        assert_eq!(zone.ns, ["ns1.dyn.example.net", "ns2.other.example"]);
        let rtypes: Vec<_> = zone.records.iter().map(|r| r.rtype.to_string()).collect();
        assert_eq!(
            rtypes,
            [
                "A", "MX", "CNAME", "MX", "TXT", "SRV", "NS", "A", "CAA", "AAAA"
            ]
        );
        assert_eq!(zone.records[2].rdata, "Dyn.Example.NET.");
        assert_eq!(zone.records[3].rdata, "20 Dyn.Example.NET.");
        assert_eq!(zone.records[0].owner, "ns1.dyn.example.net");
        assert_eq!(zone.records[0].ttl, 60);
        // Names inside RDATA keep the case they were written in (RFC 4343 §2.1).
        assert_eq!(zone.records[1].rdata, "10 mail.Dyn.Example.NET.");
        assert_eq!(zone.records[5].owner, "_sip._udp.dyn.example.net");
        assert_eq!(zone.records[5].rdata, "0 5 5060 sip.Dyn.Example.NET.");
    }

    #[test]
    fn rejects_what_a_zone_cannot_hold() {
        let no_soa = read_str("$ORIGIN a.example.\n@ 60 IN NS ns\n").unwrap_err();
        assert!(matches!(no_soa, ImportError::NoSoa { .. }), "{no_soa}");
        let no_ns = read_str("$ORIGIN a.example.\n@ 60 IN SOA ns h 1 2 3 4 5\n").unwrap_err();
        assert!(matches!(no_ns, ImportError::NoNs { .. }), "{no_ns}");
        let outside = read_str(
            "$ORIGIN a.example.\n@ 60 IN SOA ns h 1 2 3 4 5\n@ 60 IN NS ns\nb.example. 60 IN A 192.0.2.1\n",
        )
        .unwrap_err();
        assert!(outside.to_string().contains("b.example"), "{outside}");
        let ptr = read_str(
            "$ORIGIN a.example.\n@ 60 IN SOA ns h 1 2 3 4 5\n@ 60 IN NS ns\nx 60 IN PTR y\n",
        )
        .unwrap_err();
        assert!(ptr.to_string().contains("PTR"), "{ptr}");
        let syntax = read_str("$ORIGIN a.example.\n@ 60 IN A not-an-address\n").unwrap_err();
        assert!(matches!(syntax, ImportError::Syntax { .. }), "{syntax}");
        let two = read_str(
            "$ORIGIN a.example.\n@ 60 IN SOA ns h 1 2 3 4 5\n@ 60 IN SOA ns h 1 2 3 4 5\n",
        )
        .unwrap_err();
        assert!(matches!(two, ImportError::TwoSoa { .. }), "{two}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read(Path::new("/nonexistent/zone.db"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/zone.db"), "{err}");
    }
}
