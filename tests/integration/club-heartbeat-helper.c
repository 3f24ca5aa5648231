/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What test-gatewayd-heartbeat.sh needs besides curl:
 *
 *   club-heartbeat-helper sign SECRET-B64 METHOD TARGET
 *           Prints an X-Club-Signature header value for the request, made with
 *           lib/request-sign and the base64 secret of a registration answer (or "random"
 *           for a secret nobody has).
 *   club-heartbeat-helper delete DB PROVIDER-ID
 *           Deletes the provider from the gateway's store.
 *   club-heartbeat-helper enroll-ephemeral DB USER-NAME
 *           Makes a one-time ephemeral enrollment key for the user and prints it.
 *
 * Exit status 0, or 1.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "log.h"
#include "request-sign.h"
#include "store.h"
#include "wg-key.h"

static int do_sign(const char *secret_b64, const char *method, const char *target) {
        _cleanup_free_ char *header = NULL;
        WgKey k;
        int r;

        _Static_assert(sizeof k.data == REQUEST_SIGN_SECRET_LEN, "a secret is as long as a key");
        if (strcmp(secret_b64, "random") == 0) {
                if (RAND_bytes(k.data, sizeof k.data) != 1)
                        return log_error_errno(-EIO, "RAND_bytes failed."), 1;
        } else if (wg_key_from_base64(secret_b64, &k) < 0)
                return log_error_errno(-EINVAL, "The secret is not base64 of 32 bytes."), 1;
        r = request_sign(k.data, method, target, (uint64_t) time(NULL), NULL, &header);
        wg_key_wipe(&k);
        if (r < 0)
                return log_error_errno(r, "request_sign(): %m"), 1;
        printf("%s\n", header);
        return fflush(stdout) == 0 ? 0 : 1;
}

static int do_delete(const char *db, const char *id) {
        _cleanup_(store_closep) Store *s = NULL;
        char *end;
        long long v;
        int r;

        errno = 0;
        v = strtoll(id, &end, 10);
        if (errno != 0 || *end || v <= 0)
                return log_error_errno(-EINVAL, "Bad provider id: %s", id), 1;
        r = store_open(db, NULL, &s);
        if (r < 0)
                return log_error_errno(r, "store_open(%s): %m", db), 1;
        r = store_provider_delete(s, v);
        if (r < 0)
                return log_error_errno(r, "store_provider_delete(%lld): %m", v), 1;
        return 0;
}

static int do_enroll_ephemeral(const char *db, const char *user) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_(erase_and_freep) char *secret = NULL;
        StoreUser u = {};
        int r;

        r = store_open(db, NULL, &s);
        if (r < 0)
                return log_error_errno(r, "store_open(%s): %m", db), 1;
        r = store_user_get_by_name(s, user, &u);
        if (r < 0)
                return log_error_errno(r, "store_user_get_by_name(%s): %m", user), 1;
        r = store_enrollment_key_create(s, u.id, "ephemeral", STORE_ENROLLMENT_EPHEMERAL, NULL,
                                        USEC_INFINITY, NULL, &secret);
        store_user_deinit(&u);
        if (r < 0)
                return log_error_errno(r, "store_enrollment_key_create(): %m"), 1;
        printf("%s\n", secret);
        return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char *argv[]) {
        if (argc == 5 && strcmp(argv[1], "sign") == 0)
                return do_sign(argv[2], argv[3], argv[4]);
        if (argc == 4 && strcmp(argv[1], "delete") == 0)
                return do_delete(argv[2], argv[3]);
        if (argc == 4 && strcmp(argv[1], "enroll-ephemeral") == 0)
                return do_enroll_ephemeral(argv[2], argv[3]);
        fprintf(stderr, "usage: %s sign SECRET-B64|random METHOD TARGET\n"
                        "       %s delete DB PROVIDER-ID\n"
                        "       %s enroll-ephemeral DB USER-NAME\n", argv[0], argv[0], argv[0]);
        return 1;
}
