/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway-usage.h"

/* A chat stream as club-test-upstream and OpenAI send it with include_usage: a role-only
 * first delta, content chunks (with "usage": null), the usage-only chunk, [DONE]. */
#define CHUNK(c) "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" c "\"},\"finish_reason\":null}],\"usage\":null}\n\n"
#define ROLE "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n"
#define USAGE "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n"
#define DONE "data: [DONE]\n\n"

static const char stream_with_usage[] = ": keep-alive\n\n" ROLE CHUNK("tok0 ") CHUNK("tok1 ") CHUNK("tok2 ") USAGE DONE;
static const char stream_stripped[] = ": keep-alive\n\n" ROLE CHUNK("tok0 ") CHUNK("tok1 ") CHUNK("tok2 ") DONE;

/* Feed @in split at @cut (and, when @cut2 > @cut, also at @cut2); return what the client gets. */
static char *feed_split(SseUsage *s, const char *in, size_t cut, size_t cut2) {
        UsageBuffer out = {};
        size_t len = strlen(in);
        size_t cuts[] = { 0, cut, cut2 > cut ? cut2 : cut, len };
        char *r;

        for (size_t i = 0; i + 1 < ELEMENTSOF(cuts); i++)
                ck_assert_int_eq(sse_usage_feed(s, in + cuts[i], cuts[i + 1] - cuts[i], s->strip ? &out : NULL), 0);
        ck_assert_int_eq(sse_usage_finish(s, s->strip ? &out : NULL), 0);
        r = strndup(out.data ?: "", out.len);
        usage_buffer_done(&out);
        return r;
}

/* Stripping: split at every byte boundary (and every pair near the usage chunk), the client
 * gets the same bytes without the usage event, and the usage is found. */
START_TEST(test_strip_every_split)
{
        size_t len = strlen(stream_with_usage);

        for (size_t cut = 0; cut <= len; cut++) {
                SseUsage s;
                char *out;
                TokenUsage u;

                sse_usage_init(&s, true);
                out = feed_split(&s, stream_with_usage, cut, 0);
                ck_assert_str_eq(out, stream_stripped);
                u = sse_usage_result(&s);
                ck_assert(u.reported);
                ck_assert_uint_eq(u.prompt_tokens, 7);
                ck_assert_uint_eq(u.completion_tokens, 3);
                ck_assert_uint_eq(s.content_events, 3);
                ck_assert_uint_eq(s.stripped, 1);
                free(out);
                sse_usage_done(&s);
        }
        /* Two cuts, one inside the usage event and one anywhere after it. */
        for (size_t a = len - strlen(USAGE DONE); a < len - strlen(DONE); a += 7)
                for (size_t b = a + 1; b <= len; b++) {
                        SseUsage s;
                        char *out;

                        sse_usage_init(&s, true);
                        out = feed_split(&s, stream_with_usage, a, b);
                        ck_assert_str_eq(out, stream_stripped);
                        free(out);
                        sse_usage_done(&s);
                }
}
END_TEST

/* Without strip (the client asked for usage): nothing copied, the usage found anyway. */
START_TEST(test_scan_every_split)
{
        size_t len = strlen(stream_with_usage);

        for (size_t cut = 0; cut <= len; cut++) {
                SseUsage s;
                char *out;

                sse_usage_init(&s, false);
                out = feed_split(&s, stream_with_usage, cut, 0);
                ck_assert_str_eq(out, "");
                ck_assert(sse_usage_result(&s).reported);
                ck_assert_uint_eq(sse_usage_result(&s).prompt_tokens, 7);
                ck_assert_uint_eq(s.stripped, 0);
                free(out);
                sse_usage_done(&s);
        }
}
END_TEST

/* A stream that breaks off before its usage: the content events are the completion tokens,
 * not marked reported; a partial last line is passed on at the end. CRLF lines work. */
START_TEST(test_truncated_and_crlf)
{
        static const char crlf[] = "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\n"
                                   "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\r\n\r\n"
                                   "data: [DONE]\r\n\r\n";
        SseUsage s;
        char *out;
        TokenUsage u;

        sse_usage_init(&s, true);
        out = feed_split(&s, ROLE CHUNK("a") CHUNK("b") "data: {\"choi", 50, 0);
        ck_assert_str_eq(out, ROLE CHUNK("a") CHUNK("b") "data: {\"choi");
        u = sse_usage_result(&s);
        ck_assert(!u.reported);
        ck_assert_uint_eq(u.prompt_tokens, 0);
        ck_assert_uint_eq(u.completion_tokens, 2);
        free(out);
        sse_usage_done(&s);

        sse_usage_init(&s, true);
        out = feed_split(&s, crlf, 10, 60);
        ck_assert_str_eq(out, "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\ndata: [DONE]\r\n\r\n");
        ck_assert_uint_eq(sse_usage_result(&s).completion_tokens, 1);
        ck_assert(sse_usage_result(&s).reported);
        free(out);
        sse_usage_done(&s);
}
END_TEST

