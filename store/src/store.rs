//! The `Store` handle: connecting, migrating, write transactions, the change
//! log and the audit log, and the full load for the responder.
//!
//! Every mutation goes through [`Store::begin_write`] and commits its row
//! changes, change-log entries, SOA serial bumps and audit row in one
//! transaction; nothing here may acknowledge a change before that commit.
//! SQL is written once for both backends with `?` placeholders; the only
//! backend-specific statements are the write lock and the connection
//! pragmas.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::announce::{Announcer, CommitStates, PushOptions, PushStats};
use crate::error::StoreError;
use crate::group::GroupCommit;
use crate::model::{Actor, Backend, Change, ChangeKind, Host, ZoneData};
use crate::name::Name;
use crate::probe::CommitProbe;

pub(crate) static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
pub(crate) static MYSQL_MIGRATOR: Migrator = sqlx::migrate!("../migrations/mysql");

pub(crate) type Tx = Transaction<'static, Any>;

/// A write transaction that remembers the change-log entries it wrote and
/// announces them after, and only after, its commit succeeded.
///
/// Derefs to the connection, so `&mut *tx` and `&mut tx` work as with a
/// plain `Transaction`. Dropping it without `commit` rolls back and
/// announces nothing.
pub(crate) struct WriteTx {
    tx: Tx,
    backend: Backend,
    announcer: Arc<Announcer>,
    written: Vec<Change>,
    /// What the transaction left behind, when it gathered that for a
    /// `Commit` frame ([`WriteTx::wants_states`]).
    states: Option<CommitStates>,
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// How many change-log entries this transaction wrote so far.
    pub(crate) fn written_len(&self) -> usize {
        self.written.len()
    }

    /// Forgets the entries written after the first `len`, after a rollback
    /// to a savepoint undid them: they must not be announced.
    pub(crate) fn forget_written(&mut self, len: usize) {
        self.written.truncate(len);
        // Gathered states may describe what was rolled back.
        self.states = None;
    }

    /// Whether a push target would use the states this transaction leaves
    /// behind; gathering them costs reads, so only then.
    pub(crate) fn wants_states(&self) -> bool {
        self.announcer.wants_states()
    }

    /// Records what the transaction leaves behind, announced with its
    /// entries after the commit. Must describe the final state of every
    /// host and zone the entries name, read inside this transaction.
    pub(crate) fn set_states(&mut self, states: CommitStates) {
        self.states = Some(states);
    }

    /// Commits, then announces what was written (never blocking).
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        self.announcer.announce(self.written, self.states);
        Ok(())
    }
}

/// Hosts per page in [`HostPages`]: large enough to amortise the round
/// trip, small enough that 10M hosts never sit in one result set.
pub const HOST_PAGE_SIZE: usize = 10_000;

/// How long an operation waits for a connection (sqlx's default is 30 s).
/// When the database is down, callers such as the updater must answer
/// "try again later" (`911`) before the client gives up; a healthy pool
/// never needs this long.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A MySQL/MariaDB connection idle at least this long is pinged before use.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The handle to the database. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    announcer: Arc<Announcer>,
    pub(crate) group: Arc<GroupCommit>,
    /// SQLite files: whether a [`checkpoint_wal`] task runs (`None` for
    /// MySQL/MariaDB and in-memory SQLite, which have no WAL to copy).
    checkpointing: Option<Arc<AtomicBool>>,
    /// SQLite files: the URL the pool was opened with, for a
    /// [`CommitProbe`] (`None` for MySQL/MariaDB and in-memory SQLite).
    sqlite_file: Option<Arc<str>>,
    /// MySQL/MariaDB: the connection [`Store::changes_since`] keeps for
    /// itself, outside the pool (see [`Store::poll_rows`]); `None` for
    /// SQLite, which polls through the pool.
    poll_connection: Option<Arc<tokio::sync::Mutex<Option<sqlx::AnyConnection>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// User name or `"cli"`.
    pub actor: String,
    /// What was done (`host.add`, `zone.remove`, ...).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Details (never secrets).
    pub detail: String,
    /// The client address, if any.
    pub address: Option<String>,
}

