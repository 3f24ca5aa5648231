/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "json-util.h"
#include "keys.h"
#include "log.h"
#include "parse-util.h"
#include "store-backend.h"
#include "store-migrations.h"
#include "wg-key.h"

/* ---- lists of strings ------------------------------------------------------------------- */

char **store_strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        return mfree(l);
}

size_t store_strv_length(char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

int store_array_grow(void **p, size_t *allocated, size_t need, size_t size) {
        size_t a;
        void *q;

        assert(p && allocated && size > 0);
        if (need <= *allocated)
                return 0;
        a = MAX(need, *allocated * 2);
        a = MAX(a, (size_t) 8);
        q = reallocarray(*p, a, size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *allocated = a;
        return 0;
}

int store_strv_append(char ***l, size_t *n, const char *s) {
        char **q, *c;

        assert(l && n && s);
        c = strdup(s);
        if (!c)
                return -ENOMEM;
        q = reallocarray(*l, *n + 2, sizeof(char *));
        if (!q) {
                free(c);
                return -ENOMEM;
        }
        q[(*n)++] = c;
        q[*n] = NULL;
        *l = q;
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int cmp_int64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
        return (x > y) - (x < y);
}

/* ---- what names look like --------------------------------------------------------------- */

static bool is_alnum(char c) {
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* 1–max characters: an ASCII letter or digit first, then those or the @extra ones. */
static bool word_is_valid(const char *s, size_t max, const char *extra) {
        size_t n;

        if (!s || !is_alnum(s[0]))
                return false;
        for (n = 0; s[n]; n++)
                if (n >= max || !(is_alnum(s[n]) || strchr(extra, s[n])))
                        return false;
        return true;
}

static bool user_name_is_valid(const char *s) {
        return word_is_valid(s, STORE_USER_NAME_MAX, "._@+-");
}

static bool provider_name_is_valid(const char *s) {
        return word_is_valid(s, STORE_NAME_MAX, "._-");
}

static bool tag_is_valid(const char *s) {
        return word_is_valid(s, STORE_TAG_MAX, "._:-");
}

/* UTF-8 text without control characters, 1–max bytes. Not a full UTF-8 validator: the
 * store keeps bytes; what matters is that no control character reaches logs or JSON. */
static bool text_is_valid(const char *s, size_t max) {
        size_t n;

        if (isempty(s))
                return false;
        for (n = 0; s[n]; n++)
                if (n >= max || (unsigned char) s[n] < 0x20 || s[n] == 0x7f)
                        return false;
        return true;
}

/* Key labels: printable, 1–64 bytes, no leading or trailing space. */
static bool label_is_valid(const char *s) {
        size_t n;

        if (!text_is_valid(s, STORE_NAME_MAX))
                return false;
        n = strlen(s);
        return s[0] != ' ' && s[n - 1] != ' ';
}

/* Model ids as upstreams report them ("meta-llama/Llama-3.1-8B-Instruct", "llama3:8b"):
 * visible characters, no spaces. */
static bool model_is_valid(const char *s) {
        size_t n;

        if (isempty(s))
                return false;
        for (n = 0; s[n]; n++)
                if (n >= STORE_MODEL_NAME_MAX || (unsigned char) s[n] <= 0x20 || s[n] == 0x7f)
                        return false;
        return true;
}

static bool version_is_valid(const char *s) {
        return text_is_valid(s, STORE_VERSION_MAX);
}

/* A sorted copy without duplicates; -EINVAL if an element is invalid or there are too many. */
static int strv_normalize(char *const *l, bool (*valid)(const char *), size_t max, char ***ret) {
        _cleanup_(store_strv_freep) char **c = NULL;
        size_t n = store_strv_length(l), k = 0;

        assert(valid && ret);
        if (n > max)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!valid(l[i]))
                        return -EINVAL;
        c = new0(char *, n + 1);
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                c[i] = strdup(l[i]);
                if (!c[i])
                        return -ENOMEM;
        }
        qsort(c, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n; i++) {
                if (k > 0 && streq(c[k - 1], c[i])) {
                        free(c[i]);
                        continue;
                }
                c[k++] = c[i];
        }
        c[k] = NULL;
        *ret = TAKE_PTR(c);
        return 0;
}

static int public_key_check(const char *s) {
        WgKey k;

        if (wg_key_from_base64(s, &k) < 0 || wg_key_is_zero(&k))
                return -EINVAL;
        return 0;
}

/* ---- enums ------------------------------------------------------------------------------ */

static const char *const provider_state_table[_STORE_PROVIDER_STATE_MAX] = {
        [STORE_PROVIDER_REGISTERED] = "registered",
        [STORE_PROVIDER_ACTIVE] = "active",
        [STORE_PROVIDER_UNREACHABLE] = "unreachable",
        [STORE_PROVIDER_DISABLED] = "disabled",
};

const char *store_provider_state_to_string(StoreProviderState st) {
        if (st < 0 || st >= _STORE_PROVIDER_STATE_MAX)
                return NULL;
        return provider_state_table[st];
}

StoreProviderState store_provider_state_from_string(const char *s) {
        for (StoreProviderState i = 0; s && i < _STORE_PROVIDER_STATE_MAX; i++)
                if (streq(s, provider_state_table[i]))
                        return i;
        return _STORE_PROVIDER_STATE_INVALID;
}

static const char *const share_mode_table[_STORE_SHARE_MODE_MAX] = {
        [STORE_SHARE_PRIVATE] = "private",
        [STORE_SHARE_EVERYONE] = "everyone",
        [STORE_SHARE_RESTRICTED] = "restricted",
};

const char *store_share_mode_to_string(StoreShareMode m) {
        if (m < 0 || m >= _STORE_SHARE_MODE_MAX)
                return NULL;
        return share_mode_table[m];
}

StoreShareMode store_share_mode_from_string(const char *s) {
        for (StoreShareMode i = 0; s && i < _STORE_SHARE_MODE_MAX; i++)
                if (streq(s, share_mode_table[i]))
                        return i;
        return _STORE_SHARE_MODE_INVALID;
}

static const struct {
        const char *name;
        unsigned bit;
} scope_table[] = {
        { "inference", STORE_SCOPE_INFERENCE },
        { "agent", STORE_SCOPE_AGENT },
};

int store_scopes_from_string(const char *s, unsigned *ret) {
        unsigned scopes = 0;

        assert(ret);
        if (isempty(s))
                return -EINVAL;
        for (const char *p = s;;) {
                size_t len = strcspn(p, ",");
                unsigned bit = 0;

                for (size_t i = 0; i < ELEMENTSOF(scope_table); i++)
                        if (strlen(scope_table[i].name) == len && strncmp(p, scope_table[i].name, len) == 0)
                                bit = scope_table[i].bit;
                if (bit == 0 || (scopes & bit))
                        return -EINVAL;
                scopes |= bit;
                if (!p[len])
                        break;
                p += len + 1;
        }
        *ret = scopes;
        return 0;
}

int store_scopes_to_string(unsigned scopes, char **ret) {
        char buf[64] = "";

        assert(ret);
        if (scopes == 0 || (scopes & ~(unsigned) _STORE_SCOPES_ALL))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(scope_table); i++)
                if (scopes & scope_table[i].bit) {
                        if (buf[0])
                                strcat(buf, ",");
                        strcat(buf, scope_table[i].name);
                }
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

/* ---- records ---------------------------------------------------------------------------- */

void store_user_deinit(StoreUser *u) {
        if (!u)
                return;
        free(u->name);
        store_strv_free(u->tags);
        *u = (StoreUser) {};
}

void store_users_free(StoreUser *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                store_user_deinit(&l[i]);
        free(l);
}

void store_api_key_deinit(StoreApiKey *k) {
        if (!k)
                return;
        free(k->name);
        *k = (StoreApiKey) {};
}

void store_api_keys_free(StoreApiKey *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                store_api_key_deinit(&l[i]);
        free(l);
}

void store_enrollment_key_deinit(StoreEnrollmentKey *k) {
        if (!k)
                return;
        free(k->name);
        store_strv_free(k->tags);
        *k = (StoreEnrollmentKey) {};
}

void store_enrollment_keys_free(StoreEnrollmentKey *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                store_enrollment_key_deinit(&l[i]);
        free(l);
}

void store_provider_deinit(StoreProvider *p) {
        if (!p)
                return;
        free(p->name);
        free(p->sharing.user_ids);
        store_strv_free(p->sharing.tags);
        store_strv_free(p->tags);
        store_strv_free(p->models);
        store_strv_free(p->capabilities);
        free(p->upstream_health);
        free(p->version);
        *p = (StoreProvider) {};
}

void store_providers_free(StoreProvider *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                store_provider_deinit(&l[i]);
        free(l);
}

/* ---- opening ---------------------------------------------------------------------------- */

static uint64_t clock_realtime(void *userdata) {
        return now_usec(CLOCK_REALTIME);
}

static uint64_t store_now(const Store *s) {
        return s->clock(s->clock_userdata);
}

/* IPv4 "a.b.c.d/len" with no host bits set, len 8–30 (room for the network, the gateway,
 * at least one provider and the broadcast address). */
static int mesh_prefix_parse(const char *s, uint32_t *ret_network, unsigned *ret_len) {
        char buf[INET_ADDRSTRLEN];
        const char *slash;
        struct in_addr a;
        unsigned len;
        uint32_t net, mask;

        slash = strchr(s, '/');
        if (!slash || (size_t) (slash - s) >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, slash - s);
        buf[slash - s] = 0;
        if (inet_pton(AF_INET, buf, &a) != 1)
                return -EINVAL;
        if (parse_uint(slash + 1, &len) < 0 || len < 8 || len > 30)
                return -EINVAL;
        net = ntohl(a.s_addr);
        mask = UINT32_MAX << (32 - len);
        if (net & ~mask)
                return -EINVAL;
        *ret_network = net;
        *ret_len = len;
        return 0;
}

static int backend_for(const char *location, const StoreBackend **ret_backend, const char **ret_location) {
        const char *p;

        if (startswith(location, "postgresql:") || startswith(location, "postgres:"))
                return -EPROTONOSUPPORT;
        p = startswith(location, "sqlite:");
        *ret_backend = &store_backend_sqlite;
        *ret_location = p ?: location;
        return 0;
}

int store_open(const char *location, const StoreOptions *opts, Store **ret) {
        static const StoreOptions defaults = {};
        Store *s;
        const char *where;
        uint32_t net;
        unsigned len;
        int r;

        assert(ret);
        if (isempty(location))
                return -EINVAL;
        if (!opts)
                opts = &defaults;

        r = mesh_prefix_parse(opts->mesh_prefix ?: STORE_MESH_PREFIX_DEFAULT, &net, &len);
        if (r < 0)
                return r;
        if (opts->busy_timeout_usec > STORE_BUSY_TIMEOUT_USEC_MAX ||
            opts->online_window_usec > STORE_ONLINE_WINDOW_USEC_MAX)
                return -EINVAL;

        s = new0(Store, 1);
        if (!s)
                return -ENOMEM;
        *s = (Store) {
                .mesh_network = net,
                .mesh_prefixlen = len,
                .mesh_gateway = net + 1,
                .mesh_first = net + 2,
                .mesh_last = (net | ~(UINT32_MAX << (32 - len))) - 1,
                .busy_timeout_usec = opts->busy_timeout_usec ?: STORE_BUSY_TIMEOUT_USEC_DEFAULT,
                .online_window_usec = opts->online_window_usec ?: STORE_ONLINE_WINDOW_USEC_DEFAULT,
                .clock = opts->clock ?: clock_realtime,
                .clock_userdata = opts->clock_userdata,
        };

        r = backend_for(location, &s->backend, &where);
        if (r >= 0)
                r = isempty(where) ? -EINVAL : s->backend->open(s, where);
        if (r < 0) {
                store_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        if (s->backend)
                s->backend->close(s);
        return mfree(s);
}

Store *store_read_begin(Store *s) {
        int r;

        assert(s);
        if (s->read_depth++ == 0 && s->backend->read_begin) {
                r = s->backend->read_begin(s);
                if (r < 0)
                        log_debug_errno(r, "Failed to begin a read snapshot, reading without: %m");
        }
        return s;
}

Store *store_read_end(Store *s) {
        if (!s)
                return NULL;
        assert(s->read_depth > 0);
        if (--s->read_depth == 0 && s->backend->read_end)
                s->backend->read_end(s);
        return NULL;
}

const char *store_backend_name(const Store *s) {
        assert(s);
        return s->backend->name;
}

int store_schema_version(Store *s, unsigned *ret) {
        assert(s && ret);
        return s->backend->schema_version(s, ret);
}

unsigned store_schema_version_latest(void) {
        return (unsigned) store_migrations_count;
}

int store_check_integrity(Store *s) {
        assert(s);
        return s->backend->check_integrity(s);
}

void store_gateway_address(const Store *s, struct in_addr *ret) {
        assert(s && ret);
        ret->s_addr = htonl(s->mesh_gateway);
}

void store_mesh_prefix(const Store *s, struct in_addr *ret_network, unsigned *ret_prefixlen) {
        assert(s);
        if (ret_network)
                ret_network->s_addr = htonl(s->mesh_network);
        if (ret_prefixlen)
                *ret_prefixlen = s->mesh_prefixlen;
}

/* ---- users ------------------------------------------------------------------------------ */

int store_user_create(Store *s, const char *name, bool admin, char *const *tags, int64_t *ret_id) {
        _cleanup_(store_strv_freep) char **t = NULL;
        int64_t id;
        int r;

        assert(s);
        if (!user_name_is_valid(name))
                return -EINVAL;
        r = strv_normalize(tags, tag_is_valid, STORE_TAGS_MAX, &t);
        if (r < 0)
                return r;
        r = s->backend->user_create(s, name, admin, t, store_now(s), &id);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 0;
}

int store_user_get(Store *s, int64_t id, StoreUser *ret) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return s->backend->user_get(s, id, NULL, ret);
}

int store_user_get_by_name(Store *s, const char *name, StoreUser *ret) {
        assert(s && ret);
        if (!user_name_is_valid(name))
                return -ENOENT;
        return s->backend->user_get(s, 0, name, ret);
}

int store_user_list(Store *s, StoreUser **ret, size_t *ret_n) {
        assert(s && ret && ret_n);
        return s->backend->user_list(s, ret, ret_n);
}

int store_user_set_tags(Store *s, int64_t id, char *const *tags) {
        _cleanup_(store_strv_freep) char **t = NULL;
        int r;

        assert(s);
        if (id <= 0)
                return -ENOENT;
        r = strv_normalize(tags, tag_is_valid, STORE_TAGS_MAX, &t);
        if (r < 0)
                return r;
        return s->backend->user_set_tags(s, id, t);
}

int store_user_delete(Store *s, int64_t id) {
        assert(s);
        if (id <= 0)
                return -ENOENT;
        return s->backend->user_delete(s, id);
}

/* ---- API keys --------------------------------------------------------------------------- */

static int expiry_check(Store *s, uint64_t expires_usec) {
        if (expires_usec == USEC_INFINITY)
                return 0;
        if (expires_usec > INT64_MAX || expires_usec <= store_now(s))
                return -EINVAL;
        return 0;
}

static bool expired(uint64_t expires_usec, uint64_t now) {
        return expires_usec != USEC_INFINITY && now >= expires_usec;
}

int store_api_key_create(Store *s, int64_t user_id, const char *name, unsigned scopes,
                         uint64_t expires_usec, StoreApiKey *ret_key, char **ret_secret) {
        _cleanup_(erase_and_freep) char *secret = NULL;
        _cleanup_(store_api_key_deinit) StoreApiKey k = {};
        uint8_t hash[KEY_HASH_LEN];
        int r;

        assert(s && ret_secret);
        if (user_id <= 0)
                return -ENOENT;
        if ((name && !label_is_valid(name)) || scopes == 0 || (scopes & ~(unsigned) _STORE_SCOPES_ALL))
                return -EINVAL;
        r = expiry_check(s, expires_usec);
        if (r < 0)
                return r;

        r = key_generate(KEY_KIND_API, &secret);
        if (r < 0)
                return r;
        k = (StoreApiKey) {
                .user_id = user_id,
                .scopes = scopes,
                .created_usec = store_now(s),
                .expires_usec = expires_usec,
        };
        r = key_parse(secret, KEY_KIND_API, k.prefix, hash);
        if (r < 0)
                return r;
        if (name) {
                k.name = strdup(name);
                if (!k.name)
                        return -ENOMEM;
        }

        r = s->backend->api_key_insert(s, &k, hash, &k.id);
        if (r < 0)
                return r;

        if (ret_key)
                *ret_key = TAKE_STRUCT(k);
        *ret_secret = TAKE_PTR(secret);
        return 0;
}

int store_api_key_verify(Store *s, const char *secret, unsigned scope, StoreApiKey *ret_key) {
        _cleanup_(store_api_key_deinit) StoreApiKey k = {};
        char prefix[KEY_PREFIX_SIZE];
        uint8_t hash[KEY_HASH_LEN];
        uint64_t now;
        int r;

        assert(s);
        if (scope & ~(unsigned) _STORE_SCOPES_ALL)
                return -EINVAL;
        r = key_parse(secret, KEY_KIND_API, prefix, hash);
        if (r < 0)
                return r;
        r = s->backend->api_key_lookup(s, prefix, hash, &k);
        if (r < 0)
                return r;

        now = store_now(s);
        if (k.revoked_usec != 0)
                return -EKEYREVOKED;
        if (expired(k.expires_usec, now))
                return -EKEYEXPIRED;
        if ((k.scopes & scope) != scope)
                return -EACCES;

        /* Best effort: the key is good whether or not its last use could be written. The
         * backend writes only if the last use is older than the granularity; the row just
         * read says whether it is, so most requests need no write transaction at all. */
        if (k.last_used_usec > now - MIN(STORE_LAST_USED_GRANULARITY_USEC, now))
                r = 0;
        else
                r = s->backend->api_key_touch(s, k.id, now, STORE_LAST_USED_GRANULARITY_USEC);
        if (r < 0)
                log_debug_errno(r, "Failed to record the last use of API key %" PRIi64 ", ignoring: %m", k.id);
        else if (r > 0)
                k.last_used_usec = now;

        if (ret_key)
                *ret_key = TAKE_STRUCT(k);
        return 0;
}

int store_api_key_get(Store *s, int64_t id, StoreApiKey *ret) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return s->backend->api_key_get(s, id, ret);
}

