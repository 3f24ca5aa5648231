/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-gatewayctl — administer a club gateway: users, API keys, enrollment keys and
 * providers. It talks only to club-gatewayd's D-Bus service club.inference.Gateway1 on the
 * system bus ($DBUS_SYSTEM_BUS_ADDRESS), never to its database; polkit decides who may do
 * what. See docs/club-gatewayctl.md.
 *
 * Every reply record (an a{sv} dictionary) is turned into a JSON object first; --json
 * prints those, and the tables are drawn from the same objects.
 */
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "bus-util.h"
#include "cleanup.h"
#include "conf-parser.h"
#include "config.h"
#include "gateway-bus.h"
#include "macro.h"
#include "parse-util.h"

/* Exit codes (docs/club-gatewayctl.md). */
enum {
        EXIT_OK = 0,
        EXIT_FAIL = 1,                  /* anything else that went wrong */
        EXIT_USAGE = 2,                 /* bad command line, or arguments the gateway refused */
        EXIT_NOT_FOUND = 3,             /* no such user, key or provider */
        EXIT_DENIED = 4,                /* not permitted (polkit or the bus policy) */
        EXIT_NOT_RUNNING = 5,           /* club-gatewayd is not on the bus */
};

#define TAGS_MAX 32U                    /* as the store: STORE_TAGS_MAX */
#define SHARE_USERS_MAX 256U            /* STORE_SHARE_USERS_MAX */
#define CALL_TIMEOUT_USEC (25 * USEC_PER_SEC)
#define CALL_TIMEOUT_INTERACTIVE_USEC (120 * USEC_PER_SEC)

static bool arg_json = false;
static bool arg_legend = true;
static bool arg_ask_password = true;
static const char *arg_user = NULL;
static bool arg_admin = false;
static char *arg_tags[TAGS_MAX + 1];
static size_t arg_n_tags = 0;
static const char *arg_scope = NULL;
static const char *arg_name = NULL;
static const char *arg_expires = NULL;
static bool arg_reusable = false;
static bool arg_ephemeral = false;
static const char *arg_model = NULL;
static const char *arg_capability = NULL;
static bool arg_online = false;
static const char *arg_share_mode = NULL;
static const char *arg_share_users = NULL;
static const char *arg_share_tags = NULL;
static const char *arg_key = NULL;
static const char *arg_provider = NULL;
static const char *arg_since = NULL;
static const char *arg_until = NULL;
static const char *arg_by = NULL;
static const char *arg_rpm = NULL;
static const char *arg_tpm = NULL;
static const char *arg_streams = NULL;

/* Which options a verb takes (everything else is refused, so a typo is not ignored). */
enum {
        OPT_USER = 1 << 0,
        OPT_ADMIN = 1 << 1,
        OPT_TAG = 1 << 2,
        OPT_SCOPE = 1 << 3,
        OPT_NAME = 1 << 4,
        OPT_EXPIRES = 1 << 5,
        OPT_REUSABLE = 1 << 6,
        OPT_EPHEMERAL = 1 << 7,
        OPT_MODEL = 1 << 8,
        OPT_CAPABILITY = 1 << 9,
        OPT_ONLINE = 1 << 10,
        OPT_SHARE = 1 << 11,            /* --everyone, --private, --users, --tags */
        OPT_USAGE = 1 << 12,            /* --key, --provider, --since, --until, --by */
        OPT_LIMITS = 1 << 13,           /* --rpm, --tpm, --streams */
};
static unsigned arg_given = 0;

_printf_(1, 2) static void err(const char *fmt, ...) {
        va_list ap;

        fputs("club-gatewayctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* ---- the bus ------------------------------------------------------------------------------- */

static sd_bus *bus_connect(void) {
        sd_bus *bus = NULL;
        int r;

        r = bus_open_system("club-gatewayctl", &bus);
        if (r < 0) {
                err("Cannot connect to the system bus: %s.", strerror(-r));
                exit(EXIT_FAIL);
        }
        (void) sd_bus_set_allow_interactive_authorization(bus, arg_ask_password);
        return bus;
}

/* The exit code for a failed call, after printing a message a person can act on. */
static int report_error(const sd_bus_error *e, int r, const char *action) {
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
            (e && e->name && startswith(e->name, "org.freedesktop.systemd1."))) {
                err("club-gatewayd is not running (systemctl start club-gatewayd).");
                return EXIT_NOT_RUNNING;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED)) {
                err("Not permitted without authentication (polkit action %s). Run as root (sudo), or on a terminal "
                    "with a polkit agent and without --no-ask-password.", action);
                return EXIT_DENIED;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED)) {
                err("Not permitted: %s (polkit action %s). Run as root, or ask the gateway's administrator for "
                    "a polkit rule that grants it.", e->message ?: "access denied", action);
                return EXIT_DENIED;
        }
        if (sd_bus_error_has_names(e, GATEWAY_ERROR_NO_SUCH_USER, GATEWAY_ERROR_NO_SUCH_KEY,
                                   GATEWAY_ERROR_NO_SUCH_PROVIDER)) {
                err("%s", e->message);
                return EXIT_NOT_FOUND;
        }
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_INVALID_ARGS, GATEWAY_ERROR_NAME_TAKEN)) {
                err("%s", e->message);
                return EXIT_USAGE;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY)) {
                err("club-gatewayd gave no answer: %s", e->message ?: "timed out.");
                return EXIT_FAIL;
        }
        if (e && e->message)
                err("%s", e->message);
        else
                err("The call failed: %s.", strerror(-r));
        return EXIT_FAIL;
}

/*
 * Call METHOD on the gateway with arguments appended by the caller (@m is made here, the
 * caller appends, then bus_call() sends). On failure the message is printed and the
 * process exits with the matching code.
 */
static sd_bus_message *method_new(sd_bus *bus, const char *method) {
        sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, GATEWAY_BUS_NAME, GATEWAY_BUS_PATH, GATEWAY_BUS_INTERFACE, method);
        if (r < 0) {
                err("Cannot make the %s call: %s.", method, strerror(-r));
                exit(EXIT_FAIL);
        }
        return m;
}

static sd_bus_message *bus_call(sd_bus *bus, sd_bus_message *m, const char *action) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_append(m, "t", UINT64_C(0));         /* the trailing flags */
        if (r >= 0)
                r = sd_bus_call(bus, m, arg_ask_password ? CALL_TIMEOUT_INTERACTIVE_USEC : CALL_TIMEOUT_USEC,
                                &e, &reply);
        sd_bus_message_unref(m);
        if (r < 0)
                exit(report_error(&e, r, action));
        return reply;
}

static _noreturn_ void bad_reply(int r) {
        err("Cannot read club-gatewayd's answer: %s.", strerror(-r));
        exit(EXIT_FAIL);
}

/* ---- records: a{sv} -> JSON ---------------------------------------------------------------- */

