#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-bus-polkit.sh — lib/bus-util and lib/polkit end to end, on a private system bus.
#
# In private mount and PID namespaces: the real dbus-daemon with tests/integration/bus/bus.conf
# (a "system" bus at a socket in a temporary directory, exported as
# DBUS_SYSTEM_BUS_ADDRESS), the real polkitd (started as root; it drops to its own user)
# with the test's action and JS rules bind-mounted over /usr/share/polkit-1/actions,
# /etc/polkit-1/rules.d and /usr/share/polkit-1/rules.d, and three throwaway users
# (club-test-allowed, club-test-denied, club-test-auth) added to bind-mounted copies of
# /etc/passwd and /etc/group — the host's files, users and polkit configuration are never
# touched, and everything vanishes with the namespace.
#
# club-bus-test-service (lib/ only) owns club.inference.Test1. Callers are busctl and
# club-bus-test-client (for error names, signals and pipelined calls), as root and as the
# test users (setpriv). Checks: bus policy; reading a property needs no privilege; root is
# authorized without polkitd; polkit allows, denies, and asks for interaction by rule;
# nonzero flags give InvalidArgs; a domain errno goes out under its mapped name;
# PropertiesChanged is emitted; the pending-query bound refuses the excess at once
# (LimitsExceeded) while the rest wait and then succeed; 100 concurrent callers all
# succeed; pending callers get an answer when the service stops; without polkitd only root
# is authorized, with a clear error.
#
# Usage: test-bus-polkit.sh /path/to/club-bus-test-service /path/to/club-bus-test-client
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root, or a prerequisite is missing
# and CLUB_TEST_STRICT is not 1).
set -euo pipefail

SERVICE=${1:-}
CLIENT=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
BUSDIR=$HERE/bus
TEST_NAME=club.inference.Test1
TEST_PATH=/club/inference/Test1

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
if [ -z "$SERVICE" ] || [ ! -x "$SERVICE" ] || [ -z "$CLIENT" ] || [ ! -x "$CLIENT" ]; then
        echo "usage: $0 CLUB-BUS-TEST-SERVICE CLUB-BUS-TEST-CLIENT" >&2
        exit 1
fi
[ "$(id -u)" = 0 ] || skip "not root"
for p in dbus-daemon busctl unshare setpriv getent timeout; do
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

# Re-run inside private mount and PID namespaces: every bind mount below vanishes with
# them, and when this script ends — even by SIGKILL — the kernel kills every process it
# started (it is PID 1 there; unshare's --kill-child covers unshare itself being killed).
UNSHARE=(unshare --mount --propagation private --pid --fork --kill-child --mount-proc)
if [ "${CLUB_BUS_TEST_IN_NAMESPACE:-}" != 1 ]; then
        "${UNSHARE[@]}" true 2>/dev/null || skip "cannot create mount and PID namespaces"
        exec env CLUB_BUS_TEST_IN_NAMESPACE=1 "${UNSHARE[@]}" "$0" "$@"
fi

# A tmpfs of our own: if the test is killed, nothing but this empty directory stays.
T=$(mktemp -d /tmp/club-bus-polkit.XXXXXX)
mount -t tmpfs -o mode=755,size=64m club-bus-polkit "$T" || { rmdir "$T"; skip "cannot mount a tmpfs"; }
PIDS=()
POLKIT_PID="" SERVICE_PID=""
pass=0 fail=0

cleanup() {
        local rc=$?
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
        umount --lazy "$T"     # lazy: /etc/passwd and /etc/group are bind mounts from it
        rmdir "$T"
        exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
show() { sed 's/^/# /' "$@" 2>/dev/null || true; }
T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 )) ms"; }

# wait_for SECONDS COMMAND…: poll every 50 ms.
wait_for() {
        local n=$(( $1 * 20 )); shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
        return 1
}

# ---- users, in copies of /etc/passwd and /etc/group -------------------------------------
free_id() {
        local id=$1
        while getent passwd "$id" >/dev/null || getent group "$id" >/dev/null; do id=$((id + 1)); done
        echo "$id"
}
cp /etc/passwd "$T/passwd"
cp /etc/group "$T/group"
declare -A UID_OF
next=61900
for u in club-test-allowed club-test-denied club-test-auth; do
        id=$(free_id $next)
        next=$((id + 1))
        UID_OF[$u]=$id
        echo "$u:x:$id:$id:club test user:/nonexistent:/usr/sbin/nologin" >> "$T/passwd"
        echo "$u:x:$id:" >> "$T/group"
done
chmod 644 "$T/passwd" "$T/group"
mount --bind "$T/passwd" /etc/passwd
mount --bind "$T/group" /etc/group

