/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The SQLite backend of the store.
 *
 * - WAL journal, so that readers (other processes, a backup) never block the writer and
 *   the writer never blocks them.
 * - synchronous=FULL: every commit fsyncs the WAL before it returns, so an acknowledged
 *   write survives a kill -9 and a power cut. (NORMAL would survive kill -9 only; the
 *   price of FULL is one fsync per write transaction, and the store writes rarely:
 *   registrations, key changes, a heartbeat per provider every ~30 s.)
 * - foreign_keys=ON, checked at open; defensive mode (no writable_schema); a short busy
 *   timeout, because the daemon's event loop waits while SQLite does.
 * - Every write transaction is BEGIN IMMEDIATE: it takes the write lock up front, so two
 *   connections never both read and then fail to upgrade. Multi-statement reads run in a
 *   deferred transaction, so they see one snapshot.
 * - read_begin() opens a deferred transaction that the reads until read_end() share (they
 *   join it instead of beginning their own); the first statement that writes, or a write
 *   transaction, commits it first, so a snapshot is never upgraded to a write.
 * - Every value is a bound parameter; statements are prepared once and kept.
 * - The file is created 0600 before SQLite opens it; SQLite gives its -wal and -shm
 *   files the same mode.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "keys.h"
#include "log.h"
#include "store-backend.h"
#include "store-migrations.h"

/* "club" in ASCII, in the database header: refuse to migrate somebody else's database. */
#define STORE_SQLITE_APPLICATION_ID 0x636c7562

CLUB_DEFINE_CLEANUP_VOID(sqlite3_stmt *, sqlite3_finalize, sqlite3_finalizep);

/* ---- statements ------------------------------------------------------------------------- */

#define PROVIDER_COLUMNS                                                                        \
        "p.id, p.owner_id, p.name, p.public_key, p.mesh_address, p.agent_port, p.state, "      \
        "p.agent_draining, p.admin_draining, p.ephemeral, p.enrollment_key_id, p.share_mode, " \
        "p.in_flight, p.capacity, p.upstream_health, p.version, p.created_usec, "              \
        "p.registered_usec, p.last_heartbeat_usec"

#define API_KEY_COLUMNS                                                                         \
        "id, user_id, name, prefix, scopes, created_usec, expires_usec, revoked_usec, last_used_usec"

#define ENROLLMENT_KEY_COLUMNS                                                                  \
        "id, user_id, name, prefix, reusable, ephemeral, uses, created_usec, expires_usec, "    \
        "revoked_usec, last_used_usec"

/* Usage summed per group: ?1 user id, ?2 key prefix, ?3 provider id, ?4 model (each NULL
 * for any), ?5 since, ?6 until, ?7 the most groups. */
#define USAGE_TOTALS(id, name, join, group)                                                     \
        "SELECT " id ", " name ", count(*), "                                                   \
        "sum(u.outcome = 'ok'), sum(u.outcome = 'failed'), sum(u.outcome = 'truncated'), "      \
        "sum(u.outcome = 'cancelled'), sum(u.prompt_tokens), sum(u.completion_tokens), "        \
        "sum(u.duration_usec), sum(u.time_to_first_token_usec), "                               \
        "count(u.time_to_first_token_usec), min(u.started_usec), max(u.started_usec) "          \
        "FROM usage u " join " "                                                                \
        "WHERE (?1 IS NULL OR u.user_id = ?1) "                                                 \
        "AND (?2 IS NULL OR u.key_id IN (SELECT id FROM api_keys WHERE prefix = ?2)) "          \
        "AND (?3 IS NULL OR u.provider_id = ?3) AND (?4 IS NULL OR u.model = ?4) "              \
        "AND u.started_usec >= ?5 AND u.started_usec < ?6 "                                     \
        "GROUP BY " group " ORDER BY " group " LIMIT ?7"