int store_api_key_list(Store *s, int64_t user_id, StoreApiKey **ret, size_t *ret_n) {
        assert(s && ret && ret_n);
        if (user_id < 0)
                return -EINVAL;
        return s->backend->api_key_list(s, user_id, ret, ret_n);
}

int store_api_key_revoke(Store *s, int64_t id) {
        assert(s);
        if (id <= 0)
                return -ENOENT;
        return s->backend->api_key_revoke(s, id, store_now(s));
}

/* ---- enrollment keys -------------------------------------------------------------------- */

int store_enrollment_key_create(Store *s, int64_t user_id, const char *name, unsigned flags,
                                char *const *tags, uint64_t expires_usec,
                                StoreEnrollmentKey *ret_key, char **ret_secret) {
        _cleanup_(erase_and_freep) char *secret = NULL;
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        uint8_t hash[KEY_HASH_LEN];
        int r;

        assert(s && ret_secret);
        if (user_id <= 0)
                return -ENOENT;
        if ((name && !label_is_valid(name)) || (flags & ~(unsigned) _STORE_ENROLLMENT_FLAGS_ALL))
                return -EINVAL;
        r = expiry_check(s, expires_usec);
        if (r < 0)
                return r;

        k = (StoreEnrollmentKey) {
                .user_id = user_id,
                .reusable = flags & STORE_ENROLLMENT_REUSABLE,
                .ephemeral = flags & STORE_ENROLLMENT_EPHEMERAL,
                .created_usec = store_now(s),
                .expires_usec = expires_usec,
        };
        r = strv_normalize(tags, tag_is_valid, STORE_TAGS_MAX, &k.tags);
        if (r < 0)
                return r;
        if (name) {
                k.name = strdup(name);
                if (!k.name)
                        return -ENOMEM;
        }

        r = key_generate(KEY_KIND_ENROLLMENT, &secret);
        if (r < 0)
                return r;
        r = key_parse(secret, KEY_KIND_ENROLLMENT, k.prefix, hash);
        if (r < 0)
                return r;

        r = s->backend->enrollment_key_insert(s, &k, hash, &k.id);
        if (r < 0)
                return r;

        if (ret_key)
                *ret_key = TAKE_STRUCT(k);
        *ret_secret = TAKE_PTR(secret);
        return 0;
}

