#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gateway-tls-proxy.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM
#
# The shipped TLS-terminating proxy examples, examples/nginx/club-gateway.conf and
# examples/caddy/Caddyfile, run for real (as root) in front of club-gatewayd listening with
# plain HTTP on loopback. Namespaces: "vps" runs the gateway (127.0.0.1:8080), its
# wireguard-go hub and the proxy (on 443, as the example says); "agent" runs a wireguard-go
# spoke and club-test-upstream on its mesh address (registered with curl, one signed
# heartbeat: the API test's direct variant); "client" runs curl and python. The example files
# are used as shipped except for what the test must substitute: the server name
# (gw.club.test), the certificate paths (a throwaway CA and certificate made with openssl),
# the gateway's address, and no IPv6 listen lines. For nginx and for Caddy:
#  - the rendered file passes `nginx -t` / `caddy validate`;
#  - a plain completion over HTTPS through the proxy: 200, answered by the agent's upstream;
#  - a streamed completion whose events the upstream spaces 400 ms apart arrives event by
#    event: the client sees the first content event long before the last (not all at the
#    end), every event, and [DONE];
#  - no API key: the gateway's 401 with WWW-Authenticate: Bearer and its OpenAI-shaped
#    JSON, not a page of the proxy's; a body over the gateway's MaxBodySize=: its 413;
#  - the gateway's x-request-id comes back through the proxy, the same the provider got;
#  - [Public] TrustedProxies= (RegisterRatePerSource=1: one unauthenticated registration per
#    client address, the next 429): without it, behind nginx two client addresses (10.91.1.2 and
#    10.91.1.3 on the client's veth, curl --interface) share the proxy's bucket; after a reload
#    with TrustedProxies=127.0.0.1 each has its own, and the log lines of a registration and of
#    an OpenAI request name the client; a client reaching the gateway directly from an
#    untrusted address (127.0.0.2) and forging X-Forwarded-For stays in its own bucket; a
#    malformed header from the trusted proxy falls back to the proxy, logged at debug; behind
#    Caddy the log names the client too; a bad entry stops the start naming FILE:LINE;
#  - what the proxy tells the gateway, seen by pointing the same file at an echoing
#    club-test-upstream instead: X-Forwarded-For and X-Real-IP are the client's address
#    (a forged X-Forwarded-For from the client is replaced), X-Forwarded-Proto https, Host
#    gw.club.test, Authorization unchanged; and the gateway passes none of X-Forwarded-*,
#    X-Real-IP to the provider.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# (nginx, caddy, openssl, wireguard-go) is missing, unless CLUB_TEST_STRICT=1. Everything
# made here is removed on exit.
set -u

usage="usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM"
GATEWAYD=${1:?$usage}
ADMIN=${2:?$usage}
HB=${3:?$usage}
UPSTREAM=${4:?$usage}
TEST=test-gateway-tls-proxy
ID=$$
NS=clubnwv$ID
NSA=clubnwa$ID
NSC=clubnwc$ID
IF=nwh$ID
AIF=nwa$ID
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
. "$HERE/gatewayd-netns.sh"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || skip "nginx is not installed"
for t in caddy openssl; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done

NAME=gw.club.test
PROXY_IP=10.91.1.1
HBPATH=/api/v1/agents/heartbeat
proxypid=
stop_proxy() {
        [ -n "$proxypid" ] || return 0
        kill "$proxypid" 2>/dev/null
        wait "$proxypid" 2>/dev/null
        proxypid=
}
trap 'stop_proxy; cleanup' EXIT

# ---- namespaces, the gateway on loopback, a provider -------------------------------------------
netns_setup 10.91.0
start_agent_wg
netns_add "$NSC" 10.91.1
# A second client address on the same link: curl --interface picks which one a request is from.
ip -n "$NSC" addr add 10.91.1.3/24 dev g0a$ID
in_client() { ip netns exec "$NSC" "$@"; }

mkdir -m 0700 "$tmp/state" "$tmp/tls"
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug
DBus=no
ProbeInterval=1h

