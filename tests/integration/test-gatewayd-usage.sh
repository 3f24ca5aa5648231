#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-usage.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM [CLUBD]
#
# Usage accounting and per-key limits of the gateway's OpenAI API, as root, through a real
# WireGuard tunnel (gatewayd-netns.sh, gatewayd-agents.sh): "vps" runs the gateway
# (0.0.0.0:8080) and its wireguard-go hub; "agent" runs a wireguard-go spoke and, with CLUBD
# (what meson runs), the real clubd in front of club-test-upstream on 127.0.0.1 (without:
# the spoke configured with `wg` and club-test-upstream on the mesh address, one heartbeat
# by curl); "client" runs curl and the real npm openai SDK. Checks:
#  - streamed usage: a stream whose client did not ask for usage is sent to the upstream with
#    stream_options.include_usage and reaches the SDK without the usage-only chunk (and with
#    [DONE]); a client that asked gets it; plain answers keep their usage;
#  - usage rows (read from the store with Python's sqlite3) for ok (plain and streamed, with
#    the upstream's token counts), failed (504), truncated (the upstream dies after 3 of 10
#    chunks: 3 completion tokens counted, not reported), cancelled (curl leaves mid-stream),
#    and refused; time to first token and duration set;
#  - an upstream that refuses stream_options (400): the request is sent again without it and
#    succeeds; the provider is remembered: the next stream goes without the option;
#  - GET /api/v1/usage with the key: the user's own totals by model and by key; 401 without
#    a key, 400 for group_by=user;
#  - limits per key (made with the admin helper): rpm 2 → the third request is 429
#    rate_limit_exceeded with Retry-After and x-ratelimit-*-requests; tpm 10 → after two
#    plain answers of 7 tokens, 429 with x-ratelimit-*-tokens; one concurrent stream → a
#    second stream is 429 while a plain request goes through, and after the first ended a
#    stream is admitted again; a limit of 0 → 429 with x-should-retry: false; the SDK sees 429;
#  - a body over MaxBodySize= is 413; no key in the log; SIGTERM exits 0 with every row
#    written.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite is
# missing, unless CLUB_TEST_STRICT=1.
set -u

usage="usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-HEARTBEAT-HELPER CLUB-TEST-UPSTREAM [CLUBD]"
GATEWAYD=${1:?$usage}
ADMIN=${2:?$usage}
HB=${3:?$usage}
UPSTREAM=${4:?$usage}
CLUBD=${5:-}
TEST=test-gatewayd-usage
ID=us$$
NS=usv$$
NSA=usa$$
NSC=usc$$
IF=usg$$
AIF=usa$$
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/gatewayd-netns.sh"
. "$HERE/gatewayd-agents.sh"
. "$HERE/../openai/sdk.sh"

PUBLIC=http://127.0.0.1:8080
AGENT_URL=http://10.83.0.1:8080
BASE=http://10.83.3.1:8080

netns_setup 10.83.0
start_agent_wg
netns_add "$NSC" 10.83.3

mkdir -m 0700 "$tmp/state"
DB=$tmp/state/store.db
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$DB
LogLevel=debug
ProbeInterval=1h
HeartbeatWindow=1h

[Public]
MaxBodySize=64K
KeepAliveInterval=0
FirstByteTimeout=2s
FailureBackoff=100ms
FailureBackoffMax=200ms

[Usage]
Retention=30d

[WireGuard]
Interface=$IF
ListenPort=51820
Endpoint=10.83.0.1:51820
CONF

printf '[Limits]\nRequestsPerMinute=-1\nTokensPerMinute=lots\n[Usage]\nRetention=1s\n' >"$tmp/bad.conf"
config_refused "bad [Limits] and [Usage] values are refused, each naming FILE:LINE" "$tmp/bad.conf" \
        'bad.conf:2: Invalid value for [Limits] RequestsPerMinute=-1' \
        'bad.conf:3: Invalid value for [Limits] TokensPerMinute=lots' \
        'bad.conf:5: Invalid value for [Usage] Retention=1s'