int store_enrollment_key_consume(Store *s, const char *secret, StoreEnrollmentKey *ret_key) {
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        char prefix[KEY_PREFIX_SIZE];
        uint8_t hash[KEY_HASH_LEN];
        int r;

        assert(s);
        r = key_parse(secret, KEY_KIND_ENROLLMENT, prefix, hash);
        if (r < 0)
                return r;
        r = s->backend->enrollment_key_consume(s, prefix, hash, store_now(s), &k);
        if (r < 0)
                return r;
        if (ret_key)
                *ret_key = TAKE_STRUCT(k);
        return 0;
}

int store_enrollment_key_get(Store *s, int64_t id, StoreEnrollmentKey *ret) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return s->backend->enrollment_key_get(s, id, ret);
}

int store_enrollment_key_list(Store *s, int64_t user_id, StoreEnrollmentKey **ret, size_t *ret_n) {
        assert(s && ret && ret_n);
        if (user_id < 0)
                return -EINVAL;
        return s->backend->enrollment_key_list(s, user_id, ret, ret_n);
}

int store_enrollment_key_revoke(Store *s, int64_t id) {
        assert(s);
        if (id <= 0)
                return -ENOENT;
        return s->backend->enrollment_key_revoke(s, id, store_now(s));
}

/* ---- providers -------------------------------------------------------------------------- */

