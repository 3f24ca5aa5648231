#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-clubd-mesh.sh CLUBD CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM
#
# clubd joins the network, as root, for real: namespace "vps" runs club-gatewayd (public
# listener on the veth, 10.86.0.1:8080, plain HTTP) with its wireguard-go hub; namespace
# "agent" runs clubd with its own wireguard-go for the club0 spoke and club-test-upstream on
# loopback. clubd is on a private dbus-daemon; root needs no polkitd. busctl drives it.
# Checks:
#  - without a registration: State "unregistered";
#  - Register over plain http:// to a non-loopback gateway without the flag: InsecureGateway;
#    with a key the gateway does not know: KeyRejected carrying the gateway's message and code;
#  - Register with an agent key and flag 1: the provider id and mesh address come back, the
#    state file is 0600 and holds no API key, the spoke has exactly the gateway as peer and
#    the mesh address, heartbeats bring State to "online" and the gateway counts it online;
#  - from the vps namespace, a request signed with the provider's secret to
#    MESH:8090/v1/chat/completions streams back from the upstream; unsigned: 401
#    missing_signature; the same signature again: 401 replayed_signature; another secret:
#    401 invalid_signature; from another address (the mesh address itself, inside the agent
#    namespace): 403 forbidden_source; the veth address through the tunnel gets nothing
#    (WireGuard drops it); /healthz needs no signature and lists the capability;
#  - a capability: signed POST /api/v1/capabilities/embed/exec reaches its local URL; an
#    unknown one: 404; the gateway's own /healthz probe (ProbeInterval=1s) keeps it online;
#  - Drain: State "draining", the mesh listener answers 503 agent_draining, the gateway no
#    longer counts it online; Resume: online again; Reload keeps the models;
#  - restart: clubd comes back online from the saved state, without any key;
#  - the sandbox self-test refuses execve and ptrace inside the running daemon, which keeps
#    serving;
#  - the provider deleted on the gateway: the next heartbeat makes State "error" with a
#    reason that says to register again;
#  - Unregister: the state file is gone, the spoke has no peer and no address, State
#    "unregistered"; the API key and the secret never appear in clubd's log.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

USAGE="usage: $0 CLUBD CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM"
CLUBD=${1:?$USAGE}
GATEWAYD=${2:?$USAGE}
ADMIN=${3:?$USAGE}
HB=${4:?$USAGE}
UPSTREAM=${5:?$USAGE}
TEST=test-clubd-mesh
ID=$$
NS=clubmv$ID
NSA=clubma$ID
IF=cmh$ID
AIF=cma$ID
. "$(dirname "${BASH_SOURCE[0]}")/gatewayd-netns.sh"
for t in dbus-daemon busctl; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done

UNDERLAY=10.86.0
GWURL=http://$UNDERLAY.1:8080
NAME=club.inference.Agent1
OPATH=/club/inference/Agent1
PORT=8090
buspid= clubdpid= cappid=

# The harness's cleanup, and ours before it.
mesh_cleanup() {
        local p
        for p in "$clubdpid" "$buspid" "$cappid"; do
                [ -n "$p" ] && kill "$p" 2>/dev/null
        done
        [ -n "$clubdpid" ] && { sleep 0.3; kill -9 "$clubdpid" 2>/dev/null; }
        cleanup
}
trap mesh_cleanup EXIT

# ---- the namespaces, the hub, the gateway ------------------------------------------------------
netns_setup "$UNDERLAY"
start_agent_wg

start_hub_gateway "$UNDERLAY" 1s
AGENTKEY=$(sed -n 's/^agent=//p' "$tmp/keys")
[ -n "$AGENTKEY" ] || { fail "the admin helper made no agent key"; exit 1; }
online_count() { in_agent curl -s -m 5 "$GWURL/healthz" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["providers_online"])' 2>/dev/null; }
online_is() { [ "$(online_count)" = "$1" ]; }

# ---- the upstream, the capability's service, the bus, clubd ------------------------------------
start_test_upstream club-mesh-a,club-mesh-b

mkdir -m 0700 "$tmp/agent-state"
cat >"$tmp/clubd.conf" <<CONF
[Agent]
LogLevel=debug
StateDirectory=$tmp/agent-state

[Mesh]
Interface=$AIF
Port=$PORT
Capacity=4

[Proxy]
Listen=127.0.0.1:8092

[Upstream]
Name=local
URL=http://127.0.0.1:$UPORT/v1

