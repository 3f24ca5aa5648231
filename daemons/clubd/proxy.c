/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "clubd-config.h"
#include "cleanup.h"
#include "http-client.h"
#include "http-forward.h"
#include "http-server.h"
#include "json-util.h"
#include "log.h"
#include "proxy.h"
#include "upstream.h"

#define HEALTH_FRESH_USEC (5 * USEC_PER_SEC)
#define PROBE_TIMEOUT_USEC (5 * USEC_PER_SEC)
/* Responses of a known size up to this are collected and sent in one piece. */
#define SMALL_BODY_MAX (16U * 1024U)
/* Nonces the mesh listener remembers, each until its signature's window has passed: this
 * bounds the signed requests an agent takes to about 1,000 a second sustained (beyond, 503
 * signature_check_unavailable), for 3 MiB. 16,384 capped it near 270 a second, which a
 * gateway sending small embeddings requests can reach (bench/README.md, "Two hops"). */
#define MESH_REPLAY_ENTRIES 131072U
#define CAPABILITY_PREFIX "/api/v1/capabilities/"

typedef enum ProxyRequestKind {
        PR_HEALTHZ,
        PR_MODELS,
        PR_MODEL_GET,
        PR_FORWARD,
        PR_CAPABILITY,
} ProxyRequestKind;

typedef struct ProxyCapability {
        char *name;
        char *url;
        uint64_t max_body_size;
} ProxyCapability;

typedef struct ProxyRequest ProxyRequest;

struct Proxy {
        sd_event *event;
        HttpServer *server;
        HttpClient *client;

        uint64_t connect_timeout_usec;
        uint64_t first_byte_timeout_usec;
        uint64_t idle_timeout_usec;
        uint64_t model_refresh_usec;

        Upstream **upstreams;
        size_t n_upstreams;
        sd_event_source *refresh_timer;
        unsigned n_refreshing;
        uint64_t refreshed_usec;       /* CLOCK_MONOTONIC when the last round ended */
        ProxyRequest *waiting;         /* requests waiting for the running round */

        unsigned in_flight;
        uint64_t n_requests;
        RateLimit log_limit;

        /* The mesh listener: only the gateway, only signed requests. */
        HttpServer *mesh_server;
        HttpServerOptions server_options;
        ProxyMeshAuth mesh_auth;        /* holds the request secret */
        ReplayCache *replay;
        bool draining;
        ProxyCapability *capabilities;
        size_t n_capabilities;
        ProxyRefreshedFn on_refreshed;
        void *on_refreshed_userdata;
};

struct ProxyRequest {
        Proxy *proxy;
        ProxyRequestKind kind;
        HttpExchange *x;               /* NULL once the client side ended */
        char id[HTTP_REQUEST_ID_SIZE];
        char *path;                    /* normalised request path with query */
        char *model;
        bool refreshed;                /* already waited for one refresh round */

        Upstream *upstream;            /* NULL for a capability */
        char *target_name;             /* the upstream's or capability's name, for messages */
        char *capability_url;
        HttpRequest *req;
        bool started;                  /* response headers went to the client */
        bool counted;                  /* counts towards in_flight */

        HttpSmallBody small;           /* a small response of known size, collected whole */

        ProxyRequest *wait_next, *wait_prev;
};

static void proxy_refresh_all(Proxy *p);
static void proxy_request_continue(ProxyRequest *pr);

/* ---- small helpers --------------------------------------------------------------- */

static int respond_error(HttpExchange *x, const char *id, unsigned status, const char *type, const char *code,
                         const char *param, const char *fmt, ...) _printf_(7, 8);

