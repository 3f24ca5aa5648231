/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * POST /api/v1/agents/heartbeat on the mesh listener (docs/protocol.md): the provider is
 * the one whose mesh address is the connection's source address, the request carries an
 * X-Club-Signature made with that provider's secret (lib/request-sign.h), and the body
 * is recorded with store_provider_heartbeat().
 */

#include "http-server.h"
#include "request-sign.h"
#include "store.h"

#define HEARTBEAT_PATH "/api/v1/agents/heartbeat"
#define HEARTBEAT_BODY_MAX (64U * 1024U)
#define HEARTBEAT_UPSTREAMS_MAX 64U
#define HEARTBEAT_UPSTREAM_NAME_MAX 256U
#define HEARTBEAT_UPSTREAM_URL_MAX 2048U

typedef struct HeartbeatContext {
        Store *store;
        ReplayCache *replay;            /* one for every heartbeat the gateway checks */
        uint64_t window_sec;            /* the store's online window, for the answer */
} HeartbeatContext;

int handle_heartbeat(HeartbeatContext *c, HttpExchange *x);
