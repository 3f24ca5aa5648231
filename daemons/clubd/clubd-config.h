/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * clubd's configuration: /etc/club/clubd.conf and /etc/club/clubd.conf.d/ (*.conf).
 * See docs/clubd.conf.md for every key.
 */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "parse-util.h"

#define CLUBD_CONFIG_PATH CLUB_CONFDIR "/clubd.conf"
#define CLUBD_MAX_UPSTREAMS 32U

typedef enum UpstreamKind {
        UPSTREAM_OPENAI,   /* anything that serves OpenAI's /v1 API: vLLM, llama-server, LM Studio, TGI */
        UPSTREAM_OLLAMA,   /* Ollama: /v1 for inference, /api/tags for its model list */
        _UPSTREAM_KIND_MAX,
        _UPSTREAM_KIND_INVALID = -EINVAL,
} UpstreamKind;

typedef struct UpstreamConfig {
        char *name;
        char *url;          /* base URL, e.g. http://127.0.0.1:8000/v1 */
        UpstreamKind kind;
        char *api_key;      /* secret: never logged */
        char **models;      /* static list; NULL: discovered from the upstream */
        char *file;         /* where the section was declared, for messages */
        unsigned line;
} UpstreamConfig;

typedef struct ClubdConfig {
        int log_level;
        bool sandbox;

        SockAddr listen;
        unsigned max_connections;
        unsigned max_connections_per_ip;
        uint64_t max_body_size;
        uint64_t max_header_size;
        uint64_t stream_buffer_size;
        uint64_t connect_timeout_usec;
        uint64_t first_byte_timeout_usec;
        uint64_t idle_timeout_usec;
        uint64_t model_refresh_usec;

        UpstreamConfig *upstreams;
        size_t n_upstreams;
} ClubdConfig;

int clubd_config_load(const char *path, ClubdConfig **ret);
ClubdConfig *clubd_config_free(ClubdConfig *c);
CLUB_DEFINE_CLEANUP(ClubdConfig *, clubd_config_free);

const char *upstream_kind_to_string(UpstreamKind k);
UpstreamKind upstream_kind_from_string(const char *s);

/* Split a base URL into what precedes "/v1" so paths join without doubling it. */
int upstream_url_join(const char *base, const char *path_and_query, char **ret);
