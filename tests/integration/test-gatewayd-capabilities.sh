#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-capabilities.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM CLUBD
#
# The gateway's capabilities and its Prometheus metrics through real WireGuard tunnels, as
# root. Four namespaces (gatewayd-netns.sh): "vps" runs the gateway (public listener
# 0.0.0.0:8080, metrics on 127.0.0.1:9464) and its wireguard-go hub; two agent namespaces
# each run the real clubd (gatewayd-agents.sh's start_agent) with a small python HTTP
# service on loopback behind its [Capability] sections; a client namespace runs curl.
# alice owns both providers: a1 (private; capabilities echo and solo) and a2 (shared with
# everyone; capability echo); bob owns none.
#
# Checks:
#  - GET /api/v1/capabilities: alice sees echo (2 providers online) and solo (1), bob echo (1);
#  - GET /api/v1/capabilities/NAME: the provider the router would pick and its health;
#    bob's solo and an unknown name are 404 capability_not_found, a malformed name 400;
#  - POST …/NAME/exec: a JSON body reaches the service byte for byte at its URL, through
#    clubd, which accepted the gateway's signature (an unsigned request to the same agent
#    is refused 401) and kept it and the client's credentials from the service; the
#    service's answer comes back; x-request-id; 400 for a body that is not JSON or empty,
#    413 over MaxBodySize=, 401 without a key, 405 with Allow, 404 unknown_url for other
#    paths under /api/v1/capabilities/NAME/;
#  - failover: with a1's clubd killed and a2 busy with bob's slow request, alice's echo goes
#    to a1 first (least in flight), is refused, and is answered by a2;
#  - metrics: scraped with curl after the requests above and parsed: the requests counted
#    (by api, provider, model, outcome) are exactly those made, errors by status, each
#    histogram's buckets non-decreasing and ending at +Inf = _count = the requests, _sum
#    sensible, tokens as the upstream reported them, in flight 0, providers online 2, at
#    most MaxSeries= series with the rest under provider/model "other"; 404 and 405 on the
#    metrics listener;
#  - [Metrics] Listen= on a non-loopback address is refused naming FILE:LINE, and accepted
#    with AllowRemoteListen=yes;
#  - with both agents gone and the gateway restarted with HeartbeatWindow=1s: exec and
#    resolve are 503 no_provider_online with Retry-After, the list is empty;
#  - no secret in the logs.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

usage="usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM CLUBD"
GATEWAYD=${1:?$usage}
ADMIN=${2:?$usage}
HB=${3:?$usage}
UPSTREAM=${4:?$usage}
CLUBD=${5:?$usage}
TEST=cm-gatewayd-capabilities
ID=$$
NS=cmv$ID
NSA=cma$ID
NSB=cmb$ID
NSC=cmc$ID
IF=cmh$ID
AIF=cma$ID
BIF=cmb$ID
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/gatewayd-netns.sh"
. "$HERE/gatewayd-agents.sh"

PUBLIC=http://127.0.0.1:8080
BASE=http://10.86.3.1:8080
AGENT_URL=http://10.86.0.1:8080
METRICS=http://127.0.0.1:9464/metrics
CAPS=$BASE/api/v1/capabilities

# ---- configuration checks ----------------------------------------------------------------------
printf '[Gateway]\nLogLevel=info\n\n[Metrics]\nListen=0.0.0.0:9464\n' >"$tmp/remote.conf"
config_refused "[Metrics] Listen=0.0.0.0:9464 is refused naming FILE:LINE" "$tmp/remote.conf" \
        'remote.conf:5: [Metrics] Listen=0.0.0.0:9464 is not a loopback address'
printf 'AllowRemoteListen=yes\n' >>"$tmp/remote.conf"
check "…and accepted with AllowRemoteListen=yes" "$GATEWAYD" --check-config -c "$tmp/remote.conf"
printf '[Metrics]\nListen=[::1]:9464\nMaxSeries=0\n' >"$tmp/series.conf"
config_refused "[Metrics] MaxSeries=0 is refused naming FILE:LINE" "$tmp/series.conf" \
        'series.conf:3: Invalid value for [Metrics] MaxSeries=0'
check "…and [::1] is loopback" sh -c "! grep -q 'loopback' '$tmp/series.conf.log'"

# ---- namespaces, tunnels, gateway ------------------------------------------------------------------
agents_netns_setup 10.86

mkdir -m 0700 "$tmp/state"
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug
ProbeInterval=1h

[Public]
MaxBodySize=64K
FailureBackoff=1s
FailureBackoffMax=2s

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.86.0.1:51820

