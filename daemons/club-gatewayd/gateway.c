/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "gateway.h"
#include "gateway-accounting.h"
#include "gateway-api.h"
#include "gateway-bus.h"
#include "gateway-forwarded.h"
#include "gateway-heartbeat.h"
#include "gateway-hub.h"
#include "gateway-metrics.h"
#include "gateway-probe.h"
#include "gateway-register.h"
#include "http-forward.h"
#include "http-server.h"
#include "json-util.h"
#include "log.h"
#include "parse-util.h"
#include "store.h"

struct Gateway {
        sd_event *event;
        Store *store;
        Hub *hub;
        RateLimiter *register_limiter;          /* per client address (http_exchange_client()) */
        RateLimiter *register_key_limiter;      /* per API key / enrollment key */
        TrustedProxies trusted_proxies; /* [Public] TrustedProxies=: whose X-Forwarded-For counts */
        ReplayCache *replay;            /* the nonces of the heartbeats' signatures */
        uint64_t window_sec;            /* the online window */
        char *endpoint;                 /* [WireGuard] Endpoint=, or NULL */
        HttpServer *public;
        HttpServer *mesh;
        Prober *prober;                 /* GET /healthz through each online provider's tunnel */
        GatewayApi *api;                /* the OpenAI API: /v1/… on the public listener */
        Accounting *accounting;         /* per-key limits and usage rows: the API's hooks */
        GatewayBus *bus;                /* club.inference.Gateway1, or NULL ([Gateway] DBus=no, no bus) */
        Metrics *metrics;               /* [Metrics] Listen=: GET /metrics; NULL when off */
        sd_event_source *reap_timer;    /* deletes stale ephemeral providers */
        uint64_t ephemeral_grace_usec;
        uint64_t reap_interval_usec;
        bool tls;
        char public_address[64];
        char mesh_address[64];
};

Gateway *gateway_free(Gateway *g) {
        if (!g)
                return NULL;
        g->bus = gateway_bus_free(g->bus);      /* first: its methods use the store and the hub */
        /* Before the metrics: exchanges closed here still reach the finished hook, which
         * observes them in the metrics and records them in the accounting. */
        g->public = http_server_free(g->public);
        g->mesh = http_server_free(g->mesh);
        g->metrics = metrics_free(g->metrics);  /* before the API and the store: its scrapes ask them */
        g->api = gateway_api_free(g->api);      /* after the public server: its exchanges own requests */
        g->accounting = accounting_free(g->accounting); /* after the API: its requests' records come here */
        g->prober = prober_free(g->prober);
        g->reap_timer = sd_event_source_disable_unref(g->reap_timer);
        g->store = store_close(g->store);
        g->hub = hub_free(g->hub);
        g->register_limiter = rate_limiter_free(g->register_limiter);
        g->register_key_limiter = rate_limiter_free(g->register_key_limiter);
        g->replay = replay_cache_free(g->replay);
        trusted_proxies_done(&g->trusted_proxies);
        free(g->endpoint);
        sd_event_unref(g->event);
        return mfree(g);
}

int gateway_providers_online(Gateway *g, size_t *ret) {
        StoreProviderFilter filter = { .online_only = true };
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        r = store_provider_list(g->store, &filter, &l, &n);
        if (r < 0)
                return r;
        store_providers_free(l, n);
        *ret = n;
        return 0;
}

/* After the gateway deleted providers, for whatever reason: their peers leave the hub now
 * rather than at the next registration or restart. */
static void providers_removed(Gateway *g) {
        (void) hub_converge(g->hub, g->store);
}

static int reap_ephemeral(Gateway *g) {
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        r = store_provider_reap_ephemeral(g->store, g->ephemeral_grace_usec, &l, &n);
        if (r < 0)
                return log_warning_errno(r, "Failed to delete the stale ephemeral providers: %m");
        for (size_t i = 0; i < n; i++)
                log_info("Deleted ephemeral provider %s (id %" PRId64 "): no heartbeat for %" PRIu64 " s (EphemeralGrace=).",
                         l[i].name, l[i].id, g->ephemeral_grace_usec / USEC_PER_SEC);
        store_providers_free(l, n);
        if (n > 0)
                providers_removed(g);
        return (int) MIN(n, (size_t) INT_MAX);
}

