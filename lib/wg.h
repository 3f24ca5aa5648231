/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * WireGuard for both daemons: one device model, a few entry points in front of
 * two interchangeable backends, and convergence.
 *
 *   wg_device_get()       read an interface: keys, port, fwmark, peers (with their
 *                         counters), and the link's ifindex, MTU, up state,
 *                         addresses and our routes.
 *   wg_device_set()       apply a change, like `wg set`: only what the change says.
 *   wg_device_list()      names of all WireGuard interfaces (kernel and userspace).
 *   wg_device_converge()  bring an interface to exactly a desired state: creates the
 *                         link if needed, sends only the differences, removes peers
 *                         that are not desired, and rolls back what it changed if a
 *                         step fails.
 *   wg_link_delete()      remove an interface.
 *
 * Backends (chosen per interface by wg_backend_for()):
 *   kernel     generic netlink family "wireguard" (libnl-genl-3); the link is a
 *              rtnetlink link of kind "wireguard";
 *   userspace  the cross-platform UAPI text protocol on /run/wireguard/<ifname>.sock,
 *              served by wireguard-go; the link is its TUN device.
 * In both cases rtnetlink (libnl-route-3) handles the link's MTU, addresses,
 * routes and up/down state.
 *
 * One WgDevice type describes three things, told apart by how it is used:
 *   - what wg_device_get() read (all HAS_* flags that apply are set);
 *   - a desired state for wg_device_converge();
 *   - a change for wg_device_set() (REPLACE/REMOVE/UPDATE_ONLY flags and HAS_* flags
 *     say what to touch, as in the kernel's WG_CMD_SET_DEVICE).
 *
 * Everything here is synchronous and bounded: netlink answers at once, and the
 * UAPI socket has a send/receive timeout (WG_UAPI_TIMEOUT_USEC). Functions return
 * negative errno values; wg_strerror_hint() turns the ones that need a person's
 * action into a sentence. Nothing here logs above debug level, and keys are never
 * logged. Private and preshared keys are wiped from every buffer we own when
 * freed.
 */

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "macro.h"
#include "wg-key.h"

#ifndef FLAGS_SET
#define FLAGS_SET(v, flags) ((~(v) & (flags)) == 0)
#endif

/* Limits on what a caller (or a reply) may hand us. */
#define WG_PEERS_MAX 65536U             /* peers on one interface */
#define WG_ALLOWED_IPS_MAX 4096U        /* allowed IPs of one peer */
#define WG_ADDRESSES_MAX 256U           /* addresses on the link */
#define WG_ROUTES_MAX 4096U             /* routes through the link */

#define WG_UAPI_DIR_DEFAULT "/run/wireguard"
#define WG_UAPI_TIMEOUT_USEC (10 * USEC_PER_SEC)
/* Protocol number of the routes we manage: `ip route … proto static`. Routes
 * through the link with another protocol (kernel, boot, dhcp, …) are never touched. */
#define WG_ROUTE_PROTOCOL 4             /* RTPROT_STATIC */
#define WG_ROUTE_TABLE_MAIN 254         /* RT_TABLE_MAIN */

/* An IPv4 or IPv6 address with a prefix length: allowed IPs, link addresses, route destinations. */
typedef struct WgIPPrefix {
        int family;                     /* AF_INET or AF_INET6 */
        union {
                struct in_addr in;
                struct in6_addr in6;
                uint8_t bytes[16];
        } addr;
        uint8_t cidr;                   /* 0…32 or 0…128 */
} WgIPPrefix;

typedef WgIPPrefix WgAllowedIP;

/* "a.b.c.d/n" or "x::y/n": at most this many bytes with the NUL. */
#define WG_IP_PREFIX_STRLEN (INET6_ADDRSTRLEN + 4)

typedef union WgEndpoint {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
} WgEndpoint;

/* "a.b.c.d:port" or "[x::y%scope]:port". */
#define WG_ENDPOINT_STRLEN (INET6_ADDRSTRLEN + IFNAMSIZ + 10)

typedef struct WgRoute {
        WgIPPrefix dst;
        uint32_t table;                 /* 0 means WG_ROUTE_TABLE_MAIN */
        uint32_t metric;                /* priority; 0 is the kernel's default */
} WgRoute;

typedef enum WgPeerFlags {
        /* In a change (wg_device_set()). */
        WG_PEER_REMOVE                  = 1U << 0,
        WG_PEER_UPDATE_ONLY             = 1U << 1,  /* change only an existing peer, never create */
        WG_PEER_REPLACE_ALLOWED_IPS     = 1U << 2,  /* allowed_ips replace the peer's list */
        /* In any WgDevice: which optional fields are meaningful. */
        WG_PEER_HAS_PRESHARED_KEY       = 1U << 3,  /* desired: absent means "no preshared key" */
        WG_PEER_HAS_ENDPOINT            = 1U << 4,  /* desired: absent means "leave the (roaming) endpoint" */
        WG_PEER_HAS_KEEPALIVE           = 1U << 5,  /* desired: absent means 0, "off" */
} WgPeerFlags;

typedef struct WgPeer {
        WgKey public_key;
        WgKey preshared_key;            /* secret */
        unsigned flags;                 /* WgPeerFlags */
        WgEndpoint endpoint;
        uint16_t persistent_keepalive;  /* seconds, 0 = off */
        WgAllowedIP *allowed_ips;
        size_t n_allowed_ips;
        size_t n_allowed_ips_allocated;
        /* Read back only. */
        struct timespec last_handshake; /* CLOCK_REALTIME; 0 = never */
        uint64_t rx_bytes;
        uint64_t tx_bytes;
        uint32_t protocol_version;
} WgPeer;

typedef enum WgDeviceFlags {
        /* In a change. */
        WG_DEVICE_REPLACE_PEERS         = 1U << 0,  /* remove every peer not in this change */
        /* In any WgDevice. */
        WG_DEVICE_HAS_PRIVATE_KEY       = 1U << 1,  /* desired: absent means "leave the key" */
        WG_DEVICE_HAS_PUBLIC_KEY        = 1U << 2,  /* read back (or derived by validation) */
        WG_DEVICE_HAS_LISTEN_PORT       = 1U << 3,  /* desired: absent or 0 means "any port" */
        WG_DEVICE_HAS_FWMARK            = 1U << 4,  /* desired: absent means "leave"; 0 = no mark */
        /* The link. Desired: absent means "leave as it is". */
        WG_DEVICE_HAS_MTU               = 1U << 5,
        WG_DEVICE_HAS_UP                = 1U << 6,  /* the up field is meaningful */
        WG_DEVICE_HAS_ADDRESSES         = 1U << 7,  /* addresses are exactly the link's addresses */
        WG_DEVICE_HAS_ROUTES            = 1U << 8,  /* routes are exactly our routes (WG_ROUTE_PROTOCOL) */
} WgDeviceFlags;

typedef struct WgDevice {
        char ifname[IFNAMSIZ];
        unsigned flags;                 /* WgDeviceFlags */
        WgKey private_key;              /* secret */
        WgKey public_key;
        uint16_t listen_port;
        uint32_t fwmark;
        WgPeer **peers;
        size_t n_peers;
        size_t n_peers_allocated;

        /* The link. */
        int ifindex;                    /* read back */
        uint32_t mtu;
        bool up;
        WgIPPrefix *addresses;          /* addr with host bits, e.g. 100.96.0.5/16 */
        size_t n_addresses;
        WgRoute *routes;
        size_t n_routes;
} WgDevice;

/* ---- the model ------------------------------------------------------------ */

/**
 * wg_device_new() - allocate an empty device description
 * @ifname: interface name, 1…15 characters, no '/', ':' or whitespace
 * @ret: the new device
 *
 * Return: 0, -ENAMETOOLONG (longer than IFNAMSIZ-1), -EINVAL (empty or a character
 * the kernel refuses), -ENOMEM.
 */
int wg_device_new(const char *ifname, WgDevice **ret);

/**
 * wg_device_free() - free a device, wiping its private and preshared keys
 * @d: the device, may be NULL
 *
 * Return: NULL.
 */
WgDevice *wg_device_free(WgDevice *d);
CLUB_DEFINE_CLEANUP(WgDevice *, wg_device_free);

/**
 * wg_ifname_valid() - check an interface name the way the kernel does
 * @ifname: the name
 *
 * Return: 0, -ENAMETOOLONG or -EINVAL.
 */
int wg_ifname_valid(const char *ifname);

/**
 * wg_device_set_private_key() - set the private key and derive the public key
 * @d: the device
 * @key: the private key (copied; the caller still wipes its own copy)
 *
 * Return: 0, -EKEYREJECTED (all-zero key) or -EIO.
 */
int wg_device_set_private_key(WgDevice *d, const WgKey *key);

/**
 * wg_device_add_peer() - append a peer
 * @d: the device
 * @public_key: the peer's public key
 * @ret: the new peer (owned by @d, stays valid until @d is freed); may be NULL
 *
 * Duplicates are not checked here; wg_device_validate() refuses them.
 *
 * Return: 0, -E2BIG past WG_PEERS_MAX, -ENOMEM.
 */
int wg_device_add_peer(WgDevice *d, const WgKey *public_key, WgPeer **ret);

/**
 * wg_device_find_peer() - look a peer up by public key (linear)
 * @d: the device
 * @public_key: the key
 *
 * Return: the peer or NULL.
 */
WgPeer *wg_device_find_peer(const WgDevice *d, const WgKey *public_key);

/**
 * wg_peer_add_allowed_ip() - append an allowed IP
 * @p: the peer
 * @ip: the prefix (host bits are cleared, as the kernel does)
 *
 * Return: 0, -EINVAL (bad family or prefix length), -E2BIG past WG_ALLOWED_IPS_MAX, -ENOMEM.
 */
int wg_peer_add_allowed_ip(WgPeer *p, const WgAllowedIP *ip);

/**
 * wg_peer_set_endpoint() - set the endpoint and WG_PEER_HAS_ENDPOINT
 * @p: the peer
 * @sa: an AF_INET or AF_INET6 address with a nonzero port
 * @salen: its length
 *
 * Return: 0 or -EINVAL.
 */
int wg_peer_set_endpoint(WgPeer *p, const struct sockaddr *sa, socklen_t salen);

/**
 * wg_device_add_address() - append an address for the link (sets WG_DEVICE_HAS_ADDRESSES)
 * @d: the device
 * @a: the address and prefix length, host bits kept (100.96.0.5/16)
 *
 * Return: 0, -EINVAL, -E2BIG past WG_ADDRESSES_MAX, -ENOMEM.
 */
int wg_device_add_address(WgDevice *d, const WgIPPrefix *a);

/**
 * wg_device_add_route() - append a route through the link (sets WG_DEVICE_HAS_ROUTES)
 * @d: the device
 * @r: destination (host bits cleared), table (0 = main) and metric
 *
 * Return: 0, -EINVAL, -E2BIG past WG_ROUTES_MAX, -ENOMEM.
 */
int wg_device_add_route(WgDevice *d, const WgRoute *r);

/**
 * wg_device_validate() - check a desired state or a change before anything is sent
 * @d: the device
 *
 * Checks: interface name; limits; no all-zero public key; no peer with the device's
 * own public key (the kernel would silently ignore it); no duplicate peers; no
 * allowed IP claimed by two peers (the last one would win, and convergence would
 * never settle); prefix lengths; endpoints; no duplicate addresses; MTU range.
 *
 * Return: 0, -ENAMETOOLONG, -EINVAL, -E2BIG, -EKEYREJECTED or -ENOTUNIQ.
 */
int wg_device_validate(const WgDevice *d);

/* Statistics of a diff or a convergence. */
typedef struct WgConvergeStats {
        bool device_changed;            /* private key, listen port or fwmark */
        unsigned peers_added;
        unsigned peers_changed;
        unsigned peers_removed;
        unsigned addresses_added;
        unsigned addresses_removed;
        unsigned routes_added;
        unsigned routes_removed;
        bool link_created;
        bool mtu_changed;
        bool up_changed;
        bool rolled_back;               /* a step failed and what had been applied was undone */
} WgConvergeStats;

/**
 * wg_device_diff() - compute the WireGuard change that turns @current into @desired
 * @current: what wg_device_get() read
 * @desired: the desired state (validated)
 * @ret: the change: only what differs; no peers and no device flags if nothing does
 * @ret_stats: optional; its device and peer counters are filled in
 *
 * Only the WireGuard part is diffed; the link part is handled by wg_device_converge().
 * Peers to change get WG_PEER_UPDATE_ONLY, so a peer removed concurrently is not
 * resurrected. Allowed IPs are compared as sets; if the desired set only adds to the
 * current one, only the additions are sent, otherwise the list is replaced.
 *
 * Return: 0 or -ENOMEM.
 */
int wg_device_diff(const WgDevice *current, const WgDevice *desired, WgDevice **ret, WgConvergeStats *ret_stats);

/**
 * wg_device_change_is_empty() - whether a change would do nothing
 * @change: the change
 *
 * Return: true if it has no device flags and no peers.
 */
bool wg_device_change_is_empty(const WgDevice *change);

/* Text forms (for tools, tests and log messages). */
int wg_ip_prefix_from_string(const char *s, WgIPPrefix *ret);   /* "10.0.0.1/24", "fd00::1" (= /128) */
char *wg_ip_prefix_to_string(const WgIPPrefix *p, char ret[static WG_IP_PREFIX_STRLEN]);
void wg_ip_prefix_mask(WgIPPrefix *p);                          /* clear host bits */
int wg_endpoint_from_string(const char *s, WgEndpoint *ret);    /* "1.2.3.4:51820", "[fd00::1]:51820" */
char *wg_endpoint_to_string(const WgEndpoint *e, char ret[static WG_ENDPOINT_STRLEN]);
bool wg_endpoint_equal(const WgEndpoint *a, const WgEndpoint *b);
size_t wg_endpoint_len(const WgEndpoint *e);                    /* sizeof the sockaddr, 0 if none */

/* ---- the context and the backends ------------------------------------------ */

typedef struct WgContext WgContext;

/**
 * wg_context_new() - open the rtnetlink socket; the generic netlink socket is opened
 * and the "wireguard" family resolved on first use, then reused
 * @ret: the context
 *
 * Open it before a seccomp filter is applied. Not thread-safe: one per thread.
 *
 * Return: 0 or a negative errno from socket()/connect().
 */
int wg_context_new(WgContext **ret);
WgContext *wg_context_free(WgContext *c);
CLUB_DEFINE_CLEANUP(WgContext *, wg_context_free);

/**
 * wg_context_set_uapi_dir() - where userspace sockets live (default WG_UAPI_DIR_DEFAULT)
 * @c: the context
 * @dir: absolute path; tests point it elsewhere
 *
 * Return: 0, -EINVAL (not absolute or too long for a socket path) or -ENOMEM.
 */
int wg_context_set_uapi_dir(WgContext *c, const char *dir);

typedef struct WgBackend {
        const char *name;               /* "kernel" or "userspace" */
        int (*get_device)(WgContext *c, const char *ifname, WgDevice **ret);
        int (*set_device)(WgContext *c, const WgDevice *change);  /* splits big changes itself */
} WgBackend;

extern const WgBackend wg_backend_netlink;
extern const WgBackend wg_backend_uapi;

/**
 * wg_backend_for() - the backend for an interface: userspace if <uapi dir>/<ifname>.sock
 * is a socket, kernel otherwise
 * @c: the context
 * @ifname: the interface
 *
 * Return: the backend (never NULL).
 */
const WgBackend *wg_backend_for(WgContext *c, const char *ifname);

/**
 * wg_device_get() - read an interface
 * @c: the context
 * @ifname: the interface
 * @ret: the device, with the link's ifindex, MTU, up state, addresses and our routes
 *
 * Return: 0; -ENODEV (no such interface); -EMEDIUMTYPE (a link of another kind has
 * this name); -EPROTONOSUPPORT (no kernel WireGuard and no userspace socket);
 * -EPERM (no CAP_NET_ADMIN); -EBADMSG (a malformed reply); other negative errno.
 */
int wg_device_get(WgContext *c, const char *ifname, WgDevice **ret);

/**
 * wg_device_set() - apply a change to the WireGuard part of an interface, as `wg set`
 * @c: the context
 * @change: what to change (validated first)
 *
 * A change too big for one netlink message is split across several; peers are
 * never half-sent within one message. Not transactional: use
 * wg_device_converge() for all-or-nothing.
 *
 * Return: 0 or a negative errno as wg_device_get().
 */
int wg_device_set(WgContext *c, const WgDevice *change);

/**
 * wg_device_list() - names of all WireGuard interfaces: kernel links of kind
 * "wireguard" in this network namespace, and userspace sockets
 * @c: the context
 * @ret: a sorted, NULL-terminated array of names; free with wg_strv_free()
 *
 * Return: the number of names, or a negative errno.
 */
int wg_device_list(WgContext *c, char ***ret);
char **wg_strv_free(char **l);

/**
 * wg_device_converge() - bring an interface to exactly @desired
 * @c: the context
 * @desired: the desired state (see the flags for what "absent" means)
 * @ret_stats: optional: what was done
 *
 * Steps: validate; read the interface, creating a kernel link of kind "wireguard"
 * if it does not exist and no userspace socket does; refuse a link of another kind
 * (-EMEDIUMTYPE) and addresses already on another link (-EADDRINUSE); apply the
 * WireGuard diff; then MTU, addresses, routes and up/down. Calling it again with
 * the same state sends nothing. If a step fails, the steps already applied are
 * undone (stats->rolled_back), a link created by this call is deleted, and the
 * first error is returned.
 *
 * Return: 0 or a negative errno (see wg_strerror_hint()).
 */
int wg_device_converge(WgContext *c, const WgDevice *desired, WgConvergeStats *ret_stats);

/**
 * wg_link_delete() - delete a kernel WireGuard link, or stop a userspace one by
 * removing its UAPI socket (wireguard-go exits when its socket goes away)
 * @c: the context
 * @ifname: the interface
 *
 * Return: 0, -ENODEV, -EMEDIUMTYPE (not a WireGuard link) or a negative errno.
 */
int wg_link_delete(WgContext *c, const char *ifname);

/**
 * wg_strerror_hint() - a sentence a person can act on, for errors this module
 * returns with a specific meaning
 * @error: a negative (or positive) errno from this module
 *
 * Return: a static string, or NULL if there is nothing to add to strerror().
 */
const char *wg_strerror_hint(int error);
