#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-clubd-bus.sh CLUBD CLUBCTL CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER CLUB-TEST-UPSTREAM
#
# clubd's D-Bus service club.inference.Agent1 and clubctl, as root, on a private system bus
# with the real dbus-daemon and polkitd (private-bus.sh) and the files we install:
# dbus/club.inference.Agent1.conf, polkit/club.inference.agent1.policy and
# polkit/50-club-agent.rules.example as an active rule (the group "club"), plus
# bus/50-clubd-bus-test.rules (a user polkit would ask a password of). clubd runs in an
# "agent" network namespace with wireguard-go and registers with a real club-gatewayd in a
# "vps" namespace (clubd-netns.sh), so that Drain and Resume have something to change.
# Users: club-test-allowed (in group club), club-test-denied (installed defaults: no),
# club-test-auth (auth_admin by rule), and clubd. Checks:
#  - the bus policy: users other than clubd and root cannot own the name (RequestName),
#    clubd and root can; clubd as another user fails to start;
#  - the live object's introspection equals dbus/club.inference.Agent1.xml (methods with
#    argument names, types and directions, properties with types, access and change
#    signalling, signals), and no method is root-only;
#  - reading properties needs nothing: busctl and `clubctl status [--json]` as the denied
#    user, before and after registering;
#  - Register, Drain, Resume, Reload, Unregister as root (Drain even with polkitd frozen),
#    as the allowed user (through the example rule), as the denied user (exit 4, the
#    message, and nothing changed: a denied Unregister leaves the registration intact), as
#    the auth user with --no-ask-password (InteractiveAuthorizationRequired, exit 4) and on
#    a terminal (pty-run.py: clubctl starts pkttyagent, polkit asks for the password with
#    our action's message, a wrong password is a refusal);
#    invalid Register arguments are refused (InvalidArgs) before polkit is asked;
#  - PropertiesChanged on Drain and Resume, seen by an unprivileged `gdbus monitor`;
#  - NotRegistered (exit 7) before registering and after unregistering; unregister without
#    --yes and without a terminal refuses (exit 2);
#  - clubctl with clubd stopped: "clubd is not running" and exit 3.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

TEST=test-clubd-bus
NAMES=cb                # namespaces clubcbv$ID, clubcba$ID; interfaces cbh$ID, cba$ID
REQUIRE=(gdbus)
. "$(dirname "$0")/clubd-netns.sh"

# ---- users, polkit, the bus ---------------------------------------------------------------
users=(club-test-allowed club-test-denied club-test-auth)
getent passwd clubd >/dev/null || users+=(clubd)
pb_add_users "${users[@]}"
club_gid=$(pb_free_id 61990)
echo "club:x:$club_gid:club-test-allowed" >> "$T/group"
cp "$SRC/polkit/50-club-agent.rules.example" "$T/50-club-agent.rules"
pb_polkit_config "$SRC/polkit/club.inference.agent1.policy" -- "$T/50-club-agent.rules" \
        "$HERE/bus/50-clubd-bus-test.rules"
pb_start_bus "$SRC/dbus/club.inference.Agent1.conf"
pb_start_polkitd

clubd_netns_setup 10.83.0
# Keys the test users can read.
mkdir -m 0755 "$T/keys"
for u in root club-test-allowed club-test-denied club-test-auth; do
        key agent >"$T/keys/$u"
        chown "$u" "$T/keys/$u"
        chmod 0600 "$T/keys/$u"
done

if start_clubd "$T/clubd.log"; then
        ok "clubd owns $CLUBD_NAME on the private bus"
else
        bad "clubd did not start"; show "$T/clubd.log"; exit 1
fi

state_is() { [ "$(agent_state)" = "$1" ]; }
seen_after() {  # FILE FIRST THEN: a line with THEN follows the first line with FIRST
        awk -v a="$2" -v b="$3" 'index($0, a) { s = 1; next } s && index($0, b) { f = 1 } END { exit !f }' "$1"
}