[Metrics]
Listen=127.0.0.1:9464
MaxSeries=4
CONF

start_public_gateway "$tmp/state/store.db"
check "the gateway serves metrics on 127.0.0.1:9464" grep -q 'Serving Prometheus metrics on http://127.0.0.1:9464/metrics' "$tmp/gatewayd.log"

# The capability service: answers every POST with what it got (path, headers, body) and its
# name; {"delay_ms": N} in the body makes it wait first. Writes its port to PORT-FILE.
cat >"$tmp/echo.py" <<'EOF'
import http.server, json, os, sys, time
name, port_file = sys.argv[1], sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            delay = json.loads(body).get("delay_ms", 0)
        except Exception:
            delay = 0
        time.sleep(delay / 1000 if isinstance(delay, int) else 0)
        out = json.dumps({"service": name, "path": self.path, "body": body.decode("utf-8", "surrogateescape"),
                          "headers": {k.lower(): v for k, v in self.headers.items()}}).encode("utf-8", "surrogateescape")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
EOF
# start_service NS NAME: the service in NS; sets SPORT.
start_service() {
        ip netns exec "$1" "$PY" "$tmp/echo.py" "$2" "$tmp/$2.port" >"$tmp/$2.log" 2>&1 &
        extra_pid $!
        wait_for 5 test -s "$tmp/$2.port" || { fail "the service $2 did not start"; cat "$tmp/$2.log"; exit 1; }
        SPORT=$(cat "$tmp/$2.port")
}

start_service "$NSA" svc-a
AGENT_CONF_EXTRA="
[Capability]
Name=echo
URL=http://127.0.0.1:$SPORT/run/echo

[Capability]
Name=solo
URL=http://127.0.0.1:$SPORT/run/solo"
start_agent a1 "$NSA" "$AIF" alpha m-a
PID_A=$PIDV ADDR_A=$ADDR SECRET_A=$SECRET AGENT_A=$AGPID
start_service "$NSB" svc-b
AGENT_CONF_EXTRA="
[Capability]
Name=echo
URL=http://127.0.0.1:$SPORT/run/echo"
start_agent a2 "$NSB" "$BIF" beta m-b
PID_B=$PIDV SECRET_B=$SECRET AGENT_B=$AGPID
check "a2 is shared with everyone" "$ADMIN" "$tmp/state/store.db" share "$PID_B" everyone

# Checks on $tmp/resp with python: ASSERTION (sees the answer as `r`).
resp() { "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$tmp/resp" "$1" 2>/dev/null; }
expect_resp() {  # DESCRIPTION STATUS ASSERTION
        if [ "$code" = "$2" ] && resp "$3"; then ok "$1"; else fail "$1 (got $code: $(head -c 300 "$tmp/resp"))"; fi
}

# Both agents online with their capabilities (clubd heartbeats them through the tunnels).
echo_listed_twice() {
        api -H "Authorization: Bearer $ALICE" "$CAPS"
        [ "$code" = 200 ] && resp '[(c["id"], c["providers_online"]) for c in r["data"]] == [("echo", 2), ("solo", 1)]'
}
check "alice lists echo (2 providers online) and solo (1), from the agents' heartbeats" wait_for 20 echo_listed_twice
check "…as an OpenAI-style list of capability objects" resp 'r["object"] == "list" and all(c["object"] == "capability" for c in r["data"])'
api -H "Authorization: Bearer $BOB" "$CAPS/"
expect_resp "bob lists only the shared provider's echo, with 1 provider online" 200 \
        '[(c["id"], c["providers_online"]) for c in r["data"]] == [("echo", 1)]'

# ---- resolve ----------------------------------------------------------------------------------------
api -H "Authorization: Bearer $ALICE" "$CAPS/echo"
expect "GET /api/v1/capabilities/echo: 200" 200
check "…names the provider the router would pick, and its health" resp \
        "r['id'] == 'echo' and r['providers_online'] == 2 and r['provider']['id'] in ($PID_A, $PID_B) and \
         r['provider']['name'] in ('a1', 'a2') and r['provider']['health']['online'] is True and \
         r['provider']['health']['state'] == 'active' and r['provider']['health']['last_heartbeat'] > 0 and \
         r['provider']['health']['recently_failed'] is False and r['provider']['version']"
