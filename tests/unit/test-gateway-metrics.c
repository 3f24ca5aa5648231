/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway-metrics.h"

#define MS USEC_PER_MSEC
#define S USEC_PER_SEC

static ApiRequestRecord rec(const char *model, int64_t provider, ApiOutcome o, unsigned status,
                            uint64_t ttft, uint64_t duration) {
        return (ApiRequestRecord) {
                .info = { .id = "0123", .model = model, .target = "/v1/chat/completions" },
                .outcome = o,
                .status = status,
                .provider_id = provider,
                .attempts = provider > 0,
                .time_to_first_token_usec = ttft,
                .duration_usec = duration,
        };
}

static char *render(Metrics *m, const MetricsGauges *g) {
        char *text = NULL;
        size_t len = 0;

        ck_assert_int_eq(metrics_render(m, g, &text, &len), 0);
        ck_assert_uint_eq(strlen(text), len);
        return text;
}

/* The value of the sample whose line starts with @prefix followed by a space, or -1. */
static double sample(const char *text, const char *prefix) {
        size_t n = strlen(prefix);

        for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
                if (strncmp(l, prefix, n) == 0 && l[n] == ' ')
                        return strtod(l + n + 1, NULL);
        return -1;
}

/* Every sample line belongs to a metric whose # TYPE came before it, with # HELP before
 * that; names and values are well-formed; label values are closed. */
static void check_format(const char *text) {
        char typed[32][96], help[96] = "";
        size_t n_typed = 0;
        const char *l = text;

        ck_assert(text[strlen(text) - 1] == '\n');
        while (*l) {
                const char *end = strchr(l, '\n');
                char line[1024], name[96];
                size_t len;

                ck_assert_ptr_nonnull(end);
                len = (size_t) (end - l);
                ck_assert_uint_lt(len, sizeof line);
                memcpy(line, l, len);
                line[len] = 0;
                l = end + 1;
                if (strncmp(line, "# HELP ", 7) == 0) {
                        ck_assert_int_eq(sscanf(line + 7, "%95s", help), 1);
                        continue;
                }
                if (strncmp(line, "# TYPE ", 7) == 0) {
                        char type[16];

                        ck_assert_int_eq(sscanf(line + 7, "%95s %15s", name, type), 2);
                        ck_assert_str_eq(help, name);   /* # HELP NAME came right before */
                        help[0] = 0;
                        ck_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                                  strcmp(type, "histogram") == 0);
                        ck_assert_uint_lt(n_typed, 32);
                        strcpy(typed[n_typed++], name);
                        continue;
                }
                ck_assert_msg(line[0] != '#', "unexpected comment: %s", line);
                {
                        size_t k = strspn(line, "abcdefghijklmnopqrstuvwxyz_");
                        bool known = false;
                        const char *v;
                        char *e;

                        ck_assert_uint_gt(k, 0);
                        ck_assert(line[k] == '{' || line[k] == ' ');
                        for (size_t i = 0; i < n_typed; i++) {
                                size_t t = strlen(typed[i]);

                                if (strncmp(line, typed[i], t) == 0 &&
                                    (t == k || (k > t && (strncmp(line + t, "_bucket", k - t) == 0 ||
                                                          strncmp(line + t, "_sum", k - t) == 0 ||
                                                          strncmp(line + t, "_count", k - t) == 0))))
                                        known = true;
                        }
                        ck_assert_msg(known, "no # TYPE before: %s", line);
                        v = strrchr(line, ' ');
                        ck_assert_ptr_nonnull(v);
                        if (line[k] == '{')
                                ck_assert(v[-1] == '}');
                        (void) strtod(v + 1, &e);
                        ck_assert_msg(*e == 0 && e != v + 1, "bad value: %s", line);
                }
        }
}

