/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's bearer secrets: user API keys ("ic-…") and enrollment keys ("ie-…").
 *
 *   ic-7hPq2vXw0J…   "ic-" or "ie-", then 43 characters of base62 (0-9, A-Z, a-z)
 *
 * 43 base62 characters carry 43 × log2(62) ≈ 256.03 random bits; each is drawn from
 * RAND_bytes() by rejection sampling, so all are uniform. The store keeps only the
 * SHA-256 of the whole key and its lookup prefix, the first KEY_PREFIX_CHARS characters
 * after the tag: a presented key is found by its prefix, then its hash is compared in
 * constant time. A plain hash (no salt, no slow KDF) is right for keys this long: nobody
 * can search a 256-bit space, salted or not.
 *
 * Keys are secrets: wipe them (erase_and_free()) and never log them. The prefix is not
 * a secret: it names a key in listings ("ic-7hPq2vXw…").
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define KEY_TAG_LEN 3U                          /* "ic-", "ie-" */
#define KEY_RANDOM_CHARS 43U
#define KEY_LEN (KEY_TAG_LEN + KEY_RANDOM_CHARS)
#define KEY_SIZE (KEY_LEN + 1U)
#define KEY_PREFIX_CHARS 8U
#define KEY_PREFIX_SIZE (KEY_PREFIX_CHARS + 1U)
#define KEY_HASH_LEN 32U                        /* SHA-256 */

typedef enum KeyKind {
        KEY_KIND_API,                           /* "ic-": a user's API key */
        KEY_KIND_ENROLLMENT,                    /* "ie-": an enrollment (pre-auth) key */
        _KEY_KIND_MAX,
        _KEY_KIND_INVALID = -EINVAL,
} KeyKind;

/**
 * key_kind_tag() - the text a key of this kind starts with
 * @kind: the kind
 *
 * Return: "ic-" or "ie-"; NULL for an invalid kind.
 */
const char *key_kind_tag(KeyKind kind);

/**
 * key_kind_of() - which kind of key a string looks like, by its tag alone
 * @s: the string, may be NULL
 *
 * Return: the kind, or _KEY_KIND_INVALID. Says nothing about the rest of @s.
 */
KeyKind key_kind_of(const char *s);

/**
 * key_generate() - make a new key
 * @kind: the kind
 * @ret:  the key, KEY_LEN characters, malloc'd; free with erase_and_free()
 *
 * Return: 0, -EINVAL, -ENOMEM, or -EIO if libcrypto has no randomness.
 */
int key_generate(KeyKind kind, char **ret);

/**
 * key_parse() - check a presented key and derive what the store looks it up by
 * @s:          the key as presented; may be NULL
 * @kind:       the kind it must be
 * @ret_prefix: its lookup prefix (KEY_PREFIX_CHARS characters and a NUL); may be NULL
 * @ret_hash:   the SHA-256 of all of @s; may be NULL
 *
 * The format check does not branch on the key's characters.
 *
 * Return: 0; -EKEYREJECTED if @s is not a well-formed key of @kind; -EIO if libcrypto
 * failed. Outputs are written only on success.
 */
int key_parse(const char *s, KeyKind kind, char *ret_prefix, uint8_t *ret_hash);

/**
 * key_hash_equal() - compare two key hashes in constant time
 * @a: KEY_HASH_LEN bytes
 * @b: KEY_HASH_LEN bytes
 *
 * Return: true if equal.
 */
bool key_hash_equal(const uint8_t *a, const uint8_t *b);

/**
 * key_prefix_is_valid() - whether @s is a lookup prefix as key_parse() makes them
 * @s: the string, may be NULL
 *
 * Return: true or false.
 */
bool key_prefix_is_valid(const char *s);

/**
 * random_bytes() - fill a buffer from the CSPRNG (RAND_bytes)
 * @p: the buffer
 * @n: its size, at most INT_MAX
 *
 * Return: 0, or -EIO if libcrypto has no randomness.
 */
int random_bytes(void *p, size_t n);
