#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-api.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM [CLUBD]
#
# The gateway's OpenAI API through real WireGuard tunnels, as root. Four namespaces: "vps"
# runs the gateway (public listener 0.0.0.0:8080) and its wireguard-go hub; two agent
# namespaces each run a wireguard-go spoke; a client namespace runs curl and the real npm
# openai SDK against http://10.77.3.1:8080/v1. Each agent is registered with curl, then:
#  - with CLUBD (what meson runs): the real clubd, started from the state.json a
#    registration would have left (the answer and the agent's private key), configures its
#    spoke, heartbeats, and serves its signed mesh listener on MESH-ADDRESS:8090 in front
#    of club-test-upstream on 127.0.0.1;
#  - without: the spoke is configured with `wg`, one heartbeat is sent with curl (signed by
#    the heartbeat helper), and club-test-upstream itself listens on MESH-ADDRESS:8090; it
#    ignores X-Club-Signature, which this test then checks itself.
# alice owns both providers: a1 (private; models m-private, m-common) and a2 (shared with
# everyone; m-shared, m-common); bob owns none.
#
# Checks:
#  - the SDK: model lists per user (alice sees three models, bob two), streaming and plain
#    chat, a stream with usage, embeddings, routing by model to the right provider;
#  - bob: a private provider's model is 404 model_not_found (by the SDK and GET
#    /v1/models/ID), the shared provider's model works;
#  - the hop: the agent gets no Authorization, Cookie, X-Forwarded-For, Connection-named or
#    X-Club-* header from the client, gets x-request-id (the client's answer has the same)
#    and an X-Club-Signature over POST and the normalised target, valid for the provider's
#    secret (with clubd: accepted by clubd and not passed to the upstream); trailing and
#    double slashes route;
#  - errors: 401 (no key, a bad key) with WWW-Authenticate: Bearer, 405 with Allow, 400
#    (bad JSON, no model, a non-boolean stream), 413 over MaxBodySize=, 404 unknown_url,
#    an upstream's own error status passed on, an agent's 401 turned into 502 (never the
#    client's 401), x-request-id on all of them;
#  - streaming: SSE keep-alive comments (KeepAliveInterval=1s) while the first byte takes
#    2.6 s, then the whole stream; keep-alives and then a 500 from the provider give an
#    error event; a client reading 64 KB/s pauses the upstream (its paused_now) while the
#    gateway's memory stays small; a client that disconnects cancels the upstream stream;
#    an upstream that dies mid-stream gives the client one `data: {"error":…}` event and an
#    aborted connection (curl and the SDK see an error);
#  - FirstByteTimeout=4s: 504 provider_timeout;
#  - failover: with a1's agent killed and a2 busier, a request for m-common goes to a1
#    first (least in flight), is refused, and is answered by a2; right after, a request
#    for a1's private model gets 503 no_provider_available (a1 is skipped after its
#    failure), and once the skip is over 502 provider_error;
#  - both agents gone and the gateway restarted with HeartbeatWindow=1s: 503
#    no_provider_online with Retry-After, an empty model list;
#  - bad values for the API's [Public] keys are refused naming FILE:LINE;
#  - no secret in the gateway's log; SIGTERM exits 0.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# (wireguard-go, node and the SDK, …) is missing, unless CLUB_TEST_STRICT=1. Everything made
# here is removed on exit.
set -u

usage="usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM [CLUBD]"
GATEWAYD=${1:?$usage}
ADMIN=${2:?$usage}
HB=${3:?$usage}
UPSTREAM=${4:?$usage}
CLUBD=${5:-}
TEST=test-gatewayd-api
ID=$$
NS=clubapiv$ID
NSA=clubapia$ID
NSB=clubapib$ID
NSC=clubapic$ID
IF=cag$ID
AIF=caa$ID
BIF=cab$ID
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/gatewayd-netns.sh"
. "$HERE/gatewayd-agents.sh"
. "$HERE/../openai/sdk.sh"

PUBLIC=http://127.0.0.1:8080
BASE=http://10.77.3.1:8080
AGENT_URL=http://10.77.0.1:8080

# ---- namespaces, tunnels ------------------------------------------------------------------
agents_netns_setup 10.77

mkdir -m 0700 "$tmp/state"
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$tmp/state/store.db
LogLevel=debug
ProbeInterval=1h