START_TEST(test_empty)
{
        Metrics *m = NULL;
        char *t;

        ck_assert_int_eq(metrics_new(METRICS_SERIES_MAX_MAX + 1, &m), -EINVAL);
        ck_assert_int_eq(metrics_new(0, &m), 0);
        t = render(m, &(MetricsGauges) { .requests_in_flight = 3, .providers_online = 2 });
        check_format(t);
        ck_assert_ptr_nonnull(strstr(t, "# HELP club_gateway_requests_total "));
        ck_assert_ptr_nonnull(strstr(t, "# TYPE club_gateway_requests_total counter\n"));
        ck_assert_ptr_nonnull(strstr(t, "# TYPE club_gateway_time_to_first_token_seconds histogram\n"));
        ck_assert_ptr_nonnull(strstr(t, "# TYPE club_gateway_request_duration_seconds histogram\n"));
        ck_assert_ptr_nonnull(strstr(t, "# TYPE club_gateway_tokens_total counter\n"));
        ck_assert_int_eq(sample(t, "club_gateway_requests_in_flight"), 3);
        ck_assert_int_eq(sample(t, "club_gateway_providers_online"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series"), 0);
        free(t);
        /* A gauge that could not be measured is left out, not reported as 0. */
        t = render(m, &(MetricsGauges) { .requests_in_flight = 0, .providers_online = -1 });
        check_format(t);
        ck_assert_int_eq(sample(t, "club_gateway_requests_in_flight"), 0);
        ck_assert_ptr_null(strstr(t, "club_gateway_providers_online"));
        free(t);
        metrics_observe(NULL, &(ApiRequestRecord) {});    /* metrics off */
        ck_assert_ptr_null(metrics_free(m));
}
END_TEST

START_TEST(test_histograms)
{
        Metrics *m = NULL;
        ApiRequestRecord r;
        char *t;

        ck_assert_int_eq(metrics_new(0, &m), 0);
        /* 50 ms exactly is in le="0.05": bounds are inclusive. */
        r = rec("m", 7, API_OUTCOME_OK, 200, 50 * MS, 80 * MS);
        metrics_observe(m, &r);
        r = rec("m", 7, API_OUTCOME_OK, 200, 300 * MS, 2 * S);
        metrics_observe(m, &r);
        r = rec("m", 7, API_OUTCOME_TRUNCATED, 200, 400 * S, 700 * S); /* above every bound */
        metrics_observe(m, &r);
        r = rec("m", 7, API_OUTCOME_FAILED, 502, 0, 1500 * MS);       /* no first token */
        metrics_observe(m, &r);
        t = render(m, NULL);
        check_format(t);

#define L "{api=\"openai\",provider=\"7\",model=\"m\""
        ck_assert_int_eq(sample(t, "club_gateway_requests_total" L ",outcome=\"ok\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total" L ",outcome=\"truncated\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total" L ",outcome=\"failed\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total" L ",outcome=\"cancelled\"}"), -1);
        ck_assert_int_eq(sample(t, "club_gateway_request_errors_total" L ",status=\"502\"}"), 1);

        /* Time to first token: three observations, cumulative buckets. */
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_bucket" L ",le=\"0.05\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_bucket" L ",le=\"0.25\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_bucket" L ",le=\"0.5\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_bucket" L ",le=\"300\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_bucket" L ",le=\"+Inf\"}"), 3);
        ck_assert_int_eq(sample(t, "club_gateway_time_to_first_token_seconds_count" L "}"), 3);
        ck_assert_double_eq_tol(sample(t, "club_gateway_time_to_first_token_seconds_sum" L "}"), 400.35, 1e-9);
        ck_assert_ptr_nonnull(strstr(t, "club_gateway_time_to_first_token_seconds_sum" L "} 400.350000\n"));

        /* Duration: four. */
        ck_assert_int_eq(sample(t, "club_gateway_request_duration_seconds_bucket" L ",le=\"0.1\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_request_duration_seconds_bucket" L ",le=\"2.5\"}"), 3);
        ck_assert_int_eq(sample(t, "club_gateway_request_duration_seconds_bucket" L ",le=\"600\"}"), 3);
        ck_assert_int_eq(sample(t, "club_gateway_request_duration_seconds_bucket" L ",le=\"+Inf\"}"), 4);
        ck_assert_int_eq(sample(t, "club_gateway_request_duration_seconds_count" L "}"), 4);
        ck_assert_double_eq_tol(sample(t, "club_gateway_request_duration_seconds_sum" L "}"), 703.58, 1e-9);

        /* Buckets never decrease, in the order they are written, and +Inf closes each run. */
        {
                const char *p = t, *b = "club_gateway_request_duration_seconds_bucket" L ",le=\"";
                double last = -1;
                unsigned n = 0;

                while ((p = strstr(p, b))) {
                        double v = strtod(strchr(p, ' ') + 1, NULL);

                        ck_assert(v >= last);
                        last = v;
                        n++;
                        p++;
                }
                ck_assert_uint_eq(n, 13);
                ck_assert_ptr_nonnull(strstr(t, "le=\"600\"} 3\n" "club_gateway_request_duration_seconds_bucket" L ",le=\"+Inf\"} 4\n"
                                             "club_gateway_request_duration_seconds_sum"));
        }
#undef L
        free(t);
        metrics_free(m);
}
END_TEST

