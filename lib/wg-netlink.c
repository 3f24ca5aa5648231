/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <linux/wireguard.h>
#include <string.h>

#include <netlink/attr.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include "log.h"
#include "macro.h"
#include "rtnl-link.h"
#include "wg-netlink.h"

/* ---- building WG_CMD_SET_DEVICE --------------------------------------------- */

static struct nl_msg *set_msg_new(const WgDevice *change, int family_id, size_t msg_size, bool first) {
        struct nl_msg *msg;

        msg = nlmsg_alloc_size(msg_size);
        if (!msg)
                return NULL;
        if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family_id, 0, NLM_F_REQUEST | NLM_F_ACK,
                         WG_CMD_SET_DEVICE, WG_GENL_VERSION) ||
            nla_put_string(msg, WGDEVICE_A_IFNAME, change->ifname) < 0)
                goto fail;
        if (!first)
                return msg;
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_PRIVATE_KEY) &&
            nla_put(msg, WGDEVICE_A_PRIVATE_KEY, WG_KEY_LEN, change->private_key.data) < 0)
                goto fail;
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_LISTEN_PORT) &&
            nla_put_u16(msg, WGDEVICE_A_LISTEN_PORT, change->listen_port) < 0)
                goto fail;
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_FWMARK) &&
            nla_put_u32(msg, WGDEVICE_A_FWMARK, change->fwmark) < 0)
                goto fail;
        if (FLAGS_SET(change->flags, WG_DEVICE_REPLACE_PEERS) &&
            nla_put_u32(msg, WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS) < 0)
                goto fail;
        return msg;
fail:
        netlink_msg_free_secure(msg);
        return NULL;
}

static int put_allowed_ip(struct nl_msg *msg, const WgAllowedIP *ip) {
        struct nlattr *nest;

        nest = nla_nest_start(msg, 0 | NLA_F_NESTED);
        if (!nest)
                return -EMSGSIZE;
        if (nla_put_u16(msg, WGALLOWEDIP_A_FAMILY, (uint16_t) ip->family) < 0 ||
            nla_put(msg, WGALLOWEDIP_A_IPADDR, ip->family == AF_INET ? 4 : 16, ip->addr.bytes) < 0 ||
            nla_put_u8(msg, WGALLOWEDIP_A_CIDR_MASK, ip->cidr) < 0) {
                nla_nest_cancel(msg, nest);
                return -EMSGSIZE;
        }
        nla_nest_end(msg, nest);
        return 0;
}

/*
 * Put as much of peer p as fits, starting at allowed IP *next_ip.
 * Returns 1 if the peer is complete, 0 if it must be continued in another
 * message (*next_ip advanced), -EMSGSIZE if nothing of it fit (message unchanged).
 */
static int put_peer(struct nl_msg *msg, const WgPeer *p, size_t *next_ip) {
        struct nlattr *nest, *ips;
        bool continuation = *next_ip > 0;
        uint32_t flags = 0;
        size_t i = *next_ip;

        nest = nla_nest_start(msg, 0 | NLA_F_NESTED);
        if (!nest)
                return -EMSGSIZE;
        if (nla_put(msg, WGPEER_A_PUBLIC_KEY, WG_KEY_LEN, p->public_key.data) < 0)
                goto cancel;

        if (FLAGS_SET(p->flags, WG_PEER_REMOVE))
                flags |= WGPEER_F_REMOVE_ME;
        if (FLAGS_SET(p->flags, WG_PEER_UPDATE_ONLY))
                flags |= WGPEER_F_UPDATE_ONLY;
        if (FLAGS_SET(p->flags, WG_PEER_REPLACE_ALLOWED_IPS) && !continuation)
                flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
        if (flags != 0 && nla_put_u32(msg, WGPEER_A_FLAGS, flags) < 0)
                goto cancel;

        if (FLAGS_SET(p->flags, WG_PEER_REMOVE)) {
                nla_nest_end(msg, nest);
                return 1;
        }

        if (!continuation) {
                if (FLAGS_SET(p->flags, WG_PEER_HAS_PRESHARED_KEY) &&
                    nla_put(msg, WGPEER_A_PRESHARED_KEY, WG_KEY_LEN, p->preshared_key.data) < 0)
                        goto cancel;
                if (FLAGS_SET(p->flags, WG_PEER_HAS_ENDPOINT) &&
                    nla_put(msg, WGPEER_A_ENDPOINT, (int) wg_endpoint_len(&p->endpoint), &p->endpoint) < 0)
                        goto cancel;
                if (FLAGS_SET(p->flags, WG_PEER_HAS_KEEPALIVE) &&
                    nla_put_u16(msg, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, p->persistent_keepalive) < 0)
                        goto cancel;
        }

        if (i < p->n_allowed_ips) {
                ips = nla_nest_start(msg, WGPEER_A_ALLOWEDIPS | NLA_F_NESTED);
                if (!ips)
                        goto cancel;
                for (; i < p->n_allowed_ips; i++)
                        if (put_allowed_ip(msg, &p->allowed_ips[i]) < 0)
                                break;
                if (i == *next_ip)
                        /* Not a single allowed IP fit: move the whole rest to the next message,
                         * rather than create the peer without its allowed IPs first. */
                        goto cancel;
                nla_nest_end(msg, ips);
        }
        nla_nest_end(msg, nest);
        *next_ip = i;
        return i >= p->n_allowed_ips ? 1 : 0;

cancel:
        nla_nest_cancel(msg, nest);
        return -EMSGSIZE;
}

