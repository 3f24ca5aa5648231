/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "log.h"
#include "polkit.h"

#define POLKIT_SERVICE          "org.freedesktop.PolicyKit1"
#define POLKIT_PATH             "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE        "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_FLAG_ALLOW_USER_INTERACTION 1U
#define POLKIT_DETAILS_MAX      16U     /* key/value pairs; a programming error beyond that */

typedef enum PolkitQueryState {
        POLKIT_QUERY_UID,               /* waiting for GetConnectionUnixUser */
        POLKIT_QUERY_AUTHORITY,         /* waiting for CheckAuthorization */
        POLKIT_QUERY_ANSWERED,          /* result known, method call re-queued */
        _POLKIT_QUERY_STATE_MAX,
        _POLKIT_QUERY_STATE_INVALID = -EINVAL,
} PolkitQueryState;

typedef struct PolkitQuery PolkitQuery;

struct PolkitQuery {
        PolkitRegistry *registry;
        PolkitQuery *prev, *next;

        sd_bus_message *request;        /* the method call being authorized (ref) */
        sd_bus_slot *slot;              /* the call to the bus driver or to polkitd */
        char *action;
        char **details;                 /* key, value, …, NULL */
        char *cancellation_id;          /* set while an interactive check is at polkitd */
        bool interactive;

        PolkitQueryState state;
        int result;                     /* when answered: 1, or a negative errno */
        sd_bus_error error;             /* when answered and result < 0 */
        uint64_t answered_usec;         /* CLOCK_MONOTONIC */
};

struct PolkitRegistry {
        PolkitQuery *queries;
        unsigned n_queries;
        unsigned max_pending;
        sd_event_source *exit_source;   /* answers pending callers when the loop exits */
};

/* Numbers cancellation ids (query_ask_authority()). */
static uint64_t polkit_cancellation_ids;

static char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        return mfree(l);
}
CLUB_DEFINE_CLEANUP(char **, strv_free);

/* Copy key, value, … pairs: -EINVAL for an odd count or too many. */
static int details_copy(const char *const *details, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0;

        assert(ret);

        if (!details) {
                *ret = NULL;
                return 0;
        }

        while (details[n])
                n++;
        if (n % 2 != 0 || n / 2 > POLKIT_DETAILS_MAX)
                return -EINVAL;

        l = new0(char *, n + 1);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                l[i] = strdup(details[i]);
                if (!l[i])
                        return -ENOMEM;
        }

        *ret = TAKE_PTR(l);
        return 0;
}

static const char *query_member(const PolkitQuery *q) {
        return strna(sd_bus_message_get_member(q->request));
}

/* Withdraw an interactive check that polkitd may be showing an authentication dialog for.
 * Fire and forget: nobody is waiting for the outcome any more. */
static void query_cancel_at_authority(PolkitQuery *q) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *cancel = NULL;
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        int r;

        if (q->state != POLKIT_QUERY_AUTHORITY || !q->cancellation_id)
                return;

        r = sd_bus_message_new_method_call(bus, &cancel, POLKIT_SERVICE, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CancelCheckAuthorization");
        if (r >= 0)
                r = sd_bus_message_append(cancel, "s", q->cancellation_id);
        if (r >= 0)
                r = sd_bus_message_set_expect_reply(cancel, false);
        if (r >= 0)
                r = sd_bus_send(bus, cancel, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to cancel polkit check %s, ignoring: %m", q->cancellation_id);
}

/* Detach from the registry and free. The method call is not answered here. */
static PolkitQuery *query_free(PolkitQuery *q) {
        if (!q)
                return NULL;

        if (q->registry) {
                if (q->prev)
                        q->prev->next = q->next;
                else
                        q->registry->queries = q->next;
                if (q->next)
                        q->next->prev = q->prev;
                assert(q->registry->n_queries > 0);
                q->registry->n_queries--;
        }

        /* Unreferencing a reply slot also forgets the pending call: a late answer is dropped. */
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        sd_bus_error_free(&q->error);
        free(q->action);
        strv_free(q->details);
        free(q->cancellation_id);
        return mfree(q);
}
CLUB_DEFINE_CLEANUP(PolkitQuery *, query_free);

static PolkitQuery *registry_find(PolkitRegistry *registry, sd_bus_message *m) {
        for (PolkitQuery *q = registry->queries; q; q = q->next)
                if (q->request == m)
                        return q;
        return NULL;
}

/* Drop answered queries whose method call did not come back in time. */
static void registry_gc(PolkitRegistry *registry) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        PolkitQuery *next;

        for (PolkitQuery *q = registry->queries; q; q = next) {
                next = q->next;
                if (q->state == POLKIT_QUERY_ANSWERED && now - q->answered_usec > POLKIT_ANSWERED_TTL_USEC) {
                        log_debug("polkit: dropping unclaimed answer for %s()", query_member(q));
                        query_free(q);
                }
        }
}