START_TEST(test_labels)
{
        Metrics *m = NULL;
        ApiRequestRecord r;
        char *t;

        ck_assert_int_eq(metrics_new(0, &m), 0);
        /* Backslash, double quote and newline are escaped; other bytes are kept. */
        r = rec("a\"b\\c\nd é", 3, API_OUTCOME_OK, 200, 1 * MS, 2 * MS);
        r.prompt_tokens = 11;
        r.completion_tokens = 5;
        metrics_observe(m, &r);
        r = rec("a\"b\\c\nd é", 3, API_OUTCOME_OK, 200, 1 * MS, 2 * MS);
        r.prompt_tokens = 1;
        r.completion_tokens = 2;
        metrics_observe(m, &r);
        /* A model nobody serves: provider none, model unknown, whatever was asked for. */
        r = rec("made-up-1", 0, API_OUTCOME_MODEL_NOT_FOUND, 404, 0, 1 * MS);
        metrics_observe(m, &r);
        r = rec("made-up-2", 0, API_OUTCOME_MODEL_NOT_FOUND, 404, 0, 1 * MS);
        metrics_observe(m, &r);
        /* A capability: its own api label. */
        r = rec("echo", 3, API_OUTCOME_OK, 200, 1 * MS, 2 * MS);
        r.info.capability = true;
        metrics_observe(m, &r);
        t = render(m, NULL);
        check_format(t);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"3\",model=\"a\\\"b\\\\c\\nd é\",outcome=\"ok\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_tokens_total{api=\"openai\",provider=\"3\",model=\"a\\\"b\\\\c\\nd é\",kind=\"prompt\"}"), 12);
        ck_assert_int_eq(sample(t, "club_gateway_tokens_total{api=\"openai\",provider=\"3\",model=\"a\\\"b\\\\c\\nd é\",kind=\"completion\"}"), 7);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"none\",model=\"unknown\",outcome=\"model_not_found\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_request_errors_total{api=\"openai\",provider=\"none\",model=\"unknown\",status=\"404\"}"), 2);
        ck_assert_ptr_null(strstr(t, "made-up"));
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"capability\",provider=\"3\",model=\"echo\",outcome=\"ok\"}"), 1);
        /* No tokens, no token samples; no first token, no histogram. */
        ck_assert_ptr_null(strstr(t, "club_gateway_tokens_total{api=\"capability\""));
        ck_assert_ptr_null(strstr(t, "club_gateway_time_to_first_token_seconds_count{api=\"openai\",provider=\"none\""));
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series"), 3);
        free(t);
        metrics_free(m);
}
END_TEST

