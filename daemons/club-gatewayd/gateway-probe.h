/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's probe of its providers: every ProbeInterval= it sends
 * GET http://<mesh-address>:<agent_port>/healthz through each provider's tunnel
 * (lib/http-client, on the loop, at most one probe per provider in flight, 5 s timeout),
 * for the providers that heartbeat within the online window and are ACTIVE or
 * UNREACHABLE. A failed probe (no connection, timeout, anything but 200) moves an ACTIVE
 * provider to UNREACHABLE; a good one moves an UNREACHABLE provider back to ACTIVE. The
 * store has no column for the reason: the last one is kept here and logged at warning
 * when the provider becomes unreachable, when the reason changes, and otherwise at most
 * every PROBE_WARNING_INTERVAL_USEC.
 */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "store.h"

#define PROBE_INTERVAL_USEC_DEFAULT (30 * USEC_PER_SEC)
#define PROBE_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define PROBE_WARNING_INTERVAL_USEC (300 * USEC_PER_SEC)

typedef struct Prober Prober;

/**
 * prober_new() - start probing
 * @event:         the loop
 * @store:         the store (borrowed: it must outlive the prober)
 * @interval_usec: between two rounds; 0: PROBE_INTERVAL_USEC_DEFAULT
 * @window_usec:   the online window: providers without a heartbeat this recent are not probed
 * @ret:           the prober
 *
 * The first round runs one interval after the start.
 *
 * Return: 0 or a negative errno.
 */
int prober_new(sd_event *event, Store *store, uint64_t interval_usec, uint64_t window_usec, Prober **ret);
Prober *prober_free(Prober *p);
CLUB_DEFINE_CLEANUP(Prober *, prober_free);

/* The last probe failure's reason for a provider that is unreachable now, or NULL. */
const char *prober_reason(Prober *p, int64_t provider_id);
