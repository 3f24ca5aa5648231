#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-heartbeat.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER
#
# Heartbeats on the gateway's mesh listener, through a real tunnel, as root. Namespace
# "vps" runs the gateway (public --listen 127.0.0.1:8080; mesh listener on its default,
# 100.96.0.1:8443) and its wireguard-go hub; namespace "agent", joined by a veth, runs its
# own wireguard-go configured with `wg` from a registration answer. curl in the agent
# namespace sends the heartbeats over the tunnel; the heartbeat helper signs them with
# lib/request-sign and the answer's request_secret. Checks:
#  - before any heartbeat /healthz says providers_online 0;
#  - a signed heartbeat: 200 {provider_id, online true, heartbeat_interval_sec 30,
#    window_sec 120}, and providers_online 1;
#  - the same X-Club-Signature again: 401 replayed_signature; none: 401; one made with
#    another secret: 401 invalid_signature; a malformed body: 400;
#  - from an address that is no provider's (127.0.0.1 inside the vps namespace, to
#    100.96.0.1:8443): 403 unknown_provider; the heartbeat path on the public listener: 404;
#  - draining=true: online false, providers_online 0; draining=false: online again;
#  - HeartbeatWindow=2s: window_sec 2, online, and offline ~2 s later without heartbeats;
#  - ProbeInterval=1s, EphemeralGrace=3s: with nothing listening on the agent port the
#    gateway's probe of http://MESH-ADDRESS:8090/healthz through the tunnel fails, the
#    provider becomes unreachable (providers_online 0, a heartbeat answers online false, a
#    warning with the reason in the log); with a small python HTTP server answering
#    /healthz 200 there, it is reachable and online again (providers_online 1);
#  - a provider enrolled with an ephemeral enrollment key that never heartbeats is deleted
#    after the grace, and its peer leaves the hub (`wg show IF peers`) without a
#    registration or restart;
#  - after the provider is deleted from the store: 404 unknown_provider ("register again").
# The earlier parts run with ProbeInterval=1h, so that the probe (nothing listens on the
# agent port there) does not interfere.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

GATEWAYD=${1:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER}
ADMIN=${2:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER}
HB=${3:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER}
TEST=test-gatewayd-heartbeat
ID=$$
NS=clubhbv$ID
NSA=clubhba$ID
IF=chg$ID
AIF=cha$ID
PUBLIC=http://127.0.0.1:8080
HBPATH=/api/v1/agents/heartbeat
MESHURL=http://100.96.0.1:8443$HBPATH
. "$(dirname "${BASH_SOURCE[0]}")/gatewayd-netns.sh"

# ---- the namespaces, the veth, both WireGuard interfaces ----------------------------------
netns_setup 10.78.0
start_agent_wg

mkdir -m 0700 "$tmp/state"
write_config() {  # [HEARTBEAT-WINDOW [PROBE-INTERVAL [EPHEMERAL-GRACE]]]
        cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug
${1:+HeartbeatWindow=$1}
ProbeInterval=${2:-1h}
${3:+EphemeralGrace=$3}

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.78.0.1:51820
CONF
}
write_config

"$ADMIN" "$tmp/state/store.db" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
AGENT=$(sed -n 's/^agent=//p' "$tmp/keys")

start_gateway() {
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 127.0.0.1:8080 >>"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        wait_for 10 in_ns curl -sf -o /dev/null "$PUBLIC/healthz"
}
stop_gateway() {
        local rc
        kill "$gwpid"
        wait "$gwpid"
        rc=$?
        gwpid=
        return $rc
}

field() { "$PY" -c 'import json, sys; v = json.load(open(sys.argv[1])); print(json.dumps(v[sys.argv[2]]) if sys.argv[2] in v else v["error"][sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }
sfield() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }
online_count() { in_ns curl -s "$PUBLIC/healthz" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["providers_online"])'; }
expect() {  # DESCRIPTION STATUS [ERROR-CODE]
        if [ "$code" = "$2" ] && { [ -z "${3:-}" ] || [ "$(field code)" = "$3" ]; }; then ok "$1"
        else fail "$1 (got $code: $(head -c 300 "$tmp/resp"))"; fi
}
sign() { "$HB" sign "${1:-$SECRET}" POST "$HBPATH"; }
hbody() {  # [DRAINING]
        printf '{"models":["llama3:8b","qwen2.5:7b"],"capabilities":["chat","embeddings"],"in_flight":1,"capacity":4,"upstreams":[{"name":"ollama","url":"http://127.0.0.1:11434","healthy":true}],"version":"test/1","draining":%s}' "${1:-false}"
}
# heartbeat SIGNATURE BODY [RUNNER [URL [CURL-ARGS…]]]: sets $code, the body in $tmp/resp.
heartbeat() {
        local sig=$1 body=$2 runner=${3:-in_agent} url=${4:-$MESHURL}
        shift 4 2>/dev/null || shift $#
        code=$($runner curl -s -m 5 -o "$tmp/resp" -w '%{http_code}' ${sig:+-H "X-Club-Signature: $sig"} \
                -H 'Content-Type: application/json' --data-binary "$body" "$@" "$url")
}

