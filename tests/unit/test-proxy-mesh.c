/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Who may use clubd's mesh listener (proxy_mesh_check() in daemons/clubd/proxy.c): only the
 * gateway's address, only with a valid, fresh, unreplayed signature; /healthz for the
 * gateway's probe without one. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "proxy.h"

static ProxyMeshAuth auth;
static ReplayCache *cache;
static struct sockaddr_in gw, other;
static struct sockaddr_in6 gw_mapped;
static const uint64_t now = 1700000000;

static void setup(void) {
        auth = (ProxyMeshAuth) {};
        inet_pton(AF_INET, "100.96.0.1", &auth.gateway);
        for (size_t i = 0; i < sizeof auth.secret; i++)
                auth.secret[i] = (uint8_t) i;
        gw = (struct sockaddr_in) { .sin_family = AF_INET, .sin_addr = auth.gateway, .sin_port = htons(40000) };
        other = gw;
        inet_pton(AF_INET, "100.96.0.2", &other.sin_addr);
        gw_mapped = (struct sockaddr_in6) { .sin6_family = AF_INET6 };
        inet_pton(AF_INET6, "::ffff:100.96.0.1", &gw_mapped.sin6_addr);
        ck_assert_int_eq(replay_cache_new(128, 60, &cache), 0);
}

static void teardown(void) {
        cache = replay_cache_free(cache);
}

static char *sign(const uint8_t *secret, const char *method, const char *target, uint64_t t) {
        char *h = NULL;

        ck_assert_int_eq(request_sign(secret, method, target, t, NULL, &h), 0);
        return h;
}

static int check_(const void *peer, const char *method, const char *target, const char *sig, ProxyMeshVerdict *v) {
        return proxy_mesh_check(&auth, cache, peer, method, target, sig, now, v);
}

START_TEST(test_signed)
{
        ProxyMeshVerdict v;
        char *h = sign(auth.secret, "POST", "/v1/chat/completions", now);

        ck_assert_int_eq(check_(&gw, "POST", "/v1/chat/completions", h, &v), 0);
        ck_assert_int_lt(check_(&gw, "POST", "/v1/chat/completions", h, &v), 0);
        ck_assert_uint_eq(v.status, 401);
        ck_assert_str_eq(v.code, "replayed_signature");
        free(h);

        h = sign(auth.secret, "POST", "/v1/embeddings?x=1", now);
        ck_assert_int_eq(check_(&gw_mapped, "POST", "/v1/embeddings?x=1", h, &v), 0);   /* v4-mapped */
        free(h);
}
END_TEST

START_TEST(test_refused)
{
        uint8_t wrong[REQUEST_SIGN_SECRET_LEN] = { 9 };
        ProxyMeshVerdict v;
        char *h;

        h = sign(auth.secret, "POST", "/v1/chat/completions", now);
        ck_assert_int_eq(check_(&other, "POST", "/v1/chat/completions", h, &v), -EPERM);
        ck_assert_uint_eq(v.status, 403);
        ck_assert_str_eq(v.code, "forbidden_source");
        ck_assert_int_eq(check_(NULL, "POST", "/v1/chat/completions", h, &v), -EPERM);
        /* A signature for another target or method. */
        ck_assert_int_lt(check_(&gw, "POST", "/v1/completions", h, &v), 0);
        ck_assert_str_eq(v.code, "invalid_signature");
        ck_assert_int_lt(check_(&gw, "GET", "/v1/chat/completions", h, &v), 0);
        ck_assert_str_eq(v.code, "invalid_signature");
        free(h);

        ck_assert_int_eq(check_(&gw, "POST", "/v1/chat/completions", NULL, &v), -EBADMSG);
        ck_assert_uint_eq(v.status, 401);
        ck_assert_str_eq(v.code, "missing_signature");
        ck_assert_int_lt(check_(&gw, "POST", "/v1/chat/completions", "t=1,n=0,v1=0", &v), 0);
        ck_assert_str_eq(v.code, "invalid_signature");

        h = sign(wrong, "POST", "/v1/chat/completions", now);
        ck_assert_int_lt(check_(&gw, "POST", "/v1/chat/completions", h, &v), 0);
        ck_assert_str_eq(v.code, "invalid_signature");
        free(h);

        h = sign(auth.secret, "POST", "/v1/chat/completions", now - 61);
        ck_assert_int_lt(check_(&gw, "POST", "/v1/chat/completions", h, &v), 0);
        ck_assert_str_eq(v.code, "stale_signature");
        free(h);
}
END_TEST

START_TEST(test_healthz)
{
        ProxyMeshVerdict v;

        ck_assert_int_eq(check_(&gw, "GET", "/healthz", NULL, &v), 0);
        ck_assert_int_eq(check_(&gw, "HEAD", "/healthz?x", NULL, &v), 0);
        ck_assert_int_eq(check_(&other, "GET", "/healthz", NULL, &v), -EPERM);
        ck_assert_int_eq(check_(&gw, "POST", "/healthz", NULL, &v), -EBADMSG);
        ck_assert_int_eq(check_(&gw, "GET", "/healthzz", NULL, &v), -EBADMSG);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-mesh");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_signed);
        tcase_add_test(tc, test_refused);
        tcase_add_test(tc, test_healthz);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
