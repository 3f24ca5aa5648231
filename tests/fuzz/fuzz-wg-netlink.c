/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * WG_CMD_GET_DEVICE dump parsing (lib/wg-netlink.c) on arbitrary bytes, read as a
 * sequence of netlink messages the way the receive loop reads a datagram. A device
 * that parses and validates must survive being split into SET messages and joined
 * back again.
 */
#include <string.h>

#include <linux/wireguard.h>
#include <netlink/genl/genl.h>

#include "fuzz.h"
#include "macro.h"
#include "wg-netlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL, *back = NULL;
        _cleanup_(freep) uint8_t *buf = NULL;
        struct nl_msg **msgs = NULL;
        struct nlmsghdr *hdr;
        size_t n = 0;
        int len, r = 0;

        if (size > 256 * 1024)
                return 0;
        /* Netlink messages are 4-byte aligned in a datagram; copy into aligned memory. */
        buf = malloc(size ?: 1);
        check(buf);
        memcpy(buf, data, size);

        len = (int) size;
        for (hdr = (struct nlmsghdr *) buf; nlmsg_ok(hdr, len); hdr = nlmsg_next(hdr, &len)) {
                r = wg_netlink_parse_get(hdr, &d);
                check(r == 0 || r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
                if (r < 0)
                        break;
        }
        if (r < 0 || !d || wg_device_validate(d) < 0)
                return 0;

        for (size_t i = 0; i < d->n_peers; i++)
                d->peers[i]->flags &= WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE;
        r = wg_netlink_build_set(d, 0x1d, 1024, &msgs, &n);
        check(r == 0 && n >= 1);
        for (size_t m = 0; m < n; m++) {
                ((struct genlmsghdr *) nlmsg_data(nlmsg_hdr(msgs[m])))->cmd = WG_CMD_GET_DEVICE;
                check(wg_netlink_parse_get(nlmsg_hdr(msgs[m]), &back) == 0);
        }
        wg_netlink_msgs_free(msgs, n);

        check(back && back->n_peers == d->n_peers);
        for (size_t i = 0; i < d->n_peers; i++) {
                const WgPeer *a = d->peers[i], *b = back->peers[i];

                check(memcmp(a->public_key.data, b->public_key.data, WG_KEY_LEN) == 0);
                check(a->n_allowed_ips == b->n_allowed_ips);
                check(a->n_allowed_ips == 0 ||
                      memcmp(a->allowed_ips, b->allowed_ips, a->n_allowed_ips * sizeof(WgAllowedIP)) == 0);
                check(a->persistent_keepalive == b->persistent_keepalive);
        }
        return 0;
}
