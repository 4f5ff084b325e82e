//! "Has anything been committed since?" for a SQLite file, answered
//! without a transaction, a lock or a query.
//!
//! In WAL mode every SQLite connection, in every process, shares the
//! wal-index (the `-shm` file beside the database). Its first 96 bytes are
//! the wal-index header, twice (walformat.html, "The WAL-Index Header"):
//! `iChange` ("incremented with each transaction"), `mxFrame` (the last
//! committed frame), the WAL's salts (new at every WAL reset) and a
//! checksum. A commit becomes visible to readers exactly when the writer
//! rewrites this header (copy 1, a barrier, then copy 0); a reader starts
//! its snapshot from it. So if the header reads the same at two moments,
//! nothing was committed anywhere in between. SQLite's own readers read the
//! header this way, lock-free, comparing the two copies
//! (`walIndexTryHdr`), from their own shared mapping of the file; so does
//! [`CommitProbe::mark`], from a read-only mapping of the file's first page.
//!
//! This is what the updater's host mirror needs to answer an unchanged
//! update at once: the data-version alternative (`PRAGMA data_version`)
//! is a read transaction, whose `fcntl` locks and connection hand-off cost
//! more than the shared change-log poll it would save (bench/README.md,
//! Updater, "Tried, not kept").
//!
//! Safety of the mapping: the probe keeps a SQLite connection of its own
//! open for as long as it lives. In WAL mode a connection holds a SHARED
//! lock on the database continuously, so no other connection can take the
//! EXCLUSIVE lock under which SQLite deletes or truncates the `-shm` file,
//! and the mapped page stays backed by the file. (A file truncated by hand
//! under a running database would fault SQLite's own mappings in this
//! process just the same.) The probe's descriptor of the file is never
//! closed, because closing it would drop SQLite's own locks on the file in
//! this process (see [`keep_open`]). A mapping, not a `pread` per request: the
//! syscall was 4.4% of the updater's samples under `nochg` load
//! (bench/README.md, Updater, "Commit marks").

use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::error::StoreError;

/// The wal-index format this reader understands (`iVersion`).
const WALINDEX_VERSION: u32 = 3_007_000;
/// One copy of the wal-index header, in bytes and in 32-bit words.
const HEADER: usize = 48;
const WORDS: usize = HEADER / 4;
/// What is mapped: the first page, which holds both copies.
const MAPPED: usize = 4096;

/// The state of the database's commits at one moment; equal marks mean
/// nothing was committed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMark([u32; WORDS]);

/// Reads [`CommitMark`]s of one SQLite database file (see the module
/// comment). Made by [`crate::Store::commit_probe`].
pub struct CommitProbe {
    header: Mapping,
    /// Never closed (see [`keep_open`]).
    shm: ManuallyDrop<File>,
    shm_path: PathBuf,
    /// Held open, never used: its SHARED lock keeps the `-shm` file in
    /// place (see the module comment).
    _holder: SqliteConnection,
}

impl std::fmt::Debug for CommitProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitProbe")
            .field("shm", &self.shm_path)
            .finish_non_exhaustive()
    }
}

