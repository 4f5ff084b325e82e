//! The configuration file: one TOML file, overridable by `DDSERVER_*`
//! environment variables, with every setting declared once here with its
//! default and unit.
//!
//! Layering (later wins): built-in defaults, then the file (`--config FILE`,
//! else `ddserver.toml` in the working directory if present), then the
//! environment (`DDSERVER_<SECTION>_<KEY>`, e.g. `DDSERVER_DATABASE_URL`).
//! Unknown keys are errors that name the key and where it came from; a typo
//! must never silently fall back to a default.
//!
//! This module only parses and validates. Components receive their own typed
//! settings (e.g. the responder's `IoConfig`) from `main.rs`; they never read
//! this file themselves.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "ddserver.toml";
/// Prefix of the environment variables that override the file.
pub(crate) const ENV_PREFIX: &str = "DDSERVER_";

/// Why the configuration could not be loaded. Every variant names the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("reading configuration file '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in configuration file '{path}': {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("configuration ({origin}): {message}")]
    Invalid { origin: String, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) database: DatabaseConfig,
    pub(crate) responder: ResponderConfig,
    pub(crate) feed: FeedConfig,
    pub(crate) updater: UpdaterConfig,
    pub(crate) webui: WebuiConfig,
    pub(crate) hosts: HostsConfig,
    pub(crate) log: LogConfig,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseConfig {
    /// `sqlite://PATH` (created on first start) or `mysql://USER:PASS@HOST/DB`.
    pub(crate) url: DatabaseUrl,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://ddserver.db".into()),
        }
    }
}

/// How the responder does its socket I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum IoChoice {
    /// io_uring where the kernel allows it, else the portable backend.
    Auto,
    /// io_uring or fail at start.
    IoUring,
    /// recvmmsg/sendmmsg with epoll: works everywhere.
    Portable,
}

/// `[responder]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ResponderConfig {
    /// Addresses to serve DNS on, UDP and TCP each.
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) listen: Vec<SocketAddr>,
    /// Worker threads, one socket pair each; 0 = one per core.
    pub(crate) workers: usize,
    /// `auto`, `io-uring` or `portable`.
    pub(crate) io: IoChoice,
    /// Pin each worker to a core where the system allows it.
    pub(crate) pin_workers: bool,
    /// Unix socket on which this responder (and `serve`) accepts pushed
    /// changes, and to which writers on this machine (admin commands, the
    /// updater) push them. Empty: no socket; the responder follows the
    /// change log alone and writers push only to `[feed] push_sockets`.
    pub(crate) control_socket: PathBuf,
    /// Permissions of the control socket file (any local user who can
    /// connect can make the responder read the log early, nothing more).
    /// 0o000..=0o777.
    pub(crate) control_socket_mode: u32,
    /// Address of the Prometheus `/metrics` HTTP listener (applied serial,
    /// database serial, lag, changes applied, reloads, load time). Unset:
    /// no listener. The conventional port is 9153.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The UDP payload size we advertise in EDNS(0) OPT (RFC 6891 §6.2.5);
    /// 1232 avoids IP fragmentation (DNS flag day 2020). Range 512..=4096.
    pub(crate) udp_payload: u16,
    /// Seconds an idle TCP connection is kept (RFC 7766 §6.2.3). 1..=300.
    pub(crate) tcp_idle_timeout: u64,
    /// Open TCP connections per worker; more are refused. 1..=65536.
    pub(crate) tcp_max_connections: usize,
    /// Answer `version.bind` / `id.server` CHAOS TXT queries.
    pub(crate) chaos: bool,
    /// Text of the `id.server` answer when `chaos` is on (default: host name).
    pub(crate) server_id: Option<String>,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            workers: 0,
            io: IoChoice::Auto,
            pin_workers: true,
            control_socket: PathBuf::from("ddserver-responder.sock"),
            control_socket_mode: 0o600,
            metrics_listen: None,
            udp_payload: 1232,
            tcp_idle_timeout: 10,
            tcp_max_connections: 1024,
            chaos: false,
            server_id: None,
        }
    }
}

