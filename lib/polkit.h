/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Asynchronous polkit authorization for sd-bus method handlers (STYLE.md §11 Ex. 2).
 *
 * A handler calls polkit_check_async() after validating its arguments:
 *
 *      r = polkit_check_async(m, "club.inference.agent1.register", &mgr->polkit_registry, error);
 *      if (r < 0)
 *              return r;       (denied, or the check failed: @error is set)
 *      if (r == 0)
 *              return 1;       (pending: the method call is dispatched again later)
 *      … authorized: do the work and reply …
 *
 * How it works. The first call for a method call message starts a query and returns
 * 0; the handler returns without replying. The query asks the bus driver for the
 * caller's uid (org.freedesktop.DBus.GetConnectionUnixUser); uid 0 is authorized at
 * once, without polkit. Anyone else is checked with
 * org.freedesktop.PolicyKit1.Authority.CheckAuthorization, subject "system-bus-name"
 * (the caller's unique name, so polkitd looks up its uid, pid and session itself:
 * no PID race), with AllowUserInteraction when the caller set the message's
 * ALLOW_INTERACTIVE_AUTHORIZATION flag. When the answer arrives the message is put
 * back in the connection's read queue (sd_bus_enqueue_for_read()), sd-bus dispatches
 * it to the same handler again, the handler reads its arguments again (the message
 * is rewound) and calls polkit_check_async() again, which now returns the answer and
 * forgets the query. Nothing blocks the event loop.
 *
 * Errors (the error name in @error, and the return value):
 *   org.freedesktop.DBus.Error.AccessDenied, -EACCES
 *        polkit said no; or polkitd is not running ("polkit is not available; only
 *        root may call …"); or the caller is not root on a peer-to-peer connection.
 *   org.freedesktop.DBus.Error.InteractiveAuthorizationRequired, -EACCES
 *        polkit would ask for a password, but the caller did not allow interaction
 *        (busctl --allow-interactive-authorization=yes, sd_bus_set_allow_interactive_authorization()).
 *   org.freedesktop.DBus.Error.LimitsExceeded, -EBUSY
 *        the registry already holds its maximum of pending queries; try again later.
 *   polkit's own error (org.freedesktop.PolicyKit1.Error.*, NoReply on timeout), -errno
 *        the check itself failed, e.g. the action is not installed. Fails closed.
 * The standard names are used on purpose: every D-Bus client knows them, and sd-bus
 * turns them into EACCES (ENOBUFS for LimitsExceeded) without any map.
 *
 * Shutting down. When the bus's sd-event loop exits, the registry answers every caller
 * still waiting with org.freedesktop.DBus.Error.NoReply ("… cancelled: the service is
 * shutting down") from an exit source that runs before sd-bus flushes and closes the
 * connection, so no caller waits for its timeout. polkit_registry_free() does the same
 * for whatever is left; free the registry before the bus connection.
 *
 * One action per method call: a handler must not call polkit_check_async() for two
 * different actions on the same message.
 */

#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* Pending queries a registry holds at most, unless polkit_registry_new() says otherwise.
 * The bound is global and counts a query from its start, before the caller's uid is
 * known: while the registry is full every caller, root included, gets LimitsExceeded.
 * Below dbus-daemon's max_replies_per_connection (128 on the system bus), which every
 * outstanding CheckAuthorization call of the daemon counts against. */
#define POLKIT_PENDING_MAX_DEFAULT 64U

/* How long polkitd may take to answer: the bus default for a non-interactive check; a
 * person typing a password gets longer (callers should raise their own timeout too). */
#define POLKIT_TIMEOUT_USEC (25 * USEC_PER_SEC)
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (120 * USEC_PER_SEC)

/* An answered query whose method call never came back to polkit_check_async() (the
 * object went away in between, say) is dropped after this long. */
#define POLKIT_ANSWERED_TTL_USEC (30 * USEC_PER_SEC)

/* When the event loop of the bus exits, pending callers are answered (NoReply, "cancelled")
 * by an exit source of this priority, before sd-bus's own exit source flushes and closes
 * the connection: attach buses at a lower priority (a larger number), such as
 * SD_EVENT_PRIORITY_NORMAL. */
#define POLKIT_EXIT_PRIORITY SD_EVENT_PRIORITY_IMPORTANT

typedef struct PolkitRegistry PolkitRegistry;

/**
 * polkit_registry_new() - make a registry of pending polkit queries
 * @max_pending: how many queries may be pending at once (> 0)
 * @ret: the registry
 *
 * polkit_check_async() makes one with POLKIT_PENDING_MAX_DEFAULT when it is handed a
 * pointer to NULL, so this is only needed for another bound.
 *
 * Return: 0, -EINVAL if @max_pending is 0, or -ENOMEM.
 */
int polkit_registry_new(unsigned max_pending, PolkitRegistry **ret);

/**
 * polkit_registry_free() - cancel every pending query and free the registry
 * @registry: the registry, may be NULL
 *
 * Each pending CheckAuthorization call is abandoned (and withdrawn from polkitd with
 * CancelCheckAuthorization if it may be showing an authentication dialog); each method
 * call still waiting for its answer is answered with
 * org.freedesktop.DBus.Error.NoReply ("authorization check cancelled"), so that no
 * caller waits for its timeout.
 *
 * Return: NULL.
 */
PolkitRegistry *polkit_registry_free(PolkitRegistry *registry);
CLUB_DEFINE_CLEANUP(PolkitRegistry *, polkit_registry_free);

/**
 * polkit_registry_n_pending() - how many queries the registry holds
 * @registry: the registry, may be NULL
 *
 * Return: the number of queries not yet handed back to their method handler.
 */
unsigned polkit_registry_n_pending(const PolkitRegistry *registry);

/**
 * polkit_check_async_full() - is the sender of a method call authorized for an action?
 * @m: the method call being handled
 * @action: the polkit action id, e.g. "club.inference.agent1.register"
 * @details: NULL, or a NULL-terminated list of key, value, key, value… passed to polkit
 *           as CheckAuthorization's details (rules see them with action.lookup(key));
 *           must be the same every time the same message is checked
 * @registry: where pending queries live; a pointer to NULL makes a registry with
 *            POLKIT_PENDING_MAX_DEFAULT
 * @error: filled when the result is negative
 *
 * Return: 1 when authorized; 0 when the answer is pending (return 1 from the handler
 * without replying; the call comes back); a negative errno when denied or failed,
 * with @error set (see the list at the top of this file).
 */
int polkit_check_async_full(
                sd_bus_message *m,
                const char *action,
                const char *const *details,
                PolkitRegistry **registry,
                sd_bus_error *error);

/**
 * polkit_check_async() - polkit_check_async_full() without details
 * @m: the method call being handled
 * @action: the polkit action id
 * @registry: where pending queries live; a pointer to NULL makes one
 * @error: filled when the result is negative
 *
 * Return: 1 authorized, 0 pending, negative errno denied or failed.
 */
int polkit_check_async(sd_bus_message *m, const char *action, PolkitRegistry **registry, sd_bus_error *error);