static void provider_finish(const Store *s, StoreProvider *p, uint64_t now) {
        p->online = p->state == STORE_PROVIDER_ACTIVE &&
                !p->agent_draining && !p->admin_draining &&
                p->last_heartbeat_usec != 0 &&
                p->last_heartbeat_usec + s->online_window_usec >= now;
}

static uint64_t online_since(const Store *s, uint64_t now) {
        return now > s->online_window_usec ? now - s->online_window_usec : 0;
}

int store_provider_register(Store *s, const StoreRegistration *reg, StoreProvider *ret,
                            uint8_t ret_secret[static STORE_SECRET_LEN]) {
        char prefix[KEY_PREFIX_SIZE];
        uint8_t hash[KEY_HASH_LEN], secret[STORE_SECRET_LEN];
        StoreProvider p = {};
        int64_t id;
        int r, created;

        assert(s && reg && ret_secret);
        if (!!reg->enrollment_key == (reg->owner_id > 0))
                return -EINVAL;         /* exactly one way to say who registers */
        if (reg->owner_id < 0)
                return -EINVAL;
        if (!provider_name_is_valid(reg->name) || reg->agent_port == 0 ||
            (reg->version && !version_is_valid(reg->version)))
                return -EINVAL;
        r = public_key_check(reg->public_key);
        if (r < 0)
                return r;
        if (reg->enrollment_key) {
                r = key_parse(reg->enrollment_key, KEY_KIND_ENROLLMENT, prefix, hash);
                if (r < 0)
                        return r;
        }

        r = random_bytes(secret, sizeof secret);
        if (r < 0)
                return r;
        created = s->backend->provider_register(s, reg,
                                                reg->enrollment_key ? prefix : NULL,
                                                reg->enrollment_key ? hash : NULL,
                                                secret, store_now(s), &id);
        if (created < 0) {
                explicit_bzero(secret, sizeof secret);
                return created;
        }

        if (ret) {
                r = s->backend->provider_get(s, &(StoreProviderSelector) { .id = id }, &p);
                if (r < 0) {
                        /* Registered and committed: the caller must learn the secret, or the
                         * provider is unusable until it registers again. Report the read failure
                         * anyway: without the record the caller cannot answer the agent. */
                        explicit_bzero(secret, sizeof secret);
                        return r;
                }
                provider_finish(s, &p, store_now(s));
                *ret = p;
        }
        memcpy(ret_secret, secret, sizeof secret);
        explicit_bzero(secret, sizeof secret);
        return created;
}

