/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "bus-util.h"

#define ERROR_NOT_REGISTERED "club.inference.Test1.Error.NotRegistered"
#define ERROR_NOT_REGISTERED_OLD "club.inference.Test1.Error.NotEnrolled"
#define ERROR_NO_SUCH_KEY "club.inference.Test1.Error.NoSuchKey"

static const sd_bus_error_map test_errors[] = {
        SD_BUS_ERROR_MAP(ERROR_NOT_REGISTERED, ENOLINK),
        SD_BUS_ERROR_MAP(ERROR_NO_SUCH_KEY, ENOKEY),
        SD_BUS_ERROR_MAP(ERROR_NOT_REGISTERED_OLD, ENOLINK),    /* understood, never sent */
        SD_BUS_ERROR_MAP_END
};

START_TEST(test_check_flags)
{
        static const struct { uint64_t flags, supported; int r; const char *message; } t[] = {
                { 0, 0, 0, NULL },
                { 1, 1, 0, NULL },
                { 5, 7, 0, NULL },
                { 1, 0, -EINVAL, "Unsupported flags 0x1 (supported: 0x0)." },
                { 3, 1, -EINVAL, "Unsupported flags 0x2 (supported: 0x1)." },
                { UINT64_MAX, 0, -EINVAL, "Unsupported flags 0xffffffffffffffff (supported: 0x0)." },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

                ck_assert_int_eq(bus_check_flags(t[i].flags, t[i].supported, &e), t[i].r);
                if (t[i].r == 0)
                        ck_assert(!sd_bus_error_is_set(&e));
                else {
                        ck_assert_str_eq(e.name, SD_BUS_ERROR_INVALID_ARGS);
                        ck_assert_str_eq(e.message, t[i].message);
                }
                /* No error object: same verdict. */
                ck_assert_int_eq(bus_check_flags(t[i].flags, t[i].supported, NULL), t[i].r);
        }
}
END_TEST

START_TEST(test_error_map)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        /* Before registration: sd-bus's generic names. */
        ck_assert_ptr_null(bus_error_name_from_errno(ENOLINK));
        ck_assert_int_eq(bus_error_set_errno(&e, -ENOLINK), -ENOLINK);
        ck_assert_str_eq(e.name, "System.Error.ENOLINK");
        sd_bus_error_free(&e);

        ck_assert_int_eq(bus_error_map_register(test_errors), 0);
        ck_assert_int_eq(bus_error_map_register(test_errors), 0);     /* again: no-op */

        ck_assert_str_eq(bus_error_name_from_errno(-ENOLINK), ERROR_NOT_REGISTERED);
        ck_assert_str_eq(bus_error_name_from_errno(ENOLINK), ERROR_NOT_REGISTERED);
        ck_assert_str_eq(bus_error_name_from_errno(ENOKEY), ERROR_NO_SUCH_KEY);
        ck_assert_ptr_null(bus_error_name_from_errno(EIO));
        ck_assert_ptr_null(bus_error_name_from_errno(0));

        /* errno -> name, with %m and a message. */
        ck_assert_int_eq(bus_error_set_errnof(&e, -ENOLINK, "Agent %s: %m", "a1"), -ENOLINK);
        ck_assert_str_eq(e.name, ERROR_NOT_REGISTERED);
        ck_assert_str_eq(e.message, "Agent a1: Link has been severed");
        sd_bus_error_free(&e);

        ck_assert_int_eq(bus_error_set_errno(&e, ENOKEY), -ENOKEY);
        ck_assert_str_eq(e.name, ERROR_NO_SUCH_KEY);
        ck_assert_str_eq(e.message, "Required key not available");
        sd_bus_error_free(&e);

        /* Unmapped errnos keep sd-bus's standard names. */
        ck_assert_int_eq(bus_error_set_errnof(&e, -EINVAL, "bad %d", 7), -EINVAL);
        ck_assert_str_eq(e.name, SD_BUS_ERROR_INVALID_ARGS);
        ck_assert_str_eq(e.message, "bad 7");
        sd_bus_error_free(&e);
        ck_assert_int_eq(bus_error_set_errno(&e, -EIO), -EIO);
        ck_assert_str_eq(e.name, SD_BUS_ERROR_IO_ERROR);     /* sd-bus names EIO itself */
        sd_bus_error_free(&e);

        /* NULL error object, and errno 0. */
        ck_assert_int_eq(bus_error_set_errnof(NULL, -ENOLINK, "x"), -ENOLINK);
        ck_assert_int_eq(bus_error_set_errnof(&e, 0, "x"), 0);
        ck_assert(!sd_bus_error_is_set(&e));

        /* name -> errno, for every entry (the receiving side, e.g. clubctl). */
        ck_assert_int_eq(sd_bus_error_set(&e, ERROR_NOT_REGISTERED_OLD, "old"), -ENOLINK);
        ck_assert_int_eq(sd_bus_error_get_errno(&e), ENOLINK);
        sd_bus_error_free(&e);
        ck_assert_int_eq(sd_bus_error_set(&e, ERROR_NO_SUCH_KEY, NULL), -ENOKEY);
}
END_TEST

