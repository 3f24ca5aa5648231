/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <string.h>

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>

#include "log.h"
#include "macro.h"
#include "rtnl-link.h"

CLUB_DEFINE_CLEANUP_VOID(struct nl_cb *, nl_cb_put, nl_cb_putp);
CLUB_DEFINE_CLEANUP_VOID(struct nl_cache *, nl_cache_free, nl_cache_freep);
CLUB_DEFINE_CLEANUP_VOID(struct nl_addr *, nl_addr_put, nl_addr_putp);
CLUB_DEFINE_CLEANUP_VOID(struct rtnl_link *, rtnl_link_put, rtnl_link_putp);
CLUB_DEFINE_CLEANUP_VOID(struct rtnl_addr *, rtnl_addr_put, rtnl_addr_putp);
CLUB_DEFINE_CLEANUP_VOID(struct rtnl_route *, rtnl_route_put, rtnl_route_putp);

int nle_to_errno(int nle) {
        static const int map[] = {
                [NLE_SUCCESS] = 0,
                [NLE_FAILURE] = EIO,
                [NLE_INTR] = EINTR,
                [NLE_BAD_SOCK] = EBADF,
                [NLE_AGAIN] = EAGAIN,
                [NLE_NOMEM] = ENOMEM,
                [NLE_EXIST] = EEXIST,
                [NLE_INVAL] = EINVAL,
                [NLE_RANGE] = ERANGE,
                [NLE_MSGSIZE] = EMSGSIZE,
                [NLE_OPNOTSUPP] = EOPNOTSUPP,
                [NLE_AF_NOSUPPORT] = EAFNOSUPPORT,
                [NLE_OBJ_NOTFOUND] = ENOENT,
                [NLE_NOATTR] = ENODATA,
                [NLE_MISSING_ATTR] = EBADMSG,
                [NLE_AF_MISMATCH] = EAFNOSUPPORT,
                [NLE_SEQ_MISMATCH] = EILSEQ,
                [NLE_MSG_OVERFLOW] = EOVERFLOW,
                [NLE_MSG_TRUNC] = EMSGSIZE,
                [NLE_NOADDR] = EADDRNOTAVAIL,
                [NLE_SRCRT_NOSUPPORT] = EOPNOTSUPP,
                [NLE_MSG_TOOSHORT] = EBADMSG,
                [NLE_MSGTYPE_NOSUPPORT] = EOPNOTSUPP,
                [NLE_OBJ_MISMATCH] = EINVAL,
                [NLE_NOCACHE] = ENOENT,
                [NLE_BUSY] = EBUSY,
                [NLE_PROTO_MISMATCH] = EPROTONOSUPPORT,
                [NLE_NOACCESS] = EACCES,
                [NLE_PERM] = EPERM,
                [NLE_PKTLOC_FILE] = ENOENT,
                [NLE_PARSE_ERR] = EINVAL,
                [NLE_NODEV] = ENODEV,
                [NLE_IMMUTABLE] = EROFS,
                [NLE_DUMP_INTR] = EINTR,
                [NLE_ATTRSIZE] = EBADMSG,
        };
        int n = abs(nle);

        if (nle == 0)
                return 0;
        if ((size_t) n < ELEMENTSOF(map) && map[n] != 0)
                return -map[n];
        return -EIO;
}

int netlink_open(int protocol, struct nl_sock **ret) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        int r;

        assert(ret);
        sk = nl_socket_alloc();
        if (!sk)
                return -ENOMEM;
        r = nl_connect(sk, protocol);           /* SOCK_CLOEXEC */
        if (r < 0)
                return log_debug_errno(nle_to_errno(r), "Failed to connect netlink socket (protocol %d): %s",
                                       protocol, nl_geterror(r));
        /* Large dumps: peek at each datagram's size and grow the buffer, never truncate. */
        nl_socket_enable_msg_peek(sk);
        r = nl_socket_set_buffer_size(sk, 1024 * 1024, 1024 * 1024);
        if (r < 0)
                log_debug("Failed to enlarge netlink socket buffers, ignoring: %s", nl_geterror(r));
        *ret = TAKE_PTR(sk);
        return 0;
}

