/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <math.h>

#include "cleanup.h"
#include "json-util.h"

#define IN(s) s, sizeof(s) - 1

/* ---- parsing ------------------------------------------------------------------------ */

static const struct {
        const char *in;
        size_t len;
        int r;
        const char *out;        /* on success: the value serialized again */
        const char *reason;     /* on failure */
} parse_cases[] = {
        { IN("{\"a\":1}"), 0, "{\"a\":1}", NULL },
        { IN(" \t\r\n{ \"a\" : [ 1 , 2.5 , \"x/y\" , true , null ] }\n "), 0, "{\"a\":[1,2.5,\"x/y\",true,null]}", NULL },
        { IN("123"), 0, "123", NULL },                  /* a number at the very end */
        { IN("-0"), 0, "0", NULL },
        { IN("1.5e+3"), 0, "1.5e+3", NULL },
        { IN("true"), 0, "true", NULL },
        { IN("\"a\\u0000b\""), 0, "\"a\\u0000b\"", NULL },   /* NUL inside a value is kept */
        { IN("\"\\ud83d\\ude00 \xc3\xa9\""), 0, "\"\xf0\x9f\x98\x80 \xc3\xa9\"", NULL },
        { IN("[18446744073709551615,-9223372036854775808]"), 0, "[18446744073709551615,-9223372036854775808]", NULL },
        { IN("{\"a\":1,\"a\":2}"), 0, "{\"a\":2}", NULL },  /* the last duplicate wins */
        /* truncated input */
        { IN(""), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("   "), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("{\"a\":"), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("[1,2"), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("\"abc"), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("tru"), -EINVAL, NULL, "unexpected end of JSON" },
        { IN("-"), -EINVAL, NULL, "unexpected end of JSON" },
        /* trailing garbage */
        { IN("{\"a\":1} x"), -EINVAL, NULL, "unexpected text after the JSON value" },
        { IN("{}{}"), -EINVAL, NULL, "unexpected text after the JSON value" },
        { IN("1 2"), -EINVAL, NULL, "unexpected text after the JSON value" },
        { IN("[1]\0"), -EINVAL, NULL, "unexpected text after the JSON value" },
        { IN("nullx"), -EINVAL, NULL, "unexpected text after the JSON value" },
        /* not JSON, though json-c would take some of it */
        { IN("NaN"), -EINVAL, NULL, "invalid literal (NaN and Infinity are not JSON)" },
        { IN("[Infinity]"), -EINVAL, NULL, "invalid literal (NaN and Infinity are not JSON)" },
        { IN("-Infinity"), -EINVAL, NULL, "invalid number" },
        { IN("[1.]"), -EINVAL, NULL, "invalid number" },
        { IN("[-01]"), -EINVAL, NULL, "invalid number" },
        { IN("01"), -EINVAL, NULL, "unexpected end of JSON" },
        { IN(".5"), -EINVAL, NULL, "unexpected character" },
        { IN("+1"), -EINVAL, NULL, "unexpected character" },
        { IN("[18446744073709551616]"), -EINVAL, NULL, "integer out of range" },
        { IN("[-9223372036854775809]"), -EINVAL, NULL, "integer out of range" },
        { IN("[1,2,]"), -EINVAL, NULL, "unexpected character" },
        { IN("{\"a\":1,}"), -EINVAL, NULL, "unexpected character" },
        { IN("{'a':1}"), -EINVAL, NULL, "invalid object, expected a key in double quotes" },
        { IN("{'a b':1}"), -EINVAL, NULL, "invalid object, expected a key in double quotes" },
        { IN("{'\\\"':1}"), -EINVAL, NULL, "invalid object, expected a key in double quotes" },
        { IN("{\"a\" 1}"), -EINVAL, NULL, "invalid object, expected ':' after a key" },
        { IN("{\"a\":1 \"b\":2}"), -EINVAL, NULL, "invalid object, expected ',' or '}'" },
        { IN("[true false]"), -EINVAL, NULL, "invalid array, expected ',' or ']'" },
        { IN("/* c */ 1"), -EINVAL, NULL, "unexpected character" },
        { IN("True"), -EINVAL, NULL, "invalid literal, expected true or false" },
        { IN("\"a\tb\""), -EINVAL, NULL, "invalid string (a control character or a bad escape)" },
        { IN("\"\\x41\""), -EINVAL, NULL, "invalid string (a control character or a bad escape)" },
        { IN("\"a\0b\""), -EINVAL, NULL, "unexpected NUL byte" },
        { IN("\0"), -EINVAL, NULL, "unexpected NUL byte" },
        { IN("[1,\0 2]"), -EINVAL, NULL, "unexpected NUL byte" },
        { IN("\xef\xbb\xbf{}"), -EINVAL, NULL, "invalid UTF-8" },
        { IN("\"\xff\""), -EINVAL, NULL, "invalid UTF-8" },
        { IN("\"\xc0\xaf\""), -EINVAL, NULL, "invalid UTF-8" },          /* overlong "/" */
        { IN("\"\xed\xa0\x80\""), -EINVAL, NULL, "invalid UTF-8" },      /* an encoded surrogate */
        { IN("\"\xf4\x90\x80\x80\""), -EINVAL, NULL, "invalid UTF-8" },  /* above U+10FFFF */
        { IN("{\"model\\u0000x\":1}"), -EINVAL, NULL, "NUL character (\\u0000) in an object key" },
        { IN("{\"a\":{\"b\\u0000\" :1}}"), -EINVAL, NULL, "NUL character (\\u0000) in an object key" },
};

