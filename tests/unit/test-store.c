/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "cleanup.h"
#include "store.h"
#include "wg-key.h"

/* ---- helpers ---------------------------------------------------------------------------- */

#define T0 (UINT64_C(1700000000) * USEC_PER_SEC)
#define SEC USEC_PER_SEC

static uint64_t fake_now;

static uint64_t fake_clock(void *userdata) {
        return fake_now;
}

static char *tmpdir;
static char *db_path;

static void setup(void) {
        ck_assert_int_ge(asprintf(&tmpdir, "%s/test-store.XXXXXX", getenv("TMPDIR") ?: "/tmp"), 0);
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        ck_assert_int_ge(asprintf(&db_path, "%s/gateway.db", tmpdir), 0);
        fake_now = T0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void teardown(void) {
        ck_assert_int_eq(nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(tmpdir);
        free(db_path);
}

static Store *open_with(const char *prefix, uint64_t busy_usec) {
        Store *s = NULL;
        StoreOptions o = {
                .mesh_prefix = prefix,
                .busy_timeout_usec = busy_usec,
                .clock = fake_clock,
        };

        ck_assert_int_eq(store_open(db_path, &o, &s), 0);
        return s;
}

static Store *open_store(void) {
        return open_with(NULL, 0);
}

static int64_t make_user(Store *s, const char *name) {
        int64_t id = 0;

        ck_assert_int_eq(store_user_create(s, name, false, NULL, &id), 0);
        ck_assert_int_gt(id, 0);
        return id;
}

/* A distinct, valid public key for each n. */
static const char *pubkey(unsigned n, char buf[static WG_KEY_B64_SIZE]) {
        WgKey k = {};

        k.data[0] = 1;
        memcpy(k.data + 1, &n, sizeof n);
        return wg_key_to_base64(&k, buf);
}

static int do_register(Store *s, int64_t owner, const char *ek, const char *name, unsigned keyn, StoreProvider *ret) {
        char key[WG_KEY_B64_SIZE];
        uint8_t secret[STORE_SECRET_LEN];

        return store_provider_register(s, &(StoreRegistration) {
                .owner_id = owner,
                .enrollment_key = ek,
                .name = name,
                .public_key = pubkey(keyn, key),
                .agent_port = 8080,
                .version = "0.1.0",
        }, ret, secret);
}

static int64_t make_provider(Store *s, int64_t owner, const char *name, unsigned keyn) {
        StoreProvider p = {};

        ck_assert_int_eq(do_register(s, owner, NULL, name, keyn, &p), 1);
        int64_t id = p.id;
        store_provider_deinit(&p);
        return id;
}

static const char *addr(struct in_addr a, char buf[static INET_ADDRSTRLEN]) {
        return inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

static sqlite3 *raw_open(void) {
        sqlite3 *db = NULL;

        ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        return db;
}

static void raw_exec(const char *sql, int expected) {
        sqlite3 *db = raw_open();

        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL) & 0xff, expected);
        sqlite3_close(db);
}

/* Whether @needle occurs in the database file or its WAL. */
static bool db_files_contain(const char *needle) {
        static const char *const suffixes[] = { "", "-wal" };
        bool found = false;

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_free_ char *p = NULL, *data = NULL;
                struct stat st;
                size_t size = 0;
                FILE *f;

                ck_assert_int_ge(asprintf(&p, "%s%s", db_path, suffixes[i]), 0);
                f = fopen(p, "re");
                if (!f)
                        continue;
                ck_assert_int_eq(fstat(fileno(f), &st), 0);
                data = malloc(st.st_size + 1);
                ck_assert_ptr_nonnull(data);
                size = fread(data, 1, st.st_size, f);
                fclose(f);
                if (memmem(data, size, needle, strlen(needle)))
                        found = true;
        }
        return found;
}

/* ---- opening and migrations --------------------------------------------------------------- */

