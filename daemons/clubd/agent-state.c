/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-state.h"
#include "cleanup.h"
#include "clubd-config.h"
#include "json-util.h"

void agent_saved_state_done(AgentSavedState *s) {
        if (!s)
                return;
        free(s->name);
        free(s->gateway_url);
        free(s->gateway_endpoint);
        free(s->ca_file);
        wg_key_wipe(&s->private_key);
        explicit_bzero(s->request_secret, sizeof s->request_secret);
        *s = (AgentSavedState) {};
}

AgentSavedState *agent_saved_state_free(AgentSavedState *s) {
        agent_saved_state_done(s);
        return mfree(s);
}

static bool hostname_valid(const char *h, size_t len) {
        bool label_start = true;
        size_t label = 0;

        if (len == 0 || len > 253)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = h[i];

                if (c == '.') {
                        if (label_start || h[i - 1] == '-')
                                return false;
                        label_start = true;
                        label = 0;
                        continue;
                }
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
                if (label_start && c == '-')
                        return false;
                label_start = false;
                if (++label > 63)
                        return false;
        }
        return !label_start && h[len - 1] != '-';
}

int agent_endpoint_split(const char *s, char **ret_host, uint16_t *ret_port) {
        const char *colon, *host;
        size_t hlen;
        uint16_t port;
        char *h;

        if (!s || strlen(s) > AGENT_ENDPOINT_MAX)
                return -EINVAL;
        if (s[0] == '[') {
                struct in6_addr a;
                char buf[INET6_ADDRSTRLEN];
                const char *close = strchr(s, ']');

                if (!close || close[1] != ':')
                        return -EINVAL;
                host = s + 1;
                hlen = (size_t) (close - host);
                if (hlen == 0 || hlen >= sizeof buf)
                        return -EINVAL;
                memcpy(buf, host, hlen);
                buf[hlen] = 0;
                if (inet_pton(AF_INET6, buf, &a) != 1)
                        return -EINVAL;
                colon = close + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                host = s;
                hlen = (size_t) (colon - s);
                if (memchr(host, ':', hlen) || !hostname_valid(host, hlen))
                        return -EINVAL;
        }
        if (parse_port(colon + 1, &port) < 0)
                return -EINVAL;
        if (!ret_host) {
                if (ret_port)
                        *ret_port = port;
                return 0;
        }
        h = strndup(host, hlen);
        if (!h)
                return -ENOMEM;
        *ret_host = h;
        if (ret_port)
                *ret_port = port;
        return 0;
}

bool agent_endpoint_valid(const char *s) {
        return agent_endpoint_split(s, NULL, NULL) == 0;
}

/* ---- loading ------------------------------------------------------------------------- */

static int get_string(json_object *o, const char *key, size_t max, char **ret) {
        const char *v;
        char *c;

        if (jobj_get_string(o, key, &v) < 0 || isempty(v) || strlen(v) > max)
                return -EBADMSG;
        c = strdup(v);
        if (!c)
                return -ENOMEM;
        free(*ret);
        *ret = c;
        return 0;
}

static int get_in_addr(json_object *o, const char *key, struct in_addr *ret) {
        const char *v;

        if (jobj_get_string(o, key, &v) < 0 || inet_pton(AF_INET, v, ret) != 1)
                return -EBADMSG;
        return 0;
}

static int get_key(json_object *o, const char *key, WgKey *ret) {
        const char *v;

        if (jobj_get_string(o, key, &v) < 0 || wg_key_from_base64(v, ret) < 0)
                return -EBADMSG;
        return 0;
}

/* Wipe the text of a json-c string value in place before the object is freed. */
static void json_string_wipe(json_object *o, const char *key) {
        json_object *v;

        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
                explicit_bzero((char *) json_object_get_string(v), (size_t) json_object_get_string_len(v));
}

static void json_state_putp(json_object **o) {
        json_string_wipe(*o, "private_key");
        json_string_wipe(*o, "request_secret");
        json_object_putp(o);
}

