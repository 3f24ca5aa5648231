/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Which provider serves a request. The store answers who may serve it (online, not
 * draining, serving the model, visible to the key: store_provider_list() with usable_by,
 * model and online_only); the router keeps what the store does not know, in memory:
 *
 *  - the requests this gateway has in flight to each provider, so that the least loaded
 *    provider is picked first (ties broken at random);
 *  - failures: a provider that failed (no connection, no response headers in time, a 502,
 *    503 or 504 of its own) is skipped for a while, 1 s after the first failure by default,
 *    doubling with each further failure up to 60 s; its next success forgets them.
 *
 * Bounded: at most ROUTER_ENTRIES_MAX providers are tracked; an entry is dropped once it
 * has nothing in flight and no failure worth remembering.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "store.h"

#define ROUTER_ENTRIES_MAX 65536U
#define ROUTER_BACKOFF_MIN_USEC_DEFAULT (1 * USEC_PER_SEC)
#define ROUTER_BACKOFF_MAX_USEC_DEFAULT (60 * USEC_PER_SEC)

typedef struct Router Router;

typedef enum RouterResult {
        ROUTER_SUCCESS,         /* the provider answered: its failures are forgotten */
        ROUTER_FAILURE,         /* it failed: skip it for a growing while */
        ROUTER_NEUTRAL,         /* neither (the client went away, the provider was busy) */
        _ROUTER_RESULT_MAX,
        _ROUTER_RESULT_INVALID = -EINVAL,
} RouterResult;

/**
 * router_new() - make a router
 * @backoff_min_usec: how long a provider is skipped after its first failure; 0: 1 s
 * @backoff_max_usec: the longest it is skipped; 0: 60 s (at least @backoff_min_usec)
 * @ret:              the router
 *
 * Return: 0 or -ENOMEM.
 */
int router_new(uint64_t backoff_min_usec, uint64_t backoff_max_usec, Router **ret);
Router *router_free(Router *r);
CLUB_DEFINE_CLEANUP(Router *, router_free);

/**
 * router_pick() - choose the next provider for a request
 * @r:           the router
 * @candidates:  the providers that may serve it (from the store)
 * @n:           how many
 * @exclude:     ids already tried for this request
 * @n_exclude:   how many
 * @now:         CLOCK_MONOTONIC µs
 * @ret_index:   the chosen one's index in @candidates
 * @ret_wait:    on -EAGAIN: µs until the first skipped provider may be tried again
 *
 * Among the candidates not excluded and not skipped after a failure, the one with the
 * fewest requests in flight from this gateway; ties are broken at random.
 *
 * Return: 0; -ENOENT when every candidate was tried (or there are none); -EAGAIN when
 * the ones left are all being skipped after failures.
 */
int router_pick(Router *r, const StoreProvider *candidates, size_t n, const int64_t *exclude, size_t n_exclude,
                uint64_t now, size_t *ret_index, uint64_t *ret_wait);

/* A request to provider @id starts: 0, or -ENOBUFS when ROUTER_ENTRIES_MAX providers are
 * tracked already (the request may go ahead; it is just not counted). */
int router_begin(Router *r, int64_t id);
/* A request that router_begin() counted ended; @result says what it tells about the
 * provider. @now: CLOCK_MONOTONIC µs. */
void router_end(Router *r, int64_t id, RouterResult result, uint64_t now);

/* Requests this gateway has in flight to provider @id. */
unsigned router_in_flight(Router *r, int64_t id);
/* Whether provider @id is being skipped at @now after failures. */
bool router_is_backing_off(Router *r, int64_t id, uint64_t now);
