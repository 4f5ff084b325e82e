//! Credentials: HTTP Basic (RFC 7617) or `username=`/`password=` in the
//! query, the cache of verified credentials, and argon2 verification on a
//! bounded number of threads of its own, at a lower scheduling priority.
//!
//! The cache never holds a password: its key is a BLAKE3 keyed hash (random
//! per-process key) of the host, the user name, the password and a
//! fingerprint of the host's stored secret hash (`mirror::fingerprint`), so
//! changing a host's secret makes its old entries unreachable at once, and
//! they age out. Failures are never cached. This
//! module must never log or return a password.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use ddserver_store::{StoredSecret, VerifyMemory};
use tokio::sync::{Semaphore, oneshot};

use crate::mirror::Fingerprint;

/// A user name and password from the request. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses an `Authorization: Basic ...` value. The scheme is
/// case-insensitive (RFC 7235 §2.1); the user name ends at the first colon
/// (RFC 7617 §2). Anything malformed is `None`, as if absent.
pub(crate) fn parse_basic(header: &[u8]) -> Option<Credentials> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// A cache key: a keyed hash, never the password.
pub(crate) type CacheKey = [u8; 32];

/// Verified credentials, each valid for `ttl`, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, Instant>>,
}

impl CredentialCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> CredentialCache {
        let mut key = [0u8; 32];
        // Without OS randomness the keyed hash could be precomputed; fall
        // back to a time-derived key rather than refuse to start, since the
        // cache key is compared only with our own outputs.
        if getrandom::fill(&mut key).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            key = *blake3::hash(&nanos.to_le_bytes()).as_bytes();
        }
        CredentialCache {
            key,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key for these credentials against this host's stored
    /// secret (its fingerprint). Each field is length-prefixed so that no
    /// two different tuples hash the same input.
    pub(crate) fn key_for(
        &self,
        fqdn: &str,
        credentials: &Credentials,
        stored: &Fingerprint,
    ) -> CacheKey {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for part in [
            fqdn.as_bytes(),
            credentials.user.as_bytes(),
            credentials.password.as_bytes(),
            &stored[..],
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// Whether this key was verified less than `ttl` ago. The map compares
    /// keyed-hash outputs, which an attacker cannot compute without the
    /// per-process key, so a timing difference in that comparison tells
    /// nothing about the password.
    pub(crate) fn contains(&self, key: &CacheKey) -> bool {
        if self.ttl.is_zero() || self.capacity == 0 {
            return false;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, key: CacheKey) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, expires| *expires > now);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(key, now + self.ttl);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// Why a verification did not produce a yes or no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// Every verification slot stayed busy for the whole wait.
    #[error("all argon2 verification slots busy")]
    Busy,
    /// The blocking task died.
    #[error("argon2 verification task failed")]
    Task,
}

/// Scheduling priority (nice value) of the argon2 threads. A verification
/// costs ~20 ms of CPU; at nice 10 the kernel gives a busy thread of normal
/// priority about ten times its share, so a flood of wrong passwords takes
/// what the updater's requests (and, in `serve`, the responder) leave over
/// instead of half of every core (bench/README.md, Updater, "argon2 at a
/// lower priority"). Raising one's own nice value needs no privilege.
const VERIFY_NICE: libc::c_int = 10;

/// An argon2 thread gives its working memory (19 MiB) back after this long
/// without a verification; while verifications keep coming it keeps it, so
/// a flood of wrong passwords does not allocate, fault in and free 19 MiB
/// per attempt (bench/README.md, Updater, "argon2 at a lower priority").
const KEEP_MEMORY: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce(&mut VerifyMemory) + Send>;

/// Runs argon2 verifications on `slots` threads of its own at nice
/// [`VERIFY_NICE`], each with its working memory kept between
/// verifications, at most `slots` at a time: each costs ~20 ms of CPU and
/// 19 MiB (RESEARCH.md), so an unbounded number would let a flood of wrong
/// passwords take every core and all the memory. Waiting requests queue in
/// arrival order for at most `wait`. (Not tokio's blocking pool: a thread
/// there that lowered its priority could not raise it again without
/// privilege, and would run later blocking work at the lower priority.)
#[derive(Clone)]
pub(crate) struct Verifier {
    slots: Arc<Semaphore>,
    wait: Duration,
    jobs: flume::Sender<Job>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts the threads; they end when the last clone is dropped.
    pub(crate) fn new(slots: usize, wait: Duration) -> Verifier {
        let slots = slots.max(1);
        let (jobs, queue) = flume::unbounded::<Job>();
        for i in 0..slots {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut memory = VerifyMemory::default();
                    loop {
                        match queue.recv_timeout(KEEP_MEMORY) {
                            // A job that panics loses its answer (the
                            // request gets `VerifyError::Task`), not the
                            // thread; the memory is scratch either way.
                            Ok(job) => {
                                let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
                                if std::panic::catch_unwind(run).is_err() {
                                    memory.release();
                                }
                            }
                            Err(flume::RecvTimeoutError::Timeout) => memory.release(),
                            Err(flume::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                // The threads that did start serve the queue; with none,
                // every verification answers `VerifyError::Task`.
                tracing::error!("updater: cannot start an argon2 thread: {e}");
            }
        }
        Verifier {
            slots: Arc::new(Semaphore::new(slots)),
            wait,
            jobs,
        }
    }

    /// Checks `password` against `stored`; with `None` (unknown host) it
    /// spends the same time and says no.
    pub(crate) async fn verify(
        &self,
        password: &str,
        stored: Option<StoredSecret>,
    ) -> Result<bool, VerifyError> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| VerifyError::Busy)?
            .map_err(|_| VerifyError::Busy)?;
        let password = password.to_owned();
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The request went away while this waited: nobody to answer.
            if reply.is_closed() {
                return;
            }
            let ok = match stored {
                Some(stored) => stored.verify_blocking_in(&password, memory),
                None => StoredSecret::verify_nothing_blocking_in(&password, memory),
            };
            let _ = reply.send(ok);
        });
        self.jobs.send(job).map_err(|_| VerifyError::Task)?;
        // A job that panicked drops its reply unsent.
        let answer = answer.await.map_err(|_| VerifyError::Task);
        // Released here, on a runtime thread, not by the low-priority
        // thread: a thread preempted while it holds the semaphore's
        // internal lock would stall every runtime thread that touches it.
        drop(permit);
        answer
    }
}

