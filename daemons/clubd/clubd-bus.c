/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <systemd/sd-bus.h>

#include "agent-register.h"
#include "bus-util.h"
#include "clubd-bus.h"
#include "config.h"
#include "log.h"
#include "polkit.h"

#define ACTION_REGISTER "club.inference.agent1.register"
#define ACTION_UNREGISTER "club.inference.agent1.unregister"
#define ACTION_DRAIN "club.inference.agent1.drain"
#define ACTION_CONFIGURE "club.inference.agent1.configure"

/* The agent's errnos (agent.h, agent-register.h) and their names. */
static const sd_bus_error_map agent_errors[] = {
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.Busy", EBUSY),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.NotRegistered", ENOTCONN),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.KeyRejected", EKEYREJECTED),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.GatewayRefused", EREMOTEIO),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.RateLimited", EDQUOT),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.GatewayUnavailable", EHOSTUNREACH),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.CertificateInvalid", EBADE),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.InsecureGateway", EPROTONOSUPPORT),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.InvalidResponse", EBADMSG),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.WireGuardFailed", ENOLINK),
        SD_BUS_ERROR_MAP("club.inference.Agent1.Error.StateWriteFailed", EROFS),
        SD_BUS_ERROR_MAP_END
};

/* Codes clubd makes up itself; any other code came from the gateway. */
static const char *const own_codes[] = {
        "gateway_unreachable", "certificate_invalid", "insecure_gateway", "invalid_response",
        "wireguard_failed", "state_write_failed", "cancelled",
};

typedef struct RegisterCall {
        ClubdBus *bus;                  /* NULL once the bus object is gone */
        sd_bus_message *message;
} RegisterCall;

struct ClubdBus {
        sd_event *event;
        Agent *agent;
        sd_bus *bus;
        sd_bus_slot *disconnect_slot;
        PolkitRegistry *polkit;
        sd_event_source *retry;
        sd_event_source *drop;
        RegisterCall *register_call;
        ClubdBusReloadFn reload;
        void *userdata;
};

/* ---- properties -------------------------------------------------------------------------- */

/* The vtable's userdata is the ClubdBus; properties show its agent. */
#define AGENT(userdata) (((ClubdBus *) (userdata))->agent)

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", agent_state_to_string(agent_state(AGENT(userdata))));
}

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Agent *a = AGENT(userdata);
        const char *v =
                streq(property, "StateReason") ? agent_state_reason(a) :
                streq(property, "Name") ? agent_name(a) :
                streq(property, "GatewayURL") ? agent_gateway_url(a) :
                streq(property, "MeshAddress") ? agent_mesh_address(a) : PACKAGE_VERSION;

        return sd_bus_message_append(reply, "s", strempty(v));
}

static int property_get_provider_id(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "x", agent_provider_id(AGENT(userdata)));
}

static int property_get_strv(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append_strv(reply, streq(property, "Models") ? agent_models(AGENT(userdata))
                                                                           : agent_capabilities(AGENT(userdata)));
}

static int property_get_in_flight(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "u", agent_in_flight(AGENT(userdata)));
}

static int property_get_last_heartbeat(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", agent_last_heartbeat_usec(AGENT(userdata)));
}