/// `[feed]`: how committed changes reach responders.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FeedConfig {
    /// Milliseconds between checks of the change log: the safety net for
    /// lost pushes and the only path for a responder without a control
    /// socket. While pushes keep up (everything committed a check ago is
    /// applied) a check reads only the newest serial, so a change no push
    /// brings is read within two intervals. 10..=60000.
    pub(crate) poll_interval_ms: u64,
    /// Seconds a change-log entry is kept; a responder that falls further
    /// behind reloads everything. 0 = keep forever; else 1..=31536000.
    pub(crate) retention: u64,
    /// Seconds between prunes of the change log (by `serve` and
    /// `responder`). 1..=86400.
    pub(crate) prune_interval: u64,
    /// Further responder control sockets that writers in this process push
    /// to, besides `[responder] control_socket`.
    pub(crate) push_sockets: Vec<PathBuf>,
    /// Milliseconds a writer waits to connect or write a push, and the most
    /// an admin command waits for its pushes before exiting. 1..=10000.
    pub(crate) push_timeout_ms: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            retention: 7 * 86400,
            prune_interval: 600,
            push_sockets: Vec::new(),
            push_timeout_ms: 500,
        }
    }
}

/// `[updater]`: the dyndns2 endpoint (see the `ddserver-updater` crate).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UpdaterConfig {
    /// Addresses for plain HTTP; may be empty when `tls_listen` is set.
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) listen: Vec<SocketAddr>,
    /// Addresses for HTTPS (needs `tls_cert` and `tls_key`).
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    pub(crate) tls_key: Option<PathBuf>,
    /// Seconds between checks of `tls_cert` and `tls_key` for a change; a
    /// changed pair is loaded without a restart (so is any pair on
    /// SIGHUP). 0 = only on SIGHUP. 0..=86400.
    pub(crate) tls_check_interval: u64,
    /// Reverse proxies (addresses or networks such as `10.0.0.0/8`) whose
    /// `Forwarded` / `X-Forwarded-For` headers are believed.
    #[serde(deserialize_with = "strings_one_or_many")]
    pub(crate) trusted_proxies: Vec<String>,
    /// The realm of the HTTP Basic challenge. 1..=64 printable characters,
    /// no `"` or `\`.
    pub(crate) realm: String,
    /// Answer `badagent` to requests without a User-Agent.
    pub(crate) require_user_agent: bool,
    /// Seconds a verified credential is remembered (0 = never). 0..=86400.
    pub(crate) auth_cache_ttl: u64,
    /// Verified credentials remembered at most (~100 B each). 0..=10000000.
    pub(crate) auth_cache_entries: usize,
    /// argon2 verifications at once: one thread each, at nice 10 (~20 ms
    /// of a core a run; 19 MiB each, kept until a second without one).
    /// 1..=256.
    pub(crate) max_verifications: usize,
    /// Seconds a request waits for a verification slot before `911`. 1..=60.
    pub(crate) verification_wait: u64,
    /// Failed authentications a client address (IPv6: its /64) may make in
    /// a burst. 1..=100000.
    pub(crate) failed_auth_per_address: u32,
    /// Failed authentications a host name may take in a burst. 1..=100000.
    pub(crate) failed_auth_per_host: u32,
    /// Seconds to regain one failed-authentication allowance. 1..=86400.
    pub(crate) failed_auth_refill: u64,
    /// Committed changes a host may make in a burst (an IPv4 and an IPv6
    /// request back to back are two). 2..=100000.
    pub(crate) changes_per_host: u32,
    /// Seconds to regain one change allowance. 1..=86400.
    pub(crate) changes_refill: u64,
    /// Seconds between writes of last-seen times of unchanged updates.
    /// 1..=3600.
    pub(crate) seen_flush_interval: u64,
    /// Hosts the updater's in-memory host mirror holds at most (~230 B
    /// each, measured at 1M hosts); with more it switches itself off and
    /// every update reads its host's row. 0: no mirror. 0..=100000000.
    pub(crate) host_mirror_max: usize,
    /// Open connections at most. 1..=1000000.
    pub(crate) max_connections: usize,
    /// Open connections from one client address (IPv6: one /64) at most;
    /// trusted proxies are not limited. 1..=1000000.
    pub(crate) max_connections_per_address: u32,
    /// New connections from one client address (IPv6: one /64) in a
    /// burst; more are closed at once. Trusted proxies are not limited.
    /// 0: no limit. 0..=1000000.
    pub(crate) new_connections_per_address: u32,
    /// New connections per second one address regains, up to the burst.
    /// 0.001..=1000000.
    pub(crate) new_connections_per_second: f64,
    /// Seconds a client has to send its request headers (and TLS
    /// handshake). 1..=300.
    pub(crate) header_timeout: u64,
}

