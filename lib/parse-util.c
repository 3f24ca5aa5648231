/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>

#include "macro.h"
#include "parse-util.h"

int parse_uint64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (isempty(s))
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        if (ret)
                *ret = v;
        return 0;
}

int parse_uint(const char *s, unsigned *ret) {
        uint64_t v;
        int r;

        r = parse_uint64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT_MAX)
                return -ERANGE;
        if (ret)
                *ret = (unsigned) v;
        return 0;
}

int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

/* Split "123abc" into its number and its suffix. */
static int split_number(const char *s, uint64_t *ret, const char **ret_suffix) {
        uint64_t v = 0;
        const char *p = s;

        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        *ret = v;
        *ret_suffix = p;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct { const char *suffix; uint64_t factor; } table[] = {
                { "", 1 }, { "B", 1 },
                { "K", 1ULL << 10 }, { "KiB", 1ULL << 10 },
                { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 },
                { "G", 1ULL << 30 }, { "GiB", 1ULL << 30 },
        };
        const char *suffix;
        uint64_t v;
        int r;

        if (isempty(s))
                return -EINVAL;
        r = split_number(s, &v, &suffix);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(suffix, table[i].suffix)) {
                        if (v > UINT64_MAX / table[i].factor)
                                return -ERANGE;
                        *ret = v * table[i].factor;
                        return 0;
                }
        return -EINVAL;
}

int parse_sec(const char *s, uint64_t *ret) {
        static const struct { const char *suffix; uint64_t usec; } table[] = {
                { "us", 1 }, { "usec", 1 },
                { "ms", USEC_PER_MSEC }, { "msec", USEC_PER_MSEC },
                { "", USEC_PER_SEC }, { "s", USEC_PER_SEC }, { "sec", USEC_PER_SEC },
                { "m", 60 * USEC_PER_SEC }, { "min", 60 * USEC_PER_SEC },
                { "h", 3600 * USEC_PER_SEC }, { "hr", 3600 * USEC_PER_SEC },
                { "d", 86400 * USEC_PER_SEC },
        };
        uint64_t total = 0;
        const char *p = s;
        bool any = false;

        if (isempty(s))
                return -EINVAL;
        if (streq(s, "infinity")) {
                *ret = USEC_INFINITY;
                return 0;
        }
        for (;;) {
                const char *suffix, *e;
                uint64_t v;
                size_t l;
                bool found = false;
                int r;

                p += strspn(p, " ");
                if (!*p)
                        break;
                r = split_number(p, &v, &suffix);
                if (r < 0)
                        return r;
                e = suffix;
                while (isalpha((unsigned char) *e))
                        e++;
                l = (size_t) (e - suffix);
                for (size_t i = 0; i < ELEMENTSOF(table); i++)
                        if (strlen(table[i].suffix) == l && strncmp(suffix, table[i].suffix, l) == 0) {
                                if (v > (UINT64_MAX - total) / table[i].usec)
                                        return -ERANGE;
                                total += v * table[i].usec;
                                found = true;
                                break;
                        }
                if (!found)
                        return -EINVAL;
                any = true;
                p = e;
        }
        if (!any)
                return -EINVAL;
        *ret = total;
        return 0;
}

int parse_port(const char *s, uint16_t *ret) {
        unsigned u;
        int r;

        r = parse_uint(s, &u);
        if (r < 0)
                return r;
        if (u == 0 || u > 65535)
                return -ERANGE;
        *ret = (uint16_t) u;
        return 0;
}

int parse_sockaddr(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len) {
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon;
        uint16_t port;
        size_t l;
        int r;

        if (isempty(s))
                return -EINVAL;
        if (s[0] == '[') {
                const char *e = strchr(s, ']');

                if (!e || e[1] != ':')
                        return -EINVAL;
                l = (size_t) (e - s - 1);
                if (l == 0 || l >= sizeof host)
                        return -EINVAL;
                memcpy(host, s + 1, l);
                host[l] = 0;
                colon = e + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                l = (size_t) (colon - s);
                if (l == 0 || l >= sizeof host)
                        return -EINVAL;
                memcpy(host, s, l);
                host[l] = 0;
        }
        r = parse_port(colon + 1, &port);
        if (r < 0)
                return -EINVAL;

        struct sockaddr_storage ss = {};
        if (s[0] == '[') {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

                if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
                        return -EINVAL;
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(port);
                *ret_len = sizeof(struct sockaddr_in6);
        } else {
                struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

                if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
                        return -EINVAL;
                sin->sin_family = AF_INET;
                sin->sin_port = htons(port);
                *ret_len = sizeof(struct sockaddr_in);
        }
        *ret = ss;
        return 0;
}

bool sockaddr_is_loopback(const struct sockaddr *sa) {
        if (sa->sa_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
        if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

                if (IN6_IS_ADDR_LOOPBACK(a))
                        return true;
                return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
        }
        return false;
}

const char *format_sockaddr(const struct sockaddr *sa, char *buf, size_t len) {
        char a[INET6_ADDRSTRLEN];

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a);
                snprintf(buf, len, "%s:%u", a, ntohs(sin->sin_port));
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof a);
                snprintf(buf, len, "[%s]:%u", a, ntohs(sin6->sin6_port));
        } else
                snprintf(buf, len, "(family %d)", sa->sa_family);
        return buf;
}
