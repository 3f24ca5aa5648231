/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <string.h>

#include "cleanup.h"
#include "gateway-heartbeat.h"
#include "gateway-register.h"
#include "json-util.h"
#include "log.h"

static int respond_bad(HttpExchange *x, const char *param, const char *message) {
        return http_exchange_respond_error(x, 400, "invalid_request_error", "invalid_request", param, "%s", message);
}

static int respond_store_error(HttpExchange *x, int r) {
        if (r == -EBUSY) {
                (void) http_exchange_add_header(x, "Retry-After", "1");
                return http_exchange_respond_error(x, 503, "server_error", "store_busy", NULL,
                                                   "The gateway's store is busy; try again shortly.");
        }
        log_error_errno(r, "Recording a heartbeat failed: %m");
        return http_exchange_respond_error(x, 503, "server_error", "store_unavailable", NULL,
                                           "The gateway's store is not available.");
}

static int respond_unknown_provider(HttpExchange *x, unsigned status) {
        if (status == 403)
                return http_exchange_respond_error(x, 403, "permission_error", "unknown_provider", NULL,
                                                   "No provider has this request's source address; heartbeats must come through the provider's WireGuard tunnel.");
        return http_exchange_respond_error(x, 404, "invalid_request_error", "unknown_provider", NULL,
                                           "This provider is not known to the gateway (it may have been deleted); register again.");
}

static int respond_signature_error(HttpExchange *x, int r) {
        const char *code, *msg;

        switch (r) {
        case -ESTALE:
                code = "stale_signature";
                msg = "The X-Club-Signature time is outside the accepted window; check the agent's clock.";
                break;
        case -EKEYREJECTED:
                code = "invalid_signature";
                msg = "The X-Club-Signature does not match this provider's request secret; register again if the secret was rotated.";
                break;
        case -EALREADY:
                code = "replayed_signature";
                msg = "The X-Club-Signature nonce was already used; sign every request afresh.";
                break;
        default: /* -EBADMSG */
                code = "invalid_signature";
                msg = "The X-Club-Signature header is malformed (see docs/request-signing.md).";
                break;
        }
        return http_exchange_respond_error(x, 401, "authentication_error", code, NULL, "%s", msg);
}

/* The source address as IPv4 (IPv4-mapped IPv6 too); false for anything else. */
static bool peer_ipv4(const struct sockaddr *sa, struct in_addr *ret) {
        if (!sa)
                return false;
        if (sa->sa_family == AF_INET) {
                *ret = ((const struct sockaddr_in *) sa)->sin_addr;
                return true;
        }
        if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

                if (IN6_IS_ADDR_V4MAPPED(a)) {
                        memcpy(&ret->s_addr, a->s6_addr + 12, 4);
                        return true;
                }
        }
        return false;
}

/* A provider's address as far as the network goes: in the mesh prefix and not the
 * gateway's own. Such a source with no provider behind it is a provider that is gone
 * (deleted): it is told to register again (404) rather than refused as a stranger (403). */
static bool in_mesh(Store *s, struct in_addr a) {
        struct in_addr net, gw;
        unsigned len;
        uint32_t mask;

        store_mesh_prefix(s, &net, &len);
        store_gateway_address(s, &gw);
        mask = len == 0 ? 0 : htonl(UINT32_MAX << (32 - len));
        return (a.s_addr & mask) == (net.s_addr & mask) && a.s_addr != gw.s_addr;
}

/* An optional array of strings, each 1–@max_len bytes, at most @max_n of them: a
 * NULL-terminated array pointing into @body (free() only the array). -ENOENT: absent. */
