/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdio.h>
#include <time.h>

#include "cleanup.h"
#include "conf-parser.h"
#include "json-util.h"
#include "log.h"
#include "upstream.h"

static char **strv_free_n(char **l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                free(l[i]);
        return mfree(l);
}

int upstream_new(HttpClient *client, const UpstreamConfig *cfg, uint64_t probe_timeout_usec,
                 UpstreamRefreshed on_refreshed, void *userdata, Upstream **ret) {
        _cleanup_(upstream_unrefp) Upstream *u = NULL;

        u = new0(Upstream, 1);
        if (!u)
                return -ENOMEM;
        *u = (Upstream) {
                .n_ref = 1,
                .client = client,
                .name = strdup(cfg->name),
                .url = strdup(cfg->url),
                .kind = cfg->kind,
                .probe_timeout_usec = probe_timeout_usec,
                .on_refreshed = on_refreshed,
                .userdata = userdata,
        };
        if (!u->name || !u->url)
                return -ENOMEM;
        if (cfg->api_key) {
                u->api_key = strdup(cfg->api_key);
                if (!u->api_key)
                        return -ENOMEM;
        }
        if (cfg->models) {
                size_t n = 0;

                while (cfg->models[n])
                        n++;
                u->static_models = new0(char *, n + 1);
                u->models = new0(char *, n + 1);
                if (!u->static_models || !u->models)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                        u->static_models[i] = strdup(cfg->models[i]);
                        u->models[i] = strdup(cfg->models[i]);
                        if (!u->static_models[i] || !u->models[i])
                                return -ENOMEM;
                }
                u->n_models = n;
        }
        *ret = TAKE_PTR(u);
        return 0;
}

void upstream_disconnect(Upstream *u) {
        if (!u)
                return;
        u->on_refreshed = NULL;
        u->userdata = NULL;
        u->probe = http_request_free(u->probe);
}

static Upstream *upstream_free(Upstream *u) {
        upstream_disconnect(u);
        free(u->name);
        free(u->url);
        u->api_key = erase_and_free(u->api_key);
        config_strv_free(u->static_models);
        strv_free_n(u->models, u->n_models);
        json_object_put(u->model_objects);
        free(u->error);
        free(u->probe_buf);
        return mfree(u);
}

Upstream *upstream_ref(Upstream *u) {
        if (u)
                u->n_ref++;
        return u;
}

Upstream *upstream_unref(Upstream *u) {
        if (!u)
                return NULL;
        assert(u->n_ref > 0);
        if (--u->n_ref == 0)
                upstream_free(u);
        return NULL;
}

bool upstream_serves(Upstream *u, const char *model) {
        for (size_t i = 0; i < u->n_models; i++)
                if (streq(u->models[i], model))
                        return true;
        return false;
}

int upstream_add_auth(Upstream *u, HttpRequest *req) {
        _cleanup_(erase_and_freep) char *v = NULL;

        if (!u->api_key)
                return 0;
        if (asprintf(&v, "Bearer %s", u->api_key) < 0)
                return -ENOMEM;
        return http_request_add_header(req, "Authorization", v);
}

int upstream_parse_models(UpstreamKind kind, const char *body, size_t len,
                          char ***ret, size_t *ret_n, json_object **ret_objects) {
        _cleanup_(json_object_putp) json_object *root = NULL, *objects = NULL;
        json_object *arr;
        const char *field = kind == UPSTREAM_OLLAMA ? "name" : "id";
        char **l = NULL;
        size_t n = 0, count;
        int r;

        r = jobj_parse(body, len, JSON_DEPTH_MAX, &root, NULL);
        if (r < 0)
                return r;
        r = jobj_get_array(root, kind == UPSTREAM_OLLAMA ? "models" : "data", &arr);
        if (r < 0)
                return -EBADMSG;
        count = MIN(json_object_array_length(arr), (size_t) UPSTREAM_MODELS_MAX);
        l = new0(char *, count + 1);
        objects = json_object_new_array();
        if (!l || !objects) {
                free(l);
                return -ENOMEM;
        }
        for (size_t i = 0; i < count; i++) {
                json_object *m = json_object_array_get_idx(arr, i);
                const char *id;

                if (!json_object_is_type(m, json_type_object) || jobj_get_string(m, field, &id) < 0 ||
                    isempty(id) || strlen(id) > 256)
                        continue;
                l[n] = strdup(id);
                if (!l[n]) {
                        strv_free_n(l, n);
                        return -ENOMEM;
                }
                n++;

                /* Keep the entry as the upstream described it (context length and the like);
                 * Ollama's native entries become OpenAI-shaped. */
                json_object *o;
                if (kind == UPSTREAM_OLLAMA) {
                        o = json_object_new_object();
                        if (!o || jobj_add_string(o, "id", id) < 0 || jobj_add_string(o, "object", "model") < 0 ||
                            jobj_add_int64(o, "created", 0) < 0 || jobj_add_string(o, "owned_by", "ollama") < 0) {
                                json_object_put(o);
                                strv_free_n(l, n);
                                return -ENOMEM;
                        }
                } else
                        o = json_object_get(m);
                if (json_object_array_add(objects, o) < 0) {
                        json_object_put(o);
                        strv_free_n(l, n);
                        return -ENOMEM;
                }
        }
        *ret = l;
        *ret_n = n;
        if (ret_objects)
                *ret_objects = TAKE_PTR(objects);
        return 0;
}

