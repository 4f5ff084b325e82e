//! Shared pieces of the change-feed tests (`tests/feed_*.rs`): a scratch
//! installation on SQLite or on a fresh MariaDB database, a second
//! configuration for writers (push on or off), and waiting for an answer.
//!
//! MariaDB is `MYSQL_TEST_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); each test creates its own database
//! with the `mariadb` client and drops it at the end. Unreachable MariaDB
//! fails the test: a skipped backend proves nothing.
#![allow(dead_code, unreachable_pub, unused_macros)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Scratch, query_bytes};

pub const ZONE: &str = "dyn.example.net";

/// One `#[test]` per backend for each `fn name(backend: Backend)` listed:
/// `sqlite::name` and `mariadb::name`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test(super::Backend::Sqlite) } )*
        }
        mod mariadb {
            $( #[test] fn $test() { super::$test(super::Backend::MariaDb) } )*
        }
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MariaDb,
}

/// A MariaDB database that is dropped with this value.
pub struct MariaDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub name: String,
}

impl MariaDb {
    /// Creates a fresh database on the server of `MYSQL_TEST_URL`.
    pub fn create() -> MariaDb {
        let base = std::env::var("MYSQL_TEST_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let rest = base.trim_start_matches("mysql://");
        let (user, rest) = rest.split_once('@').expect("user@host in the URL");
        let authority = rest.split('/').next().unwrap();
        let (host, port) = authority.split_once(':').unwrap_or((authority, "3306"));
        let db = MariaDb {
            host: host.to_owned(),
            port: port.parse().unwrap(),
            user: user.to_owned(),
            name: format!("ddfeed_{:016x}", random_u64()),
        };
        db.sql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.name
        )
    }

    /// Runs SQL with the `mariadb` client; panics (failing the test) when
    /// the server is unreachable.
    pub fn sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .args([
                "-u",
                &self.user,
                "-h",
                &self.host,
                "-P",
                &self.port.to_string(),
            ])
            .args(["--connect-timeout=5", "-e", sql])
            .output()
            .expect("the mariadb client is installed");
        assert!(
            out.status.success(),
            "MariaDB at {}:{} is unreachable or refused `{sql}`: {}. Start it \
             (start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd) \
             or point MYSQL_TEST_URL at a server where the user may create databases.",
            self.host,
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args([
                "-u",
                &self.user,
                "-h",
                &self.host,
                "-P",
                &self.port.to_string(),
            ])
            .args(["-e", &format!("DROP DATABASE IF EXISTS {}", self.name)])
            .output();
    }
}

pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    u64::from_ne_bytes(bytes)
}

/// A scratch installation plus, for MariaDB, its database.
pub struct Setup {
    pub scratch: Scratch,
    pub mariadb: Option<MariaDb>,
    pub url: String,
}

impl Setup {
    /// A scratch installation whose config has `extra` appended (it may
    /// open further sections such as `[feed]`), with the zone, one user
    /// and host `h0` (192.0.2.0) created.
    pub fn new(backend: Backend, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (url, mariadb) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("dd.db").display()),
                None,
            ),
            Backend::MariaDb => {
                let db = MariaDb::create();
                (db.url(), Some(db))
            }
        };
        let scratch = Scratch::with_url(dir, &url, extra);
        let setup = Setup {
            scratch,
            mariadb,
            url,
        };
        setup.populate();
        setup
    }

    /// The zone, user alice and host h0 (192.0.2.0).
    fn populate(&self) {
        let setup = self;
        setup
            .scratch
            .ok(&["zone", "add", ZONE, "--ns", "ns1.example.net"]);
        setup.scratch.ok_stdin(
            &[
                "user",
                "add",
                "alice",
                "--email",
                "alice@example.org",
                "--max-hosts",
                "100000",
                "--password-stdin",
            ],
            "correct horse battery staple\n",
        );
        setup.add_host(&setup.scratch.config, "h0", "192.0.2.0");
    }

    pub fn control_socket(&self) -> PathBuf {
        self.scratch.path("responder.sock")
    }

    /// A configuration for writers that push nowhere: same database, no
    /// control socket, no push sockets. What they commit reaches the
    /// responder only through the change log.
    pub fn silent_writer_config(&self) -> PathBuf {
        let path = self.scratch.path("silent.toml");
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\n\n[responder]\ncontrol_socket = \"\"\n",
                self.url
            ),
        )
        .unwrap();
        path
    }

    /// `ddserver --config CONFIG ARGS` must succeed.
    pub fn run_with(&self, config: &PathBuf, args: &[&str], stdin: &str) {
        let mut command = Command::new(crate::common::ddserver_bin());
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(self.scratch.dir.path())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ddserver {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `label.ZONE` with `ipv4`, owned by alice, through `config`.
    pub fn add_host(&self, config: &PathBuf, label: &str, ipv4: &str) {
        let fqdn = format!("{label}.{ZONE}");
        self.run_with(
            config,
            &[
                "host",
                "add",
                &fqdn,
                "--user",
                "alice",
                "--ipv4",
                ipv4,
                "--password-stdin",
            ],
            "update-secret-0123456789\n",
        );
    }

    pub fn remove_host(&self, config: &PathBuf, label: &str) {
        let fqdn = format!("{label}.{ZONE}");
        self.run_with(config, &["host", "remove", &fqdn], "");
    }
}

/// What the responder answers for `name` A: `None` for no answer at all
/// (timeout), else the rcode and the A records.
pub fn query_a(port: u16, name: &str) -> Option<(u8, Vec<[u8; 4]>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let query = query_bytes(name, 1);
    socket.send_to(&query, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    parse_a(&buf[..n])
}

/// The rcode and A records of a response.
pub fn parse_a(msg: &[u8]) -> Option<(u8, Vec<[u8; 4]>)> {
    if msg.len() < 12 {
        return None;
    }
    let rcode = msg[3] & 0x0f;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)? as usize;
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
            if len == 0 {
                return Some(at);
            }
        }
    };
    for _ in 0..qdcount {
        at = skip_name(at)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..ancount {
        at = skip_name(at)?;
        let rtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let rdlen = u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]) as usize;
        at += 10;
        if rtype == 1 && rdlen == 4 {
            addrs.push([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
        }
        at += rdlen;
    }
    Some((rcode, addrs))
}

