/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleanup.h"
#include "gateway-accounting.h"
#include "gateway-config.h"
#include "http-forward.h"
#include "json-util.h"
#include "log.h"
#include "parse-util.h"

struct Accounting {
        sd_event *event;
        Store *store;
        KeyLimiter *limiter;
        KeyLimits defaults;
        uint64_t retention_usec;
        StoreUsageRecord *queue;        /* oldest first */
        size_t n_queue, allocated;
        uint64_t dropped;               /* rows lost to a full queue or a failed write */
        sd_event_source *flush_timer;
        sd_event_source *prune_timer;
        RateLimit log_limit;
};

static void usage_record_done(StoreUsageRecord *u) {
        u->model = mfree(u->model);
}

static void queue_drop_front(Accounting *a, size_t n) {
        for (size_t i = 0; i < n; i++)
                usage_record_done(&a->queue[i]);
        memmove(a->queue, a->queue + n, (a->n_queue - n) * sizeof *a->queue);
        a->n_queue -= n;
}

/* Write up to @max_batches batches. Return: 0 when the queue is empty, -EAGAIN when rows
 * wait (the store was busy, or there are more), another negative errno when a batch was lost. */
static int accounting_write(Accounting *a, unsigned max_batches) {
        int r = 0;

        for (unsigned b = 0; a->n_queue > 0 && b < max_batches; b++) {
                size_t n = MIN(a->n_queue, (size_t) STORE_USAGE_BATCH_MAX);

                r = store_usage_insert(a->store, a->queue, n);
                if (r == -EBUSY)
                        return -EAGAIN;         /* kept for the next tick */
                if (r < 0) {
                        log_ratelimit_warning(&a->log_limit, "Failed to write %zu usage row(s), dropping them: %s",
                                              n, strerror(-r));
                        a->dropped += n;
                }
                queue_drop_front(a, n);
        }
        return a->n_queue > 0 ? -EAGAIN : r;
}

