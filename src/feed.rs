//! From the database to the responder: the full load at start, then
//! following the change log.
//!
//! Every change-log entry names what changed (a host, or a zone); applying
//! it means re-reading the current state of that name and handing it to the
//! snapshot writer. Re-reading makes application idempotent, so reading a
//! range twice is harmless, and the responder converges on the last
//! committed state whatever it missed (DESIGN invariants 1 and 3).
//!
//! Serials on MySQL/MariaDB are AUTO_INCREMENT values taken inside each
//! transaction, so a transaction that started earlier may commit later with
//! a lower serial: a gap in what we read may still fill. We therefore never
//! move our applied mark past a young gap; we read from the gap again at the
//! next tick (re-applying what lies beyond it, harmlessly) until it fills or
//! is old enough to be a rolled-back transaction.
//!
//! Pruning: entries older than `[feed] retention` are deleted, and the store
//! answers a read from before the pruned range with `ChangesPruned`. Such a
//! follower has lost entries it never applied; it reloads everything ([`Follower::reload`]:
//! one batch that removes every zone it served and loads the database's
//! state anew, applied with one publish) instead of applying a partial log.
//!
//! Pushed commits: a writer's `Commit` frame carries the committed state of
//! what it changed, so [`Follower::apply_pushed`] can apply it without a
//! read, but only when that is exactly what the log would give: its serials
//! continue from the applied mark, and nothing served is newer than that
//! mark. A catch-up reads rows as they are when it reads them, possibly
//! newer than the log entries it read; it therefore records the database's
//! newest serial after its reads (`horizon`) and what it read, and until
//! the mark reaches the horizon, pushed data that touches those names is
//! left to the log (other hosts' data is exact: they were not read). SOA
//! serials only move forward (RFC 1982). Anything else (a gap, a stale or
//! duplicated push, a zone-level entry) is left to the change log.
//!
//! This module converts store types into the responder's plain input types;
//! it is the only place that knows both. It never writes to the database
//! except to prune the change log.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ddserver_responder::{Change, HostData, ZoneData};
use ddserver_store::{ChangeKind, Commit, Host, HostState, Name, Store, StoreError, Zone};

use crate::serve::Publish;
use crate::zoneload::{read_ahead, read_zone, split_zone, zone_data};

/// Change-log rows read per query.
const BATCH: u32 = 2000;
/// A gap in the serials older than this is a rolled-back transaction, not
/// one still in flight. Generous: a transaction holds its serial from insert
/// to commit, which is milliseconds.
const GAP_PATIENCE: Duration = Duration::from_secs(10);

/// What a batch of change-log entries asks of one zone, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ZoneWork {
    /// Only hosts changed: refresh the SOA serial.
    Serial,
    /// Created, removed, or its apex data or static records changed: drop
    /// what we serve of it and load it anew.
    Reload,
}

/// What the full load put in the snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    pub(crate) zones: usize,
    pub(crate) names: usize,
    pub(crate) serial: u64,
}

/// Follows the change log of one database.
pub(crate) struct Follower {
    store: Store,
    /// Every serial up to this one is applied (or known to be a gap).
    applied: u64,
    /// Gaps above `applied` and when we first saw each.
    gaps: BTreeMap<u64, Instant>,
    /// The zones handed to the snapshot writer, so a reload can remove
    /// those the database no longer has.
    zones: BTreeSet<String>,
    /// Full reloads after falling behind the pruned log.
    reloads: u64,
    /// What catch-ups served that may be newer than `applied`.
    fresh: Fresh,
    /// The SOA serial last handed to the snapshot writer per zone by a
    /// catch-up or a push, so an older pushed one never replaces it.
    soa: HashMap<String, u32>,
}

/// What catch-ups read that may show commits beyond the applied mark
/// (rows are read after the log entries that name them).
#[derive(Debug, Default)]
struct Fresh {
    /// The database's newest serial after the last such read: nothing
    /// served is newer. `None` while unknown (rows read, the serial not
    /// yet): then no pushed data is applied at all.
    horizon: Option<u64>,
    /// Hosts (full names) read since `applied` last reached the horizon.
    hosts: HashSet<String>,
    /// Zones reloaded (all their hosts read) since then.
    zones: HashSet<String>,
    /// Everything was reloaded since then.
    all: bool,
}