START_TEST(test_bounded)
{
        Metrics *m = NULL;
        ApiRequestRecord r;
        char *t, name[32];

        ck_assert_int_eq(metrics_new(2, &m), 0);
        for (unsigned i = 0; i < 5; i++) {
                snprintf(name, sizeof name, "model-%u", i);
                r = rec(name, 1, API_OUTCOME_OK, 200, 1 * MS, 1 * MS);
                metrics_observe(m, &r);
        }
        /* A known series still counts in its own place once the cap is reached. */
        r = rec("model-0", 1, API_OUTCOME_OK, 200, 1 * MS, 1 * MS);
        metrics_observe(m, &r);
        /* Error statuses beyond METRICS_STATUSES_MAX distinct ones are "other". */
        for (unsigned s = 0; s < METRICS_STATUSES_MAX + 2; s++) {
                r = rec("model-1", 1, API_OUTCOME_PROVIDER_ERROR, 400 + s, 1 * MS, 1 * MS);
                metrics_observe(m, &r);
        }
        t = render(m, NULL);
        check_format(t);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"1\",model=\"model-0\",outcome=\"ok\"}"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"1\",model=\"model-1\",outcome=\"ok\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"other\",model=\"other\",outcome=\"ok\"}"), 3);
        ck_assert_ptr_null(strstr(t, "model-2"));
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series_overflow_total"), 3);
        ck_assert_int_eq(sample(t, "club_gateway_request_errors_total{api=\"openai\",provider=\"1\",model=\"model-1\",status=\"407\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_request_errors_total{api=\"openai\",provider=\"1\",model=\"model-1\",status=\"408\"}"), -1);
        ck_assert_int_eq(sample(t, "club_gateway_request_errors_total{api=\"openai\",provider=\"1\",model=\"model-1\",status=\"other\"}"), 2);
        /* Series come out sorted: model-0 before model-1, the overflow last. */
        ck_assert(strstr(t, "model=\"model-0\",outcome") < strstr(t, "model=\"model-1\",outcome"));
        ck_assert(strstr(t, "model=\"model-1\",outcome") < strstr(t, "model=\"other\",outcome"));
        free(t);
        metrics_free(m);
}
END_TEST

static uint64_t fake_now;

static uint64_t fake_clock(void *userdata) {
        return fake_now;
}

START_TEST(test_idle_eviction)
{
        Metrics *m = NULL;
        ApiRequestRecord r;
        char *t;

        ck_assert_int_eq(metrics_new(2, &m), 0);
        metrics_set_clock(m, fake_clock, NULL);
        fake_now = 1000 * S;
        r = rec("a", 1, API_OUTCOME_OK, 200, 1 * MS, 1 * MS);
        metrics_observe(m, &r);
        fake_now += 10 * S;
        r = rec("b", 1, API_OUTCOME_OK, 200, 1 * MS, 1 * MS);
        metrics_observe(m, &r);
        /* Full, and "a" idle for only half an hour: "c" goes to the overflow series. */
        fake_now += 1800 * S;
        r = rec("c", 1, API_OUTCOME_OK, 200, 1 * MS, 1 * MS);
        metrics_observe(m, &r);
        /* "a" idle for over an hour now (and longer than "b"): it makes room for "c". */
        fake_now += 1800 * S;
        metrics_observe(m, &r);
        t = render(m, NULL);
        check_format(t);
        ck_assert_ptr_null(strstr(t, "model=\"a\""));
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"1\",model=\"b\",outcome=\"ok\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"1\",model=\"c\",outcome=\"ok\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_requests_total{api=\"openai\",provider=\"other\",model=\"other\",outcome=\"ok\"}"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series"), 2);
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series_overflow_total"), 1);
        ck_assert_int_eq(sample(t, "club_gateway_metrics_series_evicted_total"), 1);
        free(t);
        metrics_free(m);
}
END_TEST

int main(void) {
        Suite *s = suite_create("gateway-metrics");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_empty);
        tcase_add_test(tc, test_histograms);
        tcase_add_test(tc, test_labels);
        tcase_add_test(tc, test_bounded);
        tcase_add_test(tc, test_idle_eviction);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
