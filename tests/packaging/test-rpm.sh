#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-rpm.sh — packaging/rpm: build club-agent and club-gateway with packaging/rpm/build.sh
# (rpmbuild, Debian's rpm, --nodeps), then read the packages back with rpm and rpm2cpio:
#  - the spec's Version is meson.build's project version; exactly the two packages come out;
#  - each package holds exactly its own files (rpm -qlp): binaries, units, sysusers.d and
#    tmpfiles.d entries, D-Bus policy, activation file and interface, polkit actions, man
#    pages, configuration; none of the other package's;
#  - modes and owners: daemons in /usr/libexec, state directories 0700 and owned by the
#    daemon's user, configuration marked %config(noreplace);
#  - the unpacked binaries run (--version), and each unit's ExecStart= names the packaged
#    binary;
#  - the scriptlets (rpm -qp --scripts): %pre makes the users from the sysusers.d text,
#    %post presets the units and creates the tmpfiles.d entries, %preun disables and stops
#    them on removal, %postun restarts them on upgrade; each parses with sh -n;
#  - the dependencies (rpm -qp --requires): the shared libraries found by rpm's ELF
#    scanner, dbus, polkit, systemd for the scriptlets;
#  - as root: rpm --root installs them into tests/packaging/rootfs.sh's Debian tree (on an
#    overlay), running the scriptlets for real: users and groups, owners of the state
#    directories, presets (with a "disable *" default, as RPM distributions have), rpm -V;
#    an upgrade to a rebuild (release 1.rq2) keeps a changed configuration, the state and
#    the enabled units; rpm -e disables the units, removes the files, saves the changed
#    configuration as .rpmsave.
# Prints "ok - …"/"FAIL - …"; exits 0, 1, or 77 (skip) when rpmbuild or a build
# dependency is missing, unless CLUB_TEST_STRICT=1 (then also not being root fails).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
for p in rpmbuild rpm rpm2cpio cpio meson ninja gcc pkg-config; do
        command -v "$p" >/dev/null || skip "$p is not installed (tools/dev/install-deps.sh)"
done

# As root, in a mount namespace of our own: the install section's overlay vanishes with us.
if [ "$(id -u)" = 0 ] && [ -z "${RQ_RPM_IN_NS:-}" ] && command -v unshare >/dev/null; then
        RQ_RPM_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rq-rpm.XXXXXX")
trap 'umount "$tmp/tree/root" 2>/dev/null; rm -rf "$tmp"' EXIT

# ---- build -----------------------------------------------------------------------------------
# Without %check: the unit suite runs on its own in the same CI (meson test --suite unit).
if "$SRC/packaging/rpm/build.sh" "$tmp/out" --without check >"$tmp/build.log" 2>&1; then
        ok "packaging/rpm/build.sh builds the packages"
else
        bad "packaging/rpm/build.sh failed"; tail -40 "$tmp/build.log" | sed 's/^/# /'
        echo "$pass passed, $fail failed"; exit 1
fi
grep -E 'warning: |error: ' "$tmp/build.log" | grep -v 'Macro expanded in comment' | sed 's/^/# rpmbuild: /' | head -20

V=$(sed -n 's/^Version:[[:space:]]*//p' "$SRC/packaging/rpm/club.spec")
MV=$(sed -n "s/^[[:space:]]*version[[:space:]]*:[[:space:]]*'\([^']*\)'.*/\1/p" "$SRC/meson.build" | head -1)
check "the spec's Version ($V) is meson.build's project version ($MV)" test "$V" = "$MV"
ARCH=$(rpm --eval '%{_arch}')
AGENT=$(ls "$tmp"/out/club-agent-"$V"-*."$ARCH".rpm 2>/dev/null) GW=$(ls "$tmp"/out/club-gateway-"$V"-*."$ARCH".rpm 2>/dev/null)
WGGO=$(ls "$tmp"/out/club-wireguard-go-"$V"-*.noarch.rpm 2>/dev/null)
check "exactly three binary packages: club-agent, club-gateway, club-wireguard-go (noarch)" \
        test -n "$AGENT" -a -n "$GW" -a -n "$WGGO" -a "$(ls "$tmp"/out/*.rpm | wc -l)" = 3