impl Fresh {
    /// Whether applying `commit` could replace something read newer.
    fn overlaps(&self, commit: &Commit) -> bool {
        self.all
            || commit.changes.iter().any(|(change, _)| {
                self.hosts.contains(change.name.as_str())
                    || self.zones.contains(change.zone.as_str())
            })
    }

    /// Forgets what was read once `applied` reached the horizon: from
    /// there on everything served is exactly the state at `applied`.
    fn settle(&mut self, applied: u64) {
        if self.horizon.is_some_and(|horizon| applied >= horizon) {
            self.hosts.clear();
            self.zones.clear();
            self.all = false;
        }
    }
}

/// Whether SOA serial `a` is newer than `b` (RFC 1982 serial arithmetic).
fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// What one [`Follower::apply_pushed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Commits applied from their data.
    pub(crate) commits: usize,
    /// Changes handed to the snapshot writer.
    pub(crate) changes: usize,
    /// Commits whose serials were all applied already.
    pub(crate) stale: usize,
    /// Commits left to the change log.
    pub(crate) left: usize,
}

/// What one [`Follower::catch_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// Change-log entries read.
    pub(crate) read: usize,
    /// Changes handed to the snapshot writer.
    pub(crate) changes: usize,
    /// Whether it had to reload everything (fell behind the pruned range).
    pub(crate) reloaded: bool,
    /// Time spent reading the database (the log and the changed names).
    pub(crate) reading: Duration,
    /// Time spent waiting for the snapshot writer to publish.
    pub(crate) publishing: Duration,
}

impl Follower {
    pub(crate) fn new(store: Store) -> Follower {
        Follower {
            store,
            applied: 0,
            gaps: BTreeMap::new(),
            zones: BTreeSet::new(),
            reloads: 0,
            // The full load reads rows after its serial, but its catch-up
            // reads whatever was committed meanwhile and sets the horizon.
            fresh: Fresh {
                horizon: Some(0),
                ..Fresh::default()
            },
            soa: HashMap::new(),
        }
    }

    /// The store this follower reads.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Full reloads so far.
    pub(crate) fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Reloads everything as one batch (one publish): every zone served so
    /// far is removed and every zone and host in the database loaded again,
    /// so the workers switch from the old state to the new one at once.
    /// The batch holds all hosts in memory while it is built; that is the
    /// price of never serving a half-loaded state, paid only after a
    /// responder fell behind the pruned change log.
    pub(crate) async fn reload<F, Fut>(&mut self, apply: F) -> Result<Loaded>
    where
        F: Fn(Vec<Change>) -> Fut,
        Fut: Future<Output = Result<usize>>,
    {
        let serial = self.store.latest_serial().await?;
        let mut batch: Vec<Change> = self
            .zones
            .iter()
            .map(|zone| Change::RemoveZone(zone.clone()))
            .collect();
        let mut zones = BTreeSet::new();
        let mut names = 0;
        for zone in self.store.list_zones().await? {
            let name = zone.name.as_str().to_owned();
            let loaded = read_zone(&self.store, zone).await?;
            names += loaded.data.records.len() + loaded.address_names.len();
            batch.push(Change::UpsertZone(loaded.data));
            batch.extend(
                loaded
                    .address_names
                    .into_iter()
                    .map(|h| Change::UpsertHost(name.clone(), h)),
            );
            zones.insert(name);
        }
        let mut hosts = self.store.host_pages(ddserver_store::HOST_PAGE_SIZE);
        while let Some(page) = hosts.next_batch().await? {
            names += page.len();
            batch
                .extend(page.iter().map(|host| {
                    Change::UpsertHost(host.zone.as_str().to_owned(), host_data(host))
                }));
        }
        apply(batch).await?;
        self.zones = zones;
        self.applied = serial;
        self.gaps.clear();
        self.reloads += 1;
        Ok(Loaded {
            zones: self.zones.len(),
            names,
            serial: self.applied,
        })
    }