static int property_get_upstreams(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const AgentUpstream *l;
        size_t n = agent_upstreams(AGENT(userdata), &l);
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(ssb)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_append(reply, "(ssb)", l[i].name, l[i].url, (int) l[i].healthy);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* ---- methods ------------------------------------------------------------------------------ */

static bool code_is_own(const char *code) {
        for (size_t i = 0; i < ELEMENTSOF(own_codes); i++)
                if (streq_ptr(code, own_codes[i]))
                        return true;
        return false;
}

static void on_register_done(Agent *a, int error, const char *code, const char *message, void *userdata) {
        RegisterCall *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        if (c->bus)
                c->bus->register_call = NULL;
        if (c->bus && c->bus->bus) {
                if (error >= 0)
                        r = sd_bus_reply_method_return(c->message, "xs", agent_provider_id(a), agent_mesh_address(a));
                else {
                        if (code && !code_is_own(code))
                                (void) bus_error_set_errnof(&e, error, "%s (%s)", strempty(message), code);
                        else
                                (void) bus_error_set_errnof(&e, error, "%s", message ?: "The registration failed.");
                        r = sd_bus_reply_method_error(c->message, &e);
                }
                if (r < 0)
                        log_debug_errno(r, "Failed to answer Register, ignoring: %m");
        }
        sd_bus_message_unref(c->message);
        free(c);
}

static int method_register(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ClubdBus *b = userdata;
        const char *key, *url, *name;
        _cleanup_free_ char *checked = NULL;
        uint64_t flags;
        RegisterCall *c;
        int r;

        r = sd_bus_message_read(m, "sss", &key, &url, &name);
        if (r < 0)
                return r;
        r = bus_message_read_flags(m, _AGENT_REGISTER_FLAGS_ALL, &flags, error);
        if (r < 0)
                return r;
        if (!agent_key_valid(key))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "The key must be an API key (ic-…) or an enrollment key (ie-…).");
        if (!isempty(url) && agent_register_url(url, true, &checked) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The gateway URL must be https://HOST[:PORT][/PATH] (or http://…), without query.");
        if (!isempty(name) && !clubd_name_valid(name, false))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "A name is 1 to 64 of letters, digits, '-', '_' and '.', starting with a letter or digit.");

        r = polkit_check_async(m, ACTION_REGISTER, &b->polkit, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        if (b->register_call)
                return bus_error_set_errnof(error, -EBUSY, "A registration is already running.");
        c = new0(RegisterCall, 1);
        if (!c)
                return -ENOMEM;
        *c = (RegisterCall) { .bus = b, .message = sd_bus_message_ref(m) };
        r = agent_register(b->agent, &(AgentRegisterParams) {
                                   .key = key, .gateway_url = url, .name = name, .flags = (unsigned) flags,
                           }, on_register_done, c);
        if (r < 0) {
                sd_bus_message_unref(c->message);
                free(c);
                if (r == -EBUSY)
                        return bus_error_set_errnof(error, r, "A registration is already running.");
                if (r == -EINVAL)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                "No gateway URL was given and none is saved or configured (Gateway= in "
                                                "[Agent]), or no name was given and the host name is not a valid one.");
                return sd_bus_error_set_errnof(error, r, "Failed to start the registration: %m");
        }
        b->register_call = c;
        return 1;
}

