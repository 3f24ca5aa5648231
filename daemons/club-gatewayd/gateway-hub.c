/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "gateway-hub.h"
#include "log.h"
#include "wg.h"

struct Hub {
        bool enabled;
        char ifname[IFNAMSIZ];
        uint16_t listen_port;
        WgKey private_key;
        char public_key[WG_KEY_B64_SIZE];
        WgContext *wg;                  /* NULL when disabled or when lib/wg could not start */
        int last_error;                 /* of the last convergence: log changes only once */
};

Hub *hub_free(Hub *h) {
        if (!h)
                return NULL;
        wg_context_free(h->wg);
        wg_key_wipe(&h->private_key);
        return mfree(h);
}

const char *hub_public_key(const Hub *h) {
        return h->public_key;
}

const char *hub_interface(const Hub *h) {
        return h->ifname;
}

static int key_file_read(const char *path, WgKey *ret) {
        _cleanup_(closep) int fd = -EBADF;
        char buf[WG_KEY_B64_LEN + 3] = {};
        struct stat st;
        ssize_t n;
        size_t len;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (st.st_mode & 0077)
                return -EPERM;
        n = read(fd, buf, sizeof buf - 1);
        if (n < 0)
                return -errno;
        len = (size_t) n;
        if (len > 0 && buf[len - 1] == '\n')
                buf[--len] = 0;
        r = len == WG_KEY_B64_LEN ? wg_key_from_base64(buf, ret) : -EKEYREJECTED;
        explicit_bzero(buf, sizeof buf);
        return r;
}

static int key_file_create(const char *path, WgKey *ret) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_(wg_key_wipe) WgKey key = {};
        char buf[WG_KEY_B64_SIZE + 1];
        ssize_t n;
        int r;

        r = wg_key_generate(&key);
        if (r < 0)
                return r;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        wg_key_to_base64(&key, buf);
        buf[WG_KEY_B64_LEN] = '\n';
        n = write(fd, buf, WG_KEY_B64_LEN + 1);
        r = n < 0 ? -errno : n != WG_KEY_B64_LEN + 1 ? -EIO : 0;
        explicit_bzero(buf, sizeof buf);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(path);
                return r;
        }
        *ret = key;
        return 0;
}

int hub_new(const GatewayConfig *cfg, Hub **ret) {
        _cleanup_(hub_freep) Hub *h = NULL;
        WgKey pub;
        int r;

        h = new0(Hub, 1);
        if (!h)
                return log_oom();
        h->enabled = cfg->wg_enabled;
        h->listen_port = (uint16_t) cfg->wg_listen_port;
        snprintf(h->ifname, sizeof h->ifname, "%s", cfg->wg_interface);

        r = key_file_read(cfg->wg_private_key_file, &h->private_key);
        if (r == -ENOENT) {
                r = key_file_create(cfg->wg_private_key_file, &h->private_key);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the WireGuard private key %s (PrivateKeyFile= in [WireGuard]): %m",
                                               cfg->wg_private_key_file);
                log_notice("Created the hub's WireGuard private key in %s.", cfg->wg_private_key_file);
        } else if (r == -EPERM)
                return log_error_errno(r, "The WireGuard private key %s is readable by group or others; chmod 0600 it.",
                                       cfg->wg_private_key_file);
        else if (r == -EKEYREJECTED)
                return log_error_errno(r, "%s (PrivateKeyFile= in [WireGuard]) holds no WireGuard private key (one line of base64, as `wg genkey` writes).",
                                       cfg->wg_private_key_file);
        else if (r < 0)
                return log_error_errno(r, "Failed to read the WireGuard private key %s (PrivateKeyFile= in [WireGuard]): %m",
                                       cfg->wg_private_key_file);

        r = wg_key_public_from_private(&h->private_key, &pub);
        if (r < 0)
                return log_error_errno(r, "The WireGuard private key in %s is not usable: %m", cfg->wg_private_key_file);
        wg_key_to_base64(&pub, h->public_key);

        if (h->enabled) {
                r = wg_context_new(&h->wg);
                if (r < 0)
                        log_warning_errno(r, "Cannot open netlink for the WireGuard hub %s, serving without it: %m", h->ifname);
        }
        *ret = TAKE_PTR(h);
        return 0;
}

static int hub_desired(Hub *h, Store *s, WgDevice **ret) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        _cleanup_free_ StorePeer *peers = NULL;
        struct in_addr network;
        unsigned prefixlen;
        size_t n = 0;
        WgIPPrefix a = { .family = AF_INET };
        int r;

        r = wg_device_new(h->ifname, &d);
        if (r < 0)
                return r;
        r = wg_device_set_private_key(d, &h->private_key);
        if (r < 0)
                return r;
        d->flags |= WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_UP;
        d->listen_port = h->listen_port;
        d->up = true;

        store_mesh_prefix(s, &network, &prefixlen);
        store_gateway_address(s, &a.addr.in);
        a.cidr = (uint8_t) prefixlen;
        r = wg_device_add_address(d, &a);
        if (r < 0)
                return r;

        r = store_provider_peers(s, &peers, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                WgAllowedIP ip = { .family = AF_INET, .addr.in = peers[i].address, .cidr = 32 };
                WgKey key;
                WgPeer *p;

                if (wg_key_from_base64(peers[i].public_key, &key) < 0) {
                        log_warning("Provider %" PRIi64 " has an unusable public key in the store, leaving it off the hub.",
                                    peers[i].provider_id);
                        continue;
                }
                r = wg_device_add_peer(d, &key, &p);
                if (r < 0)
                        return r;
                r = wg_peer_add_allowed_ip(p, &ip);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

int hub_converge(Hub *h, Store *s) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        WgConvergeStats st = {};
        const char *hint;
        int r;

        if (!h->enabled)
                return 0;
        if (!h->wg) {
                r = wg_context_new(&h->wg);
                if (r < 0)
                        return log_warning_errno(r, "Cannot open netlink for the WireGuard hub %s: %m", h->ifname);
        }
        r = hub_desired(h, s, &d);
        if (r < 0)
                return log_error_errno(r, "Failed to build the desired state of the WireGuard hub %s from the store: %m", h->ifname);

        r = wg_device_converge(h->wg, d, &st);
        if (r < 0) {
                hint = wg_strerror_hint(r);
                if (r != h->last_error)
                        log_warning_errno(r, "Cannot configure the WireGuard hub %s, serving without it; registrations still go to the store: %m%s%s",
                                          h->ifname, hint ? ". " : "", strempty(hint));
                else
                        log_debug_errno(r, "Cannot configure the WireGuard hub %s (again): %m", h->ifname);
                h->last_error = r;
                return r;
        }
        if (h->last_error != 0 || st.link_created || st.device_changed || st.peers_added || st.peers_changed ||
            st.peers_removed || st.addresses_added || st.addresses_removed || st.up_changed)
                log_info("WireGuard hub %s (%s) converged: %zu peer(s); %u added, %u changed, %u removed%s.",
                         h->ifname, wg_backend_for(h->wg, h->ifname)->name, d->n_peers,
                         st.peers_added, st.peers_changed, st.peers_removed,
                         st.link_created ? "; link created" : "");
        h->last_error = 0;
        return 0;
}