static json_object *read_record(sd_bus_message *m) {
        json_object *o = json_object_new_object();
        int r;

        if (!o)
                bad_reply(-ENOMEM);
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                bad_reply(r);
        for (;;) {
                const char *key, *contents;
                json_object *v = NULL;
                char type;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        bad_reply(r);
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, &type, &contents);
                if (r >= 0)
                        r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        bad_reply(r);
                if (streq(contents, "s")) {
                        const char *s;

                        r = sd_bus_message_read(m, "s", &s);
                        v = json_object_new_string(s);
                } else if (streq(contents, "b")) {
                        int b;

                        r = sd_bus_message_read(m, "b", &b);
                        v = json_object_new_boolean(b);
                } else if (streq(contents, "t")) {
                        uint64_t t;

                        r = sd_bus_message_read(m, "t", &t);
                        v = json_object_new_int64(t > INT64_MAX ? INT64_MAX : (int64_t) t);
                } else if (streq(contents, "x")) {
                        int64_t x;

                        r = sd_bus_message_read(m, "x", &x);
                        v = json_object_new_int64(x);
                } else if (streq(contents, "u")) {
                        uint32_t u;

                        r = sd_bus_message_read(m, "u", &u);
                        v = json_object_new_int64(u);
                } else if (streq(contents, "q")) {
                        uint16_t q;

                        r = sd_bus_message_read(m, "q", &q);
                        v = json_object_new_int64(q);
                } else if (streq(contents, "as")) {
                        _cleanup_(config_strv_freep) char **l = NULL;

                        r = sd_bus_message_read_strv(m, &l);
                        v = json_object_new_array();
                        for (size_t i = 0; r >= 0 && v && l && l[i]; i++)
                                json_object_array_add(v, json_object_new_string(l[i]));
                } else
                        r = sd_bus_message_skip(m, contents);   /* a newer gateway's field */
                if (r < 0)
                        bad_reply(r);
                if (v)
                        json_object_object_add(o, key, v);
                r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        bad_reply(r);
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                bad_reply(r);
        return o;
}

static json_object *read_records(sd_bus_message *m) {
        json_object *a = json_object_new_array();
        int r;

        if (!a)
                bad_reply(-ENOMEM);
        r = sd_bus_message_enter_container(m, 'a', "a{sv}");
        if (r < 0)
                bad_reply(r);
        while ((r = sd_bus_message_at_end(m, false)) == 0)
                json_object_array_add(a, read_record(m));
        if (r < 0)
                bad_reply(r);
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                bad_reply(r);
        return a;
}

static void print_json(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/*
 * Send a read call (@m, arguments appended) and take its answer: the records (a JSON array)
 * for @list, or the one record. With --json it is printed here and NULL returned: the
 * caller has nothing left to do.
 */
static json_object *read_call(sd_bus *bus, sd_bus_message *m, bool list) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *o;

        reply = bus_call(bus, m, GATEWAY_ACTION_READ);
        o = list ? read_records(reply) : read_record(reply);
        if (!arg_json)
                return o;
        print_json(o);
        json_object_put(o);
        return NULL;
}

static const char *field_s(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return "";
        return json_object_get_string(v);
}

static int64_t field_i(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return 0;
        return json_object_get_int64(v);
}

static bool field_b(json_object *o, const char *key) {
        json_object *v;

        return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* A list field joined with @sep into @buf; "-" when empty. */
static const char *field_list(json_object *o, const char *key, const char *sep, char *buf, size_t size) {
        json_object *v;
        size_t n, len = 0;

        buf[0] = 0;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_array) ||
            (n = json_object_array_length(v)) == 0)
                return "-";
        for (size_t i = 0; i < n && len < size; i++)
                len += snprintf(buf + len, size - len, "%s%s", i > 0 ? sep : "",
                                json_object_get_string(json_object_array_get_idx(v, i)));
        return buf;
}

/* µs since the epoch as "2026-11-22 07:30 UTC"; 0 as @zero. */
static const char *format_time(int64_t usec, const char *zero, char *buf, size_t size) {
        struct tm tm;
        time_t t;

        if (usec <= 0)
                return zero;
        t = (time_t) (usec / (int64_t) USEC_PER_SEC);
        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm) == 0)
                return "?";
        return buf;
}

/* µs since the epoch as "42s ago", "5min ago", "3h ago", "2d ago"; 0 as @zero. */
static const char *format_ago(int64_t usec, const char *zero, char *buf, size_t size) {
        int64_t now = (int64_t) now_usec(CLOCK_REALTIME), d;

        if (usec <= 0)
                return zero;
        d = (now > usec ? now - usec : 0) / (int64_t) USEC_PER_SEC;
        if (d < 120)
                snprintf(buf, size, "%" PRId64 "s ago", d);
        else if (d < 7200)
                snprintf(buf, size, "%" PRId64 "min ago", d / 60);
        else if (d < 2 * 86400)
                snprintf(buf, size, "%" PRId64 "h ago", d / 3600);
        else
                snprintf(buf, size, "%" PRId64 "d ago", d / 86400);
        return buf;
}

/* "a,b,c" as a NULL-terminated list (empty entries dropped); "" as an empty list. */
static char **split_commas(const char *s) {
        _cleanup_(config_strv_freep) char **l = NULL;
        size_t n = 0;

        l = new0(char *, strlen(s) / 2 + 2);
        if (!l)
                bad_reply(-ENOMEM);
        for (const char *p = s; *p;) {
                size_t k = strcspn(p, ",");

                if (k > 0) {
                        l[n] = strndup(p, k);
                        if (!l[n++])
                                bad_reply(-ENOMEM);
                }
                p += k + (p[k] == ',');
        }
        return TAKE_PTR(l);
}

static size_t strv_count(char **l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* ---- tables -------------------------------------------------------------------------------- */

#define TABLE_COLUMNS_MAX 10U

typedef struct Table {
        size_t n_columns;
        const char *headers[TABLE_COLUMNS_MAX];
        char **cells;                   /* rows × columns, malloc'd strings */
        size_t n_rows;
} Table;

static void table_add_row(Table *t, ...) {
        va_list ap;
        char **c;

        c = reallocarray(t->cells, (t->n_rows + 1) * t->n_columns, sizeof(char *));
        if (!c)
                bad_reply(-ENOMEM);
        t->cells = c;
        va_start(ap, t);
        for (size_t i = 0; i < t->n_columns; i++) {
                const char *s = va_arg(ap, const char *);

                c[t->n_rows * t->n_columns + i] = strdup(isempty(s) ? "-" : s);
                if (!c[t->n_rows * t->n_columns + i])
                        bad_reply(-ENOMEM);
        }
        va_end(ap);
        t->n_rows++;
}

/* Columns on a terminal: UTF-8 characters, not bytes ("…" is one). */
static size_t text_width(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                n += ((unsigned char) *s & 0xC0) != 0x80;
        return n;
}

static void table_print_row(const Table *t, const char *const *cells, const size_t *width) {
        for (size_t i = 0; i < t->n_columns; i++) {
                fputs(cells[i], stdout);
                if (i + 1 == t->n_columns)
                        break;
                for (size_t k = text_width(cells[i]); k < width[i] + 2; k++)
                        putchar(' ');
        }
        putchar('\n');
}

static void table_print(Table *t, const char *what) {
        size_t width[TABLE_COLUMNS_MAX] = {};

        for (size_t i = 0; i < t->n_columns; i++)
                width[i] = text_width(t->headers[i]);
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t i = 0; i < t->n_columns; i++)
                        width[i] = MAX(width[i], text_width(t->cells[r * t->n_columns + i]));
        if (arg_legend && t->n_rows > 0)
                table_print_row(t, t->headers, width);
        for (size_t r = 0; r < t->n_rows; r++)
                table_print_row(t, (const char *const *) t->cells + r * t->n_columns, width);
        if (arg_legend)
                printf("%s%zu %s%s.\n", t->n_rows > 0 ? "\n" : "", t->n_rows, what, t->n_rows == 1 ? "" : "s");
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
}