static int respond_error(HttpExchange *x, const char *id, unsigned status, const char *type, const char *code,
                         const char *param, const char *fmt, ...) {
        va_list ap;
        int r;

        if (!x)
                return 0;
        if (status == 503 || status == 429)
                (void) http_exchange_add_header(x, "Retry-After", "5");
        va_start(ap, fmt);
        r = http_respond_errorv(x, id, status, type, code, param, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- request lifetime -------------------------------------------------------------- */

static void proxy_request_unwait(ProxyRequest *pr) {
        Proxy *p = pr->proxy;

        if (!pr->wait_prev && p->waiting != pr)
                return;
        if (pr->wait_prev)
                pr->wait_prev->wait_next = pr->wait_next;
        else
                p->waiting = pr->wait_next;
        if (pr->wait_next)
                pr->wait_next->wait_prev = pr->wait_prev;
        pr->wait_next = pr->wait_prev = NULL;
}

static void proxy_request_end_upstream(ProxyRequest *pr) {
        pr->req = http_request_free(pr->req);
        if (pr->counted) {
                pr->counted = false;
                pr->proxy->in_flight--;
                if (pr->upstream)
                        pr->upstream->in_flight--;
        }
}

static ProxyRequest *proxy_request_free(ProxyRequest *pr) {
        if (!pr)
                return NULL;
        proxy_request_unwait(pr);
        proxy_request_end_upstream(pr);
        upstream_unref(pr->upstream);
        if (pr->x)
                http_exchange_set_userdata(pr->x, NULL, NULL, NULL);
        free(pr->target_name);
        free(pr->capability_url);
        free(pr->path);
        free(pr->model);
        http_small_body_done(&pr->small);
        return mfree(pr);
}

static void on_exchange_close(HttpExchange *x, bool ok, void *userdata) {
        ProxyRequest *pr = userdata;

        pr->x = NULL;
        if (pr->req)
                log_debug("Request %s: the client went away, cancelling the upstream request.", pr->id);
        proxy_request_free(pr);
}

static void on_exchange_drain(HttpExchange *x, void *userdata) {
        ProxyRequest *pr = userdata;
        int r;

        if (!pr->req)
                return;
        r = http_request_resume(pr->req);
        if (r < 0)
                log_debug_errno(r, "Request %s: failed to resume the upstream transfer: %m", pr->id);
}

/* ---- upstream refresh rounds -------------------------------------------------------- */

static void proxy_round_done(Proxy *p) {
        p->refreshed_usec = now_usec(CLOCK_MONOTONIC);
        if (p->on_refreshed)
                p->on_refreshed(p, p->on_refreshed_userdata);
        /* The round is over: everything that waited for it goes on. */
        while (p->waiting) {
                ProxyRequest *pr = p->waiting;

                proxy_request_unwait(pr);
                proxy_request_continue(pr);
        }
}

static void on_upstream_refreshed(Upstream *u, void *userdata) {
        Proxy *p = userdata;

        if (!u->reachable || u->error)
                log_ratelimit_warning(&p->log_limit, "Upstream %s (%s): %s", u->name, u->url,
                                      u->error ?: "not reachable");
        else
                log_debug("Upstream %s serves %zu model(s).", u->name, u->n_models);

        if (p->n_refreshing > 0 && --p->n_refreshing > 0)
                return;
        proxy_round_done(p);
}

static void proxy_refresh_all(Proxy *p) {
        if (p->n_refreshing > 0)
                return;
        for (size_t i = 0; i < p->n_upstreams; i++) {
                Upstream *u = p->upstreams[i];
                int r;

                if (upstream_refreshing(u))
                        continue;
                r = upstream_refresh(u);
                if (r > 0)
                        p->n_refreshing++;
                else
                        log_warning_errno(r, "Failed to query upstream %s: %m", u->name);
        }
        if (p->n_refreshing == 0)
                proxy_round_done(p);
}

static void proxy_wait_refresh(Proxy *p, ProxyRequest *pr) {
        pr->refreshed = true;
        pr->wait_prev = NULL;
        pr->wait_next = p->waiting;
        if (p->waiting)
                p->waiting->wait_prev = pr;
        p->waiting = pr;
        proxy_refresh_all(p);
}

static int on_refresh_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Proxy *p = userdata;
        int r;

        proxy_refresh_all(p);
        r = sd_event_source_set_time_relative(s, p->model_refresh_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to re-arm the model refresh timer: %m");
        return 0;
}

/* ---- /healthz and /v1/models ------------------------------------------------------------- */

static json_object *strv_to_json(char **l, size_t n) {
        json_object *a = json_object_new_array();

        for (size_t i = 0; a && i < n; i++)
                if (json_object_array_add(a, json_object_new_string(l[i])) < 0) {
                        json_object_put(a);
                        return NULL;
                }
        return a;
}

static int respond_healthz(ProxyRequest *pr) {
        Proxy *p = pr->proxy;
        _cleanup_(json_object_putp) json_object *root = json_object_new_object(), *arr = json_object_new_array();
        size_t n_ok = 0;
        int r;

        if (!root || !arr)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_upstreams; i++) {
                Upstream *u = p->upstreams[i];
                json_object *o = json_object_new_object();

                if (!o)
                        return -ENOMEM;
                if (json_object_array_add(arr, o) < 0) {
                        json_object_put(o);
                        return -ENOMEM;
                }
                n_ok += u->reachable;
                if (jobj_add_string(o, "name", u->name) < 0 ||
                    jobj_add_string(o, "url", u->url) < 0 ||
                    jobj_add_string(o, "kind", upstream_kind_to_string(u->kind)) < 0 ||
                    jobj_add_bool(o, "reachable", u->reachable) < 0 ||
                    jobj_add_string(o, "error", u->error) < 0 ||
                    jobj_add_int64(o, "checked_at", (int64_t) (u->checked_usec / USEC_PER_SEC)) < 0 ||
                    jobj_add_int64(o, "in_flight", u->in_flight) < 0 ||
                    jobj_add(o, "models", strv_to_json(u->models, u->n_models)) < 0)
                        return -ENOMEM;
        }
        _cleanup_(json_object_putp) json_object *caps = json_object_new_array();
        if (!caps)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_capabilities; i++)
                if (json_object_array_add(caps, json_object_new_string(p->capabilities[i].name)) < 0)
                        return -ENOMEM;
        /* An agent that serves only capabilities has no upstream to be down: it is up. */
        bool up = n_ok > 0 || (p->n_upstreams == 0 && p->n_capabilities > 0);

        if (jobj_add_string(root, "status", !up ? "down" : n_ok == p->n_upstreams ? "ok" : "degraded") < 0 ||
            jobj_add_string(root, "version", PACKAGE_VERSION) < 0 ||
            jobj_add_int64(root, "in_flight", p->in_flight) < 0 ||
            jobj_add_bool(root, "draining", p->draining) < 0 ||
            jobj_add(root, "capabilities", TAKE_PTR(caps)) < 0 ||
            jobj_add(root, "upstreams", TAKE_PTR(arr)) < 0)
                return -ENOMEM;
        r = http_respond_json(pr->x, pr->id, up ? 200 : 503, root);
        return r;
}

