/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "config.h"
#include "gateway-bus.h"
#include "gateway-hub.h"
#include "log.h"
#include "polkit.h"
#include "store.h"

struct GatewayBus {
        sd_event *event;
        sd_bus *bus;
        Store *store;
        Hub *hub;
        PolkitRegistry *polkit;
        sd_bus_slot *disconnect_slot;
        void (*usage_flush)(void *userdata);    /* before usage is read: write what is queued */
        void *usage_flush_userdata;
        char mesh_prefix[INET_ADDRSTRLEN + 4];
        char gateway_address[INET_ADDRSTRLEN];
};

/* The longest string argument (and list entry) accepted, before the store checks its own limits. */
#define BUS_STRING_MAX 1024U

/* ---- errors ------------------------------------------------------------------------------ */

/*
 * A store failure as the caller sees it: -ENOENT under the name of the object the call was
 * about, -EEXIST as NameTaken, -EBUSY as StoreBusy, -EINVAL as InvalidArgs with @invalid as
 * the message; anything else under sd-bus's standard name with "Failed to @what: %m".
 */
static int reply_store_error(sd_bus_error *error, int r, const char *noent_name, const char *noent_message,
                             const char *invalid, const char *what) {
        switch (r) {
        case -ENOENT:
                return sd_bus_error_set(error, noent_name, noent_message);
        case -EEXIST:
                return sd_bus_error_setf(error, GATEWAY_ERROR_NAME_TAKEN, "Cannot %s: the name is taken.", what);
        case -EBUSY:
                return sd_bus_error_setf(error, GATEWAY_ERROR_STORE_BUSY,
                                         "Cannot %s: the store is locked by another process; try again.", what);
        case -EINVAL:
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, invalid);
        default:
                return sd_bus_error_set_errnof(error, r, "Failed to %s: %m", what);
        }
}

static int no_such_user(sd_bus_error *error, const char *name) {
        return sd_bus_error_setf(error, GATEWAY_ERROR_NO_SUCH_USER, "No user '%s'.", name);
}

static int no_such_provider(sd_bus_error *error, uint64_t id) {
        return sd_bus_error_setf(error, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No provider with id %" PRIu64 ".", id);
}

static int no_such_key(sd_bus_error *error, const char *kind, uint64_t id) {
        return sd_bus_error_setf(error, GATEWAY_ERROR_NO_SUCH_KEY, "No %s with id %" PRIu64 ".", kind, id);
}

/* After a change to the store's peers: the hub follows before the caller is answered. */
static int converge_hub(GatewayBus *b, sd_bus_error *error, const char *done) {
        int r;

        r = hub_converge(b->hub, b->store);
        if (r < 0)
                return sd_bus_error_setf(error, GATEWAY_ERROR_HUB_FAILED,
                                         "%s, but the WireGuard hub could not be updated (%s); its peers stay until "
                                         "the hub can be configured again (see the gateway's log).",
                                         done, strerror(-r));
        return 0;
}

/* ---- reading arguments ------------------------------------------------------------------- */

static int read_string(sd_bus_message *m, const char *what, const char **ret, sd_bus_error *error) {
        const char *s = NULL;
        int r;

        r = sd_bus_message_read(m, "s", &s);
        if (r < 0)
                return r;
        if (strlen(s) > BUS_STRING_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The %s is longer than %u bytes.",
                                         what, BUS_STRING_MAX);
        *ret = s;
        return 0;
}

/* An "as" argument with at most @max entries (each bounded); NULL for an empty one. */
static int read_strv(sd_bus_message *m, const char *what, size_t max, char ***ret, sd_bus_error *error) {
        _cleanup_(store_strv_freep) char **l = NULL;
        size_t n;
        int r;

        r = sd_bus_message_read_strv(m, &l);
        if (r < 0)
                return r;
        n = store_strv_length(l);
        if (n > max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "At most %zu %s, got %zu.", max, what, n);
        for (size_t i = 0; i < n; i++)
                if (strlen(l[i]) > BUS_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "A %s entry is longer than %u bytes.",
                                                 what, BUS_STRING_MAX);
        *ret = n > 0 ? TAKE_PTR(l) : NULL;
        return 0;
}

/* A user argument: the user's record, or NoSuchUser. */
static int find_user(GatewayBus *b, const char *name, StoreUser *ret, sd_bus_error *error) {
        int r;

        r = store_user_get_by_name(b->store, name, ret);
        if (r == -ENOENT || r == -EINVAL)
                return no_such_user(error, name);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", "Invalid user name.",
                                         "look up the user");
        return 0;
}

/* "" for everybody's, or one user's: its id, 0 for all. */
static int user_filter(GatewayBus *b, const char *user, int64_t *ret, sd_bus_error *error) {
        _cleanup_(store_user_deinit) StoreUser u = {};
        int r;

        if (isempty(user)) {
                *ret = 0;
                return 0;
        }
        r = find_user(b, user, &u, error);
        if (r < 0)
                return r;
        *ret = u.id;
        return 0;
}

/* An absolute expiry in CLOCK_REALTIME µs, 0 for never, as the store wants it. */
static int check_expiry(uint64_t expires_usec, uint64_t *ret, sd_bus_error *error) {
        if (expires_usec == 0) {
                *ret = USEC_INFINITY;
                return 0;
        }
        if (expires_usec <= now_usec(CLOCK_REALTIME))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "The expiry is in the past; give a time in the future (µs since the epoch), or 0 for never.");
        *ret = expires_usec;
        return 0;
}

/*
 * The end of every method's argument reading: the trailing flags (0), then polkit for
 * @action. Return: 1 authorized (go on), 0 pending (the handler returns 1 without replying;
 * the call comes back, rewound, once polkit answered), or a negative errno with @error set.
 */
static int begin_call(GatewayBus *b, sd_bus_message *m, const char *action, sd_bus_error *error) {
        int r;

        r = bus_message_read_flags(m, 0, NULL, error);
        if (r < 0)
                return r;
        return polkit_check_async(m, action, &b->polkit, error);
}

