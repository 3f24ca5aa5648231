/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "conf-parser.h"
#include "clubd-config.h"
#include "log.h"
#include "wg.h"

static const char *const upstream_kind_table[_UPSTREAM_KIND_MAX] = {
        [UPSTREAM_OPENAI] = "openai",
        [UPSTREAM_OLLAMA] = "ollama",
};

const char *upstream_kind_to_string(UpstreamKind k) {
        if (k < 0 || k >= _UPSTREAM_KIND_MAX)
                return NULL;
        return upstream_kind_table[k];
}

UpstreamKind upstream_kind_from_string(const char *s) {
        for (int i = 0; i < _UPSTREAM_KIND_MAX; i++)
                if (streq_ptr(s, upstream_kind_table[i]))
                        return (UpstreamKind) i;
        return _UPSTREAM_KIND_INVALID;
}

static void upstream_config_done(UpstreamConfig *u) {
        free(u->name);
        free(u->url);
        u->api_key = erase_and_free(u->api_key);
        config_strv_free(u->models);
        free(u->file);
}

ClubdConfig *clubd_config_free(ClubdConfig *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_upstreams; i++)
                upstream_config_done(&c->upstreams[i]);
        free(c->upstreams);
        for (size_t i = 0; i < c->n_capabilities; i++) {
                free(c->capabilities[i].name);
                free(c->capabilities[i].url);
                free(c->capabilities[i].file);
        }
        free(c->capabilities);
        free(c->gateway_url);
        free(c->state_directory);
        free(c->ca_file);
        free(c->name);
        free(c->mesh_interface);
        free(c->listen_file);
        return mfree(c);
}

bool clubd_name_valid(const char *s, bool allow_colon) {
        size_t n;

        if (!s)
                return false;
        n = strlen(s);
        if (n < 1 || n > 64 || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", s[0]))
                return false;
        for (const char *p = s; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *p) &&
                    !(allow_colon && *p == ':'))
                        return false;
        return true;
}

static UpstreamConfig *current_upstream(ClubdConfig *c) {
        return c->n_upstreams > 0 ? &c->upstreams[c->n_upstreams - 1] : NULL;
}

static int capability_section_start(const ConfigContext *ctx, ClubdConfig *c) {
        CapabilityConfig *l;

        if (c->n_capabilities >= CLUBD_MAX_CAPABILITIES) {
                config_set_reason(ctx, "too many [Capability] sections");
                return -E2BIG;
        }
        l = reallocarray(c->capabilities, c->n_capabilities + 1, sizeof(CapabilityConfig));
        if (!l)
                return -ENOMEM;
        c->capabilities = l;
        c->capabilities[c->n_capabilities] = (CapabilityConfig) {
                .file = strdup(ctx->file),
                .line = ctx->section_line,
        };
        if (!c->capabilities[c->n_capabilities].file)
                return -ENOMEM;
        c->n_capabilities++;
        return 0;
}

static int section_start(const ConfigContext *ctx, void *userdata) {
        ClubdConfig *c = userdata;
        UpstreamConfig *u;

        if (streq(ctx->section, "Capability"))
                return capability_section_start(ctx, c);
        if (!streq(ctx->section, "Upstream"))
                return 0;
        if (c->n_upstreams >= CLUBD_MAX_UPSTREAMS) {
                config_set_reason(ctx, "too many [Upstream] sections");
                return -E2BIG;
        }
        u = reallocarray(c->upstreams, c->n_upstreams + 1, sizeof(UpstreamConfig));
        if (!u)
                return -ENOMEM;
        c->upstreams = u;
        c->upstreams[c->n_upstreams] = (UpstreamConfig) {
                .kind = UPSTREAM_OPENAI,
                .file = strdup(ctx->file),
                .line = ctx->section_line,
        };
        if (!c->upstreams[c->n_upstreams].file)
                return -ENOMEM;
        c->n_upstreams++;
        return 0;
}

static bool url_valid(const char *url) {
        const char *rest;

        rest = startswith(url, "http://") ?: startswith(url, "https://");
        if (!rest || isempty(rest) || rest[0] == '/')
                return false;
        if (strpbrk(url, " \t\r\n?#"))
                return false;
        return true;
}

