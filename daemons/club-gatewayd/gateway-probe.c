/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "gateway-probe.h"
#include "http-client.h"
#include "log.h"

typedef struct ProbeEntry {
        Prober *prober;
        int64_t id;
        char address[INET_ADDRSTRLEN + 8];      /* "a.b.c.d:port", for the log */
        HttpRequest *req;                       /* the probe in flight, or NULL */
        unsigned status;                        /* of the probe in flight */
        char *reason;                           /* of the last failure, NULL after a success */
        uint64_t last_warning_usec;             /* CLOCK_MONOTONIC */
        bool seen;                              /* still eligible in this round */
} ProbeEntry;

struct Prober {
        sd_event *event;
        Store *store;
        HttpClient *client;
        sd_event_source *timer;
        uint64_t interval_usec;
        uint64_t window_usec;
        ProbeEntry **entries;
        size_t n_entries;
};

static ProbeEntry *entry_free(ProbeEntry *e) {
        if (!e)
                return NULL;
        http_request_free(e->req);
        free(e->reason);
        return mfree(e);
}

Prober *prober_free(Prober *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_entries; i++)
                entry_free(p->entries[i]);
        free(p->entries);
        sd_event_source_disable_unref(p->timer);
        http_client_free(p->client);
        sd_event_unref(p->event);
        return mfree(p);
}

static ProbeEntry *entry_find(Prober *p, int64_t id) {
        for (size_t i = 0; i < p->n_entries; i++)
                if (p->entries[i]->id == id)
                        return p->entries[i];
        return NULL;
}

const char *prober_reason(Prober *p, int64_t provider_id) {
        ProbeEntry *e = entry_find(p, provider_id);

        return e ? e->reason : NULL;
}

static ProbeEntry *entry_add(Prober *p, int64_t id) {
        ProbeEntry **l, *e;

        l = reallocarray(p->entries, p->n_entries + 1, sizeof *l);
        if (!l)
                return NULL;
        p->entries = l;
        e = new0(ProbeEntry, 1);
        if (!e)
                return NULL;
        e->prober = p;
        e->id = id;
        p->entries[p->n_entries++] = e;
        return e;
}

/* Drop the entries of providers no longer probed (gone, disabled, re-registered, silent)
 * that have no probe in flight. */
static void entries_prune(Prober *p) {
        size_t j = 0;

        for (size_t i = 0; i < p->n_entries; i++) {
                ProbeEntry *e = p->entries[i];

                if (!e->seen && !e->req)
                        entry_free(e);
                else
                        p->entries[j++] = e;
        }
        p->n_entries = j;
}

static const char *error_reason(int error) {
        switch (error) {
        case -ECONNREFUSED:
                return "connection refused (nothing listens on the agent port?)";
        case -ETIMEDOUT:
                return "timed out (is the tunnel up?)";
        case -ECONNRESET:
                return "connection reset or response truncated";
        case -EPROTO:
                return "malformed HTTP response";
        default:
                return NULL;
        }
}

static void probe_failed(ProbeEntry *e, const StoreProvider *pr, const char *reason) {
        Prober *p = e->prober;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        bool changed = !e->reason || !streq(e->reason, reason);
        int r;

        if (changed && free_and_strdup(&e->reason, reason) < 0)
                log_oom();
        if (pr->state == STORE_PROVIDER_ACTIVE) {
                r = store_provider_set_state(p->store, e->id, STORE_PROVIDER_UNREACHABLE);
                if (r < 0) {
                        log_warning_errno(r, "Failed to mark provider %s (id %" PRId64 ") unreachable: %m", pr->name, e->id);
                        return;
                }
                log_warning("Provider %s (id %" PRId64 ") is unreachable: GET http://%s/healthz: %s",
                            pr->name, e->id, e->address, reason);
                e->last_warning_usec = now;
        } else if (changed || now - e->last_warning_usec >= PROBE_WARNING_INTERVAL_USEC) {
                log_warning("Provider %s (id %" PRId64 ") is still unreachable: GET http://%s/healthz: %s",
                            pr->name, e->id, e->address, reason);
                e->last_warning_usec = now;
        } else
                log_debug("Provider %s (id %" PRId64 ") is still unreachable: %s", pr->name, e->id, reason);
}

static void probe_succeeded(ProbeEntry *e, const StoreProvider *pr) {
        int r;

        e->reason = mfree(e->reason);
        if (pr->state != STORE_PROVIDER_UNREACHABLE)
                return;
        r = store_provider_set_state(e->prober->store, e->id, STORE_PROVIDER_ACTIVE);
        if (r < 0) {
                log_warning_errno(r, "Failed to mark provider %s (id %" PRId64 ") reachable: %m", pr->name, e->id);
                return;
        }
        log_info("Provider %s (id %" PRId64 ") is reachable again: GET http://%s/healthz answered 200.",
                 pr->name, e->id, e->address);
}

static int on_probe_response(HttpRequest *req, unsigned status, void *userdata) {
        ProbeEntry *e = userdata;

        e->status = status;
        return 0;
}

