/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "agent-spoke.h"

int agent_spoke_converge(WgContext *wg, const char *ifname, const AgentSavedState *s, const WgEndpoint *endpoint) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        WgPeer *peer;
        WgIPPrefix gw = { .family = AF_INET, .addr.in = s->gateway_mesh_address, .cidr = 32 };
        WgIPPrefix mesh = { .family = AF_INET, .addr.in = s->mesh_address, .cidr = 32 };
        int r;

        r = wg_device_new(ifname, &d);
        if (r < 0)
                return r;
        r = wg_device_set_private_key(d, &s->private_key);
        if (r < 0)
                return r;
        r = wg_device_add_peer(d, &s->gateway_public_key, &peer);
        if (r < 0)
                return r;
        r = wg_peer_add_allowed_ip(peer, &gw);
        if (r < 0)
                return r;
        r = wg_peer_set_endpoint(peer, &endpoint->sa, (socklen_t) wg_endpoint_len(endpoint));
        if (r < 0)
                return r;
        peer->persistent_keepalive = AGENT_SPOKE_KEEPALIVE_SEC;
        peer->flags |= WG_PEER_HAS_KEEPALIVE;
        r = wg_device_add_address(d, &mesh);
        if (r < 0)
                return r;
        r = wg_device_add_route(d, &(WgRoute) { .dst = gw });
        if (r < 0)
                return r;
        d->up = true;
        d->flags |= WG_DEVICE_HAS_UP;
        return wg_device_converge(wg, d, NULL);
}

int agent_spoke_clear(WgContext *wg, const char *ifname) {
        _cleanup_(wg_device_freep) WgDevice *cur = NULL, *d = NULL;
        int r;

        r = wg_device_get(wg, ifname, &cur);
        if (r == -ENODEV)
                return 0;
        if (r < 0)
                return r;
        r = wg_device_new(ifname, &d);
        if (r < 0)
                return r;
        /* No peers, no addresses, none of our routes; the key and the link stay. */
        d->flags |= WG_DEVICE_HAS_ADDRESSES | WG_DEVICE_HAS_ROUTES;
        return wg_device_converge(wg, d, NULL);
}

/* ---- the resolver -------------------------------------------------------------------------- */

/* Shared by the loop and the helper thread; whoever drops the last reference frees it. */
typedef struct ResolveJob {
        atomic_int n_ref;
        int efd;
        char *host;
        char port[8];
        int error;
        WgEndpoint endpoint;
} ResolveJob;

struct AgentResolve {
        ResolveJob *job;
        sd_event_source *source;
        AgentResolveDone done;
        void *userdata;
};

static void job_unref(ResolveJob *j) {
        if (!j || atomic_fetch_sub(&j->n_ref, 1) != 1)
                return;
        safe_close(j->efd);
        free(j->host);
        free(j);
}

static int resolve_host(const char *host, const char *port, WgEndpoint *ret) {
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_DGRAM,
                .ai_protocol = IPPROTO_UDP,
                .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV,
        }, *res = NULL;
        int r;

        r = getaddrinfo(host, port, &hints, &res);
        if (r == EAI_AGAIN)
                return -EAGAIN;
        if (r == EAI_MEMORY)
                return -ENOMEM;
        if (r != 0)
                return -ENOENT;
        r = -ENOENT;
        for (struct addrinfo *a = res; a; a = a->ai_next)
                if ((a->ai_family == AF_INET && a->ai_addrlen == sizeof(struct sockaddr_in)) ||
                    (a->ai_family == AF_INET6 && a->ai_addrlen == sizeof(struct sockaddr_in6))) {
                        *ret = (WgEndpoint) {};
                        memcpy(ret, a->ai_addr, a->ai_addrlen);
                        r = 0;
                        break;
                }
        freeaddrinfo(res);
        return r;
}

static void *resolve_thread(void *userdata) {
        ResolveJob *j = userdata;
        uint64_t one = 1;

        j->error = resolve_host(j->host, j->port, &j->endpoint);
        (void) write(j->efd, &one, sizeof one);
        job_unref(j);
        return NULL;
}

static int on_resolved(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentResolve *r = userdata;
        uint64_t v;

        (void) read(fd, &v, sizeof v);
        r->source = sd_event_source_disable_unref(r->source);
        r->done(r, r->job->error, r->job->error < 0 ? NULL : &r->job->endpoint, r->userdata);
        return 0;
}

int agent_resolve_start(sd_event *event, const char *endpoint, AgentResolveDone done, void *userdata,
                        AgentResolve **ret) {
        _cleanup_(agent_resolve_freep) AgentResolve *r = NULL;
        _cleanup_free_ char *host = NULL;
        ResolveJob *j;
        uint16_t port;
        int k;

        assert(event && endpoint && done && ret);
        k = agent_endpoint_split(endpoint, &host, &port);
        if (k < 0)
                return k;
        r = new0(AgentResolve, 1);
        j = new0(ResolveJob, 1);
        if (!r || !j) {
                free(j);
                return -ENOMEM;
        }
        r->job = j;
        r->done = done;
        r->userdata = userdata;
        atomic_init(&j->n_ref, 1);
        j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (j->efd < 0)
                return -errno;
        snprintf(j->port, sizeof j->port, "%u", port);
        j->host = TAKE_PTR(host);

        k = sd_event_add_io(event, &r->source, j->efd, EPOLLIN, on_resolved, r);
        if (k < 0)
                return k;

        /* An IP literal is answered on the next loop iteration, without a thread. */
        if (strspn(j->host, "0123456789.") == strlen(j->host) || strchr(j->host, ':')) {
                uint64_t one = 1;

                j->error = resolve_host(j->host, j->port, &j->endpoint);
                if (write(j->efd, &one, sizeof one) < 0)
                        return -errno;
        } else {
                pthread_attr_t attr;
                pthread_t t;

                if (pthread_attr_init(&attr) != 0)
                        return -ENOMEM;
                (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                atomic_fetch_add(&j->n_ref, 1);
                k = pthread_create(&t, &attr, resolve_thread, j);
                pthread_attr_destroy(&attr);
                if (k != 0) {
                        atomic_fetch_sub(&j->n_ref, 1);
                        return -k;
                }
        }
        *ret = TAKE_PTR(r);
        return 0;
}

AgentResolve *agent_resolve_free(AgentResolve *r) {
        if (!r)
                return NULL;
        r->source = sd_event_source_disable_unref(r->source);
        job_unref(r->job);
        return mfree(r);
}