    /// The highest serial up to which everything is applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// Loads every zone and host through `apply`, staged page by page and
    /// published once at the end, then catches up with what was committed
    /// meanwhile.
    ///
    /// `apply` must hand the batch over when it is called (the writer
    /// handle does); its future only waits for the writer. One batch is
    /// kept in flight, so the writer stages a page while the next is read
    /// and parsed here.
    pub(crate) async fn load_all<F, Fut>(&mut self, apply: F) -> Result<Loaded>
    where
        F: Fn(Vec<Change>, Publish) -> Fut,
        Fut: Future<Output = Result<usize>>,
    {
        // The serial first: replaying the log from it after the load covers
        // every change the load may have missed.
        let serial = self.store.latest_serial().await?;
        self.applied = serial;
        let zone_list = self.store.list_zones().await?;
        let zones = zone_list.len();
        let mut names = 0;
        let mut in_flight = None;
        let mut stage = async |batch: Vec<Change>| -> Result<()> {
            if let Some(previous) = in_flight.replace(apply(batch, Publish::Later)) {
                previous.await?;
            }
            Ok(())
        };
        for zone in zone_list {
            let name = zone.name.as_str().to_owned();
            self.zones.insert(name.clone());
            // The apex first (hosts need their zone), the statics at the end.
            stage(vec![Change::UpsertZone(zone_data(&zone, Vec::new()))]).await?;
            let split = split_zone(&self.store, &zone, async |split| {
                // Packed: no strings per name (see `AddressHosts`).
                let mut ready = ddserver_responder::AddressHosts::new(name.as_str());
                split.take_ready(&mut ready);
                names += ready.len();
                stage(vec![Change::UpsertAddressHosts(ready)]).await
            })
            .await?;
            // Names handed out twice (their second address came a page
            // later) count twice: an estimate, for the log and metrics.
            names += split.statics.len() + split.hosts.len();
            names -= split.retracted.len().min(names);
            let mut batch: Vec<Change> = split
                .retracted
                .into_iter()
                .map(|host| Change::RemoveHost(name.clone(), host))
                .collect();
            batch.extend(split.hosts.into_iter().map(|h| upsert(&name, h)));
            batch.push(Change::UpsertZone(zone_data(&zone, split.statics)));
            stage(batch).await?;
        }
        let mut hosts = read_ahead(self.store.served_host_pages().await?);
        while let Some(batch) = hosts.recv().await {
            let batch = batch?;
            names += batch.len();
            stage(batch).await?;
        }
        if let Some(last) = in_flight.take() {
            last.await?;
        }
        // Everything staged above is served from this publish on: each
        // shard is built once, whatever the number of pages.
        apply(Vec::new(), Publish::Now).await?;
        self.catch_up(|batch| apply(batch, Publish::Now)).await?;
        Ok(Loaded {
            zones,
            names,
            serial: self.applied,
        })
    }