static int provider_get(Store *s, const StoreProviderSelector *sel, StoreProvider *ret) {
        StoreProvider p = {};
        int r;

        r = s->backend->provider_get(s, sel, &p);
        if (r < 0)
                return r;
        provider_finish(s, &p, store_now(s));
        *ret = p;
        return 0;
}

int store_provider_get(Store *s, int64_t id, StoreProvider *ret) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return provider_get(s, &(StoreProviderSelector) { .id = id }, ret);
}

int store_provider_get_by_address(Store *s, struct in_addr address, StoreProvider *ret) {
        assert(s && ret);
        return provider_get(s, &(StoreProviderSelector) { .address = &address }, ret);
}

int store_provider_get_by_public_key(Store *s, const char *public_key, StoreProvider *ret) {
        assert(s && ret);
        if (public_key_check(public_key) < 0)
                return -EINVAL;
        return provider_get(s, &(StoreProviderSelector) { .public_key = public_key }, ret);
}

int store_provider_get_by_name(Store *s, int64_t owner_id, const char *name, StoreProvider *ret) {
        assert(s && ret);
        if (owner_id <= 0 || !provider_name_is_valid(name))
                return -ENOENT;
        return provider_get(s, &(StoreProviderSelector) { .owner_id = owner_id, .name = name }, ret);
}

