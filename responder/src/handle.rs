//! The DNS logic: one pure function from query bytes to response bytes.
//!
//! [`handle`] checks the header, parses the question (lower-casing the name
//! into a stack buffer), *decides* a small [`Plan`] (which pre-rendered RRsets
//! go in which section, which RCODE, AA or not), then *encodes* it (STYLE
//! habit 4, NSD's `answer` + `encode_answer`): header and question bytes are
//! copied verbatim (case kept, RFC 4343 §4.1), RRsets are memcpy'd from the
//! snapshot with their owner as a compression pointer into the question
//! (RFC 1035 §4.1.4), then OPT (RFC 6891).
//!
//! Must never: allocate, lock, log, make a syscall, or panic on any input.
//! Both I/O backends, the tests and the fuzzer call it directly.

use crate::render::{self, FLAG_CNAME, FLAG_WILDCARD, KIND_DELEGATION, KIND_MASK, TYPE_GLUE};
use crate::snapshot::{Settings, Snapshot};
use crate::wire::*;
use crate::{Outcome, Transport};

/// Longest CNAME chain we follow inside a zone before answering with what
/// we have (loop protection; Knot and NSD use similar small limits).
const MAX_CHAIN: usize = 8;
/// An OPT record without options: root owner, type, class, TTL, RDLEN.
const OPT_LEN: usize = 11;
/// Most address RRsets added as additional data for one answer (A and
/// AAAA for up to eight targets); Knot and NSD add them all, answers with
/// more targets than this are rare and the rest is optional anyway.
const MAX_EXTRA: usize = 16;
/// Answer records whose RDATA positions are remembered for `Owner::Rdata`.
const MAX_TARGETS: usize = MAX_EXTRA / 2;
/// UDP size without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;
/// TCP message size limit (RFC 1035 §4.2.2: a two-octet length prefix).
const TCP_LIMIT: usize = 65535;

