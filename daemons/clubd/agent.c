/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "agent-heartbeat.h"
#include "agent-register.h"
#include "agent-spoke.h"
#include "agent-state.h"
#include "conf-parser.h"
#include "http-server.h"
#include "log.h"
#include "upstream.h"

#define IN_FLIGHT_INTERVAL_USEC USEC_PER_SEC
/* An upstream that stops answering keeps its models for this many failed checks. */
#define UPSTREAM_FAILURES_KEEP 3U
/* How long the first heartbeat waits for the upstreams' first model listings. */
#define FIRST_LISTING_WAIT_USEC (10 * USEC_PER_SEC)
#define REREGISTER_HINT "Register again: clubctl register --key …"

#define free_and_replace(a, b) ({ free(a); (a) = TAKE_PTR(b); 0; })

typedef enum RegisterStep {
        REGISTER_IDLE,
        REGISTER_REQUEST,               /* the POST is running */
        REGISTER_RESOLVE,               /* resolving the gateway's endpoint */
        REGISTER_FAILED_EARLY,          /* failed before anything started; reported from a defer source */
} RegisterStep;

struct Agent {
        sd_event *event;
        Proxy *proxy;
        char *state_dir;
        WgContext *wg;
        HttpClient *mesh_client;

        /* From the configuration. */
        char *cfg_gateway_url;
        char *cfg_name;
        char *cfg_ca_file;
        char *ifname;
        uint16_t port;
        unsigned capacity;
        char **capabilities;            /* sorted */

        AgentSavedState *saved;         /* NULL: unregistered */
        AgentState state;
        char *reason;
        bool draining;
        uint64_t last_heartbeat_usec;
        AgentHeartbeat *heartbeat;
        sd_event_source *listing_wait;  /* the first heartbeat waits for the first model listings */
        AgentResolve *join_resolve;     /* joining from the saved state */

        char **models;                  /* sorted union of the upstreams' models */
        AgentUpstream *upstreams;       /* owned strings */
        size_t n_upstreams;
        unsigned in_flight_reported;
        sd_event_source *in_flight_timer;

        /* The registration running. */
        RegisterStep step;
        HttpClient *reg_client;
        AgentRegisterRequest *reg;
        AgentResolve *reg_resolve;
        AgentSavedState *pending;
        sd_event_source *reg_defer;
        int early_error;
        char *early_code;
        char *early_message;
        AgentRegisterDoneFn done;
        void *done_userdata;

        AgentChangedFn changed;
        void *changed_userdata;
};

static const char *const agent_state_table[_AGENT_STATE_MAX] = {
        [AGENT_UNREGISTERED] = "unregistered",
        [AGENT_CONNECTING] = "connecting",
        [AGENT_ONLINE] = "online",
        [AGENT_OFFLINE] = "offline",
        [AGENT_DRAINING] = "draining",
        [AGENT_ERROR] = "error",
};

const char *agent_state_to_string(AgentState s) {
        if (s < 0 || s >= _AGENT_STATE_MAX)
                return NULL;
        return agent_state_table[s];
}

AgentState agent_state_from_string(const char *s) {
        for (int i = 0; i < _AGENT_STATE_MAX; i++)
                if (streq_ptr(s, agent_state_table[i]))
                        return (AgentState) i;
        return _AGENT_STATE_INVALID;
}

static bool strv_equal(char **a, char **b) {
        for (; a && *a && b && *b; a++, b++)
                if (!streq(*a, *b))
                        return false;
        return !(a && *a) && !(b && *b);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void agent_notify(Agent *a, unsigned changes) {
        if (changes != 0 && a->changed)
                a->changed(a, changes, a->changed_userdata);
}

static void agent_set_state(Agent *a, AgentState s, const char *reason) {
        bool changed = a->state != s || !streq(strempty(a->reason), strempty(reason));

        if (!changed)
                return;
        if (a->state != s) {
                if (s == AGENT_ERROR || s == AGENT_OFFLINE)
                        log_warning("Agent state: %s%s%s", agent_state_to_string(s), reason ? ": " : ".", strempty(reason));
                else
                        log_info("Agent state: %s%s%s", agent_state_to_string(s), isempty(reason) ? "." : ": ", strempty(reason));
        }
        a->state = s;
        if (free_and_strdup(&a->reason, isempty(reason) ? NULL : reason) < 0)
                log_oom();
        agent_notify(a, AGENT_CHANGE_STATE);
}

static void agent_set_statef(Agent *a, AgentState s, const char *fmt, ...) _printf_(3, 4);
static void agent_set_statef(Agent *a, AgentState s, const char *fmt, ...) {
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        agent_set_state(a, s, m ?: "");
}

/* ---- models and upstreams ------------------------------------------------------------ */

static void agent_upstreams_free(AgentUpstream *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free((char *) l[i].name);
                free((char *) l[i].url);
        }
        free(l);
}

