/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "macro.h"
#include "wg-key.h"

/* RFC 7748 §6.1 X25519 test vectors, in base64 (the same `wg pubkey` gives). */
static const struct {
        const char *private_b64, *public_b64, *private_hex;
} rfc7748[] = {
        { "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",
          "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a" },
        { "XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os=", "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=",
          "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb" },
};

START_TEST(test_public_from_private_vectors)
{
        for (size_t i = 0; i < ELEMENTSOF(rfc7748); i++) {
                WgKey priv, pub, want;
                char b64[WG_KEY_B64_SIZE], hex[WG_KEY_HEX_SIZE];

                ck_assert_int_eq(wg_key_from_base64(rfc7748[i].private_b64, &priv), 0);
                ck_assert_str_eq(wg_key_to_hex(&priv, hex), rfc7748[i].private_hex);
                ck_assert_int_eq(wg_key_public_from_private(&priv, &pub), 0);
                ck_assert_str_eq(wg_key_to_base64(&pub, b64), rfc7748[i].public_b64);
                ck_assert_int_eq(wg_key_from_base64(rfc7748[i].public_b64, &want), 0);
                ck_assert(wg_key_equal(&pub, &want));
        }
}
END_TEST

START_TEST(test_generate)
{
        WgKey a, b, pa, pb;

        ck_assert_int_eq(wg_key_generate(&a), 0);
        ck_assert_int_eq(wg_key_generate(&b), 0);
        ck_assert(!wg_key_equal(&a, &b));
        ck_assert(!wg_key_is_zero(&a));
        /* Clamped like `wg genkey`: low 3 bits clear, bit 255 clear, bit 254 set. */
        ck_assert_uint_eq(a.data[0] & 7, 0);
        ck_assert_uint_eq(a.data[31] & 0xc0, 0x40);
        ck_assert_int_eq(wg_key_public_from_private(&a, &pa), 0);
        ck_assert_int_eq(wg_key_public_from_private(&b, &pb), 0);
        ck_assert(!wg_key_equal(&pa, &pb));

        ck_assert_int_eq(wg_key_generate_preshared(&a), 0);
        ck_assert(!wg_key_is_zero(&a));
        wg_key_wipe(&a);
        ck_assert(wg_key_is_zero(&a));
}
END_TEST

START_TEST(test_zero_key_rejected)
{
        WgKey zero = {}, pub;

        ck_assert(wg_key_is_zero(&zero));
        ck_assert_int_eq(wg_key_public_from_private(&zero, &pub), -EKEYREJECTED);
}
END_TEST

START_TEST(test_base64_roundtrip)
{
        for (int i = 0; i < 1000; i++) {
                WgKey k, back;
                char b64[WG_KEY_B64_SIZE];

                for (size_t j = 0; j < WG_KEY_LEN; j++)
                        k.data[j] = (uint8_t) (random() & 0xff);
                if (i == 0)
                        memset(k.data, 0, WG_KEY_LEN);
                if (i == 1)
                        memset(k.data, 0xff, WG_KEY_LEN);
                wg_key_to_base64(&k, b64);
                ck_assert_uint_eq(strlen(b64), WG_KEY_B64_LEN);
                ck_assert_int_eq(b64[43], '=');
                ck_assert_int_eq(wg_key_from_base64(b64, &back), 0);
                ck_assert(wg_key_equal(&k, &back));
        }
}
END_TEST

START_TEST(test_base64_strict)
{
        static const char *const bad[] = {
                "",
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",            /* no padding */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==",          /* 45 chars */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n",         /* trailing newline */
                " hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",          /* leading space */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=",           /* non-canonical: spare bits set */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==",           /* '=' too early */
                "hSDwCYkwp1R0i33ctD73Wg2-Og0mOBr066SpjqqbTmo=",           /* URL-safe alphabet */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqq\x80Tmo=",        /* high byte */
                "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmoA",           /* 44 chars, no '=' */
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", /* hex */
        };
        WgKey k;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ck_assert_msg(wg_key_from_base64(bad[i], &k) == -EKEYREJECTED, "accepted '%s'", bad[i]);
                ck_assert(!wg_key_b64_is_valid(bad[i]));
        }
        ck_assert_int_eq(wg_key_from_base64(NULL, &k), -EKEYREJECTED);
        ck_assert(!wg_key_b64_is_valid(NULL));
        ck_assert(wg_key_b64_is_valid("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="));
}
END_TEST

START_TEST(test_hex)
{
        WgKey k, back;
        char hex[WG_KEY_HEX_SIZE];
        const char *upper = "8520F0098930A754748B7DDCB43EF75A0DBF3A0D26381AF4EBA4A98EAA9B4E6A";

        ck_assert_int_eq(wg_key_from_hex(upper, strlen(upper), &k), 0);
        ck_assert_str_eq(wg_key_to_hex(&k, hex), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        ck_assert_int_eq(wg_key_from_hex(hex, WG_KEY_HEX_LEN, &back), 0);
        ck_assert(wg_key_equal(&k, &back));

        ck_assert_int_eq(wg_key_from_hex(hex, WG_KEY_HEX_LEN - 1, &back), -EKEYREJECTED);
        hex[10] = 'g';
        ck_assert_int_eq(wg_key_from_hex(hex, WG_KEY_HEX_LEN, &back), -EKEYREJECTED);
        hex[10] = ' ';
        ck_assert_int_eq(wg_key_from_hex(hex, WG_KEY_HEX_LEN, &back), -EKEYREJECTED);
        ck_assert_int_eq(wg_key_from_hex(NULL, 0, &back), -EKEYREJECTED);
}
END_TEST

START_TEST(test_failure_leaves_output_alone)
{
        WgKey k;

        memset(k.data, 0xaa, WG_KEY_LEN);
        ck_assert_int_eq(wg_key_from_base64("nope", &k), -EKEYREJECTED);
        for (size_t i = 0; i < WG_KEY_LEN; i++)
                ck_assert_uint_eq(k.data[i], 0xaa);
}
END_TEST

int main(void) {
        Suite *s = suite_create("wg-key");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_public_from_private_vectors);
        tcase_add_test(tc, test_generate);
        tcase_add_test(tc, test_zero_key_rejected);
        tcase_add_test(tc, test_base64_roundtrip);
        tcase_add_test(tc, test_base64_strict);
        tcase_add_test(tc, test_hex);
        tcase_add_test(tc, test_failure_leaves_output_alone);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