[ -n "$AGENT" ] && [ -n "$GW" ] && [ -n "$WGGO" ] || { echo "$pass passed, $fail failed"; exit 1; }
check "the tarball holds the working tree (club-$V/meson.build, the spec)" \
        sh -c "tar -tzf '$tmp/out/club-$V.tar.gz' | grep -qx 'club-$V/meson.build' &&
               tar -tzf '$tmp/out/club-$V.tar.gz' | grep -qx 'club-$V/packaging/rpm/club.spec' &&
               ! tar -tzf '$tmp/out/club-$V.tar.gz' | grep -q '^club-$V/build'"

# ---- files ----------------------------------------------------------------------------------------
UNIT=/usr/lib/systemd/system
agent_files="/etc/club
/etc/club/clubd.conf
/etc/club/clubd.conf.d
/usr/bin/clubctl
/usr/lib/sysusers.d/clubd.conf
/usr/lib/tmpfiles.d/clubd.conf
$UNIT/clubd.service
/usr/libexec/clubd
/usr/share/club
/usr/share/club/examples
/usr/share/club/examples/50-club-agent.rules.example
/usr/share/dbus-1/interfaces/club.inference.Agent1.xml
/usr/share/dbus-1/system-services/club.inference.Agent1.service
/usr/share/dbus-1/system.d/club.inference.Agent1.conf
/usr/share/man/man1/clubctl.1
/usr/share/man/man5/clubd.conf.5
/usr/share/man/man8/clubd.8
/usr/share/polkit-1/actions/club.inference.agent1.policy
/usr/share/doc/club-agent
/usr/share/doc/club-agent/README.md
/usr/share/doc/club-agent/clubd.md
/usr/share/doc/club-agent/clubctl.md
/usr/share/doc/club-agent/clubd.conf.md
/usr/share/doc/club-agent/proxy.md
/usr/share/doc/club-agent/packaging.md
/var/lib/club"
gw_files="/etc/club
/etc/club/gatewayd.conf
/etc/club/gatewayd.conf.d
/usr/bin/club-gatewayctl
/usr/lib/sysusers.d/club-gatewayd.conf
/usr/lib/tmpfiles.d/club-gatewayd.conf
$UNIT/club-gatewayd.service
$UNIT/club-gatewayd.socket
/usr/libexec/club-gatewayd
/usr/share/dbus-1/interfaces/club.inference.Gateway1.xml
/usr/share/dbus-1/system-services/club.inference.Gateway1.service
/usr/share/dbus-1/system.d/club.inference.Gateway1.conf
/usr/share/man/man1/club-gatewayctl.1
/usr/share/man/man5/club-gatewayd.conf.5
/usr/share/man/man8/club-gatewayd.8
/usr/share/polkit-1/actions/club.inference.gateway1.policy
/usr/share/doc/club-gateway
/usr/share/doc/club-gateway/README.md
/usr/share/doc/club-gateway/club-gatewayd.md
/usr/share/doc/club-gateway/club-gatewayctl.md
/usr/share/doc/club-gateway/protocol.md
/usr/share/doc/club-gateway/packaging.md
/usr/share/doc/club-gateway/examples
/usr/share/doc/club-gateway/examples/caddy
/usr/share/doc/club-gateway/examples/caddy/Caddyfile
/usr/share/doc/club-gateway/examples/nginx
/usr/share/doc/club-gateway/examples/nginx/club-gateway.conf
/var/lib/club-gatewayd"
wggo_files="/usr/lib/systemd/system-preset/50-club-wireguard-go.preset
$UNIT/club-wireguard-go@.service
$UNIT/club-wireguard-go@.socket
/usr/lib/sysusers.d/club-wireguard-go.conf"
# rpm -qlp, without the build-id links rpm adds for the debug information, and with man pages
# under their plain names (a distribution's rpm compresses them, Debian's does not).
same_list() {  # WHAT RPM EXPECTED
        local got
        got=$(rpm -qlp "$2" 2>/dev/null | grep -v '^/usr/lib/\.build-id' |
                sed -E 's,^(/usr/share/man/.*)\.(gz|xz|bz2|zst)$,\1,' | LC_ALL=C sort)
        if [ "$got" = "$(LC_ALL=C sort <<<"$3")" ]; then
                ok "$1"
        else
                bad "$1"; diff <(LC_ALL=C sort <<<"$3") <(echo "$got") | sed 's/^/# want<  >got: /'
        fi
}
same_list "club-agent holds exactly the agent's files (rpm -qlp)" "$AGENT" "$agent_files"
same_list "club-gateway holds exactly the gateway's files (rpm -qlp)" "$GW" "$gw_files"
same_list "club-wireguard-go holds the unit, its group and a preset enabling club0" "$WGGO" "$wggo_files"

