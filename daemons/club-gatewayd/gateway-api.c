/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "cleanup.h"
#include "gateway-api.h"
#include "gateway-forwarded.h"
#include "gateway-route.h"
#include "gateway-usage.h"
#include "http-client.h"
#include "http-forward.h"
#include "json-util.h"
#include "log.h"
#include "request-sign.h"

/* The body of a provider's error answer kept to tell a client that already got keep-alives. */
#define ERROR_BODY_MAX (16U * 1024U)
#define KEEPALIVE_COMMENT ": keep-alive\n\n"
/* Providers remembered as refusing stream_options (in memory: a restart forgets them). */
#define NO_STREAM_OPTIONS_MAX 256U

typedef struct ApiRequest ApiRequest;

struct GatewayApi {
        sd_event *event;
        Store *store;
        HttpClient *client;
        Router *router;
        GatewayApiOptions opts;
        GatewayApiHooks hooks;
        RateLimit log_limit;
        unsigned n_in_flight;           /* ApiRequests alive */
        int64_t no_stream_options[NO_STREAM_OPTIONS_MAX]; /* a ring of provider ids */
        unsigned n_no_stream_options;
};

struct ApiRequest {
        GatewayApi *api;
        HttpExchange *x;                /* NULL once the client side ended */
        char id[HTTP_REQUEST_ID_SIZE];
        char client[FORWARDED_ADDRESS_STRLEN]; /* http_exchange_client(), for the log */
        char *target;                   /* normalised path and query */
        char *model;                    /* or the capability's name */
        bool stream;
        bool capability;                /* POST /api/v1/capabilities/{model}/exec */
        int64_t key_id;
        int64_t user_id;
        const char *param;              /* the request field an error names, or NULL */

        /* Routing. */
        StoreProvider *candidates;
        size_t n_candidates;
        int64_t tried[GATEWAY_API_MAX_ATTEMPTS_MAX];
        unsigned n_tried;
        const StoreProvider *provider;  /* of the current or last attempt */
        HttpRequest *req;
        bool counted;                   /* router_begin() counted the attempt */
        bool retry;                     /* the provider answered a status worth another provider */
        int last_error;                 /* of the last failed attempt */
        unsigned last_status;           /* of the last attempt a status sent us on from */
        sd_event_source *next_attempt;
        sd_event_source *keepalive;

        /* The answer. */
        bool sse_opened;                /* we answered 200 text/event-stream ourselves (keep-alives) */
        bool passing;                   /* the provider's body goes to the client as it arrives */
        bool sse;                       /* …as an event stream */
        HttpSmallBody small;            /* a small answer of known size, collected whole */
        bool collect_error;             /* the provider's error answer after our keep-alives */
        unsigned error_status;
        UsageBuffer error_body;         /* …its first ERROR_BODY_MAX bytes */
        char tail[2];                   /* the last two bytes the client got, for event boundaries */
        char *pending;                  /* our own bytes (keep-alive, error event) waiting for room */
        size_t pending_len, pending_off;
        bool abort_after_pending;

        /* Usage (gateway-usage.h). */
        char *usage_body;               /* the body with stream_options.include_usage added */
        size_t usage_body_len;
        bool usage_checked;             /* usage_request_body() ran */
        bool strip_usage;               /* this attempt's body was usage_body: the usage chunk is ours */
        bool retry_same;                /* the provider refused stream_options: once more without */
        bool end_after_pending;         /* the stream ends once our queued bytes are out */
        SseUsage sse_usage;
        UsageBuffer usage_out;          /* a stripped stream's bytes for the client */
        JsonUsage plain_usage;          /* a plain answer passed on, scanned for its usage */
        TokenUsage usage;
        bool admitted;

        /* The record. */
        uint64_t start_usec;
        uint64_t first_byte_usec;
        uint64_t first_content_usec;
        uint64_t bytes;
        unsigned status;
        ApiOutcome outcome;
        bool outcome_set;
};

static const char *const outcome_table[_API_OUTCOME_MAX] = {
        [API_OUTCOME_OK] = "ok",
        [API_OUTCOME_PROVIDER_ERROR] = "provider_error",
        [API_OUTCOME_FAILED] = "failed",
        [API_OUTCOME_UNAVAILABLE] = "unavailable",
        [API_OUTCOME_MODEL_NOT_FOUND] = "model_not_found",
        [API_OUTCOME_REFUSED] = "refused",
        [API_OUTCOME_TRUNCATED] = "truncated",
        [API_OUTCOME_CANCELLED] = "cancelled",
};

const char *api_outcome_to_string(ApiOutcome o) {
        return o >= 0 && o < _API_OUTCOME_MAX ? outcome_table[o] : NULL;
}

static void api_request_attempt(ApiRequest *pr);
static int api_request_start(ApiRequest *pr, const StoreProvider *p);

/* ---- answering ----------------------------------------------------------------------- */

static int respond_retry_after(HttpExchange *x, const char *id, unsigned status, const char *type, const char *code,
                               uint64_t retry_after_sec, const char *message) {
        char v[24];

        snprintf(v, sizeof v, "%" PRIu64, MAX(retry_after_sec, (uint64_t) 1));
        (void) http_exchange_add_header(x, "Retry-After", v);
        return http_respond_error(x, id, status, type, code, NULL, "%s", message);
}

static void api_request_set_outcome(ApiRequest *pr, ApiOutcome o, unsigned status) {
        if (pr->outcome_set)
                return;
        pr->outcome_set = true;
        pr->outcome = o;
        pr->status = status;
}

static void api_request_note_written(ApiRequest *pr, const char *data, size_t n) {
        if (n >= 2) {
                pr->tail[0] = data[n - 2];
                pr->tail[1] = data[n - 1];
        } else if (n == 1) {
                pr->tail[0] = pr->tail[1];
                pr->tail[1] = data[0];
        }
}

/* Hand our queued bytes to the exchange; once they are all taken, abort if asked. */
static void api_request_flush(ApiRequest *pr) {
        while (pr->x && pr->pending_off < pr->pending_len) {
                ssize_t n = http_exchange_stream_write(pr->x, pr->pending + pr->pending_off,
                                                       pr->pending_len - pr->pending_off);
                if (n < 0) {
                        pr->pending_off = pr->pending_len;
                        break;
                }
                if (n == 0)
                        return; /* the drain callback brings us back */
                api_request_note_written(pr, pr->pending + pr->pending_off, (size_t) n);
                pr->pending_off += (size_t) n;
        }
        pr->pending = mfree(pr->pending);
        pr->pending_len = pr->pending_off = 0;
        if (pr->abort_after_pending && pr->x)
                (void) http_exchange_stream_abort(pr->x);
        else if (pr->end_after_pending && pr->x)
                (void) http_exchange_stream_end(pr->x);
}

static int api_request_queue(ApiRequest *pr, const char *data, size_t len) {
        char *p;

        p = realloc(pr->pending, pr->pending_len + len);
        if (!p)
                return -ENOMEM;
        memcpy(p + pr->pending_len, data, len);
        pr->pending = p;
        pr->pending_len += len;
        api_request_flush(pr);
        return 0;
}

/* Answer 200 text/event-stream ourselves, before the provider did: keep-alives follow. */
static int api_request_open_sse(ApiRequest *pr) {
        int r;

        if (pr->sse_opened)
                return 0;
        (void) http_exchange_add_header(pr->x, "x-request-id", pr->id);
        (void) http_exchange_add_header(pr->x, "Cache-Control", "no-cache");
        (void) http_exchange_add_header(pr->x, "X-Accel-Buffering", "no");
        r = http_exchange_stream_start(pr->x, 200, "text/event-stream");
        if (r < 0)
                return r;
        pr->sse_opened = true;
        pr->sse = true;
        return 0;
}

/* One `data: {"error":…}` event, on an event boundary, then the connection is aborted: the
 * client must never take a failed stream for a finished one. */