static int state_from_json(json_object *root, AgentSavedState *s, const char **reason) {
        json_object *v;
        WgKey secret;
        int64_t i;
        uint64_t u;
        int r;

#define BAD(why) ({ *reason = (why); -EBADMSG; })
        if (!json_object_is_type(root, json_type_object))
                return BAD("it is not a JSON object");
        r = jobj_get_int64(root, "version", &i);
        if (r < 0 || i < 1)
                return BAD("its \"version\" is missing or not a positive integer");
        if (i > AGENT_STATE_VERSION) {
                *reason = "it was written by a newer clubd (its format version is not known to this one)";
                return -EPROTONOSUPPORT;
        }
        if (jobj_get_int64(root, "provider_id", &s->provider_id) < 0 || s->provider_id <= 0)
                return BAD("\"provider_id\" is missing or not a positive integer");
        r = get_string(root, "name", 64, &s->name);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !clubd_name_valid(s->name, false))
                return BAD("\"name\" is missing or invalid");
        r = get_string(root, "gateway_url", AGENT_URL_MAX, &s->gateway_url);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !(startswith(s->gateway_url, "https://") || startswith(s->gateway_url, "http://")))
                return BAD("\"gateway_url\" is missing or not an http(s):// URL");
        if (get_in_addr(root, "mesh_address", &s->mesh_address) < 0)
                return BAD("\"mesh_address\" is missing or not an IPv4 address");
        if (get_key(root, "gateway_public_key", &s->gateway_public_key) < 0)
                return BAD("\"gateway_public_key\" is missing or not a WireGuard key");
        r = get_string(root, "gateway_endpoint", AGENT_ENDPOINT_MAX, &s->gateway_endpoint);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !agent_endpoint_valid(s->gateway_endpoint))
                return BAD("\"gateway_endpoint\" is missing or not HOST:PORT");
        if (get_in_addr(root, "gateway_mesh_address", &s->gateway_mesh_address) < 0)
                return BAD("\"gateway_mesh_address\" is missing or not an IPv4 address");
        if (jobj_get_uint64(root, "heartbeat_interval_sec", &s->heartbeat_interval_sec) < 0 ||
            s->heartbeat_interval_sec < 1 || s->heartbeat_interval_sec > AGENT_HEARTBEAT_INTERVAL_SEC_MAX)
                return BAD("\"heartbeat_interval_sec\" is missing or out of range");
        if (jobj_get_uint64(root, "agent_port", &u) < 0 || u < 1 || u > 65535)
                return BAD("\"agent_port\" is missing or not a port");
        s->agent_port = (uint16_t) u;
        if (get_key(root, "private_key", &s->private_key) < 0 || wg_key_is_zero(&s->private_key))
                return BAD("\"private_key\" is missing or not a WireGuard key");
        if (get_key(root, "request_secret", &secret) < 0)
                return BAD("\"request_secret\" is missing or not base64 of 32 bytes");
        memcpy(s->request_secret, secret.data, sizeof s->request_secret);
        wg_key_wipe(&secret);
        r = jobj_get_bool(root, "insecure", &s->insecure);
        if (r < 0 && r != -ENOENT)
                return BAD("\"insecure\" is not a boolean");
        if (json_object_object_get_ex(root, "ca_file", &v) && v) {
                r = get_string(root, "ca_file", 1024, &s->ca_file);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || s->ca_file[0] != '/')
                        return BAD("\"ca_file\" is not an absolute path");
        }
#undef BAD
        return 0;
}