/// Everything the responder needs at start, read for a consistent catch-up:
/// `serial` is read first, so replaying `changes_since(serial)` after the
/// load covers every change the load may have missed.
#[derive(Debug)]
pub struct FullLoad {
    /// The latest change-log serial before anything else was read.
    pub serial: u64,
    /// Zones with SOA, NS set and static records.
    pub zones: Vec<ZoneData>,
    /// The hosts, page by page.
    pub hosts: HostPages,
}

/// Hosts in id order, [`HOST_PAGE_SIZE`] at a time, by keyset pagination
/// (`WHERE id > last ORDER BY id LIMIT n`), so each page costs an index range
/// scan however large the table is.
#[derive(Debug)]
pub struct HostPages {
    store: Store,
    after_id: i64,
    page_size: usize,
    done: bool,
}

impl HostPages {
    /// The next page, or `None` after the last one.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Host>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let hosts = self.store.hosts_page(self.after_id, self.page_size).await?;
        if hosts.len() < self.page_size {
            self.done = true;
        }
        match hosts.last() {
            Some(last) => {
                self.after_id = last.id;
                Ok(Some(hosts))
            }
            None => Ok(None),
        }
    }
}

impl Store {
    /// Opens a pool for `sqlite://path` (the file is created if missing),
    /// `sqlite::memory:` (one private in-memory database, for tests) or
    /// `mysql://user:pass@host/db`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            // sqlx opens SQLite files read-write but will not create them
            // unless asked; a first start must create the file.
            // `sqlite::memory:` (for tests of other crates): every connection
            // would get its own empty database, so keep exactly one, forever.
            let memory = url.contains(":memory:");
            let url = if url.contains("mode=") || memory {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            let options = if memory {
                AnyPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
            }
            // A connection to a local file cannot go stale the way a network
            // connection can, so the pool's ping before every acquire is a
            // wasted round trip through the connection's worker thread: it
            // was a visible share of the updater's CPU on `nochg` (every
            // mirror poll acquires) and of every feed catch-up.
            .test_before_acquire(false);
            let pool = options
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // WAL lets readers run beside the one writer.
                        // synchronous=FULL syncs the WAL at every commit, so
                        // an acknowledged update survives power loss too
                        // (DESIGN.md invariant 2), as MariaDB's default
                        // `innodb_flush_log_at_trx_commit = 1` does. NORMAL
                        // would lose the last commits then, and a router
                        // told `good` does not send that address again until
                        // it changes: the name would stay wrong for days.
                        // Grouped commits pay one sync per batch, which cost
                        // about a tenth of the changed-address rate
                        // (bench/README.md "Durable commits").
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        // A file's WAL is checkpointed by `checkpoint_wal`
                        // beside the writers, not by the connection whose
                        // commit crossed the threshold (SQLite's default):
                        // that made every ~1000 pages' commit copy them
                        // into the database file while the write lock and
                        // the callers waited (about a fifth of the commit
                        // ceiling, bench/README.md "Change feed").
                        if !memory {
                            sqlx::query("PRAGMA wal_autocheckpoint = 0")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect(&url)
                .await?;
            Ok(Store {
                pool,
                backend: Backend::Sqlite,
                announcer: Arc::new(Announcer::new()),
                group: Arc::default(),
                checkpointing: (!memory).then(Arc::default),
                sqlite_file: (!memory).then(|| url.as_str().into()),
                poll_connection: None,
            })
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx pings every connection before it hands it out, one
                // more round trip on the path of every query (a host-mirror
                // poll, a commit batch). A connection that answered within
                // STALE_AFTER is as good as that answer (sqlx also pings
                // each one as it is released); only one idle longer (a
                // server restart, `wait_timeout`, a dropped NAT entry) is
                // pinged first, and a failed ping closes it and takes
                // another.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= STALE_AFTER {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // Times are written by the store as integers, but
                        // keep the session predictable for ad-hoc SQL too.
                        sqlx::query("SET time_zone = '+00:00'")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await?;
            Ok(Store {
                pool,
                backend: Backend::MySql,
                announcer: Arc::new(Announcer::new()),
                group: Arc::default(),
                checkpointing: None,
                sqlite_file: None,
                poll_connection: Some(Arc::default()),
            })
        } else {
            Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }

    /// A lock-free test of "anything committed since?" for this database,
    /// where one exists: SQLite files in WAL mode (see [`CommitProbe`]).
    /// `None` for MySQL/MariaDB and in-memory SQLite, whose readers must
    /// ask the database.
    pub async fn commit_probe(&self) -> Result<Option<CommitProbe>, StoreError> {
        match &self.sqlite_file {
            Some(url) => CommitProbe::open(url).await,
            None => Ok(None),
        }
    }

    /// Whether a commit is on disk when it returns, so that an
    /// acknowledgement survives the machine losing power (DESIGN.md
    /// invariant 2): SQLite files run `synchronous = FULL` (or EXTRA);
    /// MySQL/MariaDB need `innodb_flush_log_at_trx_commit = 1`, their
    /// default, which only the server's administrator can change. `Some`
    /// with the setting found when they are not; in-memory SQLite has no
    /// disk and counts as durable.
    pub async fn commits_not_durable(&self) -> Result<Option<String>, StoreError> {
        let (sql, durable): (&'static str, fn(i64) -> bool) = match self.backend {
            Backend::Sqlite if self.sqlite_file.is_none() => return Ok(None),
            Backend::Sqlite => ("PRAGMA synchronous", |v| v >= 2),
            Backend::MySql => (
                "SELECT CAST(@@GLOBAL.innodb_flush_log_at_trx_commit AS SIGNED)",
                |v| v == 1,
            ),
        };
        let value: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
        Ok((!durable(value)).then(|| match self.backend {
            Backend::Sqlite => format!("SQLite synchronous = {value}"),
            Backend::MySql => format!("innodb_flush_log_at_trx_commit = {value}"),
        }))
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations of this backend that are not applied
    /// yet. Safe to run at every start and from several processes.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::MySql => &MYSQL_MIGRATOR,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Closes all connections (waits for checked-out ones).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction that holds the database-wide write lock
    /// until commit or rollback.
    ///
    /// Serial order must equal commit order (DESIGN.md invariant 3), or a
    /// reader at serial N could miss a transaction that took N-1 but
    /// committed later. SQLite: `BEGIN IMMEDIATE` takes the write lock up
    /// front (a deferred transaction would upgrade later and could fail with
    /// SQLITE_BUSY mid-way). MySQL/MariaDB: AUTO_INCREMENT values are handed
    /// out at INSERT time, not at commit, so every writer first locks the one
    /// `change_log_state` row; the next writer's INSERT waits until this one
    /// committed. Rolled-back transactions still consume AUTO_INCREMENT
    /// values there: readers must tolerate gaps, never reorderings.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        if let Some(running) = &self.checkpointing
            && !running.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(checkpoint_wal(self.pool.clone(), running.clone()));
        }
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::MySql => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT id FROM change_log_state WHERE id = 1 FOR UPDATE")
                    .fetch_one(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(WriteTx {
            tx,
            backend: self.backend,
            announcer: self.announcer.clone(),
            written: Vec::new(),
            states: None,
        })
    }

    /// Announcements of every commit made through this store (and its
    /// clones) from now on: the change-log entries of one commit in serial
    /// order and, where the commit path gathered it, the state it left
    /// behind (see [`crate::Announcement`]). Bounded: a receiver that falls
    /// behind gets `RecvError::Lagged` and must read the change log instead.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::Announcement>> {
        self.announcer.subscribe()
    }

