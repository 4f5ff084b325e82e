//! Commit announcements, on SQLite and on a fresh MariaDB database: what a
//! subscriber receives equals what the change log holds (serials included),
//! nothing is announced for a failed or uncommitted write, and pushes reach
//! a control socket as feed frames — or are given up on quickly when no
//! responder listens.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ddserver_store::feed::decode_frame;
use ddserver_store::{
    Actor, FeedMessage, HostState, HostUpdate, Name, NewHost, NewUser, NewZone, PushOptions, Role,
    Store, UserState,
};
use sqlx::Connection;
use tokio::io::AsyncReadExt;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dd.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// A fresh database on `MYSQL_TEST_URL`; fails when unreachable.
async fn mariadb() -> (Store, String, String) {
    let base = std::env::var("MYSQL_TEST_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("MariaDB is unreachable at {base}: {e}"));
    let db = format!("ddann_{:016x}", getrandom_u64());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
    let store = Store::connect(&format!("{prefix}/{db}")).await.unwrap();
    store.migrate().await.unwrap();
    (store, base, db)
}

async fn drop_mariadb(base: &str, db: &str) {
    if let Ok(mut conn) = sqlx::AnyConnection::connect(base).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&mut conn)
            .await;
    }
}

fn getrandom_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    u64::from_ne_bytes(bytes)
}

/// Zone dyn.example.net, user alice and hosts h0.. (192.0.2.i).
async fn zone_user_hosts(store: &Store, hosts: u8) {
    let actor = Actor::cli();
    store
        .add_zone(
            &actor,
            NewZone::new(name("dyn.example.net"), vec![name("ns1.example.net")]),
        )
        .await
        .unwrap();
    store
        .create_user(
            &actor,
            NewUser {
                name: "alice".into(),
                email: "alice@example.net".into(),
                password: None,
                role: Role::User,
                state: UserState::Active,
                max_hosts: Some(100),
            },
        )
        .await
        .unwrap();
    for i in 0..hosts {
        store
            .add_host(
                &actor,
                new_host(
                    &format!("h{i}.dyn.example.net"),
                    Some([192, 0, 2, i].into()),
                ),
                None,
            )
            .await
            .unwrap();
    }
}

fn new_host(fqdn: &str, ipv4: Option<std::net::Ipv4Addr>) -> NewHost {
    NewHost {
        fqdn: name(fqdn),
        owner: "alice".into(),
        secret: "s3cret".into(),
        ipv4,
        ipv6: None,
        description: String::new(),
    }
}

async fn announcements_equal_the_log(store: &Store) {
    let mut rx = store.subscribe();
    let actor = Actor::cli();
    zone_user_hosts(store, 5).await;
    // The follower's batched read: existing names only, padding harmless.
    let mut wanted: Vec<Name> = (0..5)
        .map(|i| name(&format!("h{i}.dyn.example.net")))
        .collect();
    wanted.push(name("nope.dyn.example.net"));
    let mut found = store.hosts_by_fqdn(&wanted).await.unwrap();
    found.sort_by(|a, b| a.fqdn.as_str().cmp(b.fqdn.as_str()));
    assert_eq!(found.len(), 5);
    assert_eq!(found[3].ipv4, Some([192, 0, 2, 3].into()));
    assert!(store.hosts_by_fqdn(&[]).await.unwrap().is_empty());
    // A failed write announces nothing.
    assert!(
        store
            .remove_host(&actor, &name("nope.dyn.example.net"))
            .await
            .is_err()
    );
    // One transaction with several entries.
    store.remove_user(&actor, "alice").await.unwrap();

    let mut announced = Vec::new();
    let mut commits = 0;
    while let Ok(announcement) = rx.try_recv() {
        commits += 1;
        announced.extend(announcement.changes.iter().cloned());
    }
    let logged = store.changes_since(0, 1000).await.unwrap();
    assert_eq!(
        commits,
        1 + 5 + 1,
        "zone add, five hosts, the user's removal"
    );
    assert_eq!(announced, logged, "announcements carry the log's serials");
    assert!(logged.len() >= 1 + 5 + 5);
}

async fn pushes_reach_a_socket(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let stats = store.push_to(path, PushOptions::default());
    let dead = store.push_to(dir.path().join("nobody.sock"), PushOptions::default());
    let reader = tokio::spawn(read_frames(listener, 2));
    let started = Instant::now();
    store
        .add_zone(
            &Actor::cli(),
            NewZone::new(name("push.example.net"), vec![name("ns1.example.net")]),
        )
        .await
        .unwrap();
    assert!(store.flush_pushes(Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead target is given up on, not waited for"
    );
    let messages = reader.await.unwrap();
    let serial = store.latest_serial().await.unwrap();
    assert!(
        matches!(&messages[0], FeedMessage::Hello { latest, .. } if *latest == serial),
        "{messages:?}"
    );
    match &messages[1] {
        FeedMessage::Changes(changes) => {
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].serial, serial);
            assert_eq!(changes[0].zone.as_str(), "push.example.net");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stats.sent.load(Ordering::Relaxed), 1);
    assert_eq!(dead.dropped.load(Ordering::Relaxed), 1);
}

/// Reads `count` frames from the first writer that connects to `listener`.
async fn read_frames(listener: tokio::net::UnixListener, count: usize) -> Vec<FeedMessage> {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while messages.len() < count {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the writer closed early");
        bytes.extend_from_slice(&buf[..n]);
        while let Some((message, used)) = decode_frame(&bytes).unwrap() {
            bytes.drain(..used);
            messages.push(message);
        }
    }
    messages
}