static void api_request_error_event(ApiRequest *pr, const char *type, const char *code, const char *message) {
        _cleanup_free_ char *body = NULL, *event = NULL;
        const char *sep;
        int r;

        if (!pr->x)
                return;
        if (pr->tail[1] == 0 || (pr->tail[0] == '\n' && pr->tail[1] == '\n'))
                sep = "";
        else if (pr->tail[1] == '\n')
                sep = "\n";
        else
                sep = "\n\n";
        r = openai_error_body(message, type, NULL, code, &body, NULL);
        if (r >= 0 && asprintf(&event, "%sdata: %s\n\n", sep, body) < 0)
                r = -ENOMEM;
        pr->abort_after_pending = true;
        if (r < 0 || api_request_queue(pr, event, strlen(event)) < 0)
                (void) http_exchange_stream_abort(pr->x);
}

/* The request failed before the provider's answer began: a JSON error, or, after keep-alives,
 * an error event. */
static void api_request_fail(ApiRequest *pr, ApiOutcome outcome, unsigned status, const char *type,
                             const char *code, uint64_t retry_after_sec, const char *message) {
        int r;

        api_request_set_outcome(pr, outcome, pr->sse_opened ? 200 : status);
        if (!pr->x)
                return;
        pr->keepalive = sd_event_source_disable_unref(pr->keepalive);
        if (pr->sse_opened) {
                api_request_error_event(pr, type, code, message);
                return;
        }
        if (retry_after_sec > 0) {
                char v[24];

                snprintf(v, sizeof v, "%" PRIu64, retry_after_sec);
                (void) http_exchange_add_header(pr->x, "Retry-After", v);
        }
        r = http_respond_error(pr->x, pr->id, status, type, code, pr->param, "%s", message);
        if (r < 0 && !http_exchange_is_answered(pr->x))
                (void) http_exchange_respond_error(pr->x, 500, "server_error", "internal_error", NULL,
                                                   "The gateway failed to answer.");
}

/* ---- request lifetime ------------------------------------------------------------------ */

static void api_request_end_attempt(ApiRequest *pr, RouterResult result) {
        pr->req = http_request_free(pr->req);
        if (pr->counted && pr->provider) {
                router_end(pr->api->router, pr->provider->id, result, now_usec(CLOCK_MONOTONIC));
                pr->counted = false;
        }
}

static ApiRequest *api_request_free(ApiRequest *pr) {
        if (!pr)
                return NULL;
        api_request_end_attempt(pr, ROUTER_NEUTRAL);
        pr->next_attempt = sd_event_source_disable_unref(pr->next_attempt);
        pr->keepalive = sd_event_source_disable_unref(pr->keepalive);
        if (pr->x)
                http_exchange_set_userdata(pr->x, NULL, NULL, NULL);
        store_providers_free(pr->candidates, pr->n_candidates);
        free(pr->target);
        free(pr->model);
        http_small_body_done(&pr->small);
        usage_buffer_done(&pr->error_body);
        free(pr->pending);
        free(pr->usage_body);
        sse_usage_done(&pr->sse_usage);
        usage_buffer_done(&pr->usage_out);
        json_usage_done(&pr->plain_usage);
        pr->api->n_in_flight--;
        return mfree(pr);
}

static ApiRequestInfo api_request_info(const ApiRequest *pr) {
        return (ApiRequestInfo) {
                .id = pr->id,
                .key_id = pr->key_id,
                .user_id = pr->user_id,
                .target = pr->target,
                .model = pr->model,
                .stream = pr->stream,
                .capability = pr->capability,
        };
}

/* "model" or "capability", for messages. */
static const char *api_request_what(const ApiRequest *pr) {
        return pr->capability ? "capability" : "model";
}

/* The tokens of the answer: the provider's usage, else a stream's content events. */
static void api_request_usage(ApiRequest *pr, ApiRequestRecord *rec) {
        TokenUsage u = pr->usage;

        if (!u.reported && pr->sse)
                u = sse_usage_result(&pr->sse_usage);
        else if (!u.reported)
                u = pr->plain_usage.usage;
        rec->prompt_tokens = u.prompt_tokens;
        rec->completion_tokens = u.completion_tokens;
        rec->usage_reported = u.reported;
}

static void api_request_finished(ApiRequest *pr, bool ok) {
        GatewayApi *api = pr->api;
        ApiRequestRecord rec;

        if (!pr->outcome_set)
                api_request_set_outcome(pr, API_OUTCOME_CANCELLED, 0);
        else if (!ok && pr->outcome == API_OUTCOME_OK)
                pr->outcome = API_OUTCOME_CANCELLED;

        rec = (ApiRequestRecord) {
                .info = api_request_info(pr),
                .outcome = pr->outcome,
                .status = pr->status,
                .provider_id = pr->provider ? pr->provider->id : 0,
                .attempts = pr->n_tried,
                .time_to_first_byte_usec = pr->first_byte_usec > 0 ? pr->first_byte_usec - pr->start_usec : 0,
                .duration_usec = now_usec(CLOCK_MONOTONIC) - pr->start_usec,
                .bytes = pr->bytes,
                .time_to_first_token_usec = pr->first_content_usec > 0 ? pr->first_content_usec - pr->start_usec : 0,
                .admitted = pr->admitted,
        };
        api_request_usage(pr, &rec);
        log_debug("Request %s from %s: %s %s for %s %s, user %" PRId64 ": %s, status %u, provider %" PRId64
                  ", %u attempt(s), first byte after %" PRIu64 " ms, %" PRIu64 " ms, %" PRIu64 " bytes.",
                  pr->id, pr->client, pr->stream ? "streamed" : "plain", pr->target, api_request_what(pr), pr->model, pr->user_id,
                  api_outcome_to_string(rec.outcome), rec.status, rec.provider_id, rec.attempts,
                  rec.time_to_first_byte_usec / USEC_PER_MSEC, rec.duration_usec / USEC_PER_MSEC, rec.bytes);
        if (api->hooks.finished)
                api->hooks.finished(&rec, api->hooks.userdata);
}

static void on_exchange_close(HttpExchange *x, bool ok, void *userdata) {
        ApiRequest *pr = userdata;

        pr->x = NULL;
        if (pr->req)
                log_debug("Request %s: the client went away, cancelling the request to provider %s.",
                          pr->id, pr->provider ? pr->provider->name : "?");
        api_request_finished(pr, ok);
        api_request_free(pr);
}

static void on_exchange_drain(HttpExchange *x, void *userdata) {
        ApiRequest *pr = userdata;
        int r;

        if (pr->pending) {
                api_request_flush(pr);
                if (pr->pending)
                        return;
        }
        if (!pr->req)
                return;
        r = http_request_resume(pr->req);
        if (r < 0)
                log_debug_errno(r, "Request %s: failed to resume the transfer from the provider: %m", pr->id);
}

