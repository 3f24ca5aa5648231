#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# build.sh — build the Debian packages club-agent, club-gateway and club-wireguard-go
# from this tree. The debian/ directory lives in packaging/debian, so the script assembles
# a source tree in a temporary directory (the tree's files as git lists them, or, without
# git, everything but build directories), puts packaging/debian at its top as debian/,
# and runs dpkg-buildpackage -us -uc -b there. The .debs (and the .buildinfo and .changes)
# end up in OUTDIR.
#
# Usage: packaging/debian/build.sh [--version VERSION] [--lintian] OUTDIR
#   --version VERSION  add a changelog entry with this version first (e.g. 0.1.0+1, to
#                      test an upgrade); default: the version in debian/changelog
#   --lintian          run lintian on the result; any error fails the build
# Env: DEB_BUILD_OPTIONS (e.g. nocheck: skip the unit tests, build no tests at all)
# Needs: dpkg-dev, debhelper and the Build-Depends (tools/dev/install-deps.sh installs them).
set -euo pipefail

version='' lint=0
while [ $# -gt 1 ]; do
        case $1 in
        --version) version=$2; shift 2 ;;
        --lintian) lint=1; shift ;;
        *) break ;;
        esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--version VERSION] [--lintian] OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
TOP=$(cd "$(dirname "$0")/../.." && pwd)

W=$(mktemp -d /tmp/club-deb.XXXXXX)
trap 'rm -rf "$W"' EXIT
SRC=$W/club

# ---- the source tree -------------------------------------------------------------------
mkdir -p "$SRC"
if git -C "$TOP" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # tracked files and new ones not ignored (build directories, node_modules are)
        (cd "$TOP" && git ls-files -z -co --exclude-standard) \
                | (cd "$TOP" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
                | (cd "$TOP" && tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
        tar -C "$TOP" --exclude='./build' --exclude='./build-*' --exclude='node_modules' \
                --exclude='.git' -cf - . | tar -C "$SRC" -xf -
fi
rm -rf "$SRC/debian"
cp -a "$TOP/packaging/debian" "$SRC/debian"
rm -f "$SRC/debian/build.sh"

if [ -n "$version" ]; then
        {
                printf 'club (%s) unstable; urgency=medium\n\n  * Rebuilt from the same tree as %s.\n\n' \
                        "$version" "$version"
                printf ' -- %s  %s\n\n' "$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$SRC/debian/changelog" | head -1)" "$(date -R)"
                cat "$SRC/debian/changelog"
        } > "$W/changelog"
        mv "$W/changelog" "$SRC/debian/changelog"
fi

# ---- build -------------------------------------------------------------------------------
(cd "$SRC" && dpkg-buildpackage -us -uc -b) > "$W/build.log" 2>&1 || {
        tail -40 "$W/build.log" >&2
        echo "build.sh: dpkg-buildpackage failed; the log's end is above." >&2
        exit 1
}
cp "$W/build.log" "$OUT/build.log"
changes=$(ls "$W"/*.changes)
for f in $(awk '/^Files:/ { f = 1; next } /^[^ ]/ { f = 0 } f { print $5 }' "$changes") "$(basename "$changes")"; do
        mv "$W/$f" "$OUT/"
done
ls "$OUT"/*.deb

if [ "$lint" = 1 ]; then
        lintian --fail-on error --info "$OUT/$(basename "$changes")"
fi