    /// Applies every change committed since the last call, in batches of
    /// up to 2000 entries, each with one publish; reloads everything first
    /// when entries it needs were pruned.
    pub(crate) async fn catch_up<F, Fut>(&mut self, apply: F) -> Result<CatchUp>
    where
        F: Fn(Vec<Change>) -> Fut,
        Fut: Future<Output = Result<usize>>,
    {
        let mut done = CatchUp::default();
        loop {
            let started = Instant::now();
            let entries = match self.store.changes_since(self.applied, BATCH).await {
                Ok(entries) => entries,
                // Entries after our mark were pruned: the log can no longer
                // tell what changed, so load everything again.
                Err(StoreError::ChangesPruned { pruned_through, .. }) if !done.reloaded => {
                    self.fresh.horizon = None;
                    self.fresh.all = true;
                    self.soa.clear();
                    let behind = self.applied;
                    let loaded = self.reload(&apply).await?;
                    tracing::warn!(
                        applied = behind,
                        pruned_through,
                        serial = loaded.serial,
                        names = loaded.names,
                        "responder: fell behind the pruned change log; reloaded everything"
                    );
                    done.reloaded = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if entries.is_empty() {
                self.note_horizon(&done).await?;
                done.reading += started.elapsed();
                return Ok(done);
            }
            done.read += entries.len();
            // The rows read below may be newer than these entries; until
            // `note_horizon` knows how new, no pushed data applies (even if
            // this catch-up is cancelled half-way).
            self.fresh.horizon = None;
            let last = entries.last().map(|c| c.serial).unwrap_or(self.applied);
            let full_batch = entries.len() == BATCH as usize;

            // What changed, each name once, zones before hosts.
            let mut zones: BTreeMap<String, ZoneWork> = BTreeMap::new();
            let mut hosts: BTreeSet<(String, String)> = BTreeSet::new();
            for entry in &entries {
                let zone = entry.zone.as_str().to_owned();
                let work = match entry.kind {
                    ChangeKind::ZoneAdded
                    | ChangeKind::ZoneRemoved
                    | ChangeKind::ZoneChanged
                    | ChangeKind::RecordsChanged => ZoneWork::Reload,
                    ChangeKind::HostAdded | ChangeKind::HostChanged | ChangeKind::HostRemoved => {
                        hosts.insert((zone.clone(), entry.name.as_str().to_owned()));
                        ZoneWork::Serial
                    }
                };
                let slot = zones.entry(zone).or_insert(ZoneWork::Serial);
                *slot = (*slot).max(work);
            }
            let mut batch = Vec::new();
            for (zone, work) in &zones {
                if *work == ZoneWork::Serial && self.zones.contains(zone) {
                    // Only hosts changed in a zone we serve: its SOA serial
                    // is read after the hosts (below); nothing to read here.
                    continue;
                }
                let name =
                    Name::parse(zone).map_err(|e| anyhow!("zone {zone} in the change log: {e}"))?;
                let current = self.store.zone_by_name(&name).await?;
                // Removed, re-created or its static records changed: drop
                // what we serve (if anything) and load the zone anew, hosts
                // included, so nothing of the old state survives (plain
                // address names live beside the hosts; see zoneload).
                if *work >= ZoneWork::Reload {
                    self.fresh.zones.insert(zone.clone());
                    self.soa.remove(zone);
                    if self.zones.remove(zone) {
                        batch.push(Change::RemoveZone(zone.clone()));
                    }
                }
                let Some(current) = current else { continue };
                self.zones.insert(zone.clone());
                if *work >= ZoneWork::Reload {
                    let (data, hosts) = served_zone(&self.store, current).await?;
                    batch.push(Change::UpsertZone(data));
                    batch.extend(
                        hosts
                            .into_iter()
                            .map(|h| Change::UpsertHost(zone.clone(), h)),
                    );
                }
            }
            // The hosts' current state in one read per 256 names.
            let hosts: Vec<&(String, String)> = hosts
                .iter()
                .filter(|(zone, _)| zones.get(zone) != Some(&ZoneWork::Reload))
                .collect(); // a zone's reload above covered its hosts
            self.fresh
                .hosts
                .extend(hosts.iter().map(|(_, fqdn)| fqdn.clone()));
            let names = hosts
                .iter()
                .map(|(_, fqdn)| {
                    Name::parse(fqdn).map_err(|e| anyhow!("host {fqdn} in the change log: {e}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let current: BTreeMap<String, Host> = self
                .store
                .hosts_by_fqdn(&names)
                .await?
                .into_iter()
                .map(|host| (host.fqdn.as_str().to_owned(), host))
                .collect();
            for (zone, fqdn) in hosts {
                match current.get(fqdn) {
                    Some(host) if host.zone.as_str() == zone => {
                        batch.push(Change::UpsertHost(zone.clone(), host_data(host)))
                    }
                    _ => batch.push(Change::RemoveHost(zone.clone(), relative(fqdn, zone))),
                }
            }
            // The serials go after the hosts so the SOA matches the data.
            for (zone, work) in &zones {
                if *work == ZoneWork::Serial {
                    let name = Name::parse(zone).map_err(|e| anyhow!("zone {zone}: {e}"))?;
                    if let Some(current) = self.store.zone_by_name(&name).await? {
                        self.zones.insert(zone.clone());
                        self.soa.insert(zone.clone(), current.serial);
                        batch.push(Change::SetSoaSerial(zone.clone(), current.serial));
                    }
                }
            }
            done.changes += batch.len();
            let read = Instant::now();
            done.reading += read - started;
            apply(batch).await?;
            done.publishing += read.elapsed();
            self.advance(&entries.iter().map(|c| c.serial).collect::<Vec<_>>(), last);
            if !full_batch {
                self.note_horizon(&done).await?;
                return Ok(done);
            }
        }
    }

    /// After a catch-up that read rows (or reloaded): the rows may show
    /// commits beyond the entries it read, up to the database's newest
    /// serial now, and pushed data older than that must not be applied
    /// over them. One indexed `MAX` read, only when rows were read (or an
    /// earlier read of it failed).
    async fn note_horizon(&mut self, done: &CatchUp) -> Result<()> {
        if done.read > 0 || done.reloaded || self.fresh.horizon.is_none() {
            // Serials never go backwards (pruning keeps the newest), so
            // the newest now bounds every row read before.
            self.fresh.horizon = Some(self.store.latest_serial().await?);
            self.fresh.settle(self.applied);
        }
        Ok(())
    }

    /// Applies pushed commits from their data, with one publish, as far as
    /// they continue exactly from the applied mark: sorted by serial,
    /// commits already applied are skipped, and the first that does not
    /// continue (a gap, a name a catch-up read newer, a zone-level entry,
    /// a zone or name we cannot place) ends the run; it and the rest are
    /// left to the change log, which the caller then reads if the pushed
    /// serials say it is behind.
    pub(crate) async fn apply_pushed<F, Fut>(
        &mut self,
        mut commits: Vec<Commit>,
        apply: F,
    ) -> Result<Pushed>
    where
        F: FnOnce(Vec<Change>) -> Fut,
        Fut: Future<Output = Result<usize>>,
    {
        commits.sort_by_key(|c| c.serials().map(|(first, _)| first).unwrap_or(0));
        let mut done = Pushed::default();
        let mut next = self.applied;
        let mut batch = Vec::new();
        // The newest SOA serial of each zone, set after its hosts.
        let mut soa: BTreeMap<String, u32> = BTreeMap::new();
        for commit in &commits {
            let Some((_, last)) = commit.serials() else {
                continue;
            };
            if last <= next {
                done.stale += 1;
                continue;
            }
            let newer_served = match self.fresh.horizon {
                None => true,
                Some(horizon) => horizon > next && self.fresh.overlaps(commit),
            };
            if done.left > 0 || newer_served || !self.continues(commit, next) {
                done.left += 1;
                continue;
            }
            for (change, state) in &commit.changes {
                let zone = change.zone.as_str();
                let label = relative(change.name.as_str(), zone);
                batch.push(match state {
                    Some(state) => {
                        Change::UpsertHost(zone.to_owned(), served_host(label, state.clone()))
                    }
                    None => Change::RemoveHost(zone.to_owned(), label),
                });
            }
            for (zone, serial) in &commit.zones {
                let zone = zone.as_str();
                // Newer than what this batch or the snapshot has.
                let served = soa.get(zone).or_else(|| self.soa.get(zone));
                if served.is_none_or(|&old| serial_newer(*serial, old)) {
                    soa.insert(zone.to_owned(), *serial);
                }
            }
            next = last;
            done.commits += 1;
        }
        if batch.is_empty() {
            return Ok(done);
        }
        batch.extend(
            soa.iter()
                .map(|(zone, serial)| Change::SetSoaSerial(zone.clone(), *serial)),
        );
        done.changes = batch.len();
        apply(batch).await?;
        // Only what the snapshot writer took counts as served.
        self.soa.extend(soa);
        self.applied = next;
        self.gaps = self.gaps.split_off(&(next + 1));
        self.fresh.settle(next);
        Ok(done)
    }

    /// Whether `commit` can be applied from its data right after serial
    /// `after`: consecutive serials from `after + 1`, host entries only,
    /// each in a zone we serve and whose SOA serial it carries, each name
    /// below its zone.
    fn continues(&self, commit: &Commit, after: u64) -> bool {
        let mut expected = after + 1;
        commit.changes.iter().all(|(change, _)| {
            let zone = change.zone.as_str();
            let ok = change.serial == expected
                && matches!(
                    change.kind,
                    ChangeKind::HostAdded | ChangeKind::HostChanged | ChangeKind::HostRemoved
                )
                && self.zones.contains(zone)
                && commit.zones.iter().any(|(z, _)| z == &change.zone)
                && change
                    .name
                    .as_str()
                    .strip_suffix(zone)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'));
            expected += 1;
            ok
        })
    }

    /// Moves the applied mark over `serials` (sorted, all > applied), but
    /// not past a gap that may still fill.
    fn advance(&mut self, serials: &[u64], last: u64) {
        let now = Instant::now();
        let mut expected = self.applied + 1;
        let mut stop_at = None;
        for &serial in serials {
            while expected < serial {
                let first_seen = *self.gaps.entry(expected).or_insert(now);
                if stop_at.is_none() && now.duration_since(first_seen) < GAP_PATIENCE {
                    stop_at = Some(expected - 1);
                }
                expected += 1;
            }
            self.gaps.remove(&serial);
            expected = serial + 1;
        }
        self.applied = stop_at.unwrap_or(last).max(self.applied);
        self.gaps = self.gaps.split_off(&(self.applied + 1));
    }
}

/// `fqdn` relative to `zone` (both lower-case, no trailing dot).
fn relative(fqdn: &str, zone: &str) -> String {
    fqdn.strip_suffix(zone)
        .and_then(|s| s.strip_suffix('.'))
        .unwrap_or(fqdn)
        .to_owned()
}

fn upsert(zone: &str, host: HostData) -> Change {
    Change::UpsertHost(zone.to_owned(), host)
}

/// A host's state, pushed or read, as the responder serves it under
/// `label` (relative to its zone).
pub(crate) fn served_host(label: String, state: HostState) -> HostData {
    HostData {
        name: label,
        ipv4: state.ipv4,
        ipv6: state.ipv6,
        txt: state.txt,
        wildcard: state.wildcard,
        offline: state.offline,
        disabled: state.disabled,
        ttl: None,
    }
}

/// A stored host as the responder serves it.
pub(crate) fn host_data(host: &Host) -> HostData {
    served_host(host.label.clone(), HostState::of(host))
}

/// A zone and its hosts, for `zone export`.
pub(crate) async fn zone_with_hosts(
    store: &Store,
    zone: &Name,
) -> Result<(ZoneData, Vec<HostData>)> {
    let stored = store
        .zone_by_name(zone)
        .await?
        .with_context(|| format!("zone {} does not exist", zone.to_unicode()))?;
    served_zone(store, stored).await
}

/// Everything the responder serves for one zone: its apex data and
/// zone-level static records, and every name served on the host path (its
/// plain address names and its hosts).
async fn served_zone(store: &Store, zone: Zone) -> Result<(ZoneData, Vec<HostData>)> {
    let filter = ddserver_store::HostFilter {
        zone: Some(zone.name.clone()),
        owner: None,
    };
    let loaded = read_zone(store, zone).await?;
    let mut hosts = loaded.address_names;
    hosts.extend(store.list_hosts(filter).await?.iter().map(host_data));
    Ok((loaded.data, hosts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddserver_store::{Actor, Change as LogEntry, NewZone};

    const ZONE: &str = "dyn.example.net";

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    /// A pushed commit of host `label` at `serial` with address `ip` and
    /// the zone's SOA serial `soa`.
    fn commit(serial: u64, label: &str, ip: [u8; 4], soa: u32) -> Commit {
        Commit {
            zones: vec![(name(ZONE), soa)],
            changes: vec![(
                LogEntry {
                    serial,
                    zone: name(ZONE),
                    name: name(&format!("{label}.{ZONE}")),
                    kind: ChangeKind::HostChanged,
                    committed_at: 0,
                },
                Some(HostState {
                    ipv4: Some(ip.into()),
                    ..HostState::default()
                }),
            )],
        }
    }

    /// A follower of a real SQLite database with one zone, loaded, whose
    /// store is then closed: whatever it applies afterwards cannot come
    /// from a database read.
    async fn loaded_follower() -> (Follower, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("dd.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
            .add_zone(
                &Actor::cli(),
                NewZone::new(name(ZONE), vec![name("ns1.example.net")]),
            )
            .await
            .unwrap();
        let mut follower = Follower::new(store.clone());
        follower
            .load_all(|batch, _| async move { Ok(batch.len()) })
            .await
            .unwrap();
        store.close().await;
        (follower, dir)
    }

    /// Applies `commits` and returns what it did with the batch it handed
    /// to the snapshot writer.
    async fn push(follower: &mut Follower, commits: Vec<Commit>) -> (Pushed, Vec<Change>) {
        let mut handed = Vec::new();
        let done = follower
            .apply_pushed(commits, |batch| {
                handed = batch;
                async { Ok(0) }
            })
            .await
            .unwrap();
        (done, handed)
    }

    fn upsert_ip(zone_change: &Change) -> Option<(String, [u8; 4])> {
        match zone_change {
            Change::UpsertHost(_, host) => Some((host.name.clone(), host.ipv4?.octets())),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushed_commits_apply_in_serial_order_without_a_read() {
        let (mut follower, _dir) = loaded_follower().await;
        let base = follower.applied();
        // Arrived out of order (two writers): applied in serial order, one
        // batch, the host then the newest SOA serial.
        let (done, batch) = push(
            &mut follower,
            vec![
                commit(base + 2, "a", [10, 0, 0, 2], 12),
                commit(base + 1, "a", [10, 0, 0, 1], 11),
            ],
        )
        .await;
        assert_eq!((done.commits, done.left, done.stale), (2, 0, 0));
        assert_eq!(follower.applied(), base + 2);
        let ips: Vec<_> = batch.iter().filter_map(upsert_ip).collect();
        assert_eq!(
            ips,
            vec![("a".into(), [10, 0, 0, 1]), ("a".into(), [10, 0, 0, 2])]
        );
        assert_eq!(batch.last(), Some(&Change::SetSoaSerial(ZONE.into(), 12)));

        // A duplicate of an applied commit, with other data: ignored.
        let (done, batch) =
            push(&mut follower, vec![commit(base + 2, "a", [9, 9, 9, 9], 12)]).await;
        assert_eq!((done.stale, done.commits), (1, 0));
        assert!(batch.is_empty());

        // A gap: nothing applies, the log must fill it.
        let (done, batch) = push(
            &mut follower,
            vec![commit(base + 4, "a", [10, 0, 0, 4], 14)],
        )
        .await;
        assert_eq!((done.left, done.commits), (1, 0));
        assert!(batch.is_empty());
        assert_eq!(follower.applied(), base + 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_a_catch_up_read_newer_wait_for_the_log() {
        let (mut follower, _dir) = loaded_follower().await;
        let base = follower.applied();
        // A catch-up read host "a" and saw the database at base + 5.
        follower.fresh.horizon = Some(base + 5);
        follower.fresh.hosts.insert(format!("a.{ZONE}"));
        // "b" was not read: its data is exact and applies.
        let (done, batch) = push(
            &mut follower,
            vec![commit(base + 1, "b", [10, 0, 0, 1], 11)],
        )
        .await;
        assert_eq!(done.commits, 1);
        assert_eq!(batch.len(), 2);
        // "a" may be served newer than this commit: left to the log.
        let (done, _) = push(
            &mut follower,
            vec![commit(base + 2, "a", [10, 0, 0, 2], 12)],
        )
        .await;
        assert_eq!((done.left, done.commits), (1, 0));
        assert_eq!(follower.applied(), base + 1);
        // While the horizon is unknown nothing applies.
        follower.fresh.horizon = None;
        let (done, _) = push(
            &mut follower,
            vec![commit(base + 2, "b", [10, 0, 0, 2], 12)],
        )
        .await;
        assert_eq!(done.left, 1);
        // Once the mark reaches the horizon, what was read is forgotten.
        follower.fresh.horizon = Some(base + 2);
        let (done, _) = push(
            &mut follower,
            vec![commit(base + 2, "b", [10, 0, 0, 2], 12)],
        )
        .await;
        assert_eq!(done.commits, 1);
        assert!(follower.fresh.hosts.is_empty());
        let (done, _) = push(
            &mut follower,
            vec![commit(base + 3, "a", [10, 0, 0, 3], 13)],
        )
        .await;
        assert_eq!(done.commits, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_pushed_data_cannot_place_is_left_to_the_log() {
        let (mut follower, _dir) = loaded_follower().await;
        let base = follower.applied();
        let mut zone_level = commit(base + 1, "a", [10, 0, 0, 1], 11);
        zone_level.changes[0].0.kind = ChangeKind::RecordsChanged;
        let mut unknown_zone = commit(base + 1, "a", [10, 0, 0, 1], 11);
        unknown_zone.changes[0].0.zone = name("other.example");
        let mut no_soa = commit(base + 1, "a", [10, 0, 0, 1], 11);
        no_soa.zones.clear();
        let mut not_below = commit(base + 1, "a", [10, 0, 0, 1], 11);
        not_below.changes[0].0.name = name(&format!("x{ZONE}"));
        let mut torn = commit(base + 1, "a", [10, 0, 0, 1], 11);
        let mut second = torn.changes[0].clone();
        second.0.serial = base + 3;
        torn.changes.push(second);
        for bad in [zone_level, unknown_zone, no_soa, not_below, torn] {
            let (done, batch) = push(&mut follower, vec![bad.clone()]).await;
            assert_eq!((done.left, done.commits), (1, 0), "{bad:?}");
            assert!(batch.is_empty());
        }
        // And the commits behind one left are left too: serial order.
        let mut zone_level = commit(base + 1, "a", [10, 0, 0, 1], 11);
        zone_level.changes[0].0.kind = ChangeKind::ZoneChanged;
        let (done, _) = push(
            &mut follower,
            vec![zone_level, commit(base + 2, "b", [10, 0, 0, 2], 12)],
        )
        .await;
        assert_eq!((done.left, done.commits), (2, 0));
        assert_eq!(follower.applied(), base);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushed_soa_serials_only_move_forward() {
        let (mut follower, _dir) = loaded_follower().await;
        let base = follower.applied();
        follower.soa.insert(ZONE.into(), 100);
        let (_, batch) = push(
            &mut follower,
            vec![commit(base + 1, "a", [10, 0, 0, 1], 99)],
        )
        .await;
        assert!(!batch.iter().any(|c| matches!(c, Change::SetSoaSerial(..))));
        let (_, batch) = push(
            &mut follower,
            vec![commit(base + 2, "a", [10, 0, 0, 2], 101)],
        )
        .await;
        assert_eq!(batch.last(), Some(&Change::SetSoaSerial(ZONE.into(), 101)));
        assert!(serial_newer(0, u32::MAX));
        assert!(!serial_newer(u32::MAX, 0));
        assert!(!serial_newer(5, 5));
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative("h1.dyn.example.net", "dyn.example.net"), "h1");
        assert_eq!(relative("a.b.dyn.example.net", "dyn.example.net"), "a.b");
    }
}
