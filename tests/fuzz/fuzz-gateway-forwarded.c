/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * X-Forwarded-For (untrusted: whatever a client or a proxy sent) and TrustedProxies= words.
 * The input's lines are the X-Forwarded-For header values, in order, from a trusted peer; the
 * first line is also tried as a TrustedProxies= entry.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "fuzz.h"
#include "gateway-forwarded.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const trusted[] = { "127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8" };
        struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        const char *values[FORWARDED_HEADERS_MAX + 2];
        struct sockaddr_storage out = {};
        TrustedProxies t = {}, w = {};
        char *copy, *p, a[FORWARDED_ADDRESS_STRLEN];
        size_t n = 0;
        int r;

        copy = malloc(size + 1);
        check(copy);
        memcpy(copy, data, size);
        copy[size] = 0;
        for (p = copy; n < ELEMENTSOF(values); n++) {
                char *nl = strchr(p, '\n');

                values[n] = p;
                if (!nl) {
                        n++;
                        break;
                }
                *nl = 0;
                p = nl + 1;
        }

        r = trusted_proxies_add(&w, values[0]);
        check(r == 0 || r == -EINVAL || r == -EADDRNOTAVAIL);
        check((r == 0) == (w.n == 1));
        trusted_proxies_done(&w);

        for (size_t i = 0; i < ELEMENTSOF(trusted); i++)
                check(trusted_proxies_add(&t, trusted[i]) == 0);
        r = forwarded_client(&t, (struct sockaddr *) &peer, values, n, &out);
        check(r == 0 || r == 1 || r == -EBADMSG || r == -E2BIG);
        if (r >= 0) {
                check(out.ss_family == AF_INET || out.ss_family == AF_INET6);
                check(strcmp(forwarded_address_to_string((struct sockaddr *) &out, a), "?") != 0);
        } else
                check(out.ss_family == AF_UNSPEC);
        trusted_proxies_done(&t);
        free(copy);
        return 0;
}
