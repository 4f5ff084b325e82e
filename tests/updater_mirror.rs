//! The updater's host mirror (updater/src/mirror.rs), black-box: `ddserver
//! serve`, curl as the client, and every other writer a separate process —
//! the admin CLI and a second updater (`ddserver updater`) sharing the
//! database, as a second machine would. Each change they make must take
//! effect on the very next request to the first updater: a new secret, a
//! disabled host or owner, a removed host, and an address changed elsewhere
//! (answering `nochg` from a stale copy would lose that update). Unchanged
//! updates must come from the mirror (its hit counter moves), also after a
//! restart. Each test runs on SQLite and on a fresh MariaDB database.

mod common;
mod feed_harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, HttpReply, curl, free_port, metric_at, wait_for_tcp};
use feed_harness::{Backend, Setup, ZONE, wait_for};

const PATIENCE: Duration = Duration::from_secs(15);
/// The secret `Setup` gives its hosts.
const SECRET: &str = "update-secret-0123456789";
const NEW_SECRET: &str = "rotated-secret-9876543210";

fn update(base: &str, auth: &str, query: &str) -> HttpReply {
    curl(
        &["-A", "mirror-test/1.0", "-u", auth],
        &format!("{base}/nic/update?{query}"),
    )
}

fn mirror_hits(base: &str) -> f64 {
    metric_at(base, "ddserver_updater_mirror_hits_total")
}

fn commit_batches(base: &str) -> f64 {
    metric_at(base, "ddserver_updater_commit_batches_total")
}