typedef enum Stmt {
        STMT_BEGIN,
        STMT_BEGIN_IMMEDIATE,
        STMT_COMMIT,
        STMT_ROLLBACK,

        STMT_USER_INSERT,
        STMT_USER_BY_ID,
        STMT_USER_BY_NAME,
        STMT_USER_LIST,
        STMT_USER_DELETE,
        STMT_USER_EXISTS,
        STMT_USER_TAGS,
        STMT_USER_TAGS_DELETE,
        STMT_USER_TAG_INSERT,

        STMT_API_KEY_INSERT,
        STMT_API_KEY_BY_PREFIX,
        STMT_API_KEY_TOUCH,
        STMT_API_KEY_BY_ID,
        STMT_API_KEY_LIST,
        STMT_API_KEY_REVOKE,
        STMT_API_KEY_LIMITS,
        STMT_API_KEY_SET_LIMITS,

        STMT_EK_INSERT,
        STMT_EK_BY_PREFIX,
        STMT_EK_USE,
        STMT_EK_BY_ID,
        STMT_EK_LIST,
        STMT_EK_REVOKE,
        STMT_EK_TAGS,
        STMT_EK_TAGS_DELETE,
        STMT_EK_TAG_INSERT,

        STMT_MESH_HIGHEST,
        STMT_MESH_INSERT,

        STMT_PROVIDER_FIND,
        STMT_PROVIDER_INSERT,
        STMT_PROVIDER_REREGISTER,
        STMT_PROVIDER_BY_ID,
        STMT_PROVIDER_BY_ADDRESS,
        STMT_PROVIDER_BY_PUBLIC_KEY,
        STMT_PROVIDER_BY_NAME,
        STMT_PROVIDER_LIST,
        STMT_PROVIDER_SECRET,
        STMT_PROVIDER_EXISTS,
        STMT_PROVIDER_DELETE,
        STMT_PROVIDER_SET_DRAINING,
        STMT_PROVIDER_SET_STATE,
        STMT_PROVIDER_SET_SHARE_MODE,
        STMT_PROVIDER_HEARTBEAT,
        STMT_PROVIDER_PEERS,
        STMT_PROVIDER_STALE_EPHEMERAL,
        STMT_PROVIDER_TAGS,
        STMT_PROVIDER_TAGS_DELETE,
        STMT_PROVIDER_TAG_INSERT,
        STMT_PROVIDER_MODELS,
        STMT_PROVIDER_MODELS_DELETE,
        STMT_PROVIDER_MODEL_INSERT,
        STMT_PROVIDER_CAPS,
        STMT_PROVIDER_CAPS_DELETE,
        STMT_PROVIDER_CAP_INSERT,
        STMT_PROVIDER_SHARE_USERS,
        STMT_PROVIDER_SHARE_USERS_DELETE,
        STMT_PROVIDER_SHARE_USER_INSERT,
        STMT_PROVIDER_SHARE_TAGS,
        STMT_PROVIDER_SHARE_TAGS_DELETE,
        STMT_PROVIDER_SHARE_TAG_INSERT,

        STMT_USAGE_INSERT,
        STMT_USAGE_PRUNE,
        STMT_USAGE_BY_KEY,              /* in the order of StoreUsageGroup */
        STMT_USAGE_BY_PROVIDER,
        STMT_USAGE_BY_MODEL,
        STMT_USAGE_BY_USER,
        _STMT_MAX,
} Stmt;

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN] = "BEGIN",
        [STMT_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",

        [STMT_USER_INSERT] = "INSERT INTO users (name, admin, created_usec) VALUES (?1, ?2, ?3)",
        [STMT_USER_BY_ID] = "SELECT id, name, admin, created_usec FROM users WHERE id = ?1",
        [STMT_USER_BY_NAME] = "SELECT id, name, admin, created_usec FROM users WHERE name = ?1",
        [STMT_USER_LIST] = "SELECT id, name, admin, created_usec FROM users ORDER BY id",
        [STMT_USER_DELETE] = "DELETE FROM users WHERE id = ?1",
        [STMT_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
        [STMT_USER_TAGS] = "SELECT tag FROM user_tags WHERE user_id = ?1 ORDER BY tag",
        [STMT_USER_TAGS_DELETE] = "DELETE FROM user_tags WHERE user_id = ?1",
        [STMT_USER_TAG_INSERT] = "INSERT INTO user_tags (user_id, tag) VALUES (?1, ?2)",

        [STMT_API_KEY_INSERT] =
                "INSERT INTO api_keys (user_id, name, prefix, hash, scopes, created_usec, expires_usec) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [STMT_API_KEY_BY_PREFIX] = "SELECT " API_KEY_COLUMNS ", hash FROM api_keys WHERE prefix = ?1",
        [STMT_API_KEY_TOUCH] =
                "UPDATE api_keys SET last_used_usec = ?2 "
                "WHERE id = ?1 AND (last_used_usec IS NULL OR last_used_usec <= ?3)",
        [STMT_API_KEY_BY_ID] = "SELECT " API_KEY_COLUMNS " FROM api_keys WHERE id = ?1",
        [STMT_API_KEY_LIST] =
                "SELECT " API_KEY_COLUMNS " FROM api_keys WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id",
        [STMT_API_KEY_REVOKE] =
                "UPDATE api_keys SET revoked_usec = COALESCE(revoked_usec, ?2) WHERE id = ?1",
        [STMT_API_KEY_LIMITS] =
                "SELECT requests_per_minute, tokens_per_minute, concurrent_streams FROM api_keys WHERE id = ?1",
        [STMT_API_KEY_SET_LIMITS] =
                "UPDATE api_keys SET requests_per_minute = ?2, tokens_per_minute = ?3, concurrent_streams = ?4 "
                "WHERE id = ?1",

        [STMT_EK_INSERT] =
                "INSERT INTO enrollment_keys (user_id, name, prefix, hash, reusable, ephemeral, "
                "created_usec, expires_usec) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [STMT_EK_BY_PREFIX] =
                "SELECT " ENROLLMENT_KEY_COLUMNS ", hash FROM enrollment_keys WHERE prefix = ?1",
        /* The conditions again, so that the increment cannot happen unless it is allowed. */
        [STMT_EK_USE] =
                "UPDATE enrollment_keys SET uses = uses + 1, last_used_usec = ?2 "
                "WHERE id = ?1 AND revoked_usec IS NULL AND (expires_usec IS NULL OR expires_usec > ?2) "
                "AND (reusable = 1 OR uses = 0)",
        [STMT_EK_BY_ID] = "SELECT " ENROLLMENT_KEY_COLUMNS " FROM enrollment_keys WHERE id = ?1",
        [STMT_EK_LIST] =
                "SELECT " ENROLLMENT_KEY_COLUMNS " FROM enrollment_keys "
                "WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id",
        [STMT_EK_REVOKE] =
                "UPDATE enrollment_keys SET revoked_usec = COALESCE(revoked_usec, ?2) WHERE id = ?1",
        [STMT_EK_TAGS] = "SELECT tag FROM enrollment_key_tags WHERE key_id = ?1 ORDER BY tag",
        [STMT_EK_TAGS_DELETE] = "DELETE FROM enrollment_key_tags WHERE key_id = ?1",
        [STMT_EK_TAG_INSERT] = "INSERT INTO enrollment_key_tags (key_id, tag) VALUES (?1, ?2)",

        [STMT_MESH_HIGHEST] = "SELECT max(address) FROM mesh_addresses WHERE address BETWEEN ?1 AND ?2",
        [STMT_MESH_INSERT] =
                "INSERT INTO mesh_addresses (address, allocated_usec, first_provider_id) VALUES (?1, ?2, ?3)",

        [STMT_PROVIDER_FIND] =
                "SELECT id, enrollment_key_id FROM providers WHERE owner_id = ?1 AND name = ?2",
        [STMT_PROVIDER_INSERT] =
                "INSERT INTO providers (owner_id, name, public_key, mesh_address, agent_port, secret, "
                "ephemeral, enrollment_key_id, version, created_usec, registered_usec) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        [STMT_PROVIDER_REREGISTER] =
                "UPDATE providers SET public_key = ?2, agent_port = ?3, secret = ?4, "
                "version = COALESCE(?5, version), registered_usec = ?6, "
                "state = CASE state WHEN 'disabled' THEN 'disabled' ELSE 'registered' END "
                "WHERE id = ?1",
        [STMT_PROVIDER_BY_ID] = "SELECT " PROVIDER_COLUMNS " FROM providers p WHERE p.id = ?1",
        [STMT_PROVIDER_BY_ADDRESS] =
                "SELECT " PROVIDER_COLUMNS " FROM providers p WHERE p.mesh_address = ?1",
        [STMT_PROVIDER_BY_PUBLIC_KEY] =
                "SELECT " PROVIDER_COLUMNS " FROM providers p WHERE p.public_key = ?1",
        [STMT_PROVIDER_BY_NAME] =
                "SELECT " PROVIDER_COLUMNS " FROM providers p WHERE p.owner_id = ?1 AND p.name = ?2",
        [STMT_PROVIDER_LIST] =
                "SELECT " PROVIDER_COLUMNS " FROM providers p "
                "WHERE (?1 IS NULL OR p.owner_id = ?1) "
                "AND (?2 IS NULL OR EXISTS (SELECT 1 FROM provider_models m "
                "                           WHERE m.provider_id = p.id AND m.model = ?2)) "
                "AND (?3 IS NULL OR EXISTS (SELECT 1 FROM provider_capabilities c "
                "                           WHERE c.provider_id = p.id AND c.capability = ?3)) "
                "AND (?4 IS NULL OR (p.state = 'active' AND p.agent_draining = 0 "
                "                    AND p.admin_draining = 0 AND p.last_heartbeat_usec >= ?4)) "
                "AND (?5 IS NULL OR p.owner_id = ?5 OR p.share_mode = 'everyone' "
                "     OR (p.share_mode = 'restricted' "
                "         AND (EXISTS (SELECT 1 FROM provider_share_users su "
                "                      WHERE su.provider_id = p.id AND su.user_id = ?5) "
                "              OR EXISTS (SELECT 1 FROM provider_share_tags st "
                "                         JOIN user_tags ut ON ut.tag = st.tag "
                "                         WHERE st.provider_id = p.id AND ut.user_id = ?5)))) "
                "ORDER BY p.id",
        [STMT_PROVIDER_SECRET] = "SELECT secret FROM providers WHERE id = ?1",
        [STMT_PROVIDER_EXISTS] = "SELECT 1 FROM providers WHERE id = ?1",
        [STMT_PROVIDER_DELETE] = "DELETE FROM providers WHERE id = ?1",
        [STMT_PROVIDER_SET_DRAINING] = "UPDATE providers SET admin_draining = ?2 WHERE id = ?1",
        [STMT_PROVIDER_SET_STATE] = "UPDATE providers SET state = ?2 WHERE id = ?1",
        [STMT_PROVIDER_SET_SHARE_MODE] = "UPDATE providers SET share_mode = ?2 WHERE id = ?1",
        [STMT_PROVIDER_HEARTBEAT] =
                "UPDATE providers SET last_heartbeat_usec = ?2, in_flight = ?3, capacity = ?4, "
                "upstream_health = ?5, version = COALESCE(?6, version), agent_draining = ?7, "
                "state = CASE state WHEN 'registered' THEN 'active' ELSE state END "
                "WHERE id = ?1",
        [STMT_PROVIDER_PEERS] = "SELECT id, public_key, mesh_address FROM providers ORDER BY id",
        [STMT_PROVIDER_STALE_EPHEMERAL] =
                "SELECT id FROM providers WHERE ephemeral = 1 "
                "AND max(coalesce(last_heartbeat_usec, 0), registered_usec) < ?1 ORDER BY id",
        [STMT_PROVIDER_TAGS] = "SELECT tag FROM provider_tags WHERE provider_id = ?1 ORDER BY tag",
        [STMT_PROVIDER_TAGS_DELETE] = "DELETE FROM provider_tags WHERE provider_id = ?1",
        [STMT_PROVIDER_TAG_INSERT] = "INSERT INTO provider_tags (provider_id, tag) VALUES (?1, ?2)",
        [STMT_PROVIDER_MODELS] =
                "SELECT model FROM provider_models WHERE provider_id = ?1 ORDER BY model",
        [STMT_PROVIDER_MODELS_DELETE] = "DELETE FROM provider_models WHERE provider_id = ?1",
        [STMT_PROVIDER_MODEL_INSERT] =
                "INSERT INTO provider_models (provider_id, model) VALUES (?1, ?2)",
        [STMT_PROVIDER_CAPS] =
                "SELECT capability FROM provider_capabilities WHERE provider_id = ?1 ORDER BY capability",
        [STMT_PROVIDER_CAPS_DELETE] = "DELETE FROM provider_capabilities WHERE provider_id = ?1",
        [STMT_PROVIDER_CAP_INSERT] =
                "INSERT INTO provider_capabilities (provider_id, capability) VALUES (?1, ?2)",
        [STMT_PROVIDER_SHARE_USERS] =
                "SELECT user_id FROM provider_share_users WHERE provider_id = ?1 ORDER BY user_id",
        [STMT_PROVIDER_SHARE_USERS_DELETE] = "DELETE FROM provider_share_users WHERE provider_id = ?1",
        [STMT_PROVIDER_SHARE_USER_INSERT] =
                "INSERT INTO provider_share_users (provider_id, user_id) VALUES (?1, ?2)",
        [STMT_PROVIDER_SHARE_TAGS] =
                "SELECT tag FROM provider_share_tags WHERE provider_id = ?1 ORDER BY tag",
        [STMT_PROVIDER_SHARE_TAGS_DELETE] = "DELETE FROM provider_share_tags WHERE provider_id = ?1",
        [STMT_PROVIDER_SHARE_TAG_INSERT] =
                "INSERT INTO provider_share_tags (provider_id, tag) VALUES (?1, ?2)",

        [STMT_USAGE_INSERT] =
                "INSERT INTO usage (request_id, started_usec, key_id, user_id, provider_id, model, capability, "
                "stream, outcome, status, attempts, prompt_tokens, completion_tokens, usage_reported, "
                "time_to_first_token_usec, duration_usec) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        [STMT_USAGE_PRUNE] =
                "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE started_usec < ?1 LIMIT ?2)",
        [STMT_USAGE_BY_KEY] = USAGE_TOTALS("u.key_id", "k.prefix",
                                           "LEFT JOIN api_keys k ON k.id = u.key_id", "u.key_id"),
        [STMT_USAGE_BY_PROVIDER] = USAGE_TOTALS("COALESCE(u.provider_id, 0)", "p.name",
                                                "LEFT JOIN providers p ON p.id = u.provider_id", "u.provider_id"),
        [STMT_USAGE_BY_MODEL] = USAGE_TOTALS("0", "u.model", "", "u.model"),
        [STMT_USAGE_BY_USER] = USAGE_TOTALS("u.user_id", "us.name",
                                            "LEFT JOIN users us ON us.id = u.user_id", "u.user_id"),
};

/* A set of strings attached to a row: how to read, clear and add to it. */
typedef struct StrvTable {
        Stmt select, delete, insert;
} StrvTable;

static const StrvTable user_tags_table = { STMT_USER_TAGS, STMT_USER_TAGS_DELETE, STMT_USER_TAG_INSERT };
static const StrvTable ek_tags_table = { STMT_EK_TAGS, STMT_EK_TAGS_DELETE, STMT_EK_TAG_INSERT };
static const StrvTable provider_tags_table = {
        STMT_PROVIDER_TAGS, STMT_PROVIDER_TAGS_DELETE, STMT_PROVIDER_TAG_INSERT };
static const StrvTable provider_models_table = {
        STMT_PROVIDER_MODELS, STMT_PROVIDER_MODELS_DELETE, STMT_PROVIDER_MODEL_INSERT };
static const StrvTable provider_caps_table = {
        STMT_PROVIDER_CAPS, STMT_PROVIDER_CAPS_DELETE, STMT_PROVIDER_CAP_INSERT };
static const StrvTable provider_share_tags_table = {
        STMT_PROVIDER_SHARE_TAGS, STMT_PROVIDER_SHARE_TAGS_DELETE, STMT_PROVIDER_SHARE_TAG_INSERT };

typedef struct SqliteStore {
        sqlite3 *db;
        sqlite3_stmt *stmts[_STMT_MAX];
        bool snapshot;                  /* a read_begin() transaction is open */
        bool joined;                    /* a tx_begin(false) ran inside it */
} SqliteStore;

/* ---- errors ----------------------------------------------------------------------------- */

static int sqlite_errno(SqliteStore *d, int rc) {
        int e;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_PROTOCOL:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                switch (rc) {
                case SQLITE_CONSTRAINT_UNIQUE:
                case SQLITE_CONSTRAINT_PRIMARYKEY:
                        return -EEXIST;
                case SQLITE_CONSTRAINT_FOREIGNKEY:
                        return -ENOENT;         /* a row referred to does not exist */
                case SQLITE_CONSTRAINT_TRIGGER:
                        return -EPERM;          /* e.g. releasing a mesh address */
                default:
                        return -EINVAL;         /* CHECK, NOT NULL, type */
                }
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EPERM;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_INTERRUPT:
                return -EINTR;
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN:
                e = d && d->db ? sqlite3_system_errno(d->db) : 0;
                return e > 0 ? -e : -EIO;
        default:
                return -EIO;
        }
}