/* A line longer than the buffer is passed on whole and not parsed; the scanner recovers. */
START_TEST(test_overlong_line)
{
        size_t big = SSE_USAGE_LINE_MAX + 100;
        char *in = malloc(big + 200), *out;
        SseUsage s;
        int k;

        ck_assert_ptr_nonnull(in);
        k = sprintf(in, "data: {\"x\":\"");
        memset(in + k, 'a', big);
        strcpy(in + k + big, "\"}\n\n" USAGE DONE);
        sse_usage_init(&s, true);
        out = feed_split(&s, in, 1000, SSE_USAGE_LINE_MAX + 5);
        ck_assert_uint_eq(strlen(out), strlen(in) - strlen(USAGE));
        ck_assert(sse_usage_result(&s).reported);
        free(out);
        free(in);
        sse_usage_done(&s);
}
END_TEST

START_TEST(test_usage_from_json)
{
        TokenUsage u;

        static const char chat[] = "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}";
        static const char emb[] = "{\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}";

        ck_assert_int_eq(usage_from_json(chat, strlen(chat), &u), 0);
        ck_assert_uint_eq(u.prompt_tokens, 3);
        ck_assert_uint_eq(u.completion_tokens, 5);
        ck_assert(u.reported);
        /* Embeddings: prompt and total only. */
        ck_assert_int_eq(usage_from_json(emb, strlen(emb), &u), 0);
        ck_assert_uint_eq(u.prompt_tokens, 4);
        ck_assert_uint_eq(u.completion_tokens, 0);
        ck_assert_int_eq(usage_from_json("{\"usage\":null}", 14, &u), -ENOENT);
        ck_assert_int_eq(usage_from_json("{\"usage\":", 9, &u), -EINVAL);
        ck_assert_int_eq(usage_from_json("[1]", 3, &u), -EINVAL);
}
END_TEST

/* A plain answer scanned in pieces: the top-level "usage" object is found wherever it is,
 * whatever the pieces, not one nested deeper or inside a string; memory stays small. */
START_TEST(test_json_usage)
{
        static const char body[] =
                "{\"id\":\"x\",\"note\":\"\\\"usage\\\": {\\\"prompt_tokens\\\":1}\","
                "\"choices\":[{\"usage\":{\"prompt_tokens\":2}}],"
                " \"usage\" : {\"prompt_tokens\":9,\"completion_tokens\":4,\"details\":{\"a\":[1,2]}},"
                "\"club_padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}";
        size_t len = strlen(body);

        for (size_t cut = 0; cut <= len; cut++) {
                JsonUsage j = {};

                ck_assert_int_eq(json_usage_feed(&j, body, cut), 0);
                ck_assert_int_eq(json_usage_feed(&j, body + cut, len - cut), 0);
                ck_assert_msg(j.usage.reported, "cut at %zu", cut);
                ck_assert_uint_eq(j.usage.prompt_tokens, 9);
                ck_assert_uint_eq(j.usage.completion_tokens, 4);
                ck_assert_ptr_null(j.value.data);
                json_usage_done(&j);
        }
        {
                JsonUsage j = {};
                static const char null_usage[] = "{\"usage\":null,\"data\":[{\"usage\":{\"prompt_tokens\":3}}]}";

                ck_assert_int_eq(json_usage_feed(&j, null_usage, strlen(null_usage)), 0);
                ck_assert(!j.usage.reported);
                json_usage_done(&j);
        }
}
END_TEST

/* The request body: added in front when absent (the client's bytes kept), set when
 * stream_options lacks it, left alone when the client asked. */
START_TEST(test_request_body)
{
        static const struct {
                const char *in;
                int r;
                const char *out;
        } cases[] = {
                { "{\"model\":\"m\",\"stream\":true}", 1,
                  "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true}" },
                { "  { \"model\":\"m\", \"temperature\":0.70}", 1,
                  "  {\"stream_options\":{\"include_usage\":true}, \"model\":\"m\", \"temperature\":0.70}" },
                { "{}", 1, "{\"stream_options\":{\"include_usage\":true} }" },
                { "{\"model\":\"m\",\"stream_options\":{}}", 1,
                  "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}" },
                { "{\"model\":\"m\",\"stream_options\":{\"include_usage\":false}}", 1,
                  "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}" },
                { "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}", 0, NULL },
                { "{\"model\":\"m\",\"stream_options\":3}", -EINVAL, NULL },
                { "[]", -EINVAL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *out = NULL;
                size_t len = 0;
                int r = usage_request_body(cases[i].in, strlen(cases[i].in), &out, &len);

                ck_assert_int_eq(r, cases[i].r);
                if (r == 1) {
                        ck_assert_uint_eq(len, strlen(cases[i].out));
                        ck_assert_str_eq(out, cases[i].out);
                }
                free(out);
        }
        ck_assert(usage_error_mentions_stream_options("Unrecognized request argument supplied: stream_options", 54));
        ck_assert(!usage_error_mentions_stream_options("model not found", 15));
}
END_TEST

int main(void) {
        Suite *s = suite_create("gateway-usage");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_strip_every_split);
        tcase_add_test(tc, test_scan_every_split);
        tcase_add_test(tc, test_truncated_and_crlf);
        tcase_add_test(tc, test_overlong_line);
        tcase_add_test(tc, test_usage_from_json);
        tcase_add_test(tc, test_json_usage);
        tcase_add_test(tc, test_request_body);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
