/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clubctl — what a person types to control clubd, the club agent on this machine. It talks
 * to clubd over the system bus (club.inference.Agent1, dbus/club.inference.Agent1.xml;
 * $DBUS_SYSTEM_BUS_ADDRESS is honoured) and never touches clubd's files. Who may change
 * what is polkit's decision inside clubd; clubctl only asks for a password when polkit
 * wants one and there is a terminal to ask on.
 *
 * Every command, its output, the --json schema and the exit statuses: docs/clubctl.md.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <systemd/sd-bus.h>

#include "config.h"
#include "bus-util.h"
#include "cleanup.h"
#include "json-util.h"
#include "log.h"
#include "parse-util.h"
#include "polkit.h"

#define AGENT_BUS_NAME  "club.inference.Agent1"
#define AGENT_PATH      "/club/inference/Agent1"
#define AGENT_INTERFACE "club.inference.Agent1"
#define AGENT_ERROR(e)  "club.inference.Agent1.Error." e

/* Register's flags argument (dbus/club.inference.Agent1.xml). */
#define REGISTER_FLAG_INSECURE UINT64_C(1)

/* Method call timeouts. clubd answers Register when the gateway has (at most about a minute,
 * the XML says); everything else at once. A password prompt adds polkit's own limit. */
#define CALL_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define REGISTER_TIMEOUT_USEC (120 * USEC_PER_SEC)

/* Keys are short ("ic-" + a few dozen characters); anything longer is the wrong file. */
#define KEY_SIZE_MAX 512U
/* More upstreams than clubd can be configured with (CLUBD_MAX_UPSTREAMS) is a broken answer. */
#define UPSTREAMS_MAX 1024U

#define PKTTYAGENT "/usr/bin/pkttyagent"
/* How long to wait for pkttyagent to register before calling anyway. */
#define PKTTYAGENT_READY_TIMEOUT_MSEC 10000

#ifndef CLUBCTL_RULES_EXAMPLE
#define CLUBCTL_RULES_EXAMPLE "/usr/share/club/examples/50-club-agent.rules.example"
#endif

/*
 * Exit statuses, for scripts (docs/clubctl.md). Stable: never renumber.
 */
typedef enum ExitStatus {
        EXIT_STATUS_OK = 0,
        EXIT_STATUS_FAILURE = 1,                /* anything not listed below */
        EXIT_STATUS_USAGE = 2,                  /* bad command line, or an argument clubd refused */
        EXIT_STATUS_NOT_RUNNING = 3,            /* clubd (or the system bus) cannot be reached */
        EXIT_STATUS_NOT_AUTHORIZED = 4,         /* polkit said no, or would have asked for a password */
        EXIT_STATUS_GATEWAY_REFUSED = 5,        /* the gateway answered no: key, name, rate limit */
        EXIT_STATUS_GATEWAY_UNREACHABLE = 6,    /* the gateway could not be reached or trusted */
        EXIT_STATUS_NOT_REGISTERED = 7,         /* this machine is not registered */
} ExitStatus;

/* Options that belong to one or a few commands; a command refuses the others. */
typedef enum VerbOption {
        OPTION_JSON = 1 << 0,
        OPTION_KEY = 1 << 1,
        OPTION_KEY_FILE = 1 << 2,
        OPTION_GATEWAY = 1 << 3,
        OPTION_NAME = 1 << 4,
        OPTION_INSECURE = 1 << 5,
        OPTION_YES = 1 << 6,
        OPTION_FOLLOW = 1 << 7,
        OPTION_LINES = 1 << 8,
} VerbOption;

static const char *const option_names[] = {
        "--json", "--key", "--key-file", "--gateway", "--name", "--insecure", "--yes", "--follow", "--lines",
};

static bool arg_json = false;
static bool arg_ask_password = true;
static bool arg_insecure = false;
static bool arg_yes = false;
static bool arg_follow = false;
static unsigned arg_lines = 0;
static char *arg_key = NULL;                    /* secret: wiped on exit */
static const char *arg_key_file = NULL;
static const char *arg_gateway = "";
static const char *arg_name = "";
static unsigned arg_options = 0;                /* VerbOption bits given */

typedef struct Verb {
        const char *name;
        unsigned options;                       /* VerbOption bits it accepts */
        const char *what;                       /* for messages: "drain clubd" */
        const char *action;                     /* polkit action, or NULL for reads */
        ExitStatus (*run)(const struct Verb *v);
        const char *method;                     /* verb_method(): the method to call… */
        const char *done;                       /* …and what to print when it succeeded */
} Verb;

/* ---- small helpers ------------------------------------------------------------------------- */

static char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **p = l; *p; p++)
                free(*p);
        return mfree(l);
}
CLUB_DEFINE_CLEANUP(char **, strv_free);