/* Convert, and say what failed at debug level. SQLite's messages name tables and columns,
 * never values, so nothing secret gets into the log. */
static int db_error(SqliteStore *d, int rc, const char *what) {
        int r = sqlite_errno(d, rc);

        if (r < 0)
                log_debug_errno(r, "SQLite: %s failed: %s (%d)", what,
                                d && d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc), rc);
        return r;
}

/* ---- statement helpers ------------------------------------------------------------------ */

static void stmt_resetp(sqlite3_stmt **st) {
        if (*st) {
                (void) sqlite3_reset(*st);
                (void) sqlite3_clear_bindings(*st);
                *st = NULL;
        }
}
#define _cleanup_stmt_ _cleanup_(stmt_resetp)

static int run(SqliteStore *d, Stmt id);

/* End the read snapshot, if one is open: its reads are done, nothing to undo. */
static void snapshot_end(SqliteStore *d) {
        if (!d->snapshot)
                return;
        d->snapshot = d->joined = false;
        if (!sqlite3_get_autocommit(d->db) && run(d, STMT_COMMIT) < 0 && !sqlite3_get_autocommit(d->db))
                (void) run(d, STMT_ROLLBACK);
}

/* The prepared statement, prepared on first use and kept; reset when the caller's variable
 * goes out of scope. A statement that writes ends the read snapshot first, so that it
 * commits on its own, at once, and never upgrades an old snapshot. */
static int stmt_get(SqliteStore *d, Stmt id, sqlite3_stmt **ret) {
        int rc;

        assert(id < _STMT_MAX);
        if (!d->stmts[id]) {
                rc = sqlite3_prepare_v3(d->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &d->stmts[id], NULL);
                if (rc != SQLITE_OK)
                        return db_error(d, rc, "prepare");
        }
        if (d->snapshot && !d->joined && !sqlite3_stmt_readonly(d->stmts[id]))
                snapshot_end(d);
        *ret = d->stmts[id];
        return 0;
}

/*
 * Bind the statement's parameters ?1, ?2, … in order, as @fmt says:
 *   i  int64_t                     I  int64_t, 0 binds NULL (an optional id)
 *   u  uint64_t µs, 0 binds NULL   e  uint64_t expiry, USEC_INFINITY binds NULL
 *   t  const char *, NULL binds NULL  (not copied: it must outlive the statement's use)
 *   b  const void *, size_t        B  int, as 0 or 1
 *   -  NULL
 */
static int bind_args(SqliteStore *d, sqlite3_stmt *st, const char *fmt, ...) {
        va_list ap;
        int rc = SQLITE_OK, idx = 1;

        va_start(ap, fmt);
        for (const char *f = fmt; *f && rc == SQLITE_OK; f++, idx++) {
                switch (*f) {
                case 'i':
                        rc = sqlite3_bind_int64(st, idx, va_arg(ap, int64_t));
                        break;
                case 'I': {
                        int64_t v = va_arg(ap, int64_t);
                        rc = v == 0 ? sqlite3_bind_null(st, idx) : sqlite3_bind_int64(st, idx, v);
                        break;
                }
                case 'u': {
                        uint64_t v = va_arg(ap, uint64_t);
                        if (v > INT64_MAX)
                                rc = SQLITE_RANGE;
                        else
                                rc = v == 0 ? sqlite3_bind_null(st, idx) : sqlite3_bind_int64(st, idx, (int64_t) v);
                        break;
                }
                case 'e': {
                        uint64_t v = va_arg(ap, uint64_t);
                        if (v != USEC_INFINITY && v > INT64_MAX)
                                rc = SQLITE_RANGE;
                        else
                                rc = v == USEC_INFINITY ? sqlite3_bind_null(st, idx)
                                                        : sqlite3_bind_int64(st, idx, (int64_t) v);
                        break;
                }
                case 't': {
                        const char *v = va_arg(ap, const char *);
                        rc = v ? sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, idx);
                        break;
                }
                case 'b': {
                        const void *v = va_arg(ap, const void *);
                        size_t n = va_arg(ap, size_t);
                        rc = n > INT_MAX ? SQLITE_TOOBIG : sqlite3_bind_blob(st, idx, v, (int) n, SQLITE_STATIC);
                        break;
                }
                case 'B':
                        rc = sqlite3_bind_int(st, idx, !!va_arg(ap, int));
                        break;
                case '-':
                        rc = sqlite3_bind_null(st, idx);
                        break;
                default:
                        assert(!"bad bind format");
                        rc = SQLITE_MISUSE;
                }
        }
        va_end(ap);
        return rc == SQLITE_OK ? 0 : db_error(d, rc, "bind");
}

/* 1 for a row, 0 when done, or a negative errno. */
static int stmt_step(SqliteStore *d, sqlite3_stmt *st) {
        int rc = sqlite3_step(st);

        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return db_error(d, rc, "step");
}

/* Run a statement that returns no rows. Returns the number of rows changed. */
static int stmt_exec(SqliteStore *d, sqlite3_stmt *st) {
        int r = stmt_step(d, st);

        if (r < 0)
                return r;
        if (r > 0)
                return db_error(d, SQLITE_MISUSE, "exec (statement returned rows)");
        return sqlite3_changes(d->db);
}

/* The one row a statement keyed by ?1 = @row_id selects, in *@st (the caller's _cleanup_stmt_
 * variable, so that it is reset whatever happens): 0, -ENOENT for none, or a negative errno. */
static int stmt_row_by_id(SqliteStore *d, Stmt id, int64_t row_id, sqlite3_stmt **st) {
        int r;

        r = stmt_get(d, id, st);
        if (r >= 0)
                r = bind_args(d, *st, "i", row_id);
        if (r >= 0)
                r = stmt_step(d, *st);
        if (r == 0)
                return -ENOENT;
        return r < 0 ? r : 0;
}

static int run(SqliteStore *d, Stmt id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, id, &st);
        if (r < 0)
                return r;
        return stmt_exec(d, st);
}

static int col_strdup(sqlite3_stmt *st, int i, char **ret) {
        const unsigned char *t = sqlite3_column_text(st, i);

        if (!t) {
                if (sqlite3_column_type(st, i) != SQLITE_NULL)
                        return -ENOMEM;
                *ret = NULL;
                return 0;
        }
        *ret = strdup((const char *) t);
        return *ret ? 0 : -ENOMEM;
}

