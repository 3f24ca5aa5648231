/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "gateway-ratelimit.h"

typedef struct RateSlot {
        bool used;
        uint8_t key_len;
        uint8_t key[RATE_LIMITER_KEY_MAX];
        double tokens;
        uint64_t last_usec;
} RateSlot;

struct RateLimiter {
        unsigned burst;
        unsigned per_minute;
        size_t n_slots;
        RateSlot slots[];
};

RateLimiter *rate_limiter_new(unsigned burst, unsigned per_minute, unsigned slots) {
        RateLimiter *l;

        assert(burst > 0 && per_minute > 0 && slots > 0);
        l = calloc(1, sizeof(RateLimiter) + slots * sizeof(RateSlot));
        if (!l)
                return NULL;
        l->burst = burst;
        l->per_minute = per_minute;
        l->n_slots = slots;
        return l;
}

RateLimiter *rate_limiter_free(RateLimiter *l) {
        return mfree(l);
}

/* The bucket for @key, refilled up to @now: found, else made full in an unused slot or in
 * the least recently seen one. */
static RateSlot *rate_slot(RateLimiter *l, const uint8_t *key, size_t len, uint64_t now) {
        RateSlot *slot = NULL, *oldest = NULL;
        double rate = (double) l->per_minute / (60.0 * USEC_PER_SEC); /* tokens per µs */

        assert(len <= RATE_LIMITER_KEY_MAX);
        for (size_t i = 0; i < l->n_slots; i++) {
                RateSlot *s = &l->slots[i];

                if (s->used && s->key_len == len && memcmp(s->key, key, len) == 0) {
                        slot = s;
                        break;
                }
                if (!oldest || (oldest->used && (!s->used || s->last_usec < oldest->last_usec)))
                        oldest = s;
        }
        if (!slot) {
                slot = oldest;
                *slot = (RateSlot) { .used = true, .key_len = (uint8_t) len, .tokens = l->burst, .last_usec = now };
                memcpy(slot->key, key, len);
        }
        if (now > slot->last_usec) {
                slot->tokens = fmin((double) l->burst, slot->tokens + (double) (now - slot->last_usec) * rate);
                slot->last_usec = now;
        }
        return slot;
}

/* Whether @slot has a token; if not, in how many seconds (at least 1) it has one again. */
static bool rate_slot_ready(const RateLimiter *l, const RateSlot *slot, unsigned *ret_retry_after_sec) {
        double rate = (double) l->per_minute / (60.0 * USEC_PER_SEC);

        if (slot->tokens >= 1.0)
                return true;
        *ret_retry_after_sec = MAX((unsigned) ceil((1.0 - slot->tokens) / rate / USEC_PER_SEC), 1U);
        return false;
}

static bool rate_limiter_take_bytes(RateLimiter *l, const uint8_t *key, size_t len, uint64_t now,
                                    unsigned *ret_retry_after_sec) {
        RateSlot *slot = rate_slot(l, key, len, now);

        if (!rate_slot_ready(l, slot, ret_retry_after_sec))
                return false;
        slot->tokens -= 1.0;
        return true;
}

/* The bucket key of a source address: its family, then its bytes; IPv4-mapped IPv6 counts
 * as IPv4. */
static size_t peer_key(const struct sockaddr *sa, uint8_t ret[static 17]) {
        ret[0] = AF_UNSPEC;
        if (sa && sa->sa_family == AF_INET) {
                ret[0] = AF_INET;
                memcpy(ret + 1, &((const struct sockaddr_in *) sa)->sin_addr, 4);
                return 5;
        }
        if (sa && sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

                if (IN6_IS_ADDR_V4MAPPED(a)) {
                        ret[0] = AF_INET;
                        memcpy(ret + 1, a->s6_addr + 12, 4);
                        return 5;
                }
                ret[0] = AF_INET6;
                memcpy(ret + 1, a->s6_addr, 16);
                return 17;
        }
        return 1;
}

bool rate_limiter_take(RateLimiter *l, const struct sockaddr *peer, uint64_t now, unsigned *ret_retry_after_sec) {
        uint8_t key[17];
        size_t len = peer_key(peer, key);

        return rate_limiter_take_bytes(l, key, len, now, ret_retry_after_sec);
}

/* The bucket key of a name: 0xff (address keys start with their family, always below it),
 * then the name, cut at RATE_LIMITER_KEY_MAX - 1 bytes. */
static size_t name_key(const char *name, uint8_t ret[static RATE_LIMITER_KEY_MAX]) {
        size_t len = strnlen(name, RATE_LIMITER_KEY_MAX - 1);

        ret[0] = 0xff;
        memcpy(ret + 1, name, len);
        return len + 1;
}

bool rate_limiter_take_key(RateLimiter *l, const char *key, uint64_t now, unsigned *ret_retry_after_sec) {
        uint8_t k[RATE_LIMITER_KEY_MAX];
        size_t len = name_key(key, k);

        return rate_limiter_take_bytes(l, k, len, now, ret_retry_after_sec);
}

bool rate_limiter_check_key(RateLimiter *l, const char *key, uint64_t now, unsigned *ret_retry_after_sec) {
        uint8_t k[RATE_LIMITER_KEY_MAX];
        size_t len = name_key(key, k);

        return rate_slot_ready(l, rate_slot(l, k, len, now), ret_retry_after_sec);
}