    /// From now on, pushes every commit's entries as feed frames to the
    /// responder control socket at `path` (see [`crate::feed`]). A dead or
    /// slow responder never delays a commit: frames beyond a bounded queue,
    /// or without a connection, are dropped. Must be called inside a tokio
    /// runtime.
    pub fn push_to(&self, path: PathBuf, options: PushOptions) -> Arc<PushStats> {
        self.announcer.push_to(path, options)
    }

    /// Waits until every push target has written (or given up on) what was
    /// announced before this call, at most `timeout`. Returns whether all
    /// were done in time. A short-lived writer (the admin CLI) calls it
    /// before it exits.
    pub async fn flush_pushes(&self, timeout: Duration) -> bool {
        self.announcer.flush(timeout).await
    }

    /// Asks the idle SQLite connections to give back their page caches and
    /// the temporaries of past statements (`PRAGMA shrink_memory`), after a
    /// bulk read that no later query repeats: the responder's load leaves
    /// several megabytes per connection in the C heap otherwise, a tenth of
    /// its resident size at 1M names. The caller then returns the freed heap
    /// to the system (`malloc_trim`). MariaDB connections hold nothing of
    /// the kind here; for them this does nothing.
    pub async fn release_memory(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let mut idle = Vec::new();
        while let Some(conn) = self.pool.try_acquire() {
            idle.push(conn);
        }
        for conn in &mut idle {
            // Best effort: a connection that cannot shrink keeps its cache.
            if let Err(e) = sqlx::query("PRAGMA shrink_memory")
                .execute(&mut **conn)
                .await
            {
                tracing::debug!("PRAGMA shrink_memory: {e}");
            }
        }
    }

