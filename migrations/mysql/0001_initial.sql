-- ddserver schema, MySQL/MariaDB flavour. Keep in step with ../sqlite/0001_initial.sql:
-- same tables, columns and constraint names; only types and syntax differ.
-- Names are ASCII (A-labels), so they use ascii_bin: smaller index keys and
-- byte comparison, since the store lower-cases every name before writing.
-- Integer types are limited to SMALLINT/INT/BIGINT: sqlx's Any driver rejects
-- TINYINT, MEDIUMINT and DECIMAL columns.

CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name          VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    email         VARCHAR(254) NOT NULL,
    password_hash VARCHAR(255),
    role          VARCHAR(16)  NOT NULL CHECK (role IN ('user', 'admin')),
    state         VARCHAR(16)  NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    max_hosts     BIGINT,
    created_at    BIGINT       NOT NULL,
    last_login_at BIGINT,
    CONSTRAINT users_name_key UNIQUE (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE zones (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    mname       VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    rname       VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    serial      BIGINT       NOT NULL,
    refresh     BIGINT       NOT NULL,
    retry       BIGINT       NOT NULL,
    expire      BIGINT       NOT NULL,
    minimum     BIGINT       NOT NULL,
    soa_ttl     BIGINT       NOT NULL,
    default_ttl BIGINT       NOT NULL,
    created_at  BIGINT       NOT NULL,
    CONSTRAINT zones_name_key UNIQUE (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE zone_ns (
    zone_id  BIGINT       NOT NULL,
    position BIGINT       NOT NULL,
    name     VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (zone_id, position),
    CONSTRAINT zone_ns_zone_fk FOREIGN KEY (zone_id) REFERENCES zones (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE records (
    id       BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    zone_id  BIGINT       NOT NULL,
    owner    VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    rtype    VARCHAR(8)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    ttl      BIGINT       NOT NULL,
    rdata    TEXT         NOT NULL,
    position BIGINT       NOT NULL,
    INDEX records_zone_owner (zone_id, owner),
    CONSTRAINT records_zone_fk FOREIGN KEY (zone_id) REFERENCES zones (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE hosts (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    zone_id         BIGINT       NOT NULL,
    label           VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fqdn            VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id         BIGINT       NOT NULL,
    secret_hash     VARCHAR(255) NOT NULL,
    ipv4            VARCHAR(15),
    ipv6            VARCHAR(45),
    wildcard        SMALLINT     NOT NULL DEFAULT 0,
    offline         SMALLINT     NOT NULL DEFAULT 0,
    disabled        SMALLINT     NOT NULL DEFAULT 0,
    disabled_reason VARCHAR(255),
    description     VARCHAR(255) NOT NULL DEFAULT '',
    created_at      BIGINT       NOT NULL,
    updated_at      BIGINT       NOT NULL,
    last_seen_at    BIGINT,
    CONSTRAINT hosts_zone_label_key UNIQUE (zone_id, label),
    CONSTRAINT hosts_fqdn_key UNIQUE (fqdn),
    INDEX hosts_user (user_id),
    CONSTRAINT hosts_zone_fk FOREIGN KEY (zone_id) REFERENCES zones (id) ON DELETE CASCADE,
    CONSTRAINT hosts_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_txt (
    host_id  BIGINT       NOT NULL,
    position BIGINT       NOT NULL,
    value    VARCHAR(255) NOT NULL,
    PRIMARY KEY (host_id, position),
    CONSTRAINT host_txt_host_fk FOREIGN KEY (host_id) REFERENCES hosts (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The change log. AUTO_INCREMENT values are taken inside the transaction and
-- not returned on rollback, so serials can have gaps; writers hold the
-- change_log_state row until commit, so serial order is commit order.
CREATE TABLE changes (
    serial       BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    zone         VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name         VARCHAR(253) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind         VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    committed_at BIGINT       NOT NULL,
    INDEX changes_committed_at (committed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE audit (
    id      BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at      BIGINT       NOT NULL,
    actor   VARCHAR(255) NOT NULL,
    action  VARCHAR(64)  NOT NULL,
    target  VARCHAR(255) NOT NULL,
    detail  TEXT         NOT NULL,
    address VARCHAR(45),
    INDEX audit_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row of change-log bookkeeping. `pruned_through` is the highest serial
-- prune_changes deleted: a reader asking for changes after an older serial
-- has missed some and must reload. Every write transaction locks this row
-- first (SELECT ... FOR UPDATE): it serialises writers so that change-log
-- serials are committed in order.
CREATE TABLE change_log_state (
    id             BIGINT NOT NULL PRIMARY KEY,
    pruned_through BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB;
INSERT INTO change_log_state (id, pruned_through) VALUES (1, 0);