void wg_netlink_msgs_free(struct nl_msg **msgs, size_t n) {
        if (!msgs)
                return;
        for (size_t i = 0; i < n; i++)
                netlink_msg_free_secure(msgs[i]);
        free(msgs);
}

int wg_netlink_build_set(const WgDevice *change, int family_id, size_t msg_size,
                         struct nl_msg ***ret, size_t *ret_n) {
        struct nl_msg **msgs = NULL;
        size_t n = 0, pi = 0, next_ip = 0;
        int r;

        assert(change && ret && ret_n);

        for (;;) {
                struct nl_msg *msg, **t;
                struct nlattr *peers;
                size_t in_msg = 0;

                t = reallocarray(msgs, n + 1, sizeof *msgs);
                if (!t) {
                        r = -ENOMEM;
                        goto fail;
                }
                msgs = t;
                msg = set_msg_new(change, family_id, msg_size, n == 0);
                if (!msg) {
                        r = -ENOMEM;
                        goto fail;
                }
                msgs[n++] = msg;

                if (pi >= change->n_peers)
                        break;

                peers = nla_nest_start(msg, WGDEVICE_A_PEERS | NLA_F_NESTED);
                if (!peers) {
                        r = -EMSGSIZE;
                        goto fail;
                }
                while (pi < change->n_peers) {
                        r = put_peer(msg, change->peers[pi], &next_ip);
                        if (r == -EMSGSIZE)
                                break;
                        in_msg++;
                        if (r == 0)
                                break;          /* continued in the next message */
                        pi++;
                        next_ip = 0;
                }
                if (in_msg == 0) {
                        /* Even an empty message cannot hold this peer's first allowed IP. */
                        r = -EMSGSIZE;
                        goto fail;
                }
                nla_nest_end(msg, peers);
                if (pi >= change->n_peers)
                        break;
        }

        *ret = msgs;
        *ret_n = n;
        return 0;

fail:
        wg_netlink_msgs_free(msgs, n);
        return r;
}

int wg_netlink_build_get(const char *ifname, int family_id, struct nl_msg **ret) {
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;

        assert(ifname && ret);
        msg = nlmsg_alloc();
        if (!msg)
                return -ENOMEM;
        if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family_id, 0, NLM_F_REQUEST | NLM_F_DUMP,
                         WG_CMD_GET_DEVICE, WG_GENL_VERSION) ||
            nla_put_string(msg, WGDEVICE_A_IFNAME, ifname) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(msg);
        return 0;
}

/* ---- parsing WG_CMD_GET_DEVICE replies ---------------------------------------- */

static int attr_fixed(const struct nlattr *a, int len) {
        return a && nla_len(a) == len ? 0 : -EBADMSG;
}