static int on_keepalive(sd_event_source *s, uint64_t usec, void *userdata) {
        ApiRequest *pr = userdata;
        int r;

        if (!pr->x || pr->passing || pr->small.active || pr->collect_error) {
                pr->keepalive = sd_event_source_disable_unref(pr->keepalive);
                return 0;
        }
        r = api_request_open_sse(pr);
        if (r < 0) {
                log_debug_errno(r, "Request %s: failed to begin the event stream for keep-alives: %m", pr->id);
                pr->keepalive = sd_event_source_disable_unref(pr->keepalive);
                return 0;
        }
        /* A client that has not read the last one does not need another. */
        if (!pr->pending && http_exchange_stream_pending(pr->x) == 0)
                (void) api_request_queue(pr, KEEPALIVE_COMMENT, strlen(KEEPALIVE_COMMENT));
        r = sd_event_source_set_time_relative(s, pr->api->opts.keepalive_interval_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Request %s: failed to re-arm the keep-alive timer: %m", pr->id);
        return 0;
}

/* ---- the provider's answer ------------------------------------------------------------- */

static bool status_is_retryable(unsigned status) {
        return status == 429 || status == 502 || status == 503 || status == 504;
}

/* Whether another provider could still take the request. */
static bool api_request_can_retry(ApiRequest *pr) {
        size_t i;
        uint64_t wait;

        if (pr->n_tried >= pr->api->opts.max_attempts)
                return false;
        return router_pick(pr->api->router, pr->candidates, pr->n_candidates, pr->tried, pr->n_tried,
                           now_usec(CLOCK_MONOTONIC), &i, &wait) >= 0;
}

static int on_provider_response(HttpRequest *req, unsigned status, void *userdata) {
        ApiRequest *pr = userdata;
        const char *ct;
        uint64_t size;
        int r;

        if (!pr->x)
                return -ECANCELED;
        /* The agent refused the gateway itself (a signature it does not accept, e.g. after a
         * re-registration rotated the secret): never the client's business, whose key was
         * good. That provider failed; the next one may do. */
        if (status == 401 || status == 407) {
                log_ratelimit_warning(&pr->api->log_limit,
                                      "Request %s: provider %s (id %" PRId64 ") refused the gateway's request with %u; is its secret current?",
                                      pr->id, pr->provider->name, pr->provider->id, status);
                pr->retry = true;
                pr->last_status = status;
                return -ECANCELED;
        }
        if (status_is_retryable(status) && api_request_can_retry(pr)) {
                log_ratelimit_info(&pr->api->log_limit, "Request %s: provider %s answered %u, trying another one.",
                                   pr->id, pr->provider->name, status);
                pr->retry = true;
                pr->last_status = status;
                return -ECANCELED;
        }
        pr->first_byte_usec = now_usec(CLOCK_MONOTONIC);
        pr->keepalive = sd_event_source_disable_unref(pr->keepalive);
        log_debug("Request %s: provider %s answered %u.", pr->id, pr->provider->name, status);

        if (pr->sse_opened) {
                /* The client has its 200 and keep-alives already: a good answer streams on,
                 * an error becomes an error event. */
                if (status >= 200 && status < 300)
                        pr->passing = true;
                else {
                        pr->collect_error = true;
                        pr->error_status = status;
                }
                return 0;
        }

        /* A small body of known size (a completion, an embedding) is collected and sent with
         * its headers in one piece; one that breaks off gives a clean 502. */
        size = http_response_content_length(req);
        if (size <= GATEWAY_API_SMALL_BODY_MAX)
                return http_small_body_begin(&pr->small, status, (size_t) size);

        r = http_forward_stream_start(req, pr->x, pr->id, status);
        if (r < 0)
                return r;
        ct = http_request_response_header(req, "Content-Type");
        pr->sse = ct && startswith_no_case(ct, "text/event-stream");
        pr->passing = true;
        api_request_set_outcome(pr, status < 300 ? API_OUTCOME_OK : API_OUTCOME_PROVIDER_ERROR, status);
        return 0;
}

/* Look for the usage in what was passed on: a stream's events, a plain answer's "usage". */
static void api_request_scan(ApiRequest *pr, const char *data, size_t n) {
        int r;

        if (pr->sse) {
                if (sse_usage_feed(&pr->sse_usage, data, n, NULL) < 0)
                        log_debug("Request %s: out of memory scanning the stream for usage.", pr->id);
                return;
        }
        r = json_usage_feed(&pr->plain_usage, data, n);
        if (r < 0)
                log_debug("Request %s: out of memory scanning the answer for its usage.", pr->id);
}

static ssize_t on_provider_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        ApiRequest *pr = userdata;
        ssize_t n;
        int r;

        if (!pr->x)
                return -ECANCELED;
        if (len > 0 && pr->first_content_usec == 0 && !pr->collect_error)
                pr->first_content_usec = now_usec(CLOCK_MONOTONIC);
        if (pr->small.active) {
                r = http_small_body_append(&pr->small, data, len);
                return r < 0 ? r : (ssize_t) len;
        }
        if (pr->collect_error) {
                r = usage_buffer_append(&pr->error_body, data, MIN(len, ERROR_BODY_MAX - pr->error_body.len));
                return r < 0 ? r : (ssize_t) len;
        }
        if (pr->pending)
                return 0; /* our keep-alive goes first; the drain resumes the transfer */
        if (pr->sse && pr->strip_usage) {
                /* The usage chunk we asked for is not the client's: the rest goes out through
                 * our queue, which pauses the provider's transfer until the client took it. */
                pr->sse_usage.strip = true;
                pr->usage_out.len = 0;
                r = sse_usage_feed(&pr->sse_usage, data, len, &pr->usage_out);
                if (r >= 0 && pr->usage_out.len > 0)
                        r = api_request_queue(pr, pr->usage_out.data, pr->usage_out.len);
                if (r < 0)
                        return r;
                pr->bytes += pr->usage_out.len;
                return (ssize_t) len;
        }
        /* Whatever the client's buffer cannot take now pauses the provider's transfer. */
        n = http_exchange_stream_write(pr->x, data, len);
        if (n > 0) {
                api_request_note_written(pr, data, (size_t) n);
                pr->bytes += (uint64_t) n;
                api_request_scan(pr, data, (size_t) n);
        }
        return n;
}

/* The message of a provider's OpenAI-shaped error body, or NULL. */
static char *provider_error_message(const char *body, size_t len) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *e;
        const char *m;

        if (!body || jobj_parse(body, len, 8, &o, NULL) < 0 || !o || !json_object_is_type(o, json_type_object))
                return NULL;
        if (jobj_get_object(o, "error", &e) < 0 || !json_object_is_type(e, json_type_object) ||
            jobj_get_string(e, "message", &m) < 0)
                return NULL;
        return strdup(m);
}

static int on_next_attempt(sd_event_source *s, void *userdata) {
        ApiRequest *pr = userdata;

        pr->next_attempt = sd_event_source_disable_unref(pr->next_attempt);
        if (pr->retry_same && pr->x) {
                int r;

                /* The same provider again, without the stream_options it refused. */
                pr->retry_same = false;
                r = api_request_start(pr, pr->provider);
                if (r >= 0)
                        return 0;
                log_warning_errno(r, "Request %s: failed to send to provider %s again: %m", pr->id, pr->provider->name);
                pr->last_error = r;
        }
        api_request_attempt(pr);
        return 0;
}

/* Try the next provider from the loop, not from inside the HTTP client's callback. */
static void api_request_schedule_attempt(ApiRequest *pr) {
        int r;

        r = sd_event_add_defer(pr->api->event, &pr->next_attempt, on_next_attempt, pr);
        if (r < 0) {
                log_warning_errno(r, "Request %s: failed to schedule the next attempt: %m", pr->id);
                api_request_fail(pr, API_OUTCOME_FAILED, 502, "server_error", "provider_error", 0,
                                 "The provider failed to answer.");
        }
}

static const char *error_reason(int error) {
        switch (error) {
        case -ECONNREFUSED:
                return "connection refused";
        case -ETIMEDOUT:
                return "timed out";
        case -ECONNRESET:
                return "connection reset or answer cut short";
        case -EPROTO:
                return "malformed HTTP answer";
        default:
                return strerror(-error);
        }
}

static bool api_provider_refuses_stream_options(GatewayApi *api, int64_t id) {
        for (unsigned i = 0; i < MIN(api->n_no_stream_options, NO_STREAM_OPTIONS_MAX); i++)
                if (api->no_stream_options[i] == id)
                        return true;
        return false;
}

/* A 400 that blames the stream_options we added: the provider is remembered as not taking
 * them (in memory), and gets the request once more, as the client sent it. */