int store_provider_get_secret(Store *s, int64_t id, uint8_t ret[static STORE_SECRET_LEN]) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_get_secret(s, id, ret);
}

static void providers_finish(const Store *s, StoreProvider *l, size_t n) {
        uint64_t now = store_now(s);

        for (size_t i = 0; i < n; i++)
                provider_finish(s, &l[i], now);
}

bool store_capability_name_is_valid(const char *name) {
        return tag_is_valid(name);
}

int store_provider_list(Store *s, const StoreProviderFilter *filter, StoreProvider **ret, size_t *ret_n) {
        static const StoreProviderFilter all = {};
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        assert(s && ret && ret_n);
        if (!filter)
                filter = &all;
        if (filter->owner_id < 0 || filter->usable_by < 0 ||
            (filter->model && !model_is_valid(filter->model)) ||
            (filter->capability && !tag_is_valid(filter->capability)))
                return -EINVAL;
        r = s->backend->provider_list(s, filter, online_since(s, store_now(s)), &l, &n);
        if (r < 0)
                return r;
        providers_finish(s, l, n);
        *ret = l;
        *ret_n = n;
        return 0;
}

int store_provider_delete(Store *s, int64_t id) {
        assert(s);
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_delete(s, id);
}

int store_provider_set_draining(Store *s, int64_t id, bool draining) {
        assert(s);
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_set_draining(s, id, draining);
}

