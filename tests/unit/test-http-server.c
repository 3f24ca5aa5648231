/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/http-server on loopback, in-process: one sd-event loop drives the server and
 * its clients (lib/http-client, or plain sockets for the raw protocol cases).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include "cleanup.h"
#include "http-client.h"
#include "http-forward.h"
#include "http-server.h"
#include "http-test-util.h"

/* ---- the loop ----------------------------------------------------------------------------- */

/* Run the loop until cond holds or usec passed; evaluates to whether cond held. */
/* ---- the server under test -------------------------------------------------------------- */

typedef struct Test Test;
/* What the server does with a request; the exchange is recorded before. */
typedef int (*TestHandler)(Test *t, HttpExchange *x);

#define MAX_SEEN_HEADERS 16

struct Test {
        sd_event *event;
        HttpServer *server;
        HttpClient *client;
        uint16_t port;

        TestHandler handler;
        unsigned n_handled;
        HttpExchange *x;        /* the last exchange, until it ends */

        /* the last request, as the handler saw it */
        char *method, *path, *target;
        Buf body;
        char *seen_headers[MAX_SEEN_HEADERS]; /* "Name: value" */
        size_t n_seen_headers;

        /* close and drain callbacks */
        unsigned n_closed, n_closed_ok, n_drained;
        bool last_close_ok;
        int respond_in_close;           /* http_exchange_respond() from the close callback */
        ssize_t write_in_close;         /* http_exchange_stream_write() from the close callback */
        size_t pending_at_drain;
};

static int collect_header(const char *name, const char *value, void *userdata) {
        Test *t = userdata;

        ck_assert_uint_lt(t->n_seen_headers, MAX_SEEN_HEADERS);
        ck_assert_int_ge(asprintf(&t->seen_headers[t->n_seen_headers++], "%s: %s", name, value), 0);
        return 0;
}

static void test_forget_request(Test *t) {
        t->method = mfree(t->method);
        t->path = mfree(t->path);
        t->target = mfree(t->target);
        buf_done(&t->body);
        for (size_t i = 0; i < t->n_seen_headers; i++)
                free(t->seen_headers[i]);
        t->n_seen_headers = 0;
}

static void on_exchange_close(HttpExchange *x, bool ok, void *userdata) {
        Test *t = userdata;

        ck_assert_ptr_eq(x, t->x);
        t->n_closed++;
        t->n_closed_ok += ok;
        t->last_close_ok = ok;
        /* Still valid here; answering an ended exchange must fail. */
        t->respond_in_close = http_exchange_respond(x, 200, NULL, "x", 1);
        t->write_in_close = http_exchange_is_streaming(x) ? http_exchange_stream_write(x, "x", 1) : 0;
        t->x = NULL;
}

static void on_exchange_drain(HttpExchange *x, void *userdata) {
        Test *t = userdata;

        ck_assert_ptr_eq(x, t->x);
        t->n_drained++;
        t->pending_at_drain = http_exchange_stream_pending(x);
}

static int on_request(HttpExchange *x, void *userdata) {
        Test *t = userdata;
        const void *body;
        size_t len;

        test_forget_request(t);
        t->n_handled++;
        t->x = x;
        t->method = strdup(http_exchange_method(x));
        t->path = strdup(http_exchange_path(x));
        t->target = strdup(http_exchange_target(x));
        ck_assert(t->method && t->path && t->target);
        body = http_exchange_body(x, &len);
        if (len > 0)
                buf_append(&t->body, body, len);
        ck_assert_int_eq(http_exchange_foreach_header(x, collect_header, t), 0);
        ck_assert(!http_exchange_is_answered(x));
        ck_assert(!http_exchange_is_streaming(x));
        http_exchange_set_userdata(x, t, on_exchange_close, on_exchange_drain);
        return t->handler(t, x);
}

static void test_setup(Test *t, const HttpServerOptions *opts, TestHandler handler) {
        int fd = -EBADF;

        *t = (Test) { .handler = handler };
        ck_assert_int_eq(sd_event_new(&t->event), 0);
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd), 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(http_socket_port(fd, &t->port), 0);
        ck_assert_uint_ne(t->port, 0);
        ck_assert_int_eq(http_server_new(t->event, fd, opts, on_request, t, &t->server), 0);
        ck_assert_int_eq(http_client_new(t->event, NULL, &t->client), 0);
}

static void test_teardown(Test *t) {
        t->client = http_client_free(t->client);
        t->server = http_server_free(t->server);
        t->event = sd_event_unref(t->event);
        test_forget_request(t);
}

static const char *seen_header(Test *t, size_t i) {
        return i < t->n_seen_headers ? t->seen_headers[i] : "(none)";
}

/* ---- the client side: lib/http-client ---------------------------------------------------- */

typedef struct Resp {
        HttpRequest *req;
        unsigned status;
        unsigned n_response, n_data, n_done;
        int error;
        Buf body;
        char order[16];         /* R: on_response, D: on_data (runs collapsed), E: on_done */
        bool pause;             /* on_data takes nothing while set */
} Resp;

static void resp_order(Resp *r, char c) {
        size_t l = strlen(r->order);

        if (c == 'D' && l > 0 && r->order[l - 1] == 'D')
                return;
        ck_assert_uint_lt(l, sizeof r->order - 1);
        r->order[l] = c;
}

static int resp_on_response(HttpRequest *req, unsigned status, void *userdata) {
        Resp *r = userdata;

        ck_assert_ptr_eq(req, r->req);
        r->n_response++;
        r->status = status;
        resp_order(r, 'R');
        return 0;
}

static ssize_t resp_on_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        Resp *r = userdata;

        ck_assert_ptr_eq(req, r->req);
        ck_assert_uint_gt(len, 0);
        if (r->pause)
                return 0;
        r->n_data++;
        resp_order(r, 'D');
        buf_append(&r->body, data, len);
        return (ssize_t) len;
}

static void resp_on_done(HttpRequest *req, int error, void *userdata) {
        Resp *r = userdata;

        ck_assert_ptr_eq(req, r->req);
        r->n_done++;
        r->error = error;
        resp_order(r, 'E');
}

static const HttpRequestCallbacks resp_callbacks = {
        .on_response = resp_on_response,
        .on_data = resp_on_data,
        .on_done = resp_on_done,
};

