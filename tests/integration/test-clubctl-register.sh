#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-clubctl-register.sh CLUBD CLUBCTL CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-TEST-UPSTREAM CLUB-HEARTBEAT-HELPER
#
# `clubctl register` end to end, as root: clubd on a private system bus (private-bus.sh;
# root needs no polkit) in an "agent" network namespace with its own wireguard-go, a real
# club-gatewayd with its wireguard-go hub in a "vps" namespace, joined by a veth
# (clubd-netns.sh); the gateway's keys come from gatewayd-admin-helper. Checks:
#  - before registering: `clubctl status` says unregistered (exit 7);
#  - refused keys: unknown, revoked, inference-only → the gateway's message and code, the
#    hint to create a key with the agent scope, exit 5; nothing registered;
#  - an unreachable gateway (nothing listening) → "Cannot reach the gateway at URL", exit 6;
#    plain http:// to the gateway's (non-loopback) address without --insecure → exit 2;
#    a malformed key or name → clubd refuses the argument, exit 2; an empty, over-long or
#    missing key file, no key, an option of another command, an unknown command → exit 2;
#  - a good key from --key-file → "Registered as … mesh address 100.96.0.2", exit 0; the
#    tunnel comes up (the agent pings the gateway's mesh address, wg shows a handshake),
#    heartbeats make it online at the gateway (/healthz providers_online 1) and in
#    `clubctl status` (online, mesh address, gateway, heartbeat "…s ago" or "just now", the upstream's
#    models, the upstream healthy) and `clubctl models` (--json too);
#  - a completion end to end: from a "client" namespace, curl with alice's inference key to
#    the gateway's public listener, streamed (SSE events, [DONE]) and not, answered by this
#    agent's club-test-upstream (its name in the answer, its request count); an unsigned
#    request from the gateway's namespace to the mesh listener: 401 missing_signature;
#  - registering again with the key on standard input (--key -) keeps provider and
#    address and rotates the hub's peer key; on a terminal (pty-run.py) the key is asked
#    for without echo, and unregister asks first (answered no: nothing changes);
#  - `clubctl drain` → the gateway no longer counts it online; `resume` → online again;
#  - clubd restarted: online again from the saved state (no key), and serves a completion;
#  - the model list on its timer (ModelRefreshInterval=1s): the upstream stopped keeps its
#    models across a failed listing, then loses them (clubctl models, the gateway's
#    /v1/models); back with another list, both show it;
#  - the provider deleted from the gateway's store: the next heartbeat makes it `error`,
#    `clubctl status` says to register again; registering again makes it online;
#  - `clubctl unregister --yes` → unregistered, the spoke's address and peer are gone, and
#    drain says not registered (exit 7);
#  - HTTPS: the gateway restarted with a certificate from a throwaway CA (openssl) —
#    register without the CA: exit 6, the certificate did not verify; with [Agent] CAFile=
#    and `clubctl reload`: registered over https://, online;
#  - no key ever appears in clubd's log or in clubctl's output.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

TEST=test-clubctl-register
NAMES=ck                # namespaces clubckv$ID, clubcka$ID, clubckc$ID; interfaces ckh$ID, cka$ID
REQUIRE=(openssl)
. "$(dirname "$0")/clubd-netns.sh"

