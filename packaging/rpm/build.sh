#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# build.sh — build club-agent and club-gateway RPMs from this working tree.
#
# Usage: packaging/rpm/build.sh OUTDIR [RPMBUILD-ARG…]
#        e.g. packaging/rpm/build.sh /tmp/rpms --without check
#
# 1. the source tarball club-VERSION.tar.gz: every file git knows of or would add (tracked,
#    and untracked but not ignored; so uncommitted work is packaged too), or, outside a git
#    checkout, the tree without build directories;
# 2. rpmbuild -bb with a private %_topdir (a temporary directory), so nothing lands in
#    ~/rpmbuild;
# 3. the binary packages copied to OUTDIR (*.rpm), the tarball next to them.
#
# On a host without an RPM database of build dependencies (Debian's `rpm` package) the
# BuildRequires cannot be checked, so rpmbuild runs with --nodeps: the Debian packages
# that tools/dev/install-deps.sh installs are what the build uses. Where rpm has no
# meson or systemd macros, packaging/rpm/macros.fallback supplies them.
# Env: CLUB_RPM_KEEP=1 keeps the %_topdir (its path is printed).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
SPEC=$HERE/club.spec
OUT=${1:?usage: $0 OUTDIR [RPMBUILD-ARG…]}
shift

command -v rpmbuild >/dev/null || { echo "build.sh: rpmbuild not found (Debian: apt-get install rpm)" >&2; exit 1; }
VERSION=$(sed -n 's/^Version:[[:space:]]*//p' "$SPEC")
[ -n "$VERSION" ] || { echo "build.sh: no Version: in $SPEC" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

TOP=$(mktemp -d "${TMPDIR:-/tmp}/club-rpm.XXXXXX")
if [ "${CLUB_RPM_KEEP:-0}" = 1 ]; then
        echo "build.sh: %_topdir is $TOP (kept)"
else
        trap 'rm -rf "$TOP"' EXIT
fi
mkdir -p "$TOP"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}

# ---- 1. the source tarball ---------------------------------------------------------------
TARBALL=$TOP/SOURCES/club-$VERSION.tar.gz
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Tracked files deleted in the working tree are still listed: keep those that exist.
        git -C "$SRC" ls-files -z --cached --others --exclude-standard |
                (cd "$SRC" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) |
                sort -z |
                tar -C "$SRC" --null --no-recursion -T - --transform "s,^,club-$VERSION/," \
                        --owner=0 --group=0 --numeric-owner -czf "$TARBALL"
else
        tar -C "$SRC" --exclude='./build' --exclude='./build-*' --exclude='./.git' \
                --exclude='node_modules' --transform "s,^\.,club-$VERSION," \
                --owner=0 --group=0 --numeric-owner -czf "$TARBALL" .
fi
cp "$SRC"/units/sysusers-{clubd,club-gatewayd,club-wireguard-go}.conf "$TOP/SOURCES/"

# ---- 2. rpmbuild ------------------------------------------------------------------------------
args=(--define "_topdir $TOP" --nodeps -bb)
if [ -z "$(rpm --eval '%{?systemd_post:1}')" ] || [ -z "$(rpm --eval '%{?meson:1}')" ]; then
        echo "build.sh: rpm has no systemd or meson macros here; loading $HERE/macros.fallback"
        args=(--load "$HERE/macros.fallback" "${args[@]}")
fi
rpmbuild "${args[@]}" "$@" "$SPEC"

# ---- 3. the results ------------------------------------------------------------------------------
find "$TOP/RPMS" -name '*.rpm' -exec cp {} "$OUT/" \;
cp "$TARBALL" "$OUT/"
ls -1 "$OUT"/*.rpm
