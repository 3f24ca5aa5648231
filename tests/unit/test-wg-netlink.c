/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic netlink messages we build for WG_CMD_SET_DEVICE, checked attribute by
 * attribute, and WG_CMD_GET_DEVICE dump replies parsed back, including a peer that
 * the kernel split across two messages.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <linux/wireguard.h>
#include <string.h>

#include <netlink/attr.h>
#include <netlink/genl/genl.h>

#include "macro.h"
#include "rtnl-link.h"
#include "wg-netlink.h"

#define FAMILY 0x1d   /* any id will do: the builder takes it as given */

static WgKey key_n(unsigned n) {
        WgKey k;

        memset(k.data, (int) (n & 0xff), WG_KEY_LEN);
        k.data[0] = (uint8_t) (n >> 8);
        k.data[31] = 0x42;
        return k;
}

static void add_ip(WgPeer *p, const char *s) {
        WgAllowedIP ip;

        ck_assert_int_eq(wg_ip_prefix_from_string(s, &ip), 0);
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
}

/* Check the headers of a SET message and parse its top-level attributes. */
static void parse_set(struct nl_msg *msg, struct nlattr **tb) {
        struct nlmsghdr *h = nlmsg_hdr(msg);
        struct genlmsghdr *g;

        ck_assert_uint_eq(h->nlmsg_type, FAMILY);
        ck_assert_uint_eq(h->nlmsg_flags & (NLM_F_REQUEST | NLM_F_ACK), NLM_F_REQUEST | NLM_F_ACK);
        ck_assert(genlmsg_valid_hdr(h, 0));
        g = nlmsg_data(h);
        ck_assert_uint_eq(g->cmd, WG_CMD_SET_DEVICE);
        ck_assert_uint_eq(g->version, WG_GENL_VERSION);
        ck_assert_int_eq(nla_parse(tb, WGDEVICE_A_MAX, genlmsg_attrdata(g, 0), genlmsg_attrlen(g, 0), NULL), 0);
        ck_assert_ptr_nonnull(tb[WGDEVICE_A_IFNAME]);
}

static void assert_nested(const struct nlattr *a) {
        ck_assert_msg(a->nla_type & NLA_F_NESTED, "attribute %u lacks NLA_F_NESTED", a->nla_type & NLA_TYPE_MASK);
}

