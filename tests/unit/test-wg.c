/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The device model: names, prefixes, endpoints, validation and the diff behind convergence. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <string.h>

#include "macro.h"
#include "wg.h"

static WgKey key_n(unsigned n) {
        WgKey k;

        memset(k.data, (int) n, WG_KEY_LEN);
        k.data[0] = (uint8_t) (n >> 8);
        k.data[31] = 0x42;
        return k;
}

static WgAllowedIP prefix(const char *s) {
        WgAllowedIP p;

        ck_assert_msg(wg_ip_prefix_from_string(s, &p) == 0, "prefix '%s'", s);
        return p;
}

static WgPeer *add_peer(WgDevice *d, unsigned n) {
        WgKey k = key_n(n);
        WgPeer *p;

        ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
        return p;
}

static void add_ip(WgPeer *p, const char *s) {
        WgAllowedIP ip = prefix(s);

        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
}

START_TEST(test_ifname)
{
        static const struct { const char *name; int r; } t[] = {
                { "club0", 0 }, { "a", 0 }, { "123456789012345", 0 },
                { "1234567890123456", -ENAMETOOLONG }, { "", -EINVAL }, { ".", -EINVAL }, { "..", -EINVAL },
                { "a/b", -EINVAL }, { "a b", -EINVAL }, { "a:b", -EINVAL }, { "a\tb", -EINVAL }, { "a\nb", -EINVAL },
        };
        WgDevice *d = NULL;

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_msg(wg_ifname_valid(t[i].name) == t[i].r, "name '%s'", t[i].name);
        ck_assert_int_eq(wg_ifname_valid(NULL), -EINVAL);
        ck_assert_int_eq(wg_device_new("this-name-is-too-long", &d), -ENAMETOOLONG);
        ck_assert_ptr_null(d);
}
END_TEST

START_TEST(test_prefix)
{
        static const struct { const char *in; int r; const char *out; } t[] = {
                { "10.1.2.3/24", 0, "10.1.2.3/24" }, { "10.1.2.3", 0, "10.1.2.3/32" }, { "0.0.0.0/0", 0, "0.0.0.0/0" },
                { "fd00::1/64", 0, "fd00::1/64" }, { "::/0", 0, "::/0" }, { "fd00::1", 0, "fd00::1/128" },
                { "10.1.2.3/33", -EINVAL, NULL }, { "fd00::/129", -EINVAL, NULL }, { "10.1.2/24", -EINVAL, NULL },
                { "10.1.2.3/", -EINVAL, NULL }, { "10.1.2.3/-1", -EINVAL, NULL }, { "/24", -EINVAL, NULL },
                { "host/24", -EINVAL, NULL }, { "", -EINVAL, NULL }, { "10.1.2.3/24 ", -EINVAL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                WgIPPrefix p;
                char buf[WG_IP_PREFIX_STRLEN];

                ck_assert_msg(wg_ip_prefix_from_string(t[i].in, &p) == t[i].r, "prefix '%s'", t[i].in);
                if (t[i].r == 0)
                        ck_assert_str_eq(wg_ip_prefix_to_string(&p, buf), t[i].out);
        }
}
END_TEST

START_TEST(test_allowed_ip_masked)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        char buf[WG_IP_PREFIX_STRLEN];
        WgAllowedIP bad = { .family = AF_INET, .cidr = 33 };
        WgPeer *p;

        ck_assert_int_eq(wg_device_new("wg0", &d), 0);
        p = add_peer(d, 1);
        add_ip(p, "10.1.2.3/20");
        add_ip(p, "fd00:1:2:3::9/52");
        add_ip(p, "10.1.2.3/0");
        ck_assert_str_eq(wg_ip_prefix_to_string(&p->allowed_ips[0], buf), "10.1.0.0/20");
        ck_assert_str_eq(wg_ip_prefix_to_string(&p->allowed_ips[1], buf), "fd00:1:2::/52");
        ck_assert_str_eq(wg_ip_prefix_to_string(&p->allowed_ips[2], buf), "0.0.0.0/0");
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &bad), -EINVAL);
        bad.family = AF_UNIX;
        bad.cidr = 1;
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &bad), -EINVAL);
}
END_TEST

