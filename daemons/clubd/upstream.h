/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * A local inference server behind clubd: its base URL, its credentials, and
 * what we last learned about it (reachable or not, which models it serves).
 * Referenced by running requests, so a reload can replace the set while
 * streams on the old one finish.
 */

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "clubd-config.h"
#include "http-client.h"

#define UPSTREAM_MODELS_MAX 1024U
#define UPSTREAM_LISTING_MAX (4U << 20)

typedef struct Upstream Upstream;
typedef void (*UpstreamRefreshed)(Upstream *u, void *userdata);

struct Upstream {
        unsigned n_ref;
        HttpClient *client;

        char *name;
        char *url;
        UpstreamKind kind;
        char *api_key;            /* secret */
        char **static_models;

        char **models;            /* last known list; kept when a refresh fails */
        size_t n_models;
        json_object *model_objects; /* the listing's entries, OpenAI-shaped, for /v1/models */
        bool checked;
        bool reachable;
        unsigned failures;        /* checks failed in a row; the models are kept meanwhile */
        char *error;              /* why the last check failed, for /healthz */
        uint64_t checked_usec;    /* CLOCK_REALTIME of the last check */

        HttpRequest *probe;
        char *probe_buf;
        size_t probe_len;
        uint64_t probe_timeout_usec;
        UpstreamRefreshed on_refreshed;
        void *userdata;

        unsigned in_flight;
};

int upstream_new(HttpClient *client, const UpstreamConfig *cfg, uint64_t probe_timeout_usec,
                 UpstreamRefreshed on_refreshed, void *userdata, Upstream **ret);
Upstream *upstream_ref(Upstream *u);
Upstream *upstream_unref(Upstream *u);
CLUB_DEFINE_CLEANUP(Upstream *, upstream_unref);

/* Detach from the owner: no more refresh callbacks, probe cancelled. */
void upstream_disconnect(Upstream *u);

/* After a reload: take over what @old (the same server: name, URL and kind) last learned,
 * its models and health, so that a reload never makes a serving upstream look empty. */
void upstream_take_state(Upstream *u, Upstream *old);

/* Start a model listing unless one is running. Returns 1 if a probe runs, 0 if none could start. */
int upstream_refresh(Upstream *u);
bool upstream_refreshing(Upstream *u);

bool upstream_serves(Upstream *u, const char *model);
/* Add "Authorization: Bearer <key>" when the upstream has a key of its own. */
int upstream_add_auth(Upstream *u, HttpRequest *req);

/* Parse a model listing: OpenAI's {"data":[{"id":…}]} or Ollama's {"models":[{"name":…}]}. */
int upstream_parse_models(UpstreamKind kind, const char *body, size_t len,
                          char ***ret, size_t *ret_n, json_object **ret_objects);
