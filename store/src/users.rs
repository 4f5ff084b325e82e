//! User accounts: creation, lookup, state, removal (with their hosts) and
//! password checks.
//!
//! Passwords are hashed before the write transaction starts, so the write
//! lock is never held during an argon2 run. This module must never return
//! or log a password hash.

use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{StoreError, UniqueKey, unique_violation};
use crate::model::{Actor, ChangeKind, NewUser, Role, User, UserState};
use crate::secret;
use crate::store::{Store, audit, corrupt, log_changes, now, to_u64};

/// The columns `user_from_row` reads, as a literal for `concat!` (sqlx 0.9
/// takes `&'static str` queries).
macro_rules! user_columns {
    () => {
        "name, email, CASE WHEN password_hash IS NULL THEN 0 ELSE 1 END, role, state, max_hosts, created_at, last_login_at"
    };
}

/// Validates and folds a user name: 1..=64 of `a-z 0-9 . _ -`, starting
/// with a letter or digit.
pub(crate) fn normalize_user_name(name: &str) -> Result<String, StoreError> {
    let folded = name.to_ascii_lowercase();
    let invalid = |reason: &str| StoreError::InvalidInput {
        field: "user name",
        reason: format!("'{name}': {reason}"),
    };
    if folded.is_empty() || folded.len() > 64 {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if !folded
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    if !folded.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid("must start with a letter or digit"));
    }
    Ok(folded)
}

fn validate_email(email: &str) -> Result<(), StoreError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            field: "e-mail",
            reason: format!("'{email}' is not an address"),
        })
    }
}

fn validate_password(password: &str) -> Result<(), StoreError> {
    // The upper bound keeps a request from buying an argon2 run over
    // megabytes of input.
    if password.is_empty() || password.len() > 1024 {
        return Err(StoreError::InvalidInput {
            field: "password",
            reason: "must be 1 to 1024 bytes".to_owned(),
        });
    }
    Ok(())
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role: String = row.try_get(3)?;
    let state: String = row.try_get(4)?;
    let has_password: i64 = row.try_get(2)?;
    Ok(User {
        name: row.try_get(0)?,
        email: row.try_get(1)?,
        has_password: has_password != 0,
        role: Role::from_db(&role).ok_or_else(|| corrupt(format!("role '{role}'")))?,
        state: UserState::from_db(&state).ok_or_else(|| corrupt(format!("state '{state}'")))?,
        max_hosts: row
            .try_get::<Option<i64>, _>(5)?
            .map(|v| u32::try_from(v).map_err(|_| corrupt(format!("max_hosts {v}"))))
            .transpose()?,
        created_at: row.try_get(6)?,
        last_login_at: row.try_get(7)?,
    })
}

