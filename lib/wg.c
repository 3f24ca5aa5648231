/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "rtnl-link.h"
#include "wg-netlink.h"
#include "wg-uapi.h"
#include "wg.h"

#define WG_MTU_MIN 68U
#define WG_MTU_MAX 65535U
#define IPV6_ROUTE_METRIC_DEFAULT 1024U  /* what the kernel records for an IPv6 route given metric 0 */

CLUB_DEFINE_CLEANUP_VOID(DIR *, closedir, closedirp);

struct WgContext {
        struct nl_sock *rtnl;
        struct nl_sock *genl;
        int genl_family;                /* 0 until resolved */
        char *uapi_dir;
};

/* ---- names, prefixes, endpoints ----------------------------------------------------- */

int wg_ifname_valid(const char *ifname) {
        size_t l;

        if (isempty(ifname))
                return -EINVAL;
        l = strnlen(ifname, IFNAMSIZ);
        if (l >= IFNAMSIZ)
                return -ENAMETOOLONG;
        if (streq(ifname, ".") || streq(ifname, ".."))
                return -EINVAL;
        for (const char *p = ifname; *p; p++)
                if (*p == '/' || *p == ':' || isspace((unsigned char) *p) || !isprint((unsigned char) *p))
                        return -EINVAL;
        return 0;
}

static size_t family_len(int family) {
        return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
}

void wg_ip_prefix_mask(WgIPPrefix *p) {
        size_t len = family_len(p->family);

        for (size_t i = 0; i < len; i++) {
                unsigned keep = p->cidr >= (i + 1) * 8 ? 8 : p->cidr > i * 8 ? p->cidr - i * 8 : 0;

                p->addr.bytes[i] &= (uint8_t) (0xff00u >> keep);
        }
        for (size_t i = len; i < sizeof p->addr.bytes; i++)
                p->addr.bytes[i] = 0;
}

static bool prefix_valid(const WgIPPrefix *p) {
        size_t len = family_len(p->family);

        return len > 0 && p->cidr <= len * 8;
}

int wg_ip_prefix_from_string(const char *s, WgIPPrefix *ret) {
        char buf[INET6_ADDRSTRLEN + 1];
        const char *slash;
        WgIPPrefix p = {};
        size_t l;

        assert(ret);
        if (isempty(s))
                return -EINVAL;
        slash = strchr(s, '/');
        l = slash ? (size_t) (slash - s) : strlen(s);
        if (l == 0 || l >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, l);
        buf[l] = 0;
        if (inet_pton(AF_INET, buf, &p.addr.in) == 1)
                p.family = AF_INET;
        else if (inet_pton(AF_INET6, buf, &p.addr.in6) == 1)
                p.family = AF_INET6;
        else
                return -EINVAL;
        p.cidr = (uint8_t) (family_len(p.family) * 8);
        if (slash) {
                unsigned u;

                if (parse_uint(slash + 1, &u) < 0 || u > family_len(p.family) * 8)
                        return -EINVAL;
                p.cidr = (uint8_t) u;
        }
        *ret = p;
        return 0;
}

char *wg_ip_prefix_to_string(const WgIPPrefix *p, char ret[static WG_IP_PREFIX_STRLEN]) {
        char a[INET6_ADDRSTRLEN] = "?";

        assert(p);
        (void) inet_ntop(p->family, p->addr.bytes, a, sizeof a);
        snprintf(ret, WG_IP_PREFIX_STRLEN, "%s/%u", a, p->cidr);
        return ret;
}

size_t wg_endpoint_len(const WgEndpoint *e) {
        assert(e);
        return e->sa.sa_family == AF_INET ? sizeof(struct sockaddr_in)
             : e->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : 0;
}

int wg_endpoint_from_string(const char *s, WgEndpoint *ret) {
        char host[INET6_ADDRSTRLEN + IFNAMSIZ + 2];
        const char *port_s, *pct;
        WgEndpoint e = {};
        uint16_t port;
        size_t l;

        assert(ret);
        if (isempty(s))
                return -EINVAL;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');

                if (!end || end[1] != ':')
                        return -EINVAL;
                l = (size_t) (end - s - 1);
                port_s = end + 2;
                if (l == 0 || l >= sizeof host)
                        return -EINVAL;
                memcpy(host, s + 1, l);
                host[l] = 0;
                pct = strchr(host, '%');
                if (pct) {
                        const char *zone = pct + 1;
                        unsigned u;

                        host[pct - host] = 0;
                        if (isempty(zone))
                                return -EINVAL;
                        if (parse_uint(zone, &u) >= 0)
                                e.in6.sin6_scope_id = u;
                        else if (wg_ifname_valid(zone) >= 0 && (u = if_nametoindex(zone)) > 0)
                                e.in6.sin6_scope_id = u;
                        else
                                return -EINVAL;
                }
                if (inet_pton(AF_INET6, host, &e.in6.sin6_addr) != 1)
                        return -EINVAL;
                e.in6.sin6_family = AF_INET6;
        } else {
                const char *colon = strchr(s, ':');

                if (!colon || strchr(colon + 1, ':'))
                        return -EINVAL;
                l = (size_t) (colon - s);
                if (l == 0 || l >= sizeof host)
                        return -EINVAL;
                memcpy(host, s, l);
                host[l] = 0;
                port_s = colon + 1;
                if (inet_pton(AF_INET, host, &e.in.sin_addr) != 1)
                        return -EINVAL;
                e.in.sin_family = AF_INET;
        }
        if (parse_port(port_s, &port) < 0)
                return -EINVAL;
        if (e.sa.sa_family == AF_INET)
                e.in.sin_port = htons(port);
        else
                e.in6.sin6_port = htons(port);
        *ret = e;
        return 0;
}

char *wg_endpoint_to_string(const WgEndpoint *e, char ret[static WG_ENDPOINT_STRLEN]) {
        char a[INET6_ADDRSTRLEN] = "?";

        assert(e);
        if (e->sa.sa_family == AF_INET) {
                (void) inet_ntop(AF_INET, &e->in.sin_addr, a, sizeof a);
                snprintf(ret, WG_ENDPOINT_STRLEN, "%s:%u", a, ntohs(e->in.sin_port));
        } else if (e->sa.sa_family == AF_INET6) {
                (void) inet_ntop(AF_INET6, &e->in6.sin6_addr, a, sizeof a);
                if (e->in6.sin6_scope_id != 0)
                        snprintf(ret, WG_ENDPOINT_STRLEN, "[%s%%%u]:%u", a, e->in6.sin6_scope_id, ntohs(e->in6.sin6_port));
                else
                        snprintf(ret, WG_ENDPOINT_STRLEN, "[%s]:%u", a, ntohs(e->in6.sin6_port));
        } else
                snprintf(ret, WG_ENDPOINT_STRLEN, "(none)");
        return ret;
}