start_gateway || { fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1; }
ok "the gateway started with the hub $IF"
check "the mesh listener is on 100.96.0.1:8443" grep -q 'mesh control on 100.96.0.1:8443' "$tmp/gatewayd.log"

# ---- register the agent and bring up its tunnel ---------------------------------------------
wg genkey >"$tmp/agent.key"
code=$(in_ns curl -s -o "$tmp/resp" -w '%{http_code}' -H "Authorization: Bearer $AGENT" \
        --data-binary "{\"name\":\"hb1\",\"public_key\":\"$(wg pubkey <"$tmp/agent.key")\",\"agent_port\":8090}" \
        "$PUBLIC/api/v1/agents/register")
expect "the agent registers: 201" 201
PID1=$(sfield provider_id) SECRET=$(sfield request_secret) AADDR=$(sfield mesh_address) GWADDR=$(sfield gateway_mesh_address)
in_agent wg set "$AIF" private-key "$tmp/agent.key" peer "$(sfield gateway_public_key)" \
        endpoint "$(sfield gateway_endpoint)" allowed-ips "$GWADDR/32" persistent-keepalive 25
ip -n "$NSA" addr add "$AADDR/32" dev "$AIF"
ip -n "$NSA" link set "$AIF" up
ip -n "$NSA" route add "$GWADDR/32" dev "$AIF" src "$AADDR"
check "the tunnel is up: the agent pings $GWADDR" wait_for 10 sh -c "ip netns exec $NSA ping -c 1 -W 1 $GWADDR >/dev/null"
check "no provider is online before its first heartbeat" test "$(online_count)" = 0

# ---- heartbeats through the tunnel ----------------------------------------------------------
SIG=$(sign)
heartbeat "$SIG" "$(hbody)"
expect "a signed heartbeat through the tunnel: 200" 200
check "…for our provider" test "$(field provider_id)" = "$PID1"
check "…online true" test "$(field online)" = true
check "…heartbeat_interval_sec 30, window_sec 120" \
        test "$(field heartbeat_interval_sec) $(field window_sec)" = "30 120"
check "/healthz: providers_online 1" test "$(online_count)" = 1

heartbeat "$SIG" "$(hbody)"
expect "the same signature header again: 401" 401 replayed_signature
heartbeat "" "$(hbody)"
expect "no signature: 401" 401 missing_signature
heartbeat "$(sign random)" "$(hbody)"
expect "a signature made with another secret: 401" 401 invalid_signature
heartbeat "t=1,n=00000000000000000000000000000000,v1=$(printf '0%.0s' $(seq 64))" "$(hbody)"
expect "a malformed or stale signature: 401" 401
heartbeat "$(sign)" '{"models": "llama3"}'
expect "models not an array: 400" 400 invalid_request
heartbeat "$(sign)" "{\"models\": [\"$(head -c 300 /dev/zero | tr '\0' m)\"]}"
expect "a model name over 256 characters: 400" 400 invalid_request
heartbeat "$(sign)" '{"in_flight": -1}'
expect "a negative in_flight: 400" 400 invalid_request
heartbeat "$(sign)" '{"upstreams": [{"name": "x"}]}'
expect "an upstream without url and healthy: 400" 400 invalid_request

heartbeat "$(sign)" "$(hbody)" in_ns "$MESHURL" --interface 127.0.0.1
expect "from an address that is no provider's (127.0.0.1 in the vps namespace): 403" 403 unknown_provider
heartbeat "$(sign)" "$(hbody)" in_ns "$PUBLIC$HBPATH"
expect "the heartbeat path on the public listener: 404" 404 unknown_url

heartbeat "$(sign)" "$(hbody true)"
expect "a draining heartbeat: 200" 200
check "…online false" test "$(field online)" = false
check "…and /healthz: providers_online 0" test "$(online_count)" = 0
heartbeat "$(sign)" "$(hbody false)"
check "not draining again: online true, providers_online 1" \
        test "$code $(field online) $(online_count)" = "200 true 1"