[Public]
Listen=127.0.0.1:8080
MaxBodySize=1M
# One registration per minute per client address (the burst too): the second in a row from
# the same address is 429, whatever the key. TrustedProxies= comes later, by reload.
RegisterRatePerSource=1

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.91.0.1:51820
CONF
"$ADMIN" "$tmp/state/store.db" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
AGENT=$(sed -n 's/^agent=//p' "$tmp/keys")
KEY=$(sed -n 's/^inference=//p' "$tmp/keys")
# Daemons are started with `ip netns exec` itself: a backgrounded in_ns would be a subshell,
# and $! not the daemon.
ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" >"$tmp/gatewayd.log" 2>&1 &
gwpid=$!
wait_for 10 in_ns curl -sf -o /dev/null http://127.0.0.1:8080/healthz || { fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1; }

wg genkey >"$tmp/agent.key"
# From 127.0.0.9, not the proxy's 127.0.0.1: its registration bucket stays full for later.
code=$(in_ns curl -s --interface 127.0.0.9 -o "$tmp/reg.json" -w '%{http_code}' -H "Authorization: Bearer $AGENT" \
        --data-binary "{\"name\":\"tls1\",\"public_key\":\"$(wg pubkey <"$tmp/agent.key")\",\"agent_port\":8090}" \
        http://127.0.0.1:8080/api/v1/agents/register)
[ "$code" = 201 ] || { fail "registering the provider: $code $(cat "$tmp/reg.json")"; exit 1; }
field() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/reg.json" "$1"; }
MESH=$(field mesh_address) SECRET=$(field request_secret)
in_agent wg set "$AIF" private-key "$tmp/agent.key" peer "$(field gateway_public_key)" \
        endpoint "$(field gateway_endpoint)" allowed-ips 100.96.0.1/32 persistent-keepalive 25
ip -n "$NSA" addr add "$MESH/32" dev "$AIF"
ip -n "$NSA" link set "$AIF" up
ip -n "$NSA" route add 100.96.0.1/32 dev "$AIF" src "$MESH"
wait_for 10 in_agent ping -c 1 -W 1 100.96.0.1 >/dev/null || { fail "no tunnel"; exit 1; }
ip netns exec "$NSA" "$UPSTREAM" --listen "$MESH:8090" --name tls-up --models m-tls >"$tmp/up.out" 2>&1 &
srvpid=$!
wait_for 5 grep -q '^PORT=' "$tmp/up.out" || { fail "club-test-upstream did not start"; exit 1; }
hb=$(in_agent curl -s -m 5 -o "$tmp/hb" -w '%{http_code}' -H "X-Club-Signature: $("$HB" sign "$SECRET" POST "$HBPATH")" \
        -H 'Content-Type: application/json' --data-binary '{"models":["m-tls"],"in_flight":0,"capacity":4,"draining":false}' \
        "http://100.96.0.1:8443$HBPATH")
[ "$hb" = 200 ] || { fail "the heartbeat: $hb $(cat "$tmp/hb")"; exit 1; }
ok "the gateway on 127.0.0.1:8080 (plain HTTP) has provider tls1 online, through its tunnel"

# An echoing club-test-upstream on the vps's loopback: what a proxy sends to its backend.
ip netns exec "$NS" "$UPSTREAM" --listen 127.0.0.1:0 --name echo >"$tmp/echo.out" 2>&1 &
extra_pid $!
wait_for 5 grep -q '^PORT=' "$tmp/echo.out" || { fail "the echo upstream did not start"; exit 1; }
ECHO_PORT=$(sed -n 's/^PORT=//p' "$tmp/echo.out")

# ---- a throwaway CA and the proxy's certificate ---------------------------------------------------
make_cert "$tmp/tls" "DNS:$NAME" || { fail "openssl failed"; cat "$tmp/openssl.log"; exit 1; }

# render FILE BACKEND-PORT: the example with the test's substitutions, on stdout.
render() {
        sed -e "s/gateway\.example\.org/$NAME/g" \
            -e "s#/etc/club/tls/fullchain.pem#$tmp/tls/server.crt#g" -e "s#/etc/club/tls/privkey.pem#$tmp/tls/server.key#g" \
            -e "s/127\.0\.0\.1:8080/127.0.0.1:$2/g" -e '/listen \[::\]/d' \
            -e "s@^\([[:space:]]*\)# tls $tmp@\1tls $tmp@" "$1"
}

# ---- the client's requests ---------------------------------------------------------------------------------
# client MODE [CURL-ARGS…]: curl from the client namespace to https://gw.club.test/… verified
# against the test CA; MODE is "chat" (plain) or "raw" (CURL-ARGS give the rest); sets $code,
# the body in $tmp/resp, the headers in $tmp/hdr.
client() {
        local mode=$1
        shift
        if [ "$mode" = chat ]; then
                set -- -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
                        --data-binary '{"model":"m-tls","messages":[{"role":"user","content":"hi"}]}' "$@" \
                        "https://$NAME/v1/chat/completions"
        fi
        code=$(in_client curl -s -m 20 --cacert "$tmp/tls/ca.crt" --resolve "$NAME:443:$PROXY_IP" \
                -o "$tmp/resp" -D "$tmp/hdr" -w '%{http_code}' "$@")
}
hdr() { sed -n "s/^$1: *//Ip" "$tmp/hdr" | tr -d '\r' | head -1; }

# stream: a streamed completion through the proxy, the upstream spacing its five events
# 400 ms apart; python prints when each event arrived (seconds after the request was sent).
stream() {
        in_client "$PY" - "$PROXY_IP" "$NAME" "$tmp/tls/ca.crt" "$KEY" >"$tmp/stream.json" 2>&1 <<'EOF'
import http.client, json, socket, ssl, sys, time
ip, name, ca, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
# Connected by hand: the name is not in any resolver, the certificate is for the name.
c = http.client.HTTPSConnection(name, 443, context=ctx, timeout=20)
c.sock = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=20), server_hostname=name)
body = json.dumps({"model": "m-tls", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                   "club_test": {"chunks": 5, "chunk_delay_ms": 400}})
t0 = time.monotonic()
c.request("POST", "/v1/chat/completions", body=body,
          headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
r = c.getresponse()
buf, events = b"", []
while True:
    d = r.read1(65536)
    if not d:
        break
    buf += d
    while b"\n\n" in buf:
        ev, buf = buf.split(b"\n\n", 1)
        ev = ev.decode().strip()
        if ev.startswith("data: "):
            events.append((time.monotonic() - t0, ev[6:]))
content = [t for t, e in events if e != "[DONE]" and json.loads(e)["choices"] and
           json.loads(e)["choices"][0]["delta"].get("content")]
print(json.dumps({"status": r.status, "type": r.getheader("Content-Type"), "content_times": content,
                  "done": bool(events) and events[-1][1] == "[DONE]"}))
EOF
}

