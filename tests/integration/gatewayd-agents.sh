# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced after gatewayd-netns.sh by the tests that put agents behind a running gateway
# (test-gatewayd-api.sh, test-gatewayd-capabilities.sh, test-gatewayd-usage.sh): register,
# heartbeat, start_agent, sfield/efield to read $tmp/resp, the client's sdk/api/hdr/expect, and
# start_public_gateway / stop_gateway / restart_gateway_alone.
#
# The caller sets, before calling them: GATEWAYD and ADMIN (club-gatewayd and
# gatewayd-admin-helper), PUBLIC (the gateway's public URL, reached from the
# "vps" namespace), AGENT_URL (the same as agents reach it, for their saved state), AGENT (an
# API key with the agent scope), HB (club-heartbeat-helper), UPSTREAM (club-test-upstream),
# CLUBD (clubd, or empty: see start_agent), and optionally AGENT_CONF_EXTRA (text appended to
# the next clubd's configuration, e.g. [Capability] sections).

HBPATH=/api/v1/agents/heartbeat

# agents_netns_setup PREFIX (e.g. 10.77): gatewayd-netns.sh's "vps" ($NS, PREFIX.0.1) and
# first agent ($NSA, PREFIX.0.2) namespaces with their wireguard-go, a second agent namespace
# $NSB (PREFIX.2.2, routed to the vps) with wireguard-go on $BIF, and a client namespace $NSC
# (PREFIX.3.2; the gateway is PREFIX.3.1 from there).
agents_netns_setup() {
        netns_setup "$1.0"
        start_agent_wg
        netns_add "$NSB" "$1.2"
        netns_add "$NSC" "$1.3"
        ip -n "$NSB" route add "$1.0.0/24" via "$1.2.1"
        ip netns exec "$NSB" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$BIF" >"$tmp/agentb-wg.log" 2>&1 &
        extra_pid $!
        extra_sock "$BIF"
        wait_for 5 test -S "$RUNDIR/$BIF.sock" || { fail "wireguard-go did not start for the second agent"; exit 1; }
}

# start_public_gateway DB: the admin helper's keys for the store DB in $tmp/keys, and AGENT (an
# agent key), ALICE (alice's inference key) and BOB (bob's agent key) from them; then
# club-gatewayd with $tmp/gatewayd.conf in "vps" (public listener 0.0.0.0:8080, log
# $tmp/gatewayd.log), waiting until $PUBLIC/healthz answers.
start_public_gateway() {
        "$ADMIN" "$1" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
        AGENT=$(sed -n 's/^agent=//p' "$tmp/keys")
        ALICE=$(sed -n 's/^inference=//p' "$tmp/keys")
        BOB=$(sed -n 's/^bob_agent=//p' "$tmp/keys")
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 0.0.0.0:8080 >"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        wait_for 10 in_ns curl -sf -o /dev/null "$PUBLIC/healthz" ||
                { fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1; }
}
# stop_gateway DESCRIPTION: SIGTERM, and checks that the gateway exits 0.
stop_gateway() {
        kill "$gwpid"
        wait "$gwpid"
        check "$1" test $? = 0
        gwpid=
}
# restart_gateway_alone: once the agents are gone, the gateway stopped and started again with
# HeartbeatWindow=1s (appending to its log); checks that it counts no provider online.
no_provider_online() { in_ns curl -s "$PUBLIC/healthz" | grep -q '"providers_online":0'; }
restart_gateway_alone() {
        stop_gateway "SIGTERM: the gateway exits 0"
        mkdir -p "$tmp/gatewayd.conf.d"
        printf '[Gateway]\nHeartbeatWindow=1s\n' >"$tmp/gatewayd.conf.d/window.conf"
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 0.0.0.0:8080 >>"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        check "with both agents gone and HeartbeatWindow=1s, no provider is online" wait_for 10 no_provider_online
}

sfield() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }
efield() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["error"][sys.argv[2]])' "$tmp/resp" "$1" 2>/dev/null; }