START_TEST(test_error_map_limits)
{
        static sd_bus_error_map many[BUS_ERROR_MAPS_MAX + 1][2];
        static char names[BUS_ERROR_MAPS_MAX + 1][64];
        static const sd_bus_error_map bad_code[] = {
                { .name = "club.inference.Test1.Error.Zero", .code = 0 },
                SD_BUS_ERROR_MAP_END
        };
        static const sd_bus_error_map bad_name[] = {
                SD_BUS_ERROR_MAP("NoDots", EIO),
                SD_BUS_ERROR_MAP_END
        };
        unsigned n = 0;
        int r = 0;

        ck_assert_int_eq(bus_error_map_register(bad_code), -EINVAL);
        ck_assert_int_eq(bus_error_map_register(bad_name), -EINVAL);

        for (unsigned i = 0; i <= BUS_ERROR_MAPS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "club.inference.Test1.Error.E%u", i);
                many[i][0] = (sd_bus_error_map) SD_BUS_ERROR_MAP(names[i], 200 + (int) i);
                many[i][1] = (sd_bus_error_map) SD_BUS_ERROR_MAP_END;
        }
        /* Up to BUS_ERROR_MAPS_MAX fit (fewer if another test in this process registered
         * some already: CK_FORK=no), then -E2BIG. */
        for (; n <= BUS_ERROR_MAPS_MAX; n++) {
                r = bus_error_map_register(many[n]);
                if (r < 0)
                        break;
        }
        ck_assert_int_eq(r, -E2BIG);
        ck_assert_uint_ge(n, 1);
        ck_assert_str_eq(bus_error_name_from_errno(200 + (int) n - 1), names[n - 1]);
        ck_assert_ptr_null(bus_error_name_from_errno(200 + (int) n));
}
END_TEST

/* A server and a client on a socketpair, both on one event loop. */
typedef struct Pair {
        sd_event *event;
        sd_bus *server, *client;
} Pair;

typedef struct Reply {
        bool done;
        int r;
        uint64_t value;
        char name[128];
        char message[256];
} Reply;

static int method_echo_flags(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *s;
        uint64_t flags = 0;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        r = bus_message_read_flags(m, 1, &flags, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "t", flags);
}

static int method_fail(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        int32_t e;
        int r;

        r = sd_bus_message_read(m, "i", &e);
        if (r < 0)
                return r;
        return bus_error_set_errnof(error, -e, "Failed as asked: %m");
}

static const sd_bus_vtable pair_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("EchoFlags", "st", "t", method_echo_flags, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Fail", "i", "", method_fail, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static void pair_setup(Pair *p) {
        sd_id128_t id;
        int fds[2];

        *p = (Pair) {};
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
        ck_assert_int_ge(sd_event_new(&p->event), 0);
        ck_assert_int_ge(sd_id128_randomize(&id), 0);

        ck_assert_int_ge(sd_bus_new(&p->server), 0);
        ck_assert_int_ge(sd_bus_set_fd(p->server, fds[0], fds[0]), 0);
        ck_assert_int_ge(sd_bus_set_server(p->server, true, id), 0);
        ck_assert_int_ge(sd_bus_add_object_vtable(p->server, NULL, "/test", "club.inference.Test1", pair_vtable, NULL), 0);
        ck_assert_int_ge(sd_bus_start(p->server), 0);
        ck_assert_int_ge(bus_attach_event(p->server, p->event, 0), 0);

        ck_assert_int_ge(sd_bus_new(&p->client), 0);
        ck_assert_int_ge(sd_bus_set_fd(p->client, fds[1], fds[1]), 0);
        ck_assert_int_ge(sd_bus_start(p->client), 0);
        ck_assert_int_ge(sd_bus_attach_event(p->client, p->event, 0), 0);
}

