/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The registration client's pure parts (daemons/clubd/agent-register.c): key shapes, the
 * registration URL and the insecure rule, the answer parser field by field, the gateway's
 * error bodies, and how a refusal is classified. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent-register.h"

START_TEST(test_key_valid)
{
        ck_assert(agent_key_valid("ic-abc"));
        ck_assert(agent_key_valid("ie-0123456789"));
        ck_assert(!agent_key_valid(NULL));
        ck_assert(!agent_key_valid(""));
        ck_assert(!agent_key_valid("ic-"));
        ck_assert(!agent_key_valid("ix-abc"));
        ck_assert(!agent_key_valid("ic-a b"));
        ck_assert(!agent_key_valid("ic-a\n"));
        ck_assert(!agent_key_valid("ic-\xc3\xa9"));
}
END_TEST

START_TEST(test_register_url)
{
        static const struct {
                const char *url;
                bool insecure;
                int r;
                const char *want;
        } cases[] = {
                { "https://gw.example.org", false, 0, "https://gw.example.org/api/v1/agents/register" },
                { "https://gw.example.org/", false, 0, "https://gw.example.org/api/v1/agents/register" },
                { "https://gw.example.org:8443/club//", false, 0, "https://gw.example.org:8443/club/api/v1/agents/register" },
                { "http://127.0.0.1:8080", false, 0, "http://127.0.0.1:8080/api/v1/agents/register" },
                { "http://127.1.2.3", false, 0, "http://127.1.2.3/api/v1/agents/register" },
                { "http://localhost:8080", false, 0, "http://localhost:8080/api/v1/agents/register" },
                { "http://[::1]:8080", false, 0, "http://[::1]:8080/api/v1/agents/register" },
                { "http://10.0.0.1:8080", false, -EPROTONOSUPPORT, NULL },
                { "http://gw.example.org", false, -EPROTONOSUPPORT, NULL },
                { "http://[fd00::1]:80", false, -EPROTONOSUPPORT, NULL },
                { "http://127.0.0.1.evil.org", false, -EPROTONOSUPPORT, NULL },
                { "http://10.0.0.1:8080", true, 0, "http://10.0.0.1:8080/api/v1/agents/register" },
                { "ftp://gw", true, -EINVAL, NULL },
                { "https://", true, -EINVAL, NULL },
                { "https:///path", true, -EINVAL, NULL },
                { "https://gw?x=1", true, -EINVAL, NULL },
                { "https://gw#f", true, -EINVAL, NULL },
                { "https://user@gw", true, -EINVAL, NULL },
                { "https://g w", true, -EINVAL, NULL },
                { "https://[::1", true, -EINVAL, NULL },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *u = NULL;

                ck_assert_msg(agent_register_url(cases[i].url, cases[i].insecure, &u) == cases[i].r, "%s", cases[i].url);
                if (cases[i].want)
                        ck_assert_str_eq(u, cases[i].want);
                free(u);
        }
}
END_TEST

static const char answer[] =
        "{\"provider_id\":7,\"name\":\"gpu-box-1\",\"mesh_address\":\"100.96.0.8\","
        "\"gateway_public_key\":\"HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVc=\","
        "\"gateway_endpoint\":\"gw.example.org:51820\",\"gateway_mesh_address\":\"100.96.0.1\","
        "\"request_secret\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\",\"heartbeat_interval_sec\":30,"
        "\"future_field\":[1,2]}";

START_TEST(test_parse_answer)
{
        AgentSavedState s = {};
        struct in_addr a;
        const char *reason = NULL;

        ck_assert_int_eq(agent_registration_parse(answer, strlen(answer), &s, &reason), 0);
        ck_assert_int_eq(s.provider_id, 7);
        ck_assert_str_eq(s.name, "gpu-box-1");
        inet_pton(AF_INET, "100.96.0.8", &a);
        ck_assert_uint_eq(s.mesh_address.s_addr, a.s_addr);
        inet_pton(AF_INET, "100.96.0.1", &a);
        ck_assert_uint_eq(s.gateway_mesh_address.s_addr, a.s_addr);
        ck_assert_str_eq(s.gateway_endpoint, "gw.example.org:51820");
        ck_assert_uint_eq(s.heartbeat_interval_sec, 30);
        for (unsigned i = 0; i < 32; i++)
                ck_assert_uint_eq(s.request_secret[i], i);
        agent_saved_state_done(&s);
}
END_TEST