static int agent_collect(Agent *a, char ***ret_models, AgentUpstream **ret_ups, size_t *ret_n) {
        Upstream *const *ups;
        size_t n = proxy_upstreams(a->proxy, &ups), n_models = 0, k = 0, w = 0;
        char **models;
        AgentUpstream *l;

        for (size_t i = 0; i < n; i++)
                n_models += ups[i]->n_models;
        models = new0(char *, n_models + 1);
        l = new0(AgentUpstream, n);
        if (!models || !l) {
                free(models);
                free(l);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                Upstream *u = ups[i];

                l[i] = (AgentUpstream) { .name = strdup(u->name), .url = strdup(u->url), .healthy = u->reachable };
                if (!l[i].name || !l[i].url)
                        goto oom;
                /* A reachable upstream's last list stands; so does an unreachable one's for a
                 * few checks, so that one slow answer does not take its models off the network. */
                if (!u->reachable && u->failures >= UPSTREAM_FAILURES_KEEP)
                        continue;
                for (size_t j = 0; j < u->n_models; j++) {
                        models[k] = strdup(u->models[j]);
                        if (!models[k])
                                goto oom;
                        k++;
                }
        }
        /* Sorted, then each name once (several upstreams may serve the same model). */
        qsort(models, k, sizeof(char *), cmp_str);
        for (size_t i = 0; i < k; i++) {
                if (w > 0 && streq(models[w - 1], models[i]))
                        free(models[i]);
                else
                        models[w++] = models[i];
        }
        models[w] = NULL;
        *ret_models = models;
        *ret_ups = l;
        *ret_n = n;
        return 0;
oom:
        config_strv_free(models);
        agent_upstreams_free(l, n);
        return -ENOMEM;
}

static int agent_start_heartbeats(Agent *a);

static void agent_stop_heartbeats(Agent *a) {
        a->heartbeat = agent_heartbeat_free(a->heartbeat);
        a->listing_wait = sd_event_source_disable_unref(a->listing_wait);
}

static void on_proxy_refreshed(Proxy *p, void *userdata) {
        Agent *a = userdata;
        char **models;
        AgentUpstream *ups;
        size_t n;
        unsigned changes = 0;
        bool same;

        if (agent_collect(a, &models, &ups, &n) < 0) {
                log_oom();
                return;
        }
        if (!strv_equal(models, a->models))
                changes |= AGENT_CHANGE_MODELS;
        same = n == a->n_upstreams;
        for (size_t i = 0; same && i < n; i++)
                same = streq(ups[i].name, a->upstreams[i].name) && streq(ups[i].url, a->upstreams[i].url) &&
                        ups[i].healthy == a->upstreams[i].healthy;
        if (!same)
                changes |= AGENT_CHANGE_UPSTREAMS;
        config_strv_free(a->models);
        a->models = models;
        agent_upstreams_free(a->upstreams, a->n_upstreams);
        a->upstreams = ups;
        a->n_upstreams = n;
        agent_notify(a, changes);
        if (a->listing_wait) {
                int r;

                /* The first listings are in: the first heartbeat carries them. */
                a->listing_wait = sd_event_source_disable_unref(a->listing_wait);
                r = agent_start_heartbeats(a);
                if (r < 0)
                        agent_set_statef(a, AGENT_ERROR, "Heartbeats could not be started: %s.", strerror(-r));
                return;
        }
        /* What the gateway routes here changed: tell it now rather than at the next beat. */
        if (changes & AGENT_CHANGE_MODELS)
                agent_heartbeat_kick(a->heartbeat);
}

static int on_in_flight_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        unsigned n = proxy_in_flight(a->proxy);

        if (n != a->in_flight_reported) {
                a->in_flight_reported = n;
                agent_notify(a, AGENT_CHANGE_IN_FLIGHT);
        }
        if (sd_event_source_set_time_relative(s, IN_FLIGHT_INTERVAL_USEC) < 0 ||
            sd_event_source_set_enabled(s, SD_EVENT_ONESHOT) < 0)
                log_warning("Failed to re-arm the in-flight timer; InFlight changes are no longer signalled.");
        return 0;
}

/* ---- configuration ------------------------------------------------------------------------ */

static int agent_apply_config(Agent *a, const ClubdConfig *cfg, bool *ret_caps_changed) {
        _cleanup_free_ char *url = NULL, *name = NULL, *ca = NULL;
        char **caps;

        if ((cfg->gateway_url && !(url = strdup(cfg->gateway_url))) ||
            (cfg->name && !(name = strdup(cfg->name))) ||
            (cfg->ca_file && !(ca = strdup(cfg->ca_file))))
                return -ENOMEM;
        caps = new0(char *, cfg->n_capabilities + 1);
        if (!caps)
                return -ENOMEM;
        for (size_t i = 0; i < cfg->n_capabilities; i++) {
                caps[i] = strdup(cfg->capabilities[i].name);
                if (!caps[i]) {
                        config_strv_free(caps);
                        return -ENOMEM;
                }
        }
        qsort(caps, cfg->n_capabilities, sizeof(char *), cmp_str);

        if (ret_caps_changed)
                *ret_caps_changed = !strv_equal(caps, a->capabilities);
        config_strv_free(a->capabilities);
        a->capabilities = caps;
        free_and_replace(a->cfg_gateway_url, url);
        free_and_replace(a->cfg_name, name);
        free_and_replace(a->cfg_ca_file, ca);
        a->capacity = cfg->capacity;
        return 0;
}

