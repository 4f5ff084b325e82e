//! Zone export: an RFC 1035 §5 master file of a zone exactly as served.
//!
//! Uses the same inputs and the same rules as the snapshot writer (host TTL
//! else the zone default; offline/disabled hosts without addresses; a CNAME
//! hides other data at its owner; static records at a host's name are hidden
//! by the host; wildcard hosts as `*.<host>` records; negative answers use
//! min(SOA TTL, minimum) and are not records). Off the packet path; allocates.

use std::fmt::Write as _;

use crate::render::{self, RenderError, Statics};
use crate::wire::{self, name_to_text};
use crate::zone::{HostData, RecordData, ZoneData};

fn quoted(out: &mut String, value: &[u8]) {
    out.push('"');
    for &c in value {
        match c {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(c));
            }
            0x20..=0x7E => out.push(char::from(c)),
            _ => {
                let _ = write!(out, "\\{c:03}");
            }
        }
    }
    out.push('"');
}

fn abs(name: &str) -> Result<String, RenderError> {
    Ok(name_to_text(&render::name(name)?))
}

/// Presentation form of RDATA.
fn rdata_text(data: &RecordData) -> Result<String, RenderError> {
    let mut out = String::new();
    match data {
        RecordData::A(a) => out.push_str(&a.to_string()),
        RecordData::Aaaa(a) => out.push_str(&a.to_string()),
        RecordData::Mx {
            preference,
            exchange,
        } => out = format!("{preference} {}", abs(exchange)?),
        RecordData::Txt(strings) => {
            if strings.is_empty() {
                out.push_str("\"\"");
            }
            for (i, s) in strings.iter().enumerate() {
                for (j, chunk) in s.as_bytes().chunks(255).enumerate() {
                    if i + j > 0 {
                        out.push(' ');
                    }
                    quoted(&mut out, chunk);
                }
                if s.is_empty() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str("\"\"");
                }
            }
        }
        RecordData::Cname(t) | RecordData::Ns(t) => out = abs(t)?,
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => out = format!("{priority} {weight} {port} {}", abs(target)?),
        RecordData::Caa { flags, tag, value } => {
            out = format!("{flags} {tag} ");
            quoted(&mut out, value.as_bytes());
        }
    }
    Ok(out)
}

fn type_name(data: &RecordData) -> &'static str {
    match data {
        RecordData::A(_) => "A",
        RecordData::Aaaa(_) => "AAAA",
        RecordData::Mx { .. } => "MX",
        RecordData::Txt(_) => "TXT",
        RecordData::Cname(_) => "CNAME",
        RecordData::Srv { .. } => "SRV",
        RecordData::Caa { .. } => "CAA",
        RecordData::Ns(_) => "NS",
    }
}

/// The master file of `zone` with `hosts`, exactly as the responder serves
/// them. Names are absolute; every record carries its TTL and class.
pub fn master_file(zone: &ZoneData, hosts: &[HostData]) -> Result<String, RenderError> {
    let apex = render::name(&zone.name)?;
    let mut apex_lower = apex.clone();
    wire::lowercase_in_place(&mut apex_lower);
    let apex_text = name_to_text(&apex);
    let statics = Statics::new(zone, &apex)?;
    let mut out = String::new();
    let soa = &zone.soa;
    let _ = writeln!(out, "$ORIGIN {apex_text}");
    let _ = writeln!(
        out,
        "{apex_text} {} IN SOA {} {} {} {} {} {} {}",
        soa.ttl,
        abs(&soa.mname)?,
        abs(&soa.rname)?,
        soa.serial,
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum
    );
    for ns in &zone.ns {
        let _ = writeln!(out, "{apex_text} {} IN NS {}", zone.ns_ttl, abs(ns)?);
    }

    // Host names (lower-case) hide static records at the same owner.
    let mut host_names = std::collections::HashSet::new();
    for host in hosts {
        let mut name = render::owner_name(&host.name, &apex)?;
        wire::lowercase_in_place(&mut name);
        host_names.insert(name);
    }
    let mut owners: Vec<&Vec<u8>> = statics.by_owner.keys().collect();
    owners.sort();
    for owner in owners {
        let is_apex = *owner == apex_lower;
        if host_names.contains(owner) {
            continue;
        }
        let served = statics.served_at(owner, is_apex);
        // At a zone cut only NS is authoritative data; the rest is glue,
        // which we still list (a master file carries glue).
        for r in served {
            let owner_text = name_to_text(&render::owner_name(&r.owner, &apex)?);
            let _ = writeln!(
                out,
                "{owner_text} {} IN {} {}",
                r.ttl,
                type_name(&r.data),
                rdata_text(&r.data)?
            );
        }
    }

    for host in hosts {
        let name = name_to_text(&render::owner_name(&host.name, &apex)?);
        let ttl = render::host_ttl(host, zone.default_ttl);
        let mut owners = vec![name.clone()];
        if host.wildcard {
            owners.push(format!("*.{name}"));
        }
        if host.serves_addresses() {
            for owner in &owners {
                if let Some(a) = host.ipv4 {
                    let _ = writeln!(out, "{owner} {ttl} IN A {a}");
                }
                if let Some(a) = host.ipv6 {
                    let _ = writeln!(out, "{owner} {ttl} IN AAAA {a}");
                }
            }
        }
        for token in &host.txt {
            let mut value = String::new();
            quoted(&mut value, token.as_bytes());
            let _ = writeln!(out, "_acme-challenge.{name} {ttl} IN TXT {value}");
        }
    }
    Ok(out)
}