start_public_gateway "$DB"
ok "the gateway started"

# ---- the agent --------------------------------------------------------------------------------
start_agent a1 "$NSA" "$AIF" alpha m1
PROV=$PIDV LAST=${STATS%/stats}/last-request
providers_online() { in_ns curl -s "$PUBLIC/healthz" | grep -q '"providers_online":1'; }
check "a1 is online (${CLUBD:+clubd: }its heartbeat came through the tunnel)" wait_for 15 providers_online

# ---- the SDK: usage asked for, stripped when the client did not ask ---------------------------
last_request() {  # PYTHON-EXPRESSION on the upstream's last request body `b`
        in_agent curl -s "$LAST" | "$PY" -c '
import json, sys
e = json.load(sys.stdin); b = json.loads(e["body"])
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"
}
five='"tok0 tok1 tok2 tok3 tok4 "'
sdk "SDK stream without include_usage: the content, no usage chunk (chunks = content chunks)" "$ALICE" \
        "o.ok && o.content === $five && o.chunks === 5 && o.content_chunks === 5 && o.usage === null && o.finish_reason === 'stop'" \
        --model m1 --stream --prompt "one two three"
check "…while the gateway asked the upstream for stream_options.include_usage" \
        last_request 'b["stream_options"] == {"include_usage": True} and b["stream"] is True'
sdk "SDK stream with include_usage: the usage chunk passes (3 prompt, 5 completion tokens)" "$ALICE" \
        "o.ok && o.content === $five && o.chunks === 6 && o.usage.prompt_tokens === 3 && o.usage.completion_tokens === 5" \
        --model m1 --stream --include-usage --prompt "one two three"
sdk "SDK text completion stream without include_usage: stripped too" "$ALICE" \
        "o.ok && o.chunks === 4 && o.content_chunks === 4 && o.usage === null" \
        --model m1 --stream --completions --header 'X-Test-Chunks: 4' --prompt "a b c d"
sdk "SDK plain chat: its usage as the upstream sent it" "$ALICE" \
        "o.ok && o.usage.prompt_tokens === 2 && o.usage.completion_tokens === 5" \
        --model m1 --prompt "hello there"
chat() { printf '{"model":"m1","messages":[{"role":"user","content":"%s"}]%s}' "${1:-hi}" "${2:-}"; }
api -N -H "Authorization: Bearer $ALICE" --data-binary "$(chat "x y" ',"stream":true')" "$BASE/v1/chat/completions"
check "curl: a stripped stream still ends with data: [DONE] and clean SSE framing" "$PY" -c '
import json, sys
t = open(sys.argv[1]).read()
assert t.endswith("data: [DONE]\n\n") and "\n\n\n" not in t and "usage\":{" not in t, t
ev = [e for e in t.split("\n\n") if e]
assert all(e.startswith("data: ") and "\n" not in e for e in ev), ev
assert len(ev) == 6, ev' "$tmp/resp"

# ---- the other outcomes ------------------------------------------------------------------------
api -H "Authorization: Bearer $ALICE" -H 'X-Test-First-Byte-Delay-Ms: 3000' --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "no answer within FirstByteTimeout=2s: 504 (failed)" test "$code" = 504
sleep 0.5
ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/die" -H "Authorization: Bearer $ALICE" -H 'X-Test-Chunks: 10' \
        -H 'X-Test-Die-After: 3' --data-binary "$(chat "p q" ',"stream":true')" "$BASE/v1/chat/completions"
check "an upstream that dies after 3 of 10 chunks: the client sees an error (truncated)" grep -q '"provider_error"' "$tmp/die"
sleep 0.5
ip netns exec "$NSC" curl -sN -m 1 -o "$tmp/cancel" -H "Authorization: Bearer $ALICE" -H 'X-Test-Chunks: 20' \
        -H 'X-Test-Chunk-Delay-Ms: 200' --data-binary "$(chat "p q" ',"stream":true')" "$BASE/v1/chat/completions"
check "a client that leaves after 1 s got part of the stream (cancelled)" grep -q 'tok1 ' "$tmp/cancel"