/* The union of the upstreams' lists; the first upstream to list a model describes it. */
static json_object *models_merged(Proxy *p) {
        _cleanup_(json_object_putp) json_object *data = json_object_new_array(), *seen = json_object_new_object();

        if (!data || !seen)
                return NULL;
        for (size_t i = 0; i < p->n_upstreams; i++) {
                Upstream *u = p->upstreams[i];

                for (size_t j = 0; j < u->n_models; j++) {
                        json_object *o = NULL;

                        if (json_object_object_get_ex(seen, u->models[j], NULL))
                                continue;
                        if (json_object_object_add(seen, u->models[j], NULL) < 0)
                                return NULL;
                        if (u->model_objects && j < json_object_array_length(u->model_objects))
                                o = json_object_get(json_object_array_get_idx(u->model_objects, j));
                        if (!o) {
                                o = json_object_new_object();
                                if (!o || jobj_add_string(o, "id", u->models[j]) < 0 ||
                                    jobj_add_string(o, "object", "model") < 0 ||
                                    jobj_add_int64(o, "created", 0) < 0 ||
                                    jobj_add_string(o, "owned_by", u->name) < 0) {
                                        json_object_put(o);
                                        return NULL;
                                }
                        }
                        if (json_object_array_add(data, o) < 0) {
                                json_object_put(o);
                                return NULL;
                        }
                }
        }
        return TAKE_PTR(data);
}

static int respond_models(ProxyRequest *pr) {
        _cleanup_(json_object_putp) json_object *root = json_object_new_object();
        json_object *data;
        bool any = false;

        for (size_t i = 0; i < pr->proxy->n_upstreams; i++)
                any = any || pr->proxy->upstreams[i]->reachable;
        if (!any)
                return respond_error(pr->x, pr->id, 502, "server_error", "upstream_unreachable", NULL,
                                     "No local inference server is reachable.");
        data = models_merged(pr->proxy);
        if (!root || !data || jobj_add_string(root, "object", "list") < 0 || jobj_add(root, "data", data) < 0)
                return -ENOMEM;
        return http_respond_json(pr->x, pr->id, 200, root);
}

static int respond_model_get(ProxyRequest *pr) {
        _cleanup_(json_object_putp) json_object *data = models_merged(pr->proxy);

        if (!data)
                return -ENOMEM;
        for (size_t i = 0; i < json_object_array_length(data); i++) {
                json_object *o = json_object_array_get_idx(data, i);
                const char *id;

                if (jobj_get_string(o, "id", &id) >= 0 && streq(id, pr->model))
                        return http_respond_json(pr->x, pr->id, 200, o);
        }
        return respond_error(pr->x, pr->id, 404, "invalid_request_error", "model_not_found", "model",
                             "The model '%s' does not exist or is not served here.", pr->model);
}

/* ---- forwarding -------------------------------------------------------------------- */

static int on_upstream_response(HttpRequest *req, unsigned status, void *userdata) {
        ProxyRequest *pr = userdata;
        uint64_t size;
        int r;

        if (!pr->x)
                return -ECANCELED;

        size = http_response_content_length(req);

        /* A small body of known size (a non-streamed completion, an embedding, a model list)
         * is collected and sent with its headers in one write: one syscall and one loop
         * iteration less, and an upstream that fails half-way gives a clean 502. */
        if (size <= SMALL_BODY_MAX) {
                r = http_small_body_begin(&pr->small, status, (size_t) size);
                if (r < 0)
                        return r;
                log_debug("Request %s: upstream %s answered %u.", pr->id, pr->target_name, status);
                return 0;
        }

        r = http_forward_stream_start(req, pr->x, pr->id, status);
        if (r < 0)
                return r;
        pr->started = true;
        log_debug("Request %s: upstream %s answered %u.", pr->id, pr->target_name, status);
        return 0;
}

static ssize_t on_upstream_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        ProxyRequest *pr = userdata;

        if (!pr->x)
                return -ECANCELED;
        if (pr->small.active) {
                int r = http_small_body_append(&pr->small, data, len);

                return r < 0 ? r : (ssize_t) len;  /* -EPROTO: more than it announced */
        }
        /* Whatever the client's buffer cannot take now pauses the upstream. */
        return http_exchange_stream_write(pr->x, data, len);
}

static void on_upstream_done(HttpRequest *req, int error, void *userdata) {
        ProxyRequest *pr = userdata;
        Proxy *p = pr->proxy;
        const char *name = pr->target_name;

        if (error == 0 && http_small_body_complete(&pr->small) && pr->x) {
                int r = http_forward_response_headers(req, pr->x, pr->id);
                if (r >= 0)
                        r = http_exchange_respond(pr->x, pr->small.status, NULL, pr->small.data, pr->small.len);
                if (r < 0)
                        (void) respond_error(pr->x, pr->id, 500, "server_error", "internal_error", NULL,
                                             "The agent failed to pass on the answer.");
        } else if (pr->small.active && error == 0)
                error = -ECONNRESET; /* shorter than announced: libcurl would have said so */

        if (pr->small.active && error == 0) {
                /* answered above */
        } else if (pr->started) {
                if (error == 0)
                        (void) http_exchange_stream_end(pr->x);
                else {
                        /* No terminating chunk: the client must see a truncated response. */
                        log_ratelimit_warning(&p->log_limit, "Request %s: upstream %s failed mid-response: %s",
                                              pr->id, name, strerror(-error));
                        (void) http_exchange_stream_abort(pr->x);
                }
        } else if (error == -ECONNREFUSED) {
                log_ratelimit_warning(&p->log_limit, "Request %s: cannot connect to upstream %s (%s).",
                                      pr->id, name, pr->upstream ? pr->upstream->url : pr->capability_url);
                (void) respond_error(pr->x, pr->id, 502, "server_error", "upstream_unreachable", NULL,
                                     "The local inference server '%s' is not reachable.", name);
        } else if (error == -ETIMEDOUT) {
                log_ratelimit_warning(&p->log_limit, "Request %s: upstream %s did not answer in time.", pr->id, name);
                (void) respond_error(pr->x, pr->id, 504, "server_error", "upstream_timeout", NULL,
                                     "The local inference server '%s' did not answer in time.", name);
        } else {
                log_ratelimit_warning(&p->log_limit, "Request %s: upstream %s failed: %s", pr->id, name, strerror(-error));
                (void) respond_error(pr->x, pr->id, 502, "server_error", "upstream_error", NULL,
                                     "The local inference server '%s' failed to answer.", name);
        }
        proxy_request_end_upstream(pr);
}