/* ---- users --------------------------------------------------------------------------------- */

static int append_tags(sd_bus_message *m) {
        return sd_bus_message_append_strv(m, arg_tags);
}

static int users_list(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *a = NULL;
        Table t = { .n_columns = 5, .headers = { "ID", "NAME", "ADMIN", "TAGS", "CREATED" } };

        a = read_call(bus, method_new(bus, "ListUsers"), true);
        if (!a)
                return EXIT_OK;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *u = json_object_array_get_idx(a, i);
                char id[24], tags[1024], created[64];

                snprintf(id, sizeof id, "%" PRId64, field_i(u, "id"));
                table_add_row(&t, id, field_s(u, "name"), field_b(u, "admin") ? "yes" : "no",
                              field_list(u, "tags", ",", tags, sizeof tags),
                              format_time(field_i(u, "created"), "-", created, sizeof created));
        }
        table_print(&t, "user");
        return EXIT_OK;
}

static int users_show(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *u = NULL;
        sd_bus_message *m = method_new(bus, "GetUser");
        char tags[1024], created[64];
        int r;

        r = sd_bus_message_append(m, "s", args[0]);
        if (r < 0)
                bad_reply(r);
        u = read_call(bus, m, false);
        if (!u)
                return EXIT_OK;
        printf("    User: %s\n"
               "      ID: %" PRId64 "\n"
               "   Admin: %s\n"
               "    Tags: %s\n"
               " Created: %s\n",
               field_s(u, "name"), field_i(u, "id"), field_b(u, "admin") ? "yes" : "no",
               field_list(u, "tags", ", ", tags, sizeof tags),
               format_time(field_i(u, "created"), "-", created, sizeof created));
        return EXIT_OK;
}

static int users_add(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus_message *m = method_new(bus, "CreateUser");
        uint64_t id;
        int r;

        r = sd_bus_message_append(m, "sb", args[0], (int) arg_admin);
        if (r >= 0)
                r = append_tags(m);
        if (r < 0)
                bad_reply(r);
        reply = bus_call(bus, m, GATEWAY_ACTION_MANAGE_USERS);
        r = sd_bus_message_read(reply, "t", &id);
        if (r < 0)
                bad_reply(r);
        if (arg_json)
                printf("{ \"id\": %" PRIu64 " }\n", id);
        else
                printf("Created user %s (id %" PRIu64 ")%s.\n", args[0], id, arg_admin ? ", an administrator" : "");
        return EXIT_OK;
}

static int users_remove(sd_bus *bus, char **args) {
        sd_bus_message *m = method_new(bus, "DeleteUser");
        int r;

        r = sd_bus_message_append(m, "s", args[0]);
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, GATEWAY_ACTION_MANAGE_USERS));
        if (!arg_json)
                printf("Deleted user %s with its keys and providers.\n", args[0]);
        return EXIT_OK;
}

static int users_set_tags(sd_bus *bus, char **args) {
        sd_bus_message *m = method_new(bus, "SetUserTags");
        int r;

        r = sd_bus_message_append(m, "s", args[0]);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, args + 1);
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, GATEWAY_ACTION_MANAGE_USERS));
        return EXIT_OK;
}

/* ---- keys ---------------------------------------------------------------------------------- */

/* --expires: a duration from now ("30d", "12h") or "never"; as µs since the epoch, 0 never. */
static uint64_t expires_arg(void) {
        uint64_t d;

        if (!arg_expires || streq(arg_expires, "never"))
                return 0;
        if (parse_sec(arg_expires, &d) < 0 || d == 0 || d == USEC_INFINITY || d > 100ULL * 365 * 86400 * USEC_PER_SEC) {
                err("Invalid --expires=%s: give a duration from now such as 30d, 12h or 90min, or 'never'.", arg_expires);
                exit(EXIT_USAGE);
        }
        return now_usec(CLOCK_REALTIME) + d;
}

static void print_secret(json_object *k, const char *secret, const char *kind) {
        char expires[64];

        if (arg_json) {
                json_object_object_add(k, "secret", json_object_new_string(secret));
                print_json(k);
                return;
        }
        printf("Created %s %" PRId64 " for user %s (expires: %s).\n\n"
               "    %s\n\n"
               "This is the only time the key is shown: copy it now. Listings show only its prefix (%s…).\n",
               kind, field_i(k, "id"), field_s(k, "user"),
               format_time(field_i(k, "expires"), "never", expires, sizeof expires),
               secret, field_s(k, "prefix"));
}

static const char *format_limit(int64_t v, char *buf, size_t size);

/* A key's own limits, those that differ from the gateway's default: "rpm 60, streams 2"; "" for none. */
static const char *format_key_limits(json_object *k, char *buf, size_t size) {
        static const struct {
                const char *field, *label;
        } l[] = {
                { "requests_per_minute", "rpm" },
                { "tokens_per_minute", "tpm" },
                { "concurrent_streams", "streams" },
        };
        size_t n = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(l); i++) {
                json_object *v;
                char num[32];

                /* An older gateway's record has none; -2 is the default. */
                if (!json_object_object_get_ex(k, l[i].field, &v) || json_object_get_int64(v) == -2)
                        continue;
                n += (size_t) snprintf(buf + n, n < size ? size - n : 0, "%s%s %s", n > 0 ? ", " : "", l[i].label,
                                       format_limit(json_object_get_int64(v), num, sizeof num));
        }
        return buf;
}

/* List…Keys for --user=NAME (everyone's without it): the records, or NULL once printed as JSON. */
static json_object *read_keys(sd_bus *bus, const char *method) {
        sd_bus_message *m = method_new(bus, method);
        int r;

        r = sd_bus_message_append(m, "s", strempty(arg_user));
        if (r < 0)
                bad_reply(r);
        return read_call(bus, m, true);
}

