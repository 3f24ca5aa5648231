/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include "http-forward.h"
#include "http-server.h"
#include "json-util.h"
#include "log.h"
#include "parse-util.h"

#define DEFAULT_MAX_CONNECTIONS 1024U
#define DEFAULT_MAX_HEADER_SIZE (16U * 1024U)
#define DEFAULT_MAX_BODY_SIZE (1024U * 1024U)
#define DEFAULT_STREAM_BUFFER_MAX (64U * 1024U)
#define DEFAULT_IDLE_TIMEOUT_SEC 60U
#define STREAM_BLOCK_SIZE (16U * 1024U)
/* How far past max_body_size a body is still read (and thrown away) before its 413. */
#define HTTP_SERVER_DISCARD_MAX (4U * 1024U * 1024U)
#define MAX_RESPONSE_HEADERS 32U

typedef struct Header {
        char *name;
        char *value;
} Header;

/*
 * One MHD daemon on the listening socket, with its epoll fd as an IO source. A server has
 * one current daemon; http_server_set_tls() starts a new one on a dup() of the socket and
 * retires the old one, quiesced, until its last connection is gone.
 */
typedef struct HttpDaemon HttpDaemon;
struct HttpDaemon {
        HttpServer *server;
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *kick;   /* runs MHD once more after a resume */
        struct MHD_Daemon *mhd;
        int fd;                  /* this daemon's own listening fd */
        bool quiesced;
        unsigned n_connections;
        HttpDaemon *retired_next;
};

struct HttpServer {
        sd_event *event;
        HttpDaemon *daemon;      /* the one accepting connections */
        HttpDaemon *retired;     /* quiesced, serving their last connections */
        sd_event_source *reap;   /* stops retired daemons that have no connection left */
        int fd;                  /* the listening socket, for new daemons */
        bool quiesced;
        char *tls_cert_pem;      /* our copies of opts.tls_* */
        char *tls_key_pem;

        HttpServerOptions opts;
        HttpHandler handler;
        void *userdata;

        unsigned n_connections;
        unsigned n_exchanges;
        HttpExchange *exchanges;  /* every live exchange */
};

struct HttpExchange {
        HttpServer *server;
        HttpDaemon *daemon;
        struct MHD_Connection *conn;
        const char *method;
        char *target;
        char *path;
        uint64_t start_usec;

        char *body;
        size_t body_len;
        size_t body_alloc;
        bool body_too_large;

        bool headers_seen;
        bool dispatched;
        bool queued;
        bool suspended;
        bool client_gone;
        bool closed;

        Header headers[MAX_RESPONSE_HEADERS];
        size_t n_headers;
        struct MHD_Response *response;
        unsigned status;

        /* streaming */
        bool streaming;
        bool stream_ended;
        bool stream_aborted;
        bool want_drain;
        char *buf;
        size_t buf_off;
        size_t buf_len;
        size_t buf_alloc;

        sd_event_source *hup_source;
        sd_event_source *drain_source;

        void *userdata;
        HttpExchangeCloseHandler on_close;
        HttpExchangeDrainHandler on_drain;

        /* http_exchange_set_client(): who the application decided the client is. */
        struct sockaddr_storage client;
        bool has_client;

        HttpExchange *exchanges_prev, *exchanges_next;
};

static void daemon_run(HttpDaemon *d);

/* ---- listening sockets ---------------------------------------------------- */

