#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-deb-nspawn.sh — the Debian packages as a person uses them, in Debian 12 booted with
# systemd as PID 1 (systemd-nspawn; TESTING.md).
#
#   1. Build the packages from this tree twice (packaging/debian/build.sh): version V and
#      V+1, for the upgrade; lintian finds no error in the first.
#   2. Boot two containers from one cached bookworm tree (tests/packaging/rootfs.sh), each
#      in its own network namespace, joined by a veth: "gw" (10.77.0.1) and "ag" (10.77.0.2),
#      each with /dev/net/tun for wireguard-go. Two machines, so that the gateway's socket
#      is reached over a network and the tunnel crosses one, as in real life.
#   3. apt install ./club-gateway_*.deb ./club-wireguard-go_*.deb on gw, ./club-agent_*.deb
#      ./club-wireguard-go_*.deb on ag: users from sysusers.d, directories from tmpfiles.d,
#      nothing enabled but wireguard-go for club0.
#   4. The person's path (tests/packaging/person-path.sh): the gateway's HTTPS through its
#      socket unit, club-gatewayctl users add / keys create, systemctl enable --now clubd,
#      clubctl register --key=- (piped), journalctl -u clubd shows it, online, a streamed
#      completion from a client on ag through the gateway and the tunnel to ag's upstream.
#   5. Upgrade to V+1 with apt: clubd and club-gatewayd restarted, socket and wireguard-go
#      not, registration, store and keys kept, a completion streams again.
#   6. apt remove: daemons stopped, configuration and state kept. apt purge: both gone; the
#      system users stay (Debian policy), files the person made elsewhere in /etc/club stay.
#
# Usage: test-deb-nspawn.sh SRCROOT CLUB-TEST-UPSTREAM
# Env:   CLUB_TEST_CACHE (/var/cache/club-test): the debootstrapped tree, made once (≈1 min)
#        CLUB_TEST_KEEP=1: keep the work directory (packages, logs) and print its path
# Exit:  0 all passed, 1 a check failed, 77 not root or a prerequisite missing (unless
#        CLUB_TEST_STRICT=1).
set -uo pipefail

SRC=$(realpath "$1") UPSTREAM=$(realpath "$2")
HERE=$(cd "$(dirname "$0")" && pwd)

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
[ "$(id -u)" -eq 0 ] || skip "not root"
for t in systemd-nspawn debootstrap dpkg-buildpackage dh lintian openssl nsenter ip curl; do
        command -v $t >/dev/null || skip "$t not installed (tools/dev/install-deps.sh)"
done
[ -c /dev/net/tun ] || skip "no /dev/net/tun"

pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }

W=$(mktemp -d /tmp/pk-deb.XXXXXX)
NS_GW=pk-gw-$$ NS_AG=pk-ag-$$
declare -A NSPID=() LEADER=()

cleanup() {
        local rc=$? m i
        set +e
        for m in "${!NSPID[@]}"; do
                kill -0 "${NSPID[$m]}" 2>/dev/null || continue
                [ -n "${LEADER[$m]:-}" ] && nsenter -t "${LEADER[$m]}" -a systemctl poweroff >/dev/null 2>&1
        done
        for m in "${!NSPID[@]}"; do
                for i in $(seq 100); do kill -0 "${NSPID[$m]}" 2>/dev/null || break; sleep 0.2; done
                kill "${NSPID[$m]}" 2>/dev/null; sleep 0.5; kill -9 "${NSPID[$m]}" 2>/dev/null
        done
        wait 2>/dev/null
        ip netns del "$NS_GW" 2>/dev/null; ip netns del "$NS_AG" 2>/dev/null
        for m in "${!NSPID[@]}"; do rm -rf "/run/systemd/nspawn/propagate/$m"; done
        rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null
        if [ "${CLUB_TEST_KEEP:-0}" = 1 ]; then echo "# kept $W"; else rm -rf "$W"; fi
        exit $rc
}
trap cleanup EXIT

# ---- 1. the packages -------------------------------------------------------------------------
V=$(sed -n '1s/^club (\([^)]*\)).*/\1/p' "$SRC/packaging/debian/changelog")
V2=$V+1
for d in v1 v2; do mkdir -p "$W/share/$d"; done
if DEB_BUILD_OPTIONS=nocheck "$SRC/packaging/debian/build.sh" "$W/share/v1" >"$W/build-v1.log" 2>&1; then
        debs=("$W"/share/v1/*.deb)
        ok "packaging/debian/build.sh: $(printf '%s\n' "${debs[@]##*/}" | grep -v dbgsym | paste -sd' ')"
