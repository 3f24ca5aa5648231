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
#define CLUBD_MAX_CAPABILITIES 64U
#define CLUBD_STATE_DIRECTORY_DEFAULT "/var/lib/club"
#define CLUBD_MESH_INTERFACE_DEFAULT "club0"
#define CLUBD_MESH_PORT_DEFAULT 8090U

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

/* A local service the gateway may call through the mesh: POST
 * /api/v1/capabilities/<name>/exec is forwarded to url (docs/protocol.md). */
typedef struct CapabilityConfig {
        char *name;         /* 1–64 of A-Z a-z 0-9 . _ : - */
        char *url;          /* http://127.0.0.1:9000/run */
        uint64_t max_body_size;  /* 0: [Proxy] MaxBodySize= */
        char *file;
        unsigned line;
} CapabilityConfig;

typedef struct ClubdConfig {
        int log_level;
        bool sandbox;

        /* [Agent]: membership of the network (docs/clubd.md). */
        char *gateway_url;        /* default for Register; NULL: none */
        char *state_directory;    /* NULL: $STATE_DIRECTORY, else CLUBD_STATE_DIRECTORY_DEFAULT */
        char *ca_file;            /* extra trust anchors for the gateway; NULL: the system store */
        char *name;               /* NULL: the host name */

        /* [Mesh] */
        char *mesh_interface;     /* club0 */
        uint16_t mesh_port;       /* the agent port sent at registration */
        unsigned capacity;        /* concurrent requests announced in heartbeats; 0: unknown */

        SockAddr listen;
        bool listen_allow_remote; /* [Proxy] AllowRemoteListen=: Listen= may be non-loopback */
        char *listen_file;        /* where Listen= was set, for messages; NULL: the default */
        unsigned listen_line;
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

        CapabilityConfig *capabilities;
        size_t n_capabilities;
} ClubdConfig;

int clubd_config_load(const char *path, ClubdConfig **ret);
ClubdConfig *clubd_config_free(ClubdConfig *c);
CLUB_DEFINE_CLEANUP(ClubdConfig *, clubd_config_free);

const char *upstream_kind_to_string(UpstreamKind k);
UpstreamKind upstream_kind_from_string(const char *s);

/* Whether a name is a valid capability or agent name: 1–64 characters of A-Z a-z 0-9 . _ -
 * (capabilities also allow ':'), the first a letter or digit — the gateway's store accepts
 * exactly these (docs/store.md), so a name clubd takes is never refused at registration or
 * in a heartbeat. */
bool clubd_name_valid(const char *s, bool allow_colon);

/* Split a base URL into what precedes "/v1" so paths join without doubling it. */
int upstream_url_join(const char *base, const char *path_and_query, char **ret);