static size_t strv_length(char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

static bool colors_enabled(void) {
        static int cached = -1;
        const char *term;

        if (cached < 0) {
                term = getenv("TERM");
                cached = isatty(STDOUT_FILENO) && !getenv("NO_COLOR") && term && !streq(term, "dumb");
        }
        return cached;
}

#define ANSI_GREEN  "\033[0;32m"
#define ANSI_YELLOW "\033[0;33m"
#define ANSI_RED    "\033[0;31m"
#define ANSI_NORMAL "\033[0m"

static const char *color_for_state(const char *state) {
        if (!colors_enabled() || !state)
                return "";
        if (streq(state, "online"))
                return ANSI_GREEN;
        if (streq(state, "connecting") || streq(state, "draining"))
                return ANSI_YELLOW;
        if (streq(state, "offline") || streq(state, "error"))
                return ANSI_RED;
        return "";
}

static const char *color_off(const char *color) {
        return isempty(color) ? "" : ANSI_NORMAL;
}

/* Whether clubctl may have polkit ask the person for a password. */
static bool interactive(void) {
        return arg_ask_password && isatty(STDIN_FILENO);
}

static uint64_t call_timeout(uint64_t base) {
        return base + (interactive() ? POLKIT_INTERACTIVE_TIMEOUT_USEC : 0);
}

/* "just now", "12s ago", "3min 4s ago", "2h 5min ago", "3d 1h ago"; "never" for 0. */
static void format_age(uint64_t then_usec, uint64_t now, char *buf, size_t size) {
        uint64_t s;

        if (then_usec == 0) {
                snprintf(buf, size, "never");
                return;
        }
        s = then_usec < now ? (now - then_usec) / USEC_PER_SEC : 0;
        if (s == 0)
                snprintf(buf, size, "just now");
        else if (s < 60)
                snprintf(buf, size, "%" PRIu64 "s ago", s);
        else if (s < 3600)
                snprintf(buf, size, "%" PRIu64 "min %" PRIu64 "s ago", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRIu64 "h %" PRIu64 "min ago", s / 3600, s % 3600 / 60);
        else
                snprintf(buf, size, "%" PRIu64 "d %" PRIu64 "h ago", s / 86400, s % 86400 / 3600);
}

/* RFC 3339 in UTC, e.g. "2026-11-22T07:40:01Z". */
static int format_timestamp_utc(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return -EINVAL;
        return 0;
}

/* ---- reading the key without showing it ----------------------------------------------------- */

static struct termios saved_termios;
static volatile sig_atomic_t termios_saved = false;

static void restore_echo_and_raise(int sig) {
        if (termios_saved)
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
        signal(sig, SIG_DFL);
        raise(sig);
}

/* Reads the first line of @fd, at most KEY_SIZE_MAX bytes. When @fd is a terminal, echo is
 * off while the person types. Returns the trimmed key, or -E2BIG (too long), -ENODATA
 * (empty), -EINVAL (spaces or control characters inside), -errno. */
static int read_key_fd(int fd, char **ret) {
        char buf[KEY_SIZE_MAX + 1];
        size_t n = 0, start, end;
        bool tty = isatty(fd);
        int r = 0;

        if (tty) {
                struct termios t;

                if (tcgetattr(fd, &saved_termios) < 0)
                        return -errno;
                t = saved_termios;
                t.c_lflag &= ~(tcflag_t) (ECHO | ECHONL);
                /* Echo off before the prompt shows: whatever is typed after it stays hidden.
                 * A signal while it is off puts it back before it ends the program. */
                termios_saved = true;
                signal(SIGINT, restore_echo_and_raise);
                signal(SIGTERM, restore_echo_and_raise);
                signal(SIGHUP, restore_echo_and_raise);
                if (tcsetattr(fd, TCSAFLUSH, &t) < 0)
                        r = -errno;
                else
                        fputs("Key (input is hidden): ", stderr);
                fflush(stderr);
        }

        while (r >= 0) {
                ssize_t l = read(fd, buf + n, sizeof buf - n);

                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (l == 0)
                        break;
                n += (size_t) l;
                if (memchr(buf + n - l, '\n', (size_t) l))
                        break;          /* the first line is the key */
                if (n >= sizeof buf) {
                        r = -E2BIG;
                        break;
                }
        }

        if (tty) {
                (void) tcsetattr(fd, TCSAFLUSH, &saved_termios);
                termios_saved = false;
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                signal(SIGHUP, SIG_DFL);
                fputc('\n', stderr);
        }

        end = 0;
        if (r >= 0) {
                const char *nl = memchr(buf, '\n', n);

                end = nl ? (size_t) (nl - buf) : n;
                if (end > KEY_SIZE_MAX)
                        r = -E2BIG;
        }
        if (r >= 0) {
                start = 0;
                while (start < end && (buf[start] == ' ' || buf[start] == '\t' || buf[start] == '\r'))
                        start++;
                while (end > start && (buf[end - 1] == ' ' || buf[end - 1] == '\t' || buf[end - 1] == '\r'))
                        end--;
                if (start == end)
                        r = -ENODATA;
                for (size_t i = start; r >= 0 && i < end; i++)
                        if (buf[i] <= ' ' || buf[i] >= 0x7f)
                                r = -EINVAL;
        }
        if (r >= 0) {
                *ret = strndup(buf + start, end - start);
                if (!*ret)
                        r = -ENOMEM;
        }
        explicit_bzero(buf, sizeof buf);
        return r;
}

static ExitStatus acquire_key(char **ret) {
        _cleanup_(closep) int fd = -EBADF;
        const char *source;
        struct stat st;
        int r;

        if (arg_key && !streq(arg_key, "-")) {
                *ret = TAKE_PTR(arg_key);
                return EXIT_STATUS_OK;
        }

        if (arg_key_file) {
                source = arg_key_file;
                fd = open(arg_key_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0) {
                        log_error_errno(-errno, "Cannot read the key from %s: %m", arg_key_file);
                        return EXIT_STATUS_USAGE;
                }
                if (fstat(fd, &st) >= 0 && S_ISREG(st.st_mode) && (st.st_mode & 0077))
                        log_warning("Warning: %s is readable by other users; protect it with: chmod 600 %s",
                                    arg_key_file, arg_key_file);
                r = read_key_fd(fd, ret);
        } else {
                source = "standard input";
                r = read_key_fd(STDIN_FILENO, ret);
        }

        switch (r) {
        case 0:
                return EXIT_STATUS_OK;
        case -E2BIG:
                log_error("The key in %s is longer than %u characters; is it the right file?", source, KEY_SIZE_MAX);
                return EXIT_STATUS_USAGE;
        case -ENODATA:
                log_error("No key in %s.", source);
                return EXIT_STATUS_USAGE;
        case -EINVAL:
                log_error("The key in %s contains spaces or control characters; a key is one word, ic-… or ie-….", source);
                return EXIT_STATUS_USAGE;
        default:
                log_error_errno(r, "Cannot read the key from %s: %m", source);
                return EXIT_STATUS_FAILURE;
        }
}

/* ---- a polkit agent on this terminal ------------------------------------------------------------ */

/*
 * When polkit wants a password, it asks an authentication agent: one registered for the
 * calling process, else the one of the caller's login session (a desktop's). On a text console
 * or over SSH there is none, so (like systemctl) we start pkttyagent for our own process. Not
 * with --fallback: polkitd ignores a fallback agent when the caller has no logind session
 * (containers, su without pam_systemd), and a person who typed the command in a terminal is
 * best asked there anyway. Not for root (clubd authorizes root without polkit), and only when
 * we may ask at all.
 */
static pid_t polkit_agent_open(void) {
        int fds[2];
        pid_t pid, parent = getpid();
        struct pollfd p;

        if (!interactive() || geteuid() == 0 || access(PKTTYAGENT, X_OK) < 0)
                return 0;
        if (pipe2(fds, O_CLOEXEC) < 0) {
                log_debug_errno(-errno, "pipe2() for pkttyagent failed, not starting it: %m");
                return 0;
        }

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                log_debug_errno(-errno, "fork() for pkttyagent failed, not starting it: %m");
                safe_close(fds[0]);
                safe_close(fds[1]);
                return 0;
        }
        if (pid == 0) {
                char fd_arg[16], pid_arg[32];
                int notify = fcntl(fds[1], F_DUPFD, 3);         /* a copy without O_CLOEXEC */

                if (notify < 0)
                        _exit(127);
                snprintf(fd_arg, sizeof fd_arg, "%d", notify);
                snprintf(pid_arg, sizeof pid_arg, "%d", (int) parent);
                execl(PKTTYAGENT, PKTTYAGENT, "--notify-fd", fd_arg, "--process", pid_arg, (char *) NULL);
                _exit(127);
        }

        /* pkttyagent closes the notify fd once it is registered (or exits on failure). */
        safe_close(fds[1]);
        p = (struct pollfd) { .fd = fds[0], .events = POLLIN };
        while (poll(&p, 1, PKTTYAGENT_READY_TIMEOUT_MSEC) < 0 && errno == EINTR)
                ;
        safe_close(fds[0]);
        return pid;
}

