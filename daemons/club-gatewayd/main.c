/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-gatewayd — the club gateway: the public, OpenAI-compatible entry point and the hub
 * of the WireGuard mesh. See docs/club-gatewayd.md.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "config.h"
#include "gateway-config.h"
#include "gateway.h"
#include "http-server.h"
#include "daemon-util.h"
#include "log.h"

#define STATUS_INTERVAL_USEC (10 * USEC_PER_SEC)

static const char *arg_config = GATEWAY_CONFIG_PATH;
static const char *arg_listen = NULL;
static int arg_log_level = -1;
static bool arg_check_config = false;

typedef struct Daemon {
        sd_event *event;
        Gateway *gateway;
        GatewayConfig *config;
        DaemonLifecycle *lifecycle;
        int own_listener;               /* a dup of the public listener we opened; -EBADF when socket-activated */
} Daemon;

static void help(void) {
        printf("Usage: club-gatewayd [OPTIONS]\n\n"
               "The club gateway: the public OpenAI-compatible API and the hub of the mesh.\n\n"
               "  -c, --config=PATH      configuration file (default: %s, plus PATH.d/*.conf)\n"
               "      --listen=ADDR:PORT public listener when not socket-activated\n"
               "                         (overrides Listen= in [Public])\n"
               "      --log-level=LEVEL  debug, info, notice, warning, err (default: info,\n"
               "                         or LogLevel= in the config, or $CLUB_LOG_LEVEL)\n"
               "      --check-config     parse the configuration, report problems, and exit\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n",
               GATEWAY_CONFIG_PATH);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_LOG_LEVEL = 0x100, ARG_VERSION, ARG_CHECK_CONFIG, ARG_LISTEN };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "listen", required_argument, NULL, ARG_LISTEN },
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
                case ARG_LISTEN:
                        arg_listen = optarg;
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
                        printf("club-gatewayd %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(-EINVAL, "Unexpected argument '%s'. See club-gatewayd --help.", argv[optind]);
        return 1;
}

static void apply_log_level(const GatewayConfig *cfg) {
        if (arg_log_level >= 0)
                log_set_max_level(arg_log_level);
        else if (getenv("CLUB_LOG_LEVEL"))
                (void) log_parse_environment();
        else if (cfg && cfg->log_level >= 0)
                log_set_max_level(cfg->log_level);
}

static int fd_set_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

/*
 * The listeners systemd passed in: the one named "public" (FileDescriptorName=public), or
 * the only one if it has no name; one named "mesh" is the mesh listener. Others are closed.
 * Returns the number of fds received.
 */
static int listen_fds_take(int *ret_public, int *ret_mesh) {
        char **names = NULL;
        int n, public_fd = -EBADF, mesh_fd = -EBADF;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets passed by systemd: %m");
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names ? names[i] : NULL;

                if (streq_ptr(name, "public") || (n == 1 && (!name || streq(name, "unknown"))))
                        public_fd = fd;
                else if (streq_ptr(name, "mesh"))
                        mesh_fd = fd;
                else {
                        log_warning("Ignoring socket fd %d named '%s' passed by systemd: expected 'public' or 'mesh'.",
                                    fd, strna(name));
                        safe_close(fd);
                }
                if (fd == public_fd || fd == mesh_fd)
                        (void) fd_set_nonblock(fd);
        }
        if (names)
                for (int i = 0; i < n; i++)
                        free(names[i]);
        free(names);
        if (n > 0 && public_fd < 0) {
                safe_close(mesh_fd);
                return log_error_errno(-EBADF, "systemd passed %d socket(s) but none named 'public' (FileDescriptorName=public).", n);
        }
        *ret_public = public_fd;
        *ret_mesh = mesh_fd;
        return n;
}

static unsigned daemon_in_flight(void *userdata) {
        Daemon *d = userdata;

        return gateway_in_flight(d->gateway);
}

/* Stop accepting. A listener systemd passed in stays open: systemd keeps queueing
 * connections for the next start. One we opened ourselves is shut down, so new
 * connections are refused at once instead of waiting in its backlog. */
