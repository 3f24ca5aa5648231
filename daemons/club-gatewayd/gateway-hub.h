/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's WireGuard hub: its key pair (kept in [WireGuard] PrivateKeyFile=, made on
 * first start) and the convergence of its interface to exactly the store's peers, through
 * lib/wg (kernel or wireguard-go, chosen at run time).
 *
 * A hub that cannot be configured (no WireGuard, no CAP_NET_ADMIN, …) does not stop the
 * gateway: the reason is logged with wg_strerror_hint(), registrations still go to the
 * store, and every later convergence tries again.
 */

#include <netinet/in.h>
#include <stdbool.h>

#include "gateway-config.h"
#include "macro.h"
#include "store.h"
#include "wg-key.h"

typedef struct Hub Hub;

/**
 * hub_new() - load (or make) the hub's private key, and open lib/wg unless disabled
 * @cfg: the configuration (borrowed during the call)
 * @ret: the hub
 *
 * The key file holds the base64 private key, as `wg genkey` writes it. A missing file is
 * created 0600 with a new key (O_EXCL, fsync'd); an existing one readable by group or
 * others is refused.
 *
 * Return: 0 or a negative errno; failures are logged.
 */
int hub_new(const GatewayConfig *cfg, Hub **ret);
Hub *hub_free(Hub *h);
CLUB_DEFINE_CLEANUP(Hub *, hub_free);

/* The hub's public key, base64. */
const char *hub_public_key(const Hub *h);
/* Its interface name. */
const char *hub_interface(const Hub *h);

/**
 * hub_converge() - bring the interface to the key, listen port, the gateway's mesh address
 * with the prefix length, up, and exactly the store's peers (each its /32, no endpoint)
 * @h: the hub
 * @s: the store
 *
 * Does nothing with Enabled=no. Failures are logged (with wg_strerror_hint()).
 *
 * Return: 0 (also when disabled), or a negative errno.
 */
int hub_converge(Hub *h, Store *s);
