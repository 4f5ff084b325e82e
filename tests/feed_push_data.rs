//! Pushed commit data, black-box: a `ddserver responder` process with
//! polling practically off (60 s), writers committing through the store
//! library (grouped updates push `Commit` frames, as the updater does), the
//! admin CLI, and hand-made frames on the control socket. `/metrics` tells
//! whether a change came from pushed data or from the change log; answers
//! are read over UDP. SQLite and MariaDB.

mod common;
#[macro_use]
mod feed_harness;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::free_port;
use ddserver_store::feed::encode_frame;
use ddserver_store::{
    Actor, ChangeKind, Commit, FeedMessage, HostState, HostUpdate, Name, PushOptions, Store,
};
use feed_harness::{Backend, Setup, ZONE, metric, wait_for, wait_metric};

const PATIENCE: Duration = Duration::from_secs(15);

fn setup(backend: Backend) -> (Setup, String) {
    let metrics_port = free_port();
    let s = Setup::new(
        backend,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics_port}\"\n[feed]\npoll_interval_ms = 60000\n"
        ),
    );
    (s, format!("127.0.0.1:{metrics_port}"))
}

/// A responder on the scratch installation and a store pushing to it.
struct Running {
    s: Setup,
    metrics: String,
    port: u16,
    _responder: common::Daemon,
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl Running {
    fn start(backend: Backend) -> Running {
        let (s, metrics) = setup(backend);
        let port = s.scratch.dns_port;
        let _responder = s.scratch.start(&["responder"], &format!("h0.{ZONE}"));
        let rt = runtime();
        let store = rt.block_on(pushing_store(&s));
        Running {
            s,
            metrics,
            port,
            _responder,
            rt,
            store,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fqdn(label: &str) -> Name {
    Name::parse(&format!("{label}.{ZONE}")).unwrap()
}

fn address_update(label: &str, ip: [u8; 4]) -> HostUpdate {
    HostUpdate {
        fqdn: fqdn(label),
        ipv4: Some(Some(Ipv4Addr::from(ip))),
        ipv6: None,
        offline: None,
        wildcard: None,
        actor: Actor::cli(),
        user_agent: "feed_push_data".into(),
    }
}

/// A store that pushes to the responder's control socket.
async fn pushing_store(s: &Setup) -> Store {
    let store = Store::connect(&s.url).await.unwrap();
    store.push_to(s.control_socket(), PushOptions::default());
    store
}

/// Waits until the responder has applied everything up to `serial`.
fn wait_applied(metrics: &str, serial: u64) {
    let serial = serial as f64;
    wait_metric(
        metrics,
        "ddserver_feed_applied_serial",
        |v| v == serial,
        PATIENCE,
    );
}

fn count(addr: &str, name: &str) -> f64 {
    metric(addr, name).unwrap_or_else(|| panic!("{name} is missing from /metrics"))
}

/// Grouped updates reach the answers from their pushed data: no change-log
/// entry is read, and every pushed change is counted as applied from data.
/// Then a commit no push announces (the CLI with pushes off) leaves a gap:
/// the next pushed commit does not continue from the applied serial, so the
/// responder reads the log, which brings both.
fn pushed_data_applies_and_a_gap_falls_back_to_the_log(backend: Backend) {
    let r = Running::start(backend);
    let (s, metrics, port, rt, store) = (&r.s, r.metrics.as_str(), r.port, &r.rt, &r.store);
    for round in 1..=5u8 {
        let outcome = rt
            .block_on(store.update_host(address_update("h0", [10, 0, 0, round])))
            .unwrap();
        assert!(outcome.changed);
        wait_for(port, "h0", Some([10, 0, 0, round]), PATIENCE);
    }
    assert_eq!(count(metrics, "ddserver_feed_entries_read_total"), 0.0);
    assert_eq!(count(metrics, "ddserver_feed_pushed_fallbacks_total"), 0.0);
    // At least the five hosts (each commit also sets the SOA serial).
    wait_metric(
        metrics,
        "ddserver_feed_pushed_changes_applied_total",
        |v| v >= 5.0,
        PATIENCE,
    );
    wait_applied(metrics, rt.block_on(store.latest_serial()).unwrap());

    s.add_host(&s.silent_writer_config(), "g1", "192.0.2.77");
    rt.block_on(store.update_host(address_update("h0", [10, 0, 0, 99])))
        .unwrap();
    wait_for(port, "h0", Some([10, 0, 0, 99]), PATIENCE);
    wait_for(port, "g1", Some([192, 0, 2, 77]), Duration::from_secs(1));
    // The counters move after the catch-up returns, and its batches are
    // served as soon as each is applied: wait for them, do not race them.
    wait_metric(
        metrics,
        "ddserver_feed_pushed_fallbacks_total",
        |v| v >= 1.0,
        PATIENCE,
    );
    wait_metric(
        metrics,
        "ddserver_feed_entries_read_total",
        |v| v >= 2.0,
        PATIENCE,
    );
    // Data flows again once the log filled the gap.
    let read = count(metrics, "ddserver_feed_entries_read_total");
    rt.block_on(store.update_host(address_update("h0", [10, 0, 0, 100])))
        .unwrap();
    wait_for(port, "h0", Some([10, 0, 0, 100]), PATIENCE);
    assert_eq!(count(metrics, "ddserver_feed_entries_read_total"), read);
    rt.block_on(store.close());
}

/// Frames that disagree with the database: a replayed commit with a serial
/// already applied and an address never committed, and the same frame
/// twice, are ignored; the answer stays what the database holds.
fn stale_and_duplicated_pushes_are_ignored(backend: Backend) {
    let r = Running::start(backend);
    let (s, metrics, port, rt, store) = (&r.s, r.metrics.as_str(), r.port, &r.rt, &r.store);
    rt.block_on(store.update_host(address_update("h0", [10, 0, 0, 1])))
        .unwrap();
    wait_for(port, "h0", Some([10, 0, 0, 1]), PATIENCE);
    let serial = rt.block_on(store.latest_serial()).unwrap();
    let zone_serial = rt
        .block_on(store.zone_by_name(&Name::parse(ZONE).unwrap()))
        .unwrap()
        .unwrap()
        .serial;
    let forged = Commit {
        zones: vec![(Name::parse(ZONE).unwrap(), zone_serial)],
        changes: vec![(
            ddserver_store::Change {
                serial,
                zone: Name::parse(ZONE).unwrap(),
                name: fqdn("h0"),
                kind: ChangeKind::HostChanged,
                committed_at: 0,
            },
            Some(HostState {
                ipv4: Some(Ipv4Addr::new(203, 0, 113, 66)),
                ..HostState::default()
            }),
        )],
    };
    let mut bytes = Vec::new();
    encode_frame(&FeedMessage::Commit(forged), &mut bytes).unwrap();
    let frame = bytes.clone();
    bytes.extend_from_slice(&frame);
    let mut socket = std::os::unix::net::UnixStream::connect(s.control_socket()).unwrap();
    socket.write_all(&bytes).unwrap();
    let pushes = count(metrics, "ddserver_feed_pushes_received_total");
    wait_metric(
        metrics,
        "ddserver_feed_pushes_received_total",
        |v| v >= pushes + 2.0,
        PATIENCE,
    );
    // The real commit, pushed: applied from data after the stale ones.
    rt.block_on(store.update_host(address_update("h0", [10, 0, 0, 2])))
        .unwrap();
    wait_for(port, "h0", Some([10, 0, 0, 2]), PATIENCE);
    for _ in 0..20 {
        assert_eq!(
            feed_harness::query_a(port, &format!("h0.{ZONE}")),
            Some((0, vec![[10, 0, 0, 2]])),
            "a stale push changed the answer"
        );
    }
    assert_eq!(count(metrics, "ddserver_feed_pushed_fallbacks_total"), 0.0);
    rt.block_on(store.close());
}

/// Two writers (two stores, two connections to the control socket) update
/// the same hosts at once, so their commits interleave in serial order and
/// their frames arrive in any order between the connections; a CLI writer
/// without pushes adds hosts meanwhile. The responder converges on what the
/// database holds, and most changes still came from pushed data.
fn two_writers_interleaved_converge(backend: Backend) {
    const HOSTS: u8 = 4;
    const ROUNDS: u8 = 40;
    let (s, metrics) = setup(backend);
    let config = s.scratch.config.clone();
    for h in 0..HOSTS {
        s.add_host(&config, &format!("w{h}"), &format!("192.0.2.{}", 10 + h));
    }
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("w0.{ZONE}"));
    let silent = s.silent_writer_config();
    let rt = runtime();
    let final_state = std::thread::scope(|scope| {
        let cli = scope.spawn(|| {
            for n in 0..3 {
                s.add_host(&silent, &format!("q{n}"), &format!("192.0.2.{}", 200 + n));
            }
        });
        let state = rt.block_on(async {
            let writers = [pushing_store(&s).await, pushing_store(&s).await];
            let mut tasks = Vec::new();
            for (w, store) in writers.iter().enumerate() {
                for h in 0..HOSTS {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        for round in 0..ROUNDS {
                            let ip = [10, w as u8, h, round];
                            store
                                .update_host(address_update(&format!("w{h}"), ip))
                                .await
                                .unwrap();
                        }
                    }));
                }
            }
            for task in tasks {
                task.await.unwrap();
            }
            for store in &writers {
                assert!(store.flush_pushes(Duration::from_secs(5)).await);
            }
            let names: Vec<Name> = (0..HOSTS).map(|h| fqdn(&format!("w{h}"))).collect();
            let hosts = writers[0].hosts_by_fqdn(&names).await.unwrap();
            for store in &writers {
                store.close().await;
            }
            hosts
        });
        cli.join().unwrap();
        state
    });
    // Nothing is left to announce the CLI's last host: a last pushed
    // commit after it shows the gap, if the others did not already.
    let rt2 = runtime();
    let store = rt2.block_on(pushing_store(&s));
    rt2.block_on(store.update_host(address_update("w0", [10, 9, 9, 9])))
        .unwrap();
    for host in &final_state {
        let label = host.label.as_str();
        let want = if label == "w0" {
            [10, 9, 9, 9]
        } else {
            host.ipv4.unwrap().octets()
        };
        wait_for(port, label, Some(want), PATIENCE);
    }
    for n in 0..3u8 {
        wait_for(port, &format!("q{n}"), Some([192, 0, 2, 200 + n]), PATIENCE);
    }
    wait_applied(&metrics, rt2.block_on(store.latest_serial()).unwrap());
    assert!(count(&metrics, "ddserver_feed_pushed_changes_applied_total") > 0.0);
    rt2.block_on(store.close());
}

on_both_backends!(
    pushed_data_applies_and_a_gap_falls_back_to_the_log,
    stale_and_duplicated_pushes_are_ignored,
    two_writers_interleaved_converge,
);