[Public]
MaxBodySize=64K
KeepAliveInterval=1s
FirstByteTimeout=4s
FailureBackoff=1s
FailureBackoffMax=2s

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.77.0.1:51820
CONF

printf '[Public]\nKeepAliveInterval=2h\nMaxAttempts=0\nFirstByteTimeout=soon\n' >"$tmp/bad.conf"
config_refused "bad [Public] values for the API are refused, each naming FILE:LINE" "$tmp/bad.conf" \
        'bad.conf:2: Invalid value for [Public] KeepAliveInterval=2h' \
        'bad.conf:3: Invalid value for [Public] MaxAttempts=0' \
        'bad.conf:4: Invalid value for [Public] FirstByteTimeout=soon'

start_public_gateway "$tmp/state/store.db"
ok "the gateway started"

start_agent a1 "$NSA" "$AIF" alpha m-private,m-common
PID_A=$PIDV ADDR_A=$ADDR SECRET_A=$SECRET AGENT_A=$AGPID STATS_A=$STATS
start_agent a2 "$NSB" "$BIF" beta m-shared,m-common
PID_B=$PIDV ADDR_B=$ADDR SECRET_B=$SECRET AGENT_B=$AGPID STATS_B=$STATS
providers_online() { in_ns curl -s "$PUBLIC/healthz" | grep -q "\"providers_online\":$1"; }
check "both agents are online (${CLUBD:+clubd: }their heartbeats came through the tunnels)" wait_for 15 providers_online 2
# Online comes with the first heartbeat; clubd's first may precede its first model listing.
models_listed() {
        local m
        m=$(in_ns curl -s -H "Authorization: Bearer $ALICE" "$PUBLIC/v1/models") || return 1
        for id in m-common m-private m-shared; do
                grep -q "\"id\":\"$id\"" <<<"$m" || return 1
        done
}
check "…and their heartbeats carry every model" wait_for 15 models_listed
check "a2 is shared with everyone" "$ADMIN" "$tmp/state/store.db" share "$PID_B" everyone

# ---- the openai SDK from the client namespace -----------------------------------------------
five='"tok0 tok1 tok2 tok3 tok4 "'
sdk "SDK: alice lists m-common, m-private, m-shared" "$ALICE" \
        'o.ok && JSON.stringify(o.models) === JSON.stringify(["m-common","m-private","m-shared"]) && o.owned_by.every(x => x === "club")' \
        --models
sdk "SDK: bob lists only the shared provider's models" "$BOB" \
        'o.ok && JSON.stringify(o.models) === JSON.stringify(["m-common","m-shared"])' \
        --models
sdk "SDK: streaming chat, routed to a1 for m-private" "$ALICE" \
        "o.ok && o.content === $five && o.content_chunks === 5 && o.finish_reason === 'stop' && o.system_fingerprint === 'club-test-upstream/alpha'" \
        --model m-private --stream
sdk "SDK: plain chat with usage, routed to a2 for m-shared" "$ALICE" \
        "o.ok && o.content === $five && o.usage.completion_tokens === 5 && o.system_fingerprint === 'club-test-upstream/beta'" \
        --model m-shared
sdk "SDK: a stream with usage" "$ALICE" \
        "o.ok && o.content === 'tok0 tok1 tok2 ' && o.usage && o.usage.completion_tokens === 3" \
        --model m-shared --stream --include-usage --header 'X-Test-Chunks: 3'
sdk "SDK: embeddings" "$ALICE" \
        'o.ok && o.embeddings === 2 && o.dimensions === 8' \
        --model m-common --embeddings --input "alpha beta" --input "gamma"
sdk "SDK: bob may not use a1's private model: 404 model_not_found" "$BOB" \
        "o.ok && o.error.status === 404 && o.error.code === 'model_not_found'" \
        --model m-private --expect-error 404
sdk "SDK: bob uses the shared provider's model" "$BOB" \
        "o.ok && o.content === $five && o.system_fingerprint === 'club-test-upstream/beta'" \
        --model m-shared --stream
sdk "SDK: keep-alives while the first token takes 2.6 s are invisible to the SDK" "$ALICE" \
        "o.ok && o.content === $five && o.first_chunk_ms >= 2500" \
        --model m-private --stream --header 'X-Test-First-Byte-Delay-Ms: 2600'
sdk "SDK: a stream that dies half-way is an error" "$ALICE" \
        "o.ok && o.content_chunks === 2 && /incomplete/.test(o.error.message)" \
        --model m-private --stream --header 'X-Test-Chunks: 10' --header 'X-Test-Die-After: 2' --expect-error any