START_TEST(test_build_set_attributes)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nlattr *tb[WGDEVICE_A_MAX + 1], *peer, *ip;
        struct nl_msg **msgs = NULL;
        size_t n = 0;
        WgKey priv = key_n(9), k1 = key_n(1), k2 = key_n(2);
        WgPeer *p;
        int rem, i = 0;

        ck_assert_int_eq(wg_device_new("club0", &d), 0);
        d->private_key = priv;
        d->listen_port = 51820;
        d->fwmark = 0x51;
        d->flags = WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK | WG_DEVICE_REPLACE_PEERS;

        ck_assert_int_eq(wg_device_add_peer(d, &k1, &p), 0);
        p->preshared_key = key_n(7);
        p->persistent_keepalive = 25;
        ck_assert_int_eq(wg_endpoint_from_string("[2001:db8::7]:4500", &p->endpoint), 0);
        p->flags = WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_KEEPALIVE | WG_PEER_HAS_ENDPOINT |
                   WG_PEER_REPLACE_ALLOWED_IPS | WG_PEER_UPDATE_ONLY;
        add_ip(p, "100.96.0.1/32");
        add_ip(p, "fd00::1/128");
        ck_assert_int_eq(wg_device_add_peer(d, &k2, &p), 0);
        p->flags = WG_PEER_REMOVE;
        add_ip(p, "10.0.0.1/32");       /* ignored for a removal */

        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, WG_NETLINK_MSG_SIZE, &msgs, &n), 0);
        ck_assert_uint_eq(n, 1);
        parse_set(msgs[0], tb);

        ck_assert_str_eq(nla_get_string(tb[WGDEVICE_A_IFNAME]), "club0");
        ck_assert_int_eq(nla_len(tb[WGDEVICE_A_PRIVATE_KEY]), WG_KEY_LEN);
        ck_assert_mem_eq(nla_data(tb[WGDEVICE_A_PRIVATE_KEY]), priv.data, WG_KEY_LEN);
        ck_assert_int_eq(nla_len(tb[WGDEVICE_A_LISTEN_PORT]), 2);
        ck_assert_uint_eq(nla_get_u16(tb[WGDEVICE_A_LISTEN_PORT]), 51820);
        ck_assert_int_eq(nla_len(tb[WGDEVICE_A_FWMARK]), 4);
        ck_assert_uint_eq(nla_get_u32(tb[WGDEVICE_A_FWMARK]), 0x51);
        ck_assert_uint_eq(nla_get_u32(tb[WGDEVICE_A_FLAGS]), WGDEVICE_F_REPLACE_PEERS);
        ck_assert_ptr_null(tb[WGDEVICE_A_PUBLIC_KEY]);
        ck_assert_ptr_null(tb[WGDEVICE_A_IFINDEX]);
        assert_nested(tb[WGDEVICE_A_PEERS]);

        nla_for_each_nested(peer, tb[WGDEVICE_A_PEERS], rem) {
                struct nlattr *pt[WGPEER_A_MAX + 1];
                int rem2, j = 0;

                assert_nested(peer);
                ck_assert_int_eq(nla_parse_nested(pt, WGPEER_A_MAX, peer, NULL), 0);
                ck_assert_int_eq(nla_len(pt[WGPEER_A_PUBLIC_KEY]), WG_KEY_LEN);
                if (i == 0) {
                        struct sockaddr_in6 sin6;

                        ck_assert_mem_eq(nla_data(pt[WGPEER_A_PUBLIC_KEY]), k1.data, WG_KEY_LEN);
                        ck_assert_uint_eq(nla_get_u32(pt[WGPEER_A_FLAGS]), WGPEER_F_REPLACE_ALLOWEDIPS | WGPEER_F_UPDATE_ONLY);
                        ck_assert_mem_eq(nla_data(pt[WGPEER_A_PRESHARED_KEY]), key_n(7).data, WG_KEY_LEN);
                        ck_assert_uint_eq(nla_get_u16(pt[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]), 25);
                        ck_assert_int_eq(nla_len(pt[WGPEER_A_ENDPOINT]), sizeof(struct sockaddr_in6));
                        memcpy(&sin6, nla_data(pt[WGPEER_A_ENDPOINT]), sizeof sin6);
                        ck_assert_int_eq(sin6.sin6_family, AF_INET6);
                        ck_assert_uint_eq(ntohs(sin6.sin6_port), 4500);
                        ck_assert_ptr_null(pt[WGPEER_A_RX_BYTES]);
                        assert_nested(pt[WGPEER_A_ALLOWEDIPS]);
                        nla_for_each_nested(ip, pt[WGPEER_A_ALLOWEDIPS], rem2) {
                                struct nlattr *at[WGALLOWEDIP_A_MAX + 1];

                                assert_nested(ip);
                                ck_assert_int_eq(nla_parse_nested(at, WGALLOWEDIP_A_MAX, ip, NULL), 0);
                                ck_assert_int_eq(nla_len(at[WGALLOWEDIP_A_FAMILY]), 2);
                                ck_assert_int_eq(nla_len(at[WGALLOWEDIP_A_CIDR_MASK]), 1);
                                if (j == 0) {
                                        ck_assert_uint_eq(nla_get_u16(at[WGALLOWEDIP_A_FAMILY]), AF_INET);
                                        ck_assert_int_eq(nla_len(at[WGALLOWEDIP_A_IPADDR]), 4);
                                        ck_assert_mem_eq(nla_data(at[WGALLOWEDIP_A_IPADDR]), "\x64\x60\x00\x01", 4);
                                        ck_assert_uint_eq(nla_get_u8(at[WGALLOWEDIP_A_CIDR_MASK]), 32);
                                } else {
                                        ck_assert_uint_eq(nla_get_u16(at[WGALLOWEDIP_A_FAMILY]), AF_INET6);
                                        ck_assert_int_eq(nla_len(at[WGALLOWEDIP_A_IPADDR]), 16);
                                        ck_assert_uint_eq(nla_get_u8(at[WGALLOWEDIP_A_CIDR_MASK]), 128);
                                }
                                j++;
                        }
                        ck_assert_int_eq(j, 2);
                } else {
                        /* A removal carries its key and the flag, nothing else. */
                        ck_assert_mem_eq(nla_data(pt[WGPEER_A_PUBLIC_KEY]), k2.data, WG_KEY_LEN);
                        ck_assert_uint_eq(nla_get_u32(pt[WGPEER_A_FLAGS]), WGPEER_F_REMOVE_ME);
                        ck_assert_ptr_null(pt[WGPEER_A_ALLOWEDIPS]);
                        ck_assert_ptr_null(pt[WGPEER_A_PRESHARED_KEY]);
                        ck_assert_ptr_null(pt[WGPEER_A_ENDPOINT]);
                        ck_assert_ptr_null(pt[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]);
                }
                i++;
        }
        ck_assert_int_eq(i, 2);
        wg_netlink_msgs_free(msgs, n);
}
END_TEST