/// Waits until `label.ZONE` A answers exactly `ipv4` (`None`: NXDOMAIN),
/// failing the test after `timeout` with the last answer seen.
pub fn wait_for(port: u16, label: &str, ipv4: Option<[u8; 4]>, timeout: Duration) {
    let name = format!("{label}.{ZONE}");
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = query_a(port, &name);
        let good = match (&last, ipv4) {
            (Some((0, addrs)), Some(want)) => addrs == &vec![want],
            (Some((3, _)), None) => true,
            _ => false,
        };
        if good {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} never answered {ipv4:?} within {timeout:?}; last answer {last:?}");
}

/// GETs `/metrics` from `addr` and returns the value of `metric`.
pub fn metric(addr: &str, metric: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `metric` satisfies `good` (the follower updates its metrics
/// just after it publishes, so a fresh answer may precede them).
pub fn wait_metric(addr: &str, name: &str, good: impl Fn(f64) -> bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(addr, name);
        if value.is_some_and(&good) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {value:?} never became right within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGKILL to a daemon and reaps it.
pub fn sigkill(daemon: &mut crate::common::Daemon) {
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
}

impl Setup {
    /// Rewrites `control_socket = ...` in the scratch configuration (used by
    /// the responder and by the pushing writers).
    pub fn set_control_socket(&self, value: &str) {
        let text = std::fs::read_to_string(&self.scratch.config).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("control_socket = ") {
                    format!("control_socket = \"{value}\"")
                } else {
                    line.to_owned()
                }
            })
            .collect();
        std::fs::write(&self.scratch.config, text.join("\n") + "\n").unwrap();
    }
}

/// A private `mariadbd` in a temporary data directory on a free port, for
/// tests that stop the database under a running responder.
pub struct PrivateMariaDb {
    pub datadir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateMariaDb {
    /// Initialises `dir` and starts the server.
    pub fn start(dir: &std::path::Path) -> PrivateMariaDb {
        let datadir = dir.join("mariadb");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", datadir.display()),
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db is installed");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PrivateMariaDb {
            datadir,
            port: crate::common::free_port(),
            child: None,
        };
        server.resume();
        server
    }

    /// Starts the server (again) on the same data directory and port, and
    /// waits until it accepts connections.
    pub fn resume(&mut self) {
        let child = Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults",
                &format!("--datadir={}", self.datadir.display()),
                &format!("--port={}", self.port),
                "--bind-address=127.0.0.1",
                &format!("--socket={}", self.datadir.join("mysqld.sock").display()),
                &format!("--pid-file={}", self.datadir.join("mysqld.pid").display()),
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.datadir.join("server.err")).unwrap())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .args(["-uroot", "-h127.0.0.1", &format!("-P{}", self.port)])
                .args(["--connect-timeout=2", "-e", "SELECT 1"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private mariadbd did not start: {}",
                std::fs::read_to_string(self.datadir.join("server.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not
            // reaped yet, with a valid signal number.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            child.wait().unwrap();
        }
    }

    /// A handle for creating and addressing a database on this server.
    pub fn database(&self) -> MariaDb {
        let db = MariaDb {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            name: "ddfeed".into(),
        };
        db.sql("CREATE DATABASE ddfeed");
        db
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Setup {
    /// Like [`Setup::new`] on a given MariaDB database.
    pub fn on_mariadb(db: MariaDb, dir: tempfile::TempDir, extra: &str) -> Setup {
        let url = db.url();
        let scratch = Scratch::with_url(dir, &url, extra);
        let setup = Setup {
            scratch,
            mariadb: Some(db),
            url,
        };
        setup.populate();
        setup
    }
}
