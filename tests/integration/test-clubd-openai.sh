#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-clubd-openai.sh CLUBD CLUB_TEST_UPSTREAM
#
# The real npm `openai` SDK (tests/openai/client.mjs) talking to clubd, which forwards to two
# club-test-upstream instances: streaming and non-streaming chat, legacy completions,
# embeddings, the merged model list, routing by model, an unknown model, an upstream's error
# passed through, and a stream cut mid-way surfacing as an error in the SDK.
# Prints "ok - …" / "FAIL - …" and a summary; exits 0, 1, or 77 (skip) when node/npm or the SDK
# are unavailable, unless CLUB_TEST_STRICT=1.
set -u

CLUBD=${1:?usage: $0 CLUBD CLUB_TEST_UPSTREAM}
UPSTREAM=${2:?usage: $0 CLUBD CLUB_TEST_UPSTREAM}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/../openai/sdk.sh"

tmp=$(mktemp -d)
pids=()
cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
        wait 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT

start_upstream() {  # VAR NAME MODELS: start an upstream, put its port in VAR (no subshell: pids must stick)
        "$UPSTREAM" --port 0 --name "$2" --models "$3" --api-key "key-$2" >"$tmp/$2.port" 2>"$tmp/$2.log" &
        pids+=($!)
        for _ in $(seq 100); do
                grep -q '^PORT=' "$tmp/$2.port" && break
                sleep 0.05
        done
        printf -v "$1" '%s' "$(sed -n 's/^PORT=//p' "$tmp/$2.port")"
}

start_upstream pa alpha "llama-3-8b,qwen-2"
start_upstream pb beta "mistral-7b"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/clubd.conf" <<CONF
[Proxy]
Listen=127.0.0.1:$port

[Upstream]
Name=alpha
URL=http://127.0.0.1:$pa/v1
APIKey=key-alpha

[Upstream]
Name=beta
Kind=openai
URL=http://127.0.0.1:$pb
APIKey=key-beta
CONF
"$CLUBD" --config "$tmp/clubd.conf" >"$tmp/clubd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
done

base="http://127.0.0.1:$port/v1"
passed=0 failed=0
check() {  # NAME JS-EXPRESSION CLIENT-ARGS…   (the expression sees the client's output as `o`)
        local name=$1 expr=$2 out
        shift 2
        out=$(node "$SDK_DIR/client.mjs" --base-url "$base" --api-key "client-key-never-forwarded" "$@" 2>&1)
        if node -e 'const o = JSON.parse(process.argv[1]); process.exit(eval(process.argv[2]) ? 0 : 1)' \
                "$out" "$expr" 2>/dev/null; then
                echo "ok - $name"
                passed=$((passed + 1))
        else
                echo "FAIL - $name"
                echo "#   expected: $expr"
                echo "#   got: $out"
                failed=$((failed + 1))
        fi
}

five='"tok0 tok1 tok2 tok3 tok4 "'
check "SDK: models.list shows both upstreams' models" \
        'o.ok && JSON.stringify([...o.models].sort()) === JSON.stringify(["llama-3-8b","mistral-7b","qwen-2"])' \
        --models
check "SDK: streaming chat through clubd" \
        "o.ok && o.content === $five && o.content_chunks === 5 && o.finish_reason === 'stop' && o.system_fingerprint === 'club-test-upstream/alpha'" \
        --model llama-3-8b --stream
check "SDK: streaming chat with usage, routed by model to the second upstream" \
        "o.ok && o.content === 'tok0 tok1 tok2 ' && o.usage && o.usage.completion_tokens === 3 && o.system_fingerprint === 'club-test-upstream/beta'" \
        --model mistral-7b --stream --include-usage --header 'X-Test-Chunks: 3'
check "SDK: non-streaming chat with usage" \
        "o.ok && o.content === $five && o.usage.completion_tokens === 5" \
        --model qwen-2
check "SDK: legacy completions, streaming" \
        "o.ok && o.content === $five && o.chunks === 5" \
        --model qwen-2 --completions --stream
check "SDK: embeddings" \
        "o.ok && o.embeddings === 2 && o.dimensions === 8" \
        --model mistral-7b --embeddings --input "alpha beta" --input "gamma"
check "SDK: slow chunks still stream" \
        "o.ok && o.content_chunks === 4" \
        --model llama-3-8b --stream --header 'X-Test-Chunks: 4' --header 'X-Test-Chunk-Delay-Ms: 200'
check "SDK: unknown model is a 404 NotFoundError with code model_not_found" \
        "o.ok && o.error.status === 404 && o.error.code === 'model_not_found'" \
        --model no-such-model --expect-error 404
check "SDK: an upstream's 429 reaches the client" \
        "o.ok && o.error.status === 429" \
        --model llama-3-8b --header 'X-Test-Status: 429' --expect-error 429
check "SDK: a stream cut mid-way is an error, not a clean end" \
        "o.ok && o.error && o.content_chunks === 2 && o.elapsed_ms < 5000" \
        --model llama-3-8b --stream --header 'X-Test-Chunks: 10' --header 'X-Test-Die-After: 2' --expect-error connection

if [ "$failed" -gt 0 ]; then
        echo "--- clubd.log"; tail -30 "$tmp/clubd.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
