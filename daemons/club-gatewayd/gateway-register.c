/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "gateway-forwarded.h"
#include "gateway-register.h"
#include "json-util.h"
#include "keys.h"
#include "log.h"
#include "wg.h"

_Static_assert(STORE_SECRET_LEN == WG_KEY_LEN, "the secret is encoded with the key encoder");

/* ---- the handler ------------------------------------------------------------------------ */

static int respond_unauthorized(HttpExchange *x, const char *code, const char *message) {
        (void) http_exchange_add_header(x, "WWW-Authenticate", "Bearer");
        return http_exchange_respond_error(x, 401, "authentication_error", code, NULL, "%s", message);
}

static int respond_bad(HttpExchange *x, const char *param, const char *message) {
        return http_exchange_respond_error(x, 400, "invalid_request_error", "invalid_request", param, "%s", message);
}

static int respond_store_error(HttpExchange *x, int r, const char *what) {
        if (r == -EBUSY) {
                (void) http_exchange_add_header(x, "Retry-After", "1");
                return http_exchange_respond_error(x, 503, "server_error", "store_busy", NULL,
                                                   "The gateway's store is busy; try again shortly.");
        }
        log_error_errno(r, "Registration failed while %s: %m", what);
        return http_exchange_respond_error(x, 503, "server_error", "store_unavailable", NULL,
                                           "The gateway's store is not available.");
}

static bool is_key_error(int r) {
        return r == -EKEYREJECTED || r == -EKEYREVOKED || r == -EKEYEXPIRED || r == -EACCES;
}

/* Key errors shared by API keys and enrollment keys (is_key_error()). */
static int respond_key_error(HttpExchange *x, int r) {
        switch (r) {
        case -EKEYREVOKED:
                return respond_unauthorized(x, "revoked_api_key", "The API key has been revoked.");
        case -EKEYEXPIRED:
                return respond_unauthorized(x, "expired_api_key",
                                            "The key has expired (or, for a one-time enrollment key, has been used).");
        case -EACCES:
                return http_exchange_respond_error(x, 403, "permission_error", "insufficient_scope", NULL,
                                                   "The API key lacks the 'agent' scope needed to register a provider.");
        default: /* -EKEYREJECTED */
                return respond_unauthorized(x, "invalid_api_key", "Incorrect API key provided.");
        }
}

static int respond_rate_limited(HttpExchange *x, unsigned retry, const char *which) {
        char v[16];

        snprintf(v, sizeof v, "%u", retry);
        (void) http_exchange_add_header(x, "Retry-After", v);
        return http_exchange_respond_error(x, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                                           "Too many registrations %s; try again in %u s.", which, retry);
}

static bool name_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > STORE_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
                        return false;
        return true;
}

static bool version_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > STORE_VERSION_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
                        return false;
        return true;
}

/* Wipe the text of a json-c string value in place before the object is freed. */
static void json_string_wipe(json_object *o, const char *key) {
        json_object *v;

        if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
                explicit_bzero((char *) json_object_get_string(v), (size_t) json_object_get_string_len(v));
}

static int build_answer(RegisterContext *c, const StoreProvider *p, const uint8_t secret[static STORE_SECRET_LEN],
                        char **ret, size_t *ret_len) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        char addr[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN], b64[WG_KEY_B64_SIZE];
        struct in_addr gwa;
        WgKey k;
        int r;

        memcpy(k.data, secret, STORE_SECRET_LEN);
        wg_key_to_base64(&k, b64);
        wg_key_wipe(&k);
        store_gateway_address(c->store, &gwa);
        inet_ntop(AF_INET, &p->mesh_address, addr, sizeof addr);
        inet_ntop(AF_INET, &gwa, gw, sizeof gw);

        o = json_object_new_object();
        r = o ? 0 : -ENOMEM;
        if (r == 0 &&
            (jobj_add_int64(o, "provider_id", p->id) < 0 ||
             jobj_add_string(o, "name", p->name) < 0 ||
             jobj_add_string(o, "mesh_address", addr) < 0 ||
             jobj_add_string(o, "gateway_public_key", hub_public_key(c->hub)) < 0 ||
             jobj_add_string(o, "gateway_endpoint", c->endpoint) < 0 ||
             jobj_add_string(o, "gateway_mesh_address", gw) < 0 ||
             jobj_add_string(o, "request_secret", b64) < 0 ||
             jobj_add_int64(o, "heartbeat_interval_sec", REGISTER_HEARTBEAT_INTERVAL_SEC) < 0))
                r = -ENOMEM;
        explicit_bzero(b64, sizeof b64);
        if (r == 0)
                r = jobj_to_string(o, ret, ret_len);
        if (o)
                json_string_wipe(o, "request_secret");
        return r;
}

