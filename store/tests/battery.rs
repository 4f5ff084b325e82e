//! The store's behaviour battery, run against SQLite (always, on a temporary
//! file) and MariaDB (each test in a fresh `ddtest_<random>` database on
//! `MYSQL_TEST_URL`, default `mysql://root@127.0.0.1:3306/test`).
//!
//! The MariaDB half fails loudly when the server is unreachable: a battery
//! that silently skips a backend proves nothing about it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ddserver_store::{
    Actor, Backend, ChangeKind, HostFilter, HostFlags, HostUpdate, Name, NameError, NewHost,
    NewRecord, NewUser, NewZone, RecordType, Role, Store, StoreError, UserState,
};
use sqlx::Connection;

// ---------------------------------------------------------------------------
// Harness

struct TestDb {
    store: Store,
    /// For a second, raw connection to the same database.
    url: String,
    _dir: Option<tempfile::TempDir>,
    mysql: Option<(String, String)>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("ddserver.db").display());
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        // Migrations are idempotent.
        store.migrate().await.expect("migrate SQLite twice");
        assert_eq!(store.backend(), Backend::Sqlite);
        TestDb {
            store,
            url,
            _dir: Some(dir),
            mysql: None,
        }
    }

    async fn mariadb() -> TestDb {
        let base = std::env::var("MYSQL_TEST_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB is unreachable at {base} ({e}). Start it (start-stop-daemon --start \
                 --oknodo --background --exec /usr/sbin/mariadbd) or point \
                 MYSQL_TEST_URL at a server where the user may create databases."
                )
            });
        let db = format!("ddtest_{:016x}", getrandom::u64().expect("randomness"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
        let url = format!("{prefix}/{db}");
        let store = Store::connect(&url).await.expect("open MariaDB");
        store.migrate().await.expect("migrate MariaDB");
        store.migrate().await.expect("migrate MariaDB twice");
        assert_eq!(store.backend(), Backend::MySql);
        TestDb {
            store,
            url,
            _dir: None,
            mysql: Some((base, db)),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, db)) = self.mysql.take() else {
            return;
        };
        // Drop runs inside the test's runtime; the cleanup needs its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&base).await {
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join()
        .ok();
    }
}

macro_rules! battery {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::sqlite().await;
                    super::$test(&db.store).await;
                    db.store.close().await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::TestDb::mariadb().await;
                    super::$test(&db.store).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

battery!(
    users_create_update_conflict,
    passwords,
    zones_create_conflict_lookup,
    records_add_validate_remove,
    hosts_create_update,
    host_errors_change_nothing,
    host_limits,
    host_secrets,
    cascade_remove_zone,
    cascade_remove_user,
    change_log_order_and_serial_bumps,
    concurrent_writers,
    idn_names,
    bulk_import,
    static_record_pages_match_the_records,
    load_all_pages,
    updater_batch_credentials_and_seen,
    group_commit_gives_each_writer_its_serial,
    release_memory_keeps_everything,
);

// A failing write in a group: a trigger (real database behaviour, no mock)
// refuses updates of one host; the battery functions see only the `Store`,
// these also need a raw connection to install it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_isolates_a_failing_write() {
    let db = TestDb::sqlite().await;
    refuse_updates_of(
        &db.url,
        "CREATE TRIGGER refuse_bad BEFORE UPDATE ON hosts WHEN NEW.fqdn = 'bad.dyn.example.org' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END",
    )
    .await;
    group_commit_isolates_a_failing_write(&db.store).await;
    db.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_group_commit_isolates_a_failing_write() {
    let db = TestDb::mariadb().await;
    refuse_updates_of(
        &db.url,
        "CREATE TRIGGER refuse_bad BEFORE UPDATE ON hosts FOR EACH ROW \
         IF NEW.fqdn = 'bad.dyn.example.org' THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF",
    )
    .await;
    group_commit_isolates_a_failing_write(&db.store).await;
    db.store.close().await;
}

async fn refuse_updates_of(url: &str, trigger: &'static str) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    // The text protocol: MariaDB does not prepare CREATE TRIGGER.
    sqlx::raw_sql(trigger).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Backend-independent checks

#[tokio::test]
async fn unsupported_url_is_refused() {
    let err = Store::connect("postgres://u:hunter2@localhost/db")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedUrl { ref url } if url == "postgres://u:***@localhost/db"),
        "{err}"
    );
}

/// Commits are durable on a SQLite file and on the test MariaDB (its
/// default `innodb_flush_log_at_trx_commit = 1`).
#[tokio::test]
async fn commits_are_durable_on_files_and_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let file = Store::connect(&format!("sqlite://{}", dir.path().join("d.db").display()))
        .await
        .unwrap();
    assert_eq!(file.commits_not_durable().await.unwrap(), None);
    let memory = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(memory.commits_not_durable().await.unwrap(), None);
    let db = TestDb::mariadb().await;
    assert_eq!(db.store.commits_not_durable().await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    store
        .add_zone(&Actor::cli(), new_zone("mem.example"))
        .await
        .unwrap();
    let apex = name("mem.example");
    // Concurrent users share the one connection and see the same database.
    let (a, b) = tokio::join!(store.list_zones(), store.zone_by_name(&apex));
    assert_eq!(a.unwrap().len(), 1);
    assert!(b.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .add_zone(&Actor::cli(), new_zone("wal.example"))
        .await
        .unwrap();
    assert!(path.exists());
    assert!(
        dir.path().join("new.db-wal").exists(),
        "journal_mode=WAL not in effect"
    );
    store.close().await;
    // Reopening finds the data and applies no migration twice.
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(
        store
            .zone_by_name(&name("wal.example"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_release_memory_keeps_its_data() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    release_memory_keeps_everything(&store).await;
}

/// `release_memory` after a bulk read (what the responder does after its
/// load) leaves every connection usable and every row in place, also while
/// other queries run beside it.
async fn release_memory_keeps_everything(store: &Store) {
    async fn loaded_hosts(store: &Store) -> (u64, usize) {
        let load = store.load_all().await.unwrap();
        let mut pages = load.hosts;
        let mut hosts = 0;
        while let Some(page) = pages.next_batch().await.unwrap() {
            hosts += page.len();
        }
        (load.serial, hosts)
    }
    zone_and_user(store).await;
    add_hosts(store, (0..300).map(|i| format!("m{i}.dyn.example.org"))).await;
    let before = loaded_hosts(store).await;
    assert_eq!(before.1, 300);
    // Several connections busy at once, so more than one holds a cache.
    let (a, b, c) = tokio::join!(
        loaded_hosts(store),
        loaded_hosts(store),
        loaded_hosts(store)
    );
    assert_eq!([a, b, c], [before; 3]);
    let (_, during) = tokio::join!(store.release_memory(), loaded_hosts(store));
    assert_eq!(during, before);
    assert_eq!(loaded_hosts(store).await, before);
    // And it still writes.
    store
        .update_host(address_update(
            "m7.dyn.example.org",
            Ipv4Addr::new(192, 0, 2, 77),
        ))
        .await
        .unwrap();
    let host = store
        .host_by_fqdn(&name("m7.dyn.example.org"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.ipv4, Some(Ipv4Addr::new(192, 0, 2, 77)));
}

// ---------------------------------------------------------------------------
// Helpers

fn admin() -> Actor {
    Actor {
        name: "admin".to_owned(),
        address: Some("192.0.2.7".parse().unwrap()),
    }
}

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn new_user(user: &str) -> NewUser {
    NewUser {
        name: user.to_owned(),
        email: format!("{user}@example.net"),
        password: None,
        role: Role::User,
        state: UserState::Active,
        max_hosts: None,
    }
}

fn new_zone(zone: &str) -> NewZone {
    NewZone::new(
        name(zone),
        vec![name("ns1.example.net"), name("ns2.example.net")],
    )
}

fn new_host(fqdn: &str, owner: &str) -> NewHost {
    NewHost {
        fqdn: name(fqdn),
        owner: owner.to_owned(),
        secret: "s3cret".to_owned(),
        ipv4: None,
        ipv6: None,
        description: String::new(),
    }
}

fn record(owner: &str, rtype: RecordType, rdata: &str) -> NewRecord {
    NewRecord {
        owner: name(owner),
        rtype,
        ttl: None,
        rdata: rdata.to_owned(),
    }
}

/// An address change through the updater's path, as `admin`.
fn address_update(fqdn: &str, ipv4: Ipv4Addr) -> HostUpdate {
    HostUpdate {
        fqdn: name(fqdn),
        ipv4: Some(Some(ipv4)),
        ipv6: None,
        offline: None,
        wildcard: None,
        actor: admin(),
        user_agent: "battery".into(),
    }
}

/// Hosts of `alice` with these names.
async fn add_hosts(store: &Store, fqdns: impl IntoIterator<Item = String>) {
    for fqdn in fqdns {
        store
            .add_host(&admin(), new_host(&fqdn, "alice"), None)
            .await
            .unwrap();
    }
}

async fn serial_of(store: &Store, zone: &str) -> u32 {
    store
        .zone_by_name(&name(zone))
        .await
        .unwrap()
        .unwrap()
        .serial
}

/// A zone and a user to hang hosts on.
async fn zone_and_user(store: &Store) {
    store
        .add_zone(&admin(), new_zone("dyn.example.org"))
        .await
        .unwrap();
    store
        .create_user(&admin(), new_user("alice"))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// The battery

async fn users_create_update_conflict(store: &Store) {
    let actor = Actor::cli();
    let mut user = new_user("Alice");
    user.max_hosts = Some(5);
    let created = store.create_user(&actor, user).await.unwrap();
    assert_eq!(created.name, "alice");
    assert_eq!(created.max_hosts, Some(5));
    assert!(!created.has_password);
    assert_eq!(created.state, UserState::Active);

    let found = store.user_by_name("ALICE").await.unwrap().unwrap();
    assert_eq!(found, created);
    assert!(store.user_by_name("bob").await.unwrap().is_none());

    let err = store
        .create_user(&actor, new_user("aLiCe"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateUser { ref name } if name == "alice"),
        "{err}"
    );

    for bad in ["", "-x", "a b", "ä", &"x".repeat(65)] {
        let err = store.create_user(&actor, new_user(bad)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { .. }),
            "{bad:?}: {err}"
        );
    }
    let mut bad_mail = new_user("carol");
    bad_mail.email = "not an address".to_owned();
    assert!(matches!(
        store.create_user(&actor, bad_mail).await,
        Err(StoreError::InvalidInput {
            field: "e-mail",
            ..
        })
    ));

    let mut admin_user = new_user("root");
    admin_user.role = Role::Admin;
    admin_user.state = UserState::Pending;
    store.create_user(&actor, admin_user).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 2);
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "root"]);

    store
        .set_user_state(&actor, "root", UserState::Active)
        .await
        .unwrap();
    // Setting the same state again is fine (MySQL reports 0 changed rows).
    store
        .set_user_state(&actor, "root", UserState::Active)
        .await
        .unwrap();
    assert_eq!(
        store.user_by_name("root").await.unwrap().unwrap().state,
        UserState::Active
    );
    assert!(matches!(
        store
            .set_user_state(&actor, "nobody", UserState::Disabled)
            .await,
        Err(StoreError::UnknownUser { .. })
    ));

    let audit = store.recent_audit(10).await.unwrap();
    assert_eq!(audit[0].action, "user.state");
    assert_eq!(audit[0].actor, "cli");
    assert_eq!(audit[0].address, None);
    store
        .set_user_state(&admin(), "root", UserState::Disabled)
        .await
        .unwrap();
    let audit = store.recent_audit(1).await.unwrap();
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].address.as_deref()),
        ("admin", Some("192.0.2.7"))
    );
    assert_eq!(
        (audit[0].target.as_str(), audit[0].detail.as_str()),
        ("root", "disabled")
    );
    let audit = store.recent_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "user.create" && a.target == "alice")
    );
}

