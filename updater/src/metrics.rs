//! Counters for `/metrics` in the Prometheus text format (version 0.0.4):
//! answers by code, request latency, credential-cache hits, argon2 runs,
//! the host mirror and TLS certificate reloads.
//!
//! Plain atomics, updated once per request; this module must never lock or
//! allocate on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::limit::Refused;
use crate::mirror::Mirror;
use crate::protocol::Answer;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    answers: [AtomicU64; Answer::CODES.len()],
    latency: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) verifications: AtomicU64,
    pub(crate) commit_batches: AtomicU64,
    pub(crate) mirror_hits: AtomicU64,
    pub(crate) tls_reloads: AtomicU64,
    pub(crate) tls_reload_failures: AtomicU64,
    /// Connections closed at accept, by [`Refused::index`].
    refused_connections: [AtomicU64; Refused::ALL.len()],
    /// Whether the database answered the last check (`lib::watch_database`).
    pub(crate) database_up: AtomicBool,
}

impl Metrics {
    /// One connection closed at accept.
    pub(crate) fn refused(&self, refused: Refused) {
        self.refused_connections[refused.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answer(&self, answer: &Answer) {
        let code = answer.code();
        if let Some(i) = Answer::CODES.iter().position(|c| *c == code) {
            self.answers[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn request(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, counter) in BUCKETS.iter().zip(&self.latency) {
            if seconds <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn render(&self, mirror: &Mirror) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP ddserver_updater_answers_total dyndns2 answer lines by code.\n\
             # TYPE ddserver_updater_answers_total counter\n",
        );
        for (code, counter) in Answer::CODES.iter().zip(&self.answers) {
            let _ = writeln!(
                out,
                "ddserver_updater_answers_total{{code=\"{code}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP ddserver_updater_request_seconds Time to answer an update request.\n\
             # TYPE ddserver_updater_request_seconds histogram\n",
        );
        for (bound, counter) in BUCKETS.iter().zip(&self.latency) {
            let _ = writeln!(
                out,
                "ddserver_updater_request_seconds_bucket{{le=\"{bound}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ddserver_updater_request_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             ddserver_updater_request_seconds_sum {}\n\
             ddserver_updater_request_seconds_count {count}",
            self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        for (name, help, counter) in [
            (
                "ddserver_updater_auth_cache_hits_total",
                "Credentials found in the verified-credential cache.",
                &self.cache_hits,
            ),
            (
                "ddserver_updater_auth_cache_misses_total",
                "Credentials not in the cache (argon2 needed).",
                &self.cache_misses,
            ),
            (
                "ddserver_updater_argon2_verifications_total",
                "argon2 verifications run.",
                &self.verifications,
            ),
            (
                "ddserver_updater_commit_batches_total",
                "Write transactions of grouped host updates.",
                &self.commit_batches,
            ),
            (
                "ddserver_updater_mirror_hits_total",
                "Hosts authenticated and decided from the host mirror, without a row read.",
                &self.mirror_hits,
            ),
            (
                "ddserver_updater_tls_reloads_total",
                "Times a changed TLS certificate and key were loaded while serving.",
                &self.tls_reloads,
            ),
            (
                "ddserver_updater_tls_reload_failures_total",
                "Changed TLS files that did not load (the previous pair stayed in service).",
                &self.tls_reload_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ddserver_updater_database_up Whether the database answered the updater's last check (every second).\n\
             # TYPE ddserver_updater_database_up gauge\n\
             ddserver_updater_database_up {}",
            u8::from(self.database_up.load(Ordering::Relaxed))
        );
        out.push_str(
            "# HELP ddserver_updater_connections_refused_total Connections closed at once, by the limit they were over.\n\
             # TYPE ddserver_updater_connections_refused_total counter\n",
        );
        for refused in Refused::ALL {
            let _ = writeln!(
                out,
                "ddserver_updater_connections_refused_total{{reason=\"{}\"}} {}",
                refused.setting(),
                self.refused_connections[refused.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ddserver_updater_mirror_polls_total Change-log polls of the host mirror.\n\
             # TYPE ddserver_updater_mirror_polls_total counter\n\
             ddserver_updater_mirror_polls_total {}\n\
             # HELP ddserver_updater_mirror_fresh_at_once_total Requests that found the host mirror current by the database's commit mark, without waiting for a poll.\n\
             # TYPE ddserver_updater_mirror_fresh_at_once_total counter\n\
             ddserver_updater_mirror_fresh_at_once_total {}\n\
             # HELP ddserver_updater_mirror_hosts Hosts in the host mirror.\n\
             # TYPE ddserver_updater_mirror_hosts gauge\n\
             ddserver_updater_mirror_hosts {}",
            mirror.polls(),
            mirror.fresh_at_once(),
            mirror.len()
        );
        out
    }
}
