/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/socket.h>

#include "log.h"
#include "sandbox-policy.h"

/*
 * Found by tracing clubd through its whole integration suite (strace -f), then reasoned
 * through: everything the event loop, libmicrohttpd, libcurl (including its resolver thread
 * and glibc's getaddrinfo) and a configuration reload need, and the agent at run time:
 * registering writes the state file; WireGuard goes through the netlink sockets opened
 * before the filter (wg_context_new()) or connects to wireguard-go's UAPI socket
 * (AF_UNIX); the gateway endpoint is resolved in a thread; the bus was connected before
 * and reconnecting needs only socket/connect. Not here: exec, fork (clone is
 * allowed for threads only, see lib/sandbox.c), ptrace, mount, module loading, keyctl, bpf,
 * process_vm_*, personality, chroot, set*id, prctl, …
 */
static const char *const clubd_syscalls[] = {
        /* files: config reload, key files, /etc/hosts and friends for the resolver */
        "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "lseek", "fcntl",
        "ioctl", "openat", "open", "newfstatat", "fstat", "stat", "lstat", "statx", "getdents64",
        "access", "faccessat", "faccessat2", "readlink", "readlinkat", "dup", "dup3", "fstatfs",
        /* the agent's state file: temporary file, fsync, rename, fsync of the directory; unregistering */
        "fsync", "fdatasync", "fchmod", "rename", "renameat", "renameat2", "unlink", "unlinkat",
        "mkdir", "mkdirat",
        /* sockets (socket() itself is limited to the families below) */
        "socket", "connect", "accept", "accept4", "bind", "listen", "getsockname", "getpeername",
        "setsockopt", "getsockopt", "shutdown", "sendto", "recvfrom", "sendmsg", "recvmsg",
        "sendmmsg", "recvmmsg", "socketpair",
        /* the loop */
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
        "select", "pselect6", "timerfd_create", "timerfd_settime", "timerfd_gettime", "eventfd2",
        "signalfd4", "pipe2",
        /* memory */
        "mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
        /* threads (libcurl's resolver) */
        "clone", "futex", "set_robust_list", "get_robust_list", "rseq", "exit", "exit_group",
        "sched_yield", "sched_getaffinity", "gettid", "getpid", "getppid", "tgkill",
        /* identity, time, randomness */
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
        "getrandom", "uname", "sysinfo", "getrlimit", "prlimit64",
        /* signals */
        "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack", "restart_syscall",
        NULL
};

static const int clubd_socket_families[] = { AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, -1 };

const SandboxPolicy clubd_sandbox_policy = {
        .syscalls = clubd_syscalls,
        .socket_families = clubd_socket_families,
};

static void selftest(void) {
        char *const argv[] = { (char *) "/bin/true", NULL };
        int r;

        r = execve("/bin/true", argv, NULL) < 0 ? -errno : 0;
        log_notice_errno(r, "Sandbox self-test: execve() %s%s%m.", r < 0 ? "refused" : "ALLOWED", r < 0 ? ": " : "");
        r = ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0 ? -errno : 0;
        log_notice_errno(r, "Sandbox self-test: ptrace() %s%s%m.", r < 0 ? "refused" : "ALLOWED", r < 0 ? ": " : "");
        r = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        if (r >= 0) {
                close(r);
                log_notice("Sandbox self-test: socket(AF_PACKET) ALLOWED.");
        } else
                log_notice_errno(-errno, "Sandbox self-test: socket(AF_PACKET) refused: %m.");
}

int clubd_sandbox_apply(void) {
        int r;

        r = sandbox_apply(&clubd_sandbox_policy);
        if (r < 0)
                return r;
        if (streq_ptr(getenv("CLUBD_SANDBOX_SELFTEST"), "1"))
                selftest();
        return 0;
}
