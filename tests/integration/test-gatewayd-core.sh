#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-gatewayd-core.sh CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER
#
# The gateway daemon's core, no root needed:
#  (a) under systemd-socket-activate (--fdname=public) it answers GET /healthz, the only
#      listener on the port is the fd systemd passed in (fd 3), and READY=1, STATUS= and
#      WATCHDOG=1 arrive on NOTIFY_SOCKET (an AF_UNIX datagram socket bound by python3);
#      unknown URLs get an OpenAI-shaped 404 "unknown_url"; SIGTERM exits 0;
#  (b) with --listen and HTTPS (a throwaway CA and two server certificates made with the
#      openssl CLI): curl --cacert succeeds, curl without the CA fails verification; the
#      files are replaced with the second certificate, SIGHUP, and a new connection sees the
#      new certificate's serial while requests, made back to back all along, never failed;
#      a keep-alive connection opened before the reload still works after it; a reload with
#      a broken key keeps the running certificate; SIGTERM exits 0;
#  (c) a bad config line is reported as FILE:LINE and the daemon exits non-zero; so does an
#      unreadable certificate, with a message naming it;
#  (d) the graceful stop, with [WireGuard] Enabled=no and an agent API key made by the
#      admin helper: a python client starts a registration and sends half of its body;
#      SIGTERM (ShutdownGrace=10s) arrives with it in flight; a new connection is refused at
#      once (curl exit 7); the client sends the rest and gets 201 with a mesh address; the
#      daemon exits 0;
#  (e) ShutdownGrace=1s: a body that never completes is cut once the second is over (logged),
#      the client gets no answer, and the daemon exits 0 within a few seconds;
#  (f) ShutdownGrace=2h is refused as FILE:LINE.
# Prints "ok - …" / "FAIL - …"; exits 0, 1, or 77 (skip) when a prerequisite is missing,
# unless CLUB_TEST_STRICT=1.
set -u

GATEWAYD=${1:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER}
HELPER=${2:?usage: $0 CLUB-GATEWAYD GATEWAYD-ADMIN-HELPER}
PY=/usr/bin/python3

skip() {
        echo "SKIP: $*"
        [ "${CLUB_TEST_STRICT:-0}" = 1 ] && exit 1
        exit 77
}
for t in curl openssl systemd-socket-activate ss "$PY"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-gatewayd-core.XXXXXX")
pids=()
cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
        wait 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }
check() {  # DESCRIPTION COMMAND...
        local what=$1
        shift
        if "$@"; then ok "$what"; else fail "$what"; fi
}

free_port() {
        "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # SECONDS COMMAND...: poll every 0.1 s
        local n=$(($1 * 10))
        shift
        while ((n-- > 0)); do
                "$@" && return 0
                sleep 0.1
        done
        return 1
}

# Waits for a daemon to exit; sets exit_status (124 after SECONDS). Not in a subshell: only
# this shell can wait for its children.
wait_exit() {  # PID SECONDS
        local n=$(($2 * 10))
        exit_status=124
        while ((n-- > 0)); do
                if ! kill -0 "$1" 2>/dev/null; then
                        wait "$1"
                        exit_status=$?
                        return
                fi
                sleep 0.1
        done
}

# ---- (a) socket activation and sd_notify --------------------------------------------------
port=$(free_port)
cat >"$tmp/a.conf" <<EOF
[Gateway]
StatePath=$tmp/a.db
[Mesh]
Listen=127.0.0.1:0
EOF
# Collects notify datagrams into a file until READY=1 and WATCHDOG=1 were both seen.
"$PY" - "$tmp/notify.sock" "$tmp/notify.log" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.5)
seen = []
deadline = time.monotonic() + 20
with open(sys.argv[2], "w") as out:
    while time.monotonic() < deadline:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            continue
        out.write(msg + "\n---\n")
        out.flush()
        seen += msg.split("\n")
        if "READY=1" in seen and "WATCHDOG=1" in seen:
            break
EOF
notify_pid=$!
pids+=("$notify_pid")
wait_for 5 test -S "$tmp/notify.sock" || fail "the notify listener did not start"

systemd-socket-activate --listen="127.0.0.1:$port" --fdname=public \
        -E NOTIFY_SOCKET="$tmp/notify.sock" -E WATCHDOG_USEC=1000000 -E CLUB_LOG_LEVEL=debug \
        "$GATEWAYD" -c "$tmp/a.conf" 2>"$tmp/a.log" &