api -H "Authorization: Bearer $BOB" "$CAPS/echo"
check "…for bob always the shared provider a2" resp "r['provider']['id'] == $PID_B and r['providers_online'] == 1"
api -H "Authorization: Bearer $BOB" "$CAPS/solo"
expect "bob cannot see a1's solo: 404" 404 capability_not_found
api -H "Authorization: Bearer $ALICE" "$CAPS/no-such-thing"
expect "an unknown capability: 404" 404 capability_not_found
api -H "Authorization: Bearer $ALICE" "$CAPS/bad%20name"
expect "a name the store would never accept: 400" 400 invalid_request
api "$CAPS/echo"
expect "no API key: 401" 401 missing_api_key
api -H "Authorization: Bearer $AGENT" "$CAPS"
expect "a key without the inference scope: 403" 403 insufficient_scope

# ---- exec -------------------------------------------------------------------------------------------
recorded=0        # requests the metrics must count (authenticated, body parsed, name valid)
echo_a=0 echo_b=0 # echo requests answered 200 by each provider
BODY='{"input": {"text": "héllo \"world\"", "n": [1, 2.5, null, true]}, "tag":"x"}'
exec_echo() {  # KEY BODY [CURL-ARGS…]
        local key=$1 body=$2
        shift 2
        api -H "Authorization: Bearer $key" -H 'Cookie: s=1' -H 'X-Club-Injected: 1' -H 'Content-Type: text/plain' \
                --data-binary "$body" "$@" "$CAPS/echo/exec"
        recorded=$((recorded + 1))
        if [ "$code" = 200 ]; then
                if resp 'r["service"] == "svc-a"'; then echo_a=$((echo_a + 1)); else echo_b=$((echo_b + 1)); fi
        fi
}
exec_echo "$ALICE" "$BODY"
expect "POST /api/v1/capabilities/echo/exec: 200 from the service" 200
check "…the JSON body reached the service byte for byte, as a POST to the capability's URL" \
        "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["body"] == sys.argv[2] and r["path"] == "/run/echo", r' \
        "$tmp/resp" "$BODY"
check "…through clubd, which accepted the gateway's signature and kept it, the client's key and cookie and X-Club-* from the service" resp \
        'not any(k in r["headers"] for k in ("authorization", "cookie", "x-club-signature", "x-club-injected")) and \
         r["headers"]["content-type"] == "application/json"'
check "…the answer carries the gateway's x-request-id" test -n "$(hdr x-request-id)"
# The same request without the gateway's signature, straight to a1's mesh listener from the
# gateway's namespace: clubd refuses it, so the one above was signed.
ucode=$(in_ns curl -s -m 5 -o "$tmp/unsigned" -w '%{http_code}' --data-binary "$BODY" "http://$ADDR_A:8090/api/v1/capabilities/echo/exec")
check "an unsigned exec to a1's agent is refused by clubd (401)" test "$ucode" = 401
for i in 1 2 3 4 5; do
        exec_echo "$ALICE" '{"i": '$i'}'
        [ "$code" = 200 ] || fail "exec $i: $code $(cat "$tmp/resp")"
done
check "five more execs as alice all answered (a1 $echo_a, a2 $echo_b)" test $((echo_a + echo_b)) = 6
exec_echo "$BOB" '[1, 2, 3]'
expect_resp "bob's exec goes to the shared a2, any JSON value as the body" 200 'r["service"] == "svc-b" and r["body"] == "[1, 2, 3]"'

api -H "Authorization: Bearer $BOB" --data-binary '{}' "$CAPS/solo/exec"
recorded=$((recorded + 1))
expect "bob's exec of a1's solo: 404" 404 capability_not_found
api -H "Authorization: Bearer $ALICE" --data-binary '{}' "$CAPS/nothing/exec"
recorded=$((recorded + 1))
expect "exec of an unknown capability: 404" 404 capability_not_found
api -H "Authorization: Bearer $ALICE" --data-binary '{}' "$CAPS/solo/exec"
recorded=$((recorded + 1))
expect "alice's exec of solo: 200 from a1's service" 200
check "…at solo's URL" resp 'r["service"] == "svc-a" and r["path"] == "/run/solo"'
api -H "Authorization: Bearer $ALICE" --data-binary 'not json' "$CAPS/echo/exec"
expect "a body that is not JSON: 400" 400 invalid_request
api -H "Authorization: Bearer $ALICE" -X POST "$CAPS/echo/exec"
expect "no body: 400" 400 invalid_request
head -c 70000 /dev/zero | tr '\0' a >"$tmp/big"
api -H "Authorization: Bearer $ALICE" --data-binary "@$tmp/big" "$CAPS/echo/exec"
expect "a body over MaxBodySize=64K: 413" 413 request_too_large
api --data-binary '{}' "$CAPS/echo/exec"
expect "exec without an API key: 401" 401 missing_api_key
api -H "Authorization: Bearer $ALICE" "$CAPS/echo/exec"
expect "GET …/exec: 405" 405 method_not_allowed
check "…with Allow: POST" test "$(hdr allow)" = POST
api -H "Authorization: Bearer $ALICE" --data-binary '{}' "$CAPS"
expect "POST /api/v1/capabilities: 405" 405 method_not_allowed
api -H "Authorization: Bearer $ALICE" --data-binary '{}' "$CAPS/echo/run"
expect "POST …/echo/run: 404" 404 unknown_url

