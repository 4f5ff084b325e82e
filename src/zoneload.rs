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

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, anyhow};
use ddserver_responder::hash_index::HashIndex;
use ddserver_responder::{AddressHosts, Change, HostData, RecordData, StaticRecord, ZoneData};
use ddserver_store::{
    RecordPage, RecordType, RecordValue, ServedHostPages, StaticRecordPages, Store, StoreError,
    StoredRecordRef, Zone,
};
use tokio::sync::mpsc;

use crate::feed::served_host;

/// A zone ready for the snapshot writer: apex data with the static records
/// that need zone-level handling, and the plain address names.
pub(crate) struct LoadedZone {
    pub(crate) data: ZoneData,
    pub(crate) address_names: Vec<HostData>,
}

/// Reads `zone`'s static records and splits them as described above.
pub(crate) async fn read_zone(store: &Store, zone: Zone) -> Result<LoadedZone> {
    let split = split_zone(store, &zone, async |_| Ok(())).await?;
    Ok(LoadedZone {
        data: zone_data(&zone, split.statics),
        address_names: split.hosts,
    })
}

/// Splits `zone`'s static records page by page: records are parsed in
/// place from the database's packed text, only what is kept is allocated,
/// and `each_page` sees the splitter after every page (a start-up load
/// hands out what is ready there).
pub(crate) async fn split_zone(
    store: &Store,
    zone: &Zone,
    mut each_page: impl AsyncFnMut(&mut Splitter<'_>) -> Result<()>,
) -> Result<Split> {
    let pages = store
        .static_record_pages(&zone.name)
        .await
        .with_context(|| format!("reading the static records of {}", zone.name))?;
    let mut split = Splitter::new(zone.name.as_str());
    // Sized once: growing the index rehashes every name so far.
    split.expect(pages.remaining_hint());
    let mut pages = read_ahead(pages);
    while let Some(page) = pages.recv().await {
        let page = page?;
        split.reserve(page.len());
        split.add_all(page.iter())?;
        each_page(&mut split).await?;
    }
    // Name-server targets stay zone-level: glue is taken from there.
    Ok(split.finish(&apex_ns(zone)))
}

/// A paged bulk read of the store.
pub(crate) trait Pages: Send + 'static {
    type Page: Send + 'static;
    fn next_page(&mut self) -> impl Future<Output = Result<Option<Self::Page>, StoreError>> + Send;
}

impl Pages for StaticRecordPages {
    type Page = RecordPage;
    fn next_page(&mut self) -> impl Future<Output = Result<Option<RecordPage>, StoreError>> + Send {
        self.next_batch()
    }
}

/// Hosts as changes for the snapshot writer, converted on the read-ahead
/// task. A host whose zone is gone (removed during the load) is left out:
/// the change log replayed after the load removes it anyway.
impl Pages for ServedHostPages {
    type Page = Vec<Change>;
    async fn next_page(&mut self) -> Result<Option<Vec<Change>>, StoreError> {
        let Some(page) = self.next_batch().await? else {
            return Ok(None);
        };
        Ok(Some(
            page.into_iter()
                .filter_map(|host| {
                    let zone = self.zone(host.zone_id)?.as_str().to_owned();
                    Some(Change::UpsertHost(
                        zone,
                        served_host(host.label, host.state),
                    ))
                })
                .collect(),
        ))
    }
}

