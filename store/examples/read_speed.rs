//! Measures how fast static records can be read back from a SQLite
//! database made by `zone import`, one sqlx row per record, natively and
//! through the Any driver (the finding behind `store/src/bulk.rs`):
//!
//!     cargo run --release -p ddserver-store --example read_speed -- sqlite:///tmp/m1/dd.db
use sqlx::Row;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("sqlite URL");
    sqlx::any::install_default_drivers();
    for round in 0..2 {
        let pool = sqlx::sqlite::SqlitePool::connect(&url).await.unwrap();
        let t = Instant::now();
        let mut n = 0usize;
        let mut bytes = 0usize;
        let mut last = 0i64;
        loop {
            let rows = sqlx::query("SELECT id, owner, rtype, ttl, rdata FROM records WHERE id > ? AND +zone_id = 1 ORDER BY id LIMIT 10000")
                .bind(last).fetch_all(&pool).await.unwrap();
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let o: &str = r.get(1);
                let d: &str = r.get(4);
                bytes += o.len() + d.len();
                n += 1;
            }
            last = rows.last().unwrap().get(0);
        }
        println!(
            "round {round} native sqlite paged: {n} rows {bytes} bytes in {:?}",
            t.elapsed()
        );
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let t = Instant::now();
        let mut n = 0usize;
        let mut last = 0i64;
        loop {
            let rows = sqlx::query("SELECT id, owner, rtype, ttl, rdata FROM records WHERE id > ? AND +zone_id = 1 ORDER BY id LIMIT 10000")
                .bind(last).fetch_all(&pool).await.unwrap();
            if rows.is_empty() {
                break;
            }
            n += rows.len();
            last = rows.last().unwrap().get(0);
        }
        println!("round {round} any paged: {n} rows in {:?}", t.elapsed());
    }
}
