/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-bus-test-client — what tests/integration/test-bus-polkit.sh needs beyond busctl:
 * D-Bus error *names* (busctl prints only the message), the PropertiesChanged signal
 * of a call, and many calls pipelined on one connection.
 *
 *   poke [--flags=N] [--interactive]    call Poke once
 *   lookup KEY [--flags=N]              call Lookup once
 *   watch-poke                          subscribe to PropertiesChanged, Poke, wait for the signal
 *   burst N                             send N Pokes at once on one connection, then a
 *                                       Properties.Get as a barrier: the service handles
 *                                       messages of one connection in order, so when the
 *                                       barrier is answered every Poke has been seen
 *
 * Output is key=value lines: "counter=N", "value=S", "error=NAME" + "message=TEXT",
 * "barrier ok=N errors=N", "done ok=N limits=N other=N contiguous=yes|no".
 * Exit: 0 when every expected reply arrived (successful or not), 1 otherwise.
 * Connects to the system bus: $DBUS_SYSTEM_BUS_ADDRESS.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "log.h"
#include "parse-util.h"

#define TEST_BUS_NAME   "club.inference.Test1"
#define TEST_PATH       "/club/inference/Test1"
#define TEST_INTERFACE  "club.inference.Test1"
#define BURST_MAX       10000U

static uint64_t arg_flags = 0;
static bool arg_interactive = false;
static uint64_t arg_timeout_usec = 30 * USEC_PER_SEC;

/* Print a method reply: the error's name and text, or nothing (the caller prints values). */
static bool print_error(sd_bus_message *reply) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (!e)
                return false;
        printf("error=%s\nmessage=%s\n", e->name, strempty(e->message));
        return true;
}

/* Like sd_bus_call(), but hands back error replies as messages too. */
static int call_raw(sd_bus *bus, sd_bus_message *m, sd_bus_message **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call(bus, m, arg_timeout_usec, &error, &reply);
        if (r >= 0) {
                *ret = reply;
                return 0;
        }
        if (!sd_bus_error_is_set(&error))
                return r;               /* no reply at all: local failure or timeout */

        /* Rebuild an error message so that callers see one shape. */
        r = sd_bus_message_new_method_error(m, &reply, &error);
        if (r < 0)
                return r;
        *ret = reply;
        return 0;
}

static int new_call(sd_bus *bus, const char *method, sd_bus_message **ret) {
        return sd_bus_message_new_method_call(bus, ret, TEST_BUS_NAME, TEST_PATH, TEST_INTERFACE, method);
}

static int verb_poke(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        uint64_t counter;
        int r;

        r = new_call(bus, "Poke", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", arg_flags);
        if (r >= 0)
                r = call_raw(bus, m, &reply);
        if (r < 0)
                return log_error_errno(r, "Poke failed without a reply: %m");

        if (print_error(reply))
                return 0;
        r = sd_bus_message_read(reply, "t", &counter);
        if (r < 0)
                return log_error_errno(r, "Bad Poke reply: %m");
        printf("counter=%" PRIu64 "\n", counter);
        return 0;
}

static int verb_lookup(sd_bus *bus, const char *key) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *value;
        int r;

        r = new_call(bus, "Lookup", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "st", key, arg_flags);
        if (r >= 0)
                r = call_raw(bus, m, &reply);
        if (r < 0)
                return log_error_errno(r, "Lookup failed without a reply: %m");

        if (print_error(reply))
                return 0;
        r = sd_bus_message_read(reply, "s", &value);
        if (r < 0)
                return log_error_errno(r, "Bad Lookup reply: %m");
        printf("value=%s\n", value);
        return 0;
}

typedef struct Watch {
        bool got_signal;
        uint64_t signal_counter;
} Watch;

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;
        const char *interface, *name;
        int r;

        r = sd_bus_message_read(m, "s", &interface);
        if (r < 0 || !streq(interface, TEST_INTERFACE))
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return 0;
                if (streq(name, "Counter")) {
                        if (sd_bus_message_read(m, "v", "t", &w->signal_counter) < 0)
                                return 0;
                        w->got_signal = true;
                } else if (sd_bus_message_skip(m, "v") < 0)
                        return 0;
                if (sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        return 0;
}

static int wait_until(sd_bus *bus, bool (*done)(void *), void *userdata) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + arg_timeout_usec;
        int r;

        while (!done(userdata)) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);

                if (now >= deadline)
                        return -ETIMEDOUT;
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = sd_bus_wait(bus, deadline - now);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool watch_done(void *userdata) {
        return ((Watch *) userdata)->got_signal;
}

static int verb_watch_poke(sd_bus *bus) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        Watch w = {};
        uint64_t counter;
        int r;

        /* Synchronous AddMatch: the match is in place before the call goes out. */
        r = sd_bus_match_signal(bus, &slot, TEST_BUS_NAME, TEST_PATH, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties_changed, &w);
        if (r < 0)
                return log_error_errno(r, "Failed to subscribe to PropertiesChanged: %m");

        r = new_call(bus, "Poke", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", UINT64_C(0));
        if (r >= 0)
                r = call_raw(bus, m, &reply);
        if (r < 0)
                return log_error_errno(r, "Poke failed without a reply: %m");
        if (print_error(reply))
                return -EACCES;
        r = sd_bus_message_read(reply, "t", &counter);
        if (r < 0)
                return log_error_errno(r, "Bad Poke reply: %m");
        printf("counter=%" PRIu64 "\n", counter);

        /* The signal was sent before the reply; it may be queued already or still on its way. */
        r = wait_until(bus, watch_done, &w);
        if (r < 0)
                return log_error_errno(r, "No PropertiesChanged signal for Counter: %m");
        printf("signal=%" PRIu64 "\n", w.signal_counter);
        return 0;
}

