#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-upstream-openai.sh PATH-TO-club-test-upstream
#
# The real npm `openai` SDK (tests/openai/client.mjs) against club-test-upstream directly: proves
# that the test upstream is OpenAI-compatible and that the SDK harness works, before either is
# used in front of or behind clubd. Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when
# node/npm or the SDK are unavailable, unless CLUB_TEST_STRICT=1.
# The SDK is installed by tests/openai/setup.sh into tests/openai/node_modules, or into
# $CLUB_OPENAI_SDK_DIR if set.
set -u

UPSTREAM=${1:?usage: $0 PATH-TO-club-test-upstream}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/../openai/sdk.sh"

tmp=$(mktemp -d)
up_pid=
cleanup() {
        if [ -n "$up_pid" ]; then
                kill "$up_pid" 2>/dev/null
                wait "$up_pid" 2>/dev/null
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

"$UPSTREAM" --port 0 --models test-model,other-model --name up-a --api-key sk-upstream --verbose \
        >"$tmp/port" 2>"$tmp/upstream.log" &
up_pid=$!
port=
for _ in $(seq 100); do
        port=$(sed -n 's/^PORT=//p' "$tmp/port")
        [ -n "$port" ] && break
        sleep 0.05
done
if [ -z "$port" ]; then
        echo "FAIL - club-test-upstream did not start"
        cat "$tmp/upstream.log"
        exit 1
fi
base="http://127.0.0.1:$port/v1"

failures=0
# check NAME JS-EXPRESSION CLIENT-ARGS…: run client.mjs; the expression sees its output as `o`
check() {
        local name=$1 expr=$2 out
        shift 2
        out=$(node "$SDK_DIR/client.mjs" --base-url "$base" --api-key sk-upstream "$@" 2>&1)
        if node -e 'const o = JSON.parse(process.argv[1]); process.exit(eval(process.argv[2]) ? 0 : 1)' \
                "$out" "$expr" 2>/dev/null; then
                echo "ok - $name"
        else
                echo "FAIL - $name"
                echo "#   expected: $expr"
                echo "#   got: $out"
                failures=$((failures + 1))
        fi
}

# GET /_test/stats as JSON on stdout
stats() {
        node -e 'fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t))' \
                "http://127.0.0.1:$port/_test/stats"
}

fp='"club-test-upstream/up-a"'
five='"tok0 tok1 tok2 tok3 tok4 "'

check "models list" \
        'o.ok && JSON.stringify(o.models) === JSON.stringify(["test-model", "other-model"]) && o.owned_by.every(x => x === "up-a")' \
        --models
check "chat, non-streaming" \
        "o.ok && o.content === $five && o.finish_reason === 'stop' && o.usage.completion_tokens === 5 &&
         o.usage.total_tokens === o.usage.prompt_tokens + 5 && o.system_fingerprint === $fp && o.model === 'test-model'" \
        --model test-model --prompt "one two three"
check "chat, streaming" \
        "o.ok && o.content === $five && o.chunks === 5 && o.content_chunks === 5 && o.finish_reason === 'stop' &&
         o.usage === null && o.system_fingerprint === $fp" \
        --model test-model --stream
check "chat, streaming, include_usage, X-Test-Chunks: 3 (header)" \
        "o.ok && o.content === 'tok0 tok1 tok2 ' && o.chunks === 4 && o.content_chunks === 3 &&
         o.usage.completion_tokens === 3 && o.usage.prompt_tokens === 2" \
        --model test-model --stream --include-usage --prompt "hello world" --header 'X-Test-Chunks: 3'
check "chat, streaming, club_test.chunks = 2 (body)" \
        "o.ok && o.content === 'tok0 tok1 ' && o.chunks === 2" \
        --model other-model --stream --club-test '{"chunks":2}'
check "headers win over club_test" \
        "o.ok && o.content_chunks === 4" \
        --model test-model --stream --club-test '{"chunks":2}' --header 'X-Test-Chunks: 4'
check "max_tokens caps the completion" \
        "o.ok && o.content === 'tok0 tok1 ' && o.finish_reason === 'length'" \
        --model test-model --max-tokens 2
check "completions (legacy), streaming" \
        "o.ok && o.content === $five && o.chunks === 5 && o.id.startsWith('cmpl-up-a-')" \
        --model test-model --completions --stream
check "embeddings (SDK default: base64)" \
        "o.ok && o.embeddings === 2 && o.dimensions === 8 && o.usage.prompt_tokens === 3 &&
         o.first.every(x => x >= -1 && x < 1)" \
        --model test-model --embeddings --input "alpha beta" --input "gamma"
b64=$(node "$SDK_DIR/client.mjs" --base-url "$base" --api-key sk-upstream --model test-model --embeddings \
        --input x --dimensions 16 | node -e 'let s = ""; process.stdin.on("data", d => s += d).on("end", () => console.log(JSON.stringify(JSON.parse(s).first)))')
check "embeddings: float and base64 agree, dimensions honoured" \
        "o.ok && o.dimensions === 16 && JSON.stringify(o.first.map(x => Math.fround(x))) === JSON.stringify($b64)" \
        --model test-model --embeddings --input x --dimensions 16 --encoding-format float
check "unknown model -> 404 model_not_found" \
        "o.ok && o.error.status === 404 && o.error.code === 'model_not_found' && o.error.class === 'NotFoundError'" \
        --model no-such-model --expect-error 404
check "unknown model, streaming -> 404" \
        "o.ok && o.error.status === 404 && o.chunks === 0" \
        --model no-such-model --stream --expect-error 404
check "wrong API key -> 401 invalid_api_key" \
        "o.ok && o.error.status === 401 && o.error.code === 'invalid_api_key' && o.error.class === 'AuthenticationError'" \
        --model test-model --api-key sk-wrong --expect-error 401
check "X-Test-Status: 429 -> RateLimitError" \
        "o.ok && o.error.status === 429 && o.error.class === 'RateLimitError'" \
        --model test-model --header 'X-Test-Status: 429' --expect-error 429
check "X-Test-Die-After: 2 -> truncated stream is an error after 2 chunks" \
        "o.ok && o.error.status === null && o.chunks === 2 && o.content === 'tok0 tok1 '" \
        --model test-model --stream --header 'X-Test-Die-After: 2' --expect-error connection
check "X-Test-First-Byte-Delay-Ms: 300 + X-Test-Chunk-Delay-Ms: 50" \
        "o.ok && o.first_chunk_ms >= 300 && o.elapsed_ms >= 300 + 4 * 50 && o.content === $five" \
        --model test-model --stream --header 'X-Test-First-Byte-Delay-Ms: 300' --header 'X-Test-Chunk-Delay-Ms: 50'

s=$(stats)
if node -e '
        const s = JSON.parse(process.argv[1]);
        const ok = s.name === "up-a" && s.streams_started === 7 && s.streams_completed === 6 &&
                s.streams_aborted === 1 && s.streams_cancelled === 0 && s.streams_active === 0 &&
                s.chunks_generated === s.chunks_written && s.paused_now === 0 && s.unsent_bytes === 0 &&
                s.requests >= 17 && s.bad_requests === 0;
        process.exit(ok ? 0 : 1)' "$s"; then
        echo "ok - /_test/stats adds up"
else
        echo "FAIL - /_test/stats adds up"
        echo "#   got: $s"
        failures=$((failures + 1))
fi

kill -TERM "$up_pid"
rc=0
for _ in $(seq 100); do
        kill -0 "$up_pid" 2>/dev/null || break
        sleep 0.05
done
if kill -0 "$up_pid" 2>/dev/null; then
        echo "FAIL - club-test-upstream exits on SIGTERM"
        failures=$((failures + 1))
else
        wait "$up_pid"
        rc=$?
        up_pid=
        if [ "$rc" = 0 ]; then
                echo "ok - club-test-upstream exits 0 on SIGTERM"
        else
                echo "FAIL - club-test-upstream exits 0 on SIGTERM (status $rc)"
                failures=$((failures + 1))
        fi
fi

if [ "$failures" -gt 0 ]; then
        echo "# upstream log:"
        sed 's/^/#   /' "$tmp/upstream.log"
        exit 1
fi
exit 0