START_TEST(test_endpoint)
{
        static const struct { const char *in; int r; const char *out; } t[] = {
                { "192.0.2.1:51820", 0, "192.0.2.1:51820" }, { "[2001:db8::1]:51820", 0, "[2001:db8::1]:51820" },
                { "[fe80::1%7]:1", 0, "[fe80::1%7]:1" }, { "[::ffff:1.2.3.4]:9", 0, "[::ffff:1.2.3.4]:9" },
                { "192.0.2.1", -EINVAL, NULL }, { "192.0.2.1:0", -EINVAL, NULL }, { "192.0.2.1:65536", -EINVAL, NULL },
                { "2001:db8::1:51820", -EINVAL, NULL }, { "[2001:db8::1]", -EINVAL, NULL }, { "[]:1", -EINVAL, NULL },
                { "example.com:51820", -EINVAL, NULL }, { "[fe80::1%]:1", -EINVAL, NULL }, { "", -EINVAL, NULL },
                { "[fe80::1%no-such-if0]:1", -EINVAL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                WgEndpoint e, e2;
                char buf[WG_ENDPOINT_STRLEN];

                ck_assert_msg(wg_endpoint_from_string(t[i].in, &e) == t[i].r, "endpoint '%s'", t[i].in);
                if (t[i].r != 0)
                        continue;
                ck_assert_str_eq(wg_endpoint_to_string(&e, buf), t[i].out);
                ck_assert_int_eq(wg_endpoint_from_string(buf, &e2), 0);
                ck_assert(wg_endpoint_equal(&e, &e2));
        }
}
END_TEST

START_TEST(test_validate)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        WgKey priv;
        WgPeer *p1, *p2;

        ck_assert_int_eq(wg_device_new("wg0", &d), 0);
        ck_assert_int_eq(wg_device_validate(d), 0);
        ck_assert_int_eq(wg_key_generate(&priv), 0);
        ck_assert_int_eq(wg_device_set_private_key(d, &priv), 0);

        p1 = add_peer(d, 1);
        p2 = add_peer(d, 2);
        add_ip(p1, "10.0.0.1/32");
        add_ip(p1, "10.0.0.1/32");              /* the same peer twice: harmless */
        add_ip(p2, "10.0.0.2/32");
        ck_assert_int_eq(wg_device_validate(d), 0);

        add_ip(p2, "10.0.0.1/32");              /* two peers claim one prefix */
        ck_assert_int_eq(wg_device_validate(d), -ENOTUNIQ);
        p2->n_allowed_ips = 1;
        ck_assert_int_eq(wg_device_validate(d), 0);

        p2->public_key = p1->public_key;        /* duplicate peer */
        ck_assert_int_eq(wg_device_validate(d), -ENOTUNIQ);
        p2->public_key = d->public_key;         /* the interface's own key */
        ck_assert_int_eq(wg_device_validate(d), -EKEYREJECTED);
        memset(p2->public_key.data, 0, WG_KEY_LEN);
        ck_assert_int_eq(wg_device_validate(d), -EKEYREJECTED);
        p2->public_key = key_n(2);

        p2->flags |= WG_PEER_HAS_ENDPOINT;      /* endpoint of no family */
        ck_assert_int_eq(wg_device_validate(d), -EINVAL);
        ck_assert_int_eq(wg_endpoint_from_string("192.0.2.1:1", &p2->endpoint), 0);
        ck_assert_int_eq(wg_device_validate(d), 0);

        d->flags |= WG_DEVICE_HAS_MTU;
        d->mtu = 67;
        ck_assert_int_eq(wg_device_validate(d), -EINVAL);
        d->mtu = 1420;
        ck_assert_int_eq(wg_device_validate(d), 0);

        WgIPPrefix a = prefix("100.96.0.5/16"), b = prefix("100.96.0.5/24");
        ck_assert_int_eq(wg_device_add_address(d, &a), 0);
        ck_assert_int_eq(wg_device_validate(d), 0);
        ck_assert_int_eq(wg_device_add_address(d, &b), 0);
        ck_assert_int_eq(wg_device_validate(d), -ENOTUNIQ);
        wg_key_wipe(&priv);
}
END_TEST