# register NAME: registers with the agent key; sets $PIDV, $ADDR and $SECRET, and keeps
# the answer in $tmp/NAME.json and the agent's private key in $tmp/NAME.key.
register() {
        wg genkey >"$tmp/$1.key"
        code=$(in_ns curl -s -o "$tmp/$1.json" -w '%{http_code}' -H "Authorization: Bearer $AGENT" \
                --data-binary "{\"name\":\"$1\",\"public_key\":\"$(wg pubkey <"$tmp/$1.key")\",\"agent_port\":8090}" \
                "$PUBLIC/api/v1/agents/register")
        [ "$code" = 201 ] || { fail "registering $1: $code $(cat "$tmp/$1.json")"; exit 1; }
        cp "$tmp/$1.json" "$tmp/resp"
        PIDV=$(sfield provider_id) ADDR=$(sfield mesh_address) SECRET=$(sfield request_secret)
}
# heartbeat NS SECRET MODELS-JSON [DRAINING]: what clubd would send, signed by the helper.
heartbeat() {
        local c
        c=$(ip netns exec "$1" curl -s -m 5 -o "$tmp/hb" -w '%{http_code}' \
                -H "X-Club-Signature: $("$HB" sign "$2" POST "$HBPATH")" -H 'Content-Type: application/json' \
                --data-binary "{\"models\":$3,\"in_flight\":0,\"capacity\":4,\"draining\":${4:-false}}" \
                "http://100.96.0.1:8443$HBPATH")
        [ "$c" = 200 ]
}
# start_agent NAME NS IFNAME UPSTREAM-NAME MODELS: registers NAME and brings up its agent.
# With clubd: club-test-upstream on 127.0.0.1 in NS, and clubd started from the state a
# registration by `clubctl register` would have left (the registration answer and the
# private key, in StateDirectory=/state.json): clubd configures its spoke on IFNAME (the
# wireguard-go already running there), opens its mesh listener on ADDR:8090 and
# heartbeats with the models it finds. Without: the spoke configured with `wg`,
# club-test-upstream on ADDR:8090 itself, one heartbeat by curl. Sets PIDV, ADDR, SECRET,
# UPID (the upstream), AGPID (clubd, or the upstream) and STATS (its /_test/stats URL).
start_agent() {
        local name=$1 ns=$2 ifname=$3 up=$4 models=$5 port
        register "$name"
        if [ -n "$CLUBD" ]; then
                ip netns exec "$ns" "$UPSTREAM" --listen 127.0.0.1:0 --name "$up" --models "$models" >"$tmp/up-$up.out" 2>&1 &
                UPID=$!
                extra_pid $UPID
                wait_for 5 sh -c "grep -q '^PORT=' '$tmp/up-$up.out' 2>/dev/null" || { fail "club-test-upstream $up did not start"; exit 1; }
                port=$(sed -n 's/^PORT=//p' "$tmp/up-$up.out")
                STATS=http://127.0.0.1:$port/_test/stats
                mkdir -m 0700 "$tmp/$name"
                "$PY" - "$tmp/$name.json" "$tmp/$name.key" "$tmp/$name/state.json" "$AGENT_URL" <<'EOF' || { fail "writing $name's state"; exit 1; }
import json, os, sys
r = json.load(open(sys.argv[1]))
state = {k: r[k] for k in ("provider_id", "name", "mesh_address", "gateway_public_key", "gateway_endpoint",
                           "gateway_mesh_address", "heartbeat_interval_sec", "request_secret")}
state.update(version=1, gateway_url=sys.argv[4], agent_port=8090,
             private_key=open(sys.argv[2]).read().strip(), insecure=True, ca_file=None)
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, json.dumps(state).encode())
os.close(fd)
EOF
                cat >"$tmp/$name.conf" <<CONF
[Agent]
StateDirectory=$tmp/$name
LogLevel=debug

[Mesh]
Interface=$ifname
Port=8090

[Proxy]
Listen=127.0.0.1:18090