static uint64_t col_usec(sqlite3_stmt *st, int i) {
        int64_t v = sqlite3_column_int64(st, i);
        return v > 0 ? (uint64_t) v : 0;                /* NULL reads as 0 */
}

static uint64_t col_expiry(sqlite3_stmt *st, int i) {
        if (sqlite3_column_type(st, i) == SQLITE_NULL)
                return USEC_INFINITY;
        return col_usec(st, i);
}

/* ---- transactions ----------------------------------------------------------------------- */

/* A read transaction inside the read snapshot joins it; a write transaction ends it first. */
static int tx_begin(SqliteStore *d, bool write) {
        if (d->snapshot && !write && !sqlite3_get_autocommit(d->db)) {
                d->joined = true;
                return 0;
        }
        snapshot_end(d);
        return run(d, write ? STMT_BEGIN_IMMEDIATE : STMT_BEGIN);
}

/* Commit if r >= 0, roll back otherwise (or if the commit fails). Returns r or the commit's error.
 * A joined read transaction is left to the snapshot's end. */
static int tx_end(SqliteStore *d, int r) {
        if (d->joined) {
                d->joined = false;
                return r;
        }
        if (r >= 0) {
                int k = run(d, STMT_COMMIT);
                if (k >= 0)
                        return r;
                r = k;
        }
        if (!sqlite3_get_autocommit(d->db))
                (void) run(d, STMT_ROLLBACK);
        return r;
}

/* ---- sets of strings -------------------------------------------------------------------- */