/* Create…Key (@m, its arguments appended): prints the new key and its secret, shown only now. */
static int create_key(sd_bus *bus, sd_bus_message *m, const char *what) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *k = NULL;
        const char *secret;
        int r;

        reply = bus_call(bus, m, GATEWAY_ACTION_MANAGE_KEYS);
        (void) sd_bus_message_sensitive(reply);         /* wiped when freed: it holds the secret */
        k = read_record(reply);
        r = sd_bus_message_read(reply, "s", &secret);
        if (r < 0)
                bad_reply(r);
        print_secret(k, secret, what);
        return EXIT_OK;
}

static int keys_list(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *a = NULL;
        Table t = { .n_columns = 9,
                    .headers = { "ID", "USER", "NAME", "PREFIX", "SCOPES", "STATE", "EXPIRES", "LAST-USED", "LIMITS" } };

        a = read_keys(bus, "ListApiKeys");
        if (!a)
                return EXIT_OK;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *k = json_object_array_get_idx(a, i);
                char id[24], prefix[32], scopes[64], expires[64], used[64], limits[128];

                snprintf(id, sizeof id, "%" PRId64, field_i(k, "id"));
                snprintf(prefix, sizeof prefix, "%s…", field_s(k, "prefix"));
                table_add_row(&t, id, field_s(k, "user"), field_s(k, "name"), prefix,
                              field_list(k, "scopes", ",", scopes, sizeof scopes), field_s(k, "state"),
                              format_time(field_i(k, "expires"), "never", expires, sizeof expires),
                              format_ago(field_i(k, "last_used"), "never", used, sizeof used),
                              format_key_limits(k, limits, sizeof limits));
        }
        table_print(&t, "API key");
        return EXIT_OK;
}

static int keys_create(sd_bus *bus, char **args) {
        _cleanup_(config_strv_freep) char **scopes = NULL;
        sd_bus_message *m;
        uint64_t expires;
        int r;

        if (!arg_user) {
                err("keys create needs --user=NAME: the user the key belongs to.");
                return EXIT_USAGE;
        }
        scopes = split_commas(arg_scope ?: "inference");
        expires = expires_arg();
        m = method_new(bus, "CreateApiKey");
        r = sd_bus_message_append(m, "ss", arg_user, strempty(arg_name));
        if (r >= 0)
                r = sd_bus_message_append_strv(m, scopes);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", expires);
        if (r < 0)
                bad_reply(r);
        return create_key(bus, m, "API key");
}

static uint64_t id_arg(const char *s, const char *what) {
        uint64_t id;

        if (parse_uint64(s, &id) < 0 || id == 0 || id > INT64_MAX) {
                err("Invalid %s ID '%s': expected a positive number, as the list shows it.", what, s);
                exit(EXIT_USAGE);
        }
        return id;
}

static int call_with_id(sd_bus *bus, const char *method, const char *what, const char *id, const char *action) {
        sd_bus_message *m = method_new(bus, method);
        int r;

        r = sd_bus_message_append(m, "t", id_arg(id, what));
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, action));
        return EXIT_OK;
}

static int keys_revoke(sd_bus *bus, char **args) {
        int r = call_with_id(bus, "RevokeApiKey", "API key", args[0], GATEWAY_ACTION_MANAGE_KEYS);

        if (!arg_json)
                printf("Revoked API key %s: it is refused from now on.\n", args[0]);
        return r;
}

static int enroll_list(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *a = NULL;
        Table t = { .n_columns = 9,
                    .headers = { "ID", "USER", "NAME", "PREFIX", "KIND", "USES", "STATE", "TAGS", "EXPIRES" } };

        a = read_keys(bus, "ListEnrollmentKeys");
        if (!a)
                return EXIT_OK;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *k = json_object_array_get_idx(a, i);
                char id[24], prefix[32], kind[32], uses[24], tags[1024], expires[64];

                snprintf(id, sizeof id, "%" PRId64, field_i(k, "id"));
                snprintf(prefix, sizeof prefix, "%s…", field_s(k, "prefix"));
                snprintf(kind, sizeof kind, "%s%s", field_b(k, "reusable") ? "reusable" : "one-time",
                         field_b(k, "ephemeral") ? ",ephemeral" : "");
                snprintf(uses, sizeof uses, "%" PRId64, field_i(k, "uses"));
                table_add_row(&t, id, field_s(k, "user"), field_s(k, "name"), prefix, kind, uses,
                              field_s(k, "state"), field_list(k, "tags", ",", tags, sizeof tags),
                              format_time(field_i(k, "expires"), "never", expires, sizeof expires));
        }
        table_print(&t, "enrollment key");
        return EXIT_OK;
}

static int enroll_create(sd_bus *bus, char **args) {
        sd_bus_message *m;
        uint64_t expires;
        int r;

        if (!arg_user) {
                err("enroll create needs --user=NAME: the user who will own the providers it enrolls.");
                return EXIT_USAGE;
        }
        expires = expires_arg();
        m = method_new(bus, "CreateEnrollmentKey");
        r = sd_bus_message_append(m, "ssbb", arg_user, strempty(arg_name), (int) arg_reusable, (int) arg_ephemeral);
        if (r >= 0)
                r = append_tags(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", expires);
        if (r < 0)
                bad_reply(r);
        return create_key(bus, m, "enrollment key");
}

static int enroll_revoke(sd_bus *bus, char **args) {
        int r = call_with_id(bus, "RevokeEnrollmentKey", "enrollment key", args[0], GATEWAY_ACTION_MANAGE_KEYS);

        if (!arg_json)
                printf("Revoked enrollment key %s; the providers it enrolled stay.\n", args[0]);
        return r;
}

/* ---- providers ----------------------------------------------------------------------------- */

static int providers_list(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *a = NULL;
        sd_bus_message *m = method_new(bus, "ListProviders");
        Table t = { .n_columns = 8,
                    .headers = { "ID", "OWNER", "NAME", "ADDRESS", "STATE", "ONLINE", "MODELS", "LAST-HEARTBEAT" } };
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_user)
                r = sd_bus_message_append(m, "{sv}", "owner", "s", arg_user);
        if (r >= 0 && arg_model)
                r = sd_bus_message_append(m, "{sv}", "model", "s", arg_model);
        if (r >= 0 && arg_capability)
                r = sd_bus_message_append(m, "{sv}", "capability", "s", arg_capability);
        if (r >= 0 && arg_online)
                r = sd_bus_message_append(m, "{sv}", "online", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                bad_reply(r);
        a = read_call(bus, m, true);
        if (!a)
                return EXIT_OK;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *p = json_object_array_get_idx(a, i);
                char id[24], state[48], models[256], hb[64];

                snprintf(id, sizeof id, "%" PRId64, field_i(p, "id"));
                snprintf(state, sizeof state, "%s%s", field_s(p, "state"), field_b(p, "draining") ? ",draining" : "");
                table_add_row(&t, id, field_s(p, "owner"), field_s(p, "name"), field_s(p, "mesh_address"), state,
                              field_b(p, "online") ? "yes" : "no", field_list(p, "models", ",", models, sizeof models),
                              format_ago(field_i(p, "last_heartbeat"), "never", hb, sizeof hb));
        }
        table_print(&t, "provider");
        return EXIT_OK;
}