START_TEST(test_parse)
{
        for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
                json_object *o = (json_object *) 0x1;
                const char *reason = NULL;
                int r;

                r = jobj_parse(parse_cases[i].in, parse_cases[i].len, JSON_DEPTH_MAX, &o, &reason);
                ck_assert_msg(r == parse_cases[i].r, "case %zu: r=%d (%s)", i, r, strna(reason));
                if (r == 0) {
                        _cleanup_(freep) char *s = NULL;

                        ck_assert_int_eq(jobj_to_string(o, &s, NULL), 0);
                        ck_assert_msg(streq(s, parse_cases[i].out), "case %zu: %s", i, s);
                        json_object_put(o);
                } else {
                        ck_assert_msg(o == (json_object *) 0x1, "case %zu: ret changed on failure", i);
                        ck_assert_msg(streq_ptr(reason, parse_cases[i].reason), "case %zu: reason '%s'", i, strna(reason));
                }
        }
}
END_TEST

START_TEST(test_parse_null_and_unterminated)
{
        /* The literal null is a value: 0 and NULL. */
        json_object *o = (json_object *) 0x1;
        char buf[8];

        ck_assert_int_eq(jobj_parse(IN("null"), 0, &o, NULL), 0);
        ck_assert_ptr_null(o);

        /* The buffer need not be NUL-terminated: json-c must not read past len. */
        memcpy(buf, "[1]]]]]]", 8);
        ck_assert_int_eq(jobj_parse(buf, 3, 0, &o, NULL), 0);
        ck_assert(json_object_is_type(o, json_type_array));
        json_object_put(o);
        memcpy(buf, "12345678", 8);
        ck_assert_int_eq(jobj_parse(buf, 2, 0, &o, NULL), 0);
        ck_assert_int_eq(json_object_get_int64(o), 12);
        json_object_put(o);

        /* No reason pointer is fine. */
        ck_assert_int_eq(jobj_parse(IN("{"), 0, &o, NULL), -EINVAL);
        ck_assert_int_eq(jobj_parse(NULL, 0, 0, &o, NULL), -EINVAL);
}
END_TEST

static char *nested(unsigned depth, bool objects) {
        char *s = malloc(depth * 6 + 2), *p = s;

        ck_assert_ptr_nonnull(s);
        for (unsigned i = 0; i < depth; i++)
                p = stpcpy(p, objects ? "{\"a\":" : "[");
        *p++ = '1';
        for (unsigned i = 0; i < depth; i++)
                *p++ = objects ? '}' : ']';
        *p = 0;
        return s;
}

