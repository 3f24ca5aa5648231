/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by test-http-server.c and test-http-client.c: driving the loop, body patterns, buffers. */

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "macro.h"

/* Run the loop until cond holds or usec pass; evaluates to whether cond held. */
#define RUN_UNTIL_USEC(e, cond, usec) ({                                                        \
        uint64_t _deadline = now_usec(CLOCK_MONOTONIC) + (usec);                                \
        bool _ok;                                                                               \
        while (!(_ok = (cond)) && now_usec(CLOCK_MONOTONIC) < _deadline)                        \
                ck_assert_int_ge(sd_event_run((e), 20 * USEC_PER_MSEC), 0);                     \
        _ok;                                                                                    \
})
#define RUN_UNTIL(e, cond) RUN_UNTIL_USEC(e, cond, 5 * USEC_PER_SEC)

/* Run the loop for usec, to show that something does not happen. */
static inline void run_for(sd_event *e, uint64_t usec) {
        (void) RUN_UNTIL_USEC(e, false, usec);
}

/* Byte i of every test body: not periodic over the sizes used, so a shifted or repeated
 * range is caught. */
static inline uint8_t pattern(size_t i) {
        return (uint8_t) ('a' + (i * 7 + i / 253) % 26);
}

static inline void fill_pattern(char *p, size_t off, size_t len) {
        for (size_t i = 0; i < len; i++)
                p[i] = (char) pattern(off + i);
}

static inline bool check_pattern(const char *p, size_t off, size_t len) {
        for (size_t i = 0; i < len; i++)
                if ((uint8_t) p[i] != pattern(off + i))
                        return false;
        return true;
}

typedef struct Buf {
        char *data;
        size_t len, alloc;
} Buf;

static inline void buf_append(Buf *b, const void *p, size_t n) {
        if (b->len + n + 1 > b->alloc) {
                b->alloc = MAX(b->alloc * 2, b->len + n + 1);
                b->data = realloc(b->data, b->alloc);
                ck_assert_ptr_nonnull(b->data);
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
}

static inline void buf_done(Buf *b) {
        b->data = mfree(b->data);
        b->len = b->alloc = 0;
}
