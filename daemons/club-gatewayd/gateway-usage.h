/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Token usage from the answers that pass through the OpenAI API (docs/club-gatewayd.md,
 * "Usage and limits"). Pure functions, no I/O:
 *  - usage_request_body(): a streamed chat/completions request that did not ask for
 *    stream_options.include_usage gets it, so that the provider reports its usage;
 *  - SseUsage: an incremental scanner of an event stream, fed each read as it arrives, with
 *    a bounded line buffer. It finds the usage chunk (the last `data:` event whose `usage`
 *    is an object) and counts the events that carry content; when the client did not ask
 *    for usage it also drops the usage-only event (`"choices":[]` with `usage`) and its
 *    blank line, and passes every other byte on unchanged;
 *  - usage_from_json(): `usage` of a plain answer's body collected whole; JsonUsage: the
 *    same for one passed on in pieces, without keeping it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* A line of an event stream longer than this is passed on without being parsed. */
#define SSE_USAGE_LINE_MAX (64U * 1024U)
/* A plain answer's "usage" object larger than this is not read. */
#define USAGE_OBJECT_MAX (4U * 1024U)

typedef struct TokenUsage {
        uint64_t prompt_tokens;
        uint64_t completion_tokens;
        bool reported;                  /* the provider said so; otherwise counted or unknown */
} TokenUsage;

/* A growable output buffer: what the client gets from a stripped stream. */
typedef struct UsageBuffer {
        char *data;
        size_t len, allocated;
} UsageBuffer;

void usage_buffer_done(UsageBuffer *b);
/* Append @len bytes: 0 or -ENOMEM. */
int usage_buffer_append(UsageBuffer *b, const char *data, size_t len);

typedef struct SseUsage {
        bool strip;                     /* drop the usage-only event */
        char *line;                     /* the incomplete line so far, at most SSE_USAGE_LINE_MAX */
        size_t len;
        bool overlong;                  /* the current line outgrew the buffer: passed, not parsed */
        bool drop_blank;                /* the blank line that ends a dropped event goes too */
        TokenUsage usage;               /* the last usage reported */
        uint64_t content_events;        /* events with non-empty content (text, delta, tool calls) */
        uint64_t stripped;              /* events dropped */
} SseUsage;

/* Set up a scanner; @strip as above. */
void sse_usage_init(SseUsage *s, bool strip);
void sse_usage_done(SseUsage *s);

/**
 * sse_usage_feed() - scan the next bytes of an event stream
 * @s:    the scanner
 * @data: the bytes, as they came
 * @len:  their number
 * @out:  with strip: the bytes for the client are appended here (complete lines; an
 *        incomplete line waits for its end). Without strip: NULL, nothing is copied.
 *
 * Return: 0 or -ENOMEM.
 */
int sse_usage_feed(SseUsage *s, const char *data, size_t len, UsageBuffer *out);

/* The stream ended: a last line without its newline is scanned (and, with strip, appended). */
int sse_usage_finish(SseUsage *s, UsageBuffer *out);

/**
 * sse_usage_result() - the tokens of the stream scanned so far
 * @s:   the scanner
 *
 * The provider's usage if it sent any; otherwise no prompt tokens and the number of
 * content events as completion tokens (one token per event, as servers stream), not
 * marked reported.
 */
TokenUsage sse_usage_result(const SseUsage *s);

/**
 * usage_from_json() - the usage in a plain answer
 * @body: the answer's JSON body
 * @len:  its length
 * @ret:  prompt_tokens and completion_tokens (0 when absent, e.g. for embeddings)
 *
 * Return: 0, -ENOENT (no usage object), -EINVAL (not JSON), -ENOMEM.
 */
int usage_from_json(const char *body, size_t len, TokenUsage *ret);

/*
 * JsonUsage: an incremental scanner of a plain JSON answer passed on in pieces, of any size:
 * it follows strings and nesting byte by byte and keeps only the value of the top-level
 * "usage" member (up to USAGE_OBJECT_MAX), so memory stays small however large the answer.
 */
typedef struct JsonUsage {
        unsigned depth;
        bool in_string, escape;
        bool expect_key;                /* at depth 1, after '{' or ',' */
        bool in_key;                    /* reading a depth-1 member name */
        bool key_done;                  /* …which ended, ':' is next */
        bool want_value;                /* after "usage": */
        char key[8];
        size_t key_len;                 /* > sizeof(key) - 1: longer than any name we want */
        UsageBuffer value;              /* the "usage" object while it is read */
        bool capturing;
        TokenUsage usage;
} JsonUsage;

void json_usage_done(JsonUsage *j);
/* Scan the next bytes: 0 or -ENOMEM. */
int json_usage_feed(JsonUsage *j, const char *data, size_t len);


/**
 * usage_request_body() - ask a streamed request's provider for its usage
 * @body:         the request's JSON body (already parsed once: an object)
 * @len:          its length
 * @ret_body:     on 1, the new body (malloc'd)
 * @ret_len:      on 1, its length
 *
 * Return: 1 if stream_options.include_usage was added (the client did not ask for it);
 * 0 if the client asked for it itself (the usage chunk is the client's); -EINVAL if
 * stream_options is not an object (left for the provider to refuse); -ENOMEM.
 */
int usage_request_body(const char *body, size_t len, char **ret_body, size_t *ret_len);

/* Whether a provider's error body says it does not know stream_options / include_usage. */
bool usage_error_mentions_stream_options(const char *body, size_t len);