static bool api_request_stream_options_refused(ApiRequest *pr, unsigned status, const char *body, size_t len) {
        GatewayApi *api = pr->api;

        if (!pr->strip_usage || status != 400 || !usage_error_mentions_stream_options(body, len))
                return false;
        log_info("Request %s: provider %s (id %" PRId64 ") refuses stream_options.include_usage; "
                 "sending it streams as the clients ask from now on.", pr->id, pr->provider->name, pr->provider->id);
        if (!api_provider_refuses_stream_options(api, pr->provider->id))
                api->no_stream_options[api->n_no_stream_options++ % NO_STREAM_OPTIONS_MAX] = pr->provider->id;
        pr->retry_same = true;
        pr->first_content_usec = 0;
        api_request_end_attempt(pr, ROUTER_NEUTRAL);
        api_request_schedule_attempt(pr);
        return true;
}

static void on_provider_done(HttpRequest *req, int error, void *userdata) {
        ApiRequest *pr = userdata;
        GatewayApi *api = pr->api;
        const char *name = pr->provider->name;
        int r;

        if (pr->retry) {
                pr->retry = false;
                pr->last_error = pr->last_status == 504 ? -ETIMEDOUT :
                                 pr->last_status == 401 || pr->last_status == 407 ? -EACCES : -EBADMSG;
                api_request_end_attempt(pr, pr->last_status == 429 ? ROUTER_NEUTRAL : ROUTER_FAILURE);
                api_request_schedule_attempt(pr);
                return;
        }
        if (!pr->x) {
                api_request_end_attempt(pr, ROUTER_NEUTRAL);
                return;
        }

        if (!pr->passing && !pr->small.active && !pr->collect_error) {
                /* No answer at all: the next provider, if there is one. */
                log_ratelimit_warning(&api->log_limit, "Request %s: provider %s (id %" PRId64 ") failed before answering: %s.",
                                      pr->id, name, pr->provider->id, error_reason(error));
                pr->last_error = error;
                pr->last_status = 0;
                api_request_end_attempt(pr, ROUTER_FAILURE);
                api_request_schedule_attempt(pr);
                return;
        }

        if (pr->small.active) {
                if (error == 0 && !http_small_body_complete(&pr->small))
                        error = -ECONNRESET;
                if (error == 0 && api_request_stream_options_refused(pr, pr->small.status, pr->small.data, pr->small.len)) {
                        http_small_body_done(&pr->small);
                        return;
                }
                if (error == 0) {
                        if (pr->small.status < 300)
                                (void) usage_from_json(pr->small.data, pr->small.len, &pr->usage);
                        r = http_forward_response_headers(req, pr->x, pr->id);
                        if (r >= 0)
                                r = http_exchange_respond(pr->x, pr->small.status, NULL, pr->small.data, pr->small.len);
                        if (r < 0)
                                (void) http_respond_error(pr->x, pr->id, 500, "server_error", "internal_error", NULL,
                                                          "The gateway failed to pass on the answer.");
                        else
                                pr->bytes = pr->small.len;
                        api_request_set_outcome(pr, pr->small.status < 300 ? API_OUTCOME_OK : API_OUTCOME_PROVIDER_ERROR,
                                                pr->small.status);
                        api_request_end_attempt(pr, pr->small.status >= 500 ? ROUTER_FAILURE : ROUTER_SUCCESS);
                } else {
                        log_ratelimit_warning(&api->log_limit, "Request %s: provider %s's answer broke off: %s.",
                                              pr->id, name, error_reason(error));
                        api_request_end_attempt(pr, ROUTER_FAILURE);
                        api_request_fail(pr, API_OUTCOME_FAILED, 502, "server_error", "provider_error", 0,
                                         "The provider's answer broke off.");
                }
                return;
        }

        if (pr->collect_error && error == 0 &&
            api_request_stream_options_refused(pr, pr->error_status, pr->error_body.data, pr->error_body.len)) {
                pr->collect_error = false;
                usage_buffer_done(&pr->error_body);
                return;
        }
        if (pr->collect_error) {
                _cleanup_free_ char *m = provider_error_message(pr->error_body.data, pr->error_body.len), *msg = NULL;

                if (asprintf(&msg, "The provider answered %u: %s", pr->error_status,
                             m ?: http_status_reason(pr->error_status)) < 0)
                        msg = NULL;
                api_request_end_attempt(pr, pr->error_status >= 500 ? ROUTER_FAILURE : ROUTER_SUCCESS);
                api_request_set_outcome(pr, API_OUTCOME_PROVIDER_ERROR, 200);
                api_request_error_event(pr, pr->error_status >= 500 ? "server_error" : "invalid_request_error",
                                        "provider_error", msg ?: "The provider answered with an error.");
                return;
        }

        /* Passing through. */
        api_request_set_outcome(pr, API_OUTCOME_OK, 200);
        if (error == 0) {
                api_request_end_attempt(pr, ROUTER_SUCCESS);
                if (pr->sse && pr->strip_usage) {
                        pr->usage_out.len = 0;
                        if (sse_usage_finish(&pr->sse_usage, &pr->usage_out) >= 0 && pr->usage_out.len > 0)
                                (void) api_request_queue(pr, pr->usage_out.data, pr->usage_out.len);
                }
                if (pr->pending)
                        pr->end_after_pending = true;   /* api_request_flush() ends it */
                else
                        (void) http_exchange_stream_end(pr->x);
                return;
        }
        log_ratelimit_warning(&api->log_limit, "Request %s: provider %s failed mid-answer after %" PRIu64 " bytes: %s.",
                              pr->id, name, pr->bytes, error_reason(error));
        pr->outcome = API_OUTCOME_TRUNCATED;
        api_request_end_attempt(pr, ROUTER_FAILURE);
        if (pr->sse)
                api_request_error_event(pr, "server_error", "provider_error",
                                        "The provider failed in the middle of the answer; it is incomplete.");
        else
                (void) http_exchange_stream_abort(pr->x);
}

/* ---- sending to a provider ------------------------------------------------------------ */

/* The body for provider @p: a streamed completion that did not ask for usage asks for it
 * (stream_options.include_usage), unless @p is known to refuse that; strip_usage says so. */
static int api_request_usage_body(ApiRequest *pr, const StoreProvider *p, const void **body, size_t *len) {
        int r;

        pr->strip_usage = false;
        if (!pr->stream || pr->capability || api_provider_refuses_stream_options(pr->api, p->id) ||
            !(http_path_is(pr->target, "/v1/chat/completions") || http_path_is(pr->target, "/v1/completions")))
                return 0;
        if (!pr->usage_checked) {
                pr->usage_checked = true;
                r = usage_request_body(*body, *len, &pr->usage_body, &pr->usage_body_len);
                if (r == -ENOMEM)
                        return r;
        }
        if (!pr->usage_body)
                return 0;               /* the client asked for usage itself, or the body is not ours to change */
        *body = pr->usage_body;
        *len = pr->usage_body_len;
        pr->strip_usage = true;
        return 0;
}