static void polkit_agent_close(pid_t pid) {
        if (pid <= 0)
                return;
        (void) kill(pid, SIGTERM);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

/* ---- the bus ------------------------------------------------------------------------------------ */

static ExitStatus bus_connect(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = bus_open_system("clubctl", &bus);
        if (r < 0) {
                log_error_errno(r, "Cannot connect to the system bus: %m");
                log_error("clubctl talks to clubd over D-Bus; check that dbus is running: systemctl status dbus");
                return EXIT_STATUS_NOT_RUNNING;
        }
        r = sd_bus_set_allow_interactive_authorization(bus, interactive());
        if (r < 0) {
                log_error_errno(r, "Failed to set up the bus connection: %m");
                return EXIT_STATUS_FAILURE;
        }
        *ret = TAKE_PTR(bus);
        return EXIT_STATUS_OK;
}

static bool error_is_not_running(const sd_bus_error *e) {
        const char *n = e->name;

        return sd_bus_error_has_names(e,
                                      SD_BUS_ERROR_SERVICE_UNKNOWN,
                                      SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                      SD_BUS_ERROR_UNKNOWN_OBJECT,
                                      SD_BUS_ERROR_DISCONNECTED) ||
               /* activation failed: dbus-daemon's own, or systemd's (masked, failed, no unit) */
               startswith(n, "org.freedesktop.DBus.Error.Spawn.") ||
               startswith(n, "org.freedesktop.systemd1.");
}

static bool clubd_on_bus(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int has = 0;

        if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", NULL, &reply, "s", AGENT_BUS_NAME) < 0 ||
            sd_bus_message_read(reply, "b", &has) < 0)
                return true;    /* cannot tell: do not claim it is gone */
        return has;
}

static void log_not_running(const sd_bus_error *e) {
        log_error("clubd is not running. Start it with: sudo systemctl start clubd");
        if (e && e->message && !sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                log_error("(%s)", e->message);
}

static void log_authorization_hint(void) {
        log_error("Run the command as root (with sudo), or have an administrator let your user manage clubd:");
        log_error("copy %s to /etc/polkit-1/rules.d/50-club-agent.rules and add you to the group \"club\".",
                  CLUBCTL_RULES_EXAMPLE);
}

/* The gateway's error code at the end of a message: "… (name_in_use)". */
static bool message_has_code(const char *message, const char *code) {
        char suffix[80];

        if (!message)
                return false;
        snprintf(suffix, sizeof suffix, "(%s)", code);
        return endswith(message, suffix);
}

/*
 * Says why a call to clubd failed, in words a person can act on, and picks the exit status.
 * @v: the command; @gateway: the gateway URL when known, for messages; @e and @r: what
 * sd_bus_call() returned.
 */
static ExitStatus report_call_error(sd_bus *bus, const Verb *v, const char *gateway, const sd_bus_error *e, int r) {
        const char *msg;
        char at[512] = "";

        if (!sd_bus_error_is_set(e)) {
                if (r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE) {
                        log_error_errno(r, "Lost the connection to the system bus: %m");
                        return EXIT_STATUS_NOT_RUNNING;
                }
                log_error_errno(r, "Failed to %s: %m", v->what);
                return EXIT_STATUS_FAILURE;
        }

        msg = strempty(e->message);
        if (!isempty(gateway))
                snprintf(at, sizeof at, " at %s", gateway);

        if (error_is_not_running(e)) {
                log_not_running(e);
                return EXIT_STATUS_NOT_RUNNING;
        }
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_TIMEOUT)) {
                if (!clubd_on_bus(bus)) {
                        log_error("clubd stopped before it answered (%s).", msg);
                        log_error("Start it with: sudo systemctl start clubd; its log: clubctl logs");
                        return EXIT_STATUS_NOT_RUNNING;
                }
                log_error("clubd did not answer in time: %s", msg);
                log_error("Its log may say why: clubctl logs");
                return EXIT_STATUS_FAILURE;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED)) {
                if (v->action && strstr(msg, "polkit denied"))
                        log_error("Not authorized to %s: polkit does not allow %s to this user.", v->what, v->action);
                else    /* polkitd not running, or the bus policy */
                        log_error("Not authorized to %s: %s", v->what, msg);
                log_authorization_hint();
                return EXIT_STATUS_NOT_AUTHORIZED;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED)) {
                log_error("Authentication is required to %s (polkit action %s), and clubctl may not ask for a password (%s).",
                          v->what, strna(v->action),
                          arg_ask_password ? "standard input is not a terminal" : "--no-ask-password");
                log_authorization_hint();
                return EXIT_STATUS_NOT_AUTHORIZED;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_LIMITS_EXCEEDED)) {
                log_error("clubd is busy with other authorization checks; try again in a moment. (%s)", msg);
                return EXIT_STATUS_FAILURE;
        }
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_INVALID_ARGS)) {
                log_error("clubd refused the arguments: %s", msg);
                return EXIT_STATUS_USAGE;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("NotRegistered"))) {
                log_error("This machine is not registered, so there is nothing to %s.", v->name);
                log_error("Register it with: clubctl register --key-file FILE [--gateway URL]");
                return EXIT_STATUS_NOT_REGISTERED;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("Busy"))) {
                log_error("A registration is already running; wait for it to finish (clubctl status). (%s)", msg);
                return EXIT_STATUS_FAILURE;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("KeyRejected"))) {
                log_error("The gateway%s refused the key: %s", at, msg);
                if (message_has_code(msg, "insufficient_scope"))
                        log_error("The key is valid but may not register agents: create one with the agent scope on the gateway: club-gatewayctl keys create --scope agent");
                else
                        log_error("Check the key, or create one on the gateway with: club-gatewayctl keys create --scope agent");
                return EXIT_STATUS_GATEWAY_REFUSED;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("GatewayRefused"))) {
                log_error("The gateway%s refused the registration: %s", at, msg);
                if (message_has_code(msg, "name_in_use"))
                        log_error("Another machine of the key's owner uses this name: pick another with --name NAME.");
                else if (message_has_code(msg, "public_key_in_use"))
                        log_error("Try again: clubd makes a new key pair for every registration.");
                return EXIT_STATUS_GATEWAY_REFUSED;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("RateLimited"))) {
                log_error("The gateway%s is limiting registrations from this address: %s", at, msg);
                log_error("Wait a minute and try again.");
                return EXIT_STATUS_GATEWAY_REFUSED;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("GatewayUnavailable"))) {
                log_error("Cannot reach the gateway%s: %s", at, msg);
                log_error("Check the URL and this machine's network connection; if the gateway is down, try again later.");
                return EXIT_STATUS_GATEWAY_UNREACHABLE;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("CertificateInvalid"))) {
                log_error("The gateway%s did not present a valid TLS certificate: %s", at, msg);
                log_error("Check the URL (the host name must match the certificate) and this machine's clock; a private CA is set in clubd.conf (docs/clubd.conf.md).");
                return EXIT_STATUS_GATEWAY_UNREACHABLE;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("InsecureGateway"))) {
                log_error("%s", msg);
                log_error("The key would cross the network unencrypted. Use an https:// URL, or pass --insecure if the path to the gateway is trusted.");
                return EXIT_STATUS_USAGE;
        }
        if (sd_bus_error_has_name(e, AGENT_ERROR("InvalidResponse"))) {
                log_error("The gateway%s answered something clubd does not understand: %s", at, msg);
                log_error("Check that the URL points at a club gateway, and that clubd and the gateway are compatible versions.");
                return EXIT_STATUS_GATEWAY_UNREACHABLE;
        }
        if (sd_bus_error_has_names(e, AGENT_ERROR("WireGuardFailed"), AGENT_ERROR("StateWriteFailed"))) {
                log_error("Failed to %s: %s", v->what, msg);
                log_error("clubd's log says more: clubctl logs");
                return EXIT_STATUS_FAILURE;
        }

        log_error("Failed to %s: %s", v->what, msg);
        return EXIT_STATUS_FAILURE;
}

