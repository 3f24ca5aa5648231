/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Per-API-key limits of the OpenAI API (docs/club-gatewayd.md, "Usage and limits"):
 * requests per minute and tokens per minute as token buckets (full at the start, refilled
 * continuously, holding at most one minute's worth), and concurrent streams as a count.
 *
 * Requests are taken at admission. Tokens are not known until the answer ends: admission
 * only checks that the key's token bucket is not empty, and the request's tokens are
 * charged when it finished (the bucket may then go below zero, which holds the key's next
 * requests back until it refilled past zero again).
 *
 * The state lives in a fixed table of slots (a key's buckets; the least recently seen key
 * without a stream in flight is forgotten first), so memory stays bounded. Pure: time comes
 * in as @now (CLOCK_MONOTONIC µs) on every call. Not persistent: a restart refills every
 * bucket.
 */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

#define KEY_LIMITER_SLOTS 4096U
/* A limit that does not apply. A limit of 0 refuses every request. */
#define KEY_LIMIT_UNLIMITED UINT64_MAX

typedef struct KeyLimits {
        uint64_t requests_per_minute;   /* KEY_LIMIT_UNLIMITED, or 0… */
        uint64_t tokens_per_minute;
        uint64_t concurrent_streams;
} KeyLimits;

typedef enum KeyLimitVerdict {
        KEY_LIMIT_OK,
        KEY_LIMIT_REQUESTS,             /* requests per minute */
        KEY_LIMIT_TOKENS,               /* tokens per minute */
        KEY_LIMIT_STREAMS,              /* concurrent streams */
        _KEY_LIMIT_VERDICT_MAX,
        _KEY_LIMIT_VERDICT_INVALID = -EINVAL,
} KeyLimitVerdict;

/* What the x-ratelimit-* headers say, after a check. */
typedef struct KeyLimitStatus {
        KeyLimitVerdict verdict;
        bool never;                     /* refused by a limit of 0: retrying cannot help */
        unsigned retry_after_sec;       /* when refused: at least 1 */
        uint64_t requests_limit;        /* KEY_LIMIT_UNLIMITED: no headers for requests */
        uint64_t requests_remaining;
        uint64_t requests_reset_usec;   /* until the bucket is full again */
        uint64_t tokens_limit;
        uint64_t tokens_remaining;
        uint64_t tokens_reset_usec;
} KeyLimitStatus;

typedef struct KeyLimiter KeyLimiter;

/**
 * key_limiter_new() - a table of per-key limit state
 * @slots: keys tracked, > 0 (KEY_LIMITER_SLOTS)
 *
 * Return: the limiter, or NULL when out of memory.
 */
KeyLimiter *key_limiter_new(unsigned slots);
KeyLimiter *key_limiter_free(KeyLimiter *l);
CLUB_DEFINE_CLEANUP(KeyLimiter *, key_limiter_free);

/**
 * key_limiter_admit() - check a request of a key against its limits, and count it if admitted
 * @l:      the limiter
 * @key_id: the API key
 * @limits: its limits (the defaults or its own)
 * @stream: the request streams: it counts against concurrent_streams until
 *          key_limiter_finish() with stream true
 * @now:    CLOCK_MONOTONIC µs
 * @ret:    the verdict and what the headers say
 *
 * The checks run in this order: concurrent streams, tokens, requests; a refused request
 * takes nothing.
 *
 * Return: true if admitted.
 */
bool key_limiter_admit(KeyLimiter *l, int64_t key_id, const KeyLimits *limits, bool stream, uint64_t now,
                       KeyLimitStatus *ret);

/**
 * key_limiter_finish() - an admitted request ended
 * @l:      the limiter
 * @key_id: the API key
 * @limits: its limits (as at admission, or changed since)
 * @stream: it counted as a stream
 * @tokens: the tokens it used, charged to the key's token bucket
 * @now:    CLOCK_MONOTONIC µs
 */
void key_limiter_finish(KeyLimiter *l, int64_t key_id, const KeyLimits *limits, bool stream, uint64_t tokens,
                        uint64_t now);

/* The streams of a key in flight now (for tests and status). */
unsigned key_limiter_streams(KeyLimiter *l, int64_t key_id);

/* "1s", "6m0s", "250ms": the form OpenAI uses in x-ratelimit-reset-*. */
void key_limit_format_reset(uint64_t usec, char *buf, size_t size);
