//! Commit announcements, on SQLite and on a fresh MariaDB database: what a
//! subscriber receives equals what the change log holds (serials included),
//! nothing is announced for a failed or uncommitted write, and pushes reach
//! a control socket as feed frames — or are given up on quickly when no
//! responder listens.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ddserver_store::feed::decode_frame;
use ddserver_store::{
    Actor, FeedMessage, Name, NewHost, NewUser, NewZone, PushOptions, Role, Store, UserState,
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

async fn announcements_equal_the_log(store: &Store) {
    let mut rx = store.subscribe();
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
    for i in 0..5 {
        store
            .add_host(
                &actor,
                NewHost {
                    fqdn: name(&format!("h{i}.dyn.example.net")),
                    owner: "alice".into(),
                    secret: "s3cret".into(),
                    ipv4: Some([192, 0, 2, i].into()),
                    ipv6: None,
                    description: String::new(),
                },
                None,
            )
            .await
            .unwrap();
    }
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
    while let Ok(changes) = rx.try_recv() {
        commits += 1;
        announced.extend(changes.iter().cloned());
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
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut bytes = Vec::new();
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while messages.len() < 2 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the writer closed early");
            bytes.extend_from_slice(&buf[..n]);
            while let Some((message, used)) = decode_frame(&bytes).unwrap() {
                bytes.drain(..used);
                messages.push(message);
            }
        }
        messages
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_announcements_equal_the_log() {
    let (store, _dir) = sqlite().await;
    announcements_equal_the_log(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_announcements_equal_the_log() {
    let (store, base, db) = mariadb().await;
    announcements_equal_the_log(&store).await;
    store.close().await;
    drop_mariadb(&base, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pushes_reach_a_socket() {
    let (store, _dir) = sqlite().await;
    pushes_reach_a_socket(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_pushes_reach_a_socket() {
    let (store, base, db) = mariadb().await;
    pushes_reach_a_socket(&store).await;
    store.close().await;
    drop_mariadb(&base, &db).await;
}
