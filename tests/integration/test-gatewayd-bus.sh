#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-bus.sh — club-gatewayd's administration over D-Bus (club.inference.Gateway1)
# and club-gatewayctl, on a private system bus with the real dbus-daemon and polkitd.
#
# Through private-bus.sh, in private mount, PID and network namespaces: the installed bus
# policy (dbus/club.inference.Gateway1.conf), the installed polkit actions
# (polkit/club.inference.gateway1.policy) and a test rules file (bus/50-club-gateway-test.rules)
# that allows everything to club-test-admin, only reading to club-test-reader, nothing to
# club-test-denied, and asks club-test-auth for a password. club-gatewayd runs as root with
# [WireGuard] Enabled=no (the hub in tunnels is test-gatewayd-revoke.sh's part); agents
# register over HTTP with curl. Checks:
#  - the live object's introspection (busctl introspect --xml-interface) equals
#    dbus/club.inference.Gateway1.xml: methods, arguments, properties, signals;
#  - root and the admin user: users add/list/show/set-tags (--json parses); an API key's
#    secret printed once with the warning, then only its prefix in `keys list` (tables and
#    --json), never in the gateway's log; enrollment keys likewise; a key made by the CLI
#    registers a provider over HTTP; providers list/show (--json), drain/undrain,
#    disable/enable, share (restricted, everyone, private), set-tags, remove; a revoked key
#    is refused by the registration endpoint; users remove takes its keys and providers;
#  - usage and limits: keys set-limits (by prefix; N, unlimited, default) makes a key's
#    requests 429 (x-should-retry: false for 0) and back; usage (--json, --by, --user,
#    --since, the table) shows the requests' totals, also GET /api/v1/usage with the key; the
#    reader may read usage but not set limits; bad values exit 2/3, InvalidArgs on the bus;
#  - errors: NoSuchUser/NoSuchKey/NoSuchProvider/NameTaken by name (busctl) and as CLI
#    messages with exit 3/2; InvalidArgs for bad names, scopes, expiry, filter keys, flags;
#  - polkit: the reader may read but not change (exit 4); the denied user gets AccessDenied
#    and "Not permitted" (exit 4); the auth user with --no-ask-password gets a clear
#    "authentication" message; everyone may read the properties (club-gatewayctl status);
#  - the bus policy: a gateway started as a user other than club-gateway/root cannot own the
#    name, says so in its log, and still serves HTTP;
#  - the gateway stopped: "club-gatewayd is not running", exit 5;
#  - the bus going away under a running gateway, and no bus at start: a warning, and the
#    HTTP API goes on.
#
# Usage: test-gatewayd-bus.sh CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR POLKIT-DIR
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root, or a prerequisite is missing
# and CLUB_TEST_STRICT is not 1).
set -uo pipefail

GATEWAYD=${1:-}
CTL=${2:-}
DBUS_DIR=${3:-}
POLKIT_DIR=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
NAME=club.inference.Gateway1
OBJ=/club/inference/Gateway1
PB_UNSHARE_EXTRA=(--net)
. "$HERE/private-bus.sh"

if [ ! -x "$GATEWAYD" ] || [ ! -x "$CTL" ] || [ ! -d "$DBUS_DIR" ] || [ ! -d "$POLKIT_DIR" ]; then
        echo "usage: $0 CLUB-GATEWAYD CLUB-GATEWAYCTL DBUS-DIR POLKIT-DIR" >&2
        exit 1
fi
pb_require curl ip dbus-send "$PY"
pb_enter_namespace "$0" "$@"
pb_setup club-gatewayd-bus
ip link set lo up

# club-gateway is the daemon's user, which the bus policy names.
pb_add_users club-gateway club-test-admin club-test-reader club-test-denied club-test-auth
pb_polkit_config "$POLKIT_DIR/club.inference.gateway1.policy" -- "$HERE/bus/50-club-gateway-test.rules"
pb_install_bin "$GATEWAYD" "$CTL"
GATEWAYD=$T/bin/$(basename "$GATEWAYD")
CTL=$T/bin/$(basename "$CTL")
pb_start_bus "$DBUS_DIR/club.inference.Gateway1.conf"
pb_start_polkitd