/*
 * begin_call() for a method whose first argument (of @signature) may be read only after
 * polkit, because reading it touches the store: skips it, and once authorized rewinds the
 * message, so that the caller reads it next. Returns what begin_call() does.
 */
static int begin_call_deferred_args(GatewayBus *b, sd_bus_message *m, const char *signature, const char *action,
                                    sd_bus_error *error) {
        int r;

        r = sd_bus_message_skip(m, signature);
        if (r < 0)
                return r;
        r = begin_call(b, m, action, error);
        if (r <= 0)
                return r;
        r = sd_bus_message_rewind(m, true);
        return r < 0 ? r : 1;
}

/* ---- writing records --------------------------------------------------------------------- */

static int append_s(sd_bus_message *m, const char *key, const char *v) {
        return sd_bus_message_append(m, "{sv}", key, "s", strempty(v));
}

static int append_t(sd_bus_message *m, const char *key, uint64_t v) {
        return sd_bus_message_append(m, "{sv}", key, "t", v);
}

static int append_b(sd_bus_message *m, const char *key, bool v) {
        return sd_bus_message_append(m, "{sv}", key, "b", (int) v);
}

static int append_as(sd_bus_message *m, const char *key, char **l) {
        int r;

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, l);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* Times: µs since the epoch, 0 for "never" (the store's USEC_INFINITY expiry too). */
static uint64_t time_out(uint64_t usec) {
        return usec == USEC_INFINITY ? 0 : usec;
}

/* All users, by id, to name owners in records. */
typedef struct UserNames {
        StoreUser *users;
        size_t n;
} UserNames;

static void user_names_done(UserNames *u) {
        store_users_free(u->users, u->n);
        *u = (UserNames) {};
}

static const char *user_name(const UserNames *u, int64_t id) {
        size_t lo = 0, hi = u->n;

        while (lo < hi) {       /* store_user_list() returns them by id */
                size_t mid = lo + (hi - lo) / 2;

                if (u->users[mid].id == id)
                        return u->users[mid].name;
                if (u->users[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return "";
}

static int append_user(sd_bus_message *m, const StoreUser *u) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_t(m, "id", (uint64_t) u->id);
        if (r >= 0)
                r = append_s(m, "name", u->name);
        if (r >= 0)
                r = append_b(m, "admin", u->admin);
        if (r >= 0)
                r = append_as(m, "tags", u->tags);
        if (r >= 0)
                r = append_t(m, "created", u->created_usec);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int append_scopes(sd_bus_message *m, unsigned scopes) {
        char *l[3] = {};
        size_t n = 0;

        if (scopes & STORE_SCOPE_INFERENCE)
                l[n++] = (char *) "inference";
        if (scopes & STORE_SCOPE_AGENT)
                l[n++] = (char *) "agent";
        return append_as(m, "scopes", l);
}

static const char *key_state(uint64_t revoked, uint64_t expires, bool used_up) {
        if (revoked != 0)
                return "revoked";
        if (expires != USEC_INFINITY && expires <= now_usec(CLOCK_REALTIME))
                return "expired";
        if (used_up)
                return "used";
        return "active";
}

/* A key's limits: each -1 (unlimited), -2 (STORE_LIMIT_DEFAULT: the gateway's [Limits]), or N. */
static int append_limit_fields(sd_bus_message *m, const StoreKeyLimits *l) {
        int r;

        r = sd_bus_message_append(m, "{sv}", "requests_per_minute", "x", l->requests_per_minute);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "tokens_per_minute", "x", l->tokens_per_minute);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "concurrent_streams", "x", l->concurrent_streams);
        return r;
}

/* The fields an API key's and an enrollment key's records open with, "ic-"/"ie-" @tag first… */
static int append_key_head(sd_bus_message *m, const char *tag, int64_t id, int64_t user_id, const char *user,
                           const char *name, const char *prefix) {
        char p[KEY_TAG_LEN + KEY_PREFIX_SIZE];
        int r;

        (void) snprintf(p, sizeof p, "%s-%s", tag, prefix);
        r = append_t(m, "id", (uint64_t) id);
        if (r >= 0)
                r = append_t(m, "user_id", (uint64_t) user_id);
        if (r >= 0)
                r = append_s(m, "user", user);
        if (r >= 0)
                r = append_s(m, "name", name);
        if (r >= 0)
                r = append_s(m, "prefix", p);
        return r;
}

/* …and the times they share, after their state. */
static int append_key_times(sd_bus_message *m, uint64_t created, uint64_t expires, uint64_t revoked, uint64_t last_used) {
        int r;

        r = append_t(m, "created", created);
        if (r >= 0)
                r = append_t(m, "expires", time_out(expires));
        if (r >= 0)
                r = append_t(m, "revoked", revoked);
        if (r >= 0)
                r = append_t(m, "last_used", last_used);
        return r;
}

/* @limits: the key's own, or NULL for a new key's (all default). */
static int append_api_key(sd_bus_message *m, const StoreApiKey *k, const char *user, const StoreKeyLimits *limits) {
        static const StoreKeyLimits defaults = { STORE_LIMIT_DEFAULT, STORE_LIMIT_DEFAULT, STORE_LIMIT_DEFAULT };
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_key_head(m, "ic", k->id, k->user_id, user, k->name, k->prefix);
        if (r >= 0)
                r = append_scopes(m, k->scopes);
        if (r >= 0)
                r = append_s(m, "state", key_state(k->revoked_usec, k->expires_usec, false));
        if (r >= 0)
                r = append_key_times(m, k->created_usec, k->expires_usec, k->revoked_usec, k->last_used_usec);
        if (r >= 0)
                r = append_limit_fields(m, limits ?: &defaults);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int append_enrollment_key(sd_bus_message *m, const StoreEnrollmentKey *k, const char *user) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_key_head(m, "ie", k->id, k->user_id, user, k->name, k->prefix);
        if (r >= 0)
                r = append_b(m, "reusable", k->reusable);
        if (r >= 0)
                r = append_b(m, "ephemeral", k->ephemeral);
        if (r >= 0)
                r = append_as(m, "tags", k->tags);
        if (r >= 0)
                r = append_t(m, "uses", k->uses);
        if (r >= 0)
                r = append_s(m, "state", key_state(k->revoked_usec, k->expires_usec, !k->reusable && k->uses > 0));
        if (r >= 0)
                r = append_key_times(m, k->created_usec, k->expires_usec, k->revoked_usec, k->last_used_usec);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int append_provider(sd_bus_message *m, const StoreProvider *p, const UserNames *users) {
        _cleanup_free_ char **share_users = NULL;
        char address[INET_ADDRSTRLEN];
        int r;

        share_users = new0(char *, p->sharing.n_user_ids + 1);
        if (!share_users)
                return -ENOMEM;
        for (size_t i = 0; i < p->sharing.n_user_ids; i++)
                share_users[i] = (char *) user_name(users, p->sharing.user_ids[i]);
        if (!inet_ntop(AF_INET, &p->mesh_address, address, sizeof address))
                return -errno;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_t(m, "id", (uint64_t) p->id);
        if (r >= 0)
                r = append_t(m, "owner_id", (uint64_t) p->owner_id);
        if (r >= 0)
                r = append_s(m, "owner", user_name(users, p->owner_id));
        if (r >= 0)
                r = append_s(m, "name", p->name);
        if (r >= 0)
                r = append_s(m, "state", store_provider_state_to_string(p->state));
        if (r >= 0)
                r = append_b(m, "online", p->online);
        if (r >= 0)
                r = append_b(m, "draining", p->admin_draining || p->agent_draining);
        if (r >= 0)
                r = append_b(m, "admin_draining", p->admin_draining);
        if (r >= 0)
                r = append_b(m, "agent_draining", p->agent_draining);
        if (r >= 0)
                r = append_b(m, "ephemeral", p->ephemeral);
        if (r >= 0)
                r = append_s(m, "mesh_address", address);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "agent_port", "q", p->agent_port);
        if (r >= 0)
                r = append_s(m, "public_key", p->public_key);
        if (r >= 0)
                r = append_t(m, "enrollment_key_id", (uint64_t) p->enrollment_key_id);
        if (r >= 0)
                r = append_s(m, "sharing", store_share_mode_to_string(p->sharing.mode));
        if (r >= 0)
                r = append_as(m, "share_users", share_users);
        if (r >= 0)
                r = append_as(m, "share_tags", p->sharing.tags);
        if (r >= 0)
                r = append_as(m, "tags", p->tags);
        if (r >= 0)
                r = append_as(m, "models", p->models);
        if (r >= 0)
                r = append_as(m, "capabilities", p->capabilities);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "in_flight", "u", p->in_flight);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "capacity", "u", p->capacity);
        if (r >= 0)
                r = append_s(m, "upstream_health", p->upstream_health);
        if (r >= 0)
                r = append_s(m, "version", p->version);
        if (r >= 0)
                r = append_t(m, "created", p->created_usec);
        if (r >= 0)
                r = append_t(m, "registered", p->registered_usec);
        if (r >= 0)
                r = append_t(m, "last_heartbeat", p->last_heartbeat_usec);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* ---- users ------------------------------------------------------------------------------- */

#define INVALID_USER_ARGS \
        "Invalid arguments: a user name is 1–128 of A-Z a-z 0-9 . _ @ + - starting with a letter or digit; " \
        "a tag is 1–64 of A-Z a-z 0-9 . _ : - starting with a letter or digit (at most 32 tags)."

static int method_create_user(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_strv_freep) char **tags = NULL;
        const char *name = NULL;
        int admin, r;
        int64_t id;

        r = read_string(m, "user name", &name, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "b", &admin);
        if (r < 0)
                return r;
        r = read_strv(m, "tags", STORE_TAGS_MAX, &tags, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_USERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = store_user_create(b->store, name, admin, tags, &id);
        if (r == -EEXIST)
                return sd_bus_error_setf(error, GATEWAY_ERROR_NAME_TAKEN, "A user named '%s' exists already.", name);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", INVALID_USER_ARGS,
                                         "create the user");
        log_info("User %s (id %" PRId64 "%s) created by D-Bus caller %s.", name, id, admin ? ", admin" : "",
                 strna(sd_bus_message_get_sender(m)));
        return sd_bus_reply_method_return(m, "t", (uint64_t) id);
}

