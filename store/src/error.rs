//! `StoreError`: every way a store operation can fail, with the reason
//! named precisely enough to show to a user (except `Database` and
//! `Internal`, which callers log and never show to a client).
//!
//! Database unique-constraint violations are mapped here to the user-facing
//! variants by constraint name; this module must never turn an unknown
//! database error into a user-facing one.

use std::fmt;

use crate::name::NameError;

/// The error of every store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name failed validation (bad characters, label or name too long).
    #[error(transparent)]
    Name(#[from] NameError),
    /// A field other than a name failed validation.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A static record failed validation.
    #[error("invalid {rtype} record at '{owner}': {reason}")]
    InvalidRecord {
        /// The owner name.
        owner: String,
        /// The record type.
        rtype: String,
        /// Why.
        reason: String,
    },
    /// No zone contains this name.
    #[error("no zone '{name}'")]
    UnknownZone {
        /// The name looked up.
        name: String,
    },
    /// No user of that name.
    #[error("no user '{name}'")]
    UnknownUser {
        /// The name looked up.
        name: String,
    },
    /// No host of that name.
    #[error("no host '{name}'")]
    UnknownHost {
        /// The name looked up.
        name: String,
    },
    /// A record owner lies outside its zone.
    #[error("'{name}' is not in zone '{zone}'")]
    NotInZone {
        /// The name.
        name: String,
        /// The zone.
        zone: String,
    },
    /// A host would sit at its zone's apex.
    #[error("'{name}' is the zone apex; a host needs a label below it")]
    HostIsZoneApex {
        /// The name.
        name: String,
    },
    /// A host name must be letters, digits and hyphens.
    #[error("'{name}' is not a valid host name (letters, digits and '-' only)")]
    NotAHostName {
        /// The name.
        name: String,
    },
    /// The zone exists already.
    #[error("zone '{name}' exists already")]
    DuplicateZone {
        /// The name.
        name: String,
    },
    /// The user exists already.
    #[error("user '{name}' exists already")]
    DuplicateUser {
        /// The name.
        name: String,
    },
    /// The host exists already.
    #[error("host '{name}' exists already")]
    DuplicateHost {
        /// The name.
        name: String,
    },
    /// The owner has as many hosts as allowed.
    #[error("user '{user}' has reached the limit of {limit} hosts")]
    HostLimitReached {
        /// The owner.
        user: String,
        /// The limit that applied.
        limit: u32,
    },
    /// A new zone would cut hosts of its parent zone off (they lie at or
    /// below its apex).
    #[error("zone '{zone}' would hide host '{host}' of its parent zone")]
    ZoneWouldHideHost {
        /// The new zone.
        zone: String,
        /// The first host found at or below its apex.
        host: String,
    },
    /// A host and a static record would share an owner name.
    #[error("'{name}' already has static records or is a dynamic host")]
    NameClash {
        /// The name.
        name: String,
    },
    /// An administrator disabled the host; updates are refused.
    #[error("host '{name}' is disabled: {reason}")]
    HostDisabled {
        /// The name.
        name: String,
        /// The administrator's reason.
        reason: String,
    },
    /// The change log no longer holds the entries after `since`; the reader
    /// must reload the full state.
    #[error("change log pruned through serial {pruned_through}; changes after {since} are gone")]
    ChangesPruned {
        /// The serial the reader asked to continue from.
        since: u64,
        /// The highest pruned serial.
        pruned_through: u64,
    },
    /// The URL names no supported database.
    #[error("unsupported database URL '{url}' (expected sqlite:// or mysql://)")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// The database failed; log it, do not show it to clients.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
    /// Something that cannot happen with a sane database did (a row the
    /// store did not write, a hashing failure, a panicked worker).
    #[error("internal error: {0}")]
    Internal(String),
}

/// An opaque database or migration failure, so that sqlx types stay out of
/// the public API.
pub struct DatabaseError(Box<dyn std::error::Error + Send + Sync>);

impl DatabaseError {
    /// A failure known only by its text: one copy per caller of an error
    /// that failed a whole group of them.
    pub(crate) fn described(text: String) -> DatabaseError {
        DatabaseError(text.into())
    }
}

