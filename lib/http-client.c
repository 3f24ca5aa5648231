/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <curl/curl.h>
#include <ctype.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include "cleanup.h"
#include "http-client.h"
#include "log.h"

#define DEFAULT_CONNECT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define DEFAULT_IDLE_TIMEOUT_USEC (300 * USEC_PER_SEC)
#define DEFAULT_MAX_CONNECTIONS 1024U
#define DEFAULT_MAX_IDLE_CONNECTIONS 256U
#define DEFAULT_MAX_RESPONSE_HEADERS (64U * 1024U)
#define DEFAULT_RECEIVE_BUFFER (16U * 1024U)
#define MAX_RESPONSE_HEADER_LINES 128U

typedef struct ResponseHeader {
        char *name;
        char *value;
} ResponseHeader;

struct HttpClient {
        sd_event *event;
        CURLM *multi;
        int epoll_fd;          /* every socket libcurl wants watched; sd-event watches this fd only */
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *kick;         /* libcurl's timeout 0: run on the next loop iteration */
        sd_event_source *reaper;
        sd_event_source *watchdog;     /* response and idle timeouts, checked while transfers run */
        HttpClientOptions opts;

        /* Easy handles of finished requests, reset and kept: a new one costs an allocation
         * of several KiB and its initialisation on every request. */
        CURL *spare[64];
        size_t n_spare;
        bool freeing;

        unsigned in_curl;      /* depth of calls into libcurl that may run our callbacks */
        HttpRequest *zombies;  /* freed from inside libcurl; removed from the loop later */
        HttpRequest *running;  /* every transfer in the multi handle */
        unsigned n_running;
        uint64_t n_requests;
        uint64_t n_connects;
};

struct HttpRequest {
        HttpClient *client;
        CURL *easy;
        char *url;
        char *method;
        struct curl_slist *headers;
        char *body;
        size_t body_len;
        uint64_t connect_timeout_usec;
        uint64_t idle_timeout_usec;
        uint64_t response_timeout_usec;
        uint64_t activity_usec;        /* when the watchdog last saw progress (or the start) */
        uint64_t n_activity;           /* bumped by every header line and body delivery */
        uint64_t n_activity_seen;

        HttpRequestCallbacks cb;
        void *userdata;

        bool running;
        bool paused;
        bool responded;
        bool zombie;
        int abort_error;       /* set when a callback asked to abort */
        size_t skip;           /* bytes of the next delivery that on_data already took */

        unsigned status;
        ResponseHeader *resp_headers;
        size_t n_resp_headers;
        size_t resp_headers_bytes;

        HttpRequest *zombie_next;
        HttpRequest *running_prev, *running_next;
};

static void client_check_done(HttpClient *c);
static void request_detach(HttpRequest *r);

#define WATCHDOG_INTERVAL_USEC (200 * USEC_PER_MSEC)

/* Find a running transfer past its deadline: before the response headers the response
 * timeout applies, after them the idle timeout between two deliveries. A transfer paused
 * by its owner waits for the owner, not for the server, and is never idle. */
static HttpRequest *client_find_expired(HttpClient *c, uint64_t now) {
        for (HttpRequest *r = c->running; r; r = r->running_next) {
                uint64_t idle = r->idle_timeout_usec ?: c->opts.idle_timeout_usec;
                uint64_t limit = r->responded ? idle : (r->response_timeout_usec ?: idle);

                if (r->zombie)
                        continue;
                if (r->n_activity != r->n_activity_seen || r->paused) {
                        r->n_activity_seen = r->n_activity;
                        r->activity_usec = now;
                        continue;
                }
                if (now - r->activity_usec >= limit)
                        return r;
        }
        return NULL;
}

static int on_client_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpClient *c = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        HttpRequest *r;

        /* Not inside libcurl here: expired transfers can be removed and reported at once. */
        while ((r = client_find_expired(c, now))) {
                request_detach(r);
                if (r->cb.on_done)
                        r->cb.on_done(r, -ETIMEDOUT, r->userdata);
        }
        if (c->n_running == 0)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        (void) sd_event_source_set_time_relative(s, WATCHDOG_INTERVAL_USEC);
        return 0;
}

static int curlcode_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_GOT_NOTHING:
                return -ECONNRESET;
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_BAD_CONTENT_ENCODING:
                return -EPROTO;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
                return -EKEYREJECTED;
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        default:
                return -EIO;
        }
}

