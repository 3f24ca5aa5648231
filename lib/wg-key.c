/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "macro.h"
#include "wg-key.h"

/*
 * Constant-time helpers. Every branch and every memory access below depends
 * only on the position in the string, never on the value of a character or a
 * key byte: a mask is computed for each class a character could be in, and the
 * results are combined with AND/OR. Arithmetic is done on int with values in
 * 0…255, where ">> 8" of a negative number yields -1 (GCC and clang shift
 * arithmetically) and of a non-negative one yields 0.
 */

/* -1 if lo <= c <= hi, else 0. */
static inline int ct_in_range(int c, int lo, int hi) {
        return ((lo - 1 - c) & (c - hi - 1)) >> 8;
}

/* -1 if c == v, else 0. */
static inline int ct_eq(int c, int v) {
        return ct_in_range(c, v, v);
}

/* The base64 digit for a 6-bit value. */
static char b64_encode_6(int v) {
        int c = 0;

        c |= ct_in_range(v, 0, 25) & ('A' + v);
        c |= ct_in_range(v, 26, 51) & ('a' + v - 26);
        c |= ct_in_range(v, 52, 61) & ('0' + v - 52);
        c |= ct_eq(v, 62) & '+';
        c |= ct_eq(v, 63) & '/';
        return (char) c;
}

/* The 6-bit value of a base64 digit, or -1. */
static int b64_decode_6(int c) {
        int v = -1;

        /* v starts at -1: add (value + 1) for the one class that matches. */
        v += ct_in_range(c, 'A', 'Z') & (c - 'A' + 1);
        v += ct_in_range(c, 'a', 'z') & (c - 'a' + 26 + 1);
        v += ct_in_range(c, '0', '9') & (c - '0' + 52 + 1);
        v += ct_eq(c, '+') & (62 + 1);
        v += ct_eq(c, '/') & (63 + 1);
        return v;
}

/* The hex digit for a 4-bit value, lowercase. */
static char hex_encode_4(int v) {
        int c = 0;

        c |= ct_in_range(v, 0, 9) & ('0' + v);
        c |= ct_in_range(v, 10, 15) & ('a' + v - 10);
        return (char) c;
}

/* The value of a hex digit, or -1. */
static int hex_decode_4(int c) {
        int v = -1;

        v += ct_in_range(c, '0', '9') & (c - '0' + 1);
        v += ct_in_range(c, 'a', 'f') & (c - 'a' + 10 + 1);
        v += ct_in_range(c, 'A', 'F') & (c - 'A' + 10 + 1);
        return v;
}

char *wg_key_to_base64(const WgKey *key, char ret[static WG_KEY_B64_SIZE]) {
        const uint8_t *d;
        size_t i, o = 0;

        assert(key);
        d = key->data;
        /* 30 bytes make 10 groups of four digits … */
        for (i = 0; i + 3 <= WG_KEY_LEN; i += 3) {
                uint32_t v = (uint32_t) d[i] << 16 | (uint32_t) d[i + 1] << 8 | d[i + 2];

                ret[o++] = b64_encode_6((v >> 18) & 63);
                ret[o++] = b64_encode_6((v >> 12) & 63);
                ret[o++] = b64_encode_6((v >> 6) & 63);
                ret[o++] = b64_encode_6(v & 63);
        }
        /* … and the last two bytes three digits and one '='. */
        {
                uint32_t v = (uint32_t) d[i] << 16 | (uint32_t) d[i + 1] << 8;

                ret[o++] = b64_encode_6((v >> 18) & 63);
                ret[o++] = b64_encode_6((v >> 12) & 63);
                ret[o++] = b64_encode_6((v >> 6) & 63);
                ret[o++] = '=';
        }
        ret[o] = 0;
        assert(o == WG_KEY_B64_LEN);
        return ret;
}

int wg_key_from_base64(const char *s, WgKey *ret) {
        WgKey k;
        int bad = 0;
        size_t i, o = 0;

        assert(ret);
        if (!s || strnlen(s, WG_KEY_B64_LEN + 1) != WG_KEY_B64_LEN || s[WG_KEY_B64_LEN - 1] != '=')
                return -EKEYREJECTED;

        for (i = 0; i + 4 < WG_KEY_B64_LEN; i += 4) {
                int a = b64_decode_6((unsigned char) s[i]), b = b64_decode_6((unsigned char) s[i + 1]),
                    c = b64_decode_6((unsigned char) s[i + 2]), e = b64_decode_6((unsigned char) s[i + 3]);
                uint32_t v;

                bad |= (a | b | c | e) & 0x100;   /* -1 has every bit set; a digit is < 64 */
                v = (uint32_t) (a & 63) << 18 | (uint32_t) (b & 63) << 12 | (uint32_t) (c & 63) << 6 | (uint32_t) (e & 63);
                k.data[o++] = (uint8_t) (v >> 16);
                k.data[o++] = (uint8_t) (v >> 8);
                k.data[o++] = (uint8_t) v;
        }
        {
                int a = b64_decode_6((unsigned char) s[i]), b = b64_decode_6((unsigned char) s[i + 1]),
                    c = b64_decode_6((unsigned char) s[i + 2]);
                uint32_t v;

                bad |= (a | b | c) & 0x100;
                bad |= c & 3;                   /* non-canonical: the two spare bits must be 0 */
                v = (uint32_t) (a & 63) << 18 | (uint32_t) (b & 63) << 12 | (uint32_t) (c & 63) << 6;
                k.data[o++] = (uint8_t) (v >> 16);
                k.data[o++] = (uint8_t) (v >> 8);
        }
        assert(o == WG_KEY_LEN);

        if (bad) {
                wg_key_wipe(&k);
                return -EKEYREJECTED;
        }
        *ret = k;
        wg_key_wipe(&k);
        return 0;
}

