/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Small macros every module uses: cleanup attributes, ownership transfer,
 * allocation helpers. Modelled on systemd's macro.h conventions (see STYLE.md).
 */

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(x) __attribute__((__cleanup__(x)))
#define _unused_ __attribute__((__unused__))
#define _printf_(a, b) __attribute__((__format__(printf, a, b)))
#define _noreturn_ __attribute__((__noreturn__))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _fallthrough_ __attribute__((__fallthrough__))
#define _pure_ __attribute__((__pure__))
#define _warn_unused_result_ __attribute__((__warn_unused_result__))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) MIN(MAX((x), (lo)), (hi))

#define new0(t, n) ((t *) calloc((n) ?: 1, sizeof(t)))
#define new(t, n) ((t *) reallocarray(NULL, (n) ?: 1, sizeof(t)))

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

/* Take ownership out of a variable that has a cleanup attribute. */
#define TAKE_PTR(p)                                     \
        ({                                              \
                __typeof__(p) _ptr_ = (p);              \
                (p) = NULL;                             \
                _ptr_;                                  \
        })

#define TAKE_FD(fd)                                     \
        ({                                              \
                int _fd_ = (fd);                        \
                (fd) = -EBADF;                          \
                _fd_;                                   \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}

/* Define foop() that calls foo(*p) for pointer types, NULL-safe. */
#define CLUB_DEFINE_CLEANUP(type, func)                 \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        *p = func(*p);                  \
        }

/* The same for functions that return void (library destructors). */
#define CLUB_DEFINE_CLEANUP_VOID(type, func, name)      \
        static inline void name(type *p) {              \
                if (*p)                                 \
                        func(*p);                       \
                *p = NULL;                              \
        }

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static inline bool isempty(const char *s) {
        return !s || !s[0];
}

static inline const char *strempty(const char *s) {
        return s ?: "";
}

static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

/* Return a pointer past prefix if s starts with it, NULL otherwise. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

const char *startswith_no_case(const char *s, const char *prefix);
bool endswith(const char *s, const char *suffix);

/* Replace *p with a copy of s (or NULL). Returns 0 or -ENOMEM. */
int free_and_strdup(char **p, const char *s);

/* Wipe and free a secret string. Returns NULL. */
char *erase_and_free(char *p);
CLUB_DEFINE_CLEANUP(char *, erase_and_free);

/* Seconds/microseconds helpers. */
#define USEC_PER_SEC ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)
#define NSEC_PER_USEC ((uint64_t) 1000ULL)
#define USEC_INFINITY ((uint64_t) UINT64_MAX)

uint64_t now_usec(int clock_id);
