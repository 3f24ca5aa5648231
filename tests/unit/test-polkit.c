/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/polkit without dbus-daemon or polkitd: the service under test is a real sd-bus
 * bus client on one end of a socketpair; the other end is a fake that plays the bus
 * driver (Hello, GetConnectionUnixUser), polkitd (CheckAuthorization, with verdicts
 * and errors chosen per test, optionally held back) and the callers (method calls with
 * a sender of our choice). Everything runs on one sd-event loop, so every interleaving
 * below is deterministic.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "polkit.h"

#define SERVICE_NAME    "club.inference.Test1"
#define SERVICE_PATH    "/club/inference/Test1"
#define SERVICE_IFACE   "club.inference.Test1"
#define ACTION          "club.inference.test1.poke"

#define SENDER_ROOT     ":1.100"
#define SENDER_ALLOWED  ":1.101"
#define SENDER_DENIED   ":1.102"
#define SENDER_CHALLENGE ":1.103"
#define SENDER_GONE     ":1.104"

#define MAX_HELD 64

typedef struct Call {
        bool done;
        uint64_t counter;
        char error[128];
        char message[256];
} Call;

typedef struct Fake {
        sd_event *event;                /* the service's loop */
        sd_event *driver_event;         /* the fake's own loop: it outlives the service's */
        sd_bus *driver;                 /* the fake: bus driver, polkitd, callers */
        sd_bus *service;                /* the code under test */
        PolkitRegistry *registry;
        uint64_t counter;

        /* How the fake polkitd behaves. */
        bool polkit_missing;
        const char *polkit_error;       /* answer CheckAuthorization with this error */
        bool hold;                      /* keep CheckAuthorization calls unanswered */
        sd_bus_message *held[MAX_HELD];
        unsigned n_held;

        /* What the fake saw. */
        unsigned n_uid_calls, n_check_calls, n_cancel_calls;
        uint32_t last_flags;
        char last_cancellation_id[64];
        char last_details[256];
        char last_cancelled[64];
} Fake;

static uid_t sender_uid(const char *sender) {
        if (streq(sender, SENDER_ROOT))
                return 0;
        if (streq(sender, SENDER_ALLOWED))
                return 1000;
        if (streq(sender, SENDER_DENIED))
                return 1001;
        if (streq(sender, SENDER_CHALLENGE))
                return 1002;
        return (uid_t) -1;
}

static void reply_from(sd_bus *bus, sd_bus_message *call, const char *sender, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        va_list ap;

        ck_assert_int_ge(sd_bus_message_new_method_return(call, &reply), 0);
        ck_assert_int_ge(sd_bus_message_set_sender(reply, sender), 0);
        if (types) {
                va_start(ap, types);
                ck_assert_int_ge(sd_bus_message_appendv(reply, types, ap), 0);
                va_end(ap);
        }
        ck_assert_int_ge(sd_bus_send(bus, reply, NULL), 0);
}

static void error_from(sd_bus *bus, sd_bus_message *call, const char *sender, const char *name, const char *text) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

        ck_assert_int_ge(sd_bus_message_new_method_errorf(call, &reply, name, "%s", text), 0);
        ck_assert_int_ge(sd_bus_message_set_sender(reply, sender), 0);
        ck_assert_int_ge(sd_bus_send(bus, reply, NULL), 0);
}