START_TEST(test_limits)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        WgPeer *p;
        WgKey k = key_n(7);

        ck_assert_int_eq(wg_device_new("wg0", &d), 0);
        for (unsigned i = 0; i < WG_PEERS_MAX; i++) {
                k.data[1] = (uint8_t) i;
                k.data[2] = (uint8_t) (i >> 8);
                ck_assert_int_eq(wg_device_add_peer(d, &k, NULL), 0);
        }
        ck_assert_int_eq(wg_device_add_peer(d, &k, NULL), -E2BIG);
        ck_assert_uint_eq(d->n_peers, WG_PEERS_MAX);
        p = d->peers[0];
        for (unsigned i = 0; i < WG_ALLOWED_IPS_MAX; i++) {
                WgAllowedIP ip = { .family = AF_INET6, .cidr = 128 };

                ip.addr.bytes[0] = 0xfd;
                ip.addr.bytes[14] = (uint8_t) (i >> 8);
                ip.addr.bytes[15] = (uint8_t) i;
                ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
        }
        WgAllowedIP one = prefix("10.0.0.1/32");
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &one), -E2BIG);
}
END_TEST

/* ---- diff ---- */

START_TEST(test_diff_identical_is_empty)
{
        _cleanup_(wg_device_freep) WgDevice *cur = NULL, *want = NULL, *change = NULL;
        WgConvergeStats s = {};
        WgPeer *p;

        ck_assert_int_eq(wg_device_new("wg0", &cur), 0);
        ck_assert_int_eq(wg_device_new("wg0", &want), 0);
        cur->listen_port = want->listen_port = 51820;
        cur->flags = want->flags = WG_DEVICE_HAS_LISTEN_PORT;
        p = add_peer(cur, 1);
        add_ip(p, "10.0.0.2/32");
        add_ip(p, "10.0.1.0/24");
        p->persistent_keepalive = 25;
        ck_assert_int_eq(wg_endpoint_from_string("192.0.2.1:51820", &p->endpoint), 0);
        p->flags |= WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE;

        p = add_peer(want, 1);
        add_ip(p, "10.0.1.7/24");               /* same set, other order, host bits */
        add_ip(p, "10.0.0.2/32");
        p->persistent_keepalive = 25;
        p->flags |= WG_PEER_HAS_KEEPALIVE;      /* no endpoint: leave the roaming one */

        ck_assert_int_eq(wg_device_diff(cur, want, &change, &s), 0);
        ck_assert(wg_device_change_is_empty(change));
        ck_assert(!s.device_changed);
        ck_assert_uint_eq(s.peers_added + s.peers_changed + s.peers_removed, 0);
}
END_TEST