START_TEST(test_open_and_migrate)
{
        Store *s;
        unsigned v = 0;
        struct stat st;
        struct in_addr a;
        char buf[INET_ADDRSTRLEN], *wal;
        unsigned len;

        s = open_store();
        ck_assert_str_eq(store_backend_name(s), "sqlite");
        ck_assert_int_eq(store_schema_version(s, &v), 0);
        ck_assert_uint_eq(v, store_schema_version_latest());
        ck_assert_uint_ge(v, 1);
        ck_assert_int_eq(store_check_integrity(s), 0);
        store_gateway_address(s, &a);
        ck_assert_str_eq(addr(a, buf), "100.96.0.1");
        store_mesh_prefix(s, &a, &len);
        ck_assert_str_eq(addr(a, buf), "100.96.0.0");
        ck_assert_uint_eq(len, 16);
        make_user(s, "alice");

        /* The database and its WAL are private to the owner. */
        ck_assert_int_eq(stat(db_path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ck_assert_int_ge(asprintf(&wal, "%s-wal", db_path), 0);
        ck_assert_int_eq(stat(wal, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        free(wal);
        s = store_close(s);
        ck_assert_ptr_null(s);

        /* Reopening applies nothing and keeps the data. */
        s = open_store();
        ck_assert_int_eq(store_schema_version(s, &v), 0);
        ck_assert_uint_eq(v, store_schema_version_latest());
        {
                StoreUser u = {};
                ck_assert_int_eq(store_user_get_by_name(s, "alice", &u), 0);
                store_user_deinit(&u);
        }
        store_close(s);

        /* WAL is a property of the file. */
        {
                sqlite3 *db = raw_open();
                sqlite3_stmt *q;

                ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
                ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
                ck_assert_str_eq((const char *) sqlite3_column_text(q, 0), "wal");
                sqlite3_finalize(q);
                ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &q, NULL), SQLITE_OK);
                ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
                ck_assert_int_eq(sqlite3_column_int(q, 0), 0x636c7562);
                sqlite3_finalize(q);
                sqlite3_close(db);
        }
}
END_TEST

START_TEST(test_open_refuses)
{
        static const char *const bad_prefixes[] = {
                "100.96.0.0", "100.96.0.0/", "100.96.0.0/31", "100.96.0.0/7", "100.96.0.1/16",
                "fd00::/64", "100.96.0.0/16x", "300.96.0.0/16", "", "100.96.0.0/ 16",
        };
        StoreOptions o = {};
        Store *s = NULL;
        char *other;
        int fd;
        struct stat st;

        for (size_t i = 0; i < ELEMENTSOF(bad_prefixes); i++) {
                o.mesh_prefix = bad_prefixes[i];
                ck_assert_msg(store_open(db_path, &o, &s) == -EINVAL, "accepted %s", bad_prefixes[i]);
        }
        ck_assert_int_eq(store_open("", NULL, &s), -EINVAL);
        o = (StoreOptions) { .busy_timeout_usec = STORE_BUSY_TIMEOUT_USEC_MAX + 1 };
        ck_assert_int_eq(store_open(db_path, &o, &s), -EINVAL);
        o = (StoreOptions) { .online_window_usec = STORE_ONLINE_WINDOW_USEC_MAX + 1 };
        ck_assert_int_eq(store_open(db_path, &o, &s), -EINVAL);
        ck_assert_int_eq(store_open("postgresql://gateway@localhost/club", NULL, &s), -EPROTONOSUPPORT);
        ck_assert_ptr_null(s);

        /* A directory is not a database. */
        ck_assert_int_lt(store_open(tmpdir, NULL, &s), 0);

        /* "sqlite:" names the backend explicitly. */
        ck_assert_int_ge(asprintf(&other, "sqlite:%s/explicit.db", tmpdir), 0);
        ck_assert_int_eq(store_open(other, NULL, &s), 0);
        s = store_close(s);
        free(other);

        /* Somebody else's database: left alone. */
        ck_assert_int_ge(asprintf(&other, "%s/other.db", tmpdir), 0);
        {
                sqlite3 *db = NULL;

                ck_assert_int_eq(sqlite3_open(other, &db), SQLITE_OK);
                ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
                sqlite3_close(db);
        }
        ck_assert_int_eq(store_open(other, NULL, &s), -EMEDIUMTYPE);
        free(other);

        /* A schema newer than this program: refused, not touched. */
        s = open_store();
        store_close(s);
        raw_exec("PRAGMA user_version = 999", SQLITE_OK);
        ck_assert_int_eq(store_open(db_path, NULL, &s), -EPROTO);
        {
                char sql[64];

                snprintf(sql, sizeof sql, "PRAGMA user_version = %u", store_schema_version_latest());
                raw_exec(sql, SQLITE_OK);
        }

        /* An existing file readable by others is made private. */
        ck_assert_int_eq(chmod(db_path, 0644), 0);
        s = open_store();
        store_close(s);
        ck_assert_int_eq(stat(db_path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);

        /* A symlink is refused. */
        ck_assert_int_ge(asprintf(&other, "%s/link.db", tmpdir), 0);
        ck_assert_int_eq(symlink(db_path, other), 0);
        ck_assert_int_eq(store_open(other, NULL, &s), -ELOOP);
        free(other);

        /* An empty file is a new database. */
        ck_assert_int_ge(asprintf(&other, "%s/empty.db", tmpdir), 0);
        fd = open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_int_eq(store_open(other, NULL, &s), 0);
        store_close(s);
        free(other);
}
END_TEST

START_TEST(test_two_connections_migrate)
{
        Store *a, *b;
        unsigned va = 0, vb = 0;

        /* Both see a fresh file; whichever migrates second finds the work done. */
        a = open_store();
        b = open_store();
        ck_assert_int_eq(store_schema_version(a, &va), 0);
        ck_assert_int_eq(store_schema_version(b, &vb), 0);
        ck_assert_uint_eq(va, vb);
        make_user(a, "alice");
        {
                StoreUser u = {};
                ck_assert_int_eq(store_user_get_by_name(b, "alice", &u), 0);
                store_user_deinit(&u);
        }
        store_close(a);
        store_close(b);
}
END_TEST

/* ---- users -------------------------------------------------------------------------------- */

START_TEST(test_users)
{
        static const char *const bad_names[] = {
                "", "-alice", ".alice", "al ice", "al/ice", "alice\n", "äl", NULL,
        };
        _cleanup_(store_closep) Store *s = open_store();
        char *tags[] = { "team-b", "team-a", "team-b", NULL };
        char *bad_tags[] = { "ok", "not ok", NULL };
        char *new_tags[] = { "x", NULL };
        char long_name[STORE_USER_NAME_MAX + 2];
        StoreUser u = {}, *l = NULL;
        size_t n = 0;
        int64_t alice, bob, carol;

        ck_assert_int_eq(store_user_create(s, "alice@example.org", true, tags, &alice), 0);
        ck_assert_int_eq(store_user_create(s, "alice@example.org", false, NULL, NULL), -EEXIST);
        bob = make_user(s, "bob");
        ck_assert_int_gt(bob, alice);

        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++)
                ck_assert_int_eq(store_user_create(s, bad_names[i], false, NULL, NULL), -EINVAL);
        memset(long_name, 'a', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = 0;
        ck_assert_int_eq(store_user_create(s, long_name, false, NULL, NULL), -EINVAL);
        long_name[STORE_USER_NAME_MAX] = 0;
        ck_assert_int_eq(store_user_create(s, long_name, false, NULL, NULL), 0);
        ck_assert_int_eq(store_user_create(s, "dave", false, bad_tags, NULL), -EINVAL);

        ck_assert_int_eq(store_user_get(s, alice, &u), 0);
        ck_assert_int_eq(u.id, alice);
        ck_assert_str_eq(u.name, "alice@example.org");
        ck_assert(u.admin);
        ck_assert_uint_eq(u.created_usec, T0);
        ck_assert_uint_eq(store_strv_length(u.tags), 2);       /* sorted, no duplicates */
        ck_assert_str_eq(u.tags[0], "team-a");
        ck_assert_str_eq(u.tags[1], "team-b");
        store_user_deinit(&u);

        ck_assert_int_eq(store_user_get_by_name(s, "bob", &u), 0);
        ck_assert_int_eq(u.id, bob);
        ck_assert(!u.admin);
        ck_assert_uint_eq(store_strv_length(u.tags), 0);
        store_user_deinit(&u);

        ck_assert_int_eq(store_user_set_tags(s, bob, new_tags), 0);
        ck_assert_int_eq(store_user_set_tags(s, 9999, new_tags), -ENOENT);
        ck_assert_int_eq(store_user_set_tags(s, bob, bad_tags), -EINVAL);
        ck_assert_int_eq(store_user_get(s, bob, &u), 0);
        ck_assert_str_eq(u.tags[0], "x");
        store_user_deinit(&u);

        ck_assert_int_eq(store_user_list(s, &l, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_int_eq(l[0].id, alice);
        ck_assert_int_eq(l[1].id, bob);
        ck_assert_str_eq(l[1].tags[0], "x");
        store_users_free(l, n);

        ck_assert_int_eq(store_user_delete(s, bob), 0);
        ck_assert_int_eq(store_user_delete(s, bob), -ENOENT);
        ck_assert_int_eq(store_user_get(s, bob, &u), -ENOENT);
        ck_assert_int_eq(store_user_get(s, 0, &u), -ENOENT);
        ck_assert_int_eq(store_user_get_by_name(s, "bob", &u), -ENOENT);
        ck_assert_int_eq(store_user_get_by_name(s, "not valid", &u), -ENOENT);

        /* IDs are never reused. */
        carol = make_user(s, "bob");
        ck_assert_int_gt(carol, bob);
}
END_TEST

/* ---- API keys ------------------------------------------------------------------------------ */

START_TEST(test_scope_strings)
{
        unsigned sc = 0;
        char *t = NULL;

        ck_assert_int_eq(store_scopes_from_string("inference", &sc), 0);
        ck_assert_uint_eq(sc, STORE_SCOPE_INFERENCE);
        ck_assert_int_eq(store_scopes_from_string("agent,inference", &sc), 0);
        ck_assert_uint_eq(sc, STORE_SCOPE_INFERENCE | STORE_SCOPE_AGENT);
        ck_assert_int_eq(store_scopes_to_string(sc, &t), 0);
        ck_assert_str_eq(t, "inference,agent");
        free(t);
        ck_assert_int_eq(store_scopes_from_string("", &sc), -EINVAL);
        ck_assert_int_eq(store_scopes_from_string("agent,agent", &sc), -EINVAL);
        ck_assert_int_eq(store_scopes_from_string("agent,", &sc), -EINVAL);
        ck_assert_int_eq(store_scopes_from_string("admin", &sc), -EINVAL);
        ck_assert_int_eq(store_scopes_from_string("inferenc", &sc), -EINVAL);
        ck_assert_int_eq(store_scopes_to_string(0, &t), -EINVAL);
        ck_assert_int_eq(store_scopes_to_string(8, &t), -EINVAL);
}
END_TEST

START_TEST(test_api_keys)
{
        _cleanup_(store_closep) Store *s = open_store();
        StoreApiKey k = {}, v = {}, *l = NULL;
        char *secret = NULL, *secret2 = NULL, *forged;
        size_t n = 0;
        int64_t alice = make_user(s, "alice"), bob = make_user(s, "bob");

        ck_assert_int_eq(store_api_key_create(s, alice, "laptop", STORE_SCOPE_INFERENCE, USEC_INFINITY, &k, &secret), 0);
        ck_assert_int_gt(k.id, 0);
        ck_assert_uint_eq(strlen(secret), KEY_LEN);
        ck_assert_ptr_nonnull(startswith(secret, "ic-"));
        ck_assert_int_eq(strncmp(secret + 3, k.prefix, KEY_PREFIX_CHARS), 0);
        ck_assert_str_eq(k.name, "laptop");
        ck_assert_uint_eq(k.expires_usec, USEC_INFINITY);
        ck_assert_uint_eq(k.last_used_usec, 0);

        /* Only the hash is stored. */
        ck_assert(!db_files_contain(secret));
        ck_assert(!db_files_contain(secret + 3));

        /* Verify: scope, last use at a coarse granularity. */
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, &v), 0);
        ck_assert_int_eq(v.id, k.id);
        ck_assert_int_eq(v.user_id, alice);
        ck_assert_uint_eq(v.last_used_usec, T0);
        store_api_key_deinit(&v);
        ck_assert_int_eq(store_api_key_verify(s, secret, 0, NULL), 0);
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_AGENT, NULL), -EACCES);
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE | STORE_SCOPE_AGENT, NULL), -EACCES);
        ck_assert_int_eq(store_api_key_verify(s, secret, 4, NULL), -EINVAL);

        fake_now = T0 + 30 * SEC;
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), 0);
        ck_assert_int_eq(store_api_key_get(s, k.id, &v), 0);
        ck_assert_uint_eq(v.last_used_usec, T0);                /* within the granularity */
        store_api_key_deinit(&v);
        fake_now = T0 + 61 * SEC;
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), 0);
        ck_assert_int_eq(store_api_key_get(s, k.id, &v), 0);
        ck_assert_uint_eq(v.last_used_usec, T0 + 61 * SEC);
        store_api_key_deinit(&v);

        /* Unknown, malformed, wrong kind. */
        forged = strdup(secret);
        forged[KEY_LEN - 1] = forged[KEY_LEN - 1] == 'a' ? 'b' : 'a';  /* same prefix, other hash */
        ck_assert_int_eq(store_api_key_verify(s, forged, 0, NULL), -EKEYREJECTED);
        forged[4] = forged[4] == 'a' ? 'b' : 'a';
        ck_assert_int_eq(store_api_key_verify(s, forged, 0, NULL), -EKEYREJECTED);
        forged[0] = 'x';
        ck_assert_int_eq(store_api_key_verify(s, forged, 0, NULL), -EKEYREJECTED);
        ck_assert_int_eq(store_api_key_verify(s, "", 0, NULL), -EKEYREJECTED);
        ck_assert_int_eq(store_api_key_verify(s, NULL, 0, NULL), -EKEYREJECTED);
        memcpy(forged, secret, KEY_LEN);
        forged[1] = 'e';                                        /* ie-…: an enrollment key's tag */
        ck_assert_int_eq(store_api_key_verify(s, forged, 0, NULL), -EKEYREJECTED);
        free(forged);

        /* Expiry. */
        ck_assert_int_eq(store_api_key_create(s, bob, NULL, STORE_SCOPE_AGENT, fake_now + 100 * SEC, &v, &secret2), 0);
        ck_assert_ptr_null(v.name);
        ck_assert_uint_eq(v.expires_usec, fake_now + 100 * SEC);
        store_api_key_deinit(&v);
        fake_now += 99 * SEC;
        ck_assert_int_eq(store_api_key_verify(s, secret2, STORE_SCOPE_AGENT, NULL), 0);
        fake_now += 1 * SEC;
        ck_assert_int_eq(store_api_key_verify(s, secret2, STORE_SCOPE_AGENT, NULL), -EKEYEXPIRED);

        /* Revocation. */
        ck_assert_int_eq(store_api_key_revoke(s, k.id), 0);
        ck_assert_int_eq(store_api_key_verify(s, secret, 0, NULL), -EKEYREVOKED);
        ck_assert_int_eq(store_api_key_get(s, k.id, &v), 0);
        ck_assert_uint_eq(v.revoked_usec, fake_now);
        store_api_key_deinit(&v);
        fake_now += SEC;
        ck_assert_int_eq(store_api_key_revoke(s, k.id), 0);   /* again: keeps the first time */
        ck_assert_int_eq(store_api_key_get(s, k.id, &v), 0);
        ck_assert_uint_eq(v.revoked_usec, fake_now - SEC);
        store_api_key_deinit(&v);
        ck_assert_int_eq(store_api_key_revoke(s, 9999), -ENOENT);
        ck_assert_int_eq(store_api_key_get(s, 9999, &v), -ENOENT);

        /* Lists: per user and all; no secrets anywhere in a record. */
        ck_assert_int_eq(store_api_key_list(s, alice, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(l[0].id, k.id);
        store_api_keys_free(l, n);
        ck_assert_int_eq(store_api_key_list(s, 0, &l, &n), 0);
        ck_assert_uint_eq(n, 2);
        store_api_keys_free(l, n);
        ck_assert_int_eq(store_api_key_list(s, 9999, &l, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_api_keys_free(l, n);
        ck_assert_int_eq(store_api_key_list(s, -1, &l, &n), -EINVAL);

        /* Bad arguments. */
        ck_assert_int_eq(store_api_key_create(s, alice, NULL, 0, USEC_INFINITY, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, alice, NULL, 4, USEC_INFINITY, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, alice, "", 1, USEC_INFINITY, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, alice, " x", 1, USEC_INFINITY, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, alice, "a\tb", 1, USEC_INFINITY, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, alice, NULL, 1, fake_now, NULL, &secret2), -EINVAL);
        ck_assert_int_eq(store_api_key_create(s, 9999, NULL, 1, USEC_INFINITY, NULL, &secret2), -ENOENT);
        ck_assert_int_eq(store_api_key_create(s, 0, NULL, 1, USEC_INFINITY, NULL, &secret2), -ENOENT);

        /* A user's keys go with the user. */
        ck_assert_int_eq(store_user_delete(s, alice), 0);
        ck_assert_int_eq(store_api_key_verify(s, secret, 0, NULL), -EKEYREJECTED);
        ck_assert_int_eq(store_api_key_get(s, k.id, &v), -ENOENT);

        store_api_key_deinit(&k);
        erase_and_free(secret);
        erase_and_free(secret2);
}
END_TEST

START_TEST(test_api_key_prefix_collision)
{
        _cleanup_(store_closep) Store *s = open_store();
        StoreApiKey a = {}, b = {}, v = {};
        char *sa = NULL, *sb = NULL, *sql = NULL;
        int64_t alice = make_user(s, "alice");

        ck_assert_int_eq(store_api_key_create(s, alice, "a", STORE_SCOPE_INFERENCE, USEC_INFINITY, &a, &sa), 0);
        ck_assert_int_eq(store_api_key_create(s, alice, "b", STORE_SCOPE_AGENT, USEC_INFINITY, &b, &sb), 0);

        /* Give b a's prefix: both keys must still be told apart by their hashes. */
        ck_assert_int_ge(asprintf(&sql, "UPDATE api_keys SET prefix = '%s' WHERE id = %" PRIi64, a.prefix, b.id), 0);
        raw_exec(sql, SQLITE_OK);
        free(sql);
        {
                char *sb2 = strdup(sb);
                memcpy(sb2 + 3, a.prefix, KEY_PREFIX_CHARS);
                /* b as presented now has a's prefix but b's hash does not match it: refused. */
                ck_assert_int_eq(store_api_key_verify(s, sb2, 0, NULL), -EKEYREJECTED);
                free(sb2);
        }
        ck_assert_int_eq(store_api_key_verify(s, sa, 0, &v), 0);
        ck_assert_int_eq(v.id, a.id);
        store_api_key_deinit(&v);

        store_api_key_deinit(&a);
        store_api_key_deinit(&b);
        erase_and_free(sa);
        erase_and_free(sb);
}
END_TEST

/* ---- enrollment keys -------------------------------------------------------------------- */

START_TEST(test_enrollment_keys)
{
        _cleanup_(store_closep) Store *s = open_store();
        char *tags[] = { "gpu", "fleet", "gpu", NULL };
        char *bad_tags[] = { "", NULL };
        StoreEnrollmentKey once = {}, multi = {}, k = {}, *l = NULL;
        char *s_once = NULL, *s_multi = NULL, *s_exp = NULL, *s_rev = NULL, *x = NULL;
        size_t n = 0;
        int64_t admin = make_user(s, "admin");

        ck_assert_int_eq(store_enrollment_key_create(s, admin, "one", 0, NULL, USEC_INFINITY, &once, &s_once), 0);
        ck_assert_ptr_nonnull(startswith(s_once, "ie-"));
        ck_assert(!once.reusable);
        ck_assert(!once.ephemeral);
        ck_assert_uint_eq(once.uses, 0);
        ck_assert(!db_files_contain(s_once));

        ck_assert_int_eq(store_enrollment_key_create(s, admin, "fleet",
                                                     STORE_ENROLLMENT_REUSABLE | STORE_ENROLLMENT_EPHEMERAL,
                                                     tags, USEC_INFINITY, &multi, &s_multi), 0);
        ck_assert(multi.reusable);
        ck_assert(multi.ephemeral);
        ck_assert_uint_eq(store_strv_length(multi.tags), 2);
        ck_assert_str_eq(multi.tags[0], "fleet");
        ck_assert_str_eq(multi.tags[1], "gpu");

        /* One-time: exactly once. */
        fake_now += SEC;
        ck_assert_int_eq(store_enrollment_key_consume(s, s_once, &k), 0);
        ck_assert_int_eq(k.id, once.id);
        ck_assert_uint_eq(k.uses, 1);
        ck_assert_uint_eq(k.last_used_usec, fake_now);
        store_enrollment_key_deinit(&k);
        ck_assert_int_eq(store_enrollment_key_consume(s, s_once, &k), -EKEYEXPIRED);
        ck_assert_int_eq(store_enrollment_key_get(s, once.id, &k), 0);
        ck_assert_uint_eq(k.uses, 1);
        store_enrollment_key_deinit(&k);

        /* Reusable: counted. */
        for (unsigned i = 1; i <= 3; i++) {
                ck_assert_int_eq(store_enrollment_key_consume(s, s_multi, &k), 0);
                ck_assert_uint_eq(k.uses, i);
                ck_assert_str_eq(k.tags[1], "gpu");
                store_enrollment_key_deinit(&k);
        }

        /* Expiry and revocation. */
        ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, STORE_ENROLLMENT_REUSABLE, NULL,
                                                     fake_now + 10 * SEC, &k, &s_exp), 0);
        store_enrollment_key_deinit(&k);
        fake_now += 9 * SEC;
        ck_assert_int_eq(store_enrollment_key_consume(s, s_exp, NULL), 0);
        fake_now += SEC;
        ck_assert_int_eq(store_enrollment_key_consume(s, s_exp, NULL), -EKEYEXPIRED);

        ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, STORE_ENROLLMENT_REUSABLE, NULL,
                                                     USEC_INFINITY, &k, &s_rev), 0);
        ck_assert_int_eq(store_enrollment_key_revoke(s, k.id), 0);
        ck_assert_int_eq(store_enrollment_key_revoke(s, k.id), 0);
        ck_assert_int_eq(store_enrollment_key_consume(s, s_rev, NULL), -EKEYREVOKED);
        store_enrollment_key_deinit(&k);
        ck_assert_int_eq(store_enrollment_key_revoke(s, 9999), -ENOENT);

        /* Unknown and malformed. */
        x = strdup(s_multi);
        x[KEY_LEN - 1] = x[KEY_LEN - 1] == 'a' ? 'b' : 'a';
        ck_assert_int_eq(store_enrollment_key_consume(s, x, NULL), -EKEYREJECTED);
        x[1] = 'c';                                             /* an API key's tag */
        ck_assert_int_eq(store_enrollment_key_consume(s, x, NULL), -EKEYREJECTED);
        ck_assert_int_eq(store_enrollment_key_consume(s, "ie-", NULL), -EKEYREJECTED);
        free(x);

        /* Lists. */
        ck_assert_int_eq(store_enrollment_key_list(s, admin, &l, &n), 0);
        ck_assert_uint_eq(n, 4);
        ck_assert_int_eq(l[1].id, multi.id);
        ck_assert_uint_eq(l[1].uses, 3);
        ck_assert_str_eq(l[1].tags[0], "fleet");
        ck_assert_uint_ne(l[3].revoked_usec, 0);
        store_enrollment_keys_free(l, n);
        ck_assert_int_eq(store_enrollment_key_list(s, 0, &l, &n), 0);
        ck_assert_uint_eq(n, 4);
        store_enrollment_keys_free(l, n);
        ck_assert_int_eq(store_enrollment_key_get(s, 9999, &k), -ENOENT);

        /* Bad arguments. */
        ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, 4, NULL, USEC_INFINITY, NULL, &x), -EINVAL);
        ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, 0, bad_tags, USEC_INFINITY, NULL, &x), -EINVAL);
        ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, 0, NULL, fake_now - 1, NULL, &x), -EINVAL);
        ck_assert_int_eq(store_enrollment_key_create(s, 9999, NULL, 0, NULL, USEC_INFINITY, NULL, &x), -ENOENT);

        store_enrollment_key_deinit(&once);
        store_enrollment_key_deinit(&multi);
        erase_and_free(s_once);
        erase_and_free(s_multi);
        erase_and_free(s_exp);
        erase_and_free(s_rev);
}
END_TEST