# ---- polkit configuration: only the test's action and rules ------------------------------
mkdir -p "$T/actions" "$T/rules" "$T/empty"
cp "$BUSDIR/club.inference.test1.policy" "$T/actions/"
cp "$BUSDIR/50-club-bus-test.rules" "$T/rules/"
chmod -R a+rX "$T/actions" "$T/rules" "$T/empty"
mount --bind "$T/actions" /usr/share/polkit-1/actions
mount --bind "$T/rules" /etc/polkit-1/rules.d
mount --bind "$T/empty" /usr/share/polkit-1/rules.d

# ---- binaries the test users can run ------------------------------------------------------
mkdir -p "$T/bin"
install -m 755 "$SERVICE" "$T/bin/club-bus-test-service"
install -m 755 "$CLIENT" "$T/bin/club-bus-test-client"
SERVICE=$T/bin/club-bus-test-service
CLIENT=$T/bin/club-bus-test-client

# ---- the private system bus ---------------------------------------------------------------
cp -r "$BUSDIR" "$T/bus"
mkdir -p "$T/bus/system.d"
cp "$POLKIT_BUS_CONF" "$T/bus/system.d/"
ADDR=unix:path=$T/system_bus_socket
export DBUS_SYSTEM_BUS_ADDRESS=$ADDR
dbus-daemon --config-file="$T/bus/bus.conf" --address="$ADDR" --nofork --nopidfile \
        > "$T/dbus.log" 2>&1 &
PIDS+=("$!")
if wait_for 5 busctl --address="$ADDR" list --no-pager; then
        ok "private dbus-daemon answers as the system bus"
else
        bad "private dbus-daemon"; show "$T/dbus.log"; exit 1
fi

start_polkitd() {
        "$POLKITD" --no-debug >> "$T/polkitd.log" 2>&1 &
        POLKIT_PID=$!
        PIDS+=("$POLKIT_PID")
        wait_for 10 busctl --address="$ADDR" status org.freedesktop.PolicyKit1
}
if start_polkitd; then
        ok "polkitd owns org.freedesktop.PolicyKit1 (as user $(ps -o user= -p $POLKIT_PID))"
else
        bad "polkitd did not start"; show "$T/polkitd.log"; exit 1
fi

# start_service LOG [OPTIONS…]: run the test service, wait for its name.
start_service() {
        local log=$1; shift
        CLUB_LOG_LEVEL=debug "$SERVICE" "$@" > "$log" 2>&1 &
        SERVICE_PID=$!
        PIDS+=("$SERVICE_PID")
        wait_for 5 busctl --address="$ADDR" status "$TEST_NAME"
}
# stop_service: SIGTERM, and the status it exited with.
stop_service() {
        local rc=0
        kill "$SERVICE_PID"
        wait "$SERVICE_PID" || rc=$?
        return $rc
}
# Nothing at warning level or above in a service log (its lines carry "<N>" prefixes).
log_clean() {
        ! grep -q '^<[0-4]>' "$1" && return 0
        grep '^<[0-4]>' "$1" | sed 's/^/# /'
        return 1
}

if start_service "$T/service1.log"; then
        ok "club-bus-test-service owns $TEST_NAME (bus policy lets root own it)"
else
        bad "service did not start"; show "$T/service1.log"; exit 1
fi

# ---- helpers for callers --------------------------------------------------------------------
# as USER COMMAND…: run as a test user, no supplementary groups, clean environment.
as() {
        local u=$1; shift
        local id=${UID_OF[$u]}
        setpriv --reuid="$id" --regid="$id" --clear-groups \
                env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DBUS_SYSTEM_BUS_ADDRESS="$ADDR" "$@"
}
BUSCTL=(busctl --address="$ADDR" --timeout=10)
bcall() { "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" "$@" 2>&1; }
counter() { "${BUSCTL[@]}" get-property "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Counter 2>&1; }
# expect WHAT GOT WANT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }
# expect_in WHAT HAYSTACK NEEDLE
expect_in() { if [[ "$2" == *"$3"* ]]; then ok "$1"; else bad "$1: '$3' not in: $2"; fi; }

# ---- bus policy -------------------------------------------------------------------------------
out=$(as club-test-allowed timeout 5 "$SERVICE" 2>&1 || true)
expect_in "bus policy: an unprivileged user cannot own $TEST_NAME" "$out" "Permission denied"

# ---- properties need no privilege --------------------------------------------------------------
expect "Counter is readable by a denied user, without polkit" \
        "$(as club-test-denied "${BUSCTL[@]}" get-property "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Counter 2>&1)" "t 0"

# ---- root: authorized without polkit (polkitd is frozen while root calls) ----------------------
kill -STOP "$POLKIT_PID"
out=$("${BUSCTL[@]}" --timeout=5 call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Poke t 0 2>&1 || true)
kill -CONT "$POLKIT_PID"
expect "root is authorized without asking polkit (polkitd stopped)" "$out" "t 1"
check "service log: root authorized without polkit" grep -q 'from root: authorized without polkit' "$T/service1.log"