impl CommitProbe {
    /// Opens the probe for the database at `url` (a `sqlite://` file URL
    /// as the store was given it). `None` when the database does not keep
    /// a shared wal-index this probe can read: not in WAL mode, an
    /// in-memory database, a VFS or locking mode without a `-shm` file.
    pub(crate) async fn open(url: &str) -> Result<Option<CommitProbe>, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        let mut holder = SqliteConnection::connect_with(&options).await?;
        // A read: it attaches the connection to the wal-index (and so takes
        // the locks that keep it in place) and says whether there is one.
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut holder)
            .await?;
        let locking: String = sqlx::query_scalar("PRAGMA locking_mode")
            .fetch_one(&mut holder)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") || !locking.eq_ignore_ascii_case("normal") {
            return Ok(None);
        }
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut holder)
            .await?;
        let Some(shm_path) = shm_path(options.get_filename()) else {
            return Ok(None);
        };
        // SQLite sizes the file in 32 KiB regions; a shorter one is not a
        // wal-index this probe knows, and mapping past its end would fault.
        // Asked by path, before a descriptor exists (see `keep_open`).
        if std::fs::metadata(&shm_path).map_or(true, |m| m.len() < MAPPED as u64) {
            return Ok(None);
        }
        let Ok(shm) = File::open(&shm_path).map(keep_open) else {
            return Ok(None);
        };
        // SAFETY: a new read-only shared mapping of an open file, at an
        // address of the kernel's choosing; nothing else is touched.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAPPED,
                libc::PROT_READ,
                libc::MAP_SHARED,
                shm.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Ok(None);
        }
        let Some(header) = NonNull::new(address.cast()).map(Mapping) else {
            return Ok(None);
        };
        let probe = CommitProbe {
            header,
            shm,
            shm_path,
            _holder: holder,
        };
        // A header this reader does not understand: say nothing, ever.
        if probe.mark().is_none() {
            return Ok(None);
        }
        Ok(Some(probe))
    }

    /// The header as it is now, or `None` when it cannot say: a writer is
    /// rewriting it (the two copies differ), or it is not an initialised
    /// header of the known format. Twelve loads of each copy, no syscall,
    /// no lock.
    pub fn mark(&self) -> Option<CommitMark> {
        // SAFETY: the mapping lives as long as `self` (unmapped in `Drop`),
        // is page-aligned and at least `MAPPED` bytes long, and the file
        // stays at least that long (see the module comment); other
        // processes change it, so it is only read through atomics.
        let words = unsafe { self.header.0.as_ref() };
        // As SQLite's own lock-free reader does: a writer rewrites copy 1,
        // then (after a barrier) copy 0; reading copy 0 first and finding
        // copy 1 equal means this read did not meet a rewrite half done.
        let mut first = [0u32; WORDS];
        let mut second = [0u32; WORDS];
        for (word, shared) in first.iter_mut().zip(&words[..WORDS]) {
            *word = shared.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        for (word, shared) in second.iter_mut().zip(&words[WORDS..]) {
            *word = shared.load(Ordering::Relaxed);
        }
        if first != second {
            return None;
        }
        // `iVersion` is word 0; `isInit` is byte 12, the first byte of
        // word 3 in the host's byte order.
        let initialised = first[3].to_ne_bytes()[0] == 1;
        if first[0] != WALINDEX_VERSION || !initialised {
            return None;
        }
        Some(CommitMark(first))
    }

    /// Whether the `-shm` file at the path is still the one this probe
    /// reads (two `stat`s; for a periodic check, not per request).
    pub fn still_current(&self) -> bool {
        match (std::fs::metadata(&self.shm_path), self.shm.metadata()) {
            (Ok(path), Ok(open)) => path.dev() == open.dev() && path.ino() == open.ino(),
            _ => false,
        }
    }
}

/// The first [`MAPPED`] bytes of the `-shm` file, mapped shared and
/// read-only by [`CommitProbe::open`]; unmapped when dropped.
struct Mapping(NonNull<[AtomicU32; 2 * WORDS]>);

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `CommitProbe::open`, unmapped once;
        // no reference into it outlives the probe that owns this.
        unsafe {
            libc::munmap(self.0.as_ptr().cast(), MAPPED);
        }
    }
}

// SAFETY: the mapping is read-only and read only through atomics, so moving
// it to or sharing it with another thread is as safe as an `&[AtomicU32]`.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapping {}

/// A descriptor of the `-shm` file that is never closed. POSIX record
/// locks belong to the process and the file, not to the descriptor: closing
/// *any* descriptor of the file drops every lock this process holds on it,
/// SQLite's included (its connections lock bytes of the `-shm` file: the
/// dead-man switch that keeps another process from re-initialising it, the
/// readers' and the writer's locks; one dropped under a writer lets a
/// second writer into the WAL). So this descriptor stays open until the
/// process ends, like SQLite's own: one per probe opened, and the updater
/// opens one.
fn keep_open(file: File) -> ManuallyDrop<File> {
    ManuallyDrop::new(file)
}