/* ---- joining the mesh ------------------------------------------------------------------ */

static void agent_heartbeat_fill(AgentHeartbeatInfo *ret, void *userdata) {
        Agent *a = userdata;

        *ret = (AgentHeartbeatInfo) {
                .models = a->models,
                .capabilities = a->capabilities,
                .in_flight = proxy_in_flight(a->proxy),
                .capacity = a->capacity,
                .upstreams = a->upstreams,
                .n_upstreams = a->n_upstreams,
                .draining = a->draining,
        };
}

static void agent_heartbeat_result(AgentHeartbeat *h, AgentHeartbeatOutcome o, const char *detail, void *userdata) {
        Agent *a = userdata;

        switch (o) {
        case AGENT_HEARTBEAT_ONLINE:
        case AGENT_HEARTBEAT_NOT_ONLINE:
                a->last_heartbeat_usec = now_usec(CLOCK_REALTIME);
                agent_notify(a, AGENT_CHANGE_HEARTBEAT);
                if (a->draining)
                        agent_set_state(a, AGENT_DRAINING, "Draining: running requests finish, the gateway sends no new ones.");
                else if (o == AGENT_HEARTBEAT_ONLINE)
                        agent_set_state(a, AGENT_ONLINE, NULL);
                else
                        agent_set_state(a, AGENT_OFFLINE,
                                        "The gateway acknowledges the heartbeats but does not route requests here: its "
                                        "probe of this machine's mesh listener failed, or an administrator disabled the provider.");
                break;
        case AGENT_HEARTBEAT_FAILED:
                log_debug("Heartbeat failed: %s", strna(detail));
                /* Right after joining, the tunnel's first handshake may still be under way. */
                if (a->state == AGENT_CONNECTING)
                        agent_set_statef(a, AGENT_CONNECTING, "Waiting for the first heartbeat to get through: %s. Retrying.",
                                         detail ?: "the gateway could not be reached");
                else
                        agent_set_statef(a, AGENT_OFFLINE, "No heartbeat got through: %s. Retrying.",
                                         detail ?: "the gateway could not be reached");
                break;
        case AGENT_HEARTBEAT_FORGOTTEN: {
                /* The gateway's message ends a sentence of its own: no ".." before the hint. */
                size_t n = strlen(strempty(detail));

                while (n > 0 && detail[n - 1] == '.')
                        n--;
                agent_stop_heartbeats(a);
                agent_set_statef(a, AGENT_ERROR,
                                 "The gateway no longer knows this machine (provider %" PRId64 ")%s%.*s. " REREGISTER_HINT,
                                 a->saved->provider_id, n > 0 ? ": " : "", (int) n, strempty(detail));
                break;
        }
        default:
                break;
        }
}

static int agent_heartbeats_now(Agent *a) {
        agent_stop_heartbeats(a);
        return agent_heartbeat_new(a->event, a->mesh_client, &a->saved->gateway_mesh_address,
                                   a->saved->request_secret, a->saved->heartbeat_interval_sec,
                                   agent_heartbeat_fill, agent_heartbeat_result, a, &a->heartbeat);
}

static int on_listing_wait(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        int r;

        log_warning("The upstreams have not listed their models within %u s; sending the first heartbeat without waiting longer.",
                    (unsigned) (FIRST_LISTING_WAIT_USEC / USEC_PER_SEC));
        r = agent_heartbeats_now(a);
        if (r < 0)
                agent_set_statef(a, AGENT_ERROR, "Heartbeats could not be started: %s.", strerror(-r));
        return 0;
}

/*
 * Start heartbeating. The gateway routes to a provider from its first heartbeat on, so
 * that heartbeat must already carry the models: if no round of model listings has ended
 * yet (clubd has just started), it waits for one, for at most FIRST_LISTING_WAIT_USEC.
 */
static int agent_start_heartbeats(Agent *a) {
        int r;

        if (proxy_listed(a->proxy))
                return agent_heartbeats_now(a);
        agent_stop_heartbeats(a);
        r = sd_event_add_time_relative(a->event, &a->listing_wait, CLOCK_MONOTONIC, FIRST_LISTING_WAIT_USEC,
                                       USEC_PER_SEC / 10, on_listing_wait, a);
        if (r < 0)
                return r;
        proxy_refresh(a->proxy);        /* may end the round at once, and start the heartbeats */
        return 0;
}

static int mesh_listen(const AgentSavedState *s, int *ret_fd) {
        char addr[INET_ADDRSTRLEN], buf[INET_ADDRSTRLEN + 8];

        if (!inet_ntop(AF_INET, &s->mesh_address, addr, sizeof addr))
                return -errno;
        snprintf(buf, sizeof buf, "%s:%u", addr, s->agent_port);
        return http_listen(buf, ret_fd);
}

