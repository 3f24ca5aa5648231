/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <stdio.h>
#include <strings.h>

#include "agent-register.h"
#include "cleanup.h"
#include "clubd-config.h"
#include "config.h"
#include "http-server.h"
#include "json-util.h"

struct AgentRegisterRequest {
        HttpRequest *req;
        char *buf;
        size_t len;
        bool too_big;
        AgentRegisterRequestDone done;
        void *userdata;
};

bool agent_key_valid(const char *key) {
        size_t n;

        if (!key || !(startswith(key, "ic-") || startswith(key, "ie-")))
                return false;
        n = strlen(key);
        if (n <= 3 || n > AGENT_KEY_MAX)
                return false;
        for (const char *p = key; *p; p++)
                if (*p < 0x21 || *p > 0x7e)
                        return false;
        return true;
}

static bool host_is_loopback(const char *host, size_t len) {
        char buf[INET6_ADDRSTRLEN];
        struct in_addr a4;
        struct in6_addr a6;

        if (len == strlen("localhost") && strncasecmp(host, "localhost", len) == 0)
                return true;
        if (len == 0 || len >= sizeof buf)
                return false;
        memcpy(buf, host, len);
        buf[len] = 0;
        if (inet_pton(AF_INET, buf, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, buf, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6);
        return false;
}

int agent_register_url(const char *gateway_url, bool insecure, char **ret) {
        const char *rest, *end, *host;
        size_t hlen, l;
        bool https;

        if (!gateway_url || strlen(gateway_url) > AGENT_URL_MAX - 32)
                return -EINVAL;
        https = startswith(gateway_url, "https://");
        rest = https ? gateway_url + 8 : startswith(gateway_url, "http://");
        if (!rest || isempty(rest))
                return -EINVAL;
        for (const char *p = gateway_url; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f || *p == '?' || *p == '#')
                        return -EINVAL;
        end = rest + strcspn(rest, "/");
        if (end == rest || memchr(rest, '@', (size_t) (end - rest)))
                return -EINVAL;
        /* The host without the port. */
        host = rest;
        if (host[0] == '[') {
                const char *close = memchr(host, ']', (size_t) (end - host));

                if (!close || (close + 1 != end && close[1] != ':'))
                        return -EINVAL;
                host++;
                hlen = (size_t) (close - host);
        } else {
                const char *colon = memchr(host, ':', (size_t) (end - host));

                hlen = (size_t) ((colon ?: end) - host);
        }
        if (hlen == 0)
                return -EINVAL;
        if (!https && !insecure && !host_is_loopback(host, hlen))
                return -EPROTONOSUPPORT;

        l = strlen(gateway_url);
        while (l > 0 && gateway_url[l - 1] == '/')
                l--;
        if (asprintf(ret, "%.*s/api/v1/agents/register", (int) l, gateway_url) < 0)
                return -ENOMEM;
        return 0;
}

static int parse_addr(json_object *o, const char *key, struct in_addr *ret) {
        const char *v;

        if (jobj_get_string(o, key, &v) < 0 || inet_pton(AF_INET, v, ret) != 1)
                return -EBADMSG;
        return 0;
}

int agent_registration_parse(const char *body, size_t len, AgentSavedState *ret, const char **ret_reason) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        const char *v, *dummy;
        json_object *sv;
        WgKey secret;
        uint64_t interval;
        int r;

        if (!ret_reason)
                ret_reason = &dummy;
#define BAD(why) ({ *ret_reason = (why); -EBADMSG; })
        r = jobj_parse(body, len, 8, &root, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_object_is_type(root, json_type_object))
                return BAD("the answer is not a JSON object");
        if (jobj_get_int64(root, "provider_id", &ret->provider_id) < 0 || ret->provider_id <= 0)
                return BAD("\"provider_id\" is missing or not a positive integer");
        if (jobj_get_string(root, "name", &v) < 0 || !clubd_name_valid(v, false))
                return BAD("\"name\" is missing or not a valid name");
        r = free_and_strdup(&ret->name, v);
        if (r < 0)
                return r;
        if (parse_addr(root, "mesh_address", &ret->mesh_address) < 0)
                return BAD("\"mesh_address\" is missing or not an IPv4 address");
        if (parse_addr(root, "gateway_mesh_address", &ret->gateway_mesh_address) < 0)
                return BAD("\"gateway_mesh_address\" is missing or not an IPv4 address");
        if (ret->mesh_address.s_addr == ret->gateway_mesh_address.s_addr || ret->mesh_address.s_addr == 0)
                return BAD("\"mesh_address\" is not a usable address of its own");
        if (jobj_get_string(root, "gateway_public_key", &v) < 0 ||
            wg_key_from_base64(v, &ret->gateway_public_key) < 0 || wg_key_is_zero(&ret->gateway_public_key))
                return BAD("\"gateway_public_key\" is missing or not a WireGuard public key");
        if (jobj_get_string(root, "gateway_endpoint", &v) < 0 || !agent_endpoint_valid(v))
                return BAD("\"gateway_endpoint\" is missing or not HOST:PORT");
        r = free_and_strdup(&ret->gateway_endpoint, v);
        if (r < 0)
                return r;
        if (jobj_get_uint64(root, "heartbeat_interval_sec", &interval) < 0 ||
            interval < 1 || interval > AGENT_HEARTBEAT_INTERVAL_SEC_MAX)
                return BAD("\"heartbeat_interval_sec\" is missing or not 1 to 3600");
        ret->heartbeat_interval_sec = interval;
        r = jobj_get_string(root, "request_secret", &v);
        if (r >= 0)
                r = wg_key_from_base64(v, &secret);
        /* The text of the secret is wiped before the object is freed. */
        if (json_object_object_get_ex(root, "request_secret", &sv) && json_object_is_type(sv, json_type_string))
                explicit_bzero((char *) json_object_get_string(sv), (size_t) json_object_get_string_len(sv));
        if (r < 0)
                return BAD("\"request_secret\" is missing or not base64 of 32 bytes");
        memcpy(ret->request_secret, secret.data, sizeof ret->request_secret);
        wg_key_wipe(&secret);
#undef BAD
        return 0;
}