/* Answer a CheckAuthorization call the way polkitd would, from the subject's uid. */
static void polkit_answer(Fake *f, sd_bus_message *m) {
        const char *kind, *key, *name = NULL, *action, *k, *v, *cancellation_id;
        uint32_t flags;
        int authorized = false, challenge = false;
        uid_t uid;

        ck_assert_int_ge(sd_bus_message_rewind(m, true), 0);
        ck_assert_int_ge(sd_bus_message_enter_container(m, 'r', "sa{sv}"), 0);
        ck_assert_int_ge(sd_bus_message_read(m, "s", &kind), 0);
        ck_assert_str_eq(kind, "system-bus-name");
        ck_assert_int_ge(sd_bus_message_enter_container(m, 'a', "{sv}"), 0);
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                ck_assert_int_ge(sd_bus_message_read(m, "s", &key), 0);
                if (streq(key, "name"))
                        ck_assert_int_ge(sd_bus_message_read(m, "v", "s", &name), 0);
                else
                        ck_assert_int_ge(sd_bus_message_skip(m, "v"), 0);
                ck_assert_int_ge(sd_bus_message_exit_container(m), 0);
        }
        ck_assert_int_ge(sd_bus_message_exit_container(m), 0);
        ck_assert_int_ge(sd_bus_message_exit_container(m), 0);
        ck_assert_ptr_nonnull(name);

        ck_assert_int_ge(sd_bus_message_read(m, "s", &action), 0);
        ck_assert_str_eq(action, ACTION);

        f->last_details[0] = 0;
        ck_assert_int_ge(sd_bus_message_enter_container(m, 'a', "{ss}"), 0);
        while (sd_bus_message_read(m, "{ss}", &k, &v) > 0) {
                size_t l = strlen(f->last_details);
                snprintf(f->last_details + l, sizeof(f->last_details) - l, "%s%s=%s", l ? "," : "", k, v);
        }
        ck_assert_int_ge(sd_bus_message_exit_container(m), 0);

        ck_assert_int_ge(sd_bus_message_read(m, "us", &flags, &cancellation_id), 0);
        f->last_flags = flags;
        snprintf(f->last_cancellation_id, sizeof(f->last_cancellation_id), "%s", cancellation_id);

        uid = sender_uid(name);
        if (uid == 1000)
                authorized = true;
        else if (uid == 1002)
                challenge = true;

        reply_from(f->driver, m, ":1.2", "(bba{ss})", authorized, challenge, 0);
}

static void release_held(Fake *f) {
        for (unsigned i = 0; i < f->n_held; i++) {
                polkit_answer(f, f->held[i]);
                f->held[i] = sd_bus_message_unref(f->held[i]);
        }
        f->n_held = 0;
}

static int driver_filter(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Fake *f = userdata;
        const char *name;
        uid_t uid;

        if (!sd_bus_message_is_method_call(m, NULL, NULL))
                return 0;       /* replies to our callers' calls: let reply callbacks have them */

        if (sd_bus_message_is_method_call(m, "org.freedesktop.DBus", "Hello")) {
                reply_from(f->driver, m, "org.freedesktop.DBus", "s", ":1.1");
                return 1;
        }

        if (sd_bus_message_is_method_call(m, "org.freedesktop.DBus", "GetConnectionUnixUser")) {
                f->n_uid_calls++;
                ck_assert_int_ge(sd_bus_message_read(m, "s", &name), 0);
                uid = sender_uid(name);
                if (uid == (uid_t) -1)
                        error_from(f->driver, m, "org.freedesktop.DBus", SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                   "Could not get UID of name: no such name");
                else
                        reply_from(f->driver, m, "org.freedesktop.DBus", "u", (uint32_t) uid);
                return 1;
        }

        if (sd_bus_message_is_method_call(m, "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization")) {
                f->n_check_calls++;
                if (f->polkit_missing)
                        error_from(f->driver, m, "org.freedesktop.DBus", SD_BUS_ERROR_SERVICE_UNKNOWN,
                                   "The name org.freedesktop.PolicyKit1 was not provided by any .service files");
                else if (f->polkit_error)
                        error_from(f->driver, m, ":1.2", f->polkit_error, "Action is not registered");
                else if (f->hold) {
                        ck_assert_uint_lt(f->n_held, MAX_HELD);
                        f->held[f->n_held++] = sd_bus_message_ref(m);
                } else
                        polkit_answer(f, m);
                return 1;
        }

        if (sd_bus_message_is_method_call(m, "org.freedesktop.PolicyKit1.Authority", "CancelCheckAuthorization")) {
                f->n_cancel_calls++;
                ck_assert_int_ge(sd_bus_message_read(m, "s", &name), 0);
                snprintf(f->last_cancelled, sizeof(f->last_cancelled), "%s", name);
                return 1;
        }

        ck_abort_msg("unexpected call %s.%s", strna(sd_bus_message_get_interface(m)),
                     strna(sd_bus_message_get_member(m)));
        return 1;
}

