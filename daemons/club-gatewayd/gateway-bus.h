/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's administration over D-Bus: the service club.inference.Gateway1 on the system
 * bus, one object /club/inference/Gateway1 with the interface club.inference.Gateway1.
 * dbus/club.inference.Gateway1.xml is the contract (every method, its arguments, errors and
 * polkit action); docs/club-gatewayctl.md describes the tool that calls it.
 *
 * Every method is callable by anyone on the bus and checks a polkit action first (root is
 * authorized without polkitd): club.inference.gateway1.read for listing and showing,
 * .manage-users, .manage-keys and .manage-providers for changes. Records go out as a{sv}
 * dictionaries. A key's secret appears on the bus exactly once: in the reply to the Create
 * method that made it, which goes only to its caller (the reply message is marked sensitive,
 * so sd-bus wipes it when freed). Lists and records show only the key's prefix.
 *
 * Methods that change the store's WireGuard peers (DeleteUser, DeleteProvider) converge the
 * hub before they answer, so a removed provider's tunnel stops carrying traffic at once.
 *
 * The public API does not depend on D-Bus: a gateway that cannot connect to the bus or own
 * the name logs a warning and serves HTTP without administration.
 */

#include <systemd/sd-event.h>

#include "macro.h"

#define GATEWAY_BUS_NAME        "club.inference.Gateway1"
#define GATEWAY_BUS_PATH        "/club/inference/Gateway1"
#define GATEWAY_BUS_INTERFACE   "club.inference.Gateway1"

#define GATEWAY_ACTION_READ             "club.inference.gateway1.read"
#define GATEWAY_ACTION_MANAGE_USERS     "club.inference.gateway1.manage-users"
#define GATEWAY_ACTION_MANAGE_KEYS      "club.inference.gateway1.manage-keys"
#define GATEWAY_ACTION_MANAGE_PROVIDERS "club.inference.gateway1.manage-providers"

/* The errors of the interface besides org.freedesktop.DBus.Error.InvalidArgs (bad
 * arguments), .AccessDenied and .InteractiveAuthorizationRequired (polkit). */
#define GATEWAY_ERROR_NO_SUCH_USER      "club.inference.Gateway1.Error.NoSuchUser"
#define GATEWAY_ERROR_NO_SUCH_KEY       "club.inference.Gateway1.Error.NoSuchKey"
#define GATEWAY_ERROR_NO_SUCH_PROVIDER  "club.inference.Gateway1.Error.NoSuchProvider"
#define GATEWAY_ERROR_NAME_TAKEN        "club.inference.Gateway1.Error.NameTaken"
#define GATEWAY_ERROR_STORE_BUSY        "club.inference.Gateway1.Error.StoreBusy"
#define GATEWAY_ERROR_HUB_FAILED        "club.inference.Gateway1.Error.HubFailed"

typedef struct GatewayBus GatewayBus;
typedef struct Store Store;
typedef struct Hub Hub;

/**
 * gateway_bus_new() - connect to the system bus, export the object and own the name
 * @event: the gateway's loop; the connection runs on it
 * @store: the store the methods work on (borrowed; must outlive the GatewayBus)
 * @hub:   the hub converged after peers change (borrowed; must outlive the GatewayBus)
 * @ret:   the service
 *
 * Honours $DBUS_SYSTEM_BUS_ADDRESS. Owning the name is synchronous (start-up only). A
 * later disconnect from the bus does not stop the gateway: administration is gone until a
 * restart, and a warning says so.
 *
 * Return: 0, or a negative errno (-ENOENT/-ECONNREFUSED no bus, -EACCES the bus policy
 * does not let this user own the name, -EEXIST another process owns it, -ENOMEM). Not
 * logged: the caller decides how loud a missing bus is.
 */
int gateway_bus_new(sd_event *event, Store *store, Hub *hub, GatewayBus **ret);

/**
 * gateway_bus_free() - release the name, answer pending callers, and disconnect
 * @b: the service, may be NULL
 *
 * Callers still waiting for polkit get org.freedesktop.DBus.Error.NoReply.
 *
 * Return: NULL.
 */
GatewayBus *gateway_bus_free(GatewayBus *b);
CLUB_DEFINE_CLEANUP(GatewayBus *, gateway_bus_free);

/* GetUsage calls @flush first, so that usage still queued in memory counts; @b may be NULL. */
void gateway_bus_set_usage_flush(GatewayBus *b, void (*flush)(void *userdata), void *userdata);
