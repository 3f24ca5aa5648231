/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The UAPI reply parsers (lib/wg-uapi.c) on arbitrary input. Whatever parses as a
 * get reply must format as a set request, and that request, written back as a
 * reply, must parse to the same device.
 */
#include <string.h>

#include "fuzz.h"
#include "macro.h"
#include "wg-uapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL, *back = NULL;
        _cleanup_(erase_and_freep) char *set = NULL;
        _cleanup_(freep) char *reply = NULL;
        size_t len;
        int r;

        if (size > 1024 * 1024)
                return 0;

        r = wg_uapi_parse_errno((const char *) data, size);
        check(r <= 0 && r >= -4095);

        r = wg_uapi_parse_get((const char *) data, size, "fuzz0", &d);
        check(r <= 0 && r >= -4095);
        if (r < 0) {
                check(!d);
                return 0;
        }
        check(d && d->n_peers <= WG_PEERS_MAX);

        r = wg_uapi_format_set(d, &set, &len);
        check(r == 0 && len == strlen(set) && strncmp(set, "set=1\n", 6) == 0);
        check(len >= 7 && set[len - 1] == '\n' && set[len - 2] == '\n');

        /* "set=1\n<lines>\n" -> "<lines>errno=0\n\n" */
        reply = malloc(len + 16);
        check(reply);
        memcpy(reply, set + 6, len - 7);
        memcpy(reply + len - 7, "errno=0\n\n", 10);
        r = wg_uapi_parse_get(reply, strlen(reply), "fuzz0", &back);
        check(r == 0);

        check(back->n_peers == d->n_peers);
        check(back->listen_port == d->listen_port && back->fwmark == d->fwmark);
        check(memcmp(back->private_key.data, d->private_key.data, WG_KEY_LEN) == 0);
        for (size_t i = 0; i < d->n_peers; i++) {
                const WgPeer *a = d->peers[i], *b = back->peers[i];

                check(memcmp(a->public_key.data, b->public_key.data, WG_KEY_LEN) == 0);
                check(memcmp(a->preshared_key.data, b->preshared_key.data, WG_KEY_LEN) == 0);
                check(a->persistent_keepalive == b->persistent_keepalive);
                check(FLAGS_SET(a->flags, WG_PEER_HAS_ENDPOINT) == FLAGS_SET(b->flags, WG_PEER_HAS_ENDPOINT));
                check(!FLAGS_SET(a->flags, WG_PEER_HAS_ENDPOINT) || wg_endpoint_equal(&a->endpoint, &b->endpoint));
                check(a->n_allowed_ips == b->n_allowed_ips);
                check(a->n_allowed_ips == 0 ||
                      memcmp(a->allowed_ips, b->allowed_ips, a->n_allowed_ips * sizeof(WgAllowedIP)) == 0);
        }
        return 0;
}