static void mesh_auth_from(const AgentSavedState *s, ProxyMeshAuth *ret) {
        *ret = (ProxyMeshAuth) { .gateway = s->gateway_mesh_address };
        memcpy(ret->secret, s->request_secret, sizeof ret->secret);
}

static const char *wg_reason(int r) {
        return wg_strerror_hint(r) ?: strerror(-r);
}

static void on_join_resolved(AgentResolve *res, int error, const WgEndpoint *resolved, void *userdata) {
        Agent *a = userdata;
        ProxyMeshAuth auth;
        WgEndpoint endpoint = resolved ? *resolved : (WgEndpoint) {}, *ep = &endpoint;
        char m[INET_ADDRSTRLEN];
        int fd = -EBADF, r;

        /* @resolved lives in @res: copied above, before @res goes. */
        a->join_resolve = agent_resolve_free(a->join_resolve);
        if (error < 0) {
                agent_set_statef(a, AGENT_ERROR, "The gateway's endpoint %s could not be resolved: %s.",
                                 a->saved->gateway_endpoint, error == -EAGAIN ? "a temporary DNS failure" : "no such host");
                return;
        }
        r = agent_spoke_converge(a->wg, a->ifname, a->saved, ep);
        if (r < 0) {
                agent_set_statef(a, AGENT_ERROR, "The WireGuard interface %s could not be configured: %s.",
                                 a->ifname, wg_reason(r));
                return;
        }
        r = mesh_listen(a->saved, &fd);
        if (r >= 0) {
                mesh_auth_from(a->saved, &auth);
                r = proxy_listen_mesh(a->proxy, fd, &auth);
                explicit_bzero(&auth, sizeof auth);
        }
        if (r < 0) {
                agent_set_statef(a, AGENT_ERROR, "The mesh listener on %s:%u could not be opened: %s.",
                                 inet_ntop(AF_INET, &a->saved->mesh_address, m, sizeof m), a->saved->agent_port,
                                 strerror(-r));
                return;
        }
        r = agent_start_heartbeats(a);
        if (r < 0) {
                agent_set_statef(a, AGENT_ERROR, "Heartbeats could not be started: %s.", strerror(-r));
                return;
        }
        log_info("Joined the mesh as %s (provider %" PRId64 ", %s) on %s.", a->saved->name, a->saved->provider_id,
                 inet_ntop(AF_INET, &a->saved->mesh_address, m, sizeof m), a->ifname);
}

/* Bring the spoke, the mesh listener and the heartbeats up from a->saved. */
static int agent_join(Agent *a) {
        int r;

        a->join_resolve = agent_resolve_free(a->join_resolve);
        agent_set_state(a, AGENT_CONNECTING, "Configuring the mesh interface and sending the first heartbeat.");
        r = agent_resolve_start(a->event, a->saved->gateway_endpoint, on_join_resolved, a, &a->join_resolve);
        if (r < 0)
                agent_set_statef(a, AGENT_ERROR, "The gateway's endpoint %s could not be resolved: %s.",
                                 a->saved->gateway_endpoint, strerror(-r));
        return r;
}

/* ---- registration ---------------------------------------------------------------------- */

static void register_cleanup(Agent *a) {
        a->reg = agent_register_request_free(a->reg);
        a->reg_resolve = agent_resolve_free(a->reg_resolve);
        /* a->reg_client stays: this may run inside its callback. The next registration
         * replaces it, agent_free() frees it. */
        a->pending = agent_saved_state_free(a->pending);
        a->reg_defer = sd_event_source_disable_unref(a->reg_defer);
        a->early_code = mfree(a->early_code);
        a->early_message = mfree(a->early_message);
        a->step = REGISTER_IDLE;
}

static void register_finish(Agent *a, int error, const char *code, const char *message) {
        AgentRegisterDoneFn done = a->done;
        void *ud = a->done_userdata;
        _cleanup_free_ char *c = code ? strdup(code) : NULL, *m = message ? strdup(message) : NULL;

        if (error < 0)
                log_warning("Registration failed: %s%s%s%s", strna(m), c ? " (" : "", strempty(c), c ? ")" : "");
        register_cleanup(a);
        a->done = NULL;
        a->done_userdata = NULL;
        if (done)
                done(a, error, c ?: code, m ?: message, ud);
}

static int on_register_defer(sd_event_source *s, void *userdata) {
        Agent *a = userdata;
        _cleanup_free_ char *c = TAKE_PTR(a->early_code), *m = TAKE_PTR(a->early_message);

        register_finish(a, a->early_error, c, m);
        return 0;
}

/* Undo a spoke change after a later step failed: back to the saved registration, if any. */
static void register_rollback_spoke(Agent *a) {
        int r;

        if (a->saved && a->state != AGENT_ERROR) {
                (void) agent_join(a);
                return;
        }
        r = agent_spoke_clear(a->wg, a->ifname);
        if (r < 0)
                log_warning_errno(r, "Failed to remove the new registration from %s again, ignoring: %m", a->ifname);
}