static int method_poke(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        static const char *const details[] = { "who", "test", "what", "poke", NULL };
        Fake *f = userdata;
        uint64_t flags;
        int r;

        /* Read on every dispatch: the re-queued message must come back rewound. */
        r = sd_bus_message_read(m, "t", &flags);
        if (r < 0)
                return r;
        ck_assert_int_eq(r, 1);
        if (flags & ~UINT64_C(1))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Bad flags");

        /* flags bit 0: pass details to polkit. */
        r = polkit_check_async_full(m, ACTION, (flags & 1) ? details : NULL, &f->registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        return sd_bus_reply_method_return(m, "t", ++f->counter);
}

static const sd_bus_vtable service_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Poke", "t", "t", method_poke, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* One round on each loop (the service's only while it runs); true if anything happened. */
static bool fake_step(Fake *f, bool service_too) {
        int a, b = 0;

        a = sd_event_run(f->driver_event, 0);
        ck_assert_int_ge(a, 0);
        if (service_too) {
                b = sd_event_run(f->event, 0);
                ck_assert_int_ge(b, 0);
        }
        if (a == 0 && b == 0)
                (void) usleep(1000);
        return a > 0 || b > 0;
}

static void fake_setup(Fake *f, bool service_is_bus_client) {
        sd_id128_t id;
        int fds[2];

        *f = (Fake) {};
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        ck_assert_int_ge(sd_event_new(&f->driver_event), 0);
        ck_assert_int_ge(sd_id128_randomize(&id), 0);

        ck_assert_int_ge(sd_bus_new(&f->driver), 0);
        ck_assert_int_ge(sd_bus_set_fd(f->driver, fds[0], fds[0]), 0);
        ck_assert_int_ge(sd_bus_set_server(f->driver, true, id), 0);
        ck_assert_int_ge(sd_bus_add_filter(f->driver, NULL, driver_filter, f), 0);
        ck_assert_int_ge(sd_bus_start(f->driver), 0);
        ck_assert_int_ge(sd_bus_attach_event(f->driver, f->driver_event, 0), 0);

        ck_assert_int_ge(sd_bus_new(&f->service), 0);
        ck_assert_int_ge(sd_bus_set_fd(f->service, fds[1], fds[1]), 0);
        ck_assert_int_ge(sd_bus_set_bus_client(f->service, service_is_bus_client), 0);
        ck_assert_int_ge(sd_bus_add_object_vtable(f->service, NULL, SERVICE_PATH, SERVICE_IFACE, service_vtable, f), 0);
        ck_assert_int_ge(sd_bus_start(f->service), 0);
        ck_assert_int_ge(sd_bus_attach_event(f->service, f->event, 0), 0);

        /* Authentication (and the service's Hello) first: the server side must not talk
         * before the client has authenticated. */
        for (uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
             sd_bus_is_ready(f->driver) <= 0 || sd_bus_is_ready(f->service) <= 0;) {
                ck_assert(now_usec(CLOCK_MONOTONIC) < deadline);
                fake_step(f, true);
        }
}

static void fake_teardown(Fake *f) {
        f->registry = polkit_registry_free(f->registry);
        for (unsigned i = 0; i < f->n_held; i++)
                sd_bus_message_unref(f->held[i]);
        sd_bus_flush_close_unref(f->service);
        sd_bus_flush_close_unref(f->driver);
        sd_event_unref(f->event);
        sd_event_unref(f->driver_event);
}

static int on_call_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Call *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        c->done = true;
        if (e) {
                snprintf(c->error, sizeof(c->error), "%s", e->name);
                snprintf(c->message, sizeof(c->message), "%s", strempty(e->message));
        } else
                ck_assert_int_ge(sd_bus_message_read(reply, "t", &c->counter), 0);
        return 1;
}