/* headers: NULL or "Name", "value", …, NULL. */
static void resp_start(Test *t, Resp *r, const char *method, const char *target,
                       const void *body, size_t len, const char *const *headers) {
        _cleanup_free_ char *url = NULL;

        *r = (Resp) {};
        ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u%s", t->port, target), 0);
        ck_assert_int_eq(http_request_new(t->client, method, url, &r->req), 0);
        for (size_t i = 0; headers && headers[i]; i += 2)
                ck_assert_int_eq(http_request_add_header(r->req, headers[i], headers[i + 1]), 0);
        if (body)
                ck_assert_int_eq(http_request_set_body(r->req, body, len), 0);
        ck_assert_int_eq(http_request_start(r->req, &resp_callbacks, r), 0);
}

static void resp_done(Resp *r) {
        r->req = http_request_free(r->req);
        buf_done(&r->body);
}

static const char *resp_header(Resp *r, const char *name) {
        return http_request_response_header(r->req, name);
}

/* ---- the client side: a plain socket ---------------------------------------------------- */

typedef struct Raw {
        int fd;
        Buf in;
        bool eof;
        bool reset;
} Raw;

static void raw_connect(Test *t, Raw *r) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(t->port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };

        *r = (Raw) {};
        r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(r->fd, 0);
        /* Completes in the kernel's backlog, before the server accepts. */
        ck_assert_int_eq(connect(r->fd, (struct sockaddr *) &sa, sizeof sa), 0);
}

static void raw_send(Raw *r, const char *s) {
        size_t len = strlen(s);

        while (len > 0) {
                ssize_t n = send(r->fd, s, len, MSG_NOSIGNAL);

                ck_assert_int_gt(n, 0);
                s += n;
                len -= (size_t) n;
        }
}

/* Take what arrived, without blocking. Returns r for use in conditions. */
static Raw *raw_poll(Raw *r) {
        char b[4096];
        ssize_t n;

        while (!r->eof) {
                n = recv(r->fd, b, sizeof b, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                if (n < 0 && errno == ECONNRESET) {
                        r->reset = r->eof = true;
                        break;
                }
                ck_assert_int_ge(n, 0);
                if (n == 0)
                        r->eof = true;
                else
                        buf_append(&r->in, b, (size_t) n);
        }
        return r;
}

static bool raw_has(Raw *r, const char *s) {
        return raw_poll(r)->in.data && strstr(r->in.data, s);
}

static void raw_close(Raw *r) {
        r->fd = safe_close(r->fd);
        buf_done(&r->in);
}

/* ---- handlers --------------------------------------------------------------------------- */

static int handle_hello(Test *t, HttpExchange *x) {
        ck_assert_int_eq(http_exchange_add_header(x, "X-Test", "abc"), 0);
        ck_assert_int_eq(http_exchange_respond(x, 200, "text/plain", "hello", 5), 0);
        return 0;
}

static int handle_defer(Test *t, HttpExchange *x) {
        return 0; /* answered later, or never */
}

static int handle_echo_len(Test *t, HttpExchange *x) {
        char s[64];
        size_t len;

        (void) http_exchange_body(x, &len);
        snprintf(s, sizeof s, "len=%zu", len);
        ck_assert_int_eq(http_exchange_respond(x, 200, "text/plain", s, strlen(s)), 0);
        return 0;
}

static int handle_stream(Test *t, HttpExchange *x) {
        ck_assert_int_eq(http_exchange_add_header(x, "X-Stream", "yes"), 0);
        ck_assert_int_eq(http_exchange_stream_start(x, 200, "text/event-stream"), 0);
        ck_assert(http_exchange_is_streaming(x));
        ck_assert(http_exchange_is_answered(x));
        return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

START_TEST(test_listen_and_reasons)
{
        static const struct { unsigned status; const char *reason; } reasons[] = {
                { 200, "OK" }, { 401, "Unauthorized" }, { 413, "Content Too Large" },
                { 431, "Request Header Fields Too Large" }, { 503, "Service Unavailable" },
                { 999, "Unknown" },
        };
        static const char *const bad[] = { "", "127.0.0.1", "nonsense:80", "127.0.0.1:99999", "127.0.0.1:-1",
                                           ":0", "127.0.0.1:00x" };
        _cleanup_free_ char *again = NULL;
        uint16_t port, port2;
        int fd = -EBADF, fd2 = -EBADF, fds[2];

        for (size_t i = 0; i < ELEMENTSOF(reasons); i++)
                ck_assert_str_eq(http_status_reason(reasons[i].status), reasons[i].reason);

        /* Port 0: any free port, which http_socket_port() tells. */
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd), 0);
        ck_assert_int_eq(http_socket_port(fd, &port), 0);
        ck_assert_uint_ne(port, 0);
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd2), 0);
        ck_assert_int_eq(http_socket_port(fd2, &port2), 0);
        ck_assert_uint_ne(port2, port);
        /* That port is taken now. */
        ck_assert_int_ge(asprintf(&again, "127.0.0.1:%u", port), 0);
        fd2 = safe_close(fd2);
        ck_assert_int_eq(http_listen(again, &fd2), -EADDRINUSE);
        fd = safe_close(fd);
        ck_assert_int_eq(http_listen(again, &fd2), 0);
        ck_assert_int_eq(http_socket_port(fd2, &port2), 0);
        ck_assert_uint_eq(port2, port);
        fd2 = safe_close(fd2);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                fd = -EBADF;
                ck_assert_msg(http_listen(bad[i], &fd) < 0, "address '%s'", bad[i]);
                ck_assert_int_eq(fd, -EBADF);
        }
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        ck_assert_int_eq(http_socket_port(fds[0], &port), -EAFNOSUPPORT);
        safe_close(fds[0]);
        safe_close(fds[1]);
}
END_TEST

