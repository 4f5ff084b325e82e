//! The host mirror: an in-memory copy of what the updater needs to accept a
//! host's cached credentials and to answer `nochg` — owner, the owner's
//! state, addresses, flags and a fingerprint of the stored secret hash — so
//! that an unchanged update with cached credentials needs no database query
//! of its own.
//!
//! It is loaded at start (keyset pages of [`Store::host_credentials_page`])
//! and follows the change log, which every writer in every process writes
//! in the same transaction as its change: addresses, flags, TXT, host
//! removal, a new update secret and an owner's state change all write a
//! `HostChanged`/`HostRemoved` entry (secret and owner changes without a
//! serial bump), and a zone removal one `ZoneRemoved`. An entry makes the
//! mirror re-read that host; `ZoneRemoved` re-reads every mirrored name
//! below the apex. The change log, not the store's in-process commit
//! announcements, is the source: it alone sees other processes (the admin
//! CLI, a second updater on another machine sharing MariaDB), and the
//! freshness rule below needs a log read anyway.
//!
//! # Consistency: why an answer from the mirror is never stale
//!
//! A request may use the mirror only after [`Mirror::fresh`]: it waits for a
//! poll of the change log that *started after the request arrived* and
//! applied everything the log held. Serial order is commit order
//! (`Store::begin_write`), so that poll saw every commit made before it
//! started, and the mirror then holds, for every host, its state at some
//! moment after the request arrived (a host re-read by the poll: its state
//! at the re-read, later still). So the request is decided on a state at
//! least as new as the database's when it arrived, as if it had read the
//! row itself: a `nochg` means the requested addresses and flags *were* the
//! stored ones at a moment during the request, so no update is lost; a
//! secret change, a disabled host or owner, or a removal committed anywhere
//! before the request arrived is seen. Writes committed while the request
//! runs are ordered after it, as with a database read. Changed addresses
//! still go through the committer, which re-reads the row under the write
//! lock and decides `good`/`nochg` there.
//!
//! On a SQLite file a request usually need not wait at all: the poller
//! reads the database's [`CommitMark`] before each poll, and a request
//! that reads the same mark on arrival knows nothing was committed, by any
//! connection in any process, since that poll began; the mirror after that
//! poll is then as new as the database at the request's arrival, which is
//! the rule above. The mark is the shared wal-index header, read without a
//! lock ([`CommitProbe`]); any commit (the updater's own included) changes
//! it, and the requests that arrive after one wait for the next poll as
//! below. MySQL/MariaDB have no such mark: every request waits for a poll.
//!
//! Polls are shared: every request that arrives while a poll runs waits for
//! the next one, so under load one change-log query (usually empty) serves
//! a whole batch of requests. When a poll fails, when the log was pruned
//! past the mirror (it reloads), while it loads, or when it is switched off
//! (`max_hosts` exceeded or 0), [`Mirror::fresh`] says no and the request
//! reads the host's row as before: the mirror can make an answer faster,
//! never different.
//!
//! Memory: one map entry per host (the boxed name and a 64-byte record, plus
//! the hash tables' slack); owner names are shared per owner. Measured at
//! 1M hosts: 231 MB more resident memory than without the mirror, ~230 B
//! per host (bench/README.md); `host_mirror_max` bounds it.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use ddserver_store::{
    ChangeKind, CommitMark, CommitProbe, HostCredential, Name, Store, StoreError, StoredSecret,
};
use tokio::sync::{Notify, watch};

/// A short digest of a stored secret hash: enough to make the credential
/// cache key change when the secret changes (a new hash has a new random
/// salt), without keeping ~100 bytes of PHC string per host in memory.
pub(crate) type Fingerprint = [u8; 16];

pub(crate) fn fingerprint(secret: &StoredSecret) -> Fingerprint {
    let digest = blake3::hash(secret.key_material());
    let mut out = [0; 16];
    out.copy_from_slice(&digest.as_bytes()[..16]);
    out
}