bool wg_endpoint_equal(const WgEndpoint *a, const WgEndpoint *b) {
        assert(a && b);
        if (a->sa.sa_family != b->sa.sa_family)
                return false;
        if (a->sa.sa_family == AF_INET)
                return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
        if (a->sa.sa_family == AF_INET6)
                return a->in6.sin6_port == b->in6.sin6_port &&
                       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof a->in6.sin6_addr) == 0 &&
                       a->in6.sin6_scope_id == b->in6.sin6_scope_id;
        return true;
}

/* ---- the model ------------------------------------------------------------------------ */

static WgPeer *wg_peer_free(WgPeer *p) {
        if (!p)
                return NULL;
        free(p->allowed_ips);
        wg_key_wipe(&p->preshared_key);
        explicit_bzero(p, sizeof *p);
        return mfree(p);
}
CLUB_DEFINE_CLEANUP(WgPeer *, wg_peer_free);

int wg_device_new(const char *ifname, WgDevice **ret) {
        WgDevice *d;
        int r;

        assert(ret);
        r = wg_ifname_valid(ifname);
        if (r < 0)
                return r;
        d = new0(WgDevice, 1);
        if (!d)
                return -ENOMEM;
        strcpy(d->ifname, ifname);
        *ret = d;
        return 0;
}

WgDevice *wg_device_free(WgDevice *d) {
        if (!d)
                return NULL;
        for (size_t i = 0; i < d->n_peers; i++)
                wg_peer_free(d->peers[i]);
        free(d->peers);
        free(d->addresses);
        free(d->routes);
        wg_key_wipe(&d->private_key);
        explicit_bzero(d, sizeof *d);
        return mfree(d);
}

int wg_device_set_private_key(WgDevice *d, const WgKey *key) {
        WgKey pub;
        int r;

        assert(d && key);
        r = wg_key_public_from_private(key, &pub);
        if (r < 0)
                return r;
        d->private_key = *key;
        d->public_key = pub;
        d->flags |= WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_PUBLIC_KEY;
        return 0;
}

static int grow(void **p, size_t *allocated, size_t need, size_t size) {
        size_t na;
        void *t;

        if (need <= *allocated)
                return 0;
        na = MAX(need, MAX(*allocated * 2, (size_t) 4));
        t = reallocarray(*p, na, size);
        if (!t)
                return -ENOMEM;
        *p = t;
        *allocated = na;
        return 0;
}

int wg_device_add_peer(WgDevice *d, const WgKey *public_key, WgPeer **ret) {
        _cleanup_(wg_peer_freep) WgPeer *p = NULL;
        int r;

        assert(d && public_key);
        if (d->n_peers >= WG_PEERS_MAX)
                return -E2BIG;
        r = grow((void **) &d->peers, &d->n_peers_allocated, d->n_peers + 1, sizeof *d->peers);
        if (r < 0)
                return r;
        p = new0(WgPeer, 1);
        if (!p)
                return -ENOMEM;
        p->public_key = *public_key;
        d->peers[d->n_peers++] = p;
        if (ret)
                *ret = p;
        TAKE_PTR(p);
        return 0;
}

WgPeer *wg_device_find_peer(const WgDevice *d, const WgKey *public_key) {
        assert(d && public_key);
        for (size_t i = 0; i < d->n_peers; i++)
                if (memcmp(d->peers[i]->public_key.data, public_key->data, WG_KEY_LEN) == 0)
                        return d->peers[i];
        return NULL;
}

int wg_peer_add_allowed_ip(WgPeer *p, const WgAllowedIP *ip) {
        WgAllowedIP x;
        int r;

        assert(p && ip);
        if (!prefix_valid(ip))
                return -EINVAL;
        if (p->n_allowed_ips >= WG_ALLOWED_IPS_MAX)
                return -E2BIG;
        r = grow((void **) &p->allowed_ips, &p->n_allowed_ips_allocated, p->n_allowed_ips + 1, sizeof *p->allowed_ips);
        if (r < 0)
                return r;
        x = *ip;
        wg_ip_prefix_mask(&x);
        p->allowed_ips[p->n_allowed_ips++] = x;
        return 0;
}

int wg_peer_set_endpoint(WgPeer *p, const struct sockaddr *sa, socklen_t salen) {
        WgEndpoint e = {};

        assert(p && sa);
        if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in))
                memcpy(&e.in, sa, sizeof e.in);
        else if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6))
                memcpy(&e.in6, sa, sizeof e.in6);
        else
                return -EINVAL;
        p->endpoint = e;
        p->flags |= WG_PEER_HAS_ENDPOINT;
        return 0;
}

int wg_device_add_address(WgDevice *d, const WgIPPrefix *a) {
        size_t allocated = d->n_addresses;
        WgIPPrefix x;
        int r;

        assert(d && a);
        if (!prefix_valid(a))
                return -EINVAL;
        if (d->n_addresses >= WG_ADDRESSES_MAX)
                return -E2BIG;
        r = grow((void **) &d->addresses, &allocated, d->n_addresses + 1, sizeof *d->addresses);
        if (r < 0)
                return r;
        x = *a;
        memset(x.addr.bytes + family_len(x.family), 0, sizeof x.addr.bytes - family_len(x.family));
        d->addresses[d->n_addresses++] = x;
        d->flags |= WG_DEVICE_HAS_ADDRESSES;
        return 0;
}

int wg_device_add_route(WgDevice *d, const WgRoute *rt) {
        size_t allocated = d->n_routes;
        WgRoute x;
        int r;

        assert(d && rt);
        if (!prefix_valid(&rt->dst))
                return -EINVAL;
        if (d->n_routes >= WG_ROUTES_MAX)
                return -E2BIG;
        r = grow((void **) &d->routes, &allocated, d->n_routes + 1, sizeof *d->routes);
        if (r < 0)
                return r;
        x = *rt;
        wg_ip_prefix_mask(&x.dst);
        d->routes[d->n_routes++] = x;
        d->flags |= WG_DEVICE_HAS_ROUTES;
        return 0;
}

/* ---- comparing ------------------------------------------------------------------------- */

static int prefix_compare(const WgIPPrefix *a, const WgIPPrefix *b) {
        int r;

        if (a->family != b->family)
                return a->family < b->family ? -1 : 1;
        r = memcmp(a->addr.bytes, b->addr.bytes, family_len(a->family));
        if (r != 0)
                return r;
        return a->cidr < b->cidr ? -1 : a->cidr > b->cidr ? 1 : 0;
}

static int prefix_compare_qsort(const void *a, const void *b) {
        return prefix_compare(a, b);
}

static int peer_ptr_compare(const void *a, const void *b) {
        const WgPeer *const *x = a, *const *y = b;

        return memcmp((*x)->public_key.data, (*y)->public_key.data, WG_KEY_LEN);
}

