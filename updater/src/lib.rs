//! ddserver's dyndns2 updater: the HTTP(S) endpoint that routers and update
//! clients (ddclient, inadyn, wget, curl, FRITZ!Box, pfSense, OPNsense) call
//! to set their addresses.
//!
//! It sits between the network and the store: it authenticates, validates,
//! and writes through [`ddserver_store::Store`] only; the responder learns of
//! changes from the store's change log, never from this crate. It must never
//! depend on the responder, never answer `good` before the commit, and never
//! log a password.
//!
//! Layout:
//! - [`protocol`]: parameters and answer lines (pure);
//! - `auth`: Basic credentials, the verified-credential cache, the bounded
//!   argon2 verifier;
//! - `limit`: token buckets for failures and changes;
//! - [`proxy`]: the client address behind trusted proxies;
//! - `seen`: batched last-seen times of `nochg` answers (changes go
//!   through the store's group commit, `Store::update_host`);
//! - `mirror`: the in-memory copy of the hosts that answers cached,
//!   unchanged updates without a database query, following the change log;
//! - `service`: one request from routing to answer;
//! - `throttle`: one log line per interval for per-request failures;
//! - `tls`, `metrics`; this file: configuration, listeners, shutdown.

mod auth;
#[doc(hidden)]
pub mod fuzzing;
mod limit;
mod metrics;
mod mirror;
mod protocol;
pub mod proxy;
mod seen;
mod service;
mod throttle;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ddserver_store::{Name, Store};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

pub use limit::Rate;
pub use proxy::{Network, NetworkError};
pub use tls::TlsError;

/// The updater's settings (the binary maps its `[updater]` section here).
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners; need `tls_cert` and `tls_key`.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for the HTTPS listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTPS listeners.
    pub tls_key: Option<PathBuf>,
    /// How often the two files are checked for a change (a renewed
    /// certificate is then loaded); zero: only when
    /// [`Updater::reload_tls`] asks.
    pub tls_check_interval: Duration,
    /// Peers whose `Forwarded`/`X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<Network>,
    /// The Basic realm of the 401 challenge.
    pub realm: String,
    /// Answer `badagent` when the User-Agent is missing or empty.
    pub require_user_agent: bool,
    /// How long a verified credential is remembered.
    pub auth_cache_ttl: Duration,
    /// How many verified credentials are remembered at most.
    pub auth_cache_entries: usize,
    /// argon2 verifications running at once at most: the number of
    /// argon2 threads.
    pub max_verifications: usize,
    /// How long a request waits for a verification slot before `911`.
    pub verification_wait: Duration,
    /// Failed authentications per client address (IPv6: per /64).
    pub failures_per_address: Rate,
    /// Failed authentications per host name.
    pub failures_per_host: Rate,
    /// Committed changes per host.
    pub changes_per_host: Rate,
    /// How often last-seen times of unchanged updates are written.
    pub seen_flush_interval: Duration,
    /// Hosts the host mirror holds at most; with more it switches itself
    /// off and every request reads its host's row. 0: no mirror.
    pub host_mirror_max: usize,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64) at most;
    /// more are closed at once. Trusted proxies are not limited.
    pub max_connections_per_address: u32,
    /// New connections from one client address (IPv6: one /64): a burst,
    /// then one per `per_token`; more are closed at once. `None`: no
    /// limit. Trusted proxies are not limited.
    pub new_connections_per_address: Option<Rate>,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8245))],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_check_interval: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            realm: "ddserver".into(),
            require_user_agent: false,
            auth_cache_ttl: Duration::from_secs(3600),
            auth_cache_entries: 1_000_000,
            max_verifications: 2,
            verification_wait: Duration::from_secs(10),
            failures_per_address: Rate {
                burst: 20,
                per_token: Duration::from_secs(30),
            },
            failures_per_host: Rate {
                burst: 20,
                per_token: Duration::from_secs(30),
            },
            changes_per_host: Rate {
                burst: 10,
                per_token: Duration::from_secs(30),
            },
            seen_flush_interval: Duration::from_secs(10),
            host_mirror_max: 2_000_000,
            max_connections: 10_000,
            max_connections_per_address: 256,
            new_connections_per_address: Some(Rate {
                burst: 1000,
                per_token: Duration::from_millis(10),
            }),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the updater could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("binding the updater to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// HTTPS listeners without both files.
    #[error("updater: tls_listen needs tls_cert and tls_key")]
    TlsFilesMissing,
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Neither HTTP nor HTTPS listener configured.
    #[error("updater: no listen or tls_listen address configured")]
    NoListener,
}