void netlink_msg_free_secure(struct nl_msg *msg) {
        if (!msg)
                return;
        explicit_bzero(nlmsg_hdr(msg), nlmsg_get_max_size(msg));
        nlmsg_free(msg);
}

static int transact_on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg) {
        int *error = arg;

        *error = e->error < 0 ? e->error : -EIO;
        return NL_STOP;
}

static int transact_on_ack(struct nl_msg *msg, void *arg) {
        bool *acked = arg;

        *acked = true;
        return NL_STOP;
}

/* Skip, rather than fail on, answers to earlier requests still queued on the socket
 * (say, after a request that timed out or was interrupted). */
static int transact_seq_check(struct nl_msg *msg, void *arg) {
        const uint32_t *seq = arg;

        return nlmsg_hdr(msg)->nlmsg_seq == *seq ? NL_OK : NL_SKIP;
}

int netlink_transact(struct nl_sock *sk, struct nl_msg *msg) {
        _cleanup_(nl_cb_putp) struct nl_cb *cb = NULL;
        struct nl_cb *orig;
        bool acked = false;
        uint32_t seq;
        int error = 0, r;

        assert(sk && msg);
        orig = nl_socket_get_cb(sk);
        cb = nl_cb_clone(orig);
        nl_cb_put(orig);
        if (!cb)
                return -ENOMEM;

        nlmsg_hdr(msg)->nlmsg_flags |= NLM_F_ACK;
        r = nl_send_auto(sk, msg);
        if (r < 0)
                return nle_to_errno(r);
        seq = nlmsg_hdr(msg)->nlmsg_seq;

        nl_cb_err(cb, NL_CB_CUSTOM, transact_on_error, &error);
        nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, transact_on_ack, &acked);
        nl_cb_set(cb, NL_CB_SEQ_CHECK, NL_CB_CUSTOM, transact_seq_check, &seq);
        while (!acked && error == 0) {
                r = nl_recvmsgs(sk, cb);
                if (error < 0)
                        return error;
                if (r < 0)
                        return nle_to_errno(r);
        }
        return error;
}

static void link_info_from_object(struct rtnl_link *l, LinkInfo *ret) {
        const char *name = rtnl_link_get_name(l), *kind = rtnl_link_get_type(l);

        *ret = (LinkInfo) {
                .ifindex = rtnl_link_get_ifindex(l),
                .mtu = rtnl_link_get_mtu(l),
                .flags = rtnl_link_get_flags(l),
        };
        if (name)
                snprintf(ret->ifname, sizeof ret->ifname, "%s", name);
        if (kind)
                snprintf(ret->kind, sizeof ret->kind, "%s", kind);
}

int link_get(struct nl_sock *rtnl, const char *ifname, LinkInfo *ret) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *l = NULL;
        int r;

        assert(rtnl && ifname);
        if (strlen(ifname) >= IFNAMSIZ)
                return -ENAMETOOLONG;
        r = rtnl_link_get_kernel(rtnl, 0, ifname, &l);
        if (r < 0) {
                r = nle_to_errno(r);
                return r == -ENOENT ? -ENODEV : r;
        }
        if (!l)
                return -ENODEV;
        if (ret)
                link_info_from_object(l, ret);
        return 0;
}

int link_create(struct nl_sock *rtnl, const char *ifname, const char *kind, LinkInfo *ret) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *l = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int r;

        assert(rtnl && ifname && kind);
        if (strlen(ifname) >= IFNAMSIZ)
                return -ENAMETOOLONG;
        l = rtnl_link_alloc();
        if (!l)
                return -ENOMEM;
        rtnl_link_set_name(l, ifname);
        r = rtnl_link_set_type(l, kind);
        if (r < 0)
                return nle_to_errno(r);
        r = rtnl_link_build_add_request(l, NLM_F_CREATE | NLM_F_EXCL, &msg);
        if (r < 0)
                return nle_to_errno(r);
        r = netlink_transact(rtnl, msg);
        if (r < 0)
                return log_debug_errno(r, "Failed to create link %s of kind %s: %m", ifname, kind);
        /* The request object has no ifindex: ask the kernel for the link as it is now. */
        return link_get(rtnl, ifname, ret);
}