/* ---- reading clubd's state ------------------------------------------------------------------------ */

typedef struct UpstreamInfo {
        char *name;
        char *url;
        bool healthy;
} UpstreamInfo;

typedef struct UpstreamList {
        UpstreamInfo *items;
        size_t n;
} UpstreamList;

typedef struct AgentStatus {
        char *state;
        char *state_reason;
        int64_t provider_id;
        char *name;
        char *gateway_url;
        char *mesh_address;
        char **models;
        char **capabilities;
        uint32_t in_flight;
        uint64_t last_heartbeat;
        UpstreamList upstreams;
        char *version;
} AgentStatus;

static void agent_status_done(AgentStatus *s) {
        free(s->state);
        free(s->state_reason);
        free(s->name);
        free(s->gateway_url);
        free(s->mesh_address);
        strv_free(s->models);
        strv_free(s->capabilities);
        for (size_t i = 0; i < s->upstreams.n; i++) {
                free(s->upstreams.items[i].name);
                free(s->upstreams.items[i].url);
        }
        free(s->upstreams.items);
        free(s->version);
        *s = (AgentStatus) {};
}

static int read_string(sd_bus_message *m, void *p) {
        const char *s;
        int r;

        r = sd_bus_message_read(m, "v", "s", &s);
        if (r < 0)
                return r;
        return free_and_strdup(p, s);
}

static int read_int64(sd_bus_message *m, void *p) {
        return sd_bus_message_read(m, "v", "x", p);
}

static int read_uint64(sd_bus_message *m, void *p) {
        return sd_bus_message_read(m, "v", "t", p);
}

static int read_uint32(sd_bus_message *m, void *p) {
        return sd_bus_message_read(m, "v", "u", p);
}