/// Shards of the name map: readers of different shards never meet, and the
/// poller holds one shard's write lock only while it replaces one entry.
const SHARDS: usize = 64;
/// Hosts per page when loading.
const LOAD_PAGE: usize = 10_000;
/// Change-log entries read per query while catching up.
const POLL_BATCH: u32 = 10_000;
/// With no request waiting, the log is still read this often, so the mirror
/// never falls far behind (nor behind a prune).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A request waits at most this long for a fresh poll, then reads the row
/// itself (a hung database then answers `911` through the normal path).
const FRESH_WAIT: Duration = Duration::from_secs(5);
/// After a failed load, the next attempt waits this long.
const RELOAD_AFTER: Duration = Duration::from_secs(5);

const WILDCARD: u8 = 1;
const OFFLINE: u8 = 2;
const DISABLED: u8 = 4;
const OWNER_ACTIVE: u8 = 8;

type Hasher = foldhash::fast::RandomState;
type Shard = RwLock<HashMap<Box<str>, Entry, Hasher>>;

/// One host in the map; the key is its name.
struct Entry {
    id: i64,
    secret: Fingerprint,
    owner: Arc<str>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    bits: u8,
}

/// What the mirror knows of one host, copied out for one request.
#[derive(Debug, Clone)]
pub(crate) struct MirroredHost {
    pub(crate) id: i64,
    pub(crate) secret: Fingerprint,
    pub(crate) owner: Arc<str>,
    pub(crate) owner_active: bool,
    pub(crate) ipv4: Option<Ipv4Addr>,
    pub(crate) ipv6: Option<Ipv6Addr>,
    pub(crate) wildcard: bool,
    pub(crate) offline: bool,
    pub(crate) disabled: bool,
}

#[derive(Debug, Clone, Copy)]
struct Finished {
    /// The number of the poll that finished last.
    poll: u64,
    /// Whether it brought the mirror up to date.
    ok: bool,
}

/// The mirror, shared by every request and its poller task.
pub(crate) struct Mirror {
    shards: Box<[Shard]>,
    shard_of: Hasher,
    max_hosts: usize,
    hosts: AtomicUsize,
    /// Loaded and following the log.
    ready: AtomicBool,
    /// Polls started so far (the number of the running or last poll).
    started: AtomicU64,
    finished: watch::Sender<Finished>,
    wake: Notify,
    polls: AtomicU64,
    /// Polls that brought the mirror up to date: each is a database answer.
    polls_ok: AtomicU64,
    /// SQLite files: the database's commit marks (set once by the poller).
    probe: OnceLock<CommitProbe>,
    /// The mark read before the last poll that brought the mirror up to
    /// date began; `None` while that cannot be said (no poll yet, a failed
    /// one, a reload, or a probe that stopped being trustworthy).
    fresh_mark: RwLock<Option<CommitMark>>,
    /// Set when the probe's file was found replaced: marks are not read
    /// again.
    probe_retired: AtomicBool,
    /// Requests found fresh by the mark, without waiting for a poll.
    fresh_at_once: AtomicU64,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("hosts", &self.hosts.load(Ordering::Relaxed))
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// An empty mirror for at most `max_hosts` hosts (0: switched off).
    pub(crate) fn new(max_hosts: usize) -> Mirror {
        Mirror {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            shard_of: Hasher::default(),
            max_hosts,
            hosts: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            started: AtomicU64::new(0),
            finished: watch::channel(Finished { poll: 0, ok: false }).0,
            wake: Notify::new(),
            polls: AtomicU64::new(0),
            polls_ok: AtomicU64::new(0),
            probe: OnceLock::new(),
            fresh_mark: RwLock::new(None),
            probe_retired: AtomicBool::new(false),
            fresh_at_once: AtomicU64::new(0),
        }
    }

    /// Hosts held now.
    pub(crate) fn len(&self) -> usize {
        self.hosts.load(Ordering::Relaxed)
    }