static int method_list_users(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(user_names_done) UserNames u = {};
        int r;

        r = begin_call(b, m, GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = store_user_list(b->store, &u.users, &u.n);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", "Invalid arguments.",
                                         "list the users");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < u.n; i++)
                r = append_user(reply, &u.users[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_user(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(store_user_deinit) StoreUser u = {};
        const char *name = NULL;
        int r;

        r = read_string(m, "user name", &name, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = find_user(b, name, &u, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = append_user(reply, &u);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_delete_user(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_user_deinit) StoreUser u = {};
        const char *name = NULL;
        int r;

        r = read_string(m, "user name", &name, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_USERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = find_user(b, name, &u, error);
        if (r < 0)
                return r;
        r = store_user_delete(b->store, u.id);
        if (r == -ENOENT)
                return no_such_user(error, name);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", "Invalid arguments.",
                                         "delete the user");
        log_info("User %s (id %" PRId64 ") deleted with its keys and providers by D-Bus caller %s.", name, u.id,
                 strna(sd_bus_message_get_sender(m)));
        /* Its providers went with it: their peers leave the hub now. */
        r = converge_hub(b, error, "The user was deleted");
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, NULL);
}

static int method_set_user_tags(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_user_deinit) StoreUser u = {};
        _cleanup_(store_strv_freep) char **tags = NULL;
        const char *name = NULL;
        int r;

        r = read_string(m, "user name", &name, error);
        if (r < 0)
                return r;
        r = read_strv(m, "tags", STORE_TAGS_MAX, &tags, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_USERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = find_user(b, name, &u, error);
        if (r < 0)
                return r;
        r = store_user_set_tags(b->store, u.id, tags);
        if (r == -ENOENT)
                return no_such_user(error, name);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", INVALID_USER_ARGS,
                                         "set the user's tags");
        return sd_bus_reply_method_return(m, NULL);
}

/* ---- API keys ---------------------------------------------------------------------------- */

/* The keys of one user (or everybody's for ""), of one kind, as records. */
static int list_keys(GatewayBus *b, sd_bus_message *m, KeyKind kind, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(user_names_done) UserNames u = {};
        StoreApiKey *api = NULL;
        StoreEnrollmentKey *enr = NULL;
        size_t n = 0;
        const char *user = NULL;
        int64_t user_id;
        int r;

        r = read_string(m, "user name", &user, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        /* The user, all users, the keys and each API key's limits: one read transaction, not
         * one each (store_read_begin()); polkit is already answered, so nothing waits in it. */
        _cleanup_(store_read_endp) Store *snapshot = store_read_begin(b->store);

        r = user_filter(b, user, &user_id, error);
        if (r < 0)
                return r;
        r = store_user_list(b->store, &u.users, &u.n);
        if (r >= 0)
                r = kind == KEY_KIND_API ? store_api_key_list(b->store, user_id, &api, &n)
                                         : store_enrollment_key_list(b->store, user_id, &enr, &n);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.", "Invalid arguments.",
                                         "list the keys");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < n; i++) {
                StoreKeyLimits limits;

                if (!api) {
                        r = append_enrollment_key(reply, &enr[i], user_name(&u, enr[i].user_id));
                        continue;
                }
                r = store_api_key_get_limits(b->store, api[i].id, &limits);
                if (r >= 0)
                        r = append_api_key(reply, &api[i], user_name(&u, api[i].user_id), &limits);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        store_api_keys_free(api, api ? n : 0);
        store_enrollment_keys_free(enr, enr ? n : 0);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int revoke_key(GatewayBus *b, sd_bus_message *m, KeyKind kind, sd_bus_error *error) {
        const char *what = kind == KEY_KIND_API ? "API key" : "enrollment key";
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (id > INT64_MAX)
                r = -ENOENT;
        else
                r = kind == KEY_KIND_API ? store_api_key_revoke(b->store, (int64_t) id)
                                         : store_enrollment_key_revoke(b->store, (int64_t) id);
        if (r == -ENOENT)
                return no_such_key(error, what, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_KEY, "No such key.", "Invalid arguments.",
                                         "revoke the key");
        log_info("%s %" PRIu64 " revoked by D-Bus caller %s.", kind == KEY_KIND_API ? "API key" : "Enrollment key",
                 id, strna(sd_bus_message_get_sender(m)));
        return sd_bus_reply_method_return(m, NULL);
}

static int scopes_from_strv(char **l, unsigned *ret, sd_bus_error *error) {
        unsigned scopes = 0;

        for (size_t i = 0; l && l[i]; i++) {
                unsigned bit;

                if (streq(l[i], "inference"))
                        bit = STORE_SCOPE_INFERENCE;
                else if (streq(l[i], "agent"))
                        bit = STORE_SCOPE_AGENT;
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown scope '%s'; the scopes are 'inference' and 'agent'.", l[i]);
                if (scopes & bit)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Scope '%s' given twice.", l[i]);
                scopes |= bit;
        }
        if (scopes == 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "An API key needs at least one scope: 'inference', 'agent' or both.");
        *ret = scopes;
        return 0;
}

/* The reply that carries a new key's record and its secret: to the caller only, marked
 * sensitive so that sd-bus wipes it when freed. One of @api and @enrollment is set. */
static int send_new_key(sd_bus_message *m, const StoreApiKey *api, const StoreEnrollmentKey *enrollment,
                        const char *user, const char *secret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_sensitive(reply);
        if (r >= 0)
                r = api ? append_api_key(reply, api, user, NULL) : append_enrollment_key(reply, enrollment, user);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", secret);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_create_api_key(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_user_deinit) StoreUser u = {};
        _cleanup_(store_api_key_deinit) StoreApiKey k = {};
        _cleanup_(store_strv_freep) char **scope_list = NULL;
        _cleanup_(erase_and_freep) char *secret = NULL;
        const char *user = NULL, *name = NULL;
        uint64_t expires;
        unsigned scopes = 0;
        int r;

        r = read_string(m, "user name", &user, error);
        if (r < 0)
                return r;
        r = read_string(m, "key name", &name, error);
        if (r < 0)
                return r;
        r = read_strv(m, "scopes", 2, &scope_list, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "t", &expires);
        if (r < 0)
                return r;
        r = scopes_from_strv(scope_list, &scopes, error);
        if (r < 0)
                return r;
        r = check_expiry(expires, &expires, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = find_user(b, user, &u, error);
        if (r < 0)
                return r;
        r = store_api_key_create(b->store, u.id, isempty(name) ? NULL : name, scopes, expires, &k, &secret);
        if (r == -ENOENT)
                return no_such_user(error, user);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.",
                                         "Invalid arguments: a key name is 1–64 printable characters.",
                                         "create the API key");
        log_info("API key %" PRId64 " (ic-%s…) for user %s created by D-Bus caller %s.", k.id, k.prefix, user,
                 strna(sd_bus_message_get_sender(m)));
        return send_new_key(m, &k, NULL, u.name, secret);
}

static int method_list_api_keys(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return list_keys(userdata, m, KEY_KIND_API, error);
}

static int method_revoke_api_key(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return revoke_key(userdata, m, KEY_KIND_API, error);
}

/* ---- enrollment keys --------------------------------------------------------------------- */

static int method_create_enrollment_key(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_user_deinit) StoreUser u = {};
        _cleanup_(store_enrollment_key_deinit) StoreEnrollmentKey k = {};
        _cleanup_(store_strv_freep) char **tags = NULL;
        _cleanup_(erase_and_freep) char *secret = NULL;
        const char *user = NULL, *name = NULL;
        int reusable, ephemeral, r;
        uint64_t expires;

        r = read_string(m, "user name", &user, error);
        if (r < 0)
                return r;
        r = read_string(m, "key name", &name, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "bb", &reusable, &ephemeral);
        if (r < 0)
                return r;
        r = read_strv(m, "tags", STORE_TAGS_MAX, &tags, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "t", &expires);
        if (r < 0)
                return r;
        r = check_expiry(expires, &expires, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = find_user(b, user, &u, error);
        if (r < 0)
                return r;
        r = store_enrollment_key_create(b->store, u.id, isempty(name) ? NULL : name,
                                        (reusable ? STORE_ENROLLMENT_REUSABLE : 0) |
                                        (ephemeral ? STORE_ENROLLMENT_EPHEMERAL : 0),
                                        tags, expires, &k, &secret);
        if (r == -ENOENT)
                return no_such_user(error, user);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_USER, "No such user.",
                                         "Invalid arguments: a key name is 1–64 printable characters; a tag is 1–64 of "
                                         "A-Z a-z 0-9 . _ : - starting with a letter or digit (at most 32 tags).",
                                         "create the enrollment key");
        log_info("Enrollment key %" PRId64 " (ie-%s…) for user %s created by D-Bus caller %s.", k.id, k.prefix, user,
                 strna(sd_bus_message_get_sender(m)));
        return send_new_key(m, NULL, &k, u.name, secret);
}

static int method_list_enrollment_keys(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return list_keys(userdata, m, KEY_KIND_ENROLLMENT, error);
}

static int method_revoke_enrollment_key(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return revoke_key(userdata, m, KEY_KIND_ENROLLMENT, error);
}

/* ---- providers --------------------------------------------------------------------------- */

/* The filter dictionary of ListProviders: owner, usable_by (s, user names), model,
 * capability (s), online (b). Strings stay valid while @m lives. */
static int read_provider_filter(GatewayBus *b, sd_bus_message *m, StoreProviderFilter *ret, sd_bus_error *error) {
        StoreProviderFilter f = {};
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (unsigned n = 0;; n++) {
                const char *key, *s = NULL;
                bool is_bool;
                int v = 0;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= 16)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Too many filter entries.");
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                is_bool = streq(key, "online");
                if (!is_bool && !streq(key, "owner") && !streq(key, "usable_by") &&
                    !streq(key, "model") && !streq(key, "capability"))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown filter '%s'; the filters are owner, usable_by, model, capability (strings) and online (boolean).",
                                                 key);
                r = sd_bus_message_enter_container(m, 'v', is_bool ? "b" : "s");
                if (r == -ENXIO)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The filter '%s' must be a %s.",
                                                 key, is_bool ? "boolean (b)" : "string (s)");
                if (r < 0)
                        return r;
                r = is_bool ? sd_bus_message_read(m, "b", &v) : sd_bus_message_read(m, "s", &s);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;

                if (is_bool)
                        f.online_only = v;
                else if (strlen(s) > BUS_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The filter '%s' is too long.", key);
                else if (streq(key, "model"))
                        f.model = s;
                else if (streq(key, "capability"))
                        f.capability = s;
                else {
                        int64_t id;

                        r = user_filter(b, s, &id, error);
                        if (r < 0)
                                return r;
                        if (streq(key, "owner"))
                                f.owner_id = id;
                        else
                                f.usable_by = id;
                }
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = f;
        return 0;
}

static int method_list_providers(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(user_names_done) UserNames u = {};
        StoreProviderFilter filter;
        StoreProvider *l = NULL;
        size_t n = 0;
        int r;

        /* The filter's user lookups touch the store, which must wait for polkit. */
        r = begin_call_deferred_args(b, m, "a{sv}", GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = read_provider_filter(b, m, &filter, error);
        if (r < 0)
                return r;

        r = store_user_list(b->store, &u.users, &u.n);
        if (r >= 0)
                r = store_provider_list(b->store, &filter, &l, &n);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid filter: a model is 1–256 characters, a capability 1–64.",
                                         "list the providers");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_provider(reply, &l[i], &u);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        store_providers_free(l, n);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_provider(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(user_names_done) UserNames u = {};
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_provider_get(b->store, (int64_t) id, &p);
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r >= 0)
                r = store_user_list(b->store, &u.users, &u.n);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments.", "read the provider");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = append_provider(reply, &p, &u);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_set_provider_draining(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        uint64_t id;
        int draining, r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "b", &draining);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_PROVIDERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_provider_set_draining(b->store, (int64_t) id, draining);
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments.", "set the provider's drain flag");
        log_info("Provider %" PRIu64 " %s by D-Bus caller %s.", id, draining ? "drained" : "undrained",
                 strna(sd_bus_message_get_sender(m)));
        return sd_bus_reply_method_return(m, NULL);
}

