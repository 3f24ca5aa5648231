/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The agent: clubd's membership of the network. It owns the registration with the gateway
 * (docs/protocol.md), the saved state in the state directory, the club0 spoke (lib/wg.h),
 * the heartbeats over the mesh, and the proxy's mesh listener (only the gateway's mesh
 * address, only signed requests). The D-Bus object club.inference.Agent1 (clubd-bus.h) is
 * a thin layer over this interface: everything a person can do or see goes through here.
 *
 * Life cycle:
 *
 *   UNREGISTERED --agent_register()--> CONNECTING --first heartbeat answered online--> ONLINE
 *        ^                                 |   (registration failed: back to the state
 *        |                                 |    before, the error to the caller)
 *        +----agent_unregister()-----------+
 *   ONLINE <--> OFFLINE     heartbeats fail (network, gateway down) / succeed again; or the
 *                           gateway says online=false for a reason other than draining
 *   ONLINE <--> DRAINING    agent_set_draining(true/false); heartbeats carry draining=true
 *   any registered --> ERROR  the gateway no longer knows the provider (heartbeat 404
 *                             unknown_provider), the spoke cannot be configured, or the
 *                             saved state is unreadable; the reason says what to do
 *                             ("register again with clubctl register --key …")
 *
 * At start, agent_new() loads the saved state: if there is one, the spoke is converged,
 * the mesh listener opened and heartbeats start (CONNECTING until the first one is
 * answered), all without any API key, which is never stored.
 *
 * Everything is asynchronous on the daemon's sd-event loop; nothing here blocks.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "clubd-config.h"
#include "macro.h"
#include "proxy.h"

typedef struct Agent Agent;

typedef enum AgentState {
        AGENT_UNREGISTERED,
        AGENT_CONNECTING,
        AGENT_ONLINE,
        AGENT_OFFLINE,
        AGENT_DRAINING,
        AGENT_ERROR,
        _AGENT_STATE_MAX,
        _AGENT_STATE_INVALID = -EINVAL,
} AgentState;

/* "unregistered", "connecting", "online", "offline", "draining", "error" */
const char *agent_state_to_string(AgentState s);
AgentState agent_state_from_string(const char *s);

/* What changed, for the change callback (a bit mask). */
typedef enum AgentChange {
        AGENT_CHANGE_STATE = 1 << 0,            /* State or StateReason */
        AGENT_CHANGE_REGISTRATION = 1 << 1,     /* ProviderId, Name, GatewayURL, MeshAddress */
        AGENT_CHANGE_MODELS = 1 << 2,           /* Models, Capabilities */
        AGENT_CHANGE_UPSTREAMS = 1 << 3,        /* Upstreams (health) */
        AGENT_CHANGE_HEARTBEAT = 1 << 4,        /* LastHeartbeat */
        AGENT_CHANGE_IN_FLIGHT = 1 << 5,        /* InFlight (coalesced: at most ~1/s) */
} AgentChange;

typedef void (*AgentChangedFn)(Agent *a, unsigned changes, void *userdata);

/**
 * agent_new() - load the saved state and, if registered, join the mesh
 * @event:     the loop
 * @cfg:       the configuration (borrowed during the call; see agent_reload())
 * @proxy:     the proxy, which gets a mesh listener while registered (borrowed; outlives
 *             the agent)
 * @state_dir: where the state lives ($STATE_DIRECTORY, or [Agent] StateDirectory=)
 * @ret:       the agent
 *
 * A missing state file means UNREGISTERED; an unreadable or invalid one means ERROR with a
 * reason naming the file (the daemon still starts, so that a person can register again).
 *
 * Return: 0 or a negative errno (only for failures that make the daemon useless: -ENOMEM,
 * an unusable state directory).
 */
int agent_new(sd_event *event, const ClubdConfig *cfg, Proxy *proxy, const char *state_dir, Agent **ret);
Agent *agent_free(Agent *a);
CLUB_DEFINE_CLEANUP(Agent *, agent_free);

void agent_set_change_callback(Agent *a, AgentChangedFn fn, void *userdata);

/* Take a reloaded configuration (upstreams, capabilities, mesh settings that can change
 * without re-registering). */