int http_listen(const char *address, int *ret_fd) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_free_ char *any_port = NULL;
        const char *colon;
        struct sockaddr_storage ss;
        socklen_t len;
        int r, one = 1;

        assert(address && ret_fd);
        /* Port 0 (any free one, see http_socket_port()) is fine for a listener, though
         * parse_sockaddr() refuses it: parse with port 1, then clear the port. */
        colon = strrchr(address, ':');
        if (colon && streq(colon, ":0")) {
                if (asprintf(&any_port, "%.*s:1", (int) (colon - address), address) < 0)
                        return -ENOMEM;
                address = any_port;
        }
        r = parse_sockaddr(address, &ss, &len);
        if (r < 0)
                return r;
        if (any_port && ss.ss_family == AF_INET)
                ((struct sockaddr_in *) &ss)->sin_port = 0;
        else if (any_port && ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *) &ss)->sin6_port = 0;
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &ss, len) < 0)
                return -errno;
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int http_socket_port(int fd, uint16_t *ret) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return -errno;
        if (ss.ss_family == AF_INET)
                *ret = ntohs(((struct sockaddr_in *) &ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
                *ret = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        else
                return -EAFNOSUPPORT;
        return 0;
}

/* ---- exchanges -------------------------------------------------------------- */

static void exchange_watch_hup(HttpExchange *x, bool on);

static void exchange_clear_headers(HttpExchange *x) {
        for (size_t i = 0; i < x->n_headers; i++) {
                free(x->headers[i].name);
                free(x->headers[i].value);
        }
        x->n_headers = 0;
}

static HttpExchange *exchange_free(HttpExchange *x) {
        if (!x)
                return NULL;
        if (x->server) {
                x->server->n_exchanges--;
                if (x->exchanges_prev)
                        x->exchanges_prev->exchanges_next = x->exchanges_next;
                else
                        x->server->exchanges = x->exchanges_next;
                if (x->exchanges_next)
                        x->exchanges_next->exchanges_prev = x->exchanges_prev;
        }
        sd_event_source_disable_unref(x->hup_source);
        sd_event_source_disable_unref(x->drain_source);
        if (x->response)
                MHD_destroy_response(x->response);
        exchange_clear_headers(x);
        free(x->target);
        free(x->path);
        free(x->body);
        free(x->buf);
        return mfree(x);
}

static void exchange_notify_close(HttpExchange *x, bool ok) {
        HttpExchangeCloseHandler cb = x->on_close;

        if (x->closed)
                return;
        x->closed = true;
        x->on_close = NULL;
        x->on_drain = NULL;
        if (cb)
                cb(x, ok, x->userdata);
}

static void exchange_suspend(HttpExchange *x) {
        if (x->suspended || x->client_gone)
                return;
        MHD_suspend_connection(x->conn);
        x->suspended = true;
        exchange_watch_hup(x, true);
}

static void exchange_resume(HttpExchange *x) {
        if (!x->suspended)
                return;
        /* The hang-up watch stays until the exchange ends: re-adding it on every suspend
         * cost two epoll_ctl() calls per streamed chunk. */
        x->suspended = false;
        MHD_resume_connection(x->conn);
        /* A resumed connection is only looked at by the next MHD_run(). */
        (void) sd_event_source_set_enabled(x->daemon->kick, SD_EVENT_ONESHOT);
}

static int on_client_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpExchange *x = userdata;

        /* The client closed its end while we held the exchange (or streamed to it): tell the
         * owner now, then let MHD tear the connection down. */
        x->client_gone = true;
        exchange_watch_hup(x, false); /* level-triggered: it would fire again */
        exchange_resume(x);
        exchange_notify_close(x, false);
        return 0;
}

