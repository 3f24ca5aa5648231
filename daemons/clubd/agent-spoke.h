/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The agent's end of the mesh: the [Mesh] Interface= (club0) WireGuard spoke, brought to
 * exactly one peer (the gateway's hub) through lib/wg.h, and the resolution of the
 * gateway's endpoint, which may be a DNS name, without blocking the loop.
 */

#include <systemd/sd-event.h>

#include "agent-state.h"
#include "macro.h"
#include "wg.h"

#define AGENT_SPOKE_KEEPALIVE_SEC 25U

/**
 * agent_spoke_converge() - bring the spoke to the registration @s
 * @wg:       the WireGuard context (opened before the sandbox)
 * @ifname:   the interface
 * @s:        the registration: private key, gateway key, mesh and gateway mesh addresses
 * @endpoint: the gateway's resolved endpoint
 *
 * Private key; one peer, the gateway, with @endpoint, allowed IP gateway_mesh/32 and
 * PersistentKeepalive 25; address mesh/32; route gateway_mesh/32; link up. Every other
 * peer, address and (our) route on the interface is removed. A kernel link is created if
 * the interface does not exist and no userspace (wireguard-go) socket does.
 *
 * Return: 0 or a negative errno from wg_device_converge() (wg_strerror_hint() explains).
 */
int agent_spoke_converge(WgContext *wg, const char *ifname, const AgentSavedState *s, const WgEndpoint *endpoint);

/**
 * agent_spoke_clear() - remove the spoke's peers, addresses and our routes
 * @wg:     the WireGuard context
 * @ifname: the interface; the link itself is left to whoever created it
 *
 * Return: 0 (also when the interface does not exist) or a negative errno.
 */
int agent_spoke_clear(WgContext *wg, const char *ifname);

/* ---- resolving the gateway's endpoint ---------------------------------------------------- */

typedef struct AgentResolve AgentResolve;

/* @error 0 and @endpoint the first address (valid until @r is freed); or -ENOENT (no address), -EAGAIN (temporary
 * DNS failure), -EINVAL, -ENOMEM. Called from the loop. */
typedef void (*AgentResolveDone)(AgentResolve *r, int error, const WgEndpoint *endpoint, void *userdata);

/**
 * agent_resolve_start() - resolve "HOST:PORT" in a helper thread, report on the loop
 * @event:    the loop
 * @endpoint: a valid endpoint (agent_endpoint_valid()); IP literals need no thread
 * @done:     called exactly once unless freed first
 * @userdata: for @done
 * @ret:      the resolution; free it after @done or to cancel
 *
 * Return: 0 or a negative errno.
 */
int agent_resolve_start(sd_event *event, const char *endpoint, AgentResolveDone done, void *userdata,
                        AgentResolve **ret);
AgentResolve *agent_resolve_free(AgentResolve *r);
CLUB_DEFINE_CLEANUP(AgentResolve *, agent_resolve_free);
