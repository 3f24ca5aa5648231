#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-bus-polkit.sh — lib/bus-util and lib/polkit end to end, on a private system bus.
#
# Through the shared harness private-bus.sh, in private mount and PID namespaces: the real
# dbus-daemon with tests/integration/bus/bus.conf (a "system" bus at a socket in a temporary
# directory, exported as DBUS_SYSTEM_BUS_ADDRESS), the real polkitd (started as root; it drops to its own user)
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
. "$HERE/private-bus.sh"

if [ -z "$SERVICE" ] || [ ! -x "$SERVICE" ] || [ -z "$CLIENT" ] || [ ! -x "$CLIENT" ]; then
        echo "usage: $0 CLUB-BUS-TEST-SERVICE CLUB-BUS-TEST-CLIENT" >&2
        exit 1
fi
pb_require
pb_enter_namespace "$0" "$@"
pb_setup club-bus-polkit
SERVICE_PID=""

pb_add_users club-test-allowed club-test-denied club-test-auth
pb_polkit_config "$BUSDIR/club.inference.test1.policy" -- "$BUSDIR/50-club-bus-test.rules"

# Binaries the test users can run.
pb_install_bin "$SERVICE" "$CLIENT"
SERVICE=$T/bin/$(basename "$SERVICE")
CLIENT=$T/bin/$(basename "$CLIENT")

pb_start_bus "$BUSDIR/club.inference.Test1.conf"
pb_start_polkitd

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

if start_service "$T/service1.log"; then
        ok "club-bus-test-service owns $TEST_NAME (bus policy lets root own it)"
else
        bad "service did not start"; show "$T/service1.log"; exit 1
fi

# ---- helpers for callers (as USER … comes from private-bus.sh) ------------------------------
# A generous timeout: the checks are about answers, not speed; polkitd on a loaded machine
# once took over 10 s to refuse an interactive check.
BUSCTL=(busctl --address="$ADDR" --timeout=60)
bcall() { "${BUSCTL[@]}" call "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" "$@" 2>&1; }
counter() { "${BUSCTL[@]}" get-property "$TEST_NAME" "$TEST_PATH" "$TEST_NAME" Counter 2>&1; }

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

pb_finish
