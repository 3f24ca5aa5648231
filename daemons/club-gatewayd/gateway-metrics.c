/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdio.h>

#include "cleanup.h"
#include "gateway-metrics.h"
#include "log.h"

#define PROVIDER_NONE 0
#define PROVIDER_OTHER (-1)
#define N_BUCKETS 12U

typedef enum MetricsApi {
        METRICS_API_OPENAI,
        METRICS_API_CAPABILITY,
        _METRICS_API_MAX,
} MetricsApi;

static const char *const api_label[_METRICS_API_MAX] = {
        [METRICS_API_OPENAI] = "openai",
        [METRICS_API_CAPABILITY] = "capability",
};

typedef struct Bucket {
        uint64_t usec;
        const char *le;
} Bucket;

/* From a quick local model to one that loads for minutes. */
static const Bucket ttft_buckets[N_BUCKETS] = {
        { 50 * USEC_PER_MSEC, "0.05" }, { 100 * USEC_PER_MSEC, "0.1" }, { 250 * USEC_PER_MSEC, "0.25" },
        { 500 * USEC_PER_MSEC, "0.5" }, { 1 * USEC_PER_SEC, "1" }, { 2500 * USEC_PER_MSEC, "2.5" },
        { 5 * USEC_PER_SEC, "5" }, { 10 * USEC_PER_SEC, "10" }, { 30 * USEC_PER_SEC, "30" },
        { 60 * USEC_PER_SEC, "60" }, { 120 * USEC_PER_SEC, "120" }, { 300 * USEC_PER_SEC, "300" },
};

/* From an embedding to a long generation. */
static const Bucket duration_buckets[N_BUCKETS] = {
        { 100 * USEC_PER_MSEC, "0.1" }, { 250 * USEC_PER_MSEC, "0.25" }, { 500 * USEC_PER_MSEC, "0.5" },
        { 1 * USEC_PER_SEC, "1" }, { 2500 * USEC_PER_MSEC, "2.5" }, { 5 * USEC_PER_SEC, "5" },
        { 10 * USEC_PER_SEC, "10" }, { 30 * USEC_PER_SEC, "30" }, { 60 * USEC_PER_SEC, "60" },
        { 120 * USEC_PER_SEC, "120" }, { 300 * USEC_PER_SEC, "300" }, { 600 * USEC_PER_SEC, "600" },
};

typedef struct Histogram {
        uint64_t buckets[N_BUCKETS];    /* per bucket, not cumulative; the rest is above the last */
        uint64_t count;
        uint64_t sum_usec;
} Histogram;

typedef struct StatusCount {
        unsigned status;
        uint64_t count;
} StatusCount;

typedef struct Series {
        MetricsApi api;
        int64_t provider;               /* > 0 an id, PROVIDER_NONE, PROVIDER_OTHER */
        char *model;
        uint64_t outcomes[_API_OUTCOME_MAX];
        StatusCount statuses[METRICS_STATUSES_MAX];
        uint64_t statuses_other;
        Histogram ttft, duration;
        uint64_t prompt_tokens, completion_tokens;
        uint64_t last_usec;             /* the last request counted here, CLOCK_MONOTONIC */
} Series;

struct Metrics {
        Series **series;                /* sorted by api, provider, model */
        size_t n_series;
        unsigned max_series;            /* not counting the overflow series */
        Series *overflow[_METRICS_API_MAX];
        uint64_t n_overflowed;
        uint64_t n_evicted;
        uint64_t evict_not_before;      /* no series can be idle long enough before this */
        uint64_t (*clock)(void *userdata);
        void *clock_userdata;
        HttpServer *server;
        MetricsGaugesFunc gauges;
        void *userdata;
};

static Series *series_free(Series *s) {
        if (!s)
                return NULL;
        free(s->model);
        return mfree(s);
}

static Series *series_new(MetricsApi api, int64_t provider, const char *model) {
        Series *s = new0(Series, 1);

        if (!s)
                return NULL;
        s->api = api;
        s->provider = provider;
        s->model = strdup(model);
        if (!s->model)
                return mfree(s);
        return s;
}

int metrics_new(unsigned max_series, Metrics **ret) {
        Metrics *m;

        assert(ret);
        if (max_series > METRICS_SERIES_MAX_MAX)
                return -EINVAL;
        m = new0(Metrics, 1);
        if (!m)
                return -ENOMEM;
        m->max_series = max_series ?: METRICS_SERIES_MAX_DEFAULT;
        *ret = m;
        return 0;
}