# rows ORDER-BY-ID-PYTHON: asserts on the usage rows (a list of dicts `r`), once written.
rows() {
        "$PY" - "$DB" "$@" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
db.row_factory = sqlite3.Row
r = [dict(x) for x in db.execute("SELECT * FROM usage ORDER BY id")]
try:
    ok = eval("(" + sys.argv[2] + ")")
except Exception as e:
    ok = False
if not ok and len(sys.argv) > 3:
    for x in r:
        print("#  ", {k: x[k] for k in ("outcome", "stream", "status", "prompt_tokens", "completion_tokens",
                                        "usage_reported", "time_to_first_token_usec", "provider_id")})
sys.exit(0 if ok else 1)
EOF
}
check "usage rows: 8 so far, written within a few seconds" wait_for 10 rows 'len(r) == 8'
check "…streams: ok, prompt and completion tokens as the upstream reported them, with TTFT and duration" rows '
[(x["outcome"], x["stream"], x["prompt_tokens"], x["completion_tokens"], x["usage_reported"]) for x in r[:5]] ==
 [("ok", 1, 3, 5, 1), ("ok", 1, 3, 5, 1), ("ok", 1, 4, 4, 1), ("ok", 0, 2, 5, 1), ("ok", 1, 2, 5, 1)]
 and all(x["time_to_first_token_usec"] > 0 and x["duration_usec"] >= x["time_to_first_token_usec"] for x in r[:5])
 and all(x["model"] == "m1" and x["provider_id"] == '"$PROV"' and x["status"] == 200 for x in r[:5])'
check "…failed: 504, no tokens, no first token" rows '
r[5]["outcome"] == "failed" and r[5]["status"] == 504 and r[5]["completion_tokens"] == 0 and r[5]["time_to_first_token_usec"] is None'
check "…truncated: the 3 content chunks counted as completion tokens, not reported" rows '
(r[6]["outcome"], r[6]["completion_tokens"], r[6]["usage_reported"], r[6]["prompt_tokens"]) == ("truncated", 3, 0, 0)'
check "…cancelled: the chunks the client got counted (1 to 19), not reported" rows '
r[7]["outcome"] == "cancelled" and 1 <= r[7]["completion_tokens"] < 20 and r[7]["usage_reported"] == 0'

# ---- a provider that refuses stream_options ----------------------------------------------------
sdk "an upstream that refuses stream_options (400): sent again without it, the stream works" "$ALICE" \
        "o.ok && o.content === $five && o.chunks === 5 && o.usage === null" \
        --model m1 --stream --header 'X-Test-Reject-Stream-Options: 1'
check "…the gateway says so in its log" grep -q 'refuses stream_options.include_usage' "$tmp/gatewayd.log"
sdk "…and remembers: the next stream goes without stream_options" "$ALICE" "o.ok && o.chunks === 5" --model m1 --stream
check "…(the upstream got no stream_options)" last_request '"stream_options" not in b'
sdk "…a client that asks for usage itself still gets it" "$ALICE" \
        "o.ok && o.chunks === 6 && o.usage.completion_tokens === 5" --model m1 --stream --include-usage
check "…its usage row counts the 5 chunks (not reported)" wait_for 5 rows '
len(r) == 11 and (r[8]["outcome"], r[8]["completion_tokens"], r[8]["usage_reported"]) == ("ok", 5, 0)'

sdk "a plain answer of 100 kB (passed through, not collected): its usage intact" "$ALICE" \
        "o.ok && o.usage.prompt_tokens === 2 && o.usage.completion_tokens === 5" \
        --model m1 --prompt "big one" --header 'X-Test-Response-Size: 100000'
check "…and in its row, read from the end of the answer" wait_for 5 rows '
len(r) == 12 and (r[11]["outcome"], r[11]["stream"], r[11]["prompt_tokens"], r[11]["completion_tokens"], r[11]["usage_reported"]) == ("ok", 0, 2, 5, 1)'