    /// The serial of the newest change-log entry; 0 when there is none.
    pub async fn latest_serial(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(serial), 0) FROM changes")
            .fetch_one(&self.pool)
            .await?;
        to_u64(row.try_get::<i64, _>(0)?)
    }

    /// Up to `limit` change-log entries with a serial above `serial`, in
    /// serial order. Serials may have gaps (see [`Store::begin_write`]); an
    /// entry is visible only after everything with a lower serial committed
    /// or rolled back, so a reader that resumes after the last serial it saw
    /// misses nothing.
    ///
    /// Error: `ChangesPruned` when entries after `serial` were already
    /// pruned; the reader must then reload everything ([`Store::load_all`]).
    pub async fn changes_since(&self, serial: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        // One statement, one round trip, for the usual answer of a
        // follower's poll: the entries after `serial`, by primary key (a
        // range read; joining `change_log_state` into it cost MariaDB a
        // temporary table and a sort on every poll, about a third more CPU
        // per poll). `pruned_through` is read only when the entries might
        // not follow on from `serial`:
        // - None: then nothing after `serial` was ever pruned either, since
        //   a prune keeps the newest entry ([`Store::prune_changes`]); had
        //   an entry after `serial` been pruned, a newer one would be here.
        // - The first is `serial + 1`: it was not pruned, so nothing before
        //   it was.
        // - Else (a gap: a rolled-back writer's serial, or a prune), the
        //   bookkeeping row decides, read after the entries: a prune that
        //   ran before the entries were read is seen there too, and one
        //   that ran since only makes the reader reload needlessly.
        //
        // The limit is written into the statement, not bound: SQLite (with
        // STAT4, as sqlx bundles it) re-plans a statement whose `LIMIT ?` is
        // re-bound, and it did so on every poll (a full parse and plan each
        // time, measured with `sqlite3_stmt_status(REPREPARE)`). Callers use
        // a few constant limits, so each is prepared once and cached; the
        // text is an integer we format, never input.
        let sql = format!(
            "SELECT serial, zone, name, kind, committed_at FROM changes \
             WHERE serial > ? ORDER BY serial LIMIT {}",
            limit.max(1)
        );
        let sql: Arc<str> = sql.into();
        let after = to_i64(serial)?;
        let rows = self
            .poll_rows(|| sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(after))
            .await?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        if Some(to_u64(first.try_get::<i64, _>(0)?)?) != serial.checked_add(1) {
            let row = sqlx::query("SELECT pruned_through FROM change_log_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| corrupt("change_log_state has no row".to_owned()))?;
            let pruned_through = to_u64(row.try_get(0)?)?;
            if serial < pruned_through {
                return Err(StoreError::ChangesPruned {
                    since: serial,
                    pruned_through,
                });
            }
        }
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get(3)?;
            changes.push(Change {
                serial: to_u64(row.try_get::<i64, _>(0)?)?,
                zone: Name::from_db(row.try_get(1)?)?,
                name: Name::from_db(row.try_get(2)?)?,
                kind: ChangeKind::from_db(&kind)
                    .ok_or_else(|| corrupt(format!("unknown change kind '{kind}'")))?,
                committed_at: row.try_get(4)?,
            });
        }
        Ok(changes)
    }

    /// The rows of a change-log poll's `query`. On MySQL/MariaDB it runs on
    /// a connection kept for it outside the pool: sqlx pings every pooled
    /// connection as it is released, a second round trip per poll that cost
    /// the updater about 30 µs and MariaDB about 25 µs of CPU per lone
    /// `nochg`, and 13% of the `nochg` rate at 64 connections
    /// (bench/README.md, "A connection kept for the change-log poll"). A
    /// caller that finds it in use (the updater's mirror and the responder's
    /// catch-up share a store in `serve`) takes a pooled one rather than
    /// wait. A kept connection that fails (a restarted server) is dropped
    /// and the poll retried once on a new one, which the pool pings first
    /// if it was idle; one cancelled mid-query is dropped too. SQLite keeps
    /// to the pool: an in-memory database lives in its one pooled
    /// connection, and its release check is a thread hop, not a network
    /// round trip.
    async fn poll_rows<'q>(
        &self,
        query: impl Fn() -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let Some(Ok(mut kept)) = self.poll_connection.as_ref().map(|c| c.try_lock()) else {
            return Ok(query().fetch_all(&self.pool).await?);
        };
        if let Some(mut conn) = kept.take() {
            match query().fetch_all(&mut conn).await {
                Ok(rows) => {
                    *kept = Some(conn);
                    return Ok(rows);
                }
                Err(e) => {
                    tracing::debug!("store: the kept change-log connection failed ({e}); retrying");
                }
            }
        }
        let mut conn = self.pool.acquire().await?.detach();
        let rows = query().fetch_all(&mut conn).await?;
        *kept = Some(conn);
        Ok(rows)
    }

    /// Deletes change-log entries committed before `older_than` (unix
    /// seconds), except the newest one, which keeps [`Store::latest_serial`]
    /// from going backwards (and lets [`Store::changes_since`] trust an
    /// empty answer), and records the highest deleted serial so that
    /// [`Store::changes_since`] can tell a reader it fell behind. Returns how
    /// many were deleted.
    pub async fn prune_changes(&self, actor: &Actor, older_than: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(serial), 0) FROM changes")
            .fetch_one(&mut *tx)
            .await?;
        let newest: i64 = row.try_get(0)?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(serial), 0) FROM changes WHERE committed_at < ? AND serial < ?",
        )
        .bind(older_than)
        .bind(newest)
        .fetch_one(&mut *tx)
        .await?;
        let cut: i64 = row.try_get(0)?;
        if cut == 0 {
            return Ok(0);
        }
        // Everything up to the cut goes, so the log stays a contiguous tail
        // even if the clock stepped back between two commits.
        let done = sqlx::query("DELETE FROM changes WHERE serial <= ?")
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE change_log_state SET pruned_through = ? WHERE id = 1 AND pruned_through < ?",
        )
        .bind(cut)
        .bind(cut)
        .execute(&mut *tx)
        .await?;
        let detail = format!("{} entries through serial {cut}", done.rows_affected());
        audit(&mut tx, actor, "changes.prune", "changes", &detail, now()).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, detail, address FROM audit ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at: row.try_get(0)?,
                    actor: row.try_get(1)?,
                    action: row.try_get(2)?,
                    target: row.try_get(3)?,
                    detail: row.try_get(4)?,
                    address: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Reads everything the responder serves: the current change serial,
    /// all zones with NS set, SOA and static records, and a pager over the
    /// hosts.
    pub async fn load_all(&self) -> Result<FullLoad, StoreError> {
        let serial = self.latest_serial().await?;
        let mut zones = Vec::new();
        for zone in self.list_zones().await? {
            let records = self.list_records(&zone.name).await?;
            zones.push(ZoneData { zone, records });
        }
        Ok(FullLoad {
            serial,
            zones,
            hosts: self.host_pages(HOST_PAGE_SIZE),
        })
    }

    /// A pager over all hosts in id order, `page_size` at a time.
    pub fn host_pages(&self, page_size: usize) -> HostPages {
        HostPages {
            store: self.clone(),
            after_id: 0,
            page_size: page_size.max(1),
            done: false,
        }
    }
}

