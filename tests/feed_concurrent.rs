//! Writers and a reader at once, black-box: writers commit through the
//! store library (pushing to the responder's control socket, as the
//! updater does) and through the admin CLI, while a reader queries the
//! responder over UDP. Every answer must be a state that was committed (or
//! was being committed), and the responder must converge on the last one.
//! SQLite and MariaDB.

mod common;
mod feed_harness;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use ddserver_store::{Actor, Name, PushOptions, Store};
use feed_harness::{Backend, Setup, ZONE, query_a, wait_for};

const HOSTS: u8 = 4;
const UPDATES: u32 = 120;
const CLI_HOSTS: usize = 6;

fn address(host: u8, version: u32) -> [u8; 4] {
    [10, host, (version >> 8) as u8, version as u8]
}

fn writers_and_a_reader(backend: Backend) {
    let s = Setup::new(backend, "[feed]\npoll_interval_ms = 200\n");
    let config = s.scratch.config.clone();
    for h in 0..HOSTS {
        let ip = address(h, 0);
        s.add_host(&config, &format!("c{h}"), &Ipv4Addr::from(ip).to_string());
    }
    let port = s.scratch.dns_port;
    let _responder = s.scratch.start(&["responder"], &format!("c0.{ZONE}"));

    // Highest version each library writer has started to commit: an answer
    // newer than that was never committed.
    let started: Arc<Vec<AtomicU32>> = Arc::new((0..HOSTS).map(|_| AtomicU32::new(0)).collect());
    let cli_started: Arc<Vec<AtomicBool>> =
        Arc::new((0..CLI_HOSTS).map(|_| AtomicBool::new(false)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (started, cli_started, done) = (started.clone(), cli_started.clone(), done.clone());
        std::thread::spawn(move || {
            let mut answers = 0u64;
            while !done.load(Ordering::Relaxed) {
                for h in 0..HOSTS {
                    let Some((rcode, addrs)) = query_a(port, &format!("c{h}.{ZONE}")) else {
                        continue;
                    };
                    // Read after the answer: it bounds what was committed.
                    let newest = started[h as usize].load(Ordering::SeqCst);
                    assert_eq!(rcode, 0, "c{h} vanished");
                    assert_eq!(addrs.len(), 1, "c{h}: {addrs:?}");
                    let [a, b, hi, lo] = addrs[0];
                    let version = u32::from(hi) << 8 | u32::from(lo);
                    assert!(
                        a == 10 && b == h && version <= newest,
                        "c{h} answered {:?}, never committed (newest started {newest})",
                        addrs[0]
                    );
                    answers += 1;
                }
                for n in 0..CLI_HOSTS {
                    let Some((rcode, addrs)) = query_a(port, &format!("n{n}.{ZONE}")) else {
                        continue;
                    };
                    let was_started = cli_started[n].load(Ordering::SeqCst);
                    match rcode {
                        3 => assert!(addrs.is_empty()),
                        0 => {
                            assert!(was_started, "n{n} answered before it was added");
                            assert_eq!(addrs, vec![[192, 0, 2, 100 + n as u8]]);
                        }
                        other => panic!("n{n}: rcode {other}"),
                    }
                    answers += 1;
                }
            }
            answers
        })
    };

    {
        let cli_started = cli_started.clone();
        let config = config.clone();
        let s = &s;
        std::thread::scope(|scope| {
            let cli = scope.spawn(move || {
                for n in 0..CLI_HOSTS {
                    cli_started[n].store(true, Ordering::SeqCst);
                    s.add_host(&config, &format!("n{n}"), &format!("192.0.2.{}", 100 + n));
                }
            });
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let store = Store::connect(&s.url).await.unwrap();
                let stats = store.push_to(s.control_socket(), PushOptions::default());
                let mut tasks = Vec::new();
                for h in 0..HOSTS {
                    let (store, started) = (store.clone(), started.clone());
                    tasks.push(tokio::spawn(async move {
                        let fqdn = Name::parse(&format!("c{h}.{ZONE}")).unwrap();
                        for version in 1..=UPDATES {
                            started[h as usize].store(version, Ordering::SeqCst);
                            let ip = Ipv4Addr::from(address(h, version));
                            store
                                .update_host_addresses(&Actor::cli(), &fqdn, Some(Some(ip)), None)
                                .await
                                .unwrap();
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                assert!(store.flush_pushes(Duration::from_secs(5)).await);
                assert!(
                    stats.sent.load(Ordering::Relaxed) > 0,
                    "pushes reached the socket"
                );
                store.close().await;
            });
            cli.join().unwrap();
        });
    }

    // Converges on the last committed state.
    for h in 0..HOSTS {
        wait_for(
            port,
            &format!("c{h}"),
            Some(address(h, UPDATES)),
            Duration::from_secs(15),
        );
    }
    for n in 0..CLI_HOSTS {
        wait_for(
            port,
            &format!("n{n}"),
            Some([192, 0, 2, 100 + n as u8]),
            Duration::from_secs(15),
        );
    }
    done.store(true, Ordering::Relaxed);
    let answers = reader.join().expect("the reader saw only committed states");
    assert!(answers > 100, "the reader ran ({answers} answers)");
}

mod sqlite {
    #[test]
    fn writers_and_a_reader() {
        super::writers_and_a_reader(super::Backend::Sqlite)
    }
}

mod mariadb {
    #[test]
    fn writers_and_a_reader() {
        super::writers_and_a_reader(super::Backend::MariaDb)
    }
}