/// Shared by every request.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) cache: auth::CredentialCache,
    pub(crate) verifier: auth::Verifier,
    pub(crate) failures_by_address: limit::Limiter<std::net::IpAddr>,
    pub(crate) failures_by_host: limit::Limiter<Name>,
    pub(crate) updates_by_host: limit::Limiter<Name>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) seen: Arc<seen::Seen>,
    pub(crate) mirror: Arc<mirror::Mirror>,
    /// Per-request database failures: one log line per interval.
    pub(crate) database_errors: throttle::LogThrottle,
    /// Per-request verifier failures (no argon2 slot in time): likewise.
    pub(crate) verifier_errors: throttle::LogThrottle,
    /// Connections refused at accept: likewise.
    pub(crate) connection_refusals: throttle::LogThrottle,
}

/// How often a failure that every request repeats is logged at most.
const REPEATED_ERROR_LOG: Duration = Duration::from_secs(10);

/// A connection's read buffer at most, so the longest request head: more
/// is answered 431. The largest real update (20 names of up to 253
/// characters, credentials, a User-Agent, proxy headers) is under 8 KiB;
/// hyper's default (about 400 KB) would let `max_connections` slow clients
/// pin gigabytes. POST bodies are bounded apart (`service::MAX_BODY`).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Rate-limit buckets kept at most per limiter (about 6 MB for the
/// new-connection limiter's address keys). Full buckets make room when the
/// map is full; a new-connection bucket is full again 10 ms after its last
/// connection at the default rate, so only sources opening millions of
/// connections a second could keep that map full.
const MAX_LIMITER_KEYS: usize = 100_000;

