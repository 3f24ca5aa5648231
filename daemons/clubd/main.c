/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clubd — the club agent: puts this machine's local inference servers on the
 * club network. See clubd(8).
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "agent.h"
#include "clubd-bus.h"
#include "clubd-config.h"
#include "http-server.h"
#include "daemon-util.h"
#include "log.h"
#include "proxy.h"
#include "sandbox-policy.h"

#define SHUTDOWN_GRACE_USEC (10 * USEC_PER_SEC)
#define STATUS_INTERVAL_USEC (10 * USEC_PER_SEC)

static const char *arg_config = CLUBD_CONFIG_PATH;
static int arg_log_level = -1;
static bool arg_check_config = false;

typedef struct Daemon {
        sd_event *event;
        Proxy *proxy;
        Agent *agent;
        ClubdBus *bus;
        ClubdConfig *config;
        DaemonLifecycle *lifecycle;
} Daemon;

static void help(void) {
        printf("Usage: clubd [OPTIONS]\n\n"
               "The club agent: serves this machine's local inference servers to the club network.\n\n"
               "  -c, --config=PATH      configuration file (default: %s, plus PATH.d/*.conf)\n"
               "      --log-level=LEVEL  debug, info, notice, warning, err (default: info,\n"
               "                         or LogLevel= in the config, or $CLUB_LOG_LEVEL)\n"
               "      --check-config     parse the configuration, report problems, and exit\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n",
               CLUBD_CONFIG_PATH);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_LOG_LEVEL = 0x100, ARG_VERSION, ARG_CHECK_CONFIG };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = log_level_from_string(optarg);
                        if (arg_log_level < 0)
                                return log_error_errno(-EINVAL, "Unknown log level '%s'; use debug, info, notice, warning or err.", optarg);
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("clubd %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(-EINVAL, "Unexpected argument '%s'. See clubd --help.", argv[optind]);
        return 1;
}

static void apply_log_level(const ClubdConfig *cfg) {
        if (arg_log_level >= 0)
                log_set_max_level(arg_log_level);
        else if (getenv("CLUB_LOG_LEVEL"))
                (void) log_parse_environment();
        else if (cfg && cfg->log_level >= 0)
                log_set_max_level(cfg->log_level);
}

static unsigned daemon_in_flight(void *userdata) {
        Daemon *d = userdata;

        return proxy_in_flight(d->proxy);
}

static void daemon_stop_accepting(void *userdata) {
        Daemon *d = userdata;

        proxy_stop_accepting(d->proxy);
}

static int daemon_status_line(void *userdata, char **ret) {
        Daemon *d = userdata;
        _cleanup_free_ char *a = NULL, *p = NULL;
        int r;

        r = proxy_status_line(d->proxy, &p);
        if (r < 0)
                return r;
        if (!d->agent) {
                *ret = TAKE_PTR(p);
                return 0;
        }
        r = agent_status_line(d->agent, &a);
        if (r < 0)
                return r;
        return asprintf(ret, "%s %s", a, p) < 0 ? -ENOMEM : 0;
}

static const DaemonOps daemon_ops = {
        .in_flight = daemon_in_flight,
        .stop_accepting = daemon_stop_accepting,
        .status_line = daemon_status_line,
};

/* SIGHUP and the D-Bus Reload method: re-read the configuration; running streams go on. */
static int daemon_reload(void *userdata) {
        Daemon *d = userdata;
        ClubdConfig *cfg = NULL;
        char a[64], b[64];
        int r;

        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration.");
        r = clubd_config_load(arg_config, &cfg);
        if (r < 0) {
                log_error_errno(r, "Failed to reload %s, keeping the running configuration: %m", arg_config);
                (void) sd_notify(false, "READY=1");
                daemon_lifecycle_notify_status(d->lifecycle);
                return r;
        }
        if (strcmp(format_sockaddr((struct sockaddr *) &cfg->listen.ss, a, sizeof a),
                   format_sockaddr((struct sockaddr *) &d->config->listen.ss, b, sizeof b)) != 0)
                log_warning("Listen= changed from %s to %s; that takes a restart (systemctl restart clubd).", b, a);
        r = proxy_reload(d->proxy, cfg);
        if (r >= 0 && d->agent)
                r = agent_reload(d->agent, cfg);
        if (r < 0) {
                log_error_errno(r, "Failed to apply the new configuration, keeping the running one: %m");
                clubd_config_free(cfg);
        } else {
                apply_log_level(cfg);
                clubd_config_free(d->config);
                d->config = cfg;
                log_info("Configuration reloaded: %zu upstream(s).", cfg->n_upstreams);
        }
        (void) sd_notify(false, "READY=1");
        daemon_lifecycle_notify_status(d->lifecycle);
        return r;
}

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) daemon_reload(userdata);
        return 0;
}

