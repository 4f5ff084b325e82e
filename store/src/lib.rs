//! ddserver's store: the data model, validation, the SQL for SQLite and
//! MySQL/MariaDB, the change log and the feed messages.
//!
//! This is the one crate that knows SQL. Nothing on the responder's packet
//! path may depend on it; the responder receives data, never queries.
