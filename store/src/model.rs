//! The plain data types of the store's public API: what callers pass in and
//! what they get back.
//!
//! These types carry no database handles and no sqlx types, so the web UI,
//! the updater and the responder's feed can use them without knowing SQL.
//! Nothing here may perform I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::name::Name;
use crate::record::RecordType;

/// Who performs a change, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A user name, or `"cli"` for administrative commands.
    pub name: String,
    /// The client address, when the change came over the network.
    pub address: Option<IpAddr>,
}

impl Actor {
    /// The actor for local administrative commands.
    pub fn cli() -> Actor {
        Actor {
            name: "cli".to_owned(),
            address: None,
        }
    }
}

/// Which database a [`crate::Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (the default).
    Sqlite,
    /// MySQL or MariaDB.
    MySql,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Owns hosts.
    User,
    /// Also manages zones and users.
    Admin,
}

/// Where a user account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    /// Registered, not yet confirmed or approved.
    Pending,
    /// May log in and update hosts.
    Active,
    /// Locked out by an administrator.
    Disabled,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $ty {
            /// The form stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }

            pub(crate) fn from_db(text: &str) -> Option<$ty> {
                match text { $($text => Some($ty::$variant),)* _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(Role { User = "user", Admin = "admin" });
text_enum!(UserState { Pending = "pending", Active = "active", Disabled = "disabled" });
text_enum!(ChangeKind {
    ZoneAdded = "zone_added",
    ZoneChanged = "zone_changed",
    RecordsChanged = "records_changed",
    ZoneRemoved = "zone_removed",
    HostAdded = "host_added",
    HostChanged = "host_changed",
    HostRemoved = "host_removed",
});

/// A new account.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Login name: 1..=64 of `a-z 0-9 . _ -`, starting with a letter or
    /// digit; upper case is folded to lower case.
    pub name: String,
    /// Contact address (checked for shape only).
    pub email: String,
    /// `None` for accounts that set their password later.
    pub password: Option<String>,
    /// What the user may do.
    pub role: Role,
    /// Initial state.
    pub state: UserState,
    /// Host limit; `None` means the configured default applies.
    pub max_hosts: Option<u32>,
}

impl fmt::Debug for NewUser {
    // The password never appears in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("role", &self.role)
            .field("state", &self.state)
            .field("max_hosts", &self.max_hosts)
            .finish()
    }
}

/// A stored account (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Lower-case login name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// Whether a password is set.
    pub has_password: bool,
    /// What the user may do.
    pub role: Role,
    /// Where the account stands.
    pub state: UserState,
    /// Own host limit; `None` means the configured default.
    pub max_hosts: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last successful password check.
    pub last_login_at: Option<i64>,
}

/// SOA timers and TTLs of a new zone, with the defaults operators expect
/// from a dynamic zone (short negative caching, short host TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaTimers {
    /// Seconds (RFC 1035 3.3.13).
    pub refresh: u32,
    /// Seconds.
    pub retry: u32,
    /// Seconds.
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308 section 4).
    pub minimum: u32,
    /// TTL of the SOA record itself.
    pub soa_ttl: u32,
}

impl Default for SoaTimers {
    fn default() -> Self {
        SoaTimers {
            refresh: 3600,
            retry: 600,
            expire: 1_209_600,
            minimum: 60,
            soa_ttl: 3600,
        }
    }
}

/// A new zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewZone {
    /// The apex.
    pub name: Name,
    /// The authoritative name servers, in order; the first is the SOA MNAME.
    /// At least one.
    pub ns: Vec<Name>,
    /// The responsible mailbox in DNS form (`hostmaster.example.org`);
    /// `None` means `hostmaster.<zone>`.
    pub soa_rname: Option<Name>,
    /// SOA timers.
    pub timers: SoaTimers,
    /// TTL of host records.
    pub default_ttl: u32,
}

impl NewZone {
    /// A zone with default timers, `hostmaster.<zone>` and a 60 s host TTL.
    pub fn new(name: Name, ns: Vec<Name>) -> NewZone {
        NewZone {
            name,
            ns,
            soa_rname: None,
            timers: SoaTimers::default(),
            default_ttl: 60,
        }
    }
}

