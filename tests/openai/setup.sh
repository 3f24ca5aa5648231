#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# setup.sh [DIR]: install the pinned npm `openai` package (package.json) into DIR/node_modules,
# DIR being this folder unless given (or $CLUB_OPENAI_SDK_DIR). For another DIR, package.json and
# client.mjs are copied there first, because ESM finds packages next to the importing file.
#
# Idempotent and cached: nothing happens when DIR/node_modules/openai already has the pinned
# version; concurrent runs serialise on a lock. Uses `npm ci` when a package-lock.json exists,
# else `npm install`. Exit status: 0 ready; 77 (skip) when node >= 20 or npm is missing or the
# install fails (no registry), 1 instead of 77 under CLUB_TEST_STRICT=1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-${CLUB_OPENAI_SDK_DIR:-$HERE}}

skip() {
        echo "setup.sh: $*" >&2
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then
                exit 1
        fi
        exit 77
}

command -v node >/dev/null 2>&1 || skip "node not found"
command -v npm >/dev/null 2>&1 || skip "npm not found"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major is too old (need >= 20)"

want=$(node -p 'require(process.argv[1]).dependencies.openai' "$HERE/package.json")
installed() {
        node -e 'try { process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1])).version) } catch {}' \
                "$DIR/node_modules/openai/package.json"
}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if [ "$DIR" != "$HERE" ]; then
        cp -f "$HERE/package.json" "$HERE/client.mjs" "$DIR/"
        if [ -f "$HERE/package-lock.json" ]; then
                cp -f "$HERE/package-lock.json" "$DIR/"
        fi
fi

[ "$(installed)" = "$want" ] && exit 0

mkdir -p "$DIR/node_modules"
exec 9>"$DIR/node_modules/.club-setup.lock"
if command -v flock >/dev/null 2>&1; then
        flock 9
fi
[ "$(installed)" = "$want" ] && exit 0

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cd "$DIR"
if [ -f package-lock.json ]; then
        cmd=(npm ci --no-audit --no-fund --loglevel=error)
else
        cmd=(npm install --no-audit --no-fund --loglevel=error)
fi
if ! "${cmd[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        skip "'${cmd[*]}' failed in $DIR"
fi
got=$(installed)
if [ "$got" != "$want" ]; then
        echo "setup.sh: installed openai '$got', wanted '$want'" >&2
        exit 1
fi
echo "setup.sh: openai@$got installed in $DIR/node_modules" >&2
