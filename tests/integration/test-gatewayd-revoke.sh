#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-revoke.sh CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR
#
# Removal through the administration API takes effect on the WireGuard hub at once, through
# a real tunnel, as root. gatewayd-netns.sh's two namespaces: "vps" runs the gateway and its
# wireguard-go hub, "agent" its own wireguard-go configured with `wg` from a registration
# answer. A private dbus-daemon (tests/integration/bus/bus.conf with
# dbus/club.inference.Gateway1.conf; its socket is a file, so the gateway in the "vps"
# namespace and club-gatewayctl outside reach it) carries the administration; club-gatewayctl
# runs as root, which needs no polkitd (test-gatewayd-bus.sh covers polkit). Checks:
#  - a user and an agent-scope API key made with club-gatewayctl; the agent registers with
#    curl and its tunnel carries traffic (ping to the gateway's mesh address 100.96.0.1, and
#    an HTTP request to the mesh listener through it);
#  - `club-gatewayctl providers remove ID`: when it returns, the peer is gone from
#    `wg show IF peers` on the hub (no waiting), and the tunnel no longer carries traffic;
#  - the agent registers again (a new provider and mesh address), the tunnel works again;
#    `club-gatewayctl users remove USER`: the peer is gone at once and traffic stops;
#  - the gateway's log has no error.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

GATEWAYD=${1:?usage: $0 CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR}
CTL=${2:?usage: $0 CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR}
DBUS_DIR=${3:?usage: $0 CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR}
TEST=test-gatewayd-revoke
ID=$$
NS=clubrvv$ID
NSA=clubrva$ID
IF=crg$ID
AIF=cra$ID
PUBLIC=http://127.0.0.1:8080
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/gatewayd-netns.sh"
command -v dbus-daemon >/dev/null 2>&1 || skip "dbus-daemon is not installed"
command -v busctl >/dev/null 2>&1 || skip "busctl is not installed"

# ---- a private system bus with the gateway's policy ------------------------------------------
buspid=
revoke_cleanup() {
        [ -n "$buspid" ] && kill "$buspid" 2>/dev/null
        cleanup
}
trap revoke_cleanup EXIT
mkdir -p "$tmp/bus/system.d"
cp "$HERE/bus/bus.conf" "$tmp/bus/"
cp "$DBUS_DIR/club.inference.Gateway1.conf" "$tmp/bus/system.d/"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$tmp/bus/socket
dbus-daemon --config-file="$tmp/bus/bus.conf" --address="$DBUS_SYSTEM_BUS_ADDRESS" --nofork --nopidfile \
        >"$tmp/dbus.log" 2>&1 &
buspid=$!
wait_for 5 busctl list --no-pager >/dev/null 2>&1 || { fail "the private dbus-daemon did not start"; cat "$tmp/dbus.log"; exit 1; }

# ---- the namespaces, both WireGuard interfaces, the gateway ---------------------------------
netns_setup 10.77.0
start_agent_wg
mkdir -m 0700 "$tmp/state"
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug
ProbeInterval=1h

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.77.0.1:51820
CONF
ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 127.0.0.1:8080 >"$tmp/gatewayd.log" 2>&1 &
gwpid=$!
if wait_for 10 busctl status club.inference.Gateway1 >/dev/null 2>&1 && wait_for 5 in_ns curl -sf -o /dev/null "$PUBLIC/healthz"; then
        ok "the gateway serves HTTP in its namespace and owns club.inference.Gateway1 on the private bus"
else
        fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1
fi

ctl() { "$CTL" --no-ask-password "$@"; }
sfield() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }
hub_peers() { in_ns wg show "$IF" peers; }
tunnel_works() { in_agent ping -c 1 -W 1 100.96.0.1 >/dev/null 2>&1; }