START_TEST(test_build_set_empty)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nlattr *tb[WGDEVICE_A_MAX + 1];
        struct nl_msg **msgs = NULL;
        size_t n = 0;

        ck_assert_int_eq(wg_device_new("wg0", &d), 0);
        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, WG_NETLINK_MSG_SIZE, &msgs, &n), 0);
        ck_assert_uint_eq(n, 1);
        parse_set(msgs[0], tb);
        for (int a = 0; a <= WGDEVICE_A_MAX; a++)
                if (a != WGDEVICE_A_IFNAME)
                        ck_assert_msg(tb[a] == NULL, "unexpected attribute %d", a);
        wg_netlink_msgs_free(msgs, n);
}
END_TEST

/* 2,000 peers: split across messages, each peer whole and exactly once, in order. */
START_TEST(test_build_set_many_peers)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nl_msg **msgs = NULL;
        size_t n = 0, seen = 0;
        WgKey priv = key_n(3);

        ck_assert_int_eq(wg_device_new("club0", &d), 0);
        d->private_key = priv;
        d->flags = WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_REPLACE_PEERS;
        for (unsigned i = 0; i < 2000; i++) {
                WgKey k = key_n(i + 1000);
                WgPeer *p;
                WgAllowedIP ip = { .family = AF_INET, .cidr = 32 };

                ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
                ip.addr.in.s_addr = htonl(0x64600000u + i + 2);
                ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
                p->persistent_keepalive = 25;
                p->flags = WG_PEER_HAS_KEEPALIVE;
        }

        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, WG_NETLINK_MSG_SIZE, &msgs, &n), 0);
        ck_assert_uint_gt(n, 10);
        for (size_t m = 0; m < n; m++) {
                struct nlattr *tb[WGDEVICE_A_MAX + 1], *peer;
                int rem;

                ck_assert_uint_le(nlmsg_hdr(msgs[m])->nlmsg_len, WG_NETLINK_MSG_SIZE);
                parse_set(msgs[m], tb);
                /* Device attributes (and REPLACE_PEERS!) only in the first message. */
                ck_assert(m == 0 ? tb[WGDEVICE_A_PRIVATE_KEY] != NULL : tb[WGDEVICE_A_PRIVATE_KEY] == NULL);
                ck_assert(m == 0 ? tb[WGDEVICE_A_FLAGS] != NULL : tb[WGDEVICE_A_FLAGS] == NULL);
                ck_assert_ptr_nonnull(tb[WGDEVICE_A_PEERS]);
                nla_for_each_nested(peer, tb[WGDEVICE_A_PEERS], rem) {
                        struct nlattr *pt[WGPEER_A_MAX + 1], *ip;
                        int rem2, ips = 0;

                        ck_assert_int_eq(nla_parse_nested(pt, WGPEER_A_MAX, peer, NULL), 0);
                        ck_assert_mem_eq(nla_data(pt[WGPEER_A_PUBLIC_KEY]), key_n((unsigned) seen + 1000).data, WG_KEY_LEN);
                        ck_assert_uint_eq(nla_get_u16(pt[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]), 25);
                        nla_for_each_nested(ip, pt[WGPEER_A_ALLOWEDIPS], rem2)
                                ips++;
                        ck_assert_int_eq(ips, 1);
                        seen++;
                }
        }
        ck_assert_uint_eq(seen, 2000);
        wg_netlink_msgs_free(msgs, n);
}
END_TEST