typedef struct Burst {
        unsigned n, n_replies, n_ok, n_limits, n_other;
        uint64_t *counters;
        bool barrier_done;
        char other_names[512];
} Burst;

static int on_burst_reply(sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Burst *b = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint64_t counter;

        b->n_replies++;
        if (!e) {
                if (sd_bus_message_read(reply, "t", &counter) > 0)
                        b->counters[b->n_ok++] = counter;
                else
                        b->n_other++;
        } else if (sd_bus_error_has_name(e, SD_BUS_ERROR_LIMITS_EXCEEDED))
                b->n_limits++;
        else {
                b->n_other++;
                if (!strstr(b->other_names, e->name) &&
                    strlen(b->other_names) + strlen(e->name) + 2 < sizeof(b->other_names)) {
                        strcat(b->other_names, " ");
                        strcat(b->other_names, e->name);
                }
        }
        return 0;
}

static int on_barrier_reply(sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Burst *b = userdata;

        b->barrier_done = true;
        printf("barrier ok=%u errors=%u%s\n", b->n_ok, b->n_limits + b->n_other,
               sd_bus_message_is_method_error(reply, NULL) ? " (barrier call failed)" : "");
        fflush(stdout);
        return 0;
}

static bool burst_done(void *userdata) {
        Burst *b = userdata;

        return b->barrier_done && b->n_replies == b->n;
}

static int compare_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

static int verb_burst(sd_bus *bus, unsigned n) {
        _cleanup_free_ uint64_t *counters = NULL;
        Burst b;
        bool contiguous = true;
        int r;

        counters = new0(uint64_t, n);
        if (!counters)
                return log_oom();
        b = (Burst) { .n = n, .counters = counters };

        for (unsigned i = 0; i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

                r = new_call(bus, "Poke", &m);
                if (r >= 0)
                        r = sd_bus_message_append(m, "t", UINT64_C(0));
                if (r >= 0)
                        r = sd_bus_call_async(bus, NULL, m, on_burst_reply, &b, arg_timeout_usec);
                if (r < 0)
                        return log_error_errno(r, "Failed to send Poke #%u: %m", i);
        }

        r = sd_bus_call_method_async(bus, NULL, TEST_BUS_NAME, TEST_PATH, "org.freedesktop.DBus.Properties",
                                     "Get", on_barrier_reply, &b, "ss", TEST_INTERFACE, "Counter");
        if (r < 0)
                return log_error_errno(r, "Failed to send the barrier call: %m");

        r = wait_until(bus, burst_done, &b);

        qsort(counters, b.n_ok, sizeof(uint64_t), compare_u64);
        for (unsigned i = 1; i < b.n_ok; i++)
                if (counters[i] != counters[i - 1] + 1)
                        contiguous = false;

        printf("done ok=%u limits=%u other=%u replies=%u/%u contiguous=%s%s%s\n",
               b.n_ok, b.n_limits, b.n_other, b.n_replies, n, contiguous ? "yes" : "no",
               b.other_names[0] ? " other_names=" : "", b.other_names);
        if (r < 0)
                return log_error_errno(r, "Not every reply arrived: %m");
        return 0;
}

static void help(void) {
        printf("Usage: %s [--flags=N] [--interactive] [--timeout=SEC] VERB\n"
               "  poke | lookup KEY | watch-poke | burst N\n",
               program_invocation_short_name);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_FLAGS = 0x100, ARG_INTERACTIVE, ARG_TIMEOUT };
        static const struct option options[] = {
                { "flags", required_argument, NULL, ARG_FLAGS },
                { "interactive", no_argument, NULL, ARG_INTERACTIVE },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        unsigned n;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_FLAGS:
                        if (parse_uint64(optarg, &arg_flags) < 0)
                                return log_error_errno(-EINVAL, "Bad --flags=%s", optarg);
                        break;
                case ARG_INTERACTIVE:
                        arg_interactive = true;
                        break;
                case ARG_TIMEOUT:
                        if (parse_uint(optarg, &n) < 0 || n == 0)
                                return log_error_errno(-EINVAL, "Bad --timeout=%s", optarg);
                        arg_timeout_usec = n * USEC_PER_SEC;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind >= argc) {
                help();
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *verb;
        unsigned n;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        verb = argv[optind];

        r = bus_open_system("club-bus-test-client", &bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_set_allow_interactive_authorization(bus, arg_interactive);
        if (r < 0)
                return log_error_errno(r, "Failed to set interactive authorization: %m");

        if (streq(verb, "poke"))
                return verb_poke(bus);
        if (streq(verb, "lookup") && optind + 1 < argc)
                return verb_lookup(bus, argv[optind + 1]);
        if (streq(verb, "watch-poke"))
                return verb_watch_poke(bus);
        if (streq(verb, "burst") && optind + 1 < argc) {
                if (parse_uint(argv[optind + 1], &n) < 0 || n == 0 || n > BURST_MAX)
                        return log_error_errno(-EINVAL, "Bad count '%s' (1…%u)", argv[optind + 1], BURST_MAX);
                return verb_burst(bus, n);
        }
        help();
        return -EINVAL;
}

int main(int argc, char *argv[]) {
        log_set_max_level(LOG_INFO);
        return run(argc, argv) < 0 ? 1 : 0;
}
