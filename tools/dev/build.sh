#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Configure (once) and build club into BUILD_DIR (default: build/ at the top of the tree).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$top/build}
if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$top" --buildtype=debugoptimized -Dtests=enabled >/dev/null
fi
ninja -C "$dir" >/dev/null
echo "build.sh: built in $dir"