/* Forward to an upstream (@u) or to a capability's URL (@u NULL, pr->capability_url). */
static int proxy_forward(ProxyRequest *pr, Upstream *u) {
        static const HttpRequestCallbacks cb = {
                .on_response = on_upstream_response,
                .on_data = on_upstream_data,
                .on_done = on_upstream_done,
        };
        Proxy *p = pr->proxy;
        _cleanup_(http_request_freep) HttpRequest *req = NULL;
        _cleanup_free_ char *url = NULL;
        const void *body;
        size_t len;
        int r;

        upstream_unref(pr->upstream);
        pr->upstream = upstream_ref(u);
        r = u ? free_and_strdup(&pr->target_name, u->name) : 0;
        if (r < 0)
                return r;

        if (u)
                r = upstream_url_join(u->url, pr->path, &url);
        else
                url = strdup(pr->capability_url);
        if (r < 0 || !url)
                return r < 0 ? r : -ENOMEM;
        r = http_request_new(p->client, http_exchange_method(pr->x), url, &req);
        if (r < 0)
                return r;
        r = http_forward_request_headers(pr->x, req, NULL);
        if (r < 0)
                return r;
        r = u ? upstream_add_auth(u, req) : 0;
        if (r < 0)
                return r;
        if (!u && !http_exchange_header(pr->x, "Content-Type"))
                r = http_request_add_header(req, "Content-Type", "application/json");
        if (r < 0)
                return r;
        r = http_request_add_header(req, "x-request-id", pr->id);
        if (r < 0)
                return r;
        body = http_exchange_body(pr->x, &len);
        if (body || streq(http_exchange_method(pr->x), "POST")) {
                r = http_request_set_body(req, body, len);
                if (r < 0)
                        return r;
        }
        /* FirstByteTimeout bounds the wait for the response headers (504); IdleTimeout the
         * silence inside a response (a stream is then cut, visibly). */
        http_request_set_timeouts(req, p->connect_timeout_usec, p->idle_timeout_usec);
        http_request_set_response_timeout(req, p->first_byte_timeout_usec);

        r = http_request_start(req, &cb, pr);
        if (r < 0)
                return r;
        pr->req = TAKE_PTR(req);
        pr->counted = true;
        p->in_flight++;
        if (u)
                u->in_flight++;
        log_debug("Request %s: %s %s → %s %s%s%s.", pr->id, http_exchange_method(pr->x), pr->path,
                  u ? "upstream" : "capability", pr->target_name, u && pr->model ? " for model " : "",
                  u ? strempty(pr->model) : "");
        return 0;
}

/* Least loaded of the upstreams that list the model; NULL if none does. */
static Upstream *proxy_pick_upstream(Proxy *p, const char *model) {
        Upstream *best = NULL;

        for (size_t i = 0; i < p->n_upstreams; i++) {
                Upstream *u = p->upstreams[i];

                if (!upstream_serves(u, model))
                        continue;
                if (!best || (u->reachable && !best->reachable) ||
                    (u->reachable == best->reachable && u->in_flight < best->in_flight))
                        best = u;
        }
        return best;
}

static void proxy_request_continue(ProxyRequest *pr) {
        Proxy *p = pr->proxy;
        Upstream *u = NULL;
        int r = 0;

        if (!pr->x)
                return;

        switch (pr->kind) {
        case PR_HEALTHZ:
                r = respond_healthz(pr);
                break;
        case PR_MODELS:
                r = respond_models(pr);
                break;
        case PR_MODEL_GET:
                r = respond_model_get(pr);
                break;
        case PR_CAPABILITY:
                r = proxy_forward(pr, NULL);
                if (r < 0) {
                        log_ratelimit_warning(&p->log_limit, "Request %s: failed to start the capability request: %s",
                                              pr->id, strerror(-r));
                        r = respond_error(pr->x, pr->id, 502, "server_error", "upstream_error", NULL,
                                          "Failed to forward the request to the capability '%s'.", pr->target_name);
                }
                break;
        case PR_FORWARD:
                if (p->n_upstreams == 1)
                        u = p->upstreams[0];
                else if (pr->model)
                        u = proxy_pick_upstream(p, pr->model);
                else
                        u = p->upstreams[0];

                if (!u && !pr->refreshed) {
                        /* Perhaps a model was just loaded: ask the upstreams again, once. */
                        proxy_wait_refresh(p, pr);
                        return;
                }
                if (!u) {
                        r = respond_error(pr->x, pr->id, 404, "invalid_request_error", "model_not_found", "model",
                                          "The model '%s' does not exist or is not served here.", pr->model);
                        break;
                }
                r = proxy_forward(pr, u);
                if (r < 0) {
                        log_ratelimit_warning(&p->log_limit, "Request %s: failed to start the upstream request: %s",
                                              pr->id, strerror(-r));
                        r = respond_error(pr->x, pr->id, 502, "server_error", "upstream_error", NULL,
                                          "Failed to forward the request to '%s'.", u->name);
                }
                break;
        }
        if (r < 0 && pr->x && !http_exchange_is_answered(pr->x))
                (void) respond_error(pr->x, pr->id, 500, "server_error", "internal_error", NULL,
                                     "The agent failed to handle the request.");
}