START_TEST(test_simple_response)
{
        static const struct {
                const char *method;
                const char *target;
        } t_[] = {
                { "GET", "/" },
                { "GET", "/v1/models" },
                { "POST", "/v1/chat/completions" },
                { "DELETE", "/x" },
        };
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_hello);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                resp_start(&t, &r, t_[i].method, t_[i].target, NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_uint_eq(r.status, 200);
                ck_assert_str_eq(r.order, "RDE");
                ck_assert_str_eq(r.body.data, "hello");
                ck_assert_str_eq(resp_header(&r, "Content-Type"), "text/plain");
                ck_assert_str_eq(resp_header(&r, "Content-Length"), "5");
                ck_assert_str_eq(resp_header(&r, "x-test"), "abc");
                ck_assert_str_eq(t.method, t_[i].method);
                ck_assert_str_eq(t.path, t_[i].target);
                ck_assert_uint_eq(t.n_handled, i + 1);
                /* Once the response is out the exchange ends well, exactly once. */
                ck_assert(RUN_UNTIL(t.event, t.n_closed == i + 1));
                ck_assert_uint_eq(t.n_closed_ok, i + 1);
                ck_assert_int_eq(t.respond_in_close, -EBUSY);
                resp_done(&r);
        }
        run_for(t.event, 100 * USEC_PER_MSEC);
        ck_assert_uint_eq(t.n_closed, ELEMENTSOF(t_));
        ck_assert_uint_eq(http_server_n_exchanges(t.server), 0);
        test_teardown(&t);
}
END_TEST

static int handle_headers_checked(Test *t, HttpExchange *x) {
        static const struct { const char *name, *value; int ret; } h[] = {
                { "X-Ok", "fine", 0 },
                { "X-Spaced", " a b\tc ", 0 },
                /* MHD cannot send these: refused here, not later by respond(). */
                { "X-Empty", "", -EINVAL },
                { "", "v", -EINVAL },
                { "X Blank", "v", -EINVAL },
                { "X\tTab", "v", -EINVAL },
                { "X-Inject", "a\r\nSet-Cookie: evil=1", -EINVAL },
                { "X-Inject", "a\nSet-Cookie: evil=1", -EINVAL },
                { "X-Inject", "a\rb", -EINVAL },
                { "X-In\r\nject", "v", -EINVAL },
                { "X-In\nject", "v", -EINVAL },
                { "X-Colon: v", "w", -EINVAL },
        };
        unsigned status = 200;

        for (size_t i = 0; i < ELEMENTSOF(h); i++)
                ck_assert_msg(http_exchange_add_header(x, h[i].name, h[i].value) == h[i].ret,
                              "header %zu", i);
        if (streq(http_exchange_path(x), "/created"))
                status = 201;
        ck_assert_int_eq(http_exchange_respond(x, status, NULL, "body", 4), 0);
        ck_assert(http_exchange_is_answered(x));
        /* Only one answer, and no headers after it. */
        ck_assert_int_eq(http_exchange_respond(x, 200, NULL, "again", 5), -EBUSY);
        ck_assert_int_eq(http_exchange_stream_start(x, 200, NULL), -EBUSY);
        ck_assert_int_eq(http_exchange_add_header(x, "X-Late", "1"), -EBUSY);
        ck_assert_int_eq(http_exchange_stream_write(x, "x", 1), -EINVAL);
        return 0;
}

START_TEST(test_header_injection)
{
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_headers_checked);
        resp_start(&t, &r, "GET", "/created", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_uint_eq(r.status, 201);
        ck_assert_str_eq(r.body.data, "body");
        ck_assert_str_eq(resp_header(&r, "X-Ok"), "fine");
        ck_assert_str_eq(resp_header(&r, "X-Spaced"), "a b\tc"); /* the client trims */
        ck_assert_ptr_null(resp_header(&r, "X-Empty"));
        ck_assert_ptr_null(resp_header(&r, "Set-Cookie"));
        ck_assert_ptr_null(resp_header(&r, "X-Inject"));
        ck_assert_ptr_null(resp_header(&r, "X-Late"));
        /* No Content-Type unless asked for. */
        ck_assert_ptr_null(resp_header(&r, "Content-Type"));
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

/* A header MHD refuses only when the response is built fails that answer, and leaves the
 * exchange to be answered otherwise (not streaming, the refused header gone). */
static int handle_refused_header(Test *t, HttpExchange *x) {
        const char *p = http_exchange_path(x);
        int r;

        if (streq(p, "/respond")) {
                ck_assert_int_eq(http_exchange_add_header(x, "Content-Length", "3"), 0);
                r = http_exchange_respond(x, 200, "text/plain", "abc", 3);
        } else if (streq(p, "/stream")) {
                ck_assert_int_eq(http_exchange_add_header(x, "Transfer-Encoding", "gzip"), 0);
                r = http_exchange_stream_start(x, 200, "text/plain");
        } else {
                ck_assert_int_eq(http_exchange_add_header(x, "Connection", "keep-alive"), 0);
                r = http_exchange_stream_start_sized(x, 200, NULL, 3);
        }
        ck_assert_int_eq(r, -EINVAL);
        ck_assert(!http_exchange_is_answered(x));
        ck_assert(!http_exchange_is_streaming(x));
        ck_assert_int_eq(http_exchange_stream_write(x, "x", 1), -EINVAL);
        ck_assert_int_eq(http_exchange_respond_error(x, 502, "server_error", "bad_gateway", NULL, "Bad %s.", p), 0);
        return 0;
}

START_TEST(test_refused_header_recovers)
{
        static const char *const paths[] = { "/respond", "/stream", "/sized" };
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_refused_header);
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                _cleanup_free_ char *expect = NULL;

                ck_assert_int_ge(asprintf(&expect, "{\"error\":{\"message\":\"Bad %s.\",\"type\":\"server_error\","
                                          "\"param\":null,\"code\":\"bad_gateway\"}}", paths[i]), 0);
                resp_start(&t, &r, "GET", paths[i], NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_uint_eq(r.status, 502);
                ck_assert_str_eq(r.body.data, expect);
                /* MHD's own framing, nothing of the refused header. */
                ck_assert_uint_eq(strtoul(resp_header(&r, "Content-Length"), NULL, 10), strlen(expect));
                ck_assert_ptr_null(resp_header(&r, "Transfer-Encoding"));
                ck_assert_str_eq(resp_header(&r, "Content-Type"), "application/json");
                resp_done(&r);
        }
        test_teardown(&t);
}
END_TEST

/* A fresh 401 carries WWW-Authenticate; other errors do not. http_respond_error() and
 * http_respond_json() (lib/http-forward) add the request's id. */