[ -n "$HB" ] || { echo "FAIL - the sixth argument, CLUB-HEARTBEAT-HELPER, is missing"; exit 1; }
pb_start_bus "$SRC/dbus/club.inference.Agent1.conf"
clubd_netns_setup 10.84.0
# A client namespace joined to the gateway's by a veth (10.84.1.2 → 10.84.1.1).
NSC=club${NAMES}c$ID
netns_add "$NSC" 10.84.1
ip -n "$NSC" route add 10.84.0.0/24 via 10.84.1.1
UPORT=$(sed -n 's/^PORT=//p' "$tmp/upstream.out")
sed -i 's/^\[Proxy\]$/&\nModelRefreshInterval=1s/' "$tmp/clubd.conf"     # the model timer, fast
upstream_requests() {
        in_agent curl -s -m 5 "http://127.0.0.1:$UPORT/_test/stats" |
                /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])' 2>/dev/null
}
# complete STREAM: a chat completion from the client namespace through the gateway's public
# listener with alice's inference key; the answer in $tmp/chat, the status in $code.
complete() {
        code=$(ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/chat" -w '%{http_code}' \
                -H "Authorization: Bearer $(key inference)" -H 'Content-Type: application/json' \
                -d "{\"model\":\"club-test-a\",\"stream\":$1,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}" \
                "$GWURL/v1/chat/completions")
}
for k in agent inference revoked; do
        (umask 077; key "$k" >"$tmp/$k.key")
done
echo "ic-0000000000000000000000000000000000000000000000" >"$tmp/bogus.key"       # 0644: clubctl warns
ALL_KEYS=("$(key agent)" "$(key inference)" "$(key revoked)")
no_key_in() {  # TEXT: none of the keys occurs in TEXT
        local k
        for k in "${ALL_KEYS[@]}"; do [[ "$1" == *"$k"* ]] && return 1; done
        return 0
}
outputs=""
run() { ctl root "$@"; outputs+=$out; }

if start_clubd "$tmp/clubd.log"; then
        ok "clubd owns club.inference.Agent1 on the private bus"
else
        bad "clubd did not start"; show "$tmp/clubd.log"; exit 1
fi

run status
expect_ctl "status before registering: unregistered, exit 7" 7 "State: unregistered" "clubctl register"

# ---- what the gateway refuses -----------------------------------------------------------------
run register --key-file "$tmp/bogus.key" --gateway "$GWURL" --insecure --name box1
expect_ctl "an unknown key: the gateway's message and code, the hint, exit 5" 5 \
        "The gateway at $GWURL refused the key" "(invalid_api_key)" "club-gatewayctl keys create --scope agent" \
        "bogus.key is readable by other users"
show <<<"$out"
run register --key-file "$tmp/revoked.key" --gateway "$GWURL" --insecure --name box1
expect_ctl "a revoked key: exit 5" 5 "(revoked_api_key)" "club-gatewayctl keys create --scope agent"
run register --key-file "$tmp/inference.key" --gateway "$GWURL" --insecure --name box1
expect_ctl "an inference-only key: exit 5, says the agent scope is missing" 5 "(insufficient_scope)" \
        "may not register agents"
expect "…nothing registered" "$(agent_state)" unregistered

run register --key-file "$tmp/agent.key" --gateway http://127.0.0.1:1 --name box1
expect_ctl "an unreachable gateway: the URL and the reason, exit 6" 6 "Cannot reach the gateway at http://127.0.0.1:1" \
        "network connection"
run register --key-file "$tmp/agent.key" --gateway "$GWURL" --name box1
expect_ctl "plain http:// to another host without --insecure: exit 2" 2 "--insecure"
echo "hello" >"$tmp/malformed.key"
run register --key-file "$tmp/malformed.key" --gateway "$GWURL" --insecure --name box1
expect_ctl "a malformed key: clubd refuses the argument, exit 2" 2 "clubd refused the arguments"
run register --key-file "$tmp/agent.key" --gateway "$GWURL" --insecure --name 'bad name!'
expect_ctl "a malformed name: exit 2" 2 "clubd refused the arguments"
(umask 077; : >"$tmp/empty.key"; head -c 600 /dev/zero | tr '\0' a >"$tmp/long.key")
run register --key-file "$tmp/empty.key" --gateway "$GWURL" --insecure
expect_ctl "an empty key file: exit 2" 2 "No key in $tmp/empty.key"
run register --key-file "$tmp/long.key" --gateway "$GWURL" --insecure
expect_ctl "a key file with 600 characters: exit 2" 2 "longer than 512 characters"
run register --key-file "$tmp/missing.key" --gateway "$GWURL" --insecure
expect_ctl "a missing key file: exit 2" 2 "Cannot read the key from $tmp/missing.key"
run register --gateway "$GWURL" --insecure
expect_ctl "no key at all: exit 2, how to give one" 2 "--key-file FILE" "club-gatewayctl keys create --scope agent"
run drain --json
expect_ctl "an option of another command: exit 2" 2 "--json is not an option of 'drain'"
run frobnicate
expect_ctl "an unknown command: exit 2" 2 "Unknown command 'frobnicate'"
expect "…still unregistered" "$(agent_state)" unregistered

# ---- a good key -------------------------------------------------------------------------------------
run register --key-file "$tmp/agent.key" --gateway "$GWURL" --insecure --name box1
expect_ctl "register with a good key from --key-file: exit 0, the mesh address" 0 \
        "Registered as box1 (provider " "with $GWURL; mesh address 100.96.0.2."
PROVIDER=$(agent_prop ProviderId)
check "the tunnel is up: the agent pings the gateway's mesh address 100.96.0.1" \
        wait_for 10 in_agent ping -c 1 -W 1 100.96.0.1
hs=$(in_agent wg show "$AIF" latest-handshakes | awk '{print $2}')
check "…wg shows a handshake on the spoke" test "${hs:-0}" -gt 0
state_is() { [ "$(agent_state)" = "$1" ]; }
check "a heartbeat brings it online" wait_for 20 state_is online
expect "the gateway counts it online (/healthz providers_online)" "$(online_count)" 1

run status
expect_ctl "clubctl status: online with mesh address, gateway, heartbeat, models, upstream" 0 \
        "State: online" "Name: box1" "Mesh address: 100.96.0.2" "Gateway: $GWURL" "Heartbeat: " \
        "Models: club-test-a" "club-test-b" "local" "healthy"
show <<<"$out"
heartbeat_re='Heartbeat: (just now|[0-9]+s ago)'
check "…the last heartbeat as an age" eval '[[ "$out" =~ $heartbeat_re ]]'
run status --json
expect_ctl "clubctl status --json: the documented fields" 0 '"state":"online"' '"registered":true' \
        '"mesh_address":"100.96.0.2"' '"provider_id":' '"last_heartbeat":"20' '"last_heartbeat_age_sec":' \
        '"models":["club-test-a","club-test-b"]' '"upstreams":[{"name":"local","url":"http://127.0.0.1:' \
        '"in_flight":0'
check "…valid JSON with every documented key" /usr/bin/python3 -c '
import json, sys
o = json.loads(sys.argv[1])
keys = {"state", "state_reason", "registered", "name", "provider_id", "mesh_address", "gateway_url",
        "last_heartbeat", "last_heartbeat_age_sec", "models", "capabilities", "upstreams", "in_flight", "version"}
assert keys <= set(o), keys - set(o)
assert o["last_heartbeat_age_sec"] < 60' "$out"
run models
expect "clubctl models" "$out" "$(printf 'club-test-a\nclub-test-b')"
run models --json
expect "clubctl models --json" "$out" '{"models":["club-test-a","club-test-b"]}'

# ---- a completion from a client through the gateway to this agent's upstream -----------------------
before=$(upstream_requests)
complete false
check "a completion from the client namespace through the gateway (inference key): 200, this agent's upstream" \
        sh -c "[ '$code' = 200 ] && grep -q '\"id\":\"chatcmpl-local-' '$tmp/chat' && grep -q '\"content\":\"tok0 tok1 tok2 tok3 tok4 \"' '$tmp/chat'"
complete true
check "…streamed: 200, five content events from this agent's upstream, then [DONE]" \
        sh -c "[ '$code' = 200 ] && [ \$(grep -c '^data: {\"id\":\"chatcmpl-local-' '$tmp/chat') -ge 5 ] && tail -n 3 '$tmp/chat' | grep -qx 'data: \[DONE\]'"
expect "…the upstream counted both requests" "$(upstream_requests)" "$((before + 2))"
code=$(in_ns curl -s -m 5 -o "$tmp/resp" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"model":"club-test-a","messages":[{"role":"user","content":"hi"}]}' http://100.96.0.2:8090/v1/chat/completions)
check "an unsigned request from the gateway's namespace to the mesh listener: 401 missing_signature" \
        sh -c "[ '$code' = 401 ] && grep -q '\"code\":\"missing_signature\"' '$tmp/resp'"
expect "…and it never reached the upstream" "$(upstream_requests)" "$((before + 2))"

# ---- again, the key on standard input ------------------------------------------------------------------
peer_before=$(in_ns wg show "$IF" peers)
out=$(key agent | "$CLUBCTL" register --key - --insecure 2>&1)
rc=$?
outputs+=$out
expect_ctl "register again with --key - (standard input): exit 0, same address" 0 "Registered as box1" \
        "mesh address 100.96.0.2"
expect "…same provider" "$(agent_prop ProviderId)" "$PROVIDER"
peer_after=$(in_ns wg show "$IF" peers)
check "…the hub has exactly one peer, with a new key" test -n "$peer_after" -a "$peer_after" != "$peer_before" \
        -a "$(echo "$peer_after" | wc -l)" = 1
check "…online again" wait_for 20 state_is online

# ---- on a terminal (pty-run.py types only once the prompt is there) ---------------------------------------
out=$("$HERE/pty-run.py" 150 "Key (input is hidden):" "$(key agent)" -- "$CLUBCTL" register --key - --insecure 2>&1)
rc=$?
outputs+=$out
expect_ctl "register with the key typed on a terminal: asked for, exit 0" 0 "Key (input is hidden):" "Registered as box1"
check "…what was typed is not echoed" no_key_in "$out"
out=$("$HERE/pty-run.py" 30 "[y/N]" "n" -- "$CLUBCTL" unregister 2>&1)
rc=$?
expect_ctl "unregister on a terminal, answered no: exit 1, nothing changed" 1 "box1, 100.96.0.2" "Unregister? [y/N]" \
        "Nothing changed."
expect "…same provider" "$(agent_prop ProviderId)" "$PROVIDER"
check "…online" wait_for 20 state_is online

# ---- drain and resume, seen by the gateway -----------------------------------------------------------------
online_is() { [ "$(online_count)" = "$1" ]; }
run drain
expect_ctl "clubctl drain: exit 0" 0 "draining"
check "…the gateway no longer counts it online" wait_for 10 online_is 0
expect "…State draining" "$(agent_state)" draining
run resume
expect_ctl "clubctl resume: exit 0" 0 "takes requests again"
check "…the gateway counts it online again" wait_for 10 online_is 1
check "…State online" wait_for 10 state_is online

# ---- a restart: back online from the saved state, without any key ---------------------------------------
if stop_clubd; then ok "clubd exits 0 on SIGTERM"; else bad "clubd exit status $?"; fi
start_clubd "$tmp/clubd.log" || bad "clubd did not come back"
check "restarted: online again from the saved state" wait_for 20 state_is online
run status
expect_ctl "…clubctl status: online, same provider and address" 0 "State: online" "Mesh address: 100.96.0.2" \
        "Provider: ${PROVIDER#x }"
complete false
check "…a completion through the gateway reaches it" sh -c "[ '$code' = 200 ] && grep -q 'chatcmpl-local-' '$tmp/chat'"

# ---- the model list on its timer (ModelRefreshInterval=1s) -----------------------------------------------
gateway_models() {
        ip netns exec "$NSC" curl -s -m 5 -H "Authorization: Bearer $(key inference)" "$GWURL/v1/models" |
                /usr/bin/python3 -c 'import json, sys; print(",".join(m["id"] for m in json.load(sys.stdin)["data"]))' 2>/dev/null
}
models_are() {  # A,B… or "" (then clubctl says there are none)
        ctl root models --json
        [ "$out" = "{\"models\":[$(sed 's/[^,][^,]*/"&"/g' <<<"$1")]}" ]
}
gateway_models_are() { [ "$(gateway_models)" = "$1" ]; }
upstream_unhealthy() { ctl root status; [[ "$out" == *unhealthy* ]]; }
kill "$srvpid"; wait "$srvpid" 2>/dev/null
check "the upstream stopped: clubctl status shows it unhealthy after a failed listing" wait_for 10 upstream_unhealthy
check "…its models are kept across a failed listing (three are allowed)" models_are club-test-a,club-test-b
check "…and gone once it kept failing" wait_for 15 models_are ""
check "…from the gateway's model list too (the change is sent at once)" wait_for 10 gateway_models_are ""
ip netns exec "$NSA" "$UPSTREAM" --port "$UPORT" --models club-test-a,club-test-c --name local >"$tmp/upstream.out" 2>&1 &
srvpid=$!
check "the upstream back with another list: clubctl models has it at the next refresh" \
        wait_for 15 models_are club-test-a,club-test-c
check "…and the gateway too" wait_for 10 gateway_models_are club-test-a,club-test-c

# ---- the gateway forgets the provider ------------------------------------------------------------------------
check "the provider is deleted from the gateway's store" "$HB" delete "$tmp/gw-state/store.db" "${PROVIDER#x }"
run drain               # sends a heartbeat at once
check "the next heartbeat makes State error" wait_for 15 state_is error
run status
expect_ctl "…clubctl status says the gateway no longer knows it, and to register again" 0 "State: error" \
        "no longer knows this machine (provider ${PROVIDER#x })" "clubctl register"
show <<<"$out"
run register --key-file "$tmp/agent.key" --insecure
expect_ctl "registering again as it says: exit 0" 0 "Registered as box1"
run resume              # the drain above outlives a registration, not a restart
check "…online again" wait_for 20 state_is online

# ---- unregister ----------------------------------------------------------------------------------------------
run unregister --yes
expect_ctl "clubctl unregister --yes: exit 0" 0 "Unregistered"
expect "…State unregistered" "$(agent_state)" unregistered
check "…the spoke's mesh address is gone" sh -c "! ip -n $NSA addr show dev $AIF | grep -q 100.96.0.2"
expect "…and its peer" "$(in_agent wg show "$AIF" peers)" ""
run drain
expect_ctl "drain after unregistering: exit 7" 7 "not registered"
run status --json
expect_ctl "status --json after unregistering: exit 7" 7 '"registered":false' '"mesh_address":null'

# ---- HTTPS with a private CA ------------------------------------------------------------------------------------
mkdir "$tmp/tls"
make_cert "$tmp/tls" IP:10.84.0.1 || bad "openssl: making the certificates failed"
kill "$gwpid"; wait "$gwpid" 2>/dev/null
cat >>"$tmp/gatewayd.conf" <<CONF

[Public]
TLSCertificate=$tmp/tls/server.crt
TLSKey=$tmp/tls/server.key
CONF
ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 10.84.0.1:8443 >>"$tmp/gatewayd.log" 2>&1 &
gwpid=$!
HTTPSURL=https://10.84.0.1:8443
check "the gateway restarted with HTTPS on $HTTPSURL" wait_for 10 in_agent curl -sf -o /dev/null --cacert "$tmp/tls/ca.crt" "$HTTPSURL/healthz"
run register --key-file "$tmp/agent.key" --gateway "$HTTPSURL" --name box1
expect_ctl "register over https:// without the CA: exit 6, the certificate did not verify" 6 \
        "did not present a valid TLS certificate" "CAFile"
expect "…nothing registered" "$(agent_state)" unregistered
sed -i "/^\[Agent\]/a CAFile=$tmp/tls/ca.crt" "$tmp/clubd.conf"
run reload
expect_ctl "[Agent] CAFile= added, clubctl reload: exit 0" 0 "reloaded"
run register --key-file "$tmp/agent.key" --gateway "$HTTPSURL" --name box1
expect_ctl "register over https:// verified against CAFile=: exit 0, no --insecure needed" 0 \
        "Registered as box1" "with $HTTPSURL"
check "…online" wait_for 20 state_is online
run unregister --yes
expect_ctl "…and unregistered again" 0 "Unregistered"

# ---- secrets -----------------------------------------------------------------------------------------------------
check "no key in clubctl's output" no_key_in "$outputs"
check "no key in clubd's log" no_key_in "$(cat "$tmp/clubd.log")"
if stop_clubd; then ok "clubd exits 0 on SIGTERM"; else bad "clubd exit status $?"; fi

fail=$((fail + failures))
pb_finish || { show "$tmp/clubd.log" | tail -60; show "$tmp/gatewayd.log" | tail -20; false; }
