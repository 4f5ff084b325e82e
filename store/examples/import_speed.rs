//! Measures a 1M-record zone import and the full load afterwards, on the
//! database at the given URL (an empty SQLite file or MariaDB database):
//!
//!     cargo run --release -p ddserver-store --example import_speed -- sqlite:///tmp/import.db
//!     cargo run --release -p ddserver-store --example import_speed -- mysql://root@127.0.0.1/speed
//!
//! A measurement, not a test: numbers go to bench/README.md.
use std::time::Instant;

use ddserver_store::{Actor, Name, NewRecord, NewZone, RecordType, Store};

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: import_speed DATABASE_URL");
    let count: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse().expect("a record count"))
        .unwrap_or(1_000_000);
    let store = Store::connect(&url).await.expect("database opens");
    store.migrate().await.expect("migrations apply");
    let zone = Name::parse("million.example").unwrap();
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            owner: Name::parse(&format!("h{i}.million.example")).unwrap(),
            rtype: RecordType::A,
            ttl: Some(60),
            rdata: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
        })
        .collect();
    let actor = Actor::cli();
    let started = Instant::now();
    let ns = vec![Name::parse("ns1.million.example").unwrap()];
    let summary = store
        .import_zone(&actor, NewZone::new(zone.clone(), ns), records, true)
        .await
        .expect("import");
    println!(
        "{:?}: imported {} records in {:?}",
        store.backend(),
        summary.records,
        started.elapsed()
    );
    let started = Instant::now();
    let mut pages = store.static_record_pages(&zone).await.expect("pages");
    let mut read = 0;
    while let Some(page) = pages.next_batch().await.expect("a page") {
        read += page.len();
    }
    println!(
        "{:?}: read {read} records back in packed pages in {:?}",
        store.backend(),
        started.elapsed()
    );
}