/* One peer with more allowed IPs than fit: continued with its key, without REPLACE. */
START_TEST(test_build_set_split_peer)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nl_msg **msgs = NULL;
        size_t n = 0, total = 0;
        WgKey k = key_n(5);
        WgPeer *p;

        ck_assert_int_eq(wg_device_new("club0", &d), 0);
        ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
        p->flags = WG_PEER_REPLACE_ALLOWED_IPS | WG_PEER_UPDATE_ONLY | WG_PEER_HAS_KEEPALIVE;
        p->persistent_keepalive = 5;
        for (unsigned i = 0; i < 1000; i++) {
                WgAllowedIP ip = { .family = AF_INET6, .cidr = 128 };

                ip.addr.bytes[0] = 0xfd;
                ip.addr.bytes[14] = (uint8_t) (i >> 8);
                ip.addr.bytes[15] = (uint8_t) i;
                ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
        }

        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, 2048, &msgs, &n), 0);
        ck_assert_uint_gt(n, 10);
        for (size_t m = 0; m < n; m++) {
                struct nlattr *tb[WGDEVICE_A_MAX + 1], *peer, *ip;
                int rem, rem2, peers = 0;

                ck_assert_uint_le(nlmsg_hdr(msgs[m])->nlmsg_len, 2048);
                parse_set(msgs[m], tb);
                nla_for_each_nested(peer, tb[WGDEVICE_A_PEERS], rem) {
                        struct nlattr *pt[WGPEER_A_MAX + 1];

                        ck_assert_int_eq(nla_parse_nested(pt, WGPEER_A_MAX, peer, NULL), 0);
                        ck_assert_mem_eq(nla_data(pt[WGPEER_A_PUBLIC_KEY]), k.data, WG_KEY_LEN);
                        if (m == 0) {
                                ck_assert_uint_eq(nla_get_u32(pt[WGPEER_A_FLAGS]), WGPEER_F_REPLACE_ALLOWEDIPS | WGPEER_F_UPDATE_ONLY);
                                ck_assert_ptr_nonnull(pt[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]);
                        } else {
                                /* Replacing again would drop what the earlier messages added. */
                                ck_assert_uint_eq(nla_get_u32(pt[WGPEER_A_FLAGS]), WGPEER_F_UPDATE_ONLY);
                                ck_assert_ptr_null(pt[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]);
                        }
                        nla_for_each_nested(ip, pt[WGPEER_A_ALLOWEDIPS], rem2) {
                                struct nlattr *at[WGALLOWEDIP_A_MAX + 1];
                                const uint8_t *a;

                                ck_assert_int_eq(nla_parse_nested(at, WGALLOWEDIP_A_MAX, ip, NULL), 0);
                                a = nla_data(at[WGALLOWEDIP_A_IPADDR]);
                                ck_assert_uint_eq((unsigned) a[14] << 8 | a[15], total);   /* in order, none lost */
                                total++;
                        }
                        peers++;
                }
                ck_assert_int_eq(peers, 1);
        }
        ck_assert_uint_eq(total, 1000);
        wg_netlink_msgs_free(msgs, n);

        /* Too small for even one allowed IP. */
        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, 120, &msgs, &n), -EMSGSIZE);
}
END_TEST

/* ---- parsing ---- */

static struct nl_msg *reply_new(void) {
        struct nl_msg *msg = nlmsg_alloc_size(65536);

        ck_assert_ptr_nonnull(msg);
        ck_assert_ptr_nonnull(genlmsg_put(msg, 0, 1, FAMILY, 0, NLM_F_MULTI, WG_CMD_GET_DEVICE, WG_GENL_VERSION));
        return msg;
}

