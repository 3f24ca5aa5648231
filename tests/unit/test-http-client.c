/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/http-client on loopback, in-process: one sd-event loop drives the client and the
 * servers it talks to (lib/http-server, or a plain socket server for malformed answers).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "http-client.h"
#include "http-server.h"
#include "http-test-util.h"

/* ---- the loop ----------------------------------------------------------------------------- */

/* Run the loop until cond holds or usec passed; evaluates to whether cond held. */
/* ---- the server: lib/http-server ---------------------------------------------------------- */

typedef struct Test Test;
typedef int (*TestHandler)(Test *t, HttpExchange *x);

#define MAX_SEEN_HEADERS 16

struct Test {
        sd_event *event;
        HttpClient *client;
        HttpServer *server;
        uint16_t port;

        TestHandler handler;
        unsigned n_handled;
        HttpExchange *x;        /* the last exchange, until it ends */
        unsigned n_closed, n_closed_ok;

        /* the last request, as the server saw it */
        char *method;
        Buf body;
        char *seen_headers[MAX_SEEN_HEADERS]; /* "Name: value" */
        size_t n_seen_headers;
};

static int collect_header(const char *name, const char *value, void *userdata) {
        Test *t = userdata;

        ck_assert_uint_lt(t->n_seen_headers, MAX_SEEN_HEADERS);
        ck_assert_int_ge(asprintf(&t->seen_headers[t->n_seen_headers++], "%s: %s", name, value), 0);
        return 0;
}

static void test_forget_request(Test *t) {
        t->method = mfree(t->method);
        buf_done(&t->body);
        for (size_t i = 0; i < t->n_seen_headers; i++)
                free(t->seen_headers[i]);
        t->n_seen_headers = 0;
}

static const char *seen_header(Test *t, size_t i) {
        return i < t->n_seen_headers ? t->seen_headers[i] : "(none)";
}

static bool seen_header_named(Test *t, const char *name) {
        for (size_t i = 0; i < t->n_seen_headers; i++)
                if (startswith_no_case(t->seen_headers[i], name) && t->seen_headers[i][strlen(name)] == ':')
                        return true;
        return false;
}

static void on_exchange_close(HttpExchange *x, bool ok, void *userdata) {
        Test *t = userdata;

        t->n_closed++;
        t->n_closed_ok += ok;
        if (t->x == x)
                t->x = NULL;
}

static int on_request(HttpExchange *x, void *userdata) {
        Test *t = userdata;
        const void *body;
        size_t len;

        test_forget_request(t);
        t->n_handled++;
        t->x = x;
        t->method = strdup(http_exchange_method(x));
        ck_assert_ptr_nonnull(t->method);
        body = http_exchange_body(x, &len);
        if (len > 0)
                buf_append(&t->body, body, len);
        ck_assert_int_eq(http_exchange_foreach_header(x, collect_header, t), 0);
        http_exchange_set_userdata(x, t, on_exchange_close, NULL);
        return t->handler(t, x);
}

static void test_setup(Test *t, const HttpClientOptions *opts, TestHandler handler) {
        int fd = -EBADF;

        *t = (Test) { .handler = handler };
        ck_assert_int_eq(sd_event_new(&t->event), 0);
        ck_assert_int_eq(http_client_new(t->event, opts, &t->client), 0);
        if (!handler)
                return;
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd), 0);
        ck_assert_int_eq(http_socket_port(fd, &t->port), 0);
        ck_assert_int_eq(http_server_new(t->event, fd, NULL, on_request, t, &t->server), 0);
}

static void test_teardown(Test *t) {
        t->client = http_client_free(t->client);
        t->server = http_server_free(t->server);
        t->event = sd_event_unref(t->event);
        test_forget_request(t);
}

/* ---- server handlers ---------------------------------------------------------------------- */

static int handle_hello(Test *t, HttpExchange *x) {
        ck_assert_int_eq(http_exchange_add_header(x, "X-Alpha", "a"), 0);
        ck_assert_int_eq(http_exchange_add_header(x, "X-Multi", "1"), 0);
        ck_assert_int_eq(http_exchange_add_header(x, "x-multi", "2"), 0);
        ck_assert_int_eq(http_exchange_respond(x, 200, "text/plain; charset=utf-8", "hello", 5), 0);
        return 0;
}

/* "METHOD:body" */
static int handle_echo(Test *t, HttpExchange *x) {
        _cleanup_free_ char *s = NULL;
        const void *body;
        size_t len;

        body = http_exchange_body(x, &len);
        ck_assert_int_ge(asprintf(&s, "%s:%.*s", http_exchange_method(x), (int) MIN(len, (size_t) 64),
                                  len > 0 ? (const char *) body : ""), 0);
        ck_assert_int_eq(http_exchange_respond(x, 200, "text/plain", s, strlen(s)), 0);
        return 0;
}

static int handle_defer(Test *t, HttpExchange *x) {
        return 0; /* never answered */
}