async fn passwords(store: &Store) {
    let mut user = new_user("dave");
    user.password = Some("correct horse".to_owned());
    let created = store.create_user(&admin(), user).await.unwrap();
    assert!(created.has_password);
    assert!(created.last_login_at.is_none());

    let ok = store
        .verify_password("Dave", "correct horse")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.name, "dave");
    assert!(ok.last_login_at.is_some());
    assert!(
        store
            .verify_password("dave", "wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verify_password("nobody", "correct horse")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verify_password("in valid", "x")
            .await
            .unwrap()
            .is_none()
    );

    // An account without a password cannot log in until one is set.
    store.create_user(&admin(), new_user("erin")).await.unwrap();
    assert!(store.verify_password("erin", "").await.unwrap().is_none());
    store
        .set_user_password(&admin(), "erin", "new pass".to_owned())
        .await
        .unwrap();
    assert!(
        store
            .verify_password("erin", "new pass")
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        store
            .set_user_password(&admin(), "nobody", "x".to_owned())
            .await,
        Err(StoreError::UnknownUser { .. })
    ));
}

async fn zones_create_conflict_lookup(store: &Store) {
    let zone = store
        .add_zone(&admin(), new_zone("Example.ORG."))
        .await
        .unwrap();
    assert_eq!(zone.name.as_str(), "example.org");
    assert_eq!(zone.mname.as_str(), "ns1.example.net");
    assert_eq!(zone.rname.as_str(), "hostmaster.example.org");
    assert_eq!(zone.ns, [name("ns1.example.net"), name("ns2.example.net")]);
    assert_eq!(
        (
            zone.timers.refresh,
            zone.timers.retry,
            zone.timers.expire,
            zone.timers.minimum
        ),
        (3600, 600, 1_209_600, 60)
    );
    assert_eq!(zone.default_ttl, 60);
    assert_eq!(
        store.zone_by_name(&name("example.org")).await.unwrap(),
        Some(zone.clone())
    );

    let err = store
        .add_zone(&admin(), new_zone("example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateZone { .. }), "{err}");

    let mut sub = new_zone("dyn.example.org");
    sub.soa_rname = Some(name("dns.example.net"));
    sub.default_ttl = 30;
    store.add_zone(&admin(), sub).await.unwrap();

    let best = |fqdn: &'static str| async move {
        store
            .zone_for_name(&name(fqdn))
            .await
            .unwrap()
            .map(|z| z.name.to_string())
    };
    assert_eq!(
        best("a.b.dyn.example.org").await.as_deref(),
        Some("dyn.example.org")
    );
    assert_eq!(
        best("dyn.example.org").await.as_deref(),
        Some("dyn.example.org")
    );
    assert_eq!(
        best("www.example.org").await.as_deref(),
        Some("example.org")
    );
    assert_eq!(best("example.com").await, None);

    // A zone below hosts of its parent would hide them.
    store
        .create_user(&admin(), new_user("alice"))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("h.lab.example.org", "alice"), None)
        .await
        .unwrap();
    for hiding in ["lab.example.org", "h.lab.example.org"] {
        let err = store
            .add_zone(&admin(), new_zone(hiding))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::ZoneWouldHideHost { ref host, .. } if host == "h.lab.example.org"),
            "{err}"
        );
    }
    // `_` in the apex is not a LIKE wildcard: `%.la_.example.org` unescaped
    // would match h.lab.example.org.
    store
        .add_zone(&admin(), new_zone("la_.example.org"))
        .await
        .unwrap();
    store
        .remove_zone(&admin(), &name("la_.example.org"))
        .await
        .unwrap();

    let zones = store.list_zones().await.unwrap();
    assert_eq!(zones.len(), 2);
    assert_eq!(zones[0].name.as_str(), "dyn.example.org");
    assert_eq!(zones[0].rname.as_str(), "dns.example.net");
    assert_eq!(zones[0].ns.len(), 2);

    // Bad zones change nothing.
    let before = store.latest_serial().await.unwrap();
    let mut no_ns = new_zone("bad.example");
    no_ns.ns.clear();
    assert!(matches!(
        store.add_zone(&admin(), no_ns).await,
        Err(StoreError::InvalidInput { .. })
    ));
    let mut bad_ttl = new_zone("bad.example");
    bad_ttl.default_ttl = u32::MAX;
    assert!(matches!(
        store.add_zone(&admin(), bad_ttl).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert_eq!(store.latest_serial().await.unwrap(), before);
    assert!(
        store
            .zone_by_name(&name("bad.example"))
            .await
            .unwrap()
            .is_none()
    );

    let err = store
        .remove_zone(&admin(), &name("nope.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownZone { .. }));

    // Settings can change later; that bumps the serial once.
    let serial = serial_of(store, "example.org").await;
    let mut settings = NewZone::new(name("example.org"), vec![name("ns3.example.net")]);
    settings.soa_rname = Some(name("noc.example.net"));
    settings.timers.minimum = 300;
    settings.default_ttl = 120;
    let updated = store.update_zone(&admin(), settings.clone()).await.unwrap();
    assert_eq!(updated.ns, [name("ns3.example.net")]);
    assert_eq!(updated.mname.as_str(), "ns3.example.net");
    assert_eq!(updated.rname.as_str(), "noc.example.net");
    assert_eq!((updated.timers.minimum, updated.default_ttl), (300, 120));
    assert_eq!(updated.serial, serial.wrapping_add(1));
    assert_eq!(
        store.zone_by_name(&name("example.org")).await.unwrap(),
        Some(updated)
    );
    settings.ns.clear();
    assert!(matches!(
        store.update_zone(&admin(), settings).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert_eq!(
        serial_of(store, "example.org").await,
        serial.wrapping_add(1)
    );
    assert!(matches!(
        store.update_zone(&admin(), new_zone("nope.example")).await,
        Err(StoreError::UnknownZone { .. })
    ));
}

async fn records_add_validate_remove(store: &Store) {
    zone_and_user(store).await;
    let zone = name("dyn.example.org");
    let serial = serial_of(store, "dyn.example.org").await;
    let mx = store
        .add_record(
            &admin(),
            &zone,
            record("dyn.example.org", RecordType::Mx, "10 Mail.Example.org."),
        )
        .await
        .unwrap();
    assert_eq!(mx.rdata, "10 mail.example.org.");
    assert_eq!(mx.ttl, 60);
    assert_eq!(
        serial_of(store, "dyn.example.org").await,
        serial.wrapping_add(1)
    );
    store
        .add_record(
            &admin(),
            &zone,
            NewRecord {
                ttl: Some(300),
                ..record("www.dyn.example.org", RecordType::A, "192.0.2.1")
            },
        )
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &zone,
            record(
                "_sip._tcp.dyn.example.org",
                RecordType::Srv,
                "0 5 5060 sip.example.org.",
            ),
        )
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &zone,
            record(
                "dyn.example.org",
                RecordType::Caa,
                "0 issue \"letsencrypt.org\"",
            ),
        )
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &zone,
            record(
                "sub.dyn.example.org",
                RecordType::Ns,
                "ns.elsewhere.example.",
            ),
        )
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &zone,
            record(
                "alias.dyn.example.org",
                RecordType::Cname,
                "www.dyn.example.org.",
            ),
        )
        .await
        .unwrap();

    let before = store.latest_serial().await.unwrap();
    let rejects = [
        (
            record("x.other.example", RecordType::A, "192.0.2.1"),
            "not in zone",
        ),
        (
            record("x.dyn.example.org", RecordType::A, "192.0.2.300"),
            "bad address",
        ),
        (
            record("dyn.example.org", RecordType::Ns, "ns3.example.net."),
            "apex NS",
        ),
        (
            record("dyn.example.org", RecordType::Cname, "x.example."),
            "apex CNAME",
        ),
        (
            record("alias.dyn.example.org", RecordType::A, "192.0.2.2"),
            "CNAME plus other",
        ),
        (
            record("alias.dyn.example.org", RecordType::Cname, "y.example."),
            "second CNAME",
        ),
        (
            record("www.dyn.example.org", RecordType::Cname, "y.example."),
            "CNAME beside A",
        ),
        (
            record("t.dyn.example.org", RecordType::Txt, "\"unterminated"),
            "bad TXT",
        ),
    ];
    for (bad, why) in rejects {
        let err = store.add_record(&admin(), &zone, bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidRecord { .. } | StoreError::NotInZone { .. }
            ),
            "{why}: {err}"
        );
    }
    assert!(matches!(
        store
            .add_record(
                &admin(),
                &name("nope.example"),
                record("nope.example", RecordType::A, "192.0.2.1")
            )
            .await,
        Err(StoreError::UnknownZone { .. })
    ));
    assert_eq!(
        store.latest_serial().await.unwrap(),
        before,
        "rejected records changed the log"
    );

    // Static records and hosts never share a name.
    store
        .add_host(&admin(), new_host("h.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    let err = store
        .add_record(
            &admin(),
            &zone,
            record("h.dyn.example.org", RecordType::Txt, "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameClash { .. }), "{err}");

    let records = store.list_records(&zone).await.unwrap();
    let listed: Vec<(String, RecordType)> = records
        .iter()
        .map(|r| (r.owner.to_string(), r.rtype))
        .collect();
    assert_eq!(listed[0], ("dyn.example.org".to_owned(), RecordType::Mx));
    assert_eq!(listed[1], ("www.dyn.example.org".to_owned(), RecordType::A));
    assert_eq!(records[1].ttl, 300);
    assert_eq!(records.len(), 6);

    let removed = store
        .remove_records(
            &admin(),
            &zone,
            &name("dyn.example.org"),
            Some(RecordType::Caa),
        )
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        store
            .remove_records(&admin(), &zone, &name("nothing.dyn.example.org"), None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.list_records(&zone).await.unwrap().len(), 5);
    let last = store.changes_since(before, 100).await.unwrap();
    assert_eq!(last.last().unwrap().kind, ChangeKind::RecordsChanged);
    assert_eq!(last.last().unwrap().name.as_str(), "dyn.example.org");
}

async fn hosts_create_update(store: &Store) {
    zone_and_user(store).await;
    let fqdn = name("Home.Dyn.Example.org");
    let mut new = new_host("home.dyn.example.org", "Alice");
    new.ipv4 = Some(Ipv4Addr::new(192, 0, 2, 10));
    new.description = "router at home".to_owned();
    let host = store.add_host(&admin(), new, None).await.unwrap();
    assert_eq!(host.fqdn, fqdn);
    assert_eq!(host.zone.as_str(), "dyn.example.org");
    assert_eq!(host.label, "home");
    assert_eq!(host.owner, "alice");
    assert_eq!(host.ipv4, Some(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(host.ipv6, None);
    assert_eq!(host.description, "router at home");
    assert_eq!(host.flags, HostFlags::default());

    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert!(
        store
            .update_host_addresses(&admin(), &fqdn, None, Some(Some(v6)))
            .await
            .unwrap()
    );
    // The same addresses again: no change, no serial bump.
    let serial = serial_of(store, "dyn.example.org").await;
    let log = store.latest_serial().await.unwrap();
    assert!(
        !store
            .update_host_addresses(
                &admin(),
                &fqdn,
                Some(Some(Ipv4Addr::new(192, 0, 2, 10))),
                Some(Some(v6))
            )
            .await
            .unwrap()
    );
    assert_eq!(serial_of(store, "dyn.example.org").await, serial);
    assert_eq!(store.latest_serial().await.unwrap(), log);
    let seen = store.host_by_fqdn(&fqdn).await.unwrap().unwrap();
    assert_eq!(
        (seen.ipv4, seen.ipv6),
        (Some(Ipv4Addr::new(192, 0, 2, 10)), Some(v6))
    );
    assert!(seen.last_seen_at.is_some());

    // Families are independent; Some(None) clears one.
    assert!(
        store
            .update_host_addresses(&admin(), &fqdn, Some(None), None)
            .await
            .unwrap()
    );
    let host = store.host_by_fqdn(&fqdn).await.unwrap().unwrap();
    assert_eq!((host.ipv4, host.ipv6), (None, Some(v6)));

    store
        .set_host_txt(
            &admin(),
            &fqdn,
            vec!["token-1".to_owned(), "token-2".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(
        store.host_by_fqdn(&fqdn).await.unwrap().unwrap().txt,
        ["token-1", "token-2"]
    );
    assert!(matches!(
        store
            .set_host_txt(&admin(), &fqdn, vec!["bad\u{7}".to_owned()])
            .await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        store
            .set_host_txt(&admin(), &fqdn, vec!["x".repeat(256)])
            .await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert_eq!(
        store.host_by_fqdn(&fqdn).await.unwrap().unwrap().txt.len(),
        2
    );
    store.set_host_txt(&admin(), &fqdn, vec![]).await.unwrap();
    assert!(
        store
            .host_by_fqdn(&fqdn)
            .await
            .unwrap()
            .unwrap()
            .txt
            .is_empty()
    );

    let flags = HostFlags {
        wildcard: true,
        offline: true,
        disabled: Some("abuse report 42".to_owned()),
    };
    store
        .set_host_flags(&admin(), &fqdn, flags.clone())
        .await
        .unwrap();
    assert_eq!(
        store.host_by_fqdn(&fqdn).await.unwrap().unwrap().flags,
        flags
    );
    let err = store
        .update_host_addresses(&admin(), &fqdn, Some(Some(Ipv4Addr::LOCALHOST)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HostDisabled { ref reason, .. } if reason == "abuse report 42"),
        "{err}"
    );
    store
        .set_host_flags(&admin(), &fqdn, HostFlags::default())
        .await
        .unwrap();
    assert!(
        store
            .update_host_addresses(&admin(), &fqdn, Some(Some(Ipv4Addr::LOCALHOST)), None)
            .await
            .unwrap()
    );

    // Listing by zone and owner.
    store.create_user(&admin(), new_user("bob")).await.unwrap();
    store
        .add_zone(&admin(), new_zone("other.example"))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("b1.dyn.example.org", "bob"), None)
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("b2.other.example", "bob"), None)
        .await
        .unwrap();
    store
        .set_host_txt(&admin(), &name("b2.other.example"), vec!["t".to_owned()])
        .await
        .unwrap();
    let list = |zone: Option<&str>, owner: Option<&str>| {
        let filter = HostFilter {
            zone: zone.map(name),
            owner: owner.map(str::to_owned),
        };
        async move {
            store
                .list_hosts(filter)
                .await
                .unwrap()
                .into_iter()
                .map(|h| (h.fqdn.to_string(), h.txt))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, None).await.len(), 3);
    assert_eq!(list(Some("dyn.example.org"), None).await.len(), 2);
    assert_eq!(
        list(None, Some("BOB")).await,
        [
            ("b1.dyn.example.org".to_owned(), vec![]),
            ("b2.other.example".to_owned(), vec!["t".to_owned()])
        ]
    );
    assert_eq!(list(Some("other.example"), Some("alice")).await, []);
    assert!(matches!(
        store
            .list_hosts(HostFilter {
                zone: Some(name("nope.example")),
                owner: None
            })
            .await,
        Err(StoreError::UnknownZone { .. })
    ));
    assert!(matches!(
        store
            .list_hosts(HostFilter {
                zone: None,
                owner: Some("nobody".into())
            })
            .await,
        Err(StoreError::UnknownUser { .. })
    ));

    store
        .remove_host(&admin(), &name("b1.dyn.example.org"))
        .await
        .unwrap();
    assert!(
        store
            .host_by_fqdn(&name("b1.dyn.example.org"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store
            .remove_host(&admin(), &name("b1.dyn.example.org"))
            .await,
        Err(StoreError::UnknownHost { .. })
    ));
    assert!(matches!(
        store
            .update_host_addresses(&admin(), &name("nope.dyn.example.org"), None, None)
            .await,
        Err(StoreError::UnknownHost { .. })
    ));
}

async fn host_errors_change_nothing(store: &Store) {
    zone_and_user(store).await;
    store
        .add_host(&admin(), new_host("taken.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &name("dyn.example.org"),
            record("static.dyn.example.org", RecordType::A, "192.0.2.1"),
        )
        .await
        .unwrap();
    let serial = serial_of(store, "dyn.example.org").await;
    let log = store.latest_serial().await.unwrap();
    let hosts = store.list_hosts(HostFilter::default()).await.unwrap();

    type Expect = fn(&StoreError) -> bool;
    let cases: Vec<(NewHost, Expect)> = vec![
        (new_host("x.unknown.example", "alice"), |e| {
            matches!(e, StoreError::UnknownZone { .. })
        }),
        (new_host("dyn.example.org", "alice"), |e| {
            matches!(e, StoreError::HostIsZoneApex { .. })
        }),
        (new_host("TAKEN.dyn.example.org", "alice"), |e| {
            matches!(e, StoreError::DuplicateHost { .. })
        }),
        (new_host("static.dyn.example.org", "alice"), |e| {
            matches!(e, StoreError::NameClash { .. })
        }),
        (new_host("_under.dyn.example.org", "alice"), |e| {
            matches!(e, StoreError::NotAHostName { .. })
        }),
        (new_host("*.dyn.example.org", "alice"), |e| {
            matches!(e, StoreError::NotAHostName { .. })
        }),
        (new_host("new.dyn.example.org", "nobody"), |e| {
            matches!(e, StoreError::UnknownUser { .. })
        }),
        (
            NewHost {
                secret: String::new(),
                ..new_host("new.dyn.example.org", "alice")
            },
            |e| matches!(e, StoreError::InvalidInput { .. }),
        ),
        (
            NewHost {
                description: "x".repeat(300),
                ..new_host("new.dyn.example.org", "alice")
            },
            |e| matches!(e, StoreError::InvalidInput { .. }),
        ),
    ];
    for (host, expected) in cases {
        let fqdn = host.fqdn.clone();
        let err = store.add_host(&admin(), host, None).await.unwrap_err();
        assert!(expected(&err), "{fqdn}: unexpected {err}");
    }
    assert_eq!(serial_of(store, "dyn.example.org").await, serial);
    assert_eq!(store.latest_serial().await.unwrap(), log);
    assert_eq!(
        store.list_hosts(HostFilter::default()).await.unwrap(),
        hosts
    );
}

async fn host_limits(store: &Store) {
    zone_and_user(store).await;
    let mut limited = new_user("lim");
    limited.max_hosts = Some(2);
    store.create_user(&admin(), limited).await.unwrap();

    // The user's own limit wins over the default, in both directions.
    store
        .add_host(&admin(), new_host("l1.dyn.example.org", "lim"), Some(1))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("l2.dyn.example.org", "lim"), Some(1))
        .await
        .unwrap();
    let err = store
        .add_host(&admin(), new_host("l3.dyn.example.org", "lim"), Some(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HostLimitReached { limit: 2, ref user } if user == "lim"),
        "{err}"
    );

    // Without an own limit, the configured default applies.
    store
        .add_host(&admin(), new_host("a1.dyn.example.org", "alice"), Some(1))
        .await
        .unwrap();
    let err = store
        .add_host(&admin(), new_host("a2.dyn.example.org", "alice"), Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HostLimitReached { limit: 1, .. }),
        "{err}"
    );
    // No default: unlimited.
    for i in 2..6 {
        store
            .add_host(
                &admin(),
                new_host(&format!("a{i}.dyn.example.org"), "alice"),
                None,
            )
            .await
            .unwrap();
    }
    // Removing a host frees a slot.
    store
        .remove_host(&admin(), &name("l1.dyn.example.org"))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("l3.dyn.example.org", "lim"), None)
        .await
        .unwrap();

    let mut zero = new_user("zero");
    zero.max_hosts = Some(0);
    store.create_user(&admin(), zero).await.unwrap();
    assert!(matches!(
        store
            .add_host(&admin(), new_host("z.dyn.example.org", "zero"), None)
            .await,
        Err(StoreError::HostLimitReached { limit: 0, .. })
    ));
}

/// (name, kind) of the change-log entries after `serial`.
async fn logged_since(store: &Store, serial: u64) -> Vec<(String, ChangeKind)> {
    let changes = store.changes_since(serial, 100).await.unwrap();
    changes
        .iter()
        .map(|c| (c.name.to_string(), c.kind))
        .collect()
}

async fn host_secrets(store: &Store) {
    zone_and_user(store).await;
    let fqdn = name("h.dyn.example.org");
    store
        .add_host(&admin(), new_host("h.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    let host = store
        .verify_host_secret(&fqdn, "s3cret")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.fqdn, fqdn);
    assert!(
        store
            .verify_host_secret(&fqdn, "wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verify_host_secret(&name("nope.dyn.example.org"), "s3cret")
            .await
            .unwrap()
            .is_none()
    );

    let log = store.latest_serial().await.unwrap();
    store
        .set_host_secret(&admin(), &fqdn, "rotated".to_owned())
        .await
        .unwrap();
    // Not DNS-visible (no serial bump), but logged so that updaters' host
    // mirrors re-read the host.
    assert_eq!(
        logged_since(store, log).await,
        [(fqdn.to_string(), ChangeKind::HostChanged)]
    );
    assert!(
        store
            .verify_host_secret(&fqdn, "s3cret")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verify_host_secret(&fqdn, "rotated")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.recent_audit(1).await.unwrap()[0].action,
        "host.secret"
    );
    assert!(matches!(
        store
            .set_host_secret(&admin(), &name("nope.dyn.example.org"), "x".to_owned())
            .await,
        Err(StoreError::UnknownHost { .. })
    ));

    // The updater's reads: by name (batched) and by page; the stored hash
    // follows the rotation.
    let one = store.host_credential(&fqdn).await.unwrap().unwrap();
    assert!(one.secret.verify_blocking("rotated"));
    let by_name = store
        .host_credentials(&[fqdn.clone(), name("nope.dyn.example.org")])
        .await
        .unwrap();
    assert_eq!(by_name.len(), 1);
    assert_eq!((by_name[0].id, &by_name[0].secret), (one.id, &one.secret));
    assert!(by_name[0].owner_active);
    let page = store.host_credentials_page(0, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].id, &page[0].fqdn), (one.id, &fqdn));
    assert!(
        store
            .host_credentials_page(one.id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // An owner's state change reaches the hosts' credentials and is logged
    // per host, without a serial bump.
    let serial = store
        .zone_by_name(&name("dyn.example.org"))
        .await
        .unwrap()
        .unwrap()
        .serial;
    let log = store.latest_serial().await.unwrap();
    store
        .set_user_state(&admin(), "alice", UserState::Disabled)
        .await
        .unwrap();
    assert!(
        !store
            .host_credential(&fqdn)
            .await
            .unwrap()
            .unwrap()
            .owner_active
    );
    assert_eq!(
        logged_since(store, log).await,
        [(fqdn.to_string(), ChangeKind::HostChanged)]
    );
    assert_eq!(
        store
            .zone_by_name(&name("dyn.example.org"))
            .await
            .unwrap()
            .unwrap()
            .serial,
        serial
    );
}

async fn cascade_remove_zone(store: &Store) {
    zone_and_user(store).await;
    store
        .add_zone(&admin(), new_zone("keep.example"))
        .await
        .unwrap();
    let zone = name("dyn.example.org");
    for i in 0..3 {
        store
            .add_host(
                &admin(),
                new_host(&format!("h{i}.dyn.example.org"), "alice"),
                None,
            )
            .await
            .unwrap();
    }
    store
        .set_host_txt(&admin(), &name("h0.dyn.example.org"), vec!["t".to_owned()])
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("k.keep.example", "alice"), None)
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &zone,
            record("www.dyn.example.org", RecordType::A, "192.0.2.1"),
        )
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &name("keep.example"),
            record("www.keep.example", RecordType::A, "192.0.2.1"),
        )
        .await
        .unwrap();

    let log = store.latest_serial().await.unwrap();
    store.remove_zone(&admin(), &zone).await.unwrap();
    assert!(store.zone_by_name(&zone).await.unwrap().is_none());
    assert!(
        store
            .host_by_fqdn(&name("h0.dyn.example.org"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.list_records(&zone).await,
        Err(StoreError::UnknownZone { .. })
    ));
    let hosts = store.list_hosts(HostFilter::default()).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].fqdn.as_str(), "k.keep.example");
    assert_eq!(
        store
            .list_records(&name("keep.example"))
            .await
            .unwrap()
            .len(),
        1
    );
    let changes = store.changes_since(log, 10).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].kind, changes[0].zone.as_str()),
        (ChangeKind::ZoneRemoved, "dyn.example.org")
    );

    // The name is free again, and hosts can be re-added under a new zone.
    store
        .add_zone(&admin(), new_zone("dyn.example.org"))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("h0.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    assert!(
        store
            .host_by_fqdn(&name("h0.dyn.example.org"))
            .await
            .unwrap()
            .unwrap()
            .txt
            .is_empty()
    );
}

async fn cascade_remove_user(store: &Store) {
    zone_and_user(store).await;
    store
        .add_zone(&admin(), new_zone("two.example"))
        .await
        .unwrap();
    store.create_user(&admin(), new_user("bob")).await.unwrap();
    store
        .add_host(&admin(), new_host("a.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("b.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("c.two.example", "alice"), None)
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("bob.dyn.example.org", "bob"), None)
        .await
        .unwrap();
    let (s1, s2) = (
        serial_of(store, "dyn.example.org").await,
        serial_of(store, "two.example").await,
    );
    let log = store.latest_serial().await.unwrap();

    store.remove_user(&admin(), "ALICE").await.unwrap();
    assert!(store.user_by_name("alice").await.unwrap().is_none());
    let left: Vec<String> = store
        .list_hosts(HostFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.fqdn.to_string())
        .collect();
    assert_eq!(left, ["bob.dyn.example.org"]);

    let changes = store.changes_since(log, 100).await.unwrap();
    let removed: HashSet<String> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::HostRemoved)
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(
        removed,
        HashSet::from([
            "a.dyn.example.org".to_owned(),
            "b.dyn.example.org".to_owned(),
            "c.two.example".to_owned()
        ])
    );
    assert_eq!(changes.len(), 3);
    // One transaction: each affected zone moves forward once.
    assert_eq!(
        serial_of(store, "dyn.example.org").await,
        s1.wrapping_add(1)
    );
    assert_eq!(serial_of(store, "two.example").await, s2.wrapping_add(1));
    assert!(matches!(
        store.remove_user(&admin(), "alice").await,
        Err(StoreError::UnknownUser { .. })
    ));
}

async fn change_log_order_and_serial_bumps(store: &Store) {
    assert_eq!(store.latest_serial().await.unwrap(), 0);
    assert!(store.changes_since(0, 10).await.unwrap().is_empty());
    zone_and_user(store).await;
    let fqdn = name("h.dyn.example.org");
    let zone = name("dyn.example.org");
    let mut serial = serial_of(store, "dyn.example.org").await;

    // Every DNS-visible mutation moves the SOA serial by exactly one.
    let mut step = async |what: &str| {
        let now = serial_of(store, "dyn.example.org").await;
        assert_eq!(
            now,
            serial.wrapping_add(1),
            "{what} did not bump the serial once"
        );
        serial = now;
    };
    store
        .add_host(&admin(), new_host("h.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    step("add_host").await;
    store
        .update_host_addresses(
            &admin(),
            &fqdn,
            Some(Some(Ipv4Addr::new(192, 0, 2, 1))),
            None,
        )
        .await
        .unwrap();
    step("update_host_addresses").await;
    store
        .set_host_txt(&admin(), &fqdn, vec!["tok".to_owned()])
        .await
        .unwrap();
    step("set_host_txt").await;
    store
        .set_host_flags(
            &admin(),
            &fqdn,
            HostFlags {
                wildcard: true,
                ..HostFlags::default()
            },
        )
        .await
        .unwrap();
    step("set_host_flags").await;
    store
        .add_record(
            &admin(),
            &zone,
            record("www.dyn.example.org", RecordType::A, "192.0.2.9"),
        )
        .await
        .unwrap();
    step("add_record").await;
    store
        .remove_records(&admin(), &zone, &name("www.dyn.example.org"), None)
        .await
        .unwrap();
    step("remove_records").await;
    store
        .import_zone(
            &admin(),
            new_zone("dyn.example.org"),
            vec![record("i.dyn.example.org", RecordType::A, "192.0.2.3")],
            false,
        )
        .await
        .unwrap();
    step("import_zone").await;
    store.remove_host(&admin(), &fqdn).await.unwrap();
    step("remove_host").await;

    let changes = store.changes_since(0, 1000).await.unwrap();
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::ZoneAdded,
            ChangeKind::HostAdded,
            ChangeKind::HostChanged,
            ChangeKind::HostChanged,
            ChangeKind::HostChanged,
            ChangeKind::RecordsChanged,
            ChangeKind::RecordsChanged,
            ChangeKind::ZoneChanged,
            ChangeKind::HostRemoved,
        ]
    );
    assert!(
        changes.windows(2).all(|w| w[0].serial < w[1].serial),
        "serials not strictly increasing"
    );
    assert!(changes.iter().all(|c| c.zone == zone));
    assert_eq!(changes[1].name, fqdn);
    assert_eq!(
        store.latest_serial().await.unwrap(),
        changes.last().unwrap().serial
    );

    // Paging through the log.
    let first = store.changes_since(0, 4).await.unwrap();
    let rest = store
        .changes_since(first.last().unwrap().serial, 100)
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), changes);

    // Pruning keeps the newest entry, so the latest serial never goes back.
    let latest = store.latest_serial().await.unwrap();
    let pruned = store.prune_changes(&admin(), i64::MAX).await.unwrap();
    assert_eq!(pruned, changes.len() as u64 - 1);
    assert_eq!(store.latest_serial().await.unwrap(), latest);
    let audit = store.recent_audit(1).await.unwrap();
    assert_eq!(audit[0].action, "changes.prune");
    store
        .add_host(&admin(), new_host("h2.dyn.example.org", "alice"), None)
        .await
        .unwrap();
    assert!(store.latest_serial().await.unwrap() > latest);
    assert_eq!(store.prune_changes(&admin(), 0).await.unwrap(), 0);
    // A reader behind the pruned part is told to reload; one at or after the
    // cut continues.
    let err = store.changes_since(0, 10).await.unwrap_err();
    let StoreError::ChangesPruned {
        since: 0,
        pruned_through,
    } = err
    else {
        panic!("expected ChangesPruned, got {err}");
    };
    assert_eq!(pruned_through, changes[changes.len() - 2].serial);
    // So is a reader inside the pruned part: the entry after its serial
    // is gone.
    let err = store
        .changes_since(pruned_through - 1, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChangesPruned { .. }), "{err}");
    let tail = store.changes_since(pruned_through, 10).await.unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].serial, latest);
    // A reader that has everything gets nothing, not an error.
    let newest = store.latest_serial().await.unwrap();
    assert!(store.changes_since(newest, 10).await.unwrap().is_empty());
}