/*
 * Record the outcome and hand the method call back to sd-bus, which dispatches it to
 * its handler again; the handler's next polkit_check_async() picks up the result. If
 * that fails, answer the call here instead, so that the caller is not left waiting.
 */
static void query_answer(PolkitQuery *q, int result) {
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        int r;

        assert(result != 0);
        assert(result > 0 || sd_bus_error_is_set(&q->error));

        q->slot = sd_bus_slot_unref(q->slot);
        q->cancellation_id = mfree(q->cancellation_id);
        q->state = POLKIT_QUERY_ANSWERED;
        q->result = result;
        q->answered_usec = now_usec(CLOCK_MONOTONIC);

        r = sd_bus_message_rewind(q->request, /* complete= */ true);
        if (r >= 0)
                r = sd_bus_enqueue_for_read(bus, q->request);
        if (r >= 0)
                return;

        log_debug_errno(r, "polkit: failed to re-queue %s(): %m", query_member(q));
        if (result > 0)
                (void) sd_bus_reply_method_errorf(q->request, SD_BUS_ERROR_FAILED,
                                                  "Failed to resume the call after authorization: %s",
                                                  strerror(-r));
        else
                (void) sd_bus_reply_method_error(q->request, &q->error);
        query_free(q);
}

static void query_fail(PolkitQuery *q, int r, const char *name, const char *format, ...) _printf_(4, 5);
static void query_fail(PolkitQuery *q, int r, const char *name, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        assert(r < 0);

        sd_bus_error_free(&q->error);
        va_start(ap, format);
        if (vasprintf(&message, format, ap) < 0)
                message = NULL;
        va_end(ap);
        (void) sd_bus_error_set(&q->error, name, message);

        query_answer(q, r);
}

static int query_on_authority_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        int authorized, challenge, r;

        assert(q);
        assert(q->state == POLKIT_QUERY_AUTHORITY);

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
                        log_debug("polkit: polkitd is not on the bus; %s() denied", query_member(q));
                        query_fail(q, -EACCES, SD_BUS_ERROR_ACCESS_DENIED,
                                   "polkit is not available; only root may call %s().", query_member(q));
                        return 0;
                }

                log_debug("polkit: CheckAuthorization(%s) failed: %s: %s", q->action, e->name, strna(e->message));
                query_fail(q, -sd_bus_error_get_errno(e), e->name,
                           "Authorization check for %s failed: %s", q->action, strna(e->message));
                return 0;
        }

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                query_fail(q, -EBADMSG, SD_BUS_ERROR_FAILED,
                           "Authorization check for %s failed: unexpected answer from polkit.", q->action);
                return 0;
        }

        log_debug("polkit: %s for %s() from %s: %s", q->action, query_member(q),
                  strna(sd_bus_message_get_sender(q->request)),
                  authorized ? "authorized" : challenge ? "needs authentication" : "denied");

        if (authorized)
                query_answer(q, 1);
        else if (challenge && !q->interactive)
                query_fail(q, -EACCES, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                           "Interactive authentication is required to call %s() (polkit action %s).",
                           query_member(q), q->action);
        else
                query_fail(q, -EACCES, SD_BUS_ERROR_ACCESS_DENIED,
                           "Not authorized to call %s(): polkit denied action %s.",
                           query_member(q), q->action);
        return 0;
}