static void exchange_watch_hup(HttpExchange *x, bool on) {
        const union MHD_ConnectionInfo *ci;
        int r;

        if (!on) {
                x->hup_source = sd_event_source_disable_unref(x->hup_source);
                return;
        }
        if (x->hup_source)
                return;
        ci = MHD_get_connection_info(x->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
                return;
        r = sd_event_add_io(x->server->event, &x->hup_source, ci->connect_fd, EPOLLRDHUP, on_client_hup, x);
        if (r < 0)
                log_debug_errno(r, "Failed to watch client connection for hang-up, ignoring: %m");
}

static int on_drain_defer(sd_event_source *s, void *userdata) {
        HttpExchange *x = userdata;

        x->drain_source = sd_event_source_disable_unref(x->drain_source);
        if (x->on_drain && !x->client_gone)
                x->on_drain(x, x->userdata);
        return 0;
}

static void exchange_schedule_drain(HttpExchange *x) {
        int r;

        x->want_drain = false;
        if (x->drain_source)
                return;
        /* Never call back into the producer from inside MHD: defer to the loop. */
        r = sd_event_add_defer(x->server->event, &x->drain_source, on_drain_defer, x);
        if (r < 0)
                log_debug_errno(r, "Failed to schedule drain notification: %m");
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
        HttpExchange *x = cls;
        size_t n, avail;

        /* After an abort what was buffered still goes out; then the connection closes. */
        if (x->client_gone || (x->stream_aborted && x->buf_len == x->buf_off))
                return MHD_CONTENT_READER_END_WITH_ERROR;

        avail = x->buf_len - x->buf_off;
        if (avail == 0) {
                if (x->stream_ended)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                exchange_suspend(x);
                return 0;
        }

        n = MIN(avail, max);
        memcpy(out, x->buf + x->buf_off, n);
        x->buf_off += n;
        if (x->buf_off == x->buf_len) {
                x->buf_off = x->buf_len = 0;
                /* Give back large buffers once a burst is over. */
                if (x->buf_alloc > 16U * 1024U) {
                        x->buf = mfree(x->buf);
                        x->buf_alloc = 0;
                }
        }
        if (x->want_drain && x->buf_len - x->buf_off <= x->server->opts.stream_buffer_max / 4)
                exchange_schedule_drain(x);
        return (ssize_t) n;
}

static int exchange_build_response(HttpExchange *x, unsigned status, struct MHD_Response *resp) {
        for (size_t i = 0; i < x->n_headers; i++)
                if (MHD_add_response_header(resp, x->headers[i].name, x->headers[i].value) != MHD_YES) {
                        /* One MHD will not send (Content-Length, …): drop them all, so that
                         * the exchange can still be answered, e.g. with an error. */
                        MHD_destroy_response(resp);
                        exchange_clear_headers(x);
                        return -EINVAL;
                }
        exchange_clear_headers(x);
        x->response = resp;
        x->status = status;
        exchange_resume(x);
        return 0;
}

int http_exchange_add_header(HttpExchange *x, const char *name, const char *value) {
        Header *h;

        assert(x && name && value);
        if (x->response || x->streaming)
                return -EBUSY;
        if (x->n_headers >= MAX_RESPONSE_HEADERS)
                return -E2BIG;
        /* Header injection: no CR/LF in names or values. MHD would refuse the whole response
         * for an empty name or value, or blanks in a name: refuse them here. */
        if (isempty(name) || isempty(value) || strpbrk(name, "\r\n: \t") || strpbrk(value, "\r\n"))
                return -EINVAL;
        h = &x->headers[x->n_headers];
        h->name = strdup(name);
        h->value = strdup(value);
        if (!h->name || !h->value) {
                free(h->name);
                free(h->value);
                return -ENOMEM;
        }
        x->n_headers++;
        return 0;
}

/* Checks shared by every way of answering: not answered yet, client still there. */
static int exchange_prepare_answer(HttpExchange *x, const char *content_type) {
        assert(x);
        if (x->response || x->streaming || x->queued)
                return -EBUSY;
        if (x->client_gone)
                return -EPIPE;
        return content_type ? http_exchange_add_header(x, "Content-Type", content_type) : 0;
}

int http_exchange_respond(HttpExchange *x, unsigned status, const char *content_type,
                          const void *body, size_t len) {
        struct MHD_Response *resp;
        int r;

        r = exchange_prepare_answer(x, content_type);
        if (r < 0)
                return r;
        resp = MHD_create_response_from_buffer(len, (void *) (body ?: ""), MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return -ENOMEM;
        return exchange_build_response(x, status, resp);
}

int http_exchange_respond_error(HttpExchange *x, unsigned status, const char *type,
                                const char *code, const char *param, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = http_exchange_respond_errorv(x, status, type, code, param, fmt, ap);
        va_end(ap);
        return r;
}

int http_exchange_respond_errorv(HttpExchange *x, unsigned status, const char *type,
                                 const char *code, const char *param, const char *fmt, va_list ap) {
        _cleanup_free_ char *msg = NULL, *body = NULL;
        size_t len;
        int r;

        if (vasprintf(&msg, fmt, ap) < 0)
                return -ENOMEM;
        r = openai_error_body(msg, type, param, code, &body, &len);
        if (r < 0)
                return r;
        if (status == 401)
                (void) http_exchange_add_header(x, "WWW-Authenticate", "Bearer");
        return http_exchange_respond(x, status, "application/json", body, len);
}

int http_exchange_stream_start(HttpExchange *x, unsigned status, const char *content_type) {
        return http_exchange_stream_start_sized(x, status, content_type, MHD_SIZE_UNKNOWN);
}

int http_exchange_stream_start_sized(HttpExchange *x, unsigned status, const char *content_type, uint64_t size) {
        struct MHD_Response *resp;
        int r;

        r = exchange_prepare_answer(x, content_type);
        if (r < 0)
                return r;
        /* MHD callocs block_size bytes with every callback response. It reads a sized body
         * through them, so no more than the body is useful; a chunked body goes straight into
         * the connection's write buffer and never touches them. */
        resp = MHD_create_response_from_callback(size, size == MHD_SIZE_UNKNOWN ? 64 :
                                                 (size_t) CLAMP(size, (uint64_t) 64, (uint64_t) STREAM_BLOCK_SIZE),
                                                 stream_reader, x, NULL);
        if (!resp)
                return -ENOMEM;
        r = exchange_build_response(x, status, resp);
        if (r < 0)
                return r;
        x->streaming = true;
        return 0;
}

ssize_t http_exchange_stream_write(HttpExchange *x, const void *data, size_t len) {
        size_t room, pending, n;

        assert(x);
        if (!x->streaming || x->stream_ended || x->stream_aborted)
                return -EINVAL;
        if (x->client_gone)
                return -EPIPE;
        if (len == 0)
                return 0;

        pending = x->buf_len - x->buf_off;
        room = x->server->opts.stream_buffer_max > pending ? x->server->opts.stream_buffer_max - pending : 0;
        n = MIN(len, room);
        if (n < len)
                x->want_drain = true;
        if (n == 0)
                return 0;

        if (x->buf_len + n > x->buf_alloc) {
                if (x->buf_off > 0) {
                        memmove(x->buf, x->buf + x->buf_off, pending);
                        x->buf_len = pending;
                        x->buf_off = 0;
                }
                if (x->buf_len + n > x->buf_alloc) {
                        size_t a = MAX(x->buf_alloc * 2, (size_t) 1024);
                        char *p;

                        while (a < x->buf_len + n)
                                a *= 2;
                        a = MIN(a, MAX(x->server->opts.stream_buffer_max, x->buf_len + n));
                        p = realloc(x->buf, a);
                        if (!p)
                                return -ENOMEM;
                        x->buf = p;
                        x->buf_alloc = a;
                }
        }
        memcpy(x->buf + x->buf_len, data, n);
        x->buf_len += n;
        exchange_resume(x);
        return (ssize_t) n;
}

int http_exchange_stream_end(HttpExchange *x) {
        assert(x);
        if (!x->streaming)
                return -EINVAL;
        x->stream_ended = true;
        exchange_resume(x);
        return 0;
}

int http_exchange_stream_abort(HttpExchange *x) {
        assert(x);
        if (!x->streaming)
                return -EINVAL;
        x->stream_aborted = true;
        exchange_resume(x);
        return 0;
}

size_t http_exchange_stream_pending(HttpExchange *x) {
        return x->buf_len - x->buf_off;
}

bool http_exchange_is_streaming(HttpExchange *x) {
        return x->streaming;
}

bool http_exchange_is_answered(HttpExchange *x) {
        return x->response || x->queued || x->streaming;
}

void http_exchange_set_userdata(HttpExchange *x, void *userdata,
                                HttpExchangeCloseHandler on_close, HttpExchangeDrainHandler on_drain) {
        assert(x);
        x->userdata = userdata;
        x->on_close = on_close;
        x->on_drain = on_drain;
}

const char *http_exchange_method(HttpExchange *x) {
        return x->method;
}

const char *http_exchange_path(HttpExchange *x) {
        return x->path;
}

const char *http_exchange_target(HttpExchange *x) {
        return x->target;
}

const char *http_exchange_header(HttpExchange *x, const char *name) {
        return MHD_lookup_connection_value(x->conn, MHD_HEADER_KIND, name);
}

const void *http_exchange_body(HttpExchange *x, size_t *ret_len) {
        if (ret_len)
                *ret_len = x->body_len;
        return x->body;
}

const struct sockaddr *http_exchange_peer(HttpExchange *x) {
        const union MHD_ConnectionInfo *ci;

        ci = MHD_get_connection_info(x->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        return ci ? ci->client_addr : NULL;
}

const struct sockaddr *http_exchange_client(HttpExchange *x) {
        return x->has_client ? (const struct sockaddr *) &x->client : http_exchange_peer(x);
}

void http_exchange_set_client(HttpExchange *x, const struct sockaddr *sa) {
        x->has_client = sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
        if (x->has_client)
                memcpy(&x->client, sa, sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
}

uint64_t http_exchange_start_usec(HttpExchange *x) {
        return x->start_usec;
}

typedef struct HeaderIter {
        HttpHeaderCallback cb;
        void *userdata;
        int r;
} HeaderIter;

static enum MHD_Result header_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        HeaderIter *it = cls;

        it->r = it->cb(key, value ?: "", it->userdata);
        return it->r < 0 ? MHD_NO : MHD_YES;
}

int http_exchange_foreach_header(HttpExchange *x, HttpHeaderCallback cb, void *userdata) {
        HeaderIter it = { .cb = cb, .userdata = userdata };

        (void) MHD_get_connection_values(x->conn, MHD_HEADER_KIND, header_iter, &it);
        return MIN(it.r, 0);
}

/* ---- MHD callbacks -------------------------------------------------------------- */

static void *on_uri_log(void *cls, const char *uri, struct MHD_Connection *c) {
        HttpDaemon *d = cls;
        HttpServer *s = d->server;
        HttpExchange *x;
        const char *q;

        /* First sight of a request: the raw target, before MHD unescapes it. */
        x = new0(HttpExchange, 1);
        if (!x)
                return NULL;
        *x = (HttpExchange) {
                .server = s,
                .daemon = d,
                .conn = c,
                .start_usec = now_usec(CLOCK_MONOTONIC),
                .target = strdup(uri ?: "/"),
                .exchanges_next = s->exchanges,
        };
        /* Counted and listed first: exchange_free() undoes both. */
        s->n_exchanges++;
        if (s->exchanges)
                s->exchanges->exchanges_prev = x;
        s->exchanges = x;
        if (x->target) {
                q = strchr(x->target, '?');
                x->path = q ? strndup(x->target, (size_t) (q - x->target)) : strdup(x->target);
        }
        if (!x->target || !x->path)
                return exchange_free(x);
        return x;
}

typedef struct HeaderSize {
        size_t total;
} HeaderSize;

static enum MHD_Result header_size_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        HeaderSize *hs = cls;

        hs->total += strlen(key) + strlen(value ?: "") + 4;
        return MHD_YES;
}

static enum MHD_Result queue_simple_error(HttpExchange *x, unsigned status, const char *type,
                                          const char *code, const char *message) {
        char id[HTTP_REQUEST_ID_SIZE];

        /* Our own answers (413, 431, 500) are requests too: give them an id like any other. */
        http_request_id_new(id);
        (void) http_exchange_add_header(x, "x-request-id", id);
        (void) http_exchange_respond_error(x, status, type, code, NULL, "%s", message);
        if (!x->response)
                return MHD_NO;
        x->queued = true;
        return MHD_queue_response(x->conn, x->status, x->response);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
        HttpServer *s = ((HttpDaemon *) cls)->server;
        HttpExchange *x = *con_cls;
        int r;

        if (!x)
                return MHD_NO; /* out of memory in on_uri_log */

        if (!x->headers_seen) {
                HeaderSize hs = {};
                const char *cl;

                x->headers_seen = true;
                x->method = method;
                x->conn = c;

                hs.total = strlen(x->target) + strlen(method) + 16;
                (void) MHD_get_connection_values(c, MHD_HEADER_KIND, header_size_iter, &hs);
                if (hs.total > s->opts.max_header_size)
                        return queue_simple_error(x, 431, "invalid_request_error", "headers_too_large",
                                                  "The request headers are too large.");

                /*
                 * An oversized body. Answering before it is read and closing makes the kernel
                 * reset a connection with unread data, and a reset can reach the client (or a
                 * proxy in front) before the 413 does. So a body that is only somewhat too
                 * large is read and thrown away, and the 413 goes out afterwards; only a client
                 * that waits for "100 Continue", or a body beyond that bound, is refused at once.
                 */
                cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl) {
                        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                        uint64_t v;

                        if (parse_uint64(cl, &v) >= 0 && v > s->opts.max_body_size) {
                                if ((expect && strcasecmp(expect, "100-continue") == 0) ||
                                    v - s->opts.max_body_size > HTTP_SERVER_DISCARD_MAX)
                                        return queue_simple_error(x, 413, "invalid_request_error", "request_too_large",
                                                                  "The request body is too large.");
                                x->body_too_large = true;
                        }
                }
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                *upload_data_size = 0;
                if (x->body_too_large)
                        return MHD_YES;
                if (x->body_len + n > s->opts.max_body_size) {
                        x->body_too_large = true;
                        x->body = mfree(x->body);
                        x->body_len = x->body_alloc = 0;
                        return MHD_YES;
                }
                if (x->body_len + n + 1 > x->body_alloc) {
                        size_t a = MAX(x->body_alloc * 2, x->body_len + n + 1);
                        char *p;

                        a = MIN(a, s->opts.max_body_size + 1);
                        p = realloc(x->body, a);
                        if (!p)
                                return MHD_NO;
                        x->body = p;
                        x->body_alloc = a;
                }
                memcpy(x->body + x->body_len, upload_data, n);
                x->body_len += n;
                x->body[x->body_len] = 0;
                return MHD_YES;
        }

        if (x->client_gone)
                return MHD_NO;

        if (!x->dispatched) {
                x->dispatched = true;
                if (x->body_too_large)
                        return queue_simple_error(x, 413, "invalid_request_error", "request_too_large",
                                                  "The request body is too large.");
                r = s->handler(x, s->userdata);
                if (r < 0 && !x->response) {
                        log_debug_errno(r, "Request handler failed: %m");
                        return queue_simple_error(x, 500, "server_error", "internal_error",
                                                  "The server failed to handle the request.");
                }
        }

        if (x->response && !x->queued) {
                enum MHD_Result m;

                x->queued = true;
                m = MHD_queue_response(c, x->status, x->response);
                MHD_destroy_response(x->response); /* MHD holds its own reference */
                x->response = NULL;
                return m;
        }

        if (!x->queued)
                exchange_suspend(x); /* answered later */
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpExchange *x = *con_cls;

        /* MHD closes and frees a finished connection only on its next run, and does not
         * count that as a reason to be run soon: without a kick a client would wait for the
         * idle timeout to see the connection close. */
        (void) sd_event_source_set_enabled(((HttpDaemon *) cls)->kick, SD_EVENT_ONESHOT);
        if (!x)
                return;
        *con_cls = NULL;
        exchange_watch_hup(x, false);
        exchange_notify_close(x, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && !x->stream_aborted);
        exchange_free(x);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        HttpDaemon *d = cls;
        HttpServer *s = d->server;
        const union MHD_ConnectionInfo *ci;
        int one = 1;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                d->n_connections++;
                s->n_connections++;
                /* Stream chunks go out as they are written: no Nagle delay. */
                ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
                if (ci)
                        (void) setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        } else {
                if (s->n_connections > 0)
                        s->n_connections--;
                if (d->n_connections > 0)
                        d->n_connections--;
                /* A retired daemon is stopped once its last connection is gone, from the
                 * loop: never inside its own MHD_run(). */
                if (d->quiesced && d != s->daemon && d->n_connections == 0)
                        (void) sd_event_source_set_enabled(s->reap, SD_EVENT_ONESHOT);
        }
}