/// Repeats an unchanged update until one is answered from the mirror alone
/// (it loads in the background at start; until then requests read rows;
/// a mirror that still holds an older address sends the update to the
/// committer, which answers `nochg` too), and checks every answer on the
/// way. Afterwards the mirror holds `ip` for `host`.
fn nochg_from_mirror(base: &str, auth: &str, host: &str, ip: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (hits, commits) = (mirror_hits(base), commit_batches(base));
        let reply = update(base, auth, &format!("hostname={host}&myip={ip}"));
        assert_eq!(reply.body, format!("nochg {ip}\n"));
        if mirror_hits(base) > hits && commit_batches(base) == commits {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no nochg answered from the host mirror within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unchanged updates in a row, with nothing committed in between: on a
/// SQLite file they are answered without waiting for a change-log poll (the
/// database's commit mark says the mirror is current); MariaDB has no such
/// mark, so there every one waits for a poll.
fn unchanged_updates_wait_for_polls_only_where_needed(
    backend: Backend,
    base: &str,
    auth: &str,
    host: &str,
    ip: &str,
) {
    let counter = "ddserver_updater_mirror_fresh_at_once_total";
    let (at_once, polls) = (
        metric_at(base, counter),
        metric_at(base, "ddserver_updater_mirror_polls_total"),
    );
    for _ in 0..5 {
        let reply = update(base, auth, &format!("hostname={host}&myip={ip}"));
        assert_eq!(reply.body, format!("nochg {ip}\n"));
    }
    let gained = metric_at(base, counter) - at_once;
    match backend {
        // The batched last-seen write may commit once in between.
        Backend::Sqlite => assert!(gained >= 4.0, "only {gained} of 5 answered at once"),
        Backend::MariaDb => {
            assert_eq!(gained, 0.0);
            assert!(metric_at(base, "ddserver_updater_mirror_polls_total") >= polls + 5.0);
        }
    }
}

/// `ddserver --config CONFIG updater` on its own port: a second updater
/// sharing the database and nothing else.
fn second_updater(s: &Setup) -> (Daemon, String) {
    let port = free_port();
    let config = s.scratch.path("second.toml");
    std::fs::write(
        &config,
        format!(
            "[updater]\nlisten = [\"127.0.0.1:{port}\"]\nchanges_per_host = 1000\n\
             changes_refill = 1\n\n[database]\nurl = \"{}\"\n\n[responder]\ncontrol_socket = \"\"\n",
            s.url
        ),
    )
    .unwrap();
    let log = s.scratch.path("second.log");
    let child = Command::new(common::ddserver_bin())
        .arg("--config")
        .arg(&config)
        .arg("updater")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(s.scratch.path("second.err")).unwrap())
        .spawn()
        .expect("ddserver updater starts");
    let daemon = Daemon {
        child,
        log,
        err: s.scratch.path("second.err"),
    };
    wait_for_tcp(port, PATIENCE, &daemon);
    (daemon, format!("http://127.0.0.1:{port}"))
}

fn every_writer_takes_effect_at_once(backend: Backend) {
    let s = Setup::new(backend, "");
    s.scratch
        .updater_settings("changes_per_host = 1000\nchanges_refill = 1");
    let _serve = s.scratch.serve();
    let port = s.scratch.dns_port;
    let a = s.scratch.updater_url();
    let h0 = format!("h0.{ZONE}");
    let old = format!("alice:{SECRET}");
    let new = format!("alice:{NEW_SECRET}");

    let reply = update(&a, &old, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!(reply.body, "good 192.0.2.10\n");
    nochg_from_mirror(&a, &old, &h0, "192.0.2.10");

    // Another updater moves the address; going back to the old one through
    // the first updater is a change, not `nochg` from its copy.
    let (_second, b) = second_updater(&s);
    let reply = update(&b, &old, &format!("hostname={h0}&myip=192.0.2.20"));
    assert_eq!(reply.body, "good 192.0.2.20\n");
    let reply = update(&a, &old, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!(reply.body, "good 192.0.2.10\n");
    wait_for(port, "h0", Some([192, 0, 2, 10]), PATIENCE);
    nochg_from_mirror(&a, &old, &h0, "192.0.2.10");

    // A new secret from the CLI: the cached old one fails at once.
    s.scratch.ok_stdin(
        &["host", "secret", &h0, "--password-stdin"],
        &format!("{NEW_SECRET}\n"),
    );
    let reply = update(&a, &old, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!((reply.status, reply.body.as_str()), (401, "badauth\n"));
    let reply = update(&a, &new, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!(reply.body, "nochg 192.0.2.10\n");
    nochg_from_mirror(&a, &new, &h0, "192.0.2.10");

    // Disabled by an administrator: `abuse`; enabled: accepted again.
    s.scratch.ok(&["host", "disable", &h0]);
    let reply = update(&a, &new, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!(reply.body, "abuse\n");
    s.scratch.ok(&["host", "enable", &h0]);
    nochg_from_mirror(&a, &new, &h0, "192.0.2.10");
    unchanged_updates_wait_for_polls_only_where_needed(backend, &a, &new, &h0, "192.0.2.10");

    // Set offline elsewhere: the same address brings it back, as a change.
    s.scratch.ok(&["host", "set", &h0, "--offline", "on"]);
    let reply = update(&a, &new, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!(reply.body, "good 192.0.2.10\n");

    // The owner's account disabled: her cached credentials stop working.
    nochg_from_mirror(&a, &new, &h0, "192.0.2.10");
    s.scratch.ok(&["user", "disable", "alice"]);
    let reply = update(&a, &new, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!((reply.status, reply.body.as_str()), (401, "badauth\n"));
    s.scratch.ok(&["user", "enable", "alice"]);
    nochg_from_mirror(&a, &new, &h0, "192.0.2.10");

    // Removed: gone for the updater too.
    s.scratch.ok(&["host", "remove", &h0]);
    let reply = update(&a, &new, &format!("hostname={h0}&myip=192.0.2.10"));
    assert_eq!((reply.status, reply.body.as_str()), (401, "badauth\n"));
}

#[test]
fn every_writer_takes_effect_at_once_sqlite() {
    every_writer_takes_effect_at_once(Backend::Sqlite);
}

#[test]
fn every_writer_takes_effect_at_once_mariadb() {
    every_writer_takes_effect_at_once(Backend::MariaDb);
}

/// After a restart the mirror is loaded from the database: a change made
/// while the updater was down is known, and unchanged updates come from
/// the mirror again.
fn nochg_after_restart(backend: Backend) {
    let s = Setup::new(backend, "");
    let a = s.scratch.updater_url();
    let h0 = format!("h0.{ZONE}");
    let auth = format!("alice:{SECRET}");
    let mut serve = s.scratch.serve();
    nochg_from_mirror(&a, &auth, &h0, "192.0.2.0");
    assert!(serve.terminate().success());

    s.scratch.ok(&["host", "set", &h0, "--offline", "on"]);
    let _serve = s.scratch.serve();
    let reply = update(&a, &auth, &format!("hostname={h0}&myip=192.0.2.0"));
    assert_eq!(reply.body, "good 192.0.2.0\n");
    nochg_from_mirror(&a, &auth, &h0, "192.0.2.0");
    assert!(metric_at(&a, "ddserver_updater_mirror_hosts") >= 1.0);

    // A host added elsewhere is learnt; its zone removed elsewhere (one
    // `ZoneRemoved` entry for every name in it) drops it.
    let config = s.scratch.config.clone();
    s.add_host(&config, "h1", "192.0.2.1");
    let h1 = format!("h1.{ZONE}");
    nochg_from_mirror(&a, &auth, &h1, "192.0.2.1");
    s.scratch.ok(&["zone", "remove", ZONE]);
    let reply = update(&a, &auth, &format!("hostname={h1}&myip=192.0.2.1"));
    assert_eq!((reply.status, reply.body.as_str()), (401, "badauth\n"));
}

#[test]
fn nochg_after_restart_sqlite() {
    nochg_after_restart(Backend::Sqlite);
}

#[test]
fn nochg_after_restart_mariadb() {
    nochg_after_restart(Backend::MariaDb);
}

/// With the mirror switched off (`host_mirror_max = 0`) every request
/// reads its row, and the answers are the same.
#[test]
fn without_the_mirror_answers_are_the_same() {
    let s = Setup::new(Backend::Sqlite, "");
    s.scratch.updater_settings("host_mirror_max = 0");
    let _serve = s.scratch.serve();
    let a = s.scratch.updater_url();
    let h0 = format!("h0.{ZONE}");
    let auth = format!("alice:{SECRET}");
    for _ in 0..3 {
        let reply = update(&a, &auth, &format!("hostname={h0}&myip=192.0.2.0"));
        assert_eq!(reply.body, "nochg 192.0.2.0\n");
    }
    s.scratch.ok_stdin(
        &["host", "secret", &h0, "--password-stdin"],
        &format!("{NEW_SECRET}\n"),
    );
    let reply = update(&a, &auth, &format!("hostname={h0}&myip=192.0.2.0"));
    assert_eq!(reply.status, 401);
    assert_eq!(mirror_hits(&a), 0.0);
    assert_eq!(metric_at(&a, "ddserver_updater_mirror_hosts"), 0.0);
}
