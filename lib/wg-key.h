/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * WireGuard keys: X25519 key pairs through OpenSSL's libcrypto, and their text
 * forms — base64 (what `wg genkey`/`wg pubkey` print, what people paste and what
 * goes on the wire to the gateway) and lowercase hex (what the UAPI socket
 * speaks). Encoding and decoding run in constant time, because private and
 * preshared keys go through them.
 *
 * A WgKey holding a private or preshared key is a secret: wipe it with
 * wg_key_wipe() (or let _cleanup_(wg_key_wipe) do it) when done, and never log
 * it. Nothing in this module logs at all.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef WG_KEY_LEN
#define WG_KEY_LEN 32                   /* same value and spelling as <linux/wireguard.h> */
#endif
#define WG_KEY_B64_LEN 44               /* characters, without the NUL */
#define WG_KEY_B64_SIZE (WG_KEY_B64_LEN + 1)
#define WG_KEY_HEX_LEN 64
#define WG_KEY_HEX_SIZE (WG_KEY_HEX_LEN + 1)

typedef struct WgKey {
        uint8_t data[WG_KEY_LEN];
} WgKey;

/**
 * wg_key_generate() - make a new X25519 private key
 * @ret: the clamped private key
 *
 * Return: 0, or -EIO if libcrypto could not generate one (no entropy, broken provider).
 */
int wg_key_generate(WgKey *ret);

/**
 * wg_key_generate_preshared() - make a new random preshared key (32 random bytes)
 * @ret: the key
 *
 * Return: 0 or -EIO.
 */
int wg_key_generate_preshared(WgKey *ret);

/**
 * wg_key_public_from_private() - derive the X25519 public key
 * @private_key: a private key (clamping is applied by X25519 itself)
 * @ret: the public key
 *
 * Return: 0, -EKEYREJECTED for the all-zero key (which WireGuard treats as "no key"),
 * or -EIO if libcrypto failed.
 */
int wg_key_public_from_private(const WgKey *private_key, WgKey *ret);

/**
 * wg_key_to_base64() - encode a key as 44 characters of base64 (constant time)
 * @key: the key
 * @ret: buffer of WG_KEY_B64_SIZE bytes, NUL-terminated on return
 *
 * Return: @ret.
 */
char *wg_key_to_base64(const WgKey *key, char ret[static WG_KEY_B64_SIZE]);

/**
 * wg_key_from_base64() - strictly decode a base64 key (constant time)
 * @s: exactly 44 characters, the last one '=', canonical (the unused low bits of
 *     the 43rd character zero); no whitespace, no newline
 * @ret: the key; only written on success
 *
 * Return: 0, or -EKEYREJECTED if @s is not a valid key; wg_strerror_hint() explains it.
 */
int wg_key_from_base64(const char *s, WgKey *ret);

/**
 * wg_key_b64_is_valid() - whether @s is a key wg_key_from_base64() accepts
 * @s: the string, may be NULL
 *
 * Return: true or false.
 */
bool wg_key_b64_is_valid(const char *s);

/**
 * wg_key_to_hex() - encode a key as 64 lowercase hex digits (constant time)
 * @key: the key
 * @ret: buffer of WG_KEY_HEX_SIZE bytes, NUL-terminated on return
 *
 * Return: @ret.
 */
char *wg_key_to_hex(const WgKey *key, char ret[static WG_KEY_HEX_SIZE]);

/**
 * wg_key_from_hex() - decode 64 hex digits (either case) in constant time
 * @s: the digits
 * @len: the number of characters at @s (the input need not be NUL-terminated)
 * @ret: the key; only written on success
 *
 * Return: 0 or -EKEYREJECTED.
 */
int wg_key_from_hex(const char *s, size_t len, WgKey *ret);

/**
 * wg_key_is_zero() - whether every byte is zero (constant time); zero means "no key"
 * @key: the key
 *
 * Return: true or false.
 */
bool wg_key_is_zero(const WgKey *key);

/**
 * wg_key_equal() - compare two keys in constant time
 * @a: a key
 * @b: another key
 *
 * Return: true if equal.
 */
bool wg_key_equal(const WgKey *a, const WgKey *b);

/**
 * wg_key_wipe() - overwrite a key with zeros in a way the compiler cannot elide
 * @key: the key, may be NULL
 */
void wg_key_wipe(WgKey *key);
