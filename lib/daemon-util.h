/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What every club daemon does around its work: a STATUS= line refreshed for
 * systemd, and a graceful stop on SIGTERM/SIGINT (stop accepting, let requests
 * in flight finish up to a bound, then leave the loop; a second signal leaves
 * at once).
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct DaemonOps {
        unsigned (*in_flight)(void *userdata);
        void (*stop_accepting)(void *userdata);
        int (*status_line)(void *userdata, char **ret);  /* a line a person can read */
} DaemonOps;

typedef struct DaemonLifecycle DaemonLifecycle;

/* Installs the SIGTERM and SIGINT handlers (the signals must be blocked) and the status timer. */
int daemon_lifecycle_new(sd_event *event, const DaemonOps *ops, void *userdata,
                         uint64_t grace_usec, uint64_t status_interval_usec, DaemonLifecycle **ret);
DaemonLifecycle *daemon_lifecycle_free(DaemonLifecycle *l);
CLUB_DEFINE_CLEANUP(DaemonLifecycle *, daemon_lifecycle_free);

/* Send STATUS= now (nothing while stopping). */
void daemon_lifecycle_notify_status(DaemonLifecycle *l);
bool daemon_lifecycle_stopping(DaemonLifecycle *l);
