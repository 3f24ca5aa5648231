/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * club.inference.Agent1 on the system bus (dbus/club.inference.Agent1.xml): a thin layer
 * over agent.h. Methods that change something are authorized with polkit before any state
 * changes; Register answers when the agent's registration ends, from the loop. Properties
 * emit PropertiesChanged from the agent's change callback.
 *
 * clubd works without a bus: when none can be reached at start, or the connection drops,
 * a warning is logged and the connection is retried every CLUBD_BUS_RETRY_USEC.
 */

#include <systemd/sd-event.h>

#include "agent.h"
#include "macro.h"

#define CLUBD_BUS_NAME "club.inference.Agent1"
#define CLUBD_BUS_PATH "/club/inference/Agent1"
#define CLUBD_BUS_INTERFACE "club.inference.Agent1"
#define CLUBD_BUS_RETRY_USEC (10 * USEC_PER_SEC)

typedef struct ClubdBus ClubdBus;

/* What Reload does (re-read the configuration, as SIGHUP): 0 or a negative errno. */
typedef int (*ClubdBusReloadFn)(void *userdata);

/**
 * clubd_bus_new() - serve club.inference.Agent1
 * @event:    the loop
 * @agent:    the agent (borrowed; outlives the bus object)
 * @reload:   what Reload calls
 * @userdata: for @reload
 * @ret:      the bus object
 *
 * Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS in tests), adds the object and
 * takes the name. No bus: a warning, and retries later. The name taken by another
 * connection: -EEXIST (another clubd runs). Not allowed to own it: -EACCES.
 *
 * Return: 0 or a negative errno.
 */
int clubd_bus_new(sd_event *event, Agent *agent, ClubdBusReloadFn reload, void *userdata, ClubdBus **ret);
ClubdBus *clubd_bus_free(ClubdBus *b);
CLUB_DEFINE_CLEANUP(ClubdBus *, clubd_bus_free);
