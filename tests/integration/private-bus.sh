# SPDX-License-Identifier: LGPL-2.1-or-later
#
# private-bus.sh — sourced by the D-Bus integration tests (test-bus-polkit.sh,
# test-gatewayd-bus.sh, …): a private system bus with the real dbus-daemon and the real
# polkitd, throwaway users, and the caller's own bus policies, polkit actions and JS rules,
# all inside private mount and PID namespaces. The host's bus, users and polkit
# configuration are never touched; everything vanishes with the namespaces, even when the
# test is killed (the script is PID 1 there).
#
# Order of use (each step is a function; the caller picks the files and users):
#
#   . "$(dirname "$0")/private-bus.sh"
#   pb_require [PROGRAM…]        skip (exit 77, or fail with CLUB_TEST_STRICT=1) unless root
#                                and dbus-daemon, busctl, unshare, setpriv, getent, timeout,
#                                polkitd (with its user and bus policy) and every PROGRAM exist.
#                                Sets POLKITD and POLKIT_BUS_CONF.
#   pb_enter_namespace "$0" "$@" re-executes the script in new mount and PID namespaces
#                                (returns there, with the same arguments). Set the array
#                                PB_UNSHARE_EXTRA first for more, e.g. (--net) for a network
#                                namespace of its own (then bring lo up: ip link set lo up).
#   pb_setup NAME                a tmpfs at $T ($TMPDIR/NAME.XXXXXX) and the EXIT trap that stops
#                                every pid in PIDS (in reverse order) and unmounts it.
#   pb_add_users USER…           users (and groups of the same name) in bind-mounted copies
#                                of /etc/passwd and /etc/group; UID_OF[USER] is the uid.
#   pb_polkit_config ACTION-FILE… -- RULES-FILE…
#                                only these .policy files and .rules files are what polkitd
#                                sees (bind-mounted over /usr/share/polkit-1/actions and
#                                /etc/polkit-1/rules.d; /usr/share/polkit-1/rules.d empty).
#   pb_install_bin FILE…         copies each program to $T/bin/ (readable by the test users:
#                                the build directory may not be); prints nothing. Use
#                                "$T/bin/$(basename FILE)".
#   pb_start_bus POLICY-FILE…    dbus-daemon with tests/integration/bus/bus.conf (a system
#                                bus, deny by default) and these policy files plus polkitd's
#                                in its system.d/; exports DBUS_SYSTEM_BUS_ADDRESS=$ADDR.
#                                PB_BUS_PID is the dbus-daemon's pid.
#   pb_start_polkitd             starts polkitd (as root; it drops to its user) and waits for
#                                org.freedesktop.PolicyKit1; POLKIT_PID is its pid.
#
# Helpers: as USER COMMAND… (run as a test user, no groups, a clean environment with only
# PATH and DBUS_SYSTEM_BUS_ADDRESS); ok/bad WHAT (print "ok - …"/"FAIL - …" and count in
# pass/fail); check WHAT COMMAND…; expect WHAT GOT WANT; expect_in WHAT HAYSTACK NEEDLE;
# show FILE… (as "# " comments); wait_for SECONDS COMMAND… (poll every 50 ms); log_clean
# LOG (no line at warning level or above, "<0>".."<4>" prefixes); elapsed; pb_finish
# (prints the summary, the bus and polkitd logs on failure, returns nonzero on failure).
# Add every background pid to PIDS so that cleanup stops it.

PB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PB_BUSDIR=$PB_HERE/bus
PIDS=()
POLKIT_PID=""
T=""
ADDR=""
pass=0 fail=0
declare -A UID_OF

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}

pb_require() {
        local p f d
        [ "$(id -u)" = 0 ] || skip "not root"
        for p in dbus-daemon busctl unshare setpriv getent timeout mount "$@"; do
                command -v "$p" >/dev/null || skip "$p not installed"
        done
        POLKITD=
        for p in /usr/lib/polkit-1/polkitd /usr/libexec/polkitd /usr/libexec/polkit-1/polkitd; do
                [ -x "$p" ] && { POLKITD=$p; break; }
        done
        [ -n "$POLKITD" ] || skip "polkitd not installed"
        getent passwd polkitd >/dev/null || skip "no polkitd user"
        POLKIT_BUS_CONF=
        for f in /usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf /etc/dbus-1/system.d/org.freedesktop.PolicyKit1.conf; do
                [ -f "$f" ] && { POLKIT_BUS_CONF=$f; break; }
        done
        [ -n "$POLKIT_BUS_CONF" ] || skip "polkitd's D-Bus policy file not found"
        for d in /usr/share/polkit-1/actions /usr/share/polkit-1/rules.d /etc/polkit-1/rules.d; do
                [ -d "$d" ] || skip "$d does not exist (nothing to mount over)"
        done
}

# Private mount and PID namespaces: every bind mount vanishes with them, and when the script
# ends — even by SIGKILL — the kernel kills every process it started (it is PID 1 there;
# unshare's --kill-child covers unshare itself being killed).
PB_UNSHARE=(unshare --mount --propagation private --pid --fork --kill-child --mount-proc)
[ -n "${PB_UNSHARE_EXTRA+set}" ] || PB_UNSHARE_EXTRA=()
pb_enter_namespace() {
        local script=$1; shift
        [ "${CLUB_BUS_TEST_IN_NAMESPACE:-}" = 1 ] && return 0
        PB_UNSHARE+=("${PB_UNSHARE_EXTRA[@]}")
        "${PB_UNSHARE[@]}" true 2>/dev/null || skip "cannot create mount and PID namespaces"
        exec env CLUB_BUS_TEST_IN_NAMESPACE=1 "${PB_UNSHARE[@]}" "$script" "$@"
}

