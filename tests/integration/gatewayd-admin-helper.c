/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Makes the users and keys test-gatewayd-register.sh needs, directly through the store
 * (there is no admin tool yet).
 *
 *   gatewayd-admin-helper DB
 *           Creates user "alice" with an API key with the agent scope, an inference-only
 *           API key, a revoked agent key, a one-time enrollment key and a reusable one;
 *           and user "bob" with an agent key; and for the rate-limit and durability tests
 *           one more agent key of alice's. Prints one line per key:
 *               agent=ic-…  inference=ic-…  revoked=ic-…  enroll_once=ie-…
 *               enroll_reusable=ie-…  bob_agent=ic-…  burst_agent=ic-…
 *
 *   gatewayd-admin-helper DB share PROVIDER-ID private|everyone
 *           Sets who besides its owner may use the provider (test-gatewayd-api.sh).
 *
 *   gatewayd-admin-helper DB limits USER RPM TPM STREAMS
 *           Makes an inference key for USER with these limits (-2 the gateway's default,
 *           -1 unlimited, N) and prints "ID SECRET" (test-gatewayd-usage.sh).
 *
 * The secrets go to stdout only because a test needs them. Exit status 0, or 1.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "store.h"

static int print_api_key(Store *s, int64_t user, const char *label, unsigned scopes, bool revoke) {
        _cleanup_(erase_and_freep) char *secret = NULL;
        StoreApiKey k = {};
        int r;

        r = store_api_key_create(s, user, label, scopes, USEC_INFINITY, &k, &secret);
        if (r < 0)
                return log_error_errno(r, "store_api_key_create(%s): %m", label);
        if (revoke)
                r = store_api_key_revoke(s, k.id);
        store_api_key_deinit(&k);
        if (r < 0)
                return log_error_errno(r, "store_api_key_revoke(%s): %m", label);
        printf("%s=%s\n", label, secret);
        return 0;
}

static int print_enrollment_key(Store *s, int64_t user, const char *label, unsigned flags) {
        _cleanup_(erase_and_freep) char *secret = NULL;
        int r;

        r = store_enrollment_key_create(s, user, label, flags, NULL, USEC_INFINITY, NULL, &secret);
        if (r < 0)
                return log_error_errno(r, "store_enrollment_key_create(%s): %m", label);
        printf("%s=%s\n", label, secret);
        return 0;
}

static int do_share(const char *db, const char *id, const char *mode) {
        _cleanup_(store_closep) Store *s = NULL;
        StoreSharing sharing = { .mode = store_share_mode_from_string(mode) };
        char *end;
        long long v;
        int r;

        errno = 0;
        v = strtoll(id, &end, 10);
        if (errno != 0 || *end || v <= 0 || (sharing.mode != STORE_SHARE_PRIVATE && sharing.mode != STORE_SHARE_EVERYONE))
                return log_error_errno(-EINVAL, "usage: DB share PROVIDER-ID private|everyone"), 1;
        r = store_open(db, NULL, &s);
        if (r < 0)
                return log_error_errno(r, "store_open(%s): %m", db), 1;
        r = store_provider_set_sharing(s, v, &sharing);
        if (r < 0)
                return log_error_errno(r, "store_provider_set_sharing(%lld, %s): %m", v, mode), 1;
        return 0;
}

static int do_limits(char *argv[]) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_(store_user_deinit) StoreUser u = {};
        _cleanup_(store_api_key_deinit) StoreApiKey k = {};
        _cleanup_(erase_and_freep) char *secret = NULL;
        StoreKeyLimits l = {
                .requests_per_minute = strtoll(argv[4], NULL, 10),
                .tokens_per_minute = strtoll(argv[5], NULL, 10),
                .concurrent_streams = strtoll(argv[6], NULL, 10),
        };
        int r;

        r = store_open(argv[1], NULL, &s);
        if (r >= 0)
                r = store_user_get_by_name(s, argv[3], &u);
        if (r >= 0)
                r = store_api_key_create(s, u.id, NULL, STORE_SCOPE_INFERENCE, USEC_INFINITY, &k, &secret);
        if (r >= 0)
                r = store_api_key_set_limits(s, k.id, &l);
        if (r < 0)
                return log_error_errno(r, "Failed to make a key with limits for %s: %m", argv[3]), 1;
        printf("%" PRId64 " %s\n", k.id, secret);
        return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(store_closep) Store *s = NULL;
        int64_t alice, bob;
        int r;

        if (argc == 5 && streq(argv[2], "share"))
                return do_share(argv[1], argv[3], argv[4]);
        if (argc == 7 && streq(argv[2], "limits"))
                return do_limits(argv);
        if (argc != 2) {
                fprintf(stderr, "usage: %s DB\n", argv[0]);
                return 1;
        }
        r = store_open(argv[1], NULL, &s);
        if (r < 0)
                return log_error_errno(r, "store_open(%s): %m", argv[1]), 1;
        r = store_user_create(s, "alice", false, NULL, &alice);
        if (r < 0)
                return log_error_errno(r, "store_user_create(alice): %m"), 1;
        r = store_user_create(s, "bob", false, NULL, &bob);
        if (r < 0)
                return log_error_errno(r, "store_user_create(bob): %m"), 1;
        if (print_api_key(s, alice, "agent", STORE_SCOPE_AGENT, false) < 0 ||
            print_api_key(s, alice, "inference", STORE_SCOPE_INFERENCE, false) < 0 ||
            print_api_key(s, alice, "revoked", STORE_SCOPE_AGENT, true) < 0 ||
            print_enrollment_key(s, alice, "enroll_once", 0) < 0 ||
            print_enrollment_key(s, alice, "enroll_reusable", STORE_ENROLLMENT_REUSABLE) < 0 ||
            print_api_key(s, bob, "bob_agent", STORE_SCOPE_AGENT | STORE_SCOPE_INFERENCE, false) < 0 ||
            print_api_key(s, alice, "burst_agent", STORE_SCOPE_AGENT, false) < 0)
                return 1;
        return fflush(stdout) == 0 ? 0 : 1;
}