static int parse_allowed_ip(struct nlattr *a, WgPeer *p) {
        struct nlattr *t[WGALLOWEDIP_A_MAX + 1];
        WgAllowedIP ip = {};
        uint16_t family;
        int r;

        if (nla_parse_nested(t, WGALLOWEDIP_A_MAX, a, NULL) < 0)
                return -EBADMSG;
        if (attr_fixed(t[WGALLOWEDIP_A_FAMILY], 2) < 0 || attr_fixed(t[WGALLOWEDIP_A_CIDR_MASK], 1) < 0 ||
            !t[WGALLOWEDIP_A_IPADDR])
                return -EBADMSG;
        family = nla_get_u16(t[WGALLOWEDIP_A_FAMILY]);
        if (family == AF_INET && nla_len(t[WGALLOWEDIP_A_IPADDR]) == 4)
                memcpy(&ip.addr.in, nla_data(t[WGALLOWEDIP_A_IPADDR]), 4);
        else if (family == AF_INET6 && nla_len(t[WGALLOWEDIP_A_IPADDR]) == 16)
                memcpy(&ip.addr.in6, nla_data(t[WGALLOWEDIP_A_IPADDR]), 16);
        else
                return -EBADMSG;
        ip.family = family;
        ip.cidr = nla_get_u8(t[WGALLOWEDIP_A_CIDR_MASK]);
        r = wg_peer_add_allowed_ip(p, &ip);
        return r == -EINVAL ? -EBADMSG : r;
}

static int parse_peer(struct nlattr *a, WgDevice *d, bool first_in_msg) {
        struct nlattr *t[WGPEER_A_MAX + 1], *ip;
        WgPeer *p = NULL;
        WgKey key;
        int r, rem;

        if (nla_parse_nested(t, WGPEER_A_MAX, a, NULL) < 0)
                return -EBADMSG;
        if (attr_fixed(t[WGPEER_A_PUBLIC_KEY], WG_KEY_LEN) < 0)
                return -EBADMSG;
        memcpy(key.data, nla_data(t[WGPEER_A_PUBLIC_KEY]), WG_KEY_LEN);

        /* The kernel continues a peer that did not fit at the start of the next message. */
        if (first_in_msg && d->n_peers > 0 && wg_key_equal(&d->peers[d->n_peers - 1]->public_key, &key))
                p = d->peers[d->n_peers - 1];
        else {
                r = wg_device_add_peer(d, &key, &p);
                if (r < 0)
                        return r;
        }

        if (t[WGPEER_A_PRESHARED_KEY]) {
                if (attr_fixed(t[WGPEER_A_PRESHARED_KEY], WG_KEY_LEN) < 0)
                        return -EBADMSG;
                memcpy(p->preshared_key.data, nla_data(t[WGPEER_A_PRESHARED_KEY]), WG_KEY_LEN);
                if (!wg_key_is_zero(&p->preshared_key))
                        p->flags |= WG_PEER_HAS_PRESHARED_KEY;
        }
        if (t[WGPEER_A_ENDPOINT]) {
                int len = nla_len(t[WGPEER_A_ENDPOINT]);
                const struct sockaddr *sa = nla_data(t[WGPEER_A_ENDPOINT]);

                if (len < (int) sizeof(sa_family_t))
                        return -EBADMSG;
                if (wg_peer_set_endpoint(p, sa, (socklen_t) len) < 0)
                        return -EBADMSG;
        }
        if (t[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]) {
                if (attr_fixed(t[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL], 2) < 0)
                        return -EBADMSG;
                p->persistent_keepalive = nla_get_u16(t[WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL]);
                p->flags |= WG_PEER_HAS_KEEPALIVE;
        }
        if (t[WGPEER_A_LAST_HANDSHAKE_TIME]) {
                struct { int64_t sec; int64_t nsec; } ts;

                if (attr_fixed(t[WGPEER_A_LAST_HANDSHAKE_TIME], sizeof ts) < 0)
                        return -EBADMSG;
                memcpy(&ts, nla_data(t[WGPEER_A_LAST_HANDSHAKE_TIME]), sizeof ts);
                p->last_handshake = (struct timespec) { .tv_sec = (time_t) ts.sec, .tv_nsec = (long) ts.nsec };
        }
        if (t[WGPEER_A_RX_BYTES]) {
                if (attr_fixed(t[WGPEER_A_RX_BYTES], 8) < 0)
                        return -EBADMSG;
                p->rx_bytes = nla_get_u64(t[WGPEER_A_RX_BYTES]);
        }
        if (t[WGPEER_A_TX_BYTES]) {
                if (attr_fixed(t[WGPEER_A_TX_BYTES], 8) < 0)
                        return -EBADMSG;
                p->tx_bytes = nla_get_u64(t[WGPEER_A_TX_BYTES]);
        }
        if (t[WGPEER_A_PROTOCOL_VERSION]) {
                if (attr_fixed(t[WGPEER_A_PROTOCOL_VERSION], 4) < 0)
                        return -EBADMSG;
                p->protocol_version = nla_get_u32(t[WGPEER_A_PROTOCOL_VERSION]);
        }
        if (t[WGPEER_A_ALLOWEDIPS])
                nla_for_each_nested(ip, t[WGPEER_A_ALLOWEDIPS], rem) {
                        r = parse_allowed_ip(ip, p);
                        if (r < 0)
                                return r;
                }
        return 0;
}