static int parse_upstream(const ConfigContext *ctx, const char *key, const char *value, int ltype,
                          void *data, void *userdata) {
        UpstreamConfig *u = current_upstream(userdata);

        if (!u)
                return -EINVAL;

        if (streq(key, "Name")) {
                for (const char *p = value; *p; p++)
                        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *p)) {
                                config_set_reason(ctx, "use letters, digits, '-', '_' and '.'");
                                return -EINVAL;
                        }
                if (isempty(value) || strlen(value) > 64) {
                        config_set_reason(ctx, "a name is 1 to 64 characters");
                        return -EINVAL;
                }
                return free_and_strdup(&u->name, value);
        }
        if (streq(key, "URL")) {
                if (!url_valid(value)) {
                        config_set_reason(ctx, "expected http://HOST[:PORT][/PATH] or https://…, without query");
                        return -EINVAL;
                }
                return free_and_strdup(&u->url, value);
        }
        if (streq(key, "Kind")) {
                UpstreamKind k = upstream_kind_from_string(value);
                if (k < 0) {
                        config_set_reason(ctx, "expected 'openai' or 'ollama'");
                        return -EINVAL;
                }
                u->kind = k;
                return 0;
        }
        if (streq(key, "APIKey")) {
                if (strpbrk(value, "\r\n")) {
                        config_set_reason(ctx, "a key is a single line");
                        return -EINVAL;
                }
                u->api_key = erase_and_free(u->api_key);
                if (isempty(value))
                        return 0;
                u->api_key = strdup(value);
                return u->api_key ? 0 : -ENOMEM;
        }
        if (streq(key, "APIKeyFile")) {
                _cleanup_(fclosep) FILE *f = NULL;
                char buf[4096];
                size_t n;
                struct stat st;

                f = fopen(value, "re");
                if (!f) {
                        config_set_reason(ctx, "cannot open the key file");
                        return -errno;
                }
                if (fstat(fileno(f), &st) >= 0 && (st.st_mode & 0077))
                        log_warning("%s:%u: %s is readable by others; it holds a secret, chmod 600 it.",
                                    ctx->file, ctx->line, value);
                n = fread(buf, 1, sizeof buf - 1, f);
                buf[n] = 0;
                buf[strcspn(buf, "\r\n")] = 0;
                u->api_key = erase_and_free(u->api_key);
                u->api_key = strdup(buf);
                explicit_bzero(buf, sizeof buf);
                if (!u->api_key)
                        return -ENOMEM;
                if (isempty(u->api_key)) {
                        u->api_key = erase_and_free(u->api_key);
                        config_set_reason(ctx, "the key file is empty");
                        return -EINVAL;
                }
                return 0;
        }
        if (streq(key, "Models"))
                return config_parse_strv(ctx, key, value, ltype, &u->models, userdata);
        return -EINVAL;
}

static int parse_capability(const ConfigContext *ctx, const char *key, const char *value, int ltype,
                            void *data, void *userdata) {
        ClubdConfig *c = userdata;
        CapabilityConfig *cap = c->n_capabilities > 0 ? &c->capabilities[c->n_capabilities - 1] : NULL;

        if (!cap)
                return -EINVAL;
        if (streq(key, "Name")) {
                if (!clubd_name_valid(value, true)) {
                        config_set_reason(ctx, "a capability name is 1 to 64 of letters, digits, '-', '_', '.' and ':', starting with a letter or digit");
                        return -EINVAL;
                }
                return free_and_strdup(&cap->name, value);
        }
        if (streq(key, "URL")) {
                if (!url_valid(value) || !startswith(value, "http://")) {
                        config_set_reason(ctx, "expected the local service's http://HOST[:PORT]/PATH, without query");
                        return -EINVAL;
                }
                return free_and_strdup(&cap->url, value);
        }
        if (streq(key, "MaxBodySize"))
                return config_parse_size(ctx, key, value, ltype, &cap->max_body_size, userdata);
        return -EINVAL;
}