ctl users add carol >/dev/null || fail "users add carol"
KEY=$(ctl --json keys create --user carol --scope agent | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
check "club-gatewayctl made an agent key for carol" test "${KEY:0:3}" = ic-
wg genkey >"$tmp/agent.key"
APUB=$(wg pubkey <"$tmp/agent.key")

# register NAME: register the agent with $KEY and (re)configure its tunnel; sets $PROV, $AADDR.
register() {
        local code
        code=$(in_ns curl -s -o "$tmp/resp" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
                --data-binary "{\"name\":\"$1\",\"public_key\":\"$APUB\",\"agent_port\":8090}" \
                "$PUBLIC/api/v1/agents/register")
        [ "$code" = 201 ] || { fail "registration of $1: $code $(cat "$tmp/resp")"; return 1; }
        PROV=$(sfield provider_id)
        [ -n "${AADDR:-}" ] && ip -n "$NSA" addr del "$AADDR/32" dev "$AIF"
        AADDR=$(sfield mesh_address)
        in_agent wg set "$AIF" private-key "$tmp/agent.key" peer "$(sfield gateway_public_key)" \
                endpoint "$(sfield gateway_endpoint)" allowed-ips 100.96.0.1/32 persistent-keepalive 25
        ip -n "$NSA" addr add "$AADDR/32" dev "$AIF"
        ip -n "$NSA" link set "$AIF" up
        ip -n "$NSA" route replace 100.96.0.1/32 dev "$AIF" src "$AADDR"
}

# ---- providers remove ----------------------------------------------------------------------------
register gpu1 || exit 1
check "registered: the hub has the agent's peer" test "$(hub_peers)" = "$APUB"
check "the tunnel carries traffic: the agent pings 100.96.0.1" wait_for 10 tunnel_works
check "…and reaches the mesh listener over TCP through it" \
        sh -c "ip netns exec $NSA curl -s -m 5 -o /dev/null -w '%{http_code}' http://100.96.0.1:8443/ | grep -q 404"
if ctl providers remove "$PROV" >"$tmp/out" 2>&1; then
        peers=$(hub_peers)      # at once: no waiting between the call and this
        check "providers remove $PROV: the peer is gone from the hub when the call returns" test -z "$peers"
else
        fail "providers remove: $(cat "$tmp/out")"
fi
check "…and the tunnel no longer carries traffic" sh -c "! ip netns exec $NSA ping -c 2 -W 1 100.96.0.1 >/dev/null 2>&1"
check "…nor TCP" sh -c "! ip netns exec $NSA curl -s -m 2 -o /dev/null http://100.96.0.1:8443/"

# ---- users remove --------------------------------------------------------------------------------
register gpu2 || exit 1
check "registered again (provider $PROV, $AADDR): the peer is back" test "$(hub_peers)" = "$APUB"
check "…and the tunnel works again" wait_for 10 tunnel_works
if ctl users remove carol >"$tmp/out" 2>&1; then
        peers=$(hub_peers)
        check "users remove carol: her provider's peer is gone from the hub when the call returns" test -z "$peers"
else
        fail "users remove: $(cat "$tmp/out")"
fi
check "…and the tunnel no longer carries traffic" sh -c "! ip netns exec $NSA ping -c 2 -W 1 100.96.0.1 >/dev/null 2>&1"
check "…and her key no longer registers" \
        test "$(in_ns curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" \
                --data-binary "{\"name\":\"gpu3\",\"public_key\":\"$APUB\",\"agent_port\":8090}" \
                "$PUBLIC/api/v1/agents/register")" = 401

if grep '^<[0-3]>' "$tmp/gatewayd.log" >/dev/null; then
        fail "errors in the gateway's log"; grep '^<[0-3]>' "$tmp/gatewayd.log"
else
        ok "no errors in the gateway's log"
fi
[ "$failures" -eq 0 ] || { echo "# --- gateway log"; sed 's/^/# /' "$tmp/gatewayd.log"; }
echo "# $failures failure(s)"
[ "$failures" -eq 0 ]
