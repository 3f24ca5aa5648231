/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "parse-util.h"

static int log_max_level = LOG_INFO;
static int log_fd = -1;
static int log_prefix = -1; /* -1: decide from isatty() */

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
        [LOG_ERR] = "err",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

void log_set_max_level(int level) {
        assert(level >= LOG_EMERG && level <= LOG_DEBUG);
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s) {
        unsigned u;

        if (isempty(s))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        if (parse_uint(s, &u) >= 0 && u <= LOG_DEBUG)
                return (int) u;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

int log_parse_environment(void) {
        const char *e = getenv("CLUB_LOG_LEVEL");
        int l;

        if (!e)
                return 0;
        l = log_level_from_string(e);
        if (l < 0)
                return l;
        log_set_max_level(l);
        return 0;
}

void log_set_fd(int fd) {
        log_fd = fd;
}

void log_set_prefix(bool b) {
        log_prefix = b;
}

int log_internal(int level, int error, const char *fmt, ...) {
        char buf[2048];
        int fd = log_fd >= 0 ? log_fd : STDERR_FILENO;
        bool prefix;
        va_list ap;
        int n = 0, saved = errno;

        if (level > log_max_level)
                return -abs(error);

        /* Decided once: isatty() is a syscall, and stderr does not change under us. */
        if (log_prefix < 0)
                log_prefix = !isatty(STDERR_FILENO);
        prefix = log_fd >= 0 || log_prefix;
        if (prefix)
                n = snprintf(buf, sizeof buf, "<%d>", level & LOG_PRIMASK);

        errno = abs(error);
        va_start(ap, fmt);
        (void) vsnprintf(buf + n, sizeof buf - (size_t) n, fmt, ap);
        va_end(ap);

        /* One line per message: a stray newline inside would forge a second entry. */
        n = 0;
        for (char *p = buf; *p; p++, n++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        buf[n] = '\n';
        (void) !write(fd, buf, (size_t) n + 1);

        errno = saved;
        return -abs(error);
}

bool ratelimit_below(RateLimit *rl) {
        uint64_t ts = now_usec(CLOCK_MONOTONIC);

        assert(rl);
        if (rl->interval_usec == 0 || rl->burst == 0)
                return true;
        if (rl->begin == 0 || ts - rl->begin >= rl->interval_usec) {
                unsigned s = rl->suppressed;

                rl->begin = ts;
                rl->num = 1;
                rl->suppressed = 0;
                if (s > 0)
                        log_internal(LOG_WARNING, 0, "Suppressed %u similar messages.", s);
                return true;
        }
        if (rl->num < rl->burst) {
                rl->num++;
                return true;
        }
        rl->suppressed++;
        return false;
}