# ---- the bus policy ---------------------------------------------------------------------------
request_name() {  # USER: RequestName with DO_NOT_QUEUE (4) while clubd owns the name
        local u=$1
        if [ "$u" = root ]; then
                busctl --address="$ADDR" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                        RequestName su "$CLUBD_NAME" 4 2>&1
        else
                as "$u" busctl --address="$ADDR" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                        RequestName su "$CLUBD_NAME" 4 2>&1
        fi
}
for u in club-test-allowed club-test-denied; do
        expect_in "bus policy: $u may not own $CLUBD_NAME" "$(request_name $u)" "Access denied"
done
# 3 = DBUS_REQUEST_NAME_REPLY_EXISTS: the policy let the request through to the owner check.
expect "bus policy: user clubd may own $CLUBD_NAME (refused only as taken)" "$(request_name clubd)" "u 3"
expect "bus policy: root may own $CLUBD_NAME (refused only as taken)" "$(request_name root)" "u 3"

# ---- introspection equals the XML -------------------------------------------------------------------
normalize() {  # reads introspection XML on stdin, prints the Agent1 interface one member a line
        /usr/bin/python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
out = []
for i in root.iter("interface"):
    if i.get("name") != "club.inference.Agent1":
        continue
    for m in i.findall("method"):
        args = ", ".join("%s %s %s" % (a.get("direction", "in"), a.get("type"), a.get("name", "")) for a in m.findall("arg"))
        ann = sorted("%s=%s" % (x.get("name"), x.get("value")) for x in m.findall("annotation"))
        out.append("method %s(%s)%s" % (m.get("name"), args, (" " + " ".join(ann)) if ann else ""))
    for p in i.findall("property"):
        ann = {x.get("name"): x.get("value") for x in p.findall("annotation")}
        emits = ann.get("org.freedesktop.DBus.Property.EmitsChangedSignal", "true")
        out.append("property %s %s %s emits-change=%s" % (p.get("name"), p.get("type"), p.get("access"), emits))
    for s in i.findall("signal"):
        args = ", ".join("%s %s" % (a.get("type"), a.get("name", "")) for a in s.findall("arg"))
        out.append("signal %s(%s)" % (s.get("name"), args))
print("\n".join(sorted(out)))'
}
normalize <"$SRC/dbus/club.inference.Agent1.xml" >"$T/xml.members"
as club-test-denied busctl --address="$ADDR" --xml-interface introspect "$CLUBD_NAME" "$CLUBD_PATH" >"$T/live.xml" 2>&1
normalize <"$T/live.xml" >"$T/live.members" 2>&1
if [ -s "$T/xml.members" ] && diff -u "$T/xml.members" "$T/live.members" >"$T/introspect.diff"; then
        ok "introspection of the live object equals dbus/club.inference.Agent1.xml ($(wc -l <"$T/xml.members") members)"
else
        bad "introspection differs from the XML (- XML, + live):"; show "$T/introspect.diff"
fi
check "no method is root-only (no org.freedesktop.systemd1.Privileged annotation)" \
        sh -c "! grep -q 'org.freedesktop.systemd1.Privileged' '$T/live.members'"

# ---- reading needs no privilege ---------------------------------------------------------------------
expect "State readable by the denied user (busctl)" \
        "$(as club-test-denied busctl --address="$ADDR" get-property "$CLUBD_NAME" "$CLUBD_PATH" "$CLUBD_NAME" State 2>&1)" \
        's "unregistered"'
ctl club-test-denied status --json
expect_ctl "clubctl status --json as the denied user: unregistered, exit 7" 7 '"state":"unregistered"' '"registered":false' \
        '"provider_id":null' '"models":["club-test-a","club-test-b"]'
ctl club-test-denied status
expect_ctl "clubctl status as the denied user: readable, with the register hint" 7 "State: unregistered" \
        "clubctl register" "Models: club-test-a" "local"

# ---- before registering ------------------------------------------------------------------------------
ctl root drain
expect_ctl "drain before registering: NotRegistered, exit 7" 7 "not registered" "clubctl register"

# ---- Register -------------------------------------------------------------------------------------------
ctl club-test-denied register --key-file "$T/keys/club-test-denied" --gateway "$GWURL" --insecure --name box1
expect_ctl "register as the denied user: exit 4, who may" 4 "Not authorized to register this machine" \
        "club.inference.agent1.register" "sudo" '"club"' "50-club-agent.rules.example"