/* [Agent] StateDirectory=, else the first of systemd's $STATE_DIRECTORY, else /var/lib/club. */
static char *state_directory(const ClubdConfig *cfg) {
        const char *e = getenv("STATE_DIRECTORY");

        if (cfg->state_directory)
                return strdup(cfg->state_directory);
        if (!isempty(e) && e[0] == '/')
                return strndup(e, strcspn(e, ":"));
        return strdup(CLUBD_STATE_DIRECTORY_DEFAULT);
}

static void daemon_done(Daemon *d) {
        /* Reverse order of creation. */
        d->bus = clubd_bus_free(d->bus);
        d->agent = agent_free(d->agent);
        d->lifecycle = daemon_lifecycle_free(d->lifecycle);
        d->proxy = proxy_free(d->proxy);
        d->config = clubd_config_free(d->config);
}

int main(int argc, char *argv[]) {
        _cleanup_(clubd_config_freep) ClubdConfig *cfg = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_free_ char *state_dir = NULL;
        Daemon d = {};
        sigset_t mask;
        char addr[64];
        int fd, r;

        (void) log_parse_environment();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        r = clubd_config_load(arg_config, &cfg);
        if (r < 0) {
                log_error_errno(r, "Cannot start: the configuration in %s is not usable: %m", arg_config);
                return EXIT_FAILURE;
        }
        apply_log_level(cfg);
        if (arg_check_config) {
                printf("%s: OK, %zu upstream(s).\n", arg_config, cfg->n_upstreams);
                return EXIT_SUCCESS;
        }
        if (cfg->n_upstreams == 0)
                log_warning("%s has no [Upstream] section: requests will be answered with 503 until one is added.", arg_config);

        (void) signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(-errno, "Failed to block signals: %m"), EXIT_FAILURE;

        r = sd_event_default(&event);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m"), EXIT_FAILURE;
        d.event = event;
        (void) sd_event_set_watchdog(event, true);
        (void) sd_event_add_signal(event, NULL, SIGHUP, on_reload, &d);

        format_sockaddr((struct sockaddr *) &cfg->listen.ss, addr, sizeof addr);
        r = http_listen(addr, &fd);
        if (r < 0) {
                log_error_errno(r, "Failed to listen on %s (Listen= in [Proxy]): %m", addr);
                return EXIT_FAILURE;
        }
        r = proxy_new(event, cfg, fd, &d.proxy);
        if (r < 0)
                return log_error_errno(r, "Failed to start the proxy: %m"), EXIT_FAILURE;
        d.config = TAKE_PTR(cfg);

        state_dir = state_directory(d.config);
        if (!state_dir)
                return log_oom(), daemon_done(&d), EXIT_FAILURE;
        r = agent_new(event, d.config, d.proxy, state_dir, &d.agent);
        if (r < 0)
                return log_error_errno(r, "Failed to start the agent: %m"), daemon_done(&d), EXIT_FAILURE;
        r = clubd_bus_new(event, d.agent, daemon_reload, &d, &d.bus);
        if (r < 0)
                return daemon_done(&d), EXIT_FAILURE;

        r = daemon_lifecycle_new(event, &daemon_ops, &d, SHUTDOWN_GRACE_USEC, STATUS_INTERVAL_USEC, &d.lifecycle);
        if (r < 0)
                return log_error_errno(r, "Failed to set up signal handling: %m"), daemon_done(&d), EXIT_FAILURE;

        /* Everything is open: from here on only what serving needs is allowed. */
        if (d.config->sandbox) {
                r = clubd_sandbox_apply();
                if (r == -EOPNOTSUPP)
                        log_warning("This build has no seccomp support: running without a syscall filter.");
                else if (r < 0) {
                        log_error_errno(r, "Failed to load the syscall filter: %m. Set Sandbox=no in [Agent] to run without it.");
                        daemon_done(&d);
                        return EXIT_FAILURE;
                }
                else
                        log_debug("Syscall filter loaded.");
        } else
                log_notice("Sandbox=no: running without a syscall filter.");

        log_info("clubd %s listening on %s with %zu upstream(s).", PACKAGE_VERSION, addr, proxy_n_upstreams(d.proxy));
        (void) sd_notify(false, "READY=1");
        daemon_lifecycle_notify_status(d.lifecycle);

        r = sd_event_loop(event);

        daemon_done(&d);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        log_info("Stopped.");
        return EXIT_SUCCESS;
}