int link_delete(struct nl_sock *rtnl, int ifindex) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *l = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int r;

        assert(rtnl && ifindex > 0);
        l = rtnl_link_alloc();
        if (!l)
                return -ENOMEM;
        rtnl_link_set_ifindex(l, ifindex);
        r = rtnl_link_build_delete_request(l, &msg);
        if (r < 0)
                return nle_to_errno(r);
        return netlink_transact(rtnl, msg);
}

static int link_change(struct nl_sock *rtnl, int ifindex, struct rtnl_link *changes) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *orig = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int r;

        orig = rtnl_link_alloc();
        if (!orig)
                return -ENOMEM;
        rtnl_link_set_ifindex(orig, ifindex);
        r = rtnl_link_build_change_request(orig, changes, 0, &msg);
        if (r < 0)
                return nle_to_errno(r);
        return netlink_transact(rtnl, msg);
}

int link_set_mtu(struct nl_sock *rtnl, int ifindex, uint32_t mtu) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *changes = NULL;

        assert(rtnl && ifindex > 0);
        changes = rtnl_link_alloc();
        if (!changes)
                return -ENOMEM;
        rtnl_link_set_mtu(changes, mtu);
        return link_change(rtnl, ifindex, changes);
}

int link_set_up(struct nl_sock *rtnl, int ifindex, bool up) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *changes = NULL;

        assert(rtnl && ifindex > 0);
        changes = rtnl_link_alloc();
        if (!changes)
                return -ENOMEM;
        if (up)
                rtnl_link_set_flags(changes, IFF_UP);
        else
                rtnl_link_unset_flags(changes, IFF_UP);
        return link_change(rtnl, ifindex, changes);
}

static void strv_free_n(char **l, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(l[i]);
        free(l);
}

int link_list_kind(struct nl_sock *rtnl, const char *kind, char ***ret) {
        _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;
        char **l = NULL;
        size_t n = 0;
        int r;

        assert(rtnl && kind && ret);
        r = rtnl_link_alloc_cache(rtnl, AF_UNSPEC, &cache);
        if (r < 0)
                return nle_to_errno(r);
        l = new0(char *, (size_t) nl_cache_nitems(cache) + 1);
        if (!l)
                return -ENOMEM;
        for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
                struct rtnl_link *link = (struct rtnl_link *) o;
                const char *k = rtnl_link_get_type(link), *name = rtnl_link_get_name(link);

                if (!k || !name || !streq(k, kind))
                        continue;
                l[n] = strdup(name);
                if (!l[n]) {
                        strv_free_n(l, n);
                        return -ENOMEM;
                }
                n++;
        }
        *ret = l;
        return (int) n;
}

static int nl_addr_to_bytes(struct nl_addr *a, int family, uint8_t out[static 16]) {
        unsigned len = nl_addr_get_len(a);

        if (nl_addr_get_family(a) != family)
                return -EAFNOSUPPORT;
        if ((family == AF_INET && len != 4) || (family == AF_INET6 && len != 16))
                return -EBADMSG;
        memset(out, 0, 16);
        memcpy(out, nl_addr_get_binary_addr(a), len);
        return 0;
}

static size_t family_addr_len(int family) {
        return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
}

