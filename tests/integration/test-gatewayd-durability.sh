#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-durability.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER STORE-DURABILITY-HELPER
#
# Acknowledged registrations survive kill -9 of the gateway, through its HTTP path, as
# root in a network namespace with wireguard-go as the hub (gatewayd-netns.sh). The gateway
# runs with --listen 127.0.0.1:8080 and raised registration rate limits
# (RegisterRatePerSource=, RegisterRatePerKey=); an agent API key comes from the admin
# helper. In each of three rounds:
#  - 16 concurrent python clients register providers with distinct names and fresh
#    WireGuard public keys (`wg genkey | wg pubkey`); every 201/200 answer received is
#    written, as it arrives, as an acknowledgement "reg ID NAME ADDRESS KEY";
#  - the gateway is killed with SIGKILL in the middle of the burst;
#  - store-durability-helper's check reopens the database: every acknowledged
#    registration is there with the same name, mesh address and public key, no address
#    was acknowledged twice, live addresses are unique, PRAGMA integrity_check and
#    foreign_key_check pass; python's sqlite3 checks the address ledger: every
#    acknowledged address is in mesh_addresses, first given to that provider, and every
#    provider's address is in the ledger;
#  - one peer is removed from the hub by hand and a stray one added; the gateway restarts
#    on the same database and the hub's peers are then exactly the store's providers, each
#    with its /32.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when not root or a prerequisite
# is missing, unless CLUB_TEST_STRICT=1. Everything made here is removed on exit.
set -u

GATEWAYD=${1:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER STORE-DURABILITY-HELPER}
HELPER=${2:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER STORE-DURABILITY-HELPER}
DURABILITY=${3:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER STORE-DURABILITY-HELPER}
TEST=test-gatewayd-durability
ID=$$
NS=clubdur$ID
NSA=clubdua$ID                  # made by the harness, unused here
AIF=cda$ID
IF=cdw$ID
. "$(dirname "${BASH_SOURCE[0]}")/gatewayd-netns.sh"

netns_setup 10.83.0
mkdir -m 0700 "$tmp/state"
DB=$tmp/state/store.db
cat >"$tmp/gatewayd.conf" <<CONF
[Gateway]
StatePath=$DB

[Public]
RegisterRatePerSource=100000
RegisterRatePerKey=100000

[Mesh]
Listen=127.0.0.1:0

[WireGuard]
Interface=$IF
Endpoint=10.83.0.1:51820
CONF

"$HELPER" "$DB" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
AGENT=$(sed -n 's/^burst_agent=//p' "$tmp/keys")

start_gateway() {
        ip netns exec "$NS" "$GATEWAYD" -c "$tmp/gatewayd.conf" --listen 127.0.0.1:8080 >>"$tmp/gatewayd.log" 2>&1 &
        gwpid=$!
        wait_for 10 in_ns curl -sf -o /dev/null http://127.0.0.1:8080/healthz
}

# The store's providers as the hub should have them: "KEY<TAB>ADDRESS/32", sorted.
store_peers() {
        "$PY" - "$DB" <<'EOF'
import ipaddress, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for key, addr in sorted(db.execute("SELECT public_key, mesh_address FROM providers")):
    print(f"{key}\t{ipaddress.IPv4Address(addr)}/32")
EOF
}
hub_peers() { in_ns wg show "$IF" allowed-ips | sort; }