static void on_register_resolved(AgentResolve *res, int error, const WgEndpoint *resolved, void *userdata) {
        Agent *a = userdata;
        _cleanup_free_ char *m = NULL;
        ProxyMeshAuth auth;
        WgEndpoint endpoint = resolved ? *resolved : (WgEndpoint) {}, *ep = &endpoint;
        bool reuse_listener;
        int fd = -EBADF, r;

        /* @resolved lives in @res: copied above, before @res goes. */
        a->reg_resolve = agent_resolve_free(a->reg_resolve);
        if (error < 0) {
                (void) asprintf(&m, "The gateway's WireGuard endpoint %s could not be resolved: %s.",
                                a->pending->gateway_endpoint, error == -EAGAIN ? "a temporary DNS failure" : "no such host");
                return register_finish(a, -EHOSTUNREACH, "gateway_unreachable", m);
        }

        /* The same mesh address and port: the running listener stays, with the new secret. */
        reuse_listener = a->saved && proxy_has_mesh(a->proxy) &&
                a->saved->mesh_address.s_addr == a->pending->mesh_address.s_addr &&
                a->saved->agent_port == a->pending->agent_port;
        if (!reuse_listener && proxy_has_mesh(a->proxy))
                proxy_unlisten_mesh(a->proxy);

        r = agent_spoke_converge(a->wg, a->ifname, a->pending, ep);
        if (r < 0) {
                (void) asprintf(&m, "The WireGuard interface %s could not be configured: %s.", a->ifname, wg_reason(r));
                register_rollback_spoke(a);
                return register_finish(a, -ENOLINK, "wireguard_failed", m);
        }
        if (!reuse_listener) {
                r = mesh_listen(a->pending, &fd);
                if (r < 0) {
                        (void) asprintf(&m, "The mesh listener on port %u could not be opened: %s.",
                                        a->pending->agent_port, strerror(-r));
                        register_rollback_spoke(a);
                        return register_finish(a, -ENOLINK, "wireguard_failed", m);
                }
        }
        r = agent_state_save(a->state_dir, a->pending);
        if (r < 0) {
                safe_close(fd);
                (void) asprintf(&m, "The registration could not be saved in %s/" AGENT_STATE_FILE ": %s.",
                                a->state_dir, strerror(-r));
                register_rollback_spoke(a);
                return register_finish(a, -EROFS, "state_write_failed", m);
        }

        /* Committed. */
        agent_saved_state_free(a->saved);
        a->saved = TAKE_PTR(a->pending);
        mesh_auth_from(a->saved, &auth);
        if (reuse_listener) {
                proxy_set_mesh_auth(a->proxy, &auth);
                r = 0;
        } else
                r = proxy_listen_mesh(a->proxy, fd, &auth);
        explicit_bzero(&auth, sizeof auth);
        a->join_resolve = agent_resolve_free(a->join_resolve);
        if (r >= 0)
                r = agent_start_heartbeats(a);
        if (r < 0)
                agent_set_statef(a, AGENT_ERROR, "Registered, but serving on the mesh failed: %s. Restart clubd.", strerror(-r));
        else
                agent_set_state(a, AGENT_CONNECTING, "Registered; waiting for the gateway to acknowledge the first heartbeat.");
        agent_notify(a, AGENT_CHANGE_REGISTRATION);
        log_info("Registered with %s as %s: provider %" PRId64 ", mesh address %s.", a->saved->gateway_url,
                 a->saved->name, a->saved->provider_id, agent_mesh_address(a));
        register_finish(a, 0, NULL, NULL);
}

static void on_register_answer(AgentRegisterRequest *req, int error, const char *code, const char *message,
                               const AgentSavedState *reg, void *userdata) {
        Agent *a = userdata;
        int r;

        if (error < 0)
                return register_finish(a, error, code, message);

        /* Take the gateway's answer into the pending state (which holds our key). */
        a->pending->provider_id = reg->provider_id;
        a->pending->mesh_address = reg->mesh_address;
        a->pending->gateway_public_key = reg->gateway_public_key;
        a->pending->gateway_mesh_address = reg->gateway_mesh_address;
        a->pending->heartbeat_interval_sec = reg->heartbeat_interval_sec;
        memcpy(a->pending->request_secret, reg->request_secret, sizeof reg->request_secret);
        if (free_and_strdup(&a->pending->name, reg->name) < 0 ||
            free_and_strdup(&a->pending->gateway_endpoint, reg->gateway_endpoint) < 0)
                return register_finish(a, -ENOMEM, "state_write_failed", "Out of memory.");
        if (wg_key_is_zero(&a->pending->gateway_public_key))
                return register_finish(a, -EBADMSG, "invalid_response", "The gateway sent no public key.");

        a->step = REGISTER_RESOLVE;
        r = agent_resolve_start(a->event, a->pending->gateway_endpoint, on_register_resolved, a, &a->reg_resolve);
        if (r < 0)
                return register_finish(a, -EHOSTUNREACH, "gateway_unreachable",
                                       "The gateway's WireGuard endpoint could not be resolved.");
}

