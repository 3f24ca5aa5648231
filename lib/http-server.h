/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * HTTP/1.1 server on sd-event: libmicrohttpd in external-epoll mode, its epoll
 * fd an IO source of our loop and its timeout one timer.
 *
 * A request reaches the handler once, after its headers and its whole body
 * (bounded by max_body_size) arrived. The handler answers at once, or later:
 * an exchange that has no response yet is suspended in MHD until one of the
 * http_exchange_respond*() or http_exchange_stream_*() calls.
 *
 * Streaming: http_exchange_stream_start() sends the headers, every
 * http_exchange_stream_write() goes out as one chunk as soon as the socket
 * takes it. The per-exchange buffer is bounded (stream_buffer_max); a short
 * write tells the producer to stop, and the drain callback tells it when to
 * go on. A client that goes away, while its exchange waits on us or streams,
 * is noticed at once (EPOLLRDHUP on its socket) and reported through the
 * close callback.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct HttpServer HttpServer;
typedef struct HttpExchange HttpExchange;

typedef struct HttpServerOptions {
        unsigned max_connections;        /* all connections; 0: 1024 */
        unsigned max_connections_per_ip; /* 0: no per-address limit */
        size_t max_header_size;          /* request line + headers; 0: 16 KiB */
        size_t max_body_size;            /* request body; 0: 1 MiB */
        size_t stream_buffer_max;        /* buffered, unsent response bytes per stream; 0: 64 KiB */
        unsigned idle_timeout_sec;       /* idle keep-alive connection; 0: 60 s */
        /* HTTPS: PEM certificate chain and key, in memory. NULL: plain HTTP. */
        const char *tls_cert_pem;
        const char *tls_key_pem;
} HttpServerOptions;

/*
 * Called once per request with headers and body complete. Return 0 once the
 * exchange is answered or will be answered later; < 0 answers 500.
 */
typedef int (*HttpHandler)(HttpExchange *x, void *userdata);

/* The exchange ended: response done (ok = true) or client gone / aborted (ok = false). */
typedef void (*HttpExchangeCloseHandler)(HttpExchange *x, bool ok, void *userdata);
/* The stream buffer drained after a short write: the producer may write again. */
typedef void (*HttpExchangeDrainHandler)(HttpExchange *x, void *userdata);

/* Listen on fd (already bound and listening, e.g. from sd_listen_fds()). Takes ownership of fd. */
int http_server_new(sd_event *event, int fd, const HttpServerOptions *opts,
                    HttpHandler handler, void *userdata, HttpServer **ret);
HttpServer *http_server_free(HttpServer *s);
CLUB_DEFINE_CLEANUP(HttpServer *, http_server_free);

/* Open a listening TCP socket on "ADDR:PORT" (O_CLOEXEC|O_NONBLOCK, SO_REUSEADDR). */
int http_listen(const char *address, int *ret_fd);
/* The local port of a listening socket (for port 0). */
int http_socket_port(int fd, uint16_t *ret);

/* Stop accepting new connections; running exchanges go on. */
int http_server_quiesce(HttpServer *s);

/**
 * http_server_set_tls() - switch to a new certificate and key without refusing connections
 * @s:        the server
 * @cert_pem: the new PEM certificate chain, or NULL (with @key_pem NULL) for plain HTTP
 * @key_pem:  its PEM private key (copied, and wiped when replaced)
 *
 * Starts a new MHD daemon on a dup() of the listening socket with the new certificate and
 * quiesces the old one, which serves its open connections to their end and is then
 * stopped. New connections get the new certificate; nothing in flight is cut.
 *
 * Return: 0; -EINVAL if only one of @cert_pem and @key_pem is given; -EIO if MHD refuses
 * the certificate or key (the old ones stay in use); -ESHUTDOWN after http_server_quiesce();
 * -ENOMEM, or the errno of dup().
 */
int http_server_set_tls(HttpServer *s, const char *cert_pem, const char *key_pem);
unsigned http_server_n_connections(HttpServer *s);
unsigned http_server_n_exchanges(HttpServer *s);

/* Request accessors; valid while the exchange lives. */
const char *http_exchange_method(HttpExchange *x);
const char *http_exchange_path(HttpExchange *x);   /* path without query, as sent */
const char *http_exchange_target(HttpExchange *x); /* path with query, as sent */
const char *http_exchange_header(HttpExchange *x, const char *name); /* case-insensitive */
const void *http_exchange_body(HttpExchange *x, size_t *ret_len);
const struct sockaddr *http_exchange_peer(HttpExchange *x);
/* Who the client is: what http_exchange_set_client() recorded (e.g. the address a trusted
 * proxy names in X-Forwarded-For), else the peer. Rate limits and logs use this. */
const struct sockaddr *http_exchange_client(HttpExchange *x);
/* Record the client's address (AF_INET or AF_INET6, copied); NULL: the peer again. */
void http_exchange_set_client(HttpExchange *x, const struct sockaddr *sa);
uint64_t http_exchange_start_usec(HttpExchange *x); /* CLOCK_MONOTONIC when headers arrived */

typedef int (*HttpHeaderCallback)(const char *name, const char *value, void *userdata);
/* Call cb for each request header in order; stops at the first cb < 0 and returns it. */
int http_exchange_foreach_header(HttpExchange *x, HttpHeaderCallback cb, void *userdata);

/* Attach the handler's state. The close handler runs exactly once, when the exchange ends. */
void http_exchange_set_userdata(HttpExchange *x, void *userdata,
                                HttpExchangeCloseHandler on_close, HttpExchangeDrainHandler on_drain);

/* Add a response header (before respond or stream_start). */
int http_exchange_add_header(HttpExchange *x, const char *name, const char *value);

/* A complete response; the body is copied. */
int http_exchange_respond(HttpExchange *x, unsigned status, const char *content_type,
                          const void *body, size_t len);
/* An OpenAI-shaped JSON error: {"error":{"message","type","param","code"}}. */
int http_exchange_respond_error(HttpExchange *x, unsigned status, const char *type,
                                const char *code, const char *param, const char *fmt, ...) _printf_(6, 7);
/* The same with a va_list. */
int http_exchange_respond_errorv(HttpExchange *x, unsigned status, const char *type,
                                 const char *code, const char *param, const char *fmt, va_list ap) _printf_(6, 0);

/* Begin a streamed (chunked) response. */
int http_exchange_stream_start(HttpExchange *x, unsigned status, const char *content_type);
/* Begin a streamed response of a known length (Content-Length, no chunking). */
int http_exchange_stream_start_sized(HttpExchange *x, unsigned status, const char *content_type, uint64_t size);
/*
 * Queue data; it goes out at once. Returns the number of bytes taken
 * (< len when the buffer is full: wait for the drain callback), or -EPIPE
 * once the client is gone.
 */
ssize_t http_exchange_stream_write(HttpExchange *x, const void *data, size_t len);
/* Finish the stream cleanly, after what is buffered (terminating chunk). */
int http_exchange_stream_end(HttpExchange *x);
/* Close the connection without the terminating chunk: the client sees a truncated body. */
int http_exchange_stream_abort(HttpExchange *x);
/* Bytes queued but not yet handed to the socket. */
size_t http_exchange_stream_pending(HttpExchange *x);

bool http_exchange_is_streaming(HttpExchange *x);
bool http_exchange_is_answered(HttpExchange *x);

const char *http_status_reason(unsigned status);