static int query_ask_authority(PolkitQuery *q) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        const char *sender = sd_bus_message_get_sender(q->request);
        uint32_t flags = 0;
        int r;

        assert(sender);

        if (q->interactive) {
                flags |= POLKIT_FLAG_ALLOW_USER_INTERACTION;
                /* polkitd wants it unique per caller connection: count per process, as
                 * several registries may share one connection. */
                if (asprintf(&q->cancellation_id, "club-%" PRIu64, ++polkit_cancellation_ids) < 0) {
                        q->cancellation_id = NULL;
                        return -ENOMEM;
                }
        }

        r = sd_bus_message_new_method_call(bus, &call, POLKIT_SERVICE, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r < 0)
                return r;

        r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, q->action);
        if (r < 0)
                return r;

        r = sd_bus_message_open_container(call, 'a', "{ss}");
        if (r < 0)
                return r;
        for (char **d = q->details; d && d[0]; d += 2) {
                r = sd_bus_message_append(call, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(call);
        if (r < 0)
                return r;

        r = sd_bus_message_append(call, "us", flags, strempty(q->cancellation_id));
        if (r < 0)
                return r;

        r = sd_bus_call_async(bus, &q->slot, call, query_on_authority_reply, q,
                              q->interactive ? POLKIT_INTERACTIVE_TIMEOUT_USEC : POLKIT_TIMEOUT_USEC);
        if (r < 0)
                return r;

        q->state = POLKIT_QUERY_AUTHORITY;
        return 0;
}

static int query_on_uid_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        uint32_t uid;
        int r;

        assert(q);
        assert(q->state == POLKIT_QUERY_UID);
        q->slot = sd_bus_slot_unref(q->slot);

        e = sd_bus_message_get_error(reply);
        if (e) {
                /* Typically NameHasNoOwner: the caller is gone already. */
                query_fail(q, -sd_bus_error_get_errno(e), e->name,
                           "Failed to identify the caller of %s(): %s", query_member(q), strna(e->message));
                return 0;
        }

        r = sd_bus_message_read(reply, "u", &uid);
        if (r < 0) {
                query_fail(q, -EBADMSG, SD_BUS_ERROR_FAILED,
                           "Failed to identify the caller of %s(): unexpected answer from the bus.", query_member(q));
                return 0;
        }

        if (uid == 0) {
                log_debug("polkit: %s() from root: authorized without polkit", query_member(q));
                query_answer(q, 1);
                return 0;
        }

        r = query_ask_authority(q);
        if (r < 0)
                query_fail(q, r, SD_BUS_ERROR_FAILED,
                           "Failed to ask polkit about %s: %s", q->action, strerror(-r));
        return 0;
}

int polkit_registry_new(unsigned max_pending, PolkitRegistry **ret) {
        PolkitRegistry *registry;

        assert(ret);

        if (max_pending == 0)
                return -EINVAL;

        registry = new0(PolkitRegistry, 1);
        if (!registry)
                return -ENOMEM;
        *registry = (PolkitRegistry) { .max_pending = max_pending };

        *ret = registry;
        return 0;
}

/* Forget every query; answer the method calls that are still waiting. */
static void registry_cancel_all(PolkitRegistry *registry) {
        while (registry->queries) {
                PolkitQuery *q = registry->queries;

                query_cancel_at_authority(q);
                /* An answered call is in the bus's read queue already and gets dispatched
                 * again (and checked again, with a new registry) or dropped with the bus. */
                if (q->state != POLKIT_QUERY_ANSWERED) {
                        int r = sd_bus_reply_method_errorf(q->request, SD_BUS_ERROR_NO_REPLY,
                                                           "Authorization check for %s cancelled: the service is shutting down.",
                                                           q->action);
                        if (r < 0)
                                log_debug_errno(r, "polkit: failed to answer cancelled %s(), ignoring: %m",
                                                query_member(q));
                }
                query_free(q);
        }
}

/*
 * sd-bus closes a connection attached to an sd-event loop from its own exit source when
 * the loop exits; callers still waiting for polkit must be answered before that, so the
 * registry has an exit source that runs first (see POLKIT_EXIT_PRIORITY).
 */
static int registry_on_exit(sd_event_source *s, void *userdata) {
        PolkitRegistry *registry = userdata;

        if (registry->n_queries > 0)
                log_debug("polkit: event loop exiting, cancelling %u pending check(s)", registry->n_queries);
        registry_cancel_all(registry);
        return 0;
}

static void registry_attach_exit(PolkitRegistry *registry, sd_bus *bus) {
        sd_event *event;
        int r;

        if (registry->exit_source)
                return;
        event = sd_bus_get_event(bus);
        if (!event)
                return;         /* not on an event loop: freeing the registry is the only way out */

        r = sd_event_add_exit(event, &registry->exit_source, registry_on_exit, registry);
        if (r >= 0)
                r = sd_event_source_set_priority(registry->exit_source, POLKIT_EXIT_PRIORITY);
        if (r >= 0)
                (void) sd_event_source_set_description(registry->exit_source, "polkit-registry-exit");
        if (r < 0) {
                log_debug_errno(r, "polkit: failed to watch for event loop exit, ignoring: %m");
                registry->exit_source = sd_event_source_disable_unref(registry->exit_source);
        }
}