static void call_poke(Fake *f, Call *c, const char *sender, uint64_t flags, bool interactive) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

        *c = (Call) {};
        ck_assert_int_ge(sd_bus_message_new_method_call(f->driver, &m, SERVICE_NAME, SERVICE_PATH, SERVICE_IFACE, "Poke"), 0);
        if (sender)
                ck_assert_int_ge(sd_bus_message_set_sender(m, sender), 0);
        ck_assert_int_ge(sd_bus_message_set_allow_interactive_authorization(m, interactive), 0);
        ck_assert_int_ge(sd_bus_message_append(m, "t", flags), 0);
        ck_assert_int_ge(sd_bus_call_async(f->driver, NULL, m, on_call_reply, c, 5 * USEC_PER_SEC), 0);
}

static unsigned calls_done(const Call *calls, unsigned n) {
        unsigned k = 0;

        for (unsigned i = 0; i < n; i++)
                k += calls[i].done;
        return k;
}

/* Run the loop until want(f, calls, n) or 5 s passed; then let it go idle. */
static void run_until(Fake *f, const Call *calls, unsigned n, unsigned want_done, unsigned want_held) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;

        while (calls_done(calls, n) < want_done || f->n_held < want_held) {
                ck_assert_msg(now_usec(CLOCK_MONOTONIC) < deadline, "timed out: %u/%u done, %u/%u held",
                              calls_done(calls, n), want_done, f->n_held, want_held);
                fake_step(f, sd_event_get_state(f->event) != SD_EVENT_FINISHED);
        }
        /* Drain whatever else is ready, so that nothing extra shows up later unnoticed. */
        for (unsigned idle = 0; idle < 10;)
                idle = fake_step(f, sd_event_get_state(f->event) != SD_EVENT_FINISHED) ? 0 : idle + 1;
}

START_TEST(test_root_without_polkit)
{
        Fake f;
        Call c;

        fake_setup(&f, true);
        f.polkit_missing = true;        /* root must not need it */
        call_poke(&f, &c, SENDER_ROOT, 0, false);
        run_until(&f, &c, 1, 1, 0);
        ck_assert_str_eq(c.error, "");
        ck_assert_uint_eq(c.counter, 1);
        ck_assert_uint_eq(f.n_uid_calls, 1);
        ck_assert_uint_eq(f.n_check_calls, 0);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 0);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_verdicts)
{
        static const struct {
                const char *sender;
                bool interactive;
                const char *error;      /* NULL: authorized */
                const char *in_message;
        } t[] = {
                { SENDER_ALLOWED,   false, NULL, NULL },
                { SENDER_ALLOWED,   true,  NULL, NULL },
                { SENDER_DENIED,    false, SD_BUS_ERROR_ACCESS_DENIED, "polkit denied action " ACTION },
                { SENDER_DENIED,    true,  SD_BUS_ERROR_ACCESS_DENIED, "Not authorized to call Poke()" },
                { SENDER_CHALLENGE, false, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, "Interactive authentication" },
                { SENDER_CHALLENGE, true,  SD_BUS_ERROR_ACCESS_DENIED, ACTION },
                { SENDER_GONE,      false, SD_BUS_ERROR_NAME_HAS_NO_OWNER, "Failed to identify the caller of Poke()" },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                Fake f;
                Call c;

                fake_setup(&f, true);
                call_poke(&f, &c, t[i].sender, 0, t[i].interactive);
                run_until(&f, &c, 1, 1, 0);
                if (!t[i].error) {
                        ck_assert_msg(streq(c.error, ""), "case %zu: %s: %s", i, c.error, c.message);
                        ck_assert_uint_eq(c.counter, 1);
                } else {
                        ck_assert_msg(streq(c.error, t[i].error), "case %zu: got '%s'", i, c.error);
                        ck_assert_msg(strstr(c.message, t[i].in_message), "case %zu: message '%s'", i, c.message);
                        ck_assert_uint_eq(f.counter, 0);
                }
                if (sender_uid(t[i].sender) != (uid_t) -1) {
                        ck_assert_uint_eq(f.n_check_calls, 1);
                        /* AllowUserInteraction, and a cancellation id, only when the caller allowed it. */
                        ck_assert_uint_eq(f.last_flags, t[i].interactive ? 1 : 0);
                        ck_assert_int_eq(f.last_cancellation_id[0] != 0, t[i].interactive);
                } else
                        ck_assert_uint_eq(f.n_check_calls, 0);
                ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 0);
                fake_teardown(&f);
        }
}
END_TEST

