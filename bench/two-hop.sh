#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/two-hop.sh [BUILD_DIR]
#
# The whole path, in one run, as root: client → club-gatewayd → (WireGuard tunnel) → clubd →
# upstream, against client → nginx → (the same tunnel) → nginx → upstream in the same
# namespaces and positions, with the upstream directly and through the bare tunnel as
# references. Prints absolute numbers and club/nginx ratios: added latency (p50/p99), CPU per
# request per hop, SSE per-chunk added latency, memory per open stream (1,000 streams).
# bench/README.md ("Two hops") has the method.
#
# The setup is tests/integration/clubd-netns.sh's (a "vps" and an "agent" network namespace
# joined by a veth, wireguard-go in each, club-gatewayd in vps, clubd in agent on a private
# D-Bus, registered with `clubctl register`), inside private mount and PID namespaces.
#
# A benchmark never fails CI: this script exits 0 and says what went wrong, or 77 (skip)
# when not root or a prerequisite is missing.
#
# Knobs (environment): BENCH_DURATION (s per latency run, default 4), BENCH_RATE (requests a
# second in a latency run, default 500), BENCH_ROUNDS (3), BENCH_STREAMS (1000),
# BENCH_SSE_STREAMS (64), BENCH_SSE_CHUNKS (100), BENCH_SSE_DELAY_MS (20), NGINX (its path).

set -u
export LC_ALL=C

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- outside: the binaries, then into the namespaces ------------------------------------------
if [ "${CLUB_BENCH_TWO_HOP:-}" != 1 ]; then
        BUILD=${1:-${BENCH_BUILD_DIR:-$SRC/build-bench}}
        BINS=("$BUILD/daemons/clubd/clubd" "$BUILD/tools/clubctl/clubctl" "$BUILD/daemons/club-gatewayd/club-gatewayd"
              "$BUILD/tests/gatewayd-admin-helper" "$BUILD/tests/upstream/club-test-upstream" "$BUILD/bench/club-bench")
        missing=0
        for b in "${BINS[@]}"; do [ -x "$b" ] || missing=1; done
        if [ $missing = 1 ]; then
                echo "bench: building in $BUILD"
                if [ ! -f "$BUILD/build.ninja" ]; then
                        meson setup "$BUILD" "$SRC" --buildtype=release >/dev/null ||
                                { echo "bench: meson setup failed; skipped."; exit 0; }
                fi
                ninja -C "$BUILD" >/dev/null || { echo "bench: build failed; skipped."; exit 0; }
        fi
        for b in "${BINS[@]}"; do
                [ -x "$b" ] || { echo "bench: $b is missing (tests disabled?); skipped."; exit 0; }
        done
        # 1,000 streams through two proxies: each holds two sockets per stream.
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        export CLUB_BENCH_TWO_HOP=1 CLUB_BENCH=${BINS[5]}
        export NGINX=${NGINX:-$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)}
        exec "$0" "${BINS[@]:0:5}"
fi

# ---- inside: clubd-netns.sh re-executes this in private mount and PID namespaces --------------
DUR=${BENCH_DURATION:-4}
RATE=${BENCH_RATE:-500}
ROUNDS=${BENCH_ROUNDS:-3}
N_STREAMS=${BENCH_STREAMS:-1000}
SSE_STREAMS=${BENCH_SSE_STREAMS:-64}
SSE_CHUNKS=${BENCH_SSE_CHUNKS:-100}
SSE_DELAY=${BENCH_SSE_DELAY_MS:-20}
BENCH=$CLUB_BENCH
TARGETS=(direct tunnel club nginx)
# Warnings only: a daemon logging every request at debug would measure its logging.
export CLUB_LOG_LEVEL=warning

TEST=club-bench-two-hop
NAMES=bn                # namespaces clubbnv$ID, clubbna$ID; interfaces bnh$ID, bna$ID
REQUIRE=()
. "$SRC/tests/integration/clubd-netns.sh"
. "$SRC/bench/bench-lib.sh"