/// A stored zone with its SOA fields and NS set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The apex.
    pub name: Name,
    /// The SOA MNAME (primary name server).
    pub mname: Name,
    /// The SOA RNAME (responsible mailbox).
    pub rname: Name,
    /// The SOA serial; moves forward (RFC 1982) on every change to the zone.
    pub serial: u32,
    /// SOA timers.
    pub timers: SoaTimers,
    /// The NS set, in order.
    pub ns: Vec<Name>,
    /// TTL of host records.
    pub default_ttl: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// A static record to add or import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The owner: the apex or a name below it (`*` allowed as first label).
    pub owner: Name,
    /// The type.
    pub rtype: RecordType,
    /// `None` means the zone's default TTL.
    pub ttl: Option<u32>,
    /// Presentation-form RDATA (`10 mail.example.org.`); validated and
    /// normalised on the way in.
    pub rdata: String,
}

/// A stored static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner.
    pub owner: Name,
    /// The type.
    pub rtype: RecordType,
    /// The TTL.
    pub ttl: u32,
    /// Normalised presentation-form RDATA (names absolute, with the dot).
    pub rdata: String,
}

/// A new dynamic host.
#[derive(Clone, PartialEq, Eq)]
pub struct NewHost {
    /// The full name; its zone is the longest matching zone.
    pub fqdn: Name,
    /// The owning user's name.
    pub owner: String,
    /// The update secret (hashed with argon2id before storage).
    pub secret: String,
    /// Initial IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Initial IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Free text for the owner, at most 255 characters.
    pub description: String,
}

impl fmt::Debug for NewHost {
    // The secret never appears in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewHost")
            .field("fqdn", &self.fqdn)
            .field("owner", &self.owner)
            .field("secret", &"<redacted>")
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .field("description", &self.description)
            .finish()
    }
}

/// A stored dynamic host (without its secret hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Internal key; increases with creation. Used for paging.
    pub id: i64,
    /// The full name.
    pub fqdn: Name,
    /// The zone it lives in.
    pub zone: Name,
    /// The part of `fqdn` below `zone`.
    pub label: String,
    /// The owning user's name.
    pub owner: String,
    /// Current IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Current IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// TXT values (ACME DNS-01), in order.
    pub txt: Vec<String>,
    /// Flags.
    pub flags: HostFlags,
    /// Free text.
    pub description: String,
    /// Unix seconds of the last change of addresses, TXT or flags.
    pub updated_at: i64,
    /// Unix seconds of the last update request, changed or not.
    pub last_seen_at: Option<i64>,
}

/// Per-host switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFlags {
    /// Also answer for every name below the host.
    pub wildcard: bool,
    /// The client reported itself offline.
    pub offline: bool,
    /// `Some(reason)` when an administrator disabled the host; updates are
    /// then refused.
    pub disabled: Option<String>,
}

/// Which hosts [`crate::Store::list_hosts`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Only hosts in this zone.
    pub zone: Option<Name>,
    /// Only hosts of this user.
    pub owner: Option<String>,
}

/// One change-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Strictly increasing in commit order; may have gaps (rolled-back
    /// transactions on MySQL/MariaDB, pruning).
    pub serial: u64,
    /// The zone the change belongs to.
    pub zone: Name,
    /// The affected owner name (the apex for zone-wide changes).
    pub name: Name,
    /// What happened; the reader re-reads the current state of `name`.
    pub kind: ChangeKind,
    /// Unix seconds.
    pub committed_at: i64,
}

/// What a change-log entry says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A zone was created.
    ZoneAdded,
    /// Zone-wide data changed (an import): reload all static records.
    ZoneChanged,
    /// The static records at `name` changed.
    RecordsChanged,
    /// A zone was removed with everything in it.
    ZoneRemoved,
    /// A host was created.
    HostAdded,
    /// A host's addresses, TXT values or flags changed; also written, without
    /// a serial bump, when only its update secret or its owner's state
    /// changed (not DNS-visible, but the updaters' host mirrors re-read it).
    HostChanged,
    /// A host was removed.
    HostRemoved,
}

/// A zone with everything the responder needs except hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneData {
    /// SOA fields and NS set.
    pub zone: Zone,
    /// Static records, in import order.
    pub records: Vec<Record>,
}
