/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * POST /api/v1/agents/register (docs/protocol.md): authenticate the key, validate the
 * body, store_provider_register(), put the peer on the hub, answer with what the agent
 * needs. The rate limits live here too: per source address before anything else, per key
 * once the key is authenticated.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gateway-config.h"
#include "gateway-hub.h"
#include "gateway-ratelimit.h"
#include "http-server.h"
#include "store.h"

#define REGISTER_PATH "/api/v1/agents/register"
#define REGISTER_BODY_MAX (16U * 1024U)
#define REGISTER_HEARTBEAT_INTERVAL_SEC 30
typedef struct RegisterContext {
        Store *store;
        Hub *hub;
        const char *endpoint;           /* [WireGuard] Endpoint=, or NULL */
        RateLimiter *limiter;           /* per client address (http_exchange_client()) */
        RateLimiter *key_limiter;       /* per API key id / enrollment key prefix */
} RegisterContext;

int handle_register(RegisterContext *c, HttpExchange *x);