# rpm -qp --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
dump_field() {  # RPM PATH → "MODE OWNER GROUP CONFIG"
        rpm -qp --dump "$1" 2>/dev/null | awk -v p="$2" '$1 == p { printf "%s %s %s %s\n", substr($5, length($5) - 3), $6, $7, $8 }'
}
check "clubd: /usr/libexec/clubd 0755 root" test "$(dump_field "$AGENT" /usr/libexec/clubd)" = "0755 root root 0"
check "club-gatewayd: /usr/libexec/club-gatewayd 0755 root" test "$(dump_field "$GW" /usr/libexec/club-gatewayd)" = "0755 root root 0"
check "/var/lib/club is 0700 clubd:clubd" test "$(dump_field "$AGENT" /var/lib/club)" = "0700 clubd clubd 0"
check "/var/lib/club-gatewayd is 0700 club-gateway:club-gateway" \
        test "$(dump_field "$GW" /var/lib/club-gatewayd)" = "0700 club-gateway club-gateway 0"
check "/etc/club/clubd.conf is %config(noreplace)" \
        test "$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$AGENT" | awk '$1 == "/etc/club/clubd.conf" {print $2}')" = cn
check "/etc/club/gatewayd.conf is %config(noreplace)" \
        test "$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$GW" | awk '$1 == "/etc/club/gatewayd.conf" {print $2}')" = cn

# ---- what is inside runs ------------------------------------------------------------------------------
for p in agent gw wggo; do
        mkdir -p "$tmp/x-$p"
        case $p in agent) f=$AGENT;; gw) f=$GW;; wggo) f=$WGGO;; esac
        (cd "$tmp/x-$p" && rpm2cpio "$f" | cpio -idm --quiet) || bad "rpm2cpio $f"
done
check "the packaged clubd runs: clubd $V" test "$("$tmp/x-agent/usr/libexec/clubd" --version 2>&1 | head -1)" = "clubd $V"
check "the packaged clubctl runs" test "$("$tmp/x-agent/usr/bin/clubctl" --version 2>&1 | head -1)" = "clubctl $V"
check "the packaged club-gatewayd runs" \
        test "$("$tmp/x-gw/usr/libexec/club-gatewayd" --version 2>&1 | head -1)" = "club-gatewayd $V"
check "the packaged club-gatewayctl runs" \
        test "$("$tmp/x-gw/usr/bin/club-gatewayctl" --version 2>&1 | head -1)" = "club-gatewayctl $V"
check "clubd.service starts the packaged /usr/libexec/clubd" \
        grep -qx 'ExecStart=/usr/libexec/clubd' "$tmp/x-agent$UNIT/clubd.service"
check "club-gatewayd.service starts the packaged /usr/libexec/club-gatewayd" \
        grep -qx 'ExecStart=/usr/libexec/club-gatewayd' "$tmp/x-gw$UNIT/club-gatewayd.service"
