#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The whole club network on one machine, as root: installs what is needed, builds, then
# brings up, each in its own network namespace,
#
#   vps      club-gatewayd (public API on 10.93.0.1:8080) and its WireGuard hub
#   gpu1     clubd in front of a local test inference server serving llama-3-8b
#   gpu2     clubd in front of another one serving qwen-2.5-7b
#   client   someone with an API key: curl and the openai SDK
#
# joined by veths, with wireguard-go for the tunnels (no kernel module needed). The
# administrator makes a user and two keys with club-gatewayctl, each GPU box joins with
# `clubctl register`, and a chat completion streams from the client through the gateway and
# the tunnel to a GPU box, token by token, with curl and with the real openai SDK.
#
#   sudo tools/dev/demo.sh              CLUB_SKIP_DEPS=1 skips installing packages
#
# Everything is removed on exit or Ctrl-C; running it again starts from scratch.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${CLUB_BUILD_DIR:-$top/build}

if [ "$(id -u)" -ne 0 ]; then
        echo "demo.sh: run as root (sudo $0): it makes network namespaces and WireGuard interfaces" >&2
        exit 1
fi
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m%s\033[0m$ %s\n' "${where:-host}" "$*"; }   # shows a command a person would type
die() { printf '\033[31mdemo.sh: %s\033[0m\n' "$*" >&2; exit 1; }

if [ "${CLUB_SKIP_DEPS:-0}" != 1 ]; then
        say "Installing dependencies (Debian packages; CLUB_SKIP_DEPS=1 skips this)"
        "$top/tools/dev/install-deps.sh"
fi
say "Building into $build"
"$top/tools/dev/build.sh" "$build"
GATEWAYD=$build/daemons/club-gatewayd/club-gatewayd
GATEWAYCTL=$build/tools/club-gatewayctl/club-gatewayctl
CLUBD=$build/daemons/clubd/clubd
CLUBCTL=$build/tools/clubctl/clubctl
UPSTREAM=$build/tests/upstream/club-test-upstream
for p in "$GATEWAYD" "$GATEWAYCTL" "$CLUBD" "$CLUBCTL" "$UPSTREAM"; do
        [ -x "$p" ] || die "$p was not built"
done

# ---- names, and what a previous run may have left ------------------------------------------------
VPS=cdemo-vps GPU1=cdemo-gpu1 GPU2=cdemo-gpu2 CLIENT=cdemo-client
NAMESPACES=("$VPS" "$GPU1" "$GPU2" "$CLIENT")
WGIFS=(cdemo-hub cdemo-gpu1 cdemo-gpu2)
PIDFILE=/run/club-demo.pids     # what this run started, for a run after one killed hard
WORKFILE=/run/club-demo.work    # and its temporary directory
GWURL=http://10.93.0.1:8080

pids=()
work=
cleanup() {
        local p n
        trap - EXIT INT TERM
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        sleep 0.3
        for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null || true; done
        for n in "${WGIFS[@]}"; do rm -f "/run/wireguard/$n.sock"; done
        rm -f "$PIDFILE" "$WORKFILE"
        if [ -n "$work" ]; then rm -rf "$work"; fi
}
# A previous run killed hard: stop what it started (its pids, and anything left in its
# namespaces), then remove the namespaces.
if [ -f "$PIDFILE" ]; then
        while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDFILE"
fi
if [ -f "$WORKFILE" ]; then
        work=$(cat "$WORKFILE")
        case $work in /tmp/club-demo.*) ;; *) work= ;; esac
fi
for n in "${NAMESPACES[@]}"; do
        if ip netns list | grep -qw "$n"; then
                for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
        fi
done
sleep 0.2
cleanup
trap cleanup EXIT
trap 'echo; echo "demo.sh: interrupted, cleaning up"; exit 130' INT TERM

