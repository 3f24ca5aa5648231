/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "request-sign.h"

/*
 * Known answers, computed independently of this code with the openssl command line:
 *
 *   printf 'club-request-v1\nPOST\n/v1/chat/completions\n1700000000\na0a1a2a3a4a5a6a7a8a9aaabacadaeaf' |
 *           openssl dgst -sha256 -mac HMAC -macopt hexkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
 *   printf 'club-request-v1\nGET\n/healthz?probe=1&x=%%2F\n0\n00000000000000000000000000000000' |
 *           openssl dgst -sha256 -mac HMAC -macopt hexkey:ffff…ff (32 bytes)
 *
 * (and the tool itself checked against RFC 4231 test case 2).
 */
static const struct {
        uint8_t secret_first, secret_step;      /* secret[i] = first + i * step */
        const char *method, *target;
        uint64_t time;
        uint8_t nonce_first;                    /* nonce[i] = first + i, or all zero if 0 */
        const char *header;
} known_answers[] = {
        { 0x00, 1, "POST", "/v1/chat/completions", 1700000000, 0xa0,
          "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,"
          "v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760" },
        { 0xff, 0, "GET", "/healthz?probe=1&x=%2F", 0, 0x00,
          "t=0,n=00000000000000000000000000000000,"
          "v1=aa5df10f0ceb8c48da1f905e813273b453fd5829a464c0791e18179ce97d3b42" },
};

static void make_secret(uint8_t secret[static REQUEST_SIGN_SECRET_LEN], uint8_t first, uint8_t step) {
        for (unsigned i = 0; i < REQUEST_SIGN_SECRET_LEN; i++)
                secret[i] = (uint8_t) (first + i * step);
}

static void make_nonce(uint8_t nonce[static REQUEST_SIGN_NONCE_LEN], uint8_t first) {
        for (unsigned i = 0; i < REQUEST_SIGN_NONCE_LEN; i++)
                nonce[i] = first ? (uint8_t) (first + i) : 0;
}

static const uint8_t test_secret[REQUEST_SIGN_SECRET_LEN] = "0123456789abcdef0123456789abcdef";

START_TEST(test_known_answers)
{
        for (size_t i = 0; i < sizeof known_answers / sizeof known_answers[0]; i++) {
                uint8_t secret[REQUEST_SIGN_SECRET_LEN], nonce[REQUEST_SIGN_NONCE_LEN];
                ReplayCache *c = NULL;
                char *h = NULL;

                make_secret(secret, known_answers[i].secret_first, known_answers[i].secret_step);
                make_nonce(nonce, known_answers[i].nonce_first);
                ck_assert_int_eq(request_sign(secret, known_answers[i].method, known_answers[i].target,
                                              known_answers[i].time, nonce, &h), 0);
                ck_assert_str_eq(h, known_answers[i].header);
                ck_assert_uint_lt(strlen(h), REQUEST_SIGN_HEADER_VALUE_MAX);

                /* And the verifier accepts the independently computed header. */
                ck_assert_int_eq(replay_cache_new(16, 60, &c), 0);
                ck_assert_int_eq(request_verify(c, secret, known_answers[i].method, known_answers[i].target,
                                                known_answers[i].header, known_answers[i].time + 5), 0);
                c = replay_cache_free(c);
                free(h);
        }
}
END_TEST

START_TEST(test_roundtrip_and_replay)
{
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        char *h1 = NULL, *h2 = NULL;
        uint64_t now = 1700000000;

        ck_assert_int_eq(replay_cache_new(0, 0, &c), 0);
        ck_assert_uint_eq(replay_cache_window(c), REQUEST_SIGN_WINDOW_SEC_DEFAULT);

        ck_assert_int_eq(request_sign(test_secret, "POST", "/v1/embeddings", now, NULL, &h1), 0);
        ck_assert_int_eq(request_sign(test_secret, "POST", "/v1/embeddings", now, NULL, &h2), 0);
        ck_assert_str_ne(h1, h2);                       /* fresh random nonces */

        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/embeddings", h1, now), 0);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/embeddings", h1, now), -EALREADY);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/embeddings", h1, now + 59), -EALREADY);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/embeddings", h2, now + 1), 0);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/embeddings", h2, now + 2), -EALREADY);
        ck_assert_uint_eq(replay_cache_size(c), 2);
        free(h1);
        free(h2);
}
END_TEST

START_TEST(test_window_edges)
{
        static const struct {
                int64_t skew;   /* signature time minus now */
                int r;
        } cases[] = {
                { 0, 0 },
                { -60, 0 },
                { -61, -ESTALE },
                { 60, 0 },
                { 61, -ESTALE },
                { -100000, -ESTALE },
                { 100000, -ESTALE },
        };
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint64_t now = 1700000000;

        ck_assert_int_eq(replay_cache_new(64, 60, &c), 0);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *h = NULL;

                ck_assert_int_eq(request_sign(test_secret, "GET", "/healthz", now + cases[i].skew, NULL, &h), 0);
                ck_assert_int_eq(request_verify(c, test_secret, "GET", "/healthz", h, now), cases[i].r);
                free(h);
        }
        /* Refused requests are not remembered. */
        ck_assert_uint_eq(replay_cache_size(c), 3);
}
END_TEST