static int api_request_start(ApiRequest *pr, const StoreProvider *p) {
        static const HttpRequestCallbacks cb = {
                .on_response = on_provider_response,
                .on_data = on_provider_data,
                .on_done = on_provider_done,
        };
        GatewayApi *api = pr->api;
        _cleanup_(http_request_freep) HttpRequest *req = NULL;
        _cleanup_free_ char *url = NULL, *sig = NULL;
        uint8_t secret[STORE_SECRET_LEN];
        char addr[INET_ADDRSTRLEN];
        const char *method = http_exchange_method(pr->x);
        const void *body;
        size_t len;
        int r;

        inet_ntop(AF_INET, &p->mesh_address, addr, sizeof addr);
        if (asprintf(&url, "http://%s:%u%s", addr, (unsigned) p->agent_port, pr->target) < 0)
                return -ENOMEM;
        r = http_request_new(api->client, method, url, &req);
        if (r < 0)
                return r;
        /* The body was parsed as JSON, whatever the client called it; the request's id is ours. */
        r = http_forward_request_headers(pr->x, req, (const char *const[]) { "Content-Type", "x-request-id", NULL });
        if (r < 0)
                return r;
        r = http_request_add_header(req, "Content-Type", "application/json");
        if (r < 0)
                return r;
        r = http_request_add_header(req, "x-request-id", pr->id);
        if (r < 0)
                return r;

        r = store_provider_get_secret(api->store, p->id, secret);
        if (r < 0)
                return r;
        r = request_sign(secret, method, pr->target, (uint64_t) time(NULL), NULL, &sig);
        explicit_bzero(secret, sizeof secret);
        if (r < 0)
                return r;
        r = http_request_add_header(req, REQUEST_SIGN_HEADER, sig);
        if (r < 0)
                return r;

        body = http_exchange_body(pr->x, &len);
        r = api_request_usage_body(pr, p, &body, &len);
        if (r < 0)
                return r;
        r = http_request_set_body(req, body, len);
        if (r < 0)
                return r;
        http_request_set_timeouts(req, api->opts.connect_timeout_usec, api->opts.idle_timeout_usec);
        http_request_set_response_timeout(req, api->opts.first_byte_timeout_usec);

        pr->provider = p;
        r = http_request_start(req, &cb, pr);
        if (r < 0)
                return r;
        pr->req = TAKE_PTR(req);
        pr->counted = router_begin(api->router, p->id) >= 0;
        log_debug("Request %s: %s %s for %s %s → provider %s (id %" PRId64 ") at %s:%u, attempt %u.",
                  pr->id, method, pr->target, api_request_what(pr), pr->model, p->name, p->id, addr, (unsigned) p->agent_port, pr->n_tried);
        return 0;
}

/* Pick a provider and send; when none is left, the answer says why. */
static void api_request_attempt(ApiRequest *pr) {
        GatewayApi *api = pr->api;

        while (pr->x) {
                uint64_t wait = 0;
                size_t i;
                int r;

                if (pr->n_tried >= api->opts.max_attempts)
                        r = -ENOENT;
                else
                        r = router_pick(api->router, pr->candidates, pr->n_candidates, pr->tried, pr->n_tried,
                                        now_usec(CLOCK_MONOTONIC), &i, &wait);
                if (r == -EAGAIN && pr->n_tried == 0) {
                        api_request_fail(pr, API_OUTCOME_UNAVAILABLE, 503, "server_error", "no_provider_available",
                                         (wait + USEC_PER_SEC - 1) / USEC_PER_SEC,
                                         pr->capability ? "Every provider of this capability failed recently; try again shortly."
                                                        : "Every provider of this model failed recently; try again shortly.");
                        return;
                }
                if (r < 0) {
                        /* Every attempt failed before the answer began. */
                        if (pr->last_error == -ETIMEDOUT)
                                api_request_fail(pr, API_OUTCOME_FAILED, 504, "server_error", "provider_timeout", 0,
                                                 "No provider answered in time.");
                        else if (pr->last_error == -EACCES)
                                api_request_fail(pr, API_OUTCOME_FAILED, 502, "server_error", "provider_error", 0,
                                                 "The provider refused the gateway's request.");
                        else
                                api_request_fail(pr, API_OUTCOME_FAILED, 502, "server_error", "provider_error", 0,
                                                 "The provider failed to answer.");
                        return;
                }

                pr->tried[pr->n_tried++] = pr->candidates[i].id;
                r = api_request_start(pr, &pr->candidates[i]);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Request %s: failed to send to provider %s (id %" PRId64 "): %m",
                                  pr->id, pr->candidates[i].name, pr->candidates[i].id);
                pr->last_error = r;
        }
}

/* ---- the endpoints ---------------------------------------------------------------------- */

static int respond_store_error(HttpExchange *x, const char *id, int r, const char *what) {
        if (r == -EBUSY)
                return respond_retry_after(x, id, 503, "server_error", "store_busy", 1,
                                           "The gateway's store is busy; try again shortly.");
        log_error_errno(r, "Request %s: the store failed while %s: %m", id, what);
        return http_respond_error(x, id, 503, "server_error", "store_unavailable", NULL,
                                  "The gateway's store is not available.");
}

/* The key from "Authorization: Bearer ic-…", checked for the inference scope. */
static int authenticate(GatewayApi *api, HttpExchange *x, const char *id, StoreApiKey *ret) {
        const char *auth, *key;
        int r;

        auth = http_exchange_header(x, "Authorization");
        key = auth ? startswith_no_case(auth, "Bearer ") : NULL;
        if (!key)
                return http_respond_error(x, id, 401, "invalid_request_error", "missing_api_key", NULL,
                                          "You didn't provide an API key: send 'Authorization: Bearer ic-…'.") ?: -EACCES;
        key += strspn(key, " ");
        r = store_api_key_verify(api->store, key, STORE_SCOPE_INFERENCE, ret);
        switch (r) {
        case 0:
                return 0;
        case -EKEYREJECTED:
                return http_respond_error(x, id, 401, "invalid_request_error", "invalid_api_key", NULL,
                                          "Incorrect API key provided.") ?: -EACCES;
        case -EKEYREVOKED:
                return http_respond_error(x, id, 401, "invalid_request_error", "revoked_api_key", NULL,
                                          "The API key has been revoked.") ?: -EACCES;
        case -EKEYEXPIRED:
                return http_respond_error(x, id, 401, "invalid_request_error", "expired_api_key", NULL,
                                          "The API key has expired.") ?: -EACCES;
        case -EACCES:
                return http_respond_error(x, id, 403, "permission_error", "insufficient_scope", NULL,
                                          "The API key lacks the 'inference' scope.") ?: -EACCES;
        default:
                return respond_store_error(x, id, r, "checking an API key") ?: -EACCES;
        }
}

int gateway_api_authenticate(GatewayApi *api, HttpExchange *x, const char *id, StoreApiKey *ret) {
        return authenticate(api, x, id, ret);
}

/* One entry of the model list. */
typedef struct ModelEntry {
        const char *id;                 /* borrowed from the providers */
        unsigned providers;
        uint64_t created_usec;
} ModelEntry;

static int model_entry_cmp(const void *a, const void *b) {
        return strcmp(((const ModelEntry *) a)->id, ((const ModelEntry *) b)->id);
}