PolkitRegistry *polkit_registry_free(PolkitRegistry *registry) {
        if (!registry)
                return NULL;

        registry_cancel_all(registry);
        sd_event_source_disable_unref(registry->exit_source);
        return mfree(registry);
}

unsigned polkit_registry_n_pending(const PolkitRegistry *registry) {
        return registry ? registry->n_queries : 0;
}

/* On a direct (peer-to-peer) connection there is no bus driver and no name polkit could
 * look up: the peer's credentials come from the socket. Only root is authorized. */
static int check_peer(sd_bus_message *m, const char *action, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t euid;
        int r;

        r = sd_bus_get_owner_creds(sd_bus_message_get_bus(m), SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &euid);
        if (r >= 0 && euid == 0)
                return 1;

        (void) sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                 "Not authorized to call %s(): only root may, on a direct connection (polkit action %s).",
                                 strna(sd_bus_message_get_member(m)), action);
        return -EACCES;
}

int polkit_check_async_full(
                sd_bus_message *m,
                const char *action,
                const char *const *details,
                PolkitRegistry **registry,
                sd_bus_error *error) {

        _cleanup_(query_freep) PolkitQuery *q = NULL;
        sd_bus *bus;
        const char *sender;
        int r;

        assert(m);
        assert(action);
        assert(registry);

        if (!sd_bus_message_is_method_call(m, NULL, NULL))
                return -EINVAL;

        /* Coming back with an answer? */
        if (*registry) {
                PolkitQuery *found = registry_find(*registry, m);

                if (found) {
                        if (!streq(found->action, action)) {
                                /* A programming error: see "One action per method call". */
                                log_debug("polkit: %s() checked for both %s and %s", query_member(found),
                                          found->action, action);
                                query_free(found);
                                (void) sd_bus_error_setf(error, SD_BUS_ERROR_FAILED,
                                                         "Internal error: conflicting authorization checks.");
                                return -EINVAL;
                        }

                        if (found->state != POLKIT_QUERY_ANSWERED)
                                return 0;       /* dispatched again while still pending */

                        q = found;
                        r = q->result;
                        if (r < 0)
                                sd_bus_error_move(error, &q->error);
                        return r;               /* q is freed on return */
                }
        }

        bus = sd_bus_message_get_bus(m);
        r = sd_bus_is_bus_client(bus);
        if (r < 0)
                return r;
        if (r == 0)
                return check_peer(m, action, error);

        sender = sd_bus_message_get_sender(m);
        if (!sender)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Not authorized to call %s(): the caller has no bus name.",
                                         strna(sd_bus_message_get_member(m)));

        if (!*registry) {
                r = polkit_registry_new(POLKIT_PENDING_MAX_DEFAULT, registry);
                if (r < 0)
                        return r;
        }

        registry_gc(*registry);
        if ((*registry)->n_queries >= (*registry)->max_pending) {
                log_debug("polkit: %u checks pending, refusing %s() from %s", (*registry)->n_queries,
                          strna(sd_bus_message_get_member(m)), sender);
                (void) sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many pending authorization checks (%u); try again later.",
                                         (*registry)->max_pending);
                return -EBUSY;
        }

        q = new0(PolkitQuery, 1);
        if (!q)
                return -ENOMEM;
        *q = (PolkitQuery) {
                .request = sd_bus_message_ref(m),
                .action = strdup(action),
                .interactive = sd_bus_message_get_allow_interactive_authorization(m) > 0,
                .state = POLKIT_QUERY_UID,
                .error = SD_BUS_ERROR_NULL,
        };
        if (!q->action)
                return -ENOMEM;

        r = details_copy(details, &q->details);
        if (r < 0)
                return r;

        /* The uid the bus driver saw when the caller connected: no PID race, and root
         * needs no polkitd. */
        r = sd_bus_call_method_async(bus, &q->slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetConnectionUnixUser",
                                     query_on_uid_reply, q, "s", sender);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        registry_attach_exit(*registry, bus);

        /* Link into the registry last: nothing above can fail half-way through it. */
        q->registry = *registry;
        q->next = (*registry)->queries;
        if (q->next)
                q->next->prev = q;
        (*registry)->queries = q;
        (*registry)->n_queries++;

        log_debug("polkit: checking %s for %s() from %s%s", action, strna(sd_bus_message_get_member(m)),
                  sender, q->interactive ? " (interactive)" : "");
        TAKE_PTR(q);
        return 0;
}

int polkit_check_async(sd_bus_message *m, const char *action, PolkitRegistry **registry, sd_bus_error *error) {
        return polkit_check_async_full(m, action, NULL, registry, error);
}