static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Accounting *a = userdata;

        if (accounting_write(a, 8) == -EAGAIN) {
                (void) sd_event_source_set_time_relative(s, ACCOUNTING_FLUSH_USEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

void accounting_flush(Accounting *a) {
        (void) accounting_write(a, UINT_MAX);
}

static int on_prune_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Accounting *a = userdata;
        uint64_t now = now_usec(CLOCK_REALTIME), next = ACCOUNTING_PRUNE_USEC;
        int r;

        r = store_usage_prune(a->store, now > a->retention_usec ? now - a->retention_usec : 0, ACCOUNTING_PRUNE_BATCH);
        if (r < 0)
                log_ratelimit_warning(&a->log_limit, "Failed to delete old usage rows, trying again later: %s",
                                      strerror(-r));
        else if (r > 0) {
                log_debug("Deleted %d usage row(s) older than [Usage] Retention=.", r);
                if ((unsigned) r >= ACCOUNTING_PRUNE_BATCH)
                        next = USEC_PER_SEC;    /* more to go: a batch a second keeps the loop free */
        }
        (void) sd_event_source_set_time_relative(s, next);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

Accounting *accounting_free(Accounting *a) {
        if (!a)
                return NULL;
        if (a->n_queue > 0) {
                accounting_flush(a);
                if (a->n_queue > 0)
                        log_warning("Could not write %zu usage row(s) before stopping; they are lost.", a->n_queue);
        }
        for (size_t i = 0; i < a->n_queue; i++)
                usage_record_done(&a->queue[i]);
        free(a->queue);
        a->flush_timer = sd_event_source_disable_unref(a->flush_timer);
        a->prune_timer = sd_event_source_disable_unref(a->prune_timer);
        a->limiter = key_limiter_free(a->limiter);
        sd_event_unref(a->event);
        return mfree(a);
}

int accounting_new(sd_event *event, Store *store, const AccountingOptions *opts, Accounting **ret) {
        _cleanup_(accounting_freep) Accounting *a = NULL;
        int r;

        assert(event && store && opts && ret);
        a = new0(Accounting, 1);
        if (!a)
                return -ENOMEM;
        *a = (Accounting) {
                .event = sd_event_ref(event),
                .store = store,
                .defaults = opts->defaults,
                .retention_usec = opts->retention_usec ?: GATEWAY_USAGE_RETENTION_USEC_DEFAULT,
                .log_limit = { .interval_usec = 10 * USEC_PER_SEC, .burst = 5 },
        };
        a->limiter = key_limiter_new(KEY_LIMITER_SLOTS);
        if (!a->limiter)
                return -ENOMEM;
        r = sd_event_add_time_relative(event, &a->flush_timer, CLOCK_MONOTONIC, ACCOUNTING_FLUSH_USEC,
                                       100 * USEC_PER_MSEC, on_flush_timer, a);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->flush_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        /* The first pruning soon after the start, then hourly. */
        r = sd_event_add_time_relative(event, &a->prune_timer, CLOCK_MONOTONIC, 10 * USEC_PER_SEC,
                                       USEC_PER_SEC, on_prune_timer, a);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

/* ---- limits ------------------------------------------------------------------------------- */

static uint64_t effective_limit(uint64_t def, int64_t own) {
        if (own == STORE_LIMIT_DEFAULT)
                return def;
        if (own == STORE_LIMIT_UNLIMITED)
                return KEY_LIMIT_UNLIMITED;
        return (uint64_t) own;
}

KeyLimits accounting_effective_limits(const KeyLimits *defaults, const StoreKeyLimits *own) {
        return (KeyLimits) {
                .requests_per_minute = effective_limit(defaults->requests_per_minute, own->requests_per_minute),
                .tokens_per_minute = effective_limit(defaults->tokens_per_minute, own->tokens_per_minute),
                .concurrent_streams = effective_limit(defaults->concurrent_streams, own->concurrent_streams),
        };
}

/* The limits of a key now: a key gone from the store meanwhile has the defaults. */
static int key_limits(Accounting *a, int64_t key_id, KeyLimits *ret) {
        StoreKeyLimits own = { STORE_LIMIT_DEFAULT, STORE_LIMIT_DEFAULT, STORE_LIMIT_DEFAULT };
        int r;

        r = store_api_key_get_limits(a->store, key_id, &own);
        if (r < 0 && r != -ENOENT)
                return r;
        *ret = accounting_effective_limits(&a->defaults, &own);
        return 0;
}

static void add_u64_header(HttpExchange *x, const char *name, uint64_t v) {
        char buf[24];

        snprintf(buf, sizeof buf, "%" PRIu64, v);
        (void) http_exchange_add_header(x, name, buf);
}

static void add_limit_headers(HttpExchange *x, const KeyLimitStatus *st) {
        char buf[32];

        if (st->requests_limit != KEY_LIMIT_UNLIMITED) {
                add_u64_header(x, "x-ratelimit-limit-requests", st->requests_limit);
                add_u64_header(x, "x-ratelimit-remaining-requests", st->requests_remaining);
                key_limit_format_reset(st->requests_reset_usec, buf, sizeof buf);
                (void) http_exchange_add_header(x, "x-ratelimit-reset-requests", buf);
        }
        if (st->tokens_limit != KEY_LIMIT_UNLIMITED) {
                add_u64_header(x, "x-ratelimit-limit-tokens", st->tokens_limit);
                add_u64_header(x, "x-ratelimit-remaining-tokens", st->tokens_remaining);
                key_limit_format_reset(st->tokens_reset_usec, buf, sizeof buf);
                (void) http_exchange_add_header(x, "x-ratelimit-reset-tokens", buf);
        }
}

static const char *const verdict_table[_KEY_LIMIT_VERDICT_MAX] = {
        [KEY_LIMIT_OK] = "ok",
        [KEY_LIMIT_REQUESTS] = "requests per minute",
        [KEY_LIMIT_TOKENS] = "tokens per minute",
        [KEY_LIMIT_STREAMS] = "concurrent streams",
};

int accounting_admit(Accounting *a, const ApiRequestInfo *info, HttpExchange *x) {
        KeyLimitStatus st;
        KeyLimits l;
        int r;

        r = key_limits(a, info->key_id, &l);
        if (r < 0)
                return r;
        if (key_limiter_admit(a->limiter, info->key_id, &l, info->stream, now_usec(CLOCK_MONOTONIC), &st)) {
                add_limit_headers(x, &st);
                return 0;
        }
        add_limit_headers(x, &st);
        if (st.never)
                (void) http_exchange_add_header(x, "x-should-retry", "false");
        log_debug("Request %s: API key %" PRId64 " is over its limit of %s%s; refused, retry after %u s.",
                  info->id, info->key_id, verdict_table[st.verdict], st.never ? " (0: never)" : "", st.retry_after_sec);
        return (int) MAX(st.retry_after_sec, 1U);
}

/* ---- usage rows --------------------------------------------------------------------------- */

static int queue_record(Accounting *a, const ApiRequestRecord *rec) {
        StoreUsageRecord *u;
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        /* The API only records parsed requests, which have both; a row the store would
         * refuse must not take its whole batch with it. */
        if (isempty(rec->info.model) || !api_outcome_to_string(rec->outcome) || rec->info.key_id <= 0)
                return -EINVAL;
        if (a->n_queue >= ACCOUNTING_QUEUE_MAX) {
                a->dropped++;
                log_ratelimit_warning(&a->log_limit, "The usage queue is full (%u rows; is the store slow?): "
                                      "dropping the record of request %s.", ACCOUNTING_QUEUE_MAX, rec->info.id);
                return -ENOBUFS;
        }
        if (a->n_queue >= a->allocated) {
                size_t k = MIN(MAX(a->allocated * 2, (size_t) 64), (size_t) ACCOUNTING_QUEUE_MAX);
                StoreUsageRecord *q = reallocarray(a->queue, k, sizeof *q);

                if (!q)
                        return -ENOMEM;
                a->queue = q;
                a->allocated = k;
        }
        u = &a->queue[a->n_queue];
        *u = (StoreUsageRecord) {
                .started_usec = now > rec->duration_usec ? now - rec->duration_usec : 0,
                .key_id = rec->info.key_id,
                .user_id = rec->info.user_id,
                .provider_id = rec->provider_id,
                .capability = rec->info.capability,
                .stream = rec->info.stream,
                .outcome = api_outcome_to_string(rec->outcome),
                .status = rec->status,
                .attempts = rec->attempts,
                .prompt_tokens = rec->prompt_tokens,
                .completion_tokens = rec->completion_tokens,
                .usage_reported = rec->usage_reported,
                .time_to_first_token_usec = rec->time_to_first_token_usec,
                .duration_usec = rec->duration_usec,
        };
        snprintf(u->request_id, sizeof u->request_id, "%s", rec->info.id);
        u->model = strdup(rec->info.model);
        if (!u->model)
                return -ENOMEM;
        a->n_queue++;
        if (sd_event_source_get_enabled(a->flush_timer, NULL) == 0) {
                r = sd_event_source_set_time_relative(a->flush_timer, ACCOUNTING_FLUSH_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(a->flush_timer, SD_EVENT_ONESHOT);
                if (r < 0)
                        accounting_flush(a);    /* no timer: at once rather than never */
        }
        return 0;
}

void accounting_finished(Accounting *a, const ApiRequestRecord *rec) {
        int r;

        if (rec->admitted) {
                KeyLimits l;

                if (key_limits(a, rec->info.key_id, &l) < 0)
                        l = a->defaults;
                key_limiter_finish(a->limiter, rec->info.key_id, &l, rec->info.stream,
                                   rec->prompt_tokens + rec->completion_tokens, now_usec(CLOCK_MONOTONIC));
        }
        r = queue_record(a, rec);
        if (r == -ENOMEM)
                log_ratelimit_warning(&a->log_limit, "Out of memory recording the usage of request %s.", rec->info.id);
}

/* ---- GET /api/v1/usage -------------------------------------------------------------------- */

/* The value of @name in the query of @target ("…?a=1&b=2"), copied into @buf; NULL if absent. */
static const char *query_param(const char *target, const char *name, char *buf, size_t size) {
        const char *q = strchr(target, '?');
        size_t n = strlen(name);

        for (const char *p = q ? q + 1 : NULL; p && *p; ) {
                size_t len = strcspn(p, "&");

                if (len > n && strncmp(p, name, n) == 0 && p[n] == '=') {
                        size_t v = MIN(len - n - 1, size - 1);

                        memcpy(buf, p + n + 1, v);
                        buf[v] = 0;
                        return buf;
                }
                p += len;
                if (*p == '&')
                        p++;
        }
        return NULL;
}

static json_object *usage_total_object(const StoreUsageTotal *t, StoreUsageGroup group) {
        json_object *o = json_object_new_object();
        char name[STORE_MODEL_NAME_MAX + 8];

        if (!o)
                return NULL;
        if (group == STORE_USAGE_BY_KEY)
                snprintf(name, sizeof name, "ic-%s", t->name ?: "????????");
        else
                snprintf(name, sizeof name, "%s", t->name ?: "");
        if (jobj_add_string(o, store_usage_group_to_string(group), name) < 0 ||
            (group != STORE_USAGE_BY_MODEL && jobj_add_int64(o, "id", t->id) < 0) ||
            jobj_add_int64(o, "requests", (int64_t) t->requests) < 0 ||
            jobj_add_int64(o, "ok", (int64_t) t->ok) < 0 ||
            jobj_add_int64(o, "failed", (int64_t) t->failed) < 0 ||
            jobj_add_int64(o, "truncated", (int64_t) t->truncated) < 0 ||
            jobj_add_int64(o, "cancelled", (int64_t) t->cancelled) < 0 ||
            jobj_add_int64(o, "other", (int64_t) t->other) < 0 ||
            jobj_add_int64(o, "prompt_tokens", (int64_t) t->prompt_tokens) < 0 ||
            jobj_add_int64(o, "completion_tokens", (int64_t) t->completion_tokens) < 0 ||
            jobj_add_int64(o, "total_tokens", (int64_t) (t->prompt_tokens + t->completion_tokens)) < 0 ||
            jobj_add_int64(o, "duration_ms", (int64_t) (t->duration_usec / USEC_PER_MSEC)) < 0 ||
            jobj_add_int64(o, "avg_time_to_first_token_ms",
                           t->first_token_requests > 0
                           ? (int64_t) (t->time_to_first_token_usec / t->first_token_requests / USEC_PER_MSEC) : 0) < 0 ||
            jobj_add_int64(o, "first_request", (int64_t) (t->first_usec / USEC_PER_SEC)) < 0 ||
            jobj_add_int64(o, "last_request", (int64_t) (t->last_usec / USEC_PER_SEC)) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* A query time in seconds since the epoch; absent: @def. */
static int query_time(const char *target, const char *name, uint64_t def, uint64_t *ret) {
        char buf[32];
        uint64_t v;

        if (!query_param(target, name, buf, sizeof buf)) {
                *ret = def;
                return 0;
        }
        if (parse_uint64(buf, &v) < 0 || v > INT64_MAX / USEC_PER_SEC)
                return -EINVAL;
        *ret = v * USEC_PER_SEC;
        return 0;
}

int accounting_handle_usage(Accounting *a, HttpExchange *x, const char *id, const StoreApiKey *key) {
        _cleanup_(json_object_putp) json_object *root = NULL, *data = NULL;
        const char *target = http_exchange_target(x);
        StoreUsageFilter f = { .user_id = key->user_id };
        StoreUsageTotal *l = NULL;
        char group[16];
        size_t n = 0;
        int r;

        (void) http_exchange_add_header(x, "x-request-id", id);
        if (!streq(http_exchange_method(x), "GET")) {
                (void) http_exchange_add_header(x, "Allow", "GET");
                return http_exchange_respond_error(x, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                   "Use GET for " ACCOUNTING_USAGE_PATH ".");
        }
        if (query_time(target, "since", 0, &f.since_usec) < 0)
                return http_exchange_respond_error(x, 400, "invalid_request_error", "invalid_request", "since",
                                                   "since must be a time in seconds since the epoch.");
        if (query_time(target, "until", 0, &f.until_usec) < 0 || (f.until_usec > 0 && f.until_usec <= f.since_usec))
                return http_exchange_respond_error(x, 400, "invalid_request_error", "invalid_request", "until",
                                                   "until must be a time in seconds since the epoch, after since.");
        f.group = STORE_USAGE_BY_KEY;
        if (query_param(target, "group_by", group, sizeof group)) {
                f.group = store_usage_group_from_string(group);
                if (f.group < 0 || f.group == STORE_USAGE_BY_USER)
                        return http_exchange_respond_error(x, 400, "invalid_request_error", "invalid_request", "group_by",
                                                           "group_by must be key, provider or model.");
        }

        accounting_flush(a);    /* what is queued counts too */
        r = store_usage_totals(a->store, &f, &l, &n);
        if (r == -EBUSY) {
                (void) http_exchange_add_header(x, "Retry-After", "1");
                return http_exchange_respond_error(x, 503, "server_error", "store_busy", NULL,
                                                   "The gateway's store is busy; try again shortly.");
        }
        if (r < 0) {
                log_error_errno(r, "Request %s: failed to read the usage totals: %m", id);
                return http_exchange_respond_error(x, 503, "server_error", "store_unavailable", NULL,
                                                   "The gateway's store is not available.");
        }
        root = json_object_new_object();
        data = json_object_new_array();
        r = root && data ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                json_object *o = usage_total_object(&l[i], f.group);

                if (!o || json_object_array_add(data, o) < 0) {
                        json_object_put(o);
                        r = -ENOMEM;
                }
        }
        store_usage_totals_free(l, n);
        if (r < 0)
                return r;
        if (jobj_add_string(root, "object", "list") < 0 ||
            jobj_add_string(root, "group_by", store_usage_group_to_string(f.group)) < 0 ||
            jobj_add_int64(root, "since", (int64_t) (f.since_usec / USEC_PER_SEC)) < 0 ||
            (f.until_usec > 0 && jobj_add_int64(root, "until", (int64_t) (f.until_usec / USEC_PER_SEC)) < 0) ||
            jobj_add(root, "data", TAKE_PTR(data)) < 0)
                return -ENOMEM;
        return http_respond_json(x, NULL, 200, root);   /* x-request-id is set above */
}
