/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "http-forward.h"

static const struct {
        const char *in, *out;
} normalize_cases[] = {
        { "/v1/chat/completions", "/v1/chat/completions" },
        { "/v1//chat/completions", "/v1/chat/completions" },
        { "//v1///chat//completions/", "/v1/chat/completions" },
        { "/v1/models/", "/v1/models" },
        { "/v1/models//?a=b//c", "/v1/models?a=b//c" },  /* the query is left alone */
        { "/", "/" },
        { "//", "/" },
        { "", "/" },
        { "?x=1", "/?x=1" },
};

START_TEST(test_normalize)
{
        for (size_t i = 0; i < ELEMENTSOF(normalize_cases); i++) {
                char *s = http_path_normalize(normalize_cases[i].in);

                ck_assert_ptr_nonnull(s);
                ck_assert_str_eq(s, normalize_cases[i].out);
                free(s);
        }
}
END_TEST

START_TEST(test_path_is)
{
        ck_assert(http_path_is("/v1/models", "/v1/models"));
        ck_assert(http_path_is("/v1/models?x=1", "/v1/models"));
        ck_assert(!http_path_is("/v1/models/a", "/v1/models"));
        ck_assert(!http_path_is("/v1/model", "/v1/models"));
}
END_TEST

START_TEST(test_dot_segments)
{
        ck_assert(http_path_has_dot_segment("/v1/../admin"));
        ck_assert(http_path_has_dot_segment("/v1/./chat"));
        ck_assert(http_path_has_dot_segment("/v1/chat/.."));
        ck_assert(http_path_has_dot_segment("/v1/.?x"));
        ck_assert(!http_path_has_dot_segment("/v1/chat/completions"));
        ck_assert(!http_path_has_dot_segment("/v1/models/llama.3"));
        ck_assert(!http_path_has_dot_segment("/v1/models/...x"));
        ck_assert(!http_path_has_dot_segment("/v1/x?y=/../z"));   /* the query does not count */
}
END_TEST

START_TEST(test_request_id)
{
        char a[HTTP_REQUEST_ID_SIZE], b[HTTP_REQUEST_ID_SIZE];

        http_request_id_new(a);
        http_request_id_new(b);
        ck_assert_uint_eq(strlen(a), 32);
        ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 32);
        ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_small_body)
{
        HttpSmallBody b = {};

        ck_assert(!http_small_body_complete(&b));
        ck_assert_int_eq(http_small_body_begin(&b, 200, 5), 0);
        ck_assert(b.active);
        ck_assert_int_eq(http_small_body_append(&b, "ab", 2), 0);
        ck_assert(!http_small_body_complete(&b));
        ck_assert_int_eq(http_small_body_append(&b, "cdef", 4), -EPROTO);  /* more than announced */
        ck_assert_int_eq(http_small_body_append(&b, "cde", 3), 0);
        ck_assert(http_small_body_complete(&b));
        ck_assert_int_eq(memcmp(b.data, "abcde", 5), 0);
        ck_assert_uint_eq(b.status, 200);
        http_small_body_done(&b);
        ck_assert(!b.active && !b.data);

        /* Empty bodies are complete at once. */
        ck_assert_int_eq(http_small_body_begin(&b, 204, 0), 0);
        ck_assert(http_small_body_complete(&b));
        http_small_body_done(&b);
}
END_TEST

int main(void) {
        Suite *s = suite_create("http-forward");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_normalize);
        tcase_add_test(tc, test_path_is);
        tcase_add_test(tc, test_dot_segments);
        tcase_add_test(tc, test_request_id);
        tcase_add_test(tc, test_small_body);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