/// Answers one query. `query` is the received message, `response` the
/// worker's buffer (at least 512 octets for UDP; 65535 to use the whole TCP
/// size). Returns how many octets of `response` to send, or `Drop`.
pub fn handle(
    snapshot: &Snapshot,
    query: &[u8],
    response: &mut [u8],
    transport: Transport,
) -> Outcome {
    if query.len() < HEADER_LEN || response.len() < HEADER_LEN {
        return Outcome::Drop;
    }
    // Never answer a response (RFC 1035 §4.1.1 QR; avoids reflection loops).
    if query[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let opcode = (query[2] >> 3) & 0x0F;
    if opcode != 0 {
        // Only QUERY is implemented (RFC 1035 §4.1.1: NOTIMP).
        return header_only(query, response, RCODE_NOTIMP);
    }
    let count = |at| u16::from_be_bytes([query[at], query[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    // One question (RFC 9619), nothing in the answer section of a query.
    if qdcount != 1 || ancount != 0 {
        return header_only(query, response, RCODE_FORMERR);
    }
    let mut qname = NameKey::new();
    let Ok(name_end) = qname.parse_into(query, HEADER_LEN) else {
        return header_only(query, response, RCODE_FORMERR);
    };
    let (Some(qtype), Some(qclass)) = (read_u16(query, name_end), read_u16(query, name_end + 2))
    else {
        return header_only(query, response, RCODE_FORMERR);
    };
    let question_end = name_end + 4;
    let Ok(edns) = parse_edns(query, question_end, nscount, arcount) else {
        return header_only(query, response, RCODE_FORMERR);
    };

    let settings = &*snapshot.settings;
    let limit = match transport {
        Transport::Tcp => TCP_LIMIT,
        // RFC 6891 §6.2.5: sizes below 512 are treated as 512; we never
        // exceed our own configured size either.
        Transport::Udp => match edns {
            Some(e) => usize::from(e.payload.max(512).min(settings.udp_payload_size)),
            None => CLASSIC_UDP_LIMIT,
        },
    }
    .min(response.len());
    let reserved = if edns.is_some() { OPT_LEN } else { 0 };
    if question_end + reserved > limit {
        return Outcome::Drop;
    }

    let mut plan = Plan::new(RCODE_REFUSED, false);
    match edns {
        // RFC 6891 §6.1.3: unknown version → BADVERS, no answer.
        Some(e) if e.version > 0 => {
            plan.rcode = RCODE_NOERROR;
            plan.extended_rcode = EXTENDED_RCODE_BADVERS;
        }
        _ => match qclass {
            // Zone transfer is not offered yet (RFC 5936 §4.2: REFUSED).
            CLASS_IN if qtype == TYPE_AXFR || qtype == TYPE_IXFR => {}
            CLASS_IN => decide(snapshot, &qname, qtype, &mut plan),
            CLASS_CH => decide_chaos(settings, &qname, qtype, &mut plan),
            // Other classes: not ours (REFUSED, no AA).
            _ => {}
        },
    }
    encode(query, question_end, &plan, edns, settings, limit, response)
}

/// The EDNS parameters of a query (RFC 6891 §6.1.2).
#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// Walks the authority and additional sections looking for OPT.
/// More than one OPT, or an OPT not owned by the root, is FORMERR
/// (RFC 6891 §6.1.1).
fn parse_edns(
    query: &[u8],
    mut pos: usize,
    nscount: u16,
    arcount: u16,
) -> Result<Option<Edns>, ()> {
    for _ in 0..nscount {
        pos = skip_record(query, pos).ok_or(())?.0;
    }
    let mut edns = None;
    for _ in 0..arcount {
        let (end, rtype) = skip_record(query, pos).ok_or(())?;
        if rtype == TYPE_OPT {
            if edns.is_some() || query[pos] != 0 {
                return Err(());
            }
            // Root owner (1 octet), then TYPE, CLASS = payload, TTL.
            edns = Some(Edns {
                payload: u16::from_be_bytes([query[pos + 3], query[pos + 4]]),
                version: query[pos + 6],
                dnssec_ok: query[pos + 7] & 0x80 != 0,
            });
        }
        pos = end;
    }
    Ok(edns)
}

/// Skips one record; returns the offset past it and its type.
fn skip_record(msg: &[u8], pos: usize) -> Option<(usize, u16)> {
    let after_name = skip_name(msg, pos)?;
    let rtype = read_u16(msg, after_name)?;
    let rdlen = usize::from(read_u16(msg, after_name + 8)?);
    let end = after_name + 10 + rdlen;
    (end <= msg.len()).then_some((end, rtype))
}

/// A FORMERR/NOTIMP answer: the header alone, QDCOUNT 0 (as NSD does when
/// the question cannot be trusted). Keeps ID, opcode, RD.
fn header_only(query: &[u8], response: &mut [u8], rcode: u8) -> Outcome {
    response[..2].copy_from_slice(&query[..2]);
    response[2] = 0x80 | (query[2] & 0x79);
    response[3] = rcode;
    response[4..12].fill(0);
    Outcome::Reply(HEADER_LEN)
}

/// Where a piece's owner name is in the response.
#[derive(Clone, Copy)]
enum Owner {
    /// Stored as full names (glue): copy as is.
    Verbatim,
    /// The question name without its first `n` octets.
    Question(u16),
    /// The target name of the last CNAME written, without its first `n` octets.
    Target(u16),
    /// The name inside the RDATA of record `record` of answer piece
    /// `piece`, `skip` octets into that RDATA (MX exchange, SRV target, NS
    /// name): additional-section data points at the name already written.
    Rdata { piece: u8, record: u8, skip: u8 },
}

/// One RRset to copy: `count` records in the entry format of `render`.
#[derive(Clone, Copy)]
struct Piece<'a> {
    records: &'a [u8],
    count: u16,
    owner: Owner,
}

const EMPTY_PIECE: Piece<'static> = Piece {
    records: &[],
    count: 0,
    owner: Owner::Verbatim,
};

/// What to answer, decided before any byte of the response is written.
struct Plan<'a> {
    rcode: u8,
    extended_rcode: u8,
    authoritative: bool,
    answer: [Piece<'a>; MAX_CHAIN + 1],
    answer_len: usize,
    authority: Option<Piece<'a>>,
    additional: Option<Piece<'a>>,
    /// Addresses of in-zone MX/NS/SRV targets (RFC 1035 §3.3.9, §3.3.11,
    /// RFC 2782): optional, left out rather than truncating (RFC 2181 §9).
    extra: [Piece<'a>; MAX_EXTRA],
    extra_len: usize,
}

impl<'a> Plan<'a> {
    fn new(rcode: u8, authoritative: bool) -> Self {
        Self {
            rcode,
            extended_rcode: 0,
            authoritative,
            answer: [EMPTY_PIECE; MAX_CHAIN + 1],
            answer_len: 0,
            authority: None,
            additional: None,
            extra: [EMPTY_PIECE; MAX_EXTRA],
            extra_len: 0,
        }
    }

    fn push_answer(&mut self, piece: Piece<'a>) {
        if self.answer_len < self.answer.len() {
            self.answer[self.answer_len] = piece;
            self.answer_len += 1;
        }
    }
}

/// The RRset of type `rtype` in a payload.
#[inline]
fn rrset(payload: &[u8], rtype: u16) -> Option<(u16, &[u8])> {
    render::rrsets(payload)
        .find(|s| s.0 == rtype)
        .map(|(_, c, r)| (c, r))
}

/// What a name resolves to inside its zone (RFC 1034 §4.3.2 step 3).
enum Found<'a> {
    /// The name exists (possibly as an empty non-terminal).
    Node(&'a [u8]),
    /// The name does not exist, but a wildcard host above it answers.
    Wildcard(&'a [u8]),
    /// The name is at or below a zone cut at label `usize`.
    Referral(&'a [u8], usize),
    NxDomain,
}

/// Walks from the apex (at label `apex`) down to `name`, one lookup per
/// label: stops at a zone cut, or at the first missing name (whose parent
/// is the closest encloser, RFC 4592 §3.3.1).
#[inline]
fn find<'a>(snapshot: &'a Snapshot, name: &NameKey, apex: usize, qtype: u16) -> Found<'a> {
    if apex == 0 {
        return snapshot
            .get(name.as_bytes())
            .map_or(Found::NxDomain, Found::Node);
    }
    // The apex itself exists (it holds the SOA) and is never a wildcard
    // host, so the walk starts one label below it.
    let mut parent: Option<&[u8]> = None;
    for i in (0..apex).rev() {
        match snapshot.get(name.suffix(i)) {
            Some(payload) => {
                // DS lives on the parent side of a cut (RFC 4035 §3.1.4.1).
                if i < apex
                    && payload[0] & KIND_MASK == KIND_DELEGATION
                    && !(i == 0 && qtype == TYPE_DS)
                {
                    return Found::Referral(payload, i);
                }
                if i == 0 {
                    return Found::Node(payload);
                }
                parent = Some(payload);
            }
            None => {
                return match parent {
                    Some(p) if p[0] & FLAG_WILDCARD != 0 => Found::Wildcard(p),
                    _ => Found::NxDomain,
                };
            }
        }
    }
    Found::NxDomain
}

/// Decides the answer for class IN.
/// `plan` arrives as REFUSED without AA, which is the answer for names
/// outside our zones (as NSD and Knot do).
fn decide<'a>(snapshot: &'a Snapshot, qname: &NameKey, qtype: u16, plan: &mut Plan<'a>) {
    let Some((apex, negative_soa)) = snapshot.zones.find(qname) else {
        return;
    };
    plan.rcode = RCODE_NOERROR;
    plan.authoritative = true;
    // The apex is a suffix of the question name, so the SOA's owner is a
    // pointer into it (also after a CNAME chain: targets stay in the zone).
    let soa = Piece {
        records: negative_soa,
        count: 1,
        owner: Owner::Question(qname.label_offset(apex) as u16),
    };
    let mut payload = match find(snapshot, qname, apex, qtype) {
        Found::Node(p) | Found::Wildcard(p) => p,
        Found::Referral(p, cut) => {
            // A referral is not authoritative (RFC 1034 §4.3.2 step 3b):
            // NS in authority, glue in additional.
            plan.authoritative = false;
            if let Some((count, records)) = rrset(p, crate::wire::TYPE_NS) {
                let owner = Owner::Question(qname.label_offset(cut) as u16);
                plan.authority = Some(Piece {
                    records,
                    count,
                    owner,
                });
            }
            if let Some((count, records)) = rrset(p, TYPE_GLUE) {
                plan.additional = Some(Piece {
                    records,
                    count,
                    owner: Owner::Verbatim,
                });
            }
            return;
        }
        Found::NxDomain => {
            plan.rcode = RCODE_NXDOMAIN;
            plan.authority = Some(soa);
            return;
        }
    };
    let apex_labels = qname.label_count() - apex;
    let mut owner = Owner::Question(0);
    let mut target = NameKey::new();
    for step in 0..=MAX_CHAIN {
        if qtype == TYPE_ANY {
            // RFC 8482 §4.2: answer ANY with one RRset, the node's first
            // (A for a host, SOA at the apex), over UDP and TCP alike.
            match render::rrsets(payload).find(|s| s.0 != TYPE_GLUE) {
                Some((_, count, records)) => plan.push_answer(Piece {
                    records,
                    count,
                    owner,
                }),
                None => plan.authority = Some(soa),
            }
            return;
        }
        if payload[0] & FLAG_CNAME != 0 && qtype != TYPE_CNAME {
            // RFC 1034 §4.3.2 step 3a: add the CNAME, restart at its target.
            let Some((count, records)) = rrset(payload, TYPE_CNAME) else {
                return;
            };
            plan.push_answer(Piece {
                records,
                count,
                owner,
            });
            if step == MAX_CHAIN || records.len() < 12 {
                return;
            }
            // Parsed in place from the stored RDATA (no 400-octet key moved).
            if target.parse_into(records, 12).is_err() {
                return;
            }
            // Follow only inside this zone (the target must end in the apex).
            if target.label_count() < apex_labels
                || target.suffix(target.label_count() - apex_labels) != qname.suffix(apex)
            {
                return;
            }
            owner = Owner::Target(0);
            match find(snapshot, &target, target.label_count() - apex_labels, qtype) {
                Found::Node(p) | Found::Wildcard(p) => payload = p,
                // RFC 6604 §2.1: the RCODE describes the last name of the chain.
                Found::NxDomain => {
                    plan.rcode = RCODE_NXDOMAIN;
                    plan.authority = Some(soa);
                    return;
                }
                Found::Referral(..) => return,
            }
            continue;
        }
        match rrset(payload, qtype) {
            Some((count, records)) => {
                let before = plan.answer_len;
                plan.push_answer(Piece {
                    records,
                    count,
                    owner,
                });
                let skip = match qtype {
                    _ if plan.answer_len == before => None,
                    TYPE_MX => Some(2),
                    TYPE_SRV => Some(6),
                    TYPE_NS => Some(0),
                    _ => None,
                };
                if let Some(skip) = skip {
                    add_target_addresses(snapshot, qname, apex, records, count, skip, plan);
                }
            }
            // NODATA (RFC 2308 §2.2): NOERROR, SOA in authority.
            None => plan.authority = Some(soa),
        }
        return;
    }
}

/// Additional-section processing for the last answer piece: the A and
/// AAAA RRsets of each target name (at `skip` octets into each record's
/// RDATA) that lies inside the question's zone (at label `apex` of
/// `qname`), as Knot DNS and NSD add them. Targets outside the zone are
/// left to the resolver.
fn add_target_addresses<'a>(
    snapshot: &'a Snapshot,
    qname: &NameKey,
    apex: usize,
    records: &'a [u8],
    count: u16,
    skip: u8,
    plan: &mut Plan<'a>,
) {
    let piece = (plan.answer_len - 1) as u8;
    let apex_labels = qname.label_count() - apex;
    let mut target = NameKey::new();
    let mut rr = 0usize;
    for record in 0..usize::from(count).min(MAX_TARGETS) {
        if rr + 12 > records.len() {
            return;
        }
        let rdlen = usize::from(u16::from_be_bytes([records[rr + 10], records[rr + 11]]));
        let name_at = rr + 12 + usize::from(skip);
        rr += 12 + rdlen;
        if target.parse_into(records, name_at).is_err()
            || target.label_count() <= apex_labels
            || target.suffix(target.label_count() - apex_labels) != qname.suffix(apex)
        {
            continue;
        }
        let payload = match find(
            snapshot,
            &target,
            target.label_count() - apex_labels,
            TYPE_A,
        ) {
            Found::Node(p) | Found::Wildcard(p) => p,
            Found::Referral(..) | Found::NxDomain => continue,
        };
        if payload[0] & FLAG_CNAME != 0 {
            continue; // RFC 2181 §10.3: such a target is a misconfiguration
        }
        for rtype in [TYPE_A, TYPE_AAAA] {
            if let Some((count, rrs)) = rrset(payload, rtype)
                && plan.extra_len < MAX_EXTRA
            {
                plan.extra[plan.extra_len] = Piece {
                    records: rrs,
                    count,
                    owner: Owner::Rdata {
                        piece,
                        record: record as u8,
                        skip,
                    },
                };
                plan.extra_len += 1;
            }
        }
    }
}

/// CHAOS class: `version.bind`/`version.server`, `id.server`/`hostname.bind`
/// (RFC 4892 §2) when configured; everything else REFUSED.
fn decide_chaos<'a>(settings: &'a Settings, qname: &NameKey, qtype: u16, plan: &mut Plan<'a>) {
    let payload = match qname.as_bytes() {
        b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => {
            settings.chaos_version.as_deref()
        }
        b"\x02id\x06server\x00" | b"\x08hostname\x04bind\x00" => settings.chaos_id.as_deref(),
        _ => None,
    };
    let Some(payload) = payload else { return };
    plan.rcode = RCODE_NOERROR;
    plan.authoritative = true;
    if (qtype == TYPE_TXT || qtype == TYPE_ANY)
        && let Some((count, records)) = rrset(payload, TYPE_TXT)
    {
        plan.push_answer(Piece {
            records,
            count,
            owner: Owner::Question(0),
        });
    }
}