a_pid=$!
pids+=("$a_pid")
# systemd-socket-activate starts the daemon on the first connection; curl waits in the backlog.
wait_for 5 ss -Hltn "sport = :$port" | grep -q LISTEN
body=$(curl -sS --max-time 10 "http://127.0.0.1:$port/healthz" 2>&1)
check "socket-activated: GET /healthz answers status ok, version and providers_online 0" \
        "$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(not (d["status"] == "ok" and d["version"] and d["providers_online"] == 0))' "$body"
echo "  $body"
listeners=$(ss -Hltnp "sport = :$port")
check "socket-activated: the only listener on the port is the passed-in fd 3 of the daemon" \
        bash -c '[ "$(printf "%s\n" "$1" | grep -c LISTEN)" = 1 ] && printf "%s" "$1" | grep -q "pid=$2,fd=3)"' _ "$listeners" "$a_pid"
check "socket-activated: the daemon says it is socket-activated" grep -q "socket-activated" "$tmp/a.log"
wait "$notify_pid" 2>/dev/null
check "socket-activated: READY=1 arrives on NOTIFY_SOCKET" grep -qx "READY=1" "$tmp/notify.log"
check "socket-activated: STATUS= is a readable line naming the listener" \
        grep -q "^STATUS=Serving HTTP on 127.0.0.1:$port, mesh control on 127.0.0.1:[0-9]*; 0 provider(s) online.$" "$tmp/notify.log"
check "socket-activated: the watchdog is kept (WATCHDOG=1)" grep -qx "WATCHDOG=1" "$tmp/notify.log"
out=$(curl -sS --max-time 5 -w '%{http_code}' "http://127.0.0.1:$port/v1/nothing")
check "an unknown URL gets 404 with code unknown_url" \
        bash -c '[[ "$1" == *"\"code\":\"unknown_url\""* && "$1" == *404 ]]' _ "$out"
kill -TERM "$a_pid"
wait_exit "$a_pid" 15
check "socket-activated: SIGTERM exits 0 (exit status $exit_status)" test "$exit_status" = 0

# ---- (b) HTTPS and certificate reload --------------------------------------------------------
ssl() { openssl "$@" 2>>"$tmp/openssl.log" >/dev/null; }
ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=club test CA" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" || fail "openssl: making the CA failed"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tmp/san.ext"
for n in 1 2; do
        ssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
                -keyout "$tmp/s$n.key" -out "$tmp/s$n.csr" &&
        ssl x509 -req -in "$tmp/s$n.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -set_serial "0x${n}00${n}" \
                -days 1 -extfile "$tmp/san.ext" -out "$tmp/s$n.crt" || fail "openssl: making certificate $n failed"
done
cp "$tmp/s1.crt" "$tmp/server.crt"
cp "$tmp/s1.key" "$tmp/server.key"
chmod 600 "$tmp/server.key"

port=$(free_port)
cat >"$tmp/b.conf" <<EOF
[Gateway]
StatePath=$tmp/b.db
[Public]
TLSCertificate=$tmp/server.crt
TLSKey=$tmp/server.key
[Mesh]
Listen=127.0.0.1:0
EOF
"$GATEWAYD" -c "$tmp/b.conf" --listen "127.0.0.1:$port" --log-level=debug 2>"$tmp/b.log" &
b_pid=$!
pids+=("$b_pid")
url="https://127.0.0.1:$port/healthz"
wait_for 10 curl -sf --max-time 2 --cacert "$tmp/ca.crt" -o /dev/null "$url"
check "HTTPS: curl --cacert gets /healthz" curl -sf --max-time 5 --cacert "$tmp/ca.crt" -o /dev/null "$url"
curl -s --max-time 5 -o /dev/null "$url"
rc=$?
check "HTTPS: curl without the CA fails verification (exit $rc)" test "$rc" = 60

serial() {
        openssl s_client -connect "127.0.0.1:$port" -servername localhost </dev/null 2>/dev/null |
                openssl x509 -noout -serial 2>/dev/null
}
check "HTTPS: the first certificate is served (serial 1001)" test "$(serial)" = "serial=1001"

# Requests back to back during the reload; any failure is counted.
"$PY" - "$port" "$tmp/ca.crt" "$tmp/stop" "$tmp/loop.out" <<'EOF' &
import http.client, os, ssl, sys, time
port, ca, stop, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ok = bad = 0
# A keep-alive connection opened before the reload, used again after it.
keep = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
keep.request("GET", "/healthz"); keep.getresponse().read()
while not os.path.exists(stop):
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        c.request("GET", "/healthz")
        r = c.getresponse(); r.read(); c.close()
        ok, bad = (ok + 1, bad) if r.status == 200 else (ok, bad + 1)
    except Exception as e:
        bad += 1
        print("error:", e, file=sys.stderr)
    time.sleep(0.02)