# ---- curl: the hop, errors -------------------------------------------------------------------
sleep 1.1  # a1 is skipped for FailureBackoff=1s after the stream that died
chat() { printf '{"model":"%s","messages":[{"role":"user","content":"hi"}]%s}' "$1" "${2:-}"; }

api -H "Authorization: Bearer $ALICE" -H 'Cookie: session=1' -H 'X-Forwarded-For: 192.0.2.9' \
        -H 'Connection: keep-alive, X-Hop' -H 'X-Hop: 1' -H 'X-Club-Injected: 1' -H 'X-Custom: kept' -H 'x-request-id: mine' \
        -H 'X-Test-Echo: 1' -H 'Content-Type: text/plain' --data-binary "$(chat m-private)" "$BASE//v1//chat/completions/"
expect "POST //v1//chat/completions/ reaches the agent (echoed)" 200
check "…as POST /v1/chat/completions, with x-request-id the client got, without the client's credentials or hop headers" \
        "$PY" -c '
import json, sys
e = json.load(open(sys.argv[1])); h = e["headers"]
assert e["method"] == "POST" and e["target"] == "/v1/chat/completions", e["target"]
for k in ("authorization", "cookie", "x-forwarded-for", "x-hop", "x-club-injected", "forwarded"):
    assert k not in h, k
assert h.get("x-custom") == "kept" and h.get("content-type") == "application/json", h
assert sys.argv[2] in h["x-request-id"] and "mine" not in h["x-request-id"], (h["x-request-id"], sys.argv[2])' "$tmp/resp" "$(hdr x-request-id)"
if [ -n "$CLUBD" ]; then
        check "…signed: clubd accepted the gateway's signature and kept it from the upstream" \
                "$PY" -c 'import json, sys; assert "x-club-signature" not in json.load(open(sys.argv[1]))["headers"]' "$tmp/resp"
else
check "…signed: X-Club-Signature is valid for a1's secret over POST and the target" \
        "$PY" -c '
import base64, hashlib, hmac, json, sys, time
e = json.load(open(sys.argv[1])); sig = e["headers"]["x-club-signature"]
f = dict(p.split("=", 1) for p in sig.split(","))
msg = "club-request-v1\nPOST\n%s\n%s\n%s" % (e["target"], f["t"], f["n"])
mac = hmac.new(base64.b64decode(sys.argv[2]), msg.encode(), hashlib.sha256).hexdigest()
assert hmac.compare_digest(mac, f["v1"]) and abs(time.time() - int(f["t"])) < 30 and len(f["n"]) == 32' "$tmp/resp" "$SECRET_A"
fi

api -H "Authorization: Bearer $ALICE" "$BASE//v1//models/"
check "GET //v1//models/: the list" sh -c "[ $code = 200 ] && grep -q '\"object\":\"list\"' $tmp/resp"
api -H "Authorization: Bearer $ALICE" "$BASE/v1/models/m-common"
check "GET /v1/models/m-common: providers_online 2" sh -c "[ $code = 200 ] && grep -q '\"providers_online\":2' $tmp/resp"
api -H "Authorization: Bearer $BOB" "$BASE/v1/models/m-common"
check "…for bob, providers_online 1 (only the shared one)" sh -c "[ $code = 200 ] && grep -q '\"providers_online\":1' $tmp/resp"
api -H "Authorization: Bearer $BOB" "$BASE/v1/models/m-private"
expect "GET /v1/models/m-private as bob: 404" 404 model_not_found
api -H "Authorization: Bearer $ALICE" "$BASE/v1/models/no%2Fsuch%3Amodel"
expect "GET /v1/models/ with a percent-encoded unknown id: 404" 404 model_not_found

api --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions"
expect "no API key: 401" 401 missing_api_key
check "…with WWW-Authenticate: Bearer" test "$(hdr www-authenticate)" = Bearer
api -H 'Authorization: Bearer ic-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' --data-binary "$(chat m-shared)" \
        "$BASE/v1/chat/completions"