# ---- some OpenAI requests, for the metrics --------------------------------------------------------------
prompt=0 completion=0
for m in m-a m-b m-a; do
        api -H "Authorization: Bearer $ALICE" --data-binary "{\"model\":\"$m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
                "$BASE/v1/chat/completions"
        recorded=$((recorded + 1))
        [ "$code" = 200 ] || fail "chat with $m: $code"
        prompt=$((prompt + $("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$tmp/resp")))
        completion=$((completion + $("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["usage"]["completion_tokens"])' "$tmp/resp")))
done
ok "three chat completions ($prompt prompt and $completion completion tokens reported)"

# ---- failover --------------------------------------------------------------------------------------------
{ kill -9 "$AGENT_A"; wait "$AGENT_A"; } 2>/dev/null
sleep 1.1   # nothing left of an earlier skip
# bob keeps a2 busy (he can only use a2), so that the dead a1 is the least loaded for alice.
ip netns exec "$NSC" curl -s -m 20 -o "$tmp/slow" -H "Authorization: Bearer $BOB" --data-binary '{"delay_ms": 2500}' \
        "$CAPS/echo/exec" &
slow=$!
extra_pid $slow
recorded=$((recorded + 1))
sleep 0.5
exec_echo "$ALICE" '{"after": "a1 died"}'
expect "failover: alice's echo with a1's clubd dead is answered" 200
check "…by a2" resp 'r["service"] == "svc-b"'
check "…after a1 was tried first and refused the connection" \
        grep -q "provider a1 (id $PID_A) failed before answering: connection refused" "$tmp/gatewayd.log"
wait "$slow"
check "bob's slow exec on a2 finished" grep -q '"service": "svc-b"' "$tmp/slow"
echo_b=$((echo_b + 1))   # bob's slow one

# ---- metrics ------------------------------------------------------------------------------------------
in_ns curl -s -m 5 -o "$tmp/metrics" -D "$tmp/mhdr" "$METRICS"
check "GET /metrics: Prometheus text 0.0.4" grep -qi '^content-type: text/plain; version=0.0.4' "$tmp/mhdr"
check "…counts exactly the requests made, and every histogram holds" "$PY" - "$tmp/metrics" "$recorded" "$PID_A" "$PID_B" \
        "$echo_a" "$echo_b" "$prompt" "$completion" <<'EOF'
import collections, re, sys
text = open(sys.argv[1]).read()
recorded, pid_a, pid_b, echo_a, echo_b, prompt, completion = (int(x) for x in sys.argv[2:])
line_re = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
label_re = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"(,|$)')
types, samples = {}, []
for line in text.splitlines():
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ")
        types[name] = t
        continue
    if line.startswith("#"):
        continue
    m = line_re.match(line)
    assert m, line
    labels = dict((k, v) for k, v, _ in label_re.findall(m.group(2) or ""))
    base = re.sub(r'_(bucket|sum|count)$', '', m.group(1))
    assert m.group(1) in types or base in types, ("no TYPE", line)
    samples.append((m.group(1), labels, float(m.group(3))))

def total(name, **want):
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in want.items()))

def key(l):
    return (l["api"], l["provider"], l["model"])

# MaxSeries=4 series (there are at least six keys), and the requests all counted somewhere.
assert total("club_gateway_metrics_series") == 4, total("club_gateway_metrics_series")
assert total("club_gateway_requests_total") == recorded, (total("club_gateway_requests_total"), recorded)
assert total("club_gateway_requests_in_flight") == 0
assert total("club_gateway_providers_online") == 2
overflow = total("club_gateway_metrics_series_overflow_total")
others = total("club_gateway_requests_total", provider="other", model="other")
assert overflow > 0 and overflow == others, (overflow, others)
# The overflow series keep their api label, so sums per api are exact.
assert total("club_gateway_requests_total", api="capability", outcome="model_not_found") == 2
assert total("club_gateway_request_errors_total", status="404") == 2
assert total("club_gateway_requests_total", outcome="ok") == recorded - 2
assert total("club_gateway_requests_total", api="openai", outcome="ok") == 3
# The echo series came first (the first requests), so they were kept.
echo_ok_a = total("club_gateway_requests_total", api="capability", provider=str(pid_a), model="echo", outcome="ok")
echo_ok_b = total("club_gateway_requests_total", api="capability", provider=str(pid_b), model="echo", outcome="ok")
assert (echo_ok_a, echo_ok_b) == (echo_a, echo_b), (echo_ok_a, echo_ok_b, echo_a, echo_b)
# Histograms: per series, buckets non-decreasing, +Inf == _count == the series' requests.
for h in ("club_gateway_time_to_first_token_seconds", "club_gateway_request_duration_seconds"):
    assert types[h] == "histogram"
    buckets = collections.defaultdict(list)
    for n, l, v in samples:
        if n == h + "_bucket":
            buckets[key(l)].append((l["le"], v))
    assert buckets, h
    for k, b in buckets.items():
        values = [v for _, v in b]
        assert values == sorted(values), (h, k, b)
        assert b[-1][0] == "+Inf" and [float(le) for le, _ in b[:-1]] == sorted(float(le) for le, _ in b[:-1]), b
        count = total(h + "_count", api=k[0], provider=k[1], model=k[2])
        s = total(h + "_sum", api=k[0], provider=k[1], model=k[2])
        assert b[-1][1] == count and count > 0 and 0 <= s < count * 60, (h, k, count, s)
        requests = total("club_gateway_requests_total", api=k[0], provider=k[1], model=k[2])
        if h.endswith("duration_seconds"):
            assert count == requests, (k, count, requests)
        else:
            assert count <= requests, (k, count, requests)
# bob's slow exec took 2.5 s: a2's echo duration has an observation above 2.5 s.
b = dict((l["le"], v) for n, l, v in samples if n == "club_gateway_request_duration_seconds_bucket"
         and key(l) == ("capability", str(pid_b), "echo"))
assert b["+Inf"] - b["2.5"] >= 1, b
# Tokens: what the upstream reported for the chat completions.
assert total("club_gateway_tokens_total", api="openai", kind="prompt") == prompt, (total("club_gateway_tokens_total", kind="prompt"), prompt)
assert total("club_gateway_tokens_total", api="openai", kind="completion") == completion
EOF
check "…with HELP and TYPE for the metrics the docs name" sh -c "for m in requests_total request_errors_total requests_in_flight \
        time_to_first_token_seconds request_duration_seconds tokens_total providers_online; do \
        grep -q \"^# HELP club_gateway_\$m \" '$tmp/metrics' && grep -q \"^# TYPE club_gateway_\$m \" '$tmp/metrics' || exit 1; done"
check "…and the overflow series is in use (MaxSeries=4)" grep -q 'provider="other",model="other"' "$tmp/metrics"
mcode=$(in_ns curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:9464/")
check "the metrics listener answers other paths 404" test "$mcode" = 404
mcode=$(in_ns curl -s -o /dev/null -w '%{http_code}' --data-binary x "$METRICS")
check "…and POST /metrics 405" test "$mcode" = 405
mcode=$(ip netns exec "$NSC" curl -s -m 3 -o /dev/null -w '%{http_code}' "http://10.86.3.1:9464/metrics")
check "…and is not reachable from the client namespace (loopback only)" test "$mcode" = 000

# ---- nobody online -----------------------------------------------------------------------------------------
kill "$AGENT_B"
wait "$AGENT_B" 2>/dev/null
restart_gateway_alone
api -H "Authorization: Bearer $ALICE" --data-binary '{}' "$CAPS/echo/exec"
expect "exec with no provider online: 503" 503 no_provider_online
check "…with Retry-After" test -n "$(hdr retry-after)"
api -H "Authorization: Bearer $ALICE" "$CAPS/echo"
expect "resolve with no provider online: 503" 503 no_provider_online
api -H "Authorization: Bearer $ALICE" "$CAPS"
expect_resp "…and an empty list" 200 'r["data"] == []'
in_ns curl -s -m 5 -o "$tmp/metrics2" "$METRICS"
check "the restarted gateway's metrics: the one exec, unavailable, 503" \
        grep -q '^club_gateway_request_errors_total{api="capability",provider="none",model="echo",status="503"} 1$' "$tmp/metrics2"

no_secrets_logged "$SECRET_A" "$SECRET_B" "$ALICE" "$BOB" "$AGENT"
stop_gateway "SIGTERM: the restarted gateway exits 0"

agents_summary "$tmp/metrics"