/* Sorted, de-duplicated copy of a peer's allowed IPs. */
static int allowed_ips_canonical(const WgPeer *p, WgAllowedIP **ret, size_t *ret_n) {
        WgAllowedIP *a;
        size_t n = 0;

        if (p->n_allowed_ips == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        a = new(WgAllowedIP, p->n_allowed_ips);
        if (!a)
                return -ENOMEM;
        memcpy(a, p->allowed_ips, p->n_allowed_ips * sizeof *a);
        for (size_t i = 0; i < p->n_allowed_ips; i++)
                wg_ip_prefix_mask(&a[i]);
        qsort(a, p->n_allowed_ips, sizeof *a, prefix_compare_qsort);
        for (size_t i = 0; i < p->n_allowed_ips; i++)
                if (n == 0 || prefix_compare(&a[n - 1], &a[i]) != 0)
                        a[n++] = a[i];
        *ret = a;
        *ret_n = n;
        return 0;
}

/* ---- validation ------------------------------------------------------------------------ */

typedef struct OwnedPrefix {
        WgAllowedIP ip;
        size_t peer;
} OwnedPrefix;

static int owned_prefix_compare(const void *a, const void *b) {
        return prefix_compare(&((const OwnedPrefix *) a)->ip, &((const OwnedPrefix *) b)->ip);
}

int wg_device_validate(const WgDevice *d) {
        _cleanup_(freep) WgPeer **sorted = NULL;
        _cleanup_(freep) OwnedPrefix *owned = NULL;
        size_t n_owned = 0, total = 0;
        char buf[WG_IP_PREFIX_STRLEN];
        int r;

        assert(d);
        r = wg_ifname_valid(d->ifname);
        if (r < 0)
                return log_debug_errno(r, "Invalid interface name.");
        if (d->n_peers > WG_PEERS_MAX)
                return log_debug_errno(-E2BIG, "%s: %zu peers, at most %u allowed.", d->ifname, d->n_peers, WG_PEERS_MAX);
        if (d->n_addresses > WG_ADDRESSES_MAX || d->n_routes > WG_ROUTES_MAX)
                return log_debug_errno(-E2BIG, "%s: too many addresses or routes.", d->ifname);
        if (FLAGS_SET(d->flags, WG_DEVICE_HAS_MTU) && (d->mtu < WG_MTU_MIN || d->mtu > WG_MTU_MAX))
                return log_debug_errno(-EINVAL, "%s: MTU %u is out of range %u…%u.", d->ifname, d->mtu, WG_MTU_MIN, WG_MTU_MAX);

        for (size_t i = 0; i < d->n_peers; i++) {
                const WgPeer *p = d->peers[i];

                if (wg_key_is_zero(&p->public_key))
                        return log_debug_errno(-EKEYREJECTED, "%s: a peer has the all-zero public key.", d->ifname);
                if (FLAGS_SET(d->flags, WG_DEVICE_HAS_PUBLIC_KEY) && wg_key_equal(&p->public_key, &d->public_key))
                        return log_debug_errno(-EKEYREJECTED, "%s: a peer has the interface's own public key.", d->ifname);
                if (p->n_allowed_ips > WG_ALLOWED_IPS_MAX)
                        return log_debug_errno(-E2BIG, "%s: a peer has %zu allowed IPs, at most %u allowed.",
                                               d->ifname, p->n_allowed_ips, WG_ALLOWED_IPS_MAX);
                if (FLAGS_SET(p->flags, WG_PEER_HAS_ENDPOINT) && wg_endpoint_len(&p->endpoint) == 0)
                        return log_debug_errno(-EINVAL, "%s: a peer has an endpoint of unknown family.", d->ifname);
                if (FLAGS_SET(p->flags, WG_PEER_HAS_ENDPOINT) &&
                    (p->endpoint.sa.sa_family == AF_INET ? p->endpoint.in.sin_port : p->endpoint.in6.sin6_port) == 0)
                        return log_debug_errno(-EINVAL, "%s: a peer's endpoint has port 0.", d->ifname);
                for (size_t j = 0; j < p->n_allowed_ips; j++)
                        if (!prefix_valid(&p->allowed_ips[j]))
                                return log_debug_errno(-EINVAL, "%s: invalid allowed IP.", d->ifname);
                if (!FLAGS_SET(p->flags, WG_PEER_REMOVE))
                        total += p->n_allowed_ips;
        }

        /* Duplicate peers. */
        if (d->n_peers > 1) {
                sorted = new(WgPeer *, d->n_peers);
                if (!sorted)
                        return -ENOMEM;
                memcpy(sorted, d->peers, d->n_peers * sizeof *sorted);
                qsort(sorted, d->n_peers, sizeof *sorted, peer_ptr_compare);
                for (size_t i = 1; i < d->n_peers; i++)
                        if (peer_ptr_compare(&sorted[i - 1], &sorted[i]) == 0)
                                return log_debug_errno(-ENOTUNIQ, "%s: a peer appears twice.", d->ifname);
        }

        /* An allowed IP claimed by two peers. */
        if (total > 1) {
                owned = new(OwnedPrefix, total);
                if (!owned)
                        return -ENOMEM;
                for (size_t i = 0; i < d->n_peers; i++) {
                        if (FLAGS_SET(d->peers[i]->flags, WG_PEER_REMOVE))
                                continue;
                        for (size_t j = 0; j < d->peers[i]->n_allowed_ips; j++) {
                                owned[n_owned] = (OwnedPrefix) { .ip = d->peers[i]->allowed_ips[j], .peer = i };
                                wg_ip_prefix_mask(&owned[n_owned].ip);
                                n_owned++;
                        }
                }
                qsort(owned, n_owned, sizeof *owned, owned_prefix_compare);
                for (size_t i = 1; i < n_owned; i++)
                        if (prefix_compare(&owned[i - 1].ip, &owned[i].ip) == 0 && owned[i - 1].peer != owned[i].peer)
                                return log_debug_errno(-ENOTUNIQ, "%s: allowed IP %s is given to two peers.",
                                                       d->ifname, wg_ip_prefix_to_string(&owned[i].ip, buf));
        }

        for (size_t i = 0; i < d->n_addresses; i++) {
                if (!prefix_valid(&d->addresses[i]))
                        return log_debug_errno(-EINVAL, "%s: invalid address.", d->ifname);
                for (size_t j = 0; j < i; j++)
                        if (d->addresses[i].family == d->addresses[j].family &&
                            memcmp(d->addresses[i].addr.bytes, d->addresses[j].addr.bytes, family_len(d->addresses[i].family)) == 0)
                                return log_debug_errno(-ENOTUNIQ, "%s: address %s is listed twice.",
                                                       d->ifname, wg_ip_prefix_to_string(&d->addresses[i], buf));
        }
        for (size_t i = 0; i < d->n_routes; i++)
                if (!prefix_valid(&d->routes[i].dst))
                        return log_debug_errno(-EINVAL, "%s: invalid route.", d->ifname);
        return 0;
}

/* ---- diff ---------------------------------------------------------------------------- */

bool wg_device_change_is_empty(const WgDevice *change) {
        assert(change);
        return (change->flags & (WG_DEVICE_REPLACE_PEERS | WG_DEVICE_HAS_PRIVATE_KEY |
                                 WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK)) == 0 &&
               change->n_peers == 0;
}

static int change_add_peer(WgDevice *change, const WgPeer *src, unsigned flags, WgPeer **ret) {
        WgPeer *p;
        int r;

        r = wg_device_add_peer(change, &src->public_key, &p);
        if (r < 0)
                return r;
        p->flags = flags;
        if (FLAGS_SET(flags, WG_PEER_HAS_PRESHARED_KEY))
                p->preshared_key = src->preshared_key;
        if (FLAGS_SET(flags, WG_PEER_HAS_ENDPOINT))
                p->endpoint = src->endpoint;
        if (FLAGS_SET(flags, WG_PEER_HAS_KEEPALIVE))
                p->persistent_keepalive = src->persistent_keepalive;
        if (ret)
                *ret = p;
        return 0;
}

static int peer_diff(WgDevice *change, const WgPeer *cur, const WgPeer *want, bool *ret_changed) {
        _cleanup_(freep) WgAllowedIP *c = NULL, *w = NULL;
        size_t nc, nw, i = 0, j = 0;
        static const WgKey zero = {};
        const WgKey *want_psk = FLAGS_SET(want->flags, WG_PEER_HAS_PRESHARED_KEY) ? &want->preshared_key : &zero;
        uint16_t want_keepalive = FLAGS_SET(want->flags, WG_PEER_HAS_KEEPALIVE) ? want->persistent_keepalive : 0;
        unsigned flags = 0;
        bool subset = true, equal;
        WgPeer *p;
        int r;

        if (!wg_key_equal(&cur->preshared_key, want_psk))
                flags |= WG_PEER_HAS_PRESHARED_KEY;
        if (cur->persistent_keepalive != want_keepalive)
                flags |= WG_PEER_HAS_KEEPALIVE;
        if (FLAGS_SET(want->flags, WG_PEER_HAS_ENDPOINT) &&
            (!FLAGS_SET(cur->flags, WG_PEER_HAS_ENDPOINT) || !wg_endpoint_equal(&cur->endpoint, &want->endpoint)))
                flags |= WG_PEER_HAS_ENDPOINT;

        r = allowed_ips_canonical(cur, &c, &nc);
        if (r < 0)
                return r;
        r = allowed_ips_canonical(want, &w, &nw);
        if (r < 0)
                return r;
        /* Is every current allowed IP still wanted? */
        while (i < nc) {
                int k = j < nw ? prefix_compare(&c[i], &w[j]) : -1;

                if (k == 0) {
                        i++;
                        j++;
                } else if (k > 0)
                        j++;
                else {
                        subset = false;
                        break;
                }
        }
        equal = subset && nc == nw;
        if (!subset)
                flags |= WG_PEER_REPLACE_ALLOWED_IPS;

        *ret_changed = flags != 0 || !equal;
        if (!*ret_changed)
                return 0;

        r = change_add_peer(change, want, flags | WG_PEER_UPDATE_ONLY, &p);
        if (r < 0)
                return r;
        if (FLAGS_SET(flags, WG_PEER_HAS_PRESHARED_KEY))
                p->preshared_key = *want_psk;
        if (FLAGS_SET(flags, WG_PEER_HAS_KEEPALIVE))
                p->persistent_keepalive = want_keepalive;
        /* Replace: send the whole wanted list. Superset: only what is new. */
        for (size_t a = 0, b = 0; a < nw; a++) {
                if (!subset) {
                        r = wg_peer_add_allowed_ip(p, &w[a]);
                        if (r < 0)
                                return r;
                        continue;
                }
                while (b < nc && prefix_compare(&c[b], &w[a]) < 0)
                        b++;
                if (b < nc && prefix_compare(&c[b], &w[a]) == 0)
                        continue;
                r = wg_peer_add_allowed_ip(p, &w[a]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sorted_peers(const WgDevice *d, WgPeer ***ret) {
        WgPeer **s;

        s = new(WgPeer *, d->n_peers);
        if (!s)
                return -ENOMEM;
        if (d->n_peers > 0)
                memcpy(s, d->peers, d->n_peers * sizeof *s);
        qsort(s, d->n_peers, sizeof *s, peer_ptr_compare);
        *ret = s;
        return 0;
}

int wg_device_diff(const WgDevice *current, const WgDevice *desired, WgDevice **ret, WgConvergeStats *ret_stats) {
        _cleanup_(wg_device_freep) WgDevice *change = NULL;
        _cleanup_(freep) WgPeer **c = NULL, **w = NULL;
        WgConvergeStats stats = {};
        size_t i = 0, j = 0;
        int r;

        assert(current && desired && ret);
        r = wg_device_new(desired->ifname, &change);
        if (r < 0)
                return r;

        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_PRIVATE_KEY) &&
            !wg_key_equal(&desired->private_key, &current->private_key)) {
                change->private_key = desired->private_key;
                change->flags |= WG_DEVICE_HAS_PRIVATE_KEY;
        }
        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_LISTEN_PORT) && desired->listen_port != 0 &&
            desired->listen_port != current->listen_port) {
                change->listen_port = desired->listen_port;
                change->flags |= WG_DEVICE_HAS_LISTEN_PORT;
        }
        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_FWMARK) && desired->fwmark != current->fwmark) {
                change->fwmark = desired->fwmark;
                change->flags |= WG_DEVICE_HAS_FWMARK;
        }
        stats.device_changed = change->flags != 0;

        r = sorted_peers(current, &c);
        if (r < 0)
                return r;
        r = sorted_peers(desired, &w);
        if (r < 0)
                return r;

        /* Removals first, then changes, then additions: the interface never holds
         * more peers than the larger of the two states. */
        for (int pass = 0; pass < 3; pass++) {
                i = j = 0;
                while (i < current->n_peers || j < desired->n_peers) {
                        int k = i >= current->n_peers ? 1 : j >= desired->n_peers ? -1 : peer_ptr_compare(&c[i], &w[j]);

                        if (k < 0) {
                                if (pass == 0) {
                                        r = change_add_peer(change, c[i], WG_PEER_REMOVE, NULL);
                                        if (r < 0)
                                                return r;
                                        stats.peers_removed++;
                                }
                                i++;
                        } else if (k > 0) {
                                if (pass == 2) {
                                        const WgPeer *src = w[j];
                                        unsigned flags = src->flags & WG_PEER_HAS_ENDPOINT;
                                        WgPeer *p;

                                        if (FLAGS_SET(src->flags, WG_PEER_HAS_PRESHARED_KEY) && !wg_key_is_zero(&src->preshared_key))
                                                flags |= WG_PEER_HAS_PRESHARED_KEY;
                                        if (FLAGS_SET(src->flags, WG_PEER_HAS_KEEPALIVE) && src->persistent_keepalive != 0)
                                                flags |= WG_PEER_HAS_KEEPALIVE;
                                        r = change_add_peer(change, src, flags, &p);
                                        if (r < 0)
                                                return r;
                                        for (size_t a = 0; a < src->n_allowed_ips; a++) {
                                                r = wg_peer_add_allowed_ip(p, &src->allowed_ips[a]);
                                                if (r < 0)
                                                        return r;
                                        }
                                        stats.peers_added++;
                                }
                                j++;
                        } else {
                                if (pass == 1) {
                                        bool changed;

                                        r = peer_diff(change, c[i], w[j], &changed);
                                        if (r < 0)
                                                return r;
                                        stats.peers_changed += changed;
                                }
                                i++;
                                j++;
                        }
                }
        }

        if (ret_stats) {
                ret_stats->device_changed = stats.device_changed;
                ret_stats->peers_added = stats.peers_added;
                ret_stats->peers_changed = stats.peers_changed;
                ret_stats->peers_removed = stats.peers_removed;
        }
        *ret = TAKE_PTR(change);
        return 0;
}