/* Two connections (two threads) race for one one-time key: exactly one wins. */

typedef struct Racer {
        pthread_barrier_t *barrier;
        const char *secret;
        bool register_provider;
        unsigned keyn;
        int result;
} Racer;

static void *racer_run(void *userdata) {
        Racer *r = userdata;
        Store *s = NULL;
        StoreOptions o = { .busy_timeout_usec = 10 * SEC, .clock = fake_clock };
        char key[WG_KEY_B64_SIZE];
        uint8_t secret[STORE_SECRET_LEN];

        r->result = store_open(db_path, &o, &s);
        pthread_barrier_wait(r->barrier);
        if (r->result < 0)
                return NULL;
        if (r->register_provider)
                r->result = store_provider_register(s, &(StoreRegistration) {
                        .enrollment_key = r->secret,
                        .name = "box",
                        .public_key = pubkey(r->keyn, key),
                        .agent_port = 8080,
                }, NULL, secret);
        else
                r->result = store_enrollment_key_consume(s, r->secret, NULL);
        store_close(s);
        return NULL;
}

static void race(const char *secret, bool register_provider, int *ret_a, int *ret_b) {
        pthread_barrier_t barrier;
        pthread_t ta, tb;
        Racer a = { &barrier, secret, register_provider, 1, -1 }, b = { &barrier, secret, register_provider, 2, -1 };

        ck_assert_int_eq(pthread_barrier_init(&barrier, NULL, 2), 0);
        ck_assert_int_eq(pthread_create(&ta, NULL, racer_run, &a), 0);
        ck_assert_int_eq(pthread_create(&tb, NULL, racer_run, &b), 0);
        ck_assert_int_eq(pthread_join(ta, NULL), 0);
        ck_assert_int_eq(pthread_join(tb, NULL), 0);
        pthread_barrier_destroy(&barrier);
        *ret_a = a.result;
        *ret_b = b.result;
}