_printf_(2, 0)
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];

        if (log_get_max_level() < LOG_DEBUG)
                return;
        (void) vsnprintf(buf, sizeof buf, fmt, ap);
        log_debug("microhttpd: %s", buf);
}

/* ---- the loop --------------------------------------------------------------- */

static void daemon_arm_timer(HttpDaemon *d) {
        MHD_UNSIGNED_LONG_LONG ms;
        int r;

        if (MHD_get_timeout(d->mhd, &ms) != MHD_YES) {
                (void) sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
                return;
        }
        if (ms == 0) {
                /* "Run again now" (e.g. a keep-alive request already read): on the next loop
                 * iteration, with no timerfd round trip. */
                (void) sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
                (void) sd_event_source_set_enabled(d->kick, SD_EVENT_ONESHOT);
                return;
        }
        /* MHD's timeout is relative to now, in milliseconds. */
        r = sd_event_source_set_time_relative(d->timer, (uint64_t) ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(d->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Failed to arm HTTP server timer: %m");
}

static void daemon_run(HttpDaemon *d) {
        (void) MHD_run(d->mhd);
        daemon_arm_timer(d);
}

static int on_mhd_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        daemon_run(userdata);
        return 0;
}

static int on_mhd_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        daemon_run(userdata);
        return 0;
}

