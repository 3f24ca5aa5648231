/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "gateway-ratelimit.h"

#define T0 (1000 * USEC_PER_SEC)

static struct sockaddr_in v4(const char *a) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(1234) };

        ck_assert_int_eq(inet_pton(AF_INET, a, &sa.sin_addr), 1);
        return sa;
}

/* A burst of exactly @burst, then refusal with a Retry-After of the refill time. */
START_TEST(test_burst_then_refill)
{
        _cleanup_(rate_limiter_freep) RateLimiter *l = rate_limiter_new(10, 10, 16);
        struct sockaddr_in a = v4("192.0.2.1");
        unsigned retry = 0;

        ck_assert_ptr_nonnull(l);
        for (unsigned i = 0; i < 10; i++)
                ck_assert(rate_limiter_take(l, (struct sockaddr *) &a, T0, &retry));
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0, &retry));
        ck_assert_uint_eq(retry, 6);            /* 10 per minute: one every 6 s */
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0 + 5 * USEC_PER_SEC, &retry));
        ck_assert_uint_eq(retry, 1);
        ck_assert(rate_limiter_take(l, (struct sockaddr *) &a, T0 + 6 * USEC_PER_SEC, &retry));
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0 + 6 * USEC_PER_SEC, &retry));
        /* A long idle bucket is full again, never fuller than the burst. */
        for (unsigned i = 0; i < 10; i++)
                ck_assert(rate_limiter_take(l, (struct sockaddr *) &a, T0 + 3600 * USEC_PER_SEC, &retry));
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0 + 3600 * USEC_PER_SEC, &retry));
}
END_TEST

/* Addresses have buckets of their own; an IPv4-mapped IPv6 address is the IPv4 one; a
 * clock that goes backwards adds nothing. */
START_TEST(test_addresses)
{
        _cleanup_(rate_limiter_freep) RateLimiter *l = rate_limiter_new(2, 1, 16);
        struct sockaddr_in a = v4("192.0.2.1"), b = v4("192.0.2.2");
        struct sockaddr_in6 m = { .sin6_family = AF_INET6 };
        unsigned retry;

        ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:192.0.2.1", &m.sin6_addr), 1);
        ck_assert(rate_limiter_take(l, (struct sockaddr *) &a, T0, &retry));
        ck_assert(rate_limiter_take(l, (struct sockaddr *) &m, T0, &retry));
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0, &retry));
        ck_assert_uint_eq(retry, 60);
        ck_assert(!rate_limiter_take(l, (struct sockaddr *) &a, T0 - USEC_PER_SEC, &retry));
        ck_assert(rate_limiter_take(l, (struct sockaddr *) &b, T0, &retry));
        ck_assert(rate_limiter_take(l, NULL, T0, &retry));
}
END_TEST

/* Named buckets: separate per name and from addresses; checking takes nothing. */
START_TEST(test_keys)
{
        _cleanup_(rate_limiter_freep) RateLimiter *l = rate_limiter_new(3, 3, 16);
        unsigned retry = 0;

        for (unsigned i = 0; i < 10; i++)
                ck_assert(rate_limiter_check_key(l, "ie:AbCdEfGh", T0, &retry));
        for (unsigned i = 0; i < 3; i++) {
                ck_assert(rate_limiter_check_key(l, "ic:42", T0, &retry));
                ck_assert(rate_limiter_take_key(l, "ic:42", T0, &retry));
        }
        ck_assert(!rate_limiter_check_key(l, "ic:42", T0, &retry));
        ck_assert_uint_eq(retry, 20);
        ck_assert(!rate_limiter_take_key(l, "ic:42", T0, &retry));
        ck_assert(rate_limiter_take_key(l, "ic:43", T0, &retry));
        ck_assert(rate_limiter_take_key(l, "ie:AbCdEfGh", T0, &retry));
        ck_assert(rate_limiter_take_key(l, "", T0, &retry));
        ck_assert(rate_limiter_take(l, NULL, T0, &retry));
        ck_assert(rate_limiter_take_key(l, "ic:42", T0 + 20 * USEC_PER_SEC, &retry));
}
END_TEST

/* The table never grows: with every slot taken, the least recently seen bucket goes (and
 * comes back full), while a busy one stays. */
START_TEST(test_bounded)
{
        _cleanup_(rate_limiter_freep) RateLimiter *l = rate_limiter_new(1, 1, 4);
        char name[RATE_LIMITER_KEY_MAX];
        unsigned retry;

        ck_assert(rate_limiter_take_key(l, "busy", T0, &retry));
        for (unsigned i = 0; i < 1000; i++) {
                snprintf(name, sizeof name, "k%u", i);
                ck_assert(rate_limiter_take_key(l, name, T0 + i + 1, &retry));
                /* "busy" is seen again each round, so it is never the oldest. */
                ck_assert(!rate_limiter_take_key(l, "busy", T0 + i + 1, &retry));
        }
        /* k0 was forgotten long ago: a fresh, full bucket. */
        ck_assert(rate_limiter_take_key(l, "k0", T0 + 2000, &retry));
        /* Names longer than the key are cut: these two share a bucket. */
        ck_assert(rate_limiter_take_key(l, "xxxxxxxxxxxxxxxxxxxxxxxA", T0 + 3000, &retry));
        ck_assert(!rate_limiter_take_key(l, "xxxxxxxxxxxxxxxxxxxxxxxB", T0 + 3000, &retry));
}
END_TEST

int main(void) {
        Suite *s = suite_create("ratelimit");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_burst_then_refill);
        tcase_add_test(tc, test_addresses);
        tcase_add_test(tc, test_keys);
        tcase_add_test(tc, test_bounded);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