static int method_set_provider_enabled(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_provider_deinit) StoreProvider p = {};
        uint64_t id;
        int enabled, r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "b", &enabled);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_PROVIDERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_provider_get(b->store, (int64_t) id, &p);
        if (r >= 0) {
                /* Enabling puts it back to "registered": its next heartbeat makes it active. */
                if (enabled && p.state == STORE_PROVIDER_DISABLED)
                        r = store_provider_set_state(b->store, p.id, STORE_PROVIDER_REGISTERED);
                else if (!enabled && p.state != STORE_PROVIDER_DISABLED)
                        r = store_provider_set_state(b->store, p.id, STORE_PROVIDER_DISABLED);
        }
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments.", "change the provider's state");
        log_info("Provider %s (id %" PRIu64 ") %s by D-Bus caller %s.", p.name, id, enabled ? "enabled" : "disabled",
                 strna(sd_bus_message_get_sender(m)));
        return sd_bus_reply_method_return(m, NULL);
}

static int method_delete_provider(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_PROVIDERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_provider_delete(b->store, (int64_t) id);
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments.", "delete the provider");
        log_info("Provider %" PRIu64 " deleted by D-Bus caller %s.", id, strna(sd_bus_message_get_sender(m)));
        r = converge_hub(b, error, "The provider was deleted");
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, NULL);
}

