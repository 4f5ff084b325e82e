//! Dynamic hosts: creation with limits and clash checks, address and TXT
//! updates, flags, secrets, listing and paging.
//!
//! Host lookups go through the unique index on `hosts.fqdn`, never a scan.
//! Secrets are hashed before the write transaction starts; this module must
//! never return or log a secret or its hash.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use sqlx::AnyConnection;
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::announce::CommitStates;
use crate::error::{StoreError, UniqueKey, unique_violation};
use crate::feed::HostState;
use crate::model::{Actor, ChangeKind, Host, HostFilter, HostFlags, NewHost, UserState};
use crate::name::Name;
use crate::secret::{self, StoredSecret};
use crate::store::{
    Store, WriteTx, audit, corrupt, get_u32, log_changes, multi_row_insert, now, to_u32,
};
use crate::users::normalize_user_name;
use crate::zones::fetch_zone_for;

/// TXT values per host: enough for several concurrent ACME challenges.
pub const MAX_HOST_TXT: usize = 16;

macro_rules! host_select {
    () => {
        "SELECT h.id, h.fqdn, z.name, h.label, u.name, h.ipv4, h.ipv6, h.wildcard, h.offline, \
         h.disabled, h.disabled_reason, h.description, h.updated_at, h.last_seen_at \
         FROM hosts h JOIN zones z ON z.id = h.zone_id JOIN users u ON u.id = h.user_id"
    };
}

fn host_from_row(row: &AnyRow) -> Result<Host, StoreError> {
    let ipv4: Option<String> = row.try_get(5)?;
    let ipv6: Option<String> = row.try_get(6)?;
    let flag = |i: usize| -> Result<bool, StoreError> { Ok(row.try_get::<i64, _>(i)? != 0) };
    let disabled = flag(9)?;
    let reason: Option<String> = row.try_get(10)?;
    Ok(Host {
        id: row.try_get(0)?,
        fqdn: Name::from_db(row.try_get(1)?)?,
        zone: Name::from_db(row.try_get(2)?)?,
        label: row.try_get(3)?,
        owner: row.try_get(4)?,
        ipv4: ipv4
            .map(|a| a.parse().map_err(|_| corrupt(format!("IPv4 '{a}'"))))
            .transpose()?,
        ipv6: ipv6
            .map(|a| a.parse().map_err(|_| corrupt(format!("IPv6 '{a}'"))))
            .transpose()?,
        txt: Vec::new(),
        flags: HostFlags {
            wildcard: flag(7)?,
            offline: flag(8)?,
            disabled: disabled.then(|| reason.unwrap_or_default()),
        },
        description: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        last_seen_at: row.try_get(13)?,
    })
}

/// Fills in `txt` from (host id, value) rows ordered by host and position.
fn attach_txt(hosts: &mut [Host], rows: &[AnyRow]) -> Result<(), StoreError> {
    let index: HashMap<i64, usize> = hosts.iter().enumerate().map(|(i, h)| (h.id, i)).collect();
    for row in rows {
        let host_id: i64 = row.try_get(0)?;
        if let Some(&i) = index.get(&host_id) {
            hosts[i].txt.push(row.try_get(1)?);
        }
    }
    Ok(())
}

