/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * HTTP client on sd-event: libcurl's multi interface, its sockets IO sources
 * of our loop and its timeout one timer. One HttpClient holds a connection
 * cache, so requests to the same upstream reuse kept-alive connections.
 *
 * Callbacks run from the loop. on_data may take fewer bytes than offered:
 * the transfer is then paused (TCP backpressure reaches the upstream) and
 * the rest is offered again after http_request_resume(). A callback that
 * returns < 0 aborts the transfer; on_done then reports that error.
 * http_request_free() cancels a running transfer at any time, also from
 * inside a callback; on_done is not called for it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct HttpClient HttpClient;
typedef struct HttpRequest HttpRequest;

typedef struct HttpClientOptions {
        uint64_t connect_timeout_usec; /* 0: 10 s */
        uint64_t idle_timeout_usec;    /* no byte received for this long aborts (see below); 0: 300 s */
        unsigned max_connections;      /* total open connections; 0: 1024 */
        unsigned max_idle_connections; /* kept alive for reuse; 0: 256 */
        size_t max_response_headers;   /* bytes of response headers; 0: 64 KiB */
        size_t receive_buffer_size;    /* libcurl's receive buffer; 0: 16 KiB */
        const char *ca_file;           /* HTTPS trust anchors; NULL: the system store */
} HttpClientOptions;

typedef struct HttpRequestCallbacks {
        /* Status line and all headers arrived (1xx are skipped). */
        int (*on_response)(HttpRequest *req, unsigned status, void *userdata);
        /* Body bytes; return how many were taken (≤ len), or < 0 to abort. */
        ssize_t (*on_data)(HttpRequest *req, const void *data, size_t len, void *userdata);
        /*
         * The transfer ended: 0 when the whole response arrived, else
         * -ECONNREFUSED (could not connect), -ETIMEDOUT (connect or idle
         * timeout), -ECONNRESET (connection lost or response truncated),
         * -EPROTO (malformed response), or a callback's own error.
         */
        void (*on_done)(HttpRequest *req, int error, void *userdata);
} HttpRequestCallbacks;

int http_client_new(sd_event *event, const HttpClientOptions *opts, HttpClient **ret);
/* Cancels every running request without calling on_done. */
HttpClient *http_client_free(HttpClient *c);
CLUB_DEFINE_CLEANUP(HttpClient *, http_client_free);

/* Counters since start: transfers started, and new TCP connections opened for them. */
uint64_t http_client_n_requests(HttpClient *c);
uint64_t http_client_n_connects(HttpClient *c);
unsigned http_client_n_running(HttpClient *c);

/* method: "GET", "POST", …; url: http:// or https:// only. */
int http_request_new(HttpClient *c, const char *method, const char *url, HttpRequest **ret);
HttpRequest *http_request_free(HttpRequest *r);
CLUB_DEFINE_CLEANUP(HttpRequest *, http_request_free);

/* Add a request header "Name: value" (refuses CR/LF). */
int http_request_add_header(HttpRequest *r, const char *name, const char *value);
/* The request body, copied. */
int http_request_set_body(HttpRequest *r, const void *body, size_t len);
/* Per-request timeouts, overriding the client's (0 keeps the client's). The idle timeout
 * bounds the silence between two deliveries once the response has started, and, unless a
 * response timeout is set, the wait for the response headers too. A transfer its owner
 * paused is never idle. Timeouts are checked every 200 ms. */
void http_request_set_timeouts(HttpRequest *r, uint64_t connect_usec, uint64_t idle_usec);
/* How long to wait for the response headers (0: the idle timeout). */
void http_request_set_response_timeout(HttpRequest *r, uint64_t usec);

int http_request_start(HttpRequest *r, const HttpRequestCallbacks *cb, void *userdata);
/* Continue a transfer that on_data paused. Safe to call when not paused. */
int http_request_resume(HttpRequest *r);
bool http_request_is_paused(HttpRequest *r);

/* Response accessors, valid from on_response on. */
unsigned http_request_status(HttpRequest *r);
const char *http_request_response_header(HttpRequest *r, const char *name); /* case-insensitive, first match */
typedef int (*HttpResponseHeaderCallback)(const char *name, const char *value, void *userdata);
int http_request_foreach_response_header(HttpRequest *r, HttpResponseHeaderCallback cb, void *userdata);

const char *http_request_url(HttpRequest *r);
void *http_request_userdata(HttpRequest *r);