static int handle_error(Test *t, HttpExchange *x) {
        const char *p = http_exchange_path(x);

        if (streq(p, "/with-id"))
                ck_assert_int_eq(http_respond_error(x, "0123abcd", 503, "server_error", "no_upstream", NULL,
                                                    "No %s here.", "upstream"), 0);
        else if (streq(p, "/json")) {
                _cleanup_(json_object_putp) json_object *o = json_object_new_object();

                ck_assert_int_eq(jobj_add_string(o, "object", "list"), 0);
                ck_assert_int_eq(http_respond_json(x, "0123abcd", 202, o), 0);
        } else if (streq(p, "/json-no-id"))
                ck_assert_int_eq(http_respond_json(x, NULL, 200, NULL), 0);
        else if (streq(p, "/401"))
                ck_assert_int_eq(http_exchange_respond_error(x, 401, "invalid_request_error", "invalid_api_key",
                                                             NULL, "Incorrect API key provided: %s.", "sk-…7"), 0);
        else if (streq(p, "/404"))
                ck_assert_int_eq(http_exchange_respond_error(x, 404, "invalid_request_error", "model_not_found",
                                                             "model", "The model '%s' does not exist", "g\"pt"), 0);
        else if (streq(p, "/429"))
                ck_assert_int_eq(http_exchange_respond_error(x, 429, "rate_limit_exceeded", NULL, NULL,
                                                             "Slow down"), 0);
        else if (streq(p, "/fail"))
                return -EIO; /* unanswered: 500 */
        else if (streq(p, "/fail-answered")) {
                ck_assert_int_eq(http_exchange_respond(x, 418, "text/plain", "teapot", 6), 0);
                return -EIO; /* answered: the answer stands */
        }
        return 0;
}

START_TEST(test_respond_error)
{
        static const struct {
                const char *target;
                unsigned status;
                const char *body;
                const char *www_authenticate;
                const char *content_type;
                const char *request_id;
                const char *cache_control;
        } t_[] = {
                { "/401", 401,
                  "{\"error\":{\"message\":\"Incorrect API key provided: sk-…7.\",\"type\":\"invalid_request_error\","
                  "\"param\":null,\"code\":\"invalid_api_key\"}}", "Bearer", "application/json" },
                { "/404", 404,
                  "{\"error\":{\"message\":\"The model 'g\\\"pt' does not exist\",\"type\":\"invalid_request_error\","
                  "\"param\":\"model\",\"code\":\"model_not_found\"}}", NULL, "application/json" },
                { "/429", 429,
                  "{\"error\":{\"message\":\"Slow down\",\"type\":\"rate_limit_exceeded\","
                  "\"param\":null,\"code\":null}}", NULL, "application/json" },
                { "/fail", 500,
                  "{\"error\":{\"message\":\"The server failed to handle the request.\",\"type\":\"server_error\","
                  "\"param\":null,\"code\":\"internal_error\"}}", NULL, "application/json" },
                { "/fail-answered", 418, "teapot", NULL, "text/plain" },
                { "/with-id", 503,
                  "{\"error\":{\"message\":\"No upstream here.\",\"type\":\"server_error\","
                  "\"param\":null,\"code\":\"no_upstream\"}}", NULL, "application/json", "0123abcd" },
                { "/json", 202, "{\"object\":\"list\"}", NULL, "application/json", "0123abcd", "no-store" },
                { "/json-no-id", 200, "null", NULL, "application/json", NULL, "no-store" },
        };
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_error);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                resp_start(&t, &r, "GET", t_[i].target, NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_uint_eq(r.status, t_[i].status);
                ck_assert_str_eq(r.body.data, t_[i].body);
                ck_assert_str_eq(resp_header(&r, "Content-Type"), t_[i].content_type);
                if (t_[i].www_authenticate)
                        ck_assert_str_eq(resp_header(&r, "WWW-Authenticate"), t_[i].www_authenticate);
                else
                        ck_assert_ptr_null(resp_header(&r, "WWW-Authenticate"));
                if (t_[i].request_id)
                        ck_assert_str_eq(resp_header(&r, "x-request-id"), t_[i].request_id);
                if (t_[i].cache_control)
                        ck_assert_str_eq(resp_header(&r, "Cache-Control"), t_[i].cache_control);
                else
                        ck_assert_ptr_null(resp_header(&r, "Cache-Control"));
                resp_done(&r);
        }
        ck_assert_uint_eq(t.n_handled, ELEMENTSOF(t_));
        test_teardown(&t);
}
END_TEST

/* ---- deferred answers --------------------------------------------------------------------- */

typedef struct Deferred {
        Test *t;
        Resp *r;
        bool fired;
        unsigned n_response_before;
        bool answered_before;
} Deferred;

static int on_answer_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Deferred *d = userdata;

        d->fired = true;
        d->n_response_before = d->r->n_response;
        d->answered_before = http_exchange_is_answered(d->t->x);
        ck_assert_int_eq(http_exchange_add_header(d->t->x, "X-Later", "1"), 0);
        ck_assert_int_eq(http_exchange_respond(d->t->x, 202, "text/plain", "later", 5), 0);
        return 0;
}

START_TEST(test_deferred)
{
        _cleanup_(sd_event_source_unrefp) sd_event_source *timer = NULL;
        Test t;
        Resp r;
        Deferred d = { .t = &t, .r = &r };

        test_setup(&t, NULL, handle_defer);
        resp_start(&t, &r, "GET", "/slow", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, t.n_handled == 1));
        ck_assert_uint_eq(http_server_n_exchanges(t.server), 1);
        ck_assert_int_eq(sd_event_add_time_relative(t.event, &timer, CLOCK_MONOTONIC, 200 * USEC_PER_MSEC, 1,
                                                    on_answer_timer, &d), 0);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert(d.fired);
        ck_assert_uint_eq(d.n_response_before, 0);
        ck_assert(!d.answered_before);
        ck_assert_int_eq(r.error, 0);
        ck_assert_uint_eq(r.status, 202);
        ck_assert_str_eq(r.order, "RDE");
        ck_assert_str_eq(r.body.data, "later");
        ck_assert_str_eq(resp_header(&r, "X-Later"), "1");
        ck_assert(RUN_UNTIL(t.event, t.n_closed == 1));
        ck_assert(t.last_close_ok);
        ck_assert(RUN_UNTIL(t.event, http_server_n_exchanges(t.server) == 0));
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