/* ---- the handler -------------------------------------------------------------------- */

/* Bodies are JSON, whatever the label says (curl -d says form-urlencoded), except
 * multipart uploads (audio transcription), which pass through unparsed. */
static bool content_type_is_json(const char *ct) {
        return !ct || !startswith_no_case(ct, "multipart/");
}

static int parse_body_model(HttpExchange *x, const char *id, char **ret_model) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        const char *body, *reason = NULL, *model;
        size_t len;
        int r;

        body = http_exchange_body(x, &len);
        if (!body || len == 0)
                return respond_error(x, id, 400, "invalid_request_error", NULL, NULL,
                                     "The request has no body; expected a JSON object.") ?: -EINVAL;
        r = jobj_parse(body, len, JSON_DEPTH_MAX, &root, &reason);
        if (r == -E2BIG)
                return respond_error(x, id, 400, "invalid_request_error", NULL, NULL,
                                     "The request body nests JSON too deeply.") ?: -EINVAL;
        if (r < 0)
                return respond_error(x, id, 400, "invalid_request_error", NULL, NULL,
                                     "The request body is not valid JSON: %s.", reason ?: "syntax error") ?: -EINVAL;
        if (!json_object_is_type(root, json_type_object))
                return respond_error(x, id, 400, "invalid_request_error", NULL, NULL,
                                     "The request body must be a JSON object.") ?: -EINVAL;
        r = jobj_get_string(root, "model", &model);
        if (r == -ENOENT)
                return respond_error(x, id, 400, "invalid_request_error", NULL, "model",
                                     "You must provide a model parameter.") ?: -EINVAL;
        if (r < 0 || isempty(model) || strlen(model) > 256)
                return respond_error(x, id, 400, "invalid_request_error", NULL, "model",
                                     "The model parameter must be a non-empty string.") ?: -EINVAL;
        *ret_model = strdup(model);
        return *ret_model ? 0 : -ENOMEM;
}

static int proxy_handle(HttpExchange *x, void *userdata) {
        Proxy *p = userdata;
        _cleanup_free_ ProxyRequest *pr = NULL;
        _cleanup_free_ char *path = NULL, *model = NULL;
        const char *method = http_exchange_method(x), *rest;
        ProxyRequestKind kind;
        char id[HTTP_REQUEST_ID_SIZE];
        int r;

        p->n_requests++;
        http_request_id_new(id);

        path = http_path_normalize(http_exchange_target(x));
        if (!path)
                return -ENOMEM;

        if (http_path_is(path, "/healthz")) {
                if (!streq(method, "GET") && !streq(method, "HEAD")) {
                        (void) http_exchange_add_header(x, "Allow", "GET");
                        return respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                             "Use GET for /healthz.");
                }
                kind = PR_HEALTHZ;
        } else if (http_path_is(path, "/v1/models")) {
                if (!streq(method, "GET")) {
                        (void) http_exchange_add_header(x, "Allow", "GET");
                        return respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                             "Use GET for /v1/models.");
                }
                kind = PR_MODELS;
        } else if ((rest = startswith(path, "/v1/models/")) && streq(method, "GET")) {
                const char *q = strchr(rest, '?');

                model = q ? strndup(rest, (size_t) (q - rest)) : strdup(rest);
                if (!model)
                        return -ENOMEM;
                kind = PR_MODEL_GET;
        } else if (startswith(path, "/v1/")) {
                if (streq(method, "POST")) {
                        if (content_type_is_json(http_exchange_header(x, "Content-Type"))) {
                                r = parse_body_model(x, id, &model);
                                if (r != 0 || !model)
                                        return r < 0 && !http_exchange_is_answered(x) ? r : 0;
                        }
                } else if (!streq(method, "GET")) {
                        (void) http_exchange_add_header(x, "Allow", "GET, POST");
                        return respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                             "Method %s is not supported for %s.", method, http_exchange_path(x));
                }
                kind = PR_FORWARD;
        } else
                return respond_error(x, id, 404, "invalid_request_error", "unknown_url", NULL,
                                     "Unknown request URL: %s %s. Use the /v1 API.", method, http_exchange_path(x));

        if (p->n_upstreams == 0 && kind != PR_HEALTHZ)
                return respond_error(x, id, 503, "server_error", "no_upstream", NULL,
                                     "This agent has no local inference server configured.");

        pr = new0(ProxyRequest, 1);
        if (!pr)
                return -ENOMEM;
        *pr = (ProxyRequest) {
                .proxy = p,
                .kind = kind,
                .x = x,
                .path = TAKE_PTR(path),
                .model = TAKE_PTR(model),
        };
        memcpy(pr->id, id, sizeof id);
        http_exchange_set_userdata(x, pr, on_exchange_close, on_exchange_drain);

        /* Listings and health answer from fresh data; forwarding uses what we know. */
        if ((kind == PR_MODELS || kind == PR_MODEL_GET ||
             (kind == PR_HEALTHZ && now_usec(CLOCK_MONOTONIC) - p->refreshed_usec > HEALTH_FRESH_USEC)) &&
            p->n_upstreams > 0) {
                proxy_wait_refresh(p, TAKE_PTR(pr));
                return 0;
        }
        proxy_request_continue(TAKE_PTR(pr));
        return 0;
}