static CONFIG_PARSER_PROTOTYPE(parse_gateway_url) {
        char **p = data;

        if (isempty(value)) {
                *p = mfree(*p);
                return 0;
        }
        if (!url_valid(value)) {
                config_set_reason(ctx, "expected https://HOST[:PORT][/PATH] (or http:// to a loopback address), without query");
                return -EINVAL;
        }
        return free_and_strdup(p, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_absolute_path) {
        char **p = data;

        if (isempty(value)) {
                *p = mfree(*p);
                return 0;
        }
        if (value[0] != '/' || strlen(value) > 1024) {
                config_set_reason(ctx, "expected an absolute path");
                return -EINVAL;
        }
        if (ltype == R_OK && access(value, R_OK) < 0) {
                config_set_reason(ctx, "the file cannot be read");
                return -errno;
        }
        return free_and_strdup(p, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_agent_name) {
        char **p = data;

        if (isempty(value)) {
                *p = mfree(*p);
                return 0;
        }
        if (!clubd_name_valid(value, false)) {
                config_set_reason(ctx, "a name is 1 to 64 of letters, digits, '-', '_' and '.', starting with a letter or digit");
                return -EINVAL;
        }
        return free_and_strdup(p, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_interface) {
        char **p = data;

        if (wg_ifname_valid(value) < 0) {
                config_set_reason(ctx, "an interface name is 1 to 15 characters without '/', ':' or spaces");
                return -EINVAL;
        }
        return free_and_strdup(p, value);
}

static CONFIG_PARSER_PROTOTYPE(parse_mesh_port) {
        uint16_t *p = data;

        if (parse_port(value, p) < 0) {
                config_set_reason(ctx, "expected a port from 1 to 65535");
                return -EINVAL;
        }
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(parse_listen) {
        ClubdConfig *c = userdata;
        int r;

        r = config_parse_sockaddr(ctx, key, value, ltype, &c->listen, userdata);
        if (r < 0)
                return r;
        c->listen_line = ctx->line;
        return free_and_strdup(&c->listen_file, ctx->file);
}

int clubd_config_load(const char *path, ClubdConfig **ret) {
        _cleanup_(clubd_config_freep) ClubdConfig *c = NULL;
        int r;

        c = new0(ClubdConfig, 1);
        if (!c)
                return -ENOMEM;
        *c = (ClubdConfig) {
                .log_level = -1,
                .sandbox = true,
                .max_connections = 1024,
                .max_body_size = 8U << 20,
                .max_header_size = 16U << 10,
                .stream_buffer_size = 64U << 10,
                .connect_timeout_usec = 5 * USEC_PER_SEC,
                .first_byte_timeout_usec = 600 * USEC_PER_SEC,
                .idle_timeout_usec = 300 * USEC_PER_SEC,
                .model_refresh_usec = 60 * USEC_PER_SEC,
                .mesh_port = CLUBD_MESH_PORT_DEFAULT,
        };
        c->mesh_interface = strdup(CLUBD_MESH_INTERFACE_DEFAULT);
        if (!c->mesh_interface)
                return -ENOMEM;
        r = parse_sockaddr("127.0.0.1:8090", &c->listen.ss, &c->listen.len);
        assert(r >= 0);

        const ConfigItem table[] = {
                { "Agent", "LogLevel", config_parse_log_level, 0, &c->log_level },
                { "Agent", "Sandbox", config_parse_bool, 0, &c->sandbox },
                { "Agent", "Gateway", parse_gateway_url, 0, &c->gateway_url },
                { "Agent", "StateDirectory", parse_absolute_path, 0, &c->state_directory },
                { "Agent", "CAFile", parse_absolute_path, R_OK, &c->ca_file },
                { "Agent", "Name", parse_agent_name, 0, &c->name },
                { "Mesh", "Interface", parse_interface, 0, &c->mesh_interface },
                { "Mesh", "Port", parse_mesh_port, 0, &c->mesh_port },
                { "Mesh", "Capacity", config_parse_uint, 0, &c->capacity },
                { "Proxy", "Listen", parse_listen, 0, NULL },
                { "Proxy", "AllowRemoteListen", config_parse_bool, 0, &c->listen_allow_remote },
                { "Proxy", "MaxConnections", config_parse_uint, 0, &c->max_connections },
                { "Proxy", "MaxConnectionsPerIP", config_parse_uint, 0, &c->max_connections_per_ip },
                { "Proxy", "MaxBodySize", config_parse_size, 0, &c->max_body_size },
                { "Proxy", "MaxHeaderSize", config_parse_size, 0, &c->max_header_size },
                { "Proxy", "StreamBufferSize", config_parse_size, 0, &c->stream_buffer_size },
                { "Proxy", "ConnectTimeout", config_parse_sec, 0, &c->connect_timeout_usec },
                { "Proxy", "FirstByteTimeout", config_parse_sec, 0, &c->first_byte_timeout_usec },
                { "Proxy", "IdleTimeout", config_parse_sec, 0, &c->idle_timeout_usec },
                { "Proxy", "ModelRefreshInterval", config_parse_sec, 0, &c->model_refresh_usec },
                { "Upstream", "Name", parse_upstream, 0, NULL },
                { "Upstream", "URL", parse_upstream, 0, NULL },
                { "Upstream", "Kind", parse_upstream, 0, NULL },
                { "Upstream", "APIKey", parse_upstream, 0, NULL, CONFIG_ITEM_SECRET },
                { "Upstream", "APIKeyFile", parse_upstream, 0, NULL },
                { "Upstream", "Models", parse_upstream, 0, NULL },
                { "Capability", "Name", parse_capability, 0, NULL },
                { "Capability", "URL", parse_capability, 0, NULL },
                { "Capability", "MaxBodySize", parse_capability, 0, NULL },
                {}
        };

        r = config_parse(path, NULL, table, section_start, 0, c);
        if (r < 0)
                return r;

        /* Whole-file checks: every upstream needs a URL, names are unique. */
        for (size_t i = 0; i < c->n_upstreams; i++) {
                UpstreamConfig *u = &c->upstreams[i];

                if (!u->url)
                        return log_error_errno(-EINVAL, "%s:%u: [Upstream] has no URL=, e.g. URL=http://127.0.0.1:8000/v1",
                                               u->file, u->line);
                if (!u->name && asprintf(&u->name, "upstream%zu", i + 1) < 0)
                        return -ENOMEM;
                for (size_t j = 0; j < i; j++)
                        if (streq(c->upstreams[j].name, u->name))
                                return log_error_errno(-EINVAL, "%s:%u: Another [Upstream] is already named '%s'.",
                                                       u->file, u->line, u->name);
        }
        for (size_t i = 0; i < c->n_capabilities; i++) {
                CapabilityConfig *cap = &c->capabilities[i];

                if (!cap->name || !cap->url)
                        return log_error_errno(-EINVAL, "%s:%u: [Capability] needs Name= and URL=, e.g. Name=transcribe and URL=http://127.0.0.1:9000/run",
                                               cap->file, cap->line);
                for (size_t j = 0; j < i; j++)
                        if (streq(c->capabilities[j].name, cap->name))
                                return log_error_errno(-EINVAL, "%s:%u: Another [Capability] is already named '%s'.",
                                                       cap->file, cap->line, cap->name);
        }
        if (!sockaddr_is_loopback((const struct sockaddr *) &c->listen.ss) && !c->listen_allow_remote)
                return log_error_errno(-EINVAL, "%s:%u: Listen= is not a loopback address. The local listener has no "
                                       "authentication: keep it on 127.0.0.1 or ::1 (the gateway reaches this machine "
                                       "through the mesh listener), or set AllowRemoteListen=yes in [Proxy] if you "
                                       "really mean to open it to your network.",
                                       strna(c->listen_file), c->listen_line);
        if (c->max_connections == 0 || c->max_body_size == 0 || c->stream_buffer_size < 4096)
                return log_error_errno(-EINVAL, "%s: MaxConnections and MaxBodySize must be positive and StreamBufferSize at least 4K.", path);
        if (c->stream_buffer_size > (16U << 20))
                return log_error_errno(-EINVAL, "%s: StreamBufferSize is at most 16M.", path);

        *ret = TAKE_PTR(c);
        return 0;
}

int upstream_url_join(const char *base, const char *path_and_query, char **ret) {
        _cleanup_free_ char *b = NULL;
        const char *rest = path_and_query;
        size_t l;

        assert(base && path_and_query && ret);
        if (path_and_query[0] != '/')
                return -EINVAL;
        b = strdup(base);
        if (!b)
                return -ENOMEM;
        l = strlen(b);
        while (l > 0 && b[l - 1] == '/')
                b[--l] = 0;
        /* http://host:8000/v1 + /v1/chat/completions → http://host:8000/v1/chat/completions */
        if (endswith(b, "/v1")) {
                const char *p = startswith(path_and_query, "/v1");
                if (p && (*p == '/' || *p == '?' || *p == 0))
                        rest = p;
        }
        if (asprintf(ret, "%s%s", b, rest) < 0)
                return -ENOMEM;
        return 0;
}