static json_object *model_object(const ModelEntry *e) {
        json_object *o = json_object_new_object();

        if (!o || jobj_add_string(o, "id", e->id) < 0 ||
            jobj_add_string(o, "object", "model") < 0 ||
            jobj_add_int64(o, "created", (int64_t) (e->created_usec / USEC_PER_SEC)) < 0 ||
            jobj_add_string(o, "owned_by", "club") < 0 ||
            jobj_add_int64(o, "providers_online", e->providers) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* The models (or capabilities) of the online providers the user may use, sorted, each once. */
static int names_collect(const StoreProvider *l, size_t n, bool capabilities, ModelEntry **ret, size_t *ret_n) {
        _cleanup_free_ ModelEntry *all = NULL;
        size_t total = 0, k = 0;

        for (size_t i = 0; i < n; i++)
                total += store_strv_length(capabilities ? l[i].capabilities : l[i].models);
        all = new(ModelEntry, total);
        if (!all)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                for (char **m = capabilities ? l[i].capabilities : l[i].models; m && *m; m++)
                        all[k++] = (ModelEntry) { .id = *m, .providers = 1, .created_usec = l[i].created_usec };
        qsort(all, k, sizeof *all, model_entry_cmp);
        /* Merge runs of the same id. */
        total = 0;
        for (size_t i = 0; i < k; i++) {
                if (total > 0 && streq(all[total - 1].id, all[i].id)) {
                        all[total - 1].providers++;
                        all[total - 1].created_usec = MIN(all[total - 1].created_usec, all[i].created_usec);
                } else
                        all[total++] = all[i];
        }
        *ret = TAKE_PTR(all);
        *ret_n = total;
        return 0;
}

/* Decode %XX in a path segment; refuses malformed escapes and NUL. */
static int percent_decode(const char *s, size_t len, char **ret) {
        _cleanup_free_ char *out = malloc(len + 1);
        size_t o = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int hi, lo;

                if (s[i] != '%') {
                        out[o++] = s[i];
                        continue;
                }
                if (i + 2 >= len)
                        return -EINVAL;
                hi = s[i + 1] >= '0' && s[i + 1] <= '9' ? s[i + 1] - '0' :
                     (s[i + 1] | 0x20) >= 'a' && (s[i + 1] | 0x20) <= 'f' ? (s[i + 1] | 0x20) - 'a' + 10 : -1;
                lo = s[i + 2] >= '0' && s[i + 2] <= '9' ? s[i + 2] - '0' :
                     (s[i + 2] | 0x20) >= 'a' && (s[i + 2] | 0x20) <= 'f' ? (s[i + 2] | 0x20) - 'a' + 10 : -1;
                if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                        return -EINVAL;
                out[o++] = (char) (hi * 16 + lo);
                i += 2;
        }
        out[o] = 0;
        *ret = TAKE_PTR(out);
        return 0;
}

static json_object *capability_object(const char *name, unsigned providers_online) {
        json_object *o = json_object_new_object();

        if (!o || jobj_add_string(o, "id", name) < 0 ||
            jobj_add_string(o, "object", "capability") < 0 ||
            jobj_add_int64(o, "providers_online", providers_online) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* GET /v1/models, GET /v1/models/{model}, and with @capabilities GET /api/v1/capabilities:
 * what the online providers the user may use serve, with counts. */
static int handle_models(GatewayApi *api, HttpExchange *x, const char *id, int64_t user_id, const char *model,
                         bool capabilities) {
        StoreProviderFilter filter = { .usable_by = user_id, .online_only = true };
        _cleanup_(json_object_putp) json_object *root = NULL, *data = NULL;
        _cleanup_free_ ModelEntry *models = NULL;
        StoreProvider *l = NULL;
        size_t n = 0, n_models = 0;
        int r;

        assert(!model || !capabilities);
        r = store_provider_list(api->store, &filter, &l, &n);
        if (r < 0)
                return respond_store_error(x, id, r, capabilities ? "listing capabilities" : "listing models");
        r = names_collect(l, n, capabilities, &models, &n_models);
        if (r < 0) {
                store_providers_free(l, n);
                return r;
        }

        if (model) {
                for (size_t i = 0; i < n_models; i++)
                        if (streq(models[i].id, model)) {
                                json_object *o = model_object(&models[i]);

                                store_providers_free(l, n);
                                if (!o)
                                        return -ENOMEM;
                                r = http_respond_json(x, id, 200, o);
                                json_object_put(o);
                                return r;
                        }
                store_providers_free(l, n);
                return http_respond_error(x, id, 404, "invalid_request_error", "model_not_found", "model",
                                          "The model '%s' does not exist or you do not have access to it.", model);
        }

        root = json_object_new_object();
        data = json_object_new_array();
        r = root && data ? 0 : -ENOMEM;
        for (size_t i = 0; r == 0 && i < n_models; i++) {
                json_object *o = capabilities ? capability_object(models[i].id, models[i].providers)
                                              : model_object(&models[i]);

                if (!o || json_object_array_add(data, o) < 0) {
                        json_object_put(o);
                        r = -ENOMEM;
                }
        }
        store_providers_free(l, n);
        if (r < 0)
                return r;
        if (jobj_add_string(root, "object", "list") < 0 || jobj_add(root, "data", TAKE_PTR(data)) < 0)
                return -ENOMEM;
        return http_respond_json(x, id, 200, root);
}

/* The body of a forwarded request: a JSON object naming a model; "stream" a boolean if given. */
/* The body as one JSON value. Otherwise it is answered 400 and a non-zero value returned
 * (a negative errno if even that failed). */
static int parse_json_body(HttpExchange *x, const char *id, const char *expected, json_object **ret) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        const char *body, *reason = NULL;
        size_t len;
        int r;

        body = http_exchange_body(x, &len);
        if (!body || len == 0)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                          "The request has no body; expected %s.", expected) ?: -EINVAL;
        r = jobj_parse(body, len, JSON_DEPTH_MAX, &root, &reason);
        if (r == -ENOMEM)
                return r;
        if (r == -E2BIG)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                          "The request body nests JSON too deeply.") ?: -EINVAL;
        if (r < 0)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                          "The request body is not valid JSON: %s.", reason ?: "syntax error") ?: -EINVAL;
        *ret = TAKE_PTR(root);
        return 0;
}

static int parse_body(HttpExchange *x, const char *id, char **ret_model, bool *ret_stream) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        const char *model;
        bool stream = false;
        int r;

        r = parse_json_body(x, id, "a JSON object", &root);
        if (r != 0)
                return r;
        if (!root || !json_object_is_type(root, json_type_object))
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                          "The request body must be a JSON object.") ?: -EINVAL;
        r = jobj_get_string(root, "model", &model);
        if (r == -ENOENT)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", "model",
                                          "You must provide a model parameter.") ?: -EINVAL;
        if (r < 0 || isempty(model) || strlen(model) > STORE_MODEL_NAME_MAX)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", "model",
                                          "The model parameter must be a string of 1 to %u bytes.", STORE_MODEL_NAME_MAX) ?: -EINVAL;
        r = jobj_get_bool(root, "stream", &stream);
        if (r == -EINVAL)
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", "stream",
                                          "The stream parameter must be true or false.") ?: -EINVAL;
        *ret_model = strdup(model);
        if (!*ret_model)
                return -ENOMEM;
        *ret_stream = stream;
        return 0;
}

/* A store failure while routing: 503, Retry-After 1 when it is only busy. */
static void api_request_store_failed(ApiRequest *pr, int r) {
        if (r == -EBUSY) {
                api_request_fail(pr, API_OUTCOME_UNAVAILABLE, 503, "server_error", "store_busy", 1,
                                 "The gateway's store is busy; try again shortly.");
                return;
        }
        log_error_errno(r, "Request %s: the store failed while looking for providers: %m", pr->id);
        api_request_fail(pr, API_OUTCOME_UNAVAILABLE, 503, "server_error", "store_unavailable", 0,
                         "The gateway's store is not available.");
}

/* Admission, candidates, the first attempt. Whatever happens, the exchange's close
 * handler records the request and frees it. */