static int on_reap_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Gateway *g = userdata;

        (void) reap_ephemeral(g);
        (void) sd_event_source_set_time_relative(s, g->reap_interval_usec);
        return 0;
}

static int respond_unknown_url(HttpExchange *x) {
        return http_exchange_respond_error(x, 404, "invalid_request_error", "unknown_url", NULL,
                                           "Unknown request URL: %s %s.",
                                           http_exchange_method(x), http_exchange_path(x));
}

static int handle_healthz(Gateway *g, HttpExchange *x) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *body = NULL;
        size_t n = 0, len;
        int r;

        if (!streq(http_exchange_method(x), "GET") && !streq(http_exchange_method(x), "HEAD")) {
                (void) http_exchange_add_header(x, "Allow", "GET, HEAD");
                return http_exchange_respond_error(x, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                   "Use GET for /healthz.");
        }
        r = gateway_providers_online(g, &n);
        if (r < 0) {
                log_warning_errno(r, "Failed to count the providers online for /healthz: %m");
                return http_exchange_respond_error(x, 503, "server_error", "store_unavailable", NULL,
                                                   "The gateway's store is not available.");
        }
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (jobj_add_string(o, "status", "ok") < 0 ||
            jobj_add_string(o, "version", PACKAGE_VERSION) < 0 ||
            jobj_add_int64(o, "providers_online", (int64_t) n) < 0)
                return -ENOMEM;
        r = jobj_to_string(o, &body, &len);
        if (r < 0)
                return r;
        (void) http_exchange_add_header(x, "Cache-Control", "no-store");
        return http_exchange_respond(x, 200, "application/json", body, len);
}

/*
 * The OpenAI API's hooks fan out here: admission (per-key limits) before a provider is
 * chosen, and each finished request (usage, limits, metrics) once its exchange ended.
 */
static int on_api_admit(const ApiRequestInfo *info, HttpExchange *x, void *userdata) {
        Gateway *g = userdata;

        assert(g);
        assert(info);
        assert(x);
        return accounting_admit(g->accounting, info, x);
}

static void on_api_finished(const ApiRequestRecord *record, void *userdata) {
        Gateway *g = userdata;

        assert(g);
        assert(record);
        accounting_finished(g->accounting, record);
        metrics_observe(g->metrics, record);
}

static void on_usage_flush(void *userdata) {
        accounting_flush(userdata);
}

/* GET /api/v1/usage: a key's owner reads the totals of their keys. */
static int handle_usage(Gateway *g, HttpExchange *x) {
        _cleanup_(store_api_key_deinit) StoreApiKey key = {};
        char id[HTTP_REQUEST_ID_SIZE];
        int r;

        http_request_id_new(id);
        r = gateway_api_authenticate(g->api, x, id, &key);
        if (r != 0)
                return http_exchange_is_answered(x) ? 0 : r;
        return accounting_handle_usage(g->accounting, x, id, &key);
}

static int on_metrics_gauges(MetricsGauges *ret, void *userdata) {
        Gateway *g = userdata;
        size_t n = 0;

        ret->requests_in_flight = gateway_api_in_flight(g->api);
        ret->providers_online = gateway_providers_online(g, &n) >= 0 ? (int64_t) n : -1;
        return 0;
}

/* [Metrics] Listen=: the registry and its listener. */
static int metrics_start(Gateway *g, const GatewayConfig *cfg) {
        _cleanup_(closep) int fd = -EBADF;
        int r;

        if (!cfg->metrics_listen)
                return 0;
        r = metrics_new(cfg->metrics_max_series, &g->metrics);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the metrics: %m");
        r = http_listen(cfg->metrics_listen, &fd);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on %s (Listen= in [Metrics]): %m", cfg->metrics_listen);
        r = metrics_serve(g->metrics, g->event, TAKE_FD(fd), on_metrics_gauges, g);
        if (r < 0)
                return log_error_errno(r, "Failed to serve the metrics on %s: %m", cfg->metrics_listen);
        log_info("Serving Prometheus metrics on http://%s" METRICS_PATH ".", cfg->metrics_listen);
        return 0;
}

