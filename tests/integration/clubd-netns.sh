# SPDX-License-Identifier: LGPL-2.1-or-later
#
# clubd-netns.sh — sourced by the agent's D-Bus tests (test-clubd-bus.sh,
# test-clubctl-register.sh) and by bench/two-hop.sh: clubd on a private system bus, in an
# "agent" network namespace with its own wireguard-go, and a real club-gatewayd with its
# wireguard-go hub in a "vps" namespace, joined by a veth. It combines private-bus.sh (the
# bus, polkitd, users) and gatewayd-netns.sh (the namespaces, the hub); the test script does,
# in this order:
#
#   TEST=…                                      a name for the temporary directories
#   NAMES=xy                                    unique two letters: namespaces clubxyv$ID
#                                               ("vps") and clubxya$ID ("agent"), interfaces
#                                               xyh$ID and xya$ID, ID the test's pid
#   REQUIRE=(PROGRAM…)                          what else the test needs, or ()
#   . "$(dirname "$0")/clubd-netns.sh"          takes the test's arguments (CLUBD CLUBCTL
#                                               CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER
#                                               CLUB-TEST-UPSTREAM [CLUB-HEARTBEAT-HELPER
#                                               → $HB]), checks prerequisites,
#                                               re-executes the script in private mount and
#                                               PID namespaces, makes $T (tmpfs) and $tmp,
#                                               one cleanup for both; sets HERE and SRC (the
#                                               source tree)
#   pb_add_users / pb_polkit_config / pb_start_bus …   as private-bus.sh describes
#   clubd_netns_setup UNDERLAY-PREFIX           the namespaces, both wireguard-go, the
#                                               gateway at $GWURL (UNDERLAY.1:8080, plain
#                                               http on the veth, so register needs
#                                               --insecure), its keys (key NAME), the test
#                                               upstream in the agent namespace (models
#                                               $MODELS), clubd's configuration
#   start_clubd LOG / stop_clubd                clubd in the agent namespace on the bus
#
# Helpers: agent_prop NAME (busctl get-property, as root), agent_state (the bare State),
# online_count (the gateway's /healthz providers_online), ctl USER ARGS… (clubctl as USER
# or "root", standard input /dev/null; sets $out and $rc), expect_ctl WHAT RC NEEDLE… (the
# last ctl exited RC and printed every NEEDLE). Everything started is stopped on exit,
# also when the test is killed (the namespaces die with the script).