static void upstream_set_result(Upstream *u, bool reachable, const char *error) {
        u->checked = true;
        u->reachable = reachable;
        u->failures = reachable ? 0 : u->failures + 1;
        u->checked_usec = now_usec(CLOCK_REALTIME);
        (void) free_and_strdup(&u->error, error);
}

static ssize_t on_probe_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        Upstream *u = userdata;
        char *p;

        if (u->probe_len + len > UPSTREAM_LISTING_MAX)
                return -EFBIG;
        p = realloc(u->probe_buf, u->probe_len + len + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p + u->probe_len, data, len);
        u->probe_buf = p;
        u->probe_len += len;
        u->probe_buf[u->probe_len] = 0;
        return (ssize_t) len;
}

static void on_probe_done(HttpRequest *req, int error, void *userdata) {
        Upstream *u = userdata;
        unsigned status = http_request_status(req);
        char msg[256];

        if (error < 0) {
                snprintf(msg, sizeof msg, "%s", error == -ECONNREFUSED ? "connection refused" :
                         error == -ETIMEDOUT ? "timed out" : strerror(-error));
                upstream_set_result(u, false, msg);
        } else if (status != 200) {
                snprintf(msg, sizeof msg, "model listing answered HTTP %u", status);
                /* It answers HTTP, so it is reachable; the models stay as they were. */
                upstream_set_result(u, true, msg);
        } else if (u->static_models) {
                upstream_set_result(u, true, NULL);
        } else {
                json_object *objects;
                char **l;
                size_t n;
                int r;

                r = upstream_parse_models(u->kind, u->probe_buf ?: "", u->probe_len, &l, &n, &objects);
                if (r < 0)
                        upstream_set_result(u, true, "the model listing is not valid JSON of the expected shape");
                else {
                        strv_free_n(u->models, u->n_models);
                        u->models = l;
                        u->n_models = n;
                        json_object_put(u->model_objects);
                        u->model_objects = objects;
                        upstream_set_result(u, true, NULL);
                }
        }

        u->probe = http_request_free(u->probe);
        u->probe_buf = mfree(u->probe_buf);
        u->probe_len = 0;
        if (u->on_refreshed)
                u->on_refreshed(u, u->userdata);
}

void upstream_take_state(Upstream *u, Upstream *old) {
        if (!old || u->static_models || old->static_models || u->kind != old->kind ||
            !streq(u->name, old->name) || !streq(u->url, old->url) || !old->checked)
                return;
        /* The same server: what we knew of it stands until its next listing. */
        strv_free_n(u->models, u->n_models);
        u->models = old->models;
        u->n_models = old->n_models;
        u->model_objects = old->model_objects;
        old->models = NULL;
        old->n_models = 0;
        old->model_objects = NULL;
        u->checked = true;
        u->reachable = old->reachable;
        u->failures = old->failures;
        u->checked_usec = old->checked_usec;
        (void) free_and_strdup(&u->error, old->error);
}

int upstream_refresh(Upstream *u) {
        static const HttpRequestCallbacks cb = {
                .on_data = on_probe_data,
                .on_done = on_probe_done,
        };
        _cleanup_(http_request_freep) HttpRequest *req = NULL;
        _cleanup_free_ char *url = NULL;
        int r;

        if (u->probe)
                return 1;
        if (u->kind == UPSTREAM_OLLAMA) {
                /* Ollama lists its models natively at /api/tags, beside /v1. */
                _cleanup_free_ char *root = strdup(u->url);
                size_t l;

                if (!root)
                        return -ENOMEM;
                l = strlen(root);
                while (l > 0 && root[l - 1] == '/')
                        root[--l] = 0;
                if (endswith(root, "/v1"))
                        root[l - 3] = 0;
                if (asprintf(&url, "%s/api/tags", root) < 0)
                        return -ENOMEM;
        } else {
                r = upstream_url_join(u->url, "/v1/models", &url);
                if (r < 0)
                        return r;
        }

        r = http_request_new(u->client, "GET", url, &req);
        if (r < 0)
                return r;
        r = upstream_add_auth(u, req);
        if (r < 0)
                return r;
        http_request_set_timeouts(req, u->probe_timeout_usec, u->probe_timeout_usec);
        r = http_request_start(req, &cb, u);
        if (r < 0)
                return r;
        u->probe = TAKE_PTR(req);
        return 1;
}

bool upstream_refreshing(Upstream *u) {
        return u->probe;
}