int link_get_addresses(struct nl_sock *rtnl, int ifindex, int family, LinkAddress **ret, size_t *ret_n) {
        _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;
        _cleanup_(freep) LinkAddress *a = NULL;
        size_t n = 0;
        int r;

        assert(rtnl && ret && ret_n);
        r = rtnl_addr_alloc_cache(rtnl, &cache);
        if (r < 0)
                return nle_to_errno(r);
        a = new0(LinkAddress, (size_t) nl_cache_nitems(cache));
        if (!a)
                return -ENOMEM;
        for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
                struct rtnl_addr *ra = (struct rtnl_addr *) o;
                struct nl_addr *local = rtnl_addr_get_local(ra);
                int f = rtnl_addr_get_family(ra);
                LinkAddress x;

                if (ifindex > 0 && rtnl_addr_get_ifindex(ra) != ifindex)
                        continue;
                if (family != AF_UNSPEC && f != family)
                        continue;
                if (f != AF_INET && f != AF_INET6)
                        continue;
                if (!local)
                        continue;
                x = (LinkAddress) {
                        .ifindex = rtnl_addr_get_ifindex(ra),
                        .family = f,
                        .prefixlen = (uint8_t) rtnl_addr_get_prefixlen(ra),
                        .scope = (uint8_t) rtnl_addr_get_scope(ra),
                        .flags = rtnl_addr_get_flags(ra),
                };
                if (nl_addr_to_bytes(local, f, x.addr) < 0)
                        continue;
                a[n++] = x;
        }
        *ret_n = n;
        *ret = n > 0 ? TAKE_PTR(a) : NULL;
        return 0;
}

static int address_object(int ifindex, int family, const void *addr, uint8_t prefixlen, struct rtnl_addr **ret) {
        _cleanup_(rtnl_addr_putp) struct rtnl_addr *a = NULL;
        _cleanup_(nl_addr_putp) struct nl_addr *local = NULL;
        size_t len = family_addr_len(family);
        int r;

        if (len == 0 || prefixlen > len * 8)
                return -EINVAL;
        a = rtnl_addr_alloc();
        local = nl_addr_build(family, addr, len);
        if (!a || !local)
                return -ENOMEM;
        nl_addr_set_prefixlen(local, prefixlen);
        rtnl_addr_set_ifindex(a, ifindex);
        rtnl_addr_set_family(a, family);
        r = rtnl_addr_set_local(a, local);
        if (r < 0)
                return nle_to_errno(r);
        rtnl_addr_set_prefixlen(a, prefixlen);
        if (family == AF_INET6)
                rtnl_addr_set_flags(a, IFA_F_NODAD);
        *ret = TAKE_PTR(a);
        return 0;
}

int link_add_address(struct nl_sock *rtnl, int ifindex, int family, const void *addr, uint8_t prefixlen) {
        _cleanup_(rtnl_addr_putp) struct rtnl_addr *a = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int r;

        assert(rtnl && ifindex > 0 && addr);
        r = address_object(ifindex, family, addr, prefixlen, &a);
        if (r < 0)
                return r;
        r = rtnl_addr_build_add_request(a, NLM_F_CREATE | NLM_F_EXCL, &msg);
        if (r < 0)
                return nle_to_errno(r);
        return netlink_transact(rtnl, msg);
}

int link_remove_address(struct nl_sock *rtnl, int ifindex, int family, const void *addr, uint8_t prefixlen) {
        _cleanup_(rtnl_addr_putp) struct rtnl_addr *a = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int r;

        assert(rtnl && ifindex > 0 && addr);
        r = address_object(ifindex, family, addr, prefixlen, &a);
        if (r < 0)
                return r;
        r = rtnl_addr_build_delete_request(a, 0, &msg);
        if (r < 0)
                return nle_to_errno(r);
        return netlink_transact(rtnl, msg);
}