static void daemon_stop_accepting(void *userdata) {
        Daemon *d = userdata;

        gateway_stop_accepting(d->gateway);
        if (d->own_listener >= 0 && shutdown(d->own_listener, SHUT_RDWR) < 0)
                log_warning_errno(-errno, "Failed to shut down the public listener, ignoring: %m");
        d->own_listener = safe_close(d->own_listener);
}

static int daemon_status_line(void *userdata, char **ret) {
        Daemon *d = userdata;

        return gateway_status_line(d->gateway, ret);
}

static const DaemonOps daemon_ops = {
        .in_flight = daemon_in_flight,
        .stop_accepting = daemon_stop_accepting,
        .status_line = daemon_status_line,
};

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Daemon *d = userdata;
        _cleanup_(gateway_config_freep) GatewayConfig *cfg = NULL;
        _cleanup_free_ char *cert = NULL;
        _cleanup_(erase_and_freep) char *key = NULL;
        int r;

        if (daemon_lifecycle_stopping(d->lifecycle))
                return 0;
        (void) sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration and certificate.");
        r = gateway_config_load(arg_config, &cfg);
        if (r < 0) {
                log_error_errno(r, "Failed to reload %s, keeping the running configuration: %m", arg_config);
                goto done;
        }
        r = gateway_config_load_tls(cfg, &cert, &key);
        if (r < 0) {
                log_error("Keeping the running certificate.");
                goto done;
        }
        if (!streq_ptr(cfg->state_path, d->config->state_path) ||
            !streq_ptr(cfg->mesh_prefix, d->config->mesh_prefix) ||
            !streq_ptr(cfg->public_listen, d->config->public_listen) ||
            !streq_ptr(cfg->mesh_listen, d->config->mesh_listen) ||
            !streq_ptr(cfg->metrics_listen, d->config->metrics_listen) ||
            cfg->metrics_max_series != d->config->metrics_max_series ||
            cfg->max_connections != d->config->max_connections ||
            cfg->max_body_size != d->config->max_body_size ||
            cfg->connect_timeout_usec != d->config->connect_timeout_usec ||
            cfg->first_byte_timeout_usec != d->config->first_byte_timeout_usec ||
            cfg->idle_timeout_usec != d->config->idle_timeout_usec ||
            cfg->keep_alive_usec != d->config->keep_alive_usec || cfg->max_attempts != d->config->max_attempts ||
            cfg->failure_backoff_usec != d->config->failure_backoff_usec ||
            cfg->failure_backoff_max_usec != d->config->failure_backoff_max_usec ||
            cfg->register_rate_per_source != d->config->register_rate_per_source ||
            cfg->register_rate_per_key != d->config->register_rate_per_key ||
            cfg->shutdown_grace_usec != d->config->shutdown_grace_usec ||
            cfg->wg_enabled != d->config->wg_enabled ||
            !streq_ptr(cfg->wg_interface, d->config->wg_interface) ||
            !streq_ptr(cfg->wg_private_key_file, d->config->wg_private_key_file) ||
            cfg->wg_listen_port != d->config->wg_listen_port ||
            !streq_ptr(cfg->wg_endpoint, d->config->wg_endpoint))
                log_warning("Only LogLevel=, TLSCertificate=, TLSKey= and TrustedProxies= apply on reload; the other changes take a restart.");
        r = gateway_set_tls(d->gateway, cert, key);
        if (r < 0) {
                log_error_errno(r, "Failed to apply the new certificate, keeping the running one: %m");
                goto done;
        }
        r = gateway_set_trusted_proxies(d->gateway, &cfg->trusted_proxies);
        if (r < 0)
                log_error_errno(r, "Failed to apply TrustedProxies=, keeping the running list: %m");
        apply_log_level(cfg);
        gateway_config_free(d->config);
        d->config = TAKE_PTR(cfg);
        if (d->config->tls_certificate)
                log_info("Configuration reloaded; new connections use the certificate %s.", d->config->tls_certificate);
        else
                log_info("Configuration reloaded; the public listener speaks plain HTTP.");
