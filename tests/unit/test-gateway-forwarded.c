/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "gateway-forwarded.h"

/* "1.2.3.4" or "2001:db8::1" as a socket address with a port, as a peer is. */
static struct sockaddr_storage sa(const char *a) {
        struct sockaddr_storage ss = {};
        struct sockaddr_in *in = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;

        if (inet_pton(AF_INET, a, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                in->sin_port = htons(40000);
        } else {
                ck_assert_msg(inet_pton(AF_INET6, a, &in6->sin6_addr) == 1, "address '%s'", a);
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(40000);
        }
        return ss;
}

static void trusted(TrustedProxies *t, const char *const *words) {
        for (; *words; words++)
                ck_assert_msg(trusted_proxies_add(t, *words) == 0, "trusted proxy '%s'", *words);
}

/* TrustedProxies= entries: what parses, what is refused and why. */
START_TEST(test_trusted_proxies_add)
{
        static const struct {
                const char *in;
                int r;
        } t[] = {
                { "127.0.0.1", 0 },
                { "10.0.0.0/8", 0 },
                { "0.0.0.0/0", 0 },
                { "::1", 0 },
                { "fd00::/8", 0 },
                { "::/0", 0 },
                { "::ffff:10.1.0.0/112", 0 },   /* = 10.1.0.0/16 */
                { "10.0.0.1/8", -EADDRNOTAVAIL },
                { "fd00::1/8", -EADDRNOTAVAIL },
                { "10.0.0.0/33", -EINVAL },
                { "::/129", -EINVAL },
                { "10.0.0.0/", -EINVAL },
                { "10.0.0", -EINVAL },
                { "localhost", -EINVAL },
                { "fe80::1%eth0", -EINVAL },
                { "[::1]", -EINVAL },
                { "127.0.0.1:80", -EINVAL },
                { "", -EINVAL },
        };
        TrustedProxies p = {};

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_msg(trusted_proxies_add(&p, t[i].in) == t[i].r, "'%s'", t[i].in);
        ck_assert_uint_eq(p.n, 7);
        ck_assert_int_eq(trusted_proxies_add(&p, "10.0.0.0/8"), 0);    /* no duplicate */
        ck_assert_uint_eq(p.n, 7);
        trusted_proxies_done(&p);
        ck_assert_uint_eq(p.n, 0);

        for (unsigned i = 0; i < FORWARDED_PROXIES_MAX; i++) {
                char a[32];

                snprintf(a, sizeof a, "10.%u.%u.0/24", i / 256, i % 256);
                ck_assert_int_eq(trusted_proxies_add(&p, a), 0);
        }
        ck_assert_int_eq(trusted_proxies_add(&p, "192.0.2.1"), -E2BIG);
        trusted_proxies_done(&p);
}
END_TEST

/* Peers in and out of the list, IPv4-mapped IPv6 as IPv4, prefix boundaries. */
START_TEST(test_trusted_proxies_contain)
{
        static const char *const list[] = { "127.0.0.1", "10.1.0.0/16", "192.0.2.128/25", "fd00:1::/32", NULL };
        static const struct {
                const char *peer;
                bool in;
        } t[] = {
                { "127.0.0.1", true },
                { "127.0.0.2", false },
                { "::ffff:127.0.0.1", true },
                { "10.1.255.255", true },
                { "10.2.0.0", false },
                { "192.0.2.128", true },
                { "192.0.2.127", false },
                { "fd00:1:ffff::9", true },
                { "fd00:2::", false },
                { "::1", false },
        };
        TrustedProxies p = {}, c = {};

        trusted(&p, list);
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                struct sockaddr_storage s = sa(t[i].peer);

                ck_assert_msg(trusted_proxies_contain(&p, (struct sockaddr *) &s) == t[i].in, "peer %s", t[i].peer);
        }
        ck_assert(!trusted_proxies_contain(&p, NULL));
        ck_assert_int_eq(trusted_proxies_copy(&c, &p), 0);
        trusted_proxies_done(&p);
        {
                struct sockaddr_storage s = sa("10.1.2.3");

                ck_assert(trusted_proxies_contain(&c, (struct sockaddr *) &s));
        }
        ck_assert_int_eq(trusted_proxies_copy(&c, &p), 0);      /* an empty list trusts nobody */
        ck_assert_uint_eq(c.n, 0);
        trusted_proxies_done(&c);
}
END_TEST

/* The walk: headers (NULL-terminated, at most 4) from PEER with TrustedProxies=127.0.0.1
 * 10.0.0.0/8 ::1 give WANT ("" when the result is an error R) and R. */