static void put_reply_peer(struct nl_msg *msg, unsigned key, bool full, unsigned ip_from, unsigned ip_to) {
        struct nlattr *peer, *ips, *ip;
        WgKey k = key_n(key);

        peer = nla_nest_start(msg, 0 | NLA_F_NESTED);
        nla_put(msg, WGPEER_A_PUBLIC_KEY, WG_KEY_LEN, k.data);
        if (full) {
                struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(51820) };
                struct { int64_t sec, nsec; } ts = { 1700000000, 5 };
                WgKey psk = key_n(key + 100);

                sin.sin_addr.s_addr = htonl(0xc0000201);
                nla_put(msg, WGPEER_A_PRESHARED_KEY, WG_KEY_LEN, psk.data);
                nla_put(msg, WGPEER_A_ENDPOINT, sizeof sin, &sin);
                nla_put_u16(msg, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 25);
                nla_put(msg, WGPEER_A_LAST_HANDSHAKE_TIME, sizeof ts, &ts);
                nla_put_u64(msg, WGPEER_A_RX_BYTES, 1234);
                nla_put_u64(msg, WGPEER_A_TX_BYTES, 5678);
                nla_put_u32(msg, WGPEER_A_PROTOCOL_VERSION, 1);
        }
        ips = nla_nest_start(msg, WGPEER_A_ALLOWEDIPS | NLA_F_NESTED);
        for (unsigned i = ip_from; i < ip_to; i++) {
                uint32_t a = htonl(0x0a000000u + i);

                ip = nla_nest_start(msg, 0 | NLA_F_NESTED);
                nla_put_u16(msg, WGALLOWEDIP_A_FAMILY, AF_INET);
                nla_put(msg, WGALLOWEDIP_A_IPADDR, 4, &a);
                nla_put_u8(msg, WGALLOWEDIP_A_CIDR_MASK, 32);
                nla_nest_end(msg, ip);
        }
        nla_nest_end(msg, ips);
        nla_nest_end(msg, peer);
}

static void put_reply_device(struct nl_msg *msg) {
        WgKey priv = key_n(1), pub = key_n(2);

        nla_put_u32(msg, WGDEVICE_A_IFINDEX, 7);
        nla_put_string(msg, WGDEVICE_A_IFNAME, "club0");
        nla_put(msg, WGDEVICE_A_PRIVATE_KEY, WG_KEY_LEN, priv.data);
        nla_put(msg, WGDEVICE_A_PUBLIC_KEY, WG_KEY_LEN, pub.data);
        nla_put_u16(msg, WGDEVICE_A_LISTEN_PORT, 51820);
        nla_put_u32(msg, WGDEVICE_A_FWMARK, 0);
}

START_TEST(test_parse_dump_split_peer)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nl_msg *m1 = reply_new(), *m2 = reply_new();
        struct nlattr *peers;
        char buf[WG_ENDPOINT_STRLEN];

        /* Message 1: the device, peer 10 whole, peer 11 with its first 3 allowed IPs. */
        put_reply_device(m1);
        peers = nla_nest_start(m1, WGDEVICE_A_PEERS | NLA_F_NESTED);
        put_reply_peer(m1, 10, true, 0, 2);
        put_reply_peer(m1, 11, true, 100, 103);
        nla_nest_end(m1, peers);
        /* Message 2 (as the kernel continues a dump): peer 11 again, only key + the rest, then peer 12. */
        peers = nla_nest_start(m2, WGDEVICE_A_PEERS | NLA_F_NESTED);
        put_reply_peer(m2, 11, false, 103, 105);
        put_reply_peer(m2, 12, false, 200, 201);
        nla_nest_end(m2, peers);

        ck_assert_int_eq(wg_netlink_parse_get(nlmsg_hdr(m1), &d), 0);
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(wg_netlink_parse_get(nlmsg_hdr(m2), &d), 0);

        ck_assert_str_eq(d->ifname, "club0");
        ck_assert_int_eq(d->ifindex, 7);
        ck_assert_uint_eq(d->listen_port, 51820);
        ck_assert(FLAGS_SET(d->flags, WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_PUBLIC_KEY | WG_DEVICE_HAS_LISTEN_PORT));
        ck_assert_mem_eq(d->private_key.data, key_n(1).data, WG_KEY_LEN);
        ck_assert_mem_eq(d->public_key.data, key_n(2).data, WG_KEY_LEN);

        ck_assert_uint_eq(d->n_peers, 3);
        ck_assert_uint_eq(d->peers[0]->n_allowed_ips, 2);
        ck_assert_uint_eq(d->peers[1]->n_allowed_ips, 5);         /* joined: 3 + 2 */
        for (unsigned i = 0; i < 5; i++)
                ck_assert_uint_eq(ntohl(d->peers[1]->allowed_ips[i].addr.in.s_addr), 0x0a000000u + 100 + i);
        ck_assert_uint_eq(d->peers[2]->n_allowed_ips, 1);
        ck_assert_mem_eq(d->peers[1]->public_key.data, key_n(11).data, WG_KEY_LEN);

        /* The continuation did not wipe what the first part said. */
        ck_assert(FLAGS_SET(d->peers[1]->flags, WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE));
        ck_assert_str_eq(wg_endpoint_to_string(&d->peers[1]->endpoint, buf), "192.0.2.1:51820");
        ck_assert_uint_eq(d->peers[1]->persistent_keepalive, 25);
        ck_assert_uint_eq(d->peers[1]->rx_bytes, 1234);
        ck_assert_uint_eq(d->peers[1]->tx_bytes, 5678);
        ck_assert_int_eq(d->peers[1]->last_handshake.tv_sec, 1700000000);
        ck_assert_uint_eq(d->peers[1]->protocol_version, 1);
        ck_assert(!FLAGS_SET(d->peers[2]->flags, WG_PEER_HAS_PRESHARED_KEY));

        nlmsg_free(m1);
        nlmsg_free(m2);
}
END_TEST

