//! The publish side: turns [`Change`]s into new snapshots.
//!
//! Runs on one writer thread (the feed applier). A batch of changes is first
//! resolved into an overlay of per-name payloads, then each touched shard is
//! rebuilt once, and one new [`Snapshot`] is published. Old snapshots are
//! dropped here, on this thread, once no worker holds them.
//!
//! Must never: be called from a worker thread, or block workers.

use std::collections::{BTreeMap, VecDeque};

/// The writer's own maps: foldhash with a random seed (SipHash showed up as
/// the top cost of a batch; the keys are names users choose, so keyed).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::ptr::NonNull;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::staged::{Run, Staged, Upserted};
use super::table::{NameHasher, Table, TableUpdate};
use super::{Retirement, SHARD_COUNT, Settings, Shared, Snapshot, ZoneTable};
use crate::render::{
    self, FLAG_HAS_ACME, KIND_ACME, KIND_ENT, KIND_HOST, KIND_MASK, RenderError, Statics,
};
use crate::wire::{self, NameKey};
use crate::zone::{AddressHost, AddressHosts, Change, HostData, ZoneData};

/// Handler settings (STYLE habit 7: each with its default and range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// EDNS UDP payload size we advertise and honour, in octets.
    /// Default 1232 (DNS Flag Day 2020: no IP fragmentation); clamped to 512..=4096.
    pub udp_payload_size: u16,
    /// Answer CHAOS TXT `version.bind`/`version.server` with this text.
    /// Default `None`: such queries are REFUSED.
    pub chaos_version: Option<String>,
    /// Answer CHAOS TXT `id.server`/`hostname.bind` (RFC 4892) with this text.
    /// Default `None`: REFUSED.
    pub chaos_id: Option<String>,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            udp_payload_size: 1232,
            chaos_version: None,
            chaos_id: None,
        }
    }
}

impl HandlerConfig {
    fn settings(&self) -> Settings {
        Settings {
            udp_payload_size: self.udp_payload_size.clamp(512, 4096),
            chaos_version: self
                .chaos_version
                .as_deref()
                .map(|t| render::chaos_txt(t).into_boxed_slice()),
            chaos_id: self
                .chaos_id
                .as_deref()
                .map(|t| render::chaos_txt(t).into_boxed_slice()),
        }
    }
}

/// Why one change of a batch was rejected (the others still apply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("zone {0:?} is not loaded")]
    UnknownZone(String),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("host name {0:?} is the zone apex")]
    HostAtApex(String),
}

/// The result of [`SnapshotWriter::apply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Changes applied.
    pub applied: usize,
    /// Rejected changes: index in the batch and the reason.
    pub rejected: Vec<(usize, ApplyError)>,
    /// Shards rebuilt by this batch's publish.
    pub shards_rebuilt: usize,
}

/// Staged names from which the first load's publish builds its shards on
/// two threads (below this, a second thread costs more than it saves).
const PARALLEL_BUILD_NAMES: usize = 100_000;
/// Hosts of a bulk upsert rendered and hashed ahead of their index probes
/// (see `upsert_address_hosts`): enough misses in flight to hide most of
/// the latency, few enough that the prefetched lines are still cached.
const LOOKAHEAD: usize = 16;

/// A name and its new payload (`None`: removed).
type PendingEntry = (Vec<u8>, Option<Vec<u8>>);

struct ZoneState {
    data: ZoneData,
    /// Apex in wire form, as configured (case kept) and lower-cased.
    apex: Vec<u8>,
    apex_lower: Vec<u8>,
    apex_labels: usize,
    statics: Statics,
}

/// Owns the publish side. See the module documentation.
pub struct SnapshotWriter {
    shared: Shared,
    current: Arc<Snapshot>,
    hasher: NameHasher,
    settings: Arc<Settings>,
    zones: BTreeMap<Vec<u8>, ZoneState>,
    /// How many stored names lie below each name strictly between them and
    /// their apex: such a name exists at least as an empty non-terminal.
    ent_refs: HashMap<Vec<u8>, u32>,
    /// Payloads decided by the current batch, by lower-case name.
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Host payloads decided by the current batch, stored compactly (the
    /// bulk of a load). A name is never in both `pending` and `staged`.
    staged: Staged,
    zones_dirty: bool,
    retired: VecDeque<Arc<Snapshot>>,
    /// The pointer table of the last freed snapshot, reused by the next publish.
    spare_table: Option<SpareTable>,
}

/// A freed snapshot's shard pointer table, kept only for its memory.
struct SpareTable(Box<[Option<NonNull<Table>>]>);

// SAFETY: the pointers in a spare table are stale and never dereferenced;
// the table is overwritten with a live snapshot's pointers before any use.
// Moving it to another thread moves only plain memory.
unsafe impl Send for SpareTable {}
// SAFETY: as for `Send`: no access through `&SpareTable` reads the pointees.
unsafe impl Sync for SpareTable {}

impl SnapshotWriter {
    /// A writer publishing an empty snapshot (every query REFUSED).
    pub fn new(config: &HandlerConfig) -> Self {
        let hasher = NameHasher::random();
        let settings = Arc::new(config.settings());
        let zones = Arc::new(ZoneTable {
            table: Table::empty(),
            hasher: hasher.clone(),
            max_labels: 0,
        });
        let current = Arc::new(Snapshot {
            shards: vec![None; SHARD_COUNT].into_boxed_slice(),
            hasher: hasher.clone(),
            zones,
            settings: settings.clone(),
            names: 0,
            retirement: Default::default(),
        });
        let shared = Shared {
            current: Arc::new(ArcSwap::new(current.clone())),
        };
        Self {
            shared,
            current,
            hasher,
            settings,
            zones: BTreeMap::new(),
            ent_refs: HashMap::default(),
            pending: HashMap::default(),
            staged: Staged::default(),
            zones_dirty: false,
            retired: VecDeque::new(),
            spare_table: None,
        }
    }

