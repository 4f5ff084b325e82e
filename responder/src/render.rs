//! Publish-time rendering of RRsets into the snapshot's entry format.
//!
//! Runs on the writer thread only (it allocates freely); the handler merely
//! copies what is rendered here (STYLE habit 3, NSD's precompiled answers).
//!
//! Entry payload format (one per owner name, stored in a shard's arena):
//!
//! ```text
//! payload := kind:u8 rrset*
//! rrset   := type:u16be count:u16be len:u16be rr{count}   (len = octets of the rrs)
//! rr      := owner type:u16be class:u16be ttl:u32be rdlen:u16be rdata
//! ```
//!
//! `owner` is the two octets `C0 0C`, a compression pointer to the question
//! name (RFC 1035 §4.1.4), which the encoder rewrites when the owner is some
//! other name in the response (a suffix of the question, a CNAME target). The
//! one exception is the glue pseudo-RRset (type 0) of a delegation, whose
//! owners are full wire names, copied as they are. Names inside RDATA are
//! written uncompressed (allowed everywhere; required for SRV by RFC 2782).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{
    self, CLASS_IN, NameError, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_SOA, TYPE_TXT,
};
use crate::zone::{HostData, RecordData, StaticRecord, ZoneData};

/// A node with no records of its own but names below it (RFC 8020 §2: such
/// an empty non-terminal exists, so queries for it are NODATA).
pub(crate) const KIND_ENT: u8 = 0;
/// A dynamic host.
pub(crate) const KIND_HOST: u8 = 1;
/// `_acme-challenge.<host>` TXT records.
pub(crate) const KIND_ACME: u8 = 2;
/// Static records (no NS).
pub(crate) const KIND_STATIC: u8 = 3;
/// Static NS below the apex: a zone cut (RFC 1034 §4.2.1).
pub(crate) const KIND_DELEGATION: u8 = 4;
/// The zone apex (SOA, NS, apex static records).
pub(crate) const KIND_APEX: u8 = 5;
pub(crate) const KIND_MASK: u8 = 0x0F;
/// The host answers for all names below it.
pub(crate) const FLAG_WILDCARD: u8 = 0x10;
/// The node holds a CNAME (and nothing else, RFC 1034 §3.6.2).
pub(crate) const FLAG_CNAME: u8 = 0x20;
/// On a host: its `_acme-challenge` name holds ACME TXT records (lets the
/// writer skip a lookup per change).
pub(crate) const FLAG_HAS_ACME: u8 = 0x40;
/// Pseudo type of the glue RRset inside a delegation payload.
pub(crate) const TYPE_GLUE: u16 = 0;

/// The placeholder owner: pointer to offset 12, the question name.
pub(crate) const OWNER_QNAME: [u8; 2] = [0xC0, 0x0C];

/// Why some configured data cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("bad name {name:?}: {reason}")]
    Name { name: String, reason: NameError },
    #[error("RDATA of a {rtype} record at {owner:?} is larger than 65535 octets")]
    TooLarge { owner: String, rtype: u16 },
    #[error("CAA tag {0:?} must be 1-255 ASCII letters or digits (RFC 8659 §4.1)")]
    CaaTag(String),
}

pub(crate) fn name(text: &str) -> Result<Vec<u8>, RenderError> {
    wire::name_from_text(text).map_err(|reason| RenderError::Name {
        name: text.to_owned(),
        reason,
    })
}

/// Wire form of `relative` under the wire-form `apex` (`@`/empty = apex).
pub(crate) fn owner_name(relative: &str, apex: &[u8]) -> Result<Vec<u8>, RenderError> {
    let mut wire = Vec::with_capacity(relative.len() + 2 + apex.len());
    owner_name_into(relative, apex, &mut wire)?;
    Ok(wire)
}