START_TEST(test_diff_device)
{
        _cleanup_(wg_device_freep) WgDevice *cur = NULL, *want = NULL, *change = NULL;
        WgKey k1, k2;

        ck_assert_int_eq(wg_key_generate(&k1), 0);
        ck_assert_int_eq(wg_key_generate(&k2), 0);
        ck_assert_int_eq(wg_device_new("wg0", &cur), 0);
        ck_assert_int_eq(wg_device_new("wg0", &want), 0);
        ck_assert_int_eq(wg_device_set_private_key(cur, &k1), 0);
        cur->listen_port = 40000;
        cur->fwmark = 7;

        /* listen port 0 = any: no change; absent fwmark: leave; same key: no change. */
        ck_assert_int_eq(wg_device_set_private_key(want, &k1), 0);
        want->flags |= WG_DEVICE_HAS_LISTEN_PORT;
        ck_assert_int_eq(wg_device_diff(cur, want, &change, NULL), 0);
        ck_assert(wg_device_change_is_empty(change));
        change = wg_device_free(change);

        ck_assert_int_eq(wg_device_set_private_key(want, &k2), 0);
        want->listen_port = 51820;
        want->fwmark = 0;
        want->flags |= WG_DEVICE_HAS_FWMARK;
        ck_assert_int_eq(wg_device_diff(cur, want, &change, NULL), 0);
        ck_assert_uint_eq(change->flags, WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK);
        ck_assert(wg_key_equal(&change->private_key, &k2));
        ck_assert_uint_eq(change->listen_port, 51820);
        ck_assert_uint_eq(change->fwmark, 0);
        ck_assert_uint_eq(change->n_peers, 0);
        wg_key_wipe(&k1);
        wg_key_wipe(&k2);
}
END_TEST

START_TEST(test_diff_peers)
{
        _cleanup_(wg_device_freep) WgDevice *cur = NULL, *want = NULL, *change = NULL;
        WgConvergeStats s = {};
        WgPeer *p;
        char buf[WG_IP_PREFIX_STRLEN];

        ck_assert_int_eq(wg_device_new("wg0", &cur), 0);
        ck_assert_int_eq(wg_device_new("wg0", &want), 0);

        /* 1: removed. 2: allowed IPs grow (additions only). 3: allowed IPs shrink (replace).
         * 4: keepalive and preshared key go away. 5: unchanged. 6: new. */
        p = add_peer(cur, 1);
        add_ip(p, "10.0.0.1/32");
        p = add_peer(cur, 2);
        add_ip(p, "10.0.0.2/32");
        p = add_peer(cur, 3);
        add_ip(p, "10.0.0.3/32");
        add_ip(p, "10.0.3.0/24");
        p = add_peer(cur, 4);
        p->persistent_keepalive = 25;
        p->preshared_key = key_n(99);
        p->flags |= WG_PEER_HAS_KEEPALIVE | WG_PEER_HAS_PRESHARED_KEY;
        p = add_peer(cur, 5);
        add_ip(p, "fd00::5/128");

        p = add_peer(want, 6);
        add_ip(p, "10.0.0.6/32");
        p->preshared_key = key_n(98);
        p->persistent_keepalive = 0;
        p->flags |= WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_KEEPALIVE;
        ck_assert_int_eq(wg_endpoint_from_string("192.0.2.6:6", &p->endpoint), 0);
        p->flags |= WG_PEER_HAS_ENDPOINT;
        p = add_peer(want, 5);
        add_ip(p, "fd00::5/128");
        p = add_peer(want, 4);
        p = add_peer(want, 3);
        add_ip(p, "10.0.0.3/32");
        p = add_peer(want, 2);
        add_ip(p, "10.0.0.2/32");
        add_ip(p, "10.0.2.0/24");

        ck_assert_int_eq(wg_device_validate(want), 0);
        ck_assert_int_eq(wg_device_diff(cur, want, &change, &s), 0);
        ck_assert_uint_eq(s.peers_removed, 1);
        ck_assert_uint_eq(s.peers_changed, 3);
        ck_assert_uint_eq(s.peers_added, 1);
        ck_assert_uint_eq(change->n_peers, 5);
        ck_assert_int_eq(wg_device_validate(change), 0);

        /* Removals, then changes (sorted by key), then additions. */
        p = change->peers[0];
        ck_assert_mem_eq(p->public_key.data, key_n(1).data, WG_KEY_LEN);
        ck_assert_uint_eq(p->flags, WG_PEER_REMOVE);

        p = change->peers[1];
        ck_assert_mem_eq(p->public_key.data, key_n(2).data, WG_KEY_LEN);
        ck_assert_uint_eq(p->flags, WG_PEER_UPDATE_ONLY);
        ck_assert_uint_eq(p->n_allowed_ips, 1);
        ck_assert_str_eq(wg_ip_prefix_to_string(&p->allowed_ips[0], buf), "10.0.2.0/24");

        p = change->peers[2];
        ck_assert_mem_eq(p->public_key.data, key_n(3).data, WG_KEY_LEN);
        ck_assert_uint_eq(p->flags, WG_PEER_UPDATE_ONLY | WG_PEER_REPLACE_ALLOWED_IPS);
        ck_assert_uint_eq(p->n_allowed_ips, 1);
        ck_assert_str_eq(wg_ip_prefix_to_string(&p->allowed_ips[0], buf), "10.0.0.3/32");

        p = change->peers[3];
        ck_assert_mem_eq(p->public_key.data, key_n(4).data, WG_KEY_LEN);
        ck_assert_uint_eq(p->flags, WG_PEER_UPDATE_ONLY | WG_PEER_HAS_KEEPALIVE | WG_PEER_HAS_PRESHARED_KEY);
        ck_assert_uint_eq(p->persistent_keepalive, 0);
        ck_assert(wg_key_is_zero(&p->preshared_key));
        ck_assert_uint_eq(p->n_allowed_ips, 0);

        p = change->peers[4];
        ck_assert_mem_eq(p->public_key.data, key_n(6).data, WG_KEY_LEN);
        /* A new peer: only what is not the default is sent. */
        ck_assert_uint_eq(p->flags, WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT);
        ck_assert_mem_eq(p->preshared_key.data, key_n(98).data, WG_KEY_LEN);
        ck_assert_uint_eq(p->n_allowed_ips, 1);
}
END_TEST

