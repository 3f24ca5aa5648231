#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# rootfs.sh — a Debian 12 (bookworm) minbase tree that boots with systemd as PID 1, with
# everything the club packages need at run time already in it (the booted tests run
# without network, so apt can only install what is there). Made once with debootstrap and
# cached; later calls print the cached tree at once. Shared by the booted package tests
# (tests/packaging/test-deb-nspawn.sh; a qemu run can use the same tree).
#
# Usage: rootfs.sh [EXTRA-PACKAGE...]   -> prints the tree's path on stdout
# Env:   CLUB_TEST_CACHE  cache directory (default /var/cache/club-test)
#        CLUB_TEST_MIRROR Debian mirror (default: the one this machine's apt uses)
# The tree's name carries a hash of the package list, so a changed list makes a new tree.
# Never boot the tree itself writable: use systemd-nspawn --volatile=overlay, or copy it.
set -euo pipefail

CACHE=${CLUB_TEST_CACHE:-/var/cache/club-test}
pkgs=(systemd systemd-sysv libpam-systemd dbus polkitd iproute2 procps ca-certificates curl
      # what the club packages depend on (their ${shlibs:Depends}) and recommend
      libmicrohttpd12 libcurl4 libjson-c5 libsqlite3-0 libseccomp2 libssl3
      libnl-3-200 libnl-genl-3-200 libnl-route-3-200
      # club-wireguard-go's dependency, and wg to look at the tunnels
      wireguard-go wireguard-tools
      # modprobe, for modprobe@wireguard.service when the tree boots on a real kernel
      # (tests/packaging/test-qemu-systemd-wg.sh)
      kmod
      "$@")
IFS=, list="${pkgs[*]}"; unset IFS
hash=$(printf '%s' "$list" | sha256sum | cut -c1-12)
ROOT=$CACHE/rootfs-bookworm-$hash

mirror() {
        [ -n "${CLUB_TEST_MIRROR:-}" ] && { echo "$CLUB_TEST_MIRROR"; return; }
        { awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null
          awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null; } | head -n 1
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9            # one debootstrap at a time; the others wait and reuse it
if [ ! -e "$ROOT/.complete" ]; then
        command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is not installed" >&2; exit 77; }
        rm -rf "$ROOT.tmp"; mkdir -p "$CACHE/debs"
        log=$CACHE/debootstrap-$hash.log
        if ! debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$list" \
                bookworm "$ROOT.tmp" "$(mirror)" >"$log" 2>&1; then
                tail -20 "$log" >&2
                echo "rootfs.sh: debootstrap failed (log: $log)" >&2
                exit 1
        fi
        # An empty machine-id: systemd makes a transient one at every boot.
        : > "$ROOT.tmp/etc/machine-id"
        # apt in the booted tree must not try the network (there is none).
        rm -f "$ROOT.tmp"/etc/apt/sources.list "$ROOT.tmp"/etc/apt/sources.list.d/*
        apt-get -o Dir="$ROOT.tmp" clean >/dev/null 2>&1 || rm -f "$ROOT.tmp"/var/cache/apt/archives/*.deb
        touch "$ROOT.tmp/.complete"
        mv "$ROOT.tmp" "$ROOT"
fi
echo "$ROOT"
