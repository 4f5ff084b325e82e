//! ddserver's store: the data model, validation, the SQL for SQLite and
//! MySQL/MariaDB, the change log and the audit log.
//!
//! This is the one crate that knows SQL. Nothing on the responder's packet
//! path may depend on it; the responder receives data, never queries.
//!
//! Layout:
//! - [`name`] holds the validated `Name` newtype (A-labels, IDN, limits).
//! - [`record`] holds static record types and RDATA validation.
//! - [`model`] holds the plain data types of the API.
//! - [`error`] holds `StoreError`.
//! - `store`: the `Store` handle, write transactions, change and audit log,
//!   the full load; `users`, `zones`, `hosts`: the operations on each table
//!   family, as `impl Store` blocks; `secret`: argon2id off the async threads.
//! - `probe`: [`CommitProbe`], whether anything was committed to a SQLite
//!   file since a moment, read lock-free from its wal-index.
//! - `group`: the group commit of concurrent single host updates
//!   ([`Store::update_host`]).
//! - [`feed`] holds the feed's versioned wire format; `announce` sends each
//!   commit's change-log entries to in-process subscribers and to responder
//!   control sockets after the commit.
//!
//! Every mutation validates its input first, then runs in one write
//! transaction that also writes the change-log rows, bumps the zone's SOA
//! serial and writes the audit row; it returns `Ok` only after the commit.

mod announce;
mod bulk;
pub mod error;
pub mod feed;
mod group;
mod hosts;
pub mod model;
pub mod name;
mod probe;
pub mod record;
mod secret;
mod store;
mod users;
mod zones;

pub use announce::{Announcement, PushOptions, PushStats};
pub use bulk::{
    RecordPage, ServedHost, ServedHostPages, StaticRecordPages, StoredRecord, StoredRecordRef,
};
pub use error::{DatabaseError, StoreError};
pub use feed::{Commit, FeedMessage, FrameError, HostState};
pub use hosts::{HostCredential, HostUpdate, HostUpdateOutcome, MAX_HOST_TXT};
pub use model::{
    Actor, Backend, Change, ChangeKind, Host, HostFilter, HostFlags, NewHost, NewRecord, NewUser,
    NewZone, Record, Role, SoaTimers, User, UserState, Zone, ZoneData,
};
pub use name::{Name, NameError};
pub use probe::{CommitMark, CommitProbe};
pub use record::{RecordType, RecordValue};
pub use secret::{StoredSecret, VerifyMemory};
pub use store::{AuditEntry, FullLoad, HOST_PAGE_SIZE, HostPages, Store};
pub use zones::ImportSummary;

#[cfg(test)]
mod tests {
    /// The handle is shared across tasks and threads.
    #[test]
    fn store_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<crate::Store>();
        fn error<T: std::error::Error + Send + Sync + 'static>() {}
        error::<crate::StoreError>();
    }
}