pub(crate) async fn fetch_host(
    conn: &mut AnyConnection,
    fqdn: &Name,
) -> Result<Option<Host>, StoreError> {
    let row = sqlx::query(concat!(host_select!(), " WHERE h.fqdn = ?"))
        .bind(fqdn.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut host = host_from_row(&row)?;
    let rows = sqlx::query("SELECT value FROM host_txt WHERE host_id = ? ORDER BY position")
        .bind(host.id)
        .fetch_all(&mut *conn)
        .await?;
    host.txt = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(Some(host))
}

/// The lengths of `IN (...)` lists: a list is padded (by repeating its last
/// item) to the next of these, so the statement cache holds four shapes of
/// each statement rather than one per length. The text holds only
/// placeholders, hence `AssertSqlSafe`.
const IN_LIST_SIZES: [usize; 4] = [1, 8, 64, 256];
/// The longest `IN (...)` list, the most ids one [`by_id_query`] takes.
pub(crate) const MAX_IN_LIST: usize = IN_LIST_SIZES[IN_LIST_SIZES.len() - 1];

fn in_list_size(len: usize) -> usize {
    IN_LIST_SIZES
        .iter()
        .copied()
        .find(|&size| size >= len)
        .unwrap_or(MAX_IN_LIST)
}

fn in_list(size: usize) -> String {
    vec!["?"; size].join(", ")
}

/// TXT values of the hosts in the `IN` list, for [`by_id_query`].
const TXT_BY_HOST_IDS: &str =
    "SELECT host_id, value FROM host_txt WHERE host_id IN ({ids}) ORDER BY host_id, position";

/// `sql` with `{ids}` replaced by the placeholders of `ids` (1 to 256 of
/// them), the list padded to the next of [`IN_LIST_SIZES`].
pub(crate) fn by_id_query(
    sql: &str,
    ids: &[i64],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let size = in_list_size(ids.len());
    let sql = sql.replace("{ids}", &in_list(size));
    let mut query = sqlx::query(AssertSqlSafe(std::sync::Arc::<str>::from(sql)));
    for i in 0..size {
        query = query.bind(ids[i.min(ids.len().saturating_sub(1))]);
    }
    query
}

/// `select` (from `hosts h`) for the hosts named in `fqdns` (at most 256),
/// the list padded to the next of [`IN_LIST_SIZES`].
fn by_fqdn_query(
    select: &str,
    fqdns: &[&str],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let size = in_list_size(fqdns.len());
    let sql = format!("{select} WHERE h.fqdn IN ({})", in_list(size));
    let mut query = sqlx::query(AssertSqlSafe(std::sync::Arc::<str>::from(sql)));
    for i in 0..size {
        query = query.bind(fqdns[i.min(fqdns.len() - 1)].to_owned());
    }
    query
}

/// The rows of `select` (a SELECT over `hosts h` without WHERE) for the
/// names in `chunk` (at most the largest IN-list size), in one query.
async fn rows_by_fqdn(
    conn: &mut AnyConnection,
    select: &str,
    chunk: &[Name],
) -> Result<Vec<AnyRow>, StoreError> {
    if chunk.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = chunk.iter().map(Name::as_str).collect();
    Ok(by_fqdn_query(select, &names).fetch_all(&mut *conn).await?)
}

/// The row facts a host mutation needs: ids and current state.
struct HostKey {
    id: i64,
    zone_id: i64,
    zone: String,
    ipv4: Option<String>,
    ipv6: Option<String>,
    disabled: Option<String>,
    wildcard: bool,
    offline: bool,
}

macro_rules! host_key_select {
    () => {
        "SELECT h.id, h.zone_id, z.name, h.ipv4, h.ipv6, h.disabled, h.disabled_reason, \
         h.wildcard, h.offline, h.fqdn FROM hosts h JOIN zones z ON z.id = h.zone_id"
    };
}

async fn host_key(conn: &mut AnyConnection, fqdn: &Name) -> Result<HostKey, StoreError> {
    let row = sqlx::query(concat!(host_key_select!(), " WHERE h.fqdn = ?"))
        .bind(fqdn.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::UnknownHost {
            name: fqdn.to_string(),
        })?;
    host_key_from_row(&row)
}

/// The keys of the hosts named in `fqdns` that exist, by name: one query
/// per 256 names.
async fn host_keys(
    conn: &mut AnyConnection,
    fqdns: &[&Name],
) -> Result<HashMap<String, HostKey>, StoreError> {
    let mut keys = HashMap::with_capacity(fqdns.len());
    for chunk in fqdns.chunks(MAX_IN_LIST) {
        let names: Vec<&str> = chunk.iter().map(|n| n.as_str()).collect();
        let query = by_fqdn_query(host_key_select!(), &names);
        for row in query.fetch_all(&mut *conn).await? {
            let fqdn: String = row.try_get(9)?;
            keys.insert(fqdn, host_key_from_row(&row)?);
        }
    }
    Ok(keys)
}

fn host_key_from_row(row: &AnyRow) -> Result<HostKey, StoreError> {
    let disabled: i64 = row.try_get(5)?;
    let reason: Option<String> = row.try_get(6)?;
    Ok(HostKey {
        id: row.try_get(0)?,
        zone_id: row.try_get(1)?,
        zone: row.try_get(2)?,
        ipv4: row.try_get(3)?,
        ipv6: row.try_get(4)?,
        disabled: (disabled != 0).then(|| reason.unwrap_or_default()),
        wildcard: row.try_get::<i64, _>(7)? != 0,
        offline: row.try_get::<i64, _>(8)? != 0,
    })
}

fn validate_secret(secret: &str) -> Result<(), StoreError> {
    if secret.is_empty() || secret.len() > 1024 {
        return Err(StoreError::InvalidInput {
            field: "secret",
            reason: "must be 1 to 1024 bytes".to_owned(),
        });
    }
    Ok(())
}

fn validate_text(field: &'static str, text: &str) -> Result<(), StoreError> {
    if text.chars().count() > 255 || text.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput {
            field,
            reason: "at most 255 characters, no control characters".to_owned(),
        });
    }
    Ok(())
}

