/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway-forwarded.h"
#include "log.h"
#include "macro.h"

/* An address or network, IPv4-mapped IPv6 turned into IPv4. */
typedef struct Address {
        int family;
        union {
                struct in_addr in;
                struct in6_addr in6;
                uint8_t bytes[16];
        } a;
} Address;

static size_t family_len(int family) {
        return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
}

static void address_unmap(Address *a) {
        if (a->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->a.in6)) {
                struct in_addr v4;

                memcpy(&v4, a->a.in6.s6_addr + 12, 4);
                *a = (Address) { .family = AF_INET, .a.in = v4 };
        }
}

static int address_from_sockaddr(const struct sockaddr *sa, Address *ret) {
        if (!sa)
                return -EAFNOSUPPORT;
        if (sa->sa_family == AF_INET)
                *ret = (Address) { .family = AF_INET, .a.in = ((const struct sockaddr_in *) sa)->sin_addr };
        else if (sa->sa_family == AF_INET6)
                *ret = (Address) { .family = AF_INET6, .a.in6 = ((const struct sockaddr_in6 *) sa)->sin6_addr };
        else
                return -EAFNOSUPPORT;
        address_unmap(ret);
        return 0;
}

static void address_to_sockaddr(const Address *a, struct sockaddr_storage *ret) {
        *ret = (struct sockaddr_storage) {};
        if (a->family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) ret;

                in->sin_family = AF_INET;
                in->sin_addr = a->a.in;
        } else {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ret;

                in6->sin6_family = AF_INET6;
                in6->sin6_addr = a->a.in6;
        }
}

/* ---- the trusted proxies ---------------------------------------------------------------- */

void trusted_proxies_done(TrustedProxies *t) {
        if (!t)
                return;
        t->prefixes = mfree(t->prefixes);
        t->n = 0;
}

static bool prefix_contains(const WgIPPrefix *p, const Address *a) {
        unsigned full = p->cidr / 8, rest = p->cidr % 8;

        if (p->family != a->family)
                return false;
        if (memcmp(p->addr.bytes, a->a.bytes, full) != 0)
                return false;
        return rest == 0 || ((p->addr.bytes[full] ^ a->a.bytes[full]) & (uint8_t) (0xff00u >> rest)) == 0;
}

int trusted_proxies_add(TrustedProxies *t, const char *word) {
        WgIPPrefix p, masked;
        WgIPPrefix *l;
        int r;

        assert(t && word);
        r = wg_ip_prefix_from_string(word, &p);
        if (r < 0)
                return -EINVAL;
        /* ::ffff:a.b.c.d/N (N ≥ 96) is a.b.c.d/(N - 96): peers are compared as IPv4. */
        if (p.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&p.addr.in6) && p.cidr >= 96) {
                struct in_addr v4;

                memcpy(&v4, p.addr.in6.s6_addr + 12, 4);
                p = (WgIPPrefix) { .family = AF_INET, .addr.in = v4, .cidr = (uint8_t) (p.cidr - 96) };
        }
        masked = p;
        wg_ip_prefix_mask(&masked);
        if (memcmp(masked.addr.bytes, p.addr.bytes, family_len(p.family)) != 0)
                return -EADDRNOTAVAIL;
        for (size_t i = 0; i < t->n; i++)
                if (t->prefixes[i].family == p.family && t->prefixes[i].cidr == p.cidr &&
                    memcmp(t->prefixes[i].addr.bytes, p.addr.bytes, family_len(p.family)) == 0)
                        return 0;
        if (t->n >= FORWARDED_PROXIES_MAX)
                return -E2BIG;
        l = reallocarray(t->prefixes, t->n + 1, sizeof *l);
        if (!l)
                return -ENOMEM;
        t->prefixes = l;
        t->prefixes[t->n++] = masked;
        return 0;
}

int trusted_proxies_copy(TrustedProxies *dst, const TrustedProxies *src) {
        WgIPPrefix *l = NULL;

        assert(dst && src);
        if (src->n > 0) {
                l = reallocarray(NULL, src->n, sizeof *l);
                if (!l)
                        return -ENOMEM;
                memcpy(l, src->prefixes, src->n * sizeof *l);
        }
        free(dst->prefixes);
        *dst = (TrustedProxies) { .prefixes = l, .n = src->n };
        return 0;
}

static bool trusted_contain_address(const TrustedProxies *t, const Address *a) {
        for (size_t i = 0; i < t->n; i++)
                if (prefix_contains(&t->prefixes[i], a))
                        return true;
        return false;
}

bool trusted_proxies_contain(const TrustedProxies *t, const struct sockaddr *sa) {
        Address a;

        assert(t);
        return address_from_sockaddr(sa, &a) >= 0 && trusted_contain_address(t, &a);
}

/* ---- X-Forwarded-For ------------------------------------------------------------------- */

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