START_TEST(test_enrollment_race)
{
        Store *s = open_store();
        int64_t admin = make_user(s, "admin");
        StoreProvider *l = NULL;
        size_t n = 0;

        for (unsigned i = 0; i < 20; i++) {
                StoreEnrollmentKey k = {};
                char *secret = NULL;
                int a, b;
                bool reg = i % 2;       /* half the rounds race through registration */

                ck_assert_int_eq(store_enrollment_key_create(s, admin, NULL, 0, NULL, USEC_INFINITY, &k, &secret), 0);
                if (reg) {
                        /* A fresh name each round, so that only the key decides. */
                        ck_assert_int_eq(store_provider_list(s, NULL, &l, &n), 0);
                        for (size_t j = 0; j < n; j++)
                                ck_assert_int_eq(store_provider_delete(s, l[j].id), 0);
                        store_providers_free(l, n);
                }
                race(secret, reg, &a, &b);
                ck_assert_msg((a >= 0) != (b >= 0), "round %u: %d %d", i, a, b);
                ck_assert_int_eq(a >= 0 ? b : a, -EKEYEXPIRED);
                int64_t kid = k.id;
                store_enrollment_key_deinit(&k);
                ck_assert_int_eq(store_enrollment_key_get(s, kid, &k), 0);
                ck_assert_uint_eq(k.uses, 1);
                store_enrollment_key_deinit(&k);
                if (reg) {
                        ck_assert_int_eq(store_provider_list(s, NULL, &l, &n), 0);
                        ck_assert_uint_eq(n, 1);
                        store_providers_free(l, n);
                }
                erase_and_free(secret);
        }
        store_close(s);
}
END_TEST

/* ---- providers --------------------------------------------------------------------------- */

START_TEST(test_provider_register)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t alice = make_user(s, "alice"), bob = make_user(s, "bob");
        StoreProvider p = {}, q = {};
        char key[WG_KEY_B64_SIZE], buf[INET_ADDRSTRLEN], zero_key[WG_KEY_B64_SIZE];
        uint8_t secret1[STORE_SECRET_LEN], secret2[STORE_SECRET_LEN], stored[STORE_SECRET_LEN], zero[STORE_SECRET_LEN] = {};
        StoreRegistration reg = {
                .owner_id = alice,
                .name = "desk-gpu",
                .public_key = pubkey(1, key),
                .agent_port = 8443,
                .version = "0.1.0",
        };

        ck_assert_int_eq(store_provider_register(s, &reg, &p, secret1), 1);
        ck_assert_int_gt(p.id, 0);
        ck_assert_int_eq(p.owner_id, alice);
        ck_assert_str_eq(p.name, "desk-gpu");
        ck_assert_str_eq(p.public_key, key);
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.2");
        ck_assert_uint_eq(p.agent_port, 8443);
        ck_assert_int_eq(p.state, STORE_PROVIDER_REGISTERED);
        ck_assert(!p.online);
        ck_assert(!p.ephemeral);
        ck_assert_int_eq(p.enrollment_key_id, 0);
        ck_assert_int_eq(p.sharing.mode, STORE_SHARE_PRIVATE);
        ck_assert_str_eq(p.version, "0.1.0");
        ck_assert_uint_eq(p.created_usec, T0);
        ck_assert_uint_eq(p.registered_usec, T0);
        ck_assert_uint_eq(p.last_heartbeat_usec, 0);
        ck_assert(memcmp(secret1, zero, sizeof zero) != 0);
        ck_assert_int_eq(store_provider_get_secret(s, p.id, stored), 0);
        ck_assert_mem_eq(stored, secret1, STORE_SECRET_LEN);

        /* Again, same key: the same provider and address, a new secret. */
        fake_now += SEC;
        reg.agent_port = 8444;
        reg.version = NULL;                     /* keeps the known version */
        ck_assert_int_eq(store_provider_register(s, &reg, &q, secret2), 0);
        ck_assert_int_eq(q.id, p.id);
        ck_assert_uint_eq(q.mesh_address.s_addr, p.mesh_address.s_addr);
        ck_assert_uint_eq(q.agent_port, 8444);
        ck_assert_str_eq(q.version, "0.1.0");
        ck_assert_uint_eq(q.registered_usec, T0 + SEC);
        ck_assert_uint_eq(q.created_usec, T0);
        ck_assert(memcmp(secret1, secret2, sizeof secret1) != 0);
        ck_assert_int_eq(store_provider_get_secret(s, p.id, stored), 0);
        ck_assert_mem_eq(stored, secret2, STORE_SECRET_LEN);
        store_provider_deinit(&q);

        /* Rotate the public key. */
        reg.public_key = pubkey(2, key);
        ck_assert_int_eq(store_provider_register(s, &reg, &q, secret2), 0);
        ck_assert_int_eq(q.id, p.id);
        ck_assert_str_eq(q.public_key, key);
        store_provider_deinit(&q);
        ck_assert_int_eq(store_provider_get_by_public_key(s, pubkey(1, key), &q), -ENOENT);
        ck_assert_int_eq(store_provider_get_by_public_key(s, pubkey(2, key), &q), 0);
        ck_assert_int_eq(q.id, p.id);
        store_provider_deinit(&q);

        /* Another provider may not take that public key: nothing changes, no address is used. */
        ck_assert_int_eq(do_register(s, bob, NULL, "bobs-box", 2, NULL), -EEXIST);
        ck_assert_int_eq(do_register(s, alice, NULL, "second", 2, NULL), -EEXIST);
        ck_assert_int_eq(store_provider_get_by_name(s, bob, "bobs-box", &q), -ENOENT);
        ck_assert_int_eq(do_register(s, bob, NULL, "bobs-box", 3, &q), 1);
        ck_assert_str_eq(addr(q.mesh_address, buf), "100.96.0.3");
        /* Nor may an existing one rotate to it. */
        reg.public_key = pubkey(3, key);
        ck_assert_int_eq(store_provider_register(s, &reg, NULL, secret2), -EEXIST);
        store_provider_deinit(&q);

        /* The same name belongs to each owner separately. */
        ck_assert_int_eq(do_register(s, bob, NULL, "desk-gpu", 4, &q), 1);
        ck_assert_int_ne(q.id, p.id);
        store_provider_deinit(&q);

        /* Lookups. */
        ck_assert_int_eq(store_provider_get(s, p.id, &q), 0);
        ck_assert_str_eq(q.name, "desk-gpu");
        store_provider_deinit(&q);
        ck_assert_int_eq(store_provider_get_by_address(s, p.mesh_address, &q), 0);
        ck_assert_int_eq(q.id, p.id);
        store_provider_deinit(&q);
        ck_assert_int_eq(store_provider_get_by_name(s, alice, "desk-gpu", &q), 0);
        ck_assert_int_eq(q.id, p.id);
        store_provider_deinit(&q);
        {
                struct in_addr gw;
                store_gateway_address(s, &gw);
                ck_assert_int_eq(store_provider_get_by_address(s, gw, &q), -ENOENT);
        }
        ck_assert_int_eq(store_provider_get(s, 9999, &q), -ENOENT);
        ck_assert_int_eq(store_provider_get_secret(s, 9999, stored), -ENOENT);
        ck_assert_int_eq(store_provider_get_by_public_key(s, "nope", &q), -EINVAL);

        /* Bad registrations. */
        {
                WgKey z = {};
                wg_key_to_base64(&z, zero_key);
        }
        static const struct {
                const char *name, *key;
                uint16_t port;
                const char *version;
        } bad[] = {
                { "", "x", 1, NULL },
                { "a b", NULL, 1, NULL },
                { "-a", NULL, 1, NULL },
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, 1, NULL },
                { "ok", "not a key", 1, NULL },
                { "ok", "", 1, NULL },
                { "ok", NULL, 0, NULL },
                { "ok", NULL, 1, "bad\nversion" },
                { "ok", NULL, 1, "" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                StoreRegistration b = {
                        .owner_id = alice,
                        .name = bad[i].name,
                        .public_key = bad[i].key ?: pubkey(100, key),
                        .agent_port = bad[i].port,
                        .version = bad[i].version,
                };
                ck_assert_msg(store_provider_register(s, &b, NULL, secret2) == -EINVAL, "case %zu", i);
        }
        reg = (StoreRegistration) { .owner_id = alice, .name = "z", .public_key = zero_key, .agent_port = 1 };
        ck_assert_int_eq(store_provider_register(s, &reg, NULL, secret2), -EINVAL);
        reg.public_key = pubkey(100, key);
        reg.owner_id = 0;
        ck_assert_int_eq(store_provider_register(s, &reg, NULL, secret2), -EINVAL);   /* nobody */
        reg.owner_id = alice;
        reg.enrollment_key = "ie-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg";
        ck_assert_int_eq(store_provider_register(s, &reg, NULL, secret2), -EINVAL);   /* both */
        reg.owner_id = 9999;
        reg.enrollment_key = NULL;
        ck_assert_int_eq(store_provider_register(s, &reg, NULL, secret2), -ENOENT);   /* no such owner */

        store_provider_deinit(&p);
}
END_TEST

