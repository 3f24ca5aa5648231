/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "request-sign.h"

#define SIGN_CONTEXT "club-request-v1"

/* ---- the signed string ------------------------------------------------------------------ */

static bool method_is_valid(const char *m) {
        size_t n = 0;

        if (!m)
                return false;
        for (; m[n]; n++)
                if (m[n] < 'A' || m[n] > 'Z' || n >= REQUEST_SIGN_METHOD_MAX)
                        return false;
        return n > 0;
}

static bool target_is_valid(const char *t) {
        size_t n = 0;

        if (!t || t[0] != '/')
                return false;
        for (; t[n]; n++)
                if (t[n] < 0x21 || t[n] > 0x7e || n >= REQUEST_SIGN_TARGET_MAX)
                        return false;
        return true;
}

static void hex_encode(const uint8_t *d, size_t n, char *ret) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                ret[2 * i] = digits[d[i] >> 4];
                ret[2 * i + 1] = digits[d[i] & 15];
        }
        ret[2 * n] = 0;
}

/* Lowercase only: the header has one canonical form. Not constant time; the input is public. */
static int hex_decode(const char *s, size_t n, uint8_t *ret) {
        for (size_t i = 0; i < 2 * n; i++) {
                int v;

                if (s[i] >= '0' && s[i] <= '9')
                        v = s[i] - '0';
                else if (s[i] >= 'a' && s[i] <= 'f')
                        v = s[i] - 'a' + 10;
                else
                        return -EBADMSG;
                if (i % 2 == 0)
                        ret[i / 2] = (uint8_t) (v << 4);
                else
                        ret[i / 2] |= (uint8_t) v;
        }
        return 0;
}

/* The MAC of the canonical string. method and target must have been validated. */
static int compute_mac(const uint8_t *secret, const char *method, const char *target, uint64_t time_sec,
                       const char nonce_hex[static 2 * REQUEST_SIGN_NONCE_LEN + 1],
                       uint8_t ret[static REQUEST_SIGN_MAC_LEN]) {
        _cleanup_free_ char *msg = NULL;
        size_t len = 0;
        int n;

        n = asprintf(&msg, SIGN_CONTEXT "\n%s\n%s\n%" PRIu64 "\n%s", method, target, time_sec, nonce_hex);
        if (n < 0)
                return -ENOMEM;
        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, REQUEST_SIGN_SECRET_LEN,
                       (const unsigned char *) msg, (size_t) n, ret, REQUEST_SIGN_MAC_LEN, &len) ||
            len != REQUEST_SIGN_MAC_LEN)
                return -EIO;
        return 0;
}

int request_sign(const uint8_t *secret, const char *method, const char *target, uint64_t time_sec,
                 const uint8_t *nonce, char **ret_header) {
        uint8_t n[REQUEST_SIGN_NONCE_LEN], mac[REQUEST_SIGN_MAC_LEN];
        char nonce_hex[2 * REQUEST_SIGN_NONCE_LEN + 1], mac_hex[2 * REQUEST_SIGN_MAC_LEN + 1];
        char *h;
        int r;

        assert(secret && ret_header);
        if (!method_is_valid(method) || !target_is_valid(target) || time_sec > INT64_MAX)
                return -EINVAL;

        if (nonce)
                memcpy(n, nonce, sizeof n);
        else if (RAND_bytes(n, sizeof n) != 1)
                return -EIO;
        hex_encode(n, sizeof n, nonce_hex);

        r = compute_mac(secret, method, target, time_sec, nonce_hex, mac);
        if (r < 0)
                return r;
        hex_encode(mac, sizeof mac, mac_hex);
        explicit_bzero(mac, sizeof mac);

        if (asprintf(&h, "t=%" PRIu64 ",n=%s,v1=%s", time_sec, nonce_hex, mac_hex) < 0)
                h = NULL;
        explicit_bzero(mac_hex, sizeof mac_hex);
        if (!h)
                return -ENOMEM;
        *ret_header = h;
        return 0;
}

typedef struct ParsedSignature {
        uint64_t time_sec;
        char nonce_hex[2 * REQUEST_SIGN_NONCE_LEN + 1];
        uint8_t nonce[REQUEST_SIGN_NONCE_LEN];
        uint8_t mac[REQUEST_SIGN_MAC_LEN];
} ParsedSignature;