/// How often [`checkpoint_wal`] copies an SQLite WAL into the database.
/// At 10,000 changes/s the WAL grows by tens of MB/s; at this interval a
/// checkpoint copies a few MB, about as often as SQLite's default
/// (every 1000 pages) would, but off the committing connection.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Rounds in a row with nothing left to copy before [`checkpoint_wal`]
/// ends (the next write starts it again).
const CHECKPOINT_IDLE_ROUNDS: u32 = 10;

/// Checkpoints an SQLite database's WAL every [`CHECKPOINT_INTERVAL`]
/// while this process writes. PASSIVE: it never waits for or blocks
/// readers or the writer, and copies what no reader still needs; the
/// writer starts the WAL over once all of it was copied, so it stays
/// bounded as with SQLite's own automatic checkpoints. Started by the
/// first write transaction, it ends when the pool closes or the WAL has
/// been fully copied for [`CHECKPOINT_IDLE_ROUNDS`], clearing `running` so
/// that the next write starts it again: a process that only reads (a
/// responder) spends nothing on it, and whatever a process leaves in the
/// WAL is copied by the last connection to close (SQLite) or by the next
/// writer.
async fn checkpoint_wal(pool: AnyPool, running: Arc<AtomicBool>) {
    let mut failing = false;
    let mut idle = 0;
    while idle < CHECKPOINT_IDLE_ROUNDS && !pool.is_closed() {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        // (busy, frames in the WAL, frames copied); -1s when not in WAL mode.
        let result = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
            .and_then(|row| Ok((row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)));
        match result {
            Ok((frames, copied)) => {
                failing = false;
                idle = if copied >= frames { idle + 1 } else { 0 };
            }
            Err(_) if pool.is_closed() => break,
            Err(e) => {
                if !failing {
                    tracing::warn!("store: checkpointing the SQLite WAL failed: {e}");
                }
                failing = true;
            }
        }
    }
    running.store(false, Ordering::Release);
}