PUBLIC=http://127.0.0.1:8080
mkdir -m 0700 "$T/state"
cat >"$T/gatewayd.conf" <<CONF
[Gateway]
StatePath=$T/state/store.db
LogLevel=debug
ProbeInterval=1h

[Mesh]
Listen=127.0.0.1:8443

[WireGuard]
Enabled=no
Endpoint=192.0.2.1:51820
CONF
GW_PID=
start_gateway() {
        "$GATEWAYD" -c "$T/gatewayd.conf" --listen 127.0.0.1:8080 >>"$T/gatewayd.log" 2>&1 &
        GW_PID=$!
        PIDS+=("$GW_PID")
        wait_for 10 busctl --address="$ADDR" status "$NAME"
}
if start_gateway; then
        ok "club-gatewayd (root) owns $NAME"
else
        bad "club-gatewayd did not take its bus name"; show "$T/gatewayd.log"; exit 1
fi

# ---- the contract: the live object against dbus/club.inference.Gateway1.xml ---------------
busctl --address="$ADDR" introspect --xml-interface "$NAME" "$OBJ" >"$T/live.xml" 2>&1
normalise() {  # XML-FILE: the interface's members, one per line, sorted
        "$PY" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
out = []
for iface in root.findall("interface"):
    if iface.get("name") != "club.inference.Gateway1":
        continue
    for m in iface.findall("method"):
        args = ",".join("%s:%s:%s" % (a.get("direction", "in"), a.get("type"), a.get("name")) for a in m.findall("arg"))
        out.append("method %s(%s)" % (m.get("name"), args))
    for s in iface.findall("signal"):
        args = ",".join("%s:%s" % (a.get("type"), a.get("name")) for a in s.findall("arg"))
        out.append("signal %s(%s)" % (s.get("name"), args))
    for p in iface.findall("property"):
        ann = ",".join("%s=%s" % (a.get("name"), a.get("value")) for a in p.findall("annotation"))
        out.append("property %s %s %s %s" % (p.get("name"), p.get("type"), p.get("access"), ann))
print("\n".join(sorted(out)))
PY
}
normalise "$T/live.xml" >"$T/live.txt" 2>&1
normalise "$DBUS_DIR/club.inference.Gateway1.xml" >"$T/doc.txt" 2>&1
if [ -s "$T/doc.txt" ] && diff -u "$T/doc.txt" "$T/live.txt" >"$T/xml.diff"; then
        ok "the live object matches dbus/club.inference.Gateway1.xml ($(grep -c '^method' "$T/live.txt") methods, $(grep -c '^property' "$T/live.txt") properties, $(grep -c '^signal' "$T/live.txt") signals)"
else
        bad "introspection differs from dbus/club.inference.Gateway1.xml"; show "$T/xml.diff"
fi

# ---- helpers ---------------------------------------------------------------------------------
# ctl [as USER] ARGS…: run club-gatewayctl, stdout+stderr in $out, exit status in $rc.
ctl() {
        if [ "$1" = as ]; then
                local u=$2; shift 2
                out=$(as "$u" "$CTL" --no-ask-password "$@" 2>&1); rc=$?
        else
                out=$("$CTL" --no-ask-password "$@" 2>&1); rc=$?
        fi
}
# A generous timeout: the checks are about answers, not speed; polkitd on a loaded machine
# once took over 10 s to refuse an interactive check.
BUSCTL=(busctl --address="$ADDR" --timeout=60)
bcall() { "${BUSCTL[@]}" call "$NAME" "$OBJ" "$NAME" "$@" 2>&1; }
# dsend METHOD ARGS…: dbus-send, which prints the error's name ("Error NAME: message").
dsend() { dbus-send --system --print-reply --reply-timeout=10000 --dest="$NAME" "$OBJ" "$NAME.$1" "${@:2}" 2>&1; }
jq_py() {  # EXPRESSION: evaluate on the JSON in $out ("v" is the parsed value)
        "$PY" -c 'import json, sys; v = json.loads(sys.argv[2]); print(eval(sys.argv[1]))' "$1" "$out" 2>&1
}
expect_rc() { if [ "$rc" = "$2" ]; then ok "$1"; else bad "$1: exit $rc, want $2: $out"; fi; }

