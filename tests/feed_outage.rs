//! The database goes away under a running responder: it keeps answering
//! from its snapshot, counts the failed reads, and catches up when the
//! database is back.
//!
//! A private `mariadbd` started by the test in a temporary data directory,
//! stopped with SIGTERM and started again. (An SQLite variant that moved the
//! database file away and back was removed: while the file is away, a new
//! pool connection lets SQLite create an empty file in its place, so the
//! outcome depended on timing, and an open SQLite file has no outage to
//! show anyway.)

mod common;
mod feed_harness;

use std::time::{Duration, Instant};

use common::free_port;
use feed_harness::{PrivateMariaDb, Setup, ZONE, metric, query_a, wait_for};

const PATIENCE: Duration = Duration::from_secs(20);

/// Answers stay as they were for `period`.
fn keeps_answering(port: u16, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert_eq!(
            query_a(port, &format!("h0.{ZONE}")),
            Some((0, vec![[192, 0, 2, 0]])),
            "h0 must be served from the snapshot while the database is away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mariadb_stopped_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = PrivateMariaDb::start(dir.path());
    let metrics_port = free_port();
    let scratch_dir = tempfile::tempdir().unwrap();
    let s = Setup::on_mariadb(
        server.database(),
        scratch_dir,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n[feed]\npoll_interval_ms = 100\n"),
    );
    let addr = format!("127.0.0.1:{metrics_port}");
    let port = s.scratch.dns_port;
    let responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));

    server.stop();
    // Serves the snapshot until a read has failed (the pool gives up on a
    // catch-up after a few seconds), and for a while after.
    let deadline = Instant::now() + PATIENCE;
    while metric(&addr, "ddserver_feed_errors_total").unwrap() < 1.0 {
        assert!(Instant::now() < deadline, "the failed reads are counted");
        keeps_answering(port, Duration::from_millis(200));
    }
    keeps_answering(port, Duration::from_secs(1));

    server.resume();
    let config = s.scratch.config.clone();
    s.add_host(&config, "h1", "192.0.2.1");
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
    wait_for(port, "h0", Some([192, 0, 2, 0]), Duration::from_secs(1));
    let output = responder.output();
    assert!(
        output.contains("serving the last snapshot"),
        "the outage is logged:\n{output}"
    );
    feed_harness::wait_metric(
        &addr,
        "ddserver_feed_lag_serials",
        |v| v == 0.0,
        Duration::from_secs(2),
    );
}
