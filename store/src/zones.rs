//! Zones, their SOA fields and NS sets, and static records including the
//! bulk import.
//!
//! All input (names, TTLs, RDATA) is validated before the write transaction
//! starts, so bad input never changes anything. The import must stay a
//! streaming, multi-row INSERT: never one statement per record, never one
//! transaction per record.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::error::{StoreError, UniqueKey, unique_violation};
use crate::model::{Actor, ChangeKind, NewRecord, NewZone, Record, SoaTimers, Zone};
use crate::name::Name;
use crate::record::{RecordType, normalize_rdata};
use crate::store::{Store, audit, corrupt, get_u32, log_changes, multi_row_insert, now, to_u32};

/// RFC 2181 section 8: TTLs are 31-bit.
const MAX_TTL: u32 = 0x7fff_ffff;

/// Rows per INSERT in the bulk import: 6 parameters each, 6000 per
/// statement, well under SQLite's 32766 and MySQL's 65535 placeholders.
const RECORD_ROWS_PER_INSERT: usize = 1000;

macro_rules! zone_columns {
    () => {
        "id, name, mname, rname, serial, refresh, retry, expire, minimum, soa_ttl, default_ttl, created_at"
    };
}

fn zone_from_row(row: &AnyRow) -> Result<(i64, Zone), StoreError> {
    Ok((
        row.try_get(0)?,
        Zone {
            name: Name::from_db(row.try_get(1)?)?,
            mname: Name::from_db(row.try_get(2)?)?,
            rname: Name::from_db(row.try_get(3)?)?,
            serial: get_u32(row, 4)?,
            timers: SoaTimers {
                refresh: get_u32(row, 5)?,
                retry: get_u32(row, 6)?,
                expire: get_u32(row, 7)?,
                minimum: get_u32(row, 8)?,
                soa_ttl: get_u32(row, 9)?,
            },
            ns: Vec::new(),
            default_ttl: get_u32(row, 10)?,
            created_at: row.try_get(11)?,
        },
    ))
}

async fn load_ns(conn: &mut AnyConnection, zone_id: i64) -> Result<Vec<Name>, StoreError> {
    let rows = sqlx::query("SELECT name FROM zone_ns WHERE zone_id = ? ORDER BY position")
        .bind(zone_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok(Name::from_db(r.try_get(0)?)?))
        .collect()
}

/// The zone of that exact apex, with its id.
pub(crate) async fn fetch_zone(
    conn: &mut AnyConnection,
    name: &Name,
) -> Result<Option<(i64, Zone)>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        zone_columns!(),
        " FROM zones WHERE name = ?"
    ))
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (id, mut zone) = zone_from_row(&row)?;
    zone.ns = load_ns(conn, id).await?;
    Ok(Some((id, zone)))
}