/*
 * A model of what the kernel and wireguard-go do with a change, to check that
 * applying a diff reaches the desired state and that a second diff is empty.
 */
static void model_remove_peer(WgDevice *d, size_t i) {
        free(d->peers[i]->allowed_ips);
        free(d->peers[i]);
        memmove(d->peers + i, d->peers + i + 1, (d->n_peers - i - 1) * sizeof *d->peers);
        d->n_peers--;
}

static bool same_prefix(const WgAllowedIP *a, const WgAllowedIP *b) {
        return a->family == b->family && a->cidr == b->cidr && memcmp(a->addr.bytes, b->addr.bytes, 16) == 0;
}

static void model_apply(WgDevice *st, const WgDevice *ch) {
        if (FLAGS_SET(ch->flags, WG_DEVICE_HAS_PRIVATE_KEY))
                st->private_key = ch->private_key;
        if (FLAGS_SET(ch->flags, WG_DEVICE_HAS_LISTEN_PORT))
                st->listen_port = ch->listen_port;
        if (FLAGS_SET(ch->flags, WG_DEVICE_HAS_FWMARK))
                st->fwmark = ch->fwmark;
        if (FLAGS_SET(ch->flags, WG_DEVICE_REPLACE_PEERS))
                while (st->n_peers > 0)
                        model_remove_peer(st, 0);
        for (size_t i = 0; i < ch->n_peers; i++) {
                const WgPeer *c = ch->peers[i];
                WgPeer *p = wg_device_find_peer(st, &c->public_key);

                if (FLAGS_SET(c->flags, WG_PEER_REMOVE)) {
                        for (size_t j = 0; p && j < st->n_peers; j++)
                                if (st->peers[j] == p)
                                        model_remove_peer(st, j);
                        continue;
                }
                if (!p) {
                        if (FLAGS_SET(c->flags, WG_PEER_UPDATE_ONLY))
                                continue;
                        ck_assert_int_eq(wg_device_add_peer(st, &c->public_key, &p), 0);
                }
                if (FLAGS_SET(c->flags, WG_PEER_HAS_PRESHARED_KEY))
                        p->preshared_key = c->preshared_key;
                if (FLAGS_SET(c->flags, WG_PEER_HAS_KEEPALIVE))
                        p->persistent_keepalive = c->persistent_keepalive;
                if (FLAGS_SET(c->flags, WG_PEER_HAS_ENDPOINT)) {
                        p->endpoint = c->endpoint;
                        p->flags |= WG_PEER_HAS_ENDPOINT;
                }
                if (FLAGS_SET(c->flags, WG_PEER_REPLACE_ALLOWED_IPS))
                        p->n_allowed_ips = 0;
                for (size_t a = 0; a < c->n_allowed_ips; a++) {
                        bool have = false;

                        /* An allowed IP moves to the peer that was set last. */
                        for (size_t j = 0; j < st->n_peers; j++) {
                                WgPeer *o = st->peers[j];

                                for (size_t b = 0; b < o->n_allowed_ips; b++)
                                        if (same_prefix(&o->allowed_ips[b], &c->allowed_ips[a])) {
                                                if (o == p)
                                                        have = true;
                                                else
                                                        o->allowed_ips[b--] = o->allowed_ips[--o->n_allowed_ips];
                                        }
                        }
                        if (!have)
                                ck_assert_int_eq(wg_peer_add_allowed_ip(p, &c->allowed_ips[a]), 0);
                }
        }
}