proxy_checks() {  # PROXY-NAME
        local p=$1
        client chat
        check "$p: a completion over HTTPS through the proxy: 200, answered by the agent's upstream" \
                sh -c "[ '$code' = 200 ] && grep -q '\"id\":\"chatcmpl-tls-up-' '$tmp/resp'"
        stream
        check "$p: a streamed completion arrives event by event (5 content events 400 ms apart at the upstream, then [DONE])" \
                "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
t = o["content_times"]
assert o["status"] == 200 and o["type"].startswith("text/event-stream") and o["done"], o
assert len(t) == 5, o
# Unbuffered: the first event is in the client'"'"'s hands while the upstream is still
# producing (four 400 ms gaps follow it), not together with the last.
assert t[-1] - t[0] >= 0.8, o' "$tmp/stream.json" || cat "$tmp/stream.json"
        client raw -H 'Content-Type: application/json' --data-binary '{"model":"m-tls","messages":[]}' \
                "https://$NAME/v1/chat/completions"
        check "$p: no API key: the gateway's 401 with WWW-Authenticate: Bearer and its OpenAI-shaped error" \
                sh -c "[ '$code' = 401 ] && [ \"\$(sed -n 's/^www-authenticate: *//Ip' '$tmp/hdr' | tr -d '\r')\" = Bearer ] && grep -q '\"code\":\"missing_api_key\"\|\"code\":\"invalid_api_key\"' '$tmp/resp'"
        head -c 1200000 /dev/zero | tr '\0' a | sed 's/^/{"model":"m-tls","x":"/; s/$/"}/' >"$tmp/big.json"
        client raw -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary "@$tmp/big.json" \
                "https://$NAME/v1/chat/completions"
        check "$p: a body over the gateway's MaxBodySize=1M: the gateway's own 413, OpenAI-shaped (got $code)" \
                sh -c "[ '$code' = 413 ] && grep -q '\"error\":{' '$tmp/resp'"
        client chat
        in_agent curl -s -m 5 -o "$tmp/last.json" "http://$MESH:8090/_test/last-request"
        check "$p: the gateway's x-request-id reaches the client through the proxy, the same the provider got; no X-Forwarded-*, X-Real-IP or Forwarded reached the provider" "$PY" -c '
import json, sys
h = json.load(open(sys.argv[1]))["headers"]
assert len(sys.argv[2]) == 32 and h.get("x-request-id") == sys.argv[2], (h, sys.argv[2])
assert not [k for k in h if k.startswith("x-forwarded-") or k in ("x-real-ip", "forwarded")], h' "$tmp/last.json" "$(hdr x-request-id)"
}