/* ---- the mesh listener ---------------------------------------------------------------- */

static bool peer_is(const struct sockaddr *sa, const struct in_addr *a) {
        if (!sa)
                return false;
        if (sa->sa_family == AF_INET)
                return ((const struct sockaddr_in *) sa)->sin_addr.s_addr == a->s_addr;
        if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a6 = &((const struct sockaddr_in6 *) sa)->sin6_addr;

                return IN6_IS_ADDR_V4MAPPED(a6) && memcmp(&a6->s6_addr[12], &a->s_addr, 4) == 0;
        }
        return false;
}

int proxy_mesh_check(const ProxyMeshAuth *auth, ReplayCache *cache, const struct sockaddr *peer,
                     const char *method, const char *target, const char *signature, uint64_t now_sec,
                     ProxyMeshVerdict *ret) {
        int r;

        assert(auth && cache && method && target && ret);
        if (!peer_is(peer, &auth->gateway)) {
                *ret = (ProxyMeshVerdict) { 403, "permission_error", "forbidden_source",
                        "Only the gateway may use this agent's mesh listener." };
                return -EPERM;
        }
        /* The gateway's reachability probe: answered to the gateway's address without a
         * signature (WireGuard already proves where it comes from). */
        if (http_path_is(target, "/healthz") && (streq(method, "GET") || streq(method, "HEAD"))) {
                *ret = (ProxyMeshVerdict) {};
                return 0;
        }
        if (!signature) {
                *ret = (ProxyMeshVerdict) { 401, "authentication_error", "missing_signature",
                        "The request has no " REQUEST_SIGN_HEADER " header." };
                return -EBADMSG;
        }
        r = request_verify(cache, auth->secret, method, target, signature, now_sec);
        switch (r) {
        case 0:
                *ret = (ProxyMeshVerdict) {};
                return 0;
        case -ESTALE:
                *ret = (ProxyMeshVerdict) { 401, "authentication_error", "stale_signature",
                        "The request's signature is too old or from the future (check both clocks)." };
                return r;
        case -EALREADY:
                *ret = (ProxyMeshVerdict) { 401, "authentication_error", "replayed_signature",
                        "This request's signature was already used." };
                return r;
        case -ENOBUFS:
                *ret = (ProxyMeshVerdict) { 503, "server_error", "signature_check_unavailable",
                        "Too many signed requests at once; try again in a second." };
                return r;
        case -EBADMSG:
        case -EKEYREJECTED:
                *ret = (ProxyMeshVerdict) { 401, "authentication_error", "invalid_signature",
                        "The request's signature is not valid for this agent." };
                return r;
        default:
                *ret = (ProxyMeshVerdict) { 500, "server_error", "internal_error",
                        "The agent failed to check the request's signature." };
                return r;
        }
}

static ProxyCapability *proxy_find_capability(Proxy *p, const char *name, size_t len) {
        for (size_t i = 0; i < p->n_capabilities; i++)
                if (strlen(p->capabilities[i].name) == len && strncmp(p->capabilities[i].name, name, len) == 0)
                        return &p->capabilities[i];
        return NULL;
}

static int proxy_handle_capability(Proxy *p, HttpExchange *x, const char *path) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_free_ ProxyRequest *pr = NULL;
        _cleanup_free_ char *p_path = NULL, *name = NULL, *url = NULL;
        const char *rest = startswith(path, CAPABILITY_PREFIX), *slash, *body;
        ProxyCapability *cap;
        char id[HTTP_REQUEST_ID_SIZE];
        size_t len;
        int r;

        http_request_id_new(id);
        slash = rest ? strchr(rest, '/') : NULL;
        if (!slash || !http_path_is(slash, "/exec"))
                return respond_error(x, id, 404, "invalid_request_error", "unknown_url", NULL,
                                     "Unknown request URL: %s. Capabilities are at " CAPABILITY_PREFIX "NAME/exec.",
                                     http_exchange_path(x));
        cap = proxy_find_capability(p, rest, (size_t) (slash - rest));
        if (!cap)
                return respond_error(x, id, 404, "invalid_request_error", "capability_not_found", NULL,
                                     "The capability '%.*s' is not offered here.", (int) MIN((size_t) (slash - rest), (size_t) 64), rest);
        if (!streq(http_exchange_method(x), "POST")) {
                (void) http_exchange_add_header(x, "Allow", "POST");
                return respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                     "Use POST for a capability.");
        }
        body = http_exchange_body(x, &len);
        if (cap->max_body_size > 0 && len > cap->max_body_size)
                return respond_error(x, id, 413, "invalid_request_error", "request_too_large", NULL,
                                     "The request body is larger than the capability '%s' accepts (%" PRIu64 " bytes).",
                                     cap->name, cap->max_body_size);
        r = jobj_parse(body ?: "", len, JSON_DEPTH_MAX, &root, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                     "A capability's request body must be JSON.");

        p_path = strdup(path);
        name = strdup(cap->name);
        url = strdup(cap->url);
        pr = new0(ProxyRequest, 1);
        if (!p_path || !name || !url || !pr)
                return -ENOMEM;
        *pr = (ProxyRequest) {
                .proxy = p,
                .kind = PR_CAPABILITY,
                .x = x,
                .path = TAKE_PTR(p_path),
                .target_name = TAKE_PTR(name),
                .capability_url = TAKE_PTR(url),
        };
        memcpy(pr->id, id, sizeof id);
        http_exchange_set_userdata(x, pr, on_exchange_close, on_exchange_drain);
        proxy_request_continue(TAKE_PTR(pr));
        return 0;
}