/* Exactly "t=<decimal>,n=<32 lowercase hex>,v1=<64 lowercase hex>": one spelling only. */
static int signature_parse(const char *h, ParsedSignature *ret) {
        ParsedSignature p = {};
        const char *s;
        size_t digits = 0;

        if (!h)
                return -EBADMSG;
        s = startswith(h, "t=");
        if (!s)
                return -EBADMSG;
        for (; s[digits] >= '0' && s[digits] <= '9'; digits++) {
                unsigned d = (unsigned) (s[digits] - '0');

                if (digits == 0 && d == 0 && s[1] >= '0' && s[1] <= '9')
                        return -EBADMSG;        /* no leading zeros */
                if (p.time_sec > ((uint64_t) INT64_MAX - d) / 10)
                        return -EBADMSG;
                p.time_sec = p.time_sec * 10 + d;
        }
        if (digits == 0)
                return -EBADMSG;
        s = startswith(s + digits, ",n=");
        if (!s || strnlen(s, 2 * REQUEST_SIGN_NONCE_LEN) < 2 * REQUEST_SIGN_NONCE_LEN ||
            hex_decode(s, REQUEST_SIGN_NONCE_LEN, p.nonce) < 0)
                return -EBADMSG;
        memcpy(p.nonce_hex, s, 2 * REQUEST_SIGN_NONCE_LEN);
        s = startswith(s + 2 * REQUEST_SIGN_NONCE_LEN, ",v1=");
        if (!s || strlen(s) != 2 * REQUEST_SIGN_MAC_LEN || hex_decode(s, REQUEST_SIGN_MAC_LEN, p.mac) < 0)
                return -EBADMSG;
        *ret = p;
        return 0;
}

/* ---- the replay cache ------------------------------------------------------------------- */

typedef struct ReplayEntry {
        uint8_t nonce[REQUEST_SIGN_NONCE_LEN];
        uint64_t expire_sec;            /* live while now <= expire_sec; 0: the slot is empty */
} ReplayEntry;

struct ReplayCache {
        ReplayEntry *slots;
        size_t n_slots;                 /* a power of two, at least 2 * max_entries */
        size_t max_entries;
        size_t n_used;                  /* non-empty slots, live or expired */
        uint64_t window_sec;
        uint64_t last_sweep_sec;
        bool swept;
        EVP_MAC *mac;
        EVP_MAC_CTX *mac_ctx;           /* SipHash, keyed once with random bytes */
};

ReplayCache *replay_cache_free(ReplayCache *c) {
        if (!c)
                return NULL;
        EVP_MAC_CTX_free(c->mac_ctx);
        EVP_MAC_free(c->mac);
        free(c->slots);
        return mfree(c);
}

int replay_cache_new(size_t max_entries, uint64_t window_sec, ReplayCache **ret) {
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint8_t key[16];
        size_t hash_size = 8;
        OSSL_PARAM params[] = {
                OSSL_PARAM_size_t(OSSL_MAC_PARAM_SIZE, &hash_size),
                OSSL_PARAM_END,
        };
        int ok;

        assert(ret);
        if (max_entries == 0)
                max_entries = REPLAY_CACHE_ENTRIES_DEFAULT;
        if (window_sec == 0)
                window_sec = REQUEST_SIGN_WINDOW_SEC_DEFAULT;
        if (max_entries > REPLAY_CACHE_ENTRIES_MAX || window_sec > 86400)
                return -EINVAL;

        c = new0(ReplayCache, 1);
        if (!c)
                return -ENOMEM;
        *c = (ReplayCache) {
                .max_entries = max_entries,
                .window_sec = window_sec,
                .n_slots = 2,
        };
        while (c->n_slots < 2 * max_entries)
                c->n_slots <<= 1;
        c->slots = new0(ReplayEntry, c->n_slots);
        if (!c->slots)
                return -ENOMEM;

        c->mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
        if (!c->mac)
                return -EIO;
        c->mac_ctx = EVP_MAC_CTX_new(c->mac);
        if (!c->mac_ctx)
                return -ENOMEM;
        if (RAND_bytes(key, sizeof key) != 1)
                return -EIO;
        ok = EVP_MAC_init(c->mac_ctx, key, sizeof key, params);
        explicit_bzero(key, sizeof key);
        if (!ok)
                return -EIO;

        *ret = TAKE_PTR(c);
        return 0;
}

uint64_t replay_cache_window(const ReplayCache *c) {
        assert(c);
        return c->window_sec;
}

size_t replay_cache_size(const ReplayCache *c) {
        assert(c);
        return c->n_used;
}