int agent_reload(Agent *a, const ClubdConfig *cfg);

typedef enum AgentRegisterFlags {
        AGENT_REGISTER_INSECURE = 1 << 0,       /* allow plain http:// to a non-loopback gateway */
        _AGENT_REGISTER_FLAGS_ALL = AGENT_REGISTER_INSECURE,
} AgentRegisterFlags;

typedef struct AgentRegisterParams {
        const char *key;                /* "ic-…" or "ie-…"; used for this one request, never stored */
        const char *gateway_url;        /* NULL or "": the one saved, or [Agent] Gateway= */
        const char *name;               /* NULL or "": the one saved, or the host name */
        unsigned flags;                 /* AgentRegisterFlags */
} AgentRegisterParams;

/*
 * The outcome of a registration. @error is 0 on success; otherwise a negative errno and
 * @code/@message say why in a form fit for a person and a script:
 *   code: the gateway's error code when the gateway answered with one ("invalid_api_key",
 *         "insufficient_scope", "name_in_use", "rate_limit_exceeded", …); otherwise one of
 *         "gateway_unreachable" (DNS, connect, TLS handshake, timeout), "certificate_invalid",
 *         "insecure_gateway" (http:// to a non-loopback host without the flag),
 *         "invalid_response" (the gateway answered something that is not the contract),
 *         "wireguard_failed" (the spoke could not be configured), "state_write_failed".
 *   message: the gateway's message verbatim when it sent one, else ours.
 * Both strings are only valid during the call.
 */
typedef void (*AgentRegisterDoneFn)(Agent *a, int error, const char *code, const char *message, void *userdata);

/**
 * agent_register() - register with the gateway (or again: rotate keys)
 *
 * Generates a new key pair, POSTs the registration, and on success writes the state
 * atomically (0600), converges the spoke, (re)opens the mesh listener and starts
 * heartbeats; then @done is called with 0. On failure nothing saved changes and the
 * agent keeps running as before.
 *
 * Return: 0 when started (@done will be called exactly once, later, from the loop);
 * -EINVAL for bad parameters (no URL anywhere, malformed key or name); -EBUSY when a
 * registration is already running.
 */
int agent_register(Agent *a, const AgentRegisterParams *p, AgentRegisterDoneFn done, void *userdata);

/* Forget the registration: stop heartbeats, close the mesh listener, remove the spoke's
 * peer and address (the link is left to whoever created it), delete the state file.
 * The gateway is not told (the administrator removes the provider there). 0 or -errno. */
int agent_unregister(Agent *a);

/* Drain (stop taking new requests from the gateway, finish running ones; heartbeats say
 * draining=true) or resume. -ENOTCONN if not registered. */
int agent_set_draining(Agent *a, bool draining);

/* ---- what the D-Bus properties show ------------------------------------------------------ */

AgentState agent_state(const Agent *a);
const char *agent_state_reason(const Agent *a);        /* "" when there is nothing to say */
int64_t agent_provider_id(const Agent *a);              /* 0 when unregistered */
const char *agent_name(const Agent *a);                 /* "" when unregistered */
const char *agent_gateway_url(const Agent *a);          /* "" when unregistered */
const char *agent_mesh_address(const Agent *a);         /* "100.96.0.8", "" when unregistered */
char **agent_models(const Agent *a);                    /* NULL-terminated, sorted, borrowed */
char **agent_capabilities(const Agent *a);              /* NULL-terminated, sorted, borrowed */
unsigned agent_in_flight(const Agent *a);
uint64_t agent_last_heartbeat_usec(const Agent *a);     /* CLOCK_REALTIME µs; 0: none */

typedef struct AgentUpstream {
        const char *name;
        const char *url;
        bool healthy;
} AgentUpstream;

/* The upstreams and their health (borrowed; valid until the next return to the loop). */
size_t agent_upstreams(const Agent *a, const AgentUpstream **ret);

/* One line for sd_notify STATUS=, e.g. "Online as gpu-box-1 (100.96.0.8), 3 models, 0 in flight." */
int agent_status_line(const Agent *a, char **ret);