# ---- GET /api/v1/usage --------------------------------------------------------------------------
api -H "Authorization: Bearer $ALICE" "$BASE/api/v1/usage?group_by=model"
check "GET /api/v1/usage?group_by=model: alice's totals for m1" "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["object"] == "list" and d["group_by"] == "model" and len(d["data"]) == 1, d
m = d["data"][0]
assert m["model"] == "m1" and m["requests"] == 12 and m["ok"] == 9 and m["failed"] == 1, m
assert m["truncated"] == 1 and m["cancelled"] == 1 and m["completion_tokens"] >= 40, m
assert m["total_tokens"] == m["prompt_tokens"] + m["completion_tokens"], m' "$tmp/resp"
check "…no cache may keep it, and it carries one x-request-id" \
        sh -c "[ '$(hdr cache-control)' = no-store ] && [ -n '$(hdr x-request-id)' ] && [ \$(grep -ci '^x-request-id:' '$tmp/hdr') = 1 ]"
api -H "Authorization: Bearer $ALICE" "$BASE/api/v1/usage?since=1&until=$(( $(date +%s) + 60 ))"
check "…by key (the default), in a time range: alice's inference key" "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert [k["key"] for k in d["data"]] == [sys.argv[2][:11]], d' "$tmp/resp" "$ALICE"
api "$BASE/api/v1/usage"
check "…without a key: 401 missing_api_key" sh -c "[ $code = 401 ] && [ '$(efield code)' = missing_api_key ]"
api -H "Authorization: Bearer $ALICE" "$BASE/api/v1/usage?group_by=user"
check "…group_by=user: 400 naming the parameter" sh -c "[ $code = 400 ] && [ '$(efield param)' = group_by ]"
api -H "Authorization: Bearer $ALICE" "$BASE/api/v1/usage?since=soon"
check "…a bad since: 400" test "$code" = 400

# ---- limits per key -----------------------------------------------------------------------------
read -r _ RPM_KEY < <("$ADMIN" "$DB" limits alice 2 -2 -2)
read -r _ TPM_KEY < <("$ADMIN" "$DB" limits alice -2 10 -2)
read -r _ STR_KEY < <("$ADMIN" "$DB" limits alice -2 -2 1)
read -r _ ZERO_KEY < <("$ADMIN" "$DB" limits alice 0 -2 -2)
api -H "Authorization: Bearer $RPM_KEY" --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "rpm 2: the first request, x-ratelimit-limit-requests 2, remaining 1" \
        sh -c "[ $code = 200 ] && [ '$(hdr x-ratelimit-limit-requests)' = 2 ] && [ '$(hdr x-ratelimit-remaining-requests)' = 1 ] && [ -n '$(hdr x-ratelimit-reset-requests)' ] && [ -z '$(hdr x-ratelimit-limit-tokens)' ]"
api -H "Authorization: Bearer $RPM_KEY" --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "…the second: remaining 0" sh -c "[ $code = 200 ] && [ '$(hdr x-ratelimit-remaining-requests)' = 0 ]"
api -H "Authorization: Bearer $RPM_KEY" --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "…the third: 429 rate_limit_exceeded, Retry-After 30, the x-ratelimit headers, no x-should-retry" \
        sh -c "[ $code = 429 ] && [ '$(efield code)' = rate_limit_exceeded ] && [ '$(hdr retry-after)' = 30 ] && \
               [ '$(hdr x-ratelimit-remaining-requests)' = 0 ] && [ -n '$(hdr x-request-id)' ] && [ -z '$(hdr x-should-retry)' ]"
sdk "…the SDK sees the 429" "$RPM_KEY" "o.ok && o.error.status === 429 && o.error.code === 'rate_limit_exceeded'" \
        --model m1 --expect-error 429

api -H "Authorization: Bearer $TPM_KEY" --data-binary "$(chat "a")" "$BASE/v1/chat/completions"
check "tpm 10: the first request, x-ratelimit-limit-tokens 10, remaining 10" \
        sh -c "[ $code = 200 ] && [ '$(hdr x-ratelimit-limit-tokens)' = 10 ] && [ '$(hdr x-ratelimit-remaining-tokens)' = 10 ]"
