/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "sandbox.h"

#if HAVE_SECCOMP
#include <seccomp.h>

CLUB_DEFINE_CLEANUP_VOID(scmp_filter_ctx, seccomp_release, seccomp_releasep);

bool sandbox_supported(void) {
        return true;
}

int sandbox_apply(const SandboxPolicy *policy) {
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        int sys_socket, r;

        assert(policy && policy->syscalls);

        ctx = seccomp_init(SANDBOX_LOG_ONLY ? SCMP_ACT_LOG : SCMP_ACT_ERRNO(EPERM));
        if (!ctx)
                return -ENOMEM;
        /* Threads started later (libcurl's resolver) inherit the filter; TSYNC covers running ones. */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
        if (r < 0)
                return r;
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
        if (r < 0)
                return r;

        sys_socket = seccomp_syscall_resolve_name("socket");
        for (const char *const *n = policy->syscalls; *n; n++) {
                int nr = seccomp_syscall_resolve_name(*n);

                if (nr == __NR_SCMP_ERROR) {
                        log_debug("Syscall %s is unknown on this architecture, skipping.", *n);
                        continue;
                }
                if (nr == sys_socket && policy->socket_families)
                        continue; /* added per family below */
                if (streq(*n, "clone"))
                        /* Threads, never new processes: CLONE_THREAD must be set. */
                        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
                else
                        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
                if (r < 0)
                        return log_debug_errno(r, "Failed to allow %s: %m", *n);
        }

        if (policy->socket_families)
                for (const int *f = policy->socket_families; *f >= 0; f++) {
                        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, sys_socket, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t) *f));
                        if (r < 0)
                                return r;
                }

        /* glibc falls back to clone() when clone3() is not available; clone3's flags live in
         * memory the filter cannot inspect, so refuse it as "not implemented". */
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"), 0);
        if (r < 0 && r != -EEXIST)
                return r;

        r = seccomp_load(ctx);
        if (r < 0)
                return r;
        return 0;
}

#else

bool sandbox_supported(void) {
        return false;
}

int sandbox_apply(const SandboxPolicy *policy) {
        return -EOPNOTSUPP;
}

#endif