/// Appends change-log rows and bumps each affected zone's SOA serial once.
/// `zones` are (zone id, zone name) pairs; `changes` are (zone name, owner
/// name, kind). Runs inside the caller's write transaction.
///
/// The entries' serials are remembered in `tx` and announced after its
/// commit. They come from the insert's `last_insert_id` (SQLite: the last
/// row; MySQL/MariaDB: the first row of a multi-row insert); the rows of one
/// insert get consecutive serials because writers hold the write lock
/// (`begin_write`) and `auto_increment_increment` is 1. The announcement is
/// only a hint to responders, which re-read the log, so a deployment that
/// breaks this assumption loses latency, not data.
///
/// Returns the serials of `changes`, in order.
pub(crate) async fn log_changes(
    tx: &mut WriteTx,
    zone_ids: &[i64],
    changes: &[(&str, &str, ChangeKind)],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let mut serials = Vec::with_capacity(changes.len());
    // RFC 1982 serial arithmetic: add one modulo 2^32. One statement for
    // every zone the transaction touched (a batch of routers' updates may
    // span several zones), not one per zone.
    for chunk in zone_ids.chunks(crate::hosts::MAX_IN_LIST) {
        crate::hosts::by_id_query(
            "UPDATE zones SET serial = CASE WHEN serial >= 4294967295 THEN 0 ELSE serial + 1 END \
             WHERE id IN ({ids})",
            chunk,
        )
        .execute(&mut **tx)
        .await?;
    }
    for chunk in changes.chunks(CHANGE_ROWS_PER_INSERT) {
        let sql = multi_row_insert(
            "INSERT INTO changes (zone, name, kind, committed_at) VALUES ",
            4,
            chunk.len(),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (zone, name, kind) in chunk {
            query = query
                .bind(zone.to_string())
                .bind(name.to_string())
                .bind(kind.as_str())
                .bind(now);
        }
        let done = query.execute(&mut **tx).await?;
        let n = chunk.len() as i64;
        let first = match (tx.backend, done.last_insert_id()) {
            (Backend::Sqlite, Some(last)) => last - n + 1,
            (Backend::MySql, Some(first)) => first,
            (_, None) => {
                let row = sqlx::query("SELECT COALESCE(MAX(serial), 0) FROM changes")
                    .fetch_one(&mut **tx)
                    .await?;
                row.try_get::<i64, _>(0)? - n + 1
            }
        };
        for (i, (zone, name, kind)) in chunk.iter().enumerate() {
            let serial = to_u64(first + i as i64)?;
            serials.push(serial);
            // Names the store just validated and wrote; parse cannot fail,
            // but an announcement is optional, so skip rather than fail.
            if let (Ok(zone), Ok(name)) = (Name::parse(zone), Name::parse(name)) {
                tx.written.push(Change {
                    serial,
                    zone,
                    name,
                    kind: *kind,
                    committed_at: now,
                });
            }
        }
    }
    Ok(serials)
}

const CHANGE_ROWS_PER_INSERT: usize = 500;

/// Writes one audit row inside the caller's transaction.
pub(crate) async fn audit(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, action, target, detail, address) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(now)
    .bind(actor.name.clone())
    .bind(action.to_owned())
    .bind(target.to_owned())
    .bind(detail.to_owned())
    .bind(actor.address.map(|a| a.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `prefix` followed by `rows` groups of `columns` placeholders. The text
/// depends only on the counts, so sqlx's statement cache reuses the prepared
/// statement for every full chunk. Contains no input, hence AssertSqlSafe.
pub(crate) fn multi_row_insert(prefix: &str, columns: usize, rows: usize) -> Arc<str> {
    let group = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(prefix.len() + rows * (group.len() + 2));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    Arc::from(sql)
}

/// The current time in unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn corrupt(what: String) -> StoreError {
    StoreError::Internal(format!("unexpected database content: {what}"))
}

pub(crate) fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative value {value}")))
}

pub(crate) fn to_u32(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(format!("value {value} out of range")))
}

