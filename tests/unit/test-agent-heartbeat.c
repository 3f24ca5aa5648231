/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Heartbeats (daemons/clubd/agent-heartbeat.c): the body the gateway's parser expects, with
 * the protocol's limits applied, what each kind of answer means, and the timing: ±10 % jitter
 * around the interval, and the backoff of retries (1 s, doubling, capped at the interval). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-heartbeat.h"
#include "json-util.h"

START_TEST(test_body)
{
        char *models[] = { (char *) "llama3:8b", (char *) "has space", (char *) "qwen2.5:7b", NULL };
        char *caps[] = { (char *) "embed", NULL };
        AgentUpstream ups[] = { { "ollama", "http://127.0.0.1:11434", true }, { "vllm", "http://127.0.0.1:8000/v1", false } };
        AgentHeartbeatInfo info = {
                .models = models, .capabilities = caps, .in_flight = 3, .capacity = 4,
                .upstreams = ups, .n_upstreams = 2, .draining = true,
        };
        json_object *o = NULL, *a, *u;
        char *body = NULL;
        const char *v;
        int64_t i;
        bool b;
        size_t len;

        ck_assert_int_eq(agent_heartbeat_body(&info, &body, &len), 0);
        ck_assert_uint_eq(strlen(body), len);
        ck_assert_int_eq(jobj_parse(body, len, 4, &o, NULL), 0);       /* the gateway's depth limit */
        ck_assert_int_eq(jobj_get_array(o, "models", &a), 0);
        ck_assert_uint_eq(json_object_array_length(a), 2);              /* "has space" left out */
        ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(a, 1)), "qwen2.5:7b");
        ck_assert_int_eq(jobj_get_array(o, "capabilities", &a), 0);
        ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(a, 0)), "embed");
        ck_assert_int_eq(jobj_get_int64(o, "in_flight", &i), 0);
        ck_assert_int_eq(i, 3);
        ck_assert_int_eq(jobj_get_int64(o, "capacity", &i), 0);
        ck_assert_int_eq(i, 4);
        ck_assert_int_eq(jobj_get_bool(o, "draining", &b), 0);
        ck_assert(b);
        ck_assert_int_eq(jobj_get_string(o, "version", &v), 0);
        ck_assert_int_eq(jobj_get_array(o, "upstreams", &a), 0);
        ck_assert_uint_eq(json_object_array_length(a), 2);
        u = json_object_array_get_idx(a, 1);
        ck_assert_int_eq(jobj_get_string(u, "name", &v), 0);
        ck_assert_str_eq(v, "vllm");
        ck_assert_int_eq(jobj_get_string(u, "url", &v), 0);
        ck_assert_str_eq(v, "http://127.0.0.1:8000/v1");
        ck_assert_int_eq(jobj_get_bool(u, "healthy", &b), 0);
        ck_assert(!b);
        json_object_put(o);
        free(body);

        /* Nothing to say is still a valid heartbeat. */
        info = (AgentHeartbeatInfo) {};
        ck_assert_int_eq(agent_heartbeat_body(&info, &body, &len), 0);
        ck_assert_ptr_nonnull(strstr(body, "\"models\":[]"));
        ck_assert_ptr_nonnull(strstr(body, "\"draining\":false"));
        free(body);
}
END_TEST

START_TEST(test_body_limits)
{
        char **models = calloc(AGENT_HEARTBEAT_MODELS_MAX + 11, sizeof(char *));
        AgentHeartbeatInfo info = {};
        json_object *o = NULL, *a;
        char *body = NULL;
        size_t len;

        for (size_t i = 0; i < AGENT_HEARTBEAT_MODELS_MAX + 10; i++)
                ck_assert_int_ge(asprintf(&models[i], "m%zu", i), 0);
        info.models = models;
        ck_assert_int_eq(agent_heartbeat_body(&info, &body, &len), 0);
        ck_assert_int_eq(jobj_parse(body, len, 4, &o, NULL), 0);
        ck_assert_int_eq(jobj_get_array(o, "models", &a), 0);
        ck_assert_uint_eq(json_object_array_length(a), AGENT_HEARTBEAT_MODELS_MAX);
        json_object_put(o);
        free(body);
        for (size_t i = 0; models[i]; i++)
                free(models[i]);
        free(models);
}
END_TEST

static AgentHeartbeatOutcome classify(unsigned status, const char *body, uint64_t *interval, char **detail) {
        return agent_heartbeat_classify(status, body, body ? strlen(body) : 0, interval, detail);
}