work=$(mktemp -d /tmp/club-demo.XXXXXX)
chmod 0755 "$work"
echo "$work" >"$WORKFILE"
started() { pids+=("$1"); echo "$1" >>"$PIDFILE"; }
wait_for() {  # SECONDS COMMAND…
        local n=$(($1 * 10))
        shift
        while ((n-- > 0)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
        return 1
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---- the network -----------------------------------------------------------------------------------
say "Network namespaces: $VPS (the gateway), $GPU1 and $GPU2 (home GPU boxes), $CLIENT"
ip netns add "$VPS"
ip -n "$VPS" link set lo up
ip -n "$VPS" addr add 10.93.0.1/32 dev lo          # the gateway's public address
k=1
for ns in "$GPU1" "$GPU2" "$CLIENT"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "cdemo-v$k" netns "$VPS" type veth peer name "cdemo-$k" netns "$ns"
        ip -n "$VPS" addr add "10.93.$k.1/24" dev "cdemo-v$k"
        ip -n "$VPS" link set "cdemo-v$k" up
        ip -n "$ns" addr add "10.93.$k.2/24" dev "cdemo-$k"
        ip -n "$ns" link set "cdemo-$k" up
        ip -n "$ns" route add 10.93.0.0/24 via "10.93.$k.1"
        echo "  $ns: 10.93.$k.2, reaches the gateway at 10.93.0.1 over a veth"
        k=$((k + 1))
done

mkdir -p /run/wireguard
start_wg() {  # NS IFNAME
        ip netns exec "$1" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go -f "$2" >>"$work/wireguard-go.log" 2>&1 &
        started $!
        wait_for 5 test -S "/run/wireguard/$2.sock" || die "wireguard-go did not start for $2"
}
start_wg "$VPS" cdemo-hub
start_wg "$GPU1" cdemo-gpu1
start_wg "$GPU2" cdemo-gpu2
echo "  wireguard-go runs the interfaces cdemo-hub ($VPS), cdemo-gpu1, cdemo-gpu2 (configured by the daemons)"

# Each daemon gets a system bus of its own (there is no real one here, and both agents own
# the same name, club.inference.Agent1): a dbus-daemon with a root-only policy.
start_bus() {  # NAME → sets BUS_NAME's address in $bus
        cat >"$work/$1-bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/$1-bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy user="root">
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_type="*"/>
  </policy>
</busconfig>
CONF
        dbus-daemon --config-file="$work/$1-bus.conf" --nofork --nopidfile >>"$work/dbus.log" 2>&1 &
        started $!
        wait_for 5 test -S "$work/$1-bus.sock" || die "dbus-daemon did not start"
        bus=unix:path=$work/$1-bus.sock
}

# ---- the gateway -------------------------------------------------------------------------------------
say "The gateway: club-gatewayd in $VPS, public API $GWURL, WireGuard hub on 10.93.0.1:51820"
start_bus gateway
GWBUS=$bus
mkdir -m 0700 "$work/gateway"
cat >"$work/gatewayd.conf" <<CONF
[Gateway]
StatePath=$work/gateway/store.db
LogLevel=debug

[Public]
Listen=0.0.0.0:8080

[WireGuard]
Interface=cdemo-hub
ListenPort=51820
Endpoint=10.93.0.1:51820
CONF
sed 's/^/  /' "$work/gatewayd.conf"
ip netns exec "$VPS" env DBUS_SYSTEM_BUS_ADDRESS="$GWBUS" "$GATEWAYD" -c "$work/gatewayd.conf" >"$work/gatewayd.log" 2>&1 &
started $!
wait_for 10 in_ns "$CLIENT" curl -sf "$GWURL/healthz" || { cat "$work/gatewayd.log"; die "club-gatewayd did not start"; }
wait_for 10 env DBUS_SYSTEM_BUS_ADDRESS="$GWBUS" "$GATEWAYCTL" status || die "club-gatewayd is not on its bus"
echo "  up: $(in_ns "$CLIENT" curl -s "$GWURL/healthz")"

say "The administrator makes a user, alice, and two keys for her (club-gatewayctl, over D-Bus)"
gwctl() { where=$VPS run "club-gatewayctl $*"; DBUS_SYSTEM_BUS_ADDRESS="$GWBUS" "$GATEWAYCTL" "$@"; }
gwctl users add alice
secret() { /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])'; }
where=$VPS run "club-gatewayctl keys create --user alice --scope agent --name gpu-boxes --json"
AGENT_KEY=$(DBUS_SYSTEM_BUS_ADDRESS="$GWBUS" "$GATEWAYCTL" keys create --user alice --scope agent --name gpu-boxes --json | secret)
where=$VPS run "club-gatewayctl keys create --user alice --scope inference --name laptop --json"
API_KEY=$(DBUS_SYSTEM_BUS_ADDRESS="$GWBUS" "$GATEWAYCTL" keys create --user alice --scope inference --name laptop --json | secret)
[ -n "$AGENT_KEY" ] && [ -n "$API_KEY" ] || die "club-gatewayctl made no keys"
(umask 077; echo "$AGENT_KEY" >"$work/agent.key")
echo "  an agent key (registers GPU boxes): ${AGENT_KEY:0:11}… (saved to $work/agent.key, mode 0600)"
echo "  an inference key (the OpenAI API):  ${API_KEY:0:11}…"
gwctl keys list

# ---- the GPU boxes ---------------------------------------------------------------------------------------
start_box() {  # N NS MODEL
        local n=$1 ns=$2 model=$3 port
        say "GPU box $n ($ns): a local inference server serving $model, and clubd in front of it"
        ip netns exec "$ns" "$UPSTREAM" --port 0 --name "home-gpu-$n" --models "$model" >"$work/upstream-$n.out" 2>&1 &
        started $!
        wait_for 5 grep -q '^PORT=' "$work/upstream-$n.out" || die "club-test-upstream did not start"
        port=$(sed -n 's/^PORT=//p' "$work/upstream-$n.out")
        mkdir -m 0700 "$work/gpu$n-state"
        cat >"$work/clubd-$n.conf" <<CONF
[Agent]
StateDirectory=$work/gpu$n-state

[Mesh]
Interface=cdemo-gpu$n

[Proxy]
Listen=127.0.0.1:8090

[Upstream]
Name=home-gpu-$n
URL=http://127.0.0.1:$port/v1
CONF
        sed 's/^/  /' "$work/clubd-$n.conf"
        start_bus "gpu$n"
        eval "BUS$n=\$bus"
        ip netns exec "$ns" env DBUS_SYSTEM_BUS_ADDRESS="$bus" "$CLUBD" -c "$work/clubd-$n.conf" >"$work/clubd-$n.log" 2>&1 &
        started $!
        wait_for 10 busctl --address="$bus" status club.inference.Agent1 || { cat "$work/clubd-$n.log"; die "clubd did not start"; }
        ctl "$n" status || true
}
ctl() {  # N ARGS…: clubctl on box N
        local n=$1 bus
        shift
        bus=BUS$n
        where=cdemo-gpu$n run "clubctl $*"
        DBUS_SYSTEM_BUS_ADDRESS="${!bus}" "$CLUBCTL" "$@" 2>&1 | sed 's/^/  /'
        return "${PIPESTATUS[0]}"
}
register() {  # N
        say "GPU box $1 joins: clubctl register (plain http:// to the gateway, hence --insecure)"
        ctl "$1" register --key-file "$work/agent.key" --gateway "$GWURL" --insecure --name "gpu-box-$1" ||
                { cat "$work/clubd-$1.log"; die "registering box $1 failed"; }
        local bus=BUS$1
        wait_for 20 sh -c "busctl --address='${!bus}' get-property club.inference.Agent1 /club/inference/Agent1 \
                club.inference.Agent1 State | grep -q online" || { cat "$work/clubd-$1.log"; die "box $1 did not come online"; }
        ctl "$1" status
}
start_box 1 "$GPU1" llama-3-8b
register 1
start_box 2 "$GPU2" qwen-2.5-7b
register 2

say "The gateway sees both providers online, each behind its own WireGuard tunnel"
gwctl providers list
echo
where=$VPS run "wg show cdemo-hub"
in_ns "$VPS" wg show cdemo-hub | sed 's/^/  /'
echo
where=$CLIENT run "curl -s $GWURL/v1/models -H 'Authorization: Bearer ic-…'"
in_ns "$CLIENT" curl -s "$GWURL/v1/models" -H "Authorization: Bearer $API_KEY" | /usr/bin/python3 -m json.tool | sed 's/^/  /'

# ---- a completion from the client --------------------------------------------------------------------------
say "From $CLIENT: a streamed chat completion for llama-3-8b with curl (the test server makes a token every 150 ms)"
where=$CLIENT run "curl -N $GWURL/v1/chat/completions -H 'Authorization: Bearer ic-…' -d '{\"model\":\"llama-3-8b\",\"stream\":true,…}'"
t0=$(date +%s%N)
in_ns "$CLIENT" curl -sN "$GWURL/v1/chat/completions" -H "Authorization: Bearer $API_KEY" \
        -H 'Content-Type: application/json' -H 'X-Test-Chunks: 8' -H 'X-Test-Chunk-Delay-Ms: 150' \
        -d '{"model":"llama-3-8b","stream":true,"messages":[{"role":"user","content":"Say hello"}]}' |
while IFS= read -r line; do
        line=${line%$'\r'}
        case $line in
        'data: [DONE]') printf '%6d ms  [DONE]\n' $(( ($(date +%s%N) - t0) / 1000000 )) ;;
        data:*)
                tok=$(sed -n 's/.*"content":"\([^"]*\)".*/\1/p' <<<"$line")
                fp=$(sed -n 's/.*"system_fingerprint":"\([^"]*\)".*/\1/p' <<<"$line")
                [ -n "$tok" ] && printf '%6d ms  %-8s (from %s)\n' $(( ($(date +%s%N) - t0) / 1000000 )) "\"$tok\"" "$fp"
                ;;
        esac