try:
    keep.request("GET", "/healthz")
    kept = keep.getresponse().status == 200
except Exception as e:
    print("keep-alive error:", e, file=sys.stderr)
    kept = False
with open(out, "w") as f:
    f.write(f"{ok} {bad} {int(kept)}\n")
EOF
loop_pid=$!
pids+=("$loop_pid")
sleep 0.5
cp "$tmp/s2.crt" "$tmp/server.crt.new" && mv "$tmp/server.crt.new" "$tmp/server.crt"
cp "$tmp/s2.key" "$tmp/server.key.new" && mv "$tmp/server.key.new" "$tmp/server.key"
kill -HUP "$b_pid"
wait_for 10 bash -c '[ "$(openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)" = serial=2002 ]' _ "$port"
check "HTTPS: after SIGHUP a new connection sees the new certificate (serial 2002)" test "$(serial)" = "serial=2002"
sleep 0.5
touch "$tmp/stop"
wait "$loop_pid"
read -r n_ok n_bad kept <"$tmp/loop.out" 2>/dev/null || { n_ok=0; n_bad=1; kept=0; }
check "HTTPS: no request failed across the reload ($n_ok ok, $n_bad failed)" test "$n_bad" = 0 -a "$n_ok" -gt 0
check "HTTPS: a keep-alive connection from before the reload still works after it" test "$kept" = 1
check "HTTPS: the daemon is still the same process" kill -0 "$b_pid"
check "HTTPS: the old MHD daemon is stopped once its last connection closed" \
        wait_for 5 grep -q "retired by a TLS change has no connection left" "$tmp/b.log"

# A broken key on reload: refused, the running certificate stays.
echo "not a key" >"$tmp/server.key"
kill -HUP "$b_pid"
wait_for 5 grep -q "Keeping the running certificate" "$tmp/b.log"
check "HTTPS: a reload with a broken key keeps the running certificate" \
        bash -c 'grep -q "Keeping the running certificate" "$1" && [ "$(openssl s_client -connect "127.0.0.1:$2" -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial)" = serial=2002 ]' _ "$tmp/b.log" "$port"
kill -TERM "$b_pid"
wait_exit "$b_pid" 15
check "HTTPS: SIGTERM exits 0 (exit status $exit_status)" test "$exit_status" = 0

# ---- (c) configuration errors ----------------------------------------------------------------
printf '[Gateway]\nStatePath=%s\n[Public]\nMaxConnections=lots\n' "$tmp/c.db" >"$tmp/bad.conf"
"$GATEWAYD" -c "$tmp/bad.conf" --listen "127.0.0.1:$(free_port)" 2>"$tmp/c.log" </dev/null
rc=$?
check "a bad config line: exit status non-zero ($rc)" test "$rc" != 0
check "a bad config line: the message names file and line" grep -q "$tmp/bad.conf:4" "$tmp/c.log"
sed 's/^/  /' "$tmp/c.log"

printf '[Gateway]\nStatePath=%s\n[Public]\nTLSCertificate=%s\nTLSKey=%s\n' \
        "$tmp/c.db" "$tmp/missing.crt" "$tmp/s1.key" >"$tmp/nocert.conf"
"$GATEWAYD" -c "$tmp/nocert.conf" --listen "127.0.0.1:$(free_port)" 2>"$tmp/c2.log" </dev/null
rc=$?
check "an unreadable certificate: exit status non-zero ($rc), the message names the file" \
        bash -c '[ "$1" != 0 ] && grep -q "missing.crt" "$2"' _ "$rc" "$tmp/c2.log"
sed 's/^/  /' "$tmp/c2.log"

mkdir -m 0700 "$tmp/state"
"$HELPER" "$tmp/state/store.db" >"$tmp/keys" || { fail "the admin helper failed"; exit 1; }
AGENT=$(sed -n 's/^agent=//p' "$tmp/keys")

write_config() {  # GRACE
        cat >"$tmp/d.conf" <<EOF
[Gateway]
StatePath=$tmp/state/store.db
ShutdownGrace=$1
[Mesh]
Listen=127.0.0.1:0
[WireGuard]
Enabled=no
Endpoint=127.0.0.1:51820
EOF
}
start_gateway() {  # LOG
        port=$(free_port)
        "$GATEWAYD" -c "$tmp/d.conf" --listen "127.0.0.1:$port" --log-level=debug 2>"$1" &
        gw_pid=$!
        pids+=("$gw_pid")
        wait_for 10 curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$port/healthz"
}

