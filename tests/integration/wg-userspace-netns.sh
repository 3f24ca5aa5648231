#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# wg-userspace-netns.sh — lib/wg end to end on the userspace backend.
#
# Three network namespaces shaped like the mesh: a hub (A) and two spokes (B, C),
# each spoke joined to the hub by its own veth pair. wireguard-go runs in each;
# only club-wg-tool (lib/wg) configures them: keys, port, peers, addresses,
# routes, MTU, up/down. Everything is read back independently with `wg show`
# and `ip`. Checks: ping and TCP through the tunnels; the spokes cannot reach
# each other; convergence (add, change, remove peers; port, PSK, address, route,
# MTU and link state changes) is idempotent and exact; errors a person can act
# on; a failed convergence is rolled back.
#
# Usage: wg-userspace-netns.sh /path/to/club-wg-tool
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root, or a prerequisite is
# missing and CLUB_TEST_STRICT is not 1).
# All traffic stays inside the namespaces made here (underlay 10.77.{1,2}.0/24,
# overlay 10.98.0.0/24); everything created is removed on exit.
set -euo pipefail

TOOL=${1:-${CLUB_WG_TOOL:-}}
skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
[ -n "$TOOL" ] && [ -x "$TOOL" ] || { echo "usage: $0 CLUB-WG-TOOL" >&2; exit 1; }
[ "$(id -u)" = 0 ] || skip "not root"
for p in wireguard-go wg ip ping /usr/bin/python3; do command -v "$p" >/dev/null || skip "$p not installed"; done
[ -c /dev/net/tun ] || skip "no /dev/net/tun"

ID=$$
NSA=clubwa$ID NSB=clubwb$ID NSC=clubwc$ID NSX=clubwx$ID
WGA=cwa$ID WGB=cwb$ID WGC=cwc$ID           # ≤ 15 characters; /run/wireguard is shared by all namespaces
RUNDIR=/run/wireguard
WORK=$(mktemp -d /tmp/club-wg-netns.XXXXXX)
PIDS=()
NETNS=()
pass=0 fail=0
umask 077

cleanup() {
        local rc=$?
        set +e
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
        sleep 0.2
        for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
        wait 2>/dev/null
        for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
        rm -f "$RUNDIR/$WGA.sock" "$RUNDIR/$WGB.sock" "$RUNDIR/$WGC.sock"
        rmdir "$RUNDIR" 2>/dev/null
        rm -rf "$WORK"
        exit $rc
}
trap cleanup EXIT

