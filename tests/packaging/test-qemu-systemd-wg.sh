#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-qemu-systemd-wg.sh — the Debian packages on a booted system where the kernel has
# WireGuard: Debian's kernel (linux-image-amd64, the host's /boot and /lib/modules) under
# qemu with software emulation (TCG), booting the Debian tree of tests/packaging/rootfs.sh
# with systemd as PID 1. club-agent and club-gateway are installed into that tree with dpkg
# in a chroot before boot, on an overlay (the cached tree stays pristine). In the guest
# (qemu-guest-systemd-wg.sh): the packaged units start clubd in the guest's namespace and
# the gateway (socket-activated, HTTPS) in a second network namespace, by drop-ins; the
# units' modprobe@wireguard.service loads the module from the linux-image package's tree;
# clubctl registers with a key made by club-gatewayctl; both club0 links are kernel
# WireGuard (`ip -d link`, `wg show`); a streamed completion flows from the gateway
# through the tunnel to clubd and club-test-upstream. The steps and most checks are the
# person's path that test-deb-nspawn.sh also runs (person-path.sh). Results come back over
# a 9p share; this script prints them.
#
# Usage: test-qemu-systemd-wg.sh CLUB-TEST-UPSTREAM
# Env:   CLUB_DEB_DIR          use the .debs there instead of building them
#                              (packaging/debian/build.sh, DEB_BUILD_OPTIONS=nocheck)
#        CLUB_CACHE            (/var/tmp/club-cache) the initramfs is cached under
#                              $CLUB_CACHE/qemu-systemd; the tree is rootfs.sh's
#        CLUB_QEMU_TIMEOUT     (600) seconds before the VM is killed
#        CLUB_QEMU_KEEP=1      keep the work directory (console log, guest log)
#        CLUB_TEST_STRICT=1    a missing prerequisite fails instead of skipping
# Needs (Debian): qemu-system-x86 busybox-static cpio linux-image-amd64 debootstrap
#                 dpkg-dev debhelper (to build the .debs)
# Exit: 0 passed, 1 failed, 77 skipped.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
UPSTREAM=${1:-}
CACHE=${CLUB_CACHE:-/var/tmp/club-cache}/qemu-systemd
TMO=${CLUB_QEMU_TIMEOUT:-600}
# Only what mounting the root needs: wireguard and veth are loaded later, from the tree.
MODULES="virtio_pci 9pnet_virtio 9p overlay"

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
t0=$(date +%s)
t() { echo "# [$(( $(date +%s) - t0 )) s] $*"; }

[ -n "$UPSTREAM" ] && [ -x "$UPSTREAM" ] || { echo "usage: $0 CLUB-TEST-UPSTREAM" >&2; exit 1; }
[ "$(id -u)" = 0 ] || skip "not root (overlay mount, chroot, dpkg)"
for p in qemu-system-x86_64 cpio gzip chroot unshare openssl; do command -v "$p" >/dev/null || skip "$p not installed"; done
# In a mount namespace of our own: the overlay and /proc mounts vanish with this script,
# even when it is killed.
if [ -z "${RQ_QEMU_IN_NS:-}" ]; then
        RQ_QEMU_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
. "$SRC/tests/integration/qemu/qemu-lib.sh"
qemu_busybox || skip "$QEMU_ERR"
qemu_find_kernel || skip "no kernel with a WireGuard module in /boot (install linux-image-amd64)"

# ---- the initramfs: PID 1 until systemd ------------------------------------------------------
# After qemu-lib.sh's start (/proc, /sys, /dev, MODULES): mounts the tree (9p, read-only) under a tmpfs overlay, the linux-image package's modules
# (9p, read-only) at /lib/modules/$KVER and the results share at /mnt/out, and hands over to
# systemd. The serial getty is masked: the tree has no udev, so dev-ttyS0.device never
# appears and the getty would hold up the boot.
read -r -d '' INIT <<'EOF' || true
o=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o "$o,ro,cache=loose" root /lower || echo "CLUB-GUEST 9p root mount failed"
mount -t tmpfs -o size=60% rw /rw; mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work ovl /newroot || echo "CLUB-GUEST overlay failed"
k=$(uname -r)
mkdir -p "/newroot/lib/modules/$k" /newroot/mnt/out
mount -t 9p -o "$o,ro,cache=loose" modules "/newroot/lib/modules/$k" || echo "CLUB-GUEST modules mount failed"
mount -t 9p -o "$o" out /newroot/mnt/out || echo "CLUB-GUEST out mount failed"
echo "CLUB-GUEST-SWITCHROOT uptime=$(cut -d' ' -f1 /proc/uptime)"
mount --move /dev /newroot/dev; umount /proc /sys
exec switch_root /newroot /lib/systemd/systemd
EOF
qemu_initramfs "$INIT" "$MODULES" "$CACHE" || skip "$QEMU_ERR"