/* ---- request bodies --------------------------------------------------------------------- */

START_TEST(test_body_sizes)
{
        static const size_t sizes[] = { 0, 1, 100, 16383, 16384, 16385, 65539, 300007, 1024 * 1024 };
        static const char *const chunked[] = { "Transfer-Encoding", "chunked", NULL };
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_echo_len);
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                for (int c = 0; c < 2; c++) {
                        _cleanup_free_ char *body = malloc(sizes[i] + 1), *expect = NULL;
                        bool saw_te = false, saw_cl = false;

                        ck_assert_ptr_nonnull(body);
                        fill_pattern(body, 0, sizes[i]);
                        resp_start(&t, &r, "POST", "/upload", body, sizes[i], c ? chunked : NULL);
                        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                        ck_assert_int_eq(r.error, 0);
                        ck_assert_uint_eq(r.status, 200);
                        ck_assert_int_ge(asprintf(&expect, "len=%zu", sizes[i]), 0);
                        ck_assert_str_eq(r.body.data, expect);
                        ck_assert_str_eq(t.method, "POST");
                        ck_assert_uint_eq(t.body.len, sizes[i]);
                        ck_assert_msg(sizes[i] == 0 || memcmp(t.body.data, body, sizes[i]) == 0,
                                      "body of %zu bytes (chunked=%d) differs", sizes[i], c);
                        for (size_t h = 0; h < t.n_seen_headers; h++) {
                                saw_te = saw_te || streq(t.seen_headers[h], "Transfer-Encoding: chunked");
                                saw_cl = saw_cl || startswith(t.seen_headers[h], "Content-Length:");
                        }
                        ck_assert_msg(saw_te == c && saw_cl == !c, "size %zu chunked=%d: te=%d cl=%d",
                                      sizes[i], c, saw_te, saw_cl);
                        resp_done(&r);
                }
        test_teardown(&t);
}
END_TEST

START_TEST(test_body_chunked_raw)
{
        Test t;
        Raw raw;

        test_setup(&t, NULL, handle_echo_len);
        raw_connect(&t, &raw);
        raw_send(&raw, "POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n");
        run_for(t.event, 50 * USEC_PER_MSEC);
        ck_assert_uint_eq(t.n_handled, 0); /* not before the whole body */
        raw_send(&raw, "1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n");
        ck_assert(RUN_UNTIL(t.event, raw_has(&raw, "len=12")));
        ck_assert_uint_eq(t.n_handled, 1);
        ck_assert_uint_eq(t.body.len, 12);
        ck_assert_str_eq(t.body.data, "hello world!");
        ck_assert(startswith(raw.in.data, "HTTP/1.1 200 OK\r\n"));
        raw_close(&raw);
        test_teardown(&t);
}
END_TEST

START_TEST(test_body_too_large)
{
        static const char *const chunked[] = { "Transfer-Encoding", "chunked", NULL };
        static const struct {
                size_t size;
                bool chunked;
                unsigned status;
        } t_[] = {
                { 1000, false, 200 },
                { 1001, false, 413 },
                { 1000, true, 200 },
                { 1001, true, 413 },
                { 5000, true, 413 },
                { 999, false, 200 },
        };
        HttpServerOptions opts = { .max_body_size = 1000 };
        char body[5000];
        unsigned handled = 0;
        Test t;
        Resp r;

        fill_pattern(body, 0, sizeof body);
        test_setup(&t, &opts, handle_echo_len);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                resp_start(&t, &r, "POST", "/big", body, t_[i].size, t_[i].chunked ? chunked : NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_msg(r.status == t_[i].status, "case %zu: status %u", i, r.status);
                ck_assert_int_eq(r.error, 0);
                if (t_[i].status == 413) {
                        ck_assert_str_eq(r.body.data,
                                         "{\"error\":{\"message\":\"The request body is too large.\","
                                         "\"type\":\"invalid_request_error\",\"param\":null,"
                                         "\"code\":\"request_too_large\"}}");
                        ck_assert_str_eq(resp_header(&r, "Content-Type"), "application/json");
                } else {
                        handled++;
                        ck_assert_uint_eq(t.body.len, t_[i].size);
                        ck_assert(memcmp(t.body.data, body, t_[i].size) == 0);
                }
                /* The handler never sees an oversized body. */
                ck_assert_msg(t.n_handled == handled, "case %zu: handled %u", i, t.n_handled);
                resp_done(&r);
        }
        test_teardown(&t);
}
END_TEST

START_TEST(test_headers_too_large)
{
        HttpServerOptions opts = { .max_header_size = 1024 };
        static const struct { size_t len; unsigned status; } t_[] = {
                { 500, 200 }, { 2000, 431 }, { 100, 200 }, { 8000, 431 },
        };
        unsigned handled = 0;
        Test t;
        Resp r;

        test_setup(&t, &opts, handle_hello);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                _cleanup_free_ char *v = malloc(t_[i].len + 1);
                const char *h[] = { "X-Big", v, NULL };

                ck_assert_ptr_nonnull(v);
                memset(v, 'v', t_[i].len);
                v[t_[i].len] = 0;
                resp_start(&t, &r, "GET", "/h", NULL, 0, h);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_msg(r.status == t_[i].status, "case %zu: status %u", i, r.status);
                if (r.status == 431)
                        ck_assert_str_eq(r.body.data,
                                         "{\"error\":{\"message\":\"The request headers are too large.\","
                                         "\"type\":\"invalid_request_error\",\"param\":null,"
                                         "\"code\":\"headers_too_large\"}}");
                else
                        handled++;
                ck_assert_uint_eq(t.n_handled, handled);
                resp_done(&r);
        }
        test_teardown(&t);
}
END_TEST

/* ---- streaming ------------------------------------------------------------------------------ */