man_ok() {  # FILE (without a compression suffix): roff with this version in .TH
        local f
        f=$(ls "$1" "$1".* 2>/dev/null | head -1)
        [ -n "$f" ] && zcat -f "$f" | grep -q "^\.TH .*$V"
}
check "the man pages are roff, with the version filled in" \
        sh -c "$(declare -f man_ok); V=$V; for m in man8/clubd.8 man1/clubctl.1 man5/clubd.conf.5; do man_ok '$tmp/x-agent/usr/share/man/'\$m || exit 1; done;
               for m in man8/club-gatewayd.8 man1/club-gatewayctl.1 man5/club-gatewayd.conf.5; do man_ok '$tmp/x-gw/usr/share/man/'\$m || exit 1; done"
# The same units as the source's (tests/units/test-units.sh verifies and scores those).
check "the packaged units are the source's, with @libexecdir@ filled in" sh -c "
        sed 's,@libexecdir@,/usr/libexec,g' '$SRC/units/clubd.service.in' | cmp -s - '$tmp/x-agent$UNIT/clubd.service' &&
        sed 's,@libexecdir@,/usr/libexec,g' '$SRC/units/club-gatewayd.service.in' | cmp -s - '$tmp/x-gw$UNIT/club-gatewayd.service' &&
        cmp -s '$SRC/units/club-gatewayd.socket' '$tmp/x-gw$UNIT/club-gatewayd.socket' &&
        cmp -s '$SRC/units/club-wireguard-go@.service' '$tmp/x-wggo$UNIT/club-wireguard-go@.service'"

# ---- scriptlets ---------------------------------------------------------------------------------------------
# rpm -qp --scripts: "preinstall scriptlet (using /bin/sh):" followed by the body, per scriptlet.
scriptlet() {  # RPM NAME (preinstall postinstall preuninstall postuninstall)
        rpm -qp --scripts "$1" 2>/dev/null |
                awk -v want="$2" '/^[a-z]+ (scriptlet|program)/ { on = ($1 == want); next } on'
}
for p in agent gw; do
        if [ $p = agent ]; then f=$AGENT user=clubd units=clubd.service; else f=$GW user=club-gateway units="club-gatewayd.service club-gatewayd.socket"; fi
        pre=$(scriptlet "$f" preinstall) post=$(scriptlet "$f" postinstall)
        preun=$(scriptlet "$f" preuninstall) postun=$(scriptlet "$f" postuninstall)
        check "$p %pre makes the user $user from the sysusers.d text" \
                bash -c 'grep -qE "^u $2 |useradd .*$2" <<<"$1"' _ "$pre" "$user"
        # packaging/rpm/macros.fallback's text, or systemd-rpm-macros' (systemd-update-helper).
        check "$p %post presets $units" \
                bash -c 'grep -qF "preset $2" <<<"$1" || grep -qF "install-system-units $2" <<<"$1"' _ "$post" "$units"
        check "$p %post creates its tmpfiles.d entries" grep -q 'systemd-tmpfiles --create' <<<"$post"
        check "$p %preun disables and stops $units on removal only" \
                bash -c 'grep -qF "[ \$1 -eq 0 ]" <<<"$1" &&
                         { grep -qF "disable --now $2" <<<"$1" || grep -qF "remove-system-units $2" <<<"$1"; }' _ "$preun" "$units"
        check "$p %postun restarts on upgrade" \
                bash -c 'grep -qF "[ \$1 -ge 1 ]" <<<"$1" && grep -qE "try-restart|mark-restart-system-units" <<<"$1"' _ "$postun"
        for s in "$pre" "$post" "$preun" "$postun"; do
                sh -n <<<"$s" || { bad "$p: a scriptlet does not parse: $s"; continue 2; }
        done
        ok "$p: every scriptlet parses (sh -n)"
done

pre=$(scriptlet "$WGGO" preinstall)
check "club-wireguard-go %pre makes the group club-wireguard" grep -q '^g club-wireguard ' <<<"$pre"
check "club-agent %pre puts clubd into club-wireguard (wireguard-go's socket)" \
        grep -q '^m clubd club-wireguard' <<<"$(scriptlet "$AGENT" preinstall)"