expect "…and nothing changed" "$(agent_state)" unregistered
ctl club-test-auth register --key-file "$T/keys/club-test-auth" --gateway "$GWURL" --insecure --name box1 --no-ask-password
expect_ctl "register as the auth user with --no-ask-password: exit 4" 4 "Authentication is required to register this machine" \
        "--no-ask-password"
out=$(as club-test-denied busctl --address="$ADDR" call "$CLUBD_NAME" "$CLUBD_PATH" "$CLUBD_NAME" Register ssst \
        "$(key agent)" "$GWURL" box1 2 2>&1)
expect_in "Register with unknown flags by the denied user: InvalidArgs before polkit" "$out" "flags"
check "…the key is not in clubd's log" sh -c "! grep -qF '$(key agent)' '$T/clubd.log'"

ctl club-test-allowed register --key-file "$T/keys/club-test-allowed" --gateway "$GWURL" --insecure --name box1
expect_ctl "register as the allowed user (group club, example rule): exit 0" 0 "Registered as box1" \
        "mesh address 100.96.0.2"
PROVIDER=$(agent_prop ProviderId)
check "the agent comes online" wait_for 20 state_is online

ctl root register --key-file "$T/keys/root" --insecure
expect_ctl "register again as root (saved gateway and name): exit 0, same address" 0 "Registered as box1" \
        "mesh address 100.96.0.2"
expect "…same provider" "$(agent_prop ProviderId)" "$PROVIDER"
check "…online again" wait_for 20 state_is online

ctl club-test-denied status --json
expect_ctl "status --json as the denied user: online, registered, exit 0" 0 '"state":"online"' '"registered":true' \
        '"name":"box1"' '"mesh_address":"100.96.0.2"' "\"gateway_url\":\"$GWURL\"" '"healthy":true'

# ---- Drain and Resume, with PropertiesChanged ------------------------------------------------------------
as club-test-denied gdbus monitor --system --dest "$CLUBD_NAME" --object-path "$CLUBD_PATH" >"$T/monitor.log" 2>&1 &
PIDS+=("$!")
wait_for 5 grep -q "is owned by" "$T/monitor.log" || { bad "gdbus monitor did not start"; show "$T/monitor.log"; }

ctl club-test-denied drain
expect_ctl "drain as the denied user: exit 4" 4 "Not authorized to drain clubd"
expect "…still online" "$(agent_state)" online

# On a terminal clubctl starts pkttyagent, and polkit asks there for an administrator's
# password, with the action's message from our .policy file; a wrong one is a refusal.
pb_install_bin "$HERE/pty-run.py"
out=$(as club-test-auth "$T/bin/pty-run.py" 60 "Password:" "hidden:not-the-password" -- "$CTL" drain 2>&1)
rc=$?
expect_ctl "drain as the auth user on a terminal: pkttyagent asks for the password; a wrong one gives exit 4" 4 \
        "AUTHENTICATING FOR club.inference.agent1.drain" \
        "Authentication is required to stop or resume serving requests from the club network on this machine." \
        "Not authorized to drain clubd"
show <<<"$out"
expect "…still online" "$(agent_state)" online

ctl club-test-allowed drain
expect_ctl "drain as the allowed user: exit 0" 0 "draining"
expect "…State draining" "$(agent_state)" draining
check "…PropertiesChanged State=draining seen by an unprivileged monitor" \
        wait_for 5 grep -q "'State': <'draining'>" "$T/monitor.log"
ctl club-test-allowed drain
expect_ctl "drain again: idempotent, exit 0" 0 "draining"

ctl club-test-denied resume
expect_ctl "resume as the denied user: exit 4" 4 "Not authorized to resume clubd"
expect "…still draining" "$(agent_state)" draining
ctl club-test-allowed resume
expect_ctl "resume as the allowed user: exit 0" 0 "takes requests again"
check "…State back to online" wait_for 10 state_is online
check "…PropertiesChanged State=online after draining" \
        seen_after "$T/monitor.log" "'State': <'draining'>" "'State': <'online'>"

