//! The change feed, black-box: a `ddserver responder` process, admin
//! commands as writers, answers read over UDP. Each test runs on SQLite and
//! on a fresh MariaDB database.
//!
//! Latency is asserted as behaviour (an answer within a generous bound),
//! never as a timing.

mod common;
#[macro_use]
mod feed_harness;

use std::time::Duration;

use common::free_port;
use feed_harness::{Backend, Setup, ZONE, metric, sigkill, wait_for, wait_metric};

const PATIENCE: Duration = Duration::from_secs(15);

/// Kill the responder with SIGKILL, commit while it is down, start it again:
/// every change is answered (the full load), and the stale control socket
/// left by the killed process does not stop the new one.
fn restart_after_sigkill(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 100\n");
    let port = s.scratch.dns_port;
    let mut responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
    wait_for(port, "h0", Some([192, 0, 2, 0]), PATIENCE);
    sigkill(&mut responder);
    assert!(
        s.control_socket().exists(),
        "SIGKILL leaves the socket file"
    );

    let config = s.scratch.config.clone();
    s.add_host(&config, "h1", "192.0.2.1");
    s.add_host(&config, "h2", "192.0.2.2");
    s.remove_host(&config, "h0");

    let mut responder = s.scratch.start(&["responder"], &format!("h1.{ZONE}"));
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
    wait_for(port, "h2", Some([192, 0, 2, 2]), PATIENCE);
    wait_for(port, "h0", None, PATIENCE);
    // SIGHUP (systemd's `reload`) is taken, never fatal.
    responder.hangup();
    responder
        .wait_for_output("SIGHUP received: the responder reads its configuration only at start");
    // And it follows again after the restart.
    s.add_host(&config, "h3", "192.0.2.3");
    wait_for(port, "h3", Some([192, 0, 2, 3]), PATIENCE);
    assert!(responder.terminate().success(), "{}", responder.output());
}

/// Writers whose pushes never reach the responder (they push nowhere): the
/// poll of the change log fills the gap.
fn lost_pushes_are_filled_from_the_log(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 100\n");
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
    let silent = s.silent_writer_config();
    s.add_host(&silent, "h1", "192.0.2.1");
    s.remove_host(&silent, "h0");
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
    wait_for(port, "h0", None, PATIENCE);
}

/// With polling practically off (60 s), a push wakes the responder: it
/// reads the log at once, including the entries whose push was lost.
fn a_push_wakes_the_responder_and_covers_lost_ones(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 60000\n");
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
    let silent = s.silent_writer_config();
    s.add_host(&silent, "lost", "192.0.2.9");
    let pushing = s.scratch.config.clone();
    s.add_host(&pushing, "h1", "192.0.2.1");
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
    wait_for(port, "lost", Some([192, 0, 2, 9]), Duration::from_secs(1));
}

/// A responder without a control socket (another machine, a replica)
/// follows the change log alone.
fn no_control_socket_follows_the_log(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 100\n");
    s.set_control_socket("");
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
    assert!(!s.control_socket().exists());
    let config = s.scratch.config.clone();
    s.add_host(&config, "h1", "192.0.2.1");
    s.remove_host(&config, "h0");
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
    wait_for(port, "h0", None, PATIENCE);
}

/// The change log is pruned while the responder misses every push; when
/// it next reads the log it finds entries gone that it never applied, and
/// reloads everything instead of applying a partial log. `/metrics` shows
/// the reload, the pruning, and a lag that returns to zero.
fn falling_behind_the_pruned_log_reloads(backend: Backend) {
    let metrics_port = free_port();
    let s = Setup::new(
        backend,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics_port}\"\n[feed]\npoll_interval_ms = 60000\n\
             retention = 1\nprune_interval = 1\n"
        ),
    );
    let addr = format!("127.0.0.1:{metrics_port}");
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
    assert_eq!(metric(&addr, "ddserver_feed_reloads_total"), Some(0.0));
    assert!(metric(&addr, "ddserver_feed_load_seconds").is_some());

    let silent = s.silent_writer_config();
    s.add_host(&silent, "h1", "192.0.2.1");
    s.remove_host(&silent, "h0");
    s.add_host(&silent, "h2", "192.0.2.2");
    // zone add, h0 add, h1 add and h0 remove get pruned; h2's entry is the
    // newest and stays.
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric(&addr, "ddserver_feed_pruned_total").unwrap_or(0.0) < 4.0 {
        assert!(std::time::Instant::now() < deadline, "nothing was pruned");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(port, "h1", None, Duration::from_millis(10));

    let pushing = s.scratch.config.clone();
    s.add_host(&pushing, "h3", "192.0.2.3");
    wait_for(port, "h3", Some([192, 0, 2, 3]), PATIENCE);
    wait_for(port, "h1", Some([192, 0, 2, 1]), Duration::from_secs(1));
    wait_for(port, "h2", Some([192, 0, 2, 2]), Duration::from_secs(1));
    wait_for(port, "h0", None, Duration::from_secs(1));
    let second = Duration::from_secs(1);
    wait_metric(&addr, "ddserver_feed_reloads_total", |v| v == 1.0, second);
    wait_metric(&addr, "ddserver_feed_applied_serial", |v| v >= 6.0, second);
    wait_metric(&addr, "ddserver_feed_lag_serials", |v| v == 0.0, second);
}

/// `ddserver serve` listens on the control socket too (admin commands
/// push to it) and does not push to itself.
fn serve_follows_pushes(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 60000\n");
    let port = s.scratch.dns_port;
    let _serve = s.scratch.start(&["serve"], &format!("h0.{ZONE}"));
    let config = s.scratch.config.clone();
    s.add_host(&config, "h1", "192.0.2.1");
    wait_for(port, "h1", Some([192, 0, 2, 1]), PATIENCE);
}

on_both_backends!(
    restart_after_sigkill,
    lost_pushes_are_filled_from_the_log,
    a_push_wakes_the_responder_and_covers_lost_ones,
    no_control_socket_follows_the_log,
    falling_behind_the_pruned_log_reloads,
    serve_follows_pushes,
);