check "club-wireguard-go %post applies the preset to club-wireguard-go@club0" \
        bash -c 'grep -qE "(preset|install-system-units) club-wireguard-go@club0.service" <<<"$1"' _ "$(scriptlet "$WGGO" postinstall)"
check "club-wireguard-go is not restarted by an upgrade (the interface would go down)" \
        bash -c '! grep -qE "try-restart|mark-restart" <<<"$1"' _ "$(scriptlet "$WGGO" postuninstall)"
check "the gateway's socket is not restarted by an upgrade" \
        bash -c '! grep -qE "(try-restart|mark-restart-system-units) .*club-gatewayd.socket" <<<"$1"' _ "$(scriptlet "$GW" postuninstall)"
check "the preset enables club-wireguard-go@club0" \
        grep -qx 'enable club-wireguard-go@.service club0' "$tmp/x-wggo/usr/lib/systemd/system-preset/50-club-wireguard-go.preset"
check "club-wireguard-go requires /usr/bin/wireguard-go" grep -qxF /usr/bin/wireguard-go <<<"$(rpm -qp --requires "$WGGO")"

# ---- dependencies ------------------------------------------------------------------------------------------------
for p in agent gw; do
        if [ $p = agent ]; then f=$AGENT; else f=$GW; fi
        req=$(rpm -qp --requires "$f" 2>/dev/null)
        for r in 'libsystemd.so.0()(64bit)' 'libmicrohttpd.so.12()(64bit)' 'libjson-c.so.5()(64bit)' \
                 'libnl-genl-3.so.200()(64bit)' 'libcrypto.so.3()(64bit)' dbus polkit systemd; do
                grep -qxF "$r" <<<"$req" || { bad "$p requires $r"; echo "$req" | sed 's/^/# /'; continue 2; }
        done
        ok "$p requires its shared libraries (rpm's ELF scan), dbus, polkit and systemd"
done
check "club-gateway requires libsqlite3" grep -qxF 'libsqlite3.so.0()(64bit)' <<<"$(rpm -qp --requires "$GW")"
check "club-agent does not need libsqlite3" sh -c "! rpm -qp --requires '$AGENT' | grep -q libsqlite3"