static void api_request_dispatch(ApiRequest *pr) {
        GatewayApi *api = pr->api;
        StoreProviderFilter filter = {
                .usable_by = pr->user_id,
                .model = pr->capability ? NULL : pr->model,
                .capability = pr->capability ? pr->model : NULL,
                .online_only = true,
        };
        int r;

        if (api->hooks.admit) {
                ApiRequestInfo info = api_request_info(pr);

                r = api->hooks.admit(&info, pr->x, api->hooks.userdata);
                if (r > 0) {
                        api_request_fail(pr, API_OUTCOME_REFUSED, 429, "rate_limit_error", "rate_limit_exceeded",
                                         (uint64_t) r, "Rate limit reached for this API key; try again later.");
                        return;
                }
                if (r < 0) {
                        log_warning_errno(r, "Request %s: the admission check failed: %m", pr->id);
                        api_request_fail(pr, API_OUTCOME_UNAVAILABLE, 503, "server_error", "admission_unavailable", 1,
                                         "The gateway cannot check this request's limits now.");
                        return;
                }
        }
        pr->admitted = true;

        r = store_provider_list(api->store, &filter, &pr->candidates, &pr->n_candidates);
        if (r < 0) {
                api_request_store_failed(pr, r);
                return;
        }
        if (pr->n_candidates == 0) {
                _cleanup_free_ char *msg = NULL;
                StoreProvider *l = NULL;
                size_t n = 0;

                /* Known to this key but offline, or not known to it at all? */
                filter.online_only = false;
                r = store_provider_list(api->store, &filter, &l, &n);
                if (r < 0) {
                        api_request_store_failed(pr, r);
                        return;
                }
                store_providers_free(l, n);
                if (n > 0) {
                        api_request_fail(pr, API_OUTCOME_UNAVAILABLE, 503, "server_error", "no_provider_online",
                                         GATEWAY_API_OFFLINE_RETRY_AFTER_SEC,
                                         pr->capability ? "No provider of this capability is online now; try again later."
                                                        : "No provider of this model is online now; try again later.");
                        return;
                }
                if (asprintf(&msg, "The %s '%s' does not exist or you do not have access to it.",
                             api_request_what(pr), pr->model) < 0)
                        msg = NULL;
                pr->param = pr->capability ? NULL : "model";
                api_request_fail(pr, API_OUTCOME_MODEL_NOT_FOUND, 404, "invalid_request_error",
                                 pr->capability ? "capability_not_found" : "model_not_found", 0,
                                 msg ?: "It does not exist or you do not have access to it.");
                return;
        }

        if (pr->stream && api->opts.keepalive_interval_usec > 0) {
                r = sd_event_add_time_relative(api->event, &pr->keepalive, CLOCK_MONOTONIC,
                                               api->opts.keepalive_interval_usec, 10 * USEC_PER_MSEC,
                                               on_keepalive, pr);
                if (r < 0)
                        log_debug_errno(r, "Request %s: no keep-alives: %m", pr->id);
        }
        api_request_attempt(pr);
}

/* Forward the exchange to a provider of @name (a model, or a capability), sending @target
 * (both taken). From here on the exchange owns the request. */
static int api_request_begin(GatewayApi *api, HttpExchange *x, const char *id, const StoreApiKey *key,
                             char *target, char *name, bool stream, bool capability) {
        _cleanup_free_ char *t = target, *m = name;
        ApiRequest *pr;

        pr = new0(ApiRequest, 1);
        if (!pr)
                return -ENOMEM;
        *pr = (ApiRequest) {
                .api = api,
                .x = x,
                .target = TAKE_PTR(t),
                .model = TAKE_PTR(m),
                .stream = stream,
                .capability = capability,
                .key_id = key->id,
                .user_id = key->user_id,
                .start_usec = http_exchange_start_usec(x),
        };
        memcpy(pr->id, id, sizeof pr->id);
        forwarded_address_to_string(http_exchange_client(x), pr->client);
        api->n_in_flight++;
        http_exchange_set_userdata(x, pr, on_exchange_close, on_exchange_drain);
        api_request_dispatch(pr);
        return 0;
}

static int handle_forward(GatewayApi *api, HttpExchange *x, const char *id, const StoreApiKey *key, char *target) {
        _cleanup_free_ char *model = NULL, *t = target;
        bool stream = false;
        int r;

        r = parse_body(x, id, &model, &stream);
        if (r != 0)
                return r < 0 && !http_exchange_is_answered(x) ? r : 0;
        return api_request_begin(api, x, id, key, TAKE_PTR(t), TAKE_PTR(model), stream, false);
}

/* ---- capabilities --------------------------------------------------------------------- */

/* No online provider of @name for this user: 503 if it has offline ones, else 404. */
static int respond_capability_unavailable(GatewayApi *api, HttpExchange *x, const char *id, int64_t user_id,
                                          const char *name) {
        StoreProviderFilter filter = { .usable_by = user_id, .capability = name };
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        r = store_provider_list(api->store, &filter, &l, &n);
        if (r < 0)
                return respond_store_error(x, id, r, "looking for a capability");
        store_providers_free(l, n);
        if (n > 0)
                return respond_retry_after(x, id, 503, "server_error", "no_provider_online",
                                           GATEWAY_API_OFFLINE_RETRY_AFTER_SEC,
                                           "No provider of this capability is online now; try again later.");
        return http_respond_error(x, id, 404, "invalid_request_error", "capability_not_found", NULL,
                                  "The capability '%s' does not exist or you do not have access to it.", name);
}

/* GET /api/v1/capabilities/{name}: the provider the router would pick now, and its health. */
static int handle_capability_get(GatewayApi *api, HttpExchange *x, const char *id, int64_t user_id,
                                 const char *name) {
        StoreProviderFilter filter = { .usable_by = user_id, .capability = name, .online_only = true };
        _cleanup_(json_object_putp) json_object *root = NULL;
        json_object *prov = NULL, *health = NULL;
        const StoreProvider *p;
        StoreProvider *l = NULL;
        uint64_t now = now_usec(CLOCK_MONOTONIC), wait = 0;
        size_t n = 0, i;
        int r;

        r = store_provider_list(api->store, &filter, &l, &n);
        if (r < 0)
                return respond_store_error(x, id, r, "looking for a capability");
        if (n == 0) {
                store_providers_free(l, n);
                return respond_capability_unavailable(api, x, id, user_id, name);
        }
        r = router_pick(api->router, l, n, NULL, 0, now, &i, &wait);
        if (r < 0) {
                store_providers_free(l, n);
                return respond_retry_after(x, id, 503, "server_error", "no_provider_available",
                                           (wait + USEC_PER_SEC - 1) / USEC_PER_SEC,
                                           "Every provider of this capability failed recently; try again shortly.");
        }
        p = &l[i];
        root = capability_object(name, (unsigned) MIN(n, (size_t) UINT_MAX));
        prov = json_object_new_object();
        health = json_object_new_object();
        r = root && prov && health ? 0 : -ENOMEM;
        if (r >= 0 &&
            (jobj_add_int64(prov, "id", p->id) < 0 ||
             jobj_add_string(prov, "name", p->name) < 0 ||
             jobj_add_string(prov, "version", p->version) < 0 ||
             jobj_add_string(health, "state", store_provider_state_to_string(p->state)) < 0 ||
             jobj_add_bool(health, "online", p->online) < 0 ||
             jobj_add_int64(health, "last_heartbeat", (int64_t) (p->last_heartbeat_usec / USEC_PER_SEC)) < 0 ||
             jobj_add_int64(health, "in_flight", p->in_flight) < 0 ||
             jobj_add_int64(health, "capacity", p->capacity) < 0 ||
             jobj_add_int64(health, "gateway_in_flight", router_in_flight(api->router, p->id)) < 0 ||
             jobj_add_bool(health, "recently_failed", router_is_backing_off(api->router, p->id, now)) < 0))
                r = -ENOMEM;
        store_providers_free(l, n);
        if (r >= 0 && jobj_add(prov, "health", TAKE_PTR(health)) < 0)
                r = -ENOMEM;
        if (r >= 0 && jobj_add(root, "provider", TAKE_PTR(prov)) < 0)
                r = -ENOMEM;
        json_object_put(prov);
        json_object_put(health);
        if (r < 0)
                return r;
        return http_respond_json(x, id, 200, root);
}

/* POST /api/v1/capabilities/{name}/exec: any JSON body, forwarded like a model's request. */
static int handle_capability_exec(GatewayApi *api, HttpExchange *x, const char *id, const StoreApiKey *key,
                                  const char *name) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_free_ char *target = NULL, *n = NULL;
        int r;

        r = parse_json_body(x, id, "JSON (a capability takes any JSON value)", &root);
        if (r != 0)
                return r < 0 && !http_exchange_is_answered(x) ? r : 0;
        if (asprintf(&target, GATEWAY_API_CAPABILITIES_PATH "/%s/exec", name) < 0)
                return -ENOMEM;
        n = strdup(name);
        if (!n)
                return -ENOMEM;
        return api_request_begin(api, x, id, key, TAKE_PTR(target), TAKE_PTR(n), false, true);
}