static int get_string_array(json_object *body, const char *key, size_t max_n, size_t max_len, const char ***ret) {
        _cleanup_free_ const char **l = NULL;
        json_object *a;
        size_t n;
        int r;

        r = jobj_get_array(body, key, &a);
        if (r < 0)
                return r;
        n = json_object_array_length(a);
        if (n > max_n)
                return -E2BIG;
        l = new0(const char *, n + 1);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(a, i);
                const char *s;

                if (!json_object_is_type(e, json_type_string))
                        return -EINVAL;
                s = json_object_get_string(e);
                if ((size_t) json_object_get_string_len(e) != strlen(s) || strlen(s) == 0 || strlen(s) > max_len)
                        return -EINVAL;
                l[i] = s;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

static int get_count(json_object *body, const char *key, uint32_t *ret) {
        uint64_t v;
        int r;

        r = jobj_get_uint64(body, key, &v);
        if (r == -ENOENT) {
                *ret = 0;
                return 0;
        }
        if (r < 0 || v > INT32_MAX)
                return -EINVAL;
        *ret = (uint32_t) v;
        return 0;
}

static bool text_ok(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

/* "upstreams": [{"name": "…", "url": "…", "healthy": bool}, …] → compact JSON text, or NULL
 * when absent. Returns 0, -EINVAL (with *ret_reason), -ENOMEM. */
static int get_upstreams(json_object *body, char **ret, const char **ret_reason) {
        _cleanup_(json_object_putp) json_object *out = NULL;
        json_object *a;
        size_t n, len;
        int r;

        *ret = NULL;
        r = jobj_get_array(body, "upstreams", &a);
        if (r == -ENOENT)
                return 0;
        *ret_reason = "'upstreams' must be an array of at most 64 objects with a 'name' (1–256 printable characters), "
                      "a 'url' (1–2048) and a boolean 'healthy'.";
        if (r < 0)
                return -EINVAL;
        n = json_object_array_length(a);
        if (n > HEARTBEAT_UPSTREAMS_MAX)
                return -EINVAL;
        out = json_object_new_array();
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(a, i), *u;
                const char *name, *url;
                bool healthy;

                if (!json_object_is_type(e, json_type_object) ||
                    jobj_get_string(e, "name", &name) < 0 || !text_ok(name, HEARTBEAT_UPSTREAM_NAME_MAX) ||
                    jobj_get_string(e, "url", &url) < 0 || !text_ok(url, HEARTBEAT_UPSTREAM_URL_MAX) ||
                    jobj_get_bool(e, "healthy", &healthy) < 0)
                        return -EINVAL;
                u = json_object_new_object();
                if (!u)
                        return -ENOMEM;
                if (json_object_array_add(out, u) < 0) {
                        json_object_put(u);
                        return -ENOMEM;
                }
                if (jobj_add_string(u, "name", name) < 0 || jobj_add_string(u, "url", url) < 0 ||
                    jobj_add_bool(u, "healthy", healthy) < 0)
                        return -ENOMEM;
        }
        return jobj_to_string(out, ret, &len);
}

static int answer(HeartbeatContext *c, HttpExchange *x, const StoreProvider *p) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (jobj_add_int64(o, "provider_id", p->id) < 0 ||
            jobj_add_bool(o, "online", p->online) < 0 ||
            jobj_add_int64(o, "heartbeat_interval_sec", REGISTER_HEARTBEAT_INTERVAL_SEC) < 0 ||
            jobj_add_int64(o, "window_sec", (int64_t) c->window_sec) < 0)
                return -ENOMEM;
        r = jobj_to_string(o, &text, &len);
        if (r < 0)
                return r;
        (void) http_exchange_add_header(x, "Cache-Control", "no-store");
        return http_exchange_respond(x, 200, "application/json", text, len);
}