int wg_netlink_parse_get(const struct nlmsghdr *hdr, WgDevice **dev) {
        struct nlattr *t[WGDEVICE_A_MAX + 1], *peer;
        _cleanup_(wg_device_freep) WgDevice *fresh = NULL;
        struct genlmsghdr *gnlh;
        WgDevice *d;
        bool first = true;
        int r, rem;

        assert(hdr && dev);
        if (hdr->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN || !genlmsg_valid_hdr((struct nlmsghdr *) hdr, 0))
                return -EBADMSG;
        gnlh = nlmsg_data(hdr);
        if (gnlh->cmd != WG_CMD_GET_DEVICE)
                return -EBADMSG;
        if (nla_parse(t, WGDEVICE_A_MAX, genlmsg_attrdata(gnlh, 0), genlmsg_attrlen(gnlh, 0), NULL) < 0)
                return -EBADMSG;

        d = *dev;
        if (!d) {
                const char *name = "";

                if (t[WGDEVICE_A_IFNAME]) {
                        name = nla_data(t[WGDEVICE_A_IFNAME]);
                        if (nla_len(t[WGDEVICE_A_IFNAME]) < 1 ||
                            strnlen(name, (size_t) nla_len(t[WGDEVICE_A_IFNAME])) >= (size_t) nla_len(t[WGDEVICE_A_IFNAME]))
                                return -EBADMSG;
                }
                r = wg_device_new(isempty(name) ? "unknown" : name, &fresh);
                if (r < 0)
                        return r == -ENOMEM ? r : -EBADMSG;
                d = fresh;
        }

        if (t[WGDEVICE_A_IFINDEX]) {
                if (attr_fixed(t[WGDEVICE_A_IFINDEX], 4) < 0)
                        return -EBADMSG;
                d->ifindex = (int) nla_get_u32(t[WGDEVICE_A_IFINDEX]);
        }
        if (t[WGDEVICE_A_PRIVATE_KEY]) {
                if (attr_fixed(t[WGDEVICE_A_PRIVATE_KEY], WG_KEY_LEN) < 0)
                        return -EBADMSG;
                memcpy(d->private_key.data, nla_data(t[WGDEVICE_A_PRIVATE_KEY]), WG_KEY_LEN);
                if (!wg_key_is_zero(&d->private_key))
                        d->flags |= WG_DEVICE_HAS_PRIVATE_KEY;
        }
        if (t[WGDEVICE_A_PUBLIC_KEY]) {
                if (attr_fixed(t[WGDEVICE_A_PUBLIC_KEY], WG_KEY_LEN) < 0)
                        return -EBADMSG;
                memcpy(d->public_key.data, nla_data(t[WGDEVICE_A_PUBLIC_KEY]), WG_KEY_LEN);
                if (!wg_key_is_zero(&d->public_key))
                        d->flags |= WG_DEVICE_HAS_PUBLIC_KEY;
        }
        if (t[WGDEVICE_A_LISTEN_PORT]) {
                if (attr_fixed(t[WGDEVICE_A_LISTEN_PORT], 2) < 0)
                        return -EBADMSG;
                d->listen_port = nla_get_u16(t[WGDEVICE_A_LISTEN_PORT]);
                d->flags |= WG_DEVICE_HAS_LISTEN_PORT;
        }
        if (t[WGDEVICE_A_FWMARK]) {
                if (attr_fixed(t[WGDEVICE_A_FWMARK], 4) < 0)
                        return -EBADMSG;
                d->fwmark = nla_get_u32(t[WGDEVICE_A_FWMARK]);
                d->flags |= WG_DEVICE_HAS_FWMARK;
        }
        if (t[WGDEVICE_A_PEERS])
                nla_for_each_nested(peer, t[WGDEVICE_A_PEERS], rem) {
                        r = parse_peer(peer, d, first);
                        if (r < 0)
                                return r;
                        first = false;
                }

        if (fresh)
                *dev = TAKE_PTR(fresh);
        return 0;
}

/* ---- talking to the kernel ----------------------------------------------------- */

