/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The userspace backend: WireGuard's cross-platform UAPI text protocol on a
 * unix stream socket, /run/wireguard/<ifname>.sock, as wireguard-go serves it.
 *
 *   request   "get=1\n\n"                    "set=1\n" key=value lines "\n"
 *   reply     key=value lines, "errno=N\n\n"  "errno=N\n\n"
 *
 * Keys are lowercase hex, numbers decimal, one request per connection. The codec
 * (formatting a set request, parsing a get or set reply) is pure so it can be
 * unit-tested and fuzzed without a socket.
 */

#include <stddef.h>
#include <sys/un.h>

#include "wg.h"

/* The largest reply we accept: far more than WG_PEERS_MAX peers need in practice,
 * small enough that a confused server cannot exhaust our memory. */
#define WG_UAPI_REPLY_MAX (64U * 1024U * 1024U)

/**
 * wg_uapi_format_set() - format a change as a "set=1" request
 * @change: the change (validated)
 * @ret: the request, NUL-terminated, ending in a blank line; it holds keys: free
 *       it with erase_and_free()
 * @ret_len: its length without the NUL
 *
 * Return: 0 or -ENOMEM.
 */
int wg_uapi_format_set(const WgDevice *change, char **ret, size_t *ret_len);

/**
 * wg_uapi_parse_get() - parse the reply to "get=1"
 * @text: the reply, not necessarily NUL-terminated, ending in "errno=N\n\n"
 * @len: its length
 * @ifname: the interface the reply is about (the protocol does not say)
 * @ret: the device
 *
 * Unknown keys are skipped (newer servers may add some); everything else is
 * validated strictly.
 *
 * Return: 0; -N for a reply with errno=N (N != 0); -EBADMSG for a malformed reply;
 * -E2BIG past WG_PEERS_MAX or WG_ALLOWED_IPS_MAX; -ENOMEM.
 */
int wg_uapi_parse_get(const char *text, size_t len, const char *ifname, WgDevice **ret);

/**
 * wg_uapi_parse_errno() - parse the reply to "set=1": exactly "errno=N\n\n"
 * @text: the reply
 * @len: its length
 *
 * Return: 0, -N for errno=N or errno=-N, or -EBADMSG.
 */
int wg_uapi_parse_errno(const char *text, size_t len);

/**
 * wg_uapi_socket_path() - "<dir>/<ifname>.sock"
 * @dir: the directory
 * @ifname: the interface
 * @ret: buffer for the path
 *
 * Return: 0, or -ENAMETOOLONG if it does not fit in sun_path.
 */
int wg_uapi_socket_path(const char *dir, const char *ifname, char ret[static sizeof(((struct sockaddr_un *) 0)->sun_path)]);

/**
 * wg_uapi_transact() - send one request and read the whole reply (up to the blank
 * line that ends it, or EOF), with WG_UAPI_TIMEOUT_USEC for each read and write
 * @path: the socket
 * @request: the request
 * @len: its length
 * @ret: the reply, NUL-terminated; free it with erase_and_free()
 * @ret_len: its length
 *
 * Return: 0; -ENOENT/-ECONNREFUSED (no server); -ETIMEDOUT; -EBADMSG (reply larger
 * than WG_UAPI_REPLY_MAX or cut short); other negative errno.
 */
int wg_uapi_transact(const char *path, const char *request, size_t len, char **ret, size_t *ret_len);

/* Read / change a device through its socket in @dir. Errors as wg_device_get()/wg_device_set(). */
int wg_uapi_get_device(const char *dir, const char *ifname, WgDevice **ret);
int wg_uapi_set_device(const char *dir, const WgDevice *change);