static int register_fail_early(Agent *a, int error, const char *code, const char *message) {
        int r;

        a->early_error = error;
        if (free_and_strdup(&a->early_code, code) < 0 || free_and_strdup(&a->early_message, message) < 0)
                return -ENOMEM;
        r = sd_event_add_defer(a->event, &a->reg_defer, on_register_defer, a);
        if (r < 0)
                return r;
        a->step = REGISTER_FAILED_EARLY;
        return 0;
}

static int default_name(char **ret) {
        char host[256] = {};

        if (gethostname(host, sizeof host - 1) < 0)
                return -errno;
        host[strcspn(host, ".")] = 0;
        if (!clubd_name_valid(host, false))
                return -EINVAL;
        *ret = strdup(host);
        return *ret ? 0 : -ENOMEM;
}

int agent_register(Agent *a, const AgentRegisterParams *p, AgentRegisterDoneFn done, void *userdata) {
        _cleanup_(agent_saved_state_freep) AgentSavedState *pending = NULL;
        _cleanup_free_ char *url = NULL, *name = NULL;
        const char *gw, *ca;
        WgKey pub;
        int r;

        assert(a && p && done);
        if (a->step != REGISTER_IDLE)
                return -EBUSY;
        if (!agent_key_valid(p->key) || (p->flags & ~(unsigned) _AGENT_REGISTER_FLAGS_ALL))
                return -EINVAL;
        gw = !isempty(p->gateway_url) ? p->gateway_url : a->saved ? a->saved->gateway_url : a->cfg_gateway_url;
        if (isempty(gw))
                return -EINVAL;
        if (!isempty(p->name)) {
                if (!clubd_name_valid(p->name, false))
                        return -EINVAL;
                name = strdup(p->name);
        } else if (a->saved)
                name = strdup(a->saved->name);
        else if (a->cfg_name)
                name = strdup(a->cfg_name);
        else {
                r = default_name(&name);
                if (r < 0)
                        return -EINVAL;
        }
        if (!name)
                return -ENOMEM;

        a->done = done;
        a->done_userdata = userdata;
        r = agent_register_url(gw, p->flags & AGENT_REGISTER_INSECURE, &url);
        if (r == -EINVAL) {
                a->done = NULL;
                return r;
        }
        if (r == -EPROTONOSUPPORT) {
                _cleanup_free_ char *m = NULL;

                (void) asprintf(&m, "Refusing to send the key to %s over plain HTTP: use https://, or allow it "
                                "explicitly (clubctl register --insecure) on a network you trust.", gw);
                r = register_fail_early(a, -EPROTONOSUPPORT, "insecure_gateway", m ?: "Refusing plain HTTP.");
                if (r < 0) {
                        register_cleanup(a);
                        a->done = NULL;
                }
                return r;
        }
        if (r < 0) {
                a->done = NULL;
                return r;
        }

        pending = new0(AgentSavedState, 1);
        if (!pending)
                return -ENOMEM;
        pending->agent_port = a->port;
        pending->insecure = p->flags & AGENT_REGISTER_INSECURE;
        ca = a->cfg_ca_file;
        if (free_and_strdup(&pending->gateway_url, gw) < 0 || free_and_strdup(&pending->ca_file, ca) < 0)
                return -ENOMEM;
        r = wg_key_generate(&pending->private_key);
        if (r >= 0)
                r = wg_key_public_from_private(&pending->private_key, &pub);
        if (r < 0)
                goto fail;

        HttpClientOptions opts = {
                .connect_timeout_usec = AGENT_REGISTER_CONNECT_TIMEOUT_USEC,
                .idle_timeout_usec = AGENT_REGISTER_RESPONSE_TIMEOUT_USEC,
                .max_connections = 4,
                .max_idle_connections = 1,
                .ca_file = ca,
        };
        a->reg_client = http_client_free(a->reg_client);
        r = http_client_new(a->event, &opts, &a->reg_client);
        if (r < 0)
                goto fail;
        a->pending = TAKE_PTR(pending);
        r = agent_register_request_start(a->reg_client, url, p->key, name, &pub, a->port, on_register_answer, a, &a->reg);
        if (r < 0)
                goto fail;
        a->step = REGISTER_REQUEST;
        log_info("Registering with %s as %s…", gw, name);
        return 0;
fail:
        register_cleanup(a);
        a->done = NULL;
        return r;
}