void metrics_set_clock(Metrics *m, uint64_t (*clock)(void *userdata), void *userdata) {
        m->clock = clock;
        m->clock_userdata = userdata;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        m->server = http_server_free(m->server);
        for (size_t i = 0; i < m->n_series; i++)
                series_free(m->series[i]);
        free(m->series);
        for (size_t i = 0; i < _METRICS_API_MAX; i++)
                series_free(m->overflow[i]);
        return mfree(m);
}

static int series_cmp(MetricsApi api, int64_t provider, const char *model, const Series *s) {
        if (api != s->api)
                return api < s->api ? -1 : 1;
        if (provider != s->provider)
                return provider < s->provider ? -1 : 1;
        return strcmp(model, s->model);
}

/* When full, make room by dropping the series idle the longest, if idle long enough. The
 * scan is done again only once its answer can have changed, so that a full registry does
 * not cost a scan per request. */
static void metrics_evict_idle(Metrics *m, uint64_t now, size_t *pos) {
        size_t oldest = SIZE_MAX;

        if (now < m->evict_not_before)
                return;
        for (size_t i = 0; i < m->n_series; i++)
                if (oldest == SIZE_MAX || m->series[i]->last_usec < m->series[oldest]->last_usec)
                        oldest = i;
        if (oldest == SIZE_MAX)
                return;
        if (now - m->series[oldest]->last_usec < METRICS_SERIES_IDLE_USEC) {
                m->evict_not_before = m->series[oldest]->last_usec + METRICS_SERIES_IDLE_USEC;
                return;
        }
        series_free(m->series[oldest]);
        memmove(m->series + oldest, m->series + oldest + 1, (m->n_series - oldest - 1) * sizeof(Series *));
        m->n_series--;
        m->n_evicted++;
        if (oldest < *pos)
                (*pos)--;
}

/* The series for the key, made if there is room; the api's overflow series otherwise. */
static Series *metrics_series(Metrics *m, MetricsApi api, int64_t provider, const char *model, uint64_t now) {
        size_t lo = 0, hi = m->n_series;
        Series *s, **l;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = series_cmp(api, provider, model, m->series[mid]);

                if (c == 0)
                        return m->series[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        s = NULL;
        if (m->n_series >= m->max_series)
                metrics_evict_idle(m, now, &lo);
        if (m->n_series < m->max_series) {
                l = reallocarray(m->series, m->n_series + 1, sizeof(Series *));
                if (l) {
                        m->series = l;
                        s = series_new(api, provider, model);
                }
        }
        if (s) {
                memmove(m->series + lo + 1, m->series + lo, (m->n_series - lo) * sizeof(Series *));
                m->series[lo] = s;
                m->n_series++;
                return s;
        }
        /* Full (or out of memory): the overflow series, made once. */
        m->n_overflowed++;
        if (!m->overflow[api])
                m->overflow[api] = series_new(api, PROVIDER_OTHER, METRICS_LABEL_OTHER);
        return m->overflow[api];
}

static void histogram_observe(Histogram *h, const Bucket *b, uint64_t usec) {
        for (size_t i = 0; i < N_BUCKETS; i++)
                if (usec <= b[i].usec) {
                        h->buckets[i]++;
                        break;
                }
        h->count++;
        h->sum_usec += usec;
}

static void series_count_status(Series *s, unsigned status) {
        for (size_t i = 0; i < METRICS_STATUSES_MAX; i++) {
                if (s->statuses[i].status == status || s->statuses[i].status == 0) {
                        s->statuses[i].status = status;
                        s->statuses[i].count++;
                        return;
                }
        }
        s->statuses_other++;
}

void metrics_observe(Metrics *m, const ApiRequestRecord *rec) {
        MetricsApi api;
        const char *model;
        uint64_t now;
        Series *s;

        if (!m)
                return;
        assert(rec);
        api = rec->info.capability ? METRICS_API_CAPABILITY : METRICS_API_OPENAI;
        /* A name no provider serves is whatever the client made up: one label for all. */
        model = rec->outcome == API_OUTCOME_MODEL_NOT_FOUND || !rec->info.model ? "unknown" : rec->info.model;
        now = m->clock ? m->clock(m->clock_userdata) : now_usec(CLOCK_MONOTONIC);
        s = metrics_series(m, api, rec->provider_id > 0 ? rec->provider_id : PROVIDER_NONE, model, now);
        if (!s)
                return;
        s->last_usec = now;
        if (rec->outcome >= 0 && rec->outcome < _API_OUTCOME_MAX)
                s->outcomes[rec->outcome]++;
        if (rec->status >= 400)
                series_count_status(s, rec->status);
        if (rec->time_to_first_token_usec > 0)
                histogram_observe(&s->ttft, ttft_buckets, rec->time_to_first_token_usec);
        histogram_observe(&s->duration, duration_buckets, rec->duration_usec);
        s->prompt_tokens += rec->prompt_tokens;
        s->completion_tokens += rec->completion_tokens;
}

/* ---- the text format ----------------------------------------------------------------- */

static void put_label_value(FILE *f, const char *v) {
        for (; *v; v++)
                switch (*v) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*v, f);
                }
}