static bool is_port(const char *s, size_t n) {
        if (n == 0 || n > 5)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

/* One entry, @n bytes at @s, with blanks around it. */
static int entry_parse(const char *s, size_t n, Address *ret) {
        char buf[INET6_ADDRSTRLEN];
        Address a = {};

        while (n > 0 && is_blank(s[0])) {
                s++;
                n--;
        }
        while (n > 0 && is_blank(s[n - 1]))
                n--;
        if (n == 0)
                return -EBADMSG;
        if (s[0] == '[') {
                /* [IPv6] or [IPv6]:PORT */
                const char *close = memchr(s, ']', n);
                size_t after;

                if (!close)
                        return -EBADMSG;
                after = n - (size_t) (close + 1 - s);
                if (after > 0 && (close[1] != ':' || !is_port(close + 2, after - 1)))
                        return -EBADMSG;
                s++;
                n = (size_t) (close - s);
                if (n == 0 || n >= sizeof buf)
                        return -EBADMSG;
                memcpy(buf, s, n);
                buf[n] = 0;
                if (inet_pton(AF_INET6, buf, &a.a.in6) != 1)
                        return -EBADMSG;
                a.family = AF_INET6;
        } else {
                /* A single colon is IPv4:PORT; more make a bare IPv6 address. */
                const char *colon = memchr(s, ':', n);
                bool with_port = colon && !memchr(colon + 1, ':', n - (size_t) (colon + 1 - s));

                if (with_port) {
                        if (!is_port(colon + 1, n - (size_t) (colon + 1 - s)))
                                return -EBADMSG;
                        n = (size_t) (colon - s);
                }
                if (n == 0 || n >= sizeof buf)
                        return -EBADMSG;
                memcpy(buf, s, n);
                buf[n] = 0;
                if (inet_pton(AF_INET, buf, &a.a.in) == 1)
                        a.family = AF_INET;
                else if (!with_port && inet_pton(AF_INET6, buf, &a.a.in6) == 1)
                        a.family = AF_INET6;
                else
                        return -EBADMSG;
        }
        address_unmap(&a);
        *ret = a;
        return 0;
}

static bool value_is_blank(const char *v) {
        for (; *v; v++)
                if (!is_blank(*v))
                        return false;
        return true;
}

int forwarded_client(const TrustedProxies *t, const struct sockaddr *peer, const char *const *values, size_t n_values,
                     struct sockaddr_storage *ret) {
        Address a, leftmost = {};
        unsigned hops = 0;
        bool any = false;
        int r;

        assert(t && (values || n_values == 0) && ret);
        r = address_from_sockaddr(peer, &a);
        if (r < 0)
                return r;
        if (!trusted_contain_address(t, &a)) {
                address_to_sockaddr(&a, ret);
                return 0;
        }
        if (n_values > FORWARDED_HEADERS_MAX)
                return -E2BIG;
        for (size_t i = 0; i < n_values; i++)
                if (strnlen(values[i], FORWARDED_HEADER_MAX + 1) > FORWARDED_HEADER_MAX)
                        return -E2BIG;

        /* From the last header's last entry leftwards, past every trusted hop. */
        for (size_t i = n_values; i > 0; i--) {
                const char *v = values[i - 1], *end;

                if (value_is_blank(v))
                        continue;       /* an empty header adds no entry */
                end = v + strlen(v);
                for (;;) {
                        const char *start = end;
                        Address e;

                        while (start > v && start[-1] != ',')
                                start--;
                        if (++hops > FORWARDED_HOPS_MAX)
                                return -E2BIG;
                        r = entry_parse(start, (size_t) (end - start), &e);
                        if (r < 0)
                                return r;
                        if (!trusted_contain_address(t, &e)) {
                                address_to_sockaddr(&e, ret);
                                return 1;
                        }
                        leftmost = e;
                        any = true;
                        if (start == v)
                                break;
                        end = start - 1;        /* before the comma */
                }
        }
        if (!any) {
                address_to_sockaddr(&a, ret);   /* no header: the trusted peer is the client */
                return 0;
        }
        /* Every hop is trusted: the farthest one is where the request came from. */
        address_to_sockaddr(&leftmost, ret);
        return 1;
}

typedef struct HeaderScan {
        const char *values[FORWARDED_HEADERS_MAX + 1];
        size_t n;
} HeaderScan;

static int on_header(const char *name, const char *value, void *userdata) {
        HeaderScan *scan = userdata;

        if (strcasecmp(name, "X-Forwarded-For") != 0)
                return 0;
        scan->values[scan->n++] = value ?: "";
        return scan->n > FORWARDED_HEADERS_MAX ? -E2BIG : 0;   /* one too many is enough to refuse */
}

void forwarded_resolve(const TrustedProxies *t, HttpExchange *x) {
        struct sockaddr_storage client;
        const struct sockaddr *peer = http_exchange_peer(x);
        HeaderScan scan = {};
        char a[FORWARDED_ADDRESS_STRLEN];
        int r;

        assert(t && x);
        if (t->n == 0 || !trusted_proxies_contain(t, peer))
                return;         /* http_exchange_client() is the peer */
        (void) http_exchange_foreach_header(x, on_header, &scan);
        r = forwarded_client(t, peer, scan.values, scan.n, &client);
        if (r < 0) {
                log_debug_errno(r, "The X-Forwarded-For of trusted proxy %s is %s; counting the request as the proxy's own: %m",
                                forwarded_address_to_string(peer, a),
                                r == -E2BIG ? "too long or names too many hops" : "malformed");
                return;
        }
        http_exchange_set_client(x, (const struct sockaddr *) &client);
}

const char *forwarded_address_to_string(const struct sockaddr *sa, char buf[static FORWARDED_ADDRESS_STRLEN]) {
        Address a;

        if (address_from_sockaddr(sa, &a) < 0 || !inet_ntop(a.family, a.a.bytes, buf, FORWARDED_ADDRESS_STRLEN))
                return strcpy(buf, "?");
        return buf;
}