# ---- users --------------------------------------------------------------------------------------
ctl users add alice --admin --tag gpu --tag eu
expect_in "root: users add alice --admin" "$out" "Created user alice (id 1), an administrator."
ctl as club-test-admin users add bob --tag eu
expect_rc "admin user (polkit yes): users add bob" 0
ctl users list
if [[ "$out" == *alice*yes*eu,gpu* && "$out" == *bob*no*eu* && "$out" == *"2 users."* ]]; then
        ok "users list: a table with both users, admin flag and tags"
else
        bad "users list: $out"
fi
ctl --json users show alice
expect "users show --json parses: name, admin, tags" "$(jq_py '(v["name"], v["admin"], v["tags"])')" "('alice', True, ['eu', 'gpu'])"
ctl users set-tags bob eu research
ctl --json users show bob
expect "users set-tags replaces the tags" "$(jq_py 'v["tags"]')" "['eu', 'research']"
ctl users add alice
expect_rc "users add of a taken name: exit 2" 2
expect_in "…with a clear message" "$out" "A user named 'alice' exists already."
expect_in "CreateUser of a taken name: NameTaken" "$(dsend CreateUser string:alice boolean:false array:string:x uint64:0)" "club.inference.Gateway1.Error.NameTaken"
ctl users add 'bad name!'
expect_rc "users add 'bad name!': exit 2" 2
expect_in "…InvalidArgs says what a name may be" "$out" "a user name is 1–128 of"
ctl users show nobody
expect_rc "users show nobody: exit 3" 3
expect_in "…No user 'nobody'" "$out" "No user 'nobody'."
expect_in "GetUser nobody: NoSuchUser" "$(dsend GetUser string:nobody uint64:0)" "club.inference.Gateway1.Error.NoSuchUser"
expect_in "nonzero flags: InvalidArgs" "$(dsend ListUsers uint64:1)" "org.freedesktop.DBus.Error.InvalidArgs"

# ---- API keys: the secret once, then the prefix ------------------------------------------------------
ctl as club-test-admin keys create --user bob --scope inference,agent --name laptop --expires 30d
expect_rc "keys create (admin user)" 0
SECRET=$(grep -o 'ic-[0-9A-Za-z]\{43\}' <<<"$out" | head -n1)
PREFIX=${SECRET:0:11}
check "keys create prints the secret (ic- and 43 characters)" test -n "$SECRET"
expect_in "…and says it is shown only this time" "$out" "This is the only time the key is shown"
ctl keys list
if [[ "$out" == *"$PREFIX…"* && "$out" != *"$SECRET"* && "$out" == *laptop*inference,agent*active* ]]; then
        ok "keys list shows the prefix ($PREFIX…), never the secret"
else
        bad "keys list: $out"
fi
ctl --json keys list --user bob
expect "keys list --json parses: prefix, scopes, state, no secret" \
        "$(jq_py '(len(v), v[0]["prefix"], v[0]["scopes"], v[0]["state"], "secret" in v[0])')" \
        "(1, '$PREFIX', ['inference', 'agent'], 'active', False)"
check "…and the secret is nowhere in it" test "${out/$SECRET/}" = "$out"
ctl --json keys create --user alice --scope inference
ASECRET=$(jq_py 'v["secret"]')
expect "keys create --json: the secret once, under \"secret\"" "${#ASECRET}" 46
ctl keys create --user bob --scope bogus
expect_rc "keys create --scope bogus: exit 2" 2
expect_in "…the scopes are named" "$out" "Unknown scope 'bogus'; the scopes are 'inference' and 'agent'."
ctl keys create --user nobody
expect_rc "keys create for a missing user: exit 3" 3
expect_in "CreateApiKey with an expiry in the past: InvalidArgs" \
        "$(bcall CreateApiKey ssastt bob x 1 inference 1000 0)" "The expiry is in the past"