static int method_set_provider_sharing(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_strv_freep) char **users = NULL, **tags = NULL;
        _cleanup_free_ int64_t *user_ids = NULL;
        StoreSharing sharing = {};
        const char *mode = NULL;
        size_t n_users;
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = read_string(m, "sharing mode", &mode, error);
        if (r < 0)
                return r;
        r = read_strv(m, "users", STORE_SHARE_USERS_MAX, &users, error);
        if (r < 0)
                return r;
        r = read_strv(m, "tags", STORE_TAGS_MAX, &tags, error);
        if (r < 0)
                return r;
        sharing.mode = store_share_mode_from_string(mode);
        if (sharing.mode < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown sharing mode '%s'; use 'private', 'everyone' or 'restricted'.", mode);
        n_users = store_strv_length(users);
        if (sharing.mode != STORE_SHARE_RESTRICTED && (n_users > 0 || tags))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Sharing mode '%s' takes no users and no tags; name them with 'restricted'.", mode);
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_PROVIDERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        user_ids = new0(int64_t, n_users);
        if (!user_ids)
                return -ENOMEM;
        for (size_t i = 0; i < n_users; i++) {
                _cleanup_(store_user_deinit) StoreUser u = {};

                r = find_user(b, users[i], &u, error);
                if (r < 0)
                        return r;
                user_ids[i] = u.id;
        }
        sharing.user_ids = user_ids;
        sharing.n_user_ids = n_users;
        sharing.tags = tags;

        r = id > INT64_MAX ? -ENOENT : store_provider_set_sharing(b->store, (int64_t) id, &sharing);
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments: a tag is 1–64 of A-Z a-z 0-9 . _ : - starting with a letter or digit.",
                                         "set the provider's sharing");
        log_info("Provider %" PRIu64 " now shared: %s by D-Bus caller %s.", id, mode, strna(sd_bus_message_get_sender(m)));
        return sd_bus_reply_method_return(m, NULL);
}