static char *sanitize(const char *s, size_t max) {
        size_t n = MIN(strlen(s), max);
        char *c = strndup(s, n);

        if (!c)
                return NULL;
        for (char *p = c; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';
        return c;
}

int agent_gateway_error_parse(const char *body, size_t len, char **ret_code, char **ret_message) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_free_ char *code = NULL, *message = NULL;
        json_object *e;
        const char *v;
        int r;

        r = jobj_parse(body, len, 8, &root, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !root || !json_object_is_type(root, json_type_object) ||
            jobj_get_object(root, "error", &e) < 0 || !json_object_is_type(e, json_type_object))
                return -EBADMSG;
        if (jobj_get_string(e, "code", &v) >= 0 && !isempty(v)) {
                code = sanitize(v, 64);
                if (!code)
                        return -ENOMEM;
        }
        if (jobj_get_string(e, "message", &v) >= 0 && !isempty(v)) {
                message = sanitize(v, 1024);
                if (!message)
                        return -ENOMEM;
        }
        *ret_code = TAKE_PTR(code);
        *ret_message = TAKE_PTR(message);
        return 0;
}

int agent_register_classify(unsigned status, const char *code) {
        if (status == 401 || status == 403)
                return -EKEYREJECTED;
        if (status == 429)
                return -EDQUOT;
        if (status >= 500)
                return -EHOSTUNREACH;
        return -EREMOTEIO;
}

/* ---- the request ------------------------------------------------------------------------ */

AgentRegisterRequest *agent_register_request_free(AgentRegisterRequest *req) {
        if (!req)
                return NULL;
        http_request_free(req->req);
        erase_and_free(req->buf);       /* the answer holds the request secret */
        return mfree(req);
}

static ssize_t on_register_data(HttpRequest *hr, const void *data, size_t len, void *userdata) {
        AgentRegisterRequest *req = userdata;
        char *p;

        if (req->len + len > AGENT_REGISTER_RESPONSE_MAX) {
                req->too_big = true;
                return -EFBIG;
        }
        p = malloc(req->len + len + 1);
        if (!p)
                return -ENOMEM;
        if (req->buf)
                memcpy(p, req->buf, req->len);
        memcpy(p + req->len, data, len);
        p[req->len + len] = 0;
        erase_and_free(req->buf);
        req->buf = p;
        req->len += len;
        return (ssize_t) len;
}

static void register_finish(AgentRegisterRequest *req, int error, const char *code, const char *message,
                            const AgentSavedState *reg) {
        req->done(req, error, code, message, reg, req->userdata);
}