START_TEST(test_classify)
{
        uint64_t interval = 30;
        char *detail = NULL;

        ck_assert_int_eq(classify(200, "{\"provider_id\":7,\"online\":true,\"heartbeat_interval_sec\":20,\"window_sec\":120}",
                                  &interval, &detail), AGENT_HEARTBEAT_ONLINE);
        ck_assert_uint_eq(interval, 20);
        ck_assert_int_eq(classify(200, "{\"online\":false,\"heartbeat_interval_sec\":0}", &interval, NULL),
                         AGENT_HEARTBEAT_NOT_ONLINE);
        ck_assert_uint_eq(interval, 20);        /* an invalid interval is ignored */
        ck_assert_int_eq(classify(200, "{\"online\":1}", &interval, &detail), AGENT_HEARTBEAT_FAILED);
        ck_assert_ptr_nonnull(detail);
        detail = mfree(detail);
        ck_assert_int_eq(classify(404, "{\"error\":{\"message\":\"Register again.\",\"code\":\"unknown_provider\"}}",
                                  NULL, &detail), AGENT_HEARTBEAT_FORGOTTEN);
        ck_assert_str_eq(detail, "Register again.");
        detail = mfree(detail);
        ck_assert_int_eq(classify(401, "{\"error\":{\"message\":\"x\",\"code\":\"invalid_signature\"}}", NULL, NULL),
                         AGENT_HEARTBEAT_FORGOTTEN);
        /* A stale or replayed signature, a stranger's address, a busy store: try again. */
        ck_assert_int_eq(classify(401, "{\"error\":{\"message\":\"x\",\"code\":\"stale_signature\"}}", NULL, NULL),
                         AGENT_HEARTBEAT_FAILED);
        ck_assert_int_eq(classify(403, "{\"error\":{\"message\":\"x\",\"code\":\"unknown_provider\"}}", NULL, NULL),
                         AGENT_HEARTBEAT_FAILED);
        ck_assert_int_eq(classify(503, "{\"error\":{\"message\":\"busy\",\"code\":\"store_busy\"}}", NULL, &detail),
                         AGENT_HEARTBEAT_FAILED);
        ck_assert_ptr_nonnull(strstr(detail, "503 store_busy: busy"));
        free(detail);
        ck_assert_int_eq(classify(502, "<html>", NULL, NULL), AGENT_HEARTBEAT_FAILED);
}
END_TEST

START_TEST(test_jitter)
{
        static const struct { uint64_t usec, random, want; } t[] = {
                { 30 * USEC_PER_SEC, 0, 27 * USEC_PER_SEC },                    /* the low end: -10 % */
                { 30 * USEC_PER_SEC, 6 * USEC_PER_SEC, 33 * USEC_PER_SEC },     /* the high end: +10 % */
                { 30 * USEC_PER_SEC, 6 * USEC_PER_SEC + 1, 27 * USEC_PER_SEC }, /* wraps, never beyond */
                { 30 * USEC_PER_SEC, 3 * USEC_PER_SEC, 30 * USEC_PER_SEC },
                { 4, 12345, 4 },                                                /* too short to spread */
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_uint_eq(agent_heartbeat_jitter(t[i].usec, t[i].random), t[i].want);
        for (uint64_t r = 0; r < 1000; r++) {
                uint64_t v = agent_heartbeat_jitter(30 * USEC_PER_SEC, r * 7919 * 1000003);

                ck_assert_uint_ge(v, 27 * USEC_PER_SEC);
                ck_assert_uint_le(v, 33 * USEC_PER_SEC);
        }
}
END_TEST

START_TEST(test_backoff)
{
        static const uint64_t want[] = { 1, 2, 4, 8, 16, 30, 30 };     /* seconds, interval 30 s */
        uint64_t b = 0;

        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                b = agent_heartbeat_backoff(b, 30 * USEC_PER_SEC);
                ck_assert_uint_eq(b, want[i] * USEC_PER_SEC);
        }
        /* After a success the next failure starts again at 1 s; never above a short interval. */
        ck_assert_uint_eq(agent_heartbeat_backoff(0, 30 * USEC_PER_SEC), USEC_PER_SEC);
        ck_assert_uint_eq(agent_heartbeat_backoff(0, USEC_PER_SEC / 2), USEC_PER_SEC / 2);
}
END_TEST

int main(void) {
        Suite *s = suite_create("agent-heartbeat");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_body);
        tcase_add_test(tc, test_body_limits);
        tcase_add_test(tc, test_classify);
        tcase_add_test(tc, test_jitter);
        tcase_add_test(tc, test_backoff);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