static int handle_stream(Test *t, HttpExchange *x) {
        ck_assert_int_eq(http_exchange_stream_start(x, 200, "text/event-stream"), 0);
        return 0;
}

#define BIG_SIZE ((size_t) 3 * 1024 * 1024 + 17)

static int handle_big(Test *t, HttpExchange *x) {
        _cleanup_free_ char *b = malloc(BIG_SIZE);

        ck_assert_ptr_nonnull(b);
        fill_pattern(b, 0, BIG_SIZE);
        ck_assert_int_eq(http_exchange_respond(x, 200, "application/octet-stream", b, BIG_SIZE), 0);
        return 0;
}

/* ---- the client under test ---------------------------------------------------------------- */

typedef enum Action {
        ACT_NONE,
        ACT_FAIL_RESPONSE,      /* on_response returns -ENOTRECOVERABLE */
        ACT_FAIL_DATA,          /* on_data returns -EBADMSG */
        ACT_FAIL_DATA_RESUMED,  /* on_data pauses once, then fails when the data comes again */
        ACT_FREE_RESPONSE,      /* http_request_free() in on_response */
        ACT_FREE_DATA,          /* … in on_data */
        ACT_FREE_DATA_RESUMED,  /* … in on_data, offered again after a pause */
        ACT_FREE_DONE,          /* … in on_done */
} Action;

typedef struct Resp {
        HttpRequest *req;
        Action action;
        uint64_t idle_usec;     /* set before the start; 0: the client's */
        unsigned status;
        unsigned n_response, n_data, n_done;
        int error;
        Buf body;
        char order[16];         /* R: on_response, D: on_data (runs collapsed), E: on_done */
        char *header_in_response; /* Content-Type, read in on_response */

        /* pausing: each on_data takes at most steps[n % n_steps] bytes */
        const size_t *steps;
        size_t n_steps;
        unsigned n_offers, n_pauses;
        bool need_resume;
        bool bad_offer;         /* data offered that is not the pattern at its offset */
        bool paused_once;
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
        const char *ct;

        ck_assert_ptr_eq(req, r->req);
        ck_assert_ptr_eq(http_request_userdata(req), r);
        r->n_response++;
        r->status = status;
        ck_assert_uint_eq(http_request_status(req), status);
        ct = http_request_response_header(req, "content-type");
        r->header_in_response = ct ? strdup(ct) : NULL;
        resp_order(r, 'R');
        switch (r->action) {
        case ACT_FAIL_RESPONSE:
                return -ENOTRECOVERABLE;
        case ACT_FREE_RESPONSE:
                r->req = http_request_free(req);
                return 0;
        default:
                return 0;
        }
}

static ssize_t resp_on_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        Resp *r = userdata;
        size_t take = len;

        ck_assert_ptr_eq(req, r->req);
        ck_assert_uint_gt(len, 0);
        r->n_offers++;
        resp_order(r, 'D');
        switch (r->action) {
        case ACT_FAIL_DATA:
                r->n_data++;
                return -EBADMSG;
        case ACT_FREE_DATA:
                r->n_data++;
                r->req = http_request_free(req);
                return (ssize_t) len;
        case ACT_FAIL_DATA_RESUMED:
        case ACT_FREE_DATA_RESUMED:
                r->n_data++;
                if (!r->paused_once) {
                        r->paused_once = true;
                        r->n_pauses++;
                        r->need_resume = true;
                        return 0;
                }
                if (r->action == ACT_FREE_DATA_RESUMED) {
                        r->req = http_request_free(req);
                        return (ssize_t) len;
                }
                return -EBADMSG;
        default:
                break;
        }
        if (r->n_steps > 0)
                take = MIN(len, r->steps[r->n_offers % r->n_steps]);
        if (!check_pattern(data, r->body.len, take))
                r->bad_offer = true;
        if (take > 0) {
                r->n_data++;
                buf_append(&r->body, data, take);
        }
        if (take < len) {
                r->n_pauses++;
                r->need_resume = true;
        }
        return (ssize_t) take;
}

static void resp_on_done(HttpRequest *req, int error, void *userdata) {
        Resp *r = userdata;

        ck_assert_ptr_eq(req, r->req);
        r->n_done++;
        r->error = error;
        resp_order(r, 'E');
        if (r->action == ACT_FREE_DONE)
                r->req = http_request_free(req);
}

static const HttpRequestCallbacks resp_callbacks = {
        .on_response = resp_on_response,
        .on_data = resp_on_data,
        .on_done = resp_on_done,
};

/* headers: NULL or "Name", "value", …, NULL. */
static void resp_start_url(Test *t, Resp *r, const char *method, const char *url,
                           const void *body, size_t len, const char *const *headers) {
        *r = (Resp) { .action = r->action, .steps = r->steps, .n_steps = r->n_steps, .idle_usec = r->idle_usec };
        ck_assert_int_eq(http_request_new(t->client, method, url, &r->req), 0);
        http_request_set_timeouts(r->req, 0, r->idle_usec);
        for (size_t i = 0; headers && headers[i]; i += 2)
                ck_assert_int_eq(http_request_add_header(r->req, headers[i], headers[i + 1]), 0);
        if (body)
                ck_assert_int_eq(http_request_set_body(r->req, body, len), 0);
        ck_assert_int_eq(http_request_start(r->req, &resp_callbacks, r), 0);
}