static ssize_t on_probe_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        return (ssize_t) len;   /* the body does not matter */
}

static void on_probe_done(HttpRequest *req, int error, void *userdata) {
        ProbeEntry *e = userdata;
        StoreProvider pr = {};
        char buf[64];
        const char *reason = NULL;
        int r;

        e->req = http_request_free(e->req);
        if (error < 0) {
                reason = error_reason(error);
                if (!reason) {
                        snprintf(buf, sizeof buf, "%s", strerror(-error));
                        reason = buf;
                }
        } else if (e->status != 200) {
                snprintf(buf, sizeof buf, "HTTP status %u", e->status);
                reason = buf;
        }

        /* Read the provider again: it may have been deleted, disabled or re-registered
         * while the probe ran; only ACTIVE ⇄ UNREACHABLE is the probe's to change. */
        r = store_provider_get(e->prober->store, e->id, &pr);
        if (r < 0) {
                if (r != -ENOENT)
                        log_warning_errno(r, "Failed to read provider %" PRId64 " after its probe: %m", e->id);
                return;
        }
        if (pr.state == STORE_PROVIDER_ACTIVE || pr.state == STORE_PROVIDER_UNREACHABLE) {
                if (reason)
                        probe_failed(e, &pr, reason);
                else
                        probe_succeeded(e, &pr);
        }
        store_provider_deinit(&pr);
}

static int probe_start(ProbeEntry *e, const StoreProvider *pr) {
        static const HttpRequestCallbacks cb = {
                .on_response = on_probe_response,
                .on_data = on_probe_data,
                .on_done = on_probe_done,
        };
        _cleanup_(http_request_freep) HttpRequest *req = NULL;
        char a[INET_ADDRSTRLEN], url[128];
        int r;

        if (!inet_ntop(AF_INET, &pr->mesh_address, a, sizeof a))
                return -errno;
        snprintf(e->address, sizeof e->address, "%s:%u", a, (unsigned) pr->agent_port);
        snprintf(url, sizeof url, "http://%s/healthz", e->address);
        r = http_request_new(e->prober->client, "GET", url, &req);
        if (r < 0)
                return r;
        http_request_set_timeouts(req, PROBE_TIMEOUT_USEC, PROBE_TIMEOUT_USEC);
        http_request_set_response_timeout(req, PROBE_TIMEOUT_USEC);
        e->status = 0;
        r = http_request_start(req, &cb, e);
        if (r < 0)
                return r;
        e->req = TAKE_PTR(req);
        log_debug("Probing provider %s (id %" PRId64 "): GET %s", pr->name, e->id, url);
        return 0;
}

static void probe_round(Prober *p) {
        StoreProvider *l = NULL;
        size_t n = 0;
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        r = store_provider_list(p->store, NULL, &l, &n);
        if (r < 0) {
                log_warning_errno(r, "Failed to list the providers to probe: %m");
                return;
        }
        for (size_t i = 0; i < p->n_entries; i++)
                p->entries[i]->seen = false;
        for (size_t i = 0; i < n; i++) {
                const StoreProvider *pr = &l[i];
                ProbeEntry *e;

                if (pr->state != STORE_PROVIDER_ACTIVE && pr->state != STORE_PROVIDER_UNREACHABLE)
                        continue;
                if (pr->last_heartbeat_usec == 0 || pr->last_heartbeat_usec + p->window_usec < now)
                        continue;
                e = entry_find(p, pr->id) ?: entry_add(p, pr->id);
                if (!e) {
                        log_oom();
                        break;
                }
                e->seen = true;
                if (e->req)
                        continue;       /* one probe per provider in flight */
                r = probe_start(e, pr);
                if (r < 0)
                        log_warning_errno(r, "Failed to start the probe of provider %s (id %" PRId64 "): %m",
                                          pr->name, pr->id);
        }
        store_providers_free(l, n);
        entries_prune(p);
}

static int on_probe_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Prober *p = userdata;

        probe_round(p);
        (void) sd_event_source_set_time_relative(s, p->interval_usec);
        return 0;
}

int prober_new(sd_event *event, Store *store, uint64_t interval_usec, uint64_t window_usec, Prober **ret) {
        _cleanup_(prober_freep) Prober *p = NULL;
        HttpClientOptions opts = {
                .connect_timeout_usec = PROBE_TIMEOUT_USEC,
                .idle_timeout_usec = PROBE_TIMEOUT_USEC,
                .max_idle_connections = 64,
        };
        int r;

        assert(event && store && ret);
        p = new0(Prober, 1);
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        p->store = store;
        p->interval_usec = interval_usec ?: PROBE_INTERVAL_USEC_DEFAULT;
        p->window_usec = window_usec ?: STORE_ONLINE_WINDOW_USEC_DEFAULT;
        r = http_client_new(event, &opts, &p->client);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(event, &p->timer, CLOCK_MONOTONIC, p->interval_usec, 0, on_probe_timer, p);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(p->timer, SD_EVENT_ON);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}