static int read_strv(sd_bus_message *m, void *p) {
        char ***l = p;
        int r;

        r = sd_bus_message_enter_container(m, 'v', "as");
        if (r < 0)
                return r;
        *l = strv_free(*l);
        r = sd_bus_message_read_strv(m, l);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int read_upstreams(sd_bus_message *m, void *p) {
        UpstreamList *list = p;
        int r;

        r = sd_bus_message_enter_container(m, 'v', "a(ssb)");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "(ssb)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', "ssb")) > 0) {
                const char *name, *url;
                int healthy;
                UpstreamInfo *items;

                r = sd_bus_message_read(m, "ssb", &name, &url, &healthy);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                if (list->n >= UPSTREAMS_MAX)
                        continue;
                items = reallocarray(list->items, list->n + 1, sizeof *items);
                if (!items)
                        return -ENOMEM;
                list->items = items;
                items[list->n] = (UpstreamInfo) { .name = strdup(name), .url = strdup(url), .healthy = healthy };
                list->n++;
                if (!items[list->n - 1].name || !items[list->n - 1].url)
                        return -ENOMEM;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static const struct {
        const char *name;
        const char *signature;
        int (*read)(sd_bus_message *m, void *p);
        size_t offset;
} status_properties[] = {
        { "State",         "s",      read_string,    offsetof(AgentStatus, state) },
        { "StateReason",   "s",      read_string,    offsetof(AgentStatus, state_reason) },
        { "ProviderId",    "x",      read_int64,     offsetof(AgentStatus, provider_id) },
        { "Name",          "s",      read_string,    offsetof(AgentStatus, name) },
        { "GatewayURL",    "s",      read_string,    offsetof(AgentStatus, gateway_url) },
        { "MeshAddress",   "s",      read_string,    offsetof(AgentStatus, mesh_address) },
        { "Models",        "as",     read_strv,      offsetof(AgentStatus, models) },
        { "Capabilities",  "as",     read_strv,      offsetof(AgentStatus, capabilities) },
        { "InFlight",      "u",      read_uint32,    offsetof(AgentStatus, in_flight) },
        { "LastHeartbeat", "t",      read_uint64,    offsetof(AgentStatus, last_heartbeat) },
        { "Upstreams",     "a(ssb)", read_upstreams, offsetof(AgentStatus, upstreams) },
        { "Version",       "s",      read_string,    offsetof(AgentStatus, version) },
};

static int parse_properties(sd_bus_message *reply, AgentStatus *s) {
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *name, *contents;
                size_t i;

                r = sd_bus_message_read(reply, "s", &name);
                if (r < 0)
                        return r;
                for (i = 0; i < ELEMENTSOF(status_properties); i++)
                        if (streq(name, status_properties[i].name))
                                break;
                r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r < 0)
                        return r;
                if (i < ELEMENTSOF(status_properties) && streq_ptr(contents, status_properties[i].signature))
                        r = status_properties[i].read(reply, (uint8_t *) s + status_properties[i].offset);
                else {
                        /* A property from a newer clubd, or one whose type we do not know. */
                        log_debug("Ignoring property %s (type %s).", name, strna(contents));
                        r = sd_bus_message_skip(reply, "v");
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(reply);
}

/* Reads every property in one call (one consistent snapshot). Returns 0, a negative errno with
 * @error set when clubd or the bus answered with an error, or -EBADMSG when the answer is not
 * what the interface promises. */
static int agent_status_fetch(sd_bus *bus, AgentStatus *ret, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        AgentStatus s = {};
        int r;

        r = sd_bus_message_new_method_call(bus, &m, AGENT_BUS_NAME, AGENT_PATH,
                                           "org.freedesktop.DBus.Properties", "GetAll");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", AGENT_INTERFACE);
        if (r >= 0)
                r = sd_bus_call(bus, m, CALL_TIMEOUT_USEC, error, &reply);
        if (r < 0)
                return r;

        r = parse_properties(reply, &s);
        if (r >= 0 && !s.state)
                r = -EBADMSG;
        if (r < 0) {
                agent_status_done(&s);
                return r == -ENOMEM ? r : -EBADMSG;
        }
        *ret = s;
        return 0;
}

/* agent_status_fetch(), and on failure say why and pick the exit status. */
static ExitStatus agent_status_get(sd_bus *bus, const Verb *v, AgentStatus *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = agent_status_fetch(bus, ret, &error);
        if (r >= 0)
                return EXIT_STATUS_OK;
        if (sd_bus_error_is_set(&error))
                return report_call_error(bus, v, NULL, &error, r);
        if (r == -EBADMSG)
                log_error("clubd's answer could not be read: are clubd and clubctl the same version?");
        else
                log_error_errno(r, "Failed to %s: %m", v->what);
        return EXIT_STATUS_FAILURE;
}

static bool agent_status_registered(const AgentStatus *s) {
        return !streq(s->state, "unregistered");
}

/* ---- status, models ------------------------------------------------------------------------------- */

static int json_add_string_or_null(json_object *o, const char *key, const char *value) {
        return jobj_add_string(o, key, isempty(value) ? NULL : value);
}

static int json_strv(char *const *l, json_object **ret) {
        json_object *a = json_object_new_array();

        if (!a)
                return -ENOMEM;
        for (size_t i = 0; l && l[i]; i++) {
                json_object *s = json_object_new_string(l[i]);

                if (!s || json_object_array_add(a, s) < 0) {
                        json_object_put(s);
                        json_object_put(a);
                        return -ENOMEM;
                }
        }
        *ret = a;
        return 0;
}

static int json_print(json_object *o) {
        const char *s;

        /* Indented for a person, one line for a pipe. */
        s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_NOSLASHESCAPE |
                                              (isatty(STDOUT_FILENO) ? JSON_C_TO_STRING_PRETTY : JSON_C_TO_STRING_PLAIN));
        if (!s)
                return -ENOMEM;
        puts(s);
        return 0;
}

static int status_to_json(const AgentStatus *s, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *a = NULL, *ups;
        char ts[64];
        bool registered = agent_status_registered(s);
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        r = jobj_add_string(o, "state", s->state);
        if (r >= 0)
                r = json_add_string_or_null(o, "state_reason", s->state_reason);
        if (r >= 0)
                r = jobj_add_bool(o, "registered", registered);
        if (r >= 0)
                r = json_add_string_or_null(o, "name", s->name);
        if (r >= 0)
                r = s->provider_id > 0 ? jobj_add_int64(o, "provider_id", s->provider_id) : jobj_add(o, "provider_id", NULL);
        if (r >= 0)
                r = json_add_string_or_null(o, "mesh_address", s->mesh_address);
        if (r >= 0)
                r = json_add_string_or_null(o, "gateway_url", s->gateway_url);
        if (r >= 0) {
                if (s->last_heartbeat > 0 && format_timestamp_utc(s->last_heartbeat, ts, sizeof ts) >= 0) {
                        r = jobj_add_string(o, "last_heartbeat", ts);
                        if (r >= 0)
                                r = jobj_add_int64(o, "last_heartbeat_age_sec",
                                                   s->last_heartbeat < now ? (int64_t) ((now - s->last_heartbeat) / USEC_PER_SEC) : 0);
                } else {
                        r = jobj_add(o, "last_heartbeat", NULL);
                        if (r >= 0)
                                r = jobj_add(o, "last_heartbeat_age_sec", NULL);
                }
        }
        if (r >= 0)
                r = json_strv(s->models, &a);
        if (r >= 0)
                r = jobj_add(o, "models", TAKE_PTR(a));
        if (r >= 0)
                r = json_strv(s->capabilities, &a);
        if (r >= 0)
                r = jobj_add(o, "capabilities", TAKE_PTR(a));
        if (r < 0)
                return r;

        ups = json_object_new_array();
        if (!ups)
                return -ENOMEM;
        r = jobj_add(o, "upstreams", ups);
        for (size_t i = 0; r >= 0 && i < s->upstreams.n; i++) {
                json_object *u = json_object_new_object();

                if (!u)
                        return -ENOMEM;
                if (json_object_array_add(ups, u) < 0) {
                        json_object_put(u);
                        return -ENOMEM;
                }
                r = jobj_add_string(u, "name", s->upstreams.items[i].name);
                if (r >= 0)
                        r = jobj_add_string(u, "url", s->upstreams.items[i].url);
                if (r >= 0)
                        r = jobj_add_bool(u, "healthy", s->upstreams.items[i].healthy);
        }
        if (r >= 0)
                r = jobj_add_int64(o, "in_flight", s->in_flight);
        if (r >= 0)
                r = json_add_string_or_null(o, "version", s->version);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

#define LABEL_WIDTH 12

static void print_field(const char *label, const char *value) {
        printf("%*s: %s\n", LABEL_WIDTH, label, value);
}

/* One line per item, the first after the label; "none" if there is none. */
static void print_list(const char *label, char *const *l, const char *none) {
        if (strv_length(l) == 0) {
                print_field(label, none);
                return;
        }
        for (size_t i = 0; l[i]; i++)
                printf("%*s%s %s\n", LABEL_WIDTH, i == 0 ? label : "", i == 0 ? ":" : " ", l[i]);
}

static void print_status(const AgentStatus *s) {
        const char *color = color_for_state(s->state);
        char buf[256];
        size_t wname = 0, wurl = 0;

        printf("%*s: %s%s%s", LABEL_WIDTH, "State", color, s->state, color_off(color));
        if (!isempty(s->state_reason))
                printf(" (%s)", s->state_reason);
        putchar('\n');

        if (agent_status_registered(s)) {
                print_field("Name", strempty(s->name));
                snprintf(buf, sizeof buf, "%" PRIi64, s->provider_id);
                print_field("Provider", buf);
                print_field("Mesh address", strempty(s->mesh_address));
                print_field("Gateway", strempty(s->gateway_url));
                format_age(s->last_heartbeat, now_usec(CLOCK_REALTIME), buf, sizeof buf);
                print_field("Heartbeat", buf);
        } else
                printf("%*s  Register this machine with: clubctl register --key-file FILE [--gateway URL]\n",
                       LABEL_WIDTH, "");

        print_list("Models", s->models, "none (no upstream has listed a model yet)");
        if (strv_length(s->capabilities) > 0)
                print_list("Capabilities", s->capabilities, "none");

        for (size_t i = 0; i < s->upstreams.n; i++) {
                wname = MAX(wname, strlen(s->upstreams.items[i].name));
                wurl = MAX(wurl, strlen(s->upstreams.items[i].url));
        }
        if (s->upstreams.n == 0)
                print_field("Upstreams", "none configured");
        for (size_t i = 0; i < s->upstreams.n; i++) {
                const UpstreamInfo *u = &s->upstreams.items[i];
                const char *c = colors_enabled() ? (u->healthy ? ANSI_GREEN : ANSI_RED) : "";

                printf("%*s%s %-*s  %-*s  %s%s%s\n", LABEL_WIDTH, i == 0 ? "Upstreams" : "", i == 0 ? ":" : " ",
                       (int) wname, u->name, (int) wurl, u->url, c, u->healthy ? "healthy" : "unhealthy", color_off(c));
        }

        snprintf(buf, sizeof buf, "%" PRIu32, s->in_flight);
        print_field("In flight", buf);
        print_field("Version", strempty(s->version));
}

/* Connects, reads every property, disconnects. */
static ExitStatus agent_status_read(const Verb *v, AgentStatus *ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        ExitStatus st;

        st = bus_connect(&bus);
        if (st != EXIT_STATUS_OK)
                return st;
        return agent_status_get(bus, v, ret);
}

/* Prints @o, which a builder made with the result @r. */
static ExitStatus json_output(json_object *o, int r) {
        if (r >= 0)
                r = json_print(o);
        if (r < 0) {
                log_oom();
                return EXIT_STATUS_FAILURE;
        }
        return EXIT_STATUS_OK;
}

static int models_to_json(const AgentStatus *s, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *a = NULL;
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        r = json_strv(s->models, &a);
        if (r >= 0)
                r = jobj_add(o, "models", a);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

static ExitStatus verb_status(const Verb *v) {
        _cleanup_(agent_status_done) AgentStatus s = {};
        ExitStatus st;

        st = agent_status_read(v, &s);
        if (st != EXIT_STATUS_OK)
                return st;
        if (arg_json) {
                _cleanup_(json_object_putp) json_object *o = NULL;
                int r = status_to_json(&s, &o);

                st = json_output(o, r);
                if (st != EXIT_STATUS_OK)
                        return st;
        } else
                print_status(&s);

        return agent_status_registered(&s) ? EXIT_STATUS_OK : EXIT_STATUS_NOT_REGISTERED;
}

static ExitStatus verb_models(const Verb *v) {
        _cleanup_(agent_status_done) AgentStatus s = {};
        ExitStatus st;

        st = agent_status_read(v, &s);
        if (st != EXIT_STATUS_OK)
                return st;
        if (arg_json) {
                _cleanup_(json_object_putp) json_object *o = NULL;
                int r = models_to_json(&s, &o);

                return json_output(o, r);
        }

        for (size_t i = 0; s.models && s.models[i]; i++)
                puts(s.models[i]);
        if (strv_length(s.models) == 0)
                log_info("No models: no upstream has listed a model yet (clubctl status shows their health).");
        return EXIT_STATUS_OK;
}

/* ---- the methods ------------------------------------------------------------------------------------ */

/* Calls a method without arguments and results, with a polkit agent while it runs. */
static ExitStatus call_simple(sd_bus *bus, const Verb *v, const char *method) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        pid_t agent;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, AGENT_BUS_NAME, AGENT_PATH, AGENT_INTERFACE, method);
        if (r < 0) {
                log_error_errno(r, "Failed to build the request: %m");
                return EXIT_STATUS_FAILURE;
        }
        agent = polkit_agent_open();
        r = sd_bus_call(bus, m, call_timeout(CALL_TIMEOUT_USEC), &error, &reply);
        polkit_agent_close(agent);
        if (r < 0)
                return report_call_error(bus, v, NULL, &error, r);
        return EXIT_STATUS_OK;
}

/* drain, resume, reload: the method of the same purpose, and what it did. */
static ExitStatus verb_method(const Verb *v) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        ExitStatus st;

        st = bus_connect(&bus);
        if (st == EXIT_STATUS_OK)
                st = call_simple(bus, v, v->method);
        if (st == EXIT_STATUS_OK)
                fputs(v->done, stdout);
        return st;
}