static void resp_start(Test *t, Resp *r, const char *method, const char *target,
                       const void *body, size_t len, const char *const *headers) {
        _cleanup_free_ char *url = NULL;

        ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u%s", t->port, target), 0);
        resp_start_url(t, r, method, url, body, len, headers);
}

/* In the loop, outside the callbacks: resume a paused transfer. */
static Resp *resp_pump(Resp *r) {
        if (r->need_resume && r->req) {
                r->need_resume = false;
                ck_assert(http_request_is_paused(r->req));
                (void) http_request_resume(r->req);
        }
        return r;
}

static void resp_done(Resp *r) {
        r->req = http_request_free(r->req);
        r->header_in_response = mfree(r->header_in_response);
        buf_done(&r->body);
}

/* ---- a plain socket server: canned answers ---------------------------------------------- */

typedef struct RawServer {
        sd_event *event;
        int listen_fd;
        uint16_t port;
        sd_event_source *listen_source;
        sd_event_source *conn_source;
        int conn_fd;
        Buf request;
        const char *answer;     /* sent once the request headers are in; NULL: nothing */
        bool close_after;       /* then close the connection */
        unsigned n_accepted;
} RawServer;

static void raw_server_close_conn(RawServer *s) {
        s->conn_source = sd_event_source_disable_unref(s->conn_source);
        s->conn_fd = safe_close(s->conn_fd);
}

static int on_raw_conn(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        RawServer *s = userdata;
        char b[4096];
        ssize_t n;

        n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
                return 0;
        if (n <= 0) {
                raw_server_close_conn(s);
                return 0;
        }
        buf_append(&s->request, b, (size_t) n);
        if (!strstr(s->request.data, "\r\n\r\n"))
                return 0;
        if (s->answer)
                ck_assert_int_eq(send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL), (ssize_t) strlen(s->answer));
        if (s->close_after)
                raw_server_close_conn(s);
        else
                (void) sd_event_source_set_enabled(s->conn_source, SD_EVENT_OFF);
        return 0;
}

static int on_raw_accept(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        RawServer *s = userdata;
        int c;

        c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0)
                return 0;
        s->n_accepted++;
        raw_server_close_conn(s);
        buf_done(&s->request);
        s->conn_fd = c;
        ck_assert_int_eq(sd_event_add_io(s->event, &s->conn_source, c, EPOLLIN, on_raw_conn, s), 0);
        return 0;
}

static void raw_server_start(RawServer *s, sd_event *e, const char *answer, bool close_after) {
        *s = (RawServer) { .event = e, .answer = answer, .close_after = close_after, .conn_fd = -EBADF };
        ck_assert_int_eq(http_listen("127.0.0.1:0", &s->listen_fd), 0);
        ck_assert_int_eq(http_socket_port(s->listen_fd, &s->port), 0);
        ck_assert_int_eq(sd_event_add_io(e, &s->listen_source, s->listen_fd, EPOLLIN, on_raw_accept, s), 0);
}

static void raw_server_stop(RawServer *s) {
        raw_server_close_conn(s);
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->listen_fd = safe_close(s->listen_fd);
        buf_done(&s->request);
}

/* ---- tests -------------------------------------------------------------------------------- */

static int collect_response_header(const char *name, const char *value, void *userdata) {
        Buf *b = userdata;

        buf_append(b, name, strlen(name));
        buf_append(b, "=", 1);
        buf_append(b, value, strlen(value));
        buf_append(b, ";", 1);
        return 0;
}

static int stop_at_second(const char *name, const char *value, void *userdata) {
        unsigned *n = userdata;

        return ++*n == 2 ? -ENOANO : 0;
}