bool wg_key_b64_is_valid(const char *s) {
        WgKey k;
        int r;

        r = wg_key_from_base64(s, &k);
        wg_key_wipe(&k);
        return r >= 0;
}

char *wg_key_to_hex(const WgKey *key, char ret[static WG_KEY_HEX_SIZE]) {
        assert(key);
        for (size_t i = 0; i < WG_KEY_LEN; i++) {
                ret[2 * i] = hex_encode_4(key->data[i] >> 4);
                ret[2 * i + 1] = hex_encode_4(key->data[i] & 15);
        }
        ret[WG_KEY_HEX_LEN] = 0;
        return ret;
}

int wg_key_from_hex(const char *s, size_t len, WgKey *ret) {
        WgKey k;
        int bad = 0;

        assert(ret);
        if (!s || len != WG_KEY_HEX_LEN)
                return -EKEYREJECTED;
        for (size_t i = 0; i < WG_KEY_LEN; i++) {
                int hi = hex_decode_4((unsigned char) s[2 * i]), lo = hex_decode_4((unsigned char) s[2 * i + 1]);

                bad |= (hi | lo) & 0x100;
                k.data[i] = (uint8_t) ((hi & 15) << 4 | (lo & 15));
        }
        if (bad) {
                wg_key_wipe(&k);
                return -EKEYREJECTED;
        }
        *ret = k;
        wg_key_wipe(&k);
        return 0;
}

bool wg_key_is_zero(const WgKey *key) {
        static const WgKey zero = {};

        assert(key);
        return CRYPTO_memcmp(key->data, zero.data, WG_KEY_LEN) == 0;
}

bool wg_key_equal(const WgKey *a, const WgKey *b) {
        assert(a && b);
        return CRYPTO_memcmp(a->data, b->data, WG_KEY_LEN) == 0;
}

void wg_key_wipe(WgKey *key) {
        if (key)
                explicit_bzero(key->data, WG_KEY_LEN);
}

static void wg_key_clamp(WgKey *k) {
        k->data[0] &= 248;
        k->data[31] = (uint8_t) ((k->data[31] & 127) | 64);
}

CLUB_DEFINE_CLEANUP_VOID(EVP_PKEY *, EVP_PKEY_free, evp_pkey_freep);
CLUB_DEFINE_CLEANUP_VOID(EVP_PKEY_CTX *, EVP_PKEY_CTX_free, evp_pkey_ctx_freep);

int wg_key_generate(WgKey *ret) {
        _cleanup_(evp_pkey_ctx_freep) EVP_PKEY_CTX *ctx = NULL;
        _cleanup_(evp_pkey_freep) EVP_PKEY *pkey = NULL;
        WgKey k;
        size_t len = WG_KEY_LEN;

        assert(ret);
        ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
        if (!ctx)
                return -ENOMEM;
        if (EVP_PKEY_keygen_init(ctx) <= 0 || EVP_PKEY_keygen(ctx, &pkey) <= 0)
                return -EIO;
        if (EVP_PKEY_get_raw_private_key(pkey, k.data, &len) <= 0 || len != WG_KEY_LEN) {
                wg_key_wipe(&k);
                return -EIO;
        }
        /* libcrypto already clamps X25519 scalars; doing it again keeps the stored
         * form identical to `wg genkey`'s whatever the provider does. */
        wg_key_clamp(&k);
        *ret = k;
        wg_key_wipe(&k);
        return 0;
}

int wg_key_generate_preshared(WgKey *ret) {
        WgKey k;

        assert(ret);
        if (RAND_priv_bytes(k.data, WG_KEY_LEN) != 1) {
                wg_key_wipe(&k);
                return -EIO;
        }
        *ret = k;
        wg_key_wipe(&k);
        return 0;
}

int wg_key_public_from_private(const WgKey *private_key, WgKey *ret) {
        _cleanup_(evp_pkey_freep) EVP_PKEY *pkey = NULL;
        WgKey pub;
        size_t len = WG_KEY_LEN;

        assert(private_key && ret);
        if (wg_key_is_zero(private_key))
                return -EKEYREJECTED;
        /* libcrypto copies the scalar into its own secure memory and wipes it on free. */
        pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, private_key->data, WG_KEY_LEN);
        if (!pkey)
                return -EIO;
        if (EVP_PKEY_get_raw_public_key(pkey, pub.data, &len) <= 0 || len != WG_KEY_LEN)
                return -EIO;
        *ret = pub;
        return 0;
}
