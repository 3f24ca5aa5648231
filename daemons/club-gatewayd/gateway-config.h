/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * club-gatewayd's configuration: /etc/club/gatewayd.conf and /etc/club/gatewayd.conf.d/
 * (*.conf). See docs/club-gatewayd.md for every key.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway-forwarded.h"
#include "macro.h"

#define GATEWAY_CONFIG_PATH CLUB_CONFDIR "/gatewayd.conf"
#define GATEWAY_STATE_PATH_DEFAULT "/var/lib/club-gatewayd/store.db"
#define GATEWAY_MESH_PORT_DEFAULT 8443U
#define GATEWAY_WG_INTERFACE_DEFAULT "club0"
#define GATEWAY_WG_LISTEN_PORT_DEFAULT 51820U
/* The private key's file name in the store's directory when PrivateKeyFile= is unset. */
#define GATEWAY_WG_KEY_FILE_NAME "wireguard.key"
/* A PEM certificate chain or key larger than this is refused. */
#define GATEWAY_PEM_SIZE_MAX (1024U * 1024U)
#define GATEWAY_PROBE_INTERVAL_USEC_DEFAULT (30 * USEC_PER_SEC)
#define GATEWAY_EPHEMERAL_GRACE_USEC_DEFAULT (600 * USEC_PER_SEC)
/* How often stale ephemeral providers are looked for (at most half the grace). */
#define GATEWAY_REAP_INTERVAL_USEC (30 * USEC_PER_SEC)
/* On SIGTERM, requests in flight get this long to finish; ShutdownGrace= takes 0 to 1 h. */
#define GATEWAY_SHUTDOWN_GRACE_USEC_DEFAULT (10 * USEC_PER_SEC)
#define GATEWAY_SHUTDOWN_GRACE_USEC_MAX (3600 * USEC_PER_SEC)
/* Registrations per minute (and burst) per source address and per key; 1 to 100000. */
#define GATEWAY_REGISTER_RATE_DEFAULT 10U
#define GATEWAY_REGISTER_RATE_MAX 100000U
/* [Usage] Retention=: from a minute to ten years; 90 days by default. */
#define GATEWAY_USAGE_RETENTION_USEC_DEFAULT (90 * 24 * 3600 * USEC_PER_SEC)
#define GATEWAY_USAGE_RETENTION_USEC_MIN (60 * USEC_PER_SEC)
#define GATEWAY_USAGE_RETENTION_USEC_MAX (3650 * 24 * 3600 * USEC_PER_SEC)

typedef struct GatewayConfig {
        int log_level;
        bool dbus;                  /* [Gateway] DBus=: serve club.inference.Gateway1 (default yes) */
        char *state_path;
        char *mesh_prefix;          /* NULL: the store's default (100.96.0.0/16) */
        uint64_t heartbeat_window_usec; /* online while the last heartbeat is this young; 0: 120 s */
        uint64_t probe_interval_usec;   /* between two probes of each provider's /healthz; 30 s */
        uint64_t ephemeral_grace_usec;  /* ephemeral providers silent this long are deleted; 10 min */
        uint64_t shutdown_grace_usec;   /* on SIGTERM, in-flight requests get this long; 10 s */

        char *public_listen;        /* "ADDR:PORT"; NULL: socket activation or --listen only */
        char *tls_certificate;      /* PEM file; set together with tls_key, or neither */
        char *tls_key;
        unsigned max_connections;
        uint64_t max_body_size;
        /* The OpenAI API (gateway-api.h), [Public]; the defaults are set when loading. */
        uint64_t connect_timeout_usec;      /* to an agent through its tunnel; 5 s */
        uint64_t first_byte_timeout_usec;   /* until the agent's response headers; 300 s */
        uint64_t idle_timeout_usec;         /* silence inside an answer; 300 s */
        uint64_t keep_alive_usec;           /* SSE comments while a stream waits; 15 s; 0: none */
        unsigned max_attempts;              /* providers tried per request; 3 */
        uint64_t failure_backoff_usec;      /* a failed provider is skipped this long at first; 1 s */
        uint64_t failure_backoff_max_usec;  /* …doubling up to this; 60 s */
        unsigned register_rate_per_source;  /* registrations per minute (and burst) per address */
        unsigned register_rate_per_key;     /* … per authenticated key */
        TrustedProxies trusted_proxies;     /* whose X-Forwarded-For names the client; none */
        /* Per-key limits of the OpenAI API, [Limits]: the defaults of keys without their own;
         * 0: unlimited (gateway-limits.h). */
        uint64_t limit_requests_per_minute;
        uint64_t limit_tokens_per_minute;
        uint64_t limit_concurrent_streams;
        uint64_t usage_retention_usec;      /* [Usage] Retention=: usage rows are kept this long; 90 days */

        char *mesh_listen;          /* "ADDR:PORT"; NULL: the gateway's mesh address, port 8443 */

        char *metrics_listen;       /* [Metrics] Listen=: "ADDR:PORT"; NULL: no metrics listener */
        char *metrics_listen_file;  /* …and where it was set, for messages */
        unsigned metrics_listen_line;
        bool metrics_allow_remote;  /* [Metrics] AllowRemoteListen=: Listen= may be non-loopback */
        unsigned metrics_max_series; /* [Metrics] MaxSeries=; 1000 */

        bool wg_enabled;            /* configure the hub interface (default true) */
        char *wg_interface;         /* never NULL after loading: default "club0" */
        char *wg_private_key_file;  /* never NULL after loading: default <state dir>/wireguard.key */
        unsigned wg_listen_port;    /* 1–65535, default 51820 */
        char *wg_endpoint;          /* "HOST:PORT" agents dial; NULL: registration answers 503 */
} GatewayConfig;

/**
 * gateway_config_load() - parse the configuration file and its drop-ins
 * @path: the main file; a missing one means "all defaults"
 * @ret:  the configuration
 *
 * Every problem is logged, naming the file and line.
 *
 * Return: 0, -EINVAL for an invalid file, -ENOMEM, or the errno of a file that cannot be read.
 */
int gateway_config_load(const char *path, GatewayConfig **ret);
GatewayConfig *gateway_config_free(GatewayConfig *c);
CLUB_DEFINE_CLEANUP(GatewayConfig *, gateway_config_free);

/**
 * gateway_config_load_tls() - read and check the PEM certificate chain and key
 * @c:        the configuration; without TLSCertificate= nothing is read
 * @ret_cert: the certificate chain (NULL without TLS)
 * @ret_key:  the private key (NULL without TLS); wipe it with erase_and_free()
 *
 * Checks that the certificate and the key parse and belong together; the reason is logged.
 *
 * Return: 0, -ENOENT/-EACCES/… for an unreadable file, -EFBIG for one larger than
 * GATEWAY_PEM_SIZE_MAX, -EBADMSG for one that is not a usable certificate or key, or
 * -EKEYREJECTED when the key does not match the certificate.
 */
int gateway_config_load_tls(const GatewayConfig *c, char **ret_cert, char **ret_key);