START_TEST(test_tampering)
{
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint8_t other[REQUEST_SIGN_SECRET_LEN];
        uint64_t now = 1700000000;
        char *h = NULL, *t;

        ck_assert_int_eq(replay_cache_new(64, 60, &c), 0);
        ck_assert_int_eq(request_sign(test_secret, "POST", "/v1/chat/completions", now, NULL, &h), 0);

        memcpy(other, test_secret, sizeof other);
        other[31] ^= 1;
        ck_assert_int_eq(request_verify(c, other, "POST", "/v1/chat/completions", h, now), -EKEYREJECTED);
        ck_assert_int_eq(request_verify(c, test_secret, "PUT", "/v1/chat/completions", h, now), -EKEYREJECTED);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/completions", h, now), -EKEYREJECTED);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/chat/completions?x", h, now), -EKEYREJECTED);

        /* Another time (still in the window) or another nonce: the MAC no longer fits. */
        t = strdup(h);
        t[11] = t[11] == '0' ? '1' : '0';               /* last digit of t=1700000000 */
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/chat/completions", t, now), -EKEYREJECTED);
        strcpy(t, h);
        t[15] = t[15] == 'a' ? 'b' : 'a';               /* in the nonce */
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/chat/completions", t, now), -EKEYREJECTED);
        strcpy(t, h);
        t[strlen(t) - 1] = t[strlen(t) - 1] == 'a' ? 'b' : 'a';   /* in the MAC */
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/chat/completions", t, now), -EKEYREJECTED);

        /* None of that touched the cache; the genuine request still passes once. */
        ck_assert_uint_eq(replay_cache_size(c), 0);
        ck_assert_int_eq(request_verify(c, test_secret, "POST", "/v1/chat/completions", h, now), 0);
        free(t);
        free(h);
}
END_TEST

START_TEST(test_malformed_headers)
{
        static const char *const bad[] = {
                "",
                "t=1700000000",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
                "n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,t=1700000000,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                " t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000, n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=01700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=+1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=99999999999999999999,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=A0A1A2A3A4A5A6A7A8A9AAABACADAEAF,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadae,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeafa0,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac76",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac7600",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466A18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760,",
                "t=1700000000,n=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v2=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
                "t=1700000000,n=g0a1a2a3a4a5a6a7a8a9aaabacadaeaf,v1=466a18cb1ac5154590d88664b9f327ad55daa24b631390bba8322e48e1aac760",
        };
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint8_t secret[REQUEST_SIGN_SECRET_LEN];

        make_secret(secret, 0, 1);
        ck_assert_int_eq(replay_cache_new(16, 60, &c), 0);
        ck_assert_int_eq(request_verify(c, secret, "POST", "/v1/chat/completions", NULL, 1700000000), -EBADMSG);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                ck_assert_msg(request_verify(c, secret, "POST", "/v1/chat/completions", bad[i], 1700000000) == -EBADMSG,
                              "accepted: %s", bad[i]);
        /* A method or target that could not have been signed. */
        ck_assert_int_eq(request_verify(c, secret, "post", "/v1/chat/completions", known_answers[0].header, 1700000000), -EBADMSG);
        ck_assert_int_eq(request_verify(c, secret, "POST", "v1/chat", known_answers[0].header, 1700000000), -EBADMSG);
        /* The genuine one, for contrast. */
        ck_assert_int_eq(request_verify(c, secret, "POST", "/v1/chat/completions", known_answers[0].header, 1700000000), 0);
}
END_TEST