int handle_heartbeat(HeartbeatContext *c, HttpExchange *x) {
        _cleanup_(json_object_putp) json_object *body = NULL;
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        _cleanup_free_ const char **models = NULL, **caps = NULL;
        _cleanup_free_ char *upstreams = NULL;
        uint8_t secret[STORE_SECRET_LEN];
        const char *version = NULL, *reason = NULL;
        StoreHeartbeat hb = {};
        struct in_addr src;
        const void *data;
        size_t len;
        int r;

        if (!streq(http_exchange_method(x), "POST")) {
                (void) http_exchange_add_header(x, "Allow", "POST");
                return http_exchange_respond_error(x, 405, "invalid_request_error", "method_not_allowed", NULL,
                                                   "Use POST for %s.", HEARTBEAT_PATH);
        }

        /* Who: the provider whose mesh address the connection comes from. */
        if (!peer_ipv4(http_exchange_peer(x), &src))
                return respond_unknown_provider(x, 403);
        r = store_provider_get_by_address(c->store, src, &p);
        if (r == -ENOENT)
                return respond_unknown_provider(x, in_mesh(c->store, src) ? 404 : 403);
        if (r < 0)
                return respond_store_error(x, r);

        /* Proof: a fresh signature with its secret. */
        r = store_provider_get_secret(c->store, p.id, secret);
        if (r == -ENOENT)
                return respond_unknown_provider(x, 404);
        if (r < 0)
                return respond_store_error(x, r);
        if (!http_exchange_header(x, REQUEST_SIGN_HEADER)) {
                explicit_bzero(secret, sizeof secret);
                return http_exchange_respond_error(x, 401, "authentication_error", "missing_signature", NULL,
                                                   "No X-Club-Signature header: sign heartbeats with the request_secret from the registration answer.");
        }
        r = request_verify(c->replay, secret, http_exchange_method(x), http_exchange_target(x),
                           http_exchange_header(x, REQUEST_SIGN_HEADER), now_usec(CLOCK_REALTIME) / USEC_PER_SEC);
        explicit_bzero(secret, sizeof secret);
        if (r == -ENOMEM)
                return r;
        if (r == -ENOBUFS || r == -EIO) {
                log_warning_errno(r, "Cannot check a heartbeat's signature from provider %" PRIi64 ": %m", p.id);
                (void) http_exchange_add_header(x, "Retry-After", "1");
                return http_exchange_respond_error(x, 503, "server_error", "signature_check_unavailable", NULL,
                                                   "The gateway cannot check signatures right now; try again shortly.");
        }
        if (r < 0) {
                log_debug_errno(r, "Refusing a heartbeat for provider %" PRIi64 ": bad signature: %m", p.id);
                return respond_signature_error(x, r);
        }

        /* What. */
        data = http_exchange_body(x, &len);
        if (len > HEARTBEAT_BODY_MAX)
                return http_exchange_respond_error(x, 413, "invalid_request_error", "request_too_large", NULL,
                                                   "The heartbeat body is larger than %u bytes.", HEARTBEAT_BODY_MAX);
        r = jobj_parse(data, len, 4, &body, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !body || !json_object_is_type(body, json_type_object))
                return respond_bad(x, NULL, r == -E2BIG ? "The body is nested too deeply." :
                                            r < 0 ? "The body is not valid JSON." : "The body must be a JSON object.");
        r = get_string_array(body, "models", STORE_MODELS_MAX, STORE_MODEL_NAME_MAX, &models);
        if (r == -ENOMEM)
                return r;
        if (r < 0 && r != -ENOENT)
                return respond_bad(x, "models", "'models' must be an array of at most 1024 model names, each 1–256 characters without spaces or control characters.");
        r = get_string_array(body, "capabilities", STORE_CAPABILITIES_MAX, STORE_TAG_MAX, &caps);
        if (r == -ENOMEM)
                return r;
        if (r < 0 && r != -ENOENT)
                return respond_bad(x, "capabilities", "'capabilities' must be an array of at most 256 names, each 1–64 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'.");
        if (get_count(body, "in_flight", &hb.in_flight) < 0)
                return respond_bad(x, "in_flight", "'in_flight' must be an integer from 0 to 2147483647.");
        if (get_count(body, "capacity", &hb.capacity) < 0)
                return respond_bad(x, "capacity", "'capacity' must be an integer from 0 to 2147483647.");
        r = get_upstreams(body, &upstreams, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return respond_bad(x, "upstreams", reason);
        r = jobj_get_string(body, "version", &version);
        if (r == -ENOENT)
                version = NULL;
        else if (r < 0 || !text_ok(version, STORE_VERSION_MAX))
                return respond_bad(x, "version", "'version' must be 1 to 64 printable characters.");
        r = jobj_get_bool(body, "draining", &hb.draining);
        if (r == -ENOENT)
                hb.draining = false;
        else if (r < 0)
                return respond_bad(x, "draining", "'draining' must be true or false.");

        hb.models = (char *const *) models;
        hb.capabilities = (char *const *) caps;
        hb.upstream_health = upstreams;
        hb.version = version;
        r = store_provider_heartbeat(c->store, p.id, &hb);
        if (r == -ENOENT)
                return respond_unknown_provider(x, 404);
        if (r == -EINVAL || r == -E2BIG)
                return respond_bad(x, NULL, "The heartbeat was refused as invalid: check the model and capability names.");
        if (r < 0)
                return respond_store_error(x, r);

        /* Read back: "online" is what the store computes (state, draining, window). */
        store_provider_deinit(&p);
        p = (StoreProvider) {};
        r = store_provider_get_by_address(c->store, src, &p);
        if (r == -ENOENT)
                return respond_unknown_provider(x, 404);
        if (r < 0)
                return respond_store_error(x, r);
        log_debug("Heartbeat from provider '%s' (id %" PRIi64 "): %s.", p.name, p.id, p.online ? "online" : "not online");
        return answer(c, x, &p);
}