/// Reads `pages` one page ahead of the caller, so the database produces
/// the next page while the caller works through this one (on SQLite the
/// reads run on sqlx's worker thread: two cores instead of one). A read
/// error is the last item.
pub(crate) fn read_ahead<P: Pages>(mut pages: P) -> mpsc::Receiver<Result<P::Page, StoreError>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(page) = pages.next_page().await.transpose() {
            let failed = page.is_err();
            // A closed channel: the reader gave up (an error of its own).
            if tx.send(page).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// The zone's own name servers (absolute names).
pub(crate) fn apex_ns(zone: &Zone) -> Vec<String> {
    zone.ns.iter().map(|n| n.as_str().to_owned()).collect()
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
pub(crate) fn static_record(stored: &StoredRecordRef<'_>, apex: &str) -> Result<StaticRecord> {
    let owner = relative_owner(stored.owner, apex)?.to_owned();
    let data = match stored.rtype {
        RecordType::A => stored.rdata.parse::<Ipv4Addr>().ok().map(RecordData::A),
        RecordType::Aaaa => stored.rdata.parse::<Ipv6Addr>().ok().map(RecordData::Aaaa),
        _ => None,
    };
    let data = match data {
        Some(data) => data,
        None => record_data(RecordValue::parse(stored.rtype, stored.rdata).map_err(|e| {
            anyhow!(
                "stored record '{} {} {}' cannot be served: {e}",
                stored.owner,
                stored.rtype,
                stored.rdata
            )
        })?)?,
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

/// `owner` relative to `apex` (`@` for the apex itself).
fn relative_owner<'a>(owner: &'a str, apex: &str) -> Result<&'a str> {
    if owner == apex {
        return Ok("@");
    }
    owner
        .strip_suffix(apex)
        .and_then(|s| s.strip_suffix('.'))
        .ok_or_else(|| anyhow!("stored record owner {owner} is outside {apex}"))
}

/// Splits a zone's records, as they stream in, into the plain address
/// names (served on the host path) and the rest (zone-level statics).
///
/// A plain address name holds only one A and/or one AAAA with one TTL, is
/// not a wildcard, not the apex, not at or below a delegation (glue there
/// must stay zone-level so it is answered as a referral) and not a
/// name-server target (glue). A name stays a candidate until a record
/// says otherwise; then its address records move to the statics, and so
/// does every later record of it. Delegations and name-server targets are
/// known only at the end, so candidates are checked against them then.
///
/// A start-up load hands candidates out page by page ([`Self::take_ready`])
/// so the snapshot writer builds while the next page is parsed; a name
/// handed out and demoted later is listed as retracted at the end.
pub(crate) struct Splitter<'z> {
    apex: &'z str,
    statics: Vec<StaticRecord>,
    /// Candidates (and former candidates, `None`) in first-seen order.
    candidates: Vec<Option<Candidate>>,
    /// The candidates' names, one after another (one allocation for all
    /// instead of one per name: a million frees at the end of the zone
    /// were on the load's critical path).
    names: String,
    /// Records the zone is expected to have ([`Self::expect`]), and the
    /// candidates handed out so far: a sizing hint for the writer.
    expected: usize,
    handed_out: usize,
    /// Indexes into `candidates` by the hash of the relative owner, for
    /// names seen with an address record (other owners are not tracked).
    /// Index-only: the name lives in the candidate, not again as a key
    /// (this index and its keys were a third of the load's page faults).
    /// One candidate per hash: an owner whose hash a live candidate of
    /// another name holds (a 64-bit collision) is not made a candidate
    /// and stays static, which answers the same.
    index: HashIndex,
    hasher: foldhash::fast::RandomState,
    /// Owners of NS records below the apex (delegations).
    cuts: HashSet<String, foldhash::fast::RandomState>,
    /// Owners seen with a record other than one A/AAAA each (not
    /// candidates, whatever comes later).
    others: HashSet<String, foldhash::fast::RandomState>,
    /// Per candidate: [`HANDED_OUT`], [`CHANGED`].
    flags: Vec<u8>,
    /// Candidates changed since the last [`Self::take_ready`].
    changed: Vec<u32>,
    /// Names handed out, then demoted.
    retracted: Vec<String>,
}

/// A plain address name so far: a third of the size of a `HostData`
/// (a million of these are held until the zone's last page).
struct Candidate {
    /// Where the name is in [`Splitter::names`].
    name_at: usize,
    name_len: u16,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    ttl: u32,
}

impl Candidate {
    fn name<'n>(&self, names: &'n str) -> &'n str {
        &names[self.name_at..self.name_at + usize::from(self.name_len)]
    }

    fn host(&self, names: &str) -> HostData {
        HostData {
            name: self.name(names).to_owned(),
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            ttl: Some(self.ttl),
            ..HostData::default()
        }
    }
}