/* ---- the context --------------------------------------------------------------------- */

int wg_context_new(WgContext **ret) {
        _cleanup_(wg_context_freep) WgContext *c = NULL;
        int r;

        assert(ret);
        c = new0(WgContext, 1);
        if (!c)
                return -ENOMEM;
        c->uapi_dir = strdup(WG_UAPI_DIR_DEFAULT);
        if (!c->uapi_dir)
                return -ENOMEM;
        r = netlink_open(NETLINK_ROUTE, &c->rtnl);
        if (r < 0)
                return r;
        r = netlink_open(NETLINK_GENERIC, &c->genl);
        if (r < 0)
                return r;
        r = nl_socket_set_msg_buf_size(c->genl, WG_NETLINK_RECV_BUF_SIZE);
        if (r < 0)
                return nle_to_errno(r);
        *ret = TAKE_PTR(c);
        return 0;
}

WgContext *wg_context_free(WgContext *c) {
        if (!c)
                return NULL;
        if (c->rtnl)
                nl_socket_free(c->rtnl);
        if (c->genl)
                nl_socket_free(c->genl);
        free(c->uapi_dir);
        return mfree(c);
}

int wg_context_set_uapi_dir(WgContext *c, const char *dir) {
        assert(c);
        if (isempty(dir) || dir[0] != '/' || strlen(dir) + 1 + IFNAMSIZ + 5 > sizeof(((struct sockaddr_un *) 0)->sun_path))
                return -EINVAL;
        return free_and_strdup(&c->uapi_dir, dir);
}