# The same server under a second name: its models are in the union once.
[Upstream]
Name=local-again
URL=http://127.0.0.1:$UPORT/v1

[Capability]
Name=embed
URL=http://127.0.0.1:$UPORT/v1/embeddings
CONF

cat >"$tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$tmp/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="$NAME"/>
    <allow send_destination="*"/>
    <allow receive_type="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile >"$tmp/bus.log" 2>&1 &
buspid=$!
ADDR=unix:path=$tmp/bus.sock
wait_for 5 test -S "$tmp/bus.sock" || { fail "dbus-daemon did not start"; cat "$tmp/bus.log"; exit 1; }

start_clubd() {
        ip netns exec "$NSA" env DBUS_SYSTEM_BUS_ADDRESS="$ADDR" CLUBD_SANDBOX_SELFTEST=1 \
                "$CLUBD" -c "$tmp/clubd.conf" >>"$tmp/clubd.log" 2>&1 &
        clubdpid=$!
        wait_for 10 busctl --address="$ADDR" status "$NAME" >/dev/null 2>&1
}
stop_clubd() {
        local rc=0
        kill "$clubdpid"
        wait "$clubdpid" || rc=$?
        clubdpid=
        return $rc
}
BUSCTL=(busctl --address="$ADDR" --timeout=90)
prop() { "${BUSCTL[@]}" get-property "$NAME" "$OPATH" "$NAME" "$1" 2>&1; }
state() { prop State | sed -n 's/^s "\(.*\)"$/\1/p'; }
state_is() { [ "$(state)" = "$1" ]; }
call() { out=$("${BUSCTL[@]}" call "$NAME" "$OPATH" "$NAME" "$@" 2>&1); rc=$?; }
expect_out() {  # DESCRIPTION RC NEEDLE
        if [ "$rc" = "$2" ] && [[ "$out" == *"$3"* ]]; then ok "$1"; else fail "$1 (exit $rc: $out)"; fi
}

start_clubd || { fail "clubd did not take $NAME"; cat "$tmp/clubd.log"; exit 1; }
ok "clubd owns $NAME on the private bus"
check "State is \"unregistered\" before any registration" state_is unregistered
check "Capabilities lists the configured one" sh -c "'${BUSCTL[0]}' --address='$ADDR' get-property $NAME $OPATH $NAME Capabilities | grep -q '\"embed\"'"
check "Models come from the upstreams, each name once" wait_for 5 sh -c "'${BUSCTL[0]}' --address='$ADDR' get-property $NAME $OPATH $NAME Models | grep -q 'as 2 \"club-mesh-a\" \"club-mesh-b\"'"

# ---- registration errors ------------------------------------------------------------------------
call Register ssst "$AGENTKEY" "$GWURL" mesh1 0
expect_out "plain http:// to a non-loopback gateway without the flag: InsecureGateway" 1 "over plain HTTP"
check "…and the key is not in clubd's log" sh -c "! grep -qF '$AGENTKEY' '$tmp/clubd.log'"
call Register ssst "ic-notakey0000000000000000000000" "$GWURL" mesh1 1
expect_out "an unknown key: KeyRejected with the gateway's message and code" 1 "(invalid_api_key)"
call Register ssst "no-prefix" "$GWURL" mesh1 1
expect_out "a malformed key: InvalidArgs before anything is sent" 1 "must be an API key"
call Register ssst "$AGENTKEY" "$GWURL" mesh1 4
expect_out "an unknown flag: InvalidArgs" 1 "Unsupported flags"
check "nothing was saved" test ! -e "$tmp/agent-state/state.json"

# ---- registration -------------------------------------------------------------------------------
call Register ssst "$AGENTKEY" "$GWURL" mesh1 1
if [ "$rc" = 0 ] && [[ "$out" =~ ^xs\ ([0-9]+)\ \"([0-9.]+)\"$ ]]; then
        PID1=${BASH_REMATCH[1]} MESH=${BASH_REMATCH[2]}
        ok "Register returns the provider id ($PID1) and the mesh address ($MESH)"
else
        fail "Register failed: $out"; tail -30 "$tmp/clubd.log"; exit 1
fi
check "the state file is mode 0600" test "$(stat -c %a "$tmp/agent-state/state.json")" = 600
check "the state file holds no API key" sh -c "! grep -qF '$AGENTKEY' '$tmp/agent-state/state.json'"
check "…and no leftover temporary file" test "$(ls -A "$tmp/agent-state")" = state.json
SECRET=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["request_secret"])' "$tmp/agent-state/state.json")
GWKEY=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["gateway_public_key"])' "$tmp/agent-state/state.json")
check "the spoke has exactly the gateway as its peer" test "$(in_agent wg show "$AIF" peers)" = "$GWKEY"
check "…with allowed IP 100.96.0.1/32 and keepalive 25" \
        sh -c "ip netns exec $NSA wg show $AIF allowed-ips | grep -q '100.96.0.1/32' && ip netns exec $NSA wg show $AIF persistent-keepalive | grep -q '25\$'"