static int nonce_hash(ReplayCache *c, const uint8_t *nonce, size_t *ret) {
        uint8_t out[8];
        size_t len = 0;
        uint64_t h = 0;

        /* A NULL key restarts the MAC with the key set in replay_cache_new(). */
        if (!EVP_MAC_init(c->mac_ctx, NULL, 0, NULL) ||
            !EVP_MAC_update(c->mac_ctx, nonce, REQUEST_SIGN_NONCE_LEN) ||
            !EVP_MAC_final(c->mac_ctx, out, &len, sizeof out) || len != sizeof out)
                return -EIO;
        for (size_t i = 0; i < sizeof out; i++)
                h = h << 8 | out[i];
        *ret = (size_t) h & (c->n_slots - 1);
        return 0;
}

/* Move the live entries into a fresh table: expired ones go, and probe chains get short. */
static int replay_cache_sweep(ReplayCache *c, uint64_t now_sec) {
        ReplayEntry *fresh;
        size_t used = 0;
        int r;

        fresh = new0(ReplayEntry, c->n_slots);
        if (!fresh)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_slots; i++) {
                const ReplayEntry *e = &c->slots[i];
                size_t h;

                if (e->expire_sec == 0 || e->expire_sec < now_sec)
                        continue;
                r = nonce_hash(c, e->nonce, &h);
                if (r < 0) {
                        free(fresh);
                        return r;
                }
                while (fresh[h].expire_sec != 0)
                        h = (h + 1) & (c->n_slots - 1);
                fresh[h] = *e;
                used++;
        }
        free(c->slots);
        c->slots = fresh;
        c->n_used = used;
        c->last_sweep_sec = now_sec;
        c->swept = true;
        return 0;
}

int replay_cache_add(ReplayCache *c, const uint8_t *nonce, uint64_t time_sec, uint64_t now_sec) {
        uint64_t expire;
        size_t h, free_slot = SIZE_MAX;
        int r;

        assert(c && nonce);

        /* Saturating; never 0, which marks an empty slot. */
        expire = time_sec > UINT64_MAX - c->window_sec ? UINT64_MAX : time_sec + c->window_sec;
        if (expire < now_sec)
                return 0;       /* outside the window already: nothing to remember */

        r = nonce_hash(c, nonce, &h);
        if (r < 0)
                return r;

        /* The load factor stays at or below 1/2, so an empty slot ends every chain. */
        for (;; h = (h + 1) & (c->n_slots - 1)) {
                ReplayEntry *e = &c->slots[h];

                if (e->expire_sec == 0) {
                        if (free_slot == SIZE_MAX)
                                free_slot = h;
                        break;
                }
                if (e->expire_sec < now_sec) {
                        /* Expired: reusable, but the nonce may still sit further along. */
                        if (free_slot == SIZE_MAX)
                                free_slot = h;
                        continue;
                }
                if (memcmp(e->nonce, nonce, REQUEST_SIGN_NONCE_LEN) == 0)
                        return -EALREADY;
        }

        if (c->slots[free_slot].expire_sec == 0) {
                if (c->n_used >= c->max_entries) {
                        /* Full. Sweep at most once a second; otherwise an attacker could make
                         * every request pay for a pass over the whole table. */
                        if (c->swept && c->last_sweep_sec >= now_sec)
                                return -ENOBUFS;
                        r = replay_cache_sweep(c, now_sec);
                        if (r < 0)
                                return r;
                        if (c->n_used >= c->max_entries)
                                return -ENOBUFS;
                        return replay_cache_add(c, nonce, time_sec, now_sec);
                }
                c->n_used++;
        }
        memcpy(c->slots[free_slot].nonce, nonce, REQUEST_SIGN_NONCE_LEN);
        c->slots[free_slot].expire_sec = expire;
        return 0;
}

/* ---- verification ----------------------------------------------------------------------- */

int request_verify(ReplayCache *cache, const uint8_t *secret, const char *method, const char *target,
                   const char *header, uint64_t now_sec) {
        ParsedSignature p;
        uint8_t expected[REQUEST_SIGN_MAC_LEN];
        int r, equal;

        assert(cache && secret);

        r = signature_parse(header, &p);
        if (r < 0)
                return r;
        if (!method_is_valid(method) || !target_is_valid(target))
                return -EBADMSG;

        if (p.time_sec + cache->window_sec < now_sec ||
            (now_sec <= UINT64_MAX - cache->window_sec && p.time_sec > now_sec + cache->window_sec))
                return -ESTALE;

        r = compute_mac(secret, method, target, p.time_sec, p.nonce_hex, expected);
        if (r < 0)
                return r;
        equal = CRYPTO_memcmp(expected, p.mac, sizeof expected) == 0;
        explicit_bzero(expected, sizeof expected);
        if (!equal)
                return -EKEYREJECTED;

        return replay_cache_add(cache, p.nonce, p.time_sec, now_sec);
}
