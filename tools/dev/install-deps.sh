#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install what building, running and testing club needs on Debian 12 (run as root).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps.sh: run as root (sudo $0)" >&2
        exit 1
fi

build=(meson ninja-build pkg-config gcc libc6-dev
       libsystemd-dev libmicrohttpd-dev libcurl4-openssl-dev libjson-c-dev libsqlite3-dev
       libssl-dev libseccomp-dev libnl-3-dev libnl-genl-3-dev libnl-route-3-dev check)
# Tests: real WireGuard (userspace in namespaces, the kernel's in a qemu guest), real clients,
# and a private system bus with the real dbus-daemon and polkitd.
tests=(python3 curl openssl socat procps util-linux iproute2 iputils-ping wireguard-go wireguard-tools
       qemu-system-x86 busybox-static cpio linux-image-amd64 ca-certificates
       dbus-daemon polkitd systemd)
# Packaging (with debhelper and debootstrap, below): lintian checks the Debian packages,
# systemd-container boots Debian 12 with systemd as PID 1 to install and use them
# (tests/packaging/test-deb-nspawn.sh); man-db and groff-base check the man pages.
tests+=(lintian systemd-container man-db groff-base)
# Packaging: rpmbuild, rpm and rpm2cpio build and read the RPMs (packaging/rpm) on Debian.
tests+=(rpm)
# The booted package tests: debootstrap makes their Debian tree (tests/packaging/rootfs.sh),
# dpkg-dev and debhelper build the .debs they install (packaging/debian/build.sh).
tests+=(debootstrap dpkg-dev debhelper)
# The TLS-terminating proxy examples (examples/) are tested with the real nginx (above) and
# Caddy (test-gateway-tls-proxy.sh).
tests+=(caddy)
# Benchmarks: nginx as the reference proxy.
bench=(nginx-light)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${build[@]}" "${tests[@]}" "${bench[@]}" >/dev/null
# A fresh nginx-light and caddy start themselves; the benchmark and the tests run their own.
systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
systemctl disable --now caddy >/dev/null 2>&1 || service caddy stop >/dev/null 2>&1 || true

# node and npm run the real `openai` SDK in tests. Many machines ship them outside apt
# (Debian's npm package conflicts with those): install from apt only when missing.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "install-deps.sh: dependencies installed."
