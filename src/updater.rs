//! Wiring of the dyndns2 updater: maps `[updater]` to
//! [`ddserver_updater::Config`], starts it, and runs `ddserver updater`.
//!
//! The updater writes through the store only; this module must never give
//! it a handle to the responder.

use std::time::Duration;

use anyhow::{Context, Result};
use ddserver_store::Store;
use ddserver_updater::{Network, Rate, Updater};

use crate::config::Config;

/// How long open requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn updater_config(config: &Config) -> Result<ddserver_updater::Config> {
    let u = &config.updater;
    let trusted_proxies = u
        .trusted_proxies
        .iter()
        .map(|p| p.parse::<Network>())
        .collect::<Result<Vec<_>, _>>()
        .context("updater.trusted_proxies")?;
    let failed = |burst| Rate {
        burst,
        per_token: Duration::from_secs(u.failed_auth_refill),
    };
    Ok(ddserver_updater::Config {
        listen: u.listen.clone(),
        tls_listen: u.tls_listen.clone(),
        tls_cert: u.tls_cert.clone(),
        tls_key: u.tls_key.clone(),
        tls_check_interval: Duration::from_secs(u.tls_check_interval),
        trusted_proxies,
        realm: u.realm.clone(),
        require_user_agent: u.require_user_agent,
        auth_cache_ttl: Duration::from_secs(u.auth_cache_ttl),
        auth_cache_entries: u.auth_cache_entries,
        max_verifications: u.max_verifications,
        verification_wait: Duration::from_secs(u.verification_wait),
        failures_per_address: failed(u.failed_auth_per_address),
        failures_per_host: failed(u.failed_auth_per_host),
        changes_per_host: Rate {
            burst: u.changes_per_host,
            per_token: Duration::from_secs(u.changes_refill),
        },
        seen_flush_interval: Duration::from_secs(u.seen_flush_interval),
        host_mirror_max: u.host_mirror_max,
        max_connections: u.max_connections,
        max_connections_per_address: u.max_connections_per_address,
        new_connections_per_address: (u.new_connections_per_address > 0).then(|| Rate {
            burst: u.new_connections_per_address,
            per_token: Duration::from_secs_f64(1.0 / u.new_connections_per_second),
        }),
        header_timeout: Duration::from_secs(u.header_timeout),
    })
}

/// A running updater, for `ddserver serve` and `ddserver updater`.
pub(crate) struct RunningUpdater(Updater);

impl RunningUpdater {
    /// Stops accepting, finishes open requests and queued commits.
    pub(crate) async fn stop(self) {
        self.0.stop(SHUTDOWN_GRACE).await;
    }

    /// On SIGHUP: loads the TLS certificate and key again, if there are
    /// HTTPS listeners.
    pub(crate) fn reload(&self) {
        if self.0.https_addrs().is_empty() {
            tracing::info!("SIGHUP received: the updater has no TLS certificate to load");
        } else {
            tracing::info!("SIGHUP received: loading the updater's TLS certificate and key again");
            self.0.reload_tls();
        }
    }

    /// Where it listens, for the start-up message.
    pub(crate) fn describe(&self) -> String {
        let http = self.0.http_addrs().iter().map(|a| format!("http://{a}"));
        let https = self.0.https_addrs().iter().map(|a| format!("https://{a}"));
        http.chain(https).collect::<Vec<_>>().join(", ")
    }
}

/// Starts the updater and prints where it listens.
pub(crate) async fn start_updater(config: &Config, store: &Store) -> Result<RunningUpdater> {
    // Routers told `good` do not send that address again until it
    // changes: a commit lost to a power cut leaves their names wrong.
    match store.commits_not_durable().await {
        Ok(None) => {}
        Ok(Some(setting)) => tracing::warn!(
            "the database runs with {setting}: updates acknowledged `good` can be lost \
             if its machine loses power (MariaDB: set innodb_flush_log_at_trx_commit = 1)"
        ),
        Err(e) => tracing::warn!("cannot tell whether the database's commits are durable: {e}"),
    }
    let updater = ddserver_updater::start(updater_config(config)?, store.clone())
        .await
        .context("starting the dyndns2 updater")?;
    let running = RunningUpdater(updater);
    println!("dyndns2 updater listening on {}", running.describe());
    Ok(running)
}

/// `ddserver updater`: the updater alone, until SIGTERM or SIGINT.
pub(crate) async fn updater(config: &Config, store: &Store) -> Result<()> {
    let shutdown = crate::serve::ShutdownSignal::install()?;
    // Every committed update is pushed to the configured responders.
    crate::control::start_pushing(store, config, "ddserver updater", None);
    let running = start_updater(config, store).await?;
    shutdown.wait(|| running.reload()).await;
    running.stop().await;
    Ok(())
}