START_TEST(test_depth)
{
        static const struct { unsigned containers; int max_depth; int r; } t[] = {
                { 0, 1, 0 },                    /* a scalar alone is depth 1 */
                { 1, 1, -E2BIG },
                { 1, 2, 0 },
                { 2, 2, -E2BIG },
                { JSON_DEPTH_MAX - 1, 0, 0 },   /* 0 means JSON_DEPTH_MAX */
                { JSON_DEPTH_MAX, 0, -E2BIG },
                { JSON_DEPTH_MAX - 1, JSON_DEPTH_MAX, 0 },
                { JSON_DEPTH_MAX, JSON_DEPTH_MAX, -E2BIG },
                { 100000, JSON_DEPTH_MAX, -E2BIG },     /* no recursion, no stack overflow */
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                for (int objects = 0; objects <= 1; objects++) {
                        _cleanup_(freep) char *s = nested(t[i].containers, objects);
                        json_object *o = NULL;
                        const char *reason = NULL;
                        int r;

                        r = jobj_parse(s, strlen(s), t[i].max_depth, &o, &reason);
                        ck_assert_msg(r == t[i].r, "case %zu/%d: r=%d", i, objects, r);
                        if (r == -E2BIG)
                                ck_assert_str_eq(reason, "nested too deeply");
                        json_object_put(o);
                }
}
END_TEST

/* ---- typed access ------------------------------------------------------------------- */

static const char fields_json[] =
        "{"
        "\"s\":\"str\","
        "\"nul\":\"a\\u0000b\","
        "\"i\":-42,"
        "\"zero\":0,"
        "\"imax\":9223372036854775807,"
        "\"imin\":-9223372036854775808,"
        "\"umax\":18446744073709551615,"
        "\"big\":9223372036854775808,"
        "\"d\":1.0,"
        "\"e\":1e2,"
        "\"huge\":1e400,"
        "\"t\":true,"
        "\"f\":false,"
        "\"n\":null,"
        "\"o\":{\"x\":1},"
        "\"a\":[1,2],"
        "\"num_str\":\"12\","
        "\"one\":1"
        "}";

START_TEST(test_get)
{
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *sub = NULL, *arr = NULL;
        const char *s = NULL;
        int64_t i = 0;
        uint64_t u = 0;
        double d = 0;
        bool b = false;

        ck_assert_int_eq(jobj_parse(fields_json, sizeof fields_json - 1, 0, &o, NULL), 0);

        /* strings */
        ck_assert_int_eq(jobj_get_string(o, "s", &s), 0);
        ck_assert_str_eq(s, "str");
        ck_assert_int_eq(jobj_get_string(o, "nul", &s), -EINVAL);     /* would be cut short */
        ck_assert_int_eq(jobj_get_string(o, "i", &s), -EINVAL);
        ck_assert_int_eq(jobj_get_string(o, "n", &s), -ENOENT);
        ck_assert_int_eq(jobj_get_string(o, "missing", &s), -ENOENT);
        ck_assert_str_eq(s, "str");     /* untouched on failure */

        /* int64: integers only, no coercion */
        static const struct { const char *key; int r; int64_t v; } i64[] = {
                { "i", 0, -42 }, { "zero", 0, 0 }, { "imax", 0, INT64_MAX }, { "imin", 0, INT64_MIN },
                { "big", -ERANGE, 0 }, { "umax", -ERANGE, 0 },
                { "d", -EINVAL, 0 }, { "e", -EINVAL, 0 }, { "num_str", -EINVAL, 0 }, { "t", -EINVAL, 0 },
                { "n", -ENOENT, 0 }, { "missing", -ENOENT, 0 }, { "o", -EINVAL, 0 },
        };
        for (size_t k = 0; k < ELEMENTSOF(i64); k++) {
                i = 12345;
                ck_assert_msg(jobj_get_int64(o, i64[k].key, &i) == i64[k].r, "int64 %s", i64[k].key);
                ck_assert_msg(i == (i64[k].r == 0 ? i64[k].v : 12345), "int64 %s: %lld", i64[k].key, (long long) i);
        }

        /* uint64 */
        static const struct { const char *key; int r; uint64_t v; } u64[] = {
                { "zero", 0, 0 }, { "imax", 0, INT64_MAX }, { "big", 0, (uint64_t) INT64_MAX + 1 },
                { "umax", 0, UINT64_MAX }, { "i", -ERANGE, 0 }, { "imin", -ERANGE, 0 },
                { "d", -EINVAL, 0 }, { "num_str", -EINVAL, 0 }, { "n", -ENOENT, 0 },
        };
        for (size_t k = 0; k < ELEMENTSOF(u64); k++) {
                u = 12345;
                ck_assert_msg(jobj_get_uint64(o, u64[k].key, &u) == u64[k].r, "uint64 %s", u64[k].key);
                ck_assert_msg(u == (u64[k].r == 0 ? u64[k].v : 12345), "uint64 %s", u64[k].key);
        }

        /* booleans: true and false only */
        ck_assert_int_eq(jobj_get_bool(o, "t", &b), 0);
        ck_assert(b);
        ck_assert_int_eq(jobj_get_bool(o, "f", &b), 0);
        ck_assert(!b);
        ck_assert_int_eq(jobj_get_bool(o, "one", &b), -EINVAL);
        ck_assert_int_eq(jobj_get_bool(o, "s", &b), -EINVAL);
        ck_assert_int_eq(jobj_get_bool(o, "n", &b), -ENOENT);

        /* doubles: any finite number */
        ck_assert_int_eq(jobj_get_double(o, "d", &d), 0);
        ck_assert(d == 1.0);
        ck_assert_int_eq(jobj_get_double(o, "e", &d), 0);
        ck_assert(d == 100.0);
        ck_assert_int_eq(jobj_get_double(o, "i", &d), 0);
        ck_assert(d == -42.0);
        ck_assert_int_eq(jobj_get_double(o, "huge", &d), -ERANGE);
        ck_assert(d == -42.0);
        ck_assert_int_eq(jobj_get_double(o, "num_str", &d), -EINVAL);
        ck_assert_int_eq(jobj_get_double(o, "n", &d), -ENOENT);

        /* objects and arrays */
        ck_assert_int_eq(jobj_get_object(o, "o", &sub), 0);
        ck_assert_int_eq(jobj_get_int64(sub, "x", &i), 0);
        ck_assert_int_eq(i, 1);
        ck_assert_int_eq(jobj_get_object(o, "a", &sub), -EINVAL);
        ck_assert_int_eq(jobj_get_array(o, "a", &arr), 0);
        ck_assert_uint_eq(json_object_array_length(arr), 2);
        ck_assert_int_eq(jobj_get_array(o, "o", &arr), -EINVAL);
        ck_assert_int_eq(jobj_get_array(o, "n", &arr), -ENOENT);

        /* Not an object at all. */
        ck_assert_int_eq(jobj_get_int64(arr, "x", &i), -EINVAL);
        ck_assert_int_eq(jobj_get_string(NULL, "x", &s), -EINVAL);
}
END_TEST

/* ---- building ----------------------------------------------------------------------- */

START_TEST(test_build)
{
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_(freep) char *s = NULL;
        size_t len = 0;

        ck_assert_ptr_nonnull(o);
        ck_assert_int_eq(jobj_add_string(o, "path", "/v1/models"), 0);
        ck_assert_int_eq(jobj_add_string(o, "none", NULL), 0);
        ck_assert_int_eq(jobj_add_int64(o, "min", INT64_MIN), 0);
        ck_assert_int_eq(jobj_add_int64(o, "max", INT64_MAX), 0);
        ck_assert_int_eq(jobj_add_bool(o, "yes", true), 0);
        ck_assert_int_eq(jobj_add(o, "arr", json_object_new_array()), 0);
        ck_assert_int_eq(jobj_add(o, "null", NULL), 0);
        ck_assert_int_eq(jobj_add_string(o, "esc", "\"\\\n\x01\xc3\xa9"), 0);
        ck_assert_int_eq(jobj_add_bool(o, "yes", false), 0);   /* replaces, keeps its place */

        ck_assert_int_eq(jobj_to_string(o, &s, &len), 0);
        ck_assert_str_eq(s, "{\"path\":\"/v1/models\",\"none\":null,\"min\":-9223372036854775808,"
                            "\"max\":9223372036854775807,\"yes\":false,\"arr\":[],\"null\":null,"
                            "\"esc\":\"\\\"\\\\\\n\\u0001\xc3\xa9\"}");
        ck_assert_uint_eq(len, strlen(s));

        /* What we write, we read back the same. */
        {
                _cleanup_(json_object_putp) json_object *back = NULL;
                _cleanup_(freep) char *again = NULL;

                ck_assert_int_eq(jobj_parse(s, len, 0, &back, NULL), 0);
                ck_assert_int_eq(jobj_to_string(back, &again, NULL), 0);
                ck_assert_str_eq(again, s);
        }

        /* NULL serializes as null; ret_len is optional. */
        free(s);
        s = NULL;
        ck_assert_int_eq(jobj_to_string(NULL, &s, NULL), 0);
        ck_assert_str_eq(s, "null");
}
END_TEST

/* ---- OpenAI error bodies ------------------------------------------------------------ */

START_TEST(test_openai_error_body)
{
        static const struct {
                const char *message, *type, *param, *code, *out;
        } t[] = {
                { "Invalid API key.", "invalid_request_error", NULL, "invalid_api_key",
                  "{\"error\":{\"message\":\"Invalid API key.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}" },
                { "The model `llama3` does not exist", "invalid_request_error", "model", "model_not_found",
                  "{\"error\":{\"message\":\"The model `llama3` does not exist\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}" },
                { "No provider is online for /v1/chat/completions.", "server_error", NULL, NULL,
                  "{\"error\":{\"message\":\"No provider is online for /v1/chat/completions.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}" },
                { "quote \" backslash \\ newline \n tab \t", "invalid_request_error", NULL, NULL,
                  "{\"error\":{\"message\":\"quote \\\" backslash \\\\ newline \\n tab \\t\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}" },
                { "", "server_error", "", "",
                  "{\"error\":{\"message\":\"\",\"type\":\"server_error\",\"param\":\"\",\"code\":\"\"}}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                _cleanup_(freep) char *s = NULL;
                size_t len = 0;

                ck_assert_int_eq(openai_error_body(t[i].message, t[i].type, t[i].param, t[i].code, &s, &len), 0);
                ck_assert_str_eq(s, t[i].out);
                ck_assert_uint_eq(len, strlen(t[i].out));
        }
}
END_TEST

static Suite *json_util_suite(void) {
        Suite *s = suite_create("json-util");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_parse);
        tcase_add_test(tc, test_parse_null_and_unterminated);
        tcase_add_test(tc, test_depth);
        tcase_add_test(tc, test_get);
        tcase_add_test(tc, test_build);
        tcase_add_test(tc, test_openai_error_body);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(json_util_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
