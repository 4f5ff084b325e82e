//! Bulk reads for loading a responder: every static record of a zone, fast.
//!
//! sqlx hands rows over one at a time (measured here: 3.5-7 µs per row on
//! SQLite, native driver or Any, for 1.1M records), which makes a one row
//! per record read take seconds at a million names. The database itself
//! walks the same rows in a fraction of that, so we let it pack each id
//! range of records into one text value (`group_concat`), one line per
//! record, and split the lines here: a million records arrive as a few
//! dozen rows (1.8 s of SQLite work against 7 s through sqlx per row, same
//! machine and run).
//!
//! The stored text is the store's own normalised form (validated on the way
//! in), so no field holds a space except the RDATA at the end of a line, and
//! no value holds a newline (character-strings escape control octets as
//! `\DDD`). This module reads only; it must never be used to write.

use sqlx::{AssertSqlSafe, Row};

use crate::error::StoreError;
use crate::model::Backend;
use crate::name::Name;
use crate::record::RecordType;
use crate::store::{Store, corrupt};
use crate::zones::fetch_zone;

/// Record ids per packed row. A chunk of 20k records is about 1 MB of
/// text: well inside MySQL's default 16 MiB `max_allowed_packet`.
const CHUNK_IDS: i64 = 20_000;

/// A static record as stored, without re-validating its names: the bulk
/// load trusts what the store validated when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute owner, lower-case A-labels, no trailing dot.
    pub owner: String,
    pub rtype: RecordType,
    pub ttl: u32,
    /// Normalised presentation-form RDATA.
    pub rdata: String,
}

/// A stored record borrowed from a [`RecordPage`]: the bulk load reads a
/// million of them, and allocating two strings each cost more than the
/// database's own work (profile of the 1M-name start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecordRef<'a> {
    /// Absolute owner, lower-case A-labels, no trailing dot.
    pub owner: &'a str,
    pub rtype: RecordType,
    pub ttl: u32,
    /// Normalised presentation-form RDATA.
    pub rdata: &'a str,
}

impl StoredRecordRef<'_> {
    pub fn to_owned(&self) -> StoredRecord {
        StoredRecord {
            owner: self.owner.to_owned(),
            rtype: self.rtype,
            ttl: self.ttl,
            rdata: self.rdata.to_owned(),
        }
    }
}

/// One packed page of static records: the database's text, one line per
/// record, parsed as it is iterated.
#[derive(Debug)]
pub struct RecordPage {
    text: String,
    count: usize,
}

impl RecordPage {
    /// Records in this page.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in id order. A line that does not parse is an error
    /// (the store wrote it, so it means a corrupt or foreign database).
    pub fn iter(&self) -> impl Iterator<Item = Result<StoredRecordRef<'_>, StoreError>> + '_ {
        self.text.split('\n').map(parse_line)
    }

    /// The records as owned values.
    pub fn to_records(&self) -> Result<Vec<StoredRecord>, StoreError> {
        self.iter().map(|r| r.map(|r| r.to_owned())).collect()
    }
}

/// The static records of one zone in id ranges of [`CHUNK_IDS`].
#[derive(Debug)]
pub struct StaticRecordPages {
    store: Store,
    zone_id: i64,
    next_id: i64,
    max_id: i64,
}

impl Store {
    /// Pages over every static record of `zone`, packed by the database.
    pub async fn static_record_pages(&self, zone: &Name) -> Result<StaticRecordPages, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some((zone_id, _)) = fetch_zone(&mut conn, zone).await? else {
            return Err(StoreError::UnknownZone {
                name: zone.to_string(),
            });
        };
        let row = sqlx::query("SELECT MIN(id), MAX(id) FROM records WHERE zone_id = ?")
            .bind(zone_id)
            .fetch_one(&mut *conn)
            .await?;
        let min: Option<i64> = row.try_get(0)?;
        let max: Option<i64> = row.try_get(1)?;
        Ok(StaticRecordPages {
            store: self.clone(),
            zone_id,
            next_id: min.unwrap_or(1),
            max_id: max.unwrap_or(0),
        })
    }
}

impl StaticRecordPages {
    /// An upper bound of the records still to come (the id range left;
    /// exact for a zone imported at once), for sizing what they fill.
    pub fn remaining_hint(&self) -> usize {
        usize::try_from((self.max_id - self.next_id + 1).max(0)).unwrap_or(0)
    }

    /// The next non-empty page, or `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<RecordPage>, StoreError> {
        // SQLite: `+zone_id` keeps the planner on the primary key range
        // instead of the (zone_id, owner) index, which would visit the
        // whole zone for each chunk. MySQL/MariaDB: GROUP_CONCAT's result
        // is capped by group_concat_max_len (1024 by default), raised for
        // this connection only.
        let sql: &'static str = match self.store.backend() {
            Backend::Sqlite => {
                "SELECT COUNT(*), group_concat(owner || ' ' || ttl || ' ' || rtype || ' ' || rdata, char(10)) \
                 FROM records WHERE id >= ? AND id < ? AND +zone_id = ?"
            }
            Backend::MySql => {
                "SELECT COUNT(*), GROUP_CONCAT(CONCAT_WS(' ', owner, ttl, rtype, rdata) ORDER BY id SEPARATOR '\\n') \
                 FROM records WHERE id >= ? AND id < ? AND zone_id = ?"
            }
        };
        let mut conn = self.store.pool.acquire().await?;
        if self.store.backend() == Backend::MySql {
            sqlx::query(AssertSqlSafe("SET SESSION group_concat_max_len = 67108864"))
                .execute(&mut *conn)
                .await?;
        }
        while self.next_id <= self.max_id {
            let (from, to) = (self.next_id, self.next_id.saturating_add(CHUNK_IDS));
            self.next_id = to;
            let row = sqlx::query(sql)
                .bind(from)
                .bind(to)
                .bind(self.zone_id)
                .fetch_one(&mut *conn)
                .await?;
            let count: i64 = row.try_get(0)?;
            if count == 0 {
                continue; // a hole in the ids (deleted records)
            }
            let text: String = match row.try_get::<Option<String>, _>(1) {
                Ok(text) => text.unwrap_or_default(),
                // MySQL reports GROUP_CONCAT over ASCII columns as binary.
                Err(_) => String::from_utf8(row.try_get::<Vec<u8>, _>(1)?)
                    .map_err(|_| corrupt("packed static records are not UTF-8".into()))?,
            };
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            if lines as i64 != count {
                return Err(corrupt(format!(
                    "a packed page of static records holds {lines} of {count} records"
                )));
            }
            return Ok(Some(RecordPage { text, count: lines }));
        }
        Ok(None)
    }
}

fn parse_line(line: &str) -> Result<StoredRecordRef<'_>, StoreError> {
    let bad = || corrupt(format!("packed static record line '{line}'"));
    let mut parts = line.splitn(4, ' ');
    let owner = parts.next().ok_or_else(bad)?;
    let ttl = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let rtype = RecordType::parse(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
    let rdata = parts.next().ok_or_else(bad)?;
    Ok(StoredRecordRef {
        owner,
        rtype,
        ttl,
        rdata,
    })
}