[Upstream]
Name=$up
URL=http://127.0.0.1:$port/v1
${AGENT_CONF_EXTRA:-}
CONF
                ip netns exec "$ns" "$CLUBD" --config "$tmp/$name.conf" >"$tmp/clubd-$name.log" 2>&1 &
                AGPID=$!
                extra_pid $AGPID
        else
                cp "$tmp/$name.json" "$tmp/resp"
                ip netns exec "$ns" wg set "$ifname" private-key "$tmp/$name.key" peer "$(sfield gateway_public_key)" \
                        endpoint "$(sfield gateway_endpoint)" allowed-ips 100.96.0.1/32 persistent-keepalive 25
                ip -n "$ns" addr add "$ADDR/32" dev "$ifname"
                ip -n "$ns" link set "$ifname" up
                ip -n "$ns" route add 100.96.0.1/32 dev "$ifname" src "$ADDR"
                wait_for 10 sh -c "ip netns exec $ns ping -c 1 -W 1 100.96.0.1 >/dev/null" || { fail "no tunnel for $name"; exit 1; }
                ip netns exec "$ns" "$UPSTREAM" --listen "$ADDR:8090" --name "$up" --models "$models" >"$tmp/up-$up.out" 2>&1 &
                UPID=$!
                AGPID=$UPID
                extra_pid $UPID
                wait_for 5 sh -c "grep -q '^PORT=' '$tmp/up-$up.out' 2>/dev/null" || { fail "club-test-upstream $up did not start"; exit 1; }
                STATS=http://$ADDR:8090/_test/stats
                heartbeat "$ns" "$SECRET" "[\"${models//,/\",\"}\"]" || { fail "$name's heartbeat: $(cat "$tmp/hb")"; exit 1; }
        fi
}

# The client namespace $NSC, against the gateway at $BASE (e.g. http://PREFIX.3.1:8080):
# sdk NAME KEY JS-EXPRESSION CLIENT-ARGS… runs the npm openai SDK (tests/openai/client.mjs;
# source ../openai/sdk.sh first) and checks the expression on its output `o`; api CURL-ARGS…
# runs curl, setting $code with the body in $tmp/resp and the headers in $tmp/hdr; hdr NAME
# is one of those headers; expect DESCRIPTION STATUS [ERROR-CODE] checks api's answer: that
# status, that error code, and an x-request-id.
sdk() {
        local name=$1 key=$2 expr=$3 out
        shift 3
        out=$(ip netns exec "$NSC" node "$SDK_DIR/client.mjs" --base-url "$BASE/v1" --api-key "$key" "$@" 2>&1)
        if node -e 'const o = JSON.parse(process.argv[1]); process.exit(eval(process.argv[2]) ? 0 : 1)' \
                "$out" "$expr" 2>/dev/null; then
                ok "$name"
        else
                fail "$name"
                echo "#   expected: $expr"
                echo "#   got: $out"
        fi
}
api() {
        code=$(ip netns exec "$NSC" curl -s -m 20 -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code}' "$@")
}
hdr() { sed -n "s/^$1: *//Ip" "$tmp/hdr" | tr -d '\r' | head -1; }
expect() {
        if [ "$code" = "$2" ] && { [ -z "${3:-}" ] || [ "$(efield code)" = "$3" ]; } && [ -n "$(hdr x-request-id)" ]; then
                ok "$1"
        else
                fail "$1 (got $code: $(head -c 300 "$tmp/resp"))"
        fi
}

# no_secrets_logged SECRET…: none of them in the gateway's log or the agents'.
no_secrets_logged() {
        local s
        for s in "$@"; do
                grep -qF "$s" "$tmp/gatewayd.log" "$tmp"/clubd-*.log 2>/dev/null && fail "a secret is in a log"
        done
        ok "no secret or key in the logs of the gateway${CLUBD:+ and clubd}"
}

# agents_summary [FILE…]: exit 0 if every check passed; else the end of the gateway's and the
# agents' logs and the start of each FILE, and exit 1.
agents_summary() {
        local f
        if [ "$failures" -gt 0 ]; then
                for f in "$tmp/gatewayd.log" "$tmp"/clubd-*.log "$@"; do
                        [ -f "$f" ] || continue
                        echo "# $(basename "$f"):"
                        case $f in
                        *.log) sed 's/^/# /' "$f" | tail -60 ;;
                        *) sed 's/^/# /' "$f" | head -80 ;;
                        esac
                done
                echo "$failures check(s) failed"
                exit 1
        fi
        echo "all checks passed"
        exit 0
}
