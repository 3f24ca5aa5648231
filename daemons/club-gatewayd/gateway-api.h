/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's OpenAI-compatible API on the public listener (docs/club-gatewayd.md, "The
 * OpenAI API"): GET /v1/models, GET /v1/models/{id}, and every POST /v1/… whose JSON body
 * names a model (chat completions, completions, embeddings, …), forwarded through the
 * WireGuard tunnel to a provider's clubd.
 *
 * A forwarded request:
 *  1. authenticate the API key (scope "inference"), parse the body (model, stream);
 *  2. the admission hook, if set (per-key limits: 429);
 *  3. the candidates: online providers serving the model that the key's user may use
 *     (store_provider_list()); none visible at all → 404 model_not_found, none online → 503;
 *  4. the router (gateway-route.h) picks the least loaded, skipping providers that failed
 *     recently; the request goes to http://MESH-ADDRESS:AGENT-PORT/TARGET, signed with the
 *     provider's secret (X-Club-Signature over the method and the target), without the
 *     client's credentials or hop-by-hop headers;
 *  5. until the first byte of the provider's answer has reached the client, a failure
 *     (no connection, no response headers within FirstByteTimeout=, or a 429/502/503/504
 *     from the provider) moves on to the next provider, up to MaxAttempts=; after it,
 *     never;
 *  6. the answer streams through: each read from the provider is written to the client at
 *     once, a slow client pauses the provider's transfer, a client that goes away cancels
 *     it; a stream that fails half-way ends with one `data: {"error":…}` event and an
 *     aborted connection, never with a clean end. While a streamed request waits for its
 *     first byte, the client gets an SSE comment every KeepAliveInterval=.
 *  7. when the exchange ends, the finished hook, if set, gets the request's record
 *     (usage and metrics), with the tokens of the answer (gateway-usage.h): a streamed chat
 *     or text completion that did not ask for stream_options.include_usage is sent with it,
 *     and the usage-only chunk is taken out of what the client sees; a provider that
 *     refuses the option (400 naming it) gets the request once more without it, and is
 *     remembered (in memory) as not taking it.
 *
 * Capabilities (docs/club-gatewayd.md, "Capabilities") go the same way: GET
 * /api/v1/capabilities lists those of the online providers the key may use, GET
 * /api/v1/capabilities/{name} says which provider the router would pick now, and POST
 * /api/v1/capabilities/{name}/exec is a forwarded request like the above with the
 * capability's name in the model's place (ApiRequestInfo.capability set): any JSON body,
 * candidates by StoreProviderFilter.capability, 404 capability_not_found, the target
 * /api/v1/capabilities/{name}/exec on the agent, the same hooks, signing and failover.
 *
 * Every answer carries x-request-id (also sent to the agent). Everything runs on the
 * daemon's loop; nothing blocks it but the store's queries.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "http-server.h"
#include "macro.h"
#include "store.h"

#define GATEWAY_API_CONNECT_TIMEOUT_USEC_DEFAULT (5 * USEC_PER_SEC)
#define GATEWAY_API_FIRST_BYTE_TIMEOUT_USEC_DEFAULT (300 * USEC_PER_SEC)
#define GATEWAY_API_IDLE_TIMEOUT_USEC_DEFAULT (300 * USEC_PER_SEC)
#define GATEWAY_API_KEEPALIVE_USEC_DEFAULT (15 * USEC_PER_SEC)
#define GATEWAY_API_MAX_ATTEMPTS_DEFAULT 3U
#define GATEWAY_API_MAX_ATTEMPTS_MAX 16U
/* Retry-After when the providers of a model are all offline. */
#define GATEWAY_API_OFFLINE_RETRY_AFTER_SEC 30U
/* Where the capabilities are, on the public listener as on the agent's mesh listener. */
#define GATEWAY_API_CAPABILITIES_PATH "/api/v1/capabilities"
/* An answer of known size up to this is collected and sent whole. */
#define GATEWAY_API_SMALL_BODY_MAX (16U * 1024U)

typedef struct GatewayApi GatewayApi;

/* How a forwarded request ended, for the finished hook. */
typedef enum ApiOutcome {
        API_OUTCOME_OK,                 /* the provider's 2xx answer reached the client whole */
        API_OUTCOME_PROVIDER_ERROR,     /* the provider answered with an error status, passed on */
        API_OUTCOME_FAILED,             /* no provider answered: 502 or 504 (or an error event) */
        API_OUTCOME_UNAVAILABLE,        /* no provider could take it (or the store failed): 503 */
        API_OUTCOME_MODEL_NOT_FOUND,    /* no provider this key may use serves the model: 404 */
        API_OUTCOME_REFUSED,            /* the admission hook refused it: 429 */
        API_OUTCOME_TRUNCATED,          /* the answer broke off half-way */
        API_OUTCOME_CANCELLED,          /* the client went away first */
        _API_OUTCOME_MAX,
        _API_OUTCOME_INVALID = -EINVAL,
} ApiOutcome;

const char *api_outcome_to_string(ApiOutcome o);

