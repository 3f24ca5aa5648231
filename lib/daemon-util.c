/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "daemon-util.h"
#include "log.h"

struct DaemonLifecycle {
        sd_event *event;
        DaemonOps ops;
        void *userdata;
        uint64_t grace_usec;
        uint64_t status_interval_usec;
        uint64_t deadline;
        bool stopping;
        sd_event_source *sigterm, *sigint, *status_timer, *shutdown_timer;
};

void daemon_lifecycle_notify_status(DaemonLifecycle *l) {
        _cleanup_free_ char *line = NULL;

        if (l->stopping || !l->ops.status_line || l->ops.status_line(l->userdata, &line) < 0)
                return;
        (void) sd_notifyf(false, "STATUS=%s", line);
}

bool daemon_lifecycle_stopping(DaemonLifecycle *l) {
        return l->stopping;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DaemonLifecycle *l = userdata;

        daemon_lifecycle_notify_status(l);
        (void) sd_event_source_set_time_relative(s, l->status_interval_usec);
        return 0;
}

static int on_shutdown_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DaemonLifecycle *l = userdata;
        unsigned n = l->ops.in_flight(l->userdata);

        if (n == 0 || now_usec(CLOCK_MONOTONIC) >= l->deadline) {
                if (n > 0)
                        log_warning("Stopping with %u request(s) still in flight.", n);
                return sd_event_exit(l->event, 0);
        }
        (void) sd_event_source_set_time_relative(s, 100 * USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        DaemonLifecycle *l = userdata;
        int r;

        if (l->stopping)
                return sd_event_exit(l->event, 0);  /* second signal: now */
        l->stopping = true;
        log_info("Stopping: no new connections; waiting up to %" PRIu64 " s for %u request(s) in flight.",
                 l->grace_usec / USEC_PER_SEC, l->ops.in_flight(l->userdata));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping: finishing requests in flight.");
        l->ops.stop_accepting(l->userdata);
        l->deadline = now_usec(CLOCK_MONOTONIC) + l->grace_usec;
        r = sd_event_add_time_relative(l->event, &l->shutdown_timer, CLOCK_MONOTONIC, 0, 0, on_shutdown_timer, l);
        if (r < 0)
                return sd_event_exit(l->event, 0);
        return 0;
}

int daemon_lifecycle_new(sd_event *event, const DaemonOps *ops, void *userdata,
                         uint64_t grace_usec, uint64_t status_interval_usec, DaemonLifecycle **ret) {
        _cleanup_(daemon_lifecycle_freep) DaemonLifecycle *l = NULL;
        int r;

        assert(event && ops && ops->in_flight && ops->stop_accepting && ret);
        l = new0(DaemonLifecycle, 1);
        if (!l)
                return -ENOMEM;
        *l = (DaemonLifecycle) {
                .event = sd_event_ref(event),
                .ops = *ops,
                .userdata = userdata,
                .grace_usec = grace_usec,
                .status_interval_usec = MAX(status_interval_usec, USEC_PER_SEC),
        };
        r = sd_event_add_signal(event, &l->sigterm, SIGTERM, on_terminate, l);
        if (r < 0)
                return r;
        r = sd_event_add_signal(event, &l->sigint, SIGINT, on_terminate, l);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(event, &l->status_timer, CLOCK_MONOTONIC, l->status_interval_usec, 0,
                                       on_status_timer, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(l->status_timer, SD_EVENT_ON);
        *ret = TAKE_PTR(l);
        return 0;
}

DaemonLifecycle *daemon_lifecycle_free(DaemonLifecycle *l) {
        if (!l)
                return NULL;
        sd_event_source_disable_unref(l->sigterm);
        sd_event_source_disable_unref(l->sigint);
        sd_event_source_disable_unref(l->status_timer);
        sd_event_source_disable_unref(l->shutdown_timer);
        sd_event_unref(l->event);
        return mfree(l);
}