    /// Change-log polls run so far.
    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Polls so far that brought the mirror up to date (each one a query
    /// the database answered).
    pub(crate) fn polls_ok(&self) -> u64 {
        self.polls_ok.load(Ordering::Relaxed)
    }

    /// Requests found fresh by the commit mark, without waiting for a poll.
    pub(crate) fn fresh_at_once(&self) -> u64 {
        self.fresh_at_once.load(Ordering::Relaxed)
    }

    fn set_fresh_mark(&self, mark: Option<CommitMark>) {
        *self.fresh_mark.write().unwrap_or_else(|e| e.into_inner()) = mark;
    }

    /// Whether nothing has been committed since the last poll that brought
    /// the mirror up to date began (see the module comment).
    fn unchanged_since_last_poll(&self) -> bool {
        let Some(probe) = self.probe.get() else {
            return false;
        };
        // `None` once the probe is retired: no poll sets a mark after that.
        let known = *self.fresh_mark.read().unwrap_or_else(|e| e.into_inner());
        // The known mark first: a poll that finished after this read only
        // makes the mirror newer.
        known.is_some() && probe.mark() == known
    }

    fn shard(&self, name: &str) -> &Shard {
        let i = self.shard_of.hash_one(name) as usize % SHARDS;
        &self.shards[i]
    }

    /// Waits until the mirror reflects every commit made before this call
    /// (see the module comment). `false`: it cannot say (loading, off,
    /// database failing); read the row instead.
    pub(crate) async fn fresh(&self) -> bool {
        if !self.ready.load(Ordering::SeqCst) {
            return false;
        }
        if self.unchanged_since_last_poll() && self.ready.load(Ordering::SeqCst) {
            self.fresh_at_once.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // The poll after the one running now starts after this load: the
        // poller increments `started` before it sends its query.
        let target = self.started.load(Ordering::SeqCst) + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        let done = tokio::time::timeout(FRESH_WAIT, finished.wait_for(|f| f.poll >= target)).await;
        match done {
            Ok(Ok(f)) => f.ok && self.ready.load(Ordering::SeqCst),
            _ => false,
        }
    }

    /// The host with this name, if mirrored. Only meaningful after
    /// [`Mirror::fresh`] said yes.
    pub(crate) fn get(&self, fqdn: &str) -> Option<MirroredHost> {
        let shard = self.shard(fqdn).read().unwrap_or_else(|e| e.into_inner());
        shard.get(fqdn).map(|e| MirroredHost {
            id: e.id,
            secret: e.secret,
            owner: e.owner.clone(),
            owner_active: e.bits & OWNER_ACTIVE != 0,
            ipv4: e.ipv4,
            ipv6: e.ipv6,
            wildcard: e.bits & WILDCARD != 0,
            offline: e.bits & OFFLINE != 0,
            disabled: e.bits & DISABLED != 0,
        })
    }

    fn upsert(&self, host: HostCredential, owners: &mut Owners) {
        let mut bits = 0;
        for (on, bit) in [
            (host.flags.wildcard, WILDCARD),
            (host.flags.offline, OFFLINE),
            (host.flags.disabled.is_some(), DISABLED),
            (host.owner_active, OWNER_ACTIVE),
        ] {
            if on {
                bits |= bit;
            }
        }
        let entry = Entry {
            id: host.id,
            secret: fingerprint(&host.secret),
            owner: owners.intern(host.owner),
            ipv4: host.ipv4,
            ipv6: host.ipv6,
            bits,
        };
        let name = host.fqdn.as_str();
        let mut shard = self.shard(name).write().unwrap_or_else(|e| e.into_inner());
        if shard.insert(name.into(), entry).is_none() {
            self.hosts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, name: &str) {
        let mut shard = self.shard(name).write().unwrap_or_else(|e| e.into_inner());
        if shard.remove(name).is_some() {
            self.hosts.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            *shard = HashMap::with_hasher(Hasher::default());
        }
        self.hosts.store(0, Ordering::Relaxed);
    }

    /// Mirrored names strictly below `apex` (a removed zone's hosts).
    fn names_below(&self, apex: &str) -> Vec<Name> {
        let suffix = format!(".{apex}");
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            names.extend(
                shard
                    .keys()
                    .filter(|k| k.ends_with(&suffix))
                    .filter_map(|k| Name::parse(k).ok()),
            );
        }
        names
    }

    /// Starts the poller: loads, then follows the change log until `stop`.
    pub(crate) fn start(
        self: Arc<Self>,
        store: Store,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(store, stop).await })
    }