/* What is known about a forwarded request once it is authenticated and parsed. */
typedef struct ApiRequestInfo {
        const char *id;                 /* x-request-id */
        int64_t key_id;
        int64_t user_id;
        const char *target;             /* normalised path and query, as sent to the agent */
        const char *model;              /* or, with @capability, the capability's name */
        bool stream;                    /* the body asked for "stream": true */
        bool capability;                /* POST /api/v1/capabilities/{model}/exec, not /v1/… */
} ApiRequestInfo;

/* What the finished hook gets. */
typedef struct ApiRequestRecord {
        ApiRequestInfo info;
        ApiOutcome outcome;
        unsigned status;                /* the status the client got (200 once keep-alives began) */
        int64_t provider_id;            /* the last provider tried; 0 if none */
        unsigned attempts;              /* providers tried */
        uint64_t time_to_first_byte_usec; /* until the provider's response headers; 0 if none */
        uint64_t duration_usec;         /* until the exchange ended */
        uint64_t bytes;                 /* body bytes from the provider passed to the client */
        uint64_t time_to_first_token_usec; /* until the first byte of the answer's body; 0 if none */
        uint64_t prompt_tokens;         /* from the answer's usage (gateway-usage.h) */
        uint64_t completion_tokens;     /* …or, for a stream without it, its content events */
        bool usage_reported;            /* the provider reported the tokens; otherwise counted or 0 */
        bool admitted;                  /* the admission hook let it through (see GatewayApiHooks) */
} ApiRequestRecord;

typedef struct GatewayApiHooks {
        /*
         * After authentication and parsing, before a provider is chosen. Return 0 to go on
         * (it may add response headers such as x-ratelimit-* to @x first), a positive
         * number of seconds to refuse the request with 429 rate_limit_exceeded and that
         * Retry-After, or a negative errno to refuse it with 503.
         */
        int (*admit)(const ApiRequestInfo *info, HttpExchange *x, void *userdata);
        /* Once per request that got this far (authenticated, body parsed), when its
         * exchange ended: also for those refused, unroutable or failed. record->admitted
         * says whether admit() returned 0 for it (what admit() counted can be given back). */
        void (*finished)(const ApiRequestRecord *record, void *userdata);
        void *userdata;
} GatewayApiHooks;

typedef struct GatewayApiOptions {
        uint64_t connect_timeout_usec;          /* to an agent through its tunnel; 0: 5 s */
        uint64_t first_byte_timeout_usec;       /* until the agent's response headers; 0: 300 s */
        uint64_t idle_timeout_usec;             /* silence inside an answer; 0: 300 s */
        uint64_t keepalive_interval_usec;       /* SSE comments while waiting; 0: none */
        unsigned max_attempts;                  /* providers tried per request; 0: 3 */
        uint64_t backoff_min_usec;              /* see gateway-route.h; 0: 1 s */
        uint64_t backoff_max_usec;              /* 0: 60 s */
        unsigned max_connections;               /* to agents, all together; 0: 1024 */
} GatewayApiOptions;

/**
 * gateway_api_new() - set up the API
 * @event: the loop
 * @store: the store (borrowed: it must outlive the API)
 * @opts:  options, or NULL for the defaults
 * @ret:   the API
 *
 * Return: 0 or a negative errno.
 */
int gateway_api_new(sd_event *event, Store *store, const GatewayApiOptions *opts, GatewayApi **ret);

/* Free the API. Free the public HTTP server first: its exchanges own the requests. */
GatewayApi *gateway_api_free(GatewayApi *api);
CLUB_DEFINE_CLEANUP(GatewayApi *, gateway_api_free);

/* Install the hooks (copied); NULL removes them. */
void gateway_api_set_hooks(GatewayApi *api, const GatewayApiHooks *hooks);

/**
 * gateway_api_authenticate() - check the exchange's "Authorization: Bearer ic-…" key
 * @api: the API
 * @x:   the exchange
 * @id:  its x-request-id, for the error answer
 * @ret: the key (store_api_key_deinit() it)
 *
 * For other endpoints on the public listener that take API keys (GET /api/v1/usage): the
 * key must have the inference scope. A missing, bad, revoked or expired key is answered
 * with the API's own 401/403 (and a failing store with 503).
 *
 * Return: 0 with @ret set; otherwise the exchange was answered (a positive value or a
 * negative errno; check http_exchange_is_answered()).
 */
int gateway_api_authenticate(GatewayApi *api, HttpExchange *x, const char *id, StoreApiKey *ret);

/* Forwarded requests (models and capabilities) whose exchange has not ended yet. */
unsigned gateway_api_in_flight(GatewayApi *api);

/**
 * gateway_api_handle() - answer a request on the public listener
 * @api: the API
 * @x:   the exchange
 *
 * Answers /v1/… and /api/v1/capabilities… as described above and everything else with 404
 * unknown_url, always with an x-request-id header.
 *
 * Return: 0 once answered or under way; a negative errno (the server answers 500).
 */
int gateway_api_handle(GatewayApi *api, HttpExchange *x);