ctl keys revoke 999
expect_rc "keys revoke 999: exit 3" 3
expect_in "RevokeApiKey 999: NoSuchKey" "$(dsend RevokeApiKey uint64:999 uint64:0)" "club.inference.Gateway1.Error.NoSuchKey"

# ---- enrollment keys ---------------------------------------------------------------------------------
ctl enroll create --user bob --reusable --tag fleet --expires 7d
ESECRET=$(grep -o 'ie-[0-9A-Za-z]\{43\}' <<<"$out" | head -n1)
check "enroll create prints the ie- secret once" test -n "$ESECRET"
expect_in "…with the warning" "$out" "This is the only time the key is shown"
ctl enroll list
if [[ "$out" == *"${ESECRET:0:11}…"* && "$out" != *"$ESECRET"* && "$out" == *reusable*fleet* ]]; then
        ok "enroll list shows the prefix and kind, never the secret"
else
        bad "enroll list: $out"
fi
expect_in "RevokeEnrollmentKey 999: NoSuchKey" "$(dsend RevokeEnrollmentKey uint64:999 uint64:0)" "club.inference.Gateway1.Error.NoSuchKey"

# ---- a provider registered over HTTP with the CLI's key ----------------------------------------------
pubkey() { "$PY" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'; }
register() {  # KEY NAME: sets $code, body in $T/resp
        code=$(curl -s -o "$T/resp" -w '%{http_code}' -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
                --data-binary "{\"name\":\"$2\",\"public_key\":\"$(pubkey)\",\"agent_port\":8090,\"version\":\"test/1\"}" \
                "$PUBLIC/api/v1/agents/register")
}
register "$SECRET" gpu1
expect "the CLI's API key registers provider gpu1 over HTTP (201 created)" "$code" 201
PID1=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["provider_id"])' "$T/resp" 2>/dev/null)
register "$ESECRET" fleet1
expect "the CLI's enrollment key registers provider fleet1 (201)" "$code" 201
PID2=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["provider_id"])' "$T/resp" 2>/dev/null)

ctl providers list
if [[ "$out" == *gpu1*100.96.0.*registered*no*never* && "$out" == *fleet1* && "$out" == *"2 providers."* ]]; then
        ok "providers list: both providers with address, state, online, last heartbeat"
else
        bad "providers list: $out"
fi
ctl --json providers show "$PID1"
expect "providers show --json: owner, name, state, online, sharing" \
        "$(jq_py '(v["owner"], v["name"], v["state"], v["online"], v["sharing"], v["version"])')" \
        "('bob', 'gpu1', 'registered', False, 'private', 'test/1')"
ctl --json providers show "$PID2"
expect "…the enrolled provider carries the key's tags" "$(jq_py 'v["tags"]')" "['fleet']"
ctl providers show "$PID1"
expect_in "providers show: human-readable" "$out" "Mesh address: 100.96.0."
ctl --json providers list --user alice
expect "providers list --user alice: none" "$(jq_py 'len(v)')" 0
ctl providers show 999
expect_rc "providers show 999: exit 3" 3
expect_in "…No provider with id 999" "$out" "No provider with id 999."
expect_in "DeleteProvider 999: NoSuchProvider" "$(dsend DeleteProvider uint64:999 uint64:0)" "club.inference.Gateway1.Error.NoSuchProvider"
expect_in "ListProviders with an unknown filter: InvalidArgs" \
        "$(bcall ListProviders 'a{sv}t' 1 colour s red 0)" "Unknown filter 'colour'"
