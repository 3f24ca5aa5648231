#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-register.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER
#
# Agent registration and the WireGuard hub, as root, in a network namespace "vps" made
# here. wireguard-go provides the hub interface (cgw<PID>); the gateway runs in the
# namespace with --listen 127.0.0.1:8080 and [WireGuard] Interface= naming it; the helper
# makes users and keys through the store. With curl inside the namespace (each request
# from its own 127.0.0.N, so the per-address rate limit only bites where it is tested):
#  - an agent-scope API key registers: 201, mesh address 100.96.0.2, the gateway's public
#    key (= `wg show IFACE public-key`), endpoint, mesh address, a 32-byte secret, 30 s;
#    the hub has the key on disk (0600), listen port 51820, 100.96.0.1/16, is up, and
#    `wg show IFACE allowed-ips` lists the agent with 100.96.0.2/32;
#  - the same name with a new public key: 200, same id and address, a new secret, the old
#    key gone from the hub and the new one there; a second name: 201, 100.96.0.3;
#  - errors: inference-only key 403, bad/missing/revoked key 401 with
#    WWW-Authenticate: Bearer, invalid public key/name/JSON 400, a public key used by
#    another provider 409, a body over 16 KiB 413, GET 405, the 11th request from one
#    address within a minute 429 with Retry-After;
#  - per key: the 11th registration with one API key within a minute, from two addresses,
#    429 naming the key's limit while another key still registers; the same for a reusable
#    enrollment key, whose bucket failed guesses with its (public) prefix do not drain;
#  - a one-time enrollment key registers once, then 401;
#  - the secret never appears in the gateway's log;
#  - restart: after removing a peer by hand and adding a stray one, the hub is converged
#    to exactly the store's peers;
#  - a real tunnel: an "agent" namespace (veth to the gateway's) with its own wireguard-go,
#    configured with `wg` from the answer, pings 100.96.0.1;
#  - without [WireGuard] Endpoint= registration answers 503 gateway_not_configured;
#  - with no WireGuard for the interface (and none in the kernel) the gateway starts, logs
#    the hint, and registration still succeeds in the store.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

GATEWAYD=${1:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER}
HELPER=${2:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER}
TEST=test-gatewayd-register
ID=$$
NS=clubvps$ID
NSA=clubagt$ID                  # the agent of the real-tunnel check
AIF=cga$ID
IF=cgw$ID
URL=http://127.0.0.1:8080/api/v1/agents/register
. "$(dirname "${BASH_SOURCE[0]}")/gatewayd-netns.sh"

# ---- the namespaces and the hub interface ------------------------------------------------
netns_setup 10.79.0

mkdir -m 0700 "$tmp/state"
write_config() {  # [ENDPOINT [INTERFACE]]
        cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug

[Mesh]
Listen=127.0.0.1:0

[WireGuard]
Interface=${2:-$IF}
ListenPort=51820
${1:+Endpoint=$1}
CONF
}
write_config 10.79.0.1:51820

"$HELPER" "$tmp/state/store.db" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
key() { sed -n "s/^$1=//p" "$tmp/keys"; }
AGENT=$(key agent) INFERENCE=$(key inference) REVOKED=$(key revoked)
ENROLL_ONCE=$(key enroll_once) BOB=$(key bob_agent)

start_gateway() {
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 127.0.0.1:8080 >>"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        wait_for 10 in_ns curl -sf -o /dev/null http://127.0.0.1:8080/healthz
}
stop_gateway() {
        local rc
        kill "$gwpid"
        wait "$gwpid"
        rc=$?
        gwpid=
        return $rc
}

src=1
# post KEY BODY [CURL-ARGS…]: sets $code; the body in $tmp/resp, the headers in $tmp/hdr.
post() {
        local key=$1 body=$2
        shift 2
        src=$((src + 1))
        code=$(in_ns curl -s -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code}' --interface "127.0.0.$src" \
                ${key:+-H "Authorization: Bearer $key"} -H 'Content-Type: application/json' \
                --data-binary "$body" "$@" "$URL")
}
body() { printf '{"name":"%s","public_key":"%s","agent_port":8090,"version":"test/1"}' "$1" "$2"; }
field() { "$PY" -c 'import json, sys; v = json.load(open(sys.argv[1])); print(v[sys.argv[2]] if sys.argv[2] in v else v["error"][sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }
err_code() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["error"]["code"])' "$tmp/resp" 2>/dev/null; }
has_header() { grep -qi "^$1: $2"$'\r'"\?$" "$tmp/hdr"; }
expect() {  # DESCRIPTION STATUS [ERROR-CODE]
        if [ "$code" = "$2" ] && { [ -z "${3:-}" ] || [ "$(err_code)" = "$3" ]; }; then ok "$1"
        else fail "$1 (got $code: $(head -c 300 "$tmp/resp"))"; fi
}
newkey() { wg genkey | wg pubkey; }
allowed_ips() { in_ns wg show "$IF" allowed-ips | sort; }
expected_ips() { for pair in "$@"; do printf '%s\t%s\n' "${pair%% *}" "${pair##* }"; done | sort; }

