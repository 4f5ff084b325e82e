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

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row};

use crate::error::StoreError;
use crate::feed::HostState;
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
    ids: IdRange,
}

/// The ids a paged reader has still to read, in chunks.
#[derive(Debug)]
struct IdRange {
    next: i64,
    max: i64,
}

impl IdRange {
    /// The ids `sql` finds now: it selects the smallest and the largest
    /// id, each in a subquery of its own (with both aggregates in one
    /// SELECT, SQLite scans every row instead of reading the two ends of
    /// an index: 0.1 s at a million rows), and has `zone_id` bound to both
    /// subqueries if given.
    async fn of(
        conn: &mut AnyConnection,
        sql: &'static str,
        zone_id: Option<i64>,
    ) -> Result<IdRange, StoreError> {
        let mut query = sqlx::query(sql);
        if let Some(zone_id) = zone_id {
            query = query.bind(zone_id).bind(zone_id);
        }
        let row = query.fetch_one(&mut *conn).await?;
        let min: Option<i64> = row.try_get(0)?;
        let max: Option<i64> = row.try_get(1)?;
        Ok(IdRange {
            next: min.unwrap_or(1),
            max: max.unwrap_or(0),
        })
    }

    /// The next `from..to` of at most `chunk` ids, or `None` at the end.
    fn next_chunk(&mut self, chunk: i64) -> Option<(i64, i64)> {
        (self.next <= self.max).then(|| {
            let from = self.next;
            self.next = from.saturating_add(chunk);
            (from, self.next)
        })
    }

    /// An upper bound of the rows still to come.
    fn remaining(&self) -> usize {
        usize::try_from((self.max - self.next + 1).max(0)).unwrap_or(0)
    }
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
        Ok(StaticRecordPages {
            store: self.clone(),
            zone_id,
            ids: IdRange::of(
                &mut conn,
                // records_zone_id (migration 0002) orders ids by zone.
                "SELECT (SELECT MIN(id) FROM records WHERE zone_id = ?), \
                 (SELECT MAX(id) FROM records WHERE zone_id = ?)",
                Some(zone_id),
            )
            .await?,
        })
    }
}

impl StaticRecordPages {
    /// An upper bound of the records still to come (the id range left;
    /// exact for a zone imported at once), for sizing what they fill.
    pub fn remaining_hint(&self) -> usize {
        self.ids.remaining()
    }

    /// The next non-empty page, or `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<RecordPage>, StoreError> {
        // SQLite: `+zone_id` keeps the planner on the primary key range
        // instead of the (zone_id, owner) index, which would visit the
        // whole zone for each chunk.
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
        let mut conn = packed_connection(&self.store).await?;
        while let Some((from, to)) = self.ids.next_chunk(CHUNK_IDS) {
            if let Some((text, count)) =
                packed(&mut conn, sql, from, to, Some(self.zone_id)).await?
            {
                return Ok(Some(RecordPage { text, count }));
            }
        }
        Ok(None)
    }
}

/// A pooled connection ready for packed reads. MySQL/MariaDB cap
/// GROUP_CONCAT's result by group_concat_max_len (1024 by default), raised
/// for this connection only.
async fn packed_connection(store: &Store) -> Result<PoolConnection<Any>, StoreError> {
    let mut conn = store.pool.acquire().await?;
    if store.backend() == Backend::MySql {
        sqlx::query(AssertSqlSafe("SET SESSION group_concat_max_len = 67108864"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(conn)
}

/// One packed row: `sql` selects `COUNT(*)` and the group-concatenated
/// lines of the ids in `from..to` (and the zone, if given). Returns the
/// text and its line count, or `None` for a range without rows.
async fn packed(
    conn: &mut AnyConnection,
    sql: &'static str,
    from: i64,
    to: i64,
    zone_id: Option<i64>,
) -> Result<Option<(String, usize)>, StoreError> {
    let mut query = sqlx::query(sql).bind(from).bind(to);
    if let Some(zone_id) = zone_id {
        query = query.bind(zone_id);
    }
    let row = query.fetch_one(&mut *conn).await?;
    let count: i64 = row.try_get(0)?;
    if count == 0 {
        return Ok(None); // a hole in the ids (deleted rows)
    }
    let text: String = match row.try_get::<Option<String>, _>(1) {
        Ok(text) => text.unwrap_or_default(),
        // MySQL reports GROUP_CONCAT over ASCII columns as binary.
        Err(_) => String::from_utf8(row.try_get::<Vec<u8>, _>(1)?)
            .map_err(|_| corrupt("a packed page is not UTF-8".into()))?,
    };
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    if lines as i64 != count {
        return Err(corrupt(format!(
            "a packed page holds {lines} of {count} rows"
        )));
    }
    Ok(Some((text, lines)))
}

/// A host as the responder serves it: what a start-up load needs, read
/// in packed pages like the static records (a million hosts read one row
/// each through sqlx took 7-9 s of CPU; see bench/README.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedHost {
    pub id: i64,
    /// See [`ServedHostPages::zone`].
    pub zone_id: i64,
    /// Relative to the zone, as stored.
    pub label: String,
    /// What the responder serves for it (the same type a pushed `Commit`
    /// carries).
    pub state: HostState,
}

/// Every host, in id ranges of [`CHUNK_IDS`].
#[derive(Debug)]
pub struct ServedHostPages {
    store: Store,
    zones: HashMap<i64, Name>,
    chunk: i64,
    ids: IdRange,
}

impl Store {
    /// Pages over every host, packed by the database.
    pub async fn served_host_pages(&self) -> Result<ServedHostPages, StoreError> {
        self.served_host_pages_sized(CHUNK_IDS).await
    }

    /// [`Store::served_host_pages`] with `chunk` ids per page (tests).
    #[doc(hidden)]
    pub async fn served_host_pages_sized(&self, chunk: i64) -> Result<ServedHostPages, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(ServedHostPages {
            store: self.clone(),
            ids: IdRange::of(
                &mut conn,
                "SELECT (SELECT MIN(id) FROM hosts), (SELECT MAX(id) FROM hosts)",
                None,
            )
            .await?,
            zones: zone_ids(&mut conn).await?,
            chunk: chunk.max(1),
        })
    }
}

async fn zone_ids(conn: &mut AnyConnection) -> Result<HashMap<i64, Name>, StoreError> {
    sqlx::query("SELECT id, name FROM zones")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, Name::from_db(row.try_get(1)?)?)))
        .collect()
}

