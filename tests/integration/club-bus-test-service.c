/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-bus-test-service — a tiny D-Bus service built only from lib/bus-util and
 * lib/polkit, the way clubd and club-gatewayd use them. tests/integration/test-bus-polkit.sh
 * runs it on a private system bus with the real dbus-daemon and polkitd.
 *
 *   bus name   club.inference.Test1
 *   object     /club/inference/Test1
 *   interface  club.inference.Test1
 *     property  Counter             t   read-only, emits PropertiesChanged; no privilege
 *     method    Poke(t flags) -> t  polkit action club.inference.test1.poke; counter + 1
 *     method    Lookup(s key, t flags) -> s
 *                                   no privilege; "answer" -> "42", other keys fail with
 *                                   club.inference.Test1.Error.NoSuchKey (the error map)
 *   Nonzero flags fail with org.freedesktop.DBus.Error.InvalidArgs.
 *
 * Options: --max-pending=N (polkit registry bound), --log-level=LEVEL ($CLUB_LOG_LEVEL).
 * SIGTERM/SIGINT: the loop exits, pending polkit checks are cancelled (their callers get
 * NoReply, "… cancelled: the service is shutting down") and the service exits 0.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "bus-util.h"
#include "log.h"
#include "parse-util.h"
#include "polkit.h"

#define TEST_BUS_NAME   "club.inference.Test1"
#define TEST_PATH       "/club/inference/Test1"
#define TEST_INTERFACE  "club.inference.Test1"
#define TEST_ACTION_POKE "club.inference.test1.poke"

static unsigned arg_max_pending = POLKIT_PENDING_MAX_DEFAULT;

static const sd_bus_error_map test_errors[] = {
        SD_BUS_ERROR_MAP("club.inference.Test1.Error.NoSuchKey", ENOKEY),
        SD_BUS_ERROR_MAP_END
};

typedef struct Service {
        sd_event *event;
        sd_bus *bus;
        PolkitRegistry *polkit_registry;
        uint64_t counter;
} Service;

static int property_get_counter(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Service *s = userdata;

        return sd_bus_message_append(reply, "t", s->counter);
}

static int method_poke(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Service *s = userdata;
        int r;

        /* Arguments first (they are read again when the call comes back from polkit). */
        r = bus_message_read_flags(m, 0, NULL, error);
        if (r < 0)
                return r;

        r = polkit_check_async(m, TEST_ACTION_POKE, &s->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        s->counter++;
        r = sd_bus_emit_properties_changed(sd_bus_message_get_bus(m), TEST_PATH, TEST_INTERFACE, "Counter", NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to emit PropertiesChanged, ignoring: %m");

        log_debug("Poke from %s: counter %" PRIu64, strna(sd_bus_message_get_sender(m)), s->counter);
        return sd_bus_reply_method_return(m, "t", s->counter);
}

static int test_lookup(const char *key, const char **ret) {
        static const struct { const char *key, *value; } table[] = {
                { "answer", "42" },
                { "name", TEST_BUS_NAME },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(table[i].key, key)) {
                        *ret = table[i].value;
                        return 0;
                }
        return -ENOKEY;
}

static int method_lookup(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *key, *value;
        int r;

        r = sd_bus_message_read(m, "s", &key);
        if (r < 0)
                return r;
        r = bus_message_read_flags(m, 0, NULL, error);
        if (r < 0)
                return r;

        r = test_lookup(key, &value);
        if (r < 0)      /* -ENOKEY goes out as club.inference.Test1.Error.NoSuchKey */
                return bus_error_set_errnof(error, r, "No key '%s'.", key);

        return sd_bus_reply_method_return(m, "s", value);
}

static const sd_bus_vtable test_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Counter", "t", property_get_counter, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Poke",
                                SD_BUS_ARGS("t", flags),
                                SD_BUS_RESULT("t", counter),
                                method_poke,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Lookup",
                                SD_BUS_ARGS("s", key, "t", flags),
                                SD_BUS_RESULT("s", value),
                                method_lookup,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static Service *service_free(Service *s) {
        if (!s)
                return NULL;
        /* The registry before the bus it may still answer callers on. */
        polkit_registry_free(s->polkit_registry);
        sd_bus_flush_close_unref(s->bus);
        sd_event_unref(s->event);
        return mfree(s);
}
CLUB_DEFINE_CLEANUP(Service *, service_free);

static int service_new(Service **ret) {
        _cleanup_(service_freep) Service *s = NULL;
        int r;

        s = new0(Service, 1);
        if (!s)
                return log_oom();

        r = polkit_registry_new(arg_max_pending, &s->polkit_registry);
        if (r < 0)
                return log_error_errno(r, "Failed to set up polkit: %m");

        r = bus_error_map_register(test_errors);
        if (r < 0)
                return log_error_errno(r, "Failed to register D-Bus errors: %m");

        r = sd_event_default(&s->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");

        r = sd_event_add_signal(s->event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(s->event, NULL, SIGINT, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to watch signals: %m");

        r = bus_open_system("club-bus-test-service", &s->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");

        r = sd_bus_add_object_vtable(s->bus, NULL, TEST_PATH, TEST_INTERFACE, test_vtable, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add object %s: %m", TEST_PATH);

        r = bus_attach_event(s->bus, s->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus: %m");

        r = bus_request_name(s->bus, TEST_BUS_NAME);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire bus name %s: %m", TEST_BUS_NAME);

        *ret = TAKE_PTR(s);
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_LOG_LEVEL = 0x100, ARG_MAX_PENDING };
        static const struct option options[] = {
                { "max-pending", required_argument, NULL, ARG_MAX_PENDING },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int c, r, level;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_MAX_PENDING:
                        r = parse_uint(optarg, &arg_max_pending);
                        if (r < 0 || arg_max_pending == 0)
                                return log_error_errno(-EINVAL, "Invalid --max-pending=%s.", optarg);
                        break;
                case ARG_LOG_LEVEL:
                        level = log_level_from_string(optarg);
                        if (level < 0)
                                return log_error_errno(-EINVAL, "Unknown log level '%s'.", optarg);
                        log_set_max_level(level);
                        break;
                case 'h':
                        printf("Usage: %s [--max-pending=N] [--log-level=LEVEL]\n"
                               "Serves %s on the system bus ($DBUS_SYSTEM_BUS_ADDRESS) for tests.\n",
                               program_invocation_short_name, TEST_BUS_NAME);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(-EINVAL, "Unexpected argument '%s'.", argv[optind]);
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(service_freep) Service *s = NULL;
        sigset_t mask;
        int r;

        log_set_max_level(LOG_INFO);
        (void) log_parse_environment();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 1 : 0;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                log_error_errno(-errno, "Failed to block signals: %m");
                return 1;
        }

        r = service_new(&s);
        if (r < 0)
                return 1;

        log_info("Serving %s (polkit: at most %u pending checks).", TEST_BUS_NAME, arg_max_pending);
        (void) sd_notify(false, "READY=1");

        r = sd_event_loop(s->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return 1;
        }

        /* Pending polkit checks were answered already, as the loop exited (lib/polkit.h). */
        log_info("Stopped.");
        return 0;
}