# The address ledger, read with python's sqlite3 (not our store code): every acknowledged
# address is in mesh_addresses and was first given to that provider; every provider's
# address is in the ledger.
ledger_ok() {
        "$PY" - "$DB" "$tmp/acks" <<'EOF'
import ipaddress, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
ledger = dict(db.execute("SELECT address, first_provider_id FROM mesh_addresses"))
bad = 0
for line in open(sys.argv[2]):
    if not line.endswith("\n"):
        continue
    _, pid, name, addr, key = line.split()
    a = int(ipaddress.IPv4Address(addr))
    if ledger.get(a) != int(pid):
        print(f"ledger: {addr} of provider {pid} ({name}) is {ledger.get(a)!r} in mesh_addresses", file=sys.stderr)
        bad += 1
for pid, a in db.execute("SELECT id, mesh_address FROM providers"):
    if a not in ledger:
        print(f"ledger: provider {pid}'s address {ipaddress.IPv4Address(a)} is not in mesh_addresses", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
EOF
}

# Public keys made up front with wg, so the burst measures the gateway, not process spawns.
for _ in $(seq $((3 * 16 * 40))); do wg genkey | wg pubkey; done >"$tmp/pubkeys"

# burst ROUND: 16 threads register (40 each at most) until $tmp/stop exists, each with its
# own slice of the keys; acknowledgements are appended with one write(2) each (O_APPEND).
burst() {
        rm -f "$tmp/stop"
        ip netns exec "$NS" "$PY" - "$1" "$AGENT" "$tmp/pubkeys" "$tmp/acks" "$tmp/stop" "$tmp/clients.log" <<'EOF' &
import http.client, json, os, sys, threading
rnd, key, keys, acks, stop, log = sys.argv[1:7]
pubs = open(keys).read().split()
per = 40
fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
logf = open(log, "a")
def client(t):
    for i in range(per):
        if os.path.exists(stop):
            return
        pub = pubs[((int(rnd) - 1) * 16 + t) * per + i]
        name = f"d{rnd}-{t}-{i}"
        try:
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
            c.request("POST", "/api/v1/agents/register",
                      json.dumps({"name": name, "public_key": pub, "agent_port": 8090}),
                      {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            c.close()
        except Exception as e:
            print(f"{name}: {e!r}", file=logf, flush=True)
            continue
        if r.status in (200, 201):
            a = json.loads(body)
            os.write(fd, f"reg {a['provider_id']} {a['name']} {a['mesh_address']} {pub}\n".encode())
        else:
            print(f"{name}: {r.status} {body[:200]!r}", file=logf, flush=True)
threads = [threading.Thread(target=client, args=(t,)) for t in range(16)]
for th in threads:
    th.start()
for th in threads:
    th.join()
EOF
        srvpid=$!
}
acked() { grep -c '^reg ' "$tmp/acks"; }
acked_at_least() { [ "$(acked)" -ge "$1" ]; }

: >"$tmp/acks"
start_gateway || { fail "the gateway did not start"; cat "$tmp/gatewayd.log"; exit 1; }
ok "the gateway started in the namespace with the hub $IF"

for round in 1 2 3; do
        before=$(acked)
        burst "$round"
        # Into the burst: at least 20 more acknowledgements, then a random 0–0.3 s more.
        wait_for 20 acked_at_least $((before + 20)) || fail "round $round: the burst did not get going"
        sleep "0.$((RANDOM % 4))"
        kill -9 "$gwpid"
        wait "$gwpid" 2>/dev/null
        st=$?
        gwpid=
        touch "$tmp/stop"
        wait "$srvpid"
        srvpid=
        check "round $round: SIGKILL during the burst (exit status $st) after $(($(acked) - before)) of 640 registrations were acknowledged" \
                test "$st" = 137 -a "$(acked)" -lt $((before + 640))
        # Every answer was read before the kill or never came: the acknowledgements are final.
        "$DURABILITY" check "$DB" "$tmp/acks" >"$tmp/check.out" 2>&1
        check "round $round: every acknowledged registration is in the store with its name, address and key; no address twice; integrity_check and foreign_key_check pass ($(tail -1 "$tmp/check.out"))" \
                test $? = 0
        check "round $round: the address ledger holds every acknowledged address, first given to its provider" ledger_ok

        # Disturb the hub, then restart on the same database: converged to the store.
        victim=$(hub_peers | head -1 | cut -f1)
        [ -n "$victim" ] && in_ns wg set "$IF" peer "$victim" remove
        in_ns wg set "$IF" peer "$(wg genkey | wg pubkey)" allowed-ips 100.96.250.250/32
        start_gateway || { fail "round $round: the gateway did not restart on the same database"; break; }
        check "round $round: after the restart the hub's peers are exactly the store's ($(store_peers | wc -l) providers)" \
                wait_for 5 test "$(hub_peers)" = "$(store_peers)"
done

check "every round got work done ($(acked) acknowledged registrations)" test "$(acked)" -ge 60
code=$(in_ns curl -s -o "$tmp/resp" -w '%{http_code}' -H "Authorization: Bearer $AGENT" \
        --data-binary "{\"name\":\"after\",\"public_key\":\"$(wg genkey | wg pubkey)\",\"agent_port\":8090}" \
        http://127.0.0.1:8080/api/v1/agents/register)
check "a registration after the last restart: 201 ($code)" test "$code" = 201
kill "$gwpid"
wait "$gwpid"
st=$?
gwpid=
check "SIGTERM: exit 0 ($st)" test "$st" = 0

if [ "$failures" -gt 0 ]; then
        echo "# store check:"; sed 's/^/# /' "$tmp/check.out"
        echo "# clients (last lines):"; tail -20 "$tmp/clients.log" 2>/dev/null | sed 's/^/# /'
        echo "# gateway log:"; tail -40 "$tmp/gatewayd.log" | sed 's/^/# /'
        echo "$failures check(s) failed"
        exit 1
fi
echo "all checks passed"
