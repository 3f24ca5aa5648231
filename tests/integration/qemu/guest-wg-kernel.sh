#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# guest-wg-kernel.sh — runs as root INSIDE the VM started by wg-kernel-qemu.sh
# (Debian's kernel with wireguard.ko, the host's userland over 9p). Only
# club-wg-tool (lib/wg, kernel backend: rtnetlink + genl "wireguard") configures
# WireGuard; `wg` and `ip` read the result back.
#
# Usage: guest-wg-kernel.sh CLUB-WG-TOOL OUTDIR   (OUTDIR holds many.conf and many.key)
set -u
TOOL=$1 OUT=$2
W=/tmp/wgk
mkdir -p "$W"
umask 077
pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass+1)); }
bad() { echo "FAIL - $*"; fail=$((fail+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
quiet() { "$@" >/dev/null 2>&1; }
t() { echo "# [$(cut -d' ' -f1 /proc/uptime) s] $*"; }
converge() { "$TOOL" converge "$1" >"$W/out" 2>"$W/err"; }
nsconverge() { ip netns exec "$1" "$TOOL" converge "$2" >"$W/out" 2>"$W/err"; }
stat_is() { grep -q " $1=$2\( \|$\)" "$W/out"; }
stats_zero() {
        grep -q 'device_changed=0 peers_added=0 peers_changed=0 peers_removed=0 addresses_added=0 addresses_removed=0 routes_added=0 routes_removed=0 mtu_changed=0 up_changed=0 rolled_back=0' "$W/out"
}
show() { cat "$W/out" "$W/err" | sed 's/^/# /'; }

t "kernel $(uname -r)"
check "kernel WireGuard is available" sh -c "ip link add probe0 type wireguard && ip link del probe0"
check "backend for a new interface is kernel" test "$("$TOOL" backend ckA)" = kernel
check "no userspace socket directory" test ! -e /run/wireguard

for x in a b c d e psk; do "$TOOL" genkey >"$W/$x.key"; "$TOOL" pubkey <"$W/$x.key" >"$W/$x.pub"; done
PA=$(cat "$W/a.pub") PB=$(cat "$W/b.pub") PC=$(cat "$W/c.pub") PD=$(cat "$W/d.pub") PE=$(cat "$W/e.pub")

# ---- 1. create and configure ------------------------------------------------------------
t "create"
a_conf() {   # a_conf [peer lines...]
        cat <<EOF
interface ckA
private-key-file $W/a.key
listen-port 51820
fwmark 4660
mtu 1380
address 10.97.0.1/24
address fd97::1/64
route 10.96.5.0/24
route fd96::/64 metric 100
up yes
EOF
        printf '%s\n' "$@"
}
a_conf "peer $PB" "  preshared-key-file $W/psk.key" "  endpoint 192.0.2.2:51821" "  keepalive 25" \
       "  allowed-ip 10.97.0.2/32" "  allowed-ip fd97::2/128" \
       "peer $PC" "  endpoint [2001:db8::3]:51822" "  allowed-ip 10.97.0.3/32" "  allowed-ip 10.97.3.0/24" >"$W/a.conf"
if converge "$W/a.conf" && stat_is link_created 1 && stat_is peers_added 2 && stat_is addresses_added 2 && stat_is routes_added 2; then
        ok "converge creates and configures a kernel link"; else bad "create"; show; fi
check "ip: link kind is wireguard" sh -c "ip -d link show ckA | grep -qw wireguard"
check "ip: link is up with MTU 1380" sh -c "ip link show ckA | grep -q ',UP' && ip link show ckA | grep -q 'mtu 1380'"
check "ip: addresses" test "$(ip -br addr show ckA | awk '{print $3, $4}')" = "10.97.0.1/24 fd97::1/64"
check "ip: IPv4 route (proto static)" sh -c "ip route show proto static | grep -q '^10.96.5.0/24 dev ckA'"
check "ip: IPv6 route with metric" sh -c "ip -6 route show proto static | grep -q '^fd96::/64 dev ckA metric 100'"
check "wg: public key (derived by the kernel) matches ours" test "$(wg show ckA public-key)" = "$PA"
check "wg: listen port" test "$(wg show ckA listen-port)" = 51820
check "wg: fwmark" test "$(wg show ckA fwmark)" = 0x1234
check "wg: peers" test "$(wg show ckA peers | sort)" = "$(printf '%s\n' "$PB" "$PC" | sort)"
check "wg: preshared key" test "$(wg show ckA preshared-keys | grep "$PB" | cut -f2)" = "$(cat "$W/psk.key")"
check "wg: endpoints" test "$(wg show ckA endpoints | sort)" = "$(printf '%s\t%s\n' "$PB" 192.0.2.2:51821 "$PC" '[2001:db8::3]:51822' | sort)"
check "wg: keepalive" test "$(wg show ckA persistent-keepalive | grep "$PB" | cut -f2)" = 25
check "wg: allowed IPs" test "$(wg show ckA allowed-ips | sort)" = \
        "$(printf '%s\t%s\n' "$PB" "10.97.0.2/32 fd97::2/128" "$PC" "10.97.0.3/32 10.97.3.0/24" | sort)"
check "club-wg-tool show reads the same back" sh -c "'$TOOL' show ckA | grep -q '^peers 2$' && '$TOOL' show ckA | grep -q '^public-key $PA$'"
check "club-wg-tool never prints the private key" sh -c "! '$TOOL' show ckA | grep -qF '$(cat "$W/a.key")'"
check "club-wg-tool list" test "$("$TOOL" list)" = ckA

# ---- 2. idempotent ---------------------------------------------------------------------------
if converge "$W/a.conf" && stats_zero; then ok "converging again sends nothing"; else bad "not idempotent"; show; fi

# ---- 3. add, change, remove -------------------------------------------------------------------
t "change"
a_conf "peer $PB" "  endpoint 192.0.2.2:51821" "  allowed-ip 10.97.0.2/32" "  allowed-ip fd97::2/128" \
       "peer $PD" "  allowed-ip 10.97.0.4/32" >"$W/a.conf"
if converge "$W/a.conf" && stat_is peers_added 1 && stat_is peers_changed 1 && stat_is peers_removed 1; then
        ok "add D, change B (no keepalive, no preshared key), remove C"; else bad "add/change/remove"; show; fi
check "wg: peers are B and D" test "$(wg show ckA peers | sort)" = "$(printf '%s\n' "$PB" "$PD" | sort)"
check "wg: B has no preshared key and no keepalive" \
        test "$(wg show ckA preshared-keys | grep "$PB" | cut -f2)$(wg show ckA persistent-keepalive | grep "$PB" | cut -f2)" = "(none)off"
if converge "$W/a.conf" && stats_zero; then ok "idempotent after the change"; else bad "not idempotent after change"; show; fi

# ---- 4. 2,000 peers, one with 1,000 allowed IPs ------------------------------------------------
t "2000 peers"
if converge "$OUT/many.conf" && stat_is link_created 1 && stat_is peers_added 2000; then ok "2,000 peers on one interface"; else bad "2000 peers"; show; fi
t "2000 peers applied"
check "wg: 2,000 peers" test "$(wg show ckM peers | wc -l)" = 2000
check "wg: 3,000 allowed IPs" test "$(wg show ckM allowed-ips | tr '\t ' '\n\n' | grep -cE '^[0-9a-f:.]+/[0-9]+$')" = 3000
check "wg: the big peer has all 1,000 of its IPv6 allowed IPs" \
        test "$(wg show ckM allowed-ips | grep -F "fd00:5::3e7/128" | tr ' ' '\n' | grep -c fd00:5::)" = 1000
if converge "$OUT/many.conf" && stats_zero; then ok "2,000 peers: a split dump is joined back (nothing to change)"; else bad "2000 peers not idempotent"; show; fi
t "2000 peers re-read"
check "club-wg-tool show: 2,000 peers, 3,000 allowed IPs" \
        sh -c "'$TOOL' show ckM >'$W/m.show' && grep -c '^peer ' '$W/m.show' | grep -qx 2000 && [ \$(grep -c 'allowed-ip' '$W/m.show') = 3000 ]"
if converge "$OUT/many-half.conf" && stat_is peers_removed 1000 && stat_is peers_changed 0; then ok "remove 1,000 of them"; else bad "remove 1000"; show; fi
check "wg: 1,000 peers left" test "$(wg show ckM peers | wc -l)" = 1000
t "2000 peers done"
# (ckM is not deleted: tearing down 1,000 peers takes the emulated kernel ~20 s; the VM goes away anyway.)

# ---- 5. errors and rollback ---------------------------------------------------------------------
t "errors"
ip link add vx0 type veth peer name vx1
printf 'interface vx0\nlisten-port 1\n' >"$W/e1.conf"
if ! converge "$W/e1.conf" && grep -q 'not a WireGuard interface' "$W/err"; then ok "error: a link of another kind has the name"; else bad "other kind"; show; fi
ip link del vx0
# The port is taken by ckA: the kernel binds it when the link goes up, and refuses; the link
# this call created is removed again.
printf 'interface ckC\nprivate-key-file %s\nlisten-port 51820\naddress 10.95.0.1/24\nup yes\n' "$W/c.key" >"$W/e2.conf"
if ! converge "$W/e2.conf" && stat_is rolled_back 1 && grep -q 'listen port is used' "$W/err"; then ok "error: listen port in use, rolled back"; else bad "port conflict"; show; fi
check "no half-made link left behind" sh -c "! ip link show ckC >/dev/null 2>&1"
printf 'interface ckC\naddress 10.97.0.1/24\n' >"$W/e3.conf"
if ! converge "$W/e3.conf" && grep -q 'already assigned to another interface' "$W/err"; then ok "error: address conflict"; else bad "address conflict"; show; fi
check "nothing created after the address conflict" sh -c "! ip link show ckC >/dev/null 2>&1"
# A step after the WireGuard part fails on an existing link: everything is undone.
before=$(wg show ckA dump | cut -f1-4,8 | sort)
sysctl -qw net.ipv6.conf.ckA.disable_ipv6=1
sed -e 's/^mtu 1380/mtu 1300/' -e 's/^address fd97::1\/64/address fd97::9\/64/' "$W/a.conf" >"$W/e4.conf"
printf 'peer %s\n  allowed-ip 10.97.0.5/32\n' "$PE" >>"$W/e4.conf"
if ! converge "$W/e4.conf" && stat_is rolled_back 1; then ok "a failing step on a kernel link is rolled back"; else bad "kernel rollback"; show; fi
check "rollback: peers, keys and port as before" test "$(wg show ckA dump | cut -f1-4,8 | sort)" = "$before"
check "rollback: MTU restored" sh -c "ip link show ckA | grep -q 'mtu 1380'"
sysctl -qw net.ipv6.conf.ckA.disable_ipv6=0
check "delete ckA" "$TOOL" delete ckA

# ---- 6. a tunnel between two namespaces ----------------------------------------------------------
t "tunnel"
ip netns add a; ip netns add b
ip link add va netns a type veth peer name vb netns b
ip -n a addr add 10.77.0.1/24 dev va; ip -n a link set va up; ip -n a link set lo up
ip -n b addr add 10.77.0.2/24 dev vb; ip -n b link set vb up; ip -n b link set lo up
cat >"$W/ta.conf" <<EOF
interface wga
private-key-file $W/a.key
listen-port 51820
address 10.99.0.1/24
up yes
peer $PB
  endpoint 10.77.0.2:51821
  allowed-ip 10.99.0.2/32
EOF
cat >"$W/tb.conf" <<EOF
interface wgb
private-key-file $W/b.key
listen-port 51821
address 10.99.0.2/32
route 10.99.0.1/32
up yes
peer $PA
  endpoint 10.77.0.1:51820
  keepalive 25
  allowed-ip 10.99.0.1/32
  preshared-key-file $W/psk.key
EOF
sed -i "/allowed-ip 10.99.0.2\/32/a\\  preshared-key-file $W/psk.key" "$W/ta.conf"
if nsconverge a "$W/ta.conf" && stat_is link_created 1; then ok "namespace a: link created by our code"; else bad "ns a"; show; fi
if nsconverge b "$W/tb.conf" && stat_is link_created 1; then ok "namespace b: link created by our code"; else bad "ns b"; show; fi
check "ping a -> b over kernel WireGuard" quiet ip netns exec a ping -c 3 -i 0.2 -W 5 10.99.0.2
check "ping b -> a over kernel WireGuard" quiet ip netns exec b ping -c 2 -i 0.2 -W 5 10.99.0.1
ip netns exec b /usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("10.99.0.2", 8080)); s.listen(1); s.settimeout(60)
c, a = s.accept(); d = c.recv(100); c.sendall(b"kernel-wg " + a[0].encode() + b" " + d); c.close()' >"$W/tcp.log" 2>&1 &
srv=$!
got=
for _ in $(seq 100); do
        got=$(ip netns exec a bash -c 'exec 3<>/dev/tcp/10.99.0.2/8080 && printf hello >&3 && timeout 10 cat <&3' 2>/dev/null) && break
        sleep 0.2
done
check "TCP a -> b over kernel WireGuard" test "$got" = "kernel-wg 10.99.0.1 hello"
kill $srv 2>/dev/null; wait $srv 2>/dev/null
check "wg: handshake and traffic counted" sh -c "ip netns exec a wg show wga transfer | awk '{exit !(\$2 > 0 && \$3 > 0)}'"
if nsconverge b "$W/tb.conf" && stats_zero; then ok "namespace b: idempotent with a live tunnel"; else bad "ns b idempotent"; show; fi
ip netns exec a wg show wga | sed 's/^/# /'
ip netns del a; ip netns del b

t "done"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