/// [`owner_name`] into `out` (cleared first): a bulk load renders every
/// name into one reused buffer instead of allocating one per name.
pub(crate) fn owner_name_into(
    relative: &str,
    apex: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RenderError> {
    out.clear();
    if relative.is_empty() || relative == "@" {
        out.extend_from_slice(apex);
        return Ok(());
    }
    let rel = relative.strip_suffix('.').unwrap_or(relative);
    wire::name_from_text_into(rel, out).map_err(|reason| RenderError::Name {
        name: rel.to_owned(),
        reason,
    })?;
    out.pop();
    out.extend_from_slice(apex);
    if out.len() > wire::MAX_NAME_LEN {
        return Err(RenderError::Name {
            name: relative.to_owned(),
            reason: NameError::NameTooLong,
        });
    }
    Ok(())
}

/// Pushes character-strings (RFC 1035 §3.3), splitting long values.
fn push_strings(out: &mut Vec<u8>, value: &[u8]) {
    if value.is_empty() {
        out.push(0);
        return;
    }
    for chunk in value.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

/// RDATA of a static record.
pub(crate) fn rdata(data: &RecordData) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    match data {
        RecordData::A(a) => out.extend_from_slice(&a.octets()),
        RecordData::Aaaa(a) => out.extend_from_slice(&a.octets()),
        RecordData::Mx {
            preference,
            exchange,
        } => {
            out.extend_from_slice(&preference.to_be_bytes());
            out.extend_from_slice(&name(exchange)?);
        }
        RecordData::Txt(strings) => {
            if strings.is_empty() {
                out.push(0);
            }
            for s in strings {
                push_strings(&mut out, s.as_bytes());
            }
        }
        RecordData::Cname(target) | RecordData::Ns(target) => out.extend_from_slice(&name(target)?),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            out.extend_from_slice(&priority.to_be_bytes());
            out.extend_from_slice(&weight.to_be_bytes());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&name(target)?);
        }
        RecordData::Caa { flags, tag, value } => {
            if tag.is_empty() || tag.len() > 255 || !tag.bytes().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(RenderError::CaaTag(tag.clone()));
            }
            out.push(*flags);
            out.push(tag.len() as u8);
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
    Ok(out)
}

/// Builds one payload RRset by RRset.
pub(crate) struct PayloadBuilder {
    out: Vec<u8>,
}

impl PayloadBuilder {
    pub(crate) fn new(kind: u8) -> Self {
        Self { out: vec![kind] }
    }

    /// A builder writing into `buf` (emptied first), to reuse its memory.
    pub(crate) fn reusing(mut buf: Vec<u8>, kind: u8) -> Self {
        buf.clear();
        buf.push(kind);
        Self { out: buf }
    }

    /// The A and AAAA RRsets of a host.
    fn addresses(&mut self, ttl: u32, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) {
        // Address RDATA is 4 or 16 octets: rendering cannot fail.
        if let Some(a) = ipv4 {
            let _ = self.rrset(TYPE_A, CLASS_IN, ttl, [&a.octets()[..]]);
        }
        if let Some(a) = ipv6 {
            let _ = self.rrset(TYPE_AAAA, CLASS_IN, ttl, [&a.octets()[..]]);
        }
    }

    /// Appends an RRset whose owner is the question-name placeholder. All
    /// records get `ttl` (RFC 2181 §5.2: one TTL per RRset).
    pub(crate) fn rrset<'a>(
        &mut self,
        rtype: u16,
        class: u16,
        ttl: u32,
        rdatas: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), RenderError> {
        let head = self.out.len();
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&[0; 4]);
        let mut count: u16 = 0;
        for rd in rdatas {
            self.out.extend_from_slice(&OWNER_QNAME);
            push_rr_tail(&mut self.out, rtype, class, ttl, rd)?;
            count += 1;
        }
        self.close(head, count, rtype)
    }

    /// Appends the glue pseudo-RRset: records with full owner names.
    pub(crate) fn glue(&mut self, records: &[GlueRecord]) -> Result<(), RenderError> {
        if records.is_empty() {
            return Ok(());
        }
        let head = self.out.len();
        self.out.extend_from_slice(&TYPE_GLUE.to_be_bytes());
        self.out.extend_from_slice(&[0; 4]);
        for (owner, rtype, ttl, rd) in records {
            self.out.extend_from_slice(owner);
            push_rr_tail(&mut self.out, *rtype, CLASS_IN, *ttl, rd)?;
        }
        self.close(head, records.len() as u16, TYPE_GLUE)
    }

    fn close(&mut self, head: usize, count: u16, rtype: u16) -> Result<(), RenderError> {
        if count == 0 {
            self.out.truncate(head);
            return Ok(());
        }
        let len = u16::try_from(self.out.len() - head - 6).map_err(|_| RenderError::TooLarge {
            owner: String::new(),
            rtype,
        })?;
        self.out[head + 2..head + 4].copy_from_slice(&count.to_be_bytes());
        self.out[head + 4..head + 6].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

fn push_rr_tail(
    out: &mut Vec<u8>,
    rtype: u16,
    class: u16,
    ttl: u32,
    rd: &[u8],
) -> Result<(), RenderError> {
    let rdlen = u16::try_from(rd.len()).map_err(|_| RenderError::TooLarge {
        owner: String::new(),
        rtype,
    })?;
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&rdlen.to_be_bytes());
    out.extend_from_slice(rd);
    Ok(())
}

/// The TTL of a host's records.
pub(crate) fn host_ttl(host: &HostData, zone_default: u32) -> u32 {
    host.ttl.unwrap_or(zone_default)
}