api -H "Authorization: Bearer $TPM_KEY" --data-binary "$(chat "a")" "$BASE/v1/chat/completions"
check "…the second: 6 tokens (1 + 5) charged, remaining 4" sh -c "[ $code = 200 ] && [ '$(hdr x-ratelimit-remaining-tokens)' = 4 ]"
api -H "Authorization: Bearer $TPM_KEY" --data-binary "$(chat "a")" "$BASE/v1/chat/completions"
check "…the third: over (-2): 429 with Retry-After and remaining-tokens 0" \
        sh -c "[ $code = 429 ] && [ '$(efield code)' = rate_limit_exceeded ] && [ -n '$(hdr retry-after)' ] && [ '$(hdr x-ratelimit-remaining-tokens)' = 0 ]"

ip netns exec "$NSC" curl -sN -m 20 -o "$tmp/slow" -H "Authorization: Bearer $STR_KEY" -H 'X-Test-Chunks: 10' \
        -H 'X-Test-Chunk-Delay-Ms: 200' --data-binary "$(chat "s" ',"stream":true')" "$BASE/v1/chat/completions" &
slow=$!
wait_for 5 grep -q 'tok0' "$tmp/slow"
api -H "Authorization: Bearer $STR_KEY" --data-binary "$(chat "s" ',"stream":true')" "$BASE/v1/chat/completions"
check "one concurrent stream: a second stream is 429 with Retry-After 1" \
        sh -c "[ $code = 429 ] && [ '$(efield code)' = rate_limit_exceeded ] && [ '$(hdr retry-after)' = 1 ]"
api -H "Authorization: Bearer $STR_KEY" --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "…a plain request goes through meanwhile" test "$code" = 200
wait "$slow"
check "…the first stream finished whole" grep -q 'data: \[DONE\]' "$tmp/slow"
# The gateway counts the stream as ended when its exchange closes, a moment after curl has
# all of it: a few tries (each refusal is one more refused row).
stream_again() {
        api -H "Authorization: Bearer $STR_KEY" --data-binary "$(chat "s" ',"stream":true')" "$BASE/v1/chat/completions"
        [ "$code" = 200 ]
}
check "…and then a stream is admitted again" wait_for 3 stream_again

api -H "Authorization: Bearer $ZERO_KEY" --data-binary "$(chat)" "$BASE/v1/chat/completions"
check "a limit of 0: 429 with x-should-retry: false" \
        sh -c "[ $code = 429 ] && [ '$(hdr x-should-retry)' = false ] && [ '$(hdr x-ratelimit-limit-requests)' = 0 ]"
check "refused requests have usage rows too (outcome refused, status 429, no provider)" wait_for 5 rows '
len([x for x in r if x["outcome"] == "refused"]) >= 5 and all(x["status"] == 429 for x in r if x["outcome"] == "refused") and all(x["provider_id"] is None for x in r if x["outcome"] == "refused")'

# ---- the body cap, secrets, the end -------------------------------------------------------------
head -c 100000 /dev/zero | tr '\0' a >"$tmp/big"
api -H "Authorization: Bearer $ALICE" --data-binary @"$tmp/big" "$BASE/v1/chat/completions"
check "a body over MaxBodySize=64K: 413 request_too_large" sh -c "[ $code = 413 ] && [ '$(efield code)' = request_too_large ]"
no_secrets_logged "$ALICE" "$AGENT" "$RPM_KEY" "$TPM_KEY" "$STR_KEY" "$ZERO_KEY" "$SECRET"
n_before=$("$PY" -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM usage").fetchone()[0])' "$DB")
api -H "Authorization: Bearer $ALICE" --data-binary "$(chat)" "$BASE/v1/chat/completions"
stop_gateway "SIGTERM: the gateway exits 0"
check "…having written the last request's row on the way out" rows "len(r) == $n_before + 1 and r[-1]['outcome'] == 'ok'"

if [ "$failures" != 0 ]; then
        echo "# the usage rows:"
        rows False show
fi
agents_summary