/* Asks on the terminal; false unless the answer is yes. */
static bool ask_yes_no(const char *question) {
        char answer[16];

        fputs(question, stdout);
        fputs(" [y/N] ", stdout);
        fflush(stdout);
        if (!fgets(answer, sizeof answer, stdin))
                return false;
        answer[strcspn(answer, "\r\n")] = 0;
        return streq(answer, "y") || streq(answer, "Y") || streq(answer, "yes") || streq(answer, "YES");
}

static ExitStatus verb_unregister(const Verb *v) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(agent_status_done) AgentStatus s = {};
        char question[1024];
        ExitStatus st;

        if (!arg_yes && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))) {
                log_error("Refusing to unregister without confirmation: there is no terminal to ask on. Pass --yes.");
                return EXIT_STATUS_USAGE;
        }
        st = bus_connect(&bus);
        if (st != EXIT_STATUS_OK)
                return st;

        if (!arg_yes) {
                st = agent_status_get(bus, v, &s);
                if (st != EXIT_STATUS_OK)
                        return st;
                if (!agent_status_registered(&s)) {
                        log_error("This machine is not registered, so there is nothing to unregister.");
                        return EXIT_STATUS_NOT_REGISTERED;
                }
                snprintf(question, sizeof question,
                         "This machine (%s, %s) leaves the network of %s: clubd stops serving it and forgets its\n"
                         "registration and keys. Registering again needs a key. Unregister?",
                         strempty(s.name), strempty(s.mesh_address), strempty(s.gateway_url));
                if (!ask_yes_no(question)) {
                        printf("Nothing changed.\n");
                        return EXIT_STATUS_FAILURE;
                }
        }

        st = call_simple(bus, v, "Unregister");
        if (st == EXIT_STATUS_OK)
                printf("Unregistered: clubd left the network and forgot its keys.\n"
                       "The provider stays listed on the gateway until its administrator removes it.\n");
        return st;
}