int agent_unregister(Agent *a) {
        int r;

        if (!a->saved && a->state != AGENT_ERROR)
                return -ENOTCONN;
        if (a->step != REGISTER_IDLE)
                return -EBUSY;
        agent_stop_heartbeats(a);
        a->join_resolve = agent_resolve_free(a->join_resolve);
        proxy_unlisten_mesh(a->proxy);
        r = agent_spoke_clear(a->wg, a->ifname);
        if (r < 0)
                log_warning_errno(r, "Failed to remove the gateway peer and the mesh address from %s, ignoring: %m",
                                  a->ifname);
        r = agent_state_remove(a->state_dir);
        if (r < 0)
                return log_error_errno(r, "Failed to delete %s/" AGENT_STATE_FILE ": %m", a->state_dir);
        if (a->saved)
                log_info("Unregistered: provider %" PRId64 " (%s) forgotten. The gateway's administrator removes it there.",
                         a->saved->provider_id, a->saved->name);
        a->saved = agent_saved_state_free(a->saved);
        a->last_heartbeat_usec = 0;
        a->draining = false;
        proxy_set_draining(a->proxy, false);
        agent_set_state(a, AGENT_UNREGISTERED, NULL);
        agent_notify(a, AGENT_CHANGE_REGISTRATION | AGENT_CHANGE_HEARTBEAT);
        return 0;
}

int agent_set_draining(Agent *a, bool draining) {
        if (!a->saved)
                return -ENOTCONN;
        if (a->draining == draining)
                return 0;
        a->draining = draining;
        proxy_set_draining(a->proxy, draining);
        log_info(draining ? "Draining: no new requests from the gateway; running ones finish." : "Resumed taking requests.");
        if (draining && (a->state == AGENT_ONLINE || a->state == AGENT_CONNECTING))
                agent_set_state(a, AGENT_DRAINING, "Draining: running requests finish, the gateway sends no new ones.");
        else if (!draining && a->state == AGENT_DRAINING)
                agent_set_state(a, AGENT_CONNECTING, "Resuming; waiting for the gateway to acknowledge a heartbeat.");
        agent_heartbeat_kick(a->heartbeat);
        return 0;
}

/* ---- life cycle ---------------------------------------------------------------------- */

/* The state directory is made when the first registration is saved; here it is only
 * looked at, so that a clubd that never registers leaves nothing behind. */
static void state_dir_check(const char *dir) {
        struct stat st;

        if (stat(dir, &st) < 0) {
                if (errno != ENOENT)
                        log_warning_errno(-errno, "Cannot look at the state directory %s: %m", dir);
                return;
        }
        if (!S_ISDIR(st.st_mode))
                log_warning("The state directory %s is not a directory: registering will fail.", dir);
        else if (access(dir, W_OK) < 0)
                log_warning_errno(-errno, "The state directory %s is not writable (%m): registering will fail.", dir);
        else if (st.st_mode & 0077)
                log_warning("The state directory %s can be read by others; it holds this machine's keys. chmod 700 it.", dir);
}

int agent_new(sd_event *event, const ClubdConfig *cfg, Proxy *proxy, const char *state_dir, Agent **ret) {
        _cleanup_(agent_freep) Agent *a = NULL;
        const char *reason = NULL;
        int r;

        assert(event && cfg && proxy && state_dir && ret);
        state_dir_check(state_dir);

        a = new0(Agent, 1);
        if (!a)
                return -ENOMEM;
        *a = (Agent) {
                .event = sd_event_ref(event),
                .proxy = proxy,
                .state = AGENT_UNREGISTERED,
                .port = cfg->mesh_port,
                .state_dir = strdup(state_dir),
                .ifname = strdup(cfg->mesh_interface),
        };
        if (!a->state_dir || !a->ifname)
                return -ENOMEM;
        r = agent_apply_config(a, cfg, NULL);
        if (r < 0)
                return r;

        /* Netlink sockets now, before the sandbox. */
        r = wg_context_new(&a->wg);
        if (r < 0)
                return log_error_errno(r, "Failed to open the netlink sockets for WireGuard: %m");
        HttpClientOptions opts = {
                .connect_timeout_usec = AGENT_HEARTBEAT_TIMEOUT_USEC,
                .idle_timeout_usec = AGENT_HEARTBEAT_TIMEOUT_USEC,
                .max_connections = 4,
                .max_idle_connections = 1,
        };
        r = http_client_new(event, &opts, &a->mesh_client);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(event, &a->in_flight_timer, CLOCK_MONOTONIC, IN_FLIGHT_INTERVAL_USEC, 0,
                                       on_in_flight_timer, a);
        if (r < 0)
                return r;
        proxy_set_refresh_callback(proxy, on_proxy_refreshed, a);
        on_proxy_refreshed(proxy, a);

        r = agent_state_load(state_dir, &a->saved, &reason);
        if (r == -ENOENT)
                log_info("Not registered yet: run clubctl register --key … to join the network.");
        else if (r == -ENOMEM)
                return r;
        else if (r < 0)
                agent_set_statef(a, AGENT_ERROR, "The saved state %s/" AGENT_STATE_FILE " is unusable: %s. " REREGISTER_HINT,
                                 state_dir, reason ?: strerror(-r));
        else {
                if (a->saved->agent_port != a->port)
                        log_warning("[Mesh] Port=%u differs from the registered port %u; the registered one is used "
                                    "until you register again.", a->port, a->saved->agent_port);
                (void) agent_join(a);
        }

        *ret = TAKE_PTR(a);
        return 0;
}