int store_provider_set_state(Store *s, int64_t id, StoreProviderState state) {
        assert(s);
        if (!store_provider_state_to_string(state))
                return -EINVAL;
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_set_state(s, id, state);
}

int store_provider_set_tags(Store *s, int64_t id, char *const *tags) {
        _cleanup_(store_strv_freep) char **t = NULL;
        int r;

        assert(s);
        if (id <= 0)
                return -ENOENT;
        r = strv_normalize(tags, tag_is_valid, STORE_TAGS_MAX, &t);
        if (r < 0)
                return r;
        return s->backend->provider_set_tags(s, id, t);
}

int store_provider_set_sharing(Store *s, int64_t id, const StoreSharing *sharing) {
        _cleanup_(store_strv_freep) char **tags = NULL;
        _cleanup_free_ int64_t *users = NULL;
        size_t n = 0;
        int r;

        assert(s && sharing);
        if (!store_share_mode_to_string(sharing->mode))
                return -EINVAL;
        if (sharing->mode != STORE_SHARE_RESTRICTED) {
                if (sharing->n_user_ids > 0 || store_strv_length(sharing->tags) > 0)
                        return -EINVAL;
        } else {
                if (sharing->n_user_ids > STORE_SHARE_USERS_MAX || (sharing->n_user_ids > 0 && !sharing->user_ids))
                        return -EINVAL;
                r = strv_normalize(sharing->tags, tag_is_valid, STORE_TAGS_MAX, &tags);
                if (r < 0)
                        return r;
                users = new(int64_t, sharing->n_user_ids);
                if (!users)
                        return -ENOMEM;
                for (size_t i = 0; i < sharing->n_user_ids; i++) {
                        if (sharing->user_ids[i] <= 0)
                                return -EINVAL;
                        users[i] = sharing->user_ids[i];
                }
                qsort(users, sharing->n_user_ids, sizeof(int64_t), cmp_int64);
                for (size_t i = 0; i < sharing->n_user_ids; i++)
                        if (n == 0 || users[n - 1] != users[i])
                                users[n++] = users[i];
        }
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_set_sharing(s, id, &(StoreSharing) {
                .mode = sharing->mode,
                .user_ids = users,
                .n_user_ids = n,
                .tags = tags,
        });
}

static int health_json_check(const char *s) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        size_t len = strlen(s);

        if (len > STORE_HEALTH_JSON_MAX)
                return -EINVAL;
        if (jobj_parse(s, len, 16, &o, NULL) < 0)
                return -EINVAL;
        return 0;
}

int store_provider_heartbeat(Store *s, int64_t id, const StoreHeartbeat *hb) {
        _cleanup_(store_strv_freep) char **models = NULL, **caps = NULL;
        int r;

        assert(s && hb);
        if ((hb->version && !version_is_valid(hb->version)) ||
            (hb->upstream_health && health_json_check(hb->upstream_health) < 0) ||
            hb->in_flight > INT32_MAX || hb->capacity > INT32_MAX)
                return -EINVAL;
        r = strv_normalize(hb->models, model_is_valid, STORE_MODELS_MAX, &models);
        if (r < 0)
                return r;
        r = strv_normalize(hb->capabilities, tag_is_valid, STORE_CAPABILITIES_MAX, &caps);
        if (r < 0)
                return r;
        if (id <= 0)
                return -ENOENT;
        return s->backend->provider_heartbeat(s, id, &(StoreHeartbeat) {
                .models = models,
                .capabilities = caps,
                .in_flight = hb->in_flight,
                .capacity = hb->capacity,
                .upstream_health = hb->upstream_health,
                .version = hb->version,
                .draining = hb->draining,
        }, store_now(s));
}

int store_provider_peers(Store *s, StorePeer **ret, size_t *ret_n) {
        assert(s && ret && ret_n);
        return s->backend->provider_peers(s, ret, ret_n);
}

static int stale_ephemeral(Store *s, uint64_t grace_usec, bool reap, StoreProvider **ret, size_t *ret_n) {
        StoreProvider *l = NULL;
        uint64_t now;
        size_t n = 0;
        int r;

        assert(s && ret && ret_n);
        if (grace_usec == 0 || grace_usec > INT64_MAX)
                return -EINVAL;
        now = store_now(s);
        r = s->backend->provider_stale_ephemeral(s, now > grace_usec ? now - grace_usec : 0, reap, &l, &n);
        if (r < 0)
                return r;
        providers_finish(s, l, n);
        *ret = l;
        *ret_n = n;
        return 0;
}