/* ---- sd-event glue ------------------------------------------------------------- */

/* libcurl's sockets live in a private epoll set, and sd-event watches that one fd. Watched one
 * by one, N ready upstream sockets cost O(N) on every loop iteration: sd-event dispatches one
 * source at a time and polls its epoll set again before each, and level-triggered sockets that
 * wait their turn are reported (and polled by the kernel) every time. Here one dispatch hands
 * libcurl every ready socket. */
static int on_curl_epoll(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpClient *c = userdata;
        struct epoll_event evs[128];
        int n, running;

        n = epoll_wait(c->epoll_fd, evs, ELEMENTSOF(evs), 0);
        if (n <= 0)
                return 0;

        c->in_curl++;
        for (int i = 0; i < n; i++) {
                uint32_t e = evs[i].events;
                int action = 0;

                if (e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
                        action |= CURL_CSELECT_IN;
                if (e & EPOLLOUT)
                        action |= CURL_CSELECT_OUT;
                if (e & EPOLLERR)
                        action |= CURL_CSELECT_ERR;
                (void) curl_multi_socket_action(c->multi, evs[i].data.fd, action, &running);
        }
        c->in_curl--;
        client_check_done(c);
        return 0;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        HttpClient *c = userp;
        struct epoll_event ev = { .data.fd = fd };
        int op;

        if (what == CURL_POLL_REMOVE) {
                if (socketp) {
                        /* ENOENT/EBADF: already gone with a close(); nothing to undo. */
                        (void) epoll_ctl(c->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
                        (void) curl_multi_assign(c->multi, fd, NULL);
                }
                return 0;
        }
        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
                ev.events |= EPOLLIN;
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
                ev.events |= EPOLLOUT;

        op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(c->epoll_fd, op, fd, &ev) < 0) {
                /* A number reused after a close() we were not told about, or the reverse. */
                if (errno == EEXIST || errno == ENOENT) {
                        op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
                        if (epoll_ctl(c->epoll_fd, op, fd, &ev) >= 0)
                                goto watched;
                }
                log_debug_errno(errno, "Failed to watch HTTP client socket: %m");
                return -1;
        }
watched:
        /* Any non-NULL pointer marks the socket as watched. */
        if (!socketp && curl_multi_assign(c->multi, fd, c) != CURLM_OK) {
                (void) epoll_ctl(c->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
                return -1;
        }
        return 0;
}

static int on_curl_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpClient *c = userdata;
        int running;

        c->in_curl++;
        (void) curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        c->in_curl--;
        client_check_done(c);
        return 0;
}

static int on_curl_kick(sd_event_source *s, void *userdata) {
        return on_curl_timer(s, 0, userdata);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        HttpClient *c = userp;
        int r;

        if (timeout_ms < 0) {
                (void) sd_event_source_set_enabled(c->kick, SD_EVENT_OFF);
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        }
        if (timeout_ms == 0) {
                /* libcurl asks for this to start every transfer: no timerfd round trip. */
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                return sd_event_source_set_enabled(c->kick, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
        }
        (void) sd_event_source_set_enabled(c->kick, SD_EVENT_OFF);

        /* Relative, in milliseconds; round up so we never fire early. */
        r = sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * USEC_PER_MSEC + 1);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        return r < 0 ? -1 : 0;
}

/* ---- requests ------------------------------------------------------------------ */

static void request_clear_response(HttpRequest *r) {
        for (size_t i = 0; i < r->n_resp_headers; i++) {
                free(r->resp_headers[i].name);
                free(r->resp_headers[i].value);
        }
        r->resp_headers = mfree(r->resp_headers);
        r->n_resp_headers = 0;
        r->resp_headers_bytes = 0;
}

static void request_detach(HttpRequest *r) {
        if (!r->running)
                return;
        r->running = false;
        r->client->n_running--;
        if (r->running_prev)
                r->running_prev->running_next = r->running_next;
        else
                r->client->running = r->running_next;
        if (r->running_next)
                r->running_next->running_prev = r->running_prev;
        r->running_prev = r->running_next = NULL;
        (void) curl_multi_remove_handle(r->client->multi, r->easy);
}

static void request_destroy(HttpRequest *r) {
        HttpClient *c = r->client;

        if (r->easy && !c->freeing && c->n_spare < ELEMENTSOF(c->spare)) {
                curl_easy_reset(r->easy); /* keeps no options; connections live in the multi handle */
                c->spare[c->n_spare++] = r->easy;
        } else if (r->easy)
                curl_easy_cleanup(r->easy);
        curl_slist_free_all(r->headers);
        request_clear_response(r);
        free(r->url);
        free(r->method);
        free(r->body);
        free(r);
}

static int on_reaper(sd_event_source *s, void *userdata) {
        HttpClient *c = userdata;

        c->reaper = sd_event_source_disable_unref(c->reaper);
        while (c->zombies) {
                HttpRequest *r = c->zombies;

                c->zombies = r->zombie_next;
                request_detach(r);
                request_destroy(r);
        }
        return 0;
}

HttpRequest *http_request_free(HttpRequest *r) {
        HttpClient *c;

        if (!r)
                return NULL;
        c = r->client;
        r->cb = (HttpRequestCallbacks) {};
        r->userdata = NULL;

        if (r->running && c->in_curl > 0) {
                /* libcurl forbids removing a handle from inside its callbacks: park it. */
                if (!r->zombie) {
                        r->zombie = true;
                        r->zombie_next = c->zombies;
                        c->zombies = r;
                        if (!c->reaper && sd_event_add_defer(c->event, &c->reaper, on_reaper, c) < 0)
                                log_debug("Failed to schedule HTTP request cleanup.");
                }
                return NULL;
        }
        request_detach(r);
        request_destroy(r);
        return NULL;
}

static bool header_token_valid(const char *s) {
        if (isempty(s))
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && !strchr("!#$%&'*+-.^_`|~", *s))
                        return false;
        return true;
}

