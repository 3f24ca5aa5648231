/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A WG_CMD_GET_DEVICE dump captured from a real kernel (Debian 6.1, in the qemu
 * test VM, with `club-wg-tool dump-raw`), parsed the way wg_netlink_get_device()
 * reads it. The interface had two peers; the first one's 600 allowed IPs did not
 * fit in one 16 KiB message, so the kernel continued that peer in a second message.
 *
 * The capture is tests/fuzz/corpus/wg-netlink/kernel-6.1-split-peer (also a fuzz
 * seed); meson passes its path as the first argument. It holds the private key of
 * a throwaway test interface, given below.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/wireguard.h>
#include <stdio.h>
#include <sys/stat.h>

#include <netlink/attr.h>
#include <netlink/genl/genl.h>

#include "macro.h"
#include "wg-netlink.h"

#define CAPTURE_PRIVATE_KEY "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
#define CAPTURE_PEER_BIG    "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
#define CAPTURE_PEER_SMALL  "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

static const char *arg_capture;
static uint8_t *capture;
static size_t capture_len;

static void load(void) {
        struct stat st;
        int fd;

        ck_assert_ptr_nonnull(arg_capture);
        fd = open(arg_capture, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fstat(fd, &st), 0);
        capture_len = (size_t) st.st_size;
        capture = malloc(capture_len);
        ck_assert_ptr_nonnull(capture);
        ck_assert_int_eq(read(fd, capture, capture_len), (ssize_t) capture_len);
        close(fd);
}

/* The public key of the first peer in a message, and of the last. */
static void peer_keys(struct nlmsghdr *h, WgKey *first, WgKey *last, unsigned *n) {
        struct genlmsghdr *g = nlmsg_data(h);
        struct nlattr *tb[WGDEVICE_A_MAX + 1], *peer;
        int rem;

        *n = 0;
        ck_assert_int_eq(nla_parse(tb, WGDEVICE_A_MAX, genlmsg_attrdata(g, 0), genlmsg_attrlen(g, 0), NULL), 0);
        ck_assert_ptr_nonnull(tb[WGDEVICE_A_PEERS]);
        nla_for_each_nested(peer, tb[WGDEVICE_A_PEERS], rem) {
                struct nlattr *pt[WGPEER_A_MAX + 1];

                ck_assert_int_eq(nla_parse_nested(pt, WGPEER_A_MAX, peer, NULL), 0);
                memcpy(last->data, nla_data(pt[WGPEER_A_PUBLIC_KEY]), WG_KEY_LEN);
                if ((*n)++ == 0)
                        *first = *last;
        }
}

START_TEST(test_capture_is_split)
{
        struct nlmsghdr *h, *msgs[8];
        unsigned n = 0, np;
        int len;
        WgKey first, last1, last2, first2;

        load();
        len = (int) capture_len;
        for (h = (struct nlmsghdr *) capture; nlmsg_ok(h, len); h = nlmsg_next(h, &len))
                if (h->nlmsg_type != NLMSG_DONE) {
                        ck_assert_uint_lt(n, ELEMENTSOF(msgs));
                        msgs[n++] = h;
                }
        ck_assert_uint_eq(n, 2);
        /* The raw data really continues a peer: message 2 starts with message 1's last peer. */
        peer_keys(msgs[0], &first, &last1, &np);
        peer_keys(msgs[1], &first2, &last2, &np);
        ck_assert_mem_eq(first2.data, last1.data, WG_KEY_LEN);
        free(capture);
}
END_TEST

START_TEST(test_capture_parse)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        struct nlmsghdr *h;
        WgKey priv, pub, big, small;
        char buf[WG_ENDPOINT_STRLEN];
        const WgPeer *pb = NULL, *ps = NULL;
        int len;

        load();
        len = (int) capture_len;
        for (h = (struct nlmsghdr *) capture; nlmsg_ok(h, len); h = nlmsg_next(h, &len)) {
                if (h->nlmsg_type == NLMSG_DONE)
                        break;
                ck_assert_int_eq(wg_netlink_parse_get(h, &d), 0);
        }
        ck_assert_ptr_nonnull(d);

        ck_assert_int_eq(wg_key_from_base64(CAPTURE_PRIVATE_KEY, &priv), 0);
        ck_assert_int_eq(wg_key_public_from_private(&priv, &pub), 0);
        ck_assert_int_eq(wg_key_from_base64(CAPTURE_PEER_BIG, &big), 0);
        ck_assert_int_eq(wg_key_from_base64(CAPTURE_PEER_SMALL, &small), 0);

        ck_assert_str_eq(d->ifname, "ckS");
        ck_assert_int_gt(d->ifindex, 0);
        ck_assert_uint_eq(d->listen_port, 51820);
        ck_assert_uint_eq(d->fwmark, 7);
        ck_assert(wg_key_equal(&d->private_key, &priv));
        /* The kernel's public key is the one libcrypto derives. */
        ck_assert(wg_key_equal(&d->public_key, &pub));

        ck_assert_uint_eq(d->n_peers, 2);               /* joined: not 3 */
        pb = wg_device_find_peer(d, &big);
        ps = wg_device_find_peer(d, &small);
        ck_assert_ptr_nonnull(pb);
        ck_assert_ptr_nonnull(ps);

        ck_assert_uint_eq(pb->n_allowed_ips, 600);
        for (unsigned i = 0; i < 600; i++) {
                ck_assert_int_eq(pb->allowed_ips[i].family, AF_INET);
                ck_assert_uint_eq(pb->allowed_ips[i].cidr, 32);
                ck_assert_uint_eq(ntohl(pb->allowed_ips[i].addr.in.s_addr) & 0xffff0000u, 0x0a010000u);
        }
        /* All 600 distinct. */
        for (unsigned i = 1; i < 600; i++)
                ck_assert_uint_ne(pb->allowed_ips[i].addr.in.s_addr, pb->allowed_ips[i - 1].addr.in.s_addr);
        ck_assert(FLAGS_SET(pb->flags, WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE));
        ck_assert_str_eq(wg_endpoint_to_string(&pb->endpoint, buf), "192.0.2.1:51820");
        ck_assert_uint_eq(pb->persistent_keepalive, 25);
        ck_assert(!FLAGS_SET(pb->flags, WG_PEER_HAS_PRESHARED_KEY));
        ck_assert_uint_eq(pb->protocol_version, 1);

        ck_assert_uint_eq(ps->n_allowed_ips, 2);
        ck_assert_uint_eq(ps->persistent_keepalive, 0);
        ck_assert(!FLAGS_SET(ps->flags, WG_PEER_HAS_ENDPOINT));
        wg_key_wipe(&priv);
        free(capture);
}
END_TEST

int main(int argc, char *argv[]) {
        Suite *s = suite_create("wg-netlink-capture");
        TCase *tc = tcase_create("kernel-6.1");
        SRunner *sr;
        int failed;

        if (argc != 2) {
                fprintf(stderr, "Usage: %s CAPTURE-FILE\n", argv[0]);
                return 2;
        }
        arg_capture = argv[1];
        tcase_add_test(tc, test_capture_is_split);
        tcase_add_test(tc, test_capture_parse);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