static int providers_show(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *p = NULL;
        sd_bus_message *m = method_new(bus, "GetProvider");
        char models[4096], caps[2048], tags[1024], su[4096], st[1024], created[64], reg[64], hb[64], hb_ago[64];
        const char *mode;
        int r;

        r = sd_bus_message_append(m, "t", id_arg(args[0], "provider"));
        if (r < 0)
                bad_reply(r);
        p = read_call(bus, m, false);
        if (!p)
                return EXIT_OK;
        mode = field_s(p, "sharing");
        printf("      Provider: %s (id %" PRId64 ")\n"
               "         Owner: %s\n"
               "         State: %s%s%s\n"
               "        Online: %s\n"
               "  Mesh address: %s (agent port %" PRId64 ")\n"
               "    Public key: %s\n"
               "     Ephemeral: %s\n"
               "       Sharing: %s",
               field_s(p, "name"), field_i(p, "id"), field_s(p, "owner"), field_s(p, "state"),
               field_b(p, "admin_draining") ? ", drained by an administrator" : "",
               field_b(p, "agent_draining") ? ", draining (agent)" : "",
               field_b(p, "online") ? "yes" : "no", field_s(p, "mesh_address"), field_i(p, "agent_port"),
               field_s(p, "public_key"), field_b(p, "ephemeral") ? "yes" : "no", mode);
        if (streq(mode, "restricted"))
                printf(" (users: %s; user tags: %s)", field_list(p, "share_users", ", ", su, sizeof su),
                       field_list(p, "share_tags", ", ", st, sizeof st));
        printf("\n"
               "          Tags: %s\n"
               "        Models: %s\n"
               "  Capabilities: %s\n"
               "          Load: %" PRId64 " in flight, capacity %" PRId64 "\n"
               "Upstream health: %s\n"
               " Agent version: %s\n"
               "Last heartbeat: %s%s%s%s\n"
               "    Registered: %s\n"
               "       Created: %s\n",
               field_list(p, "tags", ", ", tags, sizeof tags),
               field_list(p, "models", ", ", models, sizeof models),
               field_list(p, "capabilities", ", ", caps, sizeof caps),
               field_i(p, "in_flight"), field_i(p, "capacity"),
               isempty(field_s(p, "upstream_health")) ? "-" : field_s(p, "upstream_health"),
               isempty(field_s(p, "version")) ? "-" : field_s(p, "version"),
               format_time(field_i(p, "last_heartbeat"), "never", hb, sizeof hb),
               field_i(p, "last_heartbeat") > 0 ? " (" : "",
               field_i(p, "last_heartbeat") > 0 ? format_ago(field_i(p, "last_heartbeat"), "", hb_ago, sizeof hb_ago) : "",
               field_i(p, "last_heartbeat") > 0 ? ")" : "",
               format_time(field_i(p, "registered"), "-", reg, sizeof reg),
               format_time(field_i(p, "created"), "-", created, sizeof created));
        return EXIT_OK;
}

/* SetProviderDraining/SetProviderEnabled on provider @id, then "Provider ID @done" unless --json. */
static int provider_set_bool(sd_bus *bus, const char *method, const char *id, bool value, const char *done) {
        sd_bus_message *m = method_new(bus, method);
        int r;

        r = sd_bus_message_append(m, "tb", id_arg(id, "provider"), (int) value);
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, GATEWAY_ACTION_MANAGE_PROVIDERS));
        if (!arg_json)
                printf("Provider %s %s\n", id, done);
        return EXIT_OK;
}

static int providers_drain(sd_bus *bus, char **args) {
        return provider_set_bool(bus, "SetProviderDraining", args[0], true,
                                 "is draining: it gets no new requests; requests in flight finish.");
}

static int providers_undrain(sd_bus *bus, char **args) {
        return provider_set_bool(bus, "SetProviderDraining", args[0], false,
                                 "takes requests again (when online).");
}

static int providers_disable(sd_bus *bus, char **args) {
        return provider_set_bool(bus, "SetProviderEnabled", args[0], false,
                                 "is disabled: it gets no requests until enabled again.");
}

static int providers_enable(sd_bus *bus, char **args) {
        return provider_set_bool(bus, "SetProviderEnabled", args[0], true,
                                 "is enabled: it is online again after its next heartbeat.");
}

static int providers_remove(sd_bus *bus, char **args) {
        call_with_id(bus, "DeleteProvider", "provider", args[0], GATEWAY_ACTION_MANAGE_PROVIDERS);
        if (!arg_json)
                printf("Deleted provider %s; its WireGuard peer is gone from the hub.\n", args[0]);
        return EXIT_OK;
}

static int providers_share(sd_bus *bus, char **args) {
        _cleanup_(config_strv_freep) char **users = NULL, **tags = NULL;
        sd_bus_message *m;
        const char *mode = arg_share_mode;
        int r;

        if (arg_share_users || arg_share_tags) {
                if (mode) {
                        err("--users= and --tags= name whom to share with; they do not go with --%s.", mode);
                        return EXIT_USAGE;
                }
                mode = "restricted";
                users = split_commas(strempty(arg_share_users));
                tags = split_commas(strempty(arg_share_tags));
                if (strv_count(users) > SHARE_USERS_MAX || strv_count(tags) > TAGS_MAX) {
                        err("At most %u users and %u tags.", SHARE_USERS_MAX, TAGS_MAX);
                        return EXIT_USAGE;
                }
        }
        if (!mode) {
                err("providers share needs --everyone, --private, or --users=A,B and/or --tags=X,Y.");
                return EXIT_USAGE;
        }
        m = method_new(bus, "SetProviderSharing");
        r = sd_bus_message_append(m, "ts", id_arg(args[0], "provider"), mode);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, users);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, tags);
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, GATEWAY_ACTION_MANAGE_PROVIDERS));
        return EXIT_OK;
}

static int providers_set_tags(sd_bus *bus, char **args) {
        sd_bus_message *m = method_new(bus, "SetProviderTags");
        int r;

        r = sd_bus_message_append(m, "t", id_arg(args[0], "provider"));
        if (r >= 0)
                r = sd_bus_message_append_strv(m, args + 1);
        if (r < 0)
                bad_reply(r);
        sd_bus_message_unref(bus_call(bus, m, GATEWAY_ACTION_MANAGE_PROVIDERS));
        return EXIT_OK;
}