static size_t curl_header_cb(char *buf, size_t size, size_t n, void *userdata) {
        HttpRequest *r = userdata;
        size_t len = size * n, l = len;
        const char *colon;

        if (r->zombie)
                return 0;
        r->n_activity++;

        while (l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
                l--;

        if (l == 0) {
                long code = 0;

                /* End of a header block. Skip interim 1xx responses. */
                (void) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
                if (code >= 100 && code < 200) {
                        request_clear_response(r);
                        return len;
                }
                r->status = (unsigned) code;
                if (!r->responded) {
                        r->responded = true;
                        if (r->cb.on_response) {
                                int k = r->cb.on_response(r, r->status, r->userdata);
                                if (k < 0 || r->zombie) {
                                        r->abort_error = k < 0 ? k : -ECANCELED;
                                        return 0;
                                }
                        }
                }
                return len;
        }

        if (startswith(buf, "HTTP/")) {
                request_clear_response(r);
                return len;
        }

        r->resp_headers_bytes += len;
        if (r->resp_headers_bytes > r->client->opts.max_response_headers ||
            r->n_resp_headers >= MAX_RESPONSE_HEADER_LINES) {
                r->abort_error = -E2BIG;
                return 0;
        }

        colon = memchr(buf, ':', l);
        if (!colon)
                return len; /* folded or malformed line: ignore */

        _cleanup_free_ char *name = strndup(buf, (size_t) (colon - buf));
        const char *v = colon + 1;
        size_t vl = l - (size_t) (v - buf);
        while (vl > 0 && (*v == ' ' || *v == '\t'))
                v++, vl--;
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
        _cleanup_free_ char *value = strndup(v, vl);
        if (!name || !value) {
                r->abort_error = -ENOMEM;
                return 0;
        }
        if (!header_token_valid(name))
                return len;

        ResponseHeader *h = reallocarray(r->resp_headers, r->n_resp_headers + 1, sizeof(ResponseHeader));
        if (!h) {
                r->abort_error = -ENOMEM;
                return 0;
        }
        r->resp_headers = h;
        r->resp_headers[r->n_resp_headers++] = (ResponseHeader) { TAKE_PTR(name), TAKE_PTR(value) };
        return len;
}

static size_t curl_write_cb(char *buf, size_t size, size_t n, void *userdata) {
        HttpRequest *r = userdata;
        size_t len = size * n, off = 0;
        ssize_t k;

        /* Nothing more for a callback that asked to abort (see curl_xferinfo_cb()). */
        if (r->zombie || r->abort_error)
                return 0;
        r->n_activity++;
        if (!r->cb.on_data)
                return len;

        /* After a pause libcurl offers the whole block again: skip what was taken. */
        if (r->skip > 0) {
                off = MIN(r->skip, len);
                r->skip -= off;
                if (off == len)
                        return len;
        }

        k = r->cb.on_data(r, buf + off, len - off, r->userdata);
        if (r->zombie)
                return 0;
        if (k < 0) {
                r->abort_error = (int) k;
                return 0;
        }
        if ((size_t) k >= len - off)
                return len;

        r->skip = off + (size_t) k;
        r->paused = true;
        return CURL_WRITEFUNC_PAUSE;
}

/* on_data may fail inside curl_easy_pause() (http_request_resume()): libcurl returns that
 * error to the caller but leaves the transfer running. It calls this at least once a
 * second (the low-speed check) and on every read: end the transfer there. */
static int curl_xferinfo_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                            curl_off_t ultotal, curl_off_t ulnow) {
        HttpRequest *r = userdata;

        return r->abort_error != 0;
}

