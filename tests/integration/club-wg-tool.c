/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-wg-tool — a small front end to lib/wg for the integration tests. It is
 * built from the same library as the daemons and is the only thing that
 * configures WireGuard in those tests; they read the result back independently
 * with `wg show` and `ip`.
 *
 *   club-wg-tool [--uapi-dir DIR] genkey            new private key (base64) on stdout
 *   club-wg-tool [--uapi-dir DIR] pubkey            private key on stdin → public key
 *   club-wg-tool [--uapi-dir DIR] converge FILE     bring an interface to the state in FILE ("-": stdin)
 *   club-wg-tool [--uapi-dir DIR] show IFNAME       what the library reads back (keys never printed)
 *   club-wg-tool [--uapi-dir DIR] list              WireGuard interfaces
 *   club-wg-tool [--uapi-dir DIR] delete IFNAME     delete the interface
 *   club-wg-tool [--uapi-dir DIR] backend IFNAME    "kernel" or "userspace"
 *   club-wg-tool dump-raw IFNAME FILE               save the raw WG_CMD_GET_DEVICE dump
 *                                                   (for unit-test captures)
 *
 * FILE has one setting per line; "#" starts a comment; peer settings after
 * "peer" belong to that peer, interface settings may stand anywhere:
 *
 *   interface NAME
 *   private-key-file PATH        (base64, as `wg genkey` writes it)
 *   listen-port N | fwmark N | mtu N | up yes|no
 *   address A.B.C.D/N            (any number; the link gets exactly these)
 *   route A.B.C.D/N [table N] [metric N]
 *   no-addresses | no-routes     (manage them, and want none)
 *   peer PUBLIC-KEY-BASE64
 *     preshared-key-file PATH | endpoint IP:PORT | keepalive N | allowed-ip PREFIX
 *
 * Exit status: 0 on success, 1 on failure (with the error and, where there is
 * one, the library's hint on stderr), 2 on bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include <linux/netlink.h>
#include <netlink/msg.h>

#include "cleanup.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "rtnl-link.h"
#include "wg-netlink.h"
#include "wg.h"

static const char *arg_uapi_dir = NULL;

static int fail(int r, const char *what) {
        const char *hint = wg_strerror_hint(r);

        fprintf(stderr, "club-wg-tool: %s: %s\n", what, strerror(abs(r)));
        if (hint)
                fprintf(stderr, "club-wg-tool: hint: %s\n", hint);
        fprintf(stderr, "club-wg-tool: errno=%d\n", abs(r));
        return 1;
}

static void strip(char *s) {
        size_t l = strlen(s);

        while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
                s[--l] = 0;
}

/* Read a base64 key from a file (one line). The buffer is wiped. */
static int read_key_file(const char *path, WgKey *ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        char buf[128] = {};
        int r;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        if (!fgets(buf, sizeof buf, f)) {
                explicit_bzero(buf, sizeof buf);
                return -EKEYREJECTED;
        }
        strip(buf);
        r = wg_key_from_base64(buf, ret);
        explicit_bzero(buf, sizeof buf);
        return r;
}

static int parse_line(WgDevice **dev, WgPeer **peer, char *line, unsigned lineno) {
        char *argv[8] = {};
        int argc = 0, r;
        WgDevice *d = *dev;
        char *save = NULL;

        for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
                if (argc >= (int) ELEMENTSOF(argv))
                        return -E2BIG;
                argv[argc++] = t;
        }
        if (argc == 0 || argv[0][0] == '#')
                return 0;

#define NEED(n) do { if (argc != (n)) { fprintf(stderr, "line %u: \"%s\" takes %d argument(s)\n", lineno, argv[0], (n) - 1); return -EINVAL; } } while (0)

        if (streq(argv[0], "interface")) {
                NEED(2);
                if (d)
                        return -EINVAL;
                return wg_device_new(argv[1], dev);
        }
        if (!d) {
                fprintf(stderr, "line %u: \"interface\" must come first\n", lineno);
                return -EINVAL;
        }

        if (streq(argv[0], "peer")) {
                WgKey k;

                NEED(2);
                r = wg_key_from_base64(argv[1], &k);
                if (r < 0)
                        return r;
                return wg_device_add_peer(d, &k, peer);
        }

        if (*peer) {
                WgPeer *p = *peer;

                if (streq(argv[0], "preshared-key-file")) {
                        NEED(2);
                        r = read_key_file(argv[1], &p->preshared_key);
                        if (r < 0)
                                return r;
                        p->flags |= WG_PEER_HAS_PRESHARED_KEY;
                        return 0;
                }
                if (streq(argv[0], "endpoint")) {
                        NEED(2);
                        r = wg_endpoint_from_string(argv[1], &p->endpoint);
                        if (r < 0)
                                return r;
                        p->flags |= WG_PEER_HAS_ENDPOINT;
                        return 0;
                }
                if (streq(argv[0], "keepalive")) {
                        unsigned u;

                        NEED(2);
                        if (parse_uint(argv[1], &u) < 0 || u > UINT16_MAX)
                                return -EINVAL;
                        p->persistent_keepalive = (uint16_t) u;
                        p->flags |= WG_PEER_HAS_KEEPALIVE;
                        return 0;
                }
                if (streq(argv[0], "allowed-ip")) {
                        WgAllowedIP ip;

                        NEED(2);
                        r = wg_ip_prefix_from_string(argv[1], &ip);
                        if (r < 0)
                                return r;
                        return wg_peer_add_allowed_ip(p, &ip);
                }
                /* Anything else is an interface setting, wherever it stands. */
        }

        if (streq(argv[0], "private-key-file")) {
                WgKey k;

                NEED(2);
                r = read_key_file(argv[1], &k);
                if (r < 0)
                        return r;
                r = wg_device_set_private_key(d, &k);
                wg_key_wipe(&k);
                return r;
        }
        if (streq(argv[0], "listen-port") || streq(argv[0], "fwmark") || streq(argv[0], "mtu")) {
                unsigned u;

                NEED(2);
                if (parse_uint(argv[1], &u) < 0)
                        return -EINVAL;
                if (streq(argv[0], "listen-port")) {
                        if (u > UINT16_MAX)
                                return -EINVAL;
                        d->listen_port = (uint16_t) u;
                        d->flags |= WG_DEVICE_HAS_LISTEN_PORT;
                } else if (streq(argv[0], "fwmark")) {
                        d->fwmark = u;
                        d->flags |= WG_DEVICE_HAS_FWMARK;
                } else {
                        d->mtu = u;
                        d->flags |= WG_DEVICE_HAS_MTU;
                }
                return 0;
        }
        if (streq(argv[0], "up")) {
                NEED(2);
                r = parse_boolean(argv[1]);
                if (r < 0)
                        return r;
                d->up = r;
                d->flags |= WG_DEVICE_HAS_UP;
                return 0;
        }
        if (streq(argv[0], "address")) {
                WgIPPrefix a;

                NEED(2);
                r = wg_ip_prefix_from_string(argv[1], &a);
                if (r < 0)
                        return r;
                return wg_device_add_address(d, &a);
        }
        if (streq(argv[0], "no-addresses")) {
                NEED(1);
                d->flags |= WG_DEVICE_HAS_ADDRESSES;
                return 0;
        }
        if (streq(argv[0], "no-routes")) {
                NEED(1);
                d->flags |= WG_DEVICE_HAS_ROUTES;
                return 0;
        }
        if (streq(argv[0], "route")) {
                WgRoute rt = {};

                if (argc != 2 && argc != 4 && argc != 6)
                        return -EINVAL;
                r = wg_ip_prefix_from_string(argv[1], &rt.dst);
                if (r < 0)
                        return r;
                for (int i = 2; i + 1 < argc; i += 2) {
                        unsigned u;

                        if (parse_uint(argv[i + 1], &u) < 0)
                                return -EINVAL;
                        if (streq(argv[i], "table"))
                                rt.table = u;
                        else if (streq(argv[i], "metric"))
                                rt.metric = u;
                        else
                                return -EINVAL;
                }
                return wg_device_add_route(d, &rt);
        }
        fprintf(stderr, "line %u: unknown setting \"%s\"\n", lineno, argv[0]);
        return -EINVAL;
#undef NEED
}