expect_in "ListProviders with a mistyped filter: InvalidArgs" \
        "$(bcall ListProviders 'a{sv}t' 1 online s yes 0)" "The filter 'online' must be a boolean"

ctl providers drain "$PID1"
ctl --json providers show "$PID1"
expect "providers drain: admin_draining" "$(jq_py '(v["admin_draining"], v["draining"])')" "(True, True)"
ctl providers undrain "$PID1"
ctl --json providers show "$PID1"
expect "providers undrain" "$(jq_py 'v["draining"]')" False
ctl providers disable "$PID1"
ctl --json providers show "$PID1"
expect "providers disable: state disabled" "$(jq_py 'v["state"]')" disabled
ctl providers enable "$PID1"
ctl --json providers show "$PID1"
expect "providers enable: state registered" "$(jq_py 'v["state"]')" registered
ctl providers share "$PID1" --users alice --tags gpu
ctl --json providers show "$PID1"
expect "providers share --users alice --tags gpu: restricted" \
        "$(jq_py '(v["sharing"], v["share_users"], v["share_tags"])')" "('restricted', ['alice'], ['gpu'])"
ctl providers share "$PID1" --everyone
ctl --json providers show "$PID1"
expect "providers share --everyone" "$(jq_py 'v["sharing"]')" everyone
ctl providers share "$PID1" --private
ctl --json providers show "$PID1"
expect "providers share --private" "$(jq_py '(v["sharing"], v["share_users"])')" "('private', [])"
ctl providers share "$PID1" --users nobody
expect_rc "providers share with a missing user: exit 3" 3
ctl providers share "$PID1" --everyone --users alice
expect_rc "providers share --everyone --users: exit 2" 2
ctl providers set-tags "$PID1" a100 eu
ctl --json providers show "$PID1"
expect "providers set-tags" "$(jq_py 'v["tags"]')" "['a100', 'eu']"
ctl providers set-tags "$PID1" 'no spaces'
expect_rc "providers set-tags with a bad tag: exit 2" 2

# ---- usage and per-key limits (no provider needed: admission comes before routing) ------------------------
APREFIX=${ASECRET:0:11}
chat_as() {  # KEY: a chat request for a model nobody serves; sets $code, headers in $T/hdr
        code=$(curl -s -o "$T/resp" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $1" \
                --data-binary '{"model":"m-none","messages":[{"role":"user","content":"hi"}]}' "$PUBLIC/v1/chat/completions")
}
ctl keys set-limits "$APREFIX" --rpm 0 --tpm unlimited
expect_rc "keys set-limits PREFIX --rpm 0 --tpm unlimited" 0
expect_in "…says what the key's limits are now" "$out" "0 requests/min, unlimited tokens/min, default concurrent streams."
chat_as "$ASECRET"
expect "a key limited to 0 requests/min: 429" "$code" 429
expect_in "…with x-should-retry: false" "$(tr -d '\r' <"$T/hdr")" "x-should-retry: false"
ctl --json keys set-limits "$APREFIX" --rpm default
expect "keys set-limits --rpm default --json: -2 (default), the rest kept" \
        "$(jq_py '(v["requests_per_minute"], v["tokens_per_minute"], v["concurrent_streams"])')" "(-2, -1, -2)"
chat_as "$ASECRET"
expect "…back to the default (unlimited): admitted, 404 model_not_found" "$code" 404
ctl keys list --user alice
expect_in "keys list shows the limits the key has of its own" "$out" "tpm unlimited"
ctl --json keys list --user alice
expect "…and --json all three (-2: the default)" \
        "$(jq_py '[(k["requests_per_minute"], k["tokens_per_minute"], k["concurrent_streams"]) for k in v if k["prefix"] == "'"$APREFIX"'"]')" \
        "[(-2, -1, -2)]"
ctl --json usage --by model
expect "usage --json --by model: m-none, 2 requests, neither ok (refused, model_not_found)" \
        "$(jq_py '[(x["name"], x["requests"], x["ok"], x["other"]) for x in v]')" "[('m-none', 2, 0, 2)]"
ctl usage --user alice --since 1h
if [ "$rc" = 0 ] && [[ "$out" == *KEY*REQUESTS*"$APREFIX"*2* ]]; then ok "usage --user alice --since 1h: a table by key"; else bad "usage table: $out"; fi
ctl usage --user bob --by provider
expect_in "usage for a user without requests: an empty list" "$out" "0 groups."
ctl as club-test-reader usage --key "$APREFIX"
expect_rc "the reader may read usage" 0
ctl as club-test-reader keys set-limits "$APREFIX" --rpm 5
expect_rc "…but not set limits (exit 4)" 4
ctl keys set-limits 999 --rpm 5
expect_rc "keys set-limits 999: exit 3" 3
ctl keys set-limits "$APREFIX" --rpm lots
expect_rc "keys set-limits --rpm lots: exit 2" 2
ctl usage --by colour
expect_rc "usage --by colour: exit 2" 2
expect_in "GetUsage with an unknown filter: InvalidArgs" "$(bcall GetUsage a{sv}t 1 colour s red 0)" "Unknown filter 'colour'"
expect_in "GetUsage group_by bogus: InvalidArgs" "$(bcall GetUsage a{sv}t 1 group_by s bogus 0)" "group_by is one of"
expect_in "SetApiKeyLimits -5: InvalidArgs" \
        "$("${BUSCTL[@]}" call -- "$NAME" "$OBJ" "$NAME" SetApiKeyLimits 'ta{sv}t' 1 1 requests_per_minute x -5 0 2>&1)" \
        "must be -1 (unlimited)"
code=$(curl -s -o "$T/resp" -w '%{http_code}' -H "Authorization: Bearer $ASECRET" "$PUBLIC/api/v1/usage?group_by=model")
expect "GET /api/v1/usage with the key: its owner's totals" \
        "$code $("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))["data"]; print([(x["model"], x["requests"]) for x in d])' "$T/resp" 2>&1)" \
        "200 [('m-none', 2)]"