echo_checks() {  # PROXY-NAME: the proxy pointed at the echoing upstream
        local p=$1
        client raw -H "Authorization: Bearer $KEY" -H 'X-Forwarded-For: 192.0.2.66' -H 'X-Test-Echo: 1' \
                -H 'Content-Type: application/json' --data-binary '{"model":"m-tls"}' "https://$NAME/v1/chat/completions"
        check "$p: what the gateway is told: X-Forwarded-For and X-Real-IP the client's address (10.91.1.2, the forged one replaced), X-Forwarded-Proto https, Host, Authorization unchanged" \
                "$PY" -c '
import json, sys
h = json.load(open(sys.argv[1]))["headers"]
assert h.get("x-forwarded-for") == "10.91.1.2", h
assert h.get("x-real-ip") == "10.91.1.2", h
assert h.get("x-forwarded-proto") == "https", h
assert h.get("host") == sys.argv[2], h
assert h.get("authorization") == "Bearer " + sys.argv[3], h' "$tmp/resp" "$NAME" "$KEY" || head -c 600 "$tmp/resp"
}

# ---- TrustedProxies= ----------------------------------------------------------------------------------------
# register_from ADDRESS: an unauthenticated registration through the proxy from ADDRESS of
# the client namespace; prints the status (401: the address's bucket had its token; 429 "from
# this address": it had none). Each address has one token a minute (RegisterRatePerSource=1).
register_from() {
        in_client curl -s -m 10 --interface "$1" --cacert "$tmp/tls/ca.crt" --resolve "$NAME:443:$PROXY_IP" \
                -o "$tmp/regfrom" -w '%{http_code}' --data-binary '{}' "https://$NAME/api/v1/agents/register"
}
# direct SOURCE [CURL-ARGS…]: the same straight to the gateway from the vps's SOURCE (127.0.0.x).
direct() {
        local src=$1
        shift
        in_ns curl -s -m 10 --interface "$src" -o "$tmp/regfrom" -w '%{http_code}' --data-binary '{}' "$@" \
                http://127.0.0.1:8080/api/v1/agents/register
}
# reload_with LINES: the gateway's [Public] gets LINES (appended to the file), then SIGHUP;
# waits for the reload's log line.
reload_with() {
        local n
        n=$(grep -c 'Configuration reloaded' "$tmp/gatewayd.log")
        printf '\n[Public]\n%s\n' "$1" >>"$tmp/gatewayd.conf"
        kill -HUP "$gwpid"
        wait_for 10 sh -c "[ \$(grep -c 'Configuration reloaded' '$tmp/gatewayd.log') -gt $n ]"
}