pub(crate) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput {
        field: "serial",
        reason: format!("{value} is out of range"),
    })
}

pub(crate) fn get_u32(row: &AnyRow, index: usize) -> Result<u32, StoreError> {
    to_u32(row.try_get::<i64, _>(index)?)
}

/// The URL with the password replaced, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_lists_match() {
        let list = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(!list(&SQLITE_MIGRATOR).is_empty());
        assert_eq!(list(&SQLITE_MIGRATOR), list(&MYSQL_MIGRATOR));
        let files = |dir: &str| {
            let path = format!("{}/../migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
            let mut names: Vec<String> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(files("sqlite"), files("mysql"));
    }

    /// SQLite files: the committing connections never checkpoint (their
    /// automatic checkpoint is off) and sync the WAL at every commit
    /// (`synchronous` 2 is FULL); a write starts the background task,
    /// which copies the WAL into the database file on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dd.db");
        let store = Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        // Every connection the pool opens, not just the first.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool.acquire().await.unwrap();
            for (pragma, expected) in [("PRAGMA wal_autocheckpoint", 0), ("PRAGMA synchronous", 2)]
            {
                let row = sqlx::query(pragma).fetch_one(&mut *conn).await.unwrap();
                assert_eq!(row.try_get::<i64, _>(0).unwrap(), expected, "{pragma}");
            }
            held.push(conn);
        }
        drop(held);
        let before = std::fs::metadata(&file).unwrap().len();
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("CREATE TABLE filler (x BLOB)")
            .execute(&mut *tx)
            .await
            .unwrap();
        // About 2 MB: 500 pages beyond what fits the empty file.
        for _ in 0..500 {
            sqlx::query("INSERT INTO filler VALUES (zeroblob(4000))")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < before + 1_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing copied the WAL into the database file"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close().await;
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("pg://u:secret@h/db"), "pg://u:***@h/db");
        assert_eq!(redact_url("pg://u@h/db"), "pg://u@h/db");
    }

    #[test]
    fn multi_row_sql() {
        assert_eq!(
            &*multi_row_insert("INSERT INTO t (a, b) VALUES ", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
    }
}
