//! Input data for the responder: zones, hosts and changes, as plain values.
//!
//! These types are what the feed hands to [`crate::snapshot::SnapshotWriter`].
//! They know nothing of SQL or HTTP (the lead converts the database model into
//! them) and nothing of the wire: rendering happens in `render`.
//!
//! Name conventions: zone names and names inside RDATA are absolute
//! (a trailing dot is optional); host names and static record owners are
//! relative to their zone, `@` or the empty string meaning the apex.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The SOA fields of a zone (RFC 1035 §3.3.13), plus the SOA record's TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    pub mname: String,
    /// Mailbox as a domain name (`hostmaster.example.net`).
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative caching TTL (RFC 2308 §4).
    pub minimum: u32,
    /// TTL of the SOA record itself.
    pub ttl: u32,
}

/// RDATA of a static record, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// One TXT record made of these character-strings; strings longer than
    /// 255 octets are split into 255-octet pieces.
    Txt(Vec<String>),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Caa {
        flags: u8,
        tag: String,
        value: String,
    },
    /// A delegation when the owner is below the apex. The apex NS set is
    /// [`ZoneData::ns`]; NS records with owner `@` here are ignored.
    Ns(String),
}

impl RecordData {
    /// The record type code.
    pub fn rtype(&self) -> u16 {
        use crate::wire::*;
        match self {
            RecordData::A(_) => TYPE_A,
            RecordData::Aaaa(_) => TYPE_AAAA,
            RecordData::Mx { .. } => TYPE_MX,
            RecordData::Txt(_) => TYPE_TXT,
            RecordData::Cname(_) => TYPE_CNAME,
            RecordData::Srv { .. } => TYPE_SRV,
            RecordData::Caa { .. } => TYPE_CAA,
            RecordData::Ns(_) => TYPE_NS,
        }
    }
}

/// A record configured by an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// Relative to the zone; `@` or empty for the apex.
    pub owner: String,
    pub ttl: u32,
    pub data: RecordData,
}

/// One zone: apex data and static records. Hosts come separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneData {
    /// Absolute zone name (`dyn.example.net`).
    pub name: String,
    pub soa: Soa,
    /// Apex NS set (absolute names).
    pub ns: Vec<String>,
    pub ns_ttl: u32,
    /// TTL of host records whose [`HostData::ttl`] is `None`.
    pub default_ttl: u32,
    pub records: Vec<StaticRecord>,
}

/// A dynamic host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostData {
    /// Relative to the zone (`h0000001`).
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// ACME DNS-01 tokens, served as TXT at `_acme-challenge.<host>`, one
    /// record per value (RFC 8555 §8.4).
    pub txt: Vec<String>,
    /// The host also answers for every name below it.
    pub wildcard: bool,
    /// Offline and disabled hosts exist but have no address records (NODATA).
    pub offline: bool,
    pub disabled: bool,
    /// Record TTL; the zone's `default_ttl` when `None`.
    pub ttl: Option<u32>,
}

/// One change from the feed. A batch of them is applied with one publish
/// per touched shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace a host (zone name, host).
    UpsertHost(String, HostData),
    /// Remove a host (zone name, host name).
    RemoveHost(String, String),
    /// Create or replace a zone's apex data and static records; its hosts stay.
    UpsertZone(ZoneData),
    /// Remove a zone with all its hosts and records.
    RemoveZone(String),
    /// Set a zone's SOA serial (zone name, serial).
    SetSoaSerial(String, u32),
    /// Create or replace many hosts of one zone that have addresses only:
    /// the same as one [`Change::UpsertHost`] each, in order, packed for a
    /// bulk load (see [`AddressHosts`]).
    UpsertAddressHosts(AddressHosts),
}

/// Hosts of one zone with nothing but addresses and a TTL (no TXT tokens,
/// no flags), packed: the names one after another in one string.
///
/// A start-up load hands the snapshot writer a million such names; as one
/// [`Change::UpsertHost`] each, every name cost two strings allocated on
/// the loading thread and freed on the writer's (and the zone name cloned
/// per host), the largest cost of the load after the database read
/// (profile of the 1M-name start, bench/README.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressHosts {
    zone: String,
    /// The hosts' names (relative to the zone), concatenated.
    names: String,
    hosts: Vec<PackedAddressHost>,
    expected: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedAddressHost {
    /// End of the name in `names` (it starts where the previous one ends).
    name_end: usize,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    ttl: Option<u32>,
}

/// One host of an [`AddressHosts`] batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressHost<'a> {
    /// Relative to the zone.
    pub name: &'a str,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Record TTL; the zone's `default_ttl` when `None`.
    pub ttl: Option<u32>,
}

impl AddressHost<'_> {
    /// The same host as a [`HostData`].
    pub fn to_host_data(&self) -> HostData {
        HostData {
            name: self.name.to_owned(),
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            ttl: self.ttl,
            ..HostData::default()
        }
    }
}

impl AddressHosts {
    /// An empty batch for the zone `zone` (absolute).
    pub fn new(zone: impl Into<String>) -> Self {
        Self {
            zone: zone.into(),
            ..Self::default()
        }
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Appends a host; `name` is relative to the zone.
    pub fn push(
        &mut self,
        name: &str,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
        ttl: Option<u32>,
    ) {
        self.names.push_str(name);
        self.hosts.push(PackedAddressHost {
            name_end: self.names.len(),
            ipv4,
            ipv6,
            ttl,
        });
    }

    /// Room for `hosts` more hosts with `name_bytes` octets of names.
    pub fn reserve(&mut self, hosts: usize, name_bytes: usize) {
        self.hosts.reserve(hosts);
        self.names.reserve(name_bytes);
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The hosts, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = AddressHost<'_>> + '_ {
        let mut start = 0;
        self.hosts.iter().map(move |host| {
            let name = &self.names[start..host.name_end];
            start = host.name_end;
            AddressHost {
                name,
                ipv4: host.ipv4,
                ipv6: host.ipv6,
                ttl: host.ttl,
            }
        })
    }

    /// Tells the writer how many hosts the whole load will stage, this
    /// batch included, so it sizes its index once instead of rehashing it
    /// as it grows. Only a sizing hint.
    pub fn expect(&mut self, hosts: usize) {
        self.expected = hosts;
    }

    /// See [`Self::expect`]: at least this batch's length.
    pub fn expected(&self) -> usize {
        self.expected.max(self.hosts.len())
    }
}

impl HostData {
    /// Whether the host's address records are served.
    pub fn serves_addresses(&self) -> bool {
        !self.offline && !self.disabled
    }
}