int store_provider_list_stale_ephemeral(Store *s, uint64_t grace_usec, StoreProvider **ret, size_t *ret_n) {
        return stale_ephemeral(s, grace_usec, false, ret, ret_n);
}

int store_provider_reap_ephemeral(Store *s, uint64_t grace_usec, StoreProvider **ret, size_t *ret_n) {
        return stale_ephemeral(s, grace_usec, true, ret, ret_n);
}

/* ---- per-key limits ---------------------------------------------------------------------- */

static bool key_limit_is_valid(int64_t v) {
        return v == STORE_LIMIT_DEFAULT || v == STORE_LIMIT_UNLIMITED || (v >= 0 && v <= STORE_LIMIT_MAX);
}

int store_api_key_get_limits(Store *s, int64_t id, StoreKeyLimits *ret) {
        assert(s && ret);
        if (id <= 0)
                return -ENOENT;
        return s->backend->api_key_get_limits(s, id, ret);
}

int store_api_key_set_limits(Store *s, int64_t id, const StoreKeyLimits *limits) {
        assert(s && limits);
        if (!key_limit_is_valid(limits->requests_per_minute) || !key_limit_is_valid(limits->tokens_per_minute) ||
            !key_limit_is_valid(limits->concurrent_streams))
                return -EINVAL;
        if (id <= 0)
                return -ENOENT;
        return s->backend->api_key_set_limits(s, id, limits);
}

/* ---- usage -------------------------------------------------------------------------------- */

static const char *const usage_group_table[_STORE_USAGE_GROUP_MAX] = {
        [STORE_USAGE_BY_KEY] = "key",
        [STORE_USAGE_BY_PROVIDER] = "provider",
        [STORE_USAGE_BY_MODEL] = "model",
        [STORE_USAGE_BY_USER] = "user",
};

const char *store_usage_group_to_string(StoreUsageGroup g) {
        return g >= 0 && g < _STORE_USAGE_GROUP_MAX ? usage_group_table[g] : NULL;
}

StoreUsageGroup store_usage_group_from_string(const char *s) {
        for (int i = 0; s && i < _STORE_USAGE_GROUP_MAX; i++)
                if (streq(s, usage_group_table[i]))
                        return (StoreUsageGroup) i;
        return _STORE_USAGE_GROUP_INVALID;
}

static bool usage_record_is_valid(const StoreUsageRecord *u) {
        return u->key_id > 0 && u->user_id > 0 && u->provider_id >= 0 && u->model && !isempty(u->model) &&
                strlen(u->model) <= STORE_MODEL_NAME_MAX && u->outcome && u->status <= 999 &&
                u->started_usec <= INT64_MAX && u->prompt_tokens <= INT64_MAX && u->completion_tokens <= INT64_MAX &&
                u->time_to_first_token_usec <= INT64_MAX && u->duration_usec <= INT64_MAX;
}

int store_usage_insert(Store *s, const StoreUsageRecord *l, size_t n) {
        assert(s && (l || n == 0));
        if (n == 0)
                return 0;
        if (n > STORE_USAGE_BATCH_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!usage_record_is_valid(&l[i]))
                        return -EINVAL;
        return s->backend->usage_insert(s, l, n);
}

int store_usage_prune(Store *s, uint64_t before, unsigned max) {
        assert(s);
        if (before > INT64_MAX || max == 0)
                return -EINVAL;
        return s->backend->usage_prune(s, before, max);
}

void store_usage_totals_free(StoreUsageTotal *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                free(l[i].name);
        free(l);
}

int store_usage_totals(Store *s, const StoreUsageFilter *f, StoreUsageTotal **ret, size_t *ret_n) {
        assert(s && f && ret && ret_n);
        if (f->group < 0 || f->group >= _STORE_USAGE_GROUP_MAX || f->user_id < 0 || f->provider_id < 0 ||
            f->since_usec > INT64_MAX || f->until_usec > INT64_MAX ||
            (f->until_usec > 0 && f->until_usec <= f->since_usec) ||
            (f->key_prefix && !key_prefix_is_valid(f->key_prefix)) ||
            (f->model && (isempty(f->model) || strlen(f->model) > STORE_MODEL_NAME_MAX)))
                return -EINVAL;
        return s->backend->usage_totals(s, f, f->until_usec > 0 ? f->until_usec : (uint64_t) INT64_MAX, ret, ret_n);
}