start_gateway || { fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1; }
ok "the gateway started in the namespace with the hub $IF"

# ---- the hub at start ---------------------------------------------------------------------
HUBPUB=$(in_ns wg show "$IF" public-key)
check "the hub's private key was made 0600 in the state directory" \
        test "$(stat -c %a "$tmp/state/wireguard.key")" = 600
check "the hub's key on disk is the one on the interface" test "$(wg pubkey <"$tmp/state/wireguard.key")" = "$HUBPUB"
check "the hub listens on 51820" test "$(in_ns wg show "$IF" listen-port)" = 51820
check "the hub has 100.96.0.1/16 and is up" \
        sh -c "ip -n $NS -br addr show $IF | grep -q '100.96.0.1/16' && ip -n $NS link show $IF | grep -q ',UP'"
check "the hub starts without peers" test -z "$(in_ns wg show "$IF" peers)"

# ---- registration with an API key ---------------------------------------------------------
P1=$(newkey) P2=$(newkey) P3=$(newkey) P4=$(newkey) P5=$(newkey)
post "$AGENT" "$(body gpu1 "$P1")"
expect "an agent-scope API key registers a new provider: 201" 201
ID1=$(field provider_id) SECRET1=$(field request_secret)
check "mesh_address is 100.96.0.2" test "$(field mesh_address)" = 100.96.0.2
check "gateway_public_key is the hub's (wg show public-key)" test "$(field gateway_public_key)" = "$HUBPUB"
check "gateway_endpoint comes from Endpoint=" test "$(field gateway_endpoint)" = 10.79.0.1:51820
check "gateway_mesh_address is 100.96.0.1" test "$(field gateway_mesh_address)" = 100.96.0.1
check "heartbeat_interval_sec is 30" test "$(field heartbeat_interval_sec)" = 30
check "request_secret is base64 of 32 bytes" \
        "$PY" -c 'import base64, sys; sys.exit(len(base64.b64decode(sys.argv[1], validate=True)) != 32)' "$SECRET1"
check "Cache-Control: no-store" has_header Cache-Control no-store
check "the hub has the agent's key with 100.96.0.2/32" test "$(allowed_ips)" = "$(expected_ips "$P1 100.96.0.2/32")"

post "$AGENT" "$(body gpu1 "$P2")"
expect "the same name with a new public key re-registers: 200" 200
check "same provider id" test "$(field provider_id)" = "$ID1"
check "same mesh address" test "$(field mesh_address)" = 100.96.0.2
check "a new secret" test "$(field request_secret)" != "$SECRET1"
check "the old key left the hub, the new one is there" test "$(allowed_ips)" = "$(expected_ips "$P2 100.96.0.2/32")"

post "$AGENT" "$(body gpu2 "$P3")"
expect "a second name: 201" 201
check "the second provider gets 100.96.0.3" test "$(field mesh_address)" = 100.96.0.3
check "the hub has both peers" test "$(allowed_ips)" = "$(expected_ips "$P2 100.96.0.2/32" "$P3 100.96.0.3/32")"