static void on_register_done(HttpRequest *hr, int error, void *userdata) {
        AgentRegisterRequest *req = userdata;
        _cleanup_free_ char *code = NULL, *message = NULL, *m = NULL;
        const char *url = http_request_url(hr);
        unsigned status;
        int r;

        if (req->too_big)
                return register_finish(req, -EBADMSG, "invalid_response",
                                       "The gateway's answer is larger than any registration answer can be.", NULL);
        if (error == -EKEYREJECTED) {
                (void) asprintf(&m, "The TLS certificate of %s could not be verified against %s.", url,
                                "the trusted certificate authorities (the system's store, or CAFile= in [Agent])");
                return register_finish(req, -EBADE, "certificate_invalid", m ?: "The gateway's certificate did not verify.", NULL);
        }
        if (error < 0) {
                (void) asprintf(&m, "The gateway at %s could not be reached: %s.", url,
                                error == -ECONNREFUSED ? "the connection was refused or the name did not resolve" :
                                error == -ETIMEDOUT ? "it did not answer in time" :
                                error == -ECONNRESET ? "the connection was lost" :
                                error == -EPROTO ? "it did not answer HTTP" : strerror(-error));
                return register_finish(req, -EHOSTUNREACH, "gateway_unreachable", m ?: "The gateway could not be reached.", NULL);
        }

        status = http_request_status(hr);
        if (status == 200 || status == 201) {
                AgentSavedState reg = {};
                const char *reason = NULL;

                r = agent_registration_parse(req->buf ?: "", req->len, &reg, &reason);
                if (r < 0) {
                        (void) asprintf(&m, "The gateway's registration answer breaks the protocol: %s.",
                                        r == -ENOMEM ? "out of memory" : reason);
                        agent_saved_state_done(&reg);
                        return register_finish(req, r == -ENOMEM ? -ENOMEM : -EBADMSG, "invalid_response",
                                               m ?: "The gateway's registration answer breaks the protocol.", NULL);
                }
                register_finish(req, 0, NULL, NULL, &reg);
                agent_saved_state_done(&reg);
                return;
        }

        r = agent_gateway_error_parse(req->buf ?: "", req->len, &code, &message);
        if (r < 0 && status >= 500)
                (void) asprintf(&m, "The gateway answered HTTP %u (%s); try again later.", status, http_status_reason(status));
        else if (r < 0)
                (void) asprintf(&m, "The gateway answered HTTP %u (%s) without an error message.", status,
                                http_status_reason(status));
        register_finish(req, agent_register_classify(status, code), code ?: (status >= 500 ? "gateway_unreachable" : "invalid_response"),
                        message ?: m ?: "The gateway refused the registration.", NULL);
}

int agent_register_request_start(HttpClient *client, const char *url, const char *key, const char *name,
                                 const WgKey *public_key, uint16_t port, AgentRegisterRequestDone done,
                                 void *userdata, AgentRegisterRequest **ret) {
        static const HttpRequestCallbacks cb = {
                .on_data = on_register_data,
                .on_done = on_register_done,
        };
        _cleanup_(agent_register_request_freep) AgentRegisterRequest *req = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(erase_and_freep) char *auth = NULL;
        _cleanup_free_ char *body = NULL;
        char b64[WG_KEY_B64_SIZE];
        size_t len;
        int r;

        assert(client && url && key && name && public_key && done && ret);
        if (!agent_key_valid(key) || !clubd_name_valid(name, false) || port == 0)
                return -EINVAL;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if (jobj_add_string(o, "name", name) < 0 ||
            jobj_add_string(o, "public_key", wg_key_to_base64(public_key, b64)) < 0 ||
            jobj_add_int64(o, "agent_port", port) < 0 ||
            jobj_add_string(o, "version", PACKAGE_VERSION) < 0)
                return -ENOMEM;
        r = jobj_to_string(o, &body, &len);
        if (r < 0)
                return r;

        req = new0(AgentRegisterRequest, 1);
        if (!req)
                return -ENOMEM;
        *req = (AgentRegisterRequest) { .done = done, .userdata = userdata };
        r = http_request_new(client, "POST", url, &req->req);
        if (r < 0)
                return r;
        if (asprintf(&auth, "Bearer %s", key) < 0)
                return -ENOMEM;
        r = http_request_add_header(req->req, "Authorization", auth);
        if (r >= 0)
                r = http_request_add_header(req->req, "Content-Type", "application/json");
        if (r >= 0)
                r = http_request_add_header(req->req, "Accept", "application/json");
        if (r >= 0)
                r = http_request_set_body(req->req, body, len);
        if (r < 0)
                return r;
        http_request_set_timeouts(req->req, AGENT_REGISTER_CONNECT_TIMEOUT_USEC, AGENT_REGISTER_RESPONSE_TIMEOUT_USEC);
        http_request_set_response_timeout(req->req, AGENT_REGISTER_RESPONSE_TIMEOUT_USEC);
        r = http_request_start(req->req, &cb, req);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(req);
        return 0;
}
