/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <strings.h>
#include <time.h>

#include "macro.h"

const char *startswith_no_case(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncasecmp(s, prefix, l) == 0 ? s + l : NULL;
}

bool endswith(const char *s, const char *suffix) {
        size_t ls = strlen(s), lx = strlen(suffix);
        return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

int free_and_strdup(char **p, const char *s) {
        char *t = NULL;

        assert(p);
        if (s) {
                t = strdup(s);
                if (!t)
                        return -ENOMEM;
        }
        free(*p);
        *p = t;
        return 0;
}

char *erase_and_free(char *p) {
        if (!p)
                return NULL;
        explicit_bzero(p, strlen(p));
        return mfree(p);
}

uint64_t now_usec(int clock_id) {
        struct timespec ts;

        if (clock_gettime(clock_id, &ts) < 0)
                abort();
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}
