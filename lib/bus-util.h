/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * sd-bus helpers both daemons use: connecting to the system bus, owning a name,
 * hooking the connection into sd-event, the trailing "t flags" argument of
 * every mutating method (STYLE.md §7), and the errno <-> D-Bus error name map
 * (STYLE.md §4).
 *
 * The error map, in both directions
 * ---------------------------------
 * sd_bus_error_add_map() alone only teaches sd-bus to turn a *received* error
 * name into an errno (sd_bus_error_get_errno(), and the negative return of
 * sd_bus_call()). It does not work the other way round: a method handler that
 * returns -ENOLINK makes sd-bus send "System.Error.ENOLINK", whatever map is
 * registered. So a daemon registers its map once with bus_error_map_register()
 * (which also calls sd_bus_error_add_map() for the receiving side, e.g. clubctl
 * linking the same map) and its handlers report domain failures through
 * bus_error_set_errnof(), which consults the registered maps first:
 *
 *      static const sd_bus_error_map agent_errors[] = {
 *              SD_BUS_ERROR_MAP("club.inference.Agent1.Error.NotRegistered", ENOLINK),
 *              SD_BUS_ERROR_MAP_END
 *      };
 *      ...
 *      r = bus_error_map_register(agent_errors);          (once, at start-up)
 *      ...
 *      r = manager_deregister(m);
 *      if (r < 0)                                          (in a method handler)
 *              return bus_error_set_errnof(error, r, "Failed to deregister: %m");
 *
 * -ENOLINK then goes out as club.inference.Agent1.Error.NotRegistered, while an
 * errno that no registered map names keeps sd-bus's standard name
 * (org.freedesktop.DBus.Error.NoMemory for -ENOMEM, …IOError for -EIO,
 * System.Error.ENOLINK where no map names -ENOLINK). Map errnos
 * that lower layers do not produce by accident (ENOLINK, EADDRINUSE, ESTALE …),
 * never EINVAL, ENOMEM, EACCES or EIO. When one errno appears twice, the first
 * entry (of the earliest registered map) is the one sent; every entry is still
 * recognised when received.
 *
 * Nothing here logs above debug level.
 */

#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* How many maps bus_error_map_register() keeps (one per daemon plus lib/ is plenty). */
#define BUS_ERROR_MAPS_MAX 8U

/**
 * bus_open_system() - connect to the system bus
 * @description: connection description shown in busctl and in sd-bus debug logs
 *               (e.g. "clubd"); may be NULL
 * @ret: the connected bus; only written on success
 *
 * Honours $DBUS_SYSTEM_BUS_ADDRESS (private buses in tests) and otherwise uses the
 * standard socket. The connection is a bus client; it is not attached to an event
 * loop yet (bus_attach_event()).
 *
 * Return: 0, or a negative errno: -ENOENT/-ECONNREFUSED when no bus listens,
 * -ENOMEM. The Hello exchange completes asynchronously, on first use.
 */
int bus_open_system(const char *description, sd_bus **ret);

/**
 * bus_attach_event() - run a bus connection on an sd-event loop
 * @bus: the connection
 * @event: the loop
 * @priority: the bus event sources' priority (SD_EVENT_PRIORITY_NORMAL usually)
 *
 * Also makes the loop exit when the bus disconnects (sd_bus_set_exit_on_disconnect()),
 * which is what a D-Bus service wants: without its bus it cannot be reached.
 *
 * Return: 0 or a negative errno.
 */
int bus_attach_event(sd_bus *bus, sd_event *event, int64_t priority);

/**
 * bus_request_name() - take a well-known name, synchronously (start-up only)
 * @bus: a connected bus client
 * @name: the name, e.g. "club.inference.Agent1"
 *
 * Add every object and vtable before calling this: callers may send method calls
 * as soon as the name is owned. The name is not queued and not replaceable.
 *
 * Return: 0 when owned; -EEXIST when another connection owns it; -EALREADY when
 * this connection already owns it; -EACCES when the bus policy does not allow
 * this user to own it; -EINVAL for an invalid name; other negative errnos from
 * the bus.
 */
int bus_request_name(sd_bus *bus, const char *name);

/**
 * bus_check_flags() - validate the trailing "t flags" argument of a method
 * @flags: the value the caller sent
 * @supported: the bits this method understands (0 for every method today)
 * @error: set to org.freedesktop.DBus.Error.InvalidArgs on failure; may be NULL
 *
 * Return: 0, or -EINVAL if @flags has a bit outside @supported.
 */
int bus_check_flags(uint64_t flags, uint64_t supported, sd_bus_error *error);

/**
 * bus_message_read_flags() - read and validate the trailing "t flags" argument
 * @m: a method call whose read position is at its final "t" argument
 * @supported: the bits this method understands (0 for every method today)
 * @ret_flags: the flags; only written on success; may be NULL
 * @error: set to org.freedesktop.DBus.Error.InvalidArgs on failure; may be NULL
 *
 * Fails if the argument is missing or not the last one (sd-bus already checks the
 * whole signature against the vtable, so that is a programming error), or if an
 * unsupported bit is set.
 *
 * Return: 0, -EINVAL (bad flags, @error set), or a negative errno from reading.
 */
int bus_message_read_flags(sd_bus_message *m, uint64_t supported, uint64_t *ret_flags, sd_bus_error *error);

/**
 * bus_error_map_register() - register an errno <-> D-Bus error name map, both ways
 * @map: a table ending with SD_BUS_ERROR_MAP_END, in static storage (it is kept,
 *       not copied)
 *
 * Registers @map with sd_bus_error_add_map() (received names -> errno) and keeps it
 * for bus_error_set_errnof() (errno -> sent names). Registering the same map again
 * does nothing. Not thread-safe: call it at start-up.
 *
 * Return: 0, -E2BIG if BUS_ERROR_MAPS_MAX maps are registered already, -EINVAL for
 * an entry with an invalid name or an errno that is not positive, or a negative errno
 * from sd-bus.
 */
int bus_error_map_register(const sd_bus_error_map *map);

/**
 * bus_error_name_from_errno() - the registered name for an errno
 * @error: an errno, positive or negative
 *
 * Only the maps registered with bus_error_map_register() are consulted.
 *
 * Return: the first registered name for abs(@error), or NULL if none.
 */
const char *bus_error_name_from_errno(int error);

/**
 * bus_error_set_errnof() - fill a D-Bus error from an errno, named by the registered maps
 * @e: the error to fill; may be NULL (then only the return value matters)
 * @error: the errno, positive or negative; 0 leaves @e alone and returns 0
 * @format: printf-style message; "%m" is abs(@error)'s text; may be NULL for
 *          strerror(abs(@error))
 *
 * The name is bus_error_name_from_errno(@error) when that is not NULL, and sd-bus's
 * standard name for the errno otherwise (sd_bus_error_set_errnof()).
 *
 * Return: -abs(@error), so that a method handler can `return bus_error_set_errnof(…)`.
 */
int bus_error_set_errnof(sd_bus_error *e, int error, const char *format, ...) _printf_(3, 4);

/**
 * bus_error_set_errno() - bus_error_set_errnof() with the errno's own text
 * @e: the error to fill; may be NULL
 * @error: the errno, positive or negative
 *
 * Return: -abs(@error).
 */
int bus_error_set_errno(sd_bus_error *e, int error);