# ---- install, upgrade, remove: rpm --root on a Debian tree -------------------------------------------------------
# rpm runs the scriptlets chrooted into the tree (tests/packaging/rootfs.sh's, on an overlay
# in this script's own mount namespace), where systemd-sysusers, systemctl and
# systemd-tmpfiles are real. A "disable *" preset stands in for an RPM distribution's
# default policy (Debian's own enables everything). No RPM database knows the tree's
# Debian packages, hence --nodeps.
install_tests() {
        local tree w r rpmr wants
        tree=$("$HERE/rootfs.sh") || { bad "tests/packaging/rootfs.sh failed"; return; }
        w=$tmp/tree r=$tmp/tree/root
        mkdir -p "$w"/{upper,work,root}
        mount -t overlay -o "lowerdir=$tree,upperdir=$w/upper,workdir=$w/work" rq-rpm "$r" ||
                { bad "cannot mount an overlay on $tree"; return; }
        mkdir -p "$r/etc/systemd/system-preset"
        echo 'disable *' >"$r/etc/systemd/system-preset/99-default-disable.preset"
        rpmr() {  # rpm in the tree, without Debian's warning about using rpm on Debian
                local out rc
                out=$(rpm --root="$r" "$@" 2>&1)
                rc=$?
                grep -v 'use Alien instead\|assuming you know what you are doing' <<<"$out"
                return $rc
        }
        wants=$r/etc/systemd/system/multi-user.target.wants

        rpmr --initdb
        if rpmr --nodeps -i "$AGENT" "$GW" "$WGGO" >"$tmp/install.log"; then
                ok "rpm -i of the three packages into a Debian tree runs every scriptlet"
        else
                bad "rpm -i"; sed 's/^/# /' "$tmp/install.log"; return
        fi
        check "%pre made the users clubd and club-gateway, the groups club and club-wireguard (with both users)" \
                sh -c "chroot '$r' getent passwd clubd club-gateway >/dev/null && chroot '$r' getent group club >/dev/null &&
                       chroot '$r' getent group club-wireguard | grep -q 'club-gateway,clubd\|clubd,club-gateway'"
        check "/var/lib/club is 0700 and owned by clubd in the tree" \
                test "$(chroot "$r" stat -c '%a %U %G' /var/lib/club)" = "700 clubd clubd"
        check "/var/lib/club-gatewayd is 0700 and owned by club-gateway in the tree" \
                test "$(chroot "$r" stat -c '%a %U %G' /var/lib/club-gatewayd)" = "700 club-gateway club-gateway"
        check "the presets left clubd, club-gatewayd and its socket disabled" \
                sh -c "! ls '$wants' '$r/etc/systemd/system/sockets.target.wants' 2>/dev/null | grep -q 'clubd\|club-gatewayd'"
        check "club-wireguard-go's preset enabled club-wireguard-go@club0" test -L "$wants/club-wireguard-go@club0.service"
        check "rpm -V: every file as packaged (digests, modes, owners)" test -z "$(rpmr -Va --nodeps)"

        # An upgrade to the same tree rebuilt as release 1.rq2: an administrator's change to the
        # configuration, the state directory and the enabled units survive it.
        chroot "$r" systemctl enable clubd.service >/dev/null 2>&1
        echo '# changed by the administrator' >>"$r/etc/club/clubd.conf"
        echo 'state' >"$r/var/lib/club/state.json"
        if "$SRC/packaging/rpm/build.sh" "$tmp/out2" --without check --define 'dist .rq2' >"$tmp/build2.log" 2>&1 &&
           rpmr --nodeps -U "$tmp"/out2/club-agent-*.rpm "$tmp"/out2/club-gateway-*.rpm "$tmp"/out2/club-wireguard-go-*.rpm >"$tmp/upgrade.log"; then
                ok "rpm -U to release 1.rq2"
        else
                bad "rebuild or rpm -U"; tail -n 20 "$tmp/build2.log" "$tmp/upgrade.log" | sed 's/^/# /'; return
        fi
        check "…the packages are at 1.rq2" test "$(rpmr -q --qf '%{RELEASE} ' club-agent club-gateway club-wireguard-go)" = "1.rq2 1.rq2 1.rq2 "
        check "…the changed clubd.conf is kept (%config(noreplace))" grep -q 'changed by the administrator' "$r/etc/club/clubd.conf"
        check "…the state directory is kept" test "$(cat "$r/var/lib/club/state.json" 2>/dev/null)" = state
        check "…clubd stays enabled, wireguard-go too" test -L "$wants/clubd.service" -a -L "$wants/club-wireguard-go@club0.service"

        if rpmr -e club-agent club-gateway club-wireguard-go >"$tmp/erase.log"; then
                ok "rpm -e of the three packages"
        else
                bad "rpm -e"; sed 's/^/# /' "$tmp/erase.log"
        fi
        check "…%preun disabled the units" sh -c "! ls '$wants' | grep -q 'clubd\|club-gatewayd\|club-wireguard-go'"
        check "…the binaries and units are gone" \
                sh -c "! ls '$r/usr/libexec/clubd' '$r/usr/libexec/club-gatewayd' '$r/usr/lib/systemd/system/clubd.service' 2>/dev/null"
        check "…the changed configuration is saved as clubd.conf.rpmsave" grep -q 'changed by the administrator' "$r/etc/club/clubd.conf.rpmsave"
        umount "$r"
}
if [ "$(id -u)" != 0 ]; then
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then bad "install, upgrade, remove: not root"; else ok "# SKIP install, upgrade, remove: not root"; fi
elif ! command -v debootstrap >/dev/null && [ -z "$(ls -d "${CLUB_TEST_CACHE:-/var/cache/club-test}"/rootfs-bookworm-* 2>/dev/null)" ]; then
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then bad "install, upgrade, remove: no debootstrap"; else ok "# SKIP install, upgrade, remove: no debootstrap"; fi
else
        install_tests
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