kill -STOP "$POLKIT_PID"
ctl root drain
expect_ctl "drain as root with polkitd frozen: exit 0 (root needs no polkit)" 0 "draining"
ctl root resume
kill -CONT "$POLKIT_PID"
expect_ctl "resume as root with polkitd frozen: exit 0" 0 "takes requests again"

# ---- Reload -----------------------------------------------------------------------------------------------
ctl root reload
expect_ctl "reload as root: exit 0" 0 "reloaded"
ctl club-test-allowed reload
expect_ctl "reload as the allowed user: exit 0" 0 "reloaded"
ctl club-test-denied reload
expect_ctl "reload as the denied user: exit 4" 4 "Not authorized to reload clubd's configuration" \
        "club.inference.agent1.configure"

# ---- Unregister ---------------------------------------------------------------------------------------------
ctl club-test-denied unregister --yes
expect_ctl "unregister as the denied user: exit 4" 4 "Not authorized to unregister this machine"
expect "…the registration is intact: ProviderId" "$(agent_prop ProviderId)" "$PROVIDER"
expect "…MeshAddress" "$(agent_prop MeshAddress)" 's "100.96.0.2"'
check "…state file still there" test -f "$tmp/agent-state/state.json"
ctl club-test-allowed unregister
expect_ctl "unregister without --yes and without a terminal: refused, exit 2" 2 "Pass --yes"
expect "…still registered" "$(agent_prop ProviderId)" "$PROVIDER"

ctl club-test-allowed unregister --yes
expect_ctl "unregister as the allowed user: exit 0" 0 "Unregistered"
expect "…State unregistered" "$(agent_state)" unregistered
expect "…ProviderId 0" "$(agent_prop ProviderId)" "x 0"
check "…no state file" test ! -e "$tmp/agent-state/state.json"
ctl club-test-allowed drain
expect_ctl "drain after unregistering: exit 7" 7 "not registered"
ctl club-test-allowed unregister --yes
expect_ctl "unregister again: exit 7" 7 "not registered"

ctl root register --key-file "$T/keys/root" --gateway "$GWURL" --insecure --name box1
expect_ctl "register as root after unregistering: exit 0" 0 "Registered as box1"
ctl root unregister --yes
expect_ctl "unregister as root: exit 0" 0 "Unregistered"

# ---- clubd stopped ------------------------------------------------------------------------------------------
if stop_clubd; then ok "clubd exits 0 on SIGTERM"; else bad "clubd exit status $?"; fi
check "clubd's log: no errors" sh -c "! grep '^<[0-3]>' '$T/clubd.log'"
check "clubd's log: no key" sh -c "! grep -qF '$(key agent)' '$T/clubd.log'"
ctl club-test-denied status
expect_ctl "status with clubd stopped: exit 3" 3 "clubd is not running. Start it with: sudo systemctl start clubd"
ctl root drain
expect_ctl "drain with clubd stopped: exit 3" 3 "clubd is not running"

# clubd as a user the policy does not let own the name: it serves without the bus, and says so.
cp "$tmp/clubd.conf" "$T/clubd-user.conf"
mkdir -m 0700 "$T/user-state"
sed -i "s|^StateDirectory=.*|StateDirectory=$T/user-state|" "$T/clubd-user.conf"
chown club-test-allowed "$T/user-state" "$T/clubd-user.conf"
pb_install_bin "$CLUBD"
as club-test-allowed "$T/bin/$(basename "$CLUBD")" -c "$T/clubd-user.conf" >"$T/clubd-user.log" 2>&1 &
user_pid=$!
PIDS+=("$user_pid")
if wait_for 10 grep -q "does not let this user own $CLUBD_NAME" "$T/clubd-user.log"; then
        ok "clubd as another user: the bus policy keeps the name from it, and it says so"
else
        bad "clubd as another user:"; show "$T/clubd-user.log"
fi
check "…the name has no owner" sh -c "! busctl --address='$ADDR' status $CLUBD_NAME >/dev/null 2>&1"
kill "$user_pid"
wait "$user_pid"

fail=$((fail + failures))
pb_finish || { show "$T/clubd.log" | tail -40; false; }