START_TEST(test_provider_enrollment)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t fleet = make_user(s, "fleet"), other = make_user(s, "other");
        char *tags[] = { "gpu", "rack-1", NULL };
        char *s_fleet = NULL, *s_other = NULL, *s_once = NULL;
        StoreEnrollmentKey kf = {}, ko = {}, k1 = {}, k = {};
        StoreProvider p = {}, q = {};
        char buf[INET_ADDRSTRLEN];

        ck_assert_int_eq(store_enrollment_key_create(s, fleet, "fleet", STORE_ENROLLMENT_REUSABLE | STORE_ENROLLMENT_EPHEMERAL,
                                                     tags, USEC_INFINITY, &kf, &s_fleet), 0);
        ck_assert_int_eq(store_enrollment_key_create(s, fleet, "fleet2", STORE_ENROLLMENT_REUSABLE, NULL,
                                                     USEC_INFINITY, &ko, &s_other), 0);
        ck_assert_int_eq(store_enrollment_key_create(s, fleet, "once", 0, NULL, USEC_INFINITY, &k1, &s_once), 0);

        ck_assert_int_eq(do_register(s, 0, s_fleet, "node-1", 1, &p), 1);
        ck_assert_int_eq(p.owner_id, fleet);
        ck_assert(p.ephemeral);
        ck_assert_int_eq(p.enrollment_key_id, kf.id);
        ck_assert_uint_eq(store_strv_length(p.tags), 2);
        ck_assert_str_eq(p.tags[0], "gpu");
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.2");

        /* The same key re-registers its own machine. */
        ck_assert_int_eq(do_register(s, 0, s_fleet, "node-1", 5, &q), 0);
        ck_assert_int_eq(q.id, p.id);
        store_provider_deinit(&q);
        ck_assert_int_eq(store_enrollment_key_get(s, kf.id, &k), 0);
        ck_assert_uint_eq(k.uses, 2);
        store_enrollment_key_deinit(&k);

        /* Another enrollment key of the same owner may not take it over, and is not consumed. */
        ck_assert_int_eq(do_register(s, 0, s_other, "node-1", 6, NULL), -EEXIST);
        ck_assert_int_eq(store_enrollment_key_get(s, ko.id, &k), 0);
        ck_assert_uint_eq(k.uses, 0);
        store_enrollment_key_deinit(&k);

        /* The owner's API key may. */
        ck_assert_int_eq(do_register(s, fleet, NULL, "node-1", 7, &q), 0);
        ck_assert_int_eq(q.id, p.id);
        ck_assert(q.ephemeral);                                 /* what it was enrolled as stays */
        store_provider_deinit(&q);

        /* A one-time key whose registration fails is not used up. */
        ck_assert_int_eq(do_register(s, 0, s_once, "node-2", 7, NULL), -EEXIST);   /* key 7 is taken */
        ck_assert_int_eq(store_enrollment_key_get(s, k1.id, &k), 0);
        ck_assert_uint_eq(k.uses, 0);
        store_enrollment_key_deinit(&k);
        ck_assert_int_eq(do_register(s, 0, s_once, "node-2", 8, &q), 1);
        ck_assert(!q.ephemeral);
        ck_assert_uint_eq(store_strv_length(q.tags), 0);
        ck_assert_str_eq(addr(q.mesh_address, buf), "100.96.0.3");  /* the failed attempt burned nothing */
        store_provider_deinit(&q);
        ck_assert_int_eq(do_register(s, 0, s_once, "node-3", 9, NULL), -EKEYEXPIRED);

        /* Enrollment key errors. */
        ck_assert_int_eq(store_enrollment_key_revoke(s, ko.id), 0);
        ck_assert_int_eq(do_register(s, 0, s_other, "node-4", 10, NULL), -EKEYREVOKED);
        ck_assert_int_eq(do_register(s, 0, "ie-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg", "node-4", 10, NULL),
                         -EKEYREJECTED);
        ck_assert_int_eq(do_register(s, 0, "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg", "node-4", 10, NULL),
                         -EKEYREJECTED);

        /* An API key of another user does not reach the fleet's provider: it makes its own. */
        ck_assert_int_eq(do_register(s, other, NULL, "node-1", 11, &q), 1);
        ck_assert_int_ne(q.id, p.id);
        store_provider_deinit(&q);

        store_provider_deinit(&p);
        store_enrollment_key_deinit(&kf);
        store_enrollment_key_deinit(&ko);
        store_enrollment_key_deinit(&k1);
        erase_and_free(s_fleet);
        erase_and_free(s_other);
        erase_and_free(s_once);
}
END_TEST

START_TEST(test_address_never_reused)
{
        Store *s = open_store();
        int64_t alice = make_user(s, "alice"), bob = make_user(s, "bob");
        int64_t a, b, c, d;
        StoreProvider p = {};
        char buf[INET_ADDRSTRLEN];

        a = make_provider(s, alice, "a", 1);
        b = make_provider(s, alice, "b", 2);
        ck_assert_int_eq(store_provider_delete(s, b), 0);
        ck_assert_int_eq(store_provider_delete(s, b), -ENOENT);
        c = make_provider(s, alice, "c", 3);
        ck_assert_int_eq(store_provider_get(s, c, &p), 0);
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.4");
        store_provider_deinit(&p);

        /* Re-creating the deleted one by name gives it a new address, too. */
        b = make_provider(s, alice, "b", 2);
        ck_assert_int_eq(store_provider_get(s, b, &p), 0);
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.5");
        store_provider_deinit(&p);

        /* Deleting everything, even the owner, releases nothing. */
        ck_assert_int_eq(store_provider_delete(s, a), 0);
        d = make_provider(s, bob, "d", 4);
        ck_assert_int_eq(store_user_delete(s, alice), 0);
        ck_assert_int_eq(store_provider_get(s, c, &p), -ENOENT);
        ck_assert_int_eq(store_provider_delete(s, d), 0);
        d = make_provider(s, bob, "d", 4);
        ck_assert_int_eq(store_provider_get(s, d, &p), 0);
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.7");
        store_provider_deinit(&p);

        /* Survives a restart. */
        store_close(s);
        s = open_store();
        d = make_provider(s, bob, "e", 5);
        ck_assert_int_eq(store_provider_get(s, d, &p), 0);
        ck_assert_str_eq(addr(p.mesh_address, buf), "100.96.0.8");
        store_provider_deinit(&p);
        ck_assert_int_eq(store_check_integrity(s), 0);
        store_close(s);

        /* The ledger refuses to forget, whoever asks. */
        raw_exec("DELETE FROM mesh_addresses", SQLITE_CONSTRAINT);
        raw_exec("UPDATE mesh_addresses SET address = address + 1000", SQLITE_CONSTRAINT);
}
END_TEST

START_TEST(test_address_exhaustion)
{
        Store *s;
        int64_t alice, a;
        StoreProvider p = {};
        char buf[INET_ADDRSTRLEN];

        /* /30: network .0, gateway .1, one provider .2, broadcast .3. */
        s = open_with("10.0.0.0/30", 0);
        alice = make_user(s, "alice");
        a = make_provider(s, alice, "a", 1);
        ck_assert_int_eq(store_provider_get(s, a, &p), 0);
        ck_assert_str_eq(addr(p.mesh_address, buf), "10.0.0.2");
        store_provider_deinit(&p);
        ck_assert_int_eq(do_register(s, alice, NULL, "b", 2, NULL), -ENOSPC);
        ck_assert_int_eq(store_provider_delete(s, a), 0);
        ck_assert_int_eq(do_register(s, alice, NULL, "b", 2, NULL), -ENOSPC);
        store_close(s);

        /* Another prefix on the same database allocates from its own range. */
        s = open_with("10.0.1.0/29", 0);
        for (unsigned i = 0; i < 5; i++) {
                char name[8];

                snprintf(name, sizeof name, "n%u", i);
                a = make_provider(s, alice, name, 10 + i);
                ck_assert_int_eq(store_provider_get(s, a, &p), 0);
                ck_assert_uint_eq(ntohl(p.mesh_address.s_addr), (10u << 24) + (1u << 8) + 2 + i);
                store_provider_deinit(&p);
        }
        ck_assert_int_eq(do_register(s, alice, NULL, "n5", 15, NULL), -ENOSPC);
        store_close(s);
}
END_TEST

START_TEST(test_thousand_providers)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t alice = make_user(s, "alice");
        StorePeer *peers = NULL;
        StoreProvider *l = NULL;
        size_t n = 0;
        char buf[INET_ADDRSTRLEN];
        uint32_t first = ntohl(inet_addr("100.96.0.2"));

        for (unsigned i = 0; i < 1000; i++) {
                char name[16];

                snprintf(name, sizeof name, "p%04u", i);
                make_provider(s, alice, name, i);
        }

        ck_assert_int_eq(store_provider_peers(s, &peers, &n), 0);
        ck_assert_uint_eq(n, 1000);
        for (size_t i = 0; i < n; i++) {
                char key[WG_KEY_B64_SIZE];

                /* Consecutive, hence unique; never the gateway's or the network's. */
                ck_assert_uint_eq(ntohl(peers[i].address.s_addr), first + i);
                ck_assert_str_eq(peers[i].public_key, pubkey((unsigned) i, key));
                if (i > 0)
                        ck_assert_int_gt(peers[i].provider_id, peers[i - 1].provider_id);
        }
        ck_assert_str_eq(addr(peers[999].address, buf), "100.96.3.233");
        free(peers);

        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .owner_id = alice }, &l, &n), 0);
        ck_assert_uint_eq(n, 1000);
        store_providers_free(l, n);
        ck_assert_int_eq(store_check_integrity(s), 0);
}
END_TEST

