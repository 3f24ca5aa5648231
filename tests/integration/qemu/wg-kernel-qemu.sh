#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# wg-kernel-qemu.sh — lib/wg's kernel backend against real kernel WireGuard.
#
# This machine's own kernel may have no WireGuard (and may not load modules), so
# we boot Debian's kernel (package linux-image-amd64: /boot/vmlinuz-<ver> and
# /lib/modules/<ver>) under qemu with software emulation (TCG), with a small
# busybox initramfs that loads virtio/9p/overlay/wireguard/veth/tun, mounts the
# host's root file system read-only over 9p under a tmpfs overlay, and runs
# guest-wg-kernel.sh in it. The guest therefore runs the very club-wg-tool built
# on the host. No network device is given to the guest (-nic none).
#
# Usage: wg-kernel-qemu.sh /path/to/club-wg-tool
# Env:   CLUB_CACHE (/var/tmp/club-cache)  the initramfs is cached under $CLUB_CACHE/wg-qemu
#        CLUB_WG_QEMU_TIMEOUT (300)         seconds before the VM is killed
#        CLUB_TEST_STRICT=1                 a missing prerequisite fails instead of skipping
# Needs (Debian): qemu-system-x86 busybox-static cpio linux-image-amd64 wireguard-tools iproute2
#                 iputils-ping python3
# Exit: the guest's result (0 passed, 1 failed), 77 skipped.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOOL=${1:-${CLUB_WG_TOOL:-}}
GUEST=${CLUB_WG_QEMU_GUEST:-$HERE/guest-wg-kernel.sh}   # another guest script: for debugging
CACHE=${CLUB_CACHE:-/var/tmp/club-cache}/wg-qemu
TMO=${CLUB_WG_QEMU_TIMEOUT:-300}
MODULES="virtio_pci 9pnet_virtio 9p overlay wireguard veth tun"

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
[ -n "$TOOL" ] && [ -x "$TOOL" ] || { echo "usage: $0 CLUB-WG-TOOL" >&2; exit 1; }
TOOL=$(realpath "$TOOL")
[ "$(id -u)" = 0 ] || skip "not root (the host tree is shared with the guest as root)"
for p in qemu-system-x86_64 cpio gzip wg ip /usr/bin/python3; do command -v "$p" >/dev/null || skip "$p not installed"; done
. "$HERE/qemu-lib.sh"
qemu_busybox || skip "$QEMU_ERR"
# The newest installed kernel whose modules include WireGuard.
qemu_find_kernel || skip "no kernel with a WireGuard module in /boot (install linux-image-amd64)"

# ---- the initramfs: PID 1 is this init script ------------------------------------
# PID 1 in the guest, after qemu-lib.sh's start (/proc, /sys, /dev, the modules): mount the
# host tree (9p, read-only) under a tmpfs overlay, mount the results share, chroot and run
# the test, power off.
read -r -d '' INIT <<'EOF' || true
for a in $(cat /proc/cmdline); do
        case $a in club.script=*) S=${a#club.script=};; club.out=*) O=${a#club.out=};; club.arg=*) A=${a#club.arg=};; esac
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower || echo "CLUB-GUEST 9p mount failed"
mount -t tmpfs -o size=60% rw /rw; mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work ovl /newroot || mount --bind /lower /newroot
# /run and /tmp are fresh: no /run/wireguard, so the kernel backend is used.
mount -t tmpfs run /newroot/run; mount -t tmpfs tmp /newroot/tmp
mkdir -p "/newroot$O"; mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out "/newroot$O" || echo "CLUB-GUEST out mount failed"
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/dev/net
mount -t devpts devpts /newroot/dev/pts; mount -t tmpfs shm /newroot/dev/shm
ln -sf /proc/self/fd /newroot/dev/fd 2>/dev/null
echo "CLUB-GUEST-START uptime=$(cut -d' ' -f1 /proc/uptime)"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        /bin/bash "$S" "$A" "$O" > "/newroot$O/guest.log" 2>&1
echo $? > "/newroot$O/rc"
echo "CLUB-GUEST-END rc=$(cat "/newroot$O/rc") uptime=$(cut -d' ' -f1 /proc/uptime)"
sync; umount "/newroot$O"
poweroff -f
EOF

qemu_initramfs "$INIT" "$MODULES" "$CACHE" || skip "$QEMU_ERR"

# ---- inputs for the guest --------------------------------------------------------------
OUT=$(mktemp -d /tmp/club-wg-qemu.XXXXXX)
trap '[ -n "${CLUB_WG_QEMU_KEEP:-}" ] || rm -rf "$OUT"' EXIT
chmod 755 "$OUT"
# The guest's /tmp (and /run) are fresh tmpfs mounts, which would hide a checkout or a build
# under the host's /tmp: run copies from the results share, which the guest sees at $OUT.
cp "$GUEST" "$OUT/guest.sh"
cp "$TOOL" "$OUT/club-wg-tool"
GUEST=$OUT/guest.sh
TOOL=$OUT/club-wg-tool
"$TOOL" genkey >"$OUT/many.key"
# 2,000 peers; the first has 1,000 allowed IPs, so that both a SET and a GET dump
# must split one peer across netlink messages.
/usr/bin/python3 - "$OUT" <<'PY'
import base64, os, sys
out = sys.argv[1]
def key(): return base64.b64encode(os.urandom(32)).decode()
peers = [key() for _ in range(2000)]
with open(f"{out}/many.conf", "w") as f:
    f.write(f"interface ckM\nprivate-key-file {out}/many.key\nlisten-port 51900\nup yes\n")
    for i, p in enumerate(peers):
        f.write(f"peer {p}\n  allowed-ip 10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}/32\n")
        if i == 0:
            for j in range(1000):
                f.write(f"  allowed-ip fd00:5::{j:x}/128\n")
with open(f"{out}/many-half.conf", "w") as f:
    f.write(f"interface ckM\nprivate-key-file {out}/many.key\nlisten-port 51900\nup yes\n")
    for i, p in enumerate(peers[:1000]):
        f.write(f"peer {p}\n  allowed-ip 10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}/32\n")
        if i == 0:
            for j in range(1000):
                f.write(f"  allowed-ip fd00:5::{j:x}/128\n")
PY

# ---- boot ------------------------------------------------------------------------------------
t0=$(date +%s)
set +e
qemu_run "$TMO" "$OUT/console.log" "console=ttyS0 panic=-1 quiet club.script=$GUEST club.arg=$TOOL club.out=$OUT" \
        hostroot=/:ro out="$OUT"
qrc=$?
set -e
echo "# kernel $KVER, initramfs $INITRD, VM ran $(( $(date +%s) - t0 )) s${CLUB_WG_QEMU_KEEP:+, results kept in $OUT}"
grep -a 'CLUB-GUEST' "$OUT/console.log" | sed 's/^/# /' || true
[ -s "$OUT/guest.log" ] && cat "$OUT/guest.log"
if [ $qrc -eq 124 ]; then echo "FAIL - the VM did not finish within $TMO s"; tail -20 "$OUT/console.log" | sed 's/^/# /'; exit 1; fi
if [ ! -s "$OUT/rc" ]; then echo "FAIL - no result from the guest (qemu exit $qrc)"; tail -30 "$OUT/console.log" | sed 's/^/# /'; exit 1; fi
rc=$(cat "$OUT/rc")
[ "$rc" = 0 ] || exit 1
exit 0