    /// The handle workers load snapshots from.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// The snapshot published last.
    pub fn current(&self) -> &Snapshot {
        &self.current
    }

    /// Changes the handler settings (published with the next snapshot).
    pub fn set_config(&mut self, config: &HandlerConfig) {
        self.settings = Arc::new(config.settings());
        self.zones_dirty = true;
        self.publish();
    }

    /// Loads (or replaces) a zone with all its hosts, in one publish.
    pub fn load_zone(
        &mut self,
        zone: ZoneData,
        hosts: impl IntoIterator<Item = HostData>,
    ) -> Result<ApplyReport, ApplyError> {
        let zone_name = zone.name.clone();
        self.upsert_zone(zone)?;
        let mut report = ApplyReport {
            applied: 1,
            ..Default::default()
        };
        let hosts = hosts.into_iter();
        // A bulk load: size the index once instead of growing it by rehashing.
        self.staged.reserve(hosts.size_hint().0);
        for (i, host) in hosts.enumerate() {
            match self.upsert_host(&zone_name, &host) {
                Ok(()) => report.applied += 1,
                Err(e) => report.rejected.push((i, e)),
            }
        }
        report.shards_rebuilt = self.publish();
        Ok(report)
    }

    /// Applies a batch of changes in order, then publishes once. A rejected
    /// change is reported and skipped; the rest still apply.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) -> ApplyReport {
        let mut report = self.stage(changes);
        report.shards_rebuilt = self.publish();
        report
    }

    /// Applies a batch of changes in order without publishing: they are
    /// served from the next [`SnapshotWriter::publish`] (or `apply`) on.
    /// A load stages its pages one after another and publishes once, so
    /// every shard is built once, however many pages the load reads.
    pub fn stage(&mut self, changes: impl IntoIterator<Item = Change>) -> ApplyReport {
        let mut report = ApplyReport::default();
        let changes = changes.into_iter();
        if changes.size_hint().0 > 1024 {
            self.staged.reserve(changes.size_hint().0);
        }
        for (i, change) in changes.enumerate() {
            let result = match change {
                Change::UpsertHost(zone, host) => self.upsert_host(&zone, &host),
                Change::UpsertAddressHosts(hosts) => {
                    self.upsert_address_hosts(&hosts, |e| report.rejected.push((i, e)))
                }
                Change::RemoveHost(zone, name) => self.remove_host(&zone, &name),
                Change::UpsertZone(data) => self.upsert_zone(data),
                Change::RemoveZone(name) => self.remove_zone(&name),
                Change::SetSoaSerial(zone, serial) => self.set_soa_serial(&zone, serial),
            };
            match result {
                Ok(()) => report.applied += 1,
                Err(e) => report.rejected.push((i, e)),
            }
        }
        report
    }