if [ $# != 5 ] && [ $# != 6 ]; then
        echo "usage: $0 CLUBD CLUBCTL CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-TEST-UPSTREAM [CLUB-HEARTBEAT-HELPER]" >&2
        exit 1
fi
CLUBD=$1 CLUBCTL=$2 GATEWAYD=$3 ADMIN=$4 UPSTREAM=$5 HB=${6:-}
for p in "$CLUBD" "$CLUBCTL" "$GATEWAYD" "$ADMIN" "$UPSTREAM" ${HB:+"$HB"}; do
        [ -x "$p" ] || { echo "FAIL - $p is not an executable"; exit 1; }
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
# In the PID namespace $$ is 1: the outer script's pid goes in with the environment.
ID=${CLUBD_NETNS_ID:-$$}
export CLUBD_NETNS_ID=$ID
NS=club${NAMES}v$ID NSA=club${NAMES}a$ID IF=${NAMES}h$ID AIF=${NAMES}a$ID

. "$HERE/private-bus.sh"
pb_require wireguard-go wg ip curl ping /usr/bin/python3 "${REQUIRE[@]}"
[ -c /dev/net/tun ] || skip "no /dev/net/tun"
pb_enter_namespace "$0" "$@"

# In the namespaces now. $TMPDIR is a tmpfs of our own, so that $tmp and $T (keys, logs,
# state) vanish with the mount namespace even when the test is killed with SIGKILL. Not
# over /tmp itself: the checkout and its build directory may live there.
export TMPDIR=/run/club-tests
mkdir -p "$TMPDIR" || skip "cannot make $TMPDIR"
mount -t tmpfs -o mode=1777,size=256m "$TEST" "$TMPDIR" || skip "cannot mount a tmpfs on $TMPDIR"
# gatewayd-netns.sh makes $tmp and its cleanup; private-bus.sh is
# sourced again afterwards so that its helpers (ok, check, wait_for…) and its counts are the
# ones in force (nothing has started yet, so resetting its variables loses nothing).
. "$HERE/gatewayd-netns.sh"
. "$HERE/private-bus.sh"
umask 022               # gatewayd-netns.sh's 077 would hide $T/bin from the test users ($tmp is 0700)
pb_setup "$TEST"
# The namespaces' files and the WireGuard sockets on tmpfs mounts of our own: even a test
# killed with SIGKILL leaves nothing behind in the host's /run/netns and /run/wireguard.
for d in /run/netns "$RUNDIR"; do
        mkdir -p "$d"
        mount -t tmpfs -o mode=755,size=1m "$TEST" "$d" || skip "cannot mount a tmpfs on $d"
done
clubd_netns_cleanup() {
        local rc=$?
        # gatewayd-netns.sh's cleanup (the gateway, wireguard-go, namespaces, $tmp) in a
        # subshell: its bare `wait` would otherwise wait for the bus and polkitd, which
        # pb_cleanup stops only afterwards (and then reaps everything).
        (cleanup)
        (exit $rc)
        pb_cleanup              # private-bus.sh: PIDS, $T; exits with rc
}
trap clubd_netns_cleanup EXIT

CLUBD_PID=""
CLUBD_NAME=club.inference.Agent1
CLUBD_PATH=/club/inference/Agent1
MODELS="club-test-a,club-test-b"

# clubctl where the test users can run it.
pb_install_bin "$CLUBCTL"
CTL=$T/bin/$(basename "$CLUBCTL")

key() { sed -n "s/^$1=//p" "$tmp/keys"; }

clubd_netns_setup() {  # UNDERLAY-PREFIX, e.g. 10.83.0
        netns_setup "$1"
        start_agent_wg
        GWURL=http://$1.1:8080
        start_hub_gateway "$1" 1h
        start_test_upstream "$MODELS"

        mkdir -m 0700 "$tmp/agent-state"
        cat >"$tmp/clubd.conf" <<CONF
[Agent]
LogLevel=debug
StateDirectory=$tmp/agent-state

[Mesh]
Interface=$AIF

[Proxy]
Listen=127.0.0.1:8091

[Upstream]
Name=local
URL=http://127.0.0.1:$UPORT/v1
CONF
}

# start_clubd LOG: clubd in the agent namespace, on the private bus; waits for its name.
start_clubd() {
        ip netns exec "$NSA" env DBUS_SYSTEM_BUS_ADDRESS="$ADDR" "$CLUBD" -c "$tmp/clubd.conf" >>"$1" 2>&1 &
        CLUBD_PID=$!
        PIDS+=("$CLUBD_PID")
        wait_for 10 busctl --address="$ADDR" status "$CLUBD_NAME"
}

# stop_clubd: SIGTERM; returns clubd's exit status.
stop_clubd() {
        local rc=0
        kill "$CLUBD_PID"
        wait "$CLUBD_PID" || rc=$?
        CLUBD_PID=""
        return $rc
}

agent_prop() { busctl --address="$ADDR" get-property "$CLUBD_NAME" "$CLUBD_PATH" "$CLUBD_NAME" "$1" 2>&1; }
agent_state() { agent_prop State | sed -n 's/^s "\(.*\)"$/\1/p'; }
online_count() {
        in_agent curl -s -m 5 "$GWURL/healthz" |
                /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["providers_online"])' 2>/dev/null
}

ctl() {  # USER|root ARGS…
        local u=$1
        shift
        if [ "$u" = root ]; then
                out=$("$CTL" "$@" 2>&1 </dev/null)
        else
                out=$(as "$u" "$CTL" "$@" 2>&1 </dev/null)
        fi
        rc=$?
}

expect_ctl() {  # WHAT RC NEEDLE…
        local what=$1 want=$2 n
        shift 2
        if [ "$rc" != "$want" ]; then
                bad "$what: exit status $rc, want $want; output: $out"
                return
        fi
        for n in "$@"; do
                if [[ "$out" != *"$n"* ]]; then
                        bad "$what: '$n' not in: $out"
                        return
                fi
        done
        ok "$what"
}