static ExitStatus verb_register(const Verb *v) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(agent_status_done) AgentStatus before = {}, after = {};
        _cleanup_(erase_and_freep) char *key = NULL;
        const char *gateway, *mesh_address;
        int64_t provider_id;
        pid_t agent;
        ExitStatus st;
        int r;

        if (!arg_key && !arg_key_file) {
                log_error("register needs a key: --key-file FILE, --key - (read from standard input), or --key KEY.");
                log_error("Create one on the gateway with: club-gatewayctl keys create --scope agent");
                return EXIT_STATUS_USAGE;
        }
        /* clubd first, so that nobody types a key for a clubd that is not there; and the saved
         * gateway, to name it in messages when --gateway is not given. */
        st = bus_connect(&bus);
        if (st != EXIT_STATUS_OK)
                return st;
        st = agent_status_get(bus, v, &before);
        if (st != EXIT_STATUS_OK)
                return st;
        gateway = !isempty(arg_gateway) ? arg_gateway : before.gateway_url;

        st = acquire_key(&key);
        if (st != EXIT_STATUS_OK)
                return st;

        r = sd_bus_message_new_method_call(bus, &m, AGENT_BUS_NAME, AGENT_PATH, AGENT_INTERFACE, "Register");
        if (r >= 0)
                r = sd_bus_message_sensitive(m);        /* wiped when freed: it holds the key */
        if (r >= 0)
                r = sd_bus_message_append(m, "ssst", key, arg_gateway, arg_name,
                                          arg_insecure ? REGISTER_FLAG_INSECURE : UINT64_C(0));
        key = erase_and_free(key);
        if (r < 0) {
                log_error_errno(r, "Failed to build the request: %m");
                return EXIT_STATUS_FAILURE;
        }

        agent = polkit_agent_open();
        r = sd_bus_call(bus, m, call_timeout(REGISTER_TIMEOUT_USEC), &error, &reply);
        polkit_agent_close(agent);
        if (r < 0)
                return report_call_error(bus, v, gateway, &error, r);

        r = sd_bus_message_read(reply, "xs", &provider_id, &mesh_address);
        if (r < 0) {
                log_error_errno(r, "clubd registered but its answer could not be read (%m): see clubctl status.");
                return EXIT_STATUS_FAILURE;
        }

        /* Name and gateway as clubd settled them (defaults, saved values); best effort. */
        if (agent_status_fetch(bus, &after, NULL) < 0)
                after = (AgentStatus) {};
        printf("Registered as %s (provider %" PRIi64 ") with %s; mesh address %s.\n",
               strna(after.name), provider_id, strna(after.gateway_url ?: gateway), mesh_address);
        printf("clubd is connecting; it is online once the gateway answers its first heartbeat (clubctl status).\n");
        return EXIT_STATUS_OK;
}

static ExitStatus verb_logs(const Verb *v) {
        char lines[32];
        const char *argv[8];
        size_t n = 0;

        argv[n++] = "journalctl";
        argv[n++] = "--unit=clubd.service";
        if (arg_follow)
                argv[n++] = "--follow";
        if (arg_options & OPTION_LINES) {
                snprintf(lines, sizeof lines, "--lines=%u", arg_lines);
                argv[n++] = lines;
        }
        argv[n] = NULL;

        fflush(stdout);
        execvp(argv[0], (char *const *) argv);
        if (errno == ENOENT)
                log_error("journalctl is not installed. clubd logs to the journal when systemd runs it; "
                          "otherwise its messages go to its standard error.");
        else
                log_error_errno(-errno, "Cannot run journalctl: %m");
        return EXIT_STATUS_FAILURE;
}

static const Verb verbs[] = {
        { "status",     OPTION_JSON, "read clubd's status", NULL, verb_status },
        { "models",     OPTION_JSON, "read clubd's models", NULL, verb_models },
        { "register",   OPTION_KEY | OPTION_KEY_FILE | OPTION_GATEWAY | OPTION_NAME | OPTION_INSECURE,
                        "register this machine", "club.inference.agent1.register", verb_register },
        { "drain",      0, "drain clubd", "club.inference.agent1.drain", verb_method, "Drain",
                        "clubd is draining: it takes no new requests, and running ones finish.\n"
                        "Take requests again with: clubctl resume\n" },
        { "resume",     0, "resume clubd", "club.inference.agent1.drain", verb_method, "Resume",
                        "clubd takes requests again.\n" },
        { "unregister", OPTION_YES, "unregister this machine", "club.inference.agent1.unregister", verb_unregister },
        { "reload",     0, "reload clubd's configuration", "club.inference.agent1.configure", verb_method, "Reload",
                        "clubd reloaded its configuration.\n" },
        { "logs",       OPTION_FOLLOW | OPTION_LINES, "show clubd's log", NULL, verb_logs },
};

/* ---- command line ------------------------------------------------------------------------------------- */