check "the secret is not in the gateway's log" sh -c "! grep -qF '$SECRET' '$tmp/gatewayd.log'"
check "SIGTERM: the gateway exits 0" stop_gateway

# ---- a short window ---------------------------------------------------------------------------
write_config 2s
start_gateway || fail "the gateway did not start with HeartbeatWindow=2s"
heartbeat "$(sign)" "$(hbody)"
expect "HeartbeatWindow=2s: a heartbeat: 200" 200
check "…window_sec 2, online true" test "$(field window_sec) $(field online)" = "2 true"
check "…providers_online 1" test "$(online_count)" = 1
check "without heartbeats it goes offline within ~3 s" wait_for 4 sh -c "test \"\$(ip netns exec $NS curl -s $PUBLIC/healthz | $PY -c 'import json, sys; print(json.load(sys.stdin)[\"providers_online\"])')\" = 0"

check "SIGTERM: exit 0" stop_gateway

# ---- the probe through the tunnel -------------------------------------------------------------
write_config "" 1s 3s
start_gateway || fail "the gateway did not start with ProbeInterval=1s"
heartbeat "$(sign)" "$(hbody)"
expect "ProbeInterval=1s: a heartbeat: 200" 200
check "nothing on the agent port: the probe marks it unreachable (providers_online 0)" \
        wait_for 5 sh -c "test \"\$(ip netns exec $NS curl -s $PUBLIC/healthz | $PY -c 'import json, sys; print(json.load(sys.stdin)[\"providers_online\"])')\" = 0"
check "…a warning with the reason in the log" \
        grep -q "hb1 (id $PID1) is unreachable: GET http://$AADDR:8090/healthz: connection refused" "$tmp/gatewayd.log"
heartbeat "$(sign)" "$(hbody)"
check "…a heartbeat while unreachable answers online false" test "$code $(field online)" = "200 false"
ip netns exec "$NSA" "$PY" -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/healthz"
        self.send_response(200 if ok else 404); self.send_header("Content-Length", "3"); self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"no\n")
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()' "$AADDR" 8090 >"$tmp/agent-http.log" 2>&1 &
srvpid=$!
check "an HTTP server answering /healthz 200 on the agent port: online again (providers_online 1)" \
        wait_for 6 sh -c "test \"\$(ip netns exec $NS curl -s $PUBLIC/healthz | $PY -c 'import json, sys; print(json.load(sys.stdin)[\"providers_online\"])')\" = 1"
check "…logged as reachable again" grep -q "hb1 (id $PID1) is reachable again" "$tmp/gatewayd.log"
kill "$srvpid"; wait "$srvpid" 2>/dev/null; srvpid=

# ---- an ephemeral provider --------------------------------------------------------------------
EPH=$("$HB" enroll-ephemeral "$tmp/state/store.db" alice)
wg genkey >"$tmp/eph.key"
EPHPUB=$(wg pubkey <"$tmp/eph.key")
code=$(in_ns curl -s -o "$tmp/resp" -w '%{http_code}' -H "Authorization: Bearer $EPH" \
        --data-binary "{\"name\":\"eph1\",\"public_key\":\"$EPHPUB\",\"agent_port\":8090}" \
        "$PUBLIC/api/v1/agents/register")
expect "a provider registers with an ephemeral enrollment key: 201" 201
check "…its peer is on the hub" sh -c "ip netns exec $NS wg show $IF peers | grep -qxF '$EPHPUB'"
check "without heartbeats it is deleted after EphemeralGrace=3s and its peer leaves the hub" \
        wait_for 8 sh -c "! ip netns exec $NS wg show $IF peers | grep -qxF '$EPHPUB'"
check "…logged" grep -q "Deleted ephemeral provider eph1" "$tmp/gatewayd.log"
check "…the other provider's peer stays" sh -c "ip netns exec $NS wg show $IF peers | grep -qxF \"\$(wg pubkey <$tmp/agent.key)\""

# ---- a deleted provider ---------------------------------------------------------------------
check "the helper deletes the provider from the store" "$HB" delete "$tmp/state/store.db" "$PID1"
heartbeat "$(sign)" "$(hbody)"
expect "a heartbeat from the deleted provider: 404" 404 unknown_provider
check "…telling it to register again" sh -c "grep -q 'register again' '$tmp/resp'"
check "SIGTERM: exit 0" stop_gateway

if [ "$failures" -gt 0 ]; then
        echo "# gateway log:"
        sed 's/^/# /' "$tmp/gatewayd.log" | tail -60
        echo "$failures check(s) failed"
        exit 1
fi
echo "all checks passed"