START_TEST(test_sign_arguments)
{
        char long_target[REQUEST_SIGN_TARGET_MAX + 2];
        char *h = NULL;

        ck_assert_int_eq(request_sign(test_secret, "", "/", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "get", "/", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET\n", "/", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "ABCDEFGHIJKLMNOPQ", "/", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "healthz", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "/a b", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "/a\nGET", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "/\x7f", 1, NULL, &h), -EINVAL);
        ck_assert_int_eq(request_sign(test_secret, "GET", "/", (uint64_t) INT64_MAX + 1, NULL, &h), -EINVAL);
        ck_assert_ptr_null(h);

        long_target[0] = '/';
        memset(long_target + 1, 'a', REQUEST_SIGN_TARGET_MAX - 1);
        long_target[REQUEST_SIGN_TARGET_MAX] = 0;
        ck_assert_int_eq(request_sign(test_secret, "ABCDEFGHIJKLMNOP", long_target, 1, NULL, &h), 0);
        free(h);
        long_target[REQUEST_SIGN_TARGET_MAX] = 'a';
        long_target[REQUEST_SIGN_TARGET_MAX + 1] = 0;
        ck_assert_int_eq(request_sign(test_secret, "GET", long_target, 1, NULL, &h), -EINVAL);
}
END_TEST

static void nonce_from_int(uint8_t nonce[static REQUEST_SIGN_NONCE_LEN], uint64_t v) {
        memset(nonce, 0x5a, REQUEST_SIGN_NONCE_LEN);
        memcpy(nonce, &v, sizeof v);
}

START_TEST(test_cache_bound)
{
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint8_t n[REQUEST_SIGN_NONCE_LEN];
        uint64_t now = 1000;

        ck_assert_int_eq(replay_cache_new(REPLAY_CACHE_ENTRIES_MAX + 1, 60, &c), -EINVAL);
        ck_assert_int_eq(replay_cache_new(16, 86401, &c), -EINVAL);
        ck_assert_int_eq(replay_cache_new(4, 10, &c), 0);

        for (uint64_t i = 0; i < 4; i++) {
                nonce_from_int(n, i);
                ck_assert_int_eq(replay_cache_add(c, n, now, now), 0);
        }
        ck_assert_uint_eq(replay_cache_size(c), 4);

        /* Full of live entries: refused, not forgotten. */
        nonce_from_int(n, 100);
        ck_assert_int_eq(replay_cache_add(c, n, now, now), -ENOBUFS);
        ck_assert_int_eq(replay_cache_add(c, n, now, now), -ENOBUFS);
        ck_assert_uint_eq(replay_cache_size(c), 4);
        for (uint64_t i = 0; i < 4; i++) {
                nonce_from_int(n, i);
                ck_assert_int_eq(replay_cache_add(c, n, now, now + 10), -EALREADY);   /* window's last second */
        }

        /* Once they leave the window, their slots are taken again. */
        nonce_from_int(n, 100);
        ck_assert_int_eq(replay_cache_add(c, n, now + 11, now + 11), 0);
        ck_assert_uint_le(replay_cache_size(c), 4);
        for (uint64_t i = 101; i < 104; i++) {
                nonce_from_int(n, i);
                ck_assert_int_eq(replay_cache_add(c, n, now + 11, now + 11), 0);
        }
        nonce_from_int(n, 104);
        ck_assert_int_eq(replay_cache_add(c, n, now + 11, now + 11), -ENOBUFS);

        /* A nonce whose time already left the window needs no entry. */
        nonce_from_int(n, 200);
        ck_assert_int_eq(replay_cache_add(c, n, now, now + 11), 0);
        ck_assert_uint_le(replay_cache_size(c), 4);

        /* An entry lives until its own time leaves the window, even a time in the future. */
        nonce_from_int(n, 100);
        ck_assert_int_eq(replay_cache_add(c, n, now + 11, now + 21), -EALREADY);
}
END_TEST

START_TEST(test_cache_default_size)
{
        _cleanup_(replay_cache_freep) ReplayCache *c = NULL;
        uint8_t n[REQUEST_SIGN_NONCE_LEN];
        uint64_t now = 1700000000;

        ck_assert_int_eq(replay_cache_new(0, 60, &c), 0);
        for (uint64_t i = 0; i < REPLAY_CACHE_ENTRIES_DEFAULT; i++) {
                nonce_from_int(n, i * 2654435761u);
                ck_assert_int_eq(replay_cache_add(c, n, now + (i % 30), now + 30), 0);
        }
        ck_assert_uint_eq(replay_cache_size(c), REPLAY_CACHE_ENTRIES_DEFAULT);
        nonce_from_int(n, UINT64_MAX);
        ck_assert_int_eq(replay_cache_add(c, n, now + 30, now + 30), -ENOBUFS);
        for (uint64_t i = 0; i < REPLAY_CACHE_ENTRIES_DEFAULT; i += 97) {
                nonce_from_int(n, i * 2654435761u);
                ck_assert_int_eq(replay_cache_add(c, n, now + (i % 30), now + 30), -EALREADY);
        }

        /* 61 s after the oldest ones: those with time now+0 have expired, the rest have not. */
        nonce_from_int(n, UINT64_MAX);
        ck_assert_int_eq(replay_cache_add(c, n, now + 61, now + 61), 0);
        ck_assert_uint_le(replay_cache_size(c), REPLAY_CACHE_ENTRIES_DEFAULT);
        nonce_from_int(n, 1 * 2654435761u);             /* time now+1: still live */
        ck_assert_int_eq(replay_cache_add(c, n, now + 1, now + 61), -EALREADY);

        /* Much later, everything has gone and the cache takes a full load again. */
        for (uint64_t i = 0; i < REPLAY_CACHE_ENTRIES_DEFAULT; i++) {
                nonce_from_int(n, i * 2654435761u);
                ck_assert_int_eq(replay_cache_add(c, n, now + 1000, now + 1000), 0);
        }
}
END_TEST

int main(void) {
        Suite *s = suite_create("request-sign");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_known_answers);
        tcase_add_test(tc, test_roundtrip_and_replay);
        tcase_add_test(tc, test_window_edges);
        tcase_add_test(tc, test_tampering);
        tcase_add_test(tc, test_malformed_headers);
        tcase_add_test(tc, test_sign_arguments);
        tcase_add_test(tc, test_cache_bound);
        tcase_add_test(tc, test_cache_default_size);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