done:
        (void) sd_notify(false, "READY=1");
        daemon_lifecycle_notify_status(d->lifecycle);
        return 0;
}

int main(int argc, char *argv[]) {
        _cleanup_(gateway_config_freep) GatewayConfig *cfg = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_free_ char *cert = NULL, *status = NULL;
        _cleanup_(erase_and_freep) char *key = NULL;
        Daemon d = { .own_listener = -EBADF };
        sigset_t mask;
        int public_fd = -EBADF, mesh_fd = -EBADF, n, r;
        const char *listen_address;

        (void) log_parse_environment();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        r = gateway_config_load(arg_config, &cfg);
        if (r < 0) {
                log_error_errno(r, "Cannot start: the configuration in %s is not usable: %m", arg_config);
                return EXIT_FAILURE;
        }
        apply_log_level(cfg);
        r = gateway_config_load_tls(cfg, &cert, &key);
        if (r < 0) {
                log_error("Cannot start: the public listener's certificate or key is not usable.");
                return EXIT_FAILURE;
        }
        if (arg_check_config) {
                printf("%s: OK%s.\n", arg_config, cert ? ", certificate and key usable" : "");
                return EXIT_SUCCESS;
        }

        (void) signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(-errno, "Failed to block signals: %m"), EXIT_FAILURE;

        n = listen_fds_take(&public_fd, &mesh_fd);
        if (n < 0)
                return EXIT_FAILURE;
        listen_address = arg_listen ?: cfg->public_listen;
        if (n > 0) {
                if (arg_listen)
                        log_notice("Socket-activated: ignoring --listen=%s.", arg_listen);
                log_debug("Using the public listener passed by systemd (fd %d).", public_fd);
        } else {
                if (!listen_address) {
                        log_error("Nothing to listen on: not socket-activated, and neither --listen= nor Listen= in [Public] is set.");
                        return EXIT_FAILURE;
                }
                r = http_listen(listen_address, &public_fd);
                if (r < 0) {
                        log_error_errno(r, "Failed to listen on %s (%s): %m", listen_address,
                                        arg_listen ? "--listen" : "Listen= in [Public]");
                        safe_close(mesh_fd);
                        return EXIT_FAILURE;
                }
                d.own_listener = fcntl(public_fd, F_DUPFD_CLOEXEC, 3);
                if (d.own_listener < 0)
                        log_warning_errno(-errno, "Failed to keep a handle on the public listener, ignoring: %m");
        }

        r = sd_event_default(&event);
        if (r < 0) {
                safe_close(public_fd);
                safe_close(mesh_fd);
                return log_error_errno(r, "Failed to create the event loop: %m"), EXIT_FAILURE;
        }
        d.event = event;
        (void) sd_event_set_watchdog(event, true);
        (void) sd_event_add_signal(event, NULL, SIGHUP, on_reload, &d);

        r = gateway_new(event, cfg, public_fd, mesh_fd, cert, key, &d.gateway);
        if (r < 0)
                return EXIT_FAILURE;
        d.config = TAKE_PTR(cfg);

        r = daemon_lifecycle_new(event, &daemon_ops, &d, d.config->shutdown_grace_usec, STATUS_INTERVAL_USEC,
                                 &d.lifecycle);
        if (r < 0)
                return log_error_errno(r, "Failed to set up signal handling: %m"), EXIT_FAILURE;

        if (gateway_status_line(d.gateway, &status) >= 0) {
                log_info("club-gatewayd %s%s: %s", PACKAGE_VERSION, n > 0 ? " (socket-activated)" : "", status);
                (void) sd_notifyf(false, "READY=1\nSTATUS=%s", status);
        } else
                (void) sd_notify(false, "READY=1");

        r = sd_event_loop(event);

        d.lifecycle = daemon_lifecycle_free(d.lifecycle);
        d.gateway = gateway_free(d.gateway);
        safe_close(d.own_listener);
        gateway_config_free(d.config);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        log_info("Stopped.");
        return EXIT_SUCCESS;
}