/* name{api="…",provider="…",model="…"[,extra]} */
static void put_series(FILE *f, const char *name, const Series *s, const char *extra) {
        fprintf(f, "%s{api=\"%s\",provider=\"", name, api_label[s->api]);
        if (s->provider > 0)
                fprintf(f, "%" PRId64, s->provider);
        else
                fputs(s->provider == PROVIDER_NONE ? "none" : METRICS_LABEL_OTHER, f);
        fputs("\",model=\"", f);
        put_label_value(f, s->model);
        fputc('"', f);
        if (extra)
                fprintf(f, ",%s", extra);
        fputs("} ", f);
}

static void put_header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef void (*SeriesWriter)(FILE *f, const char *name, const Series *s);

static void for_each_series(Metrics *m, FILE *f, const char *name, SeriesWriter w) {
        for (size_t i = 0; i < m->n_series; i++)
                w(f, name, m->series[i]);
        for (size_t i = 0; i < _METRICS_API_MAX; i++)
                if (m->overflow[i])
                        w(f, name, m->overflow[i]);
}

static void write_requests(FILE *f, const char *name, const Series *s) {
        for (int o = 0; o < _API_OUTCOME_MAX; o++) {
                char extra[64];

                if (s->outcomes[o] == 0)
                        continue;
                snprintf(extra, sizeof extra, "outcome=\"%s\"", api_outcome_to_string(o));
                put_series(f, name, s, extra);
                fprintf(f, "%" PRIu64 "\n", s->outcomes[o]);
        }
}

static void write_errors(FILE *f, const char *name, const Series *s) {
        for (size_t i = 0; i < METRICS_STATUSES_MAX && s->statuses[i].status != 0; i++) {
                char extra[32];

                snprintf(extra, sizeof extra, "status=\"%u\"", s->statuses[i].status);
                put_series(f, name, s, extra);
                fprintf(f, "%" PRIu64 "\n", s->statuses[i].count);
        }
        if (s->statuses_other > 0) {
                put_series(f, name, s, "status=\"" METRICS_LABEL_OTHER "\"");
                fprintf(f, "%" PRIu64 "\n", s->statuses_other);
        }
}

static void write_histogram(FILE *f, const char *name, const Series *s, const Histogram *h, const Bucket *b) {
        _cleanup_free_ char *bucket = NULL, *sum = NULL, *count = NULL;
        uint64_t cumulative = 0;

        if (h->count == 0)
                return;
        if (asprintf(&bucket, "%s_bucket", name) < 0 || asprintf(&sum, "%s_sum", name) < 0 ||
            asprintf(&count, "%s_count", name) < 0) {
                fputs("\n# out of memory\n", f);        /* makes the scrape fail visibly */
                return;
        }
        for (size_t i = 0; i < N_BUCKETS; i++) {
                char extra[32];

                cumulative += h->buckets[i];
                snprintf(extra, sizeof extra, "le=\"%s\"", b[i].le);
                put_series(f, bucket, s, extra);
                fprintf(f, "%" PRIu64 "\n", cumulative);
        }
        put_series(f, bucket, s, "le=\"+Inf\"");
        fprintf(f, "%" PRIu64 "\n", h->count);
        put_series(f, sum, s, NULL);
        fprintf(f, "%" PRIu64 ".%06" PRIu64 "\n", h->sum_usec / USEC_PER_SEC, h->sum_usec % USEC_PER_SEC);
        put_series(f, count, s, NULL);
        fprintf(f, "%" PRIu64 "\n", h->count);
}

static void write_ttft(FILE *f, const char *name, const Series *s) {
        write_histogram(f, name, s, &s->ttft, ttft_buckets);
}

static void write_duration(FILE *f, const char *name, const Series *s) {
        write_histogram(f, name, s, &s->duration, duration_buckets);
}

static void write_tokens(FILE *f, const char *name, const Series *s) {
        if (s->prompt_tokens == 0 && s->completion_tokens == 0)
                return;
        put_series(f, name, s, "kind=\"prompt\"");
        fprintf(f, "%" PRIu64 "\n", s->prompt_tokens);
        put_series(f, name, s, "kind=\"completion\"");
        fprintf(f, "%" PRIu64 "\n", s->completion_tokens);
}