static int status(sd_bus *bus, char **args) {
        static const char *const props[] = { "Version", "GatewayAddress", "MeshPrefix", "HubPublicKey" };
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                bad_reply(-ENOMEM);
        for (size_t i = 0; i < ELEMENTSOF(props); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *v = NULL;
                int r;

                r = sd_bus_get_property_string(bus, GATEWAY_BUS_NAME, GATEWAY_BUS_PATH, GATEWAY_BUS_INTERFACE,
                                               props[i], &e, &v);
                if (r < 0)
                        exit(report_error(&e, r, "(none: properties need no privilege)"));
                json_object_object_add(o, props[i], json_object_new_string(v));
        }
        if (arg_json)
                print_json(o);
        else
                printf("        Gateway: club-gatewayd %s\n"
                       "   Mesh address: %s (prefix %s)\n"
                       " Hub public key: %s\n",
                       field_s(o, "Version"), field_s(o, "GatewayAddress"), field_s(o, "MeshPrefix"),
                       field_s(o, "HubPublicKey"));
        return EXIT_OK;
}

/* ---- usage and limits ---------------------------------------------------------------------- */

/* The API key an argument names: its ID, or its prefix ("ic-abcdefgh", with or without "ic-"). */
static uint64_t key_arg(sd_bus *bus, const char *s) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *a = NULL;
        char want[32];
        sd_bus_message *m;
        uint64_t id = 0;
        int r;

        if (parse_uint64(s, &id) >= 0 && id > 0 && id <= INT64_MAX)
                return id;
        snprintf(want, sizeof want, "ic-%s", startswith(s, "ic-") ?: s);
        if (strlen(want) != 11 || strpbrk(want, "…")) {
                err("Invalid API key '%s': give its ID or its prefix (ic- and 8 characters), as 'keys list' shows them.", s);
                exit(EXIT_USAGE);
        }
        m = method_new(bus, "ListApiKeys");
        r = sd_bus_message_append(m, "s", "");
        if (r < 0)
                bad_reply(r);
        reply = bus_call(bus, m, GATEWAY_ACTION_READ);
        a = read_records(reply);
        id = 0;
        for (size_t i = 0; a && i < json_object_array_length(a); i++) {
                json_object *k = json_object_array_get_idx(a, i);

                if (!streq(field_s(k, "prefix"), want))
                        continue;
                if (id != 0) {
                        err("More than one API key has the prefix %s: give its ID.", want);
                        exit(EXIT_USAGE);
                }
                id = (uint64_t) field_i(k, "id");
        }
        if (id == 0) {
                err("No API key with the prefix %s.", want);
                exit(EXIT_NOT_FOUND);
        }
        return id;
}

/* --rpm/--tpm/--streams: N, "unlimited" (-1) or "default" (the gateway's [Limits]). */
static int append_limit(sd_bus_message *m, const char *key, const char *value) {
        uint64_t v;

        if (!value)
                return 0;
        if (streq(value, "default"))
                return sd_bus_message_append(m, "{sv}", key, "s", "default");
        if (streq(value, "unlimited"))
                return sd_bus_message_append(m, "{sv}", key, "x", (int64_t) -1);
        if (parse_uint64(value, &v) < 0 || v > 1000000000000ULL) {
                err("Invalid limit '%s': give a number (0 refuses every request), 'unlimited' or 'default'.", value);
                exit(EXIT_USAGE);
        }
        return sd_bus_message_append(m, "{sv}", key, "x", (int64_t) v);
}

static const char *format_limit(int64_t v, char *buf, size_t size) {
        if (v == -1)
                return "unlimited";
        if (v == -2)
                return "default";
        snprintf(buf, size, "%" PRId64, v);
        return buf;
}

static int keys_set_limits(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *l = NULL;
        char a[32], b[32], c[32];
        sd_bus_message *m;
        uint64_t id;
        int r;

        if (!arg_rpm && !arg_tpm && !arg_streams) {
                err("keys set-limits needs at least one of --rpm=, --tpm= and --streams=.");
                return EXIT_USAGE;
        }
        id = key_arg(bus, args[0]);
        m = method_new(bus, "SetApiKeyLimits");
        r = sd_bus_message_append(m, "t", id);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_limit(m, "requests_per_minute", arg_rpm);
        if (r >= 0)
                r = append_limit(m, "tokens_per_minute", arg_tpm);
        if (r >= 0)
                r = append_limit(m, "concurrent_streams", arg_streams);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                bad_reply(r);
        reply = bus_call(bus, m, GATEWAY_ACTION_MANAGE_KEYS);
        l = read_record(reply);
        if (arg_json) {
                json_object_object_add(l, "id", json_object_new_int64((int64_t) id));
                print_json(l);
                return EXIT_OK;
        }
        printf("API key %" PRIu64 ": %s requests/min, %s tokens/min, %s concurrent streams.\n", id,
               format_limit(field_i(l, "requests_per_minute"), a, sizeof a),
               format_limit(field_i(l, "tokens_per_minute"), b, sizeof b),
               format_limit(field_i(l, "concurrent_streams"), c, sizeof c));
        return EXIT_OK;
}

/* --since/--until: a duration ago ("24h", "7d"), "@SECONDS" since the epoch, or "now"; µs. */
static uint64_t time_arg(const char *s, const char *what) {
        uint64_t v, now = now_usec(CLOCK_REALTIME);

        if (!s)
                return 0;
        if (streq(s, "now"))
                return now;
        if (s[0] == '@') {
                if (parse_uint64(s + 1, &v) >= 0 && v <= INT64_MAX / USEC_PER_SEC)
                        return v * USEC_PER_SEC;
        } else if (parse_sec(s, &v) >= 0 && v != USEC_INFINITY)
                return now > v ? now - v : 1;
        err("Invalid --%s=%s: give a time ago such as 24h or 7d, @SECONDS since the epoch, or 'now'.", what, s);
        exit(EXIT_USAGE);
}