Agent *agent_free(Agent *a) {
        if (!a)
                return NULL;
        if (a->done)
                register_finish(a, -ECANCELED, "cancelled", "clubd is shutting down.");
        register_cleanup(a);
        a->reg_client = http_client_free(a->reg_client);
        if (a->proxy) {
                proxy_set_refresh_callback(a->proxy, NULL, NULL);
                proxy_unlisten_mesh(a->proxy);
        }
        agent_stop_heartbeats(a);
        a->join_resolve = agent_resolve_free(a->join_resolve);
        sd_event_source_disable_unref(a->in_flight_timer);
        http_client_free(a->mesh_client);
        wg_context_free(a->wg);
        agent_saved_state_free(a->saved);
        config_strv_free(a->models);
        config_strv_free(a->capabilities);
        agent_upstreams_free(a->upstreams, a->n_upstreams);
        free(a->reason);
        free(a->state_dir);
        free(a->ifname);
        free(a->cfg_gateway_url);
        free(a->cfg_name);
        free(a->cfg_ca_file);
        sd_event_unref(a->event);
        return mfree(a);
}

void agent_set_change_callback(Agent *a, AgentChangedFn fn, void *userdata) {
        a->changed = fn;
        a->changed_userdata = userdata;
}

int agent_reload(Agent *a, const ClubdConfig *cfg) {
        bool caps_changed = false;
        int r;

        r = agent_apply_config(a, cfg, &caps_changed);
        if (r < 0)
                return r;
        if (!streq(cfg->mesh_interface, a->ifname))
                log_warning("[Mesh] Interface= changed from %s to %s; that takes a restart (systemctl restart clubd).",
                            a->ifname, cfg->mesh_interface);
        if (cfg->mesh_port != a->port) {
                log_warning("[Mesh] Port= changed from %u to %u; it is used from the next registration on.",
                            a->port, cfg->mesh_port);
                a->port = cfg->mesh_port;
        }
        if (caps_changed) {
                agent_notify(a, AGENT_CHANGE_MODELS);
                agent_heartbeat_kick(a->heartbeat);
        }
        /* proxy_reload() replaced the upstreams and started a round of listings; the models
         * and health are taken when it ends (on_proxy_refreshed()). */
        return 0;
}

/* ---- getters --------------------------------------------------------------------------- */

AgentState agent_state(const Agent *a) {
        return a->state;
}

const char *agent_state_reason(const Agent *a) {
        return strempty(a->reason);
}

int64_t agent_provider_id(const Agent *a) {
        return a->saved ? a->saved->provider_id : 0;
}

const char *agent_name(const Agent *a) {
        return a->saved ? a->saved->name : "";
}

const char *agent_gateway_url(const Agent *a) {
        return a->saved ? a->saved->gateway_url : "";
}

const char *agent_mesh_address(const Agent *a) {
        static char buf[INET_ADDRSTRLEN];

        if (!a->saved || !inet_ntop(AF_INET, &a->saved->mesh_address, buf, sizeof buf))
                return "";
        return buf;
}

static char *empty_strv[] = { NULL };

char **agent_models(const Agent *a) {
        return a->models ?: empty_strv;
}

char **agent_capabilities(const Agent *a) {
        return a->capabilities ?: empty_strv;
}

unsigned agent_in_flight(const Agent *a) {
        return proxy_in_flight(a->proxy);
}

uint64_t agent_last_heartbeat_usec(const Agent *a) {
        return a->last_heartbeat_usec;
}

size_t agent_upstreams(const Agent *a, const AgentUpstream **ret) {
        *ret = a->upstreams;
        return a->n_upstreams;
}

int agent_status_line(const Agent *a, char **ret) {
        size_t n_models = 0;
        int r;

        for (char **m = a->models; m && *m; m++)
                n_models++;
        switch (a->state) {
        case AGENT_UNREGISTERED:
                r = asprintf(ret, "Not registered: run clubctl register --key … to join the network.");
                break;
        case AGENT_CONNECTING:
                r = asprintf(ret, "Connecting as %s (%s)…", agent_name(a), agent_mesh_address(a));
                break;
        case AGENT_ONLINE:
                r = asprintf(ret, "Online as %s (%s), %zu model%s, %u in flight.", agent_name(a), agent_mesh_address(a),
                             n_models, n_models == 1 ? "" : "s", proxy_in_flight(a->proxy));
                break;
        case AGENT_DRAINING:
                r = asprintf(ret, "Draining as %s (%s), %u in flight.", agent_name(a), agent_mesh_address(a),
                             proxy_in_flight(a->proxy));
                break;
        case AGENT_OFFLINE:
                r = asprintf(ret, "Offline: %s", agent_state_reason(a));
                break;
        default:
                r = asprintf(ret, "Error: %s", agent_state_reason(a));
                break;
        }
        return r < 0 ? -ENOMEM : 0;
}