static void client_check_done(HttpClient *c) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(c->multi, &left))) {
                HttpRequest *r = NULL;
                long connects = 0;
                int error;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r) != CURLE_OK || !r)
                        continue;
                if (curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
                        c->n_connects += (uint64_t) connects;

                error = r->abort_error ?: curlcode_to_errno(msg->data.result);
                if (error == 0 && !r->responded)
                        error = -EPROTO;
                request_detach(r);
                if (r->zombie)
                        continue; /* the reaper frees it */
                if (r->cb.on_done)
                        r->cb.on_done(r, error, r->userdata);
        }
}

int http_request_new(HttpClient *c, const char *method, const char *url, HttpRequest **ret) {
        _cleanup_(http_request_freep) HttpRequest *r = NULL;

        assert(c && method && url && ret);
        if (!startswith(url, "http://") && !startswith(url, "https://"))
                return -EPROTONOSUPPORT;
        if (!header_token_valid(method))
                return -EINVAL;

        r = new0(HttpRequest, 1);
        if (!r)
                return -ENOMEM;
        *r = (HttpRequest) {
                .client = c,
                .url = strdup(url),
                .method = strdup(method),
                .easy = c->n_spare > 0 ? c->spare[--c->n_spare] : curl_easy_init(),
        };
        if (!r->url || !r->method || !r->easy)
                return -ENOMEM;
        /* No "Expect: 100-continue" round trip for bodies. */
        struct curl_slist *l = curl_slist_append(NULL, "Expect:");
        if (!l)
                return -ENOMEM;
        r->headers = l;
        *ret = TAKE_PTR(r);
        return 0;
}

int http_request_add_header(HttpRequest *r, const char *name, const char *value) {
        _cleanup_free_ char *line = NULL;
        struct curl_slist *l;

        assert(r && name && value);
        if (r->running)
                return -EBUSY;
        if (!header_token_valid(name) || strpbrk(value, "\r\n"))
                return -EINVAL;
        /* "Name;" sends an empty header; "Name:" would remove it. */
        if (asprintf(&line, isempty(value) ? "%s;" : "%s: %s", name, value) < 0)
                return -ENOMEM;
        l = curl_slist_append(r->headers, line);
        if (!l)
                return -ENOMEM;
        r->headers = l;
        return 0;
}

int http_request_set_body(HttpRequest *r, const void *body, size_t len) {
        char *b;

        assert(r);
        if (r->running)
                return -EBUSY;
        b = malloc(len + 1);
        if (!b)
                return -ENOMEM;
        if (len > 0)
                memcpy(b, body, len);
        b[len] = 0;
        free(r->body);
        r->body = b;
        r->body_len = len;
        return 0;
}

void http_request_set_timeouts(HttpRequest *r, uint64_t connect_usec, uint64_t idle_usec) {
        r->connect_timeout_usec = connect_usec;
        r->idle_timeout_usec = idle_usec;
}

void http_request_set_response_timeout(HttpRequest *r, uint64_t usec) {
        r->response_timeout_usec = usec;
}

#define SETOPT(easy, opt, val)                                          \
        do {                                                            \
                if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) \
                        return -EIO;                                    \
        } while (0)

