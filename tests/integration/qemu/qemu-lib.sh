# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qemu-lib.sh — sourced by the tests that boot Debian's kernel under qemu (TCG) with a
# busybox initramfs: wg-kernel-qemu.sh (the host's tree as the guest's userland) and
# tests/packaging/test-qemu-systemd-wg.sh (a Debian tree with systemd as PID 1).
#
#   qemu_find_kernel            sets KVER, VMLINUZ, MODDIR: the newest kernel in /boot whose
#                               modules include WireGuard (package linux-image-amd64);
#                               returns 1 if there is none
#   qemu_initramfs INIT MODULES CACHEDIR
#                               sets INITRD to an initramfs (cpio.gz) that holds busybox and
#                               MODULES with their dependencies, and whose /init mounts
#                               /proc, /sys and /dev, loads MODULES (a failure is printed as
#                               "CLUB-GUEST modprobe M failed") and goes on with the shell
#                               text INIT; built once into CACHEDIR (named by a hash of its
#                               inputs; older ones there are deleted); returns 1 with
#                               QEMU_ERR set when a module is missing
#   qemu_busybox                sets BUSYBOX; returns 1 with QEMU_ERR set without a static
#                               busybox (busybox-static)
#   qemu_run TIMEOUT CONSOLE-LOG APPEND SHARE…
#                               boots VMLINUZ with INITRD under TCG (2 CPUs, 1 GiB, no
#                               network device, the serial console to CONSOLE-LOG) with the
#                               kernel command line APPEND; each SHARE is TAG=PATH (9p,
#                               writable) or TAG=PATH:ro; returns qemu's exit status, 124
#                               when it ran longer than TIMEOUT seconds

qemu_busybox() {
        BUSYBOX=$(command -v busybox || true)
        if [ -z "$BUSYBOX" ]; then QEMU_ERR="busybox not installed (busybox-static)"; return 1; fi
        if ldd "$BUSYBOX" >/dev/null 2>&1; then QEMU_ERR="$BUSYBOX is dynamically linked: install busybox-static"; return 1; fi
}

qemu_find_kernel() {
        local k v
        KVER=
        for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -rV); do
                v=${k#/boot/vmlinuz-}
                if [ -r "$k" ] && [ -e "/lib/modules/$v/modules.dep" ] && grep -q '/wireguard\.ko' "/lib/modules/$v/modules.dep"; then
                        KVER=$v
                        break
                fi
        done
        [ -n "$KVER" ] || return 1
        VMLINUZ=/boot/vmlinuz-$KVER
        MODDIR=/lib/modules/$KVER
}

qemu_initramfs() {  # INIT MODULES CACHEDIR
        local init=$1 modules=$2 cache=$3 hash r m line need f
        qemu_busybox || return 1
        hash=$( { printf '%s\n' "$init" "$KVER" "$modules"; sha256sum "$BUSYBOX" "$VMLINUZ"; } | sha256sum | cut -c1-16)
        INITRD=$cache/initrd-$KVER-$hash.cpio.gz
        mkdir -p "$cache"
        [ -s "$INITRD" ] && return 0
        r=$(mktemp -d /tmp/club-qemu-initrd.XXXXXX)
        mkdir -p "$r"/{bin,sbin,proc,sys,dev,lower,rw,newroot} "$r/lib/modules/$KVER"
        cp "$BUSYBOX" "$r/bin/busybox"
        for m in $("$r/bin/busybox" --list); do [ "$m" = busybox ] || ln -sf busybox "$r/bin/$m"; done
        need=
        for m in $modules; do
                line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -1)
                if [ -z "$line" ]; then rm -rf "$r"; QEMU_ERR="kernel module $m not found in $MODDIR"; return 1; fi
                need="$need ${line%%:*} ${line#*:}"
        done
        for f in $need; do
                mkdir -p "$r/lib/modules/$KVER/$(dirname "$f")"
                cp "$MODDIR/$f" "$r/lib/modules/$KVER/$f"
        done
        cp "$MODDIR"/modules.{dep,dep.bin,alias,alias.bin,symbols,symbols.bin,builtin,builtin.bin,order} "$r/lib/modules/$KVER/" 2>/dev/null || true
        {
                printf '#!/bin/sh\nexport PATH=/bin:/sbin\n'
                printf 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n'
                printf 'for m in %s; do modprobe "$m" || echo "CLUB-GUEST modprobe $m failed"; done\n' "$modules"
                printf '%s\n' "$init"
        } >"$r/init"
        chmod +x "$r/init"
        ( cd "$r" && find . | cpio -o -H newc 2>/dev/null | gzip -1 ) >"$INITRD.tmp.$$"
        mv "$INITRD.tmp.$$" "$INITRD"
        rm -rf "$r"
        # Drop initramfs images of other kernels or older versions of the calling script.
        find "$cache" -name 'initrd-*.cpio.gz' ! -name "$(basename "$INITRD")" -delete 2>/dev/null || true
}

qemu_run() {  # TIMEOUT CONSOLE-LOG APPEND SHARE…
        local tmo=$1 log=$2 append=$3 a path ro fs=()
        shift 3
        for a in "$@"; do
                path=${a#*=} ro=
                case $path in *:ro) path=${path%:ro} ro=,readonly=on ;; esac
                fs+=(-virtfs "local,path=$path,mount_tag=${a%%=*},security_model=none$ro,multidevs=remap")
        done
        timeout --foreground "$tmo" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
                -display none -no-reboot -nic none -monitor none -serial stdio \
                -kernel "$VMLINUZ" -initrd "$INITRD" -append "$append" "${fs[@]}" \
                </dev/null >"$log" 2>&1
}
