/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "keys.h"

static bool is_base62(char c) {
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int digit_index(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'Z')
                return c - 'A' + 10;
        return c - 'a' + 36;
}

START_TEST(test_generate_format)
{
        for (KeyKind kind = 0; kind < _KEY_KIND_MAX; kind++) {
                char *k = NULL;

                ck_assert_int_eq(key_generate(kind, &k), 0);
                ck_assert_uint_eq(strlen(k), KEY_LEN);
                ck_assert_ptr_nonnull(startswith(k, key_kind_tag(kind)));
                for (size_t i = KEY_TAG_LEN; i < KEY_LEN; i++)
                        ck_assert(is_base62(k[i]));
                ck_assert_int_eq(key_kind_of(k), kind);
                ck_assert_int_eq(key_parse(k, kind, NULL, NULL), 0);
                ck_assert_int_eq(key_parse(k, kind == KEY_KIND_API ? KEY_KIND_ENROLLMENT : KEY_KIND_API, NULL, NULL),
                                 -EKEYREJECTED);
                erase_and_free(k);
        }
        ck_assert_str_eq(key_kind_tag(KEY_KIND_API), "ic-");
        ck_assert_str_eq(key_kind_tag(KEY_KIND_ENROLLMENT), "ie-");
        ck_assert_ptr_null(key_kind_tag(_KEY_KIND_MAX));
        ck_assert_ptr_null(key_kind_tag(_KEY_KIND_INVALID));
        ck_assert_int_eq(key_generate(_KEY_KIND_MAX, &(char *) { NULL }), -EINVAL);
        ck_assert_int_eq(key_kind_of("sk-abc"), _KEY_KIND_INVALID);
        ck_assert_int_eq(key_kind_of(NULL), _KEY_KIND_INVALID);
}
END_TEST

/* 43 × log2(62) ≥ 256: the random part carries at least 256 bits. */
START_TEST(test_entropy_budget)
{
        /* log2(62) > 5.9541; 43 × 5.9541 = 256.03 */
        ck_assert_uint_ge(KEY_RANDOM_CHARS * 59541u, 256u * 10000u);
}
END_TEST

/* Every digit appears, none far more often than the others: no modulo bias, no stuck bytes. */
START_TEST(test_generate_distribution)
{
        enum { N = 2000 };
        unsigned counts[62] = {};
        char *prev = NULL;
        double expected = (double) N * KEY_RANDOM_CHARS / 62, chi2 = 0;

        for (unsigned i = 0; i < N; i++) {
                char *k = NULL;

                ck_assert_int_eq(key_generate(KEY_KIND_API, &k), 0);
                for (size_t j = KEY_TAG_LEN; j < KEY_LEN; j++)
                        counts[digit_index(k[j])]++;
                if (prev)
                        ck_assert_str_ne(prev, k);
                erase_and_free(prev);
                prev = k;
        }
        erase_and_free(prev);

        for (unsigned d = 0; d < 62; d++) {
                ck_assert_uint_gt(counts[d], 0);
                chi2 += (counts[d] - expected) * (counts[d] - expected) / expected;
        }
        /* 61 degrees of freedom: P(chi2 > 130) is about 1e-6. */
        ck_assert_msg(chi2 < 130, "chi2 = %f", chi2);
}
END_TEST

