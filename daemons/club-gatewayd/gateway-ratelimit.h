/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The registration rate limits (docs/protocol.md): a token bucket per source address or
 * per name (an API key's id, an enrollment key's prefix; never a secret), in a fixed table
 * of slots, so memory stays bounded however many addresses or keys come.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "macro.h"

/* Buckets tracked per limiter; the least recently seen one is forgotten first. */
#define RATE_LIMITER_SLOTS 1024U
/* A limiter's bucket key: an address (family and bytes) or a name such as "ic:42". */
#define RATE_LIMITER_KEY_MAX 24U

typedef struct RateLimiter RateLimiter;

/**
 * rate_limiter_new() - a table of token buckets
 * @burst:      tokens a new (or long idle) bucket holds, > 0
 * @per_minute: tokens added per minute, > 0
 * @slots:      buckets kept, > 0; when all are in use, the least recently seen is reused
 *
 * The limiter is pure: time comes in as @now (CLOCK_MONOTONIC µs) on every call.
 *
 * Return: the limiter, or NULL when out of memory.
 */
RateLimiter *rate_limiter_new(unsigned burst, unsigned per_minute, unsigned slots);
RateLimiter *rate_limiter_free(RateLimiter *l);
CLUB_DEFINE_CLEANUP(RateLimiter *, rate_limiter_free);

/**
 * rate_limiter_take() - take one token from a source address's bucket
 * @l:                   the limiter
 * @peer:                the address (IPv4-mapped IPv6 counts as IPv4); NULL: one shared bucket
 * @now:                 CLOCK_MONOTONIC, µs
 * @ret_retry_after_sec: on false, in how many seconds (at least 1) a token is back
 *
 * Return: true to go on, false when the bucket is empty.
 */
bool rate_limiter_take(RateLimiter *l, const struct sockaddr *peer, uint64_t now, unsigned *ret_retry_after_sec);

/**
 * rate_limiter_take_key() - take one token from a named bucket
 * @l:                   the limiter
 * @key:                 the name, e.g. "ic:42" for API key 42; never a secret. At most
 *                       RATE_LIMITER_KEY_MAX - 1 bytes count.
 * @now:                 CLOCK_MONOTONIC, µs
 * @ret_retry_after_sec: on false, in how many seconds (at least 1) a token is back
 *
 * Return: true to go on, false when the bucket is empty.
 */
bool rate_limiter_take_key(RateLimiter *l, const char *key, uint64_t now, unsigned *ret_retry_after_sec);

/**
 * rate_limiter_check_key() - whether a named bucket has a token, without taking it
 * @l:                   the limiter
 * @key:                 as for rate_limiter_take_key()
 * @now:                 CLOCK_MONOTONIC, µs
 * @ret_retry_after_sec: on false, in how many seconds (at least 1) a token is back
 *
 * For keys whose authentication happens later (enrollment keys, checked by the store):
 * check first, take once the key proved good.
 *
 * Return: true if a token is there.
 */
bool rate_limiter_check_key(RateLimiter *l, const char *key, uint64_t now, unsigned *ret_retry_after_sec);
