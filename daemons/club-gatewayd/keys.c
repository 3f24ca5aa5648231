/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keys.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static const char *const kind_tags[_KEY_KIND_MAX] = {
        [KEY_KIND_API] = "ic-",
        [KEY_KIND_ENROLLMENT] = "ie-",
};

const char *key_kind_tag(KeyKind kind) {
        if (kind < 0 || kind >= _KEY_KIND_MAX)
                return NULL;
        return kind_tags[kind];
}

KeyKind key_kind_of(const char *s) {
        if (!s)
                return _KEY_KIND_INVALID;
        for (KeyKind k = 0; k < _KEY_KIND_MAX; k++)
                if (startswith(s, kind_tags[k]))
                        return k;
        return _KEY_KIND_INVALID;
}

int random_bytes(void *p, size_t n) {
        assert(p || n == 0);
        if (n > INT_MAX)
                return -EINVAL;
        if (n > 0 && RAND_bytes(p, (int) n) != 1)
                return -EIO;
        return 0;
}

int key_generate(KeyKind kind, char **ret) {
        _cleanup_(erase_and_freep) char *k = NULL;
        uint8_t buf[64];
        size_t n = 0;
        int r;

        assert(ret);
        if (!key_kind_tag(kind))
                return -EINVAL;

        k = new0(char, KEY_SIZE);
        if (!k)
                return -ENOMEM;
        memcpy(k, kind_tags[kind], KEY_TAG_LEN);

        /* Rejection sampling: 248 = 4 × 62, so a byte below it picks each digit with the same
         * probability. About 3% of the bytes are thrown away. */
        while (n < KEY_RANDOM_CHARS) {
                r = random_bytes(buf, sizeof buf);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < sizeof buf && n < KEY_RANDOM_CHARS; i++)
                        if (buf[i] < 248)
                                k[KEY_TAG_LEN + n++] = base62[buf[i] % 62];
        }
        explicit_bzero(buf, sizeof buf);

        *ret = TAKE_PTR(k);
        return 0;
}

/* -1 if lo <= c <= hi, else 0, without branching on c (as in lib/wg-key.c). */
static inline int ct_in_range(int c, int lo, int hi) {
        return ((lo - 1 - c) & (c - hi - 1)) >> 8;
}

/* -1 if c is a base62 digit, else 0. */
static inline int ct_base62_mask(unsigned char c) {
        return ct_in_range(c, '0', '9') | ct_in_range(c, 'A', 'Z') | ct_in_range(c, 'a', 'z');
}

int key_parse(const char *s, KeyKind kind, char *ret_prefix, uint8_t *ret_hash) {
        uint8_t hash[KEY_HASH_LEN];
        int ok = -1;

        /* Every key has the same length, so the length is no secret. */
        if (!s || !key_kind_tag(kind) || strnlen(s, KEY_LEN + 1) != KEY_LEN ||
            memcmp(s, kind_tags[kind], KEY_TAG_LEN) != 0)
                return -EKEYREJECTED;
        for (size_t i = KEY_TAG_LEN; i < KEY_LEN; i++)
                ok &= ct_base62_mask((unsigned char) s[i]);
        if (ok == 0)
                return -EKEYREJECTED;

        if (ret_hash) {
                if (!EVP_Digest(s, KEY_LEN, hash, NULL, EVP_sha256(), NULL))
                        return -EIO;
                memcpy(ret_hash, hash, sizeof hash);
        }
        if (ret_prefix) {
                memcpy(ret_prefix, s + KEY_TAG_LEN, KEY_PREFIX_CHARS);
                ret_prefix[KEY_PREFIX_CHARS] = 0;
        }
        return 0;
}

bool key_hash_equal(const uint8_t *a, const uint8_t *b) {
        assert(a && b);
        return CRYPTO_memcmp(a, b, KEY_HASH_LEN) == 0;
}

bool key_prefix_is_valid(const char *s) {
        if (!s || strnlen(s, KEY_PREFIX_CHARS + 1) != KEY_PREFIX_CHARS)
                return false;
        for (size_t i = 0; i < KEY_PREFIX_CHARS; i++)
                if (!strchr(base62, s[i]) || s[i] == 0)
                        return false;
        return true;
}