START_TEST(test_parse_dump_malformed)
{
        static const int cases = 8;

        for (int c = 0; c < cases; c++) {
                _cleanup_(wg_device_freep) WgDevice *d = NULL;
                struct nl_msg *m = reply_new();
                struct nlattr *peers, *peer, *ips, *ip;
                uint8_t short_key[31] = {};
                uint32_t a = 0;

                nla_put_string(m, WGDEVICE_A_IFNAME, "club0");
                switch (c) {
                case 0: /* a 31-byte public key */
                        nla_put(m, WGDEVICE_A_PUBLIC_KEY, sizeof short_key, short_key);
                        break;
                case 1: /* a 4-byte listen port */
                        nla_put_u32(m, WGDEVICE_A_LISTEN_PORT, 51820);
                        break;
                case 2: /* a peer without a public key */
                        peers = nla_nest_start(m, WGDEVICE_A_PEERS | NLA_F_NESTED);
                        peer = nla_nest_start(m, 0 | NLA_F_NESTED);
                        nla_put_u16(m, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, 1);
                        nla_nest_end(m, peer);
                        nla_nest_end(m, peers);
                        break;
                case 3: /* an IPv4 allowed IP with 16 address bytes */
                case 4: /* a /33 */
                case 5: /* an allowed IP without a family */
                        peers = nla_nest_start(m, WGDEVICE_A_PEERS | NLA_F_NESTED);
                        peer = nla_nest_start(m, 0 | NLA_F_NESTED);
                        nla_put(m, WGPEER_A_PUBLIC_KEY, WG_KEY_LEN, key_n(1).data);
                        ips = nla_nest_start(m, WGPEER_A_ALLOWEDIPS | NLA_F_NESTED);
                        ip = nla_nest_start(m, 0 | NLA_F_NESTED);
                        if (c != 5)
                                nla_put_u16(m, WGALLOWEDIP_A_FAMILY, AF_INET);
                        if (c == 3)
                                nla_put(m, WGALLOWEDIP_A_IPADDR, 16, key_n(1).data);
                        else
                                nla_put(m, WGALLOWEDIP_A_IPADDR, 4, &a);
                        nla_put_u8(m, WGALLOWEDIP_A_CIDR_MASK, c == 4 ? 33 : 32);
                        nla_nest_end(m, ip);
                        nla_nest_end(m, ips);
                        nla_nest_end(m, peer);
                        nla_nest_end(m, peers);
                        break;
                case 6: /* the wrong command */
                        ((struct genlmsghdr *) nlmsg_data(nlmsg_hdr(m)))->cmd = WG_CMD_SET_DEVICE;
                        break;
                case 7: /* a message cut short inside the genl header */
                        nlmsg_hdr(m)->nlmsg_len = NLMSG_HDRLEN + 2;
                        break;
                }
                ck_assert_msg(wg_netlink_parse_get(nlmsg_hdr(m), &d) == -EBADMSG, "case %d accepted", c);
                nlmsg_free(m);
        }
}
END_TEST