static int parse_file(const char *path, WgDevice **ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        _cleanup_(freep) char *line = NULL;
        WgPeer *peer = NULL;
        size_t size = 0;
        unsigned lineno = 0;
        int r;

        if (streq(path, "-"))
                f = fdopen(dup(STDIN_FILENO), "re");
        else
                f = fopen(path, "re");
        if (!f)
                return -errno;
        while (getline(&line, &size, f) >= 0) {
                lineno++;
                strip(line);
                r = parse_line(&d, &peer, line, lineno);
                if (r < 0) {
                        fprintf(stderr, "club-wg-tool: %s:%u: cannot use this line: %s\n", path, lineno, strerror(-r));
                        return r;
                }
        }
        if (!d) {
                fprintf(stderr, "club-wg-tool: %s: no \"interface\" line\n", path);
                return -EINVAL;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

static void print_device(const WgDevice *d) {
        char b64[WG_KEY_B64_SIZE], buf[WG_ENDPOINT_STRLEN + WG_IP_PREFIX_STRLEN];

        printf("interface %s\n", d->ifname);
        if (FLAGS_SET(d->flags, WG_DEVICE_HAS_PUBLIC_KEY))
                printf("public-key %s\n", wg_key_to_base64(&d->public_key, b64));
        printf("private-key %s\n", FLAGS_SET(d->flags, WG_DEVICE_HAS_PRIVATE_KEY) ? "(hidden)" : "(none)");
        printf("listen-port %u\n", d->listen_port);
        printf("fwmark %" PRIu32 "\n", d->fwmark);
        if (d->ifindex > 0) {
                printf("ifindex %d\n", d->ifindex);
                printf("mtu %" PRIu32 "\n", d->mtu);
                printf("up %s\n", d->up ? "yes" : "no");
                for (size_t i = 0; i < d->n_addresses; i++)
                        printf("address %s\n", wg_ip_prefix_to_string(&d->addresses[i], buf));
                for (size_t i = 0; i < d->n_routes; i++)
                        printf("route %s table %" PRIu32 " metric %" PRIu32 "\n",
                               wg_ip_prefix_to_string(&d->routes[i].dst, buf), d->routes[i].table, d->routes[i].metric);
        }
        printf("peers %zu\n", d->n_peers);
        for (size_t i = 0; i < d->n_peers; i++) {
                const WgPeer *p = d->peers[i];

                printf("peer %s\n", wg_key_to_base64(&p->public_key, b64));
                printf("  preshared-key %s\n", FLAGS_SET(p->flags, WG_PEER_HAS_PRESHARED_KEY) ? "(hidden)" : "(none)");
                if (FLAGS_SET(p->flags, WG_PEER_HAS_ENDPOINT))
                        printf("  endpoint %s\n", wg_endpoint_to_string(&p->endpoint, buf));
                printf("  keepalive %u\n", p->persistent_keepalive);
                for (size_t j = 0; j < p->n_allowed_ips; j++)
                        printf("  allowed-ip %s\n", wg_ip_prefix_to_string(&p->allowed_ips[j], buf));
                printf("  latest-handshake %lld\n", (long long) p->last_handshake.tv_sec);
                printf("  transfer %" PRIu64 " %" PRIu64 "\n", p->rx_bytes, p->tx_bytes);
        }
}

static int context(WgContext **ret) {
        int r;

        r = wg_context_new(ret);
        if (r < 0)
                return r;
        if (arg_uapi_dir)
                return wg_context_set_uapi_dir(*ret, arg_uapi_dir);
        return 0;
}

static int verb_converge(const char *path) {
        _cleanup_(wg_context_freep) WgContext *c = NULL;
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        WgConvergeStats s = {};
        int r, k;

        r = parse_file(path, &d);
        if (r < 0)
                return fail(r, "failed to read the desired state");
        r = context(&c);
        if (r < 0)
                return fail(r, "failed to open netlink");
        k = wg_device_converge(c, d, &s);
        printf("backend=%s link_created=%d device_changed=%d peers_added=%u peers_changed=%u peers_removed=%u "
               "addresses_added=%u addresses_removed=%u routes_added=%u routes_removed=%u mtu_changed=%d up_changed=%d "
               "rolled_back=%d\n",
               wg_backend_for(c, d->ifname)->name, s.link_created, s.device_changed, s.peers_added, s.peers_changed,
               s.peers_removed, s.addresses_added, s.addresses_removed, s.routes_added, s.routes_removed, s.mtu_changed,
               s.up_changed, s.rolled_back);
        if (k < 0)
                return fail(k, "failed to converge");
        return 0;
}

/* The dump exactly as the kernel sends it, one datagram after another. Test
 * interfaces only: the capture holds the interface's private key. */
static int verb_dump_raw(const char *ifname, const char *path) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(nlmsg_freep) struct nl_msg *req = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        unsigned messages = 0;
        int family, fd, r;

        r = netlink_open(NETLINK_GENERIC, &sk);
        if (r < 0)
                return fail(r, "failed to open generic netlink");
        r = wg_netlink_resolve(sk, &family);
        if (r < 0)
                return fail(r, "failed to resolve the wireguard family");
        r = wg_netlink_build_get(ifname, family, &req);
        if (r < 0)
                return fail(r, "failed to build the request");
        nl_complete_msg(sk, req);
        nlmsg_hdr(req)->nlmsg_flags &= ~NLM_F_ACK;
        r = nl_send(sk, req);
        if (r < 0)
                return fail(nle_to_errno(r), "failed to send the request");
        f = fopen(path, "we");
        if (!f)
                return fail(-errno, "failed to open the output file");
        fd = nl_socket_get_fd(sk);
        for (;;) {
                uint8_t buf[65536];
                struct nlmsghdr *h;
                ssize_t n;
                int len;

                n = recv(fd, buf, sizeof buf, MSG_TRUNC);
                if (n < 0)
                        return fail(-errno, "failed to receive");
                if ((size_t) n > sizeof buf)
                        return fail(-EMSGSIZE, "a message did not fit in 64 KiB");
                if (fwrite(buf, 1, (size_t) n, f) != (size_t) n)
                        return fail(-EIO, "failed to write");
                len = (int) n;
                for (h = (struct nlmsghdr *) buf; nlmsg_ok(h, len); h = nlmsg_next(h, &len)) {
                        if (h->nlmsg_type == NLMSG_ERROR)
                                return fail(-EIO, "the kernel answered with an error");
                        if (h->nlmsg_type == NLMSG_DONE) {
                                printf("captured %u messages\n", messages);
                                return 0;
                        }
                        messages++;
                }
        }
}

static int verb_show(const char *ifname) {
        _cleanup_(wg_context_freep) WgContext *c = NULL;
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        int r;

        r = context(&c);
        if (r < 0)
                return fail(r, "failed to open netlink");
        r = wg_device_get(c, ifname, &d);
        if (r < 0)
                return fail(r, "failed to read the interface");
        print_device(d);
        return 0;
}

int main(int argc, char *argv[]) {
        _cleanup_(wg_context_freep) WgContext *c = NULL;
        int i = 1, r;

        /* CLUB_LOG_LEVEL=debug shows what lib/wg does (never keys). */
        (void) log_parse_environment();
        if (argc > 2 && streq(argv[1], "--uapi-dir")) {
                arg_uapi_dir = argv[2];
                i = 3;
        }
        if (argc - i < 1)
                goto usage;

        if (streq(argv[i], "genkey") && argc - i == 1) {
                WgKey k;
                char b64[WG_KEY_B64_SIZE];

                r = wg_key_generate(&k);
                if (r < 0)
                        return fail(r, "failed to generate a key");
                puts(wg_key_to_base64(&k, b64));
                wg_key_wipe(&k);
                explicit_bzero(b64, sizeof b64);
                return 0;
        }
        if (streq(argv[i], "pubkey") && argc - i == 1) {
                char buf[128] = {}, b64[WG_KEY_B64_SIZE];
                WgKey k, pub;

                if (!fgets(buf, sizeof buf, stdin))
                        return fail(-EKEYREJECTED, "no key on standard input");
                strip(buf);
                r = wg_key_from_base64(buf, &k);
                explicit_bzero(buf, sizeof buf);
                if (r < 0)
                        return fail(r, "failed to read the private key");
                r = wg_key_public_from_private(&k, &pub);
                wg_key_wipe(&k);
                if (r < 0)
                        return fail(r, "failed to derive the public key");
                puts(wg_key_to_base64(&pub, b64));
                return 0;
        }
        if (streq(argv[i], "converge") && argc - i == 2)
                return verb_converge(argv[i + 1]);
        if (streq(argv[i], "show") && argc - i == 2)
                return verb_show(argv[i + 1]);
        if (streq(argv[i], "dump-raw") && argc - i == 3)
                return verb_dump_raw(argv[i + 1], argv[i + 2]);
        if (streq(argv[i], "list") && argc - i == 1) {
                char **l = NULL;

                r = context(&c);
                if (r < 0)
                        return fail(r, "failed to open netlink");
                r = wg_device_list(c, &l);
                if (r < 0)
                        return fail(r, "failed to list interfaces");
                for (char **p = l; *p; p++)
                        puts(*p);
                wg_strv_free(l);
                return 0;
        }
        if (streq(argv[i], "delete") && argc - i == 2) {
                r = context(&c);
                if (r < 0)
                        return fail(r, "failed to open netlink");
                r = wg_link_delete(c, argv[i + 1]);
                if (r < 0)
                        return fail(r, "failed to delete the interface");
                return 0;
        }
        if (streq(argv[i], "backend") && argc - i == 2) {
                r = context(&c);
                if (r < 0)
                        return fail(r, "failed to open netlink");
                puts(wg_backend_for(c, argv[i + 1])->name);
                return 0;
        }
usage:
        fprintf(stderr, "Usage: club-wg-tool [--uapi-dir DIR] genkey|pubkey|converge FILE|show IFNAME|list|delete IFNAME|backend IFNAME\n");
        return 2;
}