static int context_genl(WgContext *c) {
        int r;

        if (c->genl_family > 0)
                return 0;
        /* Not cached when it fails: the module may be loaded later. */
        r = wg_netlink_resolve(c->genl, &c->genl_family);
        if (r < 0)
                c->genl_family = 0;
        return r;
}

static int backend_netlink_get(WgContext *c, const char *ifname, WgDevice **ret) {
        int r;

        r = context_genl(c);
        if (r < 0)
                return r;
        return wg_netlink_get_device(c->genl, c->genl_family, ifname, ret);
}

static int backend_netlink_set(WgContext *c, const WgDevice *change) {
        int r;

        r = context_genl(c);
        if (r < 0)
                return r;
        return wg_netlink_set_device(c->genl, c->genl_family, change);
}

static int backend_uapi_get(WgContext *c, const char *ifname, WgDevice **ret) {
        return wg_uapi_get_device(c->uapi_dir, ifname, ret);
}

static int backend_uapi_set(WgContext *c, const WgDevice *change) {
        return wg_uapi_set_device(c->uapi_dir, change);
}

const WgBackend wg_backend_netlink = {
        .name = "kernel",
        .get_device = backend_netlink_get,
        .set_device = backend_netlink_set,
};

const WgBackend wg_backend_uapi = {
        .name = "userspace",
        .get_device = backend_uapi_get,
        .set_device = backend_uapi_set,
};

static bool uapi_socket_exists(WgContext *c, const char *ifname) {
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        struct stat st;

        if (wg_uapi_socket_path(c->uapi_dir, ifname, path) < 0)
                return false;
        return stat(path, &st) >= 0 && S_ISSOCK(st.st_mode);
}

const WgBackend *wg_backend_for(WgContext *c, const char *ifname) {
        assert(c && ifname);
        return uapi_socket_exists(c, ifname) ? &wg_backend_uapi : &wg_backend_netlink;
}

/* The link kind each backend's interface has. */
static const char *backend_link_kind(const WgBackend *b) {
        return b == &wg_backend_uapi ? "tun" : "wireguard";
}

static bool ipv6_link_local(int family, const uint8_t *a) {
        return family == AF_INET6 && a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/* Fill in the link part of d from the kernel. */
static int read_link(WgContext *c, const LinkInfo *info, WgDevice *d) {
        _cleanup_(freep) LinkAddress *addrs = NULL;
        _cleanup_(freep) LinkRoute *routes = NULL;
        size_t n_addrs = 0, n_routes = 0;
        int r;

        d->ifindex = info->ifindex;
        d->mtu = info->mtu;
        d->up = FLAGS_SET(info->flags, IFF_UP);
        d->flags |= WG_DEVICE_HAS_MTU | WG_DEVICE_HAS_UP | WG_DEVICE_HAS_ADDRESSES | WG_DEVICE_HAS_ROUTES;

        r = link_get_addresses(c->rtnl, info->ifindex, AF_UNSPEC, &addrs, &n_addrs);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_addrs; i++) {
                WgIPPrefix p = { .family = addrs[i].family, .cidr = addrs[i].prefixlen };

                if (ipv6_link_local(addrs[i].family, addrs[i].addr))
                        continue;       /* the kernel's own; never managed */
                memcpy(p.addr.bytes, addrs[i].addr, family_len(p.family));
                r = wg_device_add_address(d, &p);
                if (r < 0)
                        return r;
        }
        r = link_get_routes(c->rtnl, info->ifindex, WG_ROUTE_PROTOCOL, &routes, &n_routes);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_routes; i++) {
                WgRoute rt = {
                        .dst = { .family = routes[i].family, .cidr = routes[i].dst_len },
                        .table = routes[i].table,
                        .metric = routes[i].metric,
                };

                memcpy(rt.dst.addr.bytes, routes[i].dst, family_len(rt.dst.family));
                r = wg_device_add_route(d, &rt);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Look the link up and check it is what the backend needs. */
static int check_link(WgContext *c, const WgBackend *b, const char *ifname, LinkInfo *ret) {
        LinkInfo info;
        int r;

        r = link_get(c->rtnl, ifname, &info);
        if (r < 0)
                return r;
        if (!streq(info.kind, backend_link_kind(b)))
                return log_debug_errno(-EMEDIUMTYPE, "%s is a link of kind \"%s\", not \"%s\".",
                                       ifname, isempty(info.kind) ? "(none)" : info.kind, backend_link_kind(b));
        *ret = info;
        return 0;
}

int wg_device_get(WgContext *c, const char *ifname, WgDevice **ret) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        const WgBackend *b;
        LinkInfo info;
        int r;

        assert(c && ret);
        r = wg_ifname_valid(ifname);
        if (r < 0)
                return r;
        b = wg_backend_for(c, ifname);
        r = check_link(c, b, ifname, &info);
        if (r == -ENODEV && b == &wg_backend_uapi)
                info.ifindex = 0;       /* wireguard-go in another network namespace: no link here */
        else if (r < 0)
                return r;
        r = b->get_device(c, ifname, &d);
        if (r < 0)
                return r;
        if (!streq(d->ifname, ifname))
                return -EBADMSG;
        if (info.ifindex > 0) {
                r = read_link(c, &info, d);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

int wg_device_set(WgContext *c, const WgDevice *change) {
        int r;

        assert(c && change);
        r = wg_device_validate(change);
        if (r < 0)
                return r;
        return wg_backend_for(c, change->ifname)->set_device(c, change);
}

char **wg_strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **p = l; *p; p++)
                free(*p);
        return mfree(l);
}
CLUB_DEFINE_CLEANUP(char **, wg_strv_free);