int agent_state_load(const char *dir, AgentSavedState **ret, const char **ret_reason) {
        _cleanup_(agent_saved_state_freep) AgentSavedState *s = NULL;
        _cleanup_(json_state_putp) json_object *root = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_(erase_and_freep) char *buf = NULL;
        const char *reason = NULL, *dummy;
        _cleanup_(closep) int fd = -EBADF;
        struct stat st;
        size_t n = 0;
        int r;

        assert(dir && ret);
        if (!ret_reason)
                ret_reason = &dummy;
        if (asprintf(&path, "%s/" AGENT_STATE_FILE, dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                *ret_reason = "it cannot be opened";
                return -errno;
        }
        if (fstat(fd, &st) < 0) {
                *ret_reason = "it cannot be read";
                return -errno;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_reason = "it is not a regular file";
                return -EBADMSG;
        }
        if (st.st_size > (off_t) AGENT_STATE_SIZE_MAX) {
                *ret_reason = "it is larger than a state file can be";
                return -EFBIG;
        }
        /* Zeroed, and one byte more than is ever read: erase_and_free() wipes up to the NUL. */
        buf = new0(char, AGENT_STATE_SIZE_MAX + 2);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read(fd, buf + n, AGENT_STATE_SIZE_MAX + 1 - n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        *ret_reason = "it cannot be read";
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > AGENT_STATE_SIZE_MAX) {
                        *ret_reason = "it is larger than a state file can be";
                        return -EFBIG;
                }
        }
        r = jobj_parse(buf, n, 8, &root, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !root) {
                *ret_reason = "it is not valid JSON (the file is damaged)";
                return -EBADMSG;
        }
        s = new0(AgentSavedState, 1);
        if (!s)
                return -ENOMEM;
        r = state_from_json(root, s, &reason);
        if (r < 0) {
                *ret_reason = reason ?: "it is not a valid state file";
                return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

/* ---- saving -------------------------------------------------------------------------- */

static int add_in_addr(json_object *o, const char *key, const struct in_addr *a) {
        char buf[INET_ADDRSTRLEN];

        if (!inet_ntop(AF_INET, a, buf, sizeof buf))
                return -EINVAL;
        return jobj_add_string(o, key, buf);
}

static int state_to_json(const AgentSavedState *s, json_object **ret) {
        _cleanup_(json_state_putp) json_object *o = NULL;
        char b64[WG_KEY_B64_SIZE];
        WgKey secret;
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        r = jobj_add_int64(o, "version", AGENT_STATE_VERSION);
        if (r >= 0)
                r = jobj_add_int64(o, "provider_id", s->provider_id);
        if (r >= 0)
                r = jobj_add_string(o, "name", s->name);
        if (r >= 0)
                r = jobj_add_string(o, "gateway_url", s->gateway_url);
        if (r >= 0)
                r = add_in_addr(o, "mesh_address", &s->mesh_address);
        if (r >= 0)
                r = jobj_add_string(o, "gateway_public_key", wg_key_to_base64(&s->gateway_public_key, b64));
        if (r >= 0)
                r = jobj_add_string(o, "gateway_endpoint", s->gateway_endpoint);
        if (r >= 0)
                r = add_in_addr(o, "gateway_mesh_address", &s->gateway_mesh_address);
        if (r >= 0)
                r = jobj_add_int64(o, "heartbeat_interval_sec", (int64_t) s->heartbeat_interval_sec);
        if (r >= 0)
                r = jobj_add_int64(o, "agent_port", s->agent_port);
        if (r >= 0)
                r = jobj_add_string(o, "private_key", wg_key_to_base64(&s->private_key, b64));
        if (r >= 0) {
                memcpy(secret.data, s->request_secret, sizeof secret.data);
                r = jobj_add_string(o, "request_secret", wg_key_to_base64(&secret, b64));
                wg_key_wipe(&secret);
        }
        explicit_bzero(b64, sizeof b64);
        if (r >= 0)
                r = jobj_add_bool(o, "insecure", s->insecure);
        if (r >= 0)
                r = jobj_add_string(o, "ca_file", s->ca_file);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

static int write_all(int fd, const char *p, size_t len) {
        while (len > 0) {
                ssize_t k = write(fd, p, len);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

static int state_validate(const AgentSavedState *s) {
        if (s->provider_id <= 0 || !clubd_name_valid(s->name, false) || isempty(s->gateway_url) ||
            strlen(s->gateway_url) > AGENT_URL_MAX || !agent_endpoint_valid(s->gateway_endpoint) ||
            s->heartbeat_interval_sec < 1 || s->heartbeat_interval_sec > AGENT_HEARTBEAT_INTERVAL_SEC_MAX ||
            s->agent_port == 0 || wg_key_is_zero(&s->private_key) || (s->ca_file && s->ca_file[0] != '/'))
                return -EINVAL;
        return 0;
}

int agent_state_save(const char *dir, const AgentSavedState *s) {
        _cleanup_(json_state_putp) json_object *o = NULL;
        _cleanup_(erase_and_freep) char *text = NULL;
        _cleanup_free_ char *tmp = NULL, *path = NULL;
        _cleanup_(closep) int dfd = -EBADF, fd = -EBADF;
        size_t len;
        int r;

        assert(dir && s);
        r = state_validate(s);
        if (r < 0)
                return r;
        r = state_to_json(s, &o);
        if (r < 0)
                return r;
        r = jobj_to_string(o, &text, &len);
        if (r < 0)
                return r;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        if (asprintf(&tmp, "%s/." AGENT_STATE_FILE ".XXXXXX", dir) < 0 ||
            asprintf(&path, "%s/" AGENT_STATE_FILE, dir) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);          /* mode 0600 */
        if (fd < 0)
                return -errno;
        r = fchmod(fd, 0600) < 0 ? -errno : 0;
        if (r >= 0)
                r = write_all(fd, text, len);
        if (r >= 0)
                r = write_all(fd, "\n", 1);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        if (fsync(dfd) < 0)
                return -errno;
        return 0;
}

int agent_state_remove(const char *dir) {
        _cleanup_free_ char *path = NULL;
        _cleanup_(closep) int dfd = -EBADF;

        if (asprintf(&path, "%s/" AGENT_STATE_FILE, dir) < 0)
                return -ENOMEM;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : -errno;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        return fsync(dfd) < 0 ? -errno : 0;
}
