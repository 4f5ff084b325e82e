//! Loading a zone's static data into the responder's input types, fast
//! enough for zones of millions of names.
//!
//! Two decisions make the difference, both measured on the benchmark zone
//! (1.1M records, `../shared/bench/gen_zone.py`):
//! - the records are read in packed pages ([`Store::static_record_pages`])
//!   instead of one row per record;
//! - a static name that holds nothing but one A and/or one AAAA record with
//!   the same TTL, outside any delegation and not a wildcard, is handed to
//!   the snapshot writer as a host entry (same RRsets, same TTL, same
//!   answers) instead of a zone-level static record. The writer stores host
//!   entries in its compact shards only, while zone-level statics are kept
//!   per zone for CNAME, wildcard and delegation decisions, which costs
//!   hundreds of bytes per name. Everything else stays a static record.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, anyhow};
use ddserver_responder::{HostData, RecordData, StaticRecord, ZoneData};
use ddserver_store::{RecordType, RecordValue, Store, StoredRecord, Zone};

/// A zone ready for the snapshot writer: apex data with the static records
/// that need zone-level handling, and the plain address names.
pub(crate) struct LoadedZone {
    pub(crate) data: ZoneData,
    pub(crate) address_names: Vec<HostData>,
}

/// Reads `zone`'s static records and splits them as described above.
pub(crate) async fn read_zone(store: &Store, zone: Zone) -> Result<LoadedZone> {
    let mut pages = store
        .static_record_pages(&zone.name)
        .await
        .with_context(|| format!("reading the static records of {}", zone.name))?;
    let apex = zone.name.as_str().to_owned();
    let mut records = Vec::new();
    while let Some(page) = pages.next_batch().await? {
        records.reserve(page.len());
        for stored in page {
            records.push(static_record(&stored, &apex)?);
        }
    }
    // Name-server targets stay zone-level: glue is taken from there.
    let mut ns_targets: Vec<String> = zone.ns.iter().map(|n| n.as_str().to_owned()).collect();
    ns_targets.extend(records.iter().filter_map(|r| match &r.data {
        RecordData::Ns(target) => Some(target.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }));
    let keep: HashSet<String> = ns_targets
        .iter()
        .filter_map(|t| {
            t.strip_suffix(apex.as_str())
                .and_then(|s| s.strip_suffix('.'))
        })
        .map(str::to_owned)
        .collect();
    let (records, address_names) = split_address_names(records, &keep);
    Ok(LoadedZone {
        data: zone_data(&zone, records),
        address_names,
    })
}

/// The zone's apex data with the given static records.
pub(crate) fn zone_data(zone: &Zone, records: Vec<StaticRecord>) -> ZoneData {
    ZoneData {
        name: zone.name.as_str().to_owned(),
        soa: ddserver_responder::Soa {
            mname: zone.mname.as_str().to_owned(),
            rname: zone.rname.as_str().to_owned(),
            serial: zone.serial,
            refresh: zone.timers.refresh,
            retry: zone.timers.retry,
            expire: zone.timers.expire,
            minimum: zone.timers.minimum,
            ttl: zone.timers.soa_ttl,
        },
        ns: zone.ns.iter().map(|n| n.as_str().to_owned()).collect(),
        ns_ttl: zone.timers.soa_ttl,
        default_ttl: zone.default_ttl,
        records,
    }
}

/// One stored record in the responder's terms: owner relative to the apex
/// (`@` for the apex), typed RDATA. Addresses take a fast path; the rest
/// goes through the store's RDATA parser.
pub(crate) fn static_record(stored: &StoredRecord, apex: &str) -> Result<StaticRecord> {
    let owner = if stored.owner == apex {
        "@".to_owned()
    } else {
        stored
            .owner
            .strip_suffix(apex)
            .and_then(|s| s.strip_suffix('.'))
            .ok_or_else(|| anyhow!("stored record owner {} is outside {apex}", stored.owner))?
            .to_owned()
    };
    let data = match stored.rtype {
        RecordType::A => stored.rdata.parse::<Ipv4Addr>().ok().map(RecordData::A),
        RecordType::Aaaa => stored.rdata.parse::<Ipv6Addr>().ok().map(RecordData::Aaaa),
        _ => None,
    };
    let data = match data {
        Some(data) => data,
        None => record_data(
            RecordValue::parse(stored.rtype, &stored.rdata).map_err(|e| {
                anyhow!(
                    "stored record '{} {} {}' cannot be served: {e}",
                    stored.owner,
                    stored.rtype,
                    stored.rdata
                )
            })?,
        )?,
    };
    Ok(StaticRecord {
        owner,
        ttl: stored.ttl,
        data,
    })
}

/// Typed RDATA from the store's form to the responder's.
pub(crate) fn record_data(value: RecordValue) -> Result<RecordData> {
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .map_err(|_| anyhow!("character-strings that are not UTF-8 are not served yet"))
    };
    Ok(match value {
        RecordValue::A(a) => RecordData::A(a),
        RecordValue::Aaaa(a) => RecordData::Aaaa(a),
        RecordValue::Mx {
            preference,
            exchange,
        } => RecordData::Mx {
            preference,
            exchange,
        },
        RecordValue::Txt(strings) => {
            RecordData::Txt(strings.into_iter().map(text).collect::<Result<_>>()?)
        }
        RecordValue::Cname(target) => RecordData::Cname(target),
        RecordValue::Srv {
            priority,
            weight,
            port,
            target,
        } => RecordData::Srv {
            priority,
            weight,
            port,
            target,
        },
        RecordValue::Caa { flags, tag, value } => RecordData::Caa {
            flags,
            tag,
            value: text(value)?,
        },
        RecordValue::Ns(target) => RecordData::Ns(target),
    })
}