static int strv_load(SqliteStore *d, const StrvTable *t, int64_t id, char ***ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_(store_strv_freep) char **l = NULL;
        size_t n = 0;
        int r;

        r = stmt_get(d, t->select, &st);
        if (r < 0)
                return r;
        r = bind_args(d, st, "i", id);
        if (r < 0)
                return r;
        l = new0(char *, 1);
        if (!l)
                return -ENOMEM;
        while ((r = stmt_step(d, st)) > 0) {
                const char *s = (const char *) sqlite3_column_text(st, 0);

                if (!s)
                        return -ENOMEM;
                r = store_strv_append(&l, &n, s);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

static int strv_replace(SqliteStore *d, const StrvTable *t, int64_t id, char *const *l) {
        _cleanup_stmt_ sqlite3_stmt *del = NULL, *ins = NULL;
        int r;

        r = stmt_get(d, t->delete, &del);
        if (r < 0)
                return r;
        r = bind_args(d, del, "i", id);
        if (r < 0)
                return r;
        r = stmt_exec(d, del);
        if (r < 0)
                return r;

        r = stmt_get(d, t->insert, &ins);
        if (r < 0)
                return r;
        for (size_t i = 0; l && l[i]; i++) {
                sqlite3_reset(ins);
                r = bind_args(d, ins, "it", id, l[i]);
                if (r < 0)
                        return r;
                r = stmt_exec(d, ins);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool strv_equal(char *const *a, char *const *b) {
        size_t i = 0;

        for (; a && a[i] && b && b[i]; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return !(a && a[i]) && !(b && b[i]);
}

/* ---- opening and migrating -------------------------------------------------------------- */

/* Create the file 0600 if it does not exist (and make its directory entry durable); take
 * group and other permissions away from an existing one. Symlinks are refused. */
static int db_file_prepare(const char *path) {
        _cleanup_(closep) int fd = -EBADF, dfd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        struct stat st;
        bool created = false;

        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0)
                created = true;
        else if (errno == EEXIST)
                fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((st.st_mode & 0077) && fchmod(fd, st.st_mode & 0700) < 0)
                return -errno;
        if (!created)
                return 0;

        if (fsync(fd) < 0)
                return -errno;
        dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        if (fsync(dfd) < 0)
                return -errno;
        return 0;
}

/* A PRAGMA or statement whose first row's first column is an integer or text. */
static int query_int(SqliteStore *d, const char *sql, int64_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc, r;

        rc = sqlite3_prepare_v2(d->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return db_error(d, rc, sql);
        r = stmt_step(d, st);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENODATA;
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

static int query_text(SqliteStore *d, const char *sql, char *buf, size_t size) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        const unsigned char *t;
        int rc, r;

        rc = sqlite3_prepare_v2(d->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return db_error(d, rc, sql);
        r = stmt_step(d, st);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENODATA;
        t = sqlite3_column_text(st, 0);
        snprintf(buf, size, "%s", t ? (const char *) t : "");
        return 0;
}

static int exec_sql(SqliteStore *d, const char *sql, const char *what) {
        int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : db_error(d, rc, what);
}

static int migrate_one(SqliteStore *d, const StoreMigration *m) {
        char pragma[64];
        int64_t v;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;

        /* Another process may have got here first. */
        r = query_int(d, "PRAGMA user_version", &v);
        if (r >= 0 && v < (int64_t) m->version) {
                r = exec_sql(d, m->sql, m->name);
                /* Numbers from our own table: PRAGMAs take no bound parameters. */
                if (r >= 0 && m->version == 1) {
                        snprintf(pragma, sizeof pragma, "PRAGMA application_id = %d", STORE_SQLITE_APPLICATION_ID);
                        r = exec_sql(d, pragma, "set application_id");
                }
                if (r >= 0) {
                        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %u", m->version);
                        r = exec_sql(d, pragma, "set user_version");
                }
                if (r >= 0)
                        log_debug("Store: applied migration %03u-%s.", m->version, m->name);
        }
        return tx_end(d, r);
}

static int migrate(SqliteStore *d) {
        int64_t version, app_id, objects;
        int r;

        r = query_int(d, "PRAGMA user_version", &version);
        if (r < 0)
                return r;
        r = query_int(d, "PRAGMA application_id", &app_id);
        if (r < 0)
                return r;
        if (version == 0) {
                /* A database we did not make: refuse to write our tables into it. */
                r = query_int(d, "SELECT count(*) FROM sqlite_schema", &objects);
                if (r < 0)
                        return r;
                if (objects > 0 || (app_id != 0 && app_id != STORE_SQLITE_APPLICATION_ID))
                        return -EMEDIUMTYPE;
        } else if (app_id != STORE_SQLITE_APPLICATION_ID)
                return -EMEDIUMTYPE;
        if (version > (int64_t) store_migrations_count)
                return -EPROTO;         /* written by a newer program: do not touch it */

        for (size_t i = (size_t) version; i < store_migrations_count; i++) {
                assert(store_migrations[i].version == i + 1);
                r = migrate_one(d, &store_migrations[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sqlite_read_begin(Store *s) {
        SqliteStore *d = s->data;
        int r;

        if (d->snapshot || !sqlite3_get_autocommit(d->db))
                return -EBUSY;          /* cannot happen: store.c counts the nesting */
        /* Deferred: it takes no lock until the first read, and costs no syscall if none comes. */
        r = run(d, STMT_BEGIN);
        if (r < 0)
                return r;
        d->snapshot = true;
        return 0;
}

static void sqlite_read_end(Store *s) {
        snapshot_end(s->data);
}

static void sqlite_close(Store *s) {
        SqliteStore *d = s->data;

        if (!d)
                return;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(d->stmts[i]);
        if (d->db)
                (void) sqlite3_close_v2(d->db);
        free(d);
        s->data = NULL;
}

static int sqlite_open(Store *s, const char *path) {
        SqliteStore *d;
        char mode[16];
        int64_t fk, v;
        int rc, r;

        d = new0(SqliteStore, 1);
        if (!d)
                return -ENOMEM;
        s->data = d;

        r = db_file_prepare(path);
        if (r < 0)
                return log_debug_errno(r, "Store: cannot create or open %s: %m", path);

        rc = sqlite3_open_v2(path, &d->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK)
                return db_error(d, rc, "open");
        (void) sqlite3_extended_result_codes(d->db, 1);
        (void) sqlite3_busy_timeout(d->db, (int) MIN(s->busy_timeout_usec / USEC_PER_MSEC, (uint64_t) INT_MAX));
        /* No writable_schema, no schema-corrupting PRAGMAs; no functions from the schema. */
        (void) sqlite3_db_config(d->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        (void) sqlite3_db_config(d->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

        r = query_text(d, "PRAGMA journal_mode = WAL", mode, sizeof mode);
        if (r < 0)
                return r;
        if (!streq(mode, "wal"))
                return log_debug_errno(-EOPNOTSUPP, "Store: %s cannot use WAL (journal mode is %s).", path, mode);
        r = exec_sql(d, "PRAGMA synchronous = FULL", "set synchronous");
        if (r < 0)
                return r;
        r = exec_sql(d, "PRAGMA foreign_keys = ON", "enable foreign keys");
        if (r < 0)
                return r;
        r = query_int(d, "PRAGMA foreign_keys", &fk);
        if (r < 0 || fk != 1)
                return -EOPNOTSUPP;
        r = query_int(d, "PRAGMA synchronous", &v);
        if (r < 0 || v != 2)
                return -EOPNOTSUPP;

        return migrate(d);
}

static int sqlite_schema_version(Store *s, unsigned *ret) {
        int64_t v = 0;
        int r;

        r = query_int(s->data, "PRAGMA user_version", &v);
        if (r < 0)
                return r;
        *ret = (unsigned) v;
        return 0;
}

static int sqlite_check_integrity(Store *s) {
        SqliteStore *d = s->data;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char result[64];
        int rc, r;

        r = query_text(d, "PRAGMA integrity_check(1)", result, sizeof result);
        if (r < 0)
                return r;
        if (!streq(result, "ok"))
                return log_debug_errno(-EUCLEAN, "Store: integrity check: %s", result);

        rc = sqlite3_prepare_v2(d->db, "PRAGMA foreign_key_check", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return db_error(d, rc, "foreign_key_check");
        r = stmt_step(d, st);
        if (r < 0)
                return r;
        if (r > 0)
                return log_debug_errno(-EUCLEAN, "Store: a foreign key in table %s is dangling.",
                                       (const char *) sqlite3_column_text(st, 0));
        return 0;
}

/* ---- users ------------------------------------------------------------------------------ */

static int sqlite_user_create(Store *s, const char *name, bool admin, char *const *tags, uint64_t now,
                              int64_t *ret_id) {
        SqliteStore *d = s->data;
        int64_t id = 0;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_USER_INSERT, &st);
                if (r >= 0)
                        r = bind_args(d, st, "tBu", name, (int) admin, now);
                if (r >= 0)
                        r = stmt_exec(d, st);
                if (r >= 0) {
                        id = sqlite3_last_insert_rowid(d->db);
                        r = strv_replace(d, &user_tags_table, id, tags);
                }
        }
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret_id = id;
        return 0;
}

static int user_from_row(SqliteStore *d, sqlite3_stmt *st, StoreUser *ret) {
        _cleanup_(store_user_deinit) StoreUser u = {
                .id = sqlite3_column_int64(st, 0),
                .admin = sqlite3_column_int(st, 2),
                .created_usec = col_usec(st, 3),
        };
        int r;

        r = col_strdup(st, 1, &u.name);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(u);
        return 0;
}

static int sqlite_user_get(Store *s, int64_t id, const char *name, StoreUser *ret) {
        SqliteStore *d = s->data;
        _cleanup_(store_user_deinit) StoreUser u = {};
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, name ? STMT_USER_BY_NAME : STMT_USER_BY_ID, &st);
                if (r >= 0)
                        r = name ? bind_args(d, st, "t", name) : bind_args(d, st, "i", id);
                if (r >= 0)
                        r = stmt_step(d, st);
                if (r == 0)
                        r = -ENOENT;
                if (r > 0)
                        r = user_from_row(d, st, &u);
        }
        if (r >= 0)
                r = strv_load(d, &user_tags_table, u.id, &u.tags);
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(u);
        return 0;
}

static int sqlite_user_list(Store *s, StoreUser **ret, size_t *ret_n) {
        SqliteStore *d = s->data;
        StoreUser *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_USER_LIST, &st);
                while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                        r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                        if (r >= 0)
                                r = user_from_row(d, st, &l[n]);
                        if (r >= 0)
                                n++;
                }
        }
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = strv_load(d, &user_tags_table, l[i].id, &l[i].tags);
        r = tx_end(d, r);
        if (r < 0) {
                store_users_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

/* 0 if the user exists, -ENOENT if not. */
static int user_exists(SqliteStore *d, int64_t id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_USER_EXISTS, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        if (r >= 0)
                r = stmt_step(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int sqlite_user_set_tags(Store *s, int64_t id, char *const *tags) {
        SqliteStore *d = s->data;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        r = user_exists(d, id);
        if (r >= 0)
                r = strv_replace(d, &user_tags_table, id, tags);
        return tx_end(d, r);
}

static int sqlite_user_delete(Store *s, int64_t id) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_USER_DELETE, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

/* ---- API keys --------------------------------------------------------------------------- */

static int api_key_from_row(sqlite3_stmt *st, StoreApiKey *ret) {
        _cleanup_(store_api_key_deinit) StoreApiKey k = {
                .id = sqlite3_column_int64(st, 0),
                .user_id = sqlite3_column_int64(st, 1),
                .scopes = (unsigned) sqlite3_column_int(st, 4),
                .created_usec = col_usec(st, 5),
                .expires_usec = col_expiry(st, 6),
                .revoked_usec = col_usec(st, 7),
                .last_used_usec = col_usec(st, 8),
        };
        const char *prefix;
        int r;

        r = col_strdup(st, 2, &k.name);
        if (r < 0)
                return r;
        prefix = (const char *) sqlite3_column_text(st, 3);
        if (!key_prefix_is_valid(prefix))
                return -EUCLEAN;
        memcpy(k.prefix, prefix, KEY_PREFIX_SIZE);
        *ret = TAKE_STRUCT(k);
        return 0;
}

static int sqlite_api_key_insert(Store *s, const StoreApiKey *k, const uint8_t *hash, int64_t *ret_id) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_API_KEY_INSERT, &st);
        if (r >= 0)
                r = bind_args(d, st, "ittbiue", k->user_id, k->name, k->prefix, hash, (size_t) KEY_HASH_LEN,
                              (int64_t) k->scopes, k->created_usec, k->expires_usec);
        if (r >= 0)
                r = stmt_exec(d, st);
        if (r < 0)
                return r;
        *ret_id = sqlite3_last_insert_rowid(d->db);
        return 0;
}

static int sqlite_api_key_lookup(Store *s, const char *prefix, const uint8_t *hash, StoreApiKey *ret) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_(store_api_key_deinit) StoreApiKey found = {};
        bool matched = false;
        int r;

        r = stmt_get(d, STMT_API_KEY_BY_PREFIX, &st);
        if (r >= 0)
                r = bind_args(d, st, "t", prefix);
        if (r < 0)
                return r;
        /* Prefixes may collide; look at every candidate, and compare each hash in full. */
        while ((r = stmt_step(d, st)) > 0) {
                const void *h = sqlite3_column_blob(st, 9);

                if (!h || sqlite3_column_bytes(st, 9) != KEY_HASH_LEN)
                        continue;
                if (key_hash_equal(h, hash) && !matched) {
                        r = api_key_from_row(st, &found);
                        if (r < 0)
                                return r;
                        matched = true;
                }
        }
        if (r < 0)
                return r;
        if (!matched)
                return -EKEYREJECTED;
        *ret = TAKE_STRUCT(found);
        return 0;
}

static int sqlite_api_key_touch(Store *s, int64_t id, uint64_t now, uint64_t granularity) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_API_KEY_TOUCH, &st);
        if (r >= 0)
                r = bind_args(d, st, "iui", id, now, (int64_t) now - (int64_t) MIN(granularity, now));
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r > 0;
}

static int sqlite_api_key_get(Store *s, int64_t id, StoreApiKey *ret) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_row_by_id(d, STMT_API_KEY_BY_ID, id, &st);
        if (r < 0)
                return r;
        return api_key_from_row(st, ret);
}

static int sqlite_api_key_list(Store *s, int64_t user_id, StoreApiKey **ret, size_t *ret_n) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        StoreApiKey *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = stmt_get(d, STMT_API_KEY_LIST, &st);
        if (r >= 0)
                r = bind_args(d, st, "I", user_id);
        while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                if (r >= 0)
                        r = api_key_from_row(st, &l[n]);
                if (r >= 0)
                        n++;
        }
        if (r < 0) {
                store_api_keys_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

/* A one-row UPDATE with parameters (id, time): -ENOENT if no row matched. */
static int update_by_id(SqliteStore *d, Stmt stmt, int64_t id, uint64_t now) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, stmt, &st);
        if (r >= 0)
                r = bind_args(d, st, "iu", id, now);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int sqlite_api_key_revoke(Store *s, int64_t id, uint64_t now) {
        return update_by_id(s->data, STMT_API_KEY_REVOKE, id, now);
}

/* ---- enrollment keys -------------------------------------------------------------------- */

static int ek_from_row(sqlite3_stmt *st, StoreEnrollmentKey *ret) {
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {
                .id = sqlite3_column_int64(st, 0),
                .user_id = sqlite3_column_int64(st, 1),
                .reusable = sqlite3_column_int(st, 4),
                .ephemeral = sqlite3_column_int(st, 5),
                .uses = col_usec(st, 6),
                .created_usec = col_usec(st, 7),
                .expires_usec = col_expiry(st, 8),
                .revoked_usec = col_usec(st, 9),
                .last_used_usec = col_usec(st, 10),
        };
        const char *prefix;
        int r;

        r = col_strdup(st, 2, &k.name);
        if (r < 0)
                return r;
        prefix = (const char *) sqlite3_column_text(st, 3);
        if (!key_prefix_is_valid(prefix))
                return -EUCLEAN;
        memcpy(k.prefix, prefix, KEY_PREFIX_SIZE);
        *ret = TAKE_STRUCT(k);
        return 0;
}

static int sqlite_ek_insert(Store *s, const StoreEnrollmentKey *k, const uint8_t *hash, int64_t *ret_id) {
        SqliteStore *d = s->data;
        int64_t id = 0;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_EK_INSERT, &st);
                if (r >= 0)
                        r = bind_args(d, st, "ittbBBue", k->user_id, k->name, k->prefix, hash,
                                      (size_t) KEY_HASH_LEN, (int) k->reusable, (int) k->ephemeral,
                                      k->created_usec, k->expires_usec);
                if (r >= 0)
                        r = stmt_exec(d, st);
        }
        if (r >= 0) {
                id = sqlite3_last_insert_rowid(d->db);
                r = strv_replace(d, &ek_tags_table, id, k->tags);
        }
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret_id = id;
        return 0;
}

/* Inside a write transaction: find the key, check it, count the use. */
static int ek_consume_locked(SqliteStore *d, const char *prefix, const uint8_t *hash, uint64_t now,
                             StoreEnrollmentKey *ret) {
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        bool matched = false;
        int r;

        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_EK_BY_PREFIX, &st);
                if (r >= 0)
                        r = bind_args(d, st, "t", prefix);
                if (r < 0)
                        return r;
                while ((r = stmt_step(d, st)) > 0) {
                        const void *h = sqlite3_column_blob(st, 11);

                        if (!h || sqlite3_column_bytes(st, 11) != KEY_HASH_LEN)
                                continue;
                        if (key_hash_equal(h, hash) && !matched) {
                                r = ek_from_row(st, &k);
                                if (r < 0)
                                        return r;
                                matched = true;
                        }
                }
                if (r < 0)
                        return r;
        }
        if (!matched)
                return -EKEYREJECTED;
        if (k.revoked_usec != 0)
                return -EKEYREVOKED;
        if (k.expires_usec != USEC_INFINITY && now >= k.expires_usec)
                return -EKEYEXPIRED;
        if (!k.reusable && k.uses > 0)
                return -EKEYEXPIRED;

        r = update_by_id(d, STMT_EK_USE, k.id, now);
        if (r == -ENOENT)
                return -EKEYEXPIRED;    /* cannot happen inside BEGIN IMMEDIATE; belt and braces */
        if (r < 0)
                return r;
        k.uses++;
        k.last_used_usec = now;

        r = strv_load(d, &ek_tags_table, k.id, &k.tags);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(k);
        return 0;
}

