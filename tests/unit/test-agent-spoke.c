/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Resolving the gateway's endpoint without blocking the loop (daemons/clubd/agent-spoke.c):
 * IP literals at once, names in a helper thread reporting over an eventfd, cancellation
 * while the thread runs. (The spoke itself is tested with wireguard-go in test-clubd-mesh.sh.) */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <string.h>

#include "agent-spoke.h"

typedef struct Result {
        int calls;
        int error;
        WgEndpoint endpoint;
} Result;

static void on_done(AgentResolve *r, int error, const WgEndpoint *ep, void *userdata) {
        Result *res = userdata;

        res->calls++;
        res->error = error;
        if (ep)
                res->endpoint = *ep;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), -ETIMEDOUT);
}

/* Run the loop until the resolution reports (or 10 s pass). */
static Result resolve(const char *endpoint) {
        sd_event *e = NULL;
        AgentResolve *r = NULL;
        Result res = {};
        char buf[WG_ENDPOINT_STRLEN];

        ck_assert_int_ge(sd_event_new(&e), 0);
        ck_assert_int_ge(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, 10 * USEC_PER_SEC, 0, on_timeout, NULL), 0);
        ck_assert_int_eq(agent_resolve_start(e, endpoint, on_done, &res, &r), 0);
        while (res.calls == 0)
                ck_assert_int_ge(sd_event_run(e, UINT64_MAX), 0);
        ck_assert_int_eq(res.calls, 1);
        if (res.error == 0)
                ck_assert_ptr_nonnull(wg_endpoint_to_string(&res.endpoint, buf));
        agent_resolve_free(r);
        sd_event_unref(e);
        return res;
}

START_TEST(test_literals)
{
        Result r;
        struct in_addr a;

        r = resolve("10.86.0.1:51820");
        ck_assert_int_eq(r.error, 0);
        ck_assert_int_eq(r.endpoint.sa.sa_family, AF_INET);
        inet_pton(AF_INET, "10.86.0.1", &a);
        ck_assert_uint_eq(r.endpoint.in.sin_addr.s_addr, a.s_addr);
        ck_assert_uint_eq(ntohs(r.endpoint.in.sin_port), 51820);

        r = resolve("[::1]:7");
        if (r.error == 0) {             /* no IPv6 at all on some builders (AI_ADDRCONFIG) */
                ck_assert_int_eq(r.endpoint.sa.sa_family, AF_INET6);
                ck_assert_uint_eq(ntohs(r.endpoint.in6.sin6_port), 7);
        }
}
END_TEST

START_TEST(test_name_in_thread)
{
        /* localhost comes from /etc/hosts: no DNS server is asked. */
        Result r = resolve("localhost:51820");

        ck_assert_int_eq(r.error, 0);
        ck_assert_uint_eq(ntohs(r.endpoint.sa.sa_family == AF_INET ? r.endpoint.in.sin_port : r.endpoint.in6.sin6_port), 51820);
}
END_TEST

START_TEST(test_cancel_and_invalid)
{
        sd_event *e = NULL;
        AgentResolve *r = NULL;
        Result res = {};

        ck_assert_int_ge(sd_event_new(&e), 0);
        ck_assert_int_eq(agent_resolve_start(e, "gw.example.org", on_done, &res, &r), -EINVAL);   /* no port */
        ck_assert_int_eq(agent_resolve_start(e, "localhost:1", on_done, &res, &r), 0);
        agent_resolve_free(r);          /* the thread may still run; it frees its half */
        ck_assert_int_ge(sd_event_run(e, 100 * USEC_PER_MSEC), 0);
        ck_assert_int_eq(res.calls, 0);
        sd_event_unref(e);
}
END_TEST

int main(void) {
        Suite *s = suite_create("agent-spoke");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_literals);
        tcase_add_test(tc, test_name_in_thread);
        tcase_add_test(tc, test_cancel_and_invalid);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
