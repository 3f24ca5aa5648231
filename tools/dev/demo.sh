#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The main job, on one machine: installs what is needed (as root), builds, then runs clubd in
# front of a local OpenAI-compatible test server and streams a chat completion through it —
# with curl and with the real openai SDK — so you can watch tokens arrive as they are made.
#
#   sudo tools/dev/demo.sh
#
# CLUB_SKIP_DEPS=1 skips the package installation.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${CLUB_BUILD_DIR:-$top/build}

if [ "$(id -u)" -eq 0 ] && [ "${CLUB_SKIP_DEPS:-0}" != 1 ]; then
        "$top/tools/dev/install-deps.sh"
fi
"$top/tools/dev/build.sh" "$build"

work=$(mktemp -d /tmp/club-demo.XXXXXX)
pids=()
cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting a local inference server (club-test-upstream) serving 'llama-3-8b'"
"$build/tests/upstream/club-test-upstream" --port 0 --name home-gpu --models llama-3-8b >"$work/upstream.port" 2>"$work/upstream.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^PORT=' "$work/upstream.port" && break; sleep 0.05; done
up=$(sed -n 's/^PORT=//p' "$work/upstream.port")
echo "listening on 127.0.0.1:$up"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/clubd.conf" <<CONF
[Proxy]
Listen=127.0.0.1:$port

[Upstream]
Name=home-gpu
URL=http://127.0.0.1:$up/v1
CONF
say "Starting clubd with $work/clubd.conf"
cat "$work/clubd.conf"
"$build/daemons/clubd/clubd" --config "$work/clubd.conf" >"$work/clubd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.05; done

say "GET /healthz"
curl -s "http://127.0.0.1:$port/healthz"; echo
say "GET /v1/models"
curl -s "http://127.0.0.1:$port/v1/models"; echo

say "Streaming a chat completion through clubd (curl; one token every 150 ms)"
t0=$(date +%s%N)
curl -sN "http://127.0.0.1:$port/v1/chat/completions" \
        -H 'Content-Type: application/json' -H 'X-Test-Chunks: 8' -H 'X-Test-Chunk-Delay-Ms: 150' \
        -d '{"model":"llama-3-8b","stream":true,"messages":[{"role":"user","content":"Say hello"}]}' |
while IFS= read -r line; do
        [ -n "$line" ] && printf '%6d ms  %s\n' $(( ($(date +%s%N) - t0) / 1000000 )) "${line:0:110}"
done

if command -v node >/dev/null && bash "$top/tests/openai/setup.sh" >/dev/null 2>&1; then
        say "The same through the real openai SDK"
        node "$top/tests/openai/client.mjs" --base-url "http://127.0.0.1:$port/v1" --api-key demo \
                --model llama-3-8b --stream --include-usage --header 'X-Test-Chunks: 5'
else
        echo "(node/npm not available: skipping the openai SDK part)"
fi

say "clubd's log"
cat "$work/clubd.log"
