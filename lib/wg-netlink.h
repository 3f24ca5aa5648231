/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The kernel backend: generic netlink family "wireguard" through libnl-genl-3.
 *
 * The message builder and the reply parser are pure functions (no socket) so
 * that unit tests can check what we send attribute by attribute and feed in
 * captured replies.
 */

#include <stddef.h>

#include <linux/netlink.h>
#include <netlink/msg.h>
#include <netlink/socket.h>

#include "wg.h"

/* Size of each WG_CMD_SET_DEVICE message we build, headers included. */
#define WG_NETLINK_MSG_SIZE 8192U
/* Receive buffer: larger than any dump message the kernel builds (≤ 32 KiB), so
 * libnl never has to grow (and copy) a buffer holding a private key. */
#define WG_NETLINK_RECV_BUF_SIZE (64U * 1024U)

/**
 * wg_netlink_build_set() - build the WG_CMD_SET_DEVICE messages for a change
 * @change: the change (validated)
 * @family_id: the resolved id of the "wireguard" family
 * @msg_size: the size of each message (WG_NETLINK_MSG_SIZE; tests use less)
 * @ret: a malloc'd array of messages; free with wg_netlink_msgs_free()
 * @ret_n: its length (at least 1)
 *
 * Device attributes (private key, listen port, fwmark, REPLACE_PEERS) go in the
 * first message only. A peer that does not fit is moved whole to the next
 * message; a peer whose allowed IPs do not fit is continued in the next message
 * with its public key, UPDATE_ONLY if it had it, and the remaining allowed IPs,
 * without REPLACE_ALLOWEDIPS (which would undo the first part).
 *
 * Return: 0, -ENOMEM, or -EMSGSIZE if @msg_size cannot hold even one allowed IP.
 */
int wg_netlink_build_set(const WgDevice *change, int family_id, size_t msg_size,
                         struct nl_msg ***ret, size_t *ret_n);

/**
 * wg_netlink_msgs_free() - wipe and free messages from wg_netlink_build_set()
 * @msgs: the array, may be NULL
 * @n: its length
 */
void wg_netlink_msgs_free(struct nl_msg **msgs, size_t n);

/**
 * wg_netlink_build_get() - build the WG_CMD_GET_DEVICE dump request
 * @ifname: the interface
 * @family_id: the family id
 * @ret: the message
 *
 * Return: 0 or -ENOMEM.
 */
int wg_netlink_build_get(const char *ifname, int family_id, struct nl_msg **ret);

/**
 * wg_netlink_parse_get() - add one WG_CMD_GET_DEVICE dump message to a device
 * @hdr: the message (netlink header, genl header, attributes)
 * @dev: the device being read; allocated from the first message if *@dev is NULL
 *
 * A peer whose allowed IPs did not fit in one message starts the next message
 * again with the same public key; its allowed IPs are joined back to it.
 *
 * Return: 0, -EBADMSG (malformed), -E2BIG (past WG_PEERS_MAX/WG_ALLOWED_IPS_MAX) or -ENOMEM.
 */
int wg_netlink_parse_get(const struct nlmsghdr *hdr, WgDevice **dev);

/**
 * wg_netlink_resolve() - resolve the "wireguard" genl family
 * @genl: a NETLINK_GENERIC socket
 * @ret: the family id
 *
 * Return: 0, -EPROTONOSUPPORT (the kernel has no WireGuard) or a negative errno.
 */
int wg_netlink_resolve(struct nl_sock *genl, int *ret);

/* Read / change a device over an open socket. Errors as wg_device_get()/wg_device_set(). */
int wg_netlink_get_device(struct nl_sock *genl, int family_id, const char *ifname, WgDevice **ret);
int wg_netlink_set_device(struct nl_sock *genl, int family_id, const WgDevice *change);