static int method_set_provider_tags(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(store_strv_freep) char **tags = NULL;
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = read_strv(m, "tags", STORE_TAGS_MAX, &tags, error);
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_PROVIDERS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_provider_set_tags(b->store, (int64_t) id, tags);
        if (r == -ENOENT)
                return no_such_provider(error, id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_PROVIDER, "No such provider.",
                                         "Invalid arguments: a tag is 1–64 of A-Z a-z 0-9 . _ : - starting with a letter or digit (at most 32).",
                                         "set the provider's tags");
        return sd_bus_reply_method_return(m, NULL);
}

/* ---- properties -------------------------------------------------------------------------- */

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        const char *v = NULL;

        if (streq(property, "Version"))
                v = PACKAGE_VERSION;
        else if (streq(property, "HubPublicKey"))
                v = hub_public_key(b->hub);
        else if (streq(property, "MeshPrefix"))
                v = b->mesh_prefix;
        else
                v = b->gateway_address;
        return sd_bus_message_append(reply, "s", v);
}

/* ---- usage and per-key limits ------------------------------------------------------------- */

/* A key's limits as a record of their own. */
static int append_key_limits(sd_bus_message *m, const StoreKeyLimits *l) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_limit_fields(m, l);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* The limits dictionary of SetApiKeyLimits applied to @l: each entry an "x" (-1 unlimited,
 * 0… a limit) or the string "default". */
static int read_key_limits(sd_bus_message *m, StoreKeyLimits *l, sd_bus_error *error) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (unsigned n = 0;; n++) {
                const char *key, *contents, *s;
                int64_t v, *field;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= 8)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Too many limits.");
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "requests_per_minute"))
                        field = &l->requests_per_minute;
                else if (streq(key, "tokens_per_minute"))
                        field = &l->tokens_per_minute;
                else if (streq(key, "concurrent_streams"))
                        field = &l->concurrent_streams;
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown limit '%s'; the limits are requests_per_minute, "
                                                 "tokens_per_minute and concurrent_streams.", key);
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (streq(contents, "x")) {
                        r = sd_bus_message_read(m, "v", "x", &v);
                        if (r < 0)
                                return r;
                        if (v < STORE_LIMIT_UNLIMITED || v > STORE_LIMIT_MAX)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "The limit '%s' must be -1 (unlimited) or 0 to %" PRId64 ".",
                                                         key, STORE_LIMIT_MAX);
                } else if (streq(contents, "s")) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r < 0)
                                return r;
                        if (!streq(s, "default"))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "The limit '%s' is a number (x) or the string \"default\".", key);
                        v = STORE_LIMIT_DEFAULT;
                } else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "The limit '%s' is a number (x) or the string \"default\".", key);
                *field = v;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