static int proxy_handle(HttpExchange *x, void *userdata);

static int proxy_mesh_handle(HttpExchange *x, void *userdata) {
        Proxy *p = userdata;
        _cleanup_free_ char *path = NULL;
        ProxyMeshVerdict v;
        char id[HTTP_REQUEST_ID_SIZE];
        int r;

        r = proxy_mesh_check(&p->mesh_auth, p->replay, http_exchange_peer(x), http_exchange_method(x),
                             http_exchange_target(x), http_exchange_header(x, REQUEST_SIGN_HEADER),
                             (uint64_t) time(NULL), &v);
        if (r < 0) {
                char a[64];

                log_ratelimit_warning(&p->log_limit, "Mesh listener: refused %s %s from %s: %s.",
                                      http_exchange_method(x), http_exchange_path(x),
                                      format_sockaddr(http_exchange_peer(x), a, sizeof a), v.code);
                http_request_id_new(id);
                if (v.status == 401)
                        (void) http_exchange_add_header(x, "WWW-Authenticate", "Club-Signature");
                return respond_error(x, id, v.status, v.type, v.code, NULL, "%s", v.message);
        }
        if (http_path_has_dot_segment(http_exchange_target(x))) {
                http_request_id_new(id);
                return respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                     "The request path has '.' or '..' segments.");
        }
        path = http_path_normalize(http_exchange_target(x));
        if (!path)
                return -ENOMEM;
        if (p->draining && !http_path_is(path, "/healthz")) {
                http_request_id_new(id);
                return respond_error(x, id, 503, "server_error", "agent_draining", NULL,
                                     "This agent is draining: it finishes running requests and takes no new ones.");
        }
        if (startswith(path, CAPABILITY_PREFIX))
                return proxy_handle_capability(p, x, path);
        return proxy_handle(x, p);
}

int proxy_listen_mesh(Proxy *p, int fd, const ProxyMeshAuth *auth) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        assert(p && auth);
        if (!p->replay) {
                r = replay_cache_new(MESH_REPLAY_ENTRIES, 0, &p->replay);
                if (r < 0) {
                        safe_close(fd);
                        return r;
                }
        }
        r = http_server_new(p->event, fd, &p->server_options, proxy_mesh_handle, p, &s);
        if (r < 0)
                return r;
        proxy_unlisten_mesh(p);
        p->mesh_server = TAKE_PTR(s);
        proxy_set_mesh_auth(p, auth);
        return 0;
}

void proxy_set_mesh_auth(Proxy *p, const ProxyMeshAuth *auth) {
        explicit_bzero(&p->mesh_auth, sizeof p->mesh_auth);
        p->mesh_auth = *auth;
}

void proxy_unlisten_mesh(Proxy *p) {
        if (!p)
                return;
        /* Closing the server ends its exchanges, which frees their requests. */
        p->mesh_server = http_server_free(p->mesh_server);
        explicit_bzero(&p->mesh_auth, sizeof p->mesh_auth);
}

bool proxy_has_mesh(Proxy *p) {
        return p->mesh_server;
}

void proxy_set_draining(Proxy *p, bool draining) {
        p->draining = draining;
}

void proxy_set_refresh_callback(Proxy *p, ProxyRefreshedFn fn, void *userdata) {
        p->on_refreshed = fn;
        p->on_refreshed_userdata = userdata;
}

size_t proxy_upstreams(Proxy *p, Upstream *const **ret) {
        *ret = p->upstreams;
        return p->n_upstreams;
}

void proxy_refresh(Proxy *p) {
        proxy_refresh_all(p);
}

bool proxy_listed(Proxy *p) {
        return p->refreshed_usec > 0;
}

static ProxyCapability *capabilities_free(ProxyCapability *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(l[i].name);
                free(l[i].url);
        }
        return mfree(l);
}

static void proxy_capabilities_free(Proxy *p) {
        p->capabilities = capabilities_free(p->capabilities, p->n_capabilities);
        p->n_capabilities = 0;
}

