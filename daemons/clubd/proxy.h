/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * clubd's data path: an HTTP server that forwards OpenAI-style /v1/ requests
 * to the configured upstreams, streaming responses through as they arrive.
 */

#include <systemd/sd-event.h>

#include "clubd-config.h"
#include "macro.h"

typedef struct Proxy Proxy;

/* Serve on listen_fd (ownership taken) with the settings and upstreams in cfg. */
int proxy_new(sd_event *event, const ClubdConfig *cfg, int listen_fd, Proxy **ret);
Proxy *proxy_free(Proxy *p);
CLUB_DEFINE_CLEANUP(Proxy *, proxy_free);

/* Take new upstreams and limits from cfg; running requests finish on the old upstreams. */
int proxy_reload(Proxy *p, const ClubdConfig *cfg);

/* Stop accepting connections; running requests go on. */
void proxy_stop_accepting(Proxy *p);

unsigned proxy_in_flight(Proxy *p);
size_t proxy_n_upstreams(Proxy *p);
/* A short line for sd_notify STATUS=. */
int proxy_status_line(Proxy *p, char **ret);