static int method_set_api_key_limits(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StoreKeyLimits l;
        uint64_t id;
        int r;

        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;
        r = sd_bus_message_skip(m, "a{sv}");
        if (r < 0)
                return r;
        r = begin_call(b, m, GATEWAY_ACTION_MANAGE_KEYS, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = id > INT64_MAX ? -ENOENT : store_api_key_get_limits(b->store, (int64_t) id, &l);
        if (r == -ENOENT)
                return no_such_key(error, "API key", id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_KEY, "No such key.", "Invalid arguments.",
                                         "read the key's limits");
        r = sd_bus_message_rewind(m, true);
        if (r >= 0)
                r = sd_bus_message_skip(m, "t");
        if (r < 0)
                return r;
        r = read_key_limits(m, &l, error);
        if (r < 0)
                return r;
        r = store_api_key_set_limits(b->store, (int64_t) id, &l);
        if (r == -ENOENT)
                return no_such_key(error, "API key", id);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_KEY, "No such key.", "Invalid limits.",
                                         "set the key's limits");
        log_info("Limits of API key %" PRIu64 " set to %" PRId64 " requests/min, %" PRId64 " tokens/min, %" PRId64
                 " streams (-1 unlimited, -2 default) by D-Bus caller %s.", id, l.requests_per_minute,
                 l.tokens_per_minute, l.concurrent_streams, strna(sd_bus_message_get_sender(m)));
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = append_key_limits(reply, &l);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* The filter dictionary of GetUsage. Strings stay valid while @m lives. */
static int read_usage_filter(GatewayBus *b, sd_bus_message *m, StoreUsageFilter *ret, sd_bus_error *error) {
        StoreUsageFilter f = { .group = STORE_USAGE_BY_KEY };
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (unsigned n = 0;; n++) {
                const char *key, *s = NULL, *type;
                uint64_t t = 0;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= 16)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Too many filter entries.");
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "provider") || streq(key, "since") || streq(key, "until"))
                        type = "t";
                else if (streq(key, "user") || streq(key, "key") || streq(key, "model") || streq(key, "group_by"))
                        type = "s";
                else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown filter '%s'; the filters are user, key, model, group_by "
                                                 "(strings), provider, since and until (t).", key);
                r = sd_bus_message_enter_container(m, 'v', type);
                if (r == -ENXIO)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The filter '%s' must be of type %s.",
                                                 key, type);
                if (r < 0)
                        return r;
                r = streq(type, "t") ? sd_bus_message_read(m, "t", &t) : sd_bus_message_read(m, "s", &s);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                if (s && strlen(s) > BUS_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The filter '%s' is too long.", key);

                if (streq(key, "provider")) {
                        if (t == 0 || t > INT64_MAX)
                                return no_such_provider(error, t);
                        f.provider_id = (int64_t) t;
                } else if (streq(key, "since"))
                        f.since_usec = t;
                else if (streq(key, "until"))
                        f.until_usec = t;
                else if (streq(key, "model"))
                        f.model = s;
                else if (streq(key, "key")) {
                        f.key_prefix = startswith(s, "ic-") ?: s;
                        if (strlen(f.key_prefix) > KEY_PREFIX_CHARS)
                                f.key_prefix = NULL, s = NULL;
                        if (!s || !key_prefix_is_valid(f.key_prefix))
                                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                        "A key is given by its prefix: ic- and the 8 characters after it.");
                } else if (streq(key, "group_by")) {
                        f.group = store_usage_group_from_string(s);
                        if (f.group < 0)
                                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                        "group_by is one of key, provider, model and user.");
                } else {
                        r = user_filter(b, s, &f.user_id, error);
                        if (r < 0)
                                return r;
                }
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (f.until_usec > 0 && f.until_usec <= f.since_usec)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "until must be later than since.");
        *ret = f;
        return 0;
}