int http_request_start(HttpRequest *r, const HttpRequestCallbacks *cb, void *userdata) {
        HttpClient *c;
        uint64_t ct;

        assert(r && cb);
        c = r->client;
        if (r->running)
                return -EBUSY;

        r->cb = *cb;
        r->userdata = userdata;
        ct = r->connect_timeout_usec ?: c->opts.connect_timeout_usec;

        SETOPT(r->easy, CURLOPT_URL, r->url);
        SETOPT(r->easy, CURLOPT_PRIVATE, r);
        SETOPT(r->easy, CURLOPT_NOSIGNAL, 1L);
        SETOPT(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SETOPT(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
        SETOPT(r->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
        SETOPT(r->easy, CURLOPT_TCP_NODELAY, 1L);
        SETOPT(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
        SETOPT(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) ((ct + 999) / 1000));
        /* Response and idle timeouts are ours (client_watchdog()): libcurl's low-speed check
         * averages over seconds and also counts the wait for the response. */
        SETOPT(r->easy, CURLOPT_BUFFERSIZE, (long) c->opts.receive_buffer_size);
        SETOPT(r->easy, CURLOPT_HEADERFUNCTION, curl_header_cb);
        SETOPT(r->easy, CURLOPT_HEADERDATA, r);
        SETOPT(r->easy, CURLOPT_WRITEFUNCTION, curl_write_cb);
        SETOPT(r->easy, CURLOPT_WRITEDATA, r);
        SETOPT(r->easy, CURLOPT_XFERINFOFUNCTION, curl_xferinfo_cb);
        SETOPT(r->easy, CURLOPT_XFERINFODATA, r);
        SETOPT(r->easy, CURLOPT_NOPROGRESS, 0L);
        SETOPT(r->easy, CURLOPT_HTTPHEADER, r->headers);
        SETOPT(r->easy, CURLOPT_ACCEPT_ENCODING, NULL); /* pass bodies through untouched */
        SETOPT(r->easy, CURLOPT_HTTP_CONTENT_DECODING, 0L);
        SETOPT(r->easy, CURLOPT_HTTP_TRANSFER_DECODING, 1L);
        SETOPT(r->easy, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(r->easy, CURLOPT_SSL_VERIFYHOST, 2L);
        if (c->opts.ca_file)
                SETOPT(r->easy, CURLOPT_CAINFO, c->opts.ca_file);

        if (streq(r->method, "GET") && !r->body)
                SETOPT(r->easy, CURLOPT_HTTPGET, 1L);
        else if (streq(r->method, "HEAD"))
                SETOPT(r->easy, CURLOPT_NOBODY, 1L);
        else {
                if (r->body || streq(r->method, "POST")) {
                        SETOPT(r->easy, CURLOPT_POSTFIELDS, r->body ?: "");
                        SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len);
                }
                if (!streq(r->method, "POST"))
                        SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, r->method);
        }

        request_clear_response(r);
        r->responded = r->paused = false;
        r->abort_error = 0;
        r->skip = 0;
        r->status = 0;
        r->n_activity = r->n_activity_seen = 0;
        r->activity_usec = now_usec(CLOCK_MONOTONIC);

        if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
                return -EIO;
        r->running = true;
        r->running_prev = NULL;
        r->running_next = c->running;
        if (c->running)
                c->running->running_prev = r;
        c->running = r;
        c->n_running++;
        c->n_requests++;
        if (c->n_running == 1) {
                (void) sd_event_source_set_time_relative(c->watchdog, WATCHDOG_INTERVAL_USEC);
                (void) sd_event_source_set_enabled(c->watchdog, SD_EVENT_ON);
        }
        return 0;
}

int http_request_resume(HttpRequest *r) {
        CURLcode code;

        assert(r);
        if (!r->running || !r->paused || r->zombie)
                return 0;
        r->paused = false;
        /* Unpausing may deliver the held data right here, through on_data. */
        r->client->in_curl++;
        code = curl_easy_pause(r->easy, CURLPAUSE_CONT);
        r->client->in_curl--;
        if (code != CURLE_OK)
                return curlcode_to_errno(code);
        return 0;
}

bool http_request_is_paused(HttpRequest *r) {
        return r->paused;
}

unsigned http_request_status(HttpRequest *r) {
        return r->status;
}

const char *http_request_response_header(HttpRequest *r, const char *name) {
        for (size_t i = 0; i < r->n_resp_headers; i++)
                if (strcasecmp(r->resp_headers[i].name, name) == 0)
                        return r->resp_headers[i].value;
        return NULL;
}

int http_request_foreach_response_header(HttpRequest *r, HttpResponseHeaderCallback cb, void *userdata) {
        for (size_t i = 0; i < r->n_resp_headers; i++) {
                int k = cb(r->resp_headers[i].name, r->resp_headers[i].value, userdata);
                if (k < 0)
                        return k;
        }
        return 0;
}

const char *http_request_url(HttpRequest *r) {
        return r->url;
}

void *http_request_userdata(HttpRequest *r) {
        return r->userdata;
}

/* ---- the client ---------------------------------------------------------------- */

int http_client_new(sd_event *event, const HttpClientOptions *opts, HttpClient **ret) {
        _cleanup_(http_client_freep) HttpClient *c = NULL;
        static bool initialized = false;
        int r;

        assert(event && ret);
        if (!initialized) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                initialized = true;
        }

        c = new0(HttpClient, 1);
        if (!c)
                return -ENOMEM;
        *c = (HttpClient) {
                .event = sd_event_ref(event),
                .epoll_fd = -EBADF,
                .opts = opts ? *opts : (HttpClientOptions) {},
        };
        if (c->opts.connect_timeout_usec == 0)
                c->opts.connect_timeout_usec = DEFAULT_CONNECT_TIMEOUT_USEC;
        if (c->opts.idle_timeout_usec == 0)
                c->opts.idle_timeout_usec = DEFAULT_IDLE_TIMEOUT_USEC;
        if (c->opts.max_connections == 0)
                c->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
        if (c->opts.max_idle_connections == 0)
                c->opts.max_idle_connections = DEFAULT_MAX_IDLE_CONNECTIONS;
        if (c->opts.max_response_headers == 0)
                c->opts.max_response_headers = DEFAULT_MAX_RESPONSE_HEADERS;
        if (c->opts.receive_buffer_size == 0)
                c->opts.receive_buffer_size = DEFAULT_RECEIVE_BUFFER;
        c->opts.receive_buffer_size = CLAMP(c->opts.receive_buffer_size, (size_t) 1024, (size_t) CURL_MAX_READ_SIZE);
        if (c->opts.ca_file) {
                /* Keep our own copy; the caller's string may go away. */
                c->opts.ca_file = strdup(c->opts.ca_file);
                if (!c->opts.ca_file)
                        return -ENOMEM;
        }

        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        c->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (c->epoll_fd < 0)
                return -errno;
        r = sd_event_add_io(event, &c->io, c->epoll_fd, EPOLLIN, on_curl_epoll, c);
        if (r < 0)
                return r;
        /* Timeout 0 (start a transfer, run now) goes through the kick. Accuracy 1 µs: never 0,
         * which sd-event takes as its default, 250 ms, and which held every transfer up to
         * 250 ms before it started. Not coarser either: with 50 ms of slack libcurl's low-speed
         * check (IdleTimeout) fired after 7 s instead of 1 s (test-http-client, idle_timeout). */
        r = sd_event_add_time_relative(event, &c->timer, CLOCK_MONOTONIC, 0, 1, on_curl_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        r = sd_event_add_defer(event, &c->kick, on_curl_kick, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->kick, SD_EVENT_OFF);
        r = sd_event_add_time_relative(event, &c->watchdog, CLOCK_MONOTONIC, WATCHDOG_INTERVAL_USEC,
                                       50 * USEC_PER_MSEC, on_client_watchdog, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->watchdog, SD_EVENT_OFF);

        if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) c->opts.max_connections) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long) c->opts.max_idle_connections) != CURLM_OK)
                return -EIO;

        *ret = TAKE_PTR(c);
        return 0;
}

HttpClient *http_client_free(HttpClient *c) {
        if (!c)
                return NULL;
        /* Drop parked requests first, then everything still in the multi handle. */
        c->in_curl = 0;
        c->freeing = true;
        on_reaper(NULL, c);
        while (c->running)
                http_request_free(c->running);
        while (c->n_spare > 0)
                curl_easy_cleanup(c->spare[--c->n_spare]);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        c->io = sd_event_source_disable_unref(c->io);
        c->epoll_fd = safe_close(c->epoll_fd);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->kick = sd_event_source_disable_unref(c->kick);
        c->watchdog = sd_event_source_disable_unref(c->watchdog);
        c->reaper = sd_event_source_disable_unref(c->reaper);
        free((char *) c->opts.ca_file);
        sd_event_unref(c->event);
        return mfree(c);
}

uint64_t http_client_n_requests(HttpClient *c) {
        return c->n_requests;
}

uint64_t http_client_n_connects(HttpClient *c) {
        return c->n_connects;
}

unsigned http_client_n_running(HttpClient *c) {
        return c->n_running;
}
