/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "http-forward.h"
#include "parse-util.h"

#define CONNECTION_TOKENS_MAX 16U

void http_request_id_new(char ret[static HTTP_REQUEST_ID_SIZE]) {
        uint8_t b[16];

        if (getrandom(b, sizeof b, GRND_NONBLOCK) != sizeof b) {
                uint64_t t = now_usec(CLOCK_MONOTONIC) ^ ((uint64_t) getpid() << 32);

                memcpy(b, &t, sizeof t);
                t ^= now_usec(CLOCK_REALTIME);
                memcpy(b + 8, &t, sizeof t);
        }
        /* Not sprintf("%02x") 16 times: that was 2% of a proxied request's CPU. */
        for (size_t i = 0; i < sizeof b; i++) {
                ret[2 * i] = "0123456789abcdef"[b[i] >> 4];
                ret[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
        }
        ret[32] = 0;
}

int http_respond_errorv(HttpExchange *x, const char *request_id, unsigned status, const char *type,
                        const char *code, const char *param, const char *fmt, va_list ap) {
        if (request_id)
                (void) http_exchange_add_header(x, "x-request-id", request_id);
        return http_exchange_respond_errorv(x, status, type, code, param, fmt, ap);
}

int http_respond_error(HttpExchange *x, const char *request_id, unsigned status, const char *type,
                       const char *code, const char *param, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = http_respond_errorv(x, request_id, status, type, code, param, fmt, ap);
        va_end(ap);
        return r;
}

int http_respond_json(HttpExchange *x, const char *request_id, unsigned status, json_object *o) {
        _cleanup_free_ char *s = NULL;
        size_t len;
        int r;

        r = jobj_to_string(o, &s, &len);
        if (r < 0)
                return r;
        if (request_id)
                (void) http_exchange_add_header(x, "x-request-id", request_id);
        (void) http_exchange_add_header(x, "Cache-Control", "no-store");
        return http_exchange_respond(x, status, "application/json", s, len);
}

char *http_path_normalize(const char *target) {
        const char *q = strchr(target, '?');
        size_t plen = q ? (size_t) (q - target) : strlen(target);
        char *out = malloc(strlen(target) + 2), *o = out;

        if (!out)
                return NULL;
        for (size_t i = 0; i < plen; i++) {
                if (target[i] == '/' && o > out && o[-1] == '/')
                        continue;
                *o++ = target[i];
        }
        if (o == out)
                *o++ = '/';
        while (o - out > 1 && o[-1] == '/')
                o--;
        if (q) {
                strcpy(o, q);
                o += strlen(q);
        }
        *o = 0;
        return out;
}

bool http_path_is(const char *path, const char *want) {
        size_t l = strlen(want);

        return strncmp(path, want, l) == 0 && (path[l] == 0 || path[l] == '?');
}

bool http_path_has_dot_segment(const char *path) {
        size_t end = strcspn(path, "?");

        for (size_t i = 0; i < end; i++) {
                size_t l;

                if (path[i] != '/')
                        continue;
                l = strcspn(path + i + 1, "/?");
                if ((l == 1 && path[i + 1] == '.') || (l == 2 && path[i + 1] == '.' && path[i + 2] == '.'))
                        return true;
        }
        return false;
}

/* The first n entries of list, or up to its NULL. */
static bool header_in_list(const char *name, const char *const *list, size_t n) {
        for (size_t i = 0; i < n && list[i]; i++)
                if (strcasecmp(name, list[i]) == 0)
                        return true;
        return false;
}

static const char *const hop_by_hop[] = {
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
        "TE", "Trailer", "Transfer-Encoding", "Upgrade",
};

static const char *const request_drop[] = {
        "Host", "Content-Length", "Authorization", "Cookie", "Expect", "Accept-Encoding",
        "Forwarded", "X-Real-IP",
};

static const char *const response_drop[] = {
        "Content-Length", "Date", "Server", "Set-Cookie", "x-request-id",
};

typedef struct HeaderCopy {
        char tokens[CONNECTION_TOKENS_MAX][64];  /* names listed in Connection: are hop-by-hop too */
        size_t n_tokens;
        const char *const *drop;        /* the caller's own, NULL-terminated, or NULL */
        void *target;
} HeaderCopy;

static void connection_tokens(HeaderCopy *hc, const char *connection) {
        const char *p = connection;

        while (p && *p && hc->n_tokens < CONNECTION_TOKENS_MAX) {
                size_t l;

                p += strspn(p, " \t,");
                l = strcspn(p, " \t,");
                if (l > 0 && l < sizeof hc->tokens[0]) {
                        memcpy(hc->tokens[hc->n_tokens], p, l);
                        hc->tokens[hc->n_tokens++][l] = 0;
                }
                p += l;
        }
}

static bool header_is_connection_token(const HeaderCopy *hc, const char *name) {
        for (size_t i = 0; i < hc->n_tokens; i++)
                if (strcasecmp(name, hc->tokens[i]) == 0)
                        return true;
        return false;
}

static int copy_request_header(const char *name, const char *value, void *userdata) {
        HeaderCopy *hc = userdata;

        if (header_in_list(name, hop_by_hop, ELEMENTSOF(hop_by_hop)) ||
            header_in_list(name, request_drop, ELEMENTSOF(request_drop)) ||
            header_is_connection_token(hc, name) ||
            (hc->drop && header_in_list(name, hc->drop, SIZE_MAX)) ||
            startswith_no_case(name, "X-Forwarded-") ||
            startswith_no_case(name, "X-Club-"))
                return 0;
        if (http_request_add_header(hc->target, name, value) == -ENOMEM)
                return -ENOMEM;
        return 0;
}

static int copy_response_header(const char *name, const char *value, void *userdata) {
        HeaderCopy *hc = userdata;

        if (header_in_list(name, hop_by_hop, ELEMENTSOF(hop_by_hop)) ||
            header_in_list(name, response_drop, ELEMENTSOF(response_drop)) ||
            header_is_connection_token(hc, name))
                return 0;
        if (http_exchange_add_header(hc->target, name, value) == -ENOMEM)
                return -ENOMEM;
        return 0;
}

int http_forward_request_headers(HttpExchange *x, HttpRequest *req, const char *const *drop) {
        HeaderCopy hc = { .target = req, .drop = drop };

        connection_tokens(&hc, http_exchange_header(x, "Connection"));
        return http_exchange_foreach_header(x, copy_request_header, &hc);
}

int http_forward_response_headers(HttpRequest *req, HttpExchange *x, const char *request_id) {
        HeaderCopy hc = { .target = x };
        int r;

        connection_tokens(&hc, http_request_response_header(req, "Connection"));
        r = http_request_foreach_response_header(req, copy_response_header, &hc);
        if (r < 0)
                return r;
        if (request_id)
                (void) http_exchange_add_header(x, "x-request-id", request_id);
        (void) http_exchange_add_header(x, "X-Accel-Buffering", "no");
        return 0;
}

int http_forward_stream_start(HttpRequest *req, HttpExchange *x, const char *request_id, unsigned status) {
        uint64_t size = http_response_content_length(req);
        int r;

        r = http_forward_response_headers(req, x, request_id);
        if (r < 0)
                return r;
        return size != UINT64_MAX
                ? http_exchange_stream_start_sized(x, status, NULL, size)
                : http_exchange_stream_start(x, status, NULL);
}

uint64_t http_response_content_length(HttpRequest *req) {
        const char *cl = http_request_response_header(req, "Content-Length");
        uint64_t size;

        if (!cl || parse_uint64(cl, &size) < 0)
                return UINT64_MAX;
        return size;
}

int http_small_body_begin(HttpSmallBody *b, unsigned status, size_t size) {
        char *p = malloc(size + 1);

        if (!p)
                return -ENOMEM;
        free(b->data);
        *b = (HttpSmallBody) { .active = true, .status = status, .data = p, .size = size };
        return 0;
}

int http_small_body_append(HttpSmallBody *b, const void *data, size_t len) {
        if (len > b->size - b->len)
                return -EPROTO;
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

bool http_small_body_complete(const HttpSmallBody *b) {
        return b->active && b->len == b->size;
}

void http_small_body_done(HttpSmallBody *b) {
        free(b->data);
        *b = (HttpSmallBody) {};
}