int wg_netlink_resolve(struct nl_sock *genl, int *ret) {
        int r;

        assert(genl && ret);
        r = genl_ctrl_resolve(genl, WG_GENL_NAME);
        if (r < 0) {
                if (r == -NLE_OBJ_NOTFOUND)
                        return log_debug_errno(-EPROTONOSUPPORT, "The kernel has no generic netlink family \"%s\".",
                                               WG_GENL_NAME);
                return log_debug_errno(nle_to_errno(r), "Failed to resolve generic netlink family \"%s\": %s",
                                       WG_GENL_NAME, nl_geterror(r));
        }
        *ret = r;
        return 0;
}

/* The kernel says EOPNOTSUPP when the named link exists but is not a WireGuard link. */
static int map_kernel_error(int r) {
        return r == -EOPNOTSUPP ? -EMEDIUMTYPE : r;
}

int wg_netlink_get_device(struct nl_sock *genl, int family_id, const char *ifname, WgDevice **ret) {
        _cleanup_(nlmsg_freep) struct nl_msg *req = NULL;
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        uint32_t seq;
        bool done = false;
        int r, error = 0;

        assert(genl && ifname && ret);
        r = wg_netlink_build_get(ifname, family_id, &req);
        if (r < 0)
                return r;
        /* A dump ends with NLMSG_DONE; an ACK on top would only be left queued. */
        nl_complete_msg(genl, req);
        nlmsg_hdr(req)->nlmsg_flags &= ~NLM_F_ACK;
        r = nl_send(genl, req);
        if (r < 0)
                return nle_to_errno(r);
        seq = nlmsg_hdr(req)->nlmsg_seq;

        /* Our own receive loop rather than nl_recvmsgs(): each buffer holds the private
         * key, and must be wiped before it is freed. */
        while (!done) {
                struct sockaddr_nl peer = {};
                unsigned char *buf = NULL;
                struct nlmsghdr *hdr;
                int n, len;

                n = nl_recv(genl, &peer, &buf, NULL);
                if (n < 0)
                        return nle_to_errno(n);
                if (n == 0) {
                        free(buf);
                        return -ECONNRESET;
                }
                len = n;
                for (hdr = (struct nlmsghdr *) buf; nlmsg_ok(hdr, len); hdr = nlmsg_next(hdr, &len)) {
                        if (hdr->nlmsg_seq != seq)
                                continue;       /* a late answer to an earlier request */
                        if (hdr->nlmsg_type == NLMSG_DONE) {
                                /* A dump that fails midway reports its error here. */
                                if (hdr->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
                                        int e;

                                        memcpy(&e, NLMSG_DATA(hdr), sizeof e);
                                        if (e < 0 && error == 0)
                                                error = e;
                                }
                                done = true;
                                break;
                        }
                        if (hdr->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = nlmsg_data(hdr);

                                if (hdr->nlmsg_len < NLMSG_LENGTH(sizeof *e))
                                        error = error ?: -EBADMSG;
                                else if (e->error < 0)
                                        error = error ?: e->error;
                                done = true;
                                break;
                        }
                        if (hdr->nlmsg_type == NLMSG_NOOP || hdr->nlmsg_type == NLMSG_OVERRUN)
                                continue;
                        if (hdr->nlmsg_type != (uint16_t) family_id) {
                                error = error ?: -EBADMSG;
                                continue;
                        }
                        if (error == 0) {
                                r = wg_netlink_parse_get(hdr, &d);
                                if (r < 0)
                                        error = r;      /* keep reading to drain the dump */
                        }
                }
                explicit_bzero(buf, (size_t) n);
                free(buf);
        }

        if (error < 0)
                return log_debug_errno(map_kernel_error(error), "WG_CMD_GET_DEVICE %s failed: %m", ifname);
        if (!d)
                return -EBADMSG;
        *ret = TAKE_PTR(d);
        return 0;
}

int wg_netlink_set_device(struct nl_sock *genl, int family_id, const WgDevice *change) {
        struct nl_msg **msgs = NULL;
        size_t n = 0;
        int r;

        assert(genl && change);
        r = wg_netlink_build_set(change, family_id, WG_NETLINK_MSG_SIZE, &msgs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = netlink_transact(genl, msgs[i]);
                if (r < 0) {
                        log_debug_errno(r, "WG_CMD_SET_DEVICE %s (message %zu of %zu) failed: %m",
                                        change->ifname, i + 1, n);
                        break;
                }
        }
        wg_netlink_msgs_free(msgs, n);
        return map_kernel_error(r);
}