/// The zone with the longest apex that `name` equals or lies below.
pub(crate) async fn fetch_zone_for(
    conn: &mut AnyConnection,
    name: &Name,
) -> Result<Option<(i64, Zone)>, StoreError> {
    let suffixes: Vec<&str> = name.suffixes().collect();
    // At most 127 suffixes (253 characters); the placeholder count is the
    // only variable part of the SQL.
    let placeholders = vec!["?"; suffixes.len()].join(", ");
    let sql = format!("SELECT id, name FROM zones WHERE name IN ({placeholders})");
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for suffix in &suffixes {
        query = query.bind(suffix.to_string());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut best: Option<String> = None;
    for row in &rows {
        let zone: String = row.try_get(1)?;
        if best.as_ref().is_none_or(|b| zone.len() > b.len()) {
            best = Some(zone);
        }
    }
    match best {
        Some(zone) => fetch_zone(conn, &Name::from_db(zone)?).await,
        None => Ok(None),
    }
}

fn validate_ttl(field: &'static str, ttl: u32) -> Result<(), StoreError> {
    if ttl > MAX_TTL {
        return Err(StoreError::InvalidInput {
            field,
            reason: format!("{ttl} is above 2147483647 (RFC 2181 section 8)"),
        });
    }
    Ok(())
}

/// Checks a new zone and returns its RNAME.
fn validate_zone(zone: &NewZone) -> Result<Name, StoreError> {
    if zone.name.is_wildcard() {
        return Err(StoreError::InvalidInput {
            field: "zone name",
            reason: "a zone apex cannot be a wildcard".to_owned(),
        });
    }
    if zone.ns.is_empty() {
        return Err(StoreError::InvalidInput {
            field: "name servers",
            reason: "a zone needs at least one NS".to_owned(),
        });
    }
    for (i, ns) in zone.ns.iter().enumerate() {
        if ns.is_wildcard() || zone.ns[..i].contains(ns) {
            return Err(StoreError::InvalidInput {
                field: "name servers",
                reason: format!("'{ns}' is a wildcard or listed twice"),
            });
        }
    }
    let t = &zone.timers;
    for (field, value) in [
        ("refresh", t.refresh),
        ("retry", t.retry),
        ("expire", t.expire),
        ("minimum", t.minimum),
        ("SOA TTL", t.soa_ttl),
        ("default TTL", zone.default_ttl),
    ] {
        validate_ttl(field, value)?;
    }
    match &zone.soa_rname {
        Some(rname) => Ok(rname.clone()),
        None => Ok(Name::parse(&format!("hostmaster.{}", zone.name))?),
    }
}

/// A record checked against its zone: owner inside, RDATA normalised.
struct CheckedRecord {
    owner: Name,
    rtype: RecordType,
    ttl: u32,
    rdata: String,
}

fn check_record(
    zone: &Name,
    default_ttl: u32,
    record: NewRecord,
) -> Result<CheckedRecord, StoreError> {
    let invalid = |reason: String| StoreError::InvalidRecord {
        owner: record.owner.to_string(),
        rtype: record.rtype.to_string(),
        reason,
    };
    if record.owner != *zone && !record.owner.is_below(zone) {
        return Err(StoreError::NotInZone {
            name: record.owner.to_string(),
            zone: zone.to_string(),
        });
    }
    let at_apex = record.owner == *zone;
    match record.rtype {
        // The apex NS set and the SOA belong to the zone itself (NewZone).
        RecordType::Ns if at_apex => {
            return Err(invalid(
                "apex NS records are the zone's NS set; NS records here are delegations".to_owned(),
            ));
        }
        // RFC 1034 3.6.2: a CNAME cannot share its owner with the SOA/NS at the apex.
        RecordType::Cname if at_apex => {
            return Err(invalid("a CNAME cannot be at the zone apex".to_owned()));
        }
        _ => {}
    }
    let ttl = record.ttl.unwrap_or(default_ttl);
    if ttl > MAX_TTL {
        return Err(invalid(format!("TTL {ttl} is above 2147483647")));
    }
    let rdata = normalize_rdata(record.rtype, &record.rdata).map_err(invalid)?;
    Ok(CheckedRecord {
        owner: record.owner,
        rtype: record.rtype,
        ttl,
        rdata,
    })
}

/// RFC 1034 3.6.2: a name with a CNAME has no other data, and at most one
/// CNAME. Checks a set of records against itself and against what is
/// already stored (`existing`: owner -> (CNAMEs, has other data)).
fn check_cname_exclusive(
    records: &[CheckedRecord],
    mut existing: HashMap<String, (u32, bool)>,
) -> Result<(), StoreError> {
    for record in records {
        let entry = existing.entry(record.owner.to_string()).or_default();
        if record.rtype == RecordType::Cname {
            entry.0 += 1;
        } else {
            entry.1 = true;
        }
        let reason = match *entry {
            (cnames, _) if cnames > 1 => "a name can have only one CNAME",
            (1, true) => "a name with a CNAME cannot have other records",
            _ => continue,
        };
        return Err(StoreError::InvalidRecord {
            owner: record.owner.to_string(),
            rtype: record.rtype.to_string(),
            reason: reason.to_owned(),
        });
    }
    Ok(())
}

fn record_from_row(row: &AnyRow) -> Result<Record, StoreError> {
    let rtype: String = row.try_get(1)?;
    Ok(Record {
        owner: Name::from_db(row.try_get(0)?)?,
        rtype: RecordType::parse(&rtype)
            .ok_or_else(|| corrupt(format!("record type '{rtype}'")))?,
        ttl: to_u32(row.try_get(2)?)?,
        rdata: row.try_get(3)?,
    })
}

/// Refuses a new zone below an existing one when hosts of the parent lie at
/// or below the new apex: the responder picks the zone by longest suffix, so
/// those hosts would silently stop resolving.
///
/// This scans the parent's hosts with LIKE; it runs only when a zone is
/// created, which is rare and done by administrators.
async fn check_no_hidden_hosts(conn: &mut AnyConnection, apex: &Name) -> Result<(), StoreError> {
    let Some((parent_id, _)) = fetch_zone_for(conn, apex).await? else {
        return Ok(());
    };
    // `_` and `%` are LIKE wildcards; names may contain `_`. `!` cannot
    // occur in a Name, so it serves as the escape character on both backends.
    let escaped = apex
        .as_str()
        .replace('!', "!!")
        .replace('_', "!_")
        .replace('%', "!%");
    let row = sqlx::query(
        "SELECT fqdn FROM hosts WHERE zone_id = ? AND (fqdn = ? OR fqdn LIKE ? ESCAPE '!') LIMIT 1",
    )
    .bind(parent_id)
    .bind(apex.as_str())
    .bind(format!("%.{escaped}"))
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Err(StoreError::ZoneWouldHideHost {
            zone: apex.to_string(),
            host: row.try_get(0)?,
        }),
        None => Ok(()),
    }
}

