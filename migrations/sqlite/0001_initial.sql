-- ddserver schema, SQLite flavour. Keep in step with ../mysql/0001_initial.sql:
-- same tables, columns and constraint names; only types and syntax differ.
-- Names are stored as lower-case A-labels without the trailing dot.
-- Times are unix seconds (INTEGER): the Any driver has no portable time type.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    password_hash TEXT,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    max_hosts     INTEGER,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER,
    CONSTRAINT users_name_key UNIQUE (name)
);

CREATE TABLE zones (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    mname       TEXT    NOT NULL,
    rname       TEXT    NOT NULL,
    serial      INTEGER NOT NULL,
    refresh     INTEGER NOT NULL,
    retry       INTEGER NOT NULL,
    expire      INTEGER NOT NULL,
    minimum     INTEGER NOT NULL,
    soa_ttl     INTEGER NOT NULL,
    default_ttl INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    CONSTRAINT zones_name_key UNIQUE (name)
);

CREATE TABLE zone_ns (
    zone_id  INTEGER NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    PRIMARY KEY (zone_id, position)
);

CREATE TABLE records (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    zone_id  INTEGER NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    owner    TEXT    NOT NULL,
    rtype    TEXT    NOT NULL,
    ttl      INTEGER NOT NULL,
    rdata    TEXT    NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX records_zone_owner ON records (zone_id, owner);

CREATE TABLE hosts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    zone_id         INTEGER NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    label           TEXT    NOT NULL,
    fqdn            TEXT    NOT NULL,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_hash     TEXT    NOT NULL,
    ipv4            TEXT,
    ipv6            TEXT,
    wildcard        INTEGER NOT NULL DEFAULT 0,
    offline         INTEGER NOT NULL DEFAULT 0,
    disabled        INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    description     TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_seen_at    INTEGER,
    CONSTRAINT hosts_zone_label_key UNIQUE (zone_id, label),
    CONSTRAINT hosts_fqdn_key UNIQUE (fqdn)
);
CREATE INDEX hosts_user ON hosts (user_id);

CREATE TABLE host_txt (
    host_id  INTEGER NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    value    TEXT    NOT NULL,
    PRIMARY KEY (host_id, position)
);

-- The change log. AUTOINCREMENT (not plain rowid) so a serial is never reused
-- after the newest rows are pruned or rolled back.
CREATE TABLE changes (
    serial       INTEGER PRIMARY KEY AUTOINCREMENT,
    zone         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    committed_at INTEGER NOT NULL
);
CREATE INDEX changes_committed_at ON changes (committed_at);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT    NOT NULL,
    address TEXT
);
CREATE INDEX audit_at ON audit (at);

-- One row of change-log bookkeeping. `pruned_through` is the highest serial
-- prune_changes deleted: a reader asking for changes after an older serial
-- has missed some and must reload. On MySQL/MariaDB every write transaction
-- also locks this row first (store/src/store.rs, `begin_write`); SQLite
-- serialises writers by itself (BEGIN IMMEDIATE).
CREATE TABLE change_log_state (
    id             INTEGER PRIMARY KEY,
    pruned_through INTEGER NOT NULL DEFAULT 0
);
INSERT INTO change_log_state (id, pruned_through) VALUES (1, 0);