impl ServedHostPages {
    /// The name of the zone with this id (zones as of the page that
    /// returned the id).
    pub fn zone(&self, id: i64) -> Option<&Name> {
        self.zones.get(&id)
    }

    /// An upper bound of the hosts still to come (the id range left).
    pub fn remaining_hint(&self) -> usize {
        self.ids.remaining()
    }

    /// The next non-empty page, or `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<ServedHost>>, StoreError> {
        let sql: &'static str = match self.store.backend() {
            Backend::Sqlite => {
                "SELECT COUNT(*), group_concat(id || ' ' || zone_id || ' ' || label || ' ' || \
                 coalesce(ipv4, '-') || ' ' || coalesce(ipv6, '-') || ' ' || \
                 wildcard || offline || disabled, char(10)) \
                 FROM hosts WHERE id >= ? AND id < ?"
            }
            Backend::MySql => {
                "SELECT COUNT(*), GROUP_CONCAT(CONCAT_WS(' ', id, zone_id, label, \
                 COALESCE(ipv4, '-'), COALESCE(ipv6, '-'), CONCAT(wildcard, offline, disabled)) \
                 ORDER BY id SEPARATOR '\\n') FROM hosts WHERE id >= ? AND id < ?"
            }
        };
        let mut conn = packed_connection(&self.store).await?;
        while let Some((from, to)) = self.ids.next_chunk(self.chunk) {
            let Some((text, count)) = packed(&mut conn, sql, from, to, None).await? else {
                continue;
            };
            let mut hosts = Vec::with_capacity(count);
            for line in text.split('\n') {
                hosts.push(parse_host_line(line)?);
            }
            // TXT tokens are few (ACME challenges in flight): one query.
            let txt = sqlx::query(
                "SELECT host_id, value FROM host_txt WHERE host_id >= ? AND host_id < ? \
                 ORDER BY host_id, position",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await?;
            for row in &txt {
                let id: i64 = row.try_get(0)?;
                if let Ok(i) = hosts.binary_search_by_key(&id, |h| h.id) {
                    hosts[i].state.txt.push(row.try_get(1)?);
                }
            }
            // A zone created after the pages began: learn its name.
            if hosts.iter().any(|h| !self.zones.contains_key(&h.zone_id)) {
                self.zones = zone_ids(&mut conn).await?;
            }
            return Ok(Some(hosts));
        }
        Ok(None)
    }
}

fn parse_host_line(line: &str) -> Result<ServedHost, StoreError> {
    let bad = || corrupt(format!("packed host line '{line}'"));
    let mut parts = line.split(' ');
    let mut next = || parts.next().ok_or_else(bad);
    let id = next()?.parse().map_err(|_| bad())?;
    let zone_id = next()?.parse().map_err(|_| bad())?;
    let label = next()?.to_owned();
    let ipv4 = match next()? {
        "-" => None,
        a => Some(a.parse().map_err(|_| bad())?),
    };
    let ipv6 = match next()? {
        "-" => None,
        a => Some(a.parse().map_err(|_| bad())?),
    };
    let flags = next()?.as_bytes();
    let [wildcard, offline, disabled] = flags else {
        return Err(bad());
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    let flag = |b: &u8| *b != b'0';
    Ok(ServedHost {
        id,
        zone_id,
        label,
        state: HostState {
            ipv4,
            ipv6,
            txt: Vec::new(),
            wildcard: flag(wildcard),
            offline: flag(offline),
            disabled: flag(disabled),
        },
    })
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