# ---- errors -------------------------------------------------------------------------------
post "$INFERENCE" "$(body gpu3 "$P4")"
expect "an inference-only key: 403" 403 insufficient_scope
post "ic-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "$(body gpu3 "$P4")"
expect "an unknown API key: 401" 401 invalid_api_key
check "401 carries WWW-Authenticate: Bearer" has_header WWW-Authenticate Bearer
post "" "$(body gpu3 "$P4")"
expect "no Authorization header: 401" 401
check "…with WWW-Authenticate: Bearer" has_header WWW-Authenticate Bearer
post "$REVOKED" "$(body gpu3 "$P4")"
expect "a revoked key: 401" 401 revoked_api_key
post "$AGENT" "$(body gpu3 "not-a-key")"
expect "an invalid public key: 400" 400
check "…naming public_key" test "$(field param)" = public_key
post "$AGENT" "$(body 'bad name!' "$P4")"
expect "an invalid name: 400" 400
check "…naming name" test "$(field param)" = name
post "$AGENT" '{"name": "gpu3", "public_key": '
expect "a body that is not JSON: 400" 400
post "$AGENT" "{\"name\":\"gpu3\",\"public_key\":\"$P4\",\"agent_port\":0}"
expect "agent_port 0: 400" 400
post "$BOB" "$(body bobs "$P3")"
expect "a public key already used by another provider: 409" 409 public_key_in_use
post "$AGENT" "{\"name\":\"gpu3\",\"public_key\":\"$P4\",\"agent_port\":8090,\"pad\":\"$(head -c 20000 /dev/zero | tr '\0' x)\"}"
expect "a body over 16 KiB: 413" 413
src=$((src + 1))
code=$(in_ns curl -s -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code}' --interface "127.0.0.$src" "$URL")
expect "GET: 405" 405
check "the hub still has exactly the two registered peers" \
        test "$(allowed_ips)" = "$(expected_ips "$P2 100.96.0.2/32" "$P3 100.96.0.3/32")"

# ---- enrollment keys ----------------------------------------------------------------------
post "$ENROLL_ONCE" "$(body fleet1 "$P4")"
expect "a one-time enrollment key registers: 201" 201
check "…at 100.96.0.4" test "$(field mesh_address)" = 100.96.0.4
post "$ENROLL_ONCE" "$(body fleet2 "$P5")"
expect "the one-time enrollment key a second time: 401" 401 expired_api_key
check "…and 100.96.0.4 joined the hub" test "$(allowed_ips)" = \
        "$(expected_ips "$P2 100.96.0.2/32" "$P3 100.96.0.3/32" "$P4 100.96.0.4/32")"

# ---- the rate limit -----------------------------------------------------------------------
codes=
for _ in $(seq 11); do
        codes+="$(in_ns curl -s -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code} ' --interface 127.0.1.1 \
                -H "Authorization: Bearer ic-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" --data-binary '{}' "$URL")"
done
check "10 requests from one address pass, the 11th gets 429 (codes: $codes)" \
        test "$codes" = "401 401 401 401 401 401 401 401 401 401 429 "
check "429 carries Retry-After" grep -qi '^Retry-After: [0-9]' "$tmp/hdr"
post "$AGENT" "$(body gpu1 "$P2")"
expect "another address is not limited" 200

# ---- secrets stay out of the log ----------------------------------------------------------
check "the request secret is not in the gateway's log" sh -c "! grep -qF '$SECRET1' '$tmp/gatewayd.log'"
check "the API key is not in the gateway's log" sh -c "! grep -qF '$AGENT' '$tmp/gatewayd.log'"

# ---- restart: the hub converges to exactly the store's peers ------------------------------
check "SIGTERM: the gateway exits 0" stop_gateway
STRAY=$(newkey)
in_ns wg set "$IF" peer "$P3" remove
in_ns wg set "$IF" peer "$STRAY" allowed-ips 100.96.9.9/32
check "by hand: one peer removed, a stray one added" test "$(allowed_ips)" = \
        "$(expected_ips "$P2 100.96.0.2/32" "$P4 100.96.0.4/32" "$STRAY 100.96.9.9/32")"
start_gateway || fail "the gateway did not start again"
check "after the restart the missing peer is back and the stray one gone" test "$(allowed_ips)" = \
        "$(expected_ips "$P2 100.96.0.2/32" "$P3 100.96.0.3/32" "$P4 100.96.0.4/32")"
check "the hub kept its key across the restart" test "$(in_ns wg show "$IF" public-key)" = "$HUBPUB"

# ---- a real tunnel: an agent configured from the answer pings the gateway -------------------
start_agent_wg
if wait_for 5 test -S "$RUNDIR/$AIF.sock"; then
        wg genkey >"$tmp/agent.key"
        post "$AGENT" "$(body tunnel "$(wg pubkey <"$tmp/agent.key")")"
        expect "the tunnel agent registers: 201" 201
        AADDR=$(field mesh_address)
        ip netns exec "$NSA" wg set "$AIF" private-key "$tmp/agent.key" peer "$(field gateway_public_key)" \
                endpoint "$(field gateway_endpoint)" allowed-ips "$(field gateway_mesh_address)/32" persistent-keepalive 25
        ip -n "$NSA" addr add "$AADDR/32" dev "$AIF"
        ip -n "$NSA" link set "$AIF" up
        ip -n "$NSA" route add "$(field gateway_mesh_address)/32" dev "$AIF"
        check "the agent pings the gateway's mesh address 100.96.0.1 through the tunnel" \
                wait_for 10 sh -c "ip netns exec $NSA ping -c 1 -W 1 100.96.0.1 >/dev/null"
        check "the gateway's hub saw a handshake from the agent" \
                sh -c "ip netns exec $NS wg show $IF latest-handshakes | grep -v '	0\$' | grep -q ."