static int on_public_request(HttpExchange *x, void *userdata) {
        Gateway *g = userdata;

        /* Who the client is, once, before anything asks http_exchange_client(). */
        forwarded_resolve(&g->trusted_proxies, x);
        if (streq(http_exchange_path(x), "/healthz"))
                return handle_healthz(g, x);
        if (streq(http_exchange_path(x), REGISTER_PATH)) {
                RegisterContext c = {
                        .store = g->store,
                        .hub = g->hub,
                        .endpoint = g->endpoint,
                        .limiter = g->register_limiter,
                        .key_limiter = g->register_key_limiter,
                };
                return handle_register(&c, x);
        }
        if (streq(http_exchange_path(x), ACCOUNTING_USAGE_PATH))
                return handle_usage(g, x);
        return gateway_api_handle(g->api, x);
}

static int on_mesh_request(HttpExchange *x, void *userdata) {
        Gateway *g = userdata;

        /* Control requests from agents, through their tunnels. */
        if (streq(http_exchange_path(x), HEARTBEAT_PATH)) {
                HeartbeatContext c = {
                        .store = g->store,
                        .replay = g->replay,
                        .window_sec = g->window_sec,
                };
                return handle_heartbeat(&c, x);
        }
        return respond_unknown_url(x);
}

/* Listen on the gateway's mesh address with IP_FREEBIND: the WireGuard hub interface may
 * come up after us, and the listener then works as soon as the address exists. */
static int mesh_listen_default(Store *store, int *ret_fd, char *address, size_t size) {
        _cleanup_(closep) int fd = -EBADF;
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(GATEWAY_MESH_PORT_DEFAULT),
        };
        int one = 1;

        store_gateway_address(store, &sa.sin_addr);
        format_sockaddr((struct sockaddr *) &sa, address, size);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                return -errno;
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static void format_listener(int fd, char *buf, size_t size) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                snprintf(buf, size, "fd %d", fd);
        else
                format_sockaddr((struct sockaddr *) &ss, buf, size);
}