static int sqlite_ek_consume(Store *s, const char *prefix, const uint8_t *hash, uint64_t now,
                             StoreEnrollmentKey *ret) {
        SqliteStore *d = s->data;
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        r = ek_consume_locked(d, prefix, hash, now, &k);
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(k);
        return 0;
}

static int sqlite_ek_get(Store *s, int64_t id, StoreEnrollmentKey *ret) {
        SqliteStore *d = s->data;
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_row_by_id(d, STMT_EK_BY_ID, id, &st);
                if (r >= 0)
                        r = ek_from_row(st, &k);
        }
        if (r >= 0)
                r = strv_load(d, &ek_tags_table, k.id, &k.tags);
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(k);
        return 0;
}

static int sqlite_ek_list(Store *s, int64_t user_id, StoreEnrollmentKey **ret, size_t *ret_n) {
        SqliteStore *d = s->data;
        StoreEnrollmentKey *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_EK_LIST, &st);
                if (r >= 0)
                        r = bind_args(d, st, "I", user_id);
                while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                        r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                        if (r >= 0)
                                r = ek_from_row(st, &l[n]);
                        if (r >= 0)
                                n++;
                }
        }
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = strv_load(d, &ek_tags_table, l[i].id, &l[i].tags);
        r = tx_end(d, r);
        if (r < 0) {
                store_enrollment_keys_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

static int sqlite_ek_revoke(Store *s, int64_t id, uint64_t now) {
        return update_by_id(s->data, STMT_EK_REVOKE, id, now);
}

/* ---- providers -------------------------------------------------------------------------- */

static int provider_from_row(sqlite3_stmt *st, StoreProvider *ret) {
        _cleanup_(store_provider_deinit) StoreProvider p = {
                .id = sqlite3_column_int64(st, 0),
                .owner_id = sqlite3_column_int64(st, 1),
                .agent_draining = sqlite3_column_int(st, 7),
                .admin_draining = sqlite3_column_int(st, 8),
                .ephemeral = sqlite3_column_int(st, 9),
                .enrollment_key_id = sqlite3_column_int64(st, 10),
                .created_usec = col_usec(st, 16),
                .registered_usec = col_usec(st, 17),
                .last_heartbeat_usec = col_usec(st, 18),
        };
        const char *key = (const char *) sqlite3_column_text(st, 3);
        int64_t address = sqlite3_column_int64(st, 4), port = sqlite3_column_int64(st, 5);
        int64_t in_flight = sqlite3_column_int64(st, 12), capacity = sqlite3_column_int64(st, 13);
        int r;

        if (!key || strlen(key) != WG_KEY_B64_LEN || address < 0 || address > UINT32_MAX ||
            port < 1 || port > UINT16_MAX || in_flight < 0 || in_flight > UINT32_MAX ||
            capacity < 0 || capacity > UINT32_MAX)
                return -EUCLEAN;
        memcpy(p.public_key, key, WG_KEY_B64_SIZE);
        p.mesh_address.s_addr = htonl((uint32_t) address);
        p.agent_port = (uint16_t) port;
        p.in_flight = (uint32_t) in_flight;
        p.capacity = (uint32_t) capacity;

        p.state = store_provider_state_from_string((const char *) sqlite3_column_text(st, 6));
        p.sharing.mode = store_share_mode_from_string((const char *) sqlite3_column_text(st, 11));
        if (p.state < 0 || p.sharing.mode < 0)
                return -EUCLEAN;

        r = col_strdup(st, 2, &p.name);
        if (r >= 0)
                r = col_strdup(st, 14, &p.upstream_health);
        if (r >= 0)
                r = col_strdup(st, 15, &p.version);
        if (r < 0)
                return r;
        if (!p.name)
                return -EUCLEAN;
        *ret = TAKE_STRUCT(p);
        return 0;
}

static int share_users_load(SqliteStore *d, int64_t id, int64_t **ret, size_t *ret_n) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_free_ int64_t *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = stmt_get(d, STMT_PROVIDER_SHARE_USERS, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                if (r >= 0)
                        l[n++] = sqlite3_column_int64(st, 0);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        *ret_n = n;
        return 0;
}

/* The rows of the attached tables, read within the caller's transaction. */
static int provider_load_children(SqliteStore *d, StoreProvider *p) {
        int r;

        r = strv_load(d, &provider_tags_table, p->id, &p->tags);
        if (r >= 0)
                r = strv_load(d, &provider_models_table, p->id, &p->models);
        if (r >= 0)
                r = strv_load(d, &provider_caps_table, p->id, &p->capabilities);
        if (r >= 0 && p->sharing.mode == STORE_SHARE_RESTRICTED)
                r = share_users_load(d, p->id, &p->sharing.user_ids, &p->sharing.n_user_ids);
        if (r >= 0 && p->sharing.mode == STORE_SHARE_RESTRICTED)
                r = strv_load(d, &provider_share_tags_table, p->id, &p->sharing.tags);
        return r;
}

/* Within a transaction. */
static int provider_get_locked(SqliteStore *d, const StoreProviderSelector *sel, StoreProvider *ret) {
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        int r;

        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                if (sel->address) {
                        r = stmt_get(d, STMT_PROVIDER_BY_ADDRESS, &st);
                        if (r >= 0)
                                r = bind_args(d, st, "i", (int64_t) ntohl(sel->address->s_addr));
                } else if (sel->public_key) {
                        r = stmt_get(d, STMT_PROVIDER_BY_PUBLIC_KEY, &st);
                        if (r >= 0)
                                r = bind_args(d, st, "t", sel->public_key);
                } else if (sel->name) {
                        r = stmt_get(d, STMT_PROVIDER_BY_NAME, &st);
                        if (r >= 0)
                                r = bind_args(d, st, "it", sel->owner_id, sel->name);
                } else {
                        r = stmt_get(d, STMT_PROVIDER_BY_ID, &st);
                        if (r >= 0)
                                r = bind_args(d, st, "i", sel->id);
                }
                if (r >= 0)
                        r = stmt_step(d, st);
                if (r == 0)
                        return -ENOENT;
                if (r < 0)
                        return r;
                r = provider_from_row(st, &p);
                if (r < 0)
                        return r;
        }
        r = provider_load_children(d, &p);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(p);
        return 0;
}

static int sqlite_provider_get(Store *s, const StoreProviderSelector *sel, StoreProvider *ret) {
        SqliteStore *d = s->data;
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        r = provider_get_locked(d, sel, &p);
        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret = TAKE_STRUCT(p);
        return 0;
}

/* The next address never handed out, from the range of the current prefix. */
static int mesh_address_allocate(Store *s, SqliteStore *d, uint32_t *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int64_t next;
        int r;

        r = stmt_get(d, STMT_MESH_HIGHEST, &st);
        if (r >= 0)
                r = bind_args(d, st, "ii", (int64_t) s->mesh_first, (int64_t) s->mesh_last);
        if (r >= 0)
                r = stmt_step(d, st);
        if (r < 0)
                return r;
        if (r == 0 || sqlite3_column_type(st, 0) == SQLITE_NULL)
                next = s->mesh_first;
        else
                next = sqlite3_column_int64(st, 0) + 1;
        if (next > (int64_t) s->mesh_last)
                return -ENOSPC;
        *ret = (uint32_t) next;
        return 0;
}

