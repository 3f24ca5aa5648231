/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <string.h>

#include "gateway-limits.h"

#define T0 (1000 * USEC_PER_SEC)
#define U KEY_LIMIT_UNLIMITED

/* Requests per minute: a full bucket of rpm, then 429 with the time until the next token;
 * the headers count down and say when the bucket is full again. */
START_TEST(test_requests)
{
        _cleanup_(key_limiter_freep) KeyLimiter *l = key_limiter_new(16);
        KeyLimits lim = { .requests_per_minute = 6, .tokens_per_minute = U, .concurrent_streams = U };
        KeyLimitStatus st;

        ck_assert_ptr_nonnull(l);
        for (unsigned i = 0; i < 6; i++) {
                ck_assert(key_limiter_admit(l, 1, &lim, false, T0, &st));
                ck_assert_uint_eq(st.requests_remaining, 5 - i);
                ck_assert_uint_eq(st.requests_limit, 6);
                ck_assert_uint_eq(st.tokens_limit, U);
        }
        ck_assert_uint_eq(st.requests_reset_usec, 60 * USEC_PER_SEC);
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0, &st));
        ck_assert_int_eq(st.verdict, KEY_LIMIT_REQUESTS);
        ck_assert(!st.never);
        ck_assert_uint_eq(st.retry_after_sec, 10);      /* 6 a minute: one every 10 s */
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0 + 9 * USEC_PER_SEC, &st));
        ck_assert_uint_eq(st.retry_after_sec, 1);
        ck_assert(key_limiter_admit(l, 1, &lim, false, T0 + 10 * USEC_PER_SEC, &st));
        /* Another key has its own bucket. */
        ck_assert(key_limiter_admit(l, 2, &lim, false, T0, &st));
        /* A long idle key is full again, never fuller. */
        for (unsigned i = 0; i < 6; i++)
                ck_assert(key_limiter_admit(l, 1, &lim, false, T0 + 3600 * USEC_PER_SEC, &st));
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0 + 3600 * USEC_PER_SEC, &st));
}
END_TEST

/* Tokens per minute: admission needs a positive balance; finished requests are charged
 * and may take it below zero, which holds the key back until it refilled past zero. */
START_TEST(test_tokens)
{
        _cleanup_(key_limiter_freep) KeyLimiter *l = key_limiter_new(16);
        KeyLimits lim = { .requests_per_minute = U, .tokens_per_minute = 600, .concurrent_streams = U };
        KeyLimitStatus st;

        ck_assert(key_limiter_admit(l, 1, &lim, false, T0, &st));
        ck_assert_uint_eq(st.tokens_remaining, 600);
        ck_assert_uint_eq(st.requests_limit, U);
        key_limiter_finish(l, 1, &lim, false, 500, T0);
        ck_assert(key_limiter_admit(l, 1, &lim, false, T0, &st));
        ck_assert_uint_eq(st.tokens_remaining, 100);
        ck_assert_uint_eq(st.tokens_reset_usec, 50 * USEC_PER_SEC);     /* 500 tokens at 10/s */
        key_limiter_finish(l, 1, &lim, false, 700, T0);                 /* balance -600 */
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0, &st));
        ck_assert_int_eq(st.verdict, KEY_LIMIT_TOKENS);
        ck_assert_uint_eq(st.tokens_remaining, 0);
        ck_assert_uint_eq(st.retry_after_sec, 61);                      /* to reach +1 at 10/s */
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0 + 60 * USEC_PER_SEC, &st));
        ck_assert(key_limiter_admit(l, 1, &lim, false, T0 + 61 * USEC_PER_SEC, &st));
}
END_TEST

