//! Shared pieces of the black-box tests: a scratch directory with a
//! configuration, the `ddserver` binary run as a user would run it, a
//! responder process that is killed when the test ends, and the real DNS
//! clients (`dig`, `kdig`) the tests query it with.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn ddserver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ddserver"))
}

/// A free loopback port for UDP and TCP both (bound and released; the race
/// with other processes is acceptable in tests).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A scratch installation: a directory, a configuration file in it and a
/// database URL. SQLite unless `MYSQL_TEST_URL` style URL is given.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub dns_port: u16,
    /// The dyndns2 updater's plain HTTP port (`ddserver serve` starts it).
    pub updater_port: u16,
}

impl Scratch {
    /// A scratch installation on SQLite with extra TOML appended to the
    /// `[responder]` section.
    pub fn sqlite(responder_extra: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("dd.db");
        Scratch::with_url(dir, &format!("sqlite://{}", db.display()), responder_extra)
    }

    pub fn with_url(dir: tempfile::TempDir, url: &str, responder_extra: &str) -> Scratch {
        let dns_port = free_port();
        let updater_port = free_port();
        let config = dir.path().join("ddserver.toml");
        let sock = dir.path().join("responder.sock");
        std::fs::write(
            &config,
            format!(
                "[updater]\nlisten = [\"127.0.0.1:{updater_port}\"]\n\n\
                 [database]\nurl = \"{url}\"\n\n[responder]\nlisten = [\"127.0.0.1:{dns_port}\"]\n\
                 workers = 2\ncontrol_socket = \"{}\"\n{responder_extra}\n",
                sock.display()
            ),
        )
        .unwrap();
        Scratch {
            dir,
            config,
            dns_port,
            updater_port,
        }
    }

    /// Adds settings to the `[updater]` section (TOML lines).
    pub fn updater_settings(&self, extra: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[updater]\n", &format!("[updater]\n{extra}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `ddserver --config C ARGS`, with `stdin` on standard input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(ddserver_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ddserver runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, "")
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "ddserver {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, "");
        assert!(
            !out.status.success(),
            "ddserver {args:?} succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Starts `ddserver ARGS` (e.g. `responder`) in the background and waits
    /// until it answers DNS for `probe` (a name in a served zone) over UDP.
    pub fn start(&self, args: &[&str], probe: &str) -> Daemon {
        let log = self.path(&format!("{}.log", args.join("-")));
        let child = Command::new(ddserver_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(self.path("daemon.err")).unwrap())
            .spawn()
            .expect("ddserver starts");
        let daemon = Daemon {
            child,
            log,
            err: self.path("daemon.err"),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], self.dns_port).into();
        wait_for_dns(addr, probe, Duration::from_secs(60), &daemon);
        daemon
    }
}

/// A background `ddserver` process, stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub err: PathBuf,
}

impl Daemon {
    pub fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits until the process has printed `needle` (start-up messages come
    /// a moment after the sockets answer), or fails the test after 10 s.
    pub fn wait_for_output(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let output = self.output();
            if output.contains(needle) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the output within 10 s:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped yet, with a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Sends SIGHUP (systemd's `reload`).
    pub fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ddserver did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal DNS query for `name` type A, id 0x1234, RD clear.
pub fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Waits until the server at `addr` answers a query for `name` with
/// NOERROR, or fails the test after `timeout`.
pub fn wait_for_dns(addr: SocketAddr, name: &str, timeout: Duration, daemon: &Daemon) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let query = query_bytes(name, 1);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = socket.send_to(&query, addr);
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && n >= 12
            && buf[3] & 0x0f == 0
        {
            return;
        }
    }
    panic!(
        "no answer for {name} from {addr} within {timeout:?}; server output:\n{}",
        daemon.output()
    );
}

/// Runs `dig` (from Debian's dnsutils) against `port` on 127.0.0.1 and
/// returns its standard output. `args` are passed as they are, e.g.
/// `["h1.dyn.example.net", "A", "+norec"]`.
pub fn dig(port: u16, args: &[&str]) -> String {
    client("dig", port, args)
}

/// Runs `kdig` (from Debian's knot-dnsutils) the same way.
pub fn kdig(port: u16, args: &[&str]) -> String {
    client("kdig", port, args)
}

fn client(program: &str, port: u16, args: &[&str]) -> String {
    // Same limits, each client's spelling.
    let limits: &[&str] = if program == "kdig" {
        &["+timeout=2", "+retry=1"]
    } else {
        &["+time=2", "+tries=2"]
    };
    let out = Command::new(program)
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(limits)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test installs it): {e}"));
    String::from_utf8(out.stdout).unwrap()
}

/// `dig +short`, the answers one per line, sorted.
pub fn dig_short(port: u16, name: &str, qtype: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(port, &[name, qtype, "+short", "+norec"])
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Fails the test, naming the Debian package, when `program` is not on the
/// PATH: a missing client must never let a test pass silently.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{program} is missing: install the Debian package '{package}' (scripts/test installs it)"
    );
}