async fn concurrent_writers(store: &Store) {
    const TASKS: usize = 8;
    const UPDATES: usize = 50;
    zone_and_user(store).await;
    for t in 0..TASKS {
        store
            .add_host(
                &admin(),
                new_host(&format!("c{t}.dyn.example.org"), "alice"),
                None,
            )
            .await
            .unwrap();
    }
    let start_serial = serial_of(store, "dyn.example.org").await;
    let log = store.latest_serial().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let fqdn = name(&format!("c{t}.dyn.example.org"));
            for i in 0..UPDATES {
                let addr = Ipv4Addr::new(10, t as u8, (i / 256) as u8, (i % 256) as u8);
                assert!(
                    store
                        .update_host_addresses(&admin(), &fqdn, Some(Some(addr)), None)
                        .await
                        .unwrap()
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let changes = store.changes_since(log, 10_000).await.unwrap();
    assert_eq!(
        changes.len(),
        TASKS * UPDATES,
        "every acknowledged update is in the log"
    );
    let serials: HashSet<u64> = changes.iter().map(|c| c.serial).collect();
    assert_eq!(serials.len(), changes.len(), "serials are unique");
    assert!(changes.windows(2).all(|w| w[0].serial < w[1].serial));
    if store.backend() == Backend::Sqlite {
        // SQLite never skips: the log is gap-free.
        assert_eq!(
            changes.last().unwrap().serial - changes[0].serial,
            (TASKS * UPDATES - 1) as u64
        );
    }
    for t in 0..TASKS {
        let fqdn = format!("c{t}.dyn.example.org");
        assert_eq!(
            changes.iter().filter(|c| c.name.as_str() == fqdn).count(),
            UPDATES
        );
        let host = store.host_by_fqdn(&name(&fqdn)).await.unwrap().unwrap();
        assert_eq!(
            host.ipv4,
            Some(Ipv4Addr::new(10, t as u8, 0, (UPDATES - 1) as u8))
        );
    }
    assert_eq!(
        serial_of(store, "dyn.example.org").await,
        start_serial.wrapping_add((TASKS * UPDATES) as u32)
    );
}

async fn idn_names(store: &Store) {
    // Name rules, through the API every caller uses.
    let label63 = "a".repeat(63);
    assert!(matches!(
        Name::parse(&format!("{label63}x.example")),
        Err(NameError::LabelTooLong { .. })
    ));
    assert!(matches!(
        Name::parse(&[label63.as_str(); 5].join(".")),
        Err(NameError::NameTooLong { .. })
    ));
    assert!(matches!(
        Name::parse("bad!name.example"),
        Err(NameError::InvalidName { .. })
    ));

    store
        .add_zone(&admin(), new_zone("Müller.example"))
        .await
        .unwrap();
    let zone = store
        .zone_by_name(&name("xn--mller-kva.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zone.name.to_unicode(), "müller.example");
    store
        .create_user(&admin(), new_user("alice"))
        .await
        .unwrap();
    let host = store
        .add_host(&admin(), new_host("BÜCHER.müller.example", "alice"), None)
        .await
        .unwrap();
    assert_eq!(host.fqdn.as_str(), "xn--bcher-kva.xn--mller-kva.example");
    assert_eq!(host.label, "xn--bcher-kva");
    assert_eq!(host.fqdn.to_unicode(), "bücher.müller.example");
    let found = store
        .host_by_fqdn(&name("bücher.MÜLLER.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, host.id);
    let err = store
        .add_host(
            &admin(),
            new_host("xn--bcher-kva.xn--mller-kva.example", "alice"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateHost { .. }));
}

/// The packed page reader (`group_concat` on SQLite, `GROUP_CONCAT` on
/// MariaDB) returns exactly the stored records, across id-range chunks, with
/// holes from deleted records and RDATA that holds spaces and escapes.
async fn static_record_pages_match_the_records(store: &Store) {
    const COUNT: usize = 45_000; // more than two 20k-id chunks
    let records: Vec<NewRecord> = (0..COUNT)
        .map(|i| match i % 7 {
            0 => record(
                &format!("t{i}.pages.example"),
                RecordType::Txt,
                &format!("\"two words {i}\" \"quote \\\" and \\255\""),
            ),
            1 => record(
                &format!("m{i}.pages.example"),
                RecordType::Mx,
                "10 mail.pages.example.",
            ),
            _ => record(
                &format!("h{i}.pages.example"),
                RecordType::A,
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            ),
        })
        .collect();
    store
        .import_zone(&admin(), new_zone("pages.example"), records, false)
        .await
        .unwrap();
    // A hole in the ids: the reader skips it.
    store
        .remove_records(
            &admin(),
            &name("pages.example"),
            &name("h2.pages.example"),
            None,
        )
        .await
        .unwrap();
    let expected = store.list_records(&name("pages.example")).await.unwrap();
    let mut pages = store
        .static_record_pages(&name("pages.example"))
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next_batch().await.unwrap() {
        assert!(!page.is_empty());
        count += 1;
        read.extend(page.to_records().unwrap());
    }
    assert!(count >= 3, "{count} pages");
    assert_eq!(read.len(), expected.len());
    for (got, want) in read.iter().zip(&expected) {
        assert_eq!(got.owner, want.owner.as_str());
        assert_eq!(got.rtype, want.rtype);
        assert_eq!(got.ttl, want.ttl);
        assert_eq!(got.rdata, want.rdata);
    }
    // An empty zone has no pages.
    store
        .add_zone(&admin(), new_zone("empty.example"))
        .await
        .unwrap();
    let mut empty = store
        .static_record_pages(&name("empty.example"))
        .await
        .unwrap();
    assert!(empty.next_batch().await.unwrap().is_none());
}

async fn bulk_import(store: &Store) {
    const COUNT: usize = 100_000;
    store
        .create_user(&admin(), new_user("alice"))
        .await
        .unwrap();
    let records: Vec<NewRecord> = (0..COUNT)
        .map(|i| {
            if i.is_multiple_of(10) {
                record(
                    &format!("t{i}.bulk.example"),
                    RecordType::Txt,
                    &format!("\"value {i}\""),
                )
            } else {
                record(
                    &format!("h{i}.bulk.example"),
                    RecordType::A,
                    &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                )
            }
        })
        .collect();
    let started = Instant::now();
    let summary = store
        .import_zone(&admin(), new_zone("bulk.example"), records, false)
        .await
        .unwrap();
    eprintln!(
        "{:?}: imported {COUNT} records in {:?}",
        store.backend(),
        started.elapsed()
    );
    assert!(summary.created);
    assert_eq!(summary.records, COUNT as u64);
    let stored = store.list_records(&name("bulk.example")).await.unwrap();
    assert_eq!(stored.len(), COUNT);
    assert_eq!(stored[1].owner.as_str(), "h1.bulk.example");
    assert_eq!(stored[1].rdata, "10.0.0.1");
    assert_eq!(
        stored[COUNT - 1].owner.as_str(),
        format!("h{}.bulk.example", COUNT - 1)
    );

    // One bad record rejects the whole import and changes nothing.
    let serial = serial_of(store, "bulk.example").await;
    let log = store.latest_serial().await.unwrap();
    let bad = vec![
        record("ok.bulk.example", RecordType::A, "192.0.2.1"),
        record("bad.bulk.example", RecordType::Aaaa, "192.0.2.1"),
    ];
    assert!(matches!(
        store
            .import_zone(&admin(), new_zone("bulk.example"), bad, true)
            .await,
        Err(StoreError::InvalidRecord { .. })
    ));
    // A record at a host's name is refused after the insert, and rolled back.
    store
        .add_host(&admin(), new_host("dyn.bulk.example", "alice"), None)
        .await
        .unwrap();
    let serial = serial.wrapping_add(1);
    let log = log + 1;
    let clash = vec![record("dyn.bulk.example", RecordType::A, "192.0.2.1")];
    assert!(matches!(
        store
            .import_zone(&admin(), new_zone("bulk.example"), clash, true)
            .await,
        Err(StoreError::NameClash { .. })
    ));
    let cname_clash = vec![record("h1.bulk.example", RecordType::Cname, "x.example.")];
    assert!(matches!(
        store
            .import_zone(&admin(), new_zone("bulk.example"), cname_clash, false)
            .await,
        Err(StoreError::InvalidRecord { .. })
    ));
    assert_eq!(
        store
            .list_records(&name("bulk.example"))
            .await
            .unwrap()
            .len(),
        COUNT
    );
    assert_eq!(serial_of(store, "bulk.example").await, serial);
    assert!(store.latest_serial().await.unwrap() >= log);
    assert_eq!(store.changes_since(log, 10).await.unwrap(), []);

    // Replace.
    let small: Vec<NewRecord> = (0..10)
        .map(|i| record(&format!("n{i}.bulk.example"), RecordType::A, "192.0.2.2"))
        .collect();
    let summary = store
        .import_zone(&admin(), new_zone("bulk.example"), small, true)
        .await
        .unwrap();
    assert!(!summary.created);
    assert_eq!(summary.zone.serial, serial.wrapping_add(1));
    assert_eq!(
        store
            .list_records(&name("bulk.example"))
            .await
            .unwrap()
            .len(),
        10
    );
    // Append.
    store
        .import_zone(
            &admin(),
            new_zone("bulk.example"),
            vec![record("m.bulk.example", RecordType::Mx, "5 mx.example.")],
            false,
        )
        .await
        .unwrap();
    let all = store.list_records(&name("bulk.example")).await.unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].rtype, RecordType::Mx);
}

async fn load_all_pages(store: &Store) {
    zone_and_user(store).await;
    store
        .add_zone(&admin(), new_zone("second.example"))
        .await
        .unwrap();
    store
        .add_record(
            &admin(),
            &name("second.example"),
            record("www.second.example", RecordType::Aaaa, "2001:db8::5"),
        )
        .await
        .unwrap();
    for i in 0..10u8 {
        let zone = if i.is_multiple_of(2) {
            "dyn.example.org"
        } else {
            "second.example"
        };
        let mut host = new_host(&format!("p{i}.{zone}"), "alice");
        host.ipv4 = Some(Ipv4Addr::new(192, 0, 2, i));
        store.add_host(&admin(), host, None).await.unwrap();
        if i.is_multiple_of(3) {
            store
                .set_host_txt(
                    &admin(),
                    &name(&format!("p{i}.{zone}")),
                    vec![format!("a{i}"), format!("b{i}")],
                )
                .await
                .unwrap();
        }
    }
    let load = store.load_all().await.unwrap();
    assert_eq!(load.serial, store.latest_serial().await.unwrap());
    assert_eq!(load.zones.len(), 2);
    let second = load
        .zones
        .iter()
        .find(|z| z.zone.name.as_str() == "second.example")
        .unwrap();
    assert_eq!(second.records.len(), 1);
    assert_eq!(second.zone.ns.len(), 2);

    let mut pages = store.host_pages(3);
    let mut seen = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next_batch().await.unwrap() {
        assert!(page.len() <= 3);
        page_count += 1;
        seen.extend(page);
    }
    assert_eq!(page_count, 4);
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id));
    for host in &seen {
        let i: u8 = host.fqdn.as_str()[1..]
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(host.ipv4, Some(Ipv4Addr::new(192, 0, 2, i)));
        let expected: Vec<String> = if i.is_multiple_of(3) {
            vec![format!("a{i}"), format!("b{i}")]
        } else {
            vec![]
        };
        assert_eq!(host.txt, expected, "{}", host.fqdn);
    }
    let mut all = load.hosts;
    assert_eq!(all.next_batch().await.unwrap().unwrap().len(), 10);
    assert!(all.next_batch().await.unwrap().is_none());

    // The packed pages give the same hosts: flags, IPv6, a hole in the ids.
    let mut update = address_update("p4.dyn.example.org", Ipv4Addr::new(192, 0, 2, 44));
    update.ipv6 = Some(Some("2001:db8::4".parse().unwrap()));
    update.wildcard = Some(true);
    update.offline = Some(true);
    store.update_host(update).await.unwrap();
    store
        .set_host_flags(
            &admin(),
            &name("p5.second.example"),
            HostFlags {
                disabled: Some("abuse".into()),
                ..HostFlags::default()
            },
        )
        .await
        .unwrap();
    store
        .remove_host(&admin(), &name("p7.second.example"))
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut pages = store.host_pages(100);
    while let Some(page) = pages.next_batch().await.unwrap() {
        expected.extend(page);
    }
    assert_eq!(expected.len(), 9);
    let mut packed = store.served_host_pages_sized(4).await.unwrap();
    let mut served = Vec::new();
    let mut page_count = 0;
    while let Some(page) = packed.next_batch().await.unwrap() {
        page_count += 1;
        for host in page {
            let zone = packed.zone(host.zone_id).unwrap().clone();
            served.push((zone, host));
        }
    }
    assert_eq!(page_count, 3, "ids 1-4, 5-8, 9-10");
    assert_eq!(served.len(), expected.len());
    for ((zone, got), want) in served.iter().zip(&expected) {
        assert_eq!(got.id, want.id);
        assert_eq!(zone, &want.zone);
        assert_eq!(got.label, want.label);
        assert_eq!(got.state.ipv4, want.ipv4);
        assert_eq!(got.state.ipv6, want.ipv6);
        assert_eq!(got.state.txt, want.txt);
        assert_eq!(got.state.wildcard, want.flags.wildcard);
        assert_eq!(got.state.offline, want.flags.offline);
        assert_eq!(
            got.state.disabled,
            want.flags.disabled.is_some(),
            "{}",
            want.fqdn
        );
    }
    assert!(
        served
            .iter()
            .any(|(_, h)| h.state.wildcard && h.state.offline && h.state.ipv6.is_some())
    );
    assert!(served.iter().any(|(_, h)| h.state.disabled));
    assert!(served.iter().any(|(_, h)| !h.state.txt.is_empty()));
}

/// The updater's store calls: credentials with the stored hash, one
/// transaction for many hosts (per-item errors, change log, audit with old
/// and new addresses), and batched last-seen times.
async fn updater_batch_credentials_and_seen(store: &Store) {
    zone_and_user(store).await;
    for h in ["a", "b", "c"] {
        store
            .add_host(
                &admin(),
                new_host(&format!("{h}.dyn.example.org"), "alice"),
                None,
            )
            .await
            .unwrap();
    }
    let a = name("a.dyn.example.org");
    let cred = store.host_credential(&a).await.unwrap().unwrap();
    assert_eq!((cred.owner.as_str(), cred.owner_active), ("alice", true));
    assert!(cred.secret.verify_blocking("s3cret"));
    assert!(!cred.secret.verify_blocking("wrong"));
    assert!(!format!("{cred:?}").contains("argon2"), "{cred:?}");
    assert!(
        store
            .host_credential(&name("nope.dyn.example.org"))
            .await
            .unwrap()
            .is_none()
    );
    store
        .set_host_flags(
            &admin(),
            &name("c.dyn.example.org"),
            HostFlags {
                disabled: Some("spam".into()),
                ..HostFlags::default()
            },
        )
        .await
        .unwrap();

    let serial = store.latest_serial().await.unwrap();
    let zone_serial = serial_of(store, "dyn.example.org").await;
    let update = |fqdn: &str, v4: Option<&str>, v6: Option<&str>| HostUpdate {
        fqdn: name(fqdn),
        ipv4: v4.map(|a| Some(a.parse().unwrap())),
        ipv6: v6.map(|a| Some(a.parse().unwrap())),
        offline: Some(false),
        wildcard: None,
        actor: admin(),
        user_agent: "test-agent/1\n".into(),
    };
    let results = store
        .update_hosts(&[
            update("a.dyn.example.org", Some("192.0.2.1"), None),
            update("nope.dyn.example.org", Some("192.0.2.2"), None),
            update("b.dyn.example.org", None, Some("2001:db8::b")),
            update("c.dyn.example.org", Some("192.0.2.3"), None),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    let first = results[0].as_ref().unwrap();
    assert!(first.changed);
    assert_eq!(first.ipv4, Some("192.0.2.1".parse().unwrap()));
    assert!(matches!(results[1], Err(StoreError::UnknownHost { .. })));
    assert_eq!(
        results[2].as_ref().unwrap().ipv6,
        Some("2001:db8::b".parse().unwrap())
    );
    assert!(matches!(results[3], Err(StoreError::HostDisabled { .. })));
    // Two changes, one serial bump for the zone, in one transaction.
    let changes = store.changes_since(serial, 100).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.iter().all(|c| c.kind == ChangeKind::HostChanged));
    assert_eq!(serial_of(store, "dyn.example.org").await, zone_serial + 1);
    let audit = store.recent_audit(10).await.unwrap();
    let row = audit
        .iter()
        .find(|e| e.action == "host.update" && e.target == "a.dyn.example.org")
        .unwrap();
    assert_eq!(
        row.detail,
        "ipv4=-->192.0.2.1 ipv6=-->- wildcard=false offline=false agent=\"test-agent/1\""
    );
    assert_eq!(row.address.as_deref(), Some("192.0.2.7"));

    // The same again changes nothing and writes no change-log entry.
    let serial = store.latest_serial().await.unwrap();
    let again = store
        .update_hosts(&[update("a.dyn.example.org", Some("192.0.2.1"), None)])
        .await
        .unwrap();
    assert!(!again[0].as_ref().unwrap().changed);
    assert_eq!(store.latest_serial().await.unwrap(), serial);

    // A batch across two zones bumps each zone's serial once.
    store
        .add_zone(&admin(), new_zone("two.example.org"))
        .await
        .unwrap();
    store
        .add_host(&admin(), new_host("x.two.example.org", "alice"), None)
        .await
        .unwrap();
    let (one, two) = (
        serial_of(store, "dyn.example.org").await,
        serial_of(store, "two.example.org").await,
    );
    let both = store
        .update_hosts(&[
            update("a.dyn.example.org", Some("192.0.2.11"), None),
            update("x.two.example.org", Some("192.0.2.12"), None),
            update("b.dyn.example.org", Some("192.0.2.13"), None),
        ])
        .await
        .unwrap();
    assert!(both.iter().all(|r| r.as_ref().unwrap().changed));
    assert_eq!(serial_of(store, "dyn.example.org").await, one + 1);
    assert_eq!(serial_of(store, "two.example.org").await, two + 1);

    // Last-seen times in one statement, never backwards.
    let b = store
        .host_credential(&name("b.dyn.example.org"))
        .await
        .unwrap()
        .unwrap();
    store
        .record_seen(&[cred.id, b.id], 4_000_000_000)
        .await
        .unwrap();
    store.record_seen(&[cred.id], 5).await.unwrap();
    store.record_seen(&[], 5).await.unwrap();
    let host = store.host_by_fqdn(&a).await.unwrap().unwrap();
    assert_eq!(host.last_seen_at, Some(4_000_000_000));
}

/// The group commit (`Store::update_host`): many concurrent writers with one
/// change each; every one gets its own result and the serial of its own
/// change-log entry, and the log holds exactly their changes.
async fn group_commit_gives_each_writer_its_serial(store: &Store) {
    const HOSTS: usize = 20;
    const ROUNDS: usize = 5;
    zone_and_user(store).await;
    add_hosts(store, (0..HOSTS).map(|h| format!("g{h}.dyn.example.org"))).await;
    let start = store.latest_serial().await.unwrap();
    let zone_serial = serial_of(store, "dyn.example.org").await;
    let mut tasks = Vec::new();
    for h in 0..HOSTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for round in 0..ROUNDS {
                let outcome = store
                    .update_host(address_update(
                        &format!("g{h}.dyn.example.org"),
                        Ipv4Addr::new(10, 0, h as u8, round as u8),
                    ))
                    .await
                    .unwrap();
                assert!(outcome.changed);
                assert_eq!(
                    outcome.ipv4,
                    Some(Ipv4Addr::new(10, 0, h as u8, round as u8))
                );
                serials.push(outcome.serial.expect("a change has a serial"));
            }
            (h, serials)
        }));
    }
    let mut mine = Vec::new();
    for task in tasks {
        mine.push(task.await.unwrap());
    }
    // An unchanged update commits nothing and has no serial.
    let same = store
        .update_host(address_update(
            "g0.dyn.example.org",
            Ipv4Addr::new(10, 0, 0, (ROUNDS - 1) as u8),
        ))
        .await
        .unwrap();
    assert!(!same.changed);
    assert_eq!(same.serial, None);
    // Refusals are per caller.
    let unknown = store
        .update_host(address_update(
            "nope.dyn.example.org",
            Ipv4Addr::new(10, 9, 9, 9),
        ))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownHost { .. })),
        "{unknown:?}"
    );

    let log = store.changes_since(start, 10_000).await.unwrap();
    assert_eq!(
        log.len(),
        HOSTS * ROUNDS,
        "one entry per acknowledged change"
    );
    let by_serial: std::collections::HashMap<u64, String> = log
        .iter()
        .map(|c| (c.serial, c.name.as_str().to_owned()))
        .collect();
    for (h, serials) in &mine {
        // Each writer's serials name its own host, in its commit order.
        assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
        for serial in serials {
            assert_eq!(by_serial[serial], format!("g{h}.dyn.example.org"));
        }
        let host = store
            .host_by_fqdn(&name(&format!("g{h}.dyn.example.org")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            host.ipv4,
            Some(Ipv4Addr::new(10, 0, *h as u8, (ROUNDS - 1) as u8))
        );
    }
    // The zone's SOA serial moved forward (once per transaction, so by at
    // least one and at most once per change).
    let moved = serial_of(store, "dyn.example.org")
        .await
        .wrapping_sub(zone_serial);
    assert!((1..=(HOSTS * ROUNDS) as u32).contains(&moved), "{moved}");
    assert!(store.group_commit_batches() >= 1);

    // One host twice in one batch: the second item applies to the first's
    // result, each with its own entry and audit row.
    let g1 = "g1.dyn.example.org";
    let twice = store
        .update_hosts(&[
            address_update(g1, Ipv4Addr::new(10, 1, 1, 1)),
            address_update(g1, Ipv4Addr::new(10, 1, 1, 2)),
        ])
        .await
        .unwrap();
    let first = twice[0].as_ref().unwrap();
    let second = twice[1].as_ref().unwrap();
    assert!(first.changed && second.changed);
    assert!(first.serial.unwrap() < second.serial.unwrap());
    let host = store.host_by_fqdn(&name(g1)).await.unwrap().unwrap();
    assert_eq!(host.ipv4, Some(Ipv4Addr::new(10, 1, 1, 2)));
    let audit = store.recent_audit(2).await.unwrap();
    assert!(
        audit[0].detail.starts_with("ipv4=10.1.1.1->10.1.1.2 "),
        "{audit:?}"
    );
    assert!(
        audit[1]
            .detail
            .starts_with(&format!("ipv4=10.0.1.{}->10.1.1.1 ", ROUNDS - 1)),
        "{audit:?}"
    );
}