static int provider_insert(Store *s, SqliteStore *d, int64_t owner, const StoreRegistration *reg,
                           const StoreEnrollmentKey *ek, const uint8_t *secret, uint64_t now, int64_t *ret_id) {
        uint32_t address;
        int64_t id;
        int r;

        r = mesh_address_allocate(s, d, &address);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_INSERT, &st);
                if (r >= 0)
                        r = bind_args(d, st, "ittiibBItu", owner, reg->name, reg->public_key,
                                      (int64_t) address, (int64_t) reg->agent_port,
                                      secret, (size_t) STORE_SECRET_LEN,
                                      (int) (ek && ek->ephemeral), ek ? ek->id : (int64_t) 0,
                                      reg->version, now);
                if (r >= 0)
                        r = stmt_exec(d, st);
                if (r < 0)
                        return r;
        }
        id = sqlite3_last_insert_rowid(d->db);
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                /* A primary key violation here would mean the address was handed out before:
                 * the ledger refuses it, and the registration fails instead of sharing one. */
                r = stmt_get(d, STMT_MESH_INSERT, &st);
                if (r >= 0)
                        r = bind_args(d, st, "iui", (int64_t) address, now, id);
                if (r >= 0)
                        r = stmt_exec(d, st);
                if (r < 0)
                        return r;
        }
        if (ek) {
                r = strv_replace(d, &provider_tags_table, id, ek->tags);
                if (r < 0)
                        return r;
        }
        *ret_id = id;
        return 0;
}

static int sqlite_provider_register(Store *s, const StoreRegistration *reg, const char *ek_prefix,
                                    const uint8_t *ek_hash, const uint8_t *secret, uint64_t now,
                                    int64_t *ret_id) {
        SqliteStore *d = s->data;
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey ek = {};
        int64_t owner = reg->owner_id, id = 0, existing_ek = 0;
        int r, created = 0;

        r = tx_begin(d, true);
        if (r < 0)
                return r;

        if (ek_prefix) {
                r = ek_consume_locked(d, ek_prefix, ek_hash, now, &ek);
                if (r < 0)
                        return tx_end(d, r);
                owner = ek.user_id;
        }

        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_FIND, &st);
                if (r >= 0)
                        r = bind_args(d, st, "it", owner, reg->name);
                if (r >= 0)
                        r = stmt_step(d, st);
                if (r > 0) {
                        id = sqlite3_column_int64(st, 0);
                        existing_ek = sqlite3_column_int64(st, 1);
                }
        }
        if (r < 0)
                return tx_end(d, r);

        if (id > 0) {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                /* An enrollment key may only re-register what it enrolled itself. */
                if (ek_prefix && existing_ek != ek.id)
                        return tx_end(d, -EEXIST);

                r = stmt_get(d, STMT_PROVIDER_REREGISTER, &st);
                if (r >= 0)
                        r = bind_args(d, st, "itibtu", id, reg->public_key, (int64_t) reg->agent_port,
                                      secret, (size_t) STORE_SECRET_LEN, reg->version, now);
                if (r >= 0)
                        r = stmt_exec(d, st);   /* the public key's UNIQUE constraint: -EEXIST */
        } else {
                r = provider_insert(s, d, owner, reg, ek_prefix ? &ek : NULL, secret, now, &id);
                created = 1;
        }

        r = tx_end(d, r);
        if (r < 0)
                return r;
        *ret_id = id;
        return created;
}

static int sqlite_provider_get_secret(Store *s, int64_t id, uint8_t *ret) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const void *b;
        int r;

        r = stmt_row_by_id(d, STMT_PROVIDER_SECRET, id, &st);
        if (r < 0)
                return r;
        b = sqlite3_column_blob(st, 0);
        if (!b || sqlite3_column_bytes(st, 0) != STORE_SECRET_LEN)
                return -EUCLEAN;
        memcpy(ret, b, STORE_SECRET_LEN);
        /* SQLite's copy of the row lives in its page cache, which we cannot wipe; the
         * statement's own buffer goes when it is reset. */
        return 0;
}

/* Read the providers a statement selects, with their attached rows, within a transaction. */
static int providers_collect(SqliteStore *d, sqlite3_stmt *st, StoreProvider **ret, size_t *ret_n) {
        StoreProvider *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        while ((r = stmt_step(d, st)) > 0) {
                r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                if (r >= 0)
                        r = provider_from_row(st, &l[n]);
                if (r < 0)
                        break;
                n++;
        }
        (void) sqlite3_reset(st);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = provider_load_children(d, &l[i]);
        if (r < 0) {
                store_providers_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

static int sqlite_provider_list(Store *s, const StoreProviderFilter *f, uint64_t online_since,
                                StoreProvider **ret, size_t *ret_n) {
        SqliteStore *d = s->data;
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        r = tx_begin(d, false);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_LIST, &st);
                /* ?4 is a time, NULL unless only online providers are wanted. A heartbeat
                 * is never at time 0, so clamping the cutoff to 1 changes nothing. */
                if (r >= 0)
                        r = bind_args(d, st, "IttII", f->owner_id, f->model, f->capability,
                                      f->online_only ? (int64_t) MAX(online_since, (uint64_t) 1) : (int64_t) 0,
                                      f->usable_by);
                if (r >= 0)
                        r = providers_collect(d, st, &l, &n);
        }
        r = tx_end(d, r);
        if (r < 0) {
                store_providers_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

static int sqlite_provider_delete(Store *s, int64_t id) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_PROVIDER_DELETE, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int sqlite_provider_set_draining(Store *s, int64_t id, bool draining) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_PROVIDER_SET_DRAINING, &st);
        if (r >= 0)
                r = bind_args(d, st, "iB", id, (int) draining);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int sqlite_provider_set_state(Store *s, int64_t id, StoreProviderState state) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_PROVIDER_SET_STATE, &st);
        if (r >= 0)
                r = bind_args(d, st, "it", id, store_provider_state_to_string(state));
        if (r >= 0)
                r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

/* 0 if the provider exists, -ENOENT if not; within a transaction. */
static int provider_exists(SqliteStore *d, int64_t id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_PROVIDER_EXISTS, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        if (r >= 0)
                r = stmt_step(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int sqlite_provider_set_tags(Store *s, int64_t id, char *const *tags) {
        SqliteStore *d = s->data;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        r = provider_exists(d, id);
        if (r >= 0)
                r = strv_replace(d, &provider_tags_table, id, tags);
        return tx_end(d, r);
}

static int sqlite_provider_set_sharing(Store *s, int64_t id, const StoreSharing *sh) {
        SqliteStore *d = s->data;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_SET_SHARE_MODE, &st);
                if (r >= 0)
                        r = bind_args(d, st, "it", id, store_share_mode_to_string(sh->mode));
                if (r >= 0)
                        r = stmt_exec(d, st);
                if (r == 0)
                        r = -ENOENT;
        }
        if (r >= 0)
                r = strv_replace(d, &provider_share_tags_table, id, sh->tags);
        if (r >= 0) {
                _cleanup_stmt_ sqlite3_stmt *del = NULL, *ins = NULL;

                r = stmt_get(d, STMT_PROVIDER_SHARE_USERS_DELETE, &del);
                if (r >= 0)
                        r = bind_args(d, del, "i", id);
                if (r >= 0)
                        r = stmt_exec(d, del);
                if (r >= 0)
                        r = stmt_get(d, STMT_PROVIDER_SHARE_USER_INSERT, &ins);
                for (size_t i = 0; r >= 0 && i < sh->n_user_ids; i++) {
                        sqlite3_reset(ins);
                        r = bind_args(d, ins, "ii", id, sh->user_ids[i]);
                        if (r >= 0)
                                r = stmt_exec(d, ins);  /* no such user: -ENOENT */
                }
        }
        r = tx_end(d, r);
        return r < 0 ? r : 0;
}

static int sqlite_provider_heartbeat(Store *s, int64_t id, const StoreHeartbeat *hb, uint64_t now) {
        SqliteStore *d = s->data;
        _cleanup_(store_strv_freep) char **models = NULL, **caps = NULL;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_HEARTBEAT, &st);
                if (r >= 0)
                        r = bind_args(d, st, "iuiittB", id, now, (int64_t) hb->in_flight,
                                      (int64_t) hb->capacity, hb->upstream_health, hb->version,
                                      (int) hb->draining);
                if (r >= 0)
                        r = stmt_exec(d, st);
                if (r == 0)
                        r = -ENOENT;
        }
        /* Most heartbeats repeat the last lists: rewrite them only when they changed. */
        if (r >= 0)
                r = strv_load(d, &provider_models_table, id, &models);
        if (r >= 0 && !strv_equal(models, hb->models))
                r = strv_replace(d, &provider_models_table, id, hb->models);
        if (r >= 0)
                r = strv_load(d, &provider_caps_table, id, &caps);
        if (r >= 0 && !strv_equal(caps, hb->capabilities))
                r = strv_replace(d, &provider_caps_table, id, hb->capabilities);
        r = tx_end(d, r);
        return r < 0 ? r : 0;
}