static int usage(sd_bus *bus, char **args) {
        _cleanup_(json_object_putp) json_object *a = NULL;
        sd_bus_message *m = method_new(bus, "GetUsage");
        const char *by = arg_by ?: "key";
        uint64_t provider = arg_provider ? id_arg(arg_provider, "provider") : 0;
        Table t = { .n_columns = 9,
                    .headers = { "KEY", "REQUESTS", "OK", "FAILED", "TRUNCATED", "CANCELLED", "PROMPT-TOKENS",
                                 "COMPLETION-TOKENS", "AVG-TTFT" } };
        int r;

        if (!streq(by, "key") && !streq(by, "provider") && !streq(by, "model") && !streq(by, "user")) {
                err("Invalid --by=%s: give key, provider, model or user.", by);
                return EXIT_USAGE;
        }
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "group_by", "s", by);
        if (r >= 0 && arg_user)
                r = sd_bus_message_append(m, "{sv}", "user", "s", arg_user);
        if (r >= 0 && arg_key)
                r = sd_bus_message_append(m, "{sv}", "key", "s", arg_key);
        if (r >= 0 && provider > 0)
                r = sd_bus_message_append(m, "{sv}", "provider", "t", provider);
        if (r >= 0 && arg_model)
                r = sd_bus_message_append(m, "{sv}", "model", "s", arg_model);
        if (r >= 0 && arg_since)
                r = sd_bus_message_append(m, "{sv}", "since", "t", time_arg(arg_since, "since"));
        if (r >= 0 && arg_until)
                r = sd_bus_message_append(m, "{sv}", "until", "t", time_arg(arg_until, "until"));
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                bad_reply(r);
        a = read_call(bus, m, true);
        if (!a)
                return EXIT_OK;
        t.headers[0] = streq(by, "key") ? "KEY" : streq(by, "provider") ? "PROVIDER" : streq(by, "model") ? "MODEL" : "USER";
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *u = json_object_array_get_idx(a, i);
                char name[300], n[7][24], ttft[32];

                if (streq(by, "model") || field_i(u, "id") == 0)
                        snprintf(name, sizeof name, "%s", isempty(field_s(u, "name")) ? "-" : field_s(u, "name"));
                else
                        snprintf(name, sizeof name, "%s (%" PRId64 ")", isempty(field_s(u, "name")) ? "deleted" : field_s(u, "name"),
                                 field_i(u, "id"));
                snprintf(n[0], sizeof n[0], "%" PRId64, field_i(u, "requests"));
                snprintf(n[1], sizeof n[1], "%" PRId64, field_i(u, "ok"));
                snprintf(n[2], sizeof n[2], "%" PRId64, field_i(u, "failed"));
                snprintf(n[3], sizeof n[3], "%" PRId64, field_i(u, "truncated"));
                snprintf(n[4], sizeof n[4], "%" PRId64, field_i(u, "cancelled"));
                snprintf(n[5], sizeof n[5], "%" PRId64, field_i(u, "prompt_tokens"));
                snprintf(n[6], sizeof n[6], "%" PRId64, field_i(u, "completion_tokens"));
                snprintf(ttft, sizeof ttft, "%" PRId64 "ms", field_i(u, "time_to_first_token_usec") / 1000);
                table_add_row(&t, name, n[0], n[1], n[2], n[3], n[4], n[5], n[6], ttft);
        }
        table_print(&t, "group");
        return EXIT_OK;
}

/* ---- the command line ---------------------------------------------------------------------- */

typedef struct Verb {
        const char *noun, *verb;
        unsigned min_args, max_args;    /* after the verb */
        unsigned options;               /* OPT_* it accepts */
        int (*run)(sd_bus *bus, char **args);
} Verb;

static const Verb verbs[] = {
        { "users", "list", 0, 0, 0, users_list },
        { "users", "show", 1, 1, 0, users_show },
        { "users", "add", 1, 1, OPT_ADMIN | OPT_TAG, users_add },
        { "users", "remove", 1, 1, 0, users_remove },
        { "users", "set-tags", 1, 1 + TAGS_MAX, 0, users_set_tags },
        { "keys", "list", 0, 0, OPT_USER, keys_list },
        { "keys", "create", 0, 0, OPT_USER | OPT_SCOPE | OPT_NAME | OPT_EXPIRES, keys_create },
        { "keys", "revoke", 1, 1, 0, keys_revoke },
        { "keys", "set-limits", 1, 1, OPT_LIMITS, keys_set_limits },
        { "enroll", "list", 0, 0, OPT_USER, enroll_list },
        { "enroll", "create", 0, 0, OPT_USER | OPT_NAME | OPT_EXPIRES | OPT_REUSABLE | OPT_EPHEMERAL | OPT_TAG,
          enroll_create },
        { "enroll", "revoke", 1, 1, 0, enroll_revoke },
        { "providers", "list", 0, 0, OPT_USER | OPT_MODEL | OPT_CAPABILITY | OPT_ONLINE, providers_list },
        { "providers", "show", 1, 1, 0, providers_show },
        { "providers", "drain", 1, 1, 0, providers_drain },
        { "providers", "undrain", 1, 1, 0, providers_undrain },
        { "providers", "disable", 1, 1, 0, providers_disable },
        { "providers", "enable", 1, 1, 0, providers_enable },
        { "providers", "remove", 1, 1, 0, providers_remove },
        { "providers", "share", 1, 1, OPT_SHARE, providers_share },
        { "providers", "set-tags", 1, 1 + TAGS_MAX, 0, providers_set_tags },
        { "usage", NULL, 0, 0, OPT_USER | OPT_MODEL | OPT_USAGE, usage },
        { "status", NULL, 0, 0, 0, status },
};