START_TEST(test_parse_answer_refuses)
{
        static const struct {
                const char *from, *to, *reason;
        } cases[] = {
                { "\"provider_id\":7", "\"provider_id\":0", "provider_id" },
                { "\"provider_id\":7", "\"provider_id\":\"7\"", "provider_id" },
                { "\"provider_id\":7,", "", "provider_id" },
                { "gpu-box-1", "gpu box", "name" },
                { "gpu-box-1", "", "name" },
                { "\"mesh_address\":\"100.96.0.8\"", "\"mesh_address\":\"100.96.0.1\"", "mesh_address" },
                { "100.96.0.8", "fd00::8", "mesh_address" },
                { "100.96.0.1\"", "100.96.0.256\"", "gateway_mesh_address" },
                { "HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVc=", "HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVd=", "gateway_public_key" },
                { "HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVc=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "gateway_public_key" },
                { "gw.example.org:51820", "gw.example.org", "gateway_endpoint" },
                { "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAECAw==", "request_secret" },
                { "\"heartbeat_interval_sec\":30", "\"heartbeat_interval_sec\":0", "heartbeat_interval_sec" },
                { "\"heartbeat_interval_sec\":30", "\"heartbeat_interval_sec\":30.5", "heartbeat_interval_sec" },
                { "{\"provider_id\"", "[{\"provider_id\"", "JSON object" },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                AgentSavedState s = {};
                const char *p = strstr(answer, cases[i].from), *reason = NULL;
                char buf[2048];

                ck_assert_ptr_nonnull(p);
                snprintf(buf, sizeof buf, "%.*s%s%s", (int) (p - answer), answer, cases[i].to, p + strlen(cases[i].from));
                ck_assert_int_eq(agent_registration_parse(buf, strlen(buf), &s, &reason), -EBADMSG);
                ck_assert_msg(reason && strstr(reason, cases[i].reason), "case %zu: %s", i, reason);
                agent_saved_state_done(&s);
        }
}
END_TEST

START_TEST(test_error_body)
{
        static const char body[] =
                "{\"error\":{\"message\":\"Incorrect API key\\nprovided.\",\"type\":\"invalid_request_error\","
                "\"param\":null,\"code\":\"invalid_api_key\"}}";
        char *code = NULL, *message = NULL;

        ck_assert_int_eq(agent_gateway_error_parse(body, strlen(body), &code, &message), 0);
        ck_assert_str_eq(code, "invalid_api_key");
        ck_assert_str_eq(message, "Incorrect API key provided.");   /* control characters replaced */
        free(code);
        free(message);
        ck_assert_int_eq(agent_gateway_error_parse("{\"error\":{}}", 12, &code, &message), 0);
        ck_assert_ptr_null(code);
        ck_assert_ptr_null(message);
        ck_assert_int_eq(agent_gateway_error_parse("<html>", 6, &code, &message), -EBADMSG);
        ck_assert_int_eq(agent_gateway_error_parse("{\"error\":\"x\"}", 13, &code, &message), -EBADMSG);
}
END_TEST

START_TEST(test_classify)
{
        ck_assert_int_eq(agent_register_classify(401, "invalid_api_key"), -EKEYREJECTED);
        ck_assert_int_eq(agent_register_classify(403, "insufficient_scope"), -EKEYREJECTED);
        ck_assert_int_eq(agent_register_classify(429, "rate_limit_exceeded"), -EDQUOT);
        ck_assert_int_eq(agent_register_classify(503, "mesh_full"), -EHOSTUNREACH);
        ck_assert_int_eq(agent_register_classify(500, NULL), -EHOSTUNREACH);
        ck_assert_int_eq(agent_register_classify(409, "name_in_use"), -EREMOTEIO);
        ck_assert_int_eq(agent_register_classify(400, "invalid_request"), -EREMOTEIO);
}
END_TEST

int main(void) {
        Suite *s = suite_create("agent-register");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_key_valid);
        tcase_add_test(tc, test_register_url);
        tcase_add_test(tc, test_parse_answer);
        tcase_add_test(tc, test_parse_answer_refuses);
        tcase_add_test(tc, test_error_body);
        tcase_add_test(tc, test_classify);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
