/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>

#include "log.h"

static char *capture(int *fd) {
        static char buf[4096];
        ssize_t n;

        lseek(*fd, 0, SEEK_SET);
        n = read(*fd, buf, sizeof buf - 1);
        buf[n < 0 ? 0 : n] = 0;
        ftruncate(*fd, 0);
        lseek(*fd, 0, SEEK_SET);
        return buf;
}

START_TEST(test_levels)
{
        static const struct { const char *s; int l; } t[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warning", LOG_WARNING },
                { "warn", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
                { "7", LOG_DEBUG }, { "0", LOG_EMERG }, { "8", -EINVAL }, { "loud", -EINVAL }, { "", -EINVAL },
        };
        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_msg(log_level_from_string(t[i].s) == t[i].l, "level '%s'", t[i].s);
        ck_assert_str_eq(log_level_to_string(LOG_NOTICE), "notice");
}
END_TEST

START_TEST(test_prefix_and_errno)
{
        int fd = memfd_create("log", MFD_CLOEXEC);
        int r;

        ck_assert_int_ge(fd, 0);
        log_set_fd(fd);
        log_set_max_level(LOG_INFO);

        r = log_error_errno(-ENOENT, "Failed to open %s: %m", "x.conf");
        ck_assert_int_eq(r, -ENOENT);
        ck_assert_str_eq(capture(&fd), "<3>Failed to open x.conf: No such file or directory\n");

        /* Positive errors are normalised too. */
        ck_assert_int_eq(log_warning_errno(EPERM, "nope"), -EPERM);
        ck_assert_str_eq(capture(&fd), "<4>nope\n");

        /* Below the level: nothing written, still returns the error. */
        ck_assert_int_eq(log_debug_errno(-EIO, "hidden"), -EIO);
        ck_assert_str_eq(capture(&fd), "");

        /* A newline in a message cannot forge a second journal entry. */
        log_info("a\n<0>forged");
        ck_assert_str_eq(capture(&fd), "<6>a <0>forged\n");

        setenv("CLUB_LOG_LEVEL", "debug", 1);
        ck_assert_int_eq(log_parse_environment(), 0);
        ck_assert_int_eq(log_get_max_level(), LOG_DEBUG);
        setenv("CLUB_LOG_LEVEL", "chatty", 1);
        ck_assert_int_eq(log_parse_environment(), -EINVAL);
        ck_assert_int_eq(log_get_max_level(), LOG_DEBUG);
        close(fd);
}
END_TEST

START_TEST(test_ratelimit)
{
        RateLimit rl = { .interval_usec = 60 * USEC_PER_SEC, .burst = 3 };
        int fd = memfd_create("log", MFD_CLOEXEC);
        unsigned allowed = 0;

        log_set_fd(fd);
        for (int i = 0; i < 10; i++)
                allowed += ratelimit_below(&rl);
        ck_assert_uint_eq(allowed, 3);
        ck_assert_uint_eq(rl.suppressed, 7);
        /* A new interval reports how many were dropped. */
        rl.begin -= 61 * USEC_PER_SEC;
        ck_assert(ratelimit_below(&rl));
        ck_assert_str_eq(capture(&fd), "<4>Suppressed 7 similar messages.\n");
        close(fd);
}
END_TEST

int main(void) {
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_levels);
        tcase_add_test(tc, test_prefix_and_errno);
        tcase_add_test(tc, test_ratelimit);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