/// A candidate's state as [`Splitter::take_ready`] handed it out.
const HANDED_OUT: u8 = 1;
/// A candidate created or changed since the last `take_ready`.
const CHANGED: u8 = 2;

/// What [`Splitter::finish`] leaves.
pub(crate) struct Split {
    /// Zone-level static records.
    pub(crate) statics: Vec<StaticRecord>,
    /// Plain address names not handed out yet.
    pub(crate) hosts: Vec<HostData>,
    /// Names handed out by `take_ready` that are not plain after all:
    /// remove their host entries (their records are in `statics`).
    pub(crate) retracted: Vec<String>,
}

impl<'z> Splitter<'z> {
    pub(crate) fn new(apex: &'z str) -> Self {
        // foldhash, not SipHash: the keys are our own stored names, and
        // this runs once per record at every load (profile of the 1M load).
        Splitter {
            apex,
            statics: Vec::new(),
            candidates: Vec::new(),
            names: String::new(),
            expected: 0,
            handed_out: 0,
            index: HashIndex::default(),
            hasher: foldhash::fast::RandomState::default(),
            cuts: HashSet::default(),
            others: HashSet::default(),
            flags: Vec::new(),
            changed: Vec::new(),
            retracted: Vec::new(),
        }
    }

    /// Room for `records` more records (most of them address names).
    pub(crate) fn reserve(&mut self, records: usize) {
        self.candidates.reserve(records);
        self.flags.reserve(records);
        self.index.reserve(records);
    }

    /// The zone has about `records` records (an upper bound is fine): room
    /// for them, and the hint [`Self::take_ready`] passes on.
    pub(crate) fn expect(&mut self, records: usize) {
        self.expected = records;
        self.reserve(records);
        // Most names of a big zone are short (`h0000001`); growing the
        // names string past this copies it, which is cheap next to the rest.
        self.names.reserve(records.saturating_mul(8));
    }

    /// What the index holds at `hash`: `Ok(Some)` the live candidate for
    /// `owner`, `Ok(None)` nothing, `Err(())` another owner's candidate.
    fn find(&self, hash: u64, owner: &str) -> Result<Option<usize>, ()> {
        match self.index.get(hash) {
            None => Ok(None),
            Some(at) => match &self.candidates[at] {
                Some(host) if host.name(&self.names) == owner => Ok(Some(at)),
                _ => Err(()),
            },
        }
    }