/// Lowers the calling thread's scheduling priority to [`VERIFY_NICE`], or
/// leaves it where it is if the process already runs lower (raising it
/// would need privilege). On Linux the nice value belongs to the thread
/// (setpriority(2), "Bugs"), so naming this thread's id changes nothing
/// else in the process.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // SAFETY: integer arguments only. -1 is also an error return, but
        // then the set below is tried, which is what a real -1 needs too.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        if now >= VERIFY_NICE {
            return;
        }
        // SAFETY: integer arguments only; it changes this thread's nice
        // value or fails with an errno, which changes nothing.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, VERIFY_NICE) };
        if done != 0 {
            tracing::warn!(
                "updater: argon2 threads run at normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    /// A thread's nice value from its /proc stat (field 19).
    fn nice_in(task: &std::path::Path) -> i64 {
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        // After the parenthesised name: the state is field 3.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// The nice value of each of this process's threads whose name starts
    /// with `prefix` (what `ps -L -o ni` shows).
    fn nice_of_threads(prefix: &str) -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.starts_with(prefix) {
                found.push(nice_in(&dir));
            }
        }
        found
    }

    #[tokio::test]
    async fn verifications_run_on_their_own_threads_at_lower_priority_and_survive_panics() {
        let own = nice_in(std::path::Path::new("/proc/thread-self"));
        let verifier = Verifier::new(2, Duration::from_secs(10));
        // argon2id, m=19456, t=2, p=1 (the store's parameters), of the
        // password below; made with argon2-cffi, an independent encoder.
        let stored = StoredSecret::from_phc(
            "$argon2id$v=19$m=19456,t=2,p=1$pgJt1bdfexqAiXlrX/Gj6g$\
             8yX0JAntNr3BaJ/6VfJTEW/jymOXg8D2d5gFVQ0LhiQ"
                .into(),
        );
        assert!(
            verifier
                .verify("right horse battery", Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!verifier.verify("wrong", Some(stored)).await.unwrap());
        assert!(!verifier.verify("anything", None).await.unwrap());
        let nice = nice_of_threads("argon2-");
        assert_eq!(nice, vec![own.max(i64::from(VERIFY_NICE)); 2], "{nice:?}");
        // The test's own thread is untouched.
        assert_eq!(nice_in(std::path::Path::new("/proc/thread-self")), own);

        // A job that panics takes neither its thread nor later
        // verifications with it. (In this test, not a test of its own:
        // tests run at once in one process, and the threads are counted.)
        for _ in 0..3 {
            verifier
                .jobs
                .send(Box::new(|_| panic!("a job that fails")))
                .unwrap();
        }
        assert!(!verifier.verify("anything", None).await.unwrap());
        assert!(!verifier.verify("anything", None).await.unwrap());
        assert_eq!(nice_of_threads("argon2-").len(), 2);
    }

    #[test]
    fn basic_credentials_parse() {
        let c = parse_basic(&basic("h.dyn.example:pa:ss")).unwrap();
        assert_eq!(c.user, "h.dyn.example");
        assert_eq!(c.password, "pa:ss");
        assert!(parse_basic(b"basic bm9jb2xvbg==").is_none()); // "nocolon"
        assert!(parse_basic(b"Bearer abc").is_none());
        assert!(parse_basic(b"Basic !!!").is_none());
        assert!(parse_basic(&basic(":pw")).is_none());
        assert!(parse_basic(&[0xff, 0xfe]).is_none());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn cache_keys_depend_on_every_part_and_expire() {
        let cache = CredentialCache::new(Duration::from_millis(50), 2);
        let creds = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        let stored = crate::mirror::fingerprint(&StoredSecret::from_phc("$argon2id$a".into()));
        let other = crate::mirror::fingerprint(&StoredSecret::from_phc("$argon2id$b".into()));
        let k = cache.key_for("h.example", &creds, &stored);
        assert_ne!(k, cache.key_for("h.example", &creds, &other));
        assert_ne!(k, cache.key_for("g.example", &creds, &stored));
        let wrong = Credentials {
            user: "u".into(),
            password: "q".into(),
        };
        assert_ne!(k, cache.key_for("h.example", &wrong, &stored));
        assert!(!cache.contains(&k));
        cache.insert(k);
        assert!(cache.contains(&k));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!cache.contains(&k));
        for i in 0..10u8 {
            cache.insert([i; 32]);
        }
        assert!(cache.len() <= 2);
    }
}