static const char *const pool[] = {
        "10.0.0.1/32", "10.0.0.2/32", "10.0.1.0/24", "10.0.2.0/24", "0.0.0.0/0", "fd00::1/128",
        "fd00::2/128", "fd00:1::/64", "192.168.7.0/25", "192.168.7.128/25", "::/0", "10.9.9.9/32",
};

static void random_state(WgDevice *d, unsigned seed) {
        size_t owner[ELEMENTSOF(pool)];

        srandom(seed);
        d->listen_port = (uint16_t) (random() % 3 * 1000);
        d->fwmark = (uint32_t) (random() % 2);
        d->flags |= WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK;
        for (unsigned k = 1; k <= 8; k++) {
                WgPeer *p;

                if (random() % 3 == 0)
                        continue;
                p = add_peer(d, k);
                if (random() % 2) {
                        p->preshared_key = key_n(100 + (unsigned) (random() % 2));
                        p->flags |= WG_PEER_HAS_PRESHARED_KEY;
                }
                if (random() % 2) {
                        p->persistent_keepalive = (uint16_t) (random() % 2 * 25);
                        p->flags |= WG_PEER_HAS_KEEPALIVE;
                }
                if (random() % 2) {
                        ck_assert_int_eq(wg_endpoint_from_string(random() % 2 ? "192.0.2.1:1" : "[2001:db8::1]:2",
                                                                 &p->endpoint), 0);
                        p->flags |= WG_PEER_HAS_ENDPOINT;
                }
        }
        /* Each prefix to at most one peer. */
        for (size_t i = 0; i < ELEMENTSOF(pool); i++) {
                owner[i] = d->n_peers > 0 ? (size_t) random() % (d->n_peers + 1) : 0;
                if (owner[i] < d->n_peers)
                        add_ip(d->peers[owner[i]], pool[i]);
        }
}

