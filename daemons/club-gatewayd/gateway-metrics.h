/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Prometheus metrics of the gateway's forwarded requests (docs/club-gatewayd.md,
 * "Metrics"), served as text format 0.0.4 on a listener of their own ([Metrics] Listen=),
 * by lib/http-server on the daemon's loop.
 *
 * Each finished request (the API's finished hook, gateway-api.h) is counted in one series
 * keyed by (api, provider, model): api is "openai" or "capability", provider the provider's
 * id ("none" when no provider was tried), model the model's or capability's name
 * ("unknown" for a model nobody serves, so that made-up names cost nothing). A series
 * holds the requests per outcome, the error statuses the clients got, the time to the
 * first byte of the answer's body and the duration as histograms, and the tokens. At most
 * max_series series are kept. When they are all taken, the one idle the longest is dropped
 * if it has had no request for METRICS_SERIES_IDLE_USEC (a provider deleted, a model
 * retired); otherwise a request that would need one more is counted in the series of its
 * api with provider and model "other" (those do not count against the cap), and in
 * club_gateway_metrics_series_overflow_total.
 *
 * Everything is in memory, per process, from its start.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "gateway-api.h"
#include "http-server.h"
#include "macro.h"

#define METRICS_SERIES_MAX_DEFAULT 1000U
/* A scrape costs about 3.5 KB and 15-20 µs per series on the loop (docs/club-gatewayd.md). */
#define METRICS_SERIES_MAX_MAX 10000U
/* A series without requests for this long may make room for a new one. */
#define METRICS_SERIES_IDLE_USEC (3600 * USEC_PER_SEC)
/* Distinct error statuses counted per series; others are counted as status "other". */
#define METRICS_STATUSES_MAX 8U
#define METRICS_LABEL_OTHER "other"
#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct Metrics Metrics;

/* What is measured at the time of a scrape; a negative value is left out. */
typedef struct MetricsGauges {
        int64_t requests_in_flight;
        int64_t providers_online;
} MetricsGauges;

typedef int (*MetricsGaugesFunc)(MetricsGauges *ret, void *userdata);

/**
 * metrics_new() - an empty registry
 * @max_series: series kept before the overflow series take over; 0: the default (1000)
 * @ret:        the registry
 *
 * Return: 0, -EINVAL (more than METRICS_SERIES_MAX_MAX), -ENOMEM.
 */
int metrics_new(unsigned max_series, Metrics **ret);
Metrics *metrics_free(Metrics *m);
CLUB_DEFINE_CLEANUP(Metrics *, metrics_free);

/* CLOCK_MONOTONIC in µs for the idle time of series; NULL: the real clock. For tests. */
void metrics_set_clock(Metrics *m, uint64_t (*clock)(void *userdata), void *userdata);

/* Count one finished request. @m may be NULL (metrics off). */
void metrics_observe(Metrics *m, const ApiRequestRecord *rec);

/**
 * metrics_render() - the Prometheus text exposition of everything counted
 * @m:       the registry
 * @gauges:  the gauges to add, or NULL
 * @ret:     the text, malloc'd
 * @ret_len: its length
 *
 * Series in a stable order (api, provider, model), each metric with # HELP and # TYPE,
 * histogram buckets cumulative and ending with le="+Inf", then _sum and _count.
 *
 * Return: 0 or -ENOMEM.
 */
int metrics_render(Metrics *m, const MetricsGauges *gauges, char **ret, size_t *ret_len);

/**
 * metrics_serve() - answer GET /metrics on a listening socket
 * @m:        the registry
 * @event:    the loop
 * @fd:       the listening socket (taken, also on failure)
 * @gauges:   called at each scrape, or NULL
 * @userdata: for @gauges
 *
 * GET and HEAD /metrics get the text; other paths 404, other methods 405.
 *
 * Return: 0 or a negative errno.
 */
int metrics_serve(Metrics *m, sd_event *event, int fd, MetricsGaugesFunc gauges, void *userdata);
