/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * clubd's data path: an HTTP server that forwards OpenAI-style /v1/ requests
 * to the configured upstreams, streaming responses through as they arrive.
 *
 * Two listeners share it: the local one (Listen=, loopback, no authentication) and,
 * while the agent is registered, the mesh listener on MeshAddress:Port, which serves
 * only the gateway's mesh address and only requests carrying a valid, fresh, unreplayed
 * X-Club-Signature (docs/protocol.md, "The agent's mesh listener"). The mesh listener
 * also serves the configured capabilities at POST /api/v1/capabilities/NAME/exec.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "clubd-config.h"
#include "macro.h"
#include "request-sign.h"

typedef struct Proxy Proxy;
typedef struct Upstream Upstream;

/* Serve on listen_fd (ownership taken) with the settings and upstreams in cfg. */
int proxy_new(sd_event *event, const ClubdConfig *cfg, int listen_fd, Proxy **ret);
Proxy *proxy_free(Proxy *p);
CLUB_DEFINE_CLEANUP(Proxy *, proxy_free);

/* Take new upstreams, capabilities and limits from cfg; running requests finish on the old upstreams. */
int proxy_reload(Proxy *p, const ClubdConfig *cfg);

/* Stop accepting connections (both listeners); running requests go on. */
void proxy_stop_accepting(Proxy *p);

unsigned proxy_in_flight(Proxy *p);
size_t proxy_n_upstreams(Proxy *p);
/* A short line for sd_notify STATUS=. */
int proxy_status_line(Proxy *p, char **ret);

/* ---- the mesh listener ----------------------------------------------------------------- */

/* Who may use the mesh listener: requests from @gateway, signed with @secret. */
typedef struct ProxyMeshAuth {
        struct in_addr gateway;
        uint8_t secret[REQUEST_SIGN_SECRET_LEN];        /* secret: wiped when replaced */
} ProxyMeshAuth;

/* Why a mesh request was refused: the HTTP status and the OpenAI-shaped error's parts. */
typedef struct ProxyMeshVerdict {
        unsigned status;
        const char *type;
        const char *code;
        const char *message;
} ProxyMeshVerdict;

/**
 * proxy_mesh_check() - may this request use the mesh listener?
 * @auth:      the gateway's address and the request secret
 * @cache:     the replay cache
 * @peer:      the connection's source address
 * @method:    the request method
 * @target:    the request target as sent (path and query)
 * @signature: the X-Club-Signature header, or NULL
 * @now_sec:   the current UNIX time
 * @ret:       on refusal, what to answer
 *
 * From another address than the gateway's: 403 forbidden_source. GET/HEAD /healthz from
 * the gateway needs no signature (the gateway's reachability probe). Anything else needs
 * a signature: missing → 401 missing_signature; malformed or wrong → 401
 * invalid_signature; outside the window → 401 stale_signature; seen before → 401
 * replayed_signature; replay cache full → 503 signature_check_unavailable.
 *
 * Return: 0 when the request may go on, a negative errno (and @ret filled) when not.
 */
int proxy_mesh_check(const ProxyMeshAuth *auth, ReplayCache *cache, const struct sockaddr *peer,
                     const char *method, const char *target, const char *signature, uint64_t now_sec,
                     ProxyMeshVerdict *ret);

/**
 * proxy_listen_mesh() - serve the mesh listener on @fd
 * @p:    the proxy
 * @fd:   a listening socket bound to MeshAddress:Port (ownership taken, also on failure)
 * @auth: who may use it (copied)
 *
 * Replaces a mesh listener already running (its open exchanges are ended).
 *
 * Return: 0 or a negative errno.
 */
int proxy_listen_mesh(Proxy *p, int fd, const ProxyMeshAuth *auth);
/* Change who may use the running mesh listener (a re-registration rotated the secret). */
void proxy_set_mesh_auth(Proxy *p, const ProxyMeshAuth *auth);
/* Close the mesh listener and end its exchanges. */
void proxy_unlisten_mesh(Proxy *p);
bool proxy_has_mesh(Proxy *p);

/* While draining, the mesh listener answers everything but /healthz with 503 agent_draining. */
void proxy_set_draining(Proxy *p, bool draining);

/* Called after every round of upstream model listings. */
typedef void (*ProxyRefreshedFn)(Proxy *p, void *userdata);
void proxy_set_refresh_callback(Proxy *p, ProxyRefreshedFn fn, void *userdata);
/* The current upstreams (borrowed, until the next reload). */
size_t proxy_upstreams(Proxy *p, Upstream *const **ret);
/* Start a round of model listings now. */
void proxy_refresh(Proxy *p);
/* Whether a round of model listings has ended since the proxy was made. */
bool proxy_listed(Proxy *p);