int handle_register(RegisterContext *c, HttpExchange *x) {
        _cleanup_(json_object_putp) json_object *body = NULL;
        _cleanup_(erase_and_freep) char *answer = NULL;
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        StoreApiKey apikey = {};
        StoreRegistration reg = {};
        uint8_t secret[STORE_SECRET_LEN];
        char bucket[RATE_LIMITER_KEY_MAX], prefix[KEY_PREFIX_SIZE], client[FORWARDED_ADDRESS_STRLEN];
        const char *auth, *key, *name = NULL, *public_key = NULL, *version = NULL, *reason = NULL;
        const void *data;
        size_t len, answer_len = 0;
        unsigned retry;
        int64_t port;
        KeyKind kind;
        bool created;
        int r;

        if (!streq(http_exchange_method(x), "POST")) {
                (void) http_exchange_add_header(x, "Allow", "POST");
                return http_exchange_respond_error(x, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                   "Use POST for %s.", REGISTER_PATH);
        }
        /* The client's address: behind a trusted proxy, the one it names (gateway-forwarded.h). */
        if (!rate_limiter_take(c->limiter, http_exchange_client(x), now_usec(CLOCK_MONOTONIC), &retry)) {
                log_debug("Registration from %s refused: over RegisterRatePerSource=.",
                          forwarded_address_to_string(http_exchange_client(x), client));
                return respond_rate_limited(x, retry, "from this address");
        }

        /* Who: "Authorization: Bearer ic-…" (API key, scope agent) or "Bearer ie-…" (enrollment). */
        auth = http_exchange_header(x, "Authorization");
        key = auth ? startswith_no_case(auth, "Bearer ") : NULL;
        if (!key)
                return respond_unauthorized(x, "missing_api_key",
                                            "No API key provided: send 'Authorization: Bearer ic-…' (an API key with the agent scope) or 'Bearer ie-…' (an enrollment key).");
        key += strspn(key, " ");
        kind = key_kind_of(key);
        if (kind == KEY_KIND_API) {
                r = store_api_key_verify(c->store, key, STORE_SCOPE_AGENT, &apikey);
                if (r < 0)
                        return is_key_error(r) ? respond_key_error(x, r) : respond_store_error(x, r, "checking the API key");
                reg.owner_id = apikey.user_id;
                snprintf(bucket, sizeof bucket, "ic:%" PRIi64, apikey.id);
                store_api_key_deinit(&apikey);
                /* Authenticated: now the key's own limit, whatever address it comes from. */
                if (!rate_limiter_take_key(c->key_limiter, bucket, now_usec(CLOCK_MONOTONIC), &retry))
                        return respond_rate_limited(x, retry, "with this API key");
        } else if (kind == KEY_KIND_ENROLLMENT && key_parse(key, KEY_KIND_ENROLLMENT, prefix, NULL) >= 0) {
                reg.enrollment_key = key;       /* checked and consumed by store_provider_register() */
                /* The store authenticates it below; a token is taken only once it has, so a
                 * stranger who knows the (public) prefix cannot drain the key's bucket. */
                snprintf(bucket, sizeof bucket, "ie:%s", prefix);
                if (!rate_limiter_check_key(c->key_limiter, bucket, now_usec(CLOCK_MONOTONIC), &retry))
                        return respond_rate_limited(x, retry, "with this enrollment key");
        } else
                return respond_key_error(x, -EKEYREJECTED);

        /* What. */
        data = http_exchange_body(x, &len);
        if (len > REGISTER_BODY_MAX)
                return http_exchange_respond_error(x, 413, "invalid_request_error", "request_too_large", NULL,
                                                   "The registration body is larger than %u bytes.", REGISTER_BODY_MAX);
        r = jobj_parse(data, len, 4, &body, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !body || !json_object_is_type(body, json_type_object))
                return respond_bad(x, NULL, r == -E2BIG ? "The body is nested too deeply." :
                                            r < 0 ? "The body is not valid JSON." : "The body must be a JSON object.");
        if (jobj_get_string(body, "name", &name) < 0 || !name_is_valid(name))
                return respond_bad(x, "name", "'name' must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'.");
        if (jobj_get_string(body, "public_key", &public_key) < 0 || !wg_key_b64_is_valid(public_key))
                return respond_bad(x, "public_key", "'public_key' must be a WireGuard public key: 44 characters of base64, as `wg pubkey` prints.");
        if (streq(public_key, hub_public_key(c->hub)))
                return respond_bad(x, "public_key", "'public_key' is the gateway's own public key.");
        r = jobj_get_int64(body, "agent_port", &port);
        if (r < 0 || port < 1 || port > 65535)
                return respond_bad(x, "agent_port", "'agent_port' must be an integer from 1 to 65535.");
        r = jobj_get_string(body, "version", &version);
        if (r == -ENOENT)
                version = NULL;
        else if (r < 0 || !version_is_valid(version))
                return respond_bad(x, "version", "'version' must be 1 to 64 printable ASCII characters.");

        if (!c->endpoint) {
                log_warning("Refusing a registration: [WireGuard] Endpoint= is not set, so agents cannot be told where to dial.");
                return http_exchange_respond_error(x, 503, "server_error", "gateway_not_configured", NULL,
                                                   "The gateway cannot register agents: its WireGuard endpoint ([WireGuard] Endpoint=) is not configured.");
        }

        reg.name = name;
        reg.public_key = public_key;
        reg.agent_port = (uint16_t) port;
        reg.version = version;
        r = store_provider_register(c->store, &reg, &p, secret);
        /* The store got past the enrollment key's check (these errors come after it). */
        if (reg.enrollment_key && (r >= 0 || r == -EEXIST || r == -ENOSPC))
                (void) rate_limiter_take_key(c->key_limiter, bucket, now_usec(CLOCK_MONOTONIC), &retry);
        if (r == -EEXIST) {
                _cleanup_(store_provider_deinit) StoreProvider other = {};

                if (store_provider_get_by_public_key(c->store, public_key, &other) >= 0 &&
                    (!streq(other.name, name) || (reg.owner_id > 0 && other.owner_id != reg.owner_id)))
                        return http_exchange_respond_error(x, 409, "invalid_request_error", "public_key_in_use", "public_key",
                                                           "This public key is already used by another provider; generate a new key pair.");
                return http_exchange_respond_error(x, 409, "invalid_request_error", "name_in_use", "name",
                                                   "A provider with this name exists and this enrollment key may not replace it; choose another name.");
        }
        if (r == -ENOSPC)
                return http_exchange_respond_error(x, 503, "server_error", "mesh_full", NULL,
                                                   "The mesh has no address left for a new provider.");
        if (r == -EINVAL)
                return respond_bad(x, NULL, "The registration was refused as invalid.");
        if (r == -ENOENT)
                return respond_unauthorized(x, "invalid_api_key", "The key's user no longer exists.");
        if (r < 0)
                return is_key_error(r) ? respond_key_error(x, r) : respond_store_error(x, r, "registering the provider");

        created = r > 0;
        {
                char a[INET_ADDRSTRLEN];

                log_info("%s provider '%s' (id %" PRIi64 ", user %" PRIi64 ") at %s with %s, from %s.",
                         created ? "Registered new" : "Re-registered", p.name, p.id, p.owner_id,
                         inet_ntop(AF_INET, &p.mesh_address, a, sizeof a),
                         reg.enrollment_key ? "an enrollment key" : "an API key",
                         forwarded_address_to_string(http_exchange_client(x), client));
        }

        /* The hub gets the new (or rotated) peer now; a failure is logged, and the next
         * registration or restart tries again. */
        if (hub_converge(c->hub, c->store) < 0)
                log_warning("Provider '%s' is registered in the store but not (yet) on the WireGuard hub %s.",
                            p.name, hub_interface(c->hub));

        r = build_answer(c, &p, secret, &answer, &answer_len);
        explicit_bzero(secret, sizeof secret);
        if (r < 0)
                return r;
        (void) http_exchange_add_header(x, "Cache-Control", "no-store");
        return http_exchange_respond(x, created ? 201 : 200, "application/json", answer, answer_len);
}