/// A host node: A and AAAA unless offline/disabled (then NODATA).
pub(crate) fn host_payload(host: &HostData, zone_default: u32, has_acme: bool) -> Vec<u8> {
    let flags =
        if host.wildcard { FLAG_WILDCARD } else { 0 } | if has_acme { FLAG_HAS_ACME } else { 0 };
    let mut b = PayloadBuilder::new(KIND_HOST | flags);
    if host.serves_addresses() {
        b.addresses(host_ttl(host, zone_default), host.ipv4, host.ipv6);
    }
    b.finish()
}

/// The payload of a host with addresses only (no flags, no ACME name):
/// [`host_payload`] rendered into `buf`, which a bulk load reuses for
/// every name.
pub(crate) fn address_host_payload(
    buf: Vec<u8>,
    ttl: u32,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
) -> Vec<u8> {
    let mut b = PayloadBuilder::reusing(buf, KIND_HOST);
    b.addresses(ttl, ipv4, ipv6);
    b.finish()
}

/// `_acme-challenge.<host>`: one TXT record per token.
pub(crate) fn acme_payload(host: &HostData, zone_default: u32) -> Result<Vec<u8>, RenderError> {
    let mut b = PayloadBuilder::new(KIND_ACME);
    let rdatas: Vec<Vec<u8>> = host
        .txt
        .iter()
        .map(|t| {
            let mut rd = Vec::new();
            push_strings(&mut rd, t.as_bytes());
            rd
        })
        .collect();
    b.rrset(
        TYPE_TXT,
        CLASS_IN,
        host_ttl(host, zone_default),
        rdatas.iter().map(Vec::as_slice),
    )?;
    Ok(b.finish())
}

/// Groups records by type in first-seen order, with the RRset TTL being the
/// smallest TTL of its records (RFC 2181 §5.2).
/// An RRset being grouped: type, TTL, RDATAs.
type GroupedSet = (u16, u32, Vec<Vec<u8>>);
/// A glue record: owner (wire, case kept), type, TTL, RDATA.
pub(crate) type GlueRecord = (Vec<u8>, u16, u32, Vec<u8>);

fn group_by_type(records: &[&StaticRecord]) -> Result<Vec<GroupedSet>, RenderError> {
    let mut sets: Vec<GroupedSet> = Vec::new();
    for r in records {
        let rtype = r.data.rtype();
        let rd = rdata(&r.data)?;
        match sets.iter_mut().find(|s| s.0 == rtype) {
            Some(set) => {
                set.1 = set.1.min(r.ttl);
                if !set.2.contains(&rd) {
                    set.2.push(rd);
                }
            }
            None => sets.push((rtype, r.ttl, vec![rd])),
        }
    }
    Ok(sets)
}

/// Static records of one zone, grouped by lower-case owner.
pub(crate) struct Statics {
    pub(crate) by_owner: HashMap<Vec<u8>, Vec<StaticRecord>>,
}

impl Statics {
    pub(crate) fn new(zone: &ZoneData, apex: &[u8]) -> Result<Self, RenderError> {
        let mut by_owner: HashMap<Vec<u8>, Vec<StaticRecord>> = HashMap::new();
        for r in &zone.records {
            let mut owner = owner_name(&r.owner, apex)?;
            wire::lowercase_in_place(&mut owner);
            rdata(&r.data)?; // validate now, so later rendering cannot fail
            by_owner.entry(owner).or_default().push(r.clone());
        }
        Ok(Self { by_owner })
    }

    /// Which records at `owner` are served: a CNAME excludes everything else
    /// (RFC 1034 §3.6.2, RFC 2181 §10.1); NS at the apex lives in ZoneData.
    pub(crate) fn served_at<'a>(&'a self, owner: &[u8], is_apex: bool) -> Vec<&'a StaticRecord> {
        let Some(records) = self.by_owner.get(owner) else {
            return Vec::new();
        };
        if !is_apex
            && let Some(c) = records
                .iter()
                .find(|r| matches!(r.data, RecordData::Cname(_)))
        {
            return vec![c];
        }
        records
            .iter()
            .filter(|r| !(is_apex && matches!(r.data, RecordData::Ns(_) | RecordData::Cname(_))))
            .collect()
    }

    /// Payload for a non-apex static owner (STATIC, CNAME or DELEGATION).
    pub(crate) fn payload(&self, owner: &[u8]) -> Result<Option<Vec<u8>>, RenderError> {
        let served = self.served_at(owner, false);
        if served.is_empty() {
            return Ok(None);
        }
        let sets = group_by_type(&served)?;
        if let Some(ns) = sets.iter().find(|s| s.0 == TYPE_NS) {
            // A zone cut: only NS is served here; data below is glue.
            let mut b = PayloadBuilder::new(KIND_DELEGATION);
            b.rrset(TYPE_NS, CLASS_IN, ns.1, ns.2.iter().map(Vec::as_slice))?;
            b.glue(&self.glue(owner, &ns.2)?)?;
            return Ok(Some(b.finish()));
        }
        let kind = if sets.iter().any(|s| s.0 == TYPE_CNAME) {
            KIND_STATIC | FLAG_CNAME
        } else {
            KIND_STATIC
        };
        let mut b = PayloadBuilder::new(kind);
        for (rtype, ttl, rds) in &sets {
            b.rrset(*rtype, CLASS_IN, *ttl, rds.iter().map(Vec::as_slice))?;
        }
        Ok(Some(b.finish()))
    }

    /// In-domain glue (RFC 9471 §2.1): A/AAAA records of NS targets at or
    /// below the cut, from the zone's static records.
    fn glue(&self, cut: &[u8], targets: &[Vec<u8>]) -> Result<Vec<GlueRecord>, RenderError> {
        let mut glue = Vec::new();
        for target in targets {
            let mut lower = target.clone();
            wire::lowercase_in_place(&mut lower);
            if !lower.ends_with(cut) {
                continue;
            }
            let Some(records) = self.by_owner.get(&lower) else {
                continue;
            };
            for r in records {
                let rtype = r.data.rtype();
                if rtype == TYPE_A || rtype == TYPE_AAAA {
                    glue.push((target.clone(), rtype, r.ttl, rdata(&r.data)?));
                }
            }
        }
        Ok(glue)
    }
}

