/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>

#include "gateway-route.h"

#define S USEC_PER_SEC

static StoreProvider providers[] = { { .id = 11 }, { .id = 22 }, { .id = 33 } };

START_TEST(test_least_in_flight)
{
        Router *r = NULL;
        uint64_t wait = 0;
        size_t i = SIZE_MAX;

        ck_assert_int_eq(router_new(0, 0, &r), 0);
        ck_assert_int_eq(router_begin(r, 11), 0);
        ck_assert_int_eq(router_begin(r, 11), 0);
        ck_assert_int_eq(router_begin(r, 22), 0);
        /* 33 has nothing in flight. */
        ck_assert_int_eq(router_pick(r, providers, 3, NULL, 0, 100 * S, &i, &wait), 0);
        ck_assert_uint_eq(i, 2);
        /* Without 33, 22 (one in flight) beats 11 (two). */
        ck_assert_int_eq(router_pick(r, providers, 3, (int64_t[]) { 33 }, 1, 100 * S, &i, &wait), 0);
        ck_assert_uint_eq(i, 1);
        ck_assert_uint_eq(router_in_flight(r, 11), 2);
        router_end(r, 11, ROUTER_NEUTRAL, 100 * S);
        router_end(r, 11, ROUTER_SUCCESS, 100 * S);
        ck_assert_uint_eq(router_in_flight(r, 11), 0);
        /* Everything tried: -ENOENT; no candidates at all: the same. */
        ck_assert_int_eq(router_pick(r, providers, 3, (int64_t[]) { 11, 22, 33 }, 3, 100 * S, &i, &wait), -ENOENT);
        ck_assert_int_eq(router_pick(r, NULL, 0, NULL, 0, 100 * S, &i, &wait), -ENOENT);
        router_free(r);
}
END_TEST

START_TEST(test_ties_are_random)
{
        Router *r = NULL;
        unsigned seen[3] = {};
        uint64_t wait;

        ck_assert_int_eq(router_new(0, 0, &r), 0);
        for (unsigned k = 0; k < 3000; k++) {
                size_t i;

                ck_assert_int_eq(router_pick(r, providers, 3, NULL, 0, 1, &i, &wait), 0);
                seen[i]++;
        }
        /* Each about 1000 times; far outside chance if the choice were fixed or skewed. */
        for (unsigned k = 0; k < 3; k++)
                ck_assert_uint_gt(seen[k], 800);
        router_free(r);
}
END_TEST

START_TEST(test_backoff_grows_and_resets)
{
        Router *r = NULL;
        uint64_t wait = 0, t = 1000 * S;
        size_t i;

        ck_assert_int_eq(router_new(1 * S, 4 * S, &r), 0);

        /* First failure: skipped for 1 s. */
        ck_assert_int_eq(router_begin(r, 11), 0);
        router_end(r, 11, ROUTER_FAILURE, t);
        ck_assert(router_is_backing_off(r, 11, t));
        ck_assert_int_eq(router_pick(r, providers, 1, NULL, 0, t, &i, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 1 * S);
        /* The others are still picked. */
        ck_assert_int_eq(router_pick(r, providers, 2, NULL, 0, t, &i, &wait), 0);
        ck_assert_uint_eq(i, 1);
        ck_assert(!router_is_backing_off(r, 11, t + 1 * S));

        /* Failures in a row: 2 s, 4 s, then capped at 4 s. */
        t += 1 * S;
        router_begin(r, 11);
        router_end(r, 11, ROUTER_FAILURE, t);
        ck_assert_int_eq(router_pick(r, providers, 1, NULL, 0, t, &i, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 2 * S);
        t += 2 * S;
        router_begin(r, 11);
        router_end(r, 11, ROUTER_FAILURE, t);
        ck_assert_int_eq(router_pick(r, providers, 1, NULL, 0, t, &i, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 4 * S);
        t += 4 * S;
        router_begin(r, 11);
        router_end(r, 11, ROUTER_FAILURE, t);
        ck_assert_int_eq(router_pick(r, providers, 1, NULL, 0, t, &i, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 4 * S);

        /* A neutral end changes nothing; a success forgets the failures. */
        t += 4 * S;
        router_begin(r, 11);
        router_end(r, 11, ROUTER_NEUTRAL, t);
        router_begin(r, 11);
        router_end(r, 11, ROUTER_SUCCESS, t);
        router_begin(r, 11);
        router_end(r, 11, ROUTER_FAILURE, t);
        ck_assert_int_eq(router_pick(r, providers, 1, NULL, 0, t, &i, &wait), -EAGAIN);
        ck_assert_uint_eq(wait, 1 * S);
        router_free(r);
}
END_TEST

START_TEST(test_unknown_ids)
{
        Router *r = NULL;

        ck_assert_int_eq(router_new(0, 0, &r), 0);
        /* Ending what was never begun is harmless. */
        router_end(r, 99, ROUTER_FAILURE, 5 * S);
        ck_assert(!router_is_backing_off(r, 99, 5 * S));
        ck_assert_uint_eq(router_in_flight(r, 99), 0);
        ck_assert_ptr_null(router_free(r));
        ck_assert_ptr_null(router_free(NULL));
}
END_TEST

int main(void) {
        Suite *s = suite_create("gateway-route");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_least_in_flight);
        tcase_add_test(tc, test_ties_are_random);
        tcase_add_test(tc, test_backoff_grows_and_resets);
        tcase_add_test(tc, test_unknown_ids);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