/* Concurrent streams count until finished; plain requests do not count. */
START_TEST(test_streams)
{
        _cleanup_(key_limiter_freep) KeyLimiter *l = key_limiter_new(16);
        KeyLimits lim = { .requests_per_minute = U, .tokens_per_minute = U, .concurrent_streams = 2 };
        KeyLimitStatus st;

        ck_assert(key_limiter_admit(l, 1, &lim, true, T0, &st));
        ck_assert(key_limiter_admit(l, 1, &lim, true, T0, &st));
        ck_assert(key_limiter_admit(l, 1, &lim, false, T0, &st));
        ck_assert_uint_eq(key_limiter_streams(l, 1), 2);
        ck_assert(!key_limiter_admit(l, 1, &lim, true, T0, &st));
        ck_assert_int_eq(st.verdict, KEY_LIMIT_STREAMS);
        ck_assert_uint_eq(st.retry_after_sec, 1);
        key_limiter_finish(l, 1, &lim, true, 0, T0);
        ck_assert(key_limiter_admit(l, 1, &lim, true, T0, &st));
        /* Finishing more than were admitted does not go below zero. */
        for (unsigned i = 0; i < 5; i++)
                key_limiter_finish(l, 1, &lim, true, 0, T0);
        ck_assert_uint_eq(key_limiter_streams(l, 1), 0);
}
END_TEST

/* A limit of 0 refuses everything, "never" (no retry helps); a refused request takes
 * nothing; a limit set later on an unlimited key starts full. */
START_TEST(test_zero_and_changes)
{
        _cleanup_(key_limiter_freep) KeyLimiter *l = key_limiter_new(16);
        KeyLimits zero = { .requests_per_minute = 0, .tokens_per_minute = U, .concurrent_streams = U };
        KeyLimits none = { .requests_per_minute = U, .tokens_per_minute = U, .concurrent_streams = U };
        KeyLimits two = { .requests_per_minute = 2, .tokens_per_minute = U, .concurrent_streams = 1 };
        KeyLimitStatus st;

        ck_assert(!key_limiter_admit(l, 1, &zero, true, T0, &st));
        ck_assert(st.never);
        ck_assert_int_eq(st.verdict, KEY_LIMIT_REQUESTS);
        ck_assert_uint_eq(key_limiter_streams(l, 1), 0);
        for (unsigned i = 0; i < 100; i++)
                ck_assert(key_limiter_admit(l, 3, &none, false, T0, &st));
        ck_assert_uint_eq(st.requests_limit, U);
        ck_assert(key_limiter_admit(l, 3, &two, true, T0, &st));
        ck_assert_uint_eq(st.requests_remaining, 1);
        /* Refused on streams: the request token stays. */
        ck_assert(!key_limiter_admit(l, 3, &two, true, T0, &st));
        ck_assert(key_limiter_admit(l, 3, &two, false, T0, &st));
        ck_assert(!key_limiter_admit(l, 3, &two, false, T0, &st));
}
END_TEST

/* The table is bounded: the least recently seen key without streams is forgotten first. */
START_TEST(test_bounded)
{
        _cleanup_(key_limiter_freep) KeyLimiter *l = key_limiter_new(4);
        KeyLimits lim = { .requests_per_minute = 1, .tokens_per_minute = U, .concurrent_streams = U };
        KeyLimitStatus st;

        ck_assert(key_limiter_admit(l, 1, &lim, true, T0, &st));       /* streaming: kept */
        for (int64_t k = 2; k <= 10; k++)
                ck_assert(key_limiter_admit(l, k, &lim, false, T0 + (uint64_t) k, &st));
        ck_assert_uint_eq(key_limiter_streams(l, 1), 1);
        ck_assert(!key_limiter_admit(l, 1, &lim, false, T0 + 20, &st));
        /* Key 2 was forgotten: a fresh bucket. */
        ck_assert(key_limiter_admit(l, 2, &lim, false, T0 + 30, &st));
}
END_TEST

START_TEST(test_format_reset)
{
        static const struct {
                uint64_t usec;
                const char *s;
        } cases[] = {
                { 0, "0s" },
                { 1, "1ms" },
                { 250 * USEC_PER_MSEC, "250ms" },
                { USEC_PER_SEC, "1s" },
                { 1500 * USEC_PER_MSEC, "2s" },
                { 60 * USEC_PER_SEC, "1m0s" },
                { 366 * USEC_PER_SEC, "6m6s" },
        };
        char buf[32];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                key_limit_format_reset(cases[i].usec, buf, sizeof buf);
                ck_assert_str_eq(buf, cases[i].s);
        }
}
END_TEST

int main(void) {
        Suite *s = suite_create("gateway-limits");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_requests);
        tcase_add_test(tc, test_tokens);
        tcase_add_test(tc, test_streams);
        tcase_add_test(tc, test_zero_and_changes);
        tcase_add_test(tc, test_bounded);
        tcase_add_test(tc, test_format_reset);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