check "…and the mesh address $MESH/32" sh -c "ip -n $NSA -4 addr show dev $AIF | grep -q 'inet $MESH/32'"
check "MeshAddress and ProviderId properties" test "$(prop MeshAddress) $(prop ProviderId)" = "s \"$MESH\" x $PID1"
check "heartbeats bring State to \"online\"" wait_for 15 state_is online
check "…and the gateway counts the provider online" wait_for 5 online_is 1
check "LastHeartbeat is set" sh -c "! '${BUSCTL[0]}' --address='$ADDR' get-property $NAME $OPATH $NAME LastHeartbeat | grep -qx 't 0'"

# ---- the mesh listener ----------------------------------------------------------------------------
MURL=http://$MESH:$PORT
sign() { "$HB" sign "${2:-$SECRET}" POST "$1"; }
# mesh RUNNER PATH SIGNATURE BODY [CURL-ARGS…]: sets $code, the body in $tmp/resp.
mesh() {
        local runner=$1 path=$2 sig=$3 body=$4
        shift 4
        code=$($runner curl -s -m 10 -o "$tmp/resp" -w '%{http_code}' ${sig:+-H "X-Club-Signature: $sig"} \
                -H 'Content-Type: application/json' --data-binary "$body" "$@" "$MURL$path")
}
errcode() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$tmp/resp" 2>/dev/null; }
expect() {  # DESCRIPTION STATUS [ERROR-CODE]
        if [ "$code" = "$2" ] && { [ -z "${3:-}" ] || [ "$(errcode)" = "$3" ]; }; then ok "$1"
        else fail "$1 (got $code: $(head -c 300 "$tmp/resp"))"; fi
}
CHAT='{"model":"club-mesh-a","stream":true,"messages":[{"role":"user","content":"hi"}]}'
SIG=$(sign /v1/chat/completions)
mesh in_ns /v1/chat/completions "$SIG" "$CHAT"
expect "a signed streaming request from the gateway's address reaches the upstream: 200" 200
check "…and streams back server-sent events to the end" sh -c "grep -q '^data: ' '$tmp/resp' && grep -q 'data: \[DONE\]' '$tmp/resp'"
mesh in_ns /v1/chat/completions "$SIG" "$CHAT"
expect "the same signature again: 401" 401 replayed_signature
mesh in_ns /v1/chat/completions "" "$CHAT"
expect "no signature: 401" 401 missing_signature
mesh in_ns /v1/chat/completions "$(sign /v1/chat/completions random)" "$CHAT"
expect "a signature made with another secret: 401" 401 invalid_signature
mesh in_ns /v1/chat/completions "$(sign /v1/models)" "$CHAT"
expect "a signature for another path: 401" 401 invalid_signature
mesh in_agent /v1/chat/completions "$(sign /v1/chat/completions)" "$CHAT"
expect "from another address (the mesh address itself, in the agent namespace): 403" 403 forbidden_source
check "from the veth address through the tunnel: no answer at all (WireGuard drops it)" \
        sh -c "! ip netns exec $NS curl -s -m 3 -o /dev/null --interface $UNDERLAY.1 $MURL/healthz"