static int strv_compare(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int wg_device_list(WgContext *c, char ***ret) {
        _cleanup_(wg_strv_freep) char **l = NULL;
        _cleanup_(closedirp) DIR *dir = NULL;
        size_t n, allocated;
        int r;

        assert(c && ret);
        r = link_list_kind(c->rtnl, "wireguard", &l);
        if (r < 0)
                return r;
        n = allocated = (size_t) r;

        dir = opendir(c->uapi_dir);
        if (!dir && errno != ENOENT)
                return -errno;
        for (struct dirent *de; dir && (de = readdir(dir)); ) {
                char name[IFNAMSIZ];
                size_t l2 = strlen(de->d_name);
                bool dup = false;

                if (l2 <= 5 || !endswith(de->d_name, ".sock") || l2 - 5 >= IFNAMSIZ)
                        continue;
                memcpy(name, de->d_name, l2 - 5);
                name[l2 - 5] = 0;
                if (wg_ifname_valid(name) < 0 || !uapi_socket_exists(c, name))
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (streq(l[i], name))
                                dup = true;
                if (dup)
                        continue;
                r = grow((void **) &l, &allocated, n + 2, sizeof *l);
                if (r < 0)
                        return r;
                l[n] = strdup(name);
                if (!l[n])
                        return -ENOMEM;
                l[++n] = NULL;
        }
        qsort(l, n, sizeof *l, strv_compare);
        *ret = TAKE_PTR(l);
        return (int) n;
}

/* ---- convergence ------------------------------------------------------------------------ */

static bool address_equal(const WgIPPrefix *a, const WgIPPrefix *b) {
        return a->family == b->family && a->cidr == b->cidr &&
               memcmp(a->addr.bytes, b->addr.bytes, family_len(a->family)) == 0;
}

static uint32_t route_table(const WgRoute *r) {
        return r->table != 0 ? r->table : WG_ROUTE_TABLE_MAIN;
}

static uint32_t route_metric(const WgRoute *r) {
        return r->dst.family == AF_INET6 && r->metric == 0 ? IPV6_ROUTE_METRIC_DEFAULT : r->metric;
}

static bool route_equal(const WgRoute *a, const WgRoute *b) {
        return prefix_compare(&a->dst, &b->dst) == 0 && route_table(a) == route_table(b) &&
               route_metric(a) == route_metric(b);
}

static LinkRoute link_route(const WgRoute *r) {
        LinkRoute lr = {
                .family = r->dst.family,
                .dst_len = r->dst.cidr,
                .table = route_table(r),
                .metric = route_metric(r),
                .protocol = WG_ROUTE_PROTOCOL,
        };

        memcpy(lr.dst, r->dst.addr.bytes, family_len(r->dst.family));
        return lr;
}

/* What has been done so far, to undo it if a later step fails. */
typedef enum UndoType {
        UNDO_ADDRESS_ADDED,
        UNDO_ADDRESS_REMOVED,
        UNDO_ROUTE_ADDED,
        UNDO_ROUTE_REMOVED,
        UNDO_MTU,
        UNDO_UP,
} UndoType;

typedef struct Undo {
        UndoType type;
        WgIPPrefix address;
        WgRoute route;
        uint32_t mtu;
        bool up;
} Undo;

typedef struct UndoLog {
        Undo *items;
        size_t n, allocated;
} UndoLog;

static int undo_push(UndoLog *u, Undo x) {
        int r;

        r = grow((void **) &u->items, &u->allocated, u->n + 1, sizeof *u->items);
        if (r < 0)
                return r;
        u->items[u->n++] = x;
        return 0;
}

static void undo_run(WgContext *c, int ifindex, UndoLog *u) {
        for (size_t i = u->n; i > 0; i--) {
                const Undo *x = &u->items[i - 1];
                LinkRoute lr;
                int r = 0;

                switch (x->type) {
                case UNDO_ADDRESS_ADDED:
                        r = link_remove_address(c->rtnl, ifindex, x->address.family, x->address.addr.bytes, x->address.cidr);
                        break;
                case UNDO_ADDRESS_REMOVED:
                        r = link_add_address(c->rtnl, ifindex, x->address.family, x->address.addr.bytes, x->address.cidr);
                        break;
                case UNDO_ROUTE_ADDED:
                        lr = link_route(&x->route);
                        r = link_remove_route(c->rtnl, ifindex, &lr);
                        break;
                case UNDO_ROUTE_REMOVED:
                        lr = link_route(&x->route);
                        r = link_add_route(c->rtnl, ifindex, &lr);
                        break;
                case UNDO_MTU:
                        r = link_set_mtu(c->rtnl, ifindex, x->mtu);
                        break;
                case UNDO_UP:
                        r = link_set_up(c->rtnl, ifindex, x->up);
                        break;
                }
                if (r < 0)
                        log_debug_errno(r, "Failed to undo step %zu on ifindex %d, ignoring: %m", i, ifindex);
        }
        u->n = 0;
}

/* Restore the WireGuard part to what was read before we started. */
static void restore_wireguard(WgContext *c, const WgBackend *b, const WgDevice *orig) {
        _cleanup_(wg_device_freep) WgDevice *now = NULL, *target = NULL, *change = NULL;
        int r;

        r = b->get_device(c, orig->ifname, &now);
        if (r < 0)
                goto fail;
        r = wg_device_new(orig->ifname, &target);
        if (r < 0)
                goto fail;
        /* Make the original state explicit, including "no private key" and "no mark". */
        target->flags = WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_FWMARK |
                        (orig->flags & WG_DEVICE_HAS_LISTEN_PORT);
        target->private_key = orig->private_key;
        target->fwmark = orig->fwmark;
        target->listen_port = orig->listen_port;
        /* Borrow the peers: target is freed without them below. */
        target->peers = orig->peers;
        target->n_peers = orig->n_peers;
        r = wg_device_diff(now, target, &change, NULL);
        target->peers = NULL;
        target->n_peers = 0;
        if (r < 0)
                goto fail;
        if (!wg_device_change_is_empty(change)) {
                r = b->set_device(c, change);
                if (r < 0)
                        goto fail;
        }
        return;
fail:
        log_debug_errno(r, "Failed to restore the WireGuard configuration of %s, ignoring: %m", orig->ifname);
}

/* Refuse addresses that another link already has. */
static int check_address_conflicts(WgContext *c, const WgDevice *desired, int ifindex) {
        _cleanup_(freep) LinkAddress *all = NULL;
        size_t n = 0;
        char buf[WG_IP_PREFIX_STRLEN];
        int r;

        if (!FLAGS_SET(desired->flags, WG_DEVICE_HAS_ADDRESSES) || desired->n_addresses == 0)
                return 0;
        r = link_get_addresses(c->rtnl, 0, AF_UNSPEC, &all, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < desired->n_addresses; i++)
                for (size_t j = 0; j < n; j++)
                        if (all[j].ifindex != ifindex && all[j].family == desired->addresses[i].family &&
                            memcmp(all[j].addr, desired->addresses[i].addr.bytes, family_len(all[j].family)) == 0)
                                return log_debug_errno(-EADDRINUSE, "%s: address %s is already on interface %d.",
                                                       desired->ifname,
                                                       wg_ip_prefix_to_string(&desired->addresses[i], buf), all[j].ifindex);
        return 0;
}

static bool address_in(const WgIPPrefix *a, const WgIPPrefix *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (address_equal(a, &list[i]))
                        return true;
        return false;
}

static bool route_in(const WgRoute *r, const WgRoute *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (route_equal(r, &list[i]))
                        return true;
        return false;
}

static int converge_link(WgContext *c, const WgDevice *desired, const WgDevice *cur, const LinkInfo *info,
                         UndoLog *undo, WgConvergeStats *stats) {
        bool want_up = FLAGS_SET(desired->flags, WG_DEVICE_HAS_UP) ? desired->up : cur->up;
        _cleanup_(wg_device_freep) WgDevice *now = NULL;
        const WgDevice *rcur = cur;     /* the link's routes as they are now */
        int ifindex = info->ifindex, r;

        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_MTU) && desired->mtu != cur->mtu) {
                r = link_set_mtu(c->rtnl, ifindex, desired->mtu);
                if (r < 0)
                        return log_debug_errno(r, "%s: failed to set MTU %u: %m", desired->ifname, desired->mtu);
                r = undo_push(undo, (Undo) { .type = UNDO_MTU, .mtu = cur->mtu });
                if (r < 0)
                        return r;
                stats->mtu_changed = true;
        }

        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_ADDRESSES)) {
                for (size_t i = 0; i < cur->n_addresses; i++) {
                        if (address_in(&cur->addresses[i], desired->addresses, desired->n_addresses))
                                continue;
                        r = link_remove_address(c->rtnl, ifindex, cur->addresses[i].family,
                                                cur->addresses[i].addr.bytes, cur->addresses[i].cidr);
                        if (r < 0 && r != -EADDRNOTAVAIL)
                                return log_debug_errno(r, "%s: failed to remove an address: %m", desired->ifname);
                        r = undo_push(undo, (Undo) { .type = UNDO_ADDRESS_REMOVED, .address = cur->addresses[i] });
                        if (r < 0)
                                return r;
                        stats->addresses_removed++;
                }
                /* Read again: removing a primary IPv4 address may take secondaries with it, and
                 * removing the link's last IPv4 address makes the kernel flush its IPv4 routes. */
                r = wg_device_new(desired->ifname, &now);
                if (r < 0)
                        return r;
                r = read_link(c, info, now);
                if (r < 0)
                        return r;
                rcur = now;
                /* Routes the kernel flushed with the address: removed all the same (counted if
                 * unwanted, put back below if wanted, restored by a rollback either way). */
                for (size_t i = 0; i < cur->n_routes; i++) {
                        if (route_in(&cur->routes[i], now->routes, now->n_routes))
                                continue;
                        r = undo_push(undo, (Undo) { .type = UNDO_ROUTE_REMOVED, .route = cur->routes[i] });
                        if (r < 0)
                                return r;
                        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_ROUTES) &&
                            !(want_up && route_in(&cur->routes[i], desired->routes, desired->n_routes)))
                                stats->routes_removed++;
                }
                for (size_t i = 0; i < desired->n_addresses; i++) {
                        if (address_in(&desired->addresses[i], now->addresses, now->n_addresses))
                                continue;
                        r = link_add_address(c->rtnl, ifindex, desired->addresses[i].family,
                                             desired->addresses[i].addr.bytes, desired->addresses[i].cidr);
                        if (r == -EACCES && desired->addresses[i].family == AF_INET6)
                                r = -EAFNOSUPPORT;      /* the kernel's way of saying IPv6 is disabled here */
                        if (r < 0)
                                return log_debug_errno(r, "%s: failed to add an address: %m", desired->ifname);
                        r = undo_push(undo, (Undo) { .type = UNDO_ADDRESS_ADDED, .address = desired->addresses[i] });
                        if (r < 0)
                                return r;
                        stats->addresses_added++;
                }
        }

        /* Routes through a link that is down cannot exist: bring it up first. */
        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_UP) && desired->up && !cur->up) {
                r = link_set_up(c->rtnl, ifindex, true);
                if (r < 0)
                        return log_debug_errno(r, "%s: failed to bring the link up: %m", desired->ifname);
                r = undo_push(undo, (Undo) { .type = UNDO_UP, .up = false });
                if (r < 0)
                        return r;
                stats->up_changed = true;
        }

        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_ROUTES)) {
                for (size_t i = 0; i < rcur->n_routes; i++) {
                        LinkRoute lr;

                        if (want_up && route_in(&rcur->routes[i], desired->routes, desired->n_routes))
                                continue;
                        lr = link_route(&rcur->routes[i]);
                        r = link_remove_route(c->rtnl, ifindex, &lr);
                        if (r < 0 && r != -ESRCH)
                                return log_debug_errno(r, "%s: failed to remove a route: %m", desired->ifname);
                        r = undo_push(undo, (Undo) { .type = UNDO_ROUTE_REMOVED, .route = rcur->routes[i] });
                        if (r < 0)
                                return r;
                        stats->routes_removed++;
                }
                for (size_t i = 0; want_up && i < desired->n_routes; i++) {
                        LinkRoute lr;

                        if (route_in(&desired->routes[i], rcur->routes, rcur->n_routes))
                                continue;
                        lr = link_route(&desired->routes[i]);
                        r = link_add_route(c->rtnl, ifindex, &lr);
                        if (r < 0)
                                return log_debug_errno(r, "%s: failed to add a route: %m", desired->ifname);
                        r = undo_push(undo, (Undo) { .type = UNDO_ROUTE_ADDED, .route = desired->routes[i] });
                        if (r < 0)
                                return r;
                        stats->routes_added++;
                }
        }

        if (FLAGS_SET(desired->flags, WG_DEVICE_HAS_UP) && !desired->up && cur->up) {
                r = link_set_up(c->rtnl, ifindex, false);
                if (r < 0)
                        return log_debug_errno(r, "%s: failed to bring the link down: %m", desired->ifname);
                r = undo_push(undo, (Undo) { .type = UNDO_UP, .up = true });
                if (r < 0)
                        return r;
                stats->up_changed = true;
        }
        return 0;
}

