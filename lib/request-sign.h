/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Request signatures between the gateway and an agent: HMAC-SHA256 with the per-provider
 * secret the gateway hands out at registration, over the method, the request target, a
 * time stamp and a random nonce. The verifier checks the time against a window and
 * remembers nonces in a bounded replay cache. docs/request-signing.md has the format.
 *
 *   X-Club-Signature: t=1700000000,n=<32 hex digits>,v1=<64 hex digits>
 *
 * The string that is signed (no trailing newline):
 *
 *   "club-request-v1\n" METHOD "\n" TARGET "\n" TIME "\n" NONCE
 *
 * TIME is the decimal UNIX time in seconds as in the header, NONCE its 32 lowercase hex
 * digits, TARGET the request target as sent on the request line (path and query).
 *
 * The body is not covered: the hop runs inside WireGuard, which already authenticates and
 * protects every byte between the gateway and the agent; the signature proves that a
 * request was made by the gateway for this provider, recently and once.
 *
 * Secrets are never logged; nothing in this module logs at all.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define REQUEST_SIGN_HEADER "X-Club-Signature"
#define REQUEST_SIGN_SECRET_LEN 32U             /* bytes */
#define REQUEST_SIGN_NONCE_LEN 16U              /* bytes; 32 hex digits on the wire */
#define REQUEST_SIGN_MAC_LEN 32U                /* HMAC-SHA256; 64 hex digits on the wire */
#define REQUEST_SIGN_METHOD_MAX 16U             /* characters */
#define REQUEST_SIGN_TARGET_MAX 8192U           /* characters */
/* "t=" 20 digits ",n=" 32 ",v1=" 64, and the NUL */
#define REQUEST_SIGN_HEADER_VALUE_MAX (2U + 20U + 3U + 32U + 4U + 64U)

#define REQUEST_SIGN_WINDOW_SEC_DEFAULT 60U
#define REPLAY_CACHE_ENTRIES_DEFAULT 65536U
#define REPLAY_CACHE_ENTRIES_MAX (1U << 24)

/**
 * request_sign() - make the value of an X-Club-Signature header
 * @secret:     the provider's secret, REQUEST_SIGN_SECRET_LEN bytes
 * @method:     the HTTP method: 1–16 uppercase letters
 * @target:     the request target: starts with '/', 1–8192 visible ASCII characters
 *              (0x21–0x7e; no spaces, no control characters)
 * @time_sec:   the UNIX time in seconds (CLOCK_REALTIME)
 * @nonce:      REQUEST_SIGN_NONCE_LEN bytes, or NULL for fresh random ones (always NULL
 *              outside of tests: a nonce must never be used twice)
 * @ret_header: the header value, malloc'd
 *
 * Return: 0, -EINVAL if @method or @target is not acceptable, -EIO if libcrypto failed,
 * -ENOMEM.
 */
int request_sign(const uint8_t *secret, const char *method, const char *target, uint64_t time_sec,
                 const uint8_t *nonce, char **ret_header);

/*
 * The nonces seen within the time window, so that a captured request cannot be played
 * again. Bounded: it holds at most max_entries nonces (24 bytes each, in a hash table of
 * twice that many slots). An entry is kept until its signature's time leaves the window,
 * because until then the window check alone would accept it again. When the cache is full
 * of entries that are still live, new requests are refused (-ENOBUFS) instead of forgetting
 * a nonce that could then be replayed: the cache fails closed. Expired entries are reused
 * in place, and the table is swept of them at most once a second when it fills up.
 *
 * The table is indexed with SipHash under a random key, so that nonces chosen by a signer
 * cannot be made to collide. Not thread-safe: one cache per event loop.
 */
typedef struct ReplayCache ReplayCache;

/**
 * replay_cache_new() - make an empty replay cache
 * @max_entries: how many nonces it holds at most: 1 … REPLAY_CACHE_ENTRIES_MAX, or 0 for
 *               REPLAY_CACHE_ENTRIES_DEFAULT
 * @window_sec:  the accepted clock difference, both ways: 1 … 86400, or 0 for
 *               REQUEST_SIGN_WINDOW_SEC_DEFAULT
 * @ret:         the cache
 *
 * Return: 0, -EINVAL, -ENOMEM, or -EIO if libcrypto failed.
 */
int replay_cache_new(size_t max_entries, uint64_t window_sec, ReplayCache **ret);

/**
 * replay_cache_free() - free a replay cache
 * @c: the cache, may be NULL
 *
 * Return: NULL.
 */
ReplayCache *replay_cache_free(ReplayCache *c);
CLUB_DEFINE_CLEANUP(ReplayCache *, replay_cache_free);

/**
 * replay_cache_window() - the cache's time window
 * @c: the cache
 *
 * Return: the window in seconds.
 */
uint64_t replay_cache_window(const ReplayCache *c);

/**
 * replay_cache_size() - how many slots are taken, including expired ones not yet reused
 * @c: the cache
 *
 * Return: the count; never more than the cache's max_entries.
 */
size_t replay_cache_size(const ReplayCache *c);

/**
 * replay_cache_add() - remember a nonce unless it is already known
 * @c:        the cache
 * @nonce:    REQUEST_SIGN_NONCE_LEN bytes
 * @time_sec: the time stamp of the signature it came with
 * @now_sec:  the current time
 *
 * The entry lives while @now_sec ≤ @time_sec + window.
 *
 * Return: 0 if added, -EALREADY if the nonce is known and live, -ENOBUFS if the cache is
 * full of live entries, -ENOMEM if a sweep could not allocate its new table, -EIO if
 * libcrypto failed.
 */
int replay_cache_add(ReplayCache *c, const uint8_t *nonce, uint64_t time_sec, uint64_t now_sec);

/**
 * request_verify() - check an X-Club-Signature header
 * @cache:   the replay cache; its window is the accepted clock difference
 * @secret:  the provider's secret, REQUEST_SIGN_SECRET_LEN bytes
 * @method:  the request's method
 * @target:  the request target as received (path and query)
 * @header:  the header's value, or NULL if the request had none
 * @now_sec: the current UNIX time in seconds
 *
 * In this order: the header is parsed strictly, its time is checked against the window,
 * the MAC is compared in constant time, and only then is the nonce added to the cache, so
 * that only the holder of the secret can fill it.
 *
 * Return: 0 if the request is authentic, fresh and new; -EBADMSG if @header is missing or
 * malformed or @method/@target could not have been signed; -ESTALE if the time is outside
 * the window; -EKEYREJECTED if the MAC does not match; -EALREADY if the nonce was seen
 * within the window (a replay); -ENOBUFS if the replay cache is full; -ENOMEM, -EIO.
 */
int request_verify(ReplayCache *cache, const uint8_t *secret, const char *method, const char *target,
                   const char *header, uint64_t now_sec);