# ---- polkit: reader, denied, auth; properties for everyone ---------------------------------------------
ctl as club-test-reader users list
expect_rc "reader (polkit read only): users list" 0
ctl as club-test-reader providers drain "$PID1"
expect_rc "reader: providers drain is not permitted (exit 4)" 4
expect_in "…a clear message naming the action" "$out" "club.inference.gateway1.manage-providers"
ctl as club-test-denied users list
expect_rc "denied user: users list exit 4" 4
expect_in "…Not permitted" "$out" "Not permitted"
expect_in "denied user via busctl: AccessDenied" \
        "$(as club-test-denied "${BUSCTL[@]}" call "$NAME" "$OBJ" "$NAME" ListUsers t 0 2>&1)" "Access denied"
ctl as club-test-denied keys create --user bob
expect_rc "denied user: keys create exit 4" 4
ctl as club-test-auth users list
expect_rc "auth_admin user with --no-ask-password: exit 4" 4
expect_in "…says authentication is needed" "$out" "Not permitted without authentication"
ctl as club-test-denied status
expect_in "properties need no privilege (status as the denied user)" "$out" "Mesh address: 100.96.0.1 (prefix 100.96.0.0/16)"

# ---- revocation and removal --------------------------------------------------------------------------------
KEYID=$(ctl --json keys list --user bob; jq_py 'v[0]["id"]')
ctl keys revoke "$KEYID"
expect_rc "keys revoke $KEYID" 0
ctl --json keys list --user bob
expect "…listed as revoked" "$(jq_py 'v[0]["state"]')" revoked
register "$SECRET" gpu9
expect "the revoked key is refused by the registration endpoint" "$code" 401
ctl providers remove "$PID1"
expect_rc "providers remove" 0
ctl providers show "$PID1"
expect_rc "…then it is gone (exit 3)" 3
ctl users remove bob
expect_rc "users remove bob" 0
ctl --json providers list
expect "…its providers went with it" "$(jq_py 'len(v)')" 0
ctl --json keys list
expect "…and its keys" "$(jq_py '[k["user"] for k in v]')" "['alice']"

