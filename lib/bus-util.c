/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "bus-util.h"
#include "log.h"

/* The maps given to bus_error_map_register(), in registration order. */
static const sd_bus_error_map *bus_error_maps[BUS_ERROR_MAPS_MAX];
static unsigned bus_error_maps_n;

int bus_open_system(const char *description, sd_bus **ret) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        assert(ret);

        /* sd_bus_open_system*() reads $DBUS_SYSTEM_BUS_ADDRESS itself and falls back to
         * /run/dbus/system_bus_socket; it also marks the connection untrusted, so sd-bus
         * checks SD_BUS_VTABLE_UNPRIVILEGED for every call. */
        r = sd_bus_open_system_with_description(&bus, description);
        if (r < 0)
                return log_debug_errno(r, "Failed to connect to the system bus: %m");

        *ret = TAKE_PTR(bus);
        return 0;
}

int bus_attach_event(sd_bus *bus, sd_event *event, int64_t priority) {
        int r;

        assert(bus);
        assert(event);

        r = sd_bus_attach_event(bus, event, priority);
        if (r < 0)
                return log_debug_errno(r, "Failed to attach the bus to the event loop: %m");

        r = sd_bus_set_exit_on_disconnect(bus, true);
        if (r < 0)
                return log_debug_errno(r, "Failed to make a bus disconnect end the event loop: %m");

        return 0;
}

int bus_request_name(sd_bus *bus, const char *name) {
        int r;

        assert(bus);

        if (isempty(name) || name[0] == ':')
                return -EINVAL;

        /* No SD_BUS_NAME_QUEUE: if somebody else owns the name we want to know now
         * (-EEXIST), not sit in a queue unreachable. */
        r = sd_bus_request_name(bus, name, 0);
        if (r < 0)
                return log_debug_errno(r, "Failed to acquire bus name %s: %m", name);

        return 0;
}

int bus_check_flags(uint64_t flags, uint64_t supported, sd_bus_error *error) {
        if ((flags & ~supported) == 0)
                return 0;

        (void) sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                 "Unsupported flags 0x%" PRIx64 " (supported: 0x%" PRIx64 ").",
                                 flags & ~supported, supported);
        return -EINVAL;
}

int bus_message_read_flags(sd_bus_message *m, uint64_t supported, uint64_t *ret_flags, sd_bus_error *error) {
        uint64_t flags;
        int r;

        assert(m);

        r = sd_bus_message_read_basic(m, 't', &flags);
        if (r < 0)
                return r;
        if (r == 0)             /* nothing left to read: the handler's reads are out of step */
                return -EBADMSG;

        r = sd_bus_message_at_end(m, /* complete= */ true);
        if (r < 0)
                return r;
        if (r == 0)             /* "flags" must be the final argument */
                return -EBADMSG;

        r = bus_check_flags(flags, supported, error);
        if (r < 0)
                return r;

        if (ret_flags)
                *ret_flags = flags;
        return 0;
}

int bus_error_map_register(const sd_bus_error_map *map) {
        int r;

        assert(map);

        for (unsigned i = 0; i < bus_error_maps_n; i++)
                if (bus_error_maps[i] == map)
                        return 0;

        if (bus_error_maps_n >= BUS_ERROR_MAPS_MAX)
                return -E2BIG;

        for (const sd_bus_error_map *e = map; e->name; e++)
                if (isempty(e->name) || !strchr(e->name, '.') || e->code <= 0)
                        return -EINVAL;

        r = sd_bus_error_add_map(map);
        if (r < 0)
                return log_debug_errno(r, "Failed to register D-Bus error map: %m");

        bus_error_maps[bus_error_maps_n++] = map;
        return 0;
}

const char *bus_error_name_from_errno(int error) {
        error = abs(error);
        if (error == 0)
                return NULL;

        for (unsigned i = 0; i < bus_error_maps_n; i++)
                for (const sd_bus_error_map *e = bus_error_maps[i]; e->name; e++)
                        if (e->code == error)
                                return e->name;

        return NULL;
}

int bus_error_set_errnof(sd_bus_error *e, int error, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        const char *name;
        va_list ap;
        int r;

        error = abs(error);
        if (error == 0)
                return 0;

        name = bus_error_name_from_errno(error);
        if (!name) {
                if (!format) {
                        (void) sd_bus_error_set_errno(e, error);
                        return -error;
                }

                va_start(ap, format);
                (void) sd_bus_error_set_errnofv(e, error, format, ap);
                va_end(ap);
                return -error;
        }

        if (!e)
                return -error;

        if (format) {
                va_start(ap, format);
                errno = error;  /* for %m */
                r = vasprintf(&message, format, ap);
                va_end(ap);
                if (r < 0) {
                        /* Out of memory: the name still tells the caller what happened. */
                        (void) sd_bus_error_set_const(e, name, NULL);
                        return -error;
                }
        }

        (void) sd_bus_error_set(e, name, message ?: strerror(error));
        return -error;
}

int bus_error_set_errno(sd_bus_error *e, int error) {
        return bus_error_set_errnof(e, error, NULL);
}