ok()  { echo "ok - $*"; pass=$((pass+1)); }
bad() { echo "FAIL - $*"; fail=$((fail+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
quiet() { "$@" >/dev/null 2>&1; }
inA() { ip netns exec "$NSA" "$@"; }
inB() { ip netns exec "$NSB" "$@"; }
inC() { ip netns exec "$NSC" "$@"; }
T0=$(date +%s.%N)
elapsed() { /usr/bin/python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$T0" "$(date +%s.%N)"; }

# converge NS FILE: run the tool in NS; stats line in $WORK/out, errors in $WORK/err.
converge() { ip netns exec "$1" "$TOOL" converge "$2" >"$WORK/out" 2>"$WORK/err"; }
stat_is() { grep -q " $1=$2\( \|$\)" "$WORK/out"; }
stats_zero() {
        grep -q 'device_changed=0 peers_added=0 peers_changed=0 peers_removed=0 addresses_added=0 addresses_removed=0 routes_added=0 routes_removed=0 mtu_changed=0 up_changed=0 rolled_back=0' "$WORK/out"
}
show() { cat "$WORK/out" "$WORK/err" | sed 's/^/# /'; }

# ---- underlay ------------------------------------------------------------------
for n in "$NSA" "$NSB" "$NSC"; do ip netns add "$n"; NETNS+=("$n"); ip -n "$n" link set lo up; done
ip link add vab$ID netns "$NSA" type veth peer name vba$ID netns "$NSB"
ip link add vac$ID netns "$NSA" type veth peer name vca$ID netns "$NSC"
ip -n "$NSA" addr add 10.77.1.1/24 dev vab$ID; ip -n "$NSA" link set vab$ID up
ip -n "$NSA" addr add 10.77.2.1/24 dev vac$ID; ip -n "$NSA" link set vac$ID up
ip -n "$NSB" addr add 10.77.1.2/24 dev vba$ID; ip -n "$NSB" link set vba$ID up
ip -n "$NSC" addr add 10.77.2.2/24 dev vca$ID; ip -n "$NSC" link set vca$ID up

# ---- wireguard-go in each namespace (foreground: we own the PID) -----------------
for pair in "$NSA:$WGA" "$NSB:$WGB" "$NSC:$WGC"; do
        ip netns exec "${pair%%:*}" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "${pair##*:}" \
                >"$WORK/${pair##*:}.log" 2>&1 &
        PIDS+=($!)
done
for _ in $(seq 100); do
        [ -S "$RUNDIR/$WGA.sock" ] && [ -S "$RUNDIR/$WGB.sock" ] && [ -S "$RUNDIR/$WGC.sock" ] && break
        sleep 0.05
done
[ -S "$RUNDIR/$WGA.sock" ] && [ -S "$RUNDIR/$WGB.sock" ] && [ -S "$RUNDIR/$WGC.sock" ] || { bad "wireguard-go did not start"; cat "$WORK"/*.log; exit 1; }
check "backend for $WGA is userspace" test "$("$TOOL" backend "$WGA")" = userspace

# ---- keys ------------------------------------------------------------------------
for x in a b c d psk; do "$TOOL" genkey >"$WORK/$x.key"; done
for x in a b c d; do "$TOOL" pubkey <"$WORK/$x.key" >"$WORK/$x.pub"; done
check "our public key derivation agrees with wg pubkey" test "$(wg pubkey <"$WORK/a.key")" = "$(cat "$WORK/a.pub")"
check "our generated keys are accepted by wg" sh -c "wg pubkey <'$WORK/b.key' >/dev/null"
PA=$(cat "$WORK/a.pub") PB=$(cat "$WORK/b.pub") PC=$(cat "$WORK/c.pub") PD=$(cat "$WORK/d.pub")

hub_conf() {   # hub_conf PORT [extra peer lines...] > file
        cat <<EOF
interface $WGA
private-key-file $WORK/a.key
listen-port $1
mtu 1420
address 10.98.0.1/24
up yes
EOF
        shift
        printf '%s\n' "$@"
}
spoke_conf() { # spoke_conf IF KEY ADDR HUB-ENDPOINT [extra lines...]
        cat <<EOF
interface $1
private-key-file $WORK/$2.key
address $3
route 10.98.0.1/32
up yes
peer $PA
  endpoint $4
  keepalive 25
  allowed-ip 10.98.0.1/32
EOF
        shift 4
        printf '%s\n' "$@"
}

# ---- converge all three -------------------------------------------------------------
hub_conf 51820 "peer $PB" "  allowed-ip 10.98.0.2/32" "peer $PC" "  allowed-ip 10.98.0.3/32" >"$WORK/a.conf"
spoke_conf "$WGB" b 10.98.0.2/32 10.77.1.1:51820 >"$WORK/b.conf"
spoke_conf "$WGC" c 10.98.0.3/32 10.77.2.1:51820 >"$WORK/c.conf"
if converge "$NSA" "$WORK/a.conf" && stat_is peers_added 2 && stat_is addresses_added 1 && stat_is up_changed 1; then
        ok "hub converged (2 peers, address, up)"; else bad "hub converge"; show; fi
if converge "$NSB" "$WORK/b.conf" && stat_is peers_added 1 && stat_is routes_added 1; then ok "spoke B converged"; else bad "spoke B converge"; show; fi
if converge "$NSC" "$WORK/c.conf" && stat_is peers_added 1; then ok "spoke C converged"; else bad "spoke C converge"; show; fi

# ---- read back independently ----------------------------------------------------------
check "wg: hub public key" test "$(inA wg show "$WGA" public-key)" = "$PA"
check "wg: hub listen port" test "$(inA wg show "$WGA" listen-port)" = 51820
check "wg: hub peers are exactly B and C" test "$(inA wg show "$WGA" peers | sort)" = "$(printf '%s\n' "$PB" "$PC" | sort)"
check "wg: hub allowed IPs" test "$(inA wg show "$WGA" allowed-ips | sort)" = "$(printf '%s\t%s\n' "$PB" 10.98.0.2/32 "$PC" 10.98.0.3/32 | sort)"
check "wg: spoke B endpoint and keepalive" test "$(inB wg show "$WGB" endpoints)$(inB wg show "$WGB" persistent-keepalive)" = "$PA	10.77.1.1:51820$PA	25"
check "ip: hub address and MTU" sh -c "ip -n $NSA -br addr show $WGA | grep -q '10.98.0.1/24' && ip -n $NSA link show $WGA | grep -q 'mtu 1420'"
check "ip: hub link is up" sh -c "ip -n $NSA link show $WGA | grep -q ',UP'"
check "ip: spoke B route to the hub (proto static)" sh -c "ip -n $NSB route show proto static | grep -q '^10.98.0.1 dev $WGB'"
check "club-wg-tool list shows the interfaces" sh -c "'$TOOL' list | grep -qx $WGA && '$TOOL' list | grep -qx $WGB"

# ---- traffic -------------------------------------------------------------------------
check "ping spoke B -> hub" quiet inB ping -c 2 -i 0.2 -W 3 10.98.0.1 -q
check "ping spoke C -> hub" quiet inC ping -c 2 -i 0.2 -W 3 10.98.0.1 -q
check "ping hub -> spoke B" quiet inA ping -c 2 -i 0.2 -W 3 10.98.0.2 -q
inA /usr/bin/python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.98.0.1", 8080)); s.listen(4); s.settimeout(30)
for _ in range(2):
    c, a = s.accept(); d = c.recv(100); c.sendall(b"hello " + a[0].encode() + b" " + d); c.close()
' >"$WORK/tcp.log" 2>&1 &
PIDS+=($!)
tcp() {
        ip netns exec "$1" /usr/bin/python3 -c '
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection(("10.98.0.1", 8080), timeout=5); break
    except OSError: time.sleep(0.1)
s.sendall(sys.argv[1].encode()); print(s.recv(100).decode())' "$2"
}
check "TCP spoke B -> hub through the tunnel" test "$(tcp "$NSB" from-b)" = "hello 10.98.0.2 from-b"
check "TCP spoke C -> hub through the tunnel" test "$(tcp "$NSC" from-c)" = "hello 10.98.0.3 from-c"
check "spokes cannot reach each other" sh -c "! ip netns exec $NSB ping -c 1 -W 1 10.98.0.3 >/dev/null 2>&1"
check "wg: hub saw handshakes from both spokes" sh -c "ip netns exec $NSA wg show $WGA latest-handshakes | awk '\$2 == 0 {exit 1}'"

# ---- idempotency ------------------------------------------------------------------------
if converge "$NSA" "$WORK/a.conf" && stats_zero; then ok "hub: converging again changes nothing"; else bad "hub not idempotent"; show; fi
if converge "$NSB" "$WORK/b.conf" && stats_zero; then ok "spoke B: converging again changes nothing"; else bad "spoke B not idempotent"; show; fi

# ---- convergence: add, change, remove -------------------------------------------------
hub_conf 51820 "peer $PB" "  allowed-ip 10.98.0.2/32" "peer $PC" "  allowed-ip 10.98.0.3/32" "  allowed-ip 10.98.1.0/24" >"$WORK/a.conf"
if converge "$NSA" "$WORK/a.conf" && stat_is peers_changed 1 && stat_is peers_added 0; then ok "change a peer's allowed IPs"; else bad "change allowed IPs"; show; fi
check "wg: C now has two allowed IPs" test "$(inA wg show "$WGA" allowed-ips | grep "$PC" | cut -f2)" = "10.98.0.3/32 10.98.1.0/24"

hub_conf 51820 "peer $PB" "  allowed-ip 10.98.0.2/32" "peer $PC" "  allowed-ip 10.98.0.3/32" "  allowed-ip 10.98.1.0/24" \
        "peer $PD" "  allowed-ip 10.98.0.4/32" "  keepalive 15" >"$WORK/a.conf"
if converge "$NSA" "$WORK/a.conf" && stat_is peers_added 1 && stat_is peers_changed 0; then ok "add a peer"; else bad "add a peer"; show; fi
check "wg: D added with keepalive 15" test "$(inA wg show "$WGA" persistent-keepalive | grep "$PD" | cut -f2)" = 15

hub_conf 51820 "peer $PB" "  allowed-ip 10.98.0.2/32" "peer $PD" "  allowed-ip 10.98.0.4/32" "  keepalive 15" >"$WORK/a.conf"
if converge "$NSA" "$WORK/a.conf" && stat_is peers_removed 1 && stat_is peers_changed 0; then ok "remove a peer that is not desired"; else bad "remove a peer"; show; fi
check "wg: hub peers are exactly B and D" test "$(inA wg show "$WGA" peers | sort)" = "$(printf '%s\n' "$PB" "$PD" | sort)"
check "ping C -> hub fails once C is removed" sh -c "! ip netns exec $NSC ping -c 1 -W 1 10.98.0.1 >/dev/null 2>&1"
check "ping B -> hub still works" quiet inB ping -c 1 -W 3 10.98.0.1 -q

# A preshared key on both ends, then the hub's port moves; the tunnel follows.
hub_conf 51830 "peer $PB" "  allowed-ip 10.98.0.2/32" "  preshared-key-file $WORK/psk.key" "peer $PD" "  allowed-ip 10.98.0.4/32" "  keepalive 15" >"$WORK/a.conf"
spoke_conf "$WGB" b 10.98.0.2/32 10.77.1.1:51830 "  preshared-key-file $WORK/psk.key" >"$WORK/b.conf"
if converge "$NSA" "$WORK/a.conf" && stat_is device_changed 1 && stat_is peers_changed 1; then ok "hub: new port and preshared key"; else bad "hub port/psk"; show; fi
if converge "$NSB" "$WORK/b.conf" && stat_is peers_changed 1; then ok "spoke B: new endpoint and preshared key"; else bad "spoke port/psk"; show; fi
check "wg: hub listens on 51830" test "$(inA wg show "$WGA" listen-port)" = 51830
check "wg: preshared key set on the hub's peer B" test "$(inA wg show "$WGA" preshared-keys | grep "$PB" | cut -f2)" = "$(cat "$WORK/psk.key")"
check "wg: spoke B endpoint follows" test "$(inB wg show "$WGB" endpoints | cut -f2)" = 10.77.1.1:51830
check "ping B -> hub with the preshared key" quiet inB ping -c 2 -i 0.2 -W 3 10.98.0.1 -q

# Spoke B: new address, no routes, smaller MTU; then down and up again.
hub_conf 51830 "peer $PB" "  allowed-ip 10.98.0.12/32" "  preshared-key-file $WORK/psk.key" "peer $PD" "  allowed-ip 10.98.0.4/32" "  keepalive 15" >"$WORK/a.conf"
cat >"$WORK/b2.conf" <<EOF
interface $WGB
private-key-file $WORK/b.key
address 10.98.0.12/24
no-routes
mtu 1380
up yes
peer $PA
  endpoint 10.77.1.1:51830
  keepalive 25
  allowed-ip 10.98.0.1/32
  preshared-key-file $WORK/psk.key
EOF
converge "$NSA" "$WORK/a.conf" || { bad "hub: move B's allowed IP"; show; }
if converge "$NSB" "$WORK/b2.conf" && stat_is addresses_added 1 && stat_is addresses_removed 1 && stat_is routes_removed 1 && stat_is mtu_changed 1; then
        ok "spoke B: address replaced, route removed, MTU changed"; else bad "spoke B link changes"; show; fi
check "ip: B has exactly 10.98.0.12/24" test "$(ip -n "$NSB" -4 -br addr show "$WGB" | awk '{print $3, $4}')" = "10.98.0.12/24 "
check "ip: B has no static routes left" test -z "$(ip -n "$NSB" route show proto static)"
check "ip: B MTU 1380" sh -c "ip -n $NSB link show $WGB | grep -q 'mtu 1380'"
check "ping B (new address) -> hub" quiet inB ping -c 2 -i 0.2 -W 3 10.98.0.1 -q
if converge "$NSB" "$WORK/b2.conf" && stats_zero; then ok "spoke B: idempotent after link changes"; else bad "spoke B link not idempotent"; show; fi
sed -i 's/^up yes/up no/' "$WORK/b2.conf"
if converge "$NSB" "$WORK/b2.conf" && stat_is up_changed 1; then ok "spoke B: link down"; else bad "link down"; show; fi
check "ip: B is down" sh -c "! ip -n $NSB link show $WGB | grep -q ',UP'"
sed -i 's/^up no/up yes/' "$WORK/b2.conf"
if converge "$NSB" "$WORK/b2.conf" && stat_is up_changed 1; then ok "spoke B: link up again"; else bad "link up"; show; fi

# Spoke B's only IPv4 address replaced while its route stays wanted (clubd registering again
# after the gateway forgot it): removing the last address makes the kernel flush the link's
# routes, and the route must be put back.
sed -e 's#^address .*#address 10.98.0.12/32#' -e 's#^no-routes#route 10.98.0.1/32#' "$WORK/b2.conf" >"$WORK/b3.conf"
sed 's#^address .*#address 10.98.0.13/32#' "$WORK/b3.conf" >"$WORK/b4.conf"
converge "$NSB" "$WORK/b3.conf" || { bad "spoke B: a /32 and a route"; show; }
if converge "$NSB" "$WORK/b4.conf" && stat_is addresses_added 1 && stat_is addresses_removed 1; then
        ok "spoke B: its only address replaced, the route kept"; else bad "spoke B: address replaced with a route"; show; fi
check "ip: B's route to the hub is still there" sh -c "ip -n $NSB route show proto static | grep -q '^10.98.0.1 dev $WGB'"
if converge "$NSB" "$WORK/b4.conf" && stats_zero; then ok "spoke B: idempotent after that"; else bad "spoke B not idempotent after the address change"; show; fi
converge "$NSB" "$WORK/b2.conf" || { bad "spoke B: back to its earlier state"; show; }

# ---- errors a person can act on; nothing applied -------------------------------------
printf 'interface abcdefghijklmnop\n' >"$WORK/e1.conf"
if ! converge "$NSA" "$WORK/e1.conf" && grep -q 'at most 15 characters' "$WORK/err"; then ok "error: interface name too long"; else bad "name too long"; show; fi
printf 'interface %s\npeer not-a-key\n' "$WGA" >"$WORK/e2.conf"
if ! converge "$NSA" "$WORK/e2.conf" && grep -q 'not a valid WireGuard key' "$WORK/err"; then ok "error: invalid key"; else bad "invalid key"; show; fi
printf 'interface vab%s\nlisten-port 1\n' "$ID" >"$WORK/e3.conf"
if ! converge "$NSA" "$WORK/e3.conf" && grep -q 'not a WireGuard interface' "$WORK/err"; then ok "error: a link of another kind has the name"; else bad "other link kind"; show; fi
check "the veth is untouched" sh -c "ip -n $NSA -br addr show vab$ID | grep -q 10.77.1.1/24"
hub_conf 51830 "peer $PB" "  allowed-ip 10.98.0.12/32" "  preshared-key-file $WORK/psk.key" "peer $PC" "  allowed-ip 10.98.0.3/32" \
        "address 10.77.2.1/24" >"$WORK/e4.conf"
if ! converge "$NSA" "$WORK/e4.conf" && grep -q 'already assigned to another interface' "$WORK/err"; then ok "error: address conflict"; else bad "address conflict"; show; fi
check "nothing applied after the address conflict (C not re-added, D kept)" \
        test "$(inA wg show "$WGA" peers | sort)" = "$(printf '%s\n' "$PB" "$PD" | sort)"

# No kernel WireGuard and no userspace socket (only where the kernel really has none).
ip netns add "$NSX"; NETNS+=("$NSX")
if ip -n "$NSX" link add probe$ID type wireguard 2>/dev/null; then
        ip -n "$NSX" link del probe$ID
        ok "# SKIP no-WireGuard error: this kernel has WireGuard"
else
        printf 'interface cnk%s\nup yes\n' "$ID" >"$WORK/e5.conf"
        if ! converge "$NSX" "$WORK/e5.conf" && grep -q 'install wireguard-go or load the wireguard module' "$WORK/err"; then
                ok "error: no kernel WireGuard and no wireguard-go"; else bad "no-WireGuard error"; show; fi
        check "no link left behind" sh -c "! ip -n $NSX link show cnk$ID >/dev/null 2>&1"
fi

# ---- rollback: a step fails after the WireGuard part was applied ----------------------
# IPv6 is disabled on B's link, so adding an IPv6 address fails after the peer change.
before=$(inB wg show "$WGB" dump | cut -f1-4,8 | sort)
inB sysctl -qw "net.ipv6.conf.$WGB.disable_ipv6=1"
sed -e 's/^mtu 1380/mtu 1300/' "$WORK/b2.conf" >"$WORK/e6.conf"
printf 'address fd98::12/64\npeer %s\n  allowed-ip 10.98.9.0/24\n' "$PD" >>"$WORK/e6.conf"
if ! converge "$NSB" "$WORK/e6.conf" && stat_is rolled_back 1 && grep -qi 'ipv6 is disabled' "$WORK/err"; then
        ok "a failing step reports the error and rolls back"; else bad "rollback"; show; fi
check "rollback: the peer added before the failure is gone" test "$(inB wg show "$WGB" dump | cut -f1-4,8 | sort)" = "$before"
check "rollback: MTU restored" sh -c "ip -n $NSB link show $WGB | grep -q 'mtu 1380'"
check "rollback: IPv4 address kept" test "$(ip -n "$NSB" -4 -br addr show "$WGB" | awk '{print $3}')" = 10.98.0.12/24
inB sysctl -qw "net.ipv6.conf.$WGB.disable_ipv6=0"
if converge "$NSB" "$WORK/b2.conf" && stats_zero; then ok "after the rollback the old state is intact"; else bad "state after rollback"; show; fi

# ---- delete ---------------------------------------------------------------------------------
if inC "$TOOL" delete "$WGC" >"$WORK/out" 2>"$WORK/err"; then ok "delete the userspace interface C"; else bad "delete"; show; fi
for _ in $(seq 50); do kill -0 "${PIDS[2]}" 2>/dev/null || break; sleep 0.1; done
check "wireguard-go for C has exited and its link is gone" sh -c "! kill -0 ${PIDS[2]} 2>/dev/null && ! ip -n $NSC link show $WGC >/dev/null 2>&1"

echo "# $(elapsed) s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
