/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * POST /api/v1/agents/register (docs/protocol.md): authenticate the key, validate the
 * body, store_provider_register(), put the peer on the hub, answer with what the agent
 * needs. The per-source-address rate limit lives here too.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gateway-config.h"
#include "gateway-hub.h"
#include "http-server.h"
#include "store.h"

#define REGISTER_PATH "/api/v1/agents/register"
#define REGISTER_BODY_MAX (16U * 1024U)
#define REGISTER_HEARTBEAT_INTERVAL_SEC 30
/* The token bucket per source address: a burst of this many, refilled at this rate. */
#define REGISTER_RATE_BURST 10U
#define REGISTER_RATE_PER_MINUTE 10U
/* Source addresses tracked; the least recently seen one is forgotten first. */
#define REGISTER_RATE_SLOTS 1024U

typedef struct RateLimiter RateLimiter;

RateLimiter *rate_limiter_new(unsigned burst, unsigned per_minute, unsigned slots);
RateLimiter *rate_limiter_free(RateLimiter *l);
CLUB_DEFINE_CLEANUP(RateLimiter *, rate_limiter_free);
/* Take one token for @peer at CLOCK_MONOTONIC @now. true: go on. false: *ret_retry_after_sec
 * says when a token is back. */
bool rate_limiter_take(RateLimiter *l, const struct sockaddr *peer, uint64_t now, unsigned *ret_retry_after_sec);

typedef struct RegisterContext {
        Store *store;
        Hub *hub;
        const char *endpoint;           /* [WireGuard] Endpoint=, or NULL */
        RateLimiter *limiter;
} RegisterContext;

int handle_register(RegisterContext *c, HttpExchange *x);
