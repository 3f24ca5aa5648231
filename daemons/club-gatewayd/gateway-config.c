/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "conf-parser.h"
#include "gateway-api.h"
#include "gateway-config.h"
#include "gateway-metrics.h"
#include "gateway-route.h"
#include "log.h"
#include "parse-util.h"
#include "store.h"
#include "wg.h"

GatewayConfig *gateway_config_free(GatewayConfig *c) {
        if (!c)
                return NULL;
        free(c->state_path);
        free(c->mesh_prefix);
        free(c->public_listen);
        free(c->tls_certificate);
        free(c->tls_key);
        free(c->mesh_listen);
        free(c->metrics_listen);
        free(c->metrics_listen_file);
        free(c->wg_interface);
        free(c->wg_private_key_file);
        free(c->wg_endpoint);
        trusted_proxies_done(&c->trusted_proxies);
        return mfree(c);
}

/* "ADDR:PORT" as http_listen() takes it: port 0 (any free port) is allowed here. */
static int listen_address_parse(const char *value, struct sockaddr_storage *ret) {
        _cleanup_free_ char *copy = NULL;
        const char *colon = strrchr(value, ':');
        socklen_t len;

        if (colon && streq(colon, ":0") && asprintf(&copy, "%.*s:1", (int) (colon - value), value) < 0)
                return -ENOMEM;
        return parse_sockaddr(copy ?: value, ret, &len);
}

