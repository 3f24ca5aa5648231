/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <fcntl.h>
#include <time.h>

#include "cleanup.h"
#include "macro.h"

static int freed;

typedef struct Thing {
        int id;
} Thing;

static Thing *thing_free(Thing *t) {
        if (!t)
                return NULL;
        freed++;
        return mfree(t);
}
CLUB_DEFINE_CLEANUP(Thing *, thing_free);

static Thing *make(int id, bool keep) {
        _cleanup_(thing_freep) Thing *t = new0(Thing, 1);

        t->id = id;
        if (!keep)
                return NULL;          /* the cleanup frees it */
        return TAKE_PTR(t);           /* ownership handed over: not freed */
}

START_TEST(test_cleanup_and_take)
{
        Thing *t;

        freed = 0;
        ck_assert_ptr_null(make(1, false));
        ck_assert_int_eq(freed, 1);
        t = make(2, true);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(t->id, 2);
        ck_assert_int_eq(freed, 1);
        ck_assert_ptr_null(thing_free(t));
        ck_assert_int_eq(freed, 2);
        ck_assert_ptr_null(thing_free(NULL)); /* destructors accept NULL */
        ck_assert_int_eq(freed, 2);
}
END_TEST

START_TEST(test_fds)
{
        int kept;

        {
                _cleanup_(closep) int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                ck_assert_int_ge(fd, 0);
                kept = TAKE_FD(fd);
                ck_assert_int_eq(fd, -EBADF);
        }
        ck_assert_int_ge(fcntl(kept, F_GETFD), 0); /* still open: ownership was taken */
        ck_assert_int_eq(safe_close(kept), -EBADF);
        ck_assert_int_lt(fcntl(kept, F_GETFD), 0);
        ck_assert_int_eq(safe_close(-EBADF), -EBADF);
}
END_TEST

START_TEST(test_strings)
{
        static const struct { const char *s, *prefix; const char *rest; } t[] = {
                { "/v1/models", "/v1/", "models" }, { "/v1", "/v1/", NULL }, { "", "", "" },
                { "abc", "abc", "" }, { "ab", "abc", NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                const char *r = startswith(t[i].s, t[i].prefix);
                if (t[i].rest)
                        ck_assert_str_eq(r, t[i].rest);
                else
                        ck_assert_ptr_null(r);
        }
        ck_assert_str_eq(startswith_no_case("Content-Type", "content-"), "Type");
        ck_assert(endswith("http://h/v1", "/v1"));
        ck_assert(!endswith("v1", "/v1"));
        ck_assert(streq_ptr(NULL, NULL));
        ck_assert(!streq_ptr("a", NULL));
        ck_assert(isempty(NULL) && isempty("") && !isempty("x"));
        ck_assert_str_eq(strempty(NULL), "");
}
END_TEST

START_TEST(test_free_and_strdup)
{
        _cleanup_free_ char *p = NULL;

        ck_assert_int_eq(free_and_strdup(&p, "one"), 0);
        ck_assert_str_eq(p, "one");
        ck_assert_int_eq(free_and_strdup(&p, "two"), 0);
        ck_assert_str_eq(p, "two");
        ck_assert_int_eq(free_and_strdup(&p, NULL), 0);
        ck_assert_ptr_null(p);
}
END_TEST

START_TEST(test_erase_and_free)
{
        /* The wipe itself cannot be observed after free; check the contract around it. */
        char *s = strdup("secret");
        ck_assert_ptr_null(erase_and_free(s));
        ck_assert_ptr_null(erase_and_free(NULL));
        {
                _cleanup_(erase_and_freep) char *k = strdup("ic-key");
                ck_assert_ptr_nonnull(k);
        }
}
END_TEST

START_TEST(test_time_and_math)
{
        uint64_t a = now_usec(CLOCK_MONOTONIC), b = now_usec(CLOCK_MONOTONIC);

        ck_assert_uint_ge(b, a);
        ck_assert_int_eq(MIN(3, 5), 3);
        ck_assert_int_eq(MAX(3, 5), 5);
        ck_assert_int_eq(CLAMP(9, 1, 4), 4);
        ck_assert_int_eq(CLAMP(-2, 1, 4), 1);
        int arr[7];
        ck_assert_uint_eq(ELEMENTSOF(arr), 7);
}
END_TEST

int main(void) {
        Suite *s = suite_create("macro");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_cleanup_and_take);
        tcase_add_test(tc, test_fds);
        tcase_add_test(tc, test_strings);
        tcase_add_test(tc, test_free_and_strdup);
        tcase_add_test(tc, test_erase_and_free);
        tcase_add_test(tc, test_time_and_math);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
