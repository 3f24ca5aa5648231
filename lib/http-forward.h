/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What a reverse proxy needs between lib/http-server (the client's exchange) and
 * lib/http-client (the request it makes on the client's behalf): request ids, the
 * normalised request path, and the header hygiene of a hop — hop-by-hop headers (also
 * those named in Connection:), framing, the client's credentials and forwarding headers
 * never cross it, and X-Club-* headers are ours on every hop.
 *
 * Nothing here logs.
 */

#include <stdbool.h>
#include <stddef.h>

#include "http-client.h"
#include "http-server.h"
#include "json-util.h"

/* 32 lowercase hex digits and the NUL. */
#define HTTP_REQUEST_ID_SIZE 33U

/**
 * http_request_id_new() - a fresh request id for x-request-id
 * @ret: 32 lowercase hex digits of random bytes, NUL-terminated
 */
void http_request_id_new(char ret[static HTTP_REQUEST_ID_SIZE]);

/**
 * http_respond_error() - answer with an OpenAI-shaped JSON error and the request's id
 * @x:          the exchange, not answered yet
 * @request_id: its x-request-id, or NULL for none
 * @status, @type, @code, @param, @fmt: as for http_exchange_respond_error()
 *
 * Return: 0 or a negative errno.
 */
int http_respond_error(HttpExchange *x, const char *request_id, unsigned status, const char *type,
                       const char *code, const char *param, const char *fmt, ...) _printf_(7, 8);
/* The same with a va_list. */
int http_respond_errorv(HttpExchange *x, const char *request_id, unsigned status, const char *type,
                        const char *code, const char *param, const char *fmt, va_list ap) _printf_(7, 0);

/**
 * http_respond_json() - answer with a JSON document that no cache may keep
 * @x:          the exchange, not answered yet
 * @request_id: its x-request-id, or NULL for none
 * @status:     the HTTP status
 * @o:          the document
 *
 * Adds Cache-Control: no-store.
 *
 * Return: 0 or a negative errno.
 */
int http_respond_json(HttpExchange *x, const char *request_id, unsigned status, json_object *o);

/**
 * http_path_normalize() - the request target with "//" collapsed and no trailing "/"
 * @target: path and query as received, e.g. "/v1//chat/completions/?a=b"
 *
 * The query is kept as it is: "/v1//chat/completions/?a=b" → "/v1/chat/completions?a=b".
 * An empty path becomes "/".
 *
 * Return: a malloc'd string, or NULL when out of memory.
 */
char *http_path_normalize(const char *target);

/**
 * http_path_is() - whether a normalised target's path is exactly @want
 * @path: a normalised target, possibly with a query
 * @want: the path to compare with
 *
 * Return: true for "@want" and "@want?…".
 */
bool http_path_is(const char *path, const char *want);

/**
 * http_path_has_dot_segment() - whether a path has a "." or ".." segment
 * @path: a path, possibly with a query (which is not looked at)
 *
 * HTTP clients resolve such segments before sending, so a forwarded request would
 * not reach the path it was checked (and signed) for. Refuse these.
 */
bool http_path_has_dot_segment(const char *path);

/**
 * http_forward_request_headers() - copy the client's request headers to a request
 * @x:    the client's exchange
 * @req:  the request to the next hop (not started)
 * @drop: more header names to leave out (NULL-terminated), or NULL
 *
 * Leaves out hop-by-hop headers and those named in the client's Connection: header,
 * Host, Content-Length, Expect and Accept-Encoding (framing and encoding are the next
 * hop's business), Authorization, Proxy-Authorization and Cookie (the client's
 * credentials), Forwarded and X-Forwarded-* / X-Real-IP (the client's address is not
 * passed on), and X-Club-* (ours). A header the request refuses (e.g. with a byte it
 * cannot carry) is dropped, not mangled.
 *
 * Return: 0 or -ENOMEM.
 */
int http_forward_request_headers(HttpExchange *x, HttpRequest *req, const char *const *drop);

/**
 * http_forward_response_headers() - copy a response's headers to the client's exchange
 * @req:        the finished-headers request (from its on_response on)
 * @x:          the client's exchange, not answered yet
 * @request_id: the exchange's x-request-id, or NULL
 *
 * Leaves out hop-by-hop headers and those named in the response's Connection: header,
 * Content-Length (the server frames the body itself), Date, Server, Set-Cookie, and the
 * response's x-request-id. Adds x-request-id: @request_id, and X-Accel-Buffering: no, which
 * tells a buffering reverse proxy in front of us (nginx) to pass a stream through.
 *
 * Return: 0 or -ENOMEM.
 */
int http_forward_response_headers(HttpRequest *req, HttpExchange *x, const char *request_id);

/**
 * http_forward_stream_start() - start passing a response on to the client as it arrives
 * @req:        the request, from its on_response on
 * @x:          the client's exchange, not answered yet
 * @request_id: the exchange's x-request-id, or NULL
 * @status:     the response's status
 *
 * Copies the response's headers as http_forward_response_headers() does, and starts the
 * client's stream: of the response's Content-Length when it announced one, else chunked.
 *
 * Return: 0 or a negative errno.
 */
int http_forward_stream_start(HttpRequest *req, HttpExchange *x, const char *request_id, unsigned status);

/**
 * http_response_content_length() - the response's Content-Length
 * @req: the request, from its on_response on
 *
 * Return: the length, or UINT64_MAX when there is none (chunked, or until close) or it is
 * not a valid number.
 */
uint64_t http_response_content_length(HttpRequest *req);

/*
 * A response body of known, small size, collected whole before it is passed on: sent with
 * its headers in one write, and one that breaks off can still be answered with a clean
 * error instead of a truncated body.
 */
typedef struct HttpSmallBody {
        bool active;            /* between begin and done */
        unsigned status;
        char *data;
        size_t len;
        size_t size;            /* as announced */
} HttpSmallBody;

/* Start collecting @size bytes of a response with @status: 0 or -ENOMEM. */
int http_small_body_begin(HttpSmallBody *b, unsigned status, size_t size);
/* Add what arrived: 0, or -EPROTO when it is more than announced. */
int http_small_body_append(HttpSmallBody *b, const void *data, size_t len);
/* Whether all announced bytes arrived. */
bool http_small_body_complete(const HttpSmallBody *b);
/* Free the bytes. */
void http_small_body_done(HttpSmallBody *b);
