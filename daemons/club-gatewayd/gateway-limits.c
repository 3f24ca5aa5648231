/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway-limits.h"

/* Refills add up in floating point: 0.9 + 0.1 is a hair short of 1. */
#define BUCKET_EPSILON 1e-6

typedef struct KeySlot {
        int64_t key_id;                 /* 0: unused */
        double requests;                /* tokens of the requests bucket; INFINITY while unlimited */
        double tokens;                  /* balance of the token bucket, may be negative */
        uint64_t refilled_usec;
        uint64_t seen_usec;
        unsigned streams;
} KeySlot;

struct KeyLimiter {
        size_t n_slots;
        KeySlot slots[];
};

KeyLimiter *key_limiter_new(unsigned slots) {
        KeyLimiter *l;

        assert(slots > 0);
        l = calloc(1, sizeof(KeyLimiter) + slots * sizeof(KeySlot));
        if (!l)
                return NULL;
        l->n_slots = slots;
        return l;
}

KeyLimiter *key_limiter_free(KeyLimiter *l) {
        return mfree(l);
}

static double per_usec(uint64_t per_minute) {
        return (double) per_minute / (60.0 * USEC_PER_SEC);
}

static double bucket_cap(uint64_t limit) {
        return limit == KEY_LIMIT_UNLIMITED ? INFINITY : (double) limit;
}

/* A bucket refilled for @dt µs; an unlimited one is infinite, which makes it full at once
 * when a limit is set later. */
static double bucket_refill(double v, uint64_t limit, uint64_t dt) {
        if (limit == KEY_LIMIT_UNLIMITED)
                return INFINITY;
        if (isinf(v))
                return (double) limit;
        return fmin((double) limit, v + (double) dt * per_usec(limit));
}

/* Which slot goes first when one is needed: unused ones, then those without streams. */
static int slot_rank(const KeySlot *s) {
        return s->key_id == 0 ? 0 : s->streams == 0 ? 1 : 2;
}

/* The slot of @key_id, refilled up to @now; found, or taken (full) from an unused slot or
 * the least recently seen one without streams in flight. */
static KeySlot *key_slot(KeyLimiter *l, int64_t key_id, const KeyLimits *limits, uint64_t now) {
        KeySlot *slot = NULL, *victim = NULL;
        uint64_t dt;

        for (size_t i = 0; i < l->n_slots; i++) {
                KeySlot *s = &l->slots[i];

                if (s->key_id == key_id) {
                        slot = s;
                        break;
                }
                if (!victim || slot_rank(s) < slot_rank(victim) ||
                    (slot_rank(s) == slot_rank(victim) && s->seen_usec < victim->seen_usec))
                        victim = s;
        }
        if (!slot) {
                slot = victim;
                *slot = (KeySlot) {
                        .key_id = key_id,
                        .requests = bucket_cap(limits->requests_per_minute),
                        .tokens = bucket_cap(limits->tokens_per_minute),
                        .refilled_usec = now,
                };
        }
        /* Refilled even for dt = 0: that applies a limit changed since (see bucket_refill()). */
        dt = now > slot->refilled_usec ? now - slot->refilled_usec : 0;
        slot->requests = bucket_refill(slot->requests, limits->requests_per_minute, dt);
        slot->tokens = bucket_refill(slot->tokens, limits->tokens_per_minute, dt);
        slot->refilled_usec = MAX(slot->refilled_usec, now);
        slot->seen_usec = now;
        return slot;
}

/* Seconds until a bucket at @v holds @need, at least 1. */
static unsigned bucket_wait_sec(double v, double need, uint64_t limit) {
        double sec = (need - v) / per_usec(limit) / USEC_PER_SEC;

        return (unsigned) MAX(ceil(sec - BUCKET_EPSILON), 1.0);
}