static int method_unregister(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ClubdBus *b = userdata;
        int r;

        r = polkit_check_async(m, ACTION_UNREGISTER, &b->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = agent_unregister(b->agent);
        if (r == -ENOTCONN)
                return bus_error_set_errnof(error, r, "This machine is not registered.");
        if (r == -EBUSY)
                return bus_error_set_errnof(error, r, "A registration is running; try again when it is done.");
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to delete the saved registration: %m");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_drain(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ClubdBus *b = userdata;
        bool drain = streq(sd_bus_message_get_member(m), "Drain");
        int r;

        r = polkit_check_async(m, ACTION_DRAIN, &b->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = agent_set_draining(b->agent, drain);
        if (r == -ENOTCONN)
                return bus_error_set_errnof(error, r, "This machine is not registered.");
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to %s: %m", drain ? "drain" : "resume");
        return sd_bus_reply_method_return(m, NULL);
}

static int method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ClubdBus *b = userdata;
        int r;

        r = polkit_check_async(m, ACTION_CONFIGURE, &b->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = b->reload(b->userdata);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "The configuration was not reloaded (see clubd's log): %m");
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Register",
                                SD_BUS_ARGS("s", key, "s", gateway_url, "s", name, "t", flags),
                                SD_BUS_RESULT("x", provider_id, "s", mesh_address),
                                method_register, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Unregister", NULL, NULL, method_unregister, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Drain", NULL, NULL, method_drain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, method_drain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Reload", NULL, NULL, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StateReason", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ProviderId", "x", property_get_provider_id, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Name", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("GatewayURL", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MeshAddress", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Models", "as", property_get_strv, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Capabilities", "as", property_get_strv, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("InFlight", "u", property_get_in_flight, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastHeartbeat", "t", property_get_last_heartbeat, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Upstreams", "a(ssb)", property_get_upstreams, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Version", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_VTABLE_END
};

/* ---- change signals ---------------------------------------------------------------------- */

static void on_agent_changed(Agent *a, unsigned changes, void *userdata) {
        ClubdBus *b = userdata;
        const char *names[16];
        size_t n = 0;
        int r;

        if (!b->bus)
                return;
        if (changes & AGENT_CHANGE_STATE) {
                names[n++] = "State";
                names[n++] = "StateReason";
        }
        if (changes & AGENT_CHANGE_REGISTRATION) {
                names[n++] = "ProviderId";
                names[n++] = "Name";
                names[n++] = "GatewayURL";
                names[n++] = "MeshAddress";
        }
        if (changes & AGENT_CHANGE_MODELS) {
                names[n++] = "Models";
                names[n++] = "Capabilities";
        }
        if (changes & AGENT_CHANGE_UPSTREAMS)
                names[n++] = "Upstreams";
        if (changes & AGENT_CHANGE_HEARTBEAT)
                names[n++] = "LastHeartbeat";
        if (changes & AGENT_CHANGE_IN_FLIGHT)
                names[n++] = "InFlight";
        if (n == 0)
                return;
        names[n] = NULL;
        r = sd_bus_emit_properties_changed_strv(b->bus, CLUBD_BUS_PATH, CLUBD_BUS_INTERFACE, (char **) names);
        if (r < 0)
                log_debug_errno(r, "Failed to emit PropertiesChanged, ignoring: %m");
}

/* ---- the connection ------------------------------------------------------------------------ */

static void bus_drop(ClubdBus *b) {
        b->disconnect_slot = sd_bus_slot_unref(b->disconnect_slot);
        /* The registry answers waiting callers before the bus goes. */
        b->polkit = polkit_registry_free(b->polkit);
        b->bus = sd_bus_flush_close_unref(b->bus);
}

static int bus_connect(ClubdBus *b);

static void bus_schedule_retry(ClubdBus *b) {
        int r;

        r = sd_event_source_set_time_relative(b->retry, CLUBD_BUS_RETRY_USEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->retry, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule reconnecting to the system bus: %m");
}

static int on_drop(sd_event_source *s, void *userdata) {
        ClubdBus *b = userdata;

        b->drop = sd_event_source_disable_unref(b->drop);
        bus_drop(b);
        bus_schedule_retry(b);
        return 0;
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ClubdBus *b = userdata;
        int r;

        log_warning("Lost the connection to the system bus; clubd keeps serving and reconnects in %us.",
                    (unsigned) (CLUBD_BUS_RETRY_USEC / USEC_PER_SEC));
        if (b->drop)
                return 0;
        r = sd_event_add_defer(b->event, &b->drop, on_drop, b);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule closing the bus connection: %m");
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        ClubdBus *b = userdata;
        int r;

        r = bus_connect(b);
        if (r < 0) {
                log_debug_errno(r, "Still no system bus: %m");
                bus_schedule_retry(b);
        } else
                log_info("Connected to the system bus as %s.", CLUBD_BUS_NAME);
        return 0;
}

static int bus_connect(ClubdBus *b) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = bus_open_system("clubd", &bus);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(bus, NULL, CLUBD_BUS_PATH, CLUBD_BUS_INTERFACE, agent_vtable, b);
        if (r < 0)
                return r;
        r = bus_attach_event(bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        /* Losing the bus is not a reason to stop serving. */
        r = sd_bus_set_exit_on_disconnect(bus, false);
        if (r < 0)
                return r;
        r = sd_bus_match_signal(bus, &b->disconnect_slot, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, b);
        if (r < 0)
                return r;
        r = bus_request_name(bus, CLUBD_BUS_NAME);
        if (r < 0) {
                b->disconnect_slot = sd_bus_slot_unref(b->disconnect_slot);
                return r;
        }
        b->bus = TAKE_PTR(bus);
        return 0;
}

int clubd_bus_new(sd_event *event, Agent *agent, ClubdBusReloadFn reload, void *userdata, ClubdBus **ret) {
        _cleanup_(clubd_bus_freep) ClubdBus *b = NULL;
        int r;

        assert(event && agent && reload && ret);
        r = bus_error_map_register(agent_errors);
        if (r < 0)
                return r;
        b = new0(ClubdBus, 1);
        if (!b)
                return -ENOMEM;
        *b = (ClubdBus) {
                .event = sd_event_ref(event),
                .agent = agent,
                .reload = reload,
                .userdata = userdata,
        };
        r = sd_event_add_time_relative(event, &b->retry, CLOCK_MONOTONIC, CLUBD_BUS_RETRY_USEC, 0, on_retry, b);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);

        r = bus_connect(b);
        if (r == -EEXIST)
                return log_error_errno(r, "The bus name %s is taken: another clubd is running.", CLUBD_BUS_NAME);
        if (r == -EACCES)
                log_warning_errno(r, "The bus policy does not let this user own %s (see "
                                  "/usr/share/dbus-1/system.d/club.inference.Agent1.conf): serving without it.",
                                  CLUBD_BUS_NAME);
        else if (r < 0) {
                log_warning_errno(r, "Cannot reach the system bus (%m): serving without the %s interface; "
                                  "clubctl will not work until it is reachable. Retrying every %us.",
                                  CLUBD_BUS_NAME, (unsigned) (CLUBD_BUS_RETRY_USEC / USEC_PER_SEC));
                bus_schedule_retry(b);
        }
        agent_set_change_callback(agent, on_agent_changed, b);
        *ret = TAKE_PTR(b);
        return 0;
}

ClubdBus *clubd_bus_free(ClubdBus *b) {
        if (!b)
                return NULL;
        if (b->agent)
                agent_set_change_callback(b->agent, NULL, NULL);
        if (b->register_call)
                b->register_call->bus = NULL;
        b->drop = sd_event_source_disable_unref(b->drop);
        b->retry = sd_event_source_disable_unref(b->retry);
        bus_drop(b);
        sd_event_unref(b->event);
        return mfree(b);
}
