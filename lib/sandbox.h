/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * In-process syscall allowlists with libseccomp, loaded once a daemon has
 * opened everything it needs (sockets bound, bus connected, netlink open).
 * They add to the unit's SystemCallFilter=; they do not replace it.
 *
 * Anything not allowed fails with EPERM (or is only logged, in builds
 * configured with -Dseccomp_log_only=true, for finding what is missing).
 */

#include <stdbool.h>

typedef struct SandboxPolicy {
        const char *const *syscalls;     /* names, NULL-terminated; unknown names on this arch are skipped */
        const int *socket_families;      /* socket() may create only these; terminated by -1 */
} SandboxPolicy;

/* True if this build can load filters. */
bool sandbox_supported(void);

/*
 * Load the allowlist for this process and all its threads (and set
 * no_new_privs). Returns 0, -EOPNOTSUPP without libseccomp, or -errno.
 */
int sandbox_apply(const SandboxPolicy *policy);
