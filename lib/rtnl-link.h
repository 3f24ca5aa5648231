/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Netlink plumbing shared by the WireGuard backends, and the link operations
 * they need over rtnetlink (libnl-route-3): find, create and delete a link,
 * set its MTU and up/down state, list/add/remove its addresses and routes.
 *
 * libnl's -NLE_* codes are turned into errno here, once. Requests are sent with
 * netlink_transact(), which keeps the kernel's own errno from the ACK instead of
 * libnl's coarser translation, so callers can tell EEXIST from EADDRINUSE.
 */

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <netlink/msg.h>
#include <netlink/socket.h>

#include "macro.h"

CLUB_DEFINE_CLEANUP_VOID(struct nl_sock *, nl_socket_free, nl_socket_freep);
CLUB_DEFINE_CLEANUP_VOID(struct nl_msg *, nlmsg_free, nlmsg_freep);

/**
 * nle_to_errno() - convert a libnl error code (negative or positive NLE_*) to -errno
 * @nle: the code; 0 and positive non-NLE values pass through
 *
 * Return: a negative errno, or @nle if it is >= 0 and not an NLE code.
 */
int nle_to_errno(int nle);

/**
 * netlink_open() - allocate and connect a netlink socket (O_CLOEXEC, peeking
 * receives so large dump messages are never truncated)
 * @protocol: NETLINK_ROUTE or NETLINK_GENERIC
 * @ret: the socket
 *
 * Return: 0 or a negative errno.
 */
int netlink_open(int protocol, struct nl_sock **ret);

/**
 * netlink_transact() - send a request and wait for its ACK
 * @sk: the socket
 * @msg: the request (NLM_F_ACK is added)
 *
 * Return: 0, or the kernel's negative errno from the ACK, or a converted libnl error.
 */
int netlink_transact(struct nl_sock *sk, struct nl_msg *msg);

/**
 * netlink_msg_free_secure() - wipe a message's whole buffer, then free it (for
 * messages that carry keys)
 * @msg: the message, may be NULL
 */
void netlink_msg_free_secure(struct nl_msg *msg);

typedef struct LinkInfo {
        int ifindex;
        char ifname[IFNAMSIZ];
        char kind[32];                  /* IFLA_INFO_KIND: "wireguard", "tun", …; "" if none */
        uint32_t mtu;
        unsigned flags;                 /* IFF_* */
} LinkInfo;

typedef struct LinkAddress {
        int ifindex;
        int family;
        uint8_t addr[16];               /* IFA_LOCAL (or IFA_ADDRESS if none) */
        uint8_t prefixlen;
        uint8_t scope;
        uint32_t flags;                 /* IFA_F_* */
} LinkAddress;

typedef struct LinkRoute {
        int family;
        uint8_t dst[16];
        uint8_t dst_len;
        uint32_t table;
        uint32_t metric;
        uint8_t protocol;
        uint8_t scope;
        int oif;
} LinkRoute;

/**
 * link_get() - look a link up by name
 * @rtnl: a NETLINK_ROUTE socket
 * @ifname: the name
 * @ret: the link; may be NULL to test for existence
 *
 * Return: 0, -ENODEV, -ENAMETOOLONG or a negative errno.
 */
int link_get(struct nl_sock *rtnl, const char *ifname, LinkInfo *ret);

/**
 * link_create() - create a link of a kind that needs no parameters ("wireguard")
 * @rtnl: a NETLINK_ROUTE socket
 * @ifname: the name
 * @kind: IFLA_INFO_KIND
 * @ret: the new link, fetched again from the kernel to learn its ifindex; may be NULL
 *
 * Return: 0, -EEXIST (the name is taken), -EOPNOTSUPP (the kernel does not know the
 * kind), or a negative errno.
 */
int link_create(struct nl_sock *rtnl, const char *ifname, const char *kind, LinkInfo *ret);

/**
 * link_delete() - delete a link
 * @rtnl: a NETLINK_ROUTE socket
 * @ifindex: its index
 *
 * Return: 0, -ENODEV or a negative errno.
 */
int link_delete(struct nl_sock *rtnl, int ifindex);

/* Set the MTU / the IFF_UP flag. Return 0 or a negative errno (-EINVAL: MTU out of range). */
int link_set_mtu(struct nl_sock *rtnl, int ifindex, uint32_t mtu);
int link_set_up(struct nl_sock *rtnl, int ifindex, bool up);

/**
 * link_list_kind() - the names of all links of a kind
 * @rtnl: a NETLINK_ROUTE socket
 * @kind: IFLA_INFO_KIND
 * @ret: a NULL-terminated array of strings (free each, then the array)
 *
 * Return: the number of names or a negative errno.
 */
int link_list_kind(struct nl_sock *rtnl, const char *kind, char ***ret);

/**
 * link_get_addresses() - addresses of one link or of all links
 * @rtnl: a NETLINK_ROUTE socket
 * @ifindex: the link, or 0 for all
 * @family: AF_INET, AF_INET6 or AF_UNSPEC for both
 * @ret: a malloc'd array (NULL if none)
 * @ret_n: its length
 *
 * Return: 0 or a negative errno.
 */
int link_get_addresses(struct nl_sock *rtnl, int ifindex, int family, LinkAddress **ret, size_t *ret_n);

/* Add or remove one address. Return 0 or the kernel's negative errno (-EEXIST, -EADDRNOTAVAIL, …). */
int link_add_address(struct nl_sock *rtnl, int ifindex, int family, const void *addr, uint8_t prefixlen);
int link_remove_address(struct nl_sock *rtnl, int ifindex, int family, const void *addr, uint8_t prefixlen);

/**
 * link_get_routes() - unicast routes whose only output interface is @ifindex, in
 * every table but "local", with the given protocol (0: any)
 * @rtnl: a NETLINK_ROUTE socket
 * @ifindex: the link
 * @protocol: RTPROT_* to match, 0 for any
 * @ret: a malloc'd array (NULL if none)
 * @ret_n: its length
 *
 * Return: 0 or a negative errno.
 */
int link_get_routes(struct nl_sock *rtnl, int ifindex, uint8_t protocol, LinkRoute **ret, size_t *ret_n);

/* Add or remove a unicast route through @ifindex (scope link; table 0 = main). */
int link_add_route(struct nl_sock *rtnl, int ifindex, const LinkRoute *r);
int link_remove_route(struct nl_sock *rtnl, int ifindex, const LinkRoute *r);