static int proxy_set_capabilities(Proxy *p, const ClubdConfig *cfg) {
        ProxyCapability *l;

        l = new0(ProxyCapability, cfg->n_capabilities);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < cfg->n_capabilities; i++) {
                l[i] = (ProxyCapability) {
                        .name = strdup(cfg->capabilities[i].name),
                        .url = strdup(cfg->capabilities[i].url),
                        .max_body_size = cfg->capabilities[i].max_body_size,
                };
                if (!l[i].name || !l[i].url) {
                        capabilities_free(l, i + 1);
                        return -ENOMEM;
                }
        }
        proxy_capabilities_free(p);
        p->capabilities = l;
        p->n_capabilities = cfg->n_capabilities;
        return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static int proxy_set_upstreams(Proxy *p, const ClubdConfig *cfg) {
        Upstream **l;
        int r;

        l = new0(Upstream *, cfg->n_upstreams + 1);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < cfg->n_upstreams; i++) {
                r = upstream_new(p->client, &cfg->upstreams[i], PROBE_TIMEOUT_USEC, on_upstream_refreshed, p, &l[i]);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                upstream_unref(l[j]);
                        free(l);
                        return r;
                }
        }
        for (size_t i = 0; i < cfg->n_upstreams; i++)
                for (size_t j = 0; j < p->n_upstreams; j++)
                        upstream_take_state(l[i], p->upstreams[j]);
        /* Old upstreams stay alive for as long as requests reference them. */
        for (size_t i = 0; i < p->n_upstreams; i++) {
                upstream_disconnect(p->upstreams[i]);
                upstream_unref(p->upstreams[i]);
        }
        free(p->upstreams);
        p->upstreams = l;
        p->n_upstreams = cfg->n_upstreams;
        p->n_refreshing = 0;
        return 0;
}

static void proxy_apply_limits(Proxy *p, const ClubdConfig *cfg) {
        p->connect_timeout_usec = cfg->connect_timeout_usec;
        p->first_byte_timeout_usec = cfg->first_byte_timeout_usec;
        p->idle_timeout_usec = cfg->idle_timeout_usec;
        p->model_refresh_usec = MAX(cfg->model_refresh_usec, USEC_PER_SEC);
}

int proxy_new(sd_event *event, const ClubdConfig *cfg, int listen_fd, Proxy **ret) {
        _cleanup_(proxy_freep) Proxy *p = NULL;
        int r;

        p = new0(Proxy, 1);
        if (!p) {
                safe_close(listen_fd);
                return -ENOMEM;
        }
        *p = (Proxy) {
                .event = sd_event_ref(event),
                .log_limit = { .interval_usec = 10 * USEC_PER_SEC, .burst = 20 },
        };
        proxy_apply_limits(p, cfg);

        HttpClientOptions copts = {
                .connect_timeout_usec = cfg->connect_timeout_usec,
                .idle_timeout_usec = cfg->idle_timeout_usec,
                .max_connections = cfg->max_connections,
                .max_idle_connections = MIN(cfg->max_connections, 256U),
        };
        r = http_client_new(event, &copts, &p->client);
        if (r < 0) {
                safe_close(listen_fd);
                return r;
        }

        p->server_options = (HttpServerOptions) {
                .max_connections = cfg->max_connections,
                .max_connections_per_ip = cfg->max_connections_per_ip,
                .max_header_size = cfg->max_header_size,
                .max_body_size = cfg->max_body_size,
                .stream_buffer_max = cfg->stream_buffer_size,
        };
        r = http_server_new(event, listen_fd, &p->server_options, proxy_handle, p, &p->server);
        if (r < 0)
                return r;

        r = proxy_set_upstreams(p, cfg);
        if (r < 0)
                return r;
        r = proxy_set_capabilities(p, cfg);
        if (r < 0)
                return r;

        /* First look at the upstreams right away, then on a timer. */
        r = sd_event_add_time_relative(event, &p->refresh_timer, CLOCK_MONOTONIC, 0, 0, on_refresh_timer, p);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

Proxy *proxy_free(Proxy *p) {
        if (!p)
                return NULL;
        p->refresh_timer = sd_event_source_disable_unref(p->refresh_timer);
        /* The servers first: closing exchanges frees their requests and upstream transfers. */
        proxy_unlisten_mesh(p);
        p->server = http_server_free(p->server);
        p->replay = replay_cache_free(p->replay);
        proxy_capabilities_free(p);
        while (p->waiting)
                proxy_request_unwait(p->waiting);
        for (size_t i = 0; i < p->n_upstreams; i++) {
                upstream_disconnect(p->upstreams[i]);
                upstream_unref(p->upstreams[i]);
        }
        free(p->upstreams);
        p->client = http_client_free(p->client);
        sd_event_unref(p->event);
        return mfree(p);
}

int proxy_reload(Proxy *p, const ClubdConfig *cfg) {
        int r;

        r = proxy_set_capabilities(p, cfg);
        if (r < 0)
                return r;
        r = proxy_set_upstreams(p, cfg);
        if (r < 0)
                return r;
        proxy_apply_limits(p, cfg);
        proxy_refresh_all(p);
        return 0;
}

void proxy_stop_accepting(Proxy *p) {
        (void) http_server_quiesce(p->server);
        if (p->mesh_server)
                (void) http_server_quiesce(p->mesh_server);
}

unsigned proxy_in_flight(Proxy *p) {
        return p->in_flight;
}

size_t proxy_n_upstreams(Proxy *p) {
        return p->n_upstreams;
}

int proxy_status_line(Proxy *p, char **ret) {
        size_t ok = 0, models = 0;

        for (size_t i = 0; i < p->n_upstreams; i++) {
                ok += p->upstreams[i]->reachable;
                models += p->upstreams[i]->n_models;
        }
        if (asprintf(ret, "Serving %zu model(s) from %zu of %zu upstream(s); %u request(s) in flight.",
                     models, ok, p->n_upstreams, p->in_flight) < 0)
                return -ENOMEM;
        return 0;
}