int metrics_render(Metrics *m, const MetricsGauges *gauges, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        FILE *f;

        assert(m && ret && ret_len);
        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;

        put_header(f, "club_gateway_requests_total", "counter",
                   "Forwarded requests (OpenAI API and capabilities) that ended, by provider, model and outcome.");
        for_each_series(m, f, "club_gateway_requests_total", write_requests);
        put_header(f, "club_gateway_request_errors_total", "counter",
                   "Forwarded requests that ended with an HTTP error status for the client, by status.");
        for_each_series(m, f, "club_gateway_request_errors_total", write_errors);
        put_header(f, "club_gateway_time_to_first_token_seconds", "histogram",
                   "Time from the request to the first byte of the answer's body (a stream's first event).");
        for_each_series(m, f, "club_gateway_time_to_first_token_seconds", write_ttft);
        put_header(f, "club_gateway_request_duration_seconds", "histogram",
                   "Time from the request to the end of its exchange with the client.");
        for_each_series(m, f, "club_gateway_request_duration_seconds", write_duration);
        put_header(f, "club_gateway_tokens_total", "counter",
                   "Tokens of forwarded requests by kind (prompt or completion): as the provider reported them, "
                   "or a stream's content events where it did not.");
        for_each_series(m, f, "club_gateway_tokens_total", write_tokens);
        if (gauges && gauges->requests_in_flight >= 0) {
                put_header(f, "club_gateway_requests_in_flight", "gauge",
                           "Forwarded requests whose exchange has not ended yet.");
                fprintf(f, "club_gateway_requests_in_flight %" PRId64 "\n", gauges->requests_in_flight);
        }
        if (gauges && gauges->providers_online >= 0) {
                put_header(f, "club_gateway_providers_online", "gauge",
                           "Providers online now: a recent heartbeat, active, not draining.");
                fprintf(f, "club_gateway_providers_online %" PRId64 "\n", gauges->providers_online);
        }
        put_header(f, "club_gateway_metrics_series", "gauge",
                   "Series kept per (api, provider, model), not counting the overflow series ([Metrics] MaxSeries=).");
        fprintf(f, "club_gateway_metrics_series %zu\n", m->n_series);
        put_header(f, "club_gateway_metrics_series_overflow_total", "counter",
                   "Requests counted with provider and model \"other\" because MaxSeries= series existed already.");
        fprintf(f, "club_gateway_metrics_series_overflow_total %" PRIu64 "\n", m->n_overflowed);
        put_header(f, "club_gateway_metrics_series_evicted_total", "counter",
                   "Series dropped to make room after an hour without requests.");
        fprintf(f, "club_gateway_metrics_series_evicted_total %" PRIu64 "\n", m->n_evicted);

        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* ---- the listener ------------------------------------------------------------------- */

static int on_metrics_request(HttpExchange *x, void *userdata) {
        Metrics *m = userdata;
        MetricsGauges g = { .requests_in_flight = -1, .providers_online = -1 };
        _cleanup_free_ char *body = NULL;
        const char *method = http_exchange_method(x);
        size_t len;
        int r;

        if (!streq(http_exchange_path(x), METRICS_PATH))
                return http_exchange_respond_error(x, 404, "invalid_request_error", "unknown_url", NULL,
                                                   "Unknown request URL: %s %s. Metrics are at " METRICS_PATH ".",
                                                   method, http_exchange_path(x));
        if (!streq(method, "GET") && !streq(method, "HEAD")) {
                (void) http_exchange_add_header(x, "Allow", "GET, HEAD");
                return http_exchange_respond_error(x, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                   "Use GET for " METRICS_PATH ".");
        }
        if (m->gauges && m->gauges(&g, m->userdata) < 0)
                g = (MetricsGauges) { .requests_in_flight = -1, .providers_online = -1 };
        r = metrics_render(m, &g, &body, &len);
        if (r < 0)
                return r;
        (void) http_exchange_add_header(x, "Cache-Control", "no-store");
        return http_exchange_respond(x, 200, METRICS_CONTENT_TYPE, body, len);
}

int metrics_serve(Metrics *m, sd_event *event, int fd, MetricsGaugesFunc gauges, void *userdata) {
        _cleanup_(closep) int lfd = fd;
        int r;

        assert(m && event && fd >= 0);
        if (m->server)
                return -EBUSY;
        /* Scrapers are few and send no bodies. */
        r = http_server_new(event, TAKE_FD(lfd), &(HttpServerOptions) {
                                    .max_connections = 64,
                                    .max_body_size = 1024,
                            }, on_metrics_request, m, &m->server);
        if (r < 0)
                return r;
        m->gauges = gauges;
        m->userdata = userdata;
        return 0;
}