static int on_mhd_kick(sd_event_source *es, void *userdata) {
        daemon_run(userdata);
        return 0;
}

static HttpDaemon *daemon_free(HttpDaemon *d) {
        if (!d)
                return NULL;
        /* MHD_stop_daemon() aborts while a connection is suspended (an exchange waiting for its
         * answer or for stream data): resume this daemon's, it then closes them (ok = false). */
        if (d->server)
                for (HttpExchange *x = d->server->exchanges; x; x = x->exchanges_next)
                        if (x->daemon == d)
                                exchange_resume(x);
        d->io = sd_event_source_disable_unref(d->io);
        d->timer = sd_event_source_disable_unref(d->timer);
        d->kick = sd_event_source_disable_unref(d->kick);
        if (d->mhd)
                MHD_stop_daemon(d->mhd); /* closes the listening fd unless quiesced */
        if (!d->mhd || d->quiesced)
                safe_close(d->fd);
        return mfree(d);
}
CLUB_DEFINE_CLEANUP(HttpDaemon *, daemon_free);

/* Start an MHD daemon on fd (taken, also on failure) with the server's options and the given
 * certificate and key (both NULL: plain HTTP). */
static int daemon_new(HttpServer *s, int fd, const char *cert_pem, const char *key_pem, HttpDaemon **ret) {
        _cleanup_(daemon_freep) HttpDaemon *d = NULL;
        const union MHD_DaemonInfo *di;
        unsigned flags;
        int r;

        d = new0(HttpDaemon, 1);
        if (!d) {
                safe_close(fd);
                return -ENOMEM;
        }
        *d = (HttpDaemon) { .server = s, .fd = fd };

        flags = MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
        if (cert_pem && key_pem)
                flags |= MHD_USE_TLS;

        /* The connection pool holds the request headers and the response's write buffer. */
        size_t pool = MAX(s->opts.max_header_size + STREAM_BLOCK_SIZE + 4096, (size_t) 32 * 1024);

        struct MHD_OptionItem options[] = {
                { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t) on_mhd_log, d },
                { MHD_OPTION_LISTEN_SOCKET, fd, NULL },
                { MHD_OPTION_CONNECTION_LIMIT, s->opts.max_connections, NULL },
                { MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->opts.max_connections_per_ip, NULL },
                { MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t) pool, NULL },
                { MHD_OPTION_CONNECTION_TIMEOUT, s->opts.idle_timeout_sec, NULL },
                { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t) on_uri_log, d },
                { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) on_completed, d },
                { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t) on_connection, d },
                { MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL },
                { MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 0, NULL },
                { cert_pem ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *) cert_pem },
                { key_pem ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *) key_pem },
                { MHD_OPTION_END, 0, NULL },
        };
        /* Without TLS the two TLS slots are END and terminate the list early. */

        d->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_access, d,
                                  MHD_OPTION_ARRAY, options, MHD_OPTION_END);
        if (!d->mhd)
                return -EIO;

        di = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!di)
                return -EIO;
        r = sd_event_add_io(s->event, &d->io, di->epoll_fd, EPOLLIN, on_mhd_io, d);
        if (r < 0)
                return r;
        /* Only MHD's idle timeouts (seconds) go through the timer, so it may be late by 250 ms;
         * a timeout of 0 goes through the kick (daemon_arm_timer()). Never accuracy 0 for
         * "run now": sd-event takes 0 as its default, 250 ms. */
        r = sd_event_add_time_relative(s->event, &d->timer, CLOCK_MONOTONIC, 0, 250 * USEC_PER_MSEC, on_mhd_timer, d);
        if (r < 0)
                return r;
        r = sd_event_add_defer(s->event, &d->kick, on_mhd_kick, d);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(d->kick, SD_EVENT_OFF);
        daemon_arm_timer(d);

        *ret = TAKE_PTR(d);
        return 0;
}