/// Polls `dig +short` until the answer for `name`/`qtype` is exactly
/// `expected` (sorted lines), or fails after `timeout`. Returns how long it
/// took. Changes reach the responder asynchronously, so tests poll, never
/// sleep a fixed time.
pub fn wait_for_answer(
    port: u16,
    name: &str,
    qtype: &str,
    expected: &[&str],
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    loop {
        let got = dig_short(port, name, qtype);
        if got == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{name} {qtype}: expected {expected:?}, still {got:?} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_tcp(port: u16, timeout: Duration, daemon: &Daemon) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "nothing listens on 127.0.0.1:{port} after {timeout:?}; server output:\n{}",
        daemon.output()
    );
}

/// The dyndns2 fixture: zone `dyn.example.net`, user `alice` (password
/// `alicepw`), hosts `h1`..`h{hosts}` with the update secret `s3cret`.
pub const ZONE: &str = "dyn.example.net";
pub const USER: &str = "alice";
pub const SECRET: &str = "s3cret";

impl Scratch {
    pub fn dyndns_fixture(&self, hosts: usize) {
        self.ok(&["zone", "add", ZONE, "--ns", "ns1.example.net"]);
        self.ok_stdin(
            &[
                "user",
                "add",
                USER,
                "--email",
                "alice@example.org",
                "--max-hosts",
                "1000000",
                "--password-stdin",
            ],
            "alicepw\n",
        );
        for i in 1..=hosts {
            self.ok_stdin(
                &[
                    "host",
                    "add",
                    &format!("h{i}.{ZONE}"),
                    "--user",
                    USER,
                    "--password-stdin",
                ],
                &format!("{SECRET}\n"),
            );
        }
    }

    /// Starts `ddserver serve` and waits for the responder and the updater.
    pub fn serve(&self) -> Daemon {
        let daemon = self.start(&["serve"], ZONE);
        wait_for_tcp(self.updater_port, Duration::from_secs(30), &daemon);
        daemon
    }

    /// `http://127.0.0.1:PORT` of the updater.
    pub fn updater_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.updater_port)
    }
}

/// What `curl` got: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -s -i ARGS URL` and parses the last response.
pub fn curl(args: &[&str], url: &str) -> HttpReply {
    let program = require("curl", "curl");
    let out = Command::new(program)
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    // With a 401 challenge and --anyauth curl prints both responses; the
    // last one counts.
    let last = text.rfind("HTTP/").map_or(text.as_str(), |i| &text[i..]);
    let (head, body) = last.split_once("\n\n").unwrap_or((last, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response from {url}: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The value of the unlabelled metric `name` in `BASE/metrics` (a
/// Prometheus text page); fails the test when it is not there.
pub fn metric_at(base: &str, name: &str) -> f64 {
    let reply = curl(&[], &format!("{base}/metrics"));
    reply
        .body
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in {base}/metrics:\n{}", reply.body))
}

/// Waits until the daemon's output contains `needle` (start-up messages are
/// printed just after the sockets are bound, so a connect can win the race).
pub fn wait_for_output(daemon: &Daemon, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !daemon.output().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "'{needle}' not in the output after {timeout:?}:\n{}",
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