static int append_usage_total(sd_bus_message *m, const StoreUsageTotal *t, StoreUsageGroup group) {
        char name[STORE_MODEL_NAME_MAX + 8];
        int r;

        if (group == STORE_USAGE_BY_KEY)
                (void) snprintf(name, sizeof name, "ic-%s", t->name ?: "????????");
        else
                (void) snprintf(name, sizeof name, "%s", strempty(t->name));
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_s(m, "group", store_usage_group_to_string(group));
        if (r >= 0)
                r = append_t(m, "id", (uint64_t) t->id);
        if (r >= 0)
                r = append_s(m, "name", name);
        if (r >= 0)
                r = append_t(m, "requests", t->requests);
        if (r >= 0)
                r = append_t(m, "ok", t->ok);
        if (r >= 0)
                r = append_t(m, "failed", t->failed);
        if (r >= 0)
                r = append_t(m, "truncated", t->truncated);
        if (r >= 0)
                r = append_t(m, "cancelled", t->cancelled);
        if (r >= 0)
                r = append_t(m, "other", t->other);
        if (r >= 0)
                r = append_t(m, "prompt_tokens", t->prompt_tokens);
        if (r >= 0)
                r = append_t(m, "completion_tokens", t->completion_tokens);
        if (r >= 0)
                r = append_t(m, "duration_usec", t->duration_usec);
        if (r >= 0)
                r = append_t(m, "time_to_first_token_usec",
                             t->first_token_requests > 0 ? t->time_to_first_token_usec / t->first_token_requests : 0);
        if (r >= 0)
                r = append_t(m, "first", t->first_usec);
        if (r >= 0)
                r = append_t(m, "last", t->last_usec);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int method_get_usage(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GatewayBus *b = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StoreUsageFilter filter;
        StoreUsageTotal *l = NULL;
        size_t n = 0;
        int r;

        /* The filter's user lookup touches the store, which must wait for polkit. */
        r = begin_call_deferred_args(b, m, "a{sv}", GATEWAY_ACTION_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = read_usage_filter(b, m, &filter, error);
        if (r < 0)
                return r;

        if (b->usage_flush)
                b->usage_flush(b->usage_flush_userdata);
        r = store_usage_totals(b->store, &filter, &l, &n);
        if (r < 0)
                return reply_store_error(error, r, GATEWAY_ERROR_NO_SUCH_KEY, "No such key.",
                                         "Invalid filter: a model is 1–256 characters; times are µs since the epoch.",
                                         "read the usage");
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_usage_total(reply, &l[i], filter.group);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        store_usage_totals_free(l, n);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

void gateway_bus_set_usage_flush(GatewayBus *b, void (*flush)(void *userdata), void *userdata) {
        if (!b)
                return;
        b->usage_flush = flush;
        b->usage_flush_userdata = userdata;
}

static const sd_bus_vtable gateway_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HubPublicKey", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("MeshPrefix", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("GatewayAddress", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),

        SD_BUS_METHOD_WITH_ARGS("CreateUser",
                                SD_BUS_ARGS("s", name, "b", admin, "as", tags, "t", flags),
                                SD_BUS_RESULT("t", user_id),
                                method_create_user, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListUsers",
                                SD_BUS_ARGS("t", flags),
                                SD_BUS_RESULT("aa{sv}", users),
                                method_list_users, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetUser",
                                SD_BUS_ARGS("s", name, "t", flags),
                                SD_BUS_RESULT("a{sv}", user),
                                method_get_user, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteUser",
                                SD_BUS_ARGS("s", name, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_delete_user, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetUserTags",
                                SD_BUS_ARGS("s", name, "as", tags, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_set_user_tags, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_METHOD_WITH_ARGS("CreateApiKey",
                                SD_BUS_ARGS("s", user, "s", name, "as", scopes, "t", expires_usec, "t", flags),
                                SD_BUS_RESULT("a{sv}", key, "s", secret),
                                method_create_api_key, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListApiKeys",
                                SD_BUS_ARGS("s", user, "t", flags),
                                SD_BUS_RESULT("aa{sv}", keys),
                                method_list_api_keys, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RevokeApiKey",
                                SD_BUS_ARGS("t", id, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_revoke_api_key, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_METHOD_WITH_ARGS("CreateEnrollmentKey",
                                SD_BUS_ARGS("s", user, "s", name, "b", reusable, "b", ephemeral, "as", tags,
                                            "t", expires_usec, "t", flags),
                                SD_BUS_RESULT("a{sv}", key, "s", secret),
                                method_create_enrollment_key, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListEnrollmentKeys",
                                SD_BUS_ARGS("s", user, "t", flags),
                                SD_BUS_RESULT("aa{sv}", keys),
                                method_list_enrollment_keys, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RevokeEnrollmentKey",
                                SD_BUS_ARGS("t", id, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_revoke_enrollment_key, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_METHOD_WITH_ARGS("ListProviders",
                                SD_BUS_ARGS("a{sv}", filter, "t", flags),
                                SD_BUS_RESULT("aa{sv}", providers),
                                method_list_providers, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetProvider",
                                SD_BUS_ARGS("t", id, "t", flags),
                                SD_BUS_RESULT("a{sv}", provider),
                                method_get_provider, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetProviderDraining",
                                SD_BUS_ARGS("t", id, "b", draining, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_set_provider_draining, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetProviderEnabled",
                                SD_BUS_ARGS("t", id, "b", enabled, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_set_provider_enabled, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteProvider",
                                SD_BUS_ARGS("t", id, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_delete_provider, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetProviderSharing",
                                SD_BUS_ARGS("t", id, "s", mode, "as", users, "as", tags, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_set_provider_sharing, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetProviderTags",
                                SD_BUS_ARGS("t", id, "as", tags, "t", flags),
                                SD_BUS_NO_RESULT,
                                method_set_provider_tags, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_METHOD_WITH_ARGS("SetApiKeyLimits",
                                SD_BUS_ARGS("t", id, "a{sv}", limits, "t", flags),
                                SD_BUS_RESULT("a{sv}", limits),
                                method_set_api_key_limits, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetUsage",
                                SD_BUS_ARGS("a{sv}", filter, "t", flags),
                                SD_BUS_RESULT("aa{sv}", totals),
                                method_get_usage, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* ---- the service ------------------------------------------------------------------------- */

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        log_warning("Lost the connection to the system bus: administration over D-Bus "
                    "(club-gatewayctl) is unavailable until club-gatewayd restarts; the HTTP API goes on.");
        return 0;
}

GatewayBus *gateway_bus_free(GatewayBus *b) {
        if (!b)
                return NULL;
        /* The registry first: it may still answer callers on the bus. */
        b->polkit = polkit_registry_free(b->polkit);
        b->disconnect_slot = sd_bus_slot_unref(b->disconnect_slot);
        if (b->bus) {
                (void) sd_bus_detach_event(b->bus);
                b->bus = sd_bus_flush_close_unref(b->bus);
        }
        sd_event_unref(b->event);
        return mfree(b);
}

int gateway_bus_new(sd_event *event, Store *store, Hub *hub, GatewayBus **ret) {
        _cleanup_(gateway_bus_freep) GatewayBus *b = NULL;
        struct in_addr network, gw;
        char a[INET_ADDRSTRLEN];
        unsigned len;
        int r;

        assert(event && store && hub && ret);

        b = new0(GatewayBus, 1);
        if (!b)
                return -ENOMEM;
        *b = (GatewayBus) {
                .event = sd_event_ref(event),
                .store = store,
                .hub = hub,
        };
        store_mesh_prefix(store, &network, &len);
        store_gateway_address(store, &gw);
        if (!inet_ntop(AF_INET, &network, a, sizeof a) ||
            !inet_ntop(AF_INET, &gw, b->gateway_address, sizeof b->gateway_address))
                return -errno;
        (void) snprintf(b->mesh_prefix, sizeof b->mesh_prefix, "%s/%u", a, len);

        r = polkit_registry_new(POLKIT_PENDING_MAX_DEFAULT, &b->polkit);
        if (r < 0)
                return r;
        r = bus_open_system("club-gatewayd", &b->bus);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(b->bus, NULL, GATEWAY_BUS_PATH, GATEWAY_BUS_INTERFACE, gateway_vtable, b);
        if (r < 0)
                return r;
        r = sd_bus_match_signal(b->bus, &b->disconnect_slot, "org.freedesktop.DBus.Local", NULL,
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, b);
        if (r < 0)
                return r;
        r = bus_attach_event(b->bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        /* The public API must not depend on the bus: losing it is not a reason to stop. */
        r = sd_bus_set_exit_on_disconnect(b->bus, false);
        if (r < 0)
                return r;
        r = bus_request_name(b->bus, GATEWAY_BUS_NAME);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(b);
        return 0;
}