/// A grouped host update pushes a `Commit` whose entries are the log's and
/// whose states are what the database holds after the commit (TXT values
/// it did not touch included, a host named twice with its final state);
/// other writes push the `Changes` hint.
async fn grouped_updates_push_their_committed_state(store: &Store) {
    let actor = Actor::cli();
    let zone = name("dyn.example.net");
    zone_user_hosts(store, 3).await;
    let fqdns: Vec<Name> = (0..3)
        .map(|i| name(&format!("h{i}.dyn.example.net")))
        .collect();
    store
        .set_host_txt(
            &actor,
            &fqdns[1],
            vec!["acme-token".into(), "second".into()],
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    store.push_to(path, PushOptions::default());
    let reader = tokio::spawn(read_frames(listener, 3));
    let before = store.latest_serial().await.unwrap();
    let update =
        |fqdn: &Name, ipv4: [u8; 4], ipv6: Option<&str>, offline: Option<bool>| HostUpdate {
            fqdn: fqdn.clone(),
            ipv4: Some(Some(ipv4.into())),
            ipv6: ipv6.map(|a| Some(a.parse().unwrap())),
            offline,
            wildcard: Some(true),
            actor: actor.clone(),
            user_agent: "test".into(),
        };
    let results = store
        .update_hosts(&[
            update(&fqdns[0], [10, 0, 0, 1], None, None),
            update(&fqdns[1], [10, 0, 0, 2], Some("2001:db8::2"), Some(true)),
            update(&fqdns[0], [10, 0, 0, 3], Some("2001:db8::3"), None),
        ])
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.as_ref().unwrap().changed));
    store
        .add_host(&actor, new_host("h9.dyn.example.net", None), None)
        .await
        .unwrap();
    assert!(store.flush_pushes(Duration::from_secs(5)).await);
    let messages = reader.await.unwrap();

    let logged = store.changes_since(before, 100).await.unwrap();
    assert_eq!(logged.len(), 4, "three updates and the host added");
    let FeedMessage::Commit(commit) = &messages[1] else {
        panic!("the grouped update pushed {:?}", messages[1]);
    };
    let zone_serial = store.zone_by_name(&zone).await.unwrap().unwrap().serial;
    // The zone's serial after the group commit, one bump per commit.
    assert_eq!(commit.zones, vec![(zone.clone(), zone_serial - 1)]);
    let entries: Vec<_> = commit.changes.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        entries,
        logged[..3].to_vec(),
        "the log's entries and serials"
    );
    let hosts = store.hosts_by_fqdn(&fqdns[..2]).await.unwrap();
    for (change, state) in &commit.changes {
        let host = hosts.iter().find(|h| h.fqdn == change.name).unwrap();
        let stored = HostState::of(host);
        assert_eq!(state.as_ref(), Some(&stored), "{}", change.name);
    }
    assert_eq!(
        commit.changes[0].1.as_ref().unwrap().ipv4,
        Some([10, 0, 0, 3].into()),
        "a host named twice carries its final state"
    );
    assert_eq!(commit.changes[1].1.as_ref().unwrap().txt.len(), 2);
    match &messages[2] {
        FeedMessage::Changes(changes) => assert_eq!(changes, &logged[3..]),
        other => panic!("adding a host pushed {other:?}"),
    }
}

/// `ddserver serve` feeds its own responder in-process: with a subscriber
/// and no push target, a grouped update's announcement carries the same
/// committed state a `Commit` frame would; a write without gathered state
/// carries only its entries.
async fn grouped_updates_announce_their_committed_state(store: &Store) {
    let actor = Actor::cli();
    zone_user_hosts(store, 2).await;
    let fqdns: Vec<Name> = (0..2)
        .map(|i| name(&format!("h{i}.dyn.example.net")))
        .collect();
    let mut rx = store.subscribe();
    let before = store.latest_serial().await.unwrap();
    let updates: Vec<HostUpdate> = fqdns
        .iter()
        .zip([[10, 0, 0, 7], [10, 0, 0, 8]])
        .map(|(fqdn, ipv4)| HostUpdate {
            fqdn: fqdn.clone(),
            ipv4: Some(Some(ipv4.into())),
            ipv6: None,
            offline: None,
            wildcard: None,
            actor: actor.clone(),
            user_agent: "test".into(),
        })
        .collect();
    store.update_hosts(&updates).await.unwrap();
    store
        .add_host(&actor, new_host("h9.dyn.example.net", None), None)
        .await
        .unwrap();

    let logged = store.changes_since(before, 100).await.unwrap();
    let grouped = rx.try_recv().expect("the grouped update was announced");
    let commit = grouped.commit.as_ref().expect("with its committed state");
    assert_eq!(grouped.changes, logged[..2].to_vec());
    let entries: Vec<_> = commit.changes.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        entries, grouped.changes,
        "the commit's entries are the log's"
    );
    let hosts = store.hosts_by_fqdn(&fqdns).await.unwrap();
    for (change, state) in &commit.changes {
        let host = hosts.iter().find(|h| h.fqdn == change.name).unwrap();
        assert_eq!(
            state.as_ref(),
            Some(&HostState::of(host)),
            "{}",
            change.name
        );
    }
    let added = rx.try_recv().expect("the added host was announced");
    assert_eq!(added.changes, logged[2..].to_vec());
    assert!(added.commit.is_none(), "adding a host gathers no state");
}

/// A `#[tokio::test]` per backend for each `async fn name(&Store)` listed:
/// `sqlite::name` and `mariadb::name` (a fresh database, dropped after).
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (store, _dir) = super::sqlite().await;
                    super::$test(&store).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (store, base, db) = super::mariadb().await;
                    super::$test(&store).await;
                    store.close().await;
                    super::drop_mariadb(&base, &db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    announcements_equal_the_log,
    pushes_reach_a_socket,
    grouped_updates_push_their_committed_state,
    grouped_updates_announce_their_committed_state,
);