else
        fail "wireguard-go did not start for the agent"
fi
check "SIGTERM again: exit 0" stop_gateway

# ---- without Endpoint= ----------------------------------------------------------------------
write_config ""
start_gateway || fail "the gateway did not start without Endpoint="
post "$AGENT" "$(body gpu1 "$P2")"
expect "without [WireGuard] Endpoint=: 503" 503 gateway_not_configured
check "…and the reason is logged" grep -q 'Endpoint= is not set' "$tmp/gatewayd.log"
check "SIGTERM: exit 0" stop_gateway

# ---- no WireGuard for the interface: keep serving, register in the store, say so ------------
if ip -n "$NS" link add cgk$ID type wireguard 2>/dev/null; then
        ip -n "$NS" link del cgk$ID
        ok "# SKIP the kernel has WireGuard: the no-WireGuard path is not reachable here"
else
        write_config 10.79.0.1:51820 cgn$ID
        start_gateway || fail "the gateway did not start without WireGuard for its interface"
        check "without WireGuard the gateway starts and logs the hint" \
                grep -q "Cannot configure the WireGuard hub cgn$ID, serving without it" "$tmp/gatewayd.log"
        post "$AGENT" "$(body gpu9 "$(newkey)")"
        expect "…registration still succeeds in the store: 201" 201
        check "…at the next address, 100.96.0.6" test "$(field mesh_address)" = 100.96.0.6
        check "…and the log says the peer is not on the hub" grep -q "'gpu9' .* registered in the store but not (yet) on the WireGuard hub" "$tmp/gatewayd.log"
        check "SIGTERM: exit 0" stop_gateway
fi

# ---- the per-key rate limit: one key from two addresses, another key unaffected ----------
write_config 10.79.0.1:51820
start_gateway || fail "the gateway did not start for the per-key limit"
BURST=$(key burst_agent) REUSABLE=$(key enroll_reusable)
burst() {  # KEY NAME-PREFIX: 11 registrations, alternating between two source addresses
        local i
        codes=
        for i in $(seq 11); do
                codes+="$(in_ns curl -s -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code} ' --interface "127.0.$3.$((i % 2 + 1))" \
                        -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
                        --data-binary "$(body "$2$i" "$(newkey)")" "$URL")"
        done
}
peers_before=$(in_ns wg show "$IF" peers | wc -l)
burst "$BURST" burst 3
check "one API key from two addresses: 10 registrations pass, the 11th gets 429 (codes: $codes)" \
        test "$codes" = "201 201 201 201 201 201 201 201 201 201 429 "
check "…with Retry-After" grep -qi '^Retry-After: [0-9]' "$tmp/hdr"
check "…and a message naming the key's limit" grep -q 'Too many registrations with this API key' "$tmp/resp"
check "…and exactly its 10 providers joined the hub" test "$(in_ns wg show "$IF" peers | wc -l)" = $((peers_before + 10))
post "$BOB" "$(body bobs2 "$(newkey)")"
expect "another key still registers meanwhile" 201
# An unknown key with the reusable enrollment key's prefix does not drain its bucket.
fake="${REUSABLE:0:11}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
for _ in $(seq 12); do
        in_ns curl -s -o /dev/null --interface "127.0.4.$((RANDOM % 200 + 1))" -H "Authorization: Bearer $fake" \
                --data-binary "$(body fake "$(newkey)")" "$URL"
done
burst "$REUSABLE" fleetx 5
check "a reusable enrollment key (after 12 failed guesses at it): 10 pass, the 11th gets 429 (codes: $codes)" \
        test "$codes" = "201 201 201 201 201 201 201 201 201 201 429 "
check "…with a message naming the key's limit" grep -q 'Too many registrations with this enrollment key' "$tmp/resp"
check "SIGTERM: exit 0" stop_gateway

if [ "$failures" -gt 0 ]; then
        echo "# gateway log:"
        sed 's/^/# /' "$tmp/gatewayd.log" | tail -60
        echo "$failures check(s) failed"
        exit 1
fi
echo "all checks passed"