/// A running updater.
#[derive(Debug)]
pub struct Updater {
    http: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
    graceful: Arc<GracefulShutdown>,
    flusher: tokio::task::JoinHandle<()>,
    mirror: tokio::task::JoinHandle<()>,
    /// Asks the certificate watcher to load the TLS files now.
    reload_tls: Arc<Notify>,
    certificate_watcher: Option<tokio::task::JoinHandle<()>>,
    database_watcher: tokio::task::JoinHandle<()>,
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config, store: Store) -> Result<Updater, StartError> {
    if config.listen.is_empty() && config.tls_listen.is_empty() {
        return Err(StartError::NoListener);
    }
    let certificates = if config.tls_listen.is_empty() {
        None
    } else {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Err(StartError::TlsFilesMissing);
        };
        Some(tls::Certificates::open(cert, key)?)
    };
    let tls = certificates.as_ref().map(|c| c.acceptor()).transpose()?;
    let mut listeners = Vec::new();
    for (addr, secure) in config
        .listen
        .iter()
        .map(|a| (*a, false))
        .chain(config.tls_listen.iter().map(|a| (*a, true)))
    {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        listeners.push((listener, local, secure));
    }
    let metrics = Arc::new(metrics::Metrics::default());
    // The store connected (and migrated) before this.
    metrics
        .database_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = Arc::new(seen::Seen::default());
    let (stop, stopped) = watch::channel(false);
    let flusher =
        seen.clone()
            .start_flusher(store.clone(), config.seen_flush_interval, stopped.clone());
    let mirror = Arc::new(mirror::Mirror::new(config.host_mirror_max));
    let mirror_task = mirror.clone().start(store.clone(), stopped.clone());
    let database_watcher = tokio::spawn(watch_database(
        store.clone(),
        mirror.clone(),
        metrics.clone(),
        stopped.clone(),
    ));
    let reload_tls = Arc::new(Notify::new());
    let certificate_watcher = certificates.map(|certificates| {
        tokio::spawn(watch_certificates(
            certificates,
            config.tls_check_interval,
            reload_tls.clone(),
            metrics.clone(),
            stopped.clone(),
        ))
    });
    let state = Arc::new(State {
        cache: auth::CredentialCache::new(config.auth_cache_ttl, config.auth_cache_entries),
        verifier: auth::Verifier::new(config.max_verifications, config.verification_wait),
        failures_by_address: limit::Limiter::new(config.failures_per_address, MAX_LIMITER_KEYS),
        failures_by_host: limit::Limiter::new(config.failures_per_host, MAX_LIMITER_KEYS),
        updates_by_host: limit::Limiter::new(config.changes_per_host, MAX_LIMITER_KEYS),
        metrics,
        seen,
        mirror,
        store,
        config,
        database_errors: throttle::LogThrottle::new(REPEATED_ERROR_LOG),
        verifier_errors: throttle::LogThrottle::new(REPEATED_ERROR_LOG),
        connection_refusals: throttle::LogThrottle::new(REPEATED_ERROR_LOG),
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let connections = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let per_address = limit::ConnectionCounts::new(
        state.config.max_connections_per_address,
        state
            .config
            .new_connections_per_address
            .map(|rate| limit::Limiter::new(rate, MAX_LIMITER_KEYS)),
        state.config.trusted_proxies.clone(),
    );
    let mut http = Vec::new();
    let mut https = Vec::new();
    let mut acceptors = Vec::new();
    for (listener, local, secure) in listeners {
        let tls = if secure {
            https.push(local);
            tls.clone()
        } else {
            http.push(local);
            None
        };
        acceptors.push(tokio::spawn(accept_loop(
            listener,
            tls,
            state.clone(),
            graceful.clone(),
            connections.clone(),
            per_address.clone(),
            stopped.clone(),
        )));
    }
    Ok(Updater {
        http,
        https,
        stop,
        acceptors,
        graceful,
        flusher,
        mirror: mirror_task,
        reload_tls,
        certificate_watcher,
        database_watcher,
    })
}

/// How often [`watch_database`] asks the database, and how long it waits.
const DATABASE_CHECK: Duration = Duration::from_secs(1);
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds out every second whether the database answers, for `/readyz` and
/// `ddserver_updater_database_up`, and logs when it stops and starts
/// answering, until `stop`. A change-log poll of the host mirror that
/// succeeded since the last check is the answer (the mirror polls at least
/// once a second while it runs); else it asks for the newest change-log
/// serial itself (one indexed read).
async fn watch_database(
    store: Store,
    mirror: Arc<mirror::Mirror>,
    metrics: Arc<metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let mut polls_ok = mirror.polls_ok();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(DATABASE_CHECK) => {}
        }
        let polled = mirror.polls_ok();
        let up = if polled != polls_ok {
            polls_ok = polled;
            true
        } else {
            let checked = tokio::select! {
                _ = stop.changed() => return,
                checked = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, store.latest_serial()) => checked,
            };
            matches!(checked, Ok(Ok(_)))
        };
        let was = metrics.database_up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::warn!("updater: the database does not answer; /readyz says so until it does");
        } else if up && !was {
            tracing::info!("updater: the database answers again");
        }
    }
}

/// How long changed TLS files must stay unchanged before they are loaded.
const CERTIFICATE_SETTLE: Duration = Duration::from_millis(500);