int link_get_routes(struct nl_sock *rtnl, int ifindex, uint8_t protocol, LinkRoute **ret, size_t *ret_n) {
        _cleanup_(freep) LinkRoute *a = NULL;
        size_t n = 0, allocated = 0;
        const int families[] = { AF_INET, AF_INET6 };
        int r;

        assert(rtnl && ifindex > 0 && ret && ret_n);
        for (size_t fi = 0; fi < ELEMENTSOF(families); fi++) {
                _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;

                r = rtnl_route_alloc_cache(rtnl, families[fi], 0, &cache);
                if (r < 0)
                        return nle_to_errno(r);
                for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
                        struct rtnl_route *rr = (struct rtnl_route *) o;
                        struct rtnl_nexthop *nh;
                        struct nl_addr *dst = rtnl_route_get_dst(rr);
                        LinkRoute x;

                        if (rtnl_route_get_type(rr) != RTN_UNICAST)
                                continue;
                        if (rtnl_route_get_table(rr) == RT_TABLE_LOCAL)
                                continue;
                        if (protocol != 0 && rtnl_route_get_protocol(rr) != protocol)
                                continue;
                        if (rtnl_route_get_nnexthops(rr) != 1)
                                continue;
                        nh = rtnl_route_nexthop_n(rr, 0);
                        if (!nh || rtnl_route_nh_get_ifindex(nh) != ifindex)
                                continue;
                        x = (LinkRoute) {
                                .family = families[fi],
                                .table = rtnl_route_get_table(rr),
                                .metric = rtnl_route_get_priority(rr),
                                .protocol = rtnl_route_get_protocol(rr),
                                .scope = rtnl_route_get_scope(rr),
                                .oif = ifindex,
                        };
                        if (dst && nl_addr_get_len(dst) > 0) {
                                if (nl_addr_to_bytes(dst, families[fi], x.dst) < 0)
                                        continue;
                                x.dst_len = (uint8_t) nl_addr_get_prefixlen(dst);
                        }
                        if (n >= allocated) {
                                size_t na = MAX(allocated * 2, (size_t) 16);
                                LinkRoute *t = reallocarray(a, na, sizeof *a);

                                if (!t)
                                        return -ENOMEM;
                                a = t;
                                allocated = na;
                        }
                        a[n++] = x;
                }
        }
        *ret_n = n;
        *ret = n > 0 ? TAKE_PTR(a) : NULL;
        return 0;
}

static int route_object(int ifindex, const LinkRoute *r, struct rtnl_route **ret) {
        _cleanup_(rtnl_route_putp) struct rtnl_route *route = NULL;
        _cleanup_(nl_addr_putp) struct nl_addr *dst = NULL;
        struct rtnl_nexthop *nh;
        size_t len = family_addr_len(r->family);
        int k;

        if (len == 0 || r->dst_len > len * 8)
                return -EINVAL;
        route = rtnl_route_alloc();
        dst = nl_addr_build(r->family, r->dst, len);
        if (!route || !dst)
                return -ENOMEM;
        nl_addr_set_prefixlen(dst, r->dst_len);
        k = rtnl_route_set_family(route, (uint8_t) r->family);
        if (k < 0)
                return nle_to_errno(k);
        k = rtnl_route_set_dst(route, dst);
        if (k < 0)
                return nle_to_errno(k);
        rtnl_route_set_table(route, r->table != 0 ? r->table : RT_TABLE_MAIN);
        rtnl_route_set_protocol(route, r->protocol);
        rtnl_route_set_priority(route, r->metric);
        rtnl_route_set_scope(route, RT_SCOPE_LINK);
        k = rtnl_route_set_type(route, RTN_UNICAST);
        if (k < 0)
                return nle_to_errno(k);
        nh = rtnl_route_nh_alloc();
        if (!nh)
                return -ENOMEM;
        rtnl_route_nh_set_ifindex(nh, ifindex);
        rtnl_route_add_nexthop(route, nh);     /* takes ownership */
        *ret = TAKE_PTR(route);
        return 0;
}

int link_add_route(struct nl_sock *rtnl, int ifindex, const LinkRoute *r) {
        _cleanup_(rtnl_route_putp) struct rtnl_route *route = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int k;

        assert(rtnl && ifindex > 0 && r);
        k = route_object(ifindex, r, &route);
        if (k < 0)
                return k;
        k = rtnl_route_build_add_request(route, NLM_F_CREATE | NLM_F_EXCL, &msg);
        if (k < 0)
                return nle_to_errno(k);
        return netlink_transact(rtnl, msg);
}

int link_remove_route(struct nl_sock *rtnl, int ifindex, const LinkRoute *r) {
        _cleanup_(rtnl_route_putp) struct rtnl_route *route = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *msg = NULL;
        int k;

        assert(rtnl && ifindex > 0 && r);
        k = route_object(ifindex, r, &route);
        if (k < 0)
                return k;
        k = rtnl_route_build_del_request(route, 0, &msg);
        if (k < 0)
                return nle_to_errno(k);
        return netlink_transact(rtnl, msg);
}