expect "a wrong API key: 401" 401 invalid_api_key
check "…with WWW-Authenticate: Bearer" test "$(hdr www-authenticate)" = Bearer
api -H "Authorization: Bearer $AGENT" --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions"
expect "a key without the inference scope: 403" 403 insufficient_scope
api -H "Authorization: Bearer $ALICE" "$BASE/v1/chat/completions"
expect "GET /v1/chat/completions: 405" 405 method_not_allowed
check "…with Allow: POST" test "$(hdr allow)" = POST
api -H "Authorization: Bearer $ALICE" --data-binary '{"model": "m-shared",' "$BASE/v1/chat/completions"
expect "invalid JSON: 400" 400 invalid_request
api -H "Authorization: Bearer $ALICE" --data-binary '{"messages": []}' "$BASE/v1/chat/completions"
check "no model: 400 with param model" sh -c "[ $code = 400 ] && [ \"\$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"error\"][\"param\"])' $tmp/resp)\" = model ]"
api -H "Authorization: Bearer $ALICE" --data-binary "$(chat m-shared ',"stream":"yes"')" "$BASE/v1/chat/completions"
expect "\"stream\": \"yes\": 400" 400 invalid_request
head -c 70000 /dev/zero | tr '\0' a >"$tmp/big"
api -H "Authorization: Bearer $ALICE" --data-binary "@$tmp/big" "$BASE/v1/chat/completions"
expect "a body over MaxBodySize=64K: 413, before the body is read" 413 request_too_large
api -H "Authorization: Bearer $ALICE" "$BASE/v2/models"
expect "GET /v2/models: 404" 404 unknown_url
api -H "Authorization: Bearer $ALICE" -H 'X-Test-Status: 400' --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions"
expect "an upstream's own 400 is passed on" 400 club_test_status
api -H "Authorization: Bearer $ALICE" -H 'X-Test-First-Byte-Delay-Ms: 6000' --data-binary "$(chat m-private)" \
        "$BASE/v1/chat/completions"
expect "no answer within FirstByteTimeout=4s: 504" 504 provider_timeout

api -H "Authorization: Bearer $ALICE" -H 'X-Test-Status: 401' --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions"
expect "a provider that refuses the gateway (401) is a 502 for the client, not a 401" 502 provider_error

# ---- streams -----------------------------------------------------------------------------------
sleep 1.2  # a1 was skipped after the timeout, a2 after its 401
ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/ka" -H "Authorization: Bearer $ALICE" -H 'X-Test-First-Byte-Delay-Ms: 2600' \
        --data-binary "$(chat m-private ',"stream":true')" "$BASE/v1/chat/completions"
check "keep-alives: curl ends cleanly" test $? = 0
check "…two or more ': keep-alive' comments came before the first event, then the whole stream" "$PY" -c '
import sys
t = open(sys.argv[1]).read()
first = t.index("data:")
assert t[:first].count(": keep-alive\n\n") >= 2, t[:200]
assert t.rstrip().endswith("data: [DONE]"), t[-100:]' "$tmp/ka"