START_TEST(test_details)
{
        Fake f;
        Call c;

        fake_setup(&f, true);
        call_poke(&f, &c, SENDER_ALLOWED, 1, false);
        run_until(&f, &c, 1, 1, 0);
        ck_assert_str_eq(c.error, "");
        ck_assert_str_eq(f.last_details, "who=test,what=poke");
        fake_teardown(&f);
}
END_TEST

START_TEST(test_polkit_missing_or_failing)
{
        Fake f;
        Call c[2];

        fake_setup(&f, true);
        f.polkit_missing = true;
        call_poke(&f, &c[0], SENDER_ALLOWED, 0, false);
        call_poke(&f, &c[1], SENDER_ROOT, 0, false);
        run_until(&f, c, 2, 2, 0);
        ck_assert_str_eq(c[0].error, SD_BUS_ERROR_ACCESS_DENIED);
        ck_assert_str_eq(c[0].message, "polkit is not available; only root may call Poke().");
        ck_assert_str_eq(c[1].error, "");
        fake_teardown(&f);

        /* polkitd's own errors pass through, and fail closed. */
        fake_setup(&f, true);
        f.polkit_error = "org.freedesktop.PolicyKit1.Error.Failed";
        call_poke(&f, &c[0], SENDER_ALLOWED, 0, false);
        run_until(&f, c, 1, 1, 0);
        ck_assert_str_eq(c[0].error, "org.freedesktop.PolicyKit1.Error.Failed");
        ck_assert_ptr_nonnull(strstr(c[0].message, "Action is not registered"));
        ck_assert_uint_eq(f.counter, 0);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_bad_flags_skip_polkit)
{
        Fake f;
        Call c;

        fake_setup(&f, true);
        call_poke(&f, &c, SENDER_ALLOWED, 2, false);
        run_until(&f, &c, 1, 1, 0);
        ck_assert_str_eq(c.error, SD_BUS_ERROR_INVALID_ARGS);
        ck_assert_uint_eq(f.n_uid_calls, 0);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 0);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_bound)
{
        Fake f;
        Call c[10];

        fake_setup(&f, true);
        ck_assert_int_eq(polkit_registry_new(4, &f.registry), 0);
        f.hold = true;
        for (unsigned i = 0; i < ELEMENTSOF(c); i++)
                call_poke(&f, &c[i], SENDER_ALLOWED, 0, false);

        /* Four wait at polkitd; the other six are refused at once, without a hang. */
        run_until(&f, c, ELEMENTSOF(c), 6, 4);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 4);
        for (unsigned i = 4; i < ELEMENTSOF(c); i++) {
                ck_assert_str_eq(c[i].error, SD_BUS_ERROR_LIMITS_EXCEEDED);
                ck_assert_ptr_nonnull(strstr(c[i].message, "Too many pending authorization checks (4)"));
        }
        /* The bound counts from the start, before the caller's uid is known: while the
         * registry is full, root is refused too (documented in polkit.h). */
        {
                Call root;

                call_poke(&f, &root, SENDER_ROOT, 0, false);
                run_until(&f, &root, 1, 1, 4);
                ck_assert_str_eq(root.error, SD_BUS_ERROR_LIMITS_EXCEEDED);
        }

        f.hold = false;
        release_held(&f);
        run_until(&f, c, ELEMENTSOF(c), ELEMENTSOF(c), 0);
        for (unsigned i = 0; i < 4; i++) {
                ck_assert_str_eq(c[i].error, "");
                ck_assert_uint_eq(c[i].counter, i + 1);      /* answered in order, each exactly once */
        }
        ck_assert_uint_eq(f.counter, 4);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 0);

        /* Room again. */
        call_poke(&f, &c[0], SENDER_ALLOWED, 0, false);
        run_until(&f, c, 1, 1, 0);
        ck_assert_uint_eq(c[0].counter, 5);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_free_cancels)
{
        Fake f;
        Call c[3];

        fake_setup(&f, true);
        f.hold = true;
        call_poke(&f, &c[0], SENDER_ALLOWED, 0, true);       /* interactive: withdrawn at polkitd */
        call_poke(&f, &c[1], SENDER_ALLOWED, 0, false);
        call_poke(&f, &c[2], SENDER_ALLOWED, 0, true);
        run_until(&f, c, 3, 0, 3);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 3);

        f.registry = polkit_registry_free(f.registry);
        run_until(&f, c, 3, 3, 0);
        for (unsigned i = 0; i < 3; i++) {
                ck_assert_str_eq(c[i].error, SD_BUS_ERROR_NO_REPLY);
                ck_assert_ptr_nonnull(strstr(c[i].message, "cancelled"));
        }
        ck_assert_uint_eq(f.n_cancel_calls, 2);
        ck_assert_str_ne(f.last_cancelled, "");

        /* polkitd answering late changes nothing. */
        f.hold = false;
        release_held(&f);
        run_until(&f, c, 3, 3, 0);
        ck_assert_uint_eq(f.counter, 0);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_loop_exit_answers)
{
        Fake f;
        Call c[2];

        fake_setup(&f, true);
        f.hold = true;
        call_poke(&f, &c[0], SENDER_ALLOWED, 0, false);
        call_poke(&f, &c[1], SENDER_CHALLENGE, 0, true);
        run_until(&f, c, 2, 0, 2);

        /* The service's loop exits (SIGTERM, say): sd-bus flushes and closes the connection
         * from its exit source; the registry's runs first and answers both callers. */
        ck_assert_int_ge(sd_event_exit(f.event, 0), 0);
        while (sd_event_get_state(f.event) != SD_EVENT_FINISHED)
                ck_assert_int_ge(sd_event_run(f.event, 0), 0);
        ck_assert_uint_eq(polkit_registry_n_pending(f.registry), 0);

        run_until(&f, c, 2, 2, 0);
        for (unsigned i = 0; i < 2; i++) {
                ck_assert_str_eq(c[i].error, SD_BUS_ERROR_NO_REPLY);
                ck_assert_msg(strstr(c[i].message, "cancelled: the service is shutting down"),
                              "call %u: %s", i, c[i].message);
        }
        ck_assert_uint_eq(f.n_cancel_calls, 1);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_peer_to_peer)
{
        Fake f;
        Call c;

        /* No bus driver: the caller is whoever is on the other end of the socket (us). */
        fake_setup(&f, false);
        call_poke(&f, &c, NULL, 0, false);
        run_until(&f, &c, 1, 1, 0);
        if (geteuid() == 0) {
                ck_assert_str_eq(c.error, "");
                ck_assert_uint_eq(c.counter, 1);
        } else {
                ck_assert_str_eq(c.error, SD_BUS_ERROR_ACCESS_DENIED);
                ck_assert_ptr_nonnull(strstr(c.message, "only root"));
        }
        ck_assert_uint_eq(f.n_uid_calls + f.n_check_calls, 0);
        fake_teardown(&f);
}
END_TEST

START_TEST(test_registry)
{
        PolkitRegistry *r = NULL;

        ck_assert_int_eq(polkit_registry_new(0, &r), -EINVAL);
        ck_assert_ptr_null(r);
        ck_assert_uint_eq(polkit_registry_n_pending(NULL), 0);
        ck_assert_ptr_null(polkit_registry_free(NULL));
        ck_assert_int_eq(polkit_registry_new(1, &r), 0);
        ck_assert_uint_eq(polkit_registry_n_pending(r), 0);
        ck_assert_ptr_null(polkit_registry_free(r));
}
END_TEST

static Suite *polkit_suite(void) {
        Suite *s = suite_create("polkit");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_registry);
        tcase_add_test(tc, test_root_without_polkit);
        tcase_add_test(tc, test_verdicts);
        tcase_add_test(tc, test_details);
        tcase_add_test(tc, test_polkit_missing_or_failing);
        tcase_add_test(tc, test_bad_flags_skip_polkit);
        tcase_add_test(tc, test_bound);
        tcase_add_test(tc, test_free_cancels);
        tcase_add_test(tc, test_loop_exit_answers);
        tcase_add_test(tc, test_peer_to_peer);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(polkit_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