# ---- the tree and the packages -------------------------------------------------------------------
t "tree"
TREE=$("$HERE/rootfs.sh")
rc=$?
[ $rc = 77 ] && skip "debootstrap is not installed"
[ $rc = 0 ] && [ -d "$TREE" ] || { echo "FAIL - tests/packaging/rootfs.sh failed (exit $rc)"; exit 1; }

W=$(mktemp -d /tmp/rq-qemu.XXXXXX)
cleanup() {
        local m
        for m in "$W/root/proc" "$W/root"; do mountpoint -q "$m" && umount "$m"; done
        if [ "${CLUB_QEMU_KEEP:-0}" = 1 ]; then echo "# kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W"/{upper,work,root,out,debs}
chmod 755 "$W"

if [ -n "${CLUB_DEB_DIR:-}" ]; then
        cp "$CLUB_DEB_DIR"/club-agent_*.deb "$CLUB_DEB_DIR"/club-gateway_*.deb "$W/debs/" ||
                { echo "FAIL - no club-agent/club-gateway .debs in $CLUB_DEB_DIR"; exit 1; }
else
        command -v dpkg-buildpackage >/dev/null || skip "dpkg-buildpackage not installed (dpkg-dev)"
        t "building the .debs"
        if ! DEB_BUILD_OPTIONS=nocheck "$SRC/packaging/debian/build.sh" "$W/debs" >"$W/debs.log" 2>&1; then
                echo "FAIL - packaging/debian/build.sh"; tail -20 "$W/debs.log" | sed 's/^/# /'; exit 1
        fi
fi

mount -t overlay -o "lowerdir=$TREE,upperdir=$W/upper,workdir=$W/work" rq-qemu "$W/root" ||
        skip "cannot mount an overlay on $TREE"
mkdir -p "$W/root/tmp/debs"
cp "$W"/debs/club-agent_*.deb "$W"/debs/club-gateway_*.deb "$W/root/tmp/debs/"
mount -t proc proc "$W/root/proc"
# The tree has no network: everything the packages depend on is already in it (rootfs.sh).
if chroot "$W/root" sh -c 'dpkg -i /tmp/debs/*.deb' >"$W/dpkg.log" 2>&1; then
        ok "dpkg -i club-agent club-gateway into the tree (chroot, before boot)"
else
        bad "dpkg -i in the tree"; sed 's/^/# /' "$W/dpkg.log"; exit 1
fi
umount "$W/root/proc"
rm -rf "$W/root/tmp/debs"

# The test unit: runs the guest script once the system is up, then powers the VM off.
cat >"$W/root/etc/systemd/system/rq-vmtest.service" <<'EOF'
[Unit]
Description=club packaging test (test-qemu-systemd-wg.sh)
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/bin/bash /mnt/out/guest.sh >/mnt/out/guest.log 2>&1; echo $? >/mnt/out/rc; sync'
EOF
mkdir -p "$W/root/etc/systemd/system/multi-user.target.wants"
ln -sf ../rq-vmtest.service "$W/root/etc/systemd/system/multi-user.target.wants/rq-vmtest.service"
cp "$HERE/qemu-guest-systemd-wg.sh" "$W/out/guest.sh"
cp "$HERE/person-path.sh" "$UPSTREAM" "$W/out/"
echo "$KVER" >"$W/out/kver"
# The gateway's certificate for its address in the guest, self-signed: clubd and curl
# trust it as their CA (/etc/club/ca.pem).
mkdir "$W/out/tls"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=10.88.0.1 \
        -addext subjectAltName=IP:10.88.0.1 -addext extendedKeyUsage=serverAuth \
        -keyout "$W/out/tls/gw-key.pem" -out "$W/out/tls/gw-cert.pem" >"$W/openssl.log" 2>&1; then
        cp "$W/out/tls/gw-cert.pem" "$W/out/tls/ca.pem"
else
        echo "FAIL - openssl: a test certificate"; sed 's/^/# /' "$W/openssl.log"; exit 1
fi
chmod -R a+rX "$W/out"

# ---- boot ------------------------------------------------------------------------------------------
t "booting $VMLINUZ"
qt0=$(date +%s)
qemu_run "$TMO" "$W/console.log" \
        "console=ttyS0 panic=-1 quiet systemd.show_status=0 systemd.firstboot=off systemd.mask=serial-getty@ttyS0.service" \
        root="$W/root:ro" modules="$MODDIR:ro" out="$W/out"
qrc=$?
t "the VM ran $(( $(date +%s) - qt0 )) s (kernel $KVER)"
grep -a 'CLUB-GUEST' "$W/console.log" | sed 's/^/# /'
[ -s "$W/out/guest.log" ] && cat "$W/out/guest.log"
if [ $qrc = 124 ]; then
        bad "the VM did not finish within $TMO s"; tail -30 "$W/console.log" | sed 's/^/# /'
elif [ ! -s "$W/out/rc" ]; then
        bad "no result from the guest (qemu exit $qrc)"; tail -30 "$W/console.log" | sed 's/^/# /'
elif [ "$(cat "$W/out/rc")" != 0 ]; then
        fail=$((fail + 1))
fi
echo "# host: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