pb_cleanup() {
        local rc=$? p i alive
        set +e
        # A stopped polkitd would keep SIGTERM pending: continue everything first.
        for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; done
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
        for _ in $(seq 30); do
                alive=0
                for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
                [ $alive = 0 ] && break
                sleep 0.1
        done
        for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
        wait 2>/dev/null
        if [ -n "$T" ]; then
                umount --lazy "$T"     # lazy: /etc/passwd and /etc/group are bind mounts from it
                rmdir "$T"
        fi
        exit $rc
}

# A tmpfs of our own: if the test is killed, nothing but this empty directory stays.
pb_setup() {
        local name=$1
        T=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
        mount -t tmpfs -o mode=755,size=64m "$name" "$T" || { rmdir "$T"; T=""; skip "cannot mount a tmpfs"; }
        trap pb_cleanup EXIT
        trap 'exit 1' INT TERM
}

ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
show() { sed 's/^/# /' "$@" 2>/dev/null || true; }
# expect WHAT GOT WANT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }
# expect_in WHAT HAYSTACK NEEDLE
expect_in() { if [[ "$2" == *"$3"* ]]; then ok "$1"; else bad "$1: '$3' not in: $2"; fi; }
PB_T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - PB_T0) / 1000000 )) ms"; }

# wait_for SECONDS COMMAND…: poll every 50 ms.
wait_for() {
        local n=$(( $1 * 20 )); shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
        return 1
}

# Nothing at warning level or above in a service log (its lines carry "<N>" prefixes).
log_clean() {
        ! grep -q '^<[0-4]>' "$1" && return 0
        grep '^<[0-4]>' "$1" | sed 's/^/# /'
        return 1
}

pb_free_id() {
        local id=$1
        while getent passwd "$id" >/dev/null || getent group "$id" >/dev/null; do id=$((id + 1)); done
        echo "$id"
}
pb_add_users() {
        local u id next=61900
        if ! mountpoint -q /etc/passwd; then
                cp /etc/passwd "$T/passwd"
                cp /etc/group "$T/group"
                chmod 644 "$T/passwd" "$T/group"
                mount --bind "$T/passwd" /etc/passwd
                mount --bind "$T/group" /etc/group
        fi
        for u in "$@"; do
                id=$(pb_free_id $next)
                next=$((id + 1))
                UID_OF[$u]=$id
                echo "$u:x:$id:$id:club test user:/nonexistent:/usr/sbin/nologin" >> "$T/passwd"
                echo "$u:x:$id:" >> "$T/group"
        done
}

pb_polkit_config() {
        mkdir -p "$T/actions" "$T/rules" "$T/empty"
        while [ $# -gt 0 ] && [ "$1" != -- ]; do cp "$1" "$T/actions/"; shift; done
        [ $# -gt 0 ] && shift
        while [ $# -gt 0 ]; do cp "$1" "$T/rules/"; shift; done
        chmod -R a+rX "$T/actions" "$T/rules" "$T/empty"
        mount --bind "$T/actions" /usr/share/polkit-1/actions
        mount --bind "$T/rules" /etc/polkit-1/rules.d
        mount --bind "$T/empty" /usr/share/polkit-1/rules.d
}

pb_install_bin() {
        local f
        mkdir -p "$T/bin"
        for f in "$@"; do install -m 755 "$f" "$T/bin/$(basename "$f")"; done
}

pb_start_bus() {
        mkdir -p "$T/bus/system.d"
        cp "$PB_BUSDIR/bus.conf" "$T/bus/"
        cp "$POLKIT_BUS_CONF" "$@" "$T/bus/system.d/"
        chmod -R a+rX "$T/bus"
        ADDR=unix:path=$T/system_bus_socket
        export DBUS_SYSTEM_BUS_ADDRESS=$ADDR
        dbus-daemon --config-file="$T/bus/bus.conf" --address="$ADDR" --nofork --nopidfile \
                > "$T/dbus.log" 2>&1 &
        PB_BUS_PID=$!
        PIDS+=("$PB_BUS_PID")
        if wait_for 5 busctl --address="$ADDR" list --no-pager; then
                ok "private dbus-daemon answers as the system bus"
        else
                bad "private dbus-daemon"; show "$T/dbus.log"; exit 1
        fi
}

pb_start_polkitd() {
        "$POLKITD" --no-debug >> "$T/polkitd.log" 2>&1 &
        POLKIT_PID=$!
        PIDS+=("$POLKIT_PID")
        if wait_for 10 busctl --address="$ADDR" status org.freedesktop.PolicyKit1; then
                ok "polkitd owns org.freedesktop.PolicyKit1 (as user $(ps -o user= -p "$POLKIT_PID"))"
        else
                bad "polkitd did not start"; show "$T/polkitd.log"; exit 1
        fi
}

as() {
        local u=$1; shift
        local id=${UID_OF[$u]}
        setpriv --reuid="$id" --regid="$id" --clear-groups \
                env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DBUS_SYSTEM_BUS_ADDRESS="$ADDR" "$@"
}

pb_finish() {
        local f
        if [ "$fail" -gt 0 ]; then
                for f in "$T"/polkitd.log "$T"/dbus.log; do echo "# --- $f"; show "$f"; done
        fi
        echo "# $pass passed, $fail failed, $(elapsed)"
        [ "$fail" -eq 0 ]
}
