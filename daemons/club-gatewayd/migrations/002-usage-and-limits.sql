-- SPDX-License-Identifier: LGPL-2.1-or-later
-- Migration 2: usage accounting and per-key limits. docs/store.md describes both.

-- Per-key limits of the OpenAI API. NULL: the gateway's default ([Limits] in
-- gatewayd.conf); -1: unlimited; N >= 0: at most N (0 refuses every request).
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER CHECK (requests_per_minute >= -1);
ALTER TABLE api_keys ADD COLUMN tokens_per_minute INTEGER CHECK (tokens_per_minute >= -1);
ALTER TABLE api_keys ADD COLUMN concurrent_streams INTEGER CHECK (concurrent_streams >= -1);

-- One row per forwarded request that was authenticated and parsed, written in batches
-- and deleted after [Usage] Retention=. No foreign keys on purpose: usage outlives the
-- keys, users and providers it names (their ids are never reused), so totals stay right
-- after a deletion; the names are joined in when they still exist.
CREATE TABLE usage (
        id              INTEGER PRIMARY KEY,
        request_id      TEXT    NOT NULL,
        started_usec    INTEGER NOT NULL,
        key_id          INTEGER NOT NULL,
        user_id         INTEGER NOT NULL,
        provider_id     INTEGER,
        model           TEXT    NOT NULL,
        capability      INTEGER NOT NULL CHECK (capability IN (0, 1)),
        stream          INTEGER NOT NULL CHECK (stream IN (0, 1)),
        outcome         TEXT    NOT NULL
                                CHECK (outcome IN ('ok', 'provider_error', 'failed', 'unavailable',
                                                   'model_not_found', 'refused', 'truncated', 'cancelled')),
        status          INTEGER NOT NULL CHECK (status BETWEEN 0 AND 999),
        attempts        INTEGER NOT NULL CHECK (attempts >= 0),
        prompt_tokens   INTEGER NOT NULL CHECK (prompt_tokens >= 0),
        completion_tokens INTEGER NOT NULL CHECK (completion_tokens >= 0),
        usage_reported  INTEGER NOT NULL CHECK (usage_reported IN (0, 1)),
        time_to_first_token_usec INTEGER CHECK (time_to_first_token_usec >= 0),
        duration_usec   INTEGER NOT NULL CHECK (duration_usec >= 0)
) STRICT;
CREATE INDEX usage_by_time ON usage (started_usec);
CREATE INDEX usage_by_user ON usage (user_id, started_usec);