static bool needs_link(const WgDevice *d) {
        return (d->flags & (WG_DEVICE_HAS_MTU | WG_DEVICE_HAS_UP | WG_DEVICE_HAS_ADDRESSES | WG_DEVICE_HAS_ROUTES)) != 0;
}

int wg_device_converge(WgContext *c, const WgDevice *desired, WgConvergeStats *ret_stats) {
        _cleanup_(wg_device_freep) WgDevice *cur = NULL, *change = NULL;
        _cleanup_(freep) Undo *undo_items = NULL;
        UndoLog undo = {};
        WgConvergeStats stats = {};
        const WgBackend *b;
        LinkInfo info = {};
        bool created = false, wg_applied = false, link_changed;
        int r, k;

        assert(c && desired);
        r = wg_device_validate(desired);
        if (r < 0)
                return r;

        b = wg_backend_for(c, desired->ifname);
        r = check_link(c, b, desired->ifname, &info);
        if (r < 0 && r != -ENODEV)
                return r;
        /* Before anything is created or changed. */
        k = check_address_conflicts(c, desired, r >= 0 ? info.ifindex : 0);
        if (k < 0)
                return k;
        if (r == -ENODEV && b == &wg_backend_netlink) {
                r = link_create(c->rtnl, desired->ifname, "wireguard", &info);
                if (r == -EOPNOTSUPP)
                        return log_debug_errno(-EPROTONOSUPPORT, "%s: the kernel does not know links of kind wireguard.",
                                               desired->ifname);
                if (r == -EEXIST)       /* created by someone else meanwhile: check it again */
                        r = check_link(c, b, desired->ifname, &info);
                else if (r >= 0)
                        created = stats.link_created = true;
        } else if (r == -ENODEV && b == &wg_backend_uapi && !needs_link(desired))
                r = 0;                  /* wireguard-go in another namespace; only its UAPI is needed */
        if (r < 0)
                return r;

        r = wg_device_get(c, desired->ifname, &cur);
        if (r < 0)
                goto fail;

        r = wg_device_diff(cur, desired, &change, &stats);
        if (r < 0)
                goto fail;
        if (!wg_device_change_is_empty(change)) {
                wg_applied = true;
                r = b->set_device(c, change);
                if (r < 0) {
                        log_debug_errno(r, "%s: failed to apply the WireGuard configuration: %m", desired->ifname);
                        goto fail;
                }
        }

        if (info.ifindex > 0) {
                r = converge_link(c, desired, cur, &info, &undo, &stats);
                undo_items = undo.items;
                if (r < 0)
                        goto fail;
        }

        if (ret_stats)
                *ret_stats = stats;
        return 0;

fail:
        if (created) {
                /* Deleting the link undoes everything we did to it. */
                (void) link_delete(c->rtnl, info.ifindex);
                stats = (WgConvergeStats) { .rolled_back = true };
        } else {
                link_changed = undo.n > 0;
                if (info.ifindex > 0)
                        undo_run(c, info.ifindex, &undo);
                if (wg_applied && cur)
                        restore_wireguard(c, b, cur);
                stats.rolled_back = wg_applied || link_changed;
        }
        if (ret_stats)
                *ret_stats = stats;
        return r;
}