static int sqlite_provider_peers(Store *s, StorePeer **ret, size_t *ret_n) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        StorePeer *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = stmt_get(d, STMT_PROVIDER_PEERS, &st);
        while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                const char *key = (const char *) sqlite3_column_text(st, 1);
                int64_t address = sqlite3_column_int64(st, 2);

                if (!key || strlen(key) != WG_KEY_B64_LEN || address < 0 || address > UINT32_MAX) {
                        r = -EUCLEAN;
                        break;
                }
                r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                if (r < 0)
                        break;
                l[n] = (StorePeer) {
                        .provider_id = sqlite3_column_int64(st, 0),
                        .address.s_addr = htonl((uint32_t) address),
                };
                memcpy(l[n].public_key, key, WG_KEY_B64_SIZE);
                n++;
        }
        if (r < 0) {
                free(l);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

static int sqlite_provider_stale_ephemeral(Store *s, uint64_t cutoff, bool reap, StoreProvider **ret,
                                           size_t *ret_n) {
        SqliteStore *d = s->data;
        _cleanup_free_ int64_t *ids = NULL;
        StoreProvider *l = NULL;
        size_t n_ids = 0, allocated = 0, n = 0;
        int r;

        r = tx_begin(d, reap);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = stmt_get(d, STMT_PROVIDER_STALE_EPHEMERAL, &st);
                if (r >= 0)
                        r = bind_args(d, st, "i", (int64_t) MIN(cutoff, (uint64_t) INT64_MAX));
                while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                        r = store_array_grow((void **) &ids, &allocated, n_ids + 1, sizeof *ids);
                        if (r >= 0)
                                ids[n_ids++] = sqlite3_column_int64(st, 0);
                }
        }
        if (r >= 0 && n_ids > 0) {
                l = new0(StoreProvider, n_ids);
                if (!l)
                        r = -ENOMEM;
        }
        for (size_t i = 0; r >= 0 && i < n_ids; i++) {
                r = provider_get_locked(d, &(StoreProviderSelector) { .id = ids[i] }, &l[n]);
                if (r >= 0)
                        n++;
                if (r >= 0 && reap) {
                        _cleanup_stmt_ sqlite3_stmt *st = NULL;

                        r = stmt_get(d, STMT_PROVIDER_DELETE, &st);
                        if (r >= 0)
                                r = bind_args(d, st, "i", ids[i]);
                        if (r >= 0)
                                r = stmt_exec(d, st);
                }
        }
        r = tx_end(d, r);
        if (r < 0) {
                store_providers_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

/* ---- per-key limits and usage ------------------------------------------------------------ */

/* A limit column: NULL is the default. */
static int64_t col_limit(sqlite3_stmt *st, int i) {
        return sqlite3_column_type(st, i) == SQLITE_NULL ? STORE_LIMIT_DEFAULT : sqlite3_column_int64(st, i);
}

static int bind_limit(sqlite3_stmt *st, int idx, int64_t v) {
        return v == STORE_LIMIT_DEFAULT ? sqlite3_bind_null(st, idx) : sqlite3_bind_int64(st, idx, v);
}

static int sqlite_api_key_get_limits(Store *s, int64_t id, StoreKeyLimits *ret) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_row_by_id(d, STMT_API_KEY_LIMITS, id, &st);
        if (r < 0)
                return r;
        *ret = (StoreKeyLimits) {
                .requests_per_minute = col_limit(st, 0),
                .tokens_per_minute = col_limit(st, 1),
                .concurrent_streams = col_limit(st, 2),
        };
        return 0;
}

static int sqlite_api_key_set_limits(Store *s, int64_t id, const StoreKeyLimits *l) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = stmt_get(d, STMT_API_KEY_SET_LIMITS, &st);
        if (r >= 0)
                r = bind_args(d, st, "i", id);
        if (r < 0)
                return r;
        rc = bind_limit(st, 2, l->requests_per_minute);
        if (rc == SQLITE_OK)
                rc = bind_limit(st, 3, l->tokens_per_minute);
        if (rc == SQLITE_OK)
                rc = bind_limit(st, 4, l->concurrent_streams);
        if (rc != SQLITE_OK)
                return db_error(d, rc, "bind");
        r = stmt_exec(d, st);
        return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int usage_insert_one(SqliteStore *d, const StoreUsageRecord *u) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_USAGE_INSERT, &st);
        if (r >= 0)
                r = bind_args(d, st, "tiiiItBBtiiiiBui", u->request_id, (int64_t) u->started_usec, u->key_id,
                              u->user_id, u->provider_id, u->model, (int) u->capability, (int) u->stream, u->outcome,
                              (int64_t) u->status, (int64_t) u->attempts, (int64_t) u->prompt_tokens,
                              (int64_t) u->completion_tokens, (int) u->usage_reported, u->time_to_first_token_usec,
                              (int64_t) u->duration_usec);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r;
}

static int sqlite_usage_insert(Store *s, const StoreUsageRecord *l, size_t n) {
        SqliteStore *d = s->data;
        int r;

        r = tx_begin(d, true);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = usage_insert_one(d, &l[i]);
        return tx_end(d, r < 0 ? r : 0);
}

static int sqlite_usage_prune(Store *s, uint64_t before, unsigned max) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(d, STMT_USAGE_PRUNE, &st);
        if (r >= 0)
                r = bind_args(d, st, "ii", (int64_t) before, (int64_t) max);
        if (r >= 0)
                r = stmt_exec(d, st);
        return r;
}

static int sqlite_usage_totals(Store *s, const StoreUsageFilter *f, uint64_t until, StoreUsageTotal **ret,
                               size_t *ret_n) {
        SqliteStore *d = s->data;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        StoreUsageTotal *l = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = stmt_get(d, STMT_USAGE_BY_KEY + f->group, &st);
        if (r >= 0)
                r = bind_args(d, st, "ItIti" "ii", f->user_id, f->key_prefix, f->provider_id, f->model,
                              (int64_t) f->since_usec, (int64_t) until, (int64_t) STORE_USAGE_GROUPS_MAX);
        while (r >= 0 && (r = stmt_step(d, st)) > 0) {
                StoreUsageTotal *t;

                r = store_array_grow((void **) &l, &allocated, n + 1, sizeof *l);
                if (r < 0)
                        break;
                t = &l[n];
                *t = (StoreUsageTotal) {
                        .id = sqlite3_column_int64(st, 0),
                        .requests = col_usec(st, 2),
                        .ok = col_usec(st, 3),
                        .failed = col_usec(st, 4),
                        .truncated = col_usec(st, 5),
                        .cancelled = col_usec(st, 6),
                        .prompt_tokens = col_usec(st, 7),
                        .completion_tokens = col_usec(st, 8),
                        .duration_usec = col_usec(st, 9),
                        .time_to_first_token_usec = col_usec(st, 10),
                        .first_token_requests = col_usec(st, 11),
                        .first_usec = col_usec(st, 12),
                        .last_usec = col_usec(st, 13),
                };
                t->other = t->requests - MIN(t->requests, t->ok + t->failed + t->truncated + t->cancelled);
                r = col_strdup(st, 1, &t->name);
                if (r < 0)
                        break;
                n++;
        }
        if (r < 0) {
                store_usage_totals_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

const StoreBackend store_backend_sqlite = {
        .name = "sqlite",
        .open = sqlite_open,
        .close = sqlite_close,
        .read_begin = sqlite_read_begin,
        .read_end = sqlite_read_end,
        .schema_version = sqlite_schema_version,
        .check_integrity = sqlite_check_integrity,

        .user_create = sqlite_user_create,
        .user_get = sqlite_user_get,
        .user_list = sqlite_user_list,
        .user_set_tags = sqlite_user_set_tags,
        .user_delete = sqlite_user_delete,

        .api_key_insert = sqlite_api_key_insert,
        .api_key_lookup = sqlite_api_key_lookup,
        .api_key_touch = sqlite_api_key_touch,
        .api_key_get = sqlite_api_key_get,
        .api_key_list = sqlite_api_key_list,
        .api_key_revoke = sqlite_api_key_revoke,
        .api_key_get_limits = sqlite_api_key_get_limits,
        .api_key_set_limits = sqlite_api_key_set_limits,

        .enrollment_key_insert = sqlite_ek_insert,
        .enrollment_key_consume = sqlite_ek_consume,
        .enrollment_key_get = sqlite_ek_get,
        .enrollment_key_list = sqlite_ek_list,
        .enrollment_key_revoke = sqlite_ek_revoke,

        .provider_register = sqlite_provider_register,
        .provider_get = sqlite_provider_get,
        .provider_get_secret = sqlite_provider_get_secret,
        .provider_list = sqlite_provider_list,
        .provider_delete = sqlite_provider_delete,
        .provider_set_draining = sqlite_provider_set_draining,
        .provider_set_state = sqlite_provider_set_state,
        .provider_set_tags = sqlite_provider_set_tags,
        .provider_set_sharing = sqlite_provider_set_sharing,
        .provider_heartbeat = sqlite_provider_heartbeat,
        .provider_peers = sqlite_provider_peers,
        .provider_stale_ephemeral = sqlite_provider_stale_ephemeral,

        .usage_insert = sqlite_usage_insert,
        .usage_prune = sqlite_usage_prune,
        .usage_totals = sqlite_usage_totals,
};
