/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The gateway's usage parsers on a provider's bytes (untrusted): the event-stream scanner,
 * stripping and not, fed in two pieces split where the first byte says; the plain-answer
 * scanner likewise; and the request-body rewrite.
 */
#include <string.h>

#include "cleanup.h"
#include "fuzz.h"
#include "gateway-usage.h"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *d = (const char *) data;
        size_t cut = size > 0 ? data[0] * size / 256 : 0;
        UsageBuffer out = {};
        SseUsage s;
        JsonUsage j = {};
        char *body = NULL;
        size_t len = 0;
        int r;

        /* Without strip nothing is copied; with strip, never more than came in, and a stream
         * without usage-only events passes unchanged. */
        sse_usage_init(&s, false);
        check(sse_usage_feed(&s, d, cut, NULL) == 0);
        check(sse_usage_feed(&s, d + cut, size - cut, NULL) == 0);
        check(sse_usage_finish(&s, NULL) == 0);
        sse_usage_done(&s);

        sse_usage_init(&s, true);
        check(sse_usage_feed(&s, d, cut, &out) == 0);
        check(sse_usage_feed(&s, d + cut, size - cut, &out) == 0);
        check(sse_usage_finish(&s, &out) == 0);
        check(out.len <= size);
        if (s.stripped == 0)
                check(out.len == size && (size == 0 || memcmp(out.data, data, size) == 0));
        (void) sse_usage_result(&s);
        sse_usage_done(&s);
        usage_buffer_done(&out);

        check(json_usage_feed(&j, d, cut) == 0);
        check(json_usage_feed(&j, d + cut, size - cut) == 0);
        check(j.value.len <= USAGE_OBJECT_MAX + 1);
        json_usage_done(&j);

        /* The rewrite gives a JSON object that asks for usage. */
        r = usage_request_body(d, size, &body, &len);
        check(r == 1 || r == 0 || r == -EINVAL);
        if (r == 1) {
                _cleanup_(json_object_putp) json_object *o = NULL;
                json_object *opts;
                bool b = false;

                check(jobj_parse(body, len, JSON_DEPTH_MAX + 1, &o, NULL) == 0);
                check(jobj_get_object(o, "stream_options", &opts) == 0);
                check(jobj_get_bool(opts, "include_usage", &b) == 0 && b);
        }
        free(body);
        return 0;
}