pub(crate) async fn fetch_user(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<User>, StoreError> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?");
    let row = sqlx::query(sql)
        .bind(name.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

impl Store {
    /// Creates an account. Errors: invalid name, e-mail or password;
    /// `DuplicateUser`.
    pub async fn create_user(&self, actor: &Actor, user: NewUser) -> Result<User, StoreError> {
        let name = normalize_user_name(&user.name)?;
        validate_email(&user.email)?;
        let hash = match user.password {
            Some(password) => {
                validate_password(&password)?;
                Some(secret::hash(password).await?)
            }
            None => None,
        };
        let at = now();
        let mut tx = self.begin_write().await?;
        if fetch_user(&mut tx, &name).await?.is_some() {
            return Err(StoreError::DuplicateUser { name });
        }
        sqlx::query(
            "INSERT INTO users (name, email, password_hash, role, state, max_hosts, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(name.clone())
        .bind(user.email.clone())
        .bind(hash)
        .bind(user.role.as_str())
        .bind(user.state.as_str())
        .bind(user.max_hosts.map(i64::from))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(UniqueKey::User) => StoreError::DuplicateUser { name: name.clone() },
            _ => e.into(),
        })?;
        let detail = format!("role={} state={}", user.role, user.state);
        audit(&mut tx, actor, "user.create", &name, &detail, at).await?;
        let created = fetch_user(&mut tx, &name)
            .await?
            .ok_or_else(|| corrupt("inserted user vanished".to_owned()))?;
        tx.commit().await?;
        Ok(created)
    }

    /// The account of that name (any case), if it exists.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let name = normalize_user_name(name)?;
        let mut conn = self.pool.acquire().await?;
        fetch_user(&mut conn, &name).await
    }

    /// All accounts, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users ORDER BY name");
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    /// How many accounts exist.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        to_u64(row.try_get(0)?)
    }

    /// Sets an account's state. Error: `UnknownUser`.
    pub async fn set_user_state(
        &self,
        actor: &Actor,
        name: &str,
        state: UserState,
    ) -> Result<(), StoreError> {
        let name = normalize_user_name(name)?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE users SET state = ? WHERE name = ?")
            .bind(state.as_str())
            .bind(name.clone())
            .execute(&mut *tx)
            .await?;
        // MySQL reports rows *changed*, not matched: an unchanged state
        // yields 0 there, so existence is checked separately.
        if done.rows_affected() == 0 && fetch_user(&mut tx, &name).await?.is_none() {
            return Err(StoreError::UnknownUser { name });
        }
        // Not DNS-visible (no serial bump), but whether the hosts take
        // updates changed: a `HostChanged` entry per host tells updaters'
        // host mirrors in every process to re-read them.
        let hosts = sqlx::query(
            "SELECT z.name, h.fqdn FROM hosts h JOIN zones z ON z.id = h.zone_id \
             JOIN users u ON u.id = h.user_id WHERE u.name = ? ORDER BY h.id",
        )
        .bind(name.clone())
        .fetch_all(&mut *tx)
        .await?;
        let hosts = hosts
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let changes: Vec<(&str, &str, ChangeKind)> = hosts
            .iter()
            .map(|(zone, fqdn)| (zone.as_str(), fqdn.as_str(), ChangeKind::HostChanged))
            .collect();
        let at = now();
        log_changes(&mut tx, &[], &changes, at).await?;
        audit(&mut tx, actor, "user.state", &name, state.as_str(), at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets or replaces an account's password. Error: `UnknownUser`.
    pub async fn set_user_password(
        &self,
        actor: &Actor,
        name: &str,
        password: String,
    ) -> Result<(), StoreError> {
        let name = normalize_user_name(name)?;
        validate_password(&password)?;
        let hash = secret::hash(password).await?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE name = ?")
            .bind(hash)
            .bind(name.clone())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownUser { name });
        }
        audit(&mut tx, actor, "user.password", &name, "", now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes an account and all its hosts, with a change-log entry per
    /// host and one serial bump per affected zone. Error: `UnknownUser`.
    pub async fn remove_user(&self, actor: &Actor, name: &str) -> Result<(), StoreError> {
        let name = normalize_user_name(name)?;
        let at = now();
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT id FROM users WHERE name = ?")
            .bind(name.clone())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Err(StoreError::UnknownUser { name });
        };
        let user_id: i64 = row.try_get(0)?;
        let hosts = sqlx::query(
            "SELECT h.fqdn, z.id, z.name FROM hosts h JOIN zones z ON z.id = h.zone_id \
             WHERE h.user_id = ? ORDER BY h.id",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut removed = Vec::with_capacity(hosts.len());
        let mut zone_ids = Vec::new();
        for row in &hosts {
            let fqdn: String = row.try_get(0)?;
            let zone_id: i64 = row.try_get(1)?;
            let zone: String = row.try_get(2)?;
            if !zone_ids.contains(&zone_id) {
                zone_ids.push(zone_id);
            }
            removed.push((zone, fqdn));
        }
        sqlx::query(
            "DELETE FROM host_txt WHERE host_id IN (SELECT id FROM hosts WHERE user_id = ?)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM hosts WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let changes: Vec<(&str, &str, ChangeKind)> = removed
            .iter()
            .map(|(zone, fqdn)| (zone.as_str(), fqdn.as_str(), ChangeKind::HostRemoved))
            .collect();
        log_changes(&mut tx, &zone_ids, &changes, at).await?;
        let detail = format!("{} host(s) removed", removed.len());
        audit(&mut tx, actor, "user.remove", &name, &detail, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a password. `Some(user)` when it matches (and records the
    /// login time); `None` for a wrong password, an unknown user or an
    /// account without password, indistinguishably and in the same time.
    /// The caller decides what the account's state allows.
    pub async fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let Ok(name) = normalize_user_name(name) else {
            secret::verify(password.to_owned(), None).await?;
            return Ok(None);
        };
        let stored = sqlx::query("SELECT password_hash FROM users WHERE name = ?")
            .bind(name.clone())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get::<Option<String>, _>(0))
            .transpose()?
            .flatten();
        if !secret::verify(password.to_owned(), stored).await? {
            return Ok(None);
        }
        sqlx::query("UPDATE users SET last_login_at = ? WHERE name = ?")
            .bind(now())
            .bind(name.clone())
            .execute(&self.pool)
            .await?;
        self.user_by_name(&name).await
    }
}