# slow_client PORT KEY NAME GO-FILE OUT-FILE: a registration whose body comes in two halves;
# the second half only once GO-FILE exists ("never": not at all). Writes "started" to
# OUT-FILE.started after the first half, then the status line and body (or the error) to
# OUT-FILE.
slow_client() {
        "$PY" - "$@" <<'EOF' &
import base64, json, os, socket, sys, time
port, key, name, go, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
pub = base64.b64encode(os.urandom(32)).decode()     # the hub is off: any 32 bytes will do
body = json.dumps({"name": name, "public_key": pub, "agent_port": 8090}).encode()
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(b"POST /api/v1/agents/register HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + key.encode() +
          b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
          b"\r\nConnection: close\r\n\r\n" + body[:len(body) // 2])
open(out + ".started", "w").close()
while not os.path.exists(go):
    time.sleep(0.05)
answer = b""
try:
    s.sendall(body[len(body) // 2:])
    while True:
        b = s.recv(65536)
        if not b:
            break
        answer += b
except OSError as e:
    answer += ("error: %s" % e).encode()
with open(out, "wb") as f:
    f.write(answer if answer else b"closed without an answer")
EOF
        client_pid=$!
        pids+=("$client_pid")
}

# ---- (d) graceful stop: an in-flight registration finishes; new connections are refused --
write_config 10s
start_gateway "$tmp/d.log" || { fail "the gateway did not start"; cat "$tmp/d.log"; exit 1; }
slow_client "$port" "$AGENT" slow1 "$tmp/d.go" "$tmp/d.out"
wait_for 10 test -e "$tmp/d.out.started" || fail "the slow client did not start"
sleep 0.2
kill -TERM "$gw_pid"
check "(d) SIGTERM: the gateway says it waits for 1 request in flight" \
        wait_for 5 grep -q "Stopping: no new connections; waiting up to 10 s for 1 request(s) in flight" "$tmp/d.log"
curl -s --max-time 3 -o /dev/null "http://127.0.0.1:$port/healthz"
rc=$?
check "(d) while stopping, a new connection is refused (curl exit $rc)" test "$rc" = 7
check "(d) the gateway is still running for the request in flight" kill -0 "$gw_pid"
touch "$tmp/d.go"
wait "$client_pid"
check "(d) the in-flight registration completes: 201" grep -q "^HTTP/1.1 201" "$tmp/d.out"
check "(d) …with its mesh address" grep -q '"mesh_address":"100.96.0.2"' "$tmp/d.out"
wait_exit "$gw_pid" 10
check "(d) then the gateway exits 0 (exit status $exit_status)" test "$exit_status" = 0
check "(d) …without cutting anything" sh -c "! grep -q 'still in flight' '$tmp/d.log'"

# ---- (e) a request that outlasts ShutdownGrace= is cut ------------------------------------
write_config 1s
start_gateway "$tmp/e.log" || { fail "the gateway did not start with ShutdownGrace=1s"; cat "$tmp/e.log"; exit 1; }
slow_client "$port" "$AGENT" slow2 "$tmp/never" "$tmp/e.out"
wait_for 10 test -e "$tmp/e.out.started" || fail "the slow client did not start"
sleep 0.2
start=$(date +%s%N)
kill -TERM "$gw_pid"
wait_exit "$gw_pid" 10
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
check "(e) the gateway exits 0 (exit status $exit_status)" test "$exit_status" = 0
check "(e) …after the 1 s grace, not before and not much after (${elapsed_ms} ms)" \
        test "$elapsed_ms" -ge 900 -a "$elapsed_ms" -lt 4000
check "(e) …and logs the request it cut" grep -q "Stopping with 1 request(s) still in flight" "$tmp/e.log"
touch "$tmp/never"
wait "$client_pid"
check "(e) the cut client gets no answer: $(head -c 80 "$tmp/e.out")" sh -c "! grep -q '^HTTP/1.1 20' '$tmp/e.out'"

# ---- (f) a bad ShutdownGrace= ----------------------------------------------------------------
write_config 2h
"$GATEWAYD" -c "$tmp/d.conf" --check-config >/dev/null 2>"$tmp/f.log"
rc=$?
check "(f) ShutdownGrace=2h: refused (exit $rc), naming FILE:LINE" \
        bash -c '[ "$1" != 0 ] && grep -q "$2:3" "$3"' _ "$rc" "$tmp/d.conf" "$tmp/f.log"
sed 's/^/  /' "$tmp/f.log"

if ((failures > 0)); then
        echo "$failures check(s) failed; logs:"
        for f in "$tmp"/a.log "$tmp"/b.log "$tmp"/d.log "$tmp"/e.log; do echo "== $f"; cat "$f"; done
        exit 1
fi
echo "all checks passed"
exit 0