/// SOA RDATA (RFC 1035 §3.3.13).
pub(crate) fn soa_rdata(zone: &ZoneData) -> Result<Vec<u8>, RenderError> {
    let mut rd = name(&zone.soa.mname)?;
    rd.extend_from_slice(&name(&zone.soa.rname)?);
    for v in [
        zone.soa.serial,
        zone.soa.refresh,
        zone.soa.retry,
        zone.soa.expire,
        zone.soa.minimum,
    ] {
        rd.extend_from_slice(&v.to_be_bytes());
    }
    Ok(rd)
}

/// The apex node: SOA, NS, then the apex's static records.
pub(crate) fn apex_payload(
    zone: &ZoneData,
    statics: &Statics,
    apex: &[u8],
) -> Result<Vec<u8>, RenderError> {
    let mut b = PayloadBuilder::new(KIND_APEX);
    b.rrset(
        TYPE_SOA,
        CLASS_IN,
        zone.soa.ttl,
        [soa_rdata(zone)?.as_slice()],
    )?;
    let ns: Vec<Vec<u8>> = zone.ns.iter().map(|n| name(n)).collect::<Result<_, _>>()?;
    b.rrset(TYPE_NS, CLASS_IN, zone.ns_ttl, ns.iter().map(Vec::as_slice))?;
    let mut lower = apex.to_vec();
    wire::lowercase_in_place(&mut lower);
    for (rtype, ttl, rds) in group_by_type(&statics.served_at(&lower, true))? {
        b.rrset(rtype, CLASS_IN, ttl, rds.iter().map(Vec::as_slice))?;
    }
    Ok(b.finish())
}

/// The SOA record of negative answers: TTL = min(SOA TTL, SOA minimum)
/// (RFC 2308 §3). Its owner placeholder is rewritten to the apex's offset
/// inside the question name.
pub(crate) fn negative_soa(zone: &ZoneData) -> Result<Vec<u8>, RenderError> {
    let mut out = OWNER_QNAME.to_vec();
    push_rr_tail(
        &mut out,
        TYPE_SOA,
        CLASS_IN,
        zone.soa.ttl.min(zone.soa.minimum),
        &soa_rdata(zone)?,
    )?;
    Ok(out)
}

/// A payload for CHAOS TXT answers (`version.bind`, `id.server`).
pub(crate) fn chaos_txt(text: &str) -> Vec<u8> {
    let mut rd = Vec::new();
    push_strings(&mut rd, text.as_bytes());
    let mut b = PayloadBuilder::new(KIND_STATIC);
    // A string of at most a few hundred octets always fits.
    let _ = b.rrset(TYPE_TXT, wire::CLASS_CH, 0, [rd.as_slice()]);
    b.finish()
}

/// Iterates the RRsets of a payload: (type, count, records).
pub(crate) fn rrsets(payload: &[u8]) -> RrsetIter<'_> {
    RrsetIter {
        rest: payload.get(1..).unwrap_or(&[]),
    }
}

pub(crate) struct RrsetIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RrsetIter<'a> {
    type Item = (u16, u16, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 6 {
            return None;
        }
        let rtype = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        let count = u16::from_be_bytes([self.rest[2], self.rest[3]]);
        let len = usize::from(u16::from_be_bytes([self.rest[4], self.rest[5]]));
        let records = self.rest.get(6..6 + len)?;
        self.rest = &self.rest[6 + len..];
        Some((rtype, count, records))
    }
}