static uint64_t bucket_reset_usec(double v, uint64_t limit) {
        if (limit == KEY_LIMIT_UNLIMITED || limit == 0 || v >= (double) limit)
                return 0;
        return (uint64_t) ceil(((double) limit - v) / per_usec(limit));
}

static void key_slot_status(const KeySlot *s, const KeyLimits *limits, KeyLimitStatus *st) {
        st->requests_limit = limits->requests_per_minute;
        st->tokens_limit = limits->tokens_per_minute;
        st->requests_remaining = isinf(s->requests) ? UINT64_MAX : (uint64_t) floor(fmax(s->requests + BUCKET_EPSILON, 0.0));
        st->tokens_remaining = isinf(s->tokens) ? UINT64_MAX : (uint64_t) floor(fmax(s->tokens + BUCKET_EPSILON, 0.0));
        st->requests_reset_usec = bucket_reset_usec(s->requests, limits->requests_per_minute);
        st->tokens_reset_usec = bucket_reset_usec(s->tokens, limits->tokens_per_minute);
}

bool key_limiter_admit(KeyLimiter *l, int64_t key_id, const KeyLimits *limits, bool stream, uint64_t now,
                       KeyLimitStatus *ret) {
        KeySlot *s = key_slot(l, key_id, limits, now);
        KeyLimitStatus st = {};

        if (stream && limits->concurrent_streams != KEY_LIMIT_UNLIMITED &&
            s->streams >= limits->concurrent_streams) {
                st.verdict = KEY_LIMIT_STREAMS;
                st.never = limits->concurrent_streams == 0;
                st.retry_after_sec = 1;         /* a stream of this key may end any moment */
        } else if (limits->tokens_per_minute != KEY_LIMIT_UNLIMITED && s->tokens <= BUCKET_EPSILON) {
                st.verdict = KEY_LIMIT_TOKENS;
                st.never = limits->tokens_per_minute == 0;
                st.retry_after_sec = st.never ? 60 : bucket_wait_sec(s->tokens, 1.0, limits->tokens_per_minute);
        } else if (limits->requests_per_minute != KEY_LIMIT_UNLIMITED && s->requests + BUCKET_EPSILON < 1.0) {
                st.verdict = KEY_LIMIT_REQUESTS;
                st.never = limits->requests_per_minute == 0;
                st.retry_after_sec = st.never ? 60 : bucket_wait_sec(s->requests, 1.0, limits->requests_per_minute);
        } else {
                st.verdict = KEY_LIMIT_OK;
                if (!isinf(s->requests))
                        s->requests -= 1.0;
                if (stream)
                        s->streams++;
        }
        key_slot_status(s, limits, &st);
        *ret = st;
        return st.verdict == KEY_LIMIT_OK;
}

void key_limiter_finish(KeyLimiter *l, int64_t key_id, const KeyLimits *limits, bool stream, uint64_t tokens,
                        uint64_t now) {
        KeySlot *s = key_slot(l, key_id, limits, now);

        if (stream && s->streams > 0)
                s->streams--;
        if (!isinf(s->tokens))
                s->tokens -= (double) tokens;
}

unsigned key_limiter_streams(KeyLimiter *l, int64_t key_id) {
        for (size_t i = 0; i < l->n_slots; i++)
                if (l->slots[i].key_id == key_id)
                        return l->slots[i].streams;
        return 0;
}

void key_limit_format_reset(uint64_t usec, char *buf, size_t size) {
        uint64_t sec = usec / USEC_PER_SEC;

        if (usec == 0)
                snprintf(buf, size, "0s");
        else if (usec < USEC_PER_SEC)
                snprintf(buf, size, "%ums", (unsigned) ((usec + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
        else if (sec < 60)
                snprintf(buf, size, "%us", (unsigned) ((usec + USEC_PER_SEC - 1) / USEC_PER_SEC));
        else
                snprintf(buf, size, "%um%us", (unsigned) (sec / 60), (unsigned) (sec % 60));
}