static bool target_is_signable(const char *target) {
        if (strlen(target) > REQUEST_SIGN_TARGET_MAX)
                return false;
        for (const char *p = target; *p; p++)
                if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
                        return false;
        return true;
}

int gateway_api_handle(GatewayApi *api, HttpExchange *x) {
        _cleanup_(store_api_key_deinit) StoreApiKey key = {};
        _cleanup_free_ char *target = NULL, *model = NULL;
        const char *method = http_exchange_method(x), *rest;
        char id[HTTP_REQUEST_ID_SIZE];
        enum { MODELS, MODEL_GET, FORWARD, CAPABILITIES, CAPABILITY_GET, CAPABILITY_EXEC } kind;
        int r;

        http_request_id_new(id);
        target = http_path_normalize(http_exchange_target(x));
        if (!target)
                return -ENOMEM;

        rest = startswith(target, GATEWAY_API_CAPABILITIES_PATH);
        if (rest && *rest != 0 && *rest != '/' && *rest != '?')
                rest = NULL;
        if ((!startswith(target, "/v1/") && !rest) || http_path_has_dot_segment(target))
                return http_respond_error(x, id, 404, "invalid_request_error", "unknown_url", NULL,
                                          "Unknown request URL: %s %s.", method, http_exchange_path(x));
        if (rest && *rest != '/') {
                if (!streq(method, "GET")) {
                        (void) http_exchange_add_header(x, "Allow", "GET");
                        return http_respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                  "Use GET for " GATEWAY_API_CAPABILITIES_PATH ".");
                }
                kind = CAPABILITIES;
        } else if (rest) {
                size_t k = strcspn(++rest, "/?");
                bool exec = rest[k] == '/';

                if (exec && !http_path_is(rest + k, "/exec"))
                        return http_respond_error(x, id, 404, "invalid_request_error", "unknown_url", NULL,
                                                  "Unknown request URL: %s %s. Capabilities are run with POST "
                                                  GATEWAY_API_CAPABILITIES_PATH "/NAME/exec.", method, http_exchange_path(x));
                if (!streq(method, exec ? "POST" : "GET")) {
                        (void) http_exchange_add_header(x, "Allow", exec ? "POST" : "GET");
                        return http_respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                  "Use %s for %s.", exec ? "POST" : "GET", http_exchange_path(x));
                }
                r = percent_decode(rest, k, &model);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                                  "The capability in the URL is not validly percent-encoded.");
                kind = exec ? CAPABILITY_EXEC : CAPABILITY_GET;
        } else if (http_path_is(target, "/v1/models")) {
                if (!streq(method, "GET")) {
                        (void) http_exchange_add_header(x, "Allow", "GET");
                        return http_respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                  "Use GET for /v1/models.");
                }
                kind = MODELS;
        } else if ((rest = startswith(target, "/v1/models/"))) {
                if (!streq(method, "GET")) {
                        (void) http_exchange_add_header(x, "Allow", "GET");
                        return http_respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                  "Use GET for /v1/models/{model}.");
                }
                r = percent_decode(rest, strcspn(rest, "?"), &model);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", "model",
                                                  "The model in the URL is not validly percent-encoded.");
                kind = MODEL_GET;
        } else if (streq(method, "POST")) {
                if (!target_is_signable(target))
                        return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                                  "The request URL must be printable ASCII (percent-encode the rest) and at most %u bytes.",
                                                  REQUEST_SIGN_TARGET_MAX);
                kind = FORWARD;
        } else if (http_path_is(target, "/v1/chat/completions") || http_path_is(target, "/v1/completions") ||
                   http_path_is(target, "/v1/embeddings")) {
                (void) http_exchange_add_header(x, "Allow", "POST");
                return http_respond_error(x, id, 405, "invalid_request_error", "method_not_allowed", NULL,
                                          "Use POST for %s.", http_exchange_path(x));
        } else
                return http_respond_error(x, id, 404, "invalid_request_error", "unknown_url", NULL,
                                          "Unknown request URL: %s %s.", method, http_exchange_path(x));

        /* The key, its limits, the providers and the first provider's secret are read in this
         * callback: one read transaction for them all, not one each (store_read_begin()). */
        _cleanup_(store_read_endp) Store *snapshot = store_read_begin(api->store);

        r = authenticate(api, x, id, &key);
        if (r != 0)
                return http_exchange_is_answered(x) ? 0 : r;
        if ((kind == CAPABILITY_GET || kind == CAPABILITY_EXEC) && !store_capability_name_is_valid(model))
                return http_respond_error(x, id, 400, "invalid_request_error", "invalid_request", NULL,
                                          "A capability's name is 1 to %u of letters, digits, '.', '_', ':' and '-', "
                                          "starting with a letter or digit.", STORE_TAG_MAX);

        switch (kind) {
        case MODELS:
                return handle_models(api, x, id, key.user_id, NULL, false);
        case MODEL_GET:
                return handle_models(api, x, id, key.user_id, model, false);
        case CAPABILITIES:
                return handle_models(api, x, id, key.user_id, NULL, true);
        case CAPABILITY_GET:
                return handle_capability_get(api, x, id, key.user_id, model);
        case CAPABILITY_EXEC:
                return handle_capability_exec(api, x, id, &key, model);
        default:
                return handle_forward(api, x, id, &key, TAKE_PTR(target));
        }
}

/* ---- set-up ------------------------------------------------------------------------------ */

int gateway_api_new(sd_event *event, Store *store, const GatewayApiOptions *opts, GatewayApi **ret) {
        _cleanup_(gateway_api_freep) GatewayApi *api = NULL;
        HttpClientOptions copts;
        int r;

        assert(event && store && ret);
        api = new0(GatewayApi, 1);
        if (!api)
                return -ENOMEM;
        *api = (GatewayApi) {
                .event = sd_event_ref(event),
                .store = store,
                .opts = opts ? *opts : (GatewayApiOptions) {},
                .log_limit = { .interval_usec = 10 * USEC_PER_SEC, .burst = 20 },
        };
        if (api->opts.connect_timeout_usec == 0)
                api->opts.connect_timeout_usec = GATEWAY_API_CONNECT_TIMEOUT_USEC_DEFAULT;
        if (api->opts.first_byte_timeout_usec == 0)
                api->opts.first_byte_timeout_usec = GATEWAY_API_FIRST_BYTE_TIMEOUT_USEC_DEFAULT;
        if (api->opts.idle_timeout_usec == 0)
                api->opts.idle_timeout_usec = GATEWAY_API_IDLE_TIMEOUT_USEC_DEFAULT;
        if (api->opts.max_attempts == 0)
                api->opts.max_attempts = GATEWAY_API_MAX_ATTEMPTS_DEFAULT;
        api->opts.max_attempts = MIN(api->opts.max_attempts, GATEWAY_API_MAX_ATTEMPTS_MAX);

        copts = (HttpClientOptions) {
                .connect_timeout_usec = api->opts.connect_timeout_usec,
                .idle_timeout_usec = api->opts.idle_timeout_usec,
                .max_connections = api->opts.max_connections,
                .max_idle_connections = MIN(api->opts.max_connections ?: 1024U, 256U),
        };
        r = http_client_new(event, &copts, &api->client);
        if (r < 0)
                return r;
        r = router_new(api->opts.backoff_min_usec, api->opts.backoff_max_usec, &api->router);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(api);
        return 0;
}

GatewayApi *gateway_api_free(GatewayApi *api) {
        if (!api)
                return NULL;
        api->client = http_client_free(api->client);
        api->router = router_free(api->router);
        sd_event_unref(api->event);
        return mfree(api);
}

unsigned gateway_api_in_flight(GatewayApi *api) {
        return api ? api->n_in_flight : 0;
}

void gateway_api_set_hooks(GatewayApi *api, const GatewayApiHooks *hooks) {
        api->hooks = hooks ? *hooks : (GatewayApiHooks) {};
}