impl Store {
    /// Creates a host below the longest matching zone.
    ///
    /// The owner's own limit applies, else `default_max_hosts` (the
    /// configured default; `None` means unlimited). Errors: `NotAHostName`,
    /// `UnknownZone`, `HostIsZoneApex`, `UnknownUser`, `HostLimitReached`,
    /// `DuplicateHost`, `NameClash` (static records at that name).
    pub async fn add_host(
        &self,
        actor: &Actor,
        host: NewHost,
        default_max_hosts: Option<u32>,
    ) -> Result<Host, StoreError> {
        if !host.fqdn.is_hostname() {
            return Err(StoreError::NotAHostName {
                name: host.fqdn.to_string(),
            });
        }
        let owner = normalize_user_name(&host.owner)?;
        validate_secret(&host.secret)?;
        validate_text("description", &host.description)?;
        let hash = secret::hash(host.secret).await?;
        let at = now();
        let fqdn = host.fqdn;
        let mut tx = self.begin_write().await?;
        let Some((zone_id, zone)) = fetch_zone_for(&mut tx, &fqdn).await? else {
            return Err(StoreError::UnknownZone {
                name: fqdn.to_string(),
            });
        };
        let Some(label) = fqdn.label_under(&zone.name) else {
            return Err(StoreError::HostIsZoneApex {
                name: fqdn.to_string(),
            });
        };
        let user = sqlx::query("SELECT id, max_hosts FROM users WHERE name = ?")
            .bind(owner.clone())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::UnknownUser {
                name: owner.clone(),
            })?;
        let user_id: i64 = user.try_get(0)?;
        let own_limit: Option<i64> = user.try_get(1)?;
        let limit = match own_limit {
            Some(limit) => Some(to_u32(limit)?),
            None => default_max_hosts,
        };
        if let Some(limit) = limit {
            // Counted under the write lock, so two concurrent requests cannot
            // both take the last free slot.
            let row = sqlx::query("SELECT COUNT(*) FROM hosts WHERE user_id = ?")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
            if row.try_get::<i64, _>(0)? >= i64::from(limit) {
                return Err(StoreError::HostLimitReached { user: owner, limit });
            }
        }
        let exists = sqlx::query("SELECT 1 FROM hosts WHERE fqdn = ?")
            .bind(fqdn.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::DuplicateHost {
                name: fqdn.to_string(),
            });
        }
        let clash = sqlx::query("SELECT 1 FROM records WHERE zone_id = ? AND owner = ? LIMIT 1")
            .bind(zone_id)
            .bind(fqdn.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(StoreError::NameClash {
                name: fqdn.to_string(),
            });
        }
        sqlx::query(
            "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, ipv4, ipv6, description, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(zone_id)
        .bind(label)
        .bind(fqdn.as_str())
        .bind(user_id)
        .bind(hash)
        .bind(host.ipv4.map(|a| a.to_string()))
        .bind(host.ipv6.map(|a| a.to_string()))
        .bind(host.description.clone())
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(UniqueKey::Host) => StoreError::DuplicateHost { name: fqdn.to_string() },
            _ => e.into(),
        })?;
        let zone_name = zone.name.as_str();
        log_changes(
            &mut tx,
            &[zone_id],
            &[(zone_name, fqdn.as_str(), ChangeKind::HostAdded)],
            at,
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "host.add",
            fqdn.as_str(),
            &format!("owner={owner}"),
            at,
        )
        .await?;
        let created = fetch_host(&mut tx, &fqdn)
            .await?
            .ok_or_else(|| corrupt("inserted host vanished".to_owned()))?;
        tx.commit().await?;
        Ok(created)
    }

    /// The host with this name.
    pub async fn host_by_fqdn(&self, fqdn: &Name) -> Result<Option<Host>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_host(&mut conn, fqdn).await
    }

    /// Hosts matching the filter, in creation order. Errors: `UnknownZone`,
    /// `UnknownUser` for a filter naming neither.
    pub async fn list_hosts(&self, filter: HostFilter) -> Result<Vec<Host>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let zone_id = match &filter.zone {
            Some(zone) => {
                let row = sqlx::query("SELECT id FROM zones WHERE name = ?")
                    .bind(zone.as_str())
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| StoreError::UnknownZone {
                        name: zone.to_string(),
                    })?;
                Some(row.try_get::<i64, _>(0)?)
            }
            None => None,
        };
        let user_id = match &filter.owner {
            Some(owner) => {
                let owner = normalize_user_name(owner)?;
                let row = sqlx::query("SELECT id FROM users WHERE name = ?")
                    .bind(owner.clone())
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or(StoreError::UnknownUser { name: owner })?;
                Some(row.try_get::<i64, _>(0)?)
            }
            None => None,
        };
        // One static statement per filter shape, so each can use its index
        // (an `(? IS NULL OR ...)` form would defeat the planner).
        let (hosts_sql, txt_sql, binds): (&'static str, &'static str, Vec<i64>) =
            match (zone_id, user_id) {
                (None, None) => (
                    concat!(host_select!(), " ORDER BY h.id"),
                    "SELECT t.host_id, t.value FROM host_txt t ORDER BY t.host_id, t.position",
                    vec![],
                ),
                (Some(z), None) => (
                    concat!(host_select!(), " WHERE h.zone_id = ? ORDER BY h.id"),
                    "SELECT t.host_id, t.value FROM host_txt t JOIN hosts h ON h.id = t.host_id \
                 WHERE h.zone_id = ? ORDER BY t.host_id, t.position",
                    vec![z],
                ),
                (None, Some(u)) => (
                    concat!(host_select!(), " WHERE h.user_id = ? ORDER BY h.id"),
                    "SELECT t.host_id, t.value FROM host_txt t JOIN hosts h ON h.id = t.host_id \
                 WHERE h.user_id = ? ORDER BY t.host_id, t.position",
                    vec![u],
                ),
                (Some(z), Some(u)) => (
                    concat!(
                        host_select!(),
                        " WHERE h.zone_id = ? AND h.user_id = ? ORDER BY h.id"
                    ),
                    "SELECT t.host_id, t.value FROM host_txt t JOIN hosts h ON h.id = t.host_id \
                 WHERE h.zone_id = ? AND h.user_id = ? ORDER BY t.host_id, t.position",
                    vec![z, u],
                ),
            };
        let mut query = sqlx::query(hosts_sql);
        for b in &binds {
            query = query.bind(*b);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        let mut hosts = rows
            .iter()
            .map(host_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut query = sqlx::query(txt_sql);
        for b in &binds {
            query = query.bind(*b);
        }
        let txt_rows = query.fetch_all(&mut *conn).await?;
        attach_txt(&mut hosts, &txt_rows)?;
        Ok(hosts)
    }

    /// One page of hosts with an id above `after_id`, in id order.
    pub(crate) async fn hosts_page(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<Host>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(concat!(
            host_select!(),
            " WHERE h.id > ? ORDER BY h.id LIMIT ?"
        ))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut hosts = rows
            .iter()
            .map(host_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = hosts.last() {
            let txt_rows = sqlx::query(
                "SELECT host_id, value FROM host_txt WHERE host_id > ? AND host_id <= ? \
                 ORDER BY host_id, position",
            )
            .bind(after_id)
            .bind(last.id)
            .fetch_all(&mut *conn)
            .await?;
            attach_txt(&mut hosts, &txt_rows)?;
        }
        Ok(hosts)
    }

    /// The hosts with these names (those that exist; in no particular
    /// order), TXT values included: the change-feed follower's read, one
    /// query per 256 names instead of two per name.
    pub async fn hosts_by_fqdn(&self, fqdns: &[Name]) -> Result<Vec<Host>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut found = Vec::with_capacity(fqdns.len());
        for chunk in fqdns.chunks(MAX_IN_LIST) {
            let rows = rows_by_fqdn(&mut conn, host_select!(), chunk).await?;
            let mut hosts = rows
                .iter()
                .map(host_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            if !hosts.is_empty() {
                let ids: Vec<i64> = hosts.iter().map(|h| h.id).collect();
                let txt_rows = by_id_query(TXT_BY_HOST_IDS, &ids)
                    .fetch_all(&mut *conn)
                    .await?;
                attach_txt(&mut hosts, &txt_rows)?;
            }
            found.extend(hosts);
        }
        Ok(found)
    }

    /// Removes a host. Error: `UnknownHost`.
    pub async fn remove_host(&self, actor: &Actor, fqdn: &Name) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let key = host_key(&mut tx, fqdn).await?;
        sqlx::query("DELETE FROM host_txt WHERE host_id = ?")
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM hosts WHERE id = ?")
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        log_changes(
            &mut tx,
            &[key.zone_id],
            &[(&key.zone, fqdn.as_str(), ChangeKind::HostRemoved)],
            at,
        )
        .await?;
        audit(&mut tx, actor, "host.remove", fqdn.as_str(), "", at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a host's addresses: `None` leaves a family alone, `Some(None)`
    /// clears it, `Some(Some(a))` sets it. Returns whether anything changed;
    /// an unchanged update only records the time it was seen (no change-log
    /// entry, no serial bump). Errors: `UnknownHost`, `HostDisabled`.
    pub async fn update_host_addresses(
        &self,
        actor: &Actor,
        fqdn: &Name,
        ipv4: Option<Option<Ipv4Addr>>,
        ipv6: Option<Option<Ipv6Addr>>,
    ) -> Result<bool, StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let key = host_key(&mut tx, fqdn).await?;
        if let Some(reason) = key.disabled {
            return Err(StoreError::HostDisabled {
                name: fqdn.to_string(),
                reason,
            });
        }
        let new_v4 = match ipv4 {
            Some(a) => a.map(|a| a.to_string()),
            None => key.ipv4.clone(),
        };
        let new_v6 = match ipv6 {
            Some(a) => a.map(|a| a.to_string()),
            None => key.ipv6.clone(),
        };
        let changed = new_v4 != key.ipv4 || new_v6 != key.ipv6;
        if changed {
            sqlx::query("UPDATE hosts SET ipv4 = ?, ipv6 = ?, updated_at = ?, last_seen_at = ? WHERE id = ?")
                .bind(new_v4.clone())
                .bind(new_v6.clone())
                .bind(at)
                .bind(at)
                .bind(key.id)
                .execute(&mut *tx)
                .await?;
            log_changes(
                &mut tx,
                &[key.zone_id],
                &[(&key.zone, fqdn.as_str(), ChangeKind::HostChanged)],
                at,
            )
            .await?;
            let detail = format!(
                "ipv4={} ipv6={}",
                new_v4.as_deref().unwrap_or("-"),
                new_v6.as_deref().unwrap_or("-")
            );
            audit(&mut tx, actor, "host.update", fqdn.as_str(), &detail, at).await?;
        } else {
            sqlx::query("UPDATE hosts SET last_seen_at = ? WHERE id = ?")
                .bind(at)
                .bind(key.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Replaces a host's TXT values (ACME DNS-01 tokens): at most
    /// [`MAX_HOST_TXT`] values of 1..=255 printable ASCII characters; an
    /// empty list clears them. Errors: `InvalidInput`, `UnknownHost`,
    /// `HostDisabled`.
    pub async fn set_host_txt(
        &self,
        actor: &Actor,
        fqdn: &Name,
        values: Vec<String>,
    ) -> Result<(), StoreError> {
        if values.len() > MAX_HOST_TXT {
            return Err(StoreError::InvalidInput {
                field: "TXT values",
                reason: format!("at most {MAX_HOST_TXT} values"),
            });
        }
        for value in &values {
            // One character-string each (RFC 1035 3.3.14); printable ASCII
            // keeps presentation and wire forms trivially in step.
            if value.is_empty()
                || value.len() > 255
                || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(StoreError::InvalidInput {
                    field: "TXT value",
                    reason: "1 to 255 printable ASCII characters".to_owned(),
                });
            }
        }
        let at = now();
        let mut tx = self.begin_write().await?;
        let key = host_key(&mut tx, fqdn).await?;
        if let Some(reason) = key.disabled {
            return Err(StoreError::HostDisabled {
                name: fqdn.to_string(),
                reason,
            });
        }
        sqlx::query("DELETE FROM host_txt WHERE host_id = ?")
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        for (position, value) in values.iter().enumerate() {
            sqlx::query("INSERT INTO host_txt (host_id, position, value) VALUES (?, ?, ?)")
                .bind(key.id)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(value.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE hosts SET updated_at = ?, last_seen_at = ? WHERE id = ?")
            .bind(at)
            .bind(at)
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        log_changes(
            &mut tx,
            &[key.zone_id],
            &[(&key.zone, fqdn.as_str(), ChangeKind::HostChanged)],
            at,
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "host.txt",
            fqdn.as_str(),
            &format!("{} value(s)", values.len()),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets all of a host's flags at once. Errors: `InvalidInput` (reason
    /// too long), `UnknownHost`.
    pub async fn set_host_flags(
        &self,
        actor: &Actor,
        fqdn: &Name,
        flags: HostFlags,
    ) -> Result<(), StoreError> {
        if let Some(reason) = &flags.disabled {
            validate_text("disable reason", reason)?;
        }
        let at = now();
        let mut tx = self.begin_write().await?;
        let key = host_key(&mut tx, fqdn).await?;
        sqlx::query(
            "UPDATE hosts SET wildcard = ?, offline = ?, disabled = ?, disabled_reason = ?, updated_at = ? \
             WHERE id = ?",
        )
        .bind(i64::from(flags.wildcard))
        .bind(i64::from(flags.offline))
        .bind(i64::from(flags.disabled.is_some()))
        .bind(flags.disabled.clone())
        .bind(at)
        .bind(key.id)
        .execute(&mut *tx)
        .await?;
        log_changes(
            &mut tx,
            &[key.zone_id],
            &[(&key.zone, fqdn.as_str(), ChangeKind::HostChanged)],
            at,
        )
        .await?;
        let detail = format!(
            "wildcard={} offline={} disabled={}",
            flags.wildcard,
            flags.offline,
            flags.disabled.as_deref().unwrap_or("no")
        );
        audit(&mut tx, actor, "host.flags", fqdn.as_str(), &detail, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a host's update secret. Not DNS-visible, so no serial bump;
    /// but a `HostChanged` change-log entry, so that every updater's host
    /// mirror (in any process) re-reads the host and drops credentials
    /// verified against the old secret. The audit row is written. Error:
    /// `UnknownHost`.
    pub async fn set_host_secret(
        &self,
        actor: &Actor,
        fqdn: &Name,
        secret: String,
    ) -> Result<(), StoreError> {
        validate_secret(&secret)?;
        let hash = secret::hash(secret).await?;
        let at = now();
        let mut tx = self.begin_write().await?;
        let key = host_key(&mut tx, fqdn).await?;
        sqlx::query("UPDATE hosts SET secret_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(key.id)
            .execute(&mut *tx)
            .await?;
        log_changes(
            &mut tx,
            &[],
            &[(&key.zone, fqdn.as_str(), ChangeKind::HostChanged)],
            at,
        )
        .await?;
        audit(&mut tx, actor, "host.secret", fqdn.as_str(), "", at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a host's update secret: `Some(host)` when it matches, `None`
    /// for a wrong secret or an unknown host (same time either way).
    pub async fn verify_host_secret(
        &self,
        fqdn: &Name,
        secret: &str,
    ) -> Result<Option<Host>, StoreError> {
        let stored = sqlx::query("SELECT secret_hash FROM hosts WHERE fqdn = ?")
            .bind(fqdn.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get::<String, _>(0))
            .transpose()?;
        if !secret::verify(secret.to_owned(), stored).await? {
            return Ok(None);
        }
        self.host_by_fqdn(fqdn).await
    }
}

/// What the updater needs to authenticate and answer one host: its state
/// and its stored secret hash, read with one indexed query.
#[derive(Debug, Clone)]
pub struct HostCredential {
    /// Internal key, for [`Store::record_seen`].
    pub id: i64,
    /// The full name.
    pub fqdn: Name,
    /// The owning user's name.
    pub owner: String,
    /// Whether the owning account is active (a disabled or pending account's
    /// hosts take no updates).
    pub owner_active: bool,
    /// Current IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Current IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Flags.
    pub flags: HostFlags,
    /// The stored hash of the update secret.
    pub secret: StoredSecret,
}

/// One host's part of a batched update ([`Store::update_hosts`]).
#[derive(Debug, Clone)]
pub struct HostUpdate {
    /// The host.
    pub fqdn: Name,
    /// `None` leaves IPv4 alone, `Some(None)` clears it, `Some(Some(a))` sets it.
    pub ipv4: Option<Option<Ipv4Addr>>,
    /// The same for IPv6.
    pub ipv6: Option<Option<Ipv6Addr>>,
    /// `Some` sets the offline flag.
    pub offline: Option<bool>,
    /// `Some` sets the wildcard flag.
    pub wildcard: Option<bool>,
    /// Who asked, for the audit row.
    pub actor: Actor,
    /// The client's User-Agent, for the audit row (trimmed and cleaned here).
    pub user_agent: String,
}

/// Each item's result of a batch of [`HostUpdate`]s.
type UpdateResults = Vec<Result<HostUpdateOutcome, StoreError>>;

/// The result of one [`HostUpdate`] that committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUpdateOutcome {
    /// Whether anything DNS-visible changed (a change-log entry was written).
    pub changed: bool,
    /// IPv4 address as now stored.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address as now stored.
    pub ipv6: Option<Ipv6Addr>,
    /// The serial of its change-log entry when `changed`.
    pub serial: Option<u64>,
}

/// Audit details keep at most this many characters of a User-Agent.
const MAX_AUDIT_AGENT: usize = 128;

fn clean_agent(agent: &str) -> String {
    agent
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_AUDIT_AGENT)
        .collect()
}

fn parse_v4(text: Option<&str>) -> Result<Option<Ipv4Addr>, StoreError> {
    text.map(|a| a.parse().map_err(|_| corrupt(format!("IPv4 '{a}'"))))
        .transpose()
}

fn parse_v6(text: Option<&str>) -> Result<Option<Ipv6Addr>, StoreError> {
    text.map(|a| a.parse().map_err(|_| corrupt(format!("IPv6 '{a}'"))))
        .transpose()
}

macro_rules! credential_select {
    () => {
        "SELECT h.id, h.fqdn, u.name, u.state, h.ipv4, h.ipv6, h.wildcard, h.offline, \
         h.disabled, h.disabled_reason, h.secret_hash \
         FROM hosts h JOIN users u ON u.id = h.user_id"
    };
}

fn credential_from_row(row: &AnyRow) -> Result<HostCredential, StoreError> {
    let state: String = row.try_get(3)?;
    let ipv4: Option<String> = row.try_get(4)?;
    let ipv6: Option<String> = row.try_get(5)?;
    let flag = |i: usize| -> Result<bool, StoreError> { Ok(row.try_get::<i64, _>(i)? != 0) };
    let disabled = flag(8)?;
    let reason: Option<String> = row.try_get(9)?;
    Ok(HostCredential {
        id: row.try_get(0)?,
        fqdn: Name::from_db(row.try_get(1)?)?,
        owner: row.try_get(2)?,
        owner_active: state == UserState::Active.as_str(),
        ipv4: parse_v4(ipv4.as_deref())?,
        ipv6: parse_v6(ipv6.as_deref())?,
        flags: HostFlags {
            wildcard: flag(6)?,
            offline: flag(7)?,
            disabled: disabled.then(|| reason.unwrap_or_default()),
        },
        secret: StoredSecret(row.try_get(10)?),
    })
}

impl Store {
    /// A host's state and stored secret hash, with its owner's state; `None`
    /// for an unknown host. One query through the unique `fqdn` index.
    pub async fn host_credential(&self, fqdn: &Name) -> Result<Option<HostCredential>, StoreError> {
        let row = sqlx::query(concat!(credential_select!(), " WHERE h.fqdn = ?"))
            .bind(fqdn.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// The credentials of the hosts with these names (those that exist, in
    /// no particular order): the updater's host mirror re-reads the names
    /// the change log mentions with one query per 256 names.
    pub async fn host_credentials(
        &self,
        fqdns: &[Name],
    ) -> Result<Vec<HostCredential>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut found = Vec::with_capacity(fqdns.len());
        for chunk in fqdns.chunks(MAX_IN_LIST) {
            for row in rows_by_fqdn(&mut conn, credential_select!(), chunk).await? {
                found.push(credential_from_row(&row)?);
            }
        }
        Ok(found)
    }

    /// Up to `limit` hosts' credentials with an id above `after_id`, in id
    /// order (keyset pagination): the updater's host mirror loads with it.
    pub async fn host_credentials_page(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<HostCredential>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(concat!(
            credential_select!(),
            " WHERE h.id > ? ORDER BY h.id LIMIT ?"
        ))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// Applies many hosts' updates in one write transaction (group commit:
    /// one fsync for the whole batch). Items that cannot apply (unknown or
    /// disabled host) get their own error and are skipped. Every item that
    /// changes something writes its change-log entry (its serial is in the
    /// outcome) and an audit row with old and new addresses and the
    /// client's User-Agent; items that change nothing only record the time
    /// they were seen.
    ///
    /// A statement the database refuses for one item fails that item
    /// alone: the batch is then written again with one savepoint per item
    /// (see [`StoreError::is_statement_failure`]). `Err` means the
    /// transaction failed (the database is unreachable, the commit
    /// failed): then nothing of the batch committed.
    ///
    /// Concurrent callers with one update each should use
    /// [`Store::update_host`], which groups them into such batches.
    pub async fn update_hosts(&self, updates: &[HostUpdate]) -> Result<UpdateResults, StoreError> {
        match self.update_hosts_grouped(updates).await {
            Err(e) if updates.len() > 1 && e.is_statement_failure() => {
                tracing::debug!(
                    updates = updates.len(),
                    "store: a grouped host update failed ({e}); writing each in a savepoint"
                );
                self.update_hosts_isolated(updates).await
            }
            done => done,
        }
    }

    /// The fast path of [`Store::update_hosts`]: no savepoints, and any
    /// database failure fails the whole batch.
    async fn update_hosts_grouped(
        &self,
        updates: &[HostUpdate],
    ) -> Result<UpdateResults, StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        // Every named host's current state, one query per 256 names; the
        // items then apply in order to this copy (a host named twice sees
        // the first item's result), and each changed host's final state is
        // written with one statement per 256 hosts.
        let fqdns: Vec<&Name> = updates.iter().map(|u| &u.fqdn).collect();
        let mut keys = host_keys(&mut tx, &fqdns).await?;
        let mut written: Vec<i64> = Vec::new();
        let mut results = Vec::with_capacity(updates.len());
        let mut zone_ids: Vec<i64> = Vec::new();
        let mut changes: Vec<(String, String)> = Vec::new();
        // Which result each change-log entry belongs to.
        let mut changed_items: Vec<usize> = Vec::new();
        let mut audits: Vec<AuditRow<'_>> = Vec::new();
        let mut seen: Vec<i64> = Vec::new();
        for update in updates {
            let Some(key) = keys.get_mut(update.fqdn.as_str()) else {
                results.push(Err(StoreError::UnknownHost {
                    name: update.fqdn.to_string(),
                }));
                continue;
            };
            let decided = match decide_host_update(key, update)? {
                Ok(decided) => decided,
                Err(refused) => {
                    results.push(Err(refused));
                    continue;
                }
            };
            if decided.outcome.changed {
                if !zone_ids.contains(&key.zone_id) {
                    zone_ids.push(key.zone_id);
                }
                if !written.contains(&key.id) {
                    written.push(key.id);
                }
                changes.push((key.zone.clone(), update.fqdn.as_str().to_owned()));
                changed_items.push(results.len());
                audits.push((
                    &update.actor,
                    update.fqdn.as_str(),
                    decided.detail(key, update),
                ));
                key.ipv4 = decided.ipv4;
                key.ipv6 = decided.ipv6;
                key.wildcard = decided.wildcard;
                key.offline = decided.offline;
            } else {
                seen.push(key.id);
            }
            results.push(Ok(decided.outcome));
        }
        let by_id: HashMap<i64, &HostKey> = keys.values().map(|k| (k.id, k)).collect();
        let rows: Vec<&HostKey> = written.iter().map(|id| by_id[id]).collect();
        write_host_states(&mut tx, &rows, at).await?;
        let change_refs: Vec<(&str, &str, ChangeKind)> = changes
            .iter()
            .map(|(zone, name)| (zone.as_str(), name.as_str(), ChangeKind::HostChanged))
            .collect();
        if !change_refs.is_empty() {
            let serials = log_changes(&mut tx, &zone_ids, &change_refs, at).await?;
            for (&item, serial) in changed_items.iter().zip(serials) {
                if let Some(Ok(outcome)) = results.get_mut(item) {
                    outcome.serial = Some(serial);
                }
            }
            if tx.wants_states() {
                let states = commit_states(&mut tx, &keys, &written).await?;
                tx.set_states(states);
            }
        }
        audit_many(&mut tx, "host.update", &audits, at).await?;
        touch_seen(&mut tx, &seen, at).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// The slow path of [`Store::update_hosts`], after the grouped
    /// transaction failed on a statement: each item runs inside its own
    /// savepoint with its own change-log entry, so an item whose statements
    /// fail is rolled back alone and gets that error while the others
    /// commit. `Err` only when the transaction itself failed (then nothing
    /// committed).
    async fn update_hosts_isolated(
        &self,
        updates: &[HostUpdate],
    ) -> Result<UpdateResults, StoreError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let mut results = Vec::with_capacity(updates.len());
        for update in updates {
            sqlx::query("SAVEPOINT host_update")
                .execute(&mut *tx)
                .await?;
            let mark = tx.written_len();
            match isolated_host_update(&mut tx, update, at).await {
                Ok(result) => {
                    sqlx::query("RELEASE SAVEPOINT host_update")
                        .execute(&mut *tx)
                        .await?;
                    results.push(result);
                }
                Err(failed) => {
                    // If the rollback itself fails the transaction is gone
                    // (MySQL rolls back a whole transaction on deadlock):
                    // then nothing commits, and the caller fails them all.
                    sqlx::query("ROLLBACK TO SAVEPOINT host_update")
                        .execute(&mut *tx)
                        .await?;
                    tx.forget_written(mark);
                    results.push(Err(failed));
                }
            }
        }
        tx.commit().await?;
        Ok(results)
    }
    /// Records that these hosts were seen at `at` (unix seconds), in one
    /// statement per chunk, without a change-log entry: unchanged updates
    /// (`nochg`) are answered from memory and their times written here in
    /// batches.
    pub async fn record_seen(&self, host_ids: &[i64], at: i64) -> Result<(), StoreError> {
        if host_ids.is_empty() {
            return Ok(());
        }
        // Under the write lock like every other writer: on MariaDB a bare
        // multi-row UPDATE could otherwise deadlock with a grouped update
        // locking the same rows in another order, failing that whole batch.
        let mut tx = self.begin_write().await?;
        touch_seen(&mut tx, host_ids, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Hosts per `UPDATE ... WHERE id IN (...)`: well below SQLite's and
/// MySQL's placeholder limits.
const SEEN_IDS_PER_STATEMENT: usize = 500;

async fn touch_seen(conn: &mut AnyConnection, host_ids: &[i64], at: i64) -> Result<(), StoreError> {
    for chunk in host_ids.chunks(SEEN_IDS_PER_STATEMENT) {
        let mut sql = String::from(
            "UPDATE hosts SET last_seen_at = ? WHERE (last_seen_at IS NULL OR last_seen_at < ?) AND id IN (",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
        // Only placeholders, no input, hence AssertSqlSafe.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(at);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What one applied [`HostUpdate`] did inside the batch's transaction.
struct AppliedUpdate {
    /// The host's id.
    id: i64,
    /// `Some((zone id, zone name, audit detail))` when something
    /// DNS-visible changed and the row was updated; `None` when nothing did.
    changed: Option<(i64, String, String)>,
    outcome: HostUpdateOutcome,
}

/// An audit row written with others in one statement: actor, target, detail.
type AuditRow<'a> = (&'a Actor, &'a str, String);

/// A host's state after one [`HostUpdate`], decided from its state before.
struct DecidedUpdate {
    ipv4: Option<String>,
    ipv6: Option<String>,
    wildcard: bool,
    offline: bool,
    outcome: HostUpdateOutcome,
}

impl DecidedUpdate {
    /// The audit detail: old and new state (`before` is the state the
    /// update applied to) and the client's User-Agent.
    fn detail(&self, before: &HostKey, update: &HostUpdate) -> String {
        format!(
            "ipv4={}->{} ipv6={}->{} wildcard={} offline={} agent=\"{}\"",
            before.ipv4.as_deref().unwrap_or("-"),
            self.ipv4.as_deref().unwrap_or("-"),
            before.ipv6.as_deref().unwrap_or("-"),
            self.ipv6.as_deref().unwrap_or("-"),
            self.wildcard,
            self.offline,
            clean_agent(&update.user_agent),
        )
    }
}

/// Decides `update` against the host's state `key`. The inner `Err` is a
/// refusal of this item alone (a disabled host); the outer one a stored
/// address that does not parse.
fn decide_host_update(
    key: &HostKey,
    update: &HostUpdate,
) -> Result<Result<DecidedUpdate, StoreError>, StoreError> {
    if let Some(reason) = &key.disabled {
        return Ok(Err(StoreError::HostDisabled {
            name: update.fqdn.to_string(),
            reason: reason.clone(),
        }));
    }
    let ipv4 = match update.ipv4 {
        Some(a) => a.map(|a| a.to_string()),
        None => key.ipv4.clone(),
    };
    let ipv6 = match update.ipv6 {
        Some(a) => a.map(|a| a.to_string()),
        None => key.ipv6.clone(),
    };
    let wildcard = update.wildcard.unwrap_or(key.wildcard);
    let offline = update.offline.unwrap_or(key.offline);
    let changed =
        ipv4 != key.ipv4 || ipv6 != key.ipv6 || wildcard != key.wildcard || offline != key.offline;
    let outcome = HostUpdateOutcome {
        changed,
        ipv4: parse_v4(ipv4.as_deref())?,
        ipv6: parse_v6(ipv6.as_deref())?,
        serial: None,
    };
    Ok(Ok(DecidedUpdate {
        ipv4,
        ipv6,
        wildcard,
        offline,
        outcome,
    }))
}

/// Reads the host and, if something changes, updates its row. The outer
/// `Err` is a database failure; the inner one a refusal of this item alone
/// (unknown or disabled host). Writes neither change-log nor audit rows.
async fn apply_host_update(
    conn: &mut AnyConnection,
    update: &HostUpdate,
    at: i64,
) -> Result<Result<AppliedUpdate, StoreError>, StoreError> {
    let mut key = match host_key(conn, &update.fqdn).await {
        Ok(key) => key,
        Err(StoreError::UnknownHost { name }) => {
            return Ok(Err(StoreError::UnknownHost { name }));
        }
        Err(e) => return Err(e),
    };
    let decided = match decide_host_update(&key, update)? {
        Ok(decided) => decided,
        Err(refused) => return Ok(Err(refused)),
    };
    if !decided.outcome.changed {
        return Ok(Ok(AppliedUpdate {
            id: key.id,
            changed: None,
            outcome: decided.outcome,
        }));
    }
    let detail = decided.detail(&key, update);
    key.ipv4 = decided.ipv4;
    key.ipv6 = decided.ipv6;
    key.wildcard = decided.wildcard;
    key.offline = decided.offline;
    write_host_states(conn, &[&key], at).await?;
    Ok(Ok(AppliedUpdate {
        id: key.id,
        changed: Some((key.zone_id, key.zone, detail)),
        outcome: decided.outcome,
    }))
}

/// Writes the addresses and flags of `hosts` (distinct ids) as given, with
/// `at` as their update and last-seen time: one statement per 256 hosts
/// (`CASE id WHEN .. THEN ..`, padded like the `IN` lists).
/// What a grouped update leaves behind, for the responders' `Commit`
/// frame: each written host's final state and its zone's SOA serial. Runs
/// inside the update's transaction after its writes (the serials were just
/// bumped; TXT values, which the update does not touch, are read here), so
/// it is exactly what the commit makes visible. `keys` holds the hosts'
/// final addresses and flags; `written` the ids of those written.
async fn commit_states(
    conn: &mut AnyConnection,
    keys: &HashMap<String, HostKey>,
    written: &[i64],
) -> Result<CommitStates, StoreError> {
    let written: std::collections::HashSet<i64> = written.iter().copied().collect();
    let mut zone_names: HashMap<i64, &str> = HashMap::new();
    let mut txt: HashMap<i64, Vec<String>> = HashMap::new();
    let ids: Vec<i64> = keys
        .values()
        .filter(|key| written.contains(&key.id))
        .map(|key| {
            zone_names.insert(key.zone_id, &key.zone);
            key.id
        })
        .collect();
    for chunk in ids.chunks(MAX_IN_LIST) {
        for row in by_id_query(TXT_BY_HOST_IDS, chunk)
            .fetch_all(&mut *conn)
            .await?
        {
            txt.entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
    }
    let mut states = CommitStates::default();
    let zone_ids: Vec<i64> = zone_names.keys().copied().collect();
    for chunk in zone_ids.chunks(MAX_IN_LIST) {
        let sql = "SELECT id, serial FROM zones WHERE id IN ({ids})";
        for row in by_id_query(sql, chunk).fetch_all(&mut *conn).await? {
            let id: i64 = row.try_get(0)?;
            if let Some(name) = zone_names.get(&id) {
                states
                    .zones
                    .push((Name::from_db(name.to_string())?, get_u32(&row, 1)?));
            }
        }
    }
    for (fqdn, key) in keys {
        if !written.contains(&key.id) {
            continue;
        }
        let state = HostState {
            ipv4: parse_v4(key.ipv4.as_deref())?,
            ipv6: parse_v6(key.ipv6.as_deref())?,
            txt: txt.remove(&key.id).unwrap_or_default(),
            wildcard: key.wildcard,
            offline: key.offline,
            disabled: key.disabled.is_some(),
        };
        states.hosts.insert(fqdn.clone(), Some(state));
    }
    Ok(states)
}

async fn write_host_states(
    conn: &mut AnyConnection,
    hosts: &[&HostKey],
    at: i64,
) -> Result<(), StoreError> {
    for chunk in hosts.chunks(MAX_IN_LIST) {
        let size = in_list_size(chunk.len());
        let cases = vec!["WHEN ? THEN ?"; size].join(" ");
        let sql = format!(
            "UPDATE hosts SET ipv4 = CASE id {cases} END, ipv6 = CASE id {cases} END, \
             wildcard = CASE id {cases} END, offline = CASE id {cases} END, \
             updated_at = ?, last_seen_at = ? WHERE id IN ({})",
            in_list(size)
        );
        // Padding repeats the last host: the same id with the same values.
        let host = |i: usize| chunk[i.min(chunk.len() - 1)];
        let mut query = sqlx::query(AssertSqlSafe(std::sync::Arc::<str>::from(sql)));
        for i in 0..size {
            query = query.bind(host(i).id).bind(host(i).ipv4.clone());
        }
        for i in 0..size {
            query = query.bind(host(i).id).bind(host(i).ipv6.clone());
        }
        for i in 0..size {
            query = query.bind(host(i).id).bind(i64::from(host(i).wildcard));
        }
        for i in 0..size {
            query = query.bind(host(i).id).bind(i64::from(host(i).offline));
        }
        query = query.bind(at).bind(at);
        for i in 0..size {
            query = query.bind(host(i).id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One item of [`Store::update_hosts_isolated`]: the update with its own
/// change-log entry, audit row or last-seen time. `Err` is a database
/// failure of this item (its savepoint is rolled back); `Ok(Err)` a refusal.
async fn isolated_host_update(
    tx: &mut WriteTx,
    update: &HostUpdate,
    at: i64,
) -> Result<Result<HostUpdateOutcome, StoreError>, StoreError> {
    let applied = match apply_host_update(tx, update, at).await? {
        Ok(applied) => applied,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut outcome = applied.outcome;
    match applied.changed {
        Some((zone_id, zone, detail)) => {
            let entry = [(zone.as_str(), update.fqdn.as_str(), ChangeKind::HostChanged)];
            let serials = log_changes(tx, &[zone_id], &entry, at).await?;
            outcome.serial = serials.first().copied();
            audit(
                tx,
                &update.actor,
                "host.update",
                update.fqdn.as_str(),
                &detail,
                at,
            )
            .await?;
        }
        None => touch_seen(tx, &[applied.id], at).await?,
    }
    Ok(Ok(outcome))
}

/// Audit rows per multi-row insert.
const AUDIT_ROWS_PER_INSERT: usize = 200;

/// Writes `rows` (actor, target, detail) with the same `action` and time,
/// a few hundred per statement.
async fn audit_many(
    conn: &mut AnyConnection,
    action: &str,
    rows: &[AuditRow<'_>],
    at: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
        let sql = multi_row_insert(
            "INSERT INTO audit (at, actor, action, target, detail, address) VALUES ",
            6,
            chunk.len(),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (actor, target, detail) in chunk {
            query = query
                .bind(at)
                .bind(actor.name.clone())
                .bind(action.to_owned())
                .bind((*target).to_owned())
                .bind(detail.clone())
                .bind(actor.address.map(|a| a.to_string()));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::store::Store;

    /// FQDN lookups, the updater's hot query, must use the unique index.
    #[tokio::test]
    async fn fqdn_lookup_uses_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let plan = sqlx::query(concat!(
            "EXPLAIN QUERY PLAN ",
            host_select!(),
            " WHERE h.fqdn = ?"
        ))
        .bind("a.example")
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let details: Vec<String> = plan
            .iter()
            .map(|r| r.try_get::<String, _>(3).unwrap())
            .collect();
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH h USING INDEX")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.starts_with("SCAN")),
            "{details:?}"
        );
    }
}