# A client reading 64 KB/s from a 48 MB stream: the gateway holds back (its buffer per
# stream is bounded), so TCP backpressure reaches the upstream, which pauses.
bstats() { ip netns exec "$NSB" curl -s "$STATS_B" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ip netns exec "$NSC" curl -sN -m 4 --limit-rate 64k -o /dev/null -H "Authorization: Bearer $ALICE" -H 'X-Test-Chunks: 3000' \
        -H 'X-Test-Chunk-Size: 16384' --data-binary "$(chat m-shared ',"stream":true')" "$BASE/v1/chat/completions" &
reader=$!
extra_pid $reader
upstream_paused() { [ "$(bstats paused_now)" -ge 1 ]; }
check "a slow client pauses the upstream's stream (paused_now 1 at the upstream)" wait_for 3 upstream_paused
rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$gwpid/status")
check "…and the gateway does not buffer it (VmRSS ${rss} kB < 64 MB)" test "$rss" -lt 65536
wait "$reader"
check "…the upstream produced only part of the stream ($(bstats chunks_generated) of 3000 chunks)" test "$(bstats chunks_generated)" -lt 2500

api -H "Authorization: Bearer $ALICE" --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions"
expect "a2 answers again once its skip after the 401 is over" 200
ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/ka500" -H "Authorization: Bearer $ALICE" -H 'X-Test-First-Byte-Delay-Ms: 2600' \
        -H 'X-Test-Status: 500' --data-binary "$(chat m-shared ',"stream":true')" "$BASE/v1/chat/completions"
rc=$?
check "keep-alives, then the provider answers 500: the client gets an error event and an aborted transfer (exit $rc)" "$PY" -c '
import json, sys
t = open(sys.argv[1]).read()
assert t.count(": keep-alive\n\n") >= 2 and sys.argv[2] != "0", t
ev = [l[6:] for l in t.split("\n") if l.startswith("data: ")]
assert len(ev) == 1 and "answered 500" in json.loads(ev[0])["error"]["message"], ev' "$tmp/ka500" "$rc"

ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/die" -H "Authorization: Bearer $ALICE" -H 'X-Test-Chunks: 10' \
        -H 'X-Test-Die-After: 3' --data-binary "$(chat m-private ',"stream":true')" "$BASE/v1/chat/completions"
rc=$?
check "a stream that dies half-way: curl sees an aborted transfer (exit $rc)" test "$rc" != 0
check "…after 3 content events, exactly one error event, and no [DONE]" "$PY" -c '
import json, sys
ev = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert len(ev) == 4, ev
assert all("choices" in json.loads(e) for e in ev[:3])
err = json.loads(ev[3])["error"]
assert err["code"] == "provider_error" and "[DONE]" not in ev, err' "$tmp/die"

stats() { ip netns exec "$NSA" curl -s "$STATS_A" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
sleep 1.2  # a1 is skipped for a moment after the stream that died
before=$(stats streams_cancelled)
ip netns exec "$NSC" curl -sN -m 1 -o /dev/null -H "Authorization: Bearer $ALICE" -H 'X-Test-Chunks: 100' \
        -H 'X-Test-Chunk-Delay-Ms: 100' --data-binary "$(chat m-private ',"stream":true')" "$BASE/v1/chat/completions"
upstream_cancelled() { [ "$(stats streams_cancelled)" -gt "$before" ]; }
check "a client that disconnects mid-stream cancels the upstream's stream" wait_for 3 upstream_cancelled

# ---- failover --------------------------------------------------------------------------------
{ kill -9 "$AGENT_A"; wait "$AGENT_A"; } 2>/dev/null       # clubd, or the upstream in its place
sleep 1.2  # no skip left over from the earlier checks
# a2 busy with one slow request, so that a1 (dead) is the least loaded for m-common.
ip netns exec "$NSC" curl -s -m 20 -o "$tmp/slow" -H "Authorization: Bearer $ALICE" -H 'X-Test-First-Byte-Delay-Ms: 2500' \
        --data-binary "$(chat m-shared)" "$BASE/v1/chat/completions" &
slow=$!
extra_pid $slow
sleep 0.5
sdk "failover: m-common with a1's agent dead is answered by a2" "$ALICE" \
        "o.ok && o.content === $five && o.system_fingerprint === 'club-test-upstream/beta'" \
        --model m-common
check "…after a1 was tried first and refused the connection" \
        grep -q "provider a1 (id $PID_A) failed before answering: connection refused" "$tmp/gatewayd.log"
api -H "Authorization: Bearer $ALICE" --data-binary "$(chat m-private)" "$BASE/v1/chat/completions"
expect "right after, a1's private model: 503 (a1 is skipped after its failure)" 503 no_provider_available
check "…with Retry-After" test -n "$(hdr retry-after)"
sleep 2.2  # its second failure in a row: skipped for 2 s (FailureBackoffMax=2s)
api -H "Authorization: Bearer $ALICE" --data-binary "$(chat m-private)" "$BASE/v1/chat/completions"
expect "once the skip is over, a1's private model: 502" 502 provider_error
wait "$slow"
check "the slow request on a2 finished" grep -q 'tok4' "$tmp/slow"

# ---- nobody online ------------------------------------------------------------------------------
kill "$AGENT_B"
wait "$AGENT_B" 2>/dev/null
restart_gateway_alone
api -H "Authorization: Bearer $ALICE" --data-binary "$(chat m-common)" "$BASE/v1/chat/completions"
expect "no provider online: 503" 503 no_provider_online
check "…with Retry-After" test -n "$(hdr retry-after)"
api -H "Authorization: Bearer $ALICE" "$BASE/v1/models"
check "…and an empty model list" sh -c "[ $code = 200 ] && grep -q '\"data\":\[\]' $tmp/resp"

no_secrets_logged "$SECRET_A" "$SECRET_B" "$ALICE" "$BOB" "$AGENT"
stop_gateway "SIGTERM: the restarted gateway exits 0"

agents_summary
