/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Logging for the journal: one line per message on stderr, prefixed with the
 * syslog priority as "<N>", which journald turns into the entry's PRIORITY.
 * On a terminal the prefix is left out. lib/ logs at debug level only; the
 * daemons log where they call into it (STYLE.md §5).
 *
 * Never pass secrets (keys, tokens, request bodies) to these functions.
 */

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);

/* Parse "debug", "info", …, "emerg" or a number 0–7. Returns the level or -EINVAL. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* Apply $CLUB_LOG_LEVEL if set and valid. Returns 0, or -EINVAL if set but invalid. */
int log_parse_environment(void);

/* Send output to fd instead of stderr (tests). Prefixes are forced on when fd >= 0. */
void log_set_fd(int fd);

/* Force the "<N>" prefix on or off; by default it is on unless stderr is a tty. */
void log_set_prefix(bool b);

/*
 * Log a message and return -abs(error) (or 0 if error is 0). errno is set to
 * abs(error) while formatting, so "%m" prints the error's text.
 */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...)                                       \
        ({                                                                      \
                int _level = (level), _e = (error);                             \
                (log_get_max_level() >= _level)                                 \
                        ? log_internal(_level, _e, __VA_ARGS__)                 \
                        : -abs(_e);                                             \
        })
#define log_full(level, ...) (void) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...)   log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...)   log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...)    log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...)  log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, e, __VA_ARGS__)

#define log_oom() log_error_errno(-ENOMEM, "Out of memory.")

/*
 * A token bucket for messages that a remote party can trigger (per-request
 * errors): at most burst messages per interval; the rest are counted and
 * reported once the next interval starts.
 */
typedef struct RateLimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin;
        unsigned num;
        unsigned suppressed;
} RateLimit;

/* Returns true if a message may be logged now. */
bool ratelimit_below(RateLimit *rl);

#define log_ratelimit_full(rl, level, ...)                                      \
        do {                                                                    \
                if (log_get_max_level() >= (level) && ratelimit_below(rl))      \
                        log_full((level), __VA_ARGS__);                         \
        } while (0)
#define log_ratelimit_warning(rl, ...) log_ratelimit_full(rl, LOG_WARNING, __VA_ARGS__)
#define log_ratelimit_info(rl, ...) log_ratelimit_full(rl, LOG_INFO, __VA_ARGS__)