static void help(void) {
        printf("Usage: clubctl [OPTIONS] COMMAND\n\n"
               "Control clubd, the club agent that serves this machine's models to the club network.\n\n"
               "Commands:\n"
               "  status [--json]          state, name, mesh address, gateway, heartbeat, models,\n"
               "                           upstreams (the default command)\n"
               "  models [--json]          the models this machine serves\n"
               "  register --key-file FILE [--gateway URL] [--name NAME] [--insecure]\n"
               "                           join the network through a gateway\n"
               "  drain                    take no new requests; running ones finish\n"
               "  resume                   take requests again\n"
               "  unregister [--yes]       leave the network and forget the registration\n"
               "  reload                   make clubd re-read its configuration\n"
               "  logs [-f] [-n N]         clubd's journal (journalctl -u clubd)\n\n"
               "Options:\n"
               "      --key-file=FILE      read the key for register from the first line of FILE\n"
               "      --key=-              read the key from standard input (hidden when typed)\n"
               "      --key=KEY            the key itself: an API key (ic-…) with the agent scope, or\n"
               "                           an enrollment key (ie-…). On the command line a key can\n"
               "                           be seen by other users (ps) and stays in your shell\n"
               "                           history: prefer --key-file or --key=-. clubctl never\n"
               "                           prints it, and clubd never stores it.\n"
               "      --gateway=URL        the gateway, e.g. https://gw.example.org (default: the\n"
               "                           saved one, or Gateway= in clubd.conf)\n"
               "      --name=NAME          this machine's name on the network (default: the saved\n"
               "                           one, or the host name)\n"
               "      --insecure           allow plain http:// to a gateway on another machine\n"
               "      --json               machine-readable output (status, models)\n"
               "  -y, --yes                unregister without asking\n"
               "  -f, --follow             logs: keep printing new lines\n"
               "  -n, --lines=N            logs: only the last N lines\n"
               "      --no-ask-password    never ask for a password; fail if polkit wants one\n"
               "  -h, --help               show this help\n"
               "      --version            show the version\n\n"
               "Exit status: 0 success, 1 failure, 2 usage error, 3 clubd is not running,\n"
               "4 not authorized, 5 the gateway refused, 6 the gateway is unreachable,\n"
               "7 not registered. Details: docs/clubctl.md.\n");
}

/* Returns 1 to go on, 0 to exit successfully (help, version), or a negative errno. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_JSON,
                ARG_KEY,
                ARG_KEY_FILE,
                ARG_GATEWAY,
                ARG_NAME,
                ARG_INSECURE,
                ARG_NO_ASK_PASSWORD,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "json", no_argument, NULL, ARG_JSON },
                { "key", required_argument, NULL, ARG_KEY },
                { "key-file", required_argument, NULL, ARG_KEY_FILE },
                { "gateway", required_argument, NULL, ARG_GATEWAY },
                { "name", required_argument, NULL, ARG_NAME },
                { "insecure", no_argument, NULL, ARG_INSECURE },
                { "yes", no_argument, NULL, 'y' },
                { "follow", no_argument, NULL, 'f' },
                { "lines", required_argument, NULL, 'n' },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "hyfn:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("clubctl %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_JSON:
                        arg_json = true;
                        arg_options |= OPTION_JSON;
                        break;
                case ARG_KEY:
                        if (arg_key || arg_key_file) {
                                explicit_bzero(optarg, strlen(optarg));
                                return log_error_errno(-EINVAL, "Give the key once: --key or --key-file.");
                        }
                        arg_key = strdup(optarg);
                        /* Out of /proc/PID/cmdline from now on (it was visible until here). */
                        explicit_bzero(optarg, strlen(optarg));
                        if (!arg_key)
                                return log_oom();
                        arg_options |= OPTION_KEY;
                        break;
                case ARG_KEY_FILE:
                        if (arg_key || arg_key_file)
                                return log_error_errno(-EINVAL, "Give the key once: --key or --key-file.");
                        arg_key_file = optarg;
                        arg_options |= OPTION_KEY_FILE;
                        break;
                case ARG_GATEWAY:
                        if (isempty(optarg))
                                return log_error_errno(-EINVAL, "--gateway needs a URL, e.g. https://gw.example.org");
                        arg_gateway = optarg;
                        arg_options |= OPTION_GATEWAY;
                        break;
                case ARG_NAME:
                        if (isempty(optarg))
                                return log_error_errno(-EINVAL, "--name needs a name: 1–64 of A-Z a-z 0-9 . _ -");
                        arg_name = optarg;
                        arg_options |= OPTION_NAME;
                        break;
                case ARG_INSECURE:
                        arg_insecure = true;
                        arg_options |= OPTION_INSECURE;
                        break;
                case 'y':
                        arg_yes = true;
                        arg_options |= OPTION_YES;
                        break;
                case 'f':
                        arg_follow = true;
                        arg_options |= OPTION_FOLLOW;
                        break;
                case 'n':
                        r = parse_uint(optarg, &arg_lines);
                        if (r < 0)
                                return log_error_errno(r, "--lines needs a number of lines, not '%s'.", optarg);
                        arg_options |= OPTION_LINES;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                default:
                        return -EINVAL;         /* getopt said why */
                }
        return 1;
}

int main(int argc, char *argv[]) {
        const char *name;
        const Verb *v = NULL;
        ExitStatus st;
        int r;

        log_set_prefix(false);
        (void) log_parse_environment();

        r = parse_argv(argc, argv);
        if (r <= 0) {
                arg_key = erase_and_free(arg_key);
                return r == 0 ? EXIT_STATUS_OK : EXIT_STATUS_USAGE;
        }

        name = optind < argc ? argv[optind] : "status";
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, name))
                        v = &verbs[i];
        if (!v) {
                log_error("Unknown command '%s'. clubctl --help lists the commands.", name);
                st = EXIT_STATUS_USAGE;
                goto finish;
        }
        if (optind + 1 < argc) {
                log_error("'%s' takes no arguments besides options; unexpected '%s'.", v->name, argv[optind + 1]);
                st = EXIT_STATUS_USAGE;
                goto finish;
        }
        for (size_t i = 0; i < ELEMENTSOF(option_names); i++)
                if ((arg_options & (1U << i)) && !(v->options & (1U << i))) {
                        log_error("%s is not an option of '%s'. clubctl --help lists the options of each command.",
                                  option_names[i], v->name);
                        st = EXIT_STATUS_USAGE;
                        goto finish;
                }

        st = v->run(v);
finish:
        arg_key = erase_and_free(arg_key);
        return st;
}
