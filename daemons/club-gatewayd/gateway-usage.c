/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "gateway-usage.h"
#include "json-util.h"

/* Usage and chunks are shallow: deeper JSON is not an answer we count. */
#define USAGE_JSON_DEPTH 16

void usage_buffer_done(UsageBuffer *b) {
        b->data = mfree(b->data);
        b->len = b->allocated = 0;
}

int usage_buffer_append(UsageBuffer *b, const char *data, size_t len) {
        if (len == 0)
                return 0;
        if (b->len + len > b->allocated) {
                size_t n = MAX(b->len + len, MAX(b->allocated * 2, (size_t) 256));
                char *p = realloc(b->data, n);

                if (!p)
                        return -ENOMEM;
                b->data = p;
                b->allocated = n;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

void sse_usage_init(SseUsage *s, bool strip) {
        *s = (SseUsage) { .strip = strip };
}

void sse_usage_done(SseUsage *s) {
        s->line = mfree(s->line);
        s->len = 0;
}

/* prompt_tokens and completion_tokens of a usage object; absent ones count 0. */
static int usage_read(json_object *u, TokenUsage *ret) {
        uint64_t p = 0, c = 0;
        int r;

        r = jobj_get_uint64(u, "prompt_tokens", &p);
        if (r < 0 && r != -ENOENT)
                return r;
        r = jobj_get_uint64(u, "completion_tokens", &c);
        if (r < 0 && r != -ENOENT)
                return r;
        *ret = (TokenUsage) { .prompt_tokens = p, .completion_tokens = c, .reported = true };
        return 0;
}

static bool string_nonempty(json_object *o, const char *key) {
        const char *v;

        return jobj_get_string(o, key, &v) >= 0 && v[0] != 0;
}

/* Whether a choice carries content: text (completions), or a delta with content, a refusal
 * or tool calls (chat). A role-only first delta carries none. */
static bool choice_has_content(json_object *c) {
        json_object *d, *t;

        if (!json_object_is_type(c, json_type_object))
                return false;
        if (string_nonempty(c, "text"))
                return true;
        if (jobj_get_object(c, "delta", &d) < 0 || !json_object_is_type(d, json_type_object))
                return false;
        return string_nonempty(d, "content") || string_nonempty(d, "refusal") ||
                (jobj_get_array(d, "tool_calls", &t) >= 0 && json_object_array_length(t) > 0);
}

/* One complete line (without its newline). Return: true to pass it on, false to drop it. */
static bool sse_usage_line(SseUsage *s, const char *line, size_t len) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *u, *choices;
        const char *p;
        bool usage_only;
        size_t n;

        if (len > 0 && line[len - 1] == '\r')
                len--;
        if (len == 0) {
                if (s->drop_blank) {
                        s->drop_blank = false;
                        return false;
                }
                return true;
        }
        s->drop_blank = false;
        if (len < 5 || memcmp(line, "data:", 5) != 0)
                return true;
        p = line + 5;
        n = len - 5;
        if (n > 0 && *p == ' ')
                p++, n--;
        if (n == 0 || *p != '{')
                return true;            /* [DONE], or not ours to read */
        if (jobj_parse(p, n, USAGE_JSON_DEPTH, &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
                return true;

        if (jobj_get_array(o, "choices", &choices) >= 0) {
                size_t k = json_object_array_length(choices);

                for (size_t i = 0; i < k; i++)
                        if (choice_has_content(json_object_array_get_idx(choices, i))) {
                                s->content_events++;
                                break;
                        }
                usage_only = k == 0;
        } else
                usage_only = true;

        if (jobj_get_object(o, "usage", &u) < 0 || !json_object_is_type(u, json_type_object))
                return true;            /* no usage, or "usage": null */
        (void) usage_read(u, &s->usage);
        if (s->strip && usage_only) {
                s->stripped++;
                s->drop_blank = true;
                return false;
        }
        return true;
}

static int sse_usage_emit(SseUsage *s, const char *data, size_t len, UsageBuffer *out) {
        return s->strip && out ? usage_buffer_append(out, data, len) : 0;
}

int sse_usage_feed(SseUsage *s, const char *data, size_t len, UsageBuffer *out) {
        int r;

        assert(s);
        assert(data || len == 0);
        assert(!s->strip || out);

        while (len > 0) {
                const char *nl = memchr(data, '\n', len);
                size_t take = nl ? (size_t) (nl - data) + 1 : len;

                if (s->overlong) {
                        /* The rest of a line too long to read: straight through. */
                        r = sse_usage_emit(s, data, take, out);
                        if (r < 0)
                                return r;
                        if (nl)
                                s->overlong = false;
                } else if (s->len + take > SSE_USAGE_LINE_MAX) {
                        r = sse_usage_emit(s, s->line, s->len, out);
                        if (r >= 0)
                                r = sse_usage_emit(s, data, take, out);
                        if (r < 0)
                                return r;
                        s->len = 0;
                        s->overlong = !nl;
                        s->drop_blank = false;
                } else if (nl && s->len == 0) {
                        /* A whole line in this read: no copy into the line buffer. */
                        if (sse_usage_line(s, data, take - 1)) {
                                r = sse_usage_emit(s, data, take, out);
                                if (r < 0)
                                        return r;
                        }
                } else {
                        if (!s->line) {
                                s->line = malloc(SSE_USAGE_LINE_MAX);
                                if (!s->line)
                                        return -ENOMEM;
                        }
                        memcpy(s->line + s->len, data, take);
                        s->len += take;
                        if (nl) {
                                if (sse_usage_line(s, s->line, s->len - 1)) {
                                        r = sse_usage_emit(s, s->line, s->len, out);
                                        if (r < 0)
                                                return r;
                                }
                                s->len = 0;
                        }
                }
                data += take;
                len -= take;
        }
        return 0;
}

int sse_usage_finish(SseUsage *s, UsageBuffer *out) {
        int r = 0;

        if (s->len > 0 && !s->overlong && sse_usage_line(s, s->line, s->len))
                r = sse_usage_emit(s, s->line, s->len, out);
        else if (s->len > 0 && s->overlong)
                r = sse_usage_emit(s, s->line, s->len, out);
        s->len = 0;
        return r;
}

TokenUsage sse_usage_result(const SseUsage *s) {
        if (s->usage.reported)
                return s->usage;
        return (TokenUsage) { .completion_tokens = s->content_events };
}

int usage_from_json(const char *body, size_t len, TokenUsage *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *u;
        int r;

        r = jobj_parse(body, len, USAGE_JSON_DEPTH, &o, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_object_is_type(o, json_type_object))
                return -EINVAL;
        if (jobj_get_object(o, "usage", &u) < 0 || !json_object_is_type(u, json_type_object))
                return -ENOENT;
        return usage_read(u, ret);
}

void json_usage_done(JsonUsage *j) {
        usage_buffer_done(&j->value);
}

/* The "usage" object is complete: read it. */
static void json_usage_take(JsonUsage *j) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        TokenUsage u;

        j->capturing = false;
        /* Not a usage object we understand: nothing. */
        if (jobj_parse(j->value.data, j->value.len, USAGE_JSON_DEPTH, &o, NULL) >= 0 &&
            json_object_is_type(o, json_type_object) && usage_read(o, &u) >= 0)
                j->usage = u;
        usage_buffer_done(&j->value);
}

int json_usage_feed(JsonUsage *j, const char *data, size_t len) {
        for (size_t i = 0; i < len; i++) {
                char c = data[i];

                if (j->capturing) {
                        if (j->value.len >= USAGE_OBJECT_MAX) {
                                j->capturing = false;   /* too large to be usage: give up on it */
                                usage_buffer_done(&j->value);
                        } else if (usage_buffer_append(&j->value, &c, 1) < 0)
                                return -ENOMEM;
                }
                if (j->in_string) {
                        if (j->escape)
                                j->escape = false;
                        else if (c == '\\')
                                j->escape = true;
                        else if (c == '"') {
                                j->in_string = false;
                                if (j->in_key) {
                                        j->in_key = false;
                                        j->key_done = true;
                                }
                        } else if (j->in_key && j->key_len++ < sizeof j->key - 1)
                                j->key[j->key_len - 1] = c;
                        continue;
                }
                switch (c) {
                case '"':
                        j->in_string = true;
                        if (j->depth == 1 && j->expect_key) {
                                j->expect_key = false;
                                j->in_key = true;
                                j->key_len = 0;
                        }
                        j->want_value = false;
                        break;
                case '{':
                case '[':
                        if (j->want_value && c == '{' && j->depth == 1) {
                                j->capturing = true;
                                j->value.len = 0;
                                if (usage_buffer_append(&j->value, &c, 1) < 0)
                                        return -ENOMEM;
                        }
                        j->want_value = false;
                        j->depth++;
                        j->expect_key = j->depth == 1 && c == '{';
                        break;
                case '}':
                case ']':
                        if (j->depth > 0)
                                j->depth--;
                        if (j->capturing && j->depth == 1)
                                json_usage_take(j);
                        break;
                case ':':
                        j->want_value = j->depth == 1 && j->key_done && j->key_len == 5 &&
                                memcmp(j->key, "usage", 5) == 0;
                        j->key_done = false;
                        break;
                case ',':
                        if (j->depth == 1)
                                j->expect_key = true;
                        j->key_done = j->want_value = false;
                        break;
                case ' ':
                case '\t':
                case '\r':
                case '\n':
                        break;
                default:
                        j->want_value = false;  /* "usage": null, a number, … */
                }
        }
        return 0;
}

int usage_request_body(const char *body, size_t len, char **ret_body, size_t *ret_len) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *s = NULL;
        json_object *opts, *flag;
        size_t n, start;
        int r;

        r = jobj_parse(body, len, JSON_DEPTH_MAX, &o, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_object_is_type(o, json_type_object))
                return -EINVAL;

        if (!json_object_object_get_ex(o, "stream_options", &opts)) {
                /* Not there: insert it in front, leaving the client's bytes as they were. */
                static const char member[] = "\"stream_options\":{\"include_usage\":true}";
                bool empty = json_object_object_length(o) == 0;

                start = 0;
                while (start < len && body[start] != '{')
                        start++;
                assert(start < len);
                n = len + strlen(member) + 1;
                s = malloc(n + 1);
                if (!s)
                        return -ENOMEM;
                memcpy(s, body, start + 1);
                memcpy(s + start + 1, member, strlen(member));
                s[start + 1 + strlen(member)] = empty ? ' ' : ',';
                memcpy(s + start + 2 + strlen(member), body + start + 1, len - start - 1);
                s[n] = 0;
                *ret_body = TAKE_PTR(s);
                *ret_len = n;
                return 1;
        }
        if (!json_object_is_type(opts, json_type_object))
                return -EINVAL;
        if (json_object_object_get_ex(opts, "include_usage", &flag) &&
            json_object_is_type(flag, json_type_boolean) && json_object_get_boolean(flag))
                return 0;
        /* Present without include_usage (or false): set it, and write the body anew. */
        r = jobj_add_bool(opts, "include_usage", true);
        if (r < 0)
                return r;
        r = jobj_to_string(o, &s, &n);
        if (r < 0)
                return r;
        *ret_body = TAKE_PTR(s);
        *ret_len = n;
        return 1;
}

bool usage_error_mentions_stream_options(const char *body, size_t len) {
        return body && (memmem(body, len, "stream_options", strlen("stream_options")) ||
                        memmem(body, len, "include_usage", strlen("include_usage")));
}