static int daemon_quiesce(HttpDaemon *d) {
        if (d->quiesced)
                return 0;
        if (MHD_quiesce_daemon(d->mhd) < 0)
                return -EIO;
        d->quiesced = true;
        return 0;
}

static int on_reap(sd_event_source *es, void *userdata) {
        HttpServer *s = userdata;

        for (HttpDaemon **p = &s->retired; *p; ) {
                HttpDaemon *d = *p;

                if (d->n_connections > 0) {
                        p = &d->retired_next;
                        continue;
                }
                *p = d->retired_next;
                log_debug("HTTP server: the daemon retired by a TLS change has no connection left; stopping it.");
                daemon_free(d);
        }
        return 0;
}

int http_server_new(sd_event *event, int fd, const HttpServerOptions *opts,
                    HttpHandler handler, void *userdata, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        _cleanup_(closep) int daemon_fd = -EBADF;
        int r;

        assert(event && fd >= 0 && handler && ret);

        s = new0(HttpServer, 1);
        if (!s) {
                safe_close(fd);
                return -ENOMEM;
        }
        *s = (HttpServer) {
                .event = sd_event_ref(event),
                .fd = fd,
                .handler = handler,
                .userdata = userdata,
                .opts = opts ? *opts : (HttpServerOptions) {},
        };
        if (s->opts.max_connections == 0)
                s->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
        if (s->opts.max_header_size == 0)
                s->opts.max_header_size = DEFAULT_MAX_HEADER_SIZE;
        if (s->opts.max_body_size == 0)
                s->opts.max_body_size = DEFAULT_MAX_BODY_SIZE;
        if (s->opts.stream_buffer_max == 0)
                s->opts.stream_buffer_max = DEFAULT_STREAM_BUFFER_MAX;
        if (s->opts.idle_timeout_sec == 0)
                s->opts.idle_timeout_sec = DEFAULT_IDLE_TIMEOUT_SEC;
        if (s->opts.tls_cert_pem && s->opts.tls_key_pem) {
                s->tls_cert_pem = strdup(s->opts.tls_cert_pem);
                s->tls_key_pem = strdup(s->opts.tls_key_pem);
                if (!s->tls_cert_pem || !s->tls_key_pem)
                        return -ENOMEM;
        }
        s->opts.tls_cert_pem = s->tls_cert_pem;
        s->opts.tls_key_pem = s->tls_key_pem;

        r = sd_event_add_defer(event, &s->reap, on_reap, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->reap, SD_EVENT_OFF);

        /* Each daemon owns its own fd; s->fd stays ours, for the daemons of later TLS changes. */
        daemon_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (daemon_fd < 0)
                return -errno;
        r = daemon_new(s, TAKE_FD(daemon_fd), s->tls_cert_pem, s->tls_key_pem, &s->daemon);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;
        s->daemon = daemon_free(s->daemon);
        while (s->retired) {
                HttpDaemon *d = s->retired;

                s->retired = d->retired_next;
                daemon_free(d);
        }
        s->reap = sd_event_source_disable_unref(s->reap);
        safe_close(s->fd);
        s->tls_cert_pem = erase_and_free(s->tls_cert_pem);
        s->tls_key_pem = erase_and_free(s->tls_key_pem);
        sd_event_unref(s->event);
        return mfree(s);
}