impl Default for UpdaterConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8245))],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_check_interval: 10,
            trusted_proxies: Vec::new(),
            realm: "ddserver".into(),
            require_user_agent: false,
            auth_cache_ttl: 3600,
            auth_cache_entries: 1_000_000,
            max_verifications: 2,
            verification_wait: 10,
            failed_auth_per_address: 20,
            failed_auth_per_host: 20,
            failed_auth_refill: 30,
            changes_per_host: 10,
            changes_refill: 30,
            seen_flush_interval: 10,
            host_mirror_max: 2_000_000,
            max_connections: 10_000,
            max_connections_per_address: 256,
            new_connections_per_address: 1000,
            new_connections_per_second: 100.0,
            header_timeout: 10,
        }
    }
}

impl UpdaterConfig {
    /// Range checks; `invalid` builds the error.
    fn validate(&self, invalid: &dyn Fn(String) -> ConfigError) -> Result<(), ConfigError> {
        let range = |key: &str, value: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "updater.{key} = {value} is outside {lo}..={hi}"
                )))
            }
        };
        let wide = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        range("auth_cache_ttl", self.auth_cache_ttl, 0, 86400)?;
        range(
            "auth_cache_entries",
            wide(self.auth_cache_entries),
            0,
            10_000_000,
        )?;
        range("max_verifications", wide(self.max_verifications), 1, 256)?;
        range("verification_wait", self.verification_wait, 1, 60)?;
        range(
            "failed_auth_per_address",
            self.failed_auth_per_address.into(),
            1,
            100_000,
        )?;
        range(
            "failed_auth_per_host",
            self.failed_auth_per_host.into(),
            1,
            100_000,
        )?;
        range("failed_auth_refill", self.failed_auth_refill, 1, 86400)?;
        range("changes_per_host", self.changes_per_host.into(), 2, 100_000)?;
        range("changes_refill", self.changes_refill, 1, 86400)?;
        range("seen_flush_interval", self.seen_flush_interval, 1, 3600)?;
        range(
            "host_mirror_max",
            wide(self.host_mirror_max),
            0,
            100_000_000,
        )?;
        range("max_connections", wide(self.max_connections), 1, 1_000_000)?;
        range(
            "max_connections_per_address",
            self.max_connections_per_address.into(),
            1,
            1_000_000,
        )?;
        range(
            "new_connections_per_address",
            self.new_connections_per_address.into(),
            0,
            1_000_000,
        )?;
        let per_second = self.new_connections_per_second;
        if !(0.001..=1_000_000.0).contains(&per_second) {
            return Err(invalid(format!(
                "updater.new_connections_per_second = {per_second} is outside 0.001..=1000000"
            )));
        }
        range("header_timeout", self.header_timeout, 1, 300)?;
        range("tls_check_interval", self.tls_check_interval, 0, 86400)?;
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            return Err(invalid(
                "updater.listen and updater.tls_listen are both empty".into(),
            ));
        }
        if !self.tls_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(invalid(
                "updater.tls_listen needs updater.tls_cert and updater.tls_key".into(),
            ));
        }
        if self.realm.is_empty()
            || self.realm.len() > 64
            || !self
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(invalid(
                "updater.realm must be 1 to 64 printable ASCII characters without '\"' or '\\'"
                    .into(),
            ));
        }
        for proxy in &self.trusted_proxies {
            proxy
                .parse::<ddserver_updater::Network>()
                .map_err(|e| invalid(format!("updater.trusted_proxies: {e}")))?;
        }
        Ok(())
    }
}

/// `[webui]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebuiConfig {
    /// Addresses for the web UI's HTTP listener.
    #[serde(deserialize_with = "one_or_many")]
    pub(crate) listen: Vec<SocketAddr>,
    /// The URL users reach the web UI at (links in e-mails, cookies' scope).
    pub(crate) public_url: String,
}

impl Default for WebuiConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            public_url: "http://127.0.0.1:8080/".into(),
        }
    }
}