static CONFIG_PARSER_PROTOTYPE(parse_listen) {
        char **s = data;
        struct sockaddr_storage ss;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        if (listen_address_parse(value, &ss) < 0) {
                config_set_reason(ctx, "expected ADDRESS:PORT, e.g. 0.0.0.0:443 or [::]:443");
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

/* [Metrics] Listen=: as parse_listen(), remembering where, for the loopback check. */
static CONFIG_PARSER_PROTOTYPE(parse_metrics_listen) {
        GatewayConfig *c = userdata;
        int r;

        r = parse_listen(ctx, key, value, ltype, &c->metrics_listen, userdata);
        if (r < 0)
                return r;
        c->metrics_listen_line = ctx->line;
        return free_and_strdup(&c->metrics_listen_file, ctx->file);
}

static CONFIG_PARSER_PROTOTYPE(parse_mesh_prefix) {
        char **s = data;
        struct in_addr a;
        unsigned len;
        const char *slash;
        _cleanup_free_ char *addr = NULL;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        slash = strchr(value, '/');
        if (!slash || parse_uint(slash + 1, &len) < 0 || len < 8 || len > 30) {
                config_set_reason(ctx, "expected an IPv4 prefix a.b.c.d/LEN with LEN from 8 to 30");
                return -EINVAL;
        }
        addr = strndup(value, (size_t) (slash - value));
        if (!addr)
                return -ENOMEM;
        if (inet_pton(AF_INET, addr, &a) != 1) {
                config_set_reason(ctx, "expected an IPv4 prefix a.b.c.d/LEN with LEN from 8 to 30");
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_path) {
        char **s = data;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        if (value[0] != '/') {
                config_set_reason(ctx, "expected an absolute path");
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_ifname) {
        char **s = data;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        if (wg_ifname_valid(value) < 0) {
                config_set_reason(ctx, "expected an interface name of 1 to 15 characters without '/', ':' or whitespace");
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

/* "HOST:PORT" as agents dial it: a DNS name, an IPv4 address or a bracketed IPv6 address. */
static CONFIG_PARSER_PROTOTYPE(parse_endpoint) {
        char **s = data;
        const char *colon;
        uint16_t port;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        colon = strrchr(value, ':');
        if (!colon || colon == value || parse_port(colon + 1, &port) < 0 || port == 0 ||
            strpbrk(value, " \t\"'") ||
            (value[0] == '[' && colon[-1] != ']') ||
            (value[0] != '[' && memchr(value, ':', (size_t) (colon - value)))) {
                config_set_reason(ctx, "expected HOST:PORT as agents reach it, e.g. gw.example.org:51820 or [2001:db8::1]:51820");
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_wg_port) {
        unsigned *p = data;
        unsigned v;

        if (parse_uint(value, &v) < 0 || v == 0 || v > 65535) {
                config_set_reason(ctx, "expected a UDP port from 1 to 65535");
                return -EINVAL;
        }
        *p = v;
        return 0;
}

/* [Public] TrustedProxies=: addresses and networks, separated by blanks or commas; each
 * line adds to the list, an empty value empties it. */
static CONFIG_PARSER_PROTOTYPE(parse_trusted_proxies) {
        TrustedProxies *t = data;
        const char *p = value;
        int r;

        if (isempty(value)) {
                trusted_proxies_done(t);
                return 0;
        }
        for (;;) {
                _cleanup_free_ char *word = NULL;
                size_t n;

                p += strspn(p, " \t,");
                n = strcspn(p, " \t,");
                if (n == 0)
                        return 0;
                word = strndup(p, n);
                if (!word)
                        return -ENOMEM;
                p += n;
                r = trusted_proxies_add(t, word);
                if (r == -ENOMEM)
                        return r;
                if (r == -EADDRNOTAVAIL) {
                        config_set_reason(ctx, "an address has bits set past its prefix length; write the network, e.g. 10.0.0.0/8");
                        return -EINVAL;
                }
                if (r == -E2BIG) {
                        config_set_reason(ctx, "more than 256 trusted proxies");
                        return -EINVAL;
                }
                if (r < 0) {
                        config_set_reason(ctx, "expected IP addresses or networks such as 127.0.0.1, ::1, 10.0.0.0/8 or fd00::/8");
                        return -EINVAL;
                }
        }
}

/* [Limits]: a number per minute (or of streams); 0 is unlimited. */
static CONFIG_PARSER_PROTOTYPE(parse_key_limit) {
        uint64_t *p = data, v;

        if (parse_uint64(value, &v) < 0 || v > (uint64_t) STORE_LIMIT_MAX) {
                config_set_reason(ctx, "expected a number from 0 (unlimited) to 1000000000000");
                return -EINVAL;
        }
        *p = v;
        return 0;
}

/* Bounded durations (uint64_t µs) and counts (unsigned): ltype indexes one of these tables. */
typedef struct ConfigRange {
        uint64_t min, max;
        const char *reason;
} ConfigRange;

enum {
        DURATION_CONNECT,
        DURATION_TRANSFER,
        DURATION_KEEP_ALIVE,
        DURATION_BACKOFF,
        DURATION_SHUTDOWN_GRACE,
        DURATION_USAGE_RETENTION,
};

static const ConfigRange durations[] = {
        [DURATION_CONNECT] = { USEC_PER_SEC / 10, 300 * USEC_PER_SEC, "expected a time from 100ms to 5min, e.g. 5s" },
        [DURATION_TRANSFER] = { USEC_PER_SEC, 24 * 3600 * USEC_PER_SEC, "expected a time from 1s to 1 day, e.g. 300s or 10min" },
        [DURATION_KEEP_ALIVE] = { 0, 3600 * USEC_PER_SEC, "expected a time up to 1h, e.g. 15s; 0 turns keep-alives off" },
        [DURATION_BACKOFF] = { USEC_PER_SEC / 10, 3600 * USEC_PER_SEC, "expected a time from 100ms to 1h, e.g. 1s" },
        [DURATION_SHUTDOWN_GRACE] = { 0, GATEWAY_SHUTDOWN_GRACE_USEC_MAX, "expected a time from 0 to 1h, e.g. 10s or 500ms" },
        [DURATION_USAGE_RETENTION] = { GATEWAY_USAGE_RETENTION_USEC_MIN, GATEWAY_USAGE_RETENTION_USEC_MAX,
                                       "expected a time from 1min to 3650d, e.g. 90d" },
};

enum {
        COUNT_MAX_ATTEMPTS,
        COUNT_REGISTER_RATE,
        COUNT_METRICS_SERIES,
};

static const ConfigRange counts[] = {
        [COUNT_MAX_ATTEMPTS] = { 1, GATEWAY_API_MAX_ATTEMPTS_MAX, "expected a number of providers from 1 to 16" },
        /* Registrations per minute from one source address or with one key; also the burst. */
        [COUNT_REGISTER_RATE] = { 1, GATEWAY_REGISTER_RATE_MAX,
                                  "expected registrations per minute, from 1 to 100000 (it is also the burst)" },
        [COUNT_METRICS_SERIES] = { 1, METRICS_SERIES_MAX_MAX, "expected a number of series from 1 to 10000" },
};

static CONFIG_PARSER_PROTOTYPE(parse_duration) {
        uint64_t *p = data, v;

        assert(ltype >= 0 && (size_t) ltype < ELEMENTSOF(durations));
        if (parse_sec(value, &v) < 0 || v < durations[ltype].min || v > durations[ltype].max) {
                config_set_reason(ctx, durations[ltype].reason);
                return -EINVAL;
        }
        *p = v;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(parse_count) {
        unsigned *p = data, v;

        assert(ltype >= 0 && (size_t) ltype < ELEMENTSOF(counts));
        if (parse_uint(value, &v) < 0 || v < counts[ltype].min || v > counts[ltype].max) {
                config_set_reason(ctx, counts[ltype].reason);
                return -EINVAL;
        }
        *p = v;
        return 0;
}

static int default_key_file(const char *state_path, char **ret) {
        const char *slash = strrchr(state_path, '/');

        assert(slash);
        if (asprintf(ret, "%.*s/" GATEWAY_WG_KEY_FILE_NAME, (int) (slash - state_path), state_path) < 0)
                return -ENOMEM;
        return 0;
}

int gateway_config_load(const char *path, GatewayConfig **ret) {
        _cleanup_(gateway_config_freep) GatewayConfig *c = NULL;
        int r;

        c = new0(GatewayConfig, 1);
        if (!c)
                return -ENOMEM;
        *c = (GatewayConfig) {
                .log_level = -1,
                .dbus = true,
                .max_connections = 1024,
                .max_body_size = 8U << 20,
                .wg_enabled = true,
                .wg_listen_port = GATEWAY_WG_LISTEN_PORT_DEFAULT,
                .probe_interval_usec = GATEWAY_PROBE_INTERVAL_USEC_DEFAULT,
                .ephemeral_grace_usec = GATEWAY_EPHEMERAL_GRACE_USEC_DEFAULT,
                .connect_timeout_usec = GATEWAY_API_CONNECT_TIMEOUT_USEC_DEFAULT,
                .first_byte_timeout_usec = GATEWAY_API_FIRST_BYTE_TIMEOUT_USEC_DEFAULT,
                .idle_timeout_usec = GATEWAY_API_IDLE_TIMEOUT_USEC_DEFAULT,
                .keep_alive_usec = GATEWAY_API_KEEPALIVE_USEC_DEFAULT,
                .max_attempts = GATEWAY_API_MAX_ATTEMPTS_DEFAULT,
                .failure_backoff_usec = ROUTER_BACKOFF_MIN_USEC_DEFAULT,
                .failure_backoff_max_usec = ROUTER_BACKOFF_MAX_USEC_DEFAULT,
                .shutdown_grace_usec = GATEWAY_SHUTDOWN_GRACE_USEC_DEFAULT,
                .register_rate_per_source = GATEWAY_REGISTER_RATE_DEFAULT,
                .register_rate_per_key = GATEWAY_REGISTER_RATE_DEFAULT,
                .usage_retention_usec = GATEWAY_USAGE_RETENTION_USEC_DEFAULT,
                .metrics_max_series = METRICS_SERIES_MAX_DEFAULT,
        };

        const ConfigItem table[] = {
                { "Gateway", "LogLevel", config_parse_log_level, 0, &c->log_level },
                { "Gateway", "StatePath", parse_path, 0, &c->state_path },
                { "Gateway", "MeshPrefix", parse_mesh_prefix, 0, &c->mesh_prefix },
                { "Gateway", "HeartbeatWindow", config_parse_sec, 0, &c->heartbeat_window_usec },
                { "Gateway", "ProbeInterval", config_parse_sec, 0, &c->probe_interval_usec },
                { "Gateway", "EphemeralGrace", config_parse_sec, 0, &c->ephemeral_grace_usec },
                { "Gateway", "ShutdownGrace", parse_duration, DURATION_SHUTDOWN_GRACE, &c->shutdown_grace_usec },
                { "Gateway", "DBus", config_parse_bool, 0, &c->dbus },
                { "Public", "Listen", parse_listen, 0, &c->public_listen },
                { "Public", "TLSCertificate", parse_path, 0, &c->tls_certificate },
                { "Public", "TLSKey", parse_path, 0, &c->tls_key },
                { "Public", "MaxConnections", config_parse_uint, 0, &c->max_connections },
                { "Public", "MaxBodySize", config_parse_size, 0, &c->max_body_size },
                { "Public", "ConnectTimeout", parse_duration, DURATION_CONNECT, &c->connect_timeout_usec },
                { "Public", "FirstByteTimeout", parse_duration, DURATION_TRANSFER, &c->first_byte_timeout_usec },
                { "Public", "IdleTimeout", parse_duration, DURATION_TRANSFER, &c->idle_timeout_usec },
                { "Public", "KeepAliveInterval", parse_duration, DURATION_KEEP_ALIVE, &c->keep_alive_usec },
                { "Public", "MaxAttempts", parse_count, COUNT_MAX_ATTEMPTS, &c->max_attempts },
                { "Public", "FailureBackoff", parse_duration, DURATION_BACKOFF, &c->failure_backoff_usec },
                { "Public", "FailureBackoffMax", parse_duration, DURATION_BACKOFF, &c->failure_backoff_max_usec },
                { "Public", "RegisterRatePerSource", parse_count, COUNT_REGISTER_RATE, &c->register_rate_per_source },
                { "Public", "RegisterRatePerKey", parse_count, COUNT_REGISTER_RATE, &c->register_rate_per_key },
                { "Public", "TrustedProxies", parse_trusted_proxies, 0, &c->trusted_proxies },
                { "Limits", "RequestsPerMinute", parse_key_limit, 0, &c->limit_requests_per_minute },
                { "Limits", "TokensPerMinute", parse_key_limit, 0, &c->limit_tokens_per_minute },
                { "Limits", "ConcurrentStreams", parse_key_limit, 0, &c->limit_concurrent_streams },
                { "Usage", "Retention", parse_duration, DURATION_USAGE_RETENTION, &c->usage_retention_usec },
                { "Mesh", "Listen", parse_listen, 0, &c->mesh_listen },
                { "Metrics", "Listen", parse_metrics_listen, 0, NULL },
                { "Metrics", "AllowRemoteListen", config_parse_bool, 0, &c->metrics_allow_remote },
                { "Metrics", "MaxSeries", parse_count, COUNT_METRICS_SERIES, &c->metrics_max_series },
                { "WireGuard", "Enabled", config_parse_bool, 0, &c->wg_enabled },
                { "WireGuard", "Interface", parse_ifname, 0, &c->wg_interface },
                { "WireGuard", "PrivateKeyFile", parse_path, 0, &c->wg_private_key_file },
                { "WireGuard", "ListenPort", parse_wg_port, 0, &c->wg_listen_port },
                { "WireGuard", "Endpoint", parse_endpoint, 0, &c->wg_endpoint },
                {}
        };

        r = config_parse(path, NULL, table, NULL, CONFIG_MISSING_OK, c);
        if (r < 0)
                return r;

        if (!c->state_path) {
                c->state_path = strdup(GATEWAY_STATE_PATH_DEFAULT);
                if (!c->state_path)
                        return -ENOMEM;
        }
        if (!c->wg_interface) {
                c->wg_interface = strdup(GATEWAY_WG_INTERFACE_DEFAULT);
                if (!c->wg_interface)
                        return -ENOMEM;
        }
        if (!c->wg_private_key_file) {
                r = default_key_file(c->state_path, &c->wg_private_key_file);
                if (r < 0)
                        return r;
        }
        if (!c->tls_certificate != !c->tls_key)
                return log_error_errno(-EINVAL, "%s: [Public] needs both TLSCertificate= and TLSKey=, or neither.", path);
        if (c->heartbeat_window_usec != 0 &&
            (c->heartbeat_window_usec < USEC_PER_SEC || c->heartbeat_window_usec > STORE_ONLINE_WINDOW_USEC_MAX))
                return log_error_errno(-EINVAL, "%s: HeartbeatWindow= in [Gateway] must be from 1s to 1 week.", path);
        if (c->probe_interval_usec < USEC_PER_SEC || c->probe_interval_usec > 24 * 3600 * USEC_PER_SEC)
                return log_error_errno(-EINVAL, "%s: ProbeInterval= in [Gateway] must be from 1s to 1 day.", path);
        if (c->ephemeral_grace_usec < USEC_PER_SEC || c->ephemeral_grace_usec > STORE_ONLINE_WINDOW_USEC_MAX)
                return log_error_errno(-EINVAL, "%s: EphemeralGrace= in [Gateway] must be from 1s to 1 week.", path);
        if (c->failure_backoff_max_usec < c->failure_backoff_usec)
                return log_error_errno(-EINVAL, "%s: FailureBackoffMax= in [Public] must not be shorter than FailureBackoff=.", path);
        if (c->max_connections == 0 || c->max_body_size == 0)
                return log_error_errno(-EINVAL, "%s: MaxConnections and MaxBodySize in [Public] must be positive.", path);
        if (c->metrics_listen && !c->metrics_allow_remote) {
                struct sockaddr_storage ss;

                r = listen_address_parse(c->metrics_listen, &ss);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || !sockaddr_is_loopback((struct sockaddr *) &ss))
                        return log_error_errno(-EINVAL, "%s:%u: [Metrics] Listen=%s is not a loopback address. The metrics "
                                               "listener has no authentication and tells who uses which provider: keep it "
                                               "on 127.0.0.1 or ::1 (scrape through a tunnel or a reverse proxy with "
                                               "authentication), or set AllowRemoteListen=yes in [Metrics] if you really "
                                               "mean to open it to your network.",
                                               c->metrics_listen_file, c->metrics_listen_line, c->metrics_listen);
        }

        *ret = TAKE_PTR(c);
        return 0;
}

static int read_pem(const char *path, char **ret) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_(erase_and_freep) char *buf = NULL;
        struct stat st;
        size_t n = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > GATEWAY_PEM_SIZE_MAX)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t) st.st_size - n);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = 0;
        if (strlen(buf) != n)
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 0;
}

int gateway_config_load_tls(const GatewayConfig *c, char **ret_cert, char **ret_key) {
        _cleanup_free_ char *cert = NULL;
        _cleanup_(erase_and_freep) char *key = NULL;
        X509 *x509 = NULL;
        EVP_PKEY *pkey = NULL;
        BIO *bio;
        int r;

        assert(c && ret_cert && ret_key);
        if (!c->tls_certificate) {
                *ret_cert = *ret_key = NULL;
                return 0;
        }
        r = read_pem(c->tls_certificate, &cert);
        if (r < 0)
                return log_error_errno(r, "Cannot read the certificate %s (TLSCertificate= in [Public]): %s",
                                       c->tls_certificate, r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
        r = read_pem(c->tls_key, &key);
        if (r < 0)
                return log_error_errno(r, "Cannot read the key %s (TLSKey= in [Public]): %s",
                                       c->tls_key, r == -EFBIG ? "larger than 1 MiB" : strerror(-r));

        /* Check here, with a message a person can act on: MHD would only say "failed". */
        bio = BIO_new_mem_buf(cert, -1);
        if (!bio)
                return -ENOMEM;
        x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!x509) {
                ERR_clear_error();
                return log_error_errno(-EBADMSG, "%s (TLSCertificate= in [Public]) holds no PEM certificate.",
                                       c->tls_certificate);
        }
        bio = BIO_new_mem_buf(key, -1);
        if (!bio) {
                X509_free(x509);
                return -ENOMEM;
        }
        pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!pkey) {
                ERR_clear_error();
                X509_free(x509);
                return log_error_errno(-EBADMSG, "%s (TLSKey= in [Public]) holds no unencrypted PEM private key.",
                                       c->tls_key);
        }
        r = X509_check_private_key(x509, pkey) == 1 ? 0 : -EKEYREJECTED;
        ERR_clear_error();
        EVP_PKEY_free(pkey);
        X509_free(x509);
        if (r < 0)
                return log_error_errno(r, "The key %s does not belong to the certificate %s.",
                                       c->tls_key, c->tls_certificate);

        *ret_cert = TAKE_PTR(cert);
        *ret_key = TAKE_PTR(key);
        return 0;
}