/// Loads the TLS certificate and key again when either file changes
/// (checked every `interval`) or when asked, until `stop`.
async fn watch_certificates(
    certificates: Arc<tls::Certificates>,
    interval: Duration,
    asked: Arc<Notify>,
    metrics: Arc<metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    // The files' stamps, off the runtime's threads (two stats).
    let stamps = |certificates: &Arc<tls::Certificates>| {
        let certificates = certificates.clone();
        tokio::task::spawn_blocking(move || certificates.stamps())
    };
    loop {
        let force = tokio::select! {
            _ = stop.changed() => return,
            () = asked.notified() => true,
            () = tokio::time::sleep(interval), if !interval.is_zero() => false,
        };
        if !force {
            // A renewal replaces two files one after the other (certbot
            // re-points two links, acme.sh copies two files): load only
            // once they have stood still for CERTIFICATE_SETTLE, so a new
            // certificate is never tried with the old key.
            let Ok(seen) = stamps(&certificates).await else {
                continue;
            };
            if !certificates.is_new(&seen) {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(CERTIFICATE_SETTLE) => {}
            }
            if stamps(&certificates).await.ok() != Some(seen) {
                continue;
            }
        }
        let checked = certificates.clone();
        // Two small file reads and a key parse.
        let Ok(outcome) = tokio::task::spawn_blocking(move || checked.reload(force)).await else {
            continue;
        };
        match outcome {
            tls::Reload::Unchanged => {}
            tls::Reload::Reloaded => {
                metrics
                    .tls_reloads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("updater: TLS certificate and key loaded again");
            }
            tls::Reload::Failed(e) => {
                metrics
                    .tls_reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("updater: {e}; the previous certificate stays in service");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
    per_address: Arc<limit::ConnectionCounts>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("updater: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a limit: closed at once by dropping the stream, counted, and
        // logged at most once per interval (with the number left out), so
        // that an operator can tell who is refused and why.
        let refuse = |refused: limit::Refused| {
            state.metrics.refused(refused);
            if let Some(left_out) = state.connection_refusals.allow() {
                // Behind an unlisted load balancer every router shares one
                // address, and the per-address limits refuse them all.
                let hint = if refused.per_address() {
                    " (a proxy or load balancer at this address? list it in updater.trusted_proxies)"
                } else {
                    ""
                };
                tracing::warn!(
                    left_out,
                    client = %peer.ip(),
                    "updater: connection refused: over {}{hint}",
                    refused.setting()
                );
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(limit::Refused::Full);
            continue;
        };
        let slot = match per_address.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                refuse(refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            match tls {
                None => serve_connection(stream, peer, state, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(state.config.header_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(stream, peer, state, watcher).await,
                        Ok(Err(e)) => tracing::debug!("updater: TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("updater: TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, state: Arc<State>, watcher: Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_state = state.clone();
    let service = service_fn(move |request| {
        let state = service_state.clone();
        async move { Ok::<_, Infallible>(service::handle(&state, request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("updater: connection from {peer}: {e}");
    }
}

impl Updater {
    /// Where plain HTTP is served.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http
    }

    /// Where HTTPS is served.
    pub fn https_addrs(&self) -> &[SocketAddr] {
        &self.https
    }

    /// Loads the TLS certificate and key again now, changed or not (the
    /// binary calls this on SIGHUP). The outcome is logged and counted in
    /// `/metrics`; a pair that does not load leaves the previous one in
    /// service. Nothing happens without HTTPS listeners.
    pub fn reload_tls(&self) {
        self.reload_tls.notify_one();
    }

    /// Stops accepting, lets open requests finish (at most `grace`; each
    /// waits for its own commit), writes the last-seen times, and returns.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        for acceptor in self.acceptors {
            let _ = acceptor.await;
        }
        // The acceptors held the other handles; they have ended.
        if let Ok(graceful) = Arc::try_unwrap(self.graceful)
            && tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("updater: connections still open after {grace:?}; closing them");
        }
        let _ = self.flusher.await;
        let _ = self.mirror.await;
        if let Some(watcher) = self.certificate_watcher {
            let _ = watcher.await;
        }
        let _ = self.database_watcher.await;
    }
}