/// `[hosts]`: defaults for hosts and their owners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HostsConfig {
    /// Hosts a user may own when the account sets no limit of its own;
    /// 0 = unlimited.
    pub(crate) default_max_hosts: u32,
    /// TTL in seconds of host records for zones created without `--ttl`.
    /// 1..=86400.
    pub(crate) default_ttl: u32,
}

impl Default for HostsConfig {
    fn default() -> Self {
        Self {
            default_max_hosts: 5,
            default_ttl: 60,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A tracing filter such as `info` or `ddserver=debug,sqlx=warn`;
    /// `RUST_LOG` wins when set.
    pub(crate) filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn".into(),
        }
    }
}

/// The database URL. Its password never appears in `Debug`, `Display` or
/// `check-config` output; only [`DatabaseUrl::expose`] returns it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, for connecting only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub(crate) fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            return url.clone();
        };
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            _ => url.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Accepts `"127.0.0.1:53"` as well as `["127.0.0.1:53", "[::1]:53"]`, so a
/// single address can be given in the file or an environment variable.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "'{s}' is not a socket address (expected e.g. 127.0.0.1:53 or [::1]:53)"
                ))
            })
        })
        .collect()
}

/// Accepts `"10.0.0.0/8"`, `"10.0.0.1, ::1"` or `["10.0.0.0/8", "::1"]`.
fn strings_one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// The sections an environment variable may address.
const SECTIONS: &[&str] = &[
    "database",
    "responder",
    "feed",
    "updater",
    "webui",
    "hosts",
    "log",
];

/// Environment variables with our prefix that are not settings.
const NON_SETTING_VARS: &[&str] = &["DDSERVER_CONFIG"];

impl Config {
    /// The file to read when `--config` is not given: `ddserver.toml` in the
    /// working directory if it exists.
    pub(crate) fn default_path() -> Option<PathBuf> {
        let path = PathBuf::from(DEFAULT_CONFIG_FILE);
        path.exists().then_some(path)
    }