/// Splits off the names that hold only one A and/or one AAAA with one TTL,
/// are not wildcards, not the apex, not at or below a delegation (glue
/// there must stay zone-level so it is answered as a referral) and not in
/// `keep` (relative names, e.g. name-server targets).
pub(crate) fn split_address_names(
    records: Vec<StaticRecord>,
    keep: &HashSet<String>,
) -> (Vec<StaticRecord>, Vec<HostData>) {
    #[derive(Default)]
    struct Owner {
        v4: Option<(Ipv4Addr, u32)>,
        v6: Option<(Ipv6Addr, u32)>,
        other: bool,
    }
    // foldhash, not SipHash: the keys are our own stored names, and this
    // runs once per name of the zone at every load (a profile of a 1M-name
    // load found the default hasher and per-name clones here).
    let hasher = foldhash::fast::RandomState::default;
    let mut owners: HashMap<&str, Owner, _> =
        HashMap::with_capacity_and_hasher(records.len(), hasher());
    let mut cuts: HashSet<&str, _> = HashSet::with_hasher(hasher());
    for record in &records {
        let owner = owners.entry(record.owner.as_str()).or_default();
        match record.data {
            RecordData::A(a) if owner.v4.is_none() => owner.v4 = Some((a, record.ttl)),
            RecordData::Aaaa(a) if owner.v6.is_none() => owner.v6 = Some((a, record.ttl)),
            RecordData::Ns(_) => {
                owner.other = true;
                cuts.insert(record.owner.as_str());
            }
            _ => owner.other = true,
        }
    }
    let below_cut = |owner: &str| {
        cuts.contains(owner)
            || owner
                .match_indices('.')
                .any(|(i, _)| cuts.contains(&owner[i + 1..]))
    };
    let mut simple: HashSet<&str, _> = HashSet::with_capacity_and_hasher(owners.len(), hasher());
    let mut hosts = Vec::with_capacity(owners.len());
    for (name, owner) in &owners {
        if owner.other
            || *name == "@"
            || name.starts_with('*')
            || below_cut(name)
            || keep.contains(*name)
        {
            continue;
        }
        let ttl = match (owner.v4, owner.v6) {
            (Some((_, a)), Some((_, b))) if a != b => continue,
            (Some((_, ttl)), _) | (None, Some((_, ttl))) => ttl,
            (None, None) => continue,
        };
        simple.insert(*name);
        hosts.push(HostData {
            name: (*name).to_owned(),
            ipv4: owner.v4.map(|(a, _)| a),
            ipv6: owner.v6.map(|(a, _)| a),
            ttl: Some(ttl),
            ..HostData::default()
        });
    }
    let stays: Vec<bool> = records
        .iter()
        .map(|r| !simple.contains(r.owner.as_str()))
        .collect();
    drop(simple);
    drop(owners);
    drop(cuts);
    let rest = records
        .into_iter()
        .zip(stays)
        .filter_map(|(record, stays)| stays.then_some(record))
        .collect();
    (rest, hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(owner: &str, ttl: u32, data: RecordData) -> StaticRecord {
        StaticRecord {
            owner: owner.into(),
            ttl,
            data,
        }
    }

    #[test]
    fn only_plain_address_names_move_to_the_host_path() {
        let a = |s: &str| RecordData::A(s.parse().unwrap());
        let aaaa = |s: &str| RecordData::Aaaa(s.parse().unwrap());
        let records = vec![
            rec("h1", 60, a("192.0.2.1")),
            rec("h1", 60, aaaa("2001:db8::1")),
            rec("h2", 60, a("192.0.2.2")),
            rec("two", 60, a("192.0.2.3")),
            rec("two", 60, a("192.0.2.4")),
            rec("ttls", 60, a("192.0.2.5")),
            rec("ttls", 30, aaaa("2001:db8::5")),
            rec("mx", 60, a("192.0.2.6")),
            rec(
                "mx",
                60,
                RecordData::Mx {
                    preference: 1,
                    exchange: "x.example.".into(),
                },
            ),
            rec("@", 60, a("192.0.2.7")),
            rec("*.w", 60, a("192.0.2.8")),
            rec("sub", 60, RecordData::Ns("ns.sub.example.".into())),
            rec("ns.sub", 60, a("192.0.2.9")),
            rec("deep.ns.sub", 60, a("192.0.2.10")),
            rec("ns1", 60, a("192.0.2.11")),
        ];
        let keep = HashSet::from(["ns1".to_string()]);
        let (rest, hosts) = split_address_names(records, &keep);
        let mut names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["h1", "h2"]);
        let h1 = hosts.iter().find(|h| h.name == "h1").unwrap();
        assert_eq!(h1.ttl, Some(60));
        assert!(h1.ipv4.is_some() && h1.ipv6.is_some());
        assert_eq!(rest.len(), 12);
        assert!(rest.iter().all(|r| r.owner != "h1" && r.owner != "h2"));
    }
}