    async fn run(&self, store: Store, mut stop: watch::Receiver<bool>) {
        if self.max_hosts == 0 {
            return;
        }
        match store.commit_probe().await {
            Ok(Some(probe)) => {
                tracing::debug!(?probe, "updater: host mirror reads commit marks");
                let _ = self.probe.set(probe);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "updater: cannot read the database's commit marks ({e}); \
                 every request waits for a change-log poll"
            ),
        }
        let mut owners = Owners::default();
        // `None`: (re)load before the next poll.
        let mut applied: Option<u64> = None;
        let mut failing = false;
        loop {
            if applied.is_none() {
                match self.load(&store, &mut owners).await {
                    Ok(Some(serial)) => {
                        applied = Some(serial);
                        self.ready.store(true, Ordering::SeqCst);
                        tracing::info!(hosts = self.len(), "updater: host mirror loaded");
                    }
                    Ok(None) => {
                        self.switch_off();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("updater: loading the host mirror failed: {e}");
                        tokio::select! {
                            _ = stop.changed() => break,
                            _ = tokio::time::sleep(RELOAD_AFTER) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            // No pause between polls: one runs at a time, and its round
            // trip is the window in which the next one's requests gather
            // (a request's `notify_one` during a poll is kept as a permit).
            // A minimum gap of 1 ms cost a lone client 1-2 ms (tokio's
            // timer rounds up) on every change and every MariaDB `nochg`;
            // without it both backends answer more, for about 5 µs more
            // CPU per MariaDB `nochg` at 64 connections (bench/README.md,
            // "No pause between change-log polls").
            let poll = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            self.polls.fetch_add(1, Ordering::Relaxed);
            // Before the poll's first query, so that the poll sees every
            // commit this mark had seen.
            let mark = self.mark_before_poll();
            let from = applied.unwrap_or(0);
            let ok = match self.catch_up(&store, from, &mut owners).await {
                Ok(Some(serial)) => {
                    applied = Some(serial);
                    if failing {
                        tracing::info!("updater: host mirror follows the change log again");
                    }
                    failing = false;
                    self.set_fresh_mark(mark);
                    self.polls_ok.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(None) => {
                    self.switch_off();
                    return;
                }
                Err(StoreError::ChangesPruned { .. }) => {
                    tracing::warn!(
                        "updater: change log pruned past the host mirror (serial {from}); reloading"
                    );
                    self.ready.store(false, Ordering::SeqCst);
                    applied = None;
                    false
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "updater: host mirror cannot read the change log ({e}); \
                             requests read their hosts until it can"
                        );
                    }
                    failing = true;
                    false
                }
            };
            if !ok {
                self.set_fresh_mark(None);
            }
            self.finished.send_replace(Finished { poll, ok });
        }
        self.ready.store(false, Ordering::SeqCst);
        self.finished.send_replace(Finished {
            poll: u64::MAX,
            ok: false,
        });
    }

    /// The commit mark to trust after the coming poll, if any. A `-shm`
    /// file replaced under the probe (it cannot be while the probe's
    /// connection holds its lock, but a file moved by hand can) would keep
    /// an old mark forever, so the probe is checked here, once per poll,
    /// and never trusted again once it fails.
    fn mark_before_poll(&self) -> Option<CommitMark> {
        let probe = self.probe.get()?;
        if self.probe_retired.load(Ordering::Relaxed) {
            return None;
        }
        if !probe.still_current() {
            tracing::warn!(
                ?probe,
                "updater: the database's wal-index file was replaced; \
                 requests wait for change-log polls from now on"
            );
            self.probe_retired.store(true, Ordering::Relaxed);
            self.set_fresh_mark(None);
            return None;
        }
        probe.mark()
    }

    /// Too many hosts: drop everything and stay off; requests read rows.
    fn switch_off(&self) {
        tracing::warn!(
            max_hosts = self.max_hosts,
            "updater: more hosts than updater.host_mirror_max; host mirror switched off"
        );
        self.ready.store(false, Ordering::SeqCst);
        self.clear();
        self.finished.send_replace(Finished {
            poll: u64::MAX,
            ok: false,
        });
    }

    /// Loads every host. The serial is read first, so that following the
    /// log from it covers whatever changed during the load. `None`: more
    /// than `max_hosts`.
    async fn load(&self, store: &Store, owners: &mut Owners) -> Result<Option<u64>, StoreError> {
        self.ready.store(false, Ordering::SeqCst);
        self.set_fresh_mark(None);
        self.clear();
        *owners = Owners::default();
        let serial = store.latest_serial().await?;
        let mut after = 0;
        loop {
            let page = store.host_credentials_page(after, LOAD_PAGE).await?;
            let full = page.len() == LOAD_PAGE;
            let Some(last) = page.last().map(|h| h.id) else {
                break;
            };
            for host in page {
                self.upsert(host, owners);
            }
            if self.len() > self.max_hosts {
                return Ok(None);
            }
            after = last;
            if !full {
                break;
            }
        }
        Ok(Some(serial))
    }

    /// Applies every change-log entry after `serial`; returns the serial it
    /// is current to, or `None` when the hosts outgrew `max_hosts`.
    async fn catch_up(
        &self,
        store: &Store,
        mut serial: u64,
        owners: &mut Owners,
    ) -> Result<Option<u64>, StoreError> {
        loop {
            let changes = store.changes_since(serial, POLL_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.serial) else {
                return Ok(Some(serial));
            };
            let mut names: Vec<Name> = Vec::new();
            for change in &changes {
                match change.kind {
                    ChangeKind::HostAdded | ChangeKind::HostChanged | ChangeKind::HostRemoved => {
                        names.push(change.name.clone());
                    }
                    ChangeKind::ZoneRemoved => names.extend(self.names_below(change.zone.as_str())),
                    // Static records and zone settings: nothing the
                    // updater decides on.
                    ChangeKind::ZoneAdded
                    | ChangeKind::ZoneChanged
                    | ChangeKind::RecordsChanged => {}
                }
            }
            names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            names.dedup_by(|a, b| a.as_str() == b.as_str());
            // Each name's state as of now, which is at least as new as the
            // entries just read.
            let found = store.host_credentials(&names).await?;
            let present: HashSet<String> =
                found.iter().map(|h| h.fqdn.as_str().to_owned()).collect();
            for name in &names {
                if !present.contains(name.as_str()) {
                    self.remove(name.as_str());
                }
            }
            for host in found {
                self.upsert(host, owners);
            }
            if self.len() > self.max_hosts {
                return Ok(None);
            }
            serial = last;
            if changes.len() < POLL_BATCH as usize {
                return Ok(Some(serial));
            }
        }
    }
}

/// Owner names, one allocation per owner shared by its hosts.
#[derive(Default)]
struct Owners(HashMap<String, Arc<str>>);

impl Owners {
    fn intern(&mut self, name: String) -> Arc<str> {
        if let Some(shared) = self.0.get(&name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.as_str().into();
        self.0.insert(name, shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-host record stays at 64 bytes (a bigger one costs 1M-host
    /// installations memory; bench/README.md has the measured total).
    #[test]
    fn entry_is_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn fingerprints_follow_the_stored_hash() {
        let a = StoredSecret::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        let b = StoredSecret::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdQ$aGFzaA".into());
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