int gateway_new(sd_event *event, const GatewayConfig *cfg, int public_fd, int mesh_fd,
                const char *cert_pem, const char *key_pem, Gateway **ret) {
        _cleanup_(gateway_freep) Gateway *g = NULL;
        _cleanup_(closep) int pfd = public_fd, mfd = mesh_fd;
        StoreOptions sopts = {
                .mesh_prefix = cfg->mesh_prefix,
                .online_window_usec = cfg->heartbeat_window_usec,
        };
        HttpServerOptions hopts = {
                .max_connections = cfg->max_connections,
                .max_body_size = cfg->max_body_size,
                .tls_cert_pem = cert_pem,
                .tls_key_pem = key_pem,
        };
        int r;

        assert(event && cfg && public_fd >= 0 && ret);

        g = new0(Gateway, 1);
        if (!g)
                return log_oom();
        *g = (Gateway) {
                .event = sd_event_ref(event),
                .tls = cert_pem && key_pem,
                .window_sec = (cfg->heartbeat_window_usec ?: STORE_ONLINE_WINDOW_USEC_DEFAULT) / USEC_PER_SEC,
                .ephemeral_grace_usec = cfg->ephemeral_grace_usec ?: GATEWAY_EPHEMERAL_GRACE_USEC_DEFAULT,
        };
        /* Reap every 30 s, or twice per grace when that is shorter (tests). */
        g->reap_interval_usec = MAX(MIN(GATEWAY_REAP_INTERVAL_USEC, g->ephemeral_grace_usec / 2), USEC_PER_SEC / 2);

        r = store_open(cfg->state_path, &sopts, &g->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the store %s (StatePath= in [Gateway]): %m", cfg->state_path);

        /* The hub: its key is needed for every registration answer, so a key that cannot
         * be read or made stops the start; an interface that cannot be configured does not
         * (hub_converge() logs why, and registration retries it). */
        r = hub_new(cfg, &g->hub);
        if (r < 0)
                return r;
        if (!cfg->wg_enabled)
                log_info("[WireGuard] Enabled=no: not configuring the hub interface %s.", cfg->wg_interface);
        else
                (void) hub_converge(g->hub, g->store);
        if (cfg->wg_endpoint) {
                g->endpoint = strdup(cfg->wg_endpoint);
                if (!g->endpoint)
                        return log_oom();
        } else
                log_warning("[WireGuard] Endpoint= is not set: registrations are refused (503) until it is.");
        g->register_limiter = rate_limiter_new(cfg->register_rate_per_source, cfg->register_rate_per_source,
                                               RATE_LIMITER_SLOTS);
        g->register_key_limiter = rate_limiter_new(cfg->register_rate_per_key, cfg->register_rate_per_key,
                                                   RATE_LIMITER_SLOTS);
        if (!g->register_limiter || !g->register_key_limiter)
                return log_oom();
        r = gateway_set_trusted_proxies(g, &cfg->trusted_proxies);
        if (r < 0)
                return log_oom();
        r = replay_cache_new(0, 0, &g->replay);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the replay cache for heartbeat signatures: %m");

        r = prober_new(event, g->store, cfg->probe_interval_usec,
                       cfg->heartbeat_window_usec ?: STORE_ONLINE_WINDOW_USEC_DEFAULT, &g->prober);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the probe of the providers: %m");
        /* Providers that went stale while the gateway was down go at once. */
        (void) reap_ephemeral(g);
        r = sd_event_add_time_relative(event, &g->reap_timer, CLOCK_MONOTONIC, g->reap_interval_usec, 0, on_reap_timer, g);
        if (r >= 0)
                r = sd_event_source_set_enabled(g->reap_timer, SD_EVENT_ON);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the reaping of ephemeral providers: %m");

        format_listener(pfd, g->public_address, sizeof g->public_address);
        r = gateway_api_new(event, g->store, &(GatewayApiOptions) {
                                    .connect_timeout_usec = cfg->connect_timeout_usec,
                                    .first_byte_timeout_usec = cfg->first_byte_timeout_usec,
                                    .idle_timeout_usec = cfg->idle_timeout_usec,
                                    .keepalive_interval_usec = cfg->keep_alive_usec,
                                    .max_attempts = cfg->max_attempts,
                                    .backoff_min_usec = cfg->failure_backoff_usec,
                                    .backoff_max_usec = cfg->failure_backoff_max_usec,
                                    .max_connections = cfg->max_connections,
                            }, &g->api);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the OpenAI API: %m");
        r = accounting_new(event, g->store, &(AccountingOptions) {
                                   .defaults = {
                                           .requests_per_minute = cfg->limit_requests_per_minute ?: KEY_LIMIT_UNLIMITED,
                                           .tokens_per_minute = cfg->limit_tokens_per_minute ?: KEY_LIMIT_UNLIMITED,
                                           .concurrent_streams = cfg->limit_concurrent_streams ?: KEY_LIMIT_UNLIMITED,
                                   },
                                   .retention_usec = cfg->usage_retention_usec,
                           }, &g->accounting);
        if (r < 0)
                return log_error_errno(r, "Failed to set up usage accounting and limits: %m");
        gateway_api_set_hooks(g->api, &(GatewayApiHooks) {
                                      .admit = on_api_admit,
                                      .finished = on_api_finished,
                                      .userdata = g,
                              });
        r = http_server_new(event, TAKE_FD(pfd), &hopts, on_public_request, g, &g->public);
        if (r < 0)
                return log_error_errno(r, "Failed to start the public %s listener on %s%s: %m",
                                       g->tls ? "HTTPS" : "HTTP", g->public_address,
                                       g->tls ? " (is the certificate or key unusable?)" : "");

        if (mfd < 0 && cfg->mesh_listen) {
                r = http_listen(cfg->mesh_listen, &mfd);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s (Listen= in [Mesh]): %m", cfg->mesh_listen);
        } else if (mfd < 0) {
                char a[64];

                r = mesh_listen_default(g->store, &mfd, a, sizeof a);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on the gateway's mesh address %s: %m", a);
        }
        format_listener(mfd, g->mesh_address, sizeof g->mesh_address);
        /* Control traffic is small: the public limits are plenty. */
        r = http_server_new(event, TAKE_FD(mfd), &(HttpServerOptions) {
                                    .max_connections = cfg->max_connections,
                                    .max_body_size = cfg->max_body_size,
                            }, on_mesh_request, g, &g->mesh);
        if (r < 0)
                return log_error_errno(r, "Failed to start the mesh listener on %s: %m", g->mesh_address);
        r = metrics_start(g, cfg);
        if (r < 0)
                return r;

        /* Administration: the public API must not depend on it, so no bus is a warning. */
        if (cfg->dbus) {
                r = gateway_bus_new(event, g->store, g->hub, &g->bus);
                if (r == -EACCES)
                        log_warning_errno(r, "Cannot own %s on the system bus: the bus policy does not allow this user "
                                          "(is dbus/%s.conf installed?); club-gatewayctl will not work: %m",
                                          GATEWAY_BUS_NAME, GATEWAY_BUS_NAME);
                else if (r == -EEXIST)
                        log_warning_errno(r, "Cannot own %s on the system bus: another process owns it; "
                                          "club-gatewayctl will talk to that one: %m", GATEWAY_BUS_NAME);
                else if (r < 0)
                        log_warning_errno(r, "Cannot serve %s on the system bus, going on without administration "
                                          "over D-Bus (club-gatewayctl will not work): %m", GATEWAY_BUS_NAME);
                else
                        log_debug("Serving %s on the system bus.", GATEWAY_BUS_NAME);
                gateway_bus_set_usage_flush(g->bus, on_usage_flush, g->accounting);
        }

        *ret = TAKE_PTR(g);
        return 0;
}

int gateway_set_tls(Gateway *g, const char *cert_pem, const char *key_pem) {
        int r;

        r = http_server_set_tls(g->public, cert_pem, key_pem);
        if (r < 0)
                return r;
        g->tls = cert_pem && key_pem;
        return 0;
}

int gateway_set_trusted_proxies(Gateway *g, const TrustedProxies *t) {
        return trusted_proxies_copy(&g->trusted_proxies, t);
}

void gateway_stop_accepting(Gateway *g) {
        int r;

        r = http_server_quiesce(g->public);
        if (r < 0)
                log_warning_errno(r, "Failed to stop accepting on the public listener, ignoring: %m");
        r = http_server_quiesce(g->mesh);
        if (r < 0)
                log_warning_errno(r, "Failed to stop accepting on the mesh listener, ignoring: %m");
}

unsigned gateway_in_flight(Gateway *g) {
        return http_server_n_exchanges(g->public) + http_server_n_exchanges(g->mesh);
}

int gateway_status_line(Gateway *g, char **ret) {
        size_t n = 0;
        int r;

        r = gateway_providers_online(g, &n);
        if (r < 0) {
                if (asprintf(ret, "Serving %s on %s, mesh control on %s; the store is not answering.",
                             g->tls ? "HTTPS" : "HTTP", g->public_address, g->mesh_address) < 0)
                        return -ENOMEM;
                return 0;
        }
        if (asprintf(ret, "Serving %s on %s, mesh control on %s; %zu provider(s) online.",
                     g->tls ? "HTTPS" : "HTTP", g->public_address, g->mesh_address, n) < 0)
                return -ENOMEM;
        return 0;
}