START_TEST(test_forwarded_client)
{
        static const char *const list[] = { "127.0.0.1", "10.0.0.0/8", "::1", NULL };
        static const struct {
                const char *peer;
                const char *h[4];
                int r;
                const char *want;
        } t[] = {
                /* An untrusted peer is the client, whatever it says. */
                { "192.0.2.7", { "198.51.100.1" }, 0, "192.0.2.7" },
                { "192.0.2.7", { "garbage" }, 0, "192.0.2.7" },
                /* A trusted peer without (or with an empty) header is the client. */
                { "127.0.0.1", { NULL }, 0, "127.0.0.1" },
                { "127.0.0.1", { "", " \t" }, 0, "127.0.0.1" },
                /* What nginx (the example) and Caddy send: one address. */
                { "127.0.0.1", { "198.51.100.1" }, 1, "198.51.100.1" },
                { "::1", { "2001:db8::5" }, 1, "2001:db8::5" },
                { "::ffff:127.0.0.1", { "198.51.100.1" }, 1, "198.51.100.1" },
                /* Appended chains: the right-most untrusted entry, forged ones left of it ignored. */
                { "127.0.0.1", { "203.0.113.9, 198.51.100.1" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "203.0.113.9, 198.51.100.1, 10.2.3.4" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "garbage, 198.51.100.1,10.2.3.4" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "unknown,,198.51.100.1" }, 1, "198.51.100.1" },
                /* Spaces and tabs around entries. */
                { "127.0.0.1", { " \t198.51.100.1 \t,\t 10.0.0.1 " }, 1, "198.51.100.1" },
                /* Several headers are one list, in order. */
                { "127.0.0.1", { "203.0.113.9", "198.51.100.1" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "203.0.113.9", "10.0.0.1", "" }, 1, "203.0.113.9" },
                /* Ports, as some proxies write them, are dropped. */
                { "127.0.0.1", { "198.51.100.1:4711" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "[2001:db8::5]:4711" }, 1, "2001:db8::5" },
                { "127.0.0.1", { "[2001:db8::5]" }, 1, "2001:db8::5" },
                { "127.0.0.1", { "2001:db8::5:4711" }, 1, "2001:db8::5:4711" }, /* bare IPv6: all address */
                /* IPv4-mapped entries count as IPv4, also for trust. */
                { "127.0.0.1", { "::ffff:198.51.100.1" }, 1, "198.51.100.1" },
                { "127.0.0.1", { "198.51.100.1, ::ffff:10.0.0.1" }, 1, "198.51.100.1" },
                /* Every hop trusted: the left-most. */
                { "127.0.0.1", { "10.0.0.2, 10.0.0.1" }, 1, "10.0.0.2" },
                /* Malformed where the walk reaches: the caller falls back to the peer. */
                { "127.0.0.1", { "unknown" }, -EBADMSG, "" },
                { "127.0.0.1", { "_hidden" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1," }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1, , 10.0.0.1" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1:" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1:123456" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1:http" }, -EBADMSG, "" },
                { "127.0.0.1", { "[2001:db8::5" }, -EBADMSG, "" },
                { "127.0.0.1", { "[2001:db8::5]x" }, -EBADMSG, "" },
                { "127.0.0.1", { "[198.51.100.1]" }, -EBADMSG, "" },
                { "127.0.0.1", { "fe80::1%eth0" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.1 203.0.113.9" }, -EBADMSG, "" },
                { "127.0.0.1", { "198.51.100.256" }, -EBADMSG, "" },
                { "127.0.0.1", { "gw.example.org" }, -EBADMSG, "" },
                { "127.0.0.1", { "\"198.51.100.1\"" }, -EBADMSG, "" },
                { "127.0.0.1", { "for=198.51.100.1" }, -EBADMSG, "" },
        };
        TrustedProxies p = {};

        trusted(&p, list);
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                struct sockaddr_storage peer = sa(t[i].peer), out = {}, want;
                char a[FORWARDED_ADDRESS_STRLEN];
                size_t n = 0;
                int r;

                while (n < ELEMENTSOF(t[i].h) && t[i].h[n])
                        n++;
                r = forwarded_client(&p, (struct sockaddr *) &peer, t[i].h, n, &out);
                ck_assert_msg(r == t[i].r, "case %zu (%s): %d, expected %d", i, t[i].h[0] ?: "-", r, t[i].r);
                if (r < 0) {
                        ck_assert_int_eq(out.ss_family, AF_UNSPEC);     /* left alone */
                        continue;
                }
                want = sa(t[i].want);
                ck_assert_str_eq(forwarded_address_to_string((struct sockaddr *) &out, a), t[i].want);
                ck_assert_int_eq(out.ss_family, want.ss_family);
                /* No port: the bucket is the address's. */
                ck_assert_uint_eq(out.ss_family == AF_INET ? ((struct sockaddr_in *) &out)->sin_port
                                                           : ((struct sockaddr_in6 *) &out)->sin6_port, 0);
        }
        trusted_proxies_done(&p);
}
END_TEST

/* Nobody trusted (the default): the header never counts. */
START_TEST(test_forwarded_trust_nobody)
{
        TrustedProxies p = {};
        struct sockaddr_storage peer = sa("127.0.0.1"), out;
        const char *h[] = { "198.51.100.1" };
        char a[FORWARDED_ADDRESS_STRLEN];

        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), 0);
        ck_assert_str_eq(forwarded_address_to_string((struct sockaddr *) &out, a), "127.0.0.1");
}
END_TEST

/* "CLIENT, 10.0.0.N, …, 10.0.0.1": @n trusted hops after @client (if any). */
static void chain(char *buf, size_t size, const char *client, unsigned n) {
        size_t len = (size_t) snprintf(buf, size, "%s", client ?: "");

        for (unsigned i = n; i > 0; i--)
                len += (size_t) snprintf(buf + len, size - len, "%s10.0.0.%u", len > 0 ? ", " : "", i);
        ck_assert_uint_lt(len, size);
}

/* The bounds: header length, headers per request, hops walked; a peer that is not IP. */
START_TEST(test_forwarded_limits)
{
        static const char *const list[] = { "127.0.0.1", "10.0.0.0/8", NULL };
        TrustedProxies p = {};
        struct sockaddr_storage peer = sa("127.0.0.1"), out;
        struct sockaddr unix_peer = { .sa_family = AF_UNIX };
        char big[FORWARDED_HEADER_MAX + 2], hops[FORWARDED_HOPS_MAX * 12 + 32], a[FORWARDED_ADDRESS_STRLEN];
        const char *h[FORWARDED_HEADERS_MAX + 1];

        trusted(&p, list);

        /* A header of exactly the cap is walked; one byte more is refused. */
        memset(big, ' ', sizeof big);
        memcpy(big + FORWARDED_HEADER_MAX - strlen("198.51.100.1"), "198.51.100.1", strlen("198.51.100.1"));
        big[FORWARDED_HEADER_MAX] = 0;
        h[0] = big;
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), 1);
        big[FORWARDED_HEADER_MAX] = ' ';
        big[FORWARDED_HEADER_MAX + 1] = 0;
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), -E2BIG);

        /* FORWARDED_HEADERS_MAX headers are fine, one more is not. */
        for (size_t i = 0; i < ELEMENTSOF(h); i++)
                h[i] = "198.51.100.1";
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, FORWARDED_HEADERS_MAX, &out), 1);
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, FORWARDED_HEADERS_MAX + 1, &out), -E2BIG);

        /* The client behind FORWARDED_HOPS_MAX - 1 trusted hops is found; behind
         * FORWARDED_HOPS_MAX it is past the walk (too many hops: the peer counts). Only
         * trusted hops, FORWARDED_HOPS_MAX of them: the left-most. */
        h[0] = hops;
        chain(hops, sizeof hops, "198.51.100.1", FORWARDED_HOPS_MAX - 1);
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), 1);
        ck_assert_str_eq(forwarded_address_to_string((struct sockaddr *) &out, a), "198.51.100.1");
        chain(hops, sizeof hops, "198.51.100.1", FORWARDED_HOPS_MAX);
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), -E2BIG);
        chain(hops, sizeof hops, NULL, FORWARDED_HOPS_MAX);
        ck_assert_int_eq(forwarded_client(&p, (struct sockaddr *) &peer, h, 1, &out), 1);
        ck_assert_str_eq(forwarded_address_to_string((struct sockaddr *) &out, a), "10.0.0.32");

        ck_assert_int_eq(forwarded_client(&p, &unix_peer, h, 1, &out), -EAFNOSUPPORT);
        ck_assert_int_eq(forwarded_client(&p, NULL, h, 1, &out), -EAFNOSUPPORT);
        ck_assert_str_eq(forwarded_address_to_string(&unix_peer, a), "?");
        trusted_proxies_done(&p);
}
END_TEST

static Suite *forwarded_suite(void) {
        Suite *s = suite_create("gateway-forwarded");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_trusted_proxies_add);
        tcase_add_test(tc, test_trusted_proxies_contain);
        tcase_add_test(tc, test_forwarded_client);
        tcase_add_test(tc, test_forwarded_trust_nobody);
        tcase_add_test(tc, test_forwarded_limits);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(forwarded_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