done

if command -v node >/dev/null && bash "$top/tests/openai/setup.sh" >"$work/sdk-setup.log" 2>&1; then
        say "The same with the real openai SDK (npm), for qwen-2.5-7b — served by the other box"
        where=$CLIENT run "node: new OpenAI({ baseURL: '$GWURL/v1', apiKey: 'ic-…' }).chat.completions.create({ model: 'qwen-2.5-7b', stream: true, … })"
        (cd "$top/tests/openai" && ip netns exec "$CLIENT" env BASE="$GWURL/v1" KEY="$API_KEY" node --input-type=module -e '
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE, apiKey: process.env.KEY, maxRetries: 0 });
const t0 = Date.now();
const stream = await client.chat.completions.create(
        { model: "qwen-2.5-7b", stream: true, messages: [{ role: "user", content: "Say hello" }] },
        { headers: { "X-Test-Chunks": "8", "X-Test-Chunk-Delay-Ms": "150" } });
for await (const chunk of stream) {
        const tok = chunk.choices[0]?.delta?.content;
        if (tok)
                console.log(`${String(Date.now() - t0).padStart(6)} ms  ${JSON.stringify(tok).padEnd(8)} (from ${chunk.system_fingerprint})`);
}
console.log(`${String(Date.now() - t0).padStart(6)} ms  done`);
')
else
        echo "(node/npm or the openai package is not available: skipping the SDK part; see $work/sdk-setup.log)"
fi

say "What the gateway logged about these requests"
grep -E 'Request [0-9a-f]+ from [^:]+: (streamed|plain)' "$work/gatewayd.log" | sed 's/^<[0-9]>/  /' || true
say "Done. Stopping everything and removing the namespaces (also what happens on Ctrl-C)"