trust_checks() {  # with nginx in front of the gateway on 8080
        local a b c
        # No TrustedProxies= (the default): every client is the proxy, one bucket for all.
        a=$(register_from 10.91.1.2) b=$(register_from 10.91.1.3)
        check "without TrustedProxies=: behind nginx all clients share the proxy's registration bucket (10.91.1.2: $a, then 10.91.1.3: $b, expected 401 then 429)" \
                sh -c "[ '$a' = 401 ] && [ '$b' = 429 ] && grep -q 'from this address' '$tmp/regfrom'"

        reload_with 'TrustedProxies=127.0.0.1 ::1' || { fail "the gateway did not reload"; return; }
        ok "TrustedProxies=127.0.0.1 ::1 applied by a reload (SIGHUP)"
        a=$(register_from 10.91.1.2) b=$(register_from 10.91.1.2) c=$(register_from 10.91.1.3)
        check "TrustedProxies=127.0.0.1: each client behind nginx has its own bucket (10.91.1.2: $a then $b, 10.91.1.3: $c; expected 401, 429, 401)" \
                sh -c "[ '$a' = 401 ] && [ '$b' = 429 ] && [ '$c' = 401 ]"
        check "the gateway's log names the client behind the proxy, not the proxy" \
                grep -q 'Registration from 10.91.1.2 refused: over RegisterRatePerSource=' "$tmp/gatewayd.log"
        in_client curl -s -m 20 --interface 10.91.1.3 --cacert "$tmp/tls/ca.crt" --resolve "$NAME:443:$PROXY_IP" -o /dev/null \
                -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
                --data-binary '{"model":"m-tls","messages":[{"role":"user","content":"hi"}]}' "https://$NAME/v1/chat/completions"
        check "an OpenAI request's log line names the client behind the proxy (10.91.1.3)" \
                wait_for 5 grep -q 'Request [0-9a-f]* from 10\.91\.1\.3: plain /v1/chat/completions' "$tmp/gatewayd.log"

        # A client that reaches the gateway itself (from 127.0.0.2, not trusted) forges
        # X-Forwarded-For: ignored, its own address is the bucket however it varies the header.
        a=$(direct 127.0.0.2 -H 'X-Forwarded-For: 198.51.100.1') b=$(direct 127.0.0.2 -H 'X-Forwarded-For: 198.51.100.2')
        check "a direct, untrusted client forging X-Forwarded-For gets no bucket of its own (127.0.0.2: $a then $b, expected 401 then 429)" \
                sh -c "[ '$a' = 401 ] && [ '$b' = 429 ]"
        check "…and the log names its own address" grep -q 'Registration from 127.0.0.2 refused' "$tmp/gatewayd.log"
        # A trusted peer with a header that is not an address: the peer counts, logged at debug.
        direct 127.0.0.1 -H 'X-Forwarded-For: unknown' >/dev/null
        check "a malformed X-Forwarded-For from a trusted proxy: the proxy's own address counts, logged at debug" \
                grep -q 'X-Forwarded-For of trusted proxy 127.0.0.1 is malformed' "$tmp/gatewayd.log"
}

# ---- nginx ---------------------------------------------------------------------------------------------------
# start_nginx BACKEND-PORT: the example inside a minimal nginx.conf of the test's own.
start_nginx() {
        mkdir -p "$tmp/nginx"
        render "$SRC/examples/nginx/club-gateway.conf" "$1" >"$tmp/nginx/site.conf"
        cat >"$tmp/nginx/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log info;
events { worker_connections 64; }
http {
    access_log $tmp/nginx/access.log;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    include $tmp/nginx/site.conf;
}
CONF
        in_ns "$NGINX" -t -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" >"$tmp/nginx/t.log" 2>&1 ||
                { cat "$tmp/nginx/t.log"; return 1; }
        ip netns exec "$NS" "$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" &
        proxypid=$!
        wait_for 10 in_client curl -s -o /dev/null --cacert "$tmp/tls/ca.crt" --resolve "$NAME:443:$PROXY_IP" "https://$NAME/healthz"
}
if start_nginx 8080; then
        ok "nginx: the example passes nginx -t and serves"
        proxy_checks nginx
        trust_checks