if grep -q -e "$SECRET" -e "$ESECRET" -e "$ASECRET" "$T/gatewayd.log" "$T/dbus.log"; then
        bad "a key's secret appears in a log"
else
        ok "no key's secret in the gateway's or the bus's log"
fi

# ---- the bus policy: only club-gateway and root own the name ----------------------------------------------------
mkdir -m 0700 "$T/state2"
chown "${UID_OF[club-test-denied]}" "$T/state2"
sed -e "s|$T/state/|$T/state2/|" -e 's|127.0.0.1:8443|127.0.0.1:8444|' "$T/gatewayd.conf" >"$T/gatewayd2.conf"
chmod 644 "$T/gatewayd2.conf"
as club-test-denied "$GATEWAYD" -c "$T/gatewayd2.conf" --listen 127.0.0.1:8081 >"$T/gatewayd2.log" 2>&1 &
GW2=$!
PIDS+=("$GW2")
if wait_for 10 grep -q "Cannot own $NAME" "$T/gatewayd2.log"; then
        ok "a gateway run by another user cannot own $NAME, and says why"
        expect_in "…naming the bus policy" "$(cat "$T/gatewayd2.log")" "the bus policy does not allow this user"
else
        bad "the second gateway: no 'Cannot own' warning"; show "$T/gatewayd2.log"
fi
check "…and still serves HTTP without D-Bus" wait_for 5 curl -sf -o /dev/null http://127.0.0.1:8081/healthz
expect "…while root's gateway keeps the name" "$(busctl --address="$ADDR" status "$NAME" 2>/dev/null | sed -n 's/^PID=//p')" "$GW_PID"
kill "$GW2"; wait "$GW2" 2>/dev/null

# ---- the gateway stopped --------------------------------------------------------------------------------------
kill "$GW_PID"
wait "$GW_PID"
expect "club-gatewayd stops cleanly on SIGTERM" "$?" 0
ctl users list
expect_rc "gateway not running: exit 5" 5
expect_in "…says so and how to start it" "$out" "club-gatewayd is not running (systemctl start club-gatewayd)."
# ---- the bus goes away under a running gateway: HTTP goes on ------------------------------------------
if start_gateway; then
        kill "$PB_BUS_PID"
        wait "$PB_BUS_PID" 2>/dev/null
        check "the bus gone: the gateway warns that administration is unavailable" \
                wait_for 5 grep -q 'Lost the connection to the system bus' "$T/gatewayd.log"
        check "…and still serves HTTP" curl -sf -o /dev/null "$PUBLIC/healthz"
        check "…and is still running a second later" sh -c "sleep 1; kill -0 $GW_PID"
        kill "$GW_PID"
        wait "$GW_PID"
        expect "…and stops cleanly on SIGTERM" "$?" 0
else
        bad "the gateway did not start again"
fi
# No bus at all at start: a warning, and HTTP.
: >"$T/gatewayd3.log"
"$GATEWAYD" -c "$T/gatewayd.conf" --listen 127.0.0.1:8080 >"$T/gatewayd3.log" 2>&1 &
GW3=$!
PIDS+=("$GW3")
check "no bus at start: the gateway serves HTTP" wait_for 10 curl -sf -o /dev/null "$PUBLIC/healthz"
expect_in "…and warns that it goes on without administration" "$(cat "$T/gatewayd3.log")" \
        "going on without administration over D-Bus"
kill "$GW3"; wait "$GW3" 2>/dev/null

if grep '^<[0-3]>' "$T/gatewayd.log" >/dev/null; then
        bad "errors in the gateway's log"; grep '^<[0-3]>' "$T/gatewayd.log" | show /dev/stdin
else
        ok "no errors in the gateway's log"
fi

[ "$fail" -gt 0 ] && { echo "# --- gateway log"; show "$T/gatewayd.log"; }
pb_finish
