#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qemu-guest-systemd-wg.sh — runs as root INSIDE the VM that test-qemu-systemd-wg.sh boots:
# Debian's kernel, a Debian bookworm tree with systemd as PID 1 and the club-agent and
# club-gateway packages installed (dpkg, before boot), wireguard-go not running (the
# club-wireguard-go package is not installed). Started by rq-vmtest.service once
# multi-user.target is reached; its results share is /mnt/out (person-path.sh, the TLS
# files, club-test-upstream).
#
# Two machines in one: the agent's is the guest itself, the gateway's is the network
# namespace "rqg" (10.88.0.1, a veth away), where drop-ins (NetworkNamespacePath=) put the
# packaged club-gatewayd.socket and .service. Then the person's path of the booted package
# tests (tests/packaging/person-path.sh): HTTPS through the socket unit, users and keys,
# clubd enabled, clubctl register, online, a streamed completion through the tunnel. Here
# both club0 links are kernel WireGuard, and the wireguard module is loaded by
# modprobe@wireguard.service, which the units pull in.
set -u
OUT=/mnt/out
pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
t() { echo "# [$(cut -d' ' -f1 /proc/uptime) s] $*"; }
show() { sed 's/^/#   /'; }
gw() { ip netns exec rqg "$@"; }
ag() { "$@"; }
no_wireguard_go() { ! pgrep -x wireguard-go >/dev/null && ! test -e /run/wireguard; }
kernel_wg() { "$1" ip -d link show club0 2>/dev/null | grep -qw wireguard; }   # kernel_wg gw|ag

t "kernel $(uname -r), PID 1 is $(cat /proc/1/comm)"
check "systemd is PID 1" test "$(cat /proc/1/comm)" = systemd
check "the kernel is the host's linux-image ($(cat "$OUT/kver"))" test "$(uname -r)" = "$(cat "$OUT/kver")"
check "club-agent and club-gateway are installed" \
        test "$(dpkg-query -W -f='${db:Status-Status} ' club-agent club-gateway 2>&1)" = "installed installed "
check "no wireguard-go runs, no UAPI socket directory" no_wireguard_go
check "the wireguard module is not loaded yet" sh -c '! grep -q "^wireguard " /proc/modules'
check "modinfo finds wireguard.ko in the linux-image package's tree" \
        sh -c 'modinfo -n wireguard | grep -q "^/lib/modules/$(uname -r)/.*/wireguard\.ko"'
systemctl --failed --no-legend --plain | show

# ---- the gateway's machine: a network namespace ------------------------------------------------------
ip netns add rqg
ip link add rqv0 type veth peer name rqv1 netns rqg
ip addr add 10.88.0.2/24 dev rqv0
ip link set rqv0 up
ip -n rqg addr add 10.88.0.1/24 dev rqv1
ip -n rqg link set rqv1 up
ip -n rqg link set lo up
for u in club-gatewayd.socket club-gatewayd.service; do
        mkdir -p "/etc/systemd/system/$u.d"
        printf '[%s]\nNetworkNamespacePath=/run/netns/rqg\n' "$(case $u in *.socket) echo Socket;; *) echo Service;; esac)" \
                >"/etc/systemd/system/$u.d/50-netns.conf"
done
systemctl daemon-reload
install -m 0644 "$OUT/tls/ca.pem" /etc/club/ca.pem

# ---- the person's path -------------------------------------------------------------------------------------
GW_ADDR=10.88.0.1 PP_TLS=$OUT/tls PP_UPSTREAM=$OUT/club-test-upstream
. "$OUT/person-path.sh"
# Python starts slowly under emulation (and the tree has none): the values person-path.sh
# reads are top-level strings and numbers, which sed finds.
pp_json() { grep -o "\"$1\":\(\"[^\"]*\"\|[^,}]*\)" | head -n 1 | sed -e "s/^\"$1\"://" -e 's/^"\(.*\)"$/\1/' -e 's/^null$//'; }

t "gateway"
pp_gateway_setup
# The gateway starts After= it, so modprobe (exit 0) loaded the module, not the kernel on
# the daemon's first request.
check "modprobe@wireguard.service ran modprobe (exit 0) and the module is loaded" \
        sh -c 'grep -q "^wireguard " /proc/modules && [ "$(systemctl show -P ExecMainStatus modprobe@wireguard.service)" = 0 ] &&
               [ "$(systemctl show -P ExecMainStartTimestampMonotonic modprobe@wireguard.service)" -gt 0 ]'
journalctl -b -u modprobe@wireguard.service -o cat --no-pager | show
check "gateway: the hub club0 is a kernel WireGuard link (ip -d link: wireguard)" kernel_wg gw
check "gateway: wg show club0, listening on 51820" test "$(gw wg show club0 listen-port 2>&1)" = 51820
t "agent"
pp_agent_setup
pp_register
check "agent: club0 is a kernel WireGuard link too" kernel_wg ag
check "still no wireguard-go, no UAPI socket" no_wireguard_go
t "completion"
pp_stream "kernel WireGuard"
xfer() { [ "$(gw wg show club0 transfer | awk '{print ($2 > 0 && $3 > 0) ? "yes" : "no"}')" = yes ]; }
check "gateway: wg show club0 counts traffic both ways on the kernel link" xfer
gw wg show club0 | show
wg show club0 | show

check "no key in the journal" sh -c "! journalctl -b -o cat | grep -qF -e '$PP_AGENT_KEY' -e '$PP_INFERENCE_KEY'"
check "no failed units" test -z "$(systemctl --failed --no-legend --plain)"
systemctl --failed --no-legend --plain | show
t "done"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