else
        fail "nginx did not start with the example"; cat "$tmp/nginx/error.log"
fi
stop_proxy
if start_nginx "$ECHO_PORT"; then echo_checks nginx; else fail "nginx did not start in front of the echo"; fi
stop_proxy

# ---- Caddy ----------------------------------------------------------------------------------------------------
# start_caddy BACKEND-PORT: the example after a global block of the test's own (no admin
# endpoint, storage in $tmp).
start_caddy() {
        mkdir -p "$tmp/caddy"
        { printf '{\n\tadmin off\n\tstorage file_system %s\n}\n\n' "$tmp/caddy/data"
          render "$SRC/examples/caddy/Caddyfile" "$1"; } >"$tmp/caddy/Caddyfile"
        grep -q "^[[:space:]]*tls $tmp/tls/server.crt" "$tmp/caddy/Caddyfile" || { echo "no tls line to substitute"; return 1; }
        in_ns env HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" \
                caddy validate --config "$tmp/caddy/Caddyfile" --adapter caddyfile >"$tmp/caddy/validate.log" 2>&1 ||
                { cat "$tmp/caddy/validate.log"; return 1; }
        ip netns exec "$NS" env HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" \
                caddy run --config "$tmp/caddy/Caddyfile" --adapter caddyfile >>"$tmp/caddy/caddy.log" 2>&1 &
        proxypid=$!
        wait_for 10 in_client curl -s -o /dev/null --cacert "$tmp/tls/ca.crt" --resolve "$NAME:443:$PROXY_IP" "https://$NAME/healthz"
}
if start_caddy 8080; then
        ok "Caddy: the example passes caddy validate and serves"
        proxy_checks Caddy
        # TrustedProxies=127.0.0.1 since trust_checks: the X-Forwarded-For Caddy sets counts.
        check "Caddy: with TrustedProxies=, the gateway's log names the client behind Caddy (10.91.1.2)" \
                grep -q 'Request [0-9a-f]* from 10\.91\.1\.2: plain /v1/chat/completions' "$tmp/gatewayd.log"
else
        fail "Caddy did not start with the example"; tail -20 "$tmp/caddy/caddy.log"
fi
stop_proxy
if start_caddy "$ECHO_PORT"; then echo_checks Caddy; else fail "Caddy did not start in front of the echo"; fi
stop_proxy

# A TrustedProxies= entry that is not an address or network stops the start, naming FILE:LINE.
printf '[Public]\nListen=127.0.0.1:0\nTrustedProxies=127.0.0.1 10.0.0.1/8\n' >"$tmp/bad.conf"
in_ns timeout 10 "$GATEWAYD" -c "$tmp/bad.conf" >"$tmp/bad.log" 2>&1
rc=$?
check "TrustedProxies=10.0.0.1/8 (host bits set) stops the start naming FILE:LINE (exit $rc)" \
        sh -c "[ $rc = 1 ] && grep -q '$tmp/bad.conf:3: .*TrustedProxies' '$tmp/bad.log'" || cat "$tmp/bad.log"
printf '[Public]\nTrustedProxies=127.0.0.1, ::1\tfd00::/8\nTrustedProxies=10.0.0.0/8\n' >"$tmp/good.conf"
check "TrustedProxies= takes spaces, tabs and commas between entries, and more than one line (--check-config)" \
        sh -c "'$GATEWAYD' --check-config -c '$tmp/good.conf' >/dev/null"

check "no API key in the gateway's log" sh -c "! grep -qF '$KEY' '$tmp/gatewayd.log' && ! grep -qF '$AGENT' '$tmp/gatewayd.log'"
if [ "$failures" -gt 0 ]; then
        echo "# gateway log:"
        sed 's/^/# /' "$tmp/gatewayd.log" | tail -30
        echo "$failures check(s) failed"
        exit 1
fi
echo "all checks passed"