static void assert_reached(const WgDevice *st, const WgDevice *want) {
        static const WgKey zero = {};

        ck_assert_uint_eq(st->n_peers, want->n_peers);
        if (want->listen_port != 0)
                ck_assert_uint_eq(st->listen_port, want->listen_port);
        ck_assert_uint_eq(st->fwmark, want->fwmark);
        for (size_t i = 0; i < want->n_peers; i++) {
                const WgPeer *w = want->peers[i], *p = wg_device_find_peer(st, &w->public_key);

                ck_assert_ptr_nonnull(p);
                ck_assert(wg_key_equal(&p->preshared_key,
                                       FLAGS_SET(w->flags, WG_PEER_HAS_PRESHARED_KEY) ? &w->preshared_key : &zero));
                ck_assert_uint_eq(p->persistent_keepalive,
                                  FLAGS_SET(w->flags, WG_PEER_HAS_KEEPALIVE) ? w->persistent_keepalive : 0);
                if (FLAGS_SET(w->flags, WG_PEER_HAS_ENDPOINT))
                        ck_assert(wg_endpoint_equal(&p->endpoint, &w->endpoint));
                ck_assert_uint_eq(p->n_allowed_ips, w->n_allowed_ips);
                for (size_t a = 0; a < w->n_allowed_ips; a++) {
                        bool found = false;

                        for (size_t b = 0; b < p->n_allowed_ips; b++)
                                found = found || same_prefix(&p->allowed_ips[b], &w->allowed_ips[a]);
                        ck_assert(found);
                }
        }
}

START_TEST(test_diff_converges)
{
        for (unsigned i = 0; i < 2000; i++) {
                _cleanup_(wg_device_freep) WgDevice *cur = NULL, *want = NULL, *change = NULL, *again = NULL;
                WgConvergeStats s = {};

                ck_assert_int_eq(wg_device_new("wg0", &cur), 0);
                ck_assert_int_eq(wg_device_new("wg0", &want), 0);
                random_state(cur, 2 * i + 1);
                random_state(want, 2 * i + 2);
                ck_assert_int_eq(wg_device_validate(want), 0);

                ck_assert_int_eq(wg_device_diff(cur, want, &change, &s), 0);
                ck_assert_int_eq(wg_device_validate(change), 0);
                model_apply(cur, change);
                assert_reached(cur, want);

                ck_assert_int_eq(wg_device_diff(cur, want, &again, &s), 0);
                ck_assert_msg(wg_device_change_is_empty(again), "iteration %u: second diff not empty", i);
                ck_assert_uint_eq(s.peers_added + s.peers_changed + s.peers_removed, 0);
        }
}
END_TEST

START_TEST(test_hints)
{
        static const int with_hint[] = {
                -EKEYREJECTED, -ENAMETOOLONG, -EMEDIUMTYPE, -EADDRINUSE, -EPROTONOSUPPORT,
                -EPERM, -ENOTUNIQ, -E2BIG, -ECONNREFUSED, -EBADMSG, -ENODEV,
        };

        for (size_t i = 0; i < ELEMENTSOF(with_hint); i++) {
                ck_assert_ptr_nonnull(wg_strerror_hint(with_hint[i]));
                ck_assert_ptr_eq(wg_strerror_hint(with_hint[i]), wg_strerror_hint(-with_hint[i]));
        }
        ck_assert_ptr_nonnull(strstr(wg_strerror_hint(-EPROTONOSUPPORT), "install wireguard-go or load the wireguard module"));
        ck_assert_ptr_null(wg_strerror_hint(-EINVAL));
        ck_assert_ptr_null(wg_strerror_hint(0));
}
END_TEST

int main(void) {
        Suite *s = suite_create("wg");
        TCase *tc = tcase_create("model");
        TCase *td = tcase_create("diff");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_ifname);
        tcase_add_test(tc, test_prefix);
        tcase_add_test(tc, test_allowed_ip_masked);
        tcase_add_test(tc, test_endpoint);
        tcase_add_test(tc, test_validate);
        tcase_add_test(tc, test_limits);
        tcase_add_test(tc, test_hints);
        suite_add_tcase(s, tc);
        tcase_add_test(td, test_diff_identical_is_empty);
        tcase_add_test(td, test_diff_device);
        tcase_add_test(td, test_diff_peers);
        tcase_add_test(td, test_diff_converges);
        tcase_set_timeout(td, 60);
        suite_add_tcase(s, td);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
