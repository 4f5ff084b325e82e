//! `911` when the database goes away, and nothing acknowledged that was not
//! committed: a private MariaDB server (Debian's `mariadb-server`) started
//! by the test, killed (SIGKILL) while clients update, and restarted on the
//! same data directory.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A throw-away MariaDB server on a free loopback port.
struct PrivateMariaDb {
    datadir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateMariaDb {
    fn install(dir: &std::path::Path) -> PrivateMariaDb {
        let install = require("mariadb-install-db", "mariadb-server");
        let datadir = dir.join("mariadb");
        let out = Command::new(install)
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .args(["--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", datadir.display()))
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = PrivateMariaDb {
            datadir,
            port: free_port(),
            child: None,
        };
        db.start();
        let client = require("mariadb", "mariadb-client");
        let out = Command::new(client)
            .args(["-h127.0.0.1", "-uroot", &format!("-P{}", db.port)])
            .args(["-e", "CREATE DATABASE dd"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        db
    }

    fn start(&mut self) {
        let server = require("mariadbd", "mariadb-server");
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}/sock", self.datadir.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
            ])
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=32M"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.datadir.join("server.log")).unwrap())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the database vanishes as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/dd", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Per host: the last address answered `good`, and the addresses tried
/// after it that were answered `911`.
type History = (String, Vec<String>);

fn stored_ipv4(scratch: &Scratch, host: &str) -> String {
    let list = scratch.ok(&["host", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(host))
        .unwrap_or_else(|| panic!("{host} not listed: {list}"));
    line.split_whitespace().nth(2).unwrap().to_owned()
}

/// `/readyz` and the `ddserver_updater_database_up` gauge agree on `up`.
fn assert_ready(url: &str, up: bool) {
    let reply = curl(&[], &format!("{url}/readyz"));
    let expected = if up {
        (200, "ready\n")
    } else {
        (503, "database unavailable\n")
    };
    assert_eq!((reply.status, reply.body.as_str()), expected);
    let metrics = curl(&[], &format!("{url}/metrics")).body;
    let gauge = format!("ddserver_updater_database_up {}\n", u8::from(up));
    assert!(metrics.contains(&gauge), "{gauge} not in {metrics}");
}

/// Waits up to 15 s for `/readyz` to say `up`, then checks both signs.
fn wait_until_ready(url: &str, up: bool, daemon: &Daemon) {
    let status = if up { 200 } else { 503 };
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&[], &format!("{url}/readyz")).status != status {
        assert!(
            Instant::now() < deadline,
            "/readyz not {status} within 15 s:\n{}",
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ready(url, up);
}

#[test]
fn database_down_answers_911_and_acknowledges_only_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = PrivateMariaDb::install(dir.path());
    let scratch = Scratch::with_url(dir, &db.url(), "");
    const HOSTS: usize = 6;
    scratch.dyndns_fixture(HOSTS);
    let daemon = scratch.serve();
    let url = scratch.updater_url();
    let auth = format!("{USER}:{SECRET}");
    assert_ready(&url, true);

    // Clients keep changing their addresses; each remembers the last `good`
    // and every address it tried after it.
    let stop = Arc::new(AtomicBool::new(false));
    let seen_911 = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<Vec<History>>> =
        Arc::new(Mutex::new(vec![(String::new(), Vec::new()); HOSTS]));
    let workers: Vec<_> = (0..HOSTS)
        .map(|i| {
            let (stop, seen_911, history, url, auth) = (
                stop.clone(),
                seen_911.clone(),
                history.clone(),
                url.clone(),
                auth.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u32;
                let mut answered_911 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let ip = format!("10.{i}.{}.{}", n / 250, n % 250 + 1);
                    let reply = curl(
                        &["-u", &auth],
                        &format!("{url}/nic/update?hostname=h{}.{ZONE}&myip={ip}", i + 1),
                    );
                    let mut history = history.lock().unwrap();
                    match reply.body.as_str() {
                        b if b == format!("good {ip}\n") => history[i] = (ip, Vec::new()),
                        "911\n" => {
                            answered_911 += 1;
                            seen_911.store(true, Ordering::Relaxed);
                            history[i].1.push(ip);
                        }
                        // Rate limited (changes per host): nothing written.
                        "abuse\n" => {}
                        other => panic!("unexpected answer {other:?}"),
                    }
                    drop(history);
                    std::thread::sleep(Duration::from_millis(20));
                }
                answered_911
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    db.kill();
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen_911.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "no 911 after the database died");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A load balancer learns it from /readyz (checked every second);
    // /healthz (liveness) still answers.
    wait_until_ready(&url, false, &daemon);
    assert_eq!(curl(&[], &format!("{url}/healthz")).body, "ok\n");
    // A fresh request while the database is down: 911, within the store's
    // connection wait, never `good`.
    let started = Instant::now();
    let reply = curl(
        &["-u", &auth],
        &format!("{url}/nic/update?hostname=h1.{ZONE}&myip=192.0.2.99"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "911\n"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let answered_911 = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .sum::<usize>()
        + 1;
    // Every request of the outage failed alike; the log says so once per
    // 10 s (with how many were left out), not once per request.
    let at_most = 2 + killed.elapsed().as_secs() as usize / 10;
    let log = daemon.output();
    let per_request = log
        .lines()
        .filter(|l| {
            l.contains("updater: reading host") || l.contains("committing a host update failed")
        })
        .count();
    assert!(
        (1..=at_most).contains(&per_request) && answered_911 > per_request,
        "{per_request} lines for {answered_911} answers 911:\n{log}"
    );

    db.start();
    // Every host holds its last acknowledged address, or one it tried after
    // that and got 911 for (the commit may have landed just before the
    // crash without its acknowledgement): never an older one.
    let history = history.lock().unwrap().clone();
    let mut acknowledged = 0;
    for (i, (last_good, later)) in history.iter().enumerate() {
        let stored = stored_ipv4(&scratch, &format!("h{}.{ZONE}", i + 1));
        if !last_good.is_empty() {
            acknowledged += 1;
            assert!(
                stored == *last_good || later.contains(&stored),
                "h{}: stored {stored}, last good {last_good}, later {later:?}",
                i + 1
            );
        }
    }
    assert!(
        acknowledged > 0,
        "no update was acknowledged before the crash"
    );
    // The updater recovers once the database is back.
    wait_until_ready(&url, true, &daemon);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = curl(
            &["-u", &auth],
            &format!("{url}/nic/update?hostname=h1.{ZONE}&myip=192.0.2.100"),
        );
        if reply.body == "good 192.0.2.100\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {:?}\n{}",
            reply.body,
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_answer(
        scratch.dns_port,
        &format!("h1.{ZONE}"),
        "A",
        &["192.0.2.100"],
        Duration::from_secs(10),
    );
}