START_TEST(test_heartbeat_and_online)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t alice = make_user(s, "alice"), id;
        char *models[] = { "qwen2.5:7b", "meta-llama/Llama-3.1-8B-Instruct", "qwen2.5:7b", NULL };
        char *caps[] = { "tts", "render", NULL };
        char *bad_models[] = { "has space", NULL };
        char *bad_caps[] = { "no/slash", NULL };
        StoreProvider p = {};
        StoreHeartbeat hb = {
                .models = models,
                .capabilities = caps,
                .in_flight = 2,
                .capacity = 8,
                .upstream_health = "{\"upstreams\":[{\"url\":\"http://127.0.0.1:11434\",\"ok\":true}]}",
                .version = "0.2.0",
        };

        id = make_provider(s, alice, "box", 1);
        fake_now += 5 * SEC;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_int_eq(p.state, STORE_PROVIDER_ACTIVE);
        ck_assert(p.online);
        ck_assert_uint_eq(p.last_heartbeat_usec, fake_now);
        ck_assert_uint_eq(store_strv_length(p.models), 2);
        ck_assert_str_eq(p.models[0], "meta-llama/Llama-3.1-8B-Instruct");
        ck_assert_str_eq(p.models[1], "qwen2.5:7b");
        ck_assert_str_eq(p.capabilities[0], "render");
        ck_assert_str_eq(p.capabilities[1], "tts");
        ck_assert_uint_eq(p.in_flight, 2);
        ck_assert_uint_eq(p.capacity, 8);
        ck_assert_str_eq(p.upstream_health, hb.upstream_health);
        ck_assert_str_eq(p.version, "0.2.0");
        store_provider_deinit(&p);

        /* Online only within the window (120 s by default). */
        fake_now += 120 * SEC;
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert(p.online);
        store_provider_deinit(&p);
        fake_now += 1;
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert(!p.online);
        ck_assert_int_eq(p.state, STORE_PROVIDER_ACTIVE);
        store_provider_deinit(&p);

        /* The agent drains; lists shrink; no version keeps the old one. */
        hb.draining = true;
        hb.models = NULL;
        hb.capabilities = NULL;
        hb.version = NULL;
        hb.upstream_health = NULL;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert(p.agent_draining);
        ck_assert(!p.online);
        ck_assert_uint_eq(store_strv_length(p.models), 0);
        ck_assert_uint_eq(store_strv_length(p.capabilities), 0);
        ck_assert_str_eq(p.version, "0.2.0");
        ck_assert_ptr_null(p.upstream_health);
        store_provider_deinit(&p);

        /* The administrator drains, independently of the agent. */
        hb.draining = false;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_set_draining(s, id, true), 0);
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert(p.admin_draining);
        ck_assert(!p.agent_draining);
        ck_assert(!p.online);
        store_provider_deinit(&p);
        ck_assert_int_eq(store_provider_set_draining(s, id, false), 0);

        /* Unreachable (the probe failed) is not online, and a heartbeat does not undo it. */
        ck_assert_int_eq(store_provider_set_state(s, id, STORE_PROVIDER_UNREACHABLE), 0);
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_int_eq(p.state, STORE_PROVIDER_UNREACHABLE);
        ck_assert(!p.online);
        store_provider_deinit(&p);
        ck_assert_int_eq(store_provider_set_state(s, id, STORE_PROVIDER_ACTIVE), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert(p.online);
        store_provider_deinit(&p);

        /* Re-registration waits for a heartbeat again; DISABLED survives it. */
        ck_assert_int_eq(do_register(s, alice, NULL, "box", 1, &p), 0);
        ck_assert_int_eq(p.state, STORE_PROVIDER_REGISTERED);
        ck_assert(!p.online);
        store_provider_deinit(&p);
        ck_assert_int_eq(store_provider_set_state(s, id, STORE_PROVIDER_DISABLED), 0);
        ck_assert_int_eq(do_register(s, alice, NULL, "box", 1, &p), 0);
        ck_assert_int_eq(p.state, STORE_PROVIDER_DISABLED);
        store_provider_deinit(&p);
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_int_eq(p.state, STORE_PROVIDER_DISABLED);
        ck_assert(!p.online);
        store_provider_deinit(&p);

        /* Bad heartbeats change nothing. */
        hb.models = bad_models;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.models = NULL;
        hb.capabilities = bad_caps;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.capabilities = NULL;
        hb.upstream_health = "{not json";
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.upstream_health = "[1] [2]";
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.upstream_health = NULL;
        hb.version = "v\x01";
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.version = NULL;
        hb.in_flight = UINT32_MAX;
        ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
        hb.in_flight = 0;
        ck_assert_int_eq(store_provider_heartbeat(s, 9999, &hb), -ENOENT);
        ck_assert_int_eq(store_provider_set_draining(s, 9999, true), -ENOENT);
        ck_assert_int_eq(store_provider_set_state(s, 9999, STORE_PROVIDER_ACTIVE), -ENOENT);
        ck_assert_int_eq(store_provider_set_state(s, id, _STORE_PROVIDER_STATE_MAX), -EINVAL);

        /* Limits on list sizes. */
        {
                char **many = calloc(STORE_MODELS_MAX + 2, sizeof(char *));

                for (unsigned i = 0; i <= STORE_MODELS_MAX; i++)
                        ck_assert_int_ge(asprintf(&many[i], "model-%u", i), 0);
                hb.models = many;
                ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), -EINVAL);
                free(many[STORE_MODELS_MAX]);
                many[STORE_MODELS_MAX] = NULL;
                ck_assert_int_eq(store_provider_heartbeat(s, id, &hb), 0);
                ck_assert_int_eq(store_provider_get(s, id, &p), 0);
                ck_assert_uint_eq(store_strv_length(p.models), STORE_MODELS_MAX);
                store_provider_deinit(&p);
                store_strv_free(many);
        }
}
END_TEST

START_TEST(test_tags_and_sharing)
{
        _cleanup_(store_closep) Store *s = open_store();
        char *team[] = { "team", NULL };
        char *ptags[] = { "b", "a", NULL };
        char *bad[] = { "a b", NULL };
        int64_t owner = make_user(s, "owner"), mate = make_user(s, "mate"), member = 0, stranger = make_user(s, "stranger");
        int64_t id;
        StoreProvider p = {};

        ck_assert_int_eq(store_user_create(s, "member", false, team, &member), 0);
        id = make_provider(s, owner, "box", 1);

        ck_assert_int_eq(store_provider_set_tags(s, id, ptags), 0);
        ck_assert_int_eq(store_provider_set_tags(s, id, bad), -EINVAL);
        ck_assert_int_eq(store_provider_set_tags(s, 9999, ptags), -ENOENT);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_str_eq(p.tags[0], "a");
        ck_assert_str_eq(p.tags[1], "b");
        store_provider_deinit(&p);

        /* Restricted: users (sorted, de-duplicated) and user tags. */
        {
                int64_t users[] = { mate, mate, owner };
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = STORE_SHARE_RESTRICTED, .user_ids = users, .n_user_ids = 3, .tags = team,
                }), 0);
        }
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_int_eq(p.sharing.mode, STORE_SHARE_RESTRICTED);
        ck_assert_uint_eq(p.sharing.n_user_ids, 2);
        ck_assert_int_eq(p.sharing.user_ids[0], owner);
        ck_assert_int_eq(p.sharing.user_ids[1], mate);
        ck_assert_str_eq(p.sharing.tags[0], "team");
        store_provider_deinit(&p);

        /* Who may use it. */
        {
                static const struct { const char *who; bool may; } expect[] = {
                        { "owner", true }, { "mate", true }, { "member", true }, { "stranger", false },
                };
                for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                        StoreUser u = {};
                        StoreProvider *l = NULL;
                        size_t n = 0;

                        ck_assert_int_eq(store_user_get_by_name(s, expect[i].who, &u), 0);
                        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .usable_by = u.id }, &l, &n), 0);
                        ck_assert_msg(n == (expect[i].may ? 1u : 0u), "%s", expect[i].who);
                        store_providers_free(l, n);
                        store_user_deinit(&u);
                }
        }

        /* A user that does not exist: refused, and the policy is unchanged. */
        {
                int64_t users[] = { 9999 };
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = STORE_SHARE_RESTRICTED, .user_ids = users, .n_user_ids = 1,
                }), -ENOENT);
                users[0] = -1;
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = STORE_SHARE_RESTRICTED, .user_ids = users, .n_user_ids = 1,
                }), -EINVAL);
                users[0] = mate;
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = STORE_SHARE_EVERYONE, .user_ids = users, .n_user_ids = 1,
                }), -EINVAL);
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = STORE_SHARE_PRIVATE, .tags = team,
                }), -EINVAL);
                ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) {
                        .mode = _STORE_SHARE_MODE_MAX,
                }), -EINVAL);
                ck_assert_int_eq(store_provider_set_sharing(s, 9999, &(StoreSharing) {
                        .mode = STORE_SHARE_EVERYONE,
                }), -ENOENT);
        }
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_uint_eq(p.sharing.n_user_ids, 2);
        store_provider_deinit(&p);

        /* A deleted user drops out of the policy. */
        ck_assert_int_eq(store_user_delete(s, mate), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_uint_eq(p.sharing.n_user_ids, 1);
        store_provider_deinit(&p);

        /* Everyone; and back to private, which clears the lists. */
        ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) { .mode = STORE_SHARE_EVERYONE }), 0);
        {
                StoreProvider *l = NULL;
                size_t n = 0;
                ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .usable_by = stranger }, &l, &n), 0);
                ck_assert_uint_eq(n, 1);
                store_providers_free(l, n);
        }
        ck_assert_int_eq(store_provider_set_sharing(s, id, &(StoreSharing) { .mode = STORE_SHARE_PRIVATE }), 0);
        ck_assert_int_eq(store_provider_get(s, id, &p), 0);
        ck_assert_int_eq(p.sharing.mode, STORE_SHARE_PRIVATE);
        ck_assert_uint_eq(p.sharing.n_user_ids, 0);
        ck_assert_ptr_null(p.sharing.tags);
        store_provider_deinit(&p);
        (void) member;
}
END_TEST