/// Writes the response for `plan`; sets TC and empties all sections when
/// it does not fit in `limit` (RFC 2181 §9, RFC 1035 §4.2.1).
fn encode(
    query: &[u8],
    question_end: usize,
    plan: &Plan<'_>,
    edns: Option<Edns>,
    settings: &Settings,
    limit: usize,
    out: &mut [u8],
) -> Outcome {
    out[..2].copy_from_slice(&query[..2]);
    // QR, opcode and RD from the query; AA when authoritative; RA never.
    out[2] = 0x80 | (query[2] & 0x79) | if plan.authoritative { 0x04 } else { 0 };
    // CD is copied (RFC 6840 §5.9); AD and Z stay clear.
    out[3] = (query[3] & 0x10) | plan.rcode;
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[HEADER_LEN..question_end].copy_from_slice(&query[HEADER_LEN..question_end]);

    let budget = limit - if edns.is_some() { OPT_LEN } else { 0 };
    let mut pos = question_end;
    let mut target = 0usize;
    // Where each answer record's RDATA starts, for `Owner::Rdata`.
    let mut rdata_at = [[0u16; MAX_TARGETS]; MAX_CHAIN + 1];
    let mut counts = [0u16; 3];
    let mut fits = true;
    let sections: [(&[Piece<'_>], usize); 3] = [
        (&plan.answer[..plan.answer_len], 0),
        (plan.authority.as_slice(), 1),
        (plan.additional.as_slice(), 2),
    ];
    'sections: for (pieces, section) in sections {
        for (index, piece) in pieces.iter().enumerate() {
            if section == 0 {
                remember_rdata(piece, pos, &mut rdata_at[index]);
            }
            match write_piece(out, pos, budget, piece, &mut target, &rdata_at) {
                Some(end) => {
                    pos = end;
                    counts[section] += piece.count;
                }
                None => {
                    fits = false;
                    break 'sections;
                }
            }
        }
    }
    if !fits {
        // TC=1 with the question kept and every section empty.
        out[2] |= 0x02;
        pos = question_end;
        counts = [0; 3];
    } else {
        // Optional additional data: whatever fits, never TC (RFC 2181 §9).
        for piece in &plan.extra[..plan.extra_len] {
            match write_piece(out, pos, budget, piece, &mut target, &rdata_at) {
                Some(end) => {
                    pos = end;
                    counts[2] += piece.count;
                }
                None => break,
            }
        }
    }
    out[6..8].copy_from_slice(&counts[0].to_be_bytes());
    out[8..10].copy_from_slice(&counts[1].to_be_bytes());
    let mut arcount = counts[2];
    if let Some(e) = edns {
        // RFC 6891 §6.1.2-6.1.3: our payload size, extended RCODE, version 0,
        // DO copied (RFC 3225 §3), no options.
        out[pos] = 0;
        out[pos + 1..pos + 3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&settings.udp_payload_size.to_be_bytes());
        out[pos + 5] = plan.extended_rcode;
        out[pos + 6] = 0;
        out[pos + 7] = if e.dnssec_ok { 0x80 } else { 0 };
        out[pos + 8] = 0;
        out[pos + 9..pos + 11].fill(0);
        pos += OPT_LEN;
        arcount += 1;
    }
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    Outcome::Reply(pos)
}

/// Records where each RDATA of an answer piece written at `pos` starts.
#[inline]
fn remember_rdata(piece: &Piece<'_>, pos: usize, at: &mut [u16; MAX_TARGETS]) {
    let mut rr = 0usize;
    for slot in at.iter_mut().take(usize::from(piece.count)) {
        if rr + 12 > piece.records.len() {
            return;
        }
        *slot = (pos + rr + 12).min(usize::from(u16::MAX)) as u16;
        rr += 12
            + usize::from(u16::from_be_bytes([
                piece.records[rr + 10],
                piece.records[rr + 11],
            ]));
    }
}

/// Copies one piece at `pos` and points its owners at the right name.
/// Returns the new end, or `None` if it would pass `budget`.
#[inline]
fn write_piece(
    out: &mut [u8],
    pos: usize,
    budget: usize,
    piece: &Piece<'_>,
    target: &mut usize,
    rdata_at: &[[u16; MAX_TARGETS]; MAX_CHAIN + 1],
) -> Option<usize> {
    let end = pos + piece.records.len();
    if end > budget {
        return None;
    }
    out[pos..end].copy_from_slice(piece.records);
    let pointer = match piece.owner {
        Owner::Verbatim => return Some(end),
        Owner::Question(skip) => HEADER_LEN + usize::from(skip),
        Owner::Target(skip) => *target + usize::from(skip),
        Owner::Rdata {
            piece,
            record,
            skip,
        } => {
            let at = rdata_at
                .get(usize::from(piece))
                .and_then(|p| p.get(usize::from(record)))
                .copied()
                .unwrap_or(0);
            if at == 0 {
                return None;
            }
            usize::from(at) + usize::from(skip)
        }
    };
    // A pointer has 14 bits (RFC 1035 §4.1.4).
    if pointer > 0x3FFF {
        return None;
    }
    let mut rr = pos;
    for _ in 0..piece.count {
        if pointer != HEADER_LEN {
            out[rr..rr + 2].copy_from_slice(&(0xC000 | pointer as u16).to_be_bytes());
        }
        let rdlen = usize::from(u16::from_be_bytes([out[rr + 10], out[rr + 11]]));
        if u16::from_be_bytes([out[rr + 2], out[rr + 3]]) == TYPE_CNAME {
            // The CNAME's target name starts its RDATA, uncompressed.
            *target = rr + 12;
        }
        rr += 12 + rdlen;
    }
    Some(end)
}
