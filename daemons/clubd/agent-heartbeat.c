/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "agent-heartbeat.h"
#include "agent-register.h"
#include "cleanup.h"
#include "config.h"
#include "json-util.h"
#include "log.h"

#define BACKOFF_FIRST_USEC USEC_PER_SEC

struct AgentHeartbeat {
        sd_event *event;
        HttpClient *client;
        char url[64];
        uint8_t secret[REQUEST_SIGN_SECRET_LEN];
        uint64_t interval_usec;
        uint64_t backoff_usec;          /* 0 after a success */
        sd_event_source *timer;
        HttpRequest *req;
        char *answer;
        size_t answer_len;
        bool answer_too_big;
        bool kicked;                    /* send again as soon as the running one ends */
        AgentHeartbeatFillFn fill;
        AgentHeartbeatResultFn result;
        void *userdata;
};

static bool model_ok(const char *m) {
        size_t n = strlen(m);

        if (n < 1 || n > 256)
                return false;
        for (const char *p = m; *p; p++)
                if ((unsigned char) *p <= 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static int add_strv(json_object *o, const char *key, char **l, size_t max, bool check_model) {
        json_object *a = json_object_new_array();
        size_t n = 0;

        if (!a)
                return -ENOMEM;
        for (char **s = l; s && *s && n < max; s++) {
                if (check_model && !model_ok(*s))
                        continue;
                if (json_object_array_add(a, json_object_new_string(*s)) < 0) {
                        json_object_put(a);
                        return -ENOMEM;
                }
                n++;
        }
        return jobj_add(o, key, a);
}

static int add_cut_string(json_object *o, const char *key, const char *v, size_t max) {
        json_object *s = json_object_new_string_len(v, (int) MIN(strlen(v), max));

        if (!s)
                return -ENOMEM;
        return jobj_add(o, key, s);
}

int agent_heartbeat_body(const AgentHeartbeatInfo *info, char **ret, size_t *ret_len) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *ups;
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        r = add_strv(o, "models", info->models, AGENT_HEARTBEAT_MODELS_MAX, true);
        if (r >= 0)
                r = add_strv(o, "capabilities", info->capabilities, AGENT_HEARTBEAT_CAPABILITIES_MAX, false);
        if (r >= 0)
                r = jobj_add_int64(o, "in_flight", MIN(info->in_flight, (unsigned) INT32_MAX));
        if (r >= 0)
                r = jobj_add_int64(o, "capacity", MIN(info->capacity, (unsigned) INT32_MAX));
        if (r < 0)
                return r;
        ups = json_object_new_array();
        if (!ups || jobj_add(o, "upstreams", ups) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < MIN(info->n_upstreams, (size_t) AGENT_HEARTBEAT_UPSTREAMS_MAX); i++) {
                const AgentUpstream *u = &info->upstreams[i];
                json_object *e = json_object_new_object();

                if (!e || json_object_array_add(ups, e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                if (add_cut_string(e, "name", isempty(u->name) ? "upstream" : u->name, 256) < 0 ||
                    add_cut_string(e, "url", isempty(u->url) ? "-" : u->url, 2048) < 0 ||
                    jobj_add_bool(e, "healthy", u->healthy) < 0)
                        return -ENOMEM;
        }
        if (jobj_add_string(o, "version", PACKAGE_VERSION) < 0 || jobj_add_bool(o, "draining", info->draining) < 0)
                return -ENOMEM;
        return jobj_to_string(o, ret, ret_len);
}

AgentHeartbeatOutcome agent_heartbeat_classify(unsigned status, const char *body, size_t len,
                                               uint64_t *ret_interval, char **ret_detail) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_free_ char *code = NULL, *message = NULL;
        char *detail = NULL;
        bool online;
        uint64_t interval;

        if (status == 200) {
                if (jobj_parse(body ?: "", len, 8, &root, NULL) < 0 || !root ||
                    !json_object_is_type(root, json_type_object) || jobj_get_bool(root, "online", &online) < 0) {
                        if (ret_detail)
                                *ret_detail = strdup("the gateway's heartbeat answer breaks the protocol");
                        return AGENT_HEARTBEAT_FAILED;
                }
                if (ret_interval && jobj_get_uint64(root, "heartbeat_interval_sec", &interval) >= 0 &&
                    interval >= 1 && interval <= AGENT_HEARTBEAT_INTERVAL_SEC_MAX)
                        *ret_interval = interval;
                return online ? AGENT_HEARTBEAT_ONLINE : AGENT_HEARTBEAT_NOT_ONLINE;
        }

        (void) agent_gateway_error_parse(body ?: "", len, &code, &message);
        if ((status == 404 && streq_ptr(code, "unknown_provider")) ||
            (status == 401 && streq_ptr(code, "invalid_signature"))) {
                if (ret_detail)
                        *ret_detail = TAKE_PTR(message);
                return AGENT_HEARTBEAT_FORGOTTEN;
        }
        if (ret_detail) {
                if (status == 0)
                        detail = NULL;
                else if (asprintf(&detail, "the gateway answered HTTP %u%s%s%s%s", status,
                                  code ? " " : "", strempty(code), message ? ": " : "", strempty(message)) < 0)
                        detail = NULL;
                *ret_detail = detail;
        }
        return AGENT_HEARTBEAT_FAILED;
}

/* ---- the timer and the request --------------------------------------------------------- */

static uint64_t random_u64(void) {
        uint64_t v;

        if (getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v)
                v = now_usec(CLOCK_MONOTONIC) * 6364136223846793005ULL;
        return v;
}

uint64_t agent_heartbeat_jitter(uint64_t usec, uint64_t random) {
        uint64_t spread = usec / 5;

        if (spread == 0)
                return usec;
        return usec - usec / 10 + random % (spread + 1);
}

uint64_t agent_heartbeat_backoff(uint64_t prev, uint64_t interval) {
        return prev == 0 ? MIN(BACKOFF_FIRST_USEC, interval) : MIN(prev * 2, interval);
}

static void heartbeat_schedule(AgentHeartbeat *h, uint64_t delay_usec) {
        int r;

        r = sd_event_source_set_time_relative(h->timer, delay_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the heartbeat timer: %m");
}

static void heartbeat_request_end(AgentHeartbeat *h) {
        h->req = http_request_free(h->req);
        h->answer = mfree(h->answer);
        h->answer_len = 0;
        h->answer_too_big = false;
}

static ssize_t on_hb_data(HttpRequest *req, const void *data, size_t len, void *userdata) {
        AgentHeartbeat *h = userdata;
        char *p;

        if (h->answer_len + len > AGENT_HEARTBEAT_ANSWER_MAX) {
                h->answer_too_big = true;
                return -EFBIG;
        }
        p = realloc(h->answer, h->answer_len + len + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p + h->answer_len, data, len);
        h->answer = p;
        h->answer_len += len;
        h->answer[h->answer_len] = 0;
        return (ssize_t) len;
}

static void on_hb_done(HttpRequest *req, int error, void *userdata) {
        AgentHeartbeat *h = userdata;
        _cleanup_free_ char *detail = NULL;
        AgentHeartbeatOutcome o;
        uint64_t interval = h->interval_usec / USEC_PER_SEC;

        if (error < 0) {
                o = AGENT_HEARTBEAT_FAILED;
                (void) asprintf(&detail, "the gateway's mesh listener (%s) %s", h->url,
                                h->answer_too_big ? "sent an answer that is too large" :
                                error == -ECONNREFUSED ? "refused the connection" :
                                error == -ETIMEDOUT ? "did not answer in time (is the tunnel up?)" :
                                error == -ECONNRESET ? "dropped the connection" : "could not be reached");
        } else
                o = agent_heartbeat_classify(http_request_status(req), h->answer, h->answer_len, &interval, &detail);
        heartbeat_request_end(h);

        if (o == AGENT_HEARTBEAT_ONLINE) {
                h->interval_usec = interval * USEC_PER_SEC;
                h->backoff_usec = 0;
                heartbeat_schedule(h, h->kicked ? 0 : agent_heartbeat_jitter(h->interval_usec, random_u64()));
        } else if (o == AGENT_HEARTBEAT_NOT_ONLINE) {
                /* Acknowledged, but not routed here (a failed probe, draining, disabled): ask
                 * again soon, backing off, so that a recovery is known within seconds. */
                h->interval_usec = interval * USEC_PER_SEC;
                h->backoff_usec = agent_heartbeat_backoff(h->backoff_usec, h->interval_usec);
                heartbeat_schedule(h, h->kicked ? 0 : h->backoff_usec);
        } else if (o == AGENT_HEARTBEAT_FAILED) {
                h->backoff_usec = agent_heartbeat_backoff(h->backoff_usec, h->interval_usec);
                heartbeat_schedule(h, h->backoff_usec);
        } else
                (void) sd_event_source_set_enabled(h->timer, SD_EVENT_OFF);
        h->kicked = false;

        /* Last: the callback may free us. */
        h->result(h, o, detail, h->userdata);
}

static int heartbeat_send(AgentHeartbeat *h) {
        static const HttpRequestCallbacks cb = {
                .on_data = on_hb_data,
                .on_done = on_hb_done,
        };
        _cleanup_(http_request_freep) HttpRequest *req = NULL;
        _cleanup_free_ char *body = NULL, *sig = NULL;
        AgentHeartbeatInfo info = {};
        size_t len;
        int r;

        h->fill(&info, h->userdata);
        r = agent_heartbeat_body(&info, &body, &len);
        if (r < 0)
                return r;
        r = request_sign(h->secret, "POST", AGENT_HEARTBEAT_PATH, (uint64_t) time(NULL), NULL, &sig);
        if (r < 0)
                return r;
        r = http_request_new(h->client, "POST", h->url, &req);
        if (r < 0)
                return r;
        r = http_request_add_header(req, REQUEST_SIGN_HEADER, sig);
        if (r >= 0)
                r = http_request_add_header(req, "Content-Type", "application/json");
        if (r >= 0)
                r = http_request_set_body(req, body, len);
        if (r < 0)
                return r;
        http_request_set_timeouts(req, AGENT_HEARTBEAT_TIMEOUT_USEC, AGENT_HEARTBEAT_TIMEOUT_USEC);
        http_request_set_response_timeout(req, AGENT_HEARTBEAT_TIMEOUT_USEC);
        r = http_request_start(req, &cb, h);
        if (r < 0)
                return r;
        h->req = TAKE_PTR(req);
        return 0;
}

static int on_hb_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentHeartbeat *h = userdata;
        int r;

        if (h->req)
                return 0;
        r = heartbeat_send(h);
        if (r < 0) {
                log_warning_errno(r, "Failed to send a heartbeat, retrying: %m");
                h->backoff_usec = agent_heartbeat_backoff(h->backoff_usec, h->interval_usec);
                heartbeat_schedule(h, h->backoff_usec);
        }
        return 0;
}

int agent_heartbeat_new(sd_event *event, HttpClient *client, const struct in_addr *gateway, const uint8_t *secret,
                        uint64_t interval_sec, AgentHeartbeatFillFn fill, AgentHeartbeatResultFn result,
                        void *userdata, AgentHeartbeat **ret) {
        _cleanup_(agent_heartbeat_freep) AgentHeartbeat *h = NULL;
        char a[INET_ADDRSTRLEN];
        int r;

        assert(event && client && gateway && secret && fill && result && ret);
        if (interval_sec < 1 || interval_sec > AGENT_HEARTBEAT_INTERVAL_SEC_MAX)
                return -EINVAL;
        if (!inet_ntop(AF_INET, gateway, a, sizeof a))
                return -EINVAL;
        h = new0(AgentHeartbeat, 1);
        if (!h)
                return -ENOMEM;
        *h = (AgentHeartbeat) {
                .event = sd_event_ref(event),
                .client = client,
                .interval_usec = interval_sec * USEC_PER_SEC,
                .fill = fill,
                .result = result,
                .userdata = userdata,
        };
        memcpy(h->secret, secret, sizeof h->secret);
        snprintf(h->url, sizeof h->url, "http://%s:%u" AGENT_HEARTBEAT_PATH, a, AGENT_HEARTBEAT_PORT);
        r = sd_event_add_time_relative(event, &h->timer, CLOCK_MONOTONIC, 0, 0, on_hb_timer, h);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(h);
        return 0;
}

AgentHeartbeat *agent_heartbeat_free(AgentHeartbeat *h) {
        if (!h)
                return NULL;
        heartbeat_request_end(h);
        sd_event_source_disable_unref(h->timer);
        sd_event_unref(h->event);
        explicit_bzero(h->secret, sizeof h->secret);
        return mfree(h);
}

void agent_heartbeat_kick(AgentHeartbeat *h) {
        if (!h)
                return;
        if (h->req) {
                h->kicked = true;
                return;
        }
        heartbeat_schedule(h, 0);
}