int http_server_quiesce(HttpServer *s) {
        int r;

        if (s->quiesced)
                return 0;
        r = daemon_quiesce(s->daemon);
        if (r < 0)
                return r;
        s->quiesced = true;
        return 0;
}

int http_server_set_tls(HttpServer *s, const char *cert_pem, const char *key_pem) {
        _cleanup_(erase_and_freep) char *cert = NULL, *key = NULL;
        _cleanup_(closep) int fd = -EBADF;
        HttpDaemon *d = NULL, *old;
        int r;

        assert(s);
        if (!cert_pem != !key_pem)
                return -EINVAL;
        if (s->quiesced)
                return -ESHUTDOWN;
        if (cert_pem) {
                cert = strdup(cert_pem);
                key = strdup(key_pem);
                if (!cert || !key)
                        return -ENOMEM;
        }

        /* The new daemon accepts on the same socket, so no connection is refused: until the
         * old one is quiesced either may take one. MHD checks certificate and key here. */
        fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        r = daemon_new(s, TAKE_FD(fd), cert, key, &d);
        if (r < 0)
                return r;

        old = s->daemon;
        r = daemon_quiesce(old);
        if (r < 0) {
                daemon_free(d);
                return r;
        }
        s->daemon = d;
        old->retired_next = s->retired;
        s->retired = old;
        if (old->n_connections == 0)
                (void) sd_event_source_set_enabled(s->reap, SD_EVENT_ONESHOT);
        /* The quiesced daemon keeps serving its connections through its own IO source; it may
         * have work pending that no longer shows on the listening socket. */
        (void) sd_event_source_set_enabled(old->kick, SD_EVENT_ONESHOT);

        erase_and_free(s->tls_cert_pem);
        erase_and_free(s->tls_key_pem);
        s->tls_cert_pem = TAKE_PTR(cert);
        s->tls_key_pem = TAKE_PTR(key);
        s->opts.tls_cert_pem = s->tls_cert_pem;
        s->opts.tls_key_pem = s->tls_key_pem;
        return 0;
}

unsigned http_server_n_connections(HttpServer *s) {
        return s->n_connections;
}

unsigned http_server_n_exchanges(HttpServer *s) {
        return s->n_exchanges;
}

const char *http_status_reason(unsigned status) {
        const char *r = MHD_get_reason_phrase_for(status);
        return isempty(r) ? "Unknown" : r;
}