impl StoreError {
    /// Whether the database refused a statement (a constraint, a trigger,
    /// a deadlock) while the connection itself worked: retrying the other
    /// statements of a group may then succeed. Unreachable databases, pool
    /// timeouts and I/O errors are not statement failures.
    pub fn is_statement_failure(&self) -> bool {
        match self {
            StoreError::Database(DatabaseError(inner)) => matches!(
                inner.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Database(_))
            ),
            _ => false,
        }
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(DatabaseError(Box::new(error)))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(DatabaseError(Box::new(error)))
    }
}

/// Which unique constraint a failed statement violated, if any.
///
/// SQLite reports the columns (`UNIQUE constraint failed: hosts.fqdn`),
/// MySQL/MariaDB the key name (`Duplicate entry '..' for key 'hosts_fqdn_key'`),
/// so each constraint is recognised by either spelling.
pub(crate) fn unique_violation(error: &sqlx::Error) -> Option<UniqueKey> {
    let db = error.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    let message = db.message();
    let has = |needle: &str| message.contains(needle);
    if has("users_name_key") || has("users.name") {
        Some(UniqueKey::User)
    } else if has("zones_name_key") || has("zones.name") {
        Some(UniqueKey::Zone)
    } else if has("hosts_fqdn_key")
        || has("hosts_zone_label_key")
        || has("hosts.fqdn")
        || has("hosts.zone_id")
    {
        Some(UniqueKey::Host)
    } else {
        None
    }
}

/// The unique constraints that map to user-facing errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UniqueKey {
    User,
    Zone,
    Host,
}

#[cfg(test)]
mod tests {
    //! The unique-violation mapping depends on each server's message text,
    //! so it is checked against both real servers (the MariaDB half fails
    //! when the server is unreachable, like the battery).

    use super::*;
    use crate::store::Store;
    use sqlx::Connection;

    async fn check(store: &Store) {
        let cases: [(&'static str, UniqueKey); 3] = [
            (
                "INSERT INTO users (name, email, role, state, created_at) VALUES ('u', 'u@x', 'user', 'active', 0)",
                UniqueKey::User,
            ),
            (
                "INSERT INTO zones (name, mname, rname, serial, refresh, retry, expire, minimum, soa_ttl, \
                 default_ttl, created_at) VALUES ('z.example', 'ns.example', 'h.example', 1, 1, 1, 1, 1, 1, 1, 0)",
                UniqueKey::Zone,
            ),
            (
                "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, created_at, updated_at) \
                 SELECT z.id, 'h', 'h.z.example', u.id, 'x', 0, 0 FROM zones z, users u",
                UniqueKey::Host,
            ),
        ];
        for (sql, key) in cases {
            sqlx::query(sql).execute(&store.pool).await.unwrap();
            let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
            assert_eq!(unique_violation(&err), Some(key), "{err}");
        }
        // A different host row clashing only on (zone_id, label).
        let err = sqlx::query(
            "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, created_at, updated_at) \
             SELECT z.id, 'h', 'other.z.example', u.id, 'x', 0, 0 FROM zones z, users u",
        )
        .execute(&store.pool)
        .await
        .unwrap_err();
        assert_eq!(unique_violation(&err), Some(UniqueKey::Host), "{err}");
        // Other failures are not mistaken for duplicates.
        let err = sqlx::query("INSERT INTO users (name) VALUES ('only-name')")
            .execute(&store.pool)
            .await
            .unwrap_err();
        assert_eq!(unique_violation(&err), None);
    }

    #[tokio::test]
    async fn unique_violations_map_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        check(&store).await;
    }

    #[tokio::test]
    async fn unique_violations_map_on_mariadb() {
        let base = std::env::var("MYSQL_TEST_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("MariaDB is unreachable at {base}: {e}"));
        let db = format!("ddtest_{:016x}", getrandom::u64().unwrap());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
        let store = Store::connect(&format!("{prefix}/{db}")).await.unwrap();
        let checked = store.clone();
        let result = async move {
            let store = checked;
            store.migrate().await.unwrap();
            check(&store).await;
        };
        // Drop the database whether or not the checks pass.
        let outcome = tokio::spawn(result).await;
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
    }
}