START_TEST(test_get)
{
        static const char *const h[] = { "X-Req", "1", "X-Empty", "", "Authorization", "Bearer sk-1", NULL };
        _cleanup_free_ char *url = NULL;
        char host[64];
        Buf all = {};
        unsigned n = 0;
        Test t;
        Resp r = {};

        test_setup(&t, NULL, handle_hello);
        snprintf(host, sizeof host, "Host: 127.0.0.1:%u", t.port);
        ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u/v1/models?x=1", t.port), 0);
        resp_start_url(&t, &r, "GET", url, NULL, 0, h);
        ck_assert_str_eq(http_request_url(r.req), url);
        ck_assert_uint_eq(http_client_n_running(t.client), 1);
        ck_assert_uint_eq(http_client_n_requests(t.client), 1);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_str_eq(r.order, "RDE");
        ck_assert_uint_eq(r.n_response, 1);
        ck_assert_uint_eq(r.n_done, 1);
        ck_assert_uint_eq(r.status, 200);
        ck_assert_uint_eq(http_request_status(r.req), 200);
        ck_assert_str_eq(r.body.data, "hello");
        ck_assert_uint_eq(http_client_n_running(t.client), 0);

        /* What the server got: curl's two, then ours, in order ("X-Empty;" sends it empty). */
        ck_assert_str_eq(t.method, "GET");
        ck_assert_uint_eq(t.n_seen_headers, 5);
        ck_assert_str_eq(seen_header(&t, 0), host);
        ck_assert_str_eq(seen_header(&t, 1), "Accept: */*");
        ck_assert_str_eq(seen_header(&t, 2), "X-Req: 1");
        ck_assert_str_eq(seen_header(&t, 3), "X-Empty: ");
        ck_assert_str_eq(seen_header(&t, 4), "Authorization: Bearer sk-1");

        /* Response headers: from on_response on, any case, first match. */
        ck_assert_str_eq(r.header_in_response, "text/plain; charset=utf-8");
        ck_assert_str_eq(http_request_response_header(r.req, "CONTENT-TYPE"), "text/plain; charset=utf-8");
        ck_assert_str_eq(http_request_response_header(r.req, "x-alpha"), "a");
        ck_assert_str_eq(http_request_response_header(r.req, "X-MULTI"), "1");
        ck_assert_str_eq(http_request_response_header(r.req, "Content-Length"), "5");
        ck_assert_ptr_null(http_request_response_header(r.req, "X-Absent"));
        ck_assert_int_eq(http_request_foreach_response_header(r.req, collect_response_header, &all), 0);
        ck_assert_msg(strstr(all.data, "X-Alpha=a;X-Multi=1;x-multi=2;") ||
                      strstr(all.data, "X-Multi=1;x-multi=2;"), "headers: %s", all.data);
        ck_assert_ptr_nonnull(strstr(all.data, "X-Alpha=a;"));
        ck_assert_ptr_nonnull(strstr(all.data, "Content-Type=text/plain; charset=utf-8;"));
        ck_assert_ptr_null(strstr(all.data, "HTTP/"));
        ck_assert_int_eq(http_request_foreach_response_header(r.req, stop_at_second, &n), -ENOANO);
        ck_assert_uint_eq(n, 2);
        buf_done(&all);
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_methods_and_bodies)
{
        static const struct {
                const char *method;
                const char *body;       /* NULL: none set */
                const char *answer;     /* NULL: no body expected (HEAD) */
                const char *content_length; /* as the server saw it; NULL: none */
        } t_[] = {
                { "GET", NULL, "GET:", NULL },
                { "POST", "{\"model\":\"m\"}", "POST:{\"model\":\"m\"}", "13" },
                { "POST", "", "POST:", "0" },
                { "POST", NULL, "POST:", "0" },
                { "PUT", "put-body", "PUT:put-body", "8" },
                { "PATCH", "p", "PATCH:p", "1" },
                { "DELETE", NULL, "DELETE:", NULL },
                { "OPTIONS", NULL, "OPTIONS:", NULL },
                { "HEAD", NULL, NULL, NULL },
        };
        Test t;
        Resp r = {};

        test_setup(&t, NULL, handle_echo);
        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                const char *cl = NULL;

                resp_start(&t, &r, t_[i].method, "/m", t_[i].body, t_[i].body ? strlen(t_[i].body) : 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_msg(r.error == 0, "%s: error %d", t_[i].method, r.error);
                ck_assert_uint_eq(r.status, 200);
                ck_assert_str_eq(t.method, t_[i].method);
                if (t_[i].answer) {
                        ck_assert_str_eq(r.order, "RDE");
                        ck_assert_str_eq(r.body.data, t_[i].answer);
                } else {
                        /* HEAD: the length of what GET would give, and no body. */
                        ck_assert_str_eq(r.order, "RE");
                        ck_assert_uint_eq(r.n_data, 0);
                        ck_assert_str_eq(http_request_response_header(r.req, "Content-Length"), "5");
                }
                for (size_t h = 0; h < t.n_seen_headers; h++)
                        if (startswith(t.seen_headers[h], "Content-Length: "))
                                cl = t.seen_headers[h] + strlen("Content-Length: ");
                if (t_[i].content_length)
                        ck_assert_msg(cl && streq(cl, t_[i].content_length), "%s: Content-Length %s",
                                      t_[i].method, strna(cl));
                else
                        ck_assert_msg(!cl, "%s: Content-Length %s", t_[i].method, cl);
                ck_assert(!seen_header_named(&t, "Expect"));
                ck_assert(!seen_header_named(&t, "Transfer-Encoding"));
                resp_done(&r);
        }
        ck_assert_uint_eq(http_client_n_requests(t.client), ELEMENTSOF(t_));
        test_teardown(&t);
}
END_TEST