    /// Adds a page's records in order. Owners of address records are
    /// hashed a group ahead and their index slots prefetched: at a million
    /// names each probe is otherwise a cache miss waited for in turn (the
    /// largest cost of the splitter in the 1M-name load's profile).
    pub(crate) fn add_all<'r>(
        &mut self,
        mut records: impl Iterator<Item = Result<StoredRecordRef<'r>, StoreError>>,
    ) -> Result<()> {
        const LOOKAHEAD: usize = 16;
        let mut group = Vec::with_capacity(LOOKAHEAD);
        loop {
            for stored in records.by_ref().take(LOOKAHEAD) {
                let hash = match &stored {
                    Ok(r) if matches!(r.rtype, RecordType::A | RecordType::Aaaa) => {
                        relative_owner(r.owner, self.apex).ok().map(|owner| {
                            let hash = self.hasher.hash_one(owner);
                            self.index.prefetch(hash);
                            hash
                        })
                    }
                    _ => None,
                };
                group.push((stored, hash));
            }
            if group.is_empty() {
                return Ok(());
            }
            for (stored, hash) in group.drain(..) {
                self.add_hashed(stored?, hash)?;
            }
        }
    }

    /// Adds one record; `hash`, when given, is its relative owner's hash.
    fn add_hashed(&mut self, stored: StoredRecordRef<'_>, hash: Option<u64>) -> Result<()> {
        let owner = relative_owner(stored.owner, self.apex)?;
        let address = match stored.rtype {
            RecordType::A => stored.rdata.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            RecordType::Aaaa => stored.rdata.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        };
        let plain = |owner: &str| owner != "@" && !owner.starts_with('*');
        // A name longer than a `u16` is no DNS name: the static path
        // rejects it with a proper error.
        if let Some(address) = address
            && plain(owner)
            && let Ok(name_len) = u16::try_from(owner.len())
            && !self.others.contains(owner)
        {
            let ttl = stored.ttl;
            let hash = hash.unwrap_or_else(|| self.hasher.hash_one(owner));
            let at = match self.find(hash, owner) {
                Ok(Some(at)) => at,
                Err(()) => {
                    self.others.insert(owner.to_owned());
                    self.statics.push(static_record(&stored, self.apex)?);
                    return Ok(());
                }
                Ok(None) => {
                    let at = self.candidates.len();
                    self.index.insert(hash, at);
                    let name_at = self.names.len();
                    self.names.push_str(owner);
                    self.candidates.push(Some(Candidate {
                        name_at,
                        name_len,
                        ipv4: None,
                        ipv6: None,
                        ttl,
                    }));
                    self.flags.push(0);
                    self.candidates.len() - 1
                }
            };
            let Some(host) = &mut self.candidates[at] else {
                unreachable!("a demoted owner is in `others`, checked above");
            };
            let free = match address {
                IpAddr::V4(_) => host.ipv4.is_none(),
                IpAddr::V6(_) => host.ipv6.is_none(),
            };
            if free && host.ttl == ttl {
                match address {
                    IpAddr::V4(a) => host.ipv4 = Some(a),
                    IpAddr::V6(a) => host.ipv6 = Some(a),
                }
                if self.flags[at] & CHANGED == 0 {
                    self.flags[at] |= CHANGED;
                    self.changed.push(at as u32);
                }
                return Ok(());
            }
            // A second address of one family, or another TTL: not plain.
            self.others.insert(owner.to_owned());
            self.demote(at);
            self.statics.push(static_record(&stored, self.apex)?);
            return Ok(());
        }
        let record = static_record(&stored, self.apex)?;
        if matches!(record.data, RecordData::Ns(_)) && owner != "@" {
            self.cuts.insert(owner.to_owned());
        }
        if plain(owner) && !self.others.contains(owner) {
            self.others.insert(owner.to_owned());
            if let Ok(Some(at)) = self.find(self.hasher.hash_one(owner), owner) {
                self.demote(at);
            }
        }
        self.statics.push(record);
        Ok(())
    }

    /// Moves candidate `at`'s address records to the statics.
    fn demote(&mut self, at: usize) {
        let Some(host) = self.candidates[at].take() else {
            return;
        };
        // Out of the index too: it only ever holds live candidates.
        let name = host.name(&self.names);
        let hash = self.hasher.hash_one(name);
        if self.index.get(hash) == Some(at) {
            self.index.remove(hash);
        }
        self.statics.extend(address_records(&host, name));
        if self.flags[at] & HANDED_OUT != 0 {
            self.retracted.push(name.to_owned());
        }
    }

    /// Appends to `ready` the candidates created or changed since the last
    /// call, as they are now. A later record may still demote one (see
    /// [`Split::retracted`]) or give it its other address (it is handed
    /// out again). `ready` learns how many hosts to expect in all.
    pub(crate) fn take_ready(&mut self, ready: &mut AddressHosts) {
        // Sized once per page: growing the batch copied it (profile).
        let name_bytes = self
            .changed
            .iter()
            .filter_map(|&at| self.candidates[at as usize].as_ref())
            .map(|host| usize::from(host.name_len))
            .sum();
        ready.reserve(self.changed.len(), name_bytes);
        for at in self.changed.drain(..) {
            let at = at as usize;
            self.flags[at] = HANDED_OUT;
            if let Some(host) = &self.candidates[at] {
                let name = host.name(&self.names);
                ready.push(name, host.ipv4, host.ipv6, Some(host.ttl));
                self.handed_out += 1;
            }
        }
        ready.expect(self.expected.saturating_sub(self.handed_out) + ready.len());
    }

    /// The statics, the plain address names not handed out yet and the
    /// retracted ones. `apex_ns` are the zone's own name-server names
    /// (absolute): with the NS records' targets, they stay zone-level.
    pub(crate) fn finish(self, apex_ns: &[String]) -> Split {
        let Splitter {
            apex,
            mut statics,
            candidates,
            names,
            expected: _,
            handed_out: _,
            index,
            hasher: _,
            cuts,
            others,
            flags,
            changed: _,
            mut retracted,
        } = self;
        drop(index);
        drop(others);
        let ns_targets =
            apex_ns
                .iter()
                .cloned()
                .chain(statics.iter().filter_map(|r| match &r.data {
                    RecordData::Ns(target) => {
                        Some(target.trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                }));
        let keep: HashSet<String> = ns_targets
            .filter_map(|t| {
                t.strip_suffix(apex)
                    .and_then(|s| s.strip_suffix('.'))
                    .map(str::to_owned)
            })
            .collect();
        let below_cut = |owner: &str| {
            !cuts.is_empty()
                && (cuts.contains(owner)
                    || owner
                        .match_indices('.')
                        .any(|(i, _)| cuts.contains(&owner[i + 1..])))
        };
        let mut hosts = Vec::new();
        for (host, flags) in candidates.into_iter().zip(flags) {
            let Some(host) = host else { continue };
            let name = host.name(&names);
            if below_cut(name) || keep.contains(name) {
                statics.extend(address_records(&host, name));
                if flags & HANDED_OUT != 0 {
                    retracted.push(name.to_owned());
                }
            } else if flags != HANDED_OUT {
                // Never handed out, or changed since.
                hosts.push(host.host(&names));
            }
        }
        Split {
            statics,
            hosts,
            retracted,
        }
    }
}

/// The hash of candidate `at`'s name, for rehashing the index (which holds
/// live candidates only).
/// A candidate's address records (its name is `name`), as statics again.
fn address_records(host: &Candidate, name: &str) -> impl Iterator<Item = StaticRecord> {
    let ttl = host.ttl;
    let v4 = host.ipv4.map(RecordData::A);
    let v6 = host.ipv6.map(RecordData::Aaaa);
    let name = name.to_owned();
    v4.into_iter().chain(v6).map(move |data| StaticRecord {
        owner: name.clone(),
        ttl,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_address_names_move_to_the_host_path() {
        let lines = [
            ("h1", 60, RecordType::A, "192.0.2.1"),
            ("h1", 60, RecordType::Aaaa, "2001:db8::1"),
            ("h2", 60, RecordType::A, "192.0.2.2"),
            ("two", 60, RecordType::A, "192.0.2.3"),
            ("two", 60, RecordType::A, "192.0.2.4"),
            ("ttls", 60, RecordType::A, "192.0.2.5"),
            ("ttls", 30, RecordType::Aaaa, "2001:db8::5"),
            ("mx", 60, RecordType::A, "192.0.2.6"),
            ("mx", 60, RecordType::Mx, "1 x.example."),
            ("txt", 60, RecordType::Txt, "\"t\""),
            ("txt", 60, RecordType::A, "192.0.2.12"),
            ("@", 60, RecordType::A, "192.0.2.7"),
            ("*.w", 60, RecordType::A, "192.0.2.8"),
            ("ns.sub", 60, RecordType::A, "192.0.2.9"),
            ("sub", 60, RecordType::Ns, "ns.sub.example."),
            ("deep.ns.sub", 60, RecordType::A, "192.0.2.10"),
            ("ns1", 60, RecordType::A, "192.0.2.11"),
            ("ns2", 60, RecordType::A, "192.0.2.13"),
            ("@", 60, RecordType::Ns, "ns2.example."),
        ];
        let owners: Vec<String> = lines
            .iter()
            .map(|(o, ..)| match *o {
                "@" => "example".to_owned(),
                o => format!("{o}.example"),
            })
            .collect();
        let records: Vec<StoredRecordRef<'_>> = lines
            .iter()
            .zip(&owners)
            .map(|((_, ttl, rtype, rdata), owner)| StoredRecordRef {
                owner,
                rtype: *rtype,
                ttl: *ttl,
                rdata,
            })
            .collect();
        // Handed out record by record, as a load does page by page: what
        // was handed out (the last version of each name), minus what was
        // retracted, plus what is left, is what the one-piece split gives.
        let mut streamed = Splitter::new("example");
        let mut served = std::collections::BTreeMap::new();
        for record in &records {
            streamed.add_all(std::iter::once(Ok(*record))).unwrap();
            let mut ready = AddressHosts::new("example");
            streamed.take_ready(&mut ready);
            for host in ready.iter() {
                served.insert(host.name.to_owned(), host.to_host_data());
            }
        }
        let end = streamed.finish(&["ns1.example".to_owned()]);
        for name in &end.retracted {
            assert!(
                served.remove(name).is_some(),
                "{name} retracted, never handed out"
            );
        }
        for host in end.hosts {
            served.insert(host.name.clone(), host);
        }
        let mut split = Splitter::new("example");
        split.add_all(records.iter().copied().map(Ok)).unwrap();
        let Split {
            statics: rest,
            hosts,
            retracted,
        } = split.finish(&["ns1.example".to_owned()]);
        assert!(retracted.is_empty());
        let served: Vec<HostData> = served.into_values().collect();
        let mut want = hosts.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(served, want);
        assert_eq!(end.statics.len(), rest.len());
        let mut names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["h1", "h2"]);
        let h1 = hosts.iter().find(|h| h.name == "h1").unwrap();
        assert_eq!(h1.ttl, Some(60));
        assert!(h1.ipv4.is_some() && h1.ipv6.is_some());
        // Every other record stays, once, in its owner's order.
        assert_eq!(rest.len(), lines.len() - 3);
        assert!(rest.iter().all(|r| r.owner != "h1" && r.owner != "h2"));
        let two: Vec<_> = rest.iter().filter(|r| r.owner == "two").collect();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].data, RecordData::A("192.0.2.3".parse().unwrap()));
        assert_eq!(rest.iter().filter(|r| r.owner == "ttls").count(), 2);
        assert_eq!(rest.iter().filter(|r| r.owner == "txt").count(), 2);
        assert_eq!(rest.iter().filter(|r| r.owner == "ns2").count(), 1);
    }

    /// An owner whose hash another live candidate holds (a 64-bit
    /// collision, forced here) stays static; the candidate is untouched.
    #[test]
    fn an_owner_colliding_with_a_candidate_stays_static() {
        let record = |owner, rdata| StoredRecordRef {
            owner,
            rtype: RecordType::A,
            ttl: 60,
            rdata,
        };
        let mut split = Splitter::new("example");
        split
            .add_all([Ok(record("h1.example", "192.0.2.1"))].into_iter())
            .unwrap();
        let collides = split.hasher.hash_one("h9");
        split.index.insert(collides, 0);
        split
            .add_all(
                [
                    Ok(record("h9.example", "192.0.2.9")),
                    Ok(record("h9.example", "192.0.2.10")),
                ]
                .into_iter(),
            )
            .unwrap();
        let end = split.finish(&[]);
        let names: Vec<_> = end.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h1"]);
        assert_eq!(end.hosts[0].ipv4, Some("192.0.2.1".parse().unwrap()));
        let statics: Vec<_> = end
            .statics
            .iter()
            .map(|r| (&r.owner[..], &r.data))
            .collect();
        assert_eq!(
            statics,
            [
                ("h9", &RecordData::A("192.0.2.9".parse().unwrap())),
                ("h9", &RecordData::A("192.0.2.10".parse().unwrap())),
            ]
        );
    }
}
