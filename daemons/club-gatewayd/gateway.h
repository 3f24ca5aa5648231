/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway: its store and its two HTTP listeners on one sd-event loop. The public
 * listener (socket-activated or opened from Listen=; HTTPS when a certificate is
 * configured) serves the API; the mesh listener serves control traffic from agents over
 * WireGuard. The public side answers GET /healthz, POST /api/v1/agents/register
 * (gateway-register.h), the OpenAI API under /v1/ and the capabilities under
 * /api/v1/capabilities (gateway-api.h; 404 for the rest),
 * and the mesh side POST
 * /api/v1/agents/heartbeat (gateway-heartbeat.h) and 404 for the rest. The WireGuard hub
 * (gateway-hub.h) is converged to the store's peers at start, after each registration and
 * after the gateway deleted providers. Two timers: the probe of each online provider's
 * /healthz through its tunnel (gateway-probe.h), and the reaping of ephemeral providers
 * silent for EphemeralGrace=. With [Gateway] DBus=yes, administration over D-Bus
 * (gateway-bus.h: club.inference.Gateway1), which the HTTP API does not depend on. With
 * [Metrics] Listen=, a third listener serves GET /metrics (gateway-metrics.h), fed by the
 * API's finished hook.
 */

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "gateway-config.h"
#include "macro.h"

typedef struct Gateway Gateway;

/**
 * gateway_new() - open the store and start both listeners
 * @event:     the loop
 * @cfg:       the configuration (borrowed: only read during the call)
 * @public_fd: the listening public socket (taken, also on failure)
 * @mesh_fd:   the listening mesh socket (taken), or -EBADF to open [Mesh] Listen= or the
 *             gateway's mesh address, port 8443
 * @cert_pem:  the public certificate chain, or NULL for plain HTTP
 * @key_pem:   its key, or NULL
 * @ret:       the gateway
 *
 * Failures are logged.
 *
 * Return: 0 or a negative errno.
 */
int gateway_new(sd_event *event, const GatewayConfig *cfg, int public_fd, int mesh_fd,
                const char *cert_pem, const char *key_pem, Gateway **ret);
Gateway *gateway_free(Gateway *g);
CLUB_DEFINE_CLEANUP(Gateway *, gateway_free);

/* Apply a new certificate and key to the public listener without refusing connections
 * (see http_server_set_tls()). Both NULL: plain HTTP. */
int gateway_set_tls(Gateway *g, const char *cert_pem, const char *key_pem);

/* Replace the trusted proxies ([Public] TrustedProxies=, copied); from the next request on.
 * Return: 0 or -ENOMEM (the old list stays). */
int gateway_set_trusted_proxies(Gateway *g, const TrustedProxies *t);

/* Stop accepting connections on both listeners; requests in flight go on. */
void gateway_stop_accepting(Gateway *g);
/* Requests in flight on both listeners. */
unsigned gateway_in_flight(Gateway *g);
/* Providers online now, from the store; < 0 on error. */
int gateway_providers_online(Gateway *g, size_t *ret);
/* A line for STATUS=: listeners and providers online. */
int gateway_status_line(Gateway *g, char **ret);