code=$(in_ns curl -s -m 5 -o "$tmp/resp" -w '%{http_code}' "$MURL/healthz")
expect "GET /healthz from the gateway needs no signature: 200" 200
check "…and lists the capability and the upstream" sh -c "grep -q '\"capabilities\":\[\"embed\"\]' '$tmp/resp' && grep -q '\"name\":\"local\"' '$tmp/resp'"
EMBED='{"model":"club-mesh-a","input":"hello"}'
mesh in_ns /api/v1/capabilities/embed/exec "$(sign /api/v1/capabilities/embed/exec)" "$EMBED"
expect "a signed capability call reaches its local service: 200" 200
check "…with the service's answer" grep -q '"embedding"' "$tmp/resp"
mesh in_ns /api/v1/capabilities/nope/exec "$(sign /api/v1/capabilities/nope/exec)" "$EMBED"
expect "an unknown capability: 404" 404 capability_not_found
# A probe of a provider starts only once its last one is over: 3 more starts, 2 more answers.
probes() { grep -c "Probing provider mesh1 (id $PID1)" "$tmp/gatewayd.log"; }
probes0=$(probes)
probed() { [ "$(probes)" -ge $((probes0 + 3)) ]; }
check "the gateway probes the provider's /healthz (ProbeInterval=1s)" wait_for 15 probed
check "…which keeps the provider online" online_is 1
check "…and never saw it unreachable" sh -c "! grep -q 'mesh1 (id $PID1) is unreachable' '$tmp/gatewayd.log'"

# ---- drain and resume ---------------------------------------------------------------------------
call Drain
expect_out "Drain as root" 0 ""
check "State \"draining\"" state_is draining
mesh in_ns /v1/chat/completions "$(sign /v1/chat/completions)" "$CHAT"
expect "while draining the mesh listener takes no new request: 503" 503 agent_draining
check "…and the gateway no longer counts it online" wait_for 5 online_is 0
call Resume
expect_out "Resume" 0 ""
check "State \"online\" again" wait_for 5 state_is online
check "…and the gateway counts it online again" wait_for 5 online_is 1

call Reload
expect_out "Reload (as SIGHUP) as root" 0 ""
check "…the models are still reported right after it" sh -c "'${BUSCTL[0]}' --address='$ADDR' get-property $NAME $OPATH $NAME Models | grep -q 'as 2 '"
check "…and it stays online" state_is online

# ---- restart from the saved state ------------------------------------------------------------------
check "SIGTERM: clubd exits 0" stop_clubd
start_clubd || fail "clubd did not come back"
check "after a restart it is online again from the saved state, with no key" wait_for 15 state_is online
mesh in_ns /v1/chat/completions "$(sign /v1/chat/completions)" "$CHAT"
expect "…and serves signed requests on the mesh" 200
check "the sandbox self-test: execve() refused inside the running daemon" grep -q 'Sandbox self-test: execve() refused' "$tmp/clubd.log"
check "…ptrace() refused" grep -q 'Sandbox self-test: ptrace() refused' "$tmp/clubd.log"
check "…no call ALLOWED" sh -c "! grep -q 'Sandbox self-test: .* ALLOWED' '$tmp/clubd.log'"

# ---- the gateway forgets the provider ----------------------------------------------------------------
check "the helper deletes the provider from the gateway's store" "$HB" delete "$tmp/gw-state/store.db" "$PID1"
call Drain              # sends a heartbeat at once
check "the next heartbeat makes State \"error\"" wait_for 10 state_is error
check "…with a reason that says to register again" sh -c "'${BUSCTL[0]}' --address='$ADDR' get-property $NAME $OPATH $NAME StateReason | grep -q 'no longer knows this machine (provider $PID1).*Register again'"

# ---- unregister -------------------------------------------------------------------------------------
call Unregister
expect_out "Unregister" 0 ""
check "the state file is gone" test ! -e "$tmp/agent-state/state.json"
check "the spoke has no peer" test -z "$(in_agent wg show "$AIF" peers)"
check "…and no mesh address" sh -c "! ip -n $NSA -4 addr show dev $AIF | grep -q 'inet $MESH/'"
check "State \"unregistered\", ProviderId 0" test "$(state) $(prop ProviderId)" = "unregistered x 0"
call Drain
expect_out "Drain when not registered: NotRegistered" 1 "not registered"
check "SIGTERM: clubd exits 0" stop_clubd
check "the API key never appears in clubd's log" sh -c "! grep -qF '$AGENTKEY' '$tmp/clubd.log'"
check "…nor the request secret" sh -c "! grep -qF '$SECRET' '$tmp/clubd.log'"

if [ "$failures" -gt 0 ]; then
        echo "# clubd log:"
        sed 's/^/# /' "$tmp/clubd.log" | tail -80
        echo "# gateway log:"
        sed 's/^/# /' "$tmp/gatewayd.log" | tail -30
        echo "$failures check(s) failed"
        exit 1
fi
echo "all checks passed"