static void help(void) {
        printf("Usage: club-gatewayctl [OPTIONS] COMMAND …\n\n"
               "Administer the club gateway (club-gatewayd) over D-Bus.\n\n"
               "Users:\n"
               "  users list                          every user\n"
               "  users show NAME\n"
               "  users add NAME [--admin] [--tag=T]…\n"
               "  users remove NAME                   with its keys and providers\n"
               "  users set-tags NAME [TAG…]          replace the user's tags\n"
               "API keys (the secret is shown once, when created):\n"
               "  keys list [--user=U]\n"
               "  keys create --user=U [--scope=inference,agent] [--name=N] [--expires=30d]\n"
               "  keys revoke ID\n"
               "  keys set-limits ID|PREFIX [--rpm=N] [--tpm=N] [--streams=N]\n"
               "                                      N, 'unlimited' or 'default'; 0 refuses all\n"
               "Enrollment keys (for agents to register without a person's API key):\n"
               "  enroll list [--user=U]\n"
               "  enroll create --user=U [--reusable] [--ephemeral] [--tag=T]… [--name=N] [--expires=7d]\n"
               "  enroll revoke ID\n"
               "Providers:\n"
               "  providers list [--user=U] [--model=M] [--capability=C] [--online]\n"
               "  providers show ID\n"
               "  providers drain|undrain ID          stop or resume sending it requests\n"
               "  providers disable|enable ID\n"
               "  providers remove ID                 delete it; its tunnel stops at once\n"
               "  providers share ID --everyone|--private|[--users=A,B] [--tags=X,Y]\n"
               "  providers set-tags ID [TAG…]\n"
               "Usage of the OpenAI API:\n"
               "  usage [--user=U] [--key=PREFIX] [--provider=ID] [--model=M] [--since=7d] [--until=1h]\n"
               "        [--by=key|provider|model|user]   totals; times ago, @SECONDS or 'now'\n"
               "  status                              the gateway's version and mesh\n\n"
               "Options:\n"
               "      --json              print JSON (for scripts)\n"
               "      --no-legend         tables without header and footer\n"
               "      --no-ask-password   never ask for authentication (polkit)\n"
               "  -h, --help              show this help\n"
               "      --version           show the version\n\n"
               "Exit status: 0 done, 1 failed, 2 bad arguments, 3 no such user, key or provider,\n"
               "4 not permitted, 5 club-gatewayd is not running.\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_JSON = 0x100, ARG_NO_LEGEND, ARG_NO_ASK_PASSWORD, ARG_VERSION, ARG_USER, ARG_ADMIN, ARG_TAG,
                ARG_SCOPE, ARG_NAME, ARG_EXPIRES, ARG_REUSABLE, ARG_EPHEMERAL, ARG_MODEL, ARG_CAPABILITY,
                ARG_ONLINE, ARG_EVERYONE, ARG_PRIVATE, ARG_USERS, ARG_TAGS, ARG_KEY, ARG_PROVIDER, ARG_SINCE,
                ARG_UNTIL, ARG_BY, ARG_RPM, ARG_TPM, ARG_STREAMS,
        };
        static const struct option options[] = {
                { "json", no_argument, NULL, ARG_JSON },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "user", required_argument, NULL, ARG_USER },
                { "admin", no_argument, NULL, ARG_ADMIN },
                { "tag", required_argument, NULL, ARG_TAG },
                { "scope", required_argument, NULL, ARG_SCOPE },
                { "name", required_argument, NULL, ARG_NAME },
                { "expires", required_argument, NULL, ARG_EXPIRES },
                { "reusable", no_argument, NULL, ARG_REUSABLE },
                { "ephemeral", no_argument, NULL, ARG_EPHEMERAL },
                { "model", required_argument, NULL, ARG_MODEL },
                { "capability", required_argument, NULL, ARG_CAPABILITY },
                { "online", no_argument, NULL, ARG_ONLINE },
                { "everyone", no_argument, NULL, ARG_EVERYONE },
                { "private", no_argument, NULL, ARG_PRIVATE },
                { "users", required_argument, NULL, ARG_USERS },
                { "tags", required_argument, NULL, ARG_TAGS },
                { "key", required_argument, NULL, ARG_KEY },
                { "provider", required_argument, NULL, ARG_PROVIDER },
                { "since", required_argument, NULL, ARG_SINCE },
                { "until", required_argument, NULL, ARG_UNTIL },
                { "by", required_argument, NULL, ARG_BY },
                { "rpm", required_argument, NULL, ARG_RPM },
                { "tpm", required_argument, NULL, ARG_TPM },
                { "streams", required_argument, NULL, ARG_STREAMS },
                {}
        };
        int c;

        /* Interactive authentication only where a person can answer. */
        arg_ask_password = isatty(STDIN_FILENO);
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("club-gatewayctl %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_USER:
                        arg_user = optarg;
                        arg_given |= OPT_USER;
                        break;
                case ARG_ADMIN:
                        arg_admin = true;
                        arg_given |= OPT_ADMIN;
                        break;
                case ARG_TAG:
                        if (arg_n_tags >= TAGS_MAX) {
                                err("At most %u --tag= options.", TAGS_MAX);
                                return -EINVAL;
                        }
                        arg_tags[arg_n_tags++] = optarg;
                        arg_given |= OPT_TAG;
                        break;
                case ARG_SCOPE:
                        arg_scope = optarg;
                        arg_given |= OPT_SCOPE;
                        break;
                case ARG_NAME:
                        arg_name = optarg;
                        arg_given |= OPT_NAME;
                        break;
                case ARG_EXPIRES:
                        arg_expires = optarg;
                        arg_given |= OPT_EXPIRES;
                        break;
                case ARG_REUSABLE:
                        arg_reusable = true;
                        arg_given |= OPT_REUSABLE;
                        break;
                case ARG_EPHEMERAL:
                        arg_ephemeral = true;
                        arg_given |= OPT_EPHEMERAL;
                        break;
                case ARG_MODEL:
                        arg_model = optarg;
                        arg_given |= OPT_MODEL;
                        break;
                case ARG_CAPABILITY:
                        arg_capability = optarg;
                        arg_given |= OPT_CAPABILITY;
                        break;
                case ARG_ONLINE:
                        arg_online = true;
                        arg_given |= OPT_ONLINE;
                        break;
                case ARG_EVERYONE:
                case ARG_PRIVATE:
                        if (arg_share_mode) {
                                err("Give only one of --everyone and --private.");
                                return -EINVAL;
                        }
                        arg_share_mode = c == ARG_EVERYONE ? "everyone" : "private";
                        arg_given |= OPT_SHARE;
                        break;
                case ARG_USERS:
                        arg_share_users = optarg;
                        arg_given |= OPT_SHARE;
                        break;
                case ARG_TAGS:
                        arg_share_tags = optarg;
                        arg_given |= OPT_SHARE;
                        break;
                case ARG_KEY:
                case ARG_PROVIDER:
                case ARG_SINCE:
                case ARG_UNTIL:
                case ARG_BY:
                        *(c == ARG_KEY ? &arg_key : c == ARG_PROVIDER ? &arg_provider : c == ARG_SINCE ? &arg_since :
                          c == ARG_UNTIL ? &arg_until : &arg_by) = optarg;
                        arg_given |= OPT_USAGE;
                        break;
                case ARG_RPM:
                case ARG_TPM:
                case ARG_STREAMS:
                        *(c == ARG_RPM ? &arg_rpm : c == ARG_TPM ? &arg_tpm : &arg_streams) = optarg;
                        arg_given |= OPT_LIMITS;
                        break;
                default:
                        return -EINVAL;
                }
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *v = NULL;
        char **args;
        size_t n_args;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_OK;

        args = argv + optind;
        n_args = (size_t) (argc - optind);
        if (n_args == 0) {
                err("Missing command. See club-gatewayctl --help.");
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (!streq(verbs[i].noun, args[0]))
                        continue;
                if (!verbs[i].verb || (n_args > 1 && streq(verbs[i].verb, args[1]))) {
                        v = &verbs[i];
                        break;
                }
        }
        if (!v) {
                bool noun = false;

                for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                        noun = noun || streq(verbs[i].noun, args[0]);
                if (noun && n_args > 1)
                        err("Unknown command '%s %s'. See club-gatewayctl --help.", args[0], args[1]);
                else if (noun)
                        err("'%s' needs a command, e.g. '%s list'. See club-gatewayctl --help.", args[0], args[0]);
                else
                        err("Unknown command '%s'. See club-gatewayctl --help.", args[0]);
                return EXIT_USAGE;
        }
        args += v->verb ? 2 : 1;
        n_args -= v->verb ? 2 : 1;
        if (n_args < v->min_args || n_args > v->max_args) {
                err("'%s%s%s' takes %s%u argument%s. See club-gatewayctl --help.", v->noun, v->verb ? " " : "",
                    strempty(v->verb), v->min_args == v->max_args ? "" : "at least ", v->min_args,
                    v->min_args == 1 ? "" : "s");
                return EXIT_USAGE;
        }
        if (arg_given & ~v->options) {
                err("An option given is not used by '%s%s%s'. See club-gatewayctl --help.", v->noun,
                    v->verb ? " " : "", strempty(v->verb));
                return EXIT_USAGE;
        }

        bus = bus_connect();
        return v->run(bus, args);
}