static void pair_teardown(Pair *p) {
        sd_bus_flush_close_unref(p->client);
        sd_bus_flush_close_unref(p->server);
        sd_event_unref(p->event);
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Reply *x = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        x->done = true;
        if (e) {
                x->r = -sd_bus_error_get_errno(e);
                snprintf(x->name, sizeof(x->name), "%s", e->name);
                snprintf(x->message, sizeof(x->message), "%s", strempty(e->message));
        } else if (sd_bus_message_has_signature(reply, "t"))
                ck_assert_int_ge(sd_bus_message_read(reply, "t", &x->value), 0);
        return 1;
}

static void pair_wait(Pair *p, Reply *x) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;

        while (!x->done) {
                ck_assert(now_usec(CLOCK_MONOTONIC) < deadline);
                ck_assert_int_ge(sd_event_run(p->event, 100 * USEC_PER_MSEC), 0);
        }
}

static void call_echo_flags(Pair *p, uint64_t flags, Reply *x) {
        *x = (Reply) {};
        ck_assert_int_ge(sd_bus_call_method_async(p->client, NULL, NULL, "/test", "club.inference.Test1", "EchoFlags",
                                                  on_reply, x, "st", "hello", flags), 0);
        pair_wait(p, x);
}

static void call_fail(Pair *p, int e, Reply *x) {
        *x = (Reply) {};
        ck_assert_int_ge(sd_bus_call_method_async(p->client, NULL, NULL, "/test", "club.inference.Test1", "Fail",
                                                  on_reply, x, "i", (int32_t) e), 0);
        pair_wait(p, x);
}

START_TEST(test_over_the_wire)
{
        Pair p;
        Reply x;

        ck_assert_int_eq(bus_error_map_register(test_errors), 0);
        pair_setup(&p);

        call_echo_flags(&p, 0, &x);
        ck_assert_str_eq(x.name, "");
        ck_assert_uint_eq(x.value, 0);
        call_echo_flags(&p, 1, &x);
        ck_assert_str_eq(x.name, "");
        ck_assert_uint_eq(x.value, 1);
        call_echo_flags(&p, 6, &x);
        ck_assert_str_eq(x.name, SD_BUS_ERROR_INVALID_ARGS);
        ck_assert_str_eq(x.message, "Unsupported flags 0x6 (supported: 0x1).");
        ck_assert_int_eq(x.r, -EINVAL);

        /* A domain errno goes out under the daemon's name and comes back as the errno. */
        call_fail(&p, ENOLINK, &x);
        ck_assert_str_eq(x.name, ERROR_NOT_REGISTERED);
        ck_assert_str_eq(x.message, "Failed as asked: Link has been severed");
        ck_assert_int_eq(x.r, -ENOLINK);
        call_fail(&p, ENOMEM, &x);
        ck_assert_str_eq(x.name, SD_BUS_ERROR_NO_MEMORY);
        ck_assert_int_eq(x.r, -ENOMEM);

        pair_teardown(&p);
}
END_TEST

START_TEST(test_open_and_name)
{
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;

        /* $DBUS_SYSTEM_BUS_ADDRESS is honoured: nothing listens there. */
        ck_assert_int_eq(setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/club-test/system_bus_socket", 1), 0);
        ck_assert_int_lt(bus_open_system("test", &bus), 0);
        ck_assert_ptr_null(bus);

        ck_assert_int_ge(sd_bus_new(&bus), 0);
        ck_assert_int_eq(bus_request_name(bus, ""), -EINVAL);
        ck_assert_int_eq(bus_request_name(bus, ":1.5"), -EINVAL);
}
END_TEST

static Suite *bus_util_suite(void) {
        Suite *s = suite_create("bus-util");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_check_flags);
        tcase_add_test(tc, test_error_map);
        tcase_add_test(tc, test_error_map_limits);
        tcase_add_test(tc, test_over_the_wire);
        tcase_add_test(tc, test_open_and_name);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(bus_util_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
