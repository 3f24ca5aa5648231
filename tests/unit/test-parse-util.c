/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>

#include "macro.h"
#include "parse-util.h"

START_TEST(test_parse_uint)
{
        static const struct { const char *in; int r; uint64_t v; } t[] = {
                { "0", 0, 0 }, { "42", 0, 42 }, { "18446744073709551615", 0, UINT64_MAX },
                { "18446744073709551616", -ERANGE, 0 }, { "", -EINVAL, 0 }, { "-1", -EINVAL, 0 },
                { "1 ", -EINVAL, 0 }, { "0x10", -EINVAL, 0 }, { "+3", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                uint64_t v = 0;
                ck_assert_msg(parse_uint64(t[i].in, &v) == t[i].r, "input '%s'", t[i].in);
                if (t[i].r == 0)
                        ck_assert_uint_eq(v, t[i].v);
        }
        unsigned u;
        ck_assert_int_eq(parse_uint("4294967296", &u), -ERANGE);
        ck_assert_int_eq(parse_uint("4294967295", &u), 0);
}
END_TEST

START_TEST(test_parse_boolean)
{
        ck_assert_int_eq(parse_boolean("yes"), 1);
        ck_assert_int_eq(parse_boolean("On"), 1);
        ck_assert_int_eq(parse_boolean("0"), 0);
        ck_assert_int_eq(parse_boolean("off"), 0);
        ck_assert_int_eq(parse_boolean("maybe"), -EINVAL);
        ck_assert_int_eq(parse_boolean(""), -EINVAL);
        ck_assert_int_eq(parse_boolean(NULL), -EINVAL);
}
END_TEST

START_TEST(test_parse_size)
{
        uint64_t v;
        ck_assert_int_eq(parse_size("512", &v), 0); ck_assert_uint_eq(v, 512);
        ck_assert_int_eq(parse_size("64K", &v), 0); ck_assert_uint_eq(v, 65536);
        ck_assert_int_eq(parse_size("2MiB", &v), 0); ck_assert_uint_eq(v, 2 << 20);
        ck_assert_int_eq(parse_size("1G", &v), 0); ck_assert_uint_eq(v, 1ULL << 30);
        ck_assert_int_eq(parse_size("1T", &v), -EINVAL);
        ck_assert_int_eq(parse_size("K", &v), -EINVAL);
        ck_assert_int_eq(parse_size("99999999999999999999G", &v), -ERANGE);
}
END_TEST

START_TEST(test_parse_sec)
{
        uint64_t v;
        ck_assert_int_eq(parse_sec("30", &v), 0); ck_assert_uint_eq(v, 30 * USEC_PER_SEC);
        ck_assert_int_eq(parse_sec("500ms", &v), 0); ck_assert_uint_eq(v, 500 * USEC_PER_MSEC);
        ck_assert_int_eq(parse_sec("1h 30min", &v), 0); ck_assert_uint_eq(v, 5400 * USEC_PER_SEC);
        ck_assert_int_eq(parse_sec("2min", &v), 0); ck_assert_uint_eq(v, 120 * USEC_PER_SEC);
        ck_assert_int_eq(parse_sec("infinity", &v), 0); ck_assert_uint_eq(v, USEC_INFINITY);
        ck_assert_int_eq(parse_sec("5 fortnights", &v), -EINVAL);
        ck_assert_int_eq(parse_sec("", &v), -EINVAL);
        ck_assert_int_eq(parse_sec("ms", &v), -EINVAL);
}
END_TEST

START_TEST(test_parse_sockaddr)
{
        struct sockaddr_storage ss;
        socklen_t l;
        char buf[64];

        ck_assert_int_eq(parse_sockaddr("127.0.0.1:8080", &ss, &l), 0);
        ck_assert_str_eq(format_sockaddr((struct sockaddr *) &ss, buf, sizeof buf), "127.0.0.1:8080");
        ck_assert_int_eq(parse_sockaddr("[::1]:443", &ss, &l), 0);
        ck_assert_str_eq(format_sockaddr((struct sockaddr *) &ss, buf, sizeof buf), "[::1]:443");
        ck_assert_int_eq(parse_sockaddr("localhost:80", &ss, &l), -EINVAL);
        ck_assert_int_eq(parse_sockaddr("1.2.3.4", &ss, &l), -EINVAL);
        ck_assert_int_eq(parse_sockaddr("1.2.3.4:0", &ss, &l), -EINVAL);
        ck_assert_int_eq(parse_sockaddr("1.2.3.4:65536", &ss, &l), -EINVAL);
        ck_assert_int_eq(parse_sockaddr("[::1]", &ss, &l), -EINVAL);
        ck_assert_int_eq(parse_sockaddr("::1:80", &ss, &l), -EINVAL);
}
END_TEST

static Suite *parse_util_suite(void) {
        Suite *s = suite_create("parse-util");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_parse_uint);
        tcase_add_test(tc, test_parse_boolean);
        tcase_add_test(tc, test_parse_size);
        tcase_add_test(tc, test_parse_sec);
        tcase_add_test(tc, test_parse_sockaddr);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(parse_util_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
