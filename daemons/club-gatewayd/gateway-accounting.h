/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Usage accounting and per-key limits of the OpenAI API (docs/club-gatewayd.md, "Usage and
 * limits"), behind the API's admission and finished hooks (gateway-api.h):
 *  - admission checks the key's limits (its own from the store, else [Limits]) with a
 *    KeyLimiter (gateway-limits.h) and adds the x-ratelimit-* headers; a refusal is a 429
 *    with Retry-After, and x-should-retry: false when a limit of 0 refuses every request;
 *  - every finished request charges its tokens to the key and becomes a usage row, queued
 *    in memory (at most ACCOUNTING_QUEUE_MAX) and written by a timer, one transaction per
 *    batch, so the loop does not wait for an fsync per request;
 *  - rows older than [Usage] Retention= are deleted by another timer, in bounded batches;
 *  - GET /api/v1/usage: a key's owner reads the totals of their own keys.
 */

#include <systemd/sd-event.h>

#include "gateway-api.h"
#include "gateway-limits.h"
#include "http-server.h"
#include "macro.h"
#include "store.h"

#define ACCOUNTING_USAGE_PATH "/api/v1/usage"
/* Usage rows waiting to be written; beyond this new ones are dropped (and counted). */
#define ACCOUNTING_QUEUE_MAX 16384U
#define ACCOUNTING_FLUSH_USEC (1 * USEC_PER_SEC)
#define ACCOUNTING_PRUNE_USEC (3600 * USEC_PER_SEC)
#define ACCOUNTING_PRUNE_BATCH 10000U

typedef struct Accounting Accounting;

typedef struct AccountingOptions {
        KeyLimits defaults;             /* for keys without their own; KEY_LIMIT_UNLIMITED … */
        uint64_t retention_usec;        /* 0: GATEWAY_USAGE_RETENTION_USEC_DEFAULT */
} AccountingOptions;

/**
 * accounting_new() - set up accounting and limits
 * @event: the loop (timers)
 * @store: the store (borrowed: must outlive it)
 * @opts:  the defaults and the retention
 * @ret:   the accounting
 *
 * Return: 0 or a negative errno.
 */
int accounting_new(sd_event *event, Store *store, const AccountingOptions *opts, Accounting **ret);

/* Write what is queued, then free. */
Accounting *accounting_free(Accounting *a);
CLUB_DEFINE_CLEANUP(Accounting *, accounting_free);

/* The admission hook: 0 to go on, seconds to refuse with 429, or a negative errno (503). */
int accounting_admit(Accounting *a, const ApiRequestInfo *info, HttpExchange *x);

/* The finished hook: charge the tokens, give back the stream, queue the usage row. */
void accounting_finished(Accounting *a, const ApiRequestRecord *record);

/* Write the queued rows now (before totals are read). */
void accounting_flush(Accounting *a);

/**
 * accounting_handle_usage() - GET /api/v1/usage?since=&until=&group_by=
 * @a:   the accounting
 * @x:   the exchange
 * @id:  its x-request-id
 * @key: the authenticated key (gateway_api_authenticate()): the totals are its user's, of
 *       all their keys, grouped by key (default), provider or model
 *
 * Errors are OpenAI-shaped: 400 for a bad parameter, 405, 503 when the store fails.
 *
 * Return: 0 once answered, or a negative errno.
 */
int accounting_handle_usage(Accounting *a, HttpExchange *x, const char *id, const StoreApiKey *key);

/* The limits that apply to a key: its own where set, the defaults otherwise. */
KeyLimits accounting_effective_limits(const KeyLimits *defaults, const StoreKeyLimits *own);
