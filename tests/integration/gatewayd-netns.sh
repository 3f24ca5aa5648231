# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by the gateway's namespace tests (test-gatewayd-register.sh,
# test-gatewayd-heartbeat.sh): prerequisites, cleanup, check helpers, and the two namespaces
# ("vps" with the hub's wireguard-go, "agent") joined by a veth.
#
# The caller sets before sourcing: TEST (a name for the temporary directory), ID (unique, e.g.
# $$), NS and NSA (the namespaces), IF and AIF (hub and agent interfaces, ≤ 15 characters:
# /run/wireguard is shared by all namespaces). It gets: $tmp, $PY, $RUNDIR, skip, ok, fail,
# check, config_refused, in_ns, in_agent, wait_for, netns_setup UNDERLAY-PREFIX,
# start_agent_wg, make_cert (a throwaway CA and a certificate, with openssl),
# start_hub_gateway and start_test_upstream
# (below); and the pid variables wgpid (hub), awgpid (agent), gwpid and srvpid, which cleanup
# stops on exit.
# Tests with more namespaces use netns_add NAME UNDERLAY-PREFIX (another namespace joined to
# "vps" by its own veth) and extra_pid PID / extra_sock IFNAME for what cleanup must stop.

PY=/usr/bin/python3
RUNDIR=/run/wireguard

skip() {
        echo "SKIP: $*"
        [ "${CLUB_TEST_STRICT:-0}" = 1 ] && exit 1
        exit 77
}
[ "$(id -u)" = 0 ] || skip "not root"
for t in wireguard-go wg ip curl ping "$PY"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done
[ -c /dev/net/tun ] || skip "no /dev/net/tun"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/$TEST.XXXXXX")
umask 077
wgpid= gwpid= awgpid= srvpid= netns_made=0 nsa_made=0 rundir_made=0
extra_ns=() extra_pids=() extra_socks=()

cleanup() {
        local p n
        for p in "$srvpid" "$gwpid" "$wgpid" "$awgpid" "${extra_pids[@]}"; do
                [ -n "$p" ] && kill "$p" 2>/dev/null
        done
        sleep 0.2
        for p in "$srvpid" "$gwpid" "$wgpid" "$awgpid" "${extra_pids[@]}"; do
                [ -n "$p" ] && kill -9 "$p" 2>/dev/null
        done
        wait 2>/dev/null
        [ "$netns_made" = 1 ] && ip netns del "$NS" 2>/dev/null
        [ "$nsa_made" = 1 ] && ip netns del "$NSA" 2>/dev/null
        for n in "${extra_ns[@]}"; do
                ip netns del "$n" 2>/dev/null
        done
        rm -f "$RUNDIR/$IF.sock" "$RUNDIR/$AIF.sock"
        for n in "${extra_socks[@]}"; do
                rm -f "$RUNDIR/$n.sock"
        done
        [ "$rundir_made" = 1 ] && rmdir "$RUNDIR" 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }
check() {  # DESCRIPTION COMMAND...
        local what=$1
        shift
        if "$@"; then ok "$what"; else fail "$what"; fi
}
# `club-gatewayd --check-config -c FILE` exits 1 and its output holds every LINE, verbatim
# (e.g. "bad.conf:2: Invalid value for [Public] KeepAliveInterval=2h"); the output is shown
# on failure.
config_refused() {  # DESCRIPTION FILE LINE...
        local what=$1 conf=$2 rc line missing=
        shift 2
        "$GATEWAYD" --check-config -c "$conf" >"$conf.log" 2>&1
        rc=$?
        for line; do grep -qF -- "$line" "$conf.log" || missing+=" '$line'"; done
        if [ "$rc" = 1 ] && [ -z "$missing" ]; then ok "$what"; return; fi
        fail "$what: exit $rc, missing:${missing:- nothing}"
        sed 's/^/# /' "$conf.log"
}
in_ns() { ip netns exec "$NS" "$@"; }
in_agent() { ip netns exec "$NSA" "$@"; }
wait_for() {  # SECONDS COMMAND...
        local n=$(($1 * 10))
        shift
        while ((n-- > 0)); do
                "$@" && return 0
                sleep 0.1
        done
        return 1
}