/// Inserts a validated new zone and its NS set; returns the zone id.
async fn insert_zone(
    conn: &mut AnyConnection,
    zone: &NewZone,
    rname: &Name,
    at: i64,
) -> Result<i64, StoreError> {
    check_no_hidden_hosts(conn, &zone.name).await?;
    // A zone starts at the current time as serial (fits 32 bits until 2106),
    // so a zone removed and created again does not restart below a serial
    // secondaries have already seen.
    let serial = at & 0xffff_ffff;
    let t = &zone.timers;
    sqlx::query(
        "INSERT INTO zones (name, mname, rname, serial, refresh, retry, expire, minimum, soa_ttl, \
         default_ttl, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(zone.name.as_str())
    .bind(zone.ns[0].as_str())
    .bind(rname.as_str())
    .bind(serial)
    .bind(i64::from(t.refresh))
    .bind(i64::from(t.retry))
    .bind(i64::from(t.expire))
    .bind(i64::from(t.minimum))
    .bind(i64::from(t.soa_ttl))
    .bind(i64::from(zone.default_ttl))
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match unique_violation(&e) {
        Some(UniqueKey::Zone) => StoreError::DuplicateZone {
            name: zone.name.to_string(),
        },
        _ => e.into(),
    })?;
    let row = sqlx::query("SELECT id FROM zones WHERE name = ?")
        .bind(zone.name.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let id: i64 = row.try_get(0)?;
    insert_ns(conn, id, &zone.ns).await?;
    Ok(id)
}

async fn insert_ns(conn: &mut AnyConnection, zone_id: i64, ns: &[Name]) -> Result<(), StoreError> {
    for (position, name) in ns.iter().enumerate() {
        sqlx::query("INSERT INTO zone_ns (zone_id, position, name) VALUES (?, ?, ?)")
            .bind(zone_id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(name.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts checked records from `first_position` on, in multi-row chunks.
async fn insert_records(
    conn: &mut AnyConnection,
    zone_id: i64,
    records: &[CheckedRecord],
    first_position: i64,
) -> Result<(), StoreError> {
    const PREFIX: &str =
        "INSERT INTO records (zone_id, owner, rtype, ttl, rdata, position) VALUES ";
    let full: Arc<str> = multi_row_insert(PREFIX, 6, RECORD_ROWS_PER_INSERT);
    let mut position = first_position;
    for chunk in records.chunks(RECORD_ROWS_PER_INSERT) {
        let sql = if chunk.len() == RECORD_ROWS_PER_INSERT {
            full.clone()
        } else {
            multi_row_insert(PREFIX, 6, chunk.len())
        };
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for record in chunk {
            query = query
                .bind(zone_id)
                .bind(record.owner.as_str())
                .bind(record.rtype.as_str())
                .bind(i64::from(record.ttl))
                .bind(record.rdata.as_str())
                .bind(position);
            position += 1;
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The first host name in `zone_id` that also owns static records.
async fn host_record_clash(
    conn: &mut AnyConnection,
    zone_id: i64,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT h.fqdn FROM hosts h WHERE h.zone_id = ? AND EXISTS \
         (SELECT 1 FROM records r WHERE r.zone_id = h.zone_id AND r.owner = h.fqdn) LIMIT 1",
    )
    .bind(zone_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get::<String, _>(0))
        .transpose()
        .map_err(Into::into)
}

/// What [`Store::import_zone`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// The zone after the import.
    pub zone: Zone,
    /// Whether the zone was created by this import.
    pub created: bool,
    /// Static records written.
    pub records: u64,
}

impl Store {
    /// Creates a zone. Errors: invalid NS set or timers, `DuplicateZone`.
    pub async fn add_zone(&self, actor: &Actor, zone: NewZone) -> Result<Zone, StoreError> {
        let rname = validate_zone(&zone)?;
        let at = now();
        let mut tx = self.begin_write().await?;
        if fetch_zone(&mut tx, &zone.name).await?.is_some() {
            return Err(StoreError::DuplicateZone {
                name: zone.name.to_string(),
            });
        }
        insert_zone(&mut tx, &zone, &rname, at).await?;
        let apex = zone.name.as_str();
        // No serial bump: the zone starts at its initial serial.
        log_changes(&mut tx, &[], &[(apex, apex, ChangeKind::ZoneAdded)], at).await?;
        let ns: Vec<&str> = zone.ns.iter().map(Name::as_str).collect();
        audit(
            &mut tx,
            actor,
            "zone.add",
            apex,
            &format!("ns={}", ns.join(",")),
            at,
        )
        .await?;
        let (_, stored) = fetch_zone(&mut tx, &zone.name)
            .await?
            .ok_or_else(|| corrupt("inserted zone vanished".to_owned()))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Replaces a zone's NS set, RNAME, SOA timers and default TTL with
    /// those of `settings` (whose `name` names the zone). Bumps the serial;
    /// the change-log entry is `ZoneChanged` at the apex. Errors: as for
    /// [`Store::add_zone`], and `UnknownZone`.
    pub async fn update_zone(&self, actor: &Actor, settings: NewZone) -> Result<Zone, StoreError> {
        let rname = validate_zone(&settings)?;
        let at = now();
        let mut tx = self.begin_write().await?;
        let Some((id, _)) = fetch_zone(&mut tx, &settings.name).await? else {
            return Err(StoreError::UnknownZone {
                name: settings.name.to_string(),
            });
        };
        let t = &settings.timers;
        sqlx::query(
            "UPDATE zones SET mname = ?, rname = ?, refresh = ?, retry = ?, expire = ?, minimum = ?, \
             soa_ttl = ?, default_ttl = ? WHERE id = ?",
        )
        .bind(settings.ns[0].as_str())
        .bind(rname.as_str())
        .bind(i64::from(t.refresh))
        .bind(i64::from(t.retry))
        .bind(i64::from(t.expire))
        .bind(i64::from(t.minimum))
        .bind(i64::from(t.soa_ttl))
        .bind(i64::from(settings.default_ttl))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM zone_ns WHERE zone_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_ns(&mut tx, id, &settings.ns).await?;
        let apex = settings.name.as_str();
        log_changes(&mut tx, &[id], &[(apex, apex, ChangeKind::ZoneChanged)], at).await?;
        let ns: Vec<&str> = settings.ns.iter().map(Name::as_str).collect();
        let detail = format!(
            "ns={} rname={rname} default_ttl={}",
            ns.join(","),
            settings.default_ttl
        );
        audit(&mut tx, actor, "zone.update", apex, &detail, at).await?;
        let (_, stored) = fetch_zone(&mut tx, &settings.name)
            .await?
            .ok_or_else(|| corrupt("updated zone vanished".to_owned()))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The zone with exactly this apex.
    pub async fn zone_by_name(&self, name: &Name) -> Result<Option<Zone>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(fetch_zone(&mut conn, name).await?.map(|(_, zone)| zone))
    }

    /// The zone with the longest apex that `fqdn` equals or lies below.
    pub async fn zone_for_name(&self, fqdn: &Name) -> Result<Option<Zone>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(fetch_zone_for(&mut conn, fqdn).await?.map(|(_, zone)| zone))
    }

    /// All zones with their NS sets, by name.
    pub async fn list_zones(&self) -> Result<Vec<Zone>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            zone_columns!(),
            " FROM zones ORDER BY name"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let mut zones = Vec::with_capacity(rows.len());
        let mut index = HashMap::new();
        for row in &rows {
            let (id, zone) = zone_from_row(row)?;
            index.insert(id, zones.len());
            zones.push(zone);
        }
        let ns_rows = sqlx::query("SELECT zone_id, name FROM zone_ns ORDER BY zone_id, position")
            .fetch_all(&mut *conn)
            .await?;
        for row in &ns_rows {
            let zone_id: i64 = row.try_get(0)?;
            if let Some(&i) = index.get(&zone_id) {
                zones[i].ns.push(Name::from_db(row.try_get(1)?)?);
            }
        }
        Ok(zones)
    }

    /// Removes a zone with all its hosts and static records. One change-log
    /// entry (`ZoneRemoved` at the apex) covers every name in it: a reader
    /// drops the whole zone. Error: `UnknownZone`.
    pub async fn remove_zone(&self, actor: &Actor, name: &Name) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let Some((id, _)) = fetch_zone(&mut tx, name).await? else {
            return Err(StoreError::UnknownZone {
                name: name.to_string(),
            });
        };
        // Children first: MySQL's cascades would do it too, but explicit
        // deletes keep the cost visible and work without FK enforcement.
        for sql in [
            "DELETE FROM host_txt WHERE host_id IN (SELECT id FROM hosts WHERE zone_id = ?)",
            "DELETE FROM hosts WHERE zone_id = ?",
            "DELETE FROM records WHERE zone_id = ?",
            "DELETE FROM zone_ns WHERE zone_id = ?",
            "DELETE FROM zones WHERE id = ?",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let apex = name.as_str();
        log_changes(&mut tx, &[], &[(apex, apex, ChangeKind::ZoneRemoved)], at).await?;
        audit(&mut tx, actor, "zone.remove", apex, "", at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds one static record to `zone`. Errors: `UnknownZone`,
    /// `NotInZone`, `InvalidRecord`, `NameClash` (a host has that name).
    pub async fn add_record(
        &self,
        actor: &Actor,
        zone: &Name,
        record: NewRecord,
    ) -> Result<Record, StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let Some((zone_id, stored_zone)) = fetch_zone(&mut tx, zone).await? else {
            return Err(StoreError::UnknownZone {
                name: zone.to_string(),
            });
        };
        let record = check_record(zone, stored_zone.default_ttl, record)?;
        let owner = record.owner.as_str();
        let clash = sqlx::query("SELECT 1 FROM hosts WHERE fqdn = ?")
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(StoreError::NameClash {
                name: owner.to_owned(),
            });
        }
        let rows = sqlx::query("SELECT rtype FROM records WHERE zone_id = ? AND owner = ?")
            .bind(zone_id)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
        let mut existing = HashMap::new();
        for row in &rows {
            let rtype: String = row.try_get(0)?;
            let entry: &mut (u32, bool) = existing.entry(owner.to_owned()).or_default();
            if rtype == "CNAME" {
                entry.0 += 1;
            } else {
                entry.1 = true;
            }
        }
        check_cname_exclusive(std::slice::from_ref(&record), existing)?;
        let row = sqlx::query("SELECT COALESCE(MAX(position), -1) FROM records WHERE zone_id = ?")
            .bind(zone_id)
            .fetch_one(&mut *tx)
            .await?;
        let position: i64 = row.try_get::<i64, _>(0)? + 1;
        insert_records(&mut tx, zone_id, std::slice::from_ref(&record), position).await?;
        log_changes(
            &mut tx,
            &[zone_id],
            &[(zone.as_str(), owner, ChangeKind::RecordsChanged)],
            at,
        )
        .await?;
        let detail = format!("{} {} {}", record.rtype, record.ttl, record.rdata);
        audit(&mut tx, actor, "record.add", owner, &detail, at).await?;
        tx.commit().await?;
        Ok(Record {
            owner: record.owner,
            rtype: record.rtype,
            ttl: record.ttl,
            rdata: record.rdata,
        })
    }

    /// Removes the static records at `owner` in `zone` (only those of
    /// `rtype` if given). Returns how many were removed. Error:
    /// `UnknownZone`.
    pub async fn remove_records(
        &self,
        actor: &Actor,
        zone: &Name,
        owner: &Name,
        rtype: Option<RecordType>,
    ) -> Result<u64, StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let Some((zone_id, _)) = fetch_zone(&mut tx, zone).await? else {
            return Err(StoreError::UnknownZone {
                name: zone.to_string(),
            });
        };
        let done = match rtype {
            Some(rtype) => {
                sqlx::query("DELETE FROM records WHERE zone_id = ? AND owner = ? AND rtype = ?")
                    .bind(zone_id)
                    .bind(owner.as_str())
                    .bind(rtype.as_str())
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM records WHERE zone_id = ? AND owner = ?")
                    .bind(zone_id)
                    .bind(owner.as_str())
                    .execute(&mut *tx)
                    .await?
            }
        };
        let removed = done.rows_affected();
        if removed > 0 {
            log_changes(
                &mut tx,
                &[zone_id],
                &[(zone.as_str(), owner.as_str(), ChangeKind::RecordsChanged)],
                at,
            )
            .await?;
            let detail = rtype.map_or("all types".to_owned(), |t| t.to_string());
            audit(&mut tx, actor, "record.remove", owner.as_str(), &detail, at).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The static records of `zone`, in insertion order. Error:
    /// `UnknownZone`.
    pub async fn list_records(&self, zone: &Name) -> Result<Vec<Record>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some((zone_id, _)) = fetch_zone(&mut conn, zone).await? else {
            return Err(StoreError::UnknownZone {
                name: zone.to_string(),
            });
        };
        let rows = sqlx::query(
            "SELECT owner, rtype, ttl, rdata FROM records WHERE zone_id = ? ORDER BY position",
        )
        .bind(zone_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Imports static records into a zone in one transaction, creating the
    /// zone from `zone` if it does not exist (an existing zone keeps its
    /// SOA and NS settings). With `replace`, the zone's previous static
    /// records are deleted first. Every record is validated before anything
    /// is written; one bad record rejects the whole import.
    pub async fn import_zone(
        &self,
        actor: &Actor,
        zone: NewZone,
        records: Vec<NewRecord>,
        replace: bool,
    ) -> Result<ImportSummary, StoreError> {
        let rname = validate_zone(&zone)?;
        // Records take the default TTL of the zone as it will be after the
        // import; for an existing zone that is read inside the transaction,
        // so validation of TTL-less records waits until then.
        let at = now();
        let mut tx = self.begin_write().await?;
        let existing = fetch_zone(&mut tx, &zone.name).await?;
        let default_ttl = existing
            .as_ref()
            .map_or(zone.default_ttl, |(_, z)| z.default_ttl);
        let checked = records
            .into_iter()
            .map(|r| check_record(&zone.name, default_ttl, r))
            .collect::<Result<Vec<_>, _>>()?;
        let (zone_id, created) = match existing {
            Some((id, _)) => (id, false),
            None => (insert_zone(&mut tx, &zone, &rname, at).await?, true),
        };
        // The new records among themselves; records already stored are
        // checked by SQL after the insert (only when they are kept).
        check_cname_exclusive(&checked, HashMap::new())?;
        if replace && !created {
            sqlx::query("DELETE FROM records WHERE zone_id = ?")
                .bind(zone_id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query("SELECT COALESCE(MAX(position), -1) FROM records WHERE zone_id = ?")
            .bind(zone_id)
            .fetch_one(&mut *tx)
            .await?;
        let first_position: i64 = row.try_get::<i64, _>(0)? + 1;
        insert_records(&mut tx, zone_id, &checked, first_position).await?;
        if let Some(name) = host_record_clash(&mut tx, zone_id).await? {
            return Err(StoreError::NameClash { name });
        }
        if !created && !replace {
            let row = sqlx::query(
                "SELECT owner FROM records WHERE zone_id = ? GROUP BY owner \
                 HAVING COUNT(*) > 1 AND MAX(CASE WHEN rtype = 'CNAME' THEN 1 ELSE 0 END) = 1 LIMIT 1",
            )
            .bind(zone_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                return Err(StoreError::InvalidRecord {
                    owner: row.try_get(0)?,
                    rtype: "CNAME".to_owned(),
                    reason: "a name with a CNAME cannot have other records".to_owned(),
                });
            }
        }
        let apex = zone.name.as_str();
        let mut changes = Vec::new();
        if created {
            changes.push((apex, apex, ChangeKind::ZoneAdded));
        }
        changes.push((apex, apex, ChangeKind::ZoneChanged));
        let bump: &[i64] = if created { &[] } else { &[zone_id] };
        log_changes(&mut tx, bump, &changes, at).await?;
        let detail = format!(
            "{} record(s), replace={replace}, created={created}",
            checked.len()
        );
        audit(&mut tx, actor, "zone.import", apex, &detail, at).await?;
        let (_, stored) = fetch_zone(&mut tx, &zone.name)
            .await?
            .ok_or_else(|| corrupt("imported zone vanished".to_owned()))?;
        tx.commit().await?;
        Ok(ImportSummary {
            zone: stored,
            created,
            records: checked.len() as u64,
        })
    }
}