# ---- polkit verdicts by rule ---------------------------------------------------------------------
expect "allowed user: Poke authorized by polkit (busctl)" \
        "$(as club-test-allowed "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Poke t 0 2>&1)" "t 2"

out=$(as club-test-denied "$CLIENT" poke 2>&1 || true)
expect_in "denied user: org.freedesktop.DBus.Error.AccessDenied" "$out" "error=org.freedesktop.DBus.Error.AccessDenied"
expect_in "denied user: the message names the action" "$out" "polkit denied action club.inference.test1.poke"
out=$(as club-test-denied "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Poke t 0 2>&1 || true)
expect_in "denied user via busctl: access denied" "$out" "Access denied"
expect "denied calls changed nothing" "$(counter)" "t 2"

out=$(as club-test-auth "$CLIENT" poke 2>&1 || true)
expect_in "auth_admin user without interaction: InteractiveAuthorizationRequired" "$out" \
        "error=org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
out=$(as club-test-auth "$CLIENT" --interactive poke 2>&1 || true)
expect_in "auth_admin user, interaction allowed but no agent: AccessDenied" "$out" \
        "error=org.freedesktop.DBus.Error.AccessDenied"

# ---- the trailing flags argument --------------------------------------------------------------------
out=$(as club-test-allowed "$CLIENT" --flags=2 poke 2>&1 || true)
expect_in "Poke with flags=2: InvalidArgs" "$out" "error=org.freedesktop.DBus.Error.InvalidArgs"
out=$(as club-test-denied "$CLIENT" --flags=1 lookup answer 2>&1 || true)
expect_in "Lookup with flags=1: InvalidArgs" "$out" "error=org.freedesktop.DBus.Error.InvalidArgs"
out=$(as club-test-denied "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Lookup st answer 4 2>&1 || true)
expect_in "Lookup with flags=4 via busctl: the message says why" "$out" "Unsupported flags 0x4"
expect "flags=0: Lookup answers (unprivileged, busctl)" \
        "$(as club-test-denied "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Lookup st answer 0 2>&1)" 's "42"'
expect "bad flags changed nothing" "$(counter)" "t 2"

# ---- the errno -> error name map ----------------------------------------------------------------------
out=$(as club-test-denied "$CLIENT" lookup nothing 2>&1 || true)
expect_in "-ENOKEY goes out as club.inference.Test1.Error.NoSuchKey" "$out" "error=club.inference.Test1.Error.NoSuchKey"

# ---- PropertiesChanged ------------------------------------------------------------------------------------
out=$(as club-test-allowed "$CLIENT" watch-poke 2>&1 || true)
if [[ "$out" == *"counter=3"* && "$out" == *"signal=3"* ]]; then
        ok "Poke emits PropertiesChanged with the new Counter (3)"
else
        bad "PropertiesChanged: $out"
fi

# ---- the pending-query bound (default 64): polkitd frozen, 100 calls on one connection ----------------
kill -STOP "$POLKIT_PID"
as club-test-allowed "$CLIENT" --timeout=30 burst 100 > "$T/burst1.out" 2>&1 &
BURST_PID=$!
PIDS+=("$BURST_PID")
if wait_for 10 grep -q '^barrier' "$T/burst1.out"; then
        expect "bound: the 36 calls beyond 64 are refused at once, 64 wait" \
                "$(grep '^barrier' "$T/burst1.out")" "barrier ok=0 errors=36"
else
        bad "bound: no barrier reply within 10 s (a hang?)"; show "$T/burst1.out"
fi
kill -CONT "$POLKIT_PID"
wait "$BURST_PID" || true
expect "bound: once polkit answers, the 64 succeed, each exactly once" \
        "$(grep '^done' "$T/burst1.out")" "done ok=64 limits=36 other=0 replies=100/100 contiguous=yes"
out=$(as club-test-denied "$CLIENT" poke 2>&1 || true)
expect_in "bound: room again afterwards (a denied call is decided again)" "$out" "error=org.freedesktop.DBus.Error.AccessDenied"

if stop_service; then ok "service stops cleanly on SIGTERM"; else bad "service exit status $?"; fi
check "service log: no warnings or errors" log_clean "$T/service1.log"

# ---- 100 concurrent callers with a bound of 128 -----------------------------------------------------
if start_service "$T/service2.log" --max-pending=128; then
        ok "service restarted with --max-pending=128"
else
        bad "service did not restart"; show "$T/service2.log"; exit 1
fi

# 100 busctl processes at once, each its own connection.
t1=$(date +%s%N)
PAR=()
for i in $(seq 100); do
        as club-test-allowed "${BUSCTL[@]}" --timeout=30 call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Poke t 0 \
                > "$T/par.$i" 2>&1 &
        PAR+=("$!")
        PIDS+=("$!")
done
wait_rc=0
for p in "${PAR[@]}"; do wait "$p" || wait_rc=1; done
t2=$(date +%s%N)
n_ok=$(cat "$T"/par.* | grep -c '^t [0-9]*$' || true)
n_distinct=$(cat "$T"/par.* | grep '^t [0-9]*$' | sort -u | wc -l)
if [ "$n_ok" = 100 ] && [ "$n_distinct" = 100 ] && [ "$wait_rc" = 0 ]; then
        ok "100 concurrent busctl calls from the allowed user all succeed, 100 distinct counters ($(( (t2 - t1) / 1000000 )) ms)"
else
        bad "concurrent busctl: ok=$n_ok distinct=$n_distinct"; cat "$T"/par.* | grep -v '^t ' | sort | uniq -c | show /dev/stdin
fi
expect "counter after 100 concurrent calls" "$(counter)" "t 100"

# 100 calls pending at polkit at the same time (polkitd frozen), then all answered.
kill -STOP "$POLKIT_PID"
as club-test-allowed "$CLIENT" --timeout=30 burst 100 > "$T/burst2.out" 2>&1 &
BURST_PID=$!
PIDS+=("$BURST_PID")
if wait_for 10 grep -q '^barrier' "$T/burst2.out"; then
        expect "100 calls pending at once, none refused" "$(grep '^barrier' "$T/burst2.out")" "barrier ok=0 errors=0"
else
        bad "no barrier reply within 10 s"; show "$T/burst2.out"
fi
kill -CONT "$POLKIT_PID"
wait "$BURST_PID" || true
expect "all 100 pending calls authorized, each exactly once" \
        "$(grep '^done' "$T/burst2.out")" "done ok=100 limits=0 other=0 replies=100/100 contiguous=yes"
expect "counter after the burst" "$(counter)" "t 200"

# ---- stopping with a check pending: the caller gets an answer, not a timeout ----------------------------
kill -STOP "$POLKIT_PID"
n_before=$(grep -c 'polkit: checking' "$T/service2.log" || true)
as club-test-allowed "$CLIENT" --timeout=20 poke > "$T/cancel.out" 2>&1 &
CANCEL_PID=$!
PIDS+=("$CANCEL_PID")
pending_seen() { [ "$(grep -c 'polkit: checking' "$T/service2.log")" -gt "$n_before" ]; }
wait_for 5 pending_seen || bad "the call never reached the service"
sleep 0.1       # let the uid lookup finish: the check is now at polkitd
if stop_service; then ok "service stops cleanly with a check pending"; else bad "service exit status $?"; fi
wait "$CANCEL_PID" || true
kill -CONT "$POLKIT_PID"
out=$(cat "$T/cancel.out")
expect_in "pending caller answered on stop: NoReply" "$out" "error=org.freedesktop.DBus.Error.NoReply"
expect_in "pending caller answered on stop: says cancelled" "$out" "cancelled: the service is shutting down"
check "service log: the pending check was cancelled as the loop exited" \
        grep -q 'event loop exiting, cancelling 1 pending check(s)' "$T/service2.log"
check "service log: no warnings or errors" log_clean "$T/service2.log"

# ---- without polkitd ---------------------------------------------------------------------------------------
kill "$POLKIT_PID"
wait "$POLKIT_PID" 2>/dev/null || true
wait_for 5 sh -c "! busctl --address='$ADDR' status org.freedesktop.PolicyKit1" || bad "polkitd still on the bus"
if start_service "$T/service3.log"; then
        out=$(as club-test-allowed "$CLIENT" poke 2>&1 || true)
        expect_in "no polkitd: non-root gets AccessDenied" "$out" "error=org.freedesktop.DBus.Error.AccessDenied"
        expect_in "no polkitd: a clear message" "$out" "message=polkit is not available; only root may call Poke()."
        expect "no polkitd: root is still authorized" "$(bcall Poke t 0)" "t 1"
        expect "no polkitd: properties still readable" \
                "$(as club-test-denied "${BUSCTL[@]}" get-property "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Counter 2>&1)" "t 1"
        if stop_service; then ok "service stops cleanly"; else bad "service exit status $?"; fi
        check "service log: no warnings or errors" log_clean "$T/service3.log"
else
        bad "service did not start without polkitd"; show "$T/service3.log"
fi

if [ "$fail" -gt 0 ]; then
        for f in "$T"/polkitd.log "$T"/dbus.log; do echo "# --- $f"; show "$f"; done
fi
echo "# $pass passed, $fail failed, $(elapsed)"
[ "$fail" -eq 0 ]