/// One write of a group fails in the database (a trigger refuses it): that
/// writer gets the error, the others commit, and the log and the audit hold
/// only what committed.
async fn group_commit_isolates_a_failing_write(store: &Store) {
    zone_and_user(store).await;
    add_hosts(
        store,
        ["a", "b", "c", "bad"].map(|h| format!("{h}.dyn.example.org")),
    )
    .await;
    let update = |h: &str, last: u8| {
        address_update(
            &format!("{h}.dyn.example.org"),
            Ipv4Addr::new(192, 0, 2, last),
        )
    };
    let start = store.latest_serial().await.unwrap();

    // One batch, deterministically: the refused item sits between others.
    let results = store
        .update_hosts(&[update("a", 1), update("bad", 2), update("b", 3)])
        .await
        .expect("the transaction itself commits");
    assert_eq!(results.len(), 3);
    let a = results[0].as_ref().unwrap();
    assert!(a.changed);
    assert!(
        matches!(&results[1], Err(e) if e.is_statement_failure()),
        "{:?}",
        results[1]
    );
    let b = results[2].as_ref().unwrap();
    assert!(b.changed);
    let log = store.changes_since(start, 100).await.unwrap();
    let names: Vec<(&str, u64)> = log.iter().map(|c| (c.name.as_str(), c.serial)).collect();
    assert_eq!(
        names,
        vec![
            ("a.dyn.example.org", a.serial.unwrap()),
            ("b.dyn.example.org", b.serial.unwrap())
        ]
    );
    let bad = store
        .host_by_fqdn(&name("bad.dyn.example.org"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bad.ipv4, None, "the refused update left nothing behind");
    let audit = store.recent_audit(20).await.unwrap();
    assert!(
        !audit
            .iter()
            .any(|e| e.target == "bad.dyn.example.org" && e.action == "host.update")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.target == "b.dyn.example.org" && e.action == "host.update")
    );

    // Concurrent single writers through the group commit: the refused one
    // fails alone, whatever groups the writes land in.
    let start = store.latest_serial().await.unwrap();
    let mut tasks = Vec::new();
    for (i, h) in ["a", "bad", "b", "c", "bad", "a"].into_iter().enumerate() {
        let store = store.clone();
        let update = update(h, 10 + i as u8);
        tasks.push(tokio::spawn(
            async move { (h, store.update_host(update).await) },
        ));
    }
    let mut committed = Vec::new();
    for task in tasks {
        let (h, result) = task.await.unwrap();
        match (h, result) {
            ("bad", Err(e)) => assert!(e.is_statement_failure(), "{e}"),
            ("bad", Ok(o)) => panic!("the refused write was acknowledged: {o:?}"),
            (_, Ok(o)) => committed.push(o.serial.expect("changed")),
            (h, Err(e)) => panic!("{h} failed with its group: {e}"),
        }
    }
    committed.sort_unstable();
    let log: Vec<u64> = store
        .changes_since(start, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(
        log, committed,
        "the log holds exactly the acknowledged changes"
    );
}
