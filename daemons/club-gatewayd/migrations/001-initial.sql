-- SPDX-License-Identifier: LGPL-2.1-or-later
-- Migration 1: the initial schema. docs/store.md describes every table and column.
-- Released migrations are never edited: a change is a new, higher-numbered file.
--
-- Times are CLOCK_REALTIME microseconds since the epoch; NULL where the store's API says
-- "never" (0, or USEC_INFINITY for expiries). Booleans are 0 or 1. Every table is STRICT,
-- so SQLite refuses values of the wrong type instead of converting them.

CREATE TABLE users (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT    NOT NULL UNIQUE,
        admin           INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
        created_usec    INTEGER NOT NULL
) STRICT;

CREATE TABLE user_tags (
        user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        tag             TEXT    NOT NULL,
        PRIMARY KEY (user_id, tag)
) STRICT;
CREATE INDEX user_tags_by_tag ON user_tags (tag);

CREATE TABLE api_keys (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name            TEXT,
        prefix          TEXT    NOT NULL CHECK (length(prefix) = 8),
        hash            BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
        scopes          INTEGER NOT NULL CHECK (scopes > 0),
        created_usec    INTEGER NOT NULL,
        expires_usec    INTEGER,
        revoked_usec    INTEGER,
        last_used_usec  INTEGER
) STRICT;
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

CREATE TABLE enrollment_keys (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name            TEXT,
        prefix          TEXT    NOT NULL CHECK (length(prefix) = 8),
        hash            BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
        reusable        INTEGER NOT NULL CHECK (reusable IN (0, 1)),
        ephemeral       INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
        uses            INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND (reusable = 1 OR uses <= 1)),
        created_usec    INTEGER NOT NULL,
        expires_usec    INTEGER,
        revoked_usec    INTEGER,
        last_used_usec  INTEGER
) STRICT;
CREATE INDEX enrollment_keys_by_prefix ON enrollment_keys (prefix);
CREATE INDEX enrollment_keys_by_user ON enrollment_keys (user_id);

CREATE TABLE enrollment_key_tags (
        key_id          INTEGER NOT NULL REFERENCES enrollment_keys (id) ON DELETE CASCADE,
        tag             TEXT    NOT NULL,
        PRIMARY KEY (key_id, tag)
) STRICT;

-- Every mesh address ever handed out, as a 32-bit number in host order (100.96.0.2 is
-- 1684013058). Rows are never deleted or changed: that is what keeps an address from
-- being given to a second provider after the first was deleted.
CREATE TABLE mesh_addresses (
        address         INTEGER PRIMARY KEY CHECK (address BETWEEN 0 AND 4294967295),
        allocated_usec  INTEGER NOT NULL,
        first_provider_id INTEGER NOT NULL
) STRICT;

CREATE TRIGGER mesh_addresses_are_never_released BEFORE DELETE ON mesh_addresses
BEGIN
        SELECT RAISE(ABORT, 'mesh addresses are never released');
END;

CREATE TRIGGER mesh_addresses_are_never_changed BEFORE UPDATE ON mesh_addresses
BEGIN
        SELECT RAISE(ABORT, 'mesh addresses are never changed');
END;

CREATE TABLE providers (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name            TEXT    NOT NULL,
        public_key      TEXT    NOT NULL UNIQUE CHECK (length(public_key) = 44),
        mesh_address    INTEGER NOT NULL UNIQUE
                                REFERENCES mesh_addresses (address) DEFERRABLE INITIALLY DEFERRED,
        agent_port      INTEGER NOT NULL CHECK (agent_port BETWEEN 1 AND 65535),
        secret          BLOB    NOT NULL CHECK (length(secret) = 32),
        state           TEXT    NOT NULL DEFAULT 'registered'
                                CHECK (state IN ('registered', 'active', 'unreachable', 'disabled')),
        agent_draining  INTEGER NOT NULL DEFAULT 0 CHECK (agent_draining IN (0, 1)),
        admin_draining  INTEGER NOT NULL DEFAULT 0 CHECK (admin_draining IN (0, 1)),
        ephemeral       INTEGER NOT NULL DEFAULT 0 CHECK (ephemeral IN (0, 1)),
        enrollment_key_id INTEGER REFERENCES enrollment_keys (id) ON DELETE SET NULL,
        share_mode      TEXT    NOT NULL DEFAULT 'private'
                                CHECK (share_mode IN ('private', 'everyone', 'restricted')),
        in_flight       INTEGER NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
        capacity        INTEGER NOT NULL DEFAULT 0 CHECK (capacity >= 0),
        upstream_health TEXT,
        version         TEXT,
        created_usec    INTEGER NOT NULL,
        registered_usec INTEGER NOT NULL,
        last_heartbeat_usec INTEGER,
        UNIQUE (owner_id, name)
) STRICT;
CREATE INDEX providers_by_enrollment_key ON providers (enrollment_key_id);
CREATE INDEX providers_ephemeral ON providers (ephemeral) WHERE ephemeral = 1;

CREATE TABLE provider_tags (
        provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
        tag             TEXT    NOT NULL,
        PRIMARY KEY (provider_id, tag)
) STRICT;

CREATE TABLE provider_models (
        provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
        model           TEXT    NOT NULL,
        PRIMARY KEY (provider_id, model)
) STRICT;
CREATE INDEX provider_models_by_model ON provider_models (model);

CREATE TABLE provider_capabilities (
        provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
        capability      TEXT    NOT NULL,
        PRIMARY KEY (provider_id, capability)
) STRICT;
CREATE INDEX provider_capabilities_by_capability ON provider_capabilities (capability);

CREATE TABLE provider_share_users (
        provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
        user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        PRIMARY KEY (provider_id, user_id)
) STRICT;
CREATE INDEX provider_share_users_by_user ON provider_share_users (user_id);

CREATE TABLE provider_share_tags (
        provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
        tag             TEXT    NOT NULL,
        PRIMARY KEY (provider_id, tag)
) STRICT;