START_TEST(test_list_filters)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t alice = make_user(s, "alice"), bob = make_user(s, "bob");
        int64_t a1 = make_provider(s, alice, "a1", 1), a2 = make_provider(s, alice, "a2", 2);
        int64_t b1 = make_provider(s, bob, "b1", 3);
        char *m1[] = { "llama3", NULL }, *m2[] = { "llama3", "qwen", NULL }, *caps[] = { "tts", NULL };
        StoreProvider *l = NULL;
        size_t n = 0;

        ck_assert_int_eq(store_provider_heartbeat(s, a1, &(StoreHeartbeat) { .models = m1 }), 0);
        ck_assert_int_eq(store_provider_heartbeat(s, a2, &(StoreHeartbeat) { .models = m2, .capabilities = caps }), 0);
        ck_assert_int_eq(store_provider_heartbeat(s, b1, &(StoreHeartbeat) { .models = m2 }), 0);
        ck_assert_int_eq(store_provider_set_sharing(s, b1, &(StoreSharing) { .mode = STORE_SHARE_EVERYONE }), 0);

        ck_assert_int_eq(store_provider_list(s, NULL, &l, &n), 0);
        ck_assert_uint_eq(n, 3);
        store_providers_free(l, n);

        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .model = "qwen" }, &l, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(l[0].id, a2);
        ck_assert_int_eq(l[1].id, b1);
        store_providers_free(l, n);

        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .capability = "tts" }, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(l[0].id, a2);
        store_providers_free(l, n);

        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .owner_id = bob }, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        store_providers_free(l, n);

        /* The routing question: who serves llama3, online, for bob? His own and none of alice's. */
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) {
                .usable_by = bob, .model = "llama3", .online_only = true }, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(l[0].id, b1);
        ck_assert(l[0].online);
        store_providers_free(l, n);
        /* For alice: hers and bob's shared one. */
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) {
                .usable_by = alice, .model = "llama3", .online_only = true }, &l, &n), 0);
        ck_assert_uint_eq(n, 3);
        store_providers_free(l, n);

        /* Online excludes draining, silent and never-heartbeating providers. */
        ck_assert_int_eq(store_provider_set_draining(s, a1, true), 0);
        make_provider(s, alice, "a3", 4);
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .online_only = true }, &l, &n), 0);
        ck_assert_uint_eq(n, 2);
        store_providers_free(l, n);
        fake_now += 121 * SEC;
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .online_only = true }, &l, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_providers_free(l, n);

        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .model = "bad model" }, &l, &n), -EINVAL);
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) { .owner_id = -1 }, &l, &n), -EINVAL);
}
END_TEST