/* What the builder splits, the parser joins: SET messages re-labelled as GET replies. */
START_TEST(test_build_parse_roundtrip)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL, *back = NULL;
        struct nl_msg **msgs = NULL;
        size_t n = 0;

        ck_assert_int_eq(wg_device_new("club0", &d), 0);
        for (unsigned i = 0; i < 60; i++) {
                WgKey k = key_n(i + 1);
                WgPeer *p;

                ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
                for (unsigned j = 0; j < (i % 7) * 9; j++) {
                        WgAllowedIP ip = { .family = j % 2 ? AF_INET6 : AF_INET, .cidr = j % 2 ? 128 : 32 };

                        ip.addr.bytes[0] = (uint8_t) (10 + j % 2);
                        ip.addr.bytes[2] = (uint8_t) i;
                        ip.addr.bytes[3] = (uint8_t) j;
                        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
                }
        }
        ck_assert_int_eq(wg_netlink_build_set(d, FAMILY, 1024, &msgs, &n), 0);
        ck_assert_uint_gt(n, 5);
        for (size_t m = 0; m < n; m++) {
                ((struct genlmsghdr *) nlmsg_data(nlmsg_hdr(msgs[m])))->cmd = WG_CMD_GET_DEVICE;
                ck_assert_int_eq(wg_netlink_parse_get(nlmsg_hdr(msgs[m]), &back), 0);
        }
        wg_netlink_msgs_free(msgs, n);

        ck_assert_uint_eq(back->n_peers, d->n_peers);
        for (size_t i = 0; i < d->n_peers; i++) {
                ck_assert_mem_eq(back->peers[i]->public_key.data, d->peers[i]->public_key.data, WG_KEY_LEN);
                ck_assert_uint_eq(back->peers[i]->n_allowed_ips, d->peers[i]->n_allowed_ips);
                ck_assert_mem_eq(back->peers[i]->allowed_ips, d->peers[i]->allowed_ips,
                                 d->peers[i]->n_allowed_ips * sizeof(WgAllowedIP));
        }
}
END_TEST

START_TEST(test_build_get)
{
        struct nl_msg *msg = NULL;
        struct nlattr *tb[WGDEVICE_A_MAX + 1];
        struct genlmsghdr *g;

        ck_assert_int_eq(wg_netlink_build_get("club0", FAMILY, &msg), 0);
        ck_assert_uint_eq(nlmsg_hdr(msg)->nlmsg_flags & NLM_F_DUMP, NLM_F_DUMP);
        g = nlmsg_data(nlmsg_hdr(msg));
        ck_assert_uint_eq(g->cmd, WG_CMD_GET_DEVICE);
        ck_assert_int_eq(nla_parse(tb, WGDEVICE_A_MAX, genlmsg_attrdata(g, 0), genlmsg_attrlen(g, 0), NULL), 0);
        ck_assert_str_eq(nla_get_string(tb[WGDEVICE_A_IFNAME]), "club0");
        nlmsg_free(msg);
}
END_TEST

START_TEST(test_nle_to_errno)
{
        ck_assert_int_eq(nle_to_errno(0), 0);
        ck_assert_int_eq(nle_to_errno(-NLE_NODEV), -ENODEV);
        ck_assert_int_eq(nle_to_errno(NLE_NODEV), -ENODEV);
        ck_assert_int_eq(nle_to_errno(-NLE_PERM), -EPERM);
        ck_assert_int_eq(nle_to_errno(-NLE_EXIST), -EEXIST);
        ck_assert_int_eq(nle_to_errno(-NLE_OPNOTSUPP), -EOPNOTSUPP);
        ck_assert_int_eq(nle_to_errno(-NLE_NOMEM), -ENOMEM);
        ck_assert_int_eq(nle_to_errno(-NLE_FAILURE), -EIO);
        ck_assert_int_eq(nle_to_errno(-9999), -EIO);
}
END_TEST

int main(void) {
        Suite *s = suite_create("wg-netlink");
        TCase *tc = tcase_create("build");
        TCase *tp = tcase_create("parse");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_build_set_attributes);
        tcase_add_test(tc, test_build_set_empty);
        tcase_add_test(tc, test_build_set_many_peers);
        tcase_add_test(tc, test_build_set_split_peer);
        tcase_add_test(tc, test_build_get);
        suite_add_tcase(s, tc);
        tcase_add_test(tp, test_parse_dump_split_peer);
        tcase_add_test(tp, test_parse_dump_malformed);
        tcase_add_test(tp, test_build_parse_roundtrip);
        tcase_add_test(tp, test_nle_to_errno);
        suite_add_tcase(s, tp);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