# Both namespaces, the veth (UNDERLAY.1 in vps, UNDERLAY.2 in agent), and the hub's
# wireguard-go. Not through in_ns: a backgrounded function is a subshell, and $! would not be
# the daemon.
netns_setup() {  # UNDERLAY-PREFIX, e.g. 10.79.0
        [ -d "$RUNDIR" ] || { mkdir -p "$RUNDIR" && rundir_made=1; }
        ip netns add "$NS" || skip "cannot create a network namespace"
        netns_made=1
        ip -n "$NS" link set lo up
        ip netns add "$NSA"
        nsa_made=1
        ip -n "$NSA" link set lo up
        ip link add gv$ID netns "$NS" type veth peer name ga$ID netns "$NSA"
        ip -n "$NS" addr add "$1.1/24" dev gv$ID
        ip -n "$NS" link set gv$ID up
        ip -n "$NSA" addr add "$1.2/24" dev ga$ID
        ip -n "$NSA" link set ga$ID up
        ip netns exec "$NS" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$IF" >"$tmp/hub-wg.log" 2>&1 &
        wgpid=$!
        wait_for 5 test -S "$RUNDIR/$IF.sock" || { fail "wireguard-go did not start for the hub"; cat "$tmp/hub-wg.log"; exit 1; }
}

start_agent_wg() {
        ip netns exec "$NSA" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$AIF" >"$tmp/agent-wg.log" 2>&1 &
        awgpid=$!
        wait_for 5 test -S "$RUNDIR/$AIF.sock" || { fail "wireguard-go did not start for the agent"; cat "$tmp/agent-wg.log"; exit 1; }
}

# make_cert DIR SUBJECT-ALT-NAME (e.g. IP:10.84.0.1, DNS:gw.test): a throwaway CA in
# DIR/ca.crt and a certificate it signed for that name in DIR/server.crt, key DIR/server.key.
make_cert() {
        local d=$1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=club test CA" \
                -keyout "$d/ca.key" -out "$d/ca.crt" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=club test server" \
                -keyout "$d/server.key" -out "$d/server.csr" &&
        openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial 0x4242 -days 1 \
                -extfile <(echo "subjectAltName=$2") -out "$d/server.crt"
} 2>>"$tmp/openssl.log" >/dev/null

# start_hub_gateway UNDERLAY-PREFIX PROBE-INTERVAL: club-gatewayd ($GATEWAYD) in "vps" with the
# hub on $IF, no D-Bus, its store in $tmp/gw-state, public listener UNDERLAY.1:8080 (plain
# http), its log in $tmp/gatewayd.log; its keys from $ADMIN in $tmp/keys. Waits until the
# agent namespace reaches it.
start_hub_gateway() {
        mkdir -m 0700 "$tmp/gw-state"
        cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/gw-state/store.db
LogLevel=debug
DBus=no
ProbeInterval=$2

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=$1.1:51820
CONF
        "$ADMIN" "$tmp/gw-state/store.db" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen "$1.1:8080" >>"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        wait_for 10 in_agent curl -sf -o /dev/null "http://$1.1:8080/healthz" ||
                { fail "club-gatewayd did not start"; cat "$tmp/gatewayd.log"; exit 1; }
}

# start_test_upstream MODELS: club-test-upstream ($UPSTREAM, named "local") on loopback in the
# agent namespace, its output in $tmp/upstream.out; sets UPORT to its port.
start_test_upstream() {
        ip netns exec "$NSA" "$UPSTREAM" --port 0 --models "$1" --name local >"$tmp/upstream.out" 2>&1 &
        srvpid=$!
        wait_for 5 grep -q '^PORT=' "$tmp/upstream.out" ||
                { fail "club-test-upstream did not start"; cat "$tmp/upstream.out"; exit 1; }
        UPORT=$(sed -n 's/^PORT=//p' "$tmp/upstream.out")
}

extra_pid() { extra_pids+=("$1"); }
extra_sock() { extra_socks+=("$1"); }

# Another namespace joined to "vps" by a veth: UNDERLAY.1 in vps, UNDERLAY.2 in it.
netns_add() {  # NAME UNDERLAY-PREFIX, e.g. clubapib$ID 10.77.2
        local k=${#extra_ns[@]}
        ip netns add "$1" || { fail "cannot create the namespace $1"; exit 1; }
        extra_ns+=("$1")
        ip -n "$1" link set lo up
        ip link add g${k}v$ID netns "$NS" type veth peer name g${k}a$ID netns "$1"
        ip -n "$NS" addr add "$2.1/24" dev g${k}v$ID
        ip -n "$NS" link set g${k}v$ID up
        ip -n "$1" addr add "$2.2/24" dev g${k}a$ID
        ip -n "$1" link set g${k}a$ID up
}