else
        bad "build.sh (version $V)"; tail -30 "$W/build-v1.log"; exit 1
fi
out=$(lintian --fail-on error "$W"/share/v1/*.changes 2>&1 | grep -v '^running with root privileges'); rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && ok "lintian: no errors, $(grep -c '^W:' <<<"$out") warnings" || bad "lintian"
grep -E '^[EW]:' <<<"$out" | sed 's/^/# /'
if DEB_BUILD_OPTIONS=nocheck "$SRC/packaging/debian/build.sh" --version "$V2" "$W/share/v2" >"$W/build-v2.log" 2>&1; then
        ok "the same tree rebuilt as $V2, for the upgrade"
else
        bad "build.sh --version $V2"; tail -30 "$W/build-v2.log"; exit 1
fi
cp "$UPSTREAM" "$W/share/club-test-upstream"

# A CA and the gateway's certificate for its address (the person would use Let's Encrypt).
(
        cd "$W" && mkdir tls && cd tls
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                -subj /CN=pk-test-ca -keyout ca-key.pem -out ca.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=10.77.0.1 \
                -keyout gw-key.pem -out gw.csr
        printf 'subjectAltName=IP:10.77.0.1\nextendedKeyUsage=serverAuth\n' > ext
        openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
                -extfile ext -out gw-cert.pem
) >"$W/openssl.log" 2>&1 || { bad "openssl: a test certificate"; cat "$W/openssl.log"; exit 1; }

# ---- 2. two machines ---------------------------------------------------------------------------
ROOT=$("$HERE/rootfs.sh") || { rc=$?; [ $rc -eq 77 ] && skip "debootstrap"; bad "rootfs.sh"; exit 1; }
ok "bookworm tree: $ROOT"

if ip netns add "$NS_GW" && ip netns add "$NS_AG" \
        && ip link add pkv$$g netns "$NS_GW" type veth peer name pkv$$a netns "$NS_AG" \
        && ip -n "$NS_GW" addr add 10.77.0.1/24 dev pkv$$g && ip -n "$NS_AG" addr add 10.77.0.2/24 dev pkv$$a \
        && ip -n "$NS_GW" link set pkv$$g up && ip -n "$NS_AG" link set pkv$$a up \
        && ip -n "$NS_GW" link set lo up && ip -n "$NS_AG" link set lo up; then
        ok "two network namespaces joined by a veth: $NS_GW (10.77.0.1), $NS_AG (10.77.0.2)"
else
        bad "network namespaces"; exit 1
fi

boot() {  # boot MACHINE NETNS
        local m=$1 ns=$2 i
        # Both machines boot the same tree, each on its own tmpfs overlay: the tree is never
        # written, so its lock is not needed. A network namespace given by path, unlike
        # --private-network, does not add CAP_NET_ADMIN to the container's bounding set;
        # wireguard-go (TUN) and the daemons (netlink) need it.
        SYSTEMD_NSPAWN_LOCK=0 systemd-nspawn -D "$ROOT" -M "$m" --register=no --keep-unit --boot \
                --volatile=overlay --network-namespace-path="/run/netns/$ns" --capability=CAP_NET_ADMIN \
                --bind=/dev/net/tun \
                --bind-ro="$W/share:/mnt/share" --console=passive >"$W/nspawn-$m.log" 2>&1 &
        NSPID[$m]=$!
        for _ in $(seq 200); do
                LEADER[$m]=$( (ps -o pid=,comm= --ppid "${NSPID[$m]}" 2>/dev/null || true) | awk '$2 == "systemd" { print $1; exit }')
                [ -n "${LEADER[$m]}" ] && break; sleep 0.1
        done
        [ -n "${LEADER[$m]}" ] || { bad "$m: systemd-nspawn did not boot"; cat "$W/nspawn-$m.log"; exit 1; }
}
in_machine() {
        local m=$1; shift
        nsenter -t "${LEADER[$m]}" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
gw() { in_machine pkgw$$ "$@"; }
ag() { in_machine pkag$$ "$@"; }

boot pkgw$$ "$NS_GW"; boot pkag$$ "$NS_AG"
for r in gw ag; do
        for _ in $(seq 200); do $r test -S /run/dbus/system_bus_socket 2>/dev/null && break; sleep 0.1; done
        state=$($r timeout 90 systemctl is-system-running --wait 2>/dev/null)
        [ "$state" = running ] && ok "$r: systemd is PID 1 and the system is running" \
                || { bad "$r: system state '$state'"; $r systemctl --failed --no-pager | sed 's/^/# /'; }
done

# ---- 3. install ---------------------------------------------------------------------------------
install_pkgs() {  # install_pkgs RUN LABEL DEB…   (offline: the dependencies are in the tree)
        local run=$1 label=$2; shift 2
        if $run apt-get install -y "$@" >"$W/apt-$label.log" 2>&1; then
                ok "$label: apt-get install $(printf '%s ' "$@" | sed 's|/mnt/share/v[12]/|./|g')"
        else
                bad "$label: apt-get install"; tail -20 "$W/apt-$label.log" | sed 's/^/# /'
                return 1
        fi
}
install_pkgs gw "gw" /mnt/share/v1/club-gateway_"$V"_amd64.deb /mnt/share/v1/club-wireguard-go_"$V"_all.deb || exit 1
install_pkgs ag "ag" /mnt/share/v1/club-agent_"$V"_amd64.deb /mnt/share/v1/club-wireguard-go_"$V"_all.deb || exit 1
ag sh -c 'cat > /etc/club/ca.pem' < "$W/tls/ca.pem"

check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
checkx() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }   # checkx WHAT 'SHELL CODE'

checkx "gw: sysusers made club-gateway, in group club-wireguard" \
        '[[ "$(gw id -nG club-gateway)" == *club-wireguard* ]]'
checkx "ag: sysusers made clubd, in group club-wireguard; the group club exists" \
        '[[ "$(ag id -nG clubd)" == *club-wireguard* ]] && ag getent group club >/dev/null'
check "ag: tmpfiles made /var/lib/club (0700 clubd) and /etc/club/clubd.conf.d" \
        test "$(ag stat -c '%a %U' /var/lib/club 2>&1) $(ag test -d /etc/club/clubd.conf.d && echo d)" = "700 clubd d"
check "gw: tmpfiles made /var/lib/club-gatewayd (0700 club-gateway)" \
        test "$(gw stat -c '%a %U' /var/lib/club-gatewayd 2>&1)" = "700 club-gateway"
checkx "conffiles: /etc/club/clubd.conf, /etc/club/gatewayd.conf" \
        'ag dpkg-query -W -f="\${Conffiles}" club-agent | grep -q /etc/club/clubd.conf && gw dpkg-query -W -f="\${Conffiles}" club-gateway | grep -q /etc/club/gatewayd.conf'
for r in gw ag; do
        checkx "$r: nothing enabled by the installation but wireguard-go" \
                '[ "$($r systemctl is-enabled club-wireguard-go@club0.service)" = enabled ] && ! $r systemctl -q is-enabled clubd.service club-gatewayd.service club-gatewayd.socket 2>/dev/null'
        check "$r: club-wireguard-go@club0 running; its socket 0660 root:club-wireguard" \
                test "$($r systemctl is-active club-wireguard-go@club0.service) $($r stat -c '%a %U:%G' /run/wireguard/club0.sock 2>&1)" = "active 660 root:club-wireguard"
done
checkx "man pages installed: clubd(8) clubctl(1) clubd.conf(5) club-gatewayd(8) club-gatewayctl(1) club-gatewayd.conf(5)" \
        'ag test -f /usr/share/man/man8/clubd.8.gz -a -f /usr/share/man/man1/clubctl.1.gz -a -f /usr/share/man/man5/clubd.conf.5.gz && gw test -f /usr/share/man/man8/club-gatewayd.8.gz -a -f /usr/share/man/man1/club-gatewayctl.1.gz -a -f /usr/share/man/man5/club-gatewayd.conf.5.gz'

# ---- 4. the person's path -----------------------------------------------------------------------
GW_ADDR=10.77.0.1 PP_TLS=$W/tls PP_UPSTREAM=$UPSTREAM
# shellcheck source=person-path.sh
. "$HERE/person-path.sh"
pp_gateway_setup
pp_agent_setup
pp_register
pp_stream "before the upgrade"

# ---- 5. upgrade -----------------------------------------------------------------------------------
pp_snapshot
install_pkgs gw "gw upgrade to $V2" /mnt/share/v2/club-gateway_"$V2"_amd64.deb /mnt/share/v2/club-wireguard-go_"$V2"_all.deb
install_pkgs ag "ag upgrade to $V2" /mnt/share/v2/club-agent_"$V2"_amd64.deb /mnt/share/v2/club-wireguard-go_"$V2"_all.deb
check "installed versions are $V2" \
        test "$(ag dpkg-query -W -f='${Version}' club-agent) $(gw dpkg-query -W -f='${Version}' club-gateway)" = "$V2 $V2"
pp_state_kept
pp_stream "after the upgrade"

# ---- 6. remove, purge ------------------------------------------------------------------------------
ag apt-get remove -y club-agent club-wireguard-go >"$W/apt-ag-remove.log" 2>&1 && ok "ag: apt-get remove club-agent club-wireguard-go" || bad "ag: remove"
gw apt-get remove -y club-gateway >"$W/apt-gw-remove.log" 2>&1 && ok "gw: apt-get remove club-gateway" || bad "gw: remove"
check "remove stopped clubd and wireguard-go" \
        test "$(ag systemctl is-active clubd.service club-wireguard-go@club0.service | paste -sd' ')" = "inactive inactive"
check "remove stopped club-gatewayd and its socket" \
        test "$(gw systemctl is-active club-gatewayd.service club-gatewayd.socket | paste -sd' ')" = "inactive inactive"
check "remove kept the agent's configuration and registration (clubd.conf, conf.d, state.json)" \
        ag test -f /etc/club/clubd.conf -a -f /etc/club/clubd.conf.d/50-local.conf -a -f /var/lib/club/state.json
check "remove kept the gateway's configuration and store (gatewayd.conf, conf.d, store.db, wireguard.key)" \
        gw test -f /etc/club/gatewayd.conf -a -f /etc/club/gatewayd.conf.d/50-site.conf -a -f /var/lib/club-gatewayd/store.db -a -f /var/lib/club-gatewayd/wireguard.key
check "dpkg: club-agent and club-gateway are in state config-files" \
        test "$(ag dpkg-query -W -f='${db:Status-Status}' club-agent) $(gw dpkg-query -W -f='${db:Status-Status}' club-gateway)" = "config-files config-files"

ag apt-get purge -y club-agent club-wireguard-go >"$W/apt-ag-purge.log" 2>&1 && ok "ag: apt-get purge club-agent club-wireguard-go" || bad "ag: purge"
gw apt-get purge -y club-gateway club-wireguard-go >"$W/apt-gw-purge.log" 2>&1 && ok "gw: apt-get purge club-gateway club-wireguard-go" || bad "gw: purge"
checkx "purge removed the agent's configuration and state (/etc/club/clubd.conf*, /var/lib/club)" \
        '! ag test -e /etc/club/clubd.conf -o -e /etc/club/clubd.conf.d -o -e /var/lib/club'
checkx "purge removed the gateway's configuration and state (/etc/club/gatewayd.conf*, /var/lib/club-gatewayd)" \
        '! gw test -e /etc/club/gatewayd.conf -o -e /etc/club/gatewayd.conf.d -o -e /var/lib/club-gatewayd'
checkx "purge left what the person made elsewhere (/etc/club/tls on gw; /etc/club/ca.pem on ag)" \
        'gw test -f /etc/club/tls/fullchain.pem && ag test -f /etc/club/ca.pem'
checkx "purge removed the enablement (no clubd/club-gatewayd/wireguard-go links in /etc/systemd/system)" \
        '[ -z "$(ag find /etc/systemd/system -name "clubd*" -o -name "dbus-club*" -o -name "club-wireguard-go*"; gw find /etc/systemd/system -name "club-gatewayd*" -o -name "dbus-club*" -o -name "club-wireguard-go*")" ]'
checkx "the system users stay after purge (Debian policy; files may still be theirs)" \
        'ag getent passwd clubd >/dev/null && gw getent passwd club-gateway >/dev/null'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