/// Where SQLite keeps the wal-index of the database at `db`: the full path
/// with symbolic links resolved, as its unix VFS names it, and `-shm`.
fn shm_path(db: &Path) -> Option<PathBuf> {
    let db = std::fs::canonicalize(db).ok()?;
    let mut name = db.into_os_string();
    name.push("-shm");
    Some(PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use crate::Store;

    async fn exec(store: &Store, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&store.pool)
            .await
            .unwrap();
    }

    /// Commits by another pool (as by another process) change the mark;
    /// reads and idle time do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn marks_change_with_every_commit_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("probe.db").display());
        let ours = Store::connect(&url).await.unwrap();
        let theirs = Store::connect(&url).await.unwrap();
        exec(&theirs, "CREATE TABLE t (x INTEGER)").await;
        let probe = ours
            .commit_probe()
            .await
            .unwrap()
            .expect("a WAL file has a probe");

        let before = probe.mark().expect("a settled header");
        exec(&ours, "SELECT count(*) FROM t").await;
        exec(&theirs, "SELECT count(*) FROM t").await;
        assert_eq!(probe.mark(), Some(before), "reads commit nothing");

        let mut seen = vec![before];
        for i in 0..5 {
            exec(&theirs, &format!("INSERT INTO t VALUES ({i})")).await;
            let now = probe.mark().expect("a settled header");
            assert!(!seen.contains(&now), "commit {i} left the mark as it was");
            seen.push(now);
        }
        // A checkpoint that empties the WAL (the probe's own connection
        // holds no read transaction that would keep it from finishing),
        // then a commit that restarts it from frame 1: still a new mark.
        let (busy, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&theirs.pool)
            .await
            .unwrap();
        assert_eq!((busy, frames), (0, 0), "the WAL was not emptied");
        exec(&theirs, "INSERT INTO t VALUES (99)").await;
        let now = probe.mark().expect("a settled header");
        assert!(
            !seen.contains(&now),
            "the commit after a WAL reset was missed"
        );
        assert!(probe.still_current());

        // A write transaction that rolls back may or may not move the mark
        // (a false "changed" costs a poll), but one that never began
        // cannot.
        let settled = probe.mark();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(probe.mark(), settled);
    }

    /// Whether another process sees a lock on the `-shm` file's
    /// dead-man-switch byte (128), the shared lock every SQLite connection
    /// holds while it uses the wal-index: asked with `F_GETLK` from a
    /// `python3` child, since a process never conflicts with its own locks.
    fn dms_lock_held(shm: &std::path::Path) -> bool {
        let script = "import fcntl, os, struct, sys\n\
            fd = os.open(sys.argv[1], os.O_RDONLY)\n\
            ask = struct.pack('hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)\n\
            kind = struct.unpack('hhqqi4x', fcntl.fcntl(fd, fcntl.F_GETLK, ask))[0]\n\
            print('held' if kind != fcntl.F_UNLCK else 'free')\n";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(shm)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        match String::from_utf8_lossy(&out.stdout).trim() {
            "held" => true,
            "free" => false,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// POSIX record locks belong to the process and the file, not to the
    /// descriptor: closing any descriptor of the `-shm` file would drop
    /// every lock SQLite holds on it in this process, and a writer's lock
    /// dropped that way lets two writers into the WAL. So a probe that goes
    /// away, or fails to open, must leave SQLite's locks as they were.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_probe_leaves_sqlites_locks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("locks.db").display());
        let store = Store::connect(&url).await.unwrap();
        exec(&store, "CREATE TABLE t (x INTEGER)").await;
        let shm = dir.path().canonicalize().unwrap().join("locks.db-shm");
        assert!(dms_lock_held(&shm), "the test cannot see SQLite's lock");
        let probe = store.commit_probe().await.unwrap().expect("a probe");
        drop(probe);
        // The pool's connections are still open and still hold theirs.
        assert!(
            dms_lock_held(&shm),
            "dropping the probe dropped SQLite's lock"
        );
        exec(&store, "INSERT INTO t VALUES (1)").await;
    }

    #[tokio::test]
    async fn no_probe_without_a_shared_wal_index() {
        let memory = Store::connect("sqlite::memory:").await.unwrap();
        assert!(memory.commit_probe().await.unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("rollback.db").display());
        let store = Store::connect(&url).await.unwrap();
        // Another journal mode, as a hand-made database might use.
        exec(&store, "CREATE TABLE t (x INTEGER)").await;
        store.pool.close().await;
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut conn = <sqlx::sqlite::SqliteConnection as sqlx::Connection>::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("PRAGMA journal_mode = DELETE")
            .execute(&mut conn)
            .await
            .unwrap();
        let probe = super::CommitProbe::open(&url).await.unwrap();
        assert!(probe.is_none(), "rollback journal: no wal-index to read");
        let _: () = sqlx::Connection::close(conn).await.unwrap();
    }
}