int wg_link_delete(WgContext *c, const char *ifname) {
        const WgBackend *b;
        LinkInfo info;
        int r;

        assert(c);
        r = wg_ifname_valid(ifname);
        if (r < 0)
                return r;
        b = wg_backend_for(c, ifname);
        if (b == &wg_backend_uapi) {
                char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];

                r = wg_uapi_socket_path(c->uapi_dir, ifname, path);
                if (r < 0)
                        return r;
                if (unlink(path) < 0)
                        return errno == ENOENT ? -ENODEV : -errno;
                return 0;
        }
        r = check_link(c, b, ifname, &info);
        if (r < 0)
                return r;
        return link_delete(c->rtnl, info.ifindex);
}

const char *wg_strerror_hint(int error) {
        switch (abs(error)) {
        case EKEYREJECTED:
                return "This is not a valid WireGuard key: a key is 44 characters of base64 ending in '=', "
                       "as printed by `wg genkey` or `wg pubkey`, and a peer may not use the interface's own key.";
        case ENAMETOOLONG:
                return "Interface names are at most 15 characters long.";
        case EMEDIUMTYPE:
                return "A network interface with this name exists but is not a WireGuard interface: "
                       "choose another name or delete that interface.";
        case EADDRINUSE:
                return "The address is already assigned to another interface, or the listen port is used by another "
                       "socket: choose a free address or port.";
        case EPROTONOSUPPORT:
                return "This kernel has no WireGuard and no userspace WireGuard is running for this interface: "
                       "install wireguard-go or load the wireguard module (modprobe wireguard).";
        case EPERM:
                return "Configuring network interfaces needs the CAP_NET_ADMIN capability: run as root or grant it "
                       "(AmbientCapabilities=CAP_NET_ADMIN).";
        case EAFNOSUPPORT:
                return "IPv6 is disabled on this interface or system (sysctl net.ipv6.conf.*.disable_ipv6): "
                       "enable it or configure IPv4 addresses only.";
        case ENOTUNIQ:
                return "The same peer public key, allowed IP or address appears more than once in the configuration.";
        case E2BIG:
                return "Too many peers, allowed IPs, addresses or routes for one interface.";
        case ECONNREFUSED:
                return "The userspace WireGuard socket exists but nothing answers on it: wireguard-go has exited; "
                       "restart it or remove the stale socket.";
        case ETIMEDOUT:
                return "The userspace WireGuard implementation did not answer in time.";
        case EBADMSG:
                return "WireGuard sent a reply this program does not understand: the kernel module or wireguard-go "
                       "may be too new or broken.";
        case ENODEV:
                return "No network interface with this name exists in this network namespace.";
        default:
                return NULL;
        }
}