START_TEST(test_large_post)
{
        /* A body big enough for curl's "Expect: 100-continue", which we turn off. */
        size_t len = 2 * 1024 * 1024 + 3;
        _cleanup_free_ char *body = malloc(len);
        HttpServerOptions opts = { .max_body_size = 4 * 1024 * 1024 };
        int fd = -EBADF;
        Test t;
        Resp r = {};

        ck_assert_ptr_nonnull(body);
        fill_pattern(body, 0, len);
        test_setup(&t, NULL, NULL);
        t.handler = handle_echo;
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd), 0);
        ck_assert_int_eq(http_socket_port(fd, &t.port), 0);
        ck_assert_int_eq(http_server_new(t.event, fd, &opts, on_request, &t, &t.server), 0);
        resp_start(&t, &r, "POST", "/up", body, len, NULL);
        /* The request owns a copy. */
        memset(body, 0, len);
        fill_pattern(body, 0, len);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, 0);
        ck_assert_uint_eq(r.status, 200);
        ck_assert_uint_eq(t.body.len, len);
        ck_assert(check_pattern(t.body.data, 0, len));
        ck_assert(!seen_header_named(&t, "Expect"));
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_connection_refused)
{
        _cleanup_free_ char *url = NULL;
        uint16_t port;
        int fd = -EBADF;
        Test t;
        Resp r = {};

        test_setup(&t, NULL, NULL);
        /* A port that was just ours, now closed: nobody listens there. */
        ck_assert_int_eq(http_listen("127.0.0.1:0", &fd), 0);
        ck_assert_int_eq(http_socket_port(fd, &port), 0);
        fd = safe_close(fd);
        ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u/", port), 0);
        resp_start_url(&t, &r, "GET", url, NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, -ECONNREFUSED);
        ck_assert_str_eq(r.order, "E");
        ck_assert_uint_eq(r.status, 0);
        ck_assert_uint_eq(http_client_n_running(t.client), 0);
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_idle_timeout)
{
        /* 0: no answer at all; 1: headers and a first chunk, then silence. */
        for (int mode = 0; mode < 2; mode++) {
                Test t;
                Resp r = { .idle_usec = USEC_PER_SEC };
                uint64_t t0, dt;

                test_setup(&t, NULL, mode == 0 ? handle_defer : handle_stream);
                resp_start(&t, &r, "GET", "/slow", NULL, 0, NULL);
                t0 = now_usec(CLOCK_MONOTONIC);
                if (mode == 1) {
                        ck_assert(RUN_UNTIL(t.event, t.x && r.n_response == 1));
                        ck_assert_int_eq(http_exchange_stream_write(t.x, "data: 1\n\n", 9), 9);
                        ck_assert(RUN_UNTIL(t.event, r.body.len == 9));
                }
                ck_assert(RUN_UNTIL_USEC(t.event, r.n_done > 0, 15 * USEC_PER_SEC));
                dt = now_usec(CLOCK_MONOTONIC) - t0;
                ck_assert_int_eq(r.error, -ETIMEDOUT);
                ck_assert_str_eq(r.order, mode == 0 ? "E" : "RDE");
                /* Checked every 200 ms: 1 s of silence ends the transfer within 1.0–1.5 s,
                 * whether it is silence before the response or after a first chunk. */
                ck_assert_msg(dt >= 900 * USEC_PER_MSEC && dt < 1500 * USEC_PER_MSEC,
                              "mode %d: timed out after %" PRIu64 " µs", mode, dt);
                /* The server sees the client go. */
                ck_assert(RUN_UNTIL_USEC(t.event, t.n_closed == 1, USEC_PER_SEC));
                ck_assert_uint_eq(t.n_closed_ok, 0);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

/* The response timeout bounds the wait for headers apart from the idle timeout. */
START_TEST(test_response_timeout)
{
        Test t;
        Resp r = { .idle_usec = 10 * USEC_PER_SEC };
        uint64_t t0, dt;

        test_setup(&t, NULL, handle_defer);
        resp_start(&t, &r, "GET", "/slow", NULL, 0, NULL);
        /* resp_start() already started the request; the response timeout is read by the watchdog. */
        http_request_set_response_timeout(r.req, 500 * USEC_PER_MSEC);
        t0 = now_usec(CLOCK_MONOTONIC);
        ck_assert(RUN_UNTIL_USEC(t.event, r.n_done > 0, 5 * USEC_PER_SEC));
        dt = now_usec(CLOCK_MONOTONIC) - t0;
        ck_assert_int_eq(r.error, -ETIMEDOUT);
        ck_assert_str_eq(r.order, "E");
        ck_assert_msg(dt >= 400 * USEC_PER_MSEC && dt < 1000 * USEC_PER_MSEC, "timed out after %" PRIu64 " µs", dt);
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_pause_resume)
{
        static const size_t steps_a[] = { 1000 };
        static const size_t steps_b[] = { 0, 1, 4095, 0, 65536, 7 };
        static const size_t steps_c[] = { 0 , SIZE_MAX };
        static const struct { const size_t *steps; size_t n; } t_[] = {
                { steps_a, ELEMENTSOF(steps_a) },
                { steps_b, ELEMENTSOF(steps_b) },
                { steps_c, ELEMENTSOF(steps_c) },
        };

        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                Test t;
                Resp r = { .steps = t_[i].steps, .n_steps = t_[i].n };

                test_setup(&t, NULL, handle_big);
                resp_start(&t, &r, "GET", "/big", NULL, 0, NULL);
                /* Not paused: a no-op. */
                ck_assert_int_eq(http_request_resume(r.req), 0);
                ck_assert(!http_request_is_paused(r.req));
                ck_assert(RUN_UNTIL_USEC(t.event, resp_pump(&r)->n_done > 0, 30 * USEC_PER_SEC));
                ck_assert_int_eq(r.error, 0);
                ck_assert_str_eq(r.order, "RDE");
                ck_assert_msg(!r.bad_offer, "case %zu: data offered again out of place", i);
                ck_assert_uint_eq(r.body.len, BIG_SIZE);
                ck_assert(check_pattern(r.body.data, 0, BIG_SIZE));
                ck_assert_uint_gt(r.n_pauses, 10);
                ck_assert(!http_request_is_paused(r.req));
                ck_assert_int_eq(http_request_resume(r.req), 0);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_callback_errors)
{
        static const struct {
                Action action;
                unsigned n_writes;      /* chunks the server sends */
                int error;
                const char *order;
                unsigned n_data;
        } t_[] = {
                { ACT_FAIL_RESPONSE, 5, -ENOTRECOVERABLE, "RE", 0 },
                { ACT_FAIL_DATA, 5, -EBADMSG, "RDE", 1 },
                /* Fails in http_request_resume(), when the data is offered again. */
                { ACT_FAIL_DATA_RESUMED, 5, -EBADMSG, "RDE", 2 },
                /* … and nothing comes after: the transfer must end all the same. */
                { ACT_FAIL_DATA_RESUMED, 1, -EBADMSG, "RDE", 2 },
        };

        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                Test t;
                Resp r = { .action = t_[i].action };

                test_setup(&t, NULL, handle_stream);
                resp_start(&t, &r, "GET", "/events", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, t.x && r.n_response == 1));
                /* More data may come after the error: none of it is offered. */
                for (unsigned k = 0; k < t_[i].n_writes && t.x; k++) {
                        ck_assert_int_eq(http_exchange_stream_write(t.x, "chunk\n", 6), 6);
                        run_for(t.event, 20 * USEC_PER_MSEC);
                        resp_pump(&r);
                }
                ck_assert_msg(RUN_UNTIL_USEC(t.event, r.n_done > 0, 2 * USEC_PER_SEC), "case %zu: not done", i);
                ck_assert_msg(r.error == t_[i].error, "case %zu: error %d", i, r.error);
                ck_assert_str_eq(r.order, t_[i].order);
                ck_assert_uint_eq(r.n_data, t_[i].n_data);
                ck_assert_uint_eq(r.n_done, 1);
                ck_assert_uint_eq(http_client_n_running(t.client), 0);
                /* The aborted transfer closed its connection: the stream ends badly. */
                ck_assert(RUN_UNTIL_USEC(t.event, t.n_closed == 1, USEC_PER_SEC));
                ck_assert_uint_eq(t.n_closed_ok, 0);
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_free_in_callbacks)
{
        static const struct {
                Action action;
                const char *order;
                unsigned n_done;
        } t_[] = {
                { ACT_FREE_RESPONSE, "R", 0 },
                { ACT_FREE_DATA, "RD", 0 },
                { ACT_FREE_DATA_RESUMED, "RD", 0 },
                { ACT_FREE_DONE, "RDE", 1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                Test t;
                Resp r = { .action = t_[i].action };

                test_setup(&t, NULL, handle_stream);
                resp_start(&t, &r, "GET", "/events", NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, t.x && r.n_response == 1));
                ck_assert_int_eq(http_exchange_stream_write(t.x, "chunk\n", 6), 6);
                if (t_[i].action == ACT_FREE_DONE)
                        ck_assert_int_eq(http_exchange_stream_end(t.x), 0);
                if (t_[i].action == ACT_FREE_DATA_RESUMED)
                        ck_assert(RUN_UNTIL(t.event, resp_pump(&r)->req == NULL));
                /* Until the transfer left the loop and the reaper ran. */
                ck_assert(RUN_UNTIL(t.event, !r.req && http_client_n_running(t.client) == 0));
                run_for(t.event, 100 * USEC_PER_MSEC);
                ck_assert_str_eq(r.order, t_[i].order);
                ck_assert_uint_eq(r.n_done, t_[i].n_done);
                if (t_[i].action != ACT_FREE_DONE) {
                        /* A cancelled transfer is gone for the server too. */
                        ck_assert(RUN_UNTIL_USEC(t.event, t.n_closed == 1, USEC_PER_SEC));
                        ck_assert_uint_eq(t.n_closed_ok, 0);
                        if (t.x)
                                ck_assert_int_eq(http_exchange_stream_write(t.x, "x", 1), -EPIPE);
                }
                resp_done(&r);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_keepalive)
{
        Test t;
        Resp r = {};

        test_setup(&t, NULL, handle_echo);
        for (unsigned i = 0; i < 6; i++) {
                char body[16];

                snprintf(body, sizeof body, "n=%u", i);
                resp_start(&t, &r, i % 2 ? "POST" : "GET", "/k", i % 2 ? body : NULL, strlen(body), NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, 0);
                ck_assert_uint_eq(r.status, 200);
                resp_done(&r);
                ck_assert_uint_eq(http_server_n_connections(t.server), 1);
        }
        ck_assert_uint_eq(http_client_n_requests(t.client), 6);
        ck_assert_uint_eq(http_client_n_connects(t.client), 1);
        test_teardown(&t);
}
END_TEST

START_TEST(test_client_free_running)
{
        Test t;
        Resp r[3] = {};

        test_setup(&t, NULL, handle_defer);
        for (size_t i = 0; i < ELEMENTSOF(r); i++)
                resp_start(&t, &r[i], "GET", "/wait", NULL, 0, NULL);
        ck_assert(RUN_UNTIL(t.event, t.n_handled == ELEMENTSOF(r)));
        ck_assert_uint_eq(http_client_n_running(t.client), ELEMENTSOF(r));
        ck_assert_uint_eq(http_server_n_connections(t.server), ELEMENTSOF(r));
        /* Frees the running requests too, and tells nobody. */
        t.client = http_client_free(t.client);
        for (size_t i = 0; i < ELEMENTSOF(r); i++)
                r[i].req = NULL;
        ck_assert(RUN_UNTIL_USEC(t.event, t.n_closed == ELEMENTSOF(r), USEC_PER_SEC));
        ck_assert_uint_eq(t.n_closed_ok, 0);
        ck_assert(RUN_UNTIL(t.event, http_server_n_connections(t.server) == 0));
        for (size_t i = 0; i < ELEMENTSOF(r); i++) {
                ck_assert_str_eq(r[i].order, "");
                resp_done(&r[i]);
        }
        test_teardown(&t);
}
END_TEST

START_TEST(test_invalid_input)
{
        static const struct { const char *method, *url; int ret; } req[] = {
                { "GET", "http://127.0.0.1/", 0 },
                { "GET", "https://example.invalid/", 0 },
                { "M-SEARCH", "http://127.0.0.1/", 0 },
                { "", "http://127.0.0.1/", -EINVAL },
                { "GE T", "http://127.0.0.1/", -EINVAL },
                { "GET\r\n", "http://127.0.0.1/", -EINVAL },
                { "GET /x HTTP/1.1\r\nX:", "http://127.0.0.1/", -EINVAL },
                { "GET", "ftp://127.0.0.1/", -EPROTONOSUPPORT },
                { "GET", "file:///etc/passwd", -EPROTONOSUPPORT },
                { "GET", "127.0.0.1:80/", -EPROTONOSUPPORT },
                { "GET", "", -EPROTONOSUPPORT },
                { "GET", "gopher://x/", -EPROTONOSUPPORT },
        };
        static const struct { const char *name, *value; int ret; } hdr[] = {
                { "X-Ok", "v", 0 },
                { "X-Empty", "", 0 },
                { "", "v", -EINVAL },
                { "X Y", "v", -EINVAL },
                { "X:Y", "v", -EINVAL },
                { "X-In\r\nject", "v", -EINVAL },
                { "X-Inject", "a\r\nX-Evil: 1", -EINVAL },
                { "X-Inject", "a\nb", -EINVAL },
                { "X-Inject", "a\rb", -EINVAL },
        };
        Test t;
        Resp r = {};
        HttpRequest *q = NULL;

        test_setup(&t, NULL, NULL);
        for (size_t i = 0; i < ELEMENTSOF(req); i++) {
                q = NULL;
                ck_assert_msg(http_request_new(t.client, req[i].method, req[i].url, &q) == req[i].ret,
                              "'%s' '%s'", req[i].method, req[i].url);
                ck_assert(req[i].ret == 0 ? q != NULL : q == NULL);
                q = http_request_free(q);
        }
        ck_assert_int_eq(http_request_new(t.client, "GET", "http://127.0.0.1/", &q), 0);
        for (size_t i = 0; i < ELEMENTSOF(hdr); i++)
                ck_assert_msg(http_request_add_header(q, hdr[i].name, hdr[i].value) == hdr[i].ret, "header %zu", i);
        q = http_request_free(q);
        ck_assert_uint_eq(http_client_n_requests(t.client), 0);

        /* A URL only libcurl can judge fails the transfer, not the start. */
        resp_start_url(&t, &r, "GET", "http://127.0.0.1:99999/", NULL, 0, NULL);
        ck_assert_int_eq(http_request_add_header(r.req, "X-Late", "1"), -EBUSY);
        ck_assert_int_eq(http_request_set_body(r.req, "x", 1), -EBUSY);
        ck_assert_int_eq(http_request_start(r.req, &resp_callbacks, &r), -EBUSY);
        ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
        ck_assert_int_eq(r.error, -EINVAL);
        ck_assert_str_eq(r.order, "E");
        resp_done(&r);
        test_teardown(&t);
}
END_TEST

START_TEST(test_malformed_answers)
{
        static const struct {
                const char *answer;
                bool close;
                int error;
                const char *order;
                unsigned status;
                const char *body;
        } t_[] = {
                /* Truncated by Content-Length. */
                { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true, -ECONNRESET, "RDE", 200, "abc" },
                /* A chunked body without its last chunk. */
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", true, -ECONNRESET, "RDE", 200, "abc" },
                /* Nothing at all. */
                { NULL, true, -ECONNRESET, "E", 0, NULL },
                /* Not HTTP. */
                { "SSH-2.0-OpenSSH_9.2\r\n\r\n", true, -EPROTO, "E", 0, NULL },
                { "HTTP/1.1 abc\r\n\r\n", true, -EPROTO, "E", 0, NULL },
                /* Bad chunk framing: libcurl reports a receive error. */
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", false,
                  -ECONNRESET, "RE", 200, NULL },
                /* Interim answers are skipped, with their headers. */
                { "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                  "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 201 Created\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok", false, 0, "RDE", 201, "ok" },
                { "HTTP/1.1 204 No Content\r\nX-Final: 1\r\n\r\n", false, 0, "RE", 204, NULL },
                /* Until the connection closes. */
                { "HTTP/1.1 200 OK\r\nX-Final: 1\r\n\r\nall of it", true, 0, "RDE", 200, "all of it" },
        };

        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                _cleanup_free_ char *url = NULL;
                RawServer s;
                Test t;
                Resp r = {};

                test_setup(&t, NULL, NULL);
                raw_server_start(&s, t.event, t_[i].answer, t_[i].close);
                ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u/x", s.port), 0);
                resp_start_url(&t, &r, "GET", url, NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_msg(r.error == t_[i].error, "case %zu: error %d", i, r.error);
                ck_assert_msg(streq(r.order, t_[i].order), "case %zu: order %s", i, r.order);
                ck_assert_uint_eq(r.status, t_[i].status);
                ck_assert_uint_eq(r.n_response, t_[i].status > 0);
                if (t_[i].body)
                        ck_assert_str_eq(r.body.data, t_[i].body);
                else
                        ck_assert_uint_eq(r.body.len, 0);
                if (t_[i].error == 0) {
                        ck_assert_str_eq(http_request_response_header(r.req, "X-Final"), "1");
                        ck_assert_ptr_null(http_request_response_header(r.req, "X-Interim"));
                        ck_assert_ptr_null(http_request_response_header(r.req, "Link"));
                }
                /* The request went out without curl's Expect. */
                ck_assert(startswith(s.request.data, "GET /x HTTP/1.1\r\n"));
                resp_done(&r);
                raw_server_stop(&s);
                test_teardown(&t);
        }
}
END_TEST

START_TEST(test_response_headers_too_large)
{
        static const struct { size_t len; int error; const char *order; } t_[] = {
                { 100, 0, "RDE" },
                { 2000, -E2BIG, "E" },
        };
        HttpClientOptions opts = { .max_response_headers = 1024 };

        for (size_t i = 0; i < ELEMENTSOF(t_); i++) {
                _cleanup_free_ char *answer = NULL, *url = NULL, *v = malloc(t_[i].len + 1);
                RawServer s;
                Test t;
                Resp r = {};

                ck_assert_ptr_nonnull(v);
                memset(v, 'v', t_[i].len);
                v[t_[i].len] = 0;
                ck_assert_int_ge(asprintf(&answer, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\nok", v), 0);
                test_setup(&t, &opts, NULL);
                raw_server_start(&s, t.event, answer, false);
                ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%u/", s.port), 0);
                resp_start_url(&t, &r, "GET", url, NULL, 0, NULL);
                ck_assert(RUN_UNTIL(t.event, r.n_done > 0));
                ck_assert_int_eq(r.error, t_[i].error);
                ck_assert_str_eq(r.order, t_[i].order);
                resp_done(&r);
                raw_server_stop(&s);
                test_teardown(&t);
        }
}
END_TEST

static Suite *http_client_suite(void) {
        Suite *s = suite_create("http-client");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_get);
        tcase_add_test(tc, test_methods_and_bodies);
        tcase_add_test(tc, test_large_post);
        tcase_add_test(tc, test_connection_refused);
        tcase_add_test(tc, test_idle_timeout);
        tcase_add_test(tc, test_response_timeout);
        tcase_add_test(tc, test_pause_resume);
        tcase_add_test(tc, test_callback_errors);
        tcase_add_test(tc, test_free_in_callbacks);
        tcase_add_test(tc, test_keepalive);
        tcase_add_test(tc, test_client_free_running);
        tcase_add_test(tc, test_invalid_input);
        tcase_add_test(tc, test_malformed_answers);
        tcase_add_test(tc, test_response_headers_too_large);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(http_client_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