START_TEST(test_parse_known_hash)
{
        /* printf %s <key> | sha256sum */
        static const struct {
                const char *key;
                KeyKind kind;
                const char *prefix;
                uint8_t hash[KEY_HASH_LEN];
        } cases[] = {
                { "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg", KEY_KIND_API, "01234567",
                  { 0x4d, 0xb8, 0x1e, 0x5d, 0xc4, 0x85, 0x50, 0x11, 0xe5, 0x8a, 0x0b, 0xe8, 0xbc, 0x81, 0x9c, 0xe4,
                    0xdc, 0x16, 0xf0, 0xb9, 0x23, 0x76, 0x20, 0xdd, 0x8f, 0x42, 0x17, 0x11, 0x0a, 0x5e, 0x07, 0x02 } },
                { "ie-zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJ", KEY_KIND_ENROLLMENT, "zyxwvuts",
                  { 0xe4, 0xaa, 0xaa, 0x5b, 0x21, 0x0c, 0x98, 0x60, 0xac, 0x50, 0x7a, 0xcd, 0xe8, 0x3d, 0x5c, 0x69,
                    0xe6, 0x9a, 0x42, 0xee, 0xed, 0xfa, 0xb9, 0xe1, 0x90, 0x3a, 0x03, 0x4a, 0xcb, 0x58, 0x5c, 0xa7 } },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char prefix[KEY_PREFIX_SIZE];
                uint8_t hash[KEY_HASH_LEN];

                ck_assert_int_eq(key_parse(cases[i].key, cases[i].kind, prefix, hash), 0);
                ck_assert_str_eq(prefix, cases[i].prefix);
                ck_assert(key_prefix_is_valid(prefix));
                ck_assert_mem_eq(hash, cases[i].hash, KEY_HASH_LEN);
                ck_assert(key_hash_equal(hash, cases[i].hash));
                hash[KEY_HASH_LEN - 1] ^= 0x80;
                ck_assert(!key_hash_equal(hash, cases[i].hash));
        }
}
END_TEST

START_TEST(test_parse_rejects)
{
        static const char *const bad[] = {
                "",
                "ic-",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef",        /* one short */
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh",      /* one long */
                "IC-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",
                "ie-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",       /* another kind */
                "ic_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef-",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef_",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef+",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef/",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef=",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef ",
                " ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef\n",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef\x80",
                "ic-0123456789ABCDEFGHIJKLMNOP\xc3\xa9RSTUVWXYZabcde",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef@",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef`",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef{",
                "ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef[",
        };
        char prefix[KEY_PREFIX_SIZE] = "unchang";
        uint8_t hash[KEY_HASH_LEN];

        memset(hash, 0xaa, sizeof hash);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                ck_assert_msg(key_parse(bad[i], KEY_KIND_API, prefix, hash) == -EKEYREJECTED, "accepted: %s", bad[i]);
        ck_assert_int_eq(key_parse(NULL, KEY_KIND_API, prefix, hash), -EKEYREJECTED);
        ck_assert_int_eq(key_parse("ic-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg", _KEY_KIND_MAX, prefix, hash),
                         -EKEYREJECTED);
        /* Outputs untouched on failure. */
        ck_assert_str_eq(prefix, "unchang");
        for (size_t i = 0; i < sizeof hash; i++)
                ck_assert_uint_eq(hash[i], 0xaa);
}
END_TEST

START_TEST(test_prefix_is_valid)
{
        ck_assert(key_prefix_is_valid("Ab3dEf9h"));
        ck_assert(!key_prefix_is_valid("Ab3dEf9"));
        ck_assert(!key_prefix_is_valid("Ab3dEf9hi"));
        ck_assert(!key_prefix_is_valid("Ab3dEf9-"));
        ck_assert(!key_prefix_is_valid(""));
        ck_assert(!key_prefix_is_valid(NULL));
}
END_TEST

START_TEST(test_random_bytes)
{
        uint8_t a[64] = {}, b[64] = {};

        ck_assert_int_eq(random_bytes(a, sizeof a), 0);
        ck_assert_int_eq(random_bytes(b, sizeof b), 0);
        ck_assert(memcmp(a, b, sizeof a) != 0);
        ck_assert_int_eq(random_bytes(NULL, 0), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("keys");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_generate_format);
        tcase_add_test(tc, test_entropy_budget);
        tcase_add_test(tc, test_generate_distribution);
        tcase_add_test(tc, test_parse_known_hash);
        tcase_add_test(tc, test_parse_rejects);
        tcase_add_test(tc, test_prefix_is_valid);
        tcase_add_test(tc, test_random_bytes);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