FAILURES=()
problem() { FAILURES+=("$*"); echo "bench: $*"; }
declare -A R=()         # measurement key → RESULT line
declare -A ADDR_OF=()   # target → ADDR:PORT of the request path
declare -A SSE_OF=()    # target → ADDR:PORT of the SSE path
declare -A NS_OF=()     # target → the namespace the client runs in
declare -A HOP1=() HOP2=()   # target → the pids of its two proxies (0: none)

if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((N_STREAMS * 2 + 512)) ]; then
        N_STREAMS=$(( ($(ulimit -n) - 512) / 2 ))
        echo "bench: open-file limit $(ulimit -n): holding $N_STREAMS streams"
fi

T0=$(date +%s)
echo "club two-hop benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "nginx: ${NGINX:-none}$([ -x "${NGINX:-}" ] && "$NGINX" -v 2>&1 | sed 's/.*\// /')"

# ---- the network: gateway, tunnel, agent ------------------------------------------------------
# Limits for 1,000 open streams, as drop-ins next to the configurations clubd-netns.sh writes.
mkdir -p "$tmp/gatewayd.conf.d" "$tmp/clubd.conf.d"
printf '[Public]\nMaxConnections=4096\n' >"$tmp/gatewayd.conf.d/bench.conf"

pb_start_bus "$SRC/dbus/club.inference.Agent1.conf" >/dev/null
clubd_netns_setup 10.86.0
GW=${GWURL#http://}
GW_ADDR=${GW%:*}

# The upstream and the timestamping origin in the agent namespace, on every address: clubd
# reaches them on 127.0.0.1, the "tunnel" reference on the mesh address.
ip netns exec "$NSA" "$UPSTREAM" --listen 0.0.0.0:0 --models bench-up --name bench >"$tmp/bench-up.out" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
ip netns exec "$NSA" "$BENCH" origin --listen 0.0.0.0:0 >"$tmp/origin.out" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_for 5 sh -c "grep -q '^PORT=' '$tmp/bench-up.out' && grep -q '^PORT=' '$tmp/origin.out'" ||
        { problem "the upstream or the origin did not start"; exit 0; }
UP_PORT=$(sed -n 's/^PORT=//p' "$tmp/bench-up.out")
ORIGIN_PORT=$(sed -n 's/^PORT=//p' "$tmp/origin.out")

cat >"$tmp/clubd.conf.d/bench.conf" <<CONF
[Proxy]
MaxConnections=4096

[Upstream]
Name=bench
URL=http://127.0.0.1:$UP_PORT/v1
Models=bench-up

[Upstream]
Name=bench-sse
URL=http://127.0.0.1:$ORIGIN_PORT/v1
Models=bench-sse
CONF

start_clubd "$tmp/clubd.log" || { problem "clubd did not start: $(tail -3 "$tmp/clubd.log")"; exit 0; }
(umask 077; key agent >"$tmp/agent.key")
ctl root register --key-file "$tmp/agent.key" --gateway "$GWURL" --insecure --name bench
[ "$rc" = 0 ] || { problem "clubctl register: $out"; exit 0; }
is_online() { [ "$(online_count)" = 1 ]; }
wait_for 20 is_online || { problem "clubd did not come online at the gateway"; exit 0; }
MESH=$(agent_prop MeshAddress | sed -n 's/^s "\(.*\)"$/\1/p')
[ -n "$MESH" ] || { problem "no mesh address"; exit 0; }
AUTH="Authorization: Bearer $(key inference)"

ADDR_OF[direct]=127.0.0.1:$UP_PORT     SSE_OF[direct]=127.0.0.1:$ORIGIN_PORT  NS_OF[direct]=$NSA
ADDR_OF[tunnel]=$MESH:$UP_PORT         SSE_OF[tunnel]=$MESH:$ORIGIN_PORT      NS_OF[tunnel]=$NS
ADDR_OF[club]=$GW                      SSE_OF[club]=$GW                       NS_OF[club]=$NS
HOP1[direct]=0 HOP2[direct]=0 HOP1[tunnel]=0 HOP2[tunnel]=0
HOP1[club]=$gwpid HOP2[club]=$CLUBD_PID

# nginx in both places: the first in vps next to the gateway, forwarding through the tunnel
# to the second on the agent's mesh address, which forwards to the upstream and the origin.
start_nginx() {  # NAME NAMESPACE → sets NGINX_WORKER
        local d=$tmp/$1 master
        ip netns exec "$2" "$NGINX" -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' >"$d.out" 2>&1 &
        master=$!
        PIDS+=("$master")
        NGINX_WORKER=$(nginx_worker "$master") || { problem "nginx ($1) did not start: $(tail -2 "$d/error.log" 2>/dev/null)"; return 1; }
}
if [ -x "${NGINX:-}" ]; then
        nginx_config "$NGINX" "$tmp/nginx-agent" "$MESH:18092" "$MESH:18093" "127.0.0.1:$UP_PORT" "127.0.0.1:$ORIGIN_PORT" &&
        nginx_config "$NGINX" "$tmp/nginx-vps" "$GW_ADDR:18090" "$GW_ADDR:18091" "$MESH:18092" "$MESH:18093" &&
        start_nginx nginx-agent "$NSA" && HOP2[nginx]=$NGINX_WORKER &&
        start_nginx nginx-vps "$NS" && HOP1[nginx]=$NGINX_WORKER &&
        ADDR_OF[nginx]=$GW_ADDR:18090 SSE_OF[nginx]=$GW_ADDR:18091 NS_OF[nginx]=$NS
else
        problem "nginx is not installed (apt-get install nginx-light); its column stays empty"
fi

active() { [ -n "${ADDR_OF[$1]:-}" ]; }
cb() {  # TARGET MODE ARGS…: club-bench in the target's client namespace, with the key
        local t=$1 mode=$2
        shift 2
        ip netns exec "${NS_OF[$t]}" timeout -k 5 120 "$BENCH" "$mode" --header "$AUTH" "$@"
}
# The CPU of each hop, the tunnel (both wireguard-go) and the upstream (or the origin).
cpu_pids() { echo "--cpu-pid ${HOP1[$1]} --cpu-pid ${HOP2[$1]} --cpu-pid $wgpid --cpu-pid $awgpid --cpu-pid $2"; }

# measure KEY TARGET MODE ARGS…: one club-bench run; its RESULT line is kept in R[KEY.ROUND]
BENCH_ERR=$tmp/bench.err
measure() {
        local key=$1
        shift
        bench_measure "$key" cb "$@"
}

# Every path answers before anything is measured (the gateway routes once clubd heartbeated).
for t in "${TARGETS[@]}"; do
        active "$t" || continue
        ready=0
        for m in bench-up bench-sse; do
                a=${ADDR_OF[$t]}
                [ $m = bench-sse ] && a=${SSE_OF[$t]}
                for _ in $(seq 1 40); do
                        if cb "$t" latency --target "$a" --model $m --clients 1 --duration 0.1 --warmup 0 >/dev/null 2>&1; then
                                ready=$((ready + 1))
                                break
                        fi
                        sleep 0.25
                done
        done
        [ $ready = 2 ] || { problem "$t does not answer; left out"; unset "ADDR_OF[$t]"; }
done

echo "paths: direct ${ADDR_OF[direct]:-} (agent namespace), tunnel ${ADDR_OF[tunnel]:-}, club ${ADDR_OF[club]:-}, nginx ${ADDR_OF[nginx]:-n/a} (vps namespace)"

# ---- 1. open streams, first, on fresh processes -------------------------------------------------
ROUND=1
for t in club nginx; do
        active "$t" || continue
        cb "$t" latency --target "${ADDR_OF[$t]}" --model bench-up --clients 4 --duration 0.3 --warmup 0 >/dev/null 2>&1
        measure "streams.$t" "$t" streams --target "${ADDR_OF[$t]}" --model bench-up --streams "$N_STREAMS" \
                --chunks 100000 --delay-ms 500 --hold 1.5 --timeout 60 \
                --rss-pid "${HOP1[$t]}" --rss-pid "${HOP2[$t]}" --rss-pid "$UP_PID"
        sleep 2   # let both hops and the upstream tear the streams down
done

# ---- 2. latency and CPU per request, 3. SSE per-chunk delay, in rounds ------------------------------
# Requests are paced (BENCH_RATE a second, one connection) rather than back to back: clubd's
# replay cache remembers 16,384 nonces for 60 s and refuses more (fail-closed), which a closed
# loop through the gateway would reach within seconds.
for ROUND in $(seq 1 "$ROUNDS"); do
        k=$(( (ROUND - 1) % ${#TARGETS[@]} ))
        order=("${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}")
        for t in "${order[@]}"; do
                active "$t" || continue
                # shellcheck disable=SC2046
                measure "lat.$t" "$t" latency --target "${ADDR_OF[$t]}" --model bench-up --clients 1 \
                        --rate "$RATE" --duration "$DUR" --warmup 0.5 $(cpu_pids "$t" "$UP_PID")
        done
        for t in "${order[@]}"; do
                active "$t" || continue
                # shellcheck disable=SC2046
                measure "sse.$t" "$t" sse --target "${SSE_OF[$t]}" --model bench-sse --streams "$SSE_STREAMS" \
                        --chunks "$SSE_CHUNKS" --delay-ms "$SSE_DELAY" --timeout 20 $(cpu_pids "$t" "$ORIGIN_PID")
        done
done

# ---- the table -----------------------------------------------------------------------------------
get() { best "$1" "$2" "$ROUNDS"; }
v() { calc "$1" 'a' "$2"; }
sub() { calc "$1" 'a - b' "$2" "$3"; }
add() { calc "$1" 'a + b' "$2" "$3"; }
row() { printf '%-44s %9s %9s %9s %9s %11s\n' "$@"; }

echo
row "metric" "direct" "tunnel" "club" "nginx" "club/nginx"
row "------" "------" "------" "----" "-----" "----------"
declare -A L=()   # p50.direct … p99.nginx
for p in p50 p99; do
        for t in "${TARGETS[@]}"; do L[$p.$t]=$(get "lat.$t" "${p}_us"); done
        row "$p latency, 1 request at a time (µs)" "$(v %.0f "${L[$p.direct]}")" "$(v %.0f "${L[$p.tunnel]}")" \
                "$(v %.0f "${L[$p.club]}")" "$(v %.0f "${L[$p.nginx]}")" "$(ratio "${L[$p.club]}" "${L[$p.nginx]}")"
done
for p in p50 p99; do
        ac=$(sub %.0f "${L[$p.club]}" "${L[$p.tunnel]}"); an=$(sub %.0f "${L[$p.nginx]}" "${L[$p.tunnel]}")
        row "  added by the two hops, $p (µs)" "" "" "$ac" "$an" "$(ratio "$ac" "$an")"
done
ac=$(sub %.0f "${L[p50.club]}" "${L[p50.direct]}"); an=$(sub %.0f "${L[p50.nginx]}" "${L[p50.direct]}")
row "  added to direct, p50, tunnel included (µs)" "" "$(sub %.0f "${L[p50.tunnel]}" "${L[p50.direct]}")" "$ac" "$an" "$(ratio "$ac" "$an")"

cpu_row() {  # LABEL KEY-PREFIX FIELD-PREFIX SUFFIX
        local label=$1 key=$2 f=$3 s=$4 d t c n
        d=$(get "$key.direct" "$f$s"); t=$(get "$key.tunnel" "$f$s"); c=$(get "$key.club" "$f$s"); n=$(get "$key.nginx" "$f$s")
        row "$label" "$(v %.1f "$d")" "$(v %.1f "$t")" "$(v %.1f "$c")" "$(v %.1f "$n")" "$(ratio "$c" "$n")"
}
sum_row() {  # LABEL KEY SUFFIX: hop 1 + hop 2
        local c n
        c=$(add %.1f "$(get "$2.club" "cpu$3")" "$(get "$2.club" "cpu2$3")")
        n=$(add %.1f "$(get "$2.nginx" "cpu$3")" "$(get "$2.nginx" "cpu2$3")")
        row "$1" "" "" "$c" "$n" "$(ratio "$c" "$n")"
}
cpu_row "CPU µs per request, hop 1 (gateway | nginx)" lat cpu _us_per_req
cpu_row "CPU µs per request, hop 2 (clubd | nginx)" lat cpu2 _us_per_req
sum_row "CPU µs per request, both hops" lat _us_per_req
cpu_row "  tunnel: wireguard-go, vps side" lat cpu3 _us_per_req
cpu_row "  tunnel: wireguard-go, agent side" lat cpu4 _us_per_req
cpu_row "  the upstream" lat cpu5 _us_per_req

for p in p50 p99; do
        d=$(get sse.direct chunk_${p}_us); t=$(get sse.tunnel chunk_${p}_us); c=$(get sse.club chunk_${p}_us); n=$(get sse.nginx chunk_${p}_us)
        row "SSE per-chunk delay $p (µs)" "$(v %.0f "$d")" "$(v %.0f "$t")" "$(v %.0f "$c")" "$(v %.0f "$n")" "$(ratio "$c" "$n")"
        ac=$(sub %.0f "$c" "$t"); an=$(sub %.0f "$n" "$t")
        row "  added by the two hops, $p (µs)" "" "" "$ac" "$an" "$(ratio "$ac" "$an")"
done
d=$(get sse.direct first_p50_us); t=$(get sse.tunnel first_p50_us); c=$(get sse.club first_p50_us); n=$(get sse.nginx first_p50_us)
row "SSE first chunk p50, with the request (µs)" "$(v %.0f "$d")" "$(v %.0f "$t")" "$(v %.0f "$c")" "$(v %.0f "$n")" "$(ratio "$c" "$n")"
cpu_row "SSE CPU µs per chunk, hop 1" sse cpu _us_per_chunk
cpu_row "SSE CPU µs per chunk, hop 2" sse cpu2 _us_per_chunk
sum_row "SSE CPU µs per chunk, both hops" sse _us_per_chunk

c1=$(get streams.club kib_per_stream); c2=$(get streams.club kib2_per_stream)
n1=$(get streams.nginx kib_per_stream); n2=$(get streams.nginx kib2_per_stream)
row "RSS per open stream, hop 1 (KiB)" "" "" "$(v %.1f "$c1")" "$(v %.1f "$n1")" "$(ratio "$c1" "$n1")"
row "RSS per open stream, hop 2 (KiB)" "" "" "$(v %.1f "$c2")" "$(v %.1f "$n2")" "$(ratio "$c2" "$n2")"
c=$(add %.1f "$c1" "$c2"); n=$(add %.1f "$n1" "$n2")
row "RSS per open stream, both hops (KiB)" "" "" "$c" "$n" "$(ratio "$c" "$n")"

echo
echo "hop 1: club-gatewayd | nginx in the vps namespace; hop 2: clubd | nginx on the agent's mesh address."
echo "direct: the upstream from the agent namespace; tunnel: the upstream on the mesh address from the vps"
echo "namespace (no proxy). \"Added by the two hops\" is the figure minus the tunnel's."
echo "Latency: $RATE requests/s, one connection, $DUR s per round (N = $(field "${R[lat.club.1]:-}" requests) in round 1);"
echo "SSE: $SSE_STREAMS streams x $SSE_CHUNKS chunks every $SSE_DELAY ms; $N_STREAMS streams held open for RSS"
echo "(the upstream's own growth: $(v %.1f "$(get streams.club kib3_per_stream)") KiB per stream). Best of $ROUNDS rounds, figure by figure."

if ! bench_report; then
        for f in "$tmp/gatewayd.log" "$tmp/clubd.log"; do
                [ -s "$f" ] && { echo "$(basename "$f") (last lines):"; tail -5 "$f" | sed 's/^/  /'; }
        done
fi
echo "total time: $(( $(date +%s) - T0 )) s"
exit 0