START_TEST(test_stream_in_order)
{
        Test t;
        Resp r;
        size_t total = 0;
        char expect[512] = "";

        test_setup(&t, NULL, handle_stream);
        resp_start(&t, &r, "GET", "/events", NULL, 0, NULL);
        /* stream_start sends the headers before any body. */
        ck_assert(RUN_UNTIL(t.event, r.n_response == 1));
        ck_assert_uint_eq(r.status, 200);
        ck_assert_uint_eq(r.n_data, 0);
        ck_assert_ptr_nonnull(t.x);
        ck_assert_str_eq(resp_header(&r, "Content-Type"), "text/event-stream");
        ck_assert_str_eq(resp_header(&r, "Transfer-Encoding"), "chunked");
        ck_assert_str_eq(resp_header(&r, "X-Stream"), "yes");
        ck_assert_ptr_null(resp_header(&r, "Content-Length"));

        for (unsigned i = 0; i < 10; i++) {
                char m[32];
                size_t l = (size_t) snprintf(m, sizeof m, "data: %u\n\n", i);

                ck_assert_int_eq(http_exchange_stream_write(t.x, m, l), (ssize_t) l);
                total += l;
                strcat(expect, m);
                /* Delivered on its own, before the next one exists. */
                ck_assert_msg(RUN_UNTIL(t.event, r.body.len == total), "write %u not delivered", i);
                ck_assert_str_eq(r.body.data, expect);
                ck_assert_uint_eq(r.n_data, i + 1);
                ck_assert_uint_eq(http_exchange_stream_pending(t.x), 0);
        }
        ck_assert_int_eq(http_exchange_stream_end(t.x), 0);
        ck_assert_int_eq(http_exchange_stream_write(t.x, "late", 4), -EINVAL);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_str_eq(r.order, "RDE");
        ck_assert_uint_eq(r.n_data, 10);
        ck_assert_str_eq(r.body.data, expect);
        ck_assert(RUN_UNTIL(t.event, t.n_closed == 1));
        ck_assert(t.last_close_ok);
        ck_assert_uint_eq(t.n_drained, 0); /* never a short write */
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

static int handle_stream_sized(Test *t, HttpExchange *x) {
        ck_assert_int_eq(http_exchange_stream_start_sized(x, 200, "application/octet-stream", 10), 0);
        ck_assert_int_eq(http_exchange_stream_write(x, "01234", 5), 5);
        return 0;
}

START_TEST(test_stream_sized)
{
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_stream_sized);
        resp_start(&t, &r, "GET", "/file", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, r.body.len == 5));
        ck_assert_str_eq(resp_header(&r, "Content-Length"), "10");
        ck_assert_ptr_null(resp_header(&r, "Transfer-Encoding"));
        ck_assert_uint_eq(r.n_done, 0);
        ck_assert_int_eq(http_exchange_stream_write(t.x, "56789", 5), 5);
        ck_assert_int_eq(http_exchange_stream_end(t.x), 0);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_str_eq(r.body.data, "0123456789");
        ck_assert_str_eq(r.order, "RDE");
        ck_assert(RUN_UNTIL(t.event, t.n_closed == 1));
        ck_assert(t.last_close_ok);
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_stream_abort)
{
        /* wait: let the client see the first part before the abort; else the abort
         * follows right after the write, and what is buffered still goes out. */
        for (int wait = 0; wait < 2; wait++) {
                Test t;
                Resp r;

                test_setup(&t, NULL, handle_stream);
                resp_start(&t, &r, "GET", "/events", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, t.x && r.n_response == 1));
                ck_assert_int_eq(http_exchange_stream_write(t.x, "partial", 7), 7);
                if (wait)
                        ck_assert(RUN_UNTIL(t.event, r.body.len == 7));
                ck_assert_int_eq(http_exchange_stream_abort(t.x), 0);
                ck_assert_int_eq(http_exchange_stream_write(t.x, "more", 4), -EINVAL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                /* A truncated chunked body: the connection is lost. */
                ck_assert_int_eq(r.error, -ECONNRESET);
                ck_assert_str_eq(r.order, "RDE");
                ck_assert_str_eq(r.body.data, "partial");
                ck_assert(RUN_UNTIL(t.event, t.n_closed == 1));
                ck_assert(!t.last_close_ok);
                ck_assert_uint_eq(t.n_closed_ok, 0);
                run_for(t.event, 100 * USEC_PER_MSEC);
                ck_assert_uint_eq(t.n_closed, 1);
                ck_assert_uint_eq(http_server_n_connections(t.server), 0);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_stream_abort_raw)
{
        static const char *const tails[] = { "5\r\nfirst\r\n", "6\r\nsecond\r\n" };
        Test t;
        Raw raw;

        test_setup(&t, NULL, handle_stream);
        raw_connect(&t, &raw);
        raw_send(&raw, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
        ck_assert(RUN_UNTIL(t.event, raw_has(&raw, "\r\n\r\n")));
        ck_assert(startswith(raw.in.data, "HTTP/1.1 200 OK\r\n"));
        ck_assert_int_eq(http_exchange_stream_write(t.x, "first", 5), 5);
        ck_assert(RUN_UNTIL(t.event, raw_has(&raw, tails[0])));
        ck_assert_int_eq(http_exchange_stream_write(t.x, "second", 6), 6);
        ck_assert_int_eq(http_exchange_stream_abort(t.x), 0);
        ck_assert(RUN_UNTIL(t.event, raw_poll(&raw)->eof));
        /* Everything written arrives, then the connection closes without "0\r\n\r\n". */
        ck_assert_msg(endswith(raw.in.data, tails[1]), "got: %s", raw.in.data);
        ck_assert_ptr_null(strstr(raw.in.data, "\r\n0\r\n"));
        ck_assert_uint_eq(t.n_closed, 1);
        ck_assert(!t.last_close_ok);
        raw_close(&raw);
        test_teardown(&t);
}
END_TEST

/* Fill the server's stream buffer while the client takes nothing. Returns the bytes taken. */
static size_t stream_until_short(Test *t, size_t block) {
        _cleanup_free_ char *b = malloc(block);
        size_t total = 0;

        ck_assert_ptr_nonnull(b);
        for (;;) {
                ssize_t k;

                fill_pattern(b, total, block);
                k = http_exchange_stream_write(t->x, b, block);
                ck_assert_int_ge(k, 0);
                total += (size_t) k;
                if ((size_t) k < block)
                        return total;
                /* The socket buffers (several MiB on loopback) fill up first. */
                ck_assert_uint_lt(total, (size_t) 256 * 1024 * 1024);
                (void) RUN_UNTIL_USEC(t->event, http_exchange_stream_pending(t->x) == 0, 100 * USEC_PER_MSEC);
        }
}

START_TEST(test_stream_backpressure)
{
        HttpServerOptions opts = { .stream_buffer_max = 4096 };
        Test t;
        Resp r;
        size_t total;

        test_setup(&t, &opts, handle_stream);
        resp_start(&t, &r, "GET", "/events", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, t.x && r.n_response == 1));
        r.pause = true;
        total = stream_until_short(&t, 4096);
        /* The short write filled the buffer to exactly stream_buffer_max. */
        ck_assert_uint_eq(http_exchange_stream_pending(t.x), 4096);
        ck_assert_int_eq(http_exchange_stream_write(t.x, "x", 1), 0);
        ck_assert(http_request_is_paused(r.req));
        ck_assert_uint_eq(r.n_data, 0);

        /* While the client takes nothing, nothing drains. */
        run_for(t.event, 300 * USEC_PER_MSEC);
        ck_assert_uint_eq(t.n_drained, 0);
        ck_assert_uint_eq(http_exchange_stream_pending(t.x), 4096);

        r.pause = false;
        ck_assert_int_eq(http_request_resume(r.req), 0);
        ck_assert(RUN_UNTIL(t.event, t.n_drained == 1));
        ck_assert_uint_le(t.pending_at_drain, 4096 / 4);

        /* Go on after the drain: the tail, then the end. */
        {
                char tail[100];

                fill_pattern(tail, total, sizeof tail);
                ck_assert_int_eq(http_exchange_stream_write(t.x, tail, sizeof tail), (ssize_t) sizeof tail);
                total += sizeof tail;
        }
        ck_assert_int_eq(http_exchange_stream_end(t.x), 0);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_str_eq(r.order, "RDE");
        ck_assert_uint_eq(r.body.len, total);
        ck_assert(check_pattern(r.body.data, 0, total));
        ck_assert_uint_eq(t.n_drained, 1);
        ck_assert(RUN_UNTIL(t.event, t.n_closed == 1));
        ck_assert(t.last_close_ok);
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

/* ---- the close callback ------------------------------------------------------------------- */

START_TEST(test_close_client_gone)
{
        /* 0: the exchange waits for its answer (suspended);
         * 1: it streams and waits for data (suspended);
         * 2: it streams into a full buffer (the client stopped reading). */
        for (int mode = 0; mode < 3; mode++) {
                HttpServerOptions opts = { .stream_buffer_max = 4096 };
                Test t;
                Resp r;
                uint64_t t0;

                test_setup(&t, &opts, mode == 0 ? handle_defer : handle_stream);
                resp_start(&t, &r, "GET", "/wait", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, t.n_handled == 1));
                if (mode >= 1) {
                        ck_assert(RUN_UNTIL(t.event, r.n_response == 1));
                        ck_assert_int_eq(http_exchange_stream_write(t.x, "hello", 5), 5);
                        ck_assert(RUN_UNTIL(t.event, r.body.len == 5));
                }
                if (mode == 2) {
                        r.pause = true;
                        (void) stream_until_short(&t, 4096);
                }
                run_for(t.event, 50 * USEC_PER_MSEC);
                ck_assert_uint_eq(t.n_closed, 0);
                ck_assert_uint_eq(http_server_n_connections(t.server), 1);

                /* The client goes away (from outside its callbacks). */
                r.req = http_request_free(r.req);
                t0 = now_usec(CLOCK_MONOTONIC);
                ck_assert_msg(RUN_UNTIL_USEC(t.event, t.n_closed == 1, USEC_PER_SEC),
                              "mode %d: close callback not called within 1 s", mode);
                ck_assert_uint_lt(now_usec(CLOCK_MONOTONIC) - t0, USEC_PER_SEC);
                ck_assert(!t.last_close_ok);
                ck_assert_int_eq(t.respond_in_close, (mode == 0 ? -EPIPE : -EBUSY));
                if (mode == 1)
                        ck_assert_int_eq(t.write_in_close, -EPIPE);
                else if (mode == 2)
                        ck_assert_int_le(t.write_in_close, 0); /* takes nothing */
                ck_assert(RUN_UNTIL(t.event, http_server_n_exchanges(t.server) == 0 &&
                                             http_server_n_connections(t.server) == 0));
                run_for(t.event, 100 * USEC_PER_MSEC);
                ck_assert_uint_eq(t.n_closed, 1);
                ck_assert_uint_eq(t.n_closed_ok, 0);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_close_on_server_free)
{
        /* Freeing the server with exchanges open (waiting, streaming) ends them. */
        for (int mode = 0; mode < 2; mode++) {
                Test t;
                Resp r;

                test_setup(&t, NULL, mode == 0 ? handle_defer : handle_stream);
                resp_start(&t, &r, "GET", "/wait", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, t.n_handled == 1 && (mode == 0 || r.n_response == 1)));
                run_for(t.event, 50 * USEC_PER_MSEC);
                t.server = http_server_free(t.server);
                ck_assert_uint_eq(t.n_closed, 1);
                ck_assert(!t.last_close_ok);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, -ECONNRESET);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

/* ---- request accessors -------------------------------------------------------------------- */

static int count_until_second(const char *name, const char *value, void *userdata) {
        unsigned *n = userdata;

        return ++*n == 2 ? -ENOANO : 0;
}

static int handle_inspect(Test *t, HttpExchange *x) {
        const struct sockaddr_in *peer = (const struct sockaddr_in *) http_exchange_peer(x);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned n = 0;

        ck_assert_ptr_nonnull(peer);
        ck_assert_int_eq(peer->sin_family, AF_INET);
        ck_assert_uint_eq(ntohl(peer->sin_addr.s_addr), INADDR_LOOPBACK);
        /* The client is the peer until the application says otherwise, and again after NULL. */
        ck_assert_ptr_eq(http_exchange_client(x), (const struct sockaddr *) peer);
        {
                struct sockaddr_in6 c = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
                const struct sockaddr_in6 *got;

                http_exchange_set_client(x, (struct sockaddr *) &c);
                c.sin6_family = AF_UNSPEC;      /* copied, not borrowed */
                got = (const struct sockaddr_in6 *) http_exchange_client(x);
                ck_assert_int_eq(got->sin6_family, AF_INET6);
                ck_assert(IN6_IS_ADDR_LOOPBACK(&got->sin6_addr));
                http_exchange_set_client(x, NULL);
                ck_assert_ptr_eq(http_exchange_client(x), (const struct sockaddr *) peer);
        }
        ck_assert_uint_gt(http_exchange_start_usec(x), 0);
        ck_assert_uint_le(http_exchange_start_usec(x), now);
        ck_assert_uint_gt(http_exchange_start_usec(x) + 5 * USEC_PER_SEC, now);
        /* Case-insensitive lookup. */
        ck_assert_str_eq(http_exchange_header(x, "x-one"), "1");
        ck_assert_str_eq(http_exchange_header(x, "X-TWO"), "two words");
        ck_assert_ptr_null(http_exchange_header(x, "X-Three"));
        /* foreach stops at the first error and returns it. */
        ck_assert_int_eq(http_exchange_foreach_header(x, count_until_second, &n), -ENOANO);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(http_exchange_respond(x, 204, NULL, NULL, 0), 0);
        return 0;
}

START_TEST(test_request_accessors)
{
        static const struct {
                const char *method, *target, *path;
        } t_[] = {
                { "GET", "/", "/" },
                { "GET", "/v1/models?limit=1&after=x", "/v1/models" },
                { "PUT", "/a%20b/c?q=%2F&r", "/a%20b/c" },
                { "DELETE", "/p?", "/p" },
                { "PATCH", "/x/?a?b", "/x/" },
        };
        static const char *const h[] = { "X-One", "1", "X-Two", "two words", NULL };
        char host[64];
        Test t;
        Resp r;

        test_setup(&t, NULL, handle_inspect);
        snprintf(host, sizeof host, "Host: 127.0.0.1:%u", t.port);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                resp_start(&t, &r, t_[i].method, t_[i].target, NULL, 0, h);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_uint_eq(r.status, 204);
                ck_assert_str_eq(r.order, "RE");
                ck_assert_str_eq(t.method, t_[i].method);
                /* The query stays in the target, out of the path; nothing is unescaped. */
                ck_assert_str_eq(t.target, t_[i].target);
                ck_assert_str_eq(t.path, t_[i].path);
                /* Every header, in the order sent (curl's own two first). */
                ck_assert_uint_eq(t.n_seen_headers, 4);
                ck_assert_str_eq(seen_header(&t, 0), host);
                ck_assert_str_eq(seen_header(&t, 1), "Accept: */*");
                ck_assert_str_eq(seen_header(&t, 2), "X-One: 1");
                ck_assert_str_eq(seen_header(&t, 3), "X-Two: two words");
                resp_done(&r);
        }
        test_teardown(&t);
}
END_TEST

/* ---- connections ---------------------------------------------------------------------------- */

START_TEST(test_n_connections)
{
        Test t;
        Resp r;
        Raw raw[3];

        test_setup(&t, NULL, handle_hello);
        ck_assert_uint_eq(http_server_n_connections(t.server), 0);
        for (size_t i = 0; i < ELEMENTSOF(raw); i++)
                raw_connect(&t, &raw[i]);
        ck_assert(RUN_UNTIL(t.event, http_server_n_connections(t.server) == 3));
        raw_close(&raw[1]);
        ck_assert(RUN_UNTIL(t.event, http_server_n_connections(t.server) == 2));

        /* A kept-alive client connection counts while idle, across requests. */
        for (int i = 0; i < 3; i++) {
                resp_start(&t, &r, "GET", "/", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_uint_eq(r.status, 200);
                run_for(t.event, 50 * USEC_PER_MSEC);
                ck_assert_uint_eq(http_server_n_connections(t.server), 3);
                resp_done(&r);
        }
        ck_assert_uint_eq(http_server_n_exchanges(t.server), 0);
        raw_close(&raw[0]);
        raw_close(&raw[2]);
        ck_assert(RUN_UNTIL(t.event, http_server_n_connections(t.server) == 1));
        t.client = http_client_free(t.client);
        ck_assert(RUN_UNTIL(t.event, http_server_n_connections(t.server) == 0));
        test_teardown(&t);
}
END_TEST

START_TEST(test_quiesce)
{
        Test t;
        Resp r;
        Raw raw;

        test_setup(&t, NULL, handle_defer);
        resp_start(&t, &r, "GET", "/before", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, t.n_handled == 1));
        ck_assert_int_eq(http_server_quiesce(t.server), 0);
        ck_assert_int_eq(http_server_quiesce(t.server), 0);

        /* A new connection is not accepted: it sits in the backlog, unanswered. */
        raw_connect(&t, &raw);
        raw_send(&raw, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
        run_for(t.event, 300 * USEC_PER_MSEC);
        ck_assert_uint_eq(t.n_handled, 1);
        ck_assert_uint_eq(http_server_n_connections(t.server), 1);
        ck_assert_uint_eq(raw_poll(&raw)->in.len, 0);
        ck_assert(!raw.eof);

        /* The running exchange goes on. */
        ck_assert_int_eq(http_exchange_respond(t.x, 200, "text/plain", "done", 4), 0);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_uint_eq(r.status, 200);
        ck_assert_str_eq(r.body.data, "done");
        ck_assert_uint_eq(t.n_handled, 1);
        resp_done(&r);
        raw_close(&raw);
        test_teardown(&t);
}
END_TEST

static Suite *http_server_suite(void) {
        Suite *s = suite_create("http-server");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_listen_and_reasons);
        tcase_add_test(tc, test_simple_response);
        tcase_add_test(tc, test_header_injection);
        tcase_add_test(tc, test_refused_header_recovers);
        tcase_add_test(tc, test_respond_error);
        tcase_add_test(tc, test_deferred);
        tcase_add_test(tc, test_body_sizes);
        tcase_add_test(tc, test_body_chunked_raw);
        tcase_add_test(tc, test_body_too_large);
        tcase_add_test(tc, test_headers_too_large);
        tcase_add_test(tc, test_stream_in_order);
        tcase_add_test(tc, test_stream_sized);
        tcase_add_test(tc, test_stream_abort);
        tcase_add_test(tc, test_stream_abort_raw);
        tcase_add_test(tc, test_stream_backpressure);
        tcase_add_test(tc, test_close_client_gone);
        tcase_add_test(tc, test_close_on_server_free);
        tcase_add_test(tc, test_request_accessors);
        tcase_add_test(tc, test_n_connections);
        tcase_add_test(tc, test_quiesce);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(http_server_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
