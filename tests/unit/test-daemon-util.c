/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <time.h>

#include "daemon-util.h"
#include "log.h"

typedef struct Fake {
        unsigned in_flight;
        unsigned n_stop;
        unsigned n_status;
} Fake;

static unsigned fake_in_flight(void *userdata) {
        return ((Fake *) userdata)->in_flight;
}

static void fake_stop(void *userdata) {
        ((Fake *) userdata)->n_stop++;
}

static int fake_status(void *userdata, char **ret) {
        ((Fake *) userdata)->n_status++;
        *ret = strdup("fine");
        return *ret ? 0 : -ENOMEM;
}

static const DaemonOps ops = { fake_in_flight, fake_stop, fake_status };

static int on_release(sd_event_source *s, uint64_t usec, void *userdata) {
        ((Fake *) userdata)->in_flight = 0;
        return 0;
}

/* Runs the loop until it exits or max_usec passes; returns the elapsed time, or UINT64_MAX. */
static uint64_t run(sd_event *e, uint64_t max_usec) {
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);

        while (sd_event_get_state(e) != SD_EVENT_FINISHED) {
                if (now_usec(CLOCK_MONOTONIC) - t0 > max_usec)
                        return UINT64_MAX;
                ck_assert_int_ge(sd_event_run(e, 50 * USEC_PER_MSEC), 0);
        }
        return now_usec(CLOCK_MONOTONIC) - t0;
}

static void setup(sd_event **e, DaemonLifecycle **l, Fake *f, uint64_t grace) {
        sigset_t mask;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        ck_assert_int_eq(sigprocmask(SIG_BLOCK, &mask, NULL), 0);
        ck_assert_int_ge(sd_event_new(e), 0);
        ck_assert_int_eq(daemon_lifecycle_new(*e, &ops, f, grace, USEC_PER_SEC, l), 0);
        log_set_max_level(LOG_ERR);
}

START_TEST(test_waits_for_requests_in_flight)
{
        Fake f = { .in_flight = 2 };
        sd_event *e;
        DaemonLifecycle *l;
        uint64_t dt;

        setup(&e, &l, &f, 10 * USEC_PER_SEC);
        ck_assert(!daemon_lifecycle_stopping(l));
        ck_assert_int_ge(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, 400 * USEC_PER_MSEC, 1, on_release, &f), 0);
        ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
        dt = run(e, 5 * USEC_PER_SEC);
        /* It stopped accepting at once and left only once the requests were done. */
        ck_assert_uint_eq(f.n_stop, 1);
        ck_assert(daemon_lifecycle_stopping(l));
        ck_assert_msg(dt >= 350 * USEC_PER_MSEC && dt < 2 * USEC_PER_SEC, "left after %" PRIu64 " µs", dt);
        daemon_lifecycle_free(l);
        sd_event_unref(e);
}
END_TEST

START_TEST(test_grace_bound)
{
        Fake f = { .in_flight = 1 };
        sd_event *e;
        DaemonLifecycle *l;
        uint64_t dt;

        setup(&e, &l, &f, 300 * USEC_PER_MSEC);
        ck_assert_int_eq(kill(getpid(), SIGINT), 0);
        dt = run(e, 5 * USEC_PER_SEC);
        /* A request that never ends does not keep the daemon: it leaves after the grace. */
        ck_assert_msg(dt >= 250 * USEC_PER_MSEC && dt < 1500 * USEC_PER_MSEC, "left after %" PRIu64 " µs", dt);
        ck_assert_uint_eq(f.in_flight, 1);
        daemon_lifecycle_free(l);
        sd_event_unref(e);
}
END_TEST

START_TEST(test_second_signal_leaves_at_once)
{
        Fake f = { .in_flight = 1 };
        sd_event *e;
        DaemonLifecycle *l;
        uint64_t dt;

        setup(&e, &l, &f, 60 * USEC_PER_SEC);
        ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
        ck_assert_int_ge(sd_event_run(e, 100 * USEC_PER_MSEC), 0);
        ck_assert(daemon_lifecycle_stopping(l));
        ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
        dt = run(e, 5 * USEC_PER_SEC);
        ck_assert_msg(dt < USEC_PER_SEC, "left after %" PRIu64 " µs", dt);
        ck_assert_uint_eq(f.n_stop, 1);
        daemon_lifecycle_free(l);
        sd_event_unref(e);
}
END_TEST

START_TEST(test_status_not_while_stopping)
{
        Fake f = { .in_flight = 0 };
        sd_event *e;
        DaemonLifecycle *l;

        setup(&e, &l, &f, USEC_PER_SEC);
        daemon_lifecycle_notify_status(l);
        ck_assert_uint_eq(f.n_status, 1);
        ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
        ck_assert_uint_ne(run(e, 5 * USEC_PER_SEC), UINT64_MAX);
        daemon_lifecycle_notify_status(l);
        ck_assert_uint_eq(f.n_status, 1);
        daemon_lifecycle_free(l);
        sd_event_unref(e);
}
END_TEST

int main(void) {
        Suite *s = suite_create("daemon-util");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_waits_for_requests_in_flight);
        tcase_add_test(tc, test_grace_bound);
        tcase_add_test(tc, test_second_signal_leaves_at_once);
        tcase_add_test(tc, test_status_not_while_stopping);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