    /// Loads the configuration: defaults, then the file at `path` if any, then
    /// `DDSERVER_*` variables from `env`. Returns the configuration and a
    /// description of where it came from.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, String), ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let table = read_table(path)?;
                // Check the file alone first, so an unknown key in it is
                // reported against the file, not against the merged result.
                Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                    ConfigError::File {
                        path: path.to_owned(),
                        message: e.to_string().trim_end().to_string(),
                    }
                })?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        let mut overridden = Vec::new();
        for (var, value) in env {
            if !var.starts_with(ENV_PREFIX) || NON_SETTING_VARS.contains(&var.as_str()) {
                continue;
            }
            apply_env(&mut table, &var, &value)?;
            overridden.push(var);
        }
        let config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                var: overridden.join(", "),
                message: e.to_string().trim_end().to_string(),
            })?;
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} + {}", overridden.join(", "))
        };
        config.validate(&origin)?;
        Ok((config, origin))
    }

    /// Range checks that serde cannot express.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:") || url.starts_with("mysql:") || url.starts_with("mariadb:"))
        {
            return Err(invalid(format!(
                "database.url '{}' must start with sqlite:// or mysql://",
                self.database.url
            )));
        }
        let r = &self.responder;
        if r.listen.is_empty() {
            return Err(invalid(
                "responder.listen must name at least one address".into(),
            ));
        }
        if !(512..=4096).contains(&r.udp_payload) {
            return Err(invalid(format!(
                "responder.udp_payload = {} is outside 512..=4096",
                r.udp_payload
            )));
        }
        if !(1..=300).contains(&r.tcp_idle_timeout) {
            return Err(invalid(format!(
                "responder.tcp_idle_timeout = {} s is outside 1..=300",
                r.tcp_idle_timeout
            )));
        }
        if !(1..=65536).contains(&r.tcp_max_connections) {
            return Err(invalid(format!(
                "responder.tcp_max_connections = {} is outside 1..=65536",
                r.tcp_max_connections
            )));
        }
        if r.workers > 1024 {
            return Err(invalid(format!(
                "responder.workers = {} is more than 1024",
                r.workers
            )));
        }
        if r.control_socket_mode > 0o777 {
            return Err(invalid(format!(
                "responder.control_socket_mode = {:#o} is outside 0o000..=0o777",
                r.control_socket_mode
            )));
        }
        let f = &self.feed;
        if !(10..=60_000).contains(&f.poll_interval_ms) {
            return Err(invalid(format!(
                "feed.poll_interval_ms = {} is outside 10..=60000",
                f.poll_interval_ms
            )));
        }
        if f.retention > 31_536_000 {
            return Err(invalid(format!(
                "feed.retention = {} s is more than a year (31536000); 0 keeps entries forever",
                f.retention
            )));
        }
        if !(1..=86400).contains(&f.prune_interval) {
            return Err(invalid(format!(
                "feed.prune_interval = {} s is outside 1..=86400",
                f.prune_interval
            )));
        }
        if !(1..=10_000).contains(&f.push_timeout_ms) {
            return Err(invalid(format!(
                "feed.push_timeout_ms = {} is outside 1..=10000",
                f.push_timeout_ms
            )));
        }
        self.updater.validate(&invalid)?;
        if !(1..=86400).contains(&self.hosts.default_ttl) {
            return Err(invalid(format!(
                "hosts.default_ttl = {} is outside 1..=86400",
                self.hosts.default_ttl
            )));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration always serialises")
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Applies `DDSERVER_SECTION_KEY=value` to the table. The value is read as a
/// TOML value where it parses as one (numbers, booleans, arrays), else as a
/// string, so `DDSERVER_DATABASE_URL=sqlite://x.db` needs no quoting.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: format!(
                "unknown section; expected {ENV_PREFIX}<SECTION>_<KEY> with SECTION one of {}",
                SECTIONS.join(", ").to_ascii_uppercase()
            ),
        });
    };
    let key = &rest[section.len() + 1..];
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section_table) = entry.as_table_mut() else {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: format!("[{section}] in the file is not a table"),
        });
    };
    section_table.insert(key.to_string(), parsed);
    // Report an unknown key against the variable, naming it.
    Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| ConfigError::Env {
        var: var.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ddserver.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map(|(c, _)| c)
    }

    #[test]
    fn defaults_without_a_file() {
        let (config, origin) = Config::load(None, Vec::new()).unwrap();
        assert_eq!(origin, "built-in defaults");
        assert_eq!(config.database.url.expose(), "sqlite://ddserver.db");
        assert_eq!(
            config.responder.listen,
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
        assert_eq!(
            config.updater.listen,
            vec!["127.0.0.1:8245".parse().unwrap()]
        );
        assert_eq!(config.webui.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    }

    #[test]
    fn unknown_key_in_file_names_key_and_file() {
        let err = load_str("[responder]\nlistn = \"127.0.0.1:53\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listn"), "{text}");
        assert!(text.contains("ddserver.toml"), "{text}");
    }

    #[test]
    fn unknown_section_in_file_is_an_error() {
        let err = load_str("[responderr]\nworkers = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("responderr"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let config = load_str(
            "[responder]\nworkers = 2\n",
            &[
                ("DDSERVER_RESPONDER_WORKERS", "3"),
                ("DDSERVER_DATABASE_URL", "mysql://u:pw@db/x"),
                ("DDSERVER_RESPONDER_LISTEN", "127.0.0.1:53,[::1]:53"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.responder.workers, 3);
        assert_eq!(config.database.url.expose(), "mysql://u:pw@db/x");
        assert_eq!(config.responder.listen.len(), 2);
    }

    #[test]
    fn unknown_env_key_names_the_variable() {
        let err = load_str("", &[("DDSERVER_RESPONDER_WORKRS", "3")]).unwrap_err();
        assert!(
            err.to_string().contains("DDSERVER_RESPONDER_WORKRS"),
            "{err}"
        );
        let err = load_str("", &[("DDSERVER_NOPE_X", "3")]).unwrap_err();
        assert!(err.to_string().contains("DDSERVER_NOPE_X"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let config = load_str(
            "[database]\nurl = \"mysql://dd:s3cret@db.example/dd\"\n",
            &[],
        )
        .unwrap();
        let debug = format!("{config:?}");
        let toml = config.to_toml();
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!toml.contains("s3cret"), "{toml}");
        assert!(toml.contains("mysql://dd:***@db.example/dd"), "{toml}");
        assert_eq!(
            config.database.url.expose(),
            "mysql://dd:s3cret@db.example/dd"
        );
    }

    #[test]
    fn ranges_are_checked() {
        let err = load_str("[responder]\nudp_payload = 100\n", &[]).unwrap_err();
        assert!(err.to_string().contains("udp_payload"), "{err}");
        let err = load_str("[responder]\nlisten = \"nonsense\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        let err = load_str("[database]\nurl = \"postgres://x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
        let err = load_str("[updater]\ntls_check_interval = 86401\n", &[]).unwrap_err();
        assert!(err.to_string().contains("tls_check_interval"), "{err}");
        let err = load_str("[updater]\nmax_connections_per_address = 0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("max_connections_per_address"),
            "{err}"
        );
        let config = load_str("[updater]\ntls_check_interval = 0\n", &[]).unwrap();
        assert_eq!(config.updater.tls_check_interval, 0);
        let err = load_str("[updater]\nnew_connections_per_second = 0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("new_connections_per_second"),
            "{err}"
        );
        let err = load_str("[updater]\nnew_connections_per_second = nan\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("new_connections_per_second"),
            "{err}"
        );
        // Written as an integer or a fraction; 0 connections: no limit.
        let config = load_str(
            "[updater]\nnew_connections_per_second = 5\nnew_connections_per_address = 0\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.updater.new_connections_per_second, 5.0);
        assert_eq!(config.updater.new_connections_per_address, 0);
        let config = load_str("[updater]\nnew_connections_per_second = 0.25\n", &[]).unwrap();
        assert_eq!(config.updater.new_connections_per_second, 0.25);
    }

    #[test]
    fn feed_settings() {
        let config = load_str(
            "[responder]\ncontrol_socket = \"\"\nmetrics_listen = \"127.0.0.1:9153\"\n\
             control_socket_mode = 0o660\n[feed]\npoll_interval_ms = 50\nretention = 0\n\
             push_sockets = [\"/run/a.sock\", \"/run/b.sock\"]\n",
            &[("DDSERVER_FEED_PUSH_TIMEOUT_MS", "100")],
        )
        .unwrap();
        assert_eq!(config.responder.control_socket, PathBuf::new());
        assert_eq!(config.responder.control_socket_mode, 0o660);
        assert_eq!(
            config.responder.metrics_listen,
            Some("127.0.0.1:9153".parse().unwrap())
        );
        assert_eq!(config.feed.poll_interval_ms, 50);
        assert_eq!(config.feed.retention, 0);
        assert_eq!(config.feed.push_sockets.len(), 2);
        assert_eq!(config.feed.push_timeout_ms, 100);
        let defaults = Config::default();
        assert_eq!(defaults.responder.metrics_listen, None);
        assert_eq!(defaults.feed.poll_interval_ms, 200);
        for bad in [
            "[feed]\npoll_interval_ms = 5\n",
            "[feed]\nretention = 99999999999\n",
            "[feed]\nprune_interval = 0\n",
            "[feed]\npush_timeout_ms = 0\n",
            "[feed]\npol_interval_ms = 50\n",
            "[responder]\ncontrol_socket_mode = 0o1777\n",
        ] {
            assert!(load_str(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn updater_settings_are_checked() {
        let config = load_str(
            "[updater]\nlisten = []\ntls_listen = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\n\
             tls_key = \"k.pem\"\ntrusted_proxies = \"10.0.0.0/8, ::1\"\nrequire_user_agent = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.updater.trusted_proxies.len(), 2);
        assert!(config.updater.listen.is_empty());
        let err = load_str("[updater]\ntls_listen = \"127.0.0.1:8443\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let err = load_str("[updater]\ntrusted_proxies = \"10.0.0.0/99\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/99"), "{err}");
        let err = load_str("[updater]\nmax_verifications = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_verifications"), "{err}");
        let err = load_str("[updater]\nrealm = \"a\\\"b\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("realm"), "{err}");
        let err = load_str("[updater]\ncache_ttl = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("cache_ttl"), "{err}");
    }

    #[test]
    fn bad_toml_names_the_file() {
        let err = load_str("[responder\n", &[]).unwrap_err();
        assert!(err.to_string().contains("ddserver.toml"), "{err}");
    }
}