START_TEST(test_ephemeral)
{
        _cleanup_(store_closep) Store *s = open_store();
        int64_t fleet = make_user(s, "fleet");
        char *secret = NULL;
        StoreProvider eph = {}, *l = NULL;
        StorePeer *peers = NULL;
        size_t n = 0;
        int64_t keep;
        char buf[INET_ADDRSTRLEN];

        ck_assert_int_eq(store_enrollment_key_create(s, fleet, NULL, STORE_ENROLLMENT_REUSABLE | STORE_ENROLLMENT_EPHEMERAL,
                                                     NULL, USEC_INFINITY, NULL, &secret), 0);
        ck_assert_int_eq(do_register(s, 0, secret, "ci-runner", 1, &eph), 1);
        keep = make_provider(s, fleet, "desk", 2);

        /* Grace counts from the last heartbeat, or from registration without one. */
        fake_now += 50 * SEC;
        ck_assert_int_eq(store_provider_list_stale_ephemeral(s, 60 * SEC, &l, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_providers_free(l, n);
        ck_assert_int_eq(store_provider_heartbeat(s, eph.id, &(StoreHeartbeat) {}), 0);
        fake_now += 60 * SEC;
        ck_assert_int_eq(store_provider_list_stale_ephemeral(s, 60 * SEC, &l, &n), 0);
        ck_assert_uint_eq(n, 0);                                /* exactly 60 s: not yet */
        store_providers_free(l, n);
        fake_now += 1;
        ck_assert_int_eq(store_provider_list_stale_ephemeral(s, 60 * SEC, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(l[0].id, eph.id);
        store_providers_free(l, n);

        /* Reaping deletes exactly those, and hands them back for removing their peers. */
        fake_now += 1000 * SEC;
        ck_assert_int_eq(store_provider_reap_ephemeral(s, 60 * SEC, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(l[0].id, eph.id);
        ck_assert_str_eq(l[0].public_key, eph.public_key);
        store_providers_free(l, n);
        ck_assert_int_eq(store_provider_get(s, eph.id, &eph), -ENOENT);
        ck_assert_int_eq(store_provider_peers(s, &peers, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(peers[0].provider_id, keep);
        free(peers);
        ck_assert_int_eq(store_provider_reap_ephemeral(s, 60 * SEC, &l, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_providers_free(l, n);
        ck_assert_int_eq(store_provider_reap_ephemeral(s, 0, &l, &n), -EINVAL);

        /* The same machine enrolling again gets a new address. */
        store_provider_deinit(&eph);
        ck_assert_int_eq(do_register(s, 0, secret, "ci-runner", 1, &eph), 1);
        ck_assert_str_eq(addr(eph.mesh_address, buf), "100.96.0.4");
        store_provider_deinit(&eph);
        erase_and_free(secret);
}
END_TEST

START_TEST(test_busy_and_concurrent_readers)
{
        Store *s = open_with(NULL, 50 * USEC_PER_MSEC);
        sqlite3 *other = raw_open();
        StoreUser *l = NULL;
        size_t n = 0;
        uint64_t t;

        make_user(s, "alice");

        /* Another connection holds the write lock: writes give up after the busy timeout, … */
        ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        t = now_usec(CLOCK_MONOTONIC);
        ck_assert_int_eq(store_user_create(s, "bob", false, NULL, NULL), -EBUSY);
        ck_assert_uint_ge(now_usec(CLOCK_MONOTONIC) - t, 40 * USEC_PER_MSEC);
        /* … while reads go on (WAL). */
        ck_assert_int_eq(store_user_list(s, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        store_users_free(l, n);
        ck_assert_int_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);

        /* And once it is released, the store works again. */
        ck_assert_int_eq(store_user_create(s, "bob", false, NULL, NULL), 0);
        sqlite3_close(other);
        store_close(s);
}
END_TEST

/* What another connection reads: the first column of the first row of @sql. */
static int64_t raw_int(sqlite3 *db, const char *sql) {
        sqlite3_stmt *st = NULL;
        int64_t v;

        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

static int64_t rpm(Store *s, int64_t key_id) {
        StoreKeyLimits l;

        ck_assert_int_eq(store_api_key_get_limits(s, key_id, &l), 0);
        return l.requests_per_minute;
}

/* store_read_begin(): one snapshot for the reads until the end, nested calls counted; a write
 * in between ends it (committed at once, later reads fresh); other writers go on meanwhile. */
START_TEST(test_read_snapshot)
{
        _cleanup_(store_closep) Store *s = open_store();
        sqlite3 *other = raw_open();
        StoreApiKey k = {}, k2 = {};
        StoreProvider *l = NULL;
        char *secret = NULL, *secret2 = NULL;
        size_t n = 0;
        int64_t alice = make_user(s, "alice");

        ck_assert_int_eq(store_api_key_create(s, alice, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k, &secret), 0);
        ck_assert_int_eq(store_api_key_create(s, alice, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k2, &secret2), 0);
        make_provider(s, alice, "p", 1);
        /* Its last use now written, the next minute's checks of the key only read. */
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), 0);

        ck_assert_ptr_eq(store_read_begin(s), s);
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), 0);
        ck_assert_int_eq(sqlite3_exec(other, "UPDATE api_keys SET revoked_usec = 1, requests_per_minute = 7 "
                                             "WHERE id = 1; DELETE FROM providers", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), 0);
        ck_assert_int_eq(rpm(s, k.id), STORE_LIMIT_DEFAULT);
        ck_assert_ptr_eq(store_read_begin(s), s);
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) {}, &l, &n), 0);
        ck_assert_uint_eq(n, 1);
        store_providers_free(l, n);
        ck_assert_ptr_null(store_read_end(s));
        ck_assert_int_eq(rpm(s, k.id), STORE_LIMIT_DEFAULT);     /* the outer one still holds */
        ck_assert_ptr_null(store_read_end(s));
        /* The end shows the revocation, the limit and the deletion at once. */
        ck_assert_int_eq(store_api_key_verify(s, secret, STORE_SCOPE_INFERENCE, NULL), -EKEYREVOKED);
        ck_assert_int_eq(rpm(s, k.id), 7);
        ck_assert_int_eq(store_provider_list(s, &(StoreProviderFilter) {}, &l, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_providers_free(l, n);

        /* A write inside: committed before the end, and the reads after it are fresh. */
        ck_assert_ptr_eq(store_read_begin(s), s);
        ck_assert_int_eq(rpm(s, k.id), 7);
        ck_assert_int_eq(sqlite3_exec(other, "UPDATE api_keys SET requests_per_minute = 8 WHERE id = 1",
                                      NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(rpm(s, k.id), 7);
        ck_assert_int_eq(store_user_create(s, "bob", false, NULL, NULL), 0);
        ck_assert_int_eq(raw_int(other, "SELECT count(*) FROM users WHERE name = 'bob'"), 1);
        ck_assert_int_eq(rpm(s, k.id), 8);
        /* The last use, due (never used): written inside too, and seen elsewhere before the end. */
        ck_assert_int_eq(store_api_key_verify(s, secret2, STORE_SCOPE_INFERENCE, NULL), 0);
        ck_assert_int_eq(raw_int(other, "SELECT last_used_usec FROM api_keys WHERE id = 2"), (int64_t) T0);
        ck_assert_ptr_null(store_read_end(s));

        /* Another writer goes on while a snapshot is open. */
        ck_assert_ptr_eq(store_read_begin(s), s);
        ck_assert_int_eq(rpm(s, k.id), 8);
        ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE; UPDATE api_keys SET requests_per_minute = 9; COMMIT",
                                      NULL, NULL, NULL), SQLITE_OK);
        ck_assert_ptr_null(store_read_end(s));
        ck_assert_int_eq(rpm(s, k.id), 9);
        ck_assert_ptr_null(store_read_end(NULL));

        store_api_key_deinit(&k);
        store_api_key_deinit(&k2);
        erase_and_free(secret);
        erase_and_free(secret2);
        sqlite3_close(other);
}
END_TEST

/* Per-key limits: NULL is the default, -1 unlimited; out of range refused. */
START_TEST(test_key_limits)
{
        _cleanup_(store_closep) Store *s = open_store();
        StoreApiKey k = {};
        StoreKeyLimits l;
        char *secret = NULL;
        int64_t alice = make_user(s, "alice");

        ck_assert_int_eq(store_api_key_create(s, alice, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k, &secret), 0);
        erase_and_free(secret);
        ck_assert_int_eq(store_api_key_get_limits(s, k.id, &l), 0);
        ck_assert_int_eq(l.requests_per_minute, STORE_LIMIT_DEFAULT);
        ck_assert_int_eq(l.concurrent_streams, STORE_LIMIT_DEFAULT);
        l = (StoreKeyLimits) { 60, STORE_LIMIT_UNLIMITED, 0 };
        ck_assert_int_eq(store_api_key_set_limits(s, k.id, &l), 0);
        l = (StoreKeyLimits) {};
        ck_assert_int_eq(store_api_key_get_limits(s, k.id, &l), 0);
        ck_assert_int_eq(l.requests_per_minute, 60);
        ck_assert_int_eq(l.tokens_per_minute, STORE_LIMIT_UNLIMITED);
        ck_assert_int_eq(l.concurrent_streams, 0);
        l.tokens_per_minute = -3;
        ck_assert_int_eq(store_api_key_set_limits(s, k.id, &l), -EINVAL);
        l.tokens_per_minute = STORE_LIMIT_MAX + 1;
        ck_assert_int_eq(store_api_key_set_limits(s, k.id, &l), -EINVAL);
        l.tokens_per_minute = STORE_LIMIT_DEFAULT;
        ck_assert_int_eq(store_api_key_set_limits(s, k.id + 100, &l), -ENOENT);
        ck_assert_int_eq(store_api_key_get_limits(s, k.id + 100, &l), -ENOENT);
        store_api_key_deinit(&k);
}
END_TEST

/* Usage rows: inserted in one go, summed per key, model, provider and user with filters,
 * outliving a deleted user, and pruned in bounded batches. */
START_TEST(test_usage)
{
        _cleanup_(store_closep) Store *s = open_store();
        StoreApiKey k1 = {}, k2 = {};
        StoreUsageRecord r[5];
        StoreUsageTotal *t = NULL;
        size_t n = 0;
        char *secret = NULL;
        int64_t alice = make_user(s, "alice"), bob = make_user(s, "bob");
        static const char *const outcomes[] = { "ok", "ok", "truncated", "cancelled", "refused" };

        ck_assert_int_eq(store_api_key_create(s, alice, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k1, &secret), 0);
        free(secret);
        ck_assert_int_eq(store_api_key_create(s, bob, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k2, &secret), 0);
        free(secret);
        for (size_t i = 0; i < ELEMENTSOF(r); i++) {
                r[i] = (StoreUsageRecord) {
                        .started_usec = T0 + i * SEC,
                        .key_id = i < 4 ? k1.id : k2.id,
                        .user_id = i < 4 ? alice : bob,
                        .provider_id = i == 4 ? 0 : 7,
                        .model = (char *) (i % 2 ? "m-b" : "m-a"),
                        .stream = true,
                        .outcome = outcomes[i],
                        .status = 200,
                        .attempts = 1,
                        .prompt_tokens = 10,
                        .completion_tokens = i + 1,
                        .usage_reported = i < 2,
                        .time_to_first_token_usec = i == 4 ? 0 : 1000,
                        .duration_usec = 5000,
                };
                snprintf(r[i].request_id, sizeof r[i].request_id, "req%zu", i);
        }
        ck_assert_int_eq(store_usage_insert(s, r, ELEMENTSOF(r)), 0);

        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = STORE_USAGE_BY_KEY }, &t, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(t[0].id, k1.id);
        ck_assert_str_eq(t[0].name, k1.prefix);
        ck_assert_uint_eq(t[0].requests, 4);
        ck_assert_uint_eq(t[0].ok, 2);
        ck_assert_uint_eq(t[0].truncated, 1);
        ck_assert_uint_eq(t[0].cancelled, 1);
        ck_assert_uint_eq(t[0].other, 0);
        ck_assert_uint_eq(t[0].prompt_tokens, 40);
        ck_assert_uint_eq(t[0].completion_tokens, 1 + 2 + 3 + 4);
        ck_assert_uint_eq(t[0].first_token_requests, 4);
        ck_assert_uint_eq(t[0].first_usec, T0);
        ck_assert_uint_eq(t[0].last_usec, T0 + 3 * SEC);
        ck_assert_uint_eq(t[1].other, 1);
        ck_assert_uint_eq(t[1].first_token_requests, 0);
        store_usage_totals_free(t, n);

        /* alice's, by model, in [T0+1s, T0+3s). */
        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = STORE_USAGE_BY_MODEL, .user_id = alice,
                                                                     .since_usec = T0 + SEC, .until_usec = T0 + 3 * SEC },
                                            &t, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(t[0].name, "m-a");
        ck_assert_uint_eq(t[0].requests, 1);
        ck_assert_str_eq(t[1].name, "m-b");
        ck_assert_uint_eq(t[1].completion_tokens, 2);
        store_usage_totals_free(t, n);

        /* By key prefix; by provider (the refused request had none: id 0, no name). */
        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = STORE_USAGE_BY_PROVIDER,
                                                                     .key_prefix = k2.prefix }, &t, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(t[0].id, 0);
        ck_assert_ptr_null(t[0].name);
        store_usage_totals_free(t, n);

        /* Bob deleted: his usage stays, without a name. */
        ck_assert_int_eq(store_user_delete(s, bob), 0);
        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = STORE_USAGE_BY_USER }, &t, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(t[0].name, "alice");
        ck_assert_int_eq(t[1].id, bob);
        ck_assert_ptr_null(t[1].name);
        store_usage_totals_free(t, n);

        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = _STORE_USAGE_GROUP_MAX }, &t, &n), -EINVAL);
        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .key_prefix = "short" }, &t, &n), -EINVAL);
        r[0].model = (char *) "";
        ck_assert_int_eq(store_usage_insert(s, r, 1), -EINVAL);

        /* Pruning: at most @max a call. */
        ck_assert_int_eq(store_usage_prune(s, T0 + 3 * SEC, 2), 2);
        ck_assert_int_eq(store_usage_prune(s, T0 + 3 * SEC, 2), 1);
        ck_assert_int_eq(store_usage_prune(s, T0 + 3 * SEC, 2), 0);
        ck_assert_int_eq(store_usage_totals(s, &(StoreUsageFilter) { .group = STORE_USAGE_BY_MODEL }, &t, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_eq(t[0].requests + t[1].requests, 2);
        store_usage_totals_free(t, n);
        store_api_key_deinit(&k1);
        store_api_key_deinit(&k2);
}
END_TEST

int main(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_open_and_migrate);
        tcase_add_test(tc, test_open_refuses);
        tcase_add_test(tc, test_two_connections_migrate);
        tcase_add_test(tc, test_users);
        tcase_add_test(tc, test_scope_strings);
        tcase_add_test(tc, test_api_keys);
        tcase_add_test(tc, test_api_key_prefix_collision);
        tcase_add_test(tc, test_key_limits);
        tcase_add_test(tc, test_read_snapshot);
        tcase_add_test(tc, test_usage);
        tcase_add_test(tc, test_enrollment_keys);
        tcase_add_test(tc, test_enrollment_race);
        tcase_add_test(tc, test_provider_register);
        tcase_add_test(tc, test_provider_enrollment);
        tcase_add_test(tc, test_address_never_reused);
        tcase_add_test(tc, test_address_exhaustion);
        tcase_add_test(tc, test_thousand_providers);
        tcase_add_test(tc, test_heartbeat_and_online);
        tcase_add_test(tc, test_tags_and_sharing);
        tcase_add_test(tc, test_list_filters);
        tcase_add_test(tc, test_ephemeral);
        tcase_add_test(tc, test_busy_and_concurrent_readers);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