    /// Removes every zone and name (one publish).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.staged = Staged::default();
        for (name, _) in self.current.entries() {
            self.pending.insert(name.to_vec(), None);
        }
        self.zones.clear();
        self.ent_refs.clear();
        self.zones_dirty = true;
        self.publish();
    }

    /// Renders the zone's master file exactly as served (see [`crate::export`]).
    pub fn export_zone(&self, zone: &str, hosts: &[HostData]) -> Result<String, ApplyError> {
        let state = self.zone(zone)?;
        Ok(crate::export::master_file(&state.data, hosts)?)
    }

    fn zone_key(name: &str) -> Result<Vec<u8>, ApplyError> {
        let mut key = render::name(name)?;
        wire::lowercase_in_place(&mut key);
        Ok(key)
    }

    fn zone(&self, name: &str) -> Result<&ZoneState, ApplyError> {
        self.zones
            .get(&Self::zone_key(name)?)
            .ok_or_else(|| ApplyError::UnknownZone(name.to_owned()))
    }

    /// The payload `name` has now: decided in this batch, else published.
    fn entry(&self, name: &[u8]) -> Option<&[u8]> {
        self.entry_hashed(name, self.hasher.hash(name))
    }

    /// [`Self::entry`] with the name's keyed hash already computed.
    fn entry_hashed(&self, name: &[u8], hash: u64) -> Option<&[u8]> {
        if let Some(p) = self.pending.get(name) {
            return p.as_deref();
        }
        if !self.staged.is_empty()
            && let Some(p) = self.staged.get(hash, name)
        {
            return Some(p);
        }
        self.current.get_hashed(hash, name)
    }

    /// Decides `name`'s payload in this batch (`None`: removed).
    fn put(&mut self, name: Vec<u8>, payload: Option<Vec<u8>>) {
        if !self.staged.is_empty() {
            self.staged.remove(self.hasher.hash(&name), &name);
        }
        self.pending.insert(name, payload);
    }

    /// Decides a host's payload in this batch: the compact path of a load.
    /// `hash` is the name's keyed hash. Returns the kind octet of the
    /// payload `name` had before ([`Self::entry_hashed`], found on the way).
    fn put_host(&mut self, name: &[u8], hash: u64, payload: &[u8]) -> Option<u8> {
        // A name decided in the overlay moves to the staged store: it is
        // never in both.
        if !self.pending.is_empty()
            && let Some(old) = self.pending.remove(name)
        {
            if let Upserted::Displaced(other, payload) = self.staged.upsert(hash, name, payload) {
                self.pending.insert(other, Some(payload));
            }
            return old.and_then(|p| p.first().copied());
        }
        match self.staged.upsert(hash, name, payload) {
            Upserted::Replaced(kind) => Some(kind),
            // A first load has nothing published to look in.
            Upserted::New if self.current.names == 0 => None,
            Upserted::New => self.current.get_hashed(hash, name).map(|p| p[0]),
            Upserted::Displaced(other, payload) => {
                self.pending.insert(other, Some(payload));
                self.current.get_hashed(hash, name).map(|p| p[0])
            }
        }
    }

    fn kind(&self, name: &[u8]) -> Option<u8> {
        self.entry(name).map(|p| p[0] & KIND_MASK)
    }

    /// Names strictly between `name` and the apex (which has `apex_labels`).
    fn ancestors(name: &[u8], apex_labels: usize) -> Vec<Vec<u8>> {
        let Ok(key) = NameKey::from_wire(name) else {
            return Vec::new();
        };
        let depth = key.label_count().saturating_sub(apex_labels);
        (1..depth).map(|i| key.suffix(i).to_vec()).collect()
    }

    fn add_refs(&mut self, name: &[u8], apex_labels: usize) {
        for ancestor in Self::ancestors(name, apex_labels) {
            *self.ent_refs.entry(ancestor.clone()).or_default() += 1;
            if self.entry(&ancestor).is_none() {
                self.put(ancestor, Some(vec![KIND_ENT]));
            }
        }
    }

    fn remove_refs(&mut self, name: &[u8], zone: &[u8]) {
        let apex_labels = self.zones[zone].apex_labels;
        for ancestor in Self::ancestors(name, apex_labels) {
            let Some(count) = self.ent_refs.get_mut(&ancestor) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.ent_refs.remove(&ancestor);
                if self.kind(&ancestor) == Some(KIND_ENT) {
                    let payload = self.fallback(&ancestor, zone);
                    self.put(ancestor, payload);
                }
            }
        }
    }

    /// What `name` serves without a host or ACME entry: static records, or
    /// an empty non-terminal, or nothing.
    fn fallback(&self, name: &[u8], zone: &[u8]) -> Option<Vec<u8>> {
        // Rendering was validated when the statics were accepted.
        if let Ok(Some(p)) = self.zones[zone].statics.payload(name) {
            return Some(p);
        }
        self.ent_refs.contains_key(name).then(|| vec![KIND_ENT])
    }

    fn host_names(state: &ZoneState, host: &str) -> Result<(Vec<u8>, Option<Vec<u8>>), ApplyError> {
        let name = Self::host_name(state, host)?;
        let acme = Self::acme_name(&name);
        Ok((name, acme))
    }

    /// A host's lower-case wire name.
    fn host_name(state: &ZoneState, host: &str) -> Result<Vec<u8>, ApplyError> {
        let mut name = render::owner_name(host, &state.apex_lower)?;
        wire::lowercase_in_place(&mut name);
        if name == state.apex_lower {
            return Err(ApplyError::HostAtApex(host.to_owned()));
        }
        Ok(name)
    }

    /// `_acme-challenge.<host>`, if it fits in a name.
    fn acme_name(host: &[u8]) -> Option<Vec<u8>> {
        let mut acme = Vec::with_capacity(16 + host.len());
        acme.extend_from_slice(b"\x0f_acme-challenge");
        acme.extend_from_slice(host);
        (acme.len() <= wire::MAX_NAME_LEN).then_some(acme)
    }

    fn upsert_host(&mut self, zone: &str, host: &HostData) -> Result<(), ApplyError> {
        let key = Self::zone_key(zone)?;
        let state = self
            .zones
            .get(&key)
            .ok_or_else(|| ApplyError::UnknownZone(zone.to_owned()))?;
        let name = Self::host_name(state, &host.name)?;
        let apex_labels = state.apex_labels;
        let default_ttl = state.data.default_ttl;
        let acme_payload = if host.txt.is_empty() {
            None
        } else {
            Some(render::acme_payload(host, default_ttl)?)
        };
        // One probe stores the new payload and tells whether the host
        // existed and (flag in its kind octet) whether its ACME name does:
        // at 10M names each probe here is a cache miss, the main cost of a
        // change. The payload does not depend on what the name held (its
        // ACME flag says whether the new tokens have a name to live at).
        // An ACME entry exists only beside its host's entry, flagged (every
        // path that removes a host entry removes its ACME entry first), so
        // a name that was no host has no ACME entry to look for.
        let hash = self.hasher.hash(&name);
        let has_acme = acme_payload.is_some() && Self::acme_name(&name).is_some();
        let payload = render::host_payload(host, default_ttl, has_acme);
        let old_kind = self.put_host(&name, hash, &payload);
        let was_host = old_kind.map(|k| k & KIND_MASK) == Some(KIND_HOST);
        let was_acme = was_host && old_kind.is_some_and(|k| k & FLAG_HAS_ACME != 0);
        if !was_host {
            self.add_refs(&name, apex_labels);
        }
        // The ACME name only when there is something to do there.
        let acme = if acme_payload.is_some() || was_acme {
            Self::acme_name(&name)
        } else {
            None
        };
        if let Some(acme) = acme {
            match acme_payload {
                Some(payload) => {
                    if !was_acme {
                        self.add_refs(&acme, apex_labels);
                    }
                    self.put(acme, Some(payload));
                }
                None if was_acme => self.drop_name(&acme, &key),
                None => {}
            }
        }
        Ok(())
    }

    /// [`Self::upsert_host`] for each host of `batch`, in order: the zone
    /// is looked up once, names and payloads are rendered into two reused
    /// buffers, and each name costs one probe of the staged index (a host
    /// without TXT tokens has a payload that does not depend on what the
    /// name held before, so it is stored first and the old kind comes back
    /// from the same probe). A host that cannot be served goes to
    /// `rejected`; the others still apply.
    fn upsert_address_hosts(
        &mut self,
        batch: &AddressHosts,
        mut rejected: impl FnMut(ApplyError),
    ) -> Result<(), ApplyError> {
        let key = Self::zone_key(batch.zone())?;
        let state = self
            .zones
            .get(&key)
            .ok_or_else(|| ApplyError::UnknownZone(batch.zone().to_owned()))?;
        let apex_lower = state.apex_lower.clone();
        let apex_labels = state.apex_labels;
        let default_ttl = state.data.default_ttl;
        self.staged.reserve(batch.expected());
        let mut name = Vec::with_capacity(wire::MAX_NAME_LEN);
        let mut payload = Vec::new();
        // Names rendered and hashed a group ahead of their upserts, their
        // index slots prefetched meanwhile: at a million names each probe
        // is otherwise a cache miss waited for in turn.
        let mut names = Vec::with_capacity(LOOKAHEAD * 32);
        let mut ahead: Vec<(std::ops::Range<usize>, u64, AddressHost<'_>)> =
            Vec::with_capacity(LOOKAHEAD);
        let mut hosts = batch.iter();
        loop {
            names.clear();
            ahead.clear();
            for host in hosts.by_ref() {
                if let Err(e) = render::owner_name_into(host.name, &apex_lower, &mut name) {
                    rejected(e.into());
                    continue;
                }
                // The whole name at once: its length octets (at most 63)
                // are never ASCII letters, so only label octets change.
                name.make_ascii_lowercase();
                if name == apex_lower {
                    rejected(ApplyError::HostAtApex(host.name.to_owned()));
                    continue;
                }
                let hash = self.hasher.hash(&name);
                self.staged.prefetch(hash);
                let start = names.len();
                names.extend_from_slice(&name);
                ahead.push((start..names.len(), hash, host));
                if ahead.len() == LOOKAHEAD {
                    break;
                }
            }
            if ahead.is_empty() {
                break;
            }
            for (range, hash, host) in ahead.drain(..) {
                let name = &names[range];
                let ttl = host.ttl.unwrap_or(default_ttl);
                payload = render::address_host_payload(payload, ttl, host.ipv4, host.ipv6);
                let old_kind = self.put_host(name, hash, &payload);
                let was_host = old_kind.map(|k| k & KIND_MASK) == Some(KIND_HOST);
                // One label below the apex (most names of a load) has no
                // names in between to count: skip parsing it for them.
                let one_label = name.len() == apex_lower.len() + 1 + usize::from(name[0]);
                if !was_host && !one_label {
                    self.add_refs(name, apex_labels);
                }
                let was_acme = was_host && old_kind.is_some_and(|k| k & FLAG_HAS_ACME != 0);
                if was_acme && let Some(acme) = Self::acme_name(name) {
                    self.drop_name(&acme, &key);
                }
            }
        }
        Ok(())
    }

    /// Removes a host or ACME entry, leaving what else lives at the name.
    fn drop_name(&mut self, name: &[u8], zone: &[u8]) {
        self.remove_refs(name, zone);
        let payload = self.fallback(name, zone);
        self.put(name.to_vec(), payload);
    }

    fn remove_host(&mut self, zone: &str, host: &str) -> Result<(), ApplyError> {
        let key = Self::zone_key(zone)?;
        let state = self
            .zones
            .get(&key)
            .ok_or_else(|| ApplyError::UnknownZone(zone.to_owned()))?;
        let (name, acme) = Self::host_names(state, host)?;
        let old_kind = self.entry(&name).map(|p| p[0]);
        let was_host = old_kind.map(|k| k & KIND_MASK) == Some(KIND_HOST);
        // The ACME name first: it counts toward the host name's references.
        if let Some(acme) = acme {
            let has_acme = match old_kind {
                Some(kind) if was_host => kind & FLAG_HAS_ACME != 0,
                _ => self.kind(&acme) == Some(KIND_ACME),
            };
            if has_acme {
                self.drop_name(&acme, &key);
            }
        }
        if was_host {
            self.drop_name(&name, &key);
        }
        Ok(())
    }

    fn upsert_zone(&mut self, data: ZoneData) -> Result<(), ApplyError> {
        let apex = render::name(&data.name)?;
        let mut apex_lower = apex.clone();
        wire::lowercase_in_place(&mut apex_lower);
        let statics = Statics::new(&data, &apex)?;
        let apex_payload = render::apex_payload(&data, &statics, &apex)?;
        render::negative_soa(&data)?;
        let apex_labels = NameKey::from_wire(&apex_lower)
            .map(|k| k.label_count())
            .unwrap_or(0);

        // Take the old static records out (hosts stay).
        if let Some(old) = self.zones.get_mut(&apex_lower) {
            let old_statics = std::mem::replace(
                &mut old.statics,
                Statics {
                    by_owner: std::collections::HashMap::new(),
                },
            );
            for owner in old_statics.by_owner.keys().filter(|o| **o != apex_lower) {
                self.remove_refs(owner, &apex_lower);
                if !matches!(self.kind(owner), Some(KIND_HOST | KIND_ACME)) {
                    let payload = self.fallback(owner, &apex_lower);
                    self.put(owner.clone(), payload);
                }
            }
        }
        let owners: Vec<Vec<u8>> = statics
            .by_owner
            .keys()
            .filter(|o| **o != apex_lower)
            .cloned()
            .collect();
        self.zones.insert(
            apex_lower.clone(),
            ZoneState {
                data,
                apex,
                apex_lower: apex_lower.clone(),
                apex_labels,
                statics,
            },
        );
        for owner in owners {
            self.add_refs(&owner, apex_labels);
            if !matches!(self.kind(&owner), Some(KIND_HOST | KIND_ACME)) {
                let payload = self.fallback(&owner, &apex_lower);
                self.put(owner, payload);
            }
        }
        self.put(apex_lower, Some(apex_payload));
        self.zones_dirty = true;
        Ok(())
    }

    /// Whether `name` belongs to the zone `apex` rather than to a zone below it.
    fn in_zone(&self, name: &[u8], apex: &[u8]) -> bool {
        if !name.ends_with(apex) {
            return false;
        }
        let Ok(key) = NameKey::from_wire(name) else {
            return false;
        };
        (0..key.label_count())
            .map(|i| key.suffix(i))
            .take_while(|s| s.len() > apex.len())
            .all(|s| !self.zones.contains_key(s))
    }

    fn remove_zone(&mut self, zone: &str) -> Result<(), ApplyError> {
        let key = Self::zone_key(zone)?;
        if self.zones.remove(&key).is_none() {
            return Err(ApplyError::UnknownZone(zone.to_owned()));
        }
        // A zone removal touches every name of the zone, whatever the design;
        // finding them scans all shards (rare, admin operation).
        let doomed: Vec<Vec<u8>> = self
            .current
            .entries()
            .map(|(n, _)| n)
            .chain(self.pending.keys().map(Vec::as_slice))
            .chain(self.staged.iter().map(|(n, _)| n))
            .filter(|n| self.in_zone(n, &key))
            .map(<[u8]>::to_vec)
            .collect();
        for name in doomed {
            self.put(name, None);
        }
        let refs: Vec<Vec<u8>> = self
            .ent_refs
            .keys()
            .filter(|n| self.in_zone(n, &key))
            .cloned()
            .collect();
        for name in refs {
            self.ent_refs.remove(&name);
        }
        self.zones_dirty = true;
        Ok(())
    }

    fn set_soa_serial(&mut self, zone: &str, serial: u32) -> Result<(), ApplyError> {
        let key = Self::zone_key(zone)?;
        let state = self
            .zones
            .get_mut(&key)
            .ok_or_else(|| ApplyError::UnknownZone(zone.to_owned()))?;
        state.data.soa.serial = serial;
        let payload = render::apex_payload(&state.data, &state.statics, &state.apex)?;
        self.put(key, Some(payload));
        self.zones_dirty = true;
        Ok(())
    }

    fn build_zone_table(&self) -> ZoneTable {
        let rendered: Vec<(Vec<u8>, u64, Vec<u8>)> = self
            .zones
            .iter()
            .map(|(k, z)| {
                (
                    k.clone(),
                    self.hasher.hash(k),
                    render::negative_soa(&z.data).unwrap_or_default(),
                )
            })
            .collect();
        let entries: Vec<(&[u8], u64, &[u8])> = rendered
            .iter()
            .map(|(k, h, p)| (k.as_slice(), *h, p.as_slice()))
            .collect();
        let max_labels = self
            .zones
            .values()
            .map(|z| z.apex_labels)
            .max()
            .unwrap_or(0);
        ZoneTable {
            table: Table::build(&entries),
            hasher: self.hasher.clone(),
            max_labels,
        }
    }

    /// Rebuilds the touched shards, publishes one snapshot, and frees what
    /// no worker uses any more. Returns the number of shards rebuilt.
    /// Called by [`SnapshotWriter::apply`]; call it after
    /// [`SnapshotWriter::stage`] to serve what was staged.
    pub fn publish(&mut self) -> usize {
        if self.pending.is_empty() && self.staged.is_empty() && !self.zones_dirty {
            self.collect_garbage();
            return 0;
        }
        let mut by_shard: HashMap<usize, Vec<PendingEntry>> = HashMap::default();
        for (name, payload) in self.pending.drain() {
            let hash = self.hasher.hash(&name);
            by_shard
                .entry(hash as usize & (SHARD_COUNT - 1))
                .or_default()
                .push((name, payload));
        }
        // A bulk load leaves a huge, empty map behind: give the memory back.
        if self.pending.capacity() > 4096 {
            self.pending = HashMap::default();
        }
        let staged = self.staged.take_in_shard_order();
        let mut shards = match self.spare_table.take() {
            Some(SpareTable(mut table)) => {
                table.copy_from_slice(&self.current.shards);
                table
            }
            None => self.current.shards.clone(),
        };
        let mut replaced = Vec::new();
        let mut names = self.current.names;
        let mut rebuilt = 0;
        // Shards with staged entries (and maybe pending ones), in order...
        let runs: Vec<(usize, Run<'_>)> = staged.runs().collect();
        let build = |part: &[(usize, Run<'_>)]| -> Vec<Table> {
            // One list of changes and one of entries for every shard: no
            // temporaries freed between the tables, which live on (a
            // helper thread's heap is not given back as the writer's is).
            let mut changes: Vec<TableUpdate<'_>> = Vec::new();
            let mut entries: Vec<(&[u8], u64, &[u8])> = Vec::new();
            part.iter()
                .map(|(index, run)| {
                    let pending = by_shard.get(index).map_or(&[][..], Vec::as_slice);
                    changes.clear();
                    for (name, payload) in pending {
                        changes.push((name, self.hasher.hash(name), payload.as_deref()));
                    }
                    changes.extend(run.iter().map(|(n, h, p)| (n, h, Some(p))));
                    match self.current.shards[*index] {
                        // A new shard (a load): only the changes.
                        None => {
                            entries.clear();
                            entries
                                .extend(changes.iter().filter_map(|&(n, h, p)| Some((n, h, p?))));
                            Table::build(&entries)
                        }
                        old => self.shard_with(old, &changes),
                    }
                })
                .collect()
        };
        let tables = if self.current.names == 0 && staged.len() >= PARALLEL_BUILD_NAMES {
            // The first load: nothing is served yet (the sockets open after
            // it), so the cores are ours. The loading threads are idle by
            // now, and the shards' builds were the last sequential part of
            // the start (10% of the 1M load's CPU): two threads halve it.
            // A later publish never takes a core from the workers.
            let (first, second) = runs.split_at(runs.len() / 2);
            std::thread::scope(|scope| {
                let helper = scope.spawn(|| build(second));
                let mut tables = build(first);
                match helper.join() {
                    Ok(rest) => tables.extend(rest),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
                tables
            })
        } else {
            build(&runs)
        };
        for ((index, _), table) in runs.iter().zip(tables) {
            by_shard.remove(index);
            Self::install(&mut shards[*index], table, &mut replaced, &mut names);
            rebuilt += 1;
        }
        // ...then those with pending entries only.
        for (index, updates) in by_shard {
            let changes: Vec<TableUpdate<'_>> = updates
                .iter()
                .map(|(n, p)| (n.as_slice(), self.hasher.hash(n), p.as_deref()))
                .collect();
            self.replace_shard(&mut shards[index], &changes, &mut replaced, &mut names);
            rebuilt += 1;
        }
        drop(staged);
        let zones = if self.zones_dirty {
            Arc::new(self.build_zone_table())
        } else {
            self.current.zones.clone()
        };
        self.zones_dirty = false;
        let next = Arc::new(Snapshot {
            shards,
            hasher: self.hasher.clone(),
            zones,
            settings: self.settings.clone(),
            names,
            retirement: Default::default(),
        });
        let previous = self.shared.current.swap(next.clone());
        debug_assert!(Arc::ptr_eq(&previous, &self.current));
        // The previous snapshot now keeps `next` alive and will free the
        // shards it alone used; `set` cannot fail: it is retired only once.
        let _ = previous.retirement.set(Retirement {
            successor: next.clone(),
            replaced,
        });
        self.current = next;
        self.retired.push_back(previous);
        self.collect_garbage();
        rebuilt
    }

    /// Points `slot` at a new table: its current table with `changes`
    /// (distinct names) applied. The old table goes to `replaced`.
    fn replace_shard(
        &self,
        slot: &mut Option<NonNull<Table>>,
        changes: &[TableUpdate<'_>],
        replaced: &mut Vec<NonNull<Table>>,
        names: &mut usize,
    ) {
        let table = self.shard_with(*slot, changes);
        Self::install(slot, table, replaced, names);
    }

    /// The table `old` (a shard of the current snapshot) becomes with
    /// `changes` (distinct names) applied.
    fn shard_with(&self, old: Option<NonNull<Table>>, changes: &[TableUpdate<'_>]) -> Table {
        // SAFETY: `old` belongs to the current snapshot, which we hold;
        // published tables are never mutated, so reading one from a
        // helper thread of the publish is reading immutable memory.
        let old_table = old.map(|p| unsafe { p.as_ref() });
        // Usually a copy of the shard with the change patched in; a full
        // rebuild when the shard is new, too full, or too fragmented.
        match old_table.and_then(|t| t.patched(changes)) {
            Some(table) => table,
            None => Self::rebuild(&self.hasher, old_table, changes),
        }
    }

    /// Points `slot` at `table`; the table it pointed at goes to `replaced`.
    fn install(
        slot: &mut Option<NonNull<Table>>,
        table: Table,
        replaced: &mut Vec<NonNull<Table>>,
        names: &mut usize,
    ) {
        let old = *slot;
        // SAFETY: as in `shard_with`: `old` is a live table of the current snapshot.
        let old_len = old.map_or(0, |p| unsafe { p.as_ref() }.len());
        *names = *names - old_len + table.len();
        *slot = if table.len() == 0 {
            None
        } else {
            Some(NonNull::from(Box::leak(Box::new(table))))
        };
        replaced.extend(old);
    }

    /// A new table from the live entries of `old` with `changes` applied.
    fn rebuild(hasher: &NameHasher, old: Option<&Table>, changes: &[TableUpdate<'_>]) -> Table {
        let Some(old) = old else {
            // A new shard (a load): only the changes.
            let entries: Vec<(&[u8], u64, &[u8])> = changes
                .iter()
                .filter_map(|&(n, h, p)| Some((n, h, p?)))
                .collect();
            return Table::build(&entries);
        };
        // A batch touches a shard with one or two names: scan them; a bulk
        // load gives a shard many: index them.
        let indexed: HashMap<&[u8], ()> = if changes.len() > 8 {
            changes.iter().map(|(n, _, _)| (*n, ())).collect()
        } else {
            HashMap::default()
        };
        let is_changed = |name: &[u8]| {
            if changes.len() > 8 {
                indexed.contains_key(name)
            } else {
                changes.iter().any(|(n, _, _)| *n == name)
            }
        };
        let mut entries: Vec<(&[u8], u64, &[u8])> = Vec::with_capacity(old.len() + changes.len());
        for (name, payload) in old.iter() {
            if !is_changed(name) {
                entries.push((name, hasher.hash(name), payload));
            }
        }
        for &(name, hash, payload) in changes {
            if let Some(payload) = payload {
                entries.push((name, hash, payload));
            }
        }
        Table::build(&entries)
    }

    /// Drops retired snapshots no worker holds, oldest first (each keeps the
    /// next one alive, so only the front can ever be free).
    pub fn collect_garbage(&mut self) {
        while let Some(front) = self.retired.front() {
            if Arc::strong_count(front) > 1 {
                break;
            }
            if let Some(front) = self.retired.pop_front()
                && let Ok(snapshot) = Arc::try_unwrap(front)
            {
                self.spare_table = snapshot.recycle().map(SpareTable);
            }
        }
    }

    /// Number of replaced snapshots still waiting for workers to let go.
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::zone::{RecordData, Soa, StaticRecord};

    fn zone(name: &str, statics: &[(&str, RecordData)]) -> ZoneData {
        ZoneData {
            name: name.into(),
            soa: Soa {
                mname: format!("ns1.{name}"),
                rname: format!("hostmaster.{name}"),
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum: 60,
                ttl: 3600,
            },
            ns: vec![format!("ns1.{name}")],
            ns_ttl: 3600,
            default_ttl: 60,
            records: statics
                .iter()
                .map(|(owner, data)| StaticRecord {
                    owner: (*owner).into(),
                    ttl: 300,
                    data: data.clone(),
                })
                .collect(),
        }
    }

    /// A deterministic pseudo-random change over a small set of names, so
    /// that names collide: hosts at statics, deep hosts under hosts (empty
    /// non-terminals), ACME tokens set and cleared, removals, zone reloads.
    fn change(seed: &mut u64) -> Change {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = *seed >> 33;
        let names = ["a", "b", "www", "x.a", "y.x.a", "mail", "deep.www", "c"];
        let name = names[(r % names.len() as u64) as usize].to_owned();
        let statics = [
            (
                "www",
                RecordData::Mx {
                    preference: 10,
                    exchange: "mail.example.".into(),
                },
            ),
            ("mail", RecordData::A("192.0.2.25".parse().unwrap())),
        ];
        match (r >> 8) % 10 {
            0..=4 => Change::UpsertHost(
                "example".into(),
                HostData {
                    name,
                    ipv4: Some(std::net::Ipv4Addr::from((r >> 12) as u32 & 0xff)),
                    ipv6: ((r >> 20) & 1 == 1).then(|| "2001:db8::1".parse().unwrap()),
                    txt: if (r >> 21) & 3 == 0 {
                        vec![format!("token{}", r & 7)]
                    } else {
                        Vec::new()
                    },
                    wildcard: (r >> 23) & 7 == 0,
                    ..HostData::default()
                },
            ),
            5..=7 => Change::RemoveHost("example".into(), name),
            8 => Change::UpsertZone(zone("example", &statics[..((r >> 12) % 3) as usize])),
            _ => Change::SetSoaSerial("example".into(), (r & 0xffff) as u32),
        }
    }

    fn contents(writer: &SnapshotWriter) -> BTreeMap<Vec<u8>, Vec<u8>> {
        writer
            .current()
            .entries()
            .map(|(n, p)| (n.to_vec(), p.to_vec()))
            .collect()
    }

    /// Staged host entries and the general overlay must give the same
    /// snapshot as publishing every change on its own, whatever the mix.
    #[test]
    fn one_batch_equals_one_publish_per_change() {
        for round in 0..120u64 {
            let mut seed = round;
            let changes: Vec<Change> = (0..60).map(|_| change(&mut seed)).collect();
            let mut one_by_one = SnapshotWriter::new(&HandlerConfig::default());
            let mut batched = SnapshotWriter::new(&HandlerConfig::default());
            let mut staged = SnapshotWriter::new(&HandlerConfig::default());
            for w in [&mut one_by_one, &mut batched, &mut staged] {
                w.apply([Change::UpsertZone(zone("example", &[]))]);
            }
            let mut rejected = 0;
            for c in changes.clone() {
                rejected += one_by_one.apply([c]).rejected.len();
            }
            assert_eq!(batched.apply(changes.clone()).rejected.len(), rejected);
            // Staged in three parts, published once.
            for part in changes.chunks(25) {
                staged.stage(part.to_vec());
            }
            staged.publish();
            let want = contents(&one_by_one);
            assert_eq!(contents(&batched), want, "round {round}: {changes:?}");
            assert_eq!(contents(&staged), want, "round {round}: {changes:?}");
            assert_eq!(batched.current().name_count(), want.len());
            assert_eq!(staged.current().name_count(), want.len());
        }
    }

    /// Plain address hosts grouped into packed batches give the snapshot
    /// one `UpsertHost` each gives, whatever the names held before
    /// (statics, empty non-terminals, hosts with ACME tokens, removed
    /// names), and reject the same hosts.
    #[test]
    fn address_host_batches_equal_one_upsert_each() {
        let address_only =
            |h: &HostData| h.txt.is_empty() && !h.wildcard && !h.offline && !h.disabled;
        for round in 0..120u64 {
            let mut seed = round + 1_000_000;
            let mut changes: Vec<Change> = (0..60).map(|_| change(&mut seed)).collect();
            // Names a batch must reject (the apex, an empty label) and a
            // name three labels deep (empty non-terminals above it), in
            // round 7 in a zone that is not loaded.
            for bad in ["@", "a..b", "deep.x.a"] {
                changes.insert(
                    (round as usize * 7 + bad.len()) % changes.len(),
                    Change::UpsertHost(
                        if round == 7 && bad == "deep.x.a" {
                            "other"
                        } else {
                            "example"
                        }
                        .into(),
                        HostData {
                            name: bad.into(),
                            ipv4: Some("192.0.2.99".parse().unwrap()),
                            ttl: Some(30),
                            ..HostData::default()
                        },
                    ),
                );
            }
            let mut grouped: Vec<Change> = Vec::new();
            for c in &changes {
                match c {
                    Change::UpsertHost(zone, h) if address_only(h) => {
                        if let Some(Change::UpsertAddressHosts(batch)) = grouped.last_mut()
                            && batch.zone() == zone
                        {
                            batch.push(&h.name, h.ipv4, h.ipv6, h.ttl);
                        } else {
                            let mut batch = AddressHosts::new(zone.clone());
                            batch.push(&h.name, h.ipv4, h.ipv6, h.ttl);
                            grouped.push(Change::UpsertAddressHosts(batch));
                        }
                    }
                    other => grouped.push(other.clone()),
                }
            }
            let mut plain = SnapshotWriter::new(&HandlerConfig::default());
            let mut packed = SnapshotWriter::new(&HandlerConfig::default());
            let mut staged = SnapshotWriter::new(&HandlerConfig::default());
            for w in [&mut plain, &mut packed, &mut staged] {
                w.apply([Change::UpsertZone(zone("example", &[]))]);
            }
            let want = plain.apply(changes.clone()).rejected.len();
            assert_eq!(packed.apply(grouped.clone()).rejected.len(), want);
            for part in grouped.chunks(7) {
                staged.stage(part.to_vec());
            }
            staged.publish();
            let want = contents(&plain);
            assert_eq!(contents(&packed), want, "round {round}: {grouped:?}");
            assert_eq!(contents(&staged), want, "round {round}: {grouped:?}");
            assert_eq!(packed.current().name_count(), want.len());
        }
    }

    /// The first load's publish builds its shards on two threads; a later
    /// one on the writer's thread alone. Both give the same snapshot.
    #[test]
    fn first_load_built_on_two_threads_equals_one_thread() {
        let mut hosts = AddressHosts::new("example");
        for i in 0..PARALLEL_BUILD_NAMES as u32 + 5000 {
            let v6 = (i % 10 == 0).then(|| std::net::Ipv6Addr::from(u128::from(i)));
            hosts.push(&format!("h{i}"), Some(i.into()), v6, Some(60));
        }
        let statics = [("mail", RecordData::A("192.0.2.25".parse().unwrap()))];
        let mut first = SnapshotWriter::new(&HandlerConfig::default());
        first.stage([Change::UpsertZone(zone("example", &statics))]);
        first.stage([Change::UpsertAddressHosts(hosts.clone())]);
        assert_eq!(first.current().name_count(), 0, "a first load");
        first.publish();
        let mut later = SnapshotWriter::new(&HandlerConfig::default());
        later.apply([Change::UpsertZone(zone("example", &statics))]);
        later.apply([Change::UpsertAddressHosts(hosts)]);
        assert_eq!(contents(&first), contents(&later));
        assert_eq!(
            first.current().name_count(),
            PARALLEL_BUILD_NAMES + 5000 + 2
        );
    }
}
