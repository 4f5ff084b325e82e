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
//! This module converts store types into the responder's plain input types;
//! it is the only place that knows both. It never writes to the database
//! except to prune the change log.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ddserver_responder::{Change, HostData, ZoneData};
use ddserver_store::{ChangeKind, Host, Name, Store, StoreError, Zone};

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
                done.reading += started.elapsed();
                return Ok(done);
            }
            done.read += entries.len();
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
                if *work >= ZoneWork::Reload && self.zones.remove(zone) {
                    batch.push(Change::RemoveZone(zone.clone()));
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
                return Ok(done);
            }
        }
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

/// A stored host as the responder serves it.
pub(crate) fn host_data(host: &Host) -> HostData {
    HostData {
        name: host.label.clone(),
        ipv4: host.ipv4,
        ipv6: host.ipv6,
        txt: host.txt.clone(),
        wildcard: host.flags.wildcard,
        offline: host.flags.offline,
        disabled: host.flags.disabled.is_some(),
        ttl: None,
    }
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

    #[test]
    fn relative_names() {
        assert_eq!(relative("h1.dyn.example.net", "dyn.example.net"), "h1");
        assert_eq!(relative("a.b.dyn.example.net", "dyn.example.net"), "a.b");
    }
}
