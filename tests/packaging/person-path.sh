# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# person-path.sh — the steps a person takes after installing the packages, as checks, for
# the booted package tests (sourced; tests/packaging/test-deb-nspawn.sh is one caller). It
# knows nothing of how the machines run or how packages are installed; the caller defines:
#
#   gw CMD…   run CMD as root on the gateway's machine (stdin passed through)
#   ag CMD…   the same on the agent's machine (also the client's: curl from there crosses
#             the network to the gateway, and the answer comes back through the tunnel)
#   ok MSG / bad MSG   count a check
#   GW_ADDR   the gateway's address as the agent's machine reaches it (HTTPS on port 443,
#             the socket unit's default)
#   PP_TLS    a directory with ca.pem, gw-cert.pem, gw-key.pem (a certificate for GW_ADDR)
#   PP_UPSTREAM  the club-test-upstream binary, installed on the agent's machine as the
#             "local LLM server"
#
# Functions, in the order a person goes: pp_gateway_setup, pp_agent_setup, pp_register,
# pp_stream, then pp_snapshot/pp_state_kept around an upgrade. They set PP_AGENT_KEY,
# PP_INFERENCE_KEY, PP_PROVIDER_ID, PP_MESH_ADDRESS.

PP_MODEL=pk-model
PP_NAME=gpu-box

# pp_wait SECONDS CMD… — poll CMD every 0.5 s until it succeeds; the limit is generous, it
# only stops a test that would otherwise hang.
pp_wait() {
        local n=$(($1 * 2)); shift
        while [ "$n" -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; n=$((n - 1)); done
        return 1
}

# pp_json KEY — read a top-level key of the JSON object on stdin
pp_json() { /usr/bin/python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1" 2>/dev/null; }

pp_active() { [ "$($1 systemctl is-active "$2" 2>/dev/null)" = active ]; }
pp_check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# --- the gateway: configure, socket activation, a user and keys ----------------------------
pp_gateway_setup() {
        # The certificate and the one key registration needs (docs: club-gatewayd.conf(5)).
        gw install -d -m 0755 /etc/club/tls
        gw sh -c 'cat > /etc/club/tls/fullchain.pem' < "$PP_TLS/gw-cert.pem"
        gw sh -c 'umask 077; cat > /etc/club/tls/privkey.pem' < "$PP_TLS/gw-key.pem"
        gw chown club-gateway: /etc/club/tls/privkey.pem
        gw sh -c "cat > /etc/club/gatewayd.conf.d/50-site.conf" <<EOF
[Public]
TLSCertificate=/etc/club/tls/fullchain.pem
TLSKey=/etc/club/tls/privkey.pem

[WireGuard]
Endpoint=$GW_ADDR:51820
EOF
        pp_check "gateway: club-gatewayd --check-config accepts the configuration" \
                gw /usr/libexec/club-gatewayd --check-config

        gw systemctl enable --now club-gatewayd.socket >/dev/null 2>&1
        pp_check "gateway: club-gatewayd.socket listening" pp_active gw club-gatewayd.socket
        pp_check "gateway: the service is not running before the first connection" \
                test "$(gw systemctl is-active club-gatewayd.service)" = inactive
        local r
        r=$(ag curl -sS --max-time 20 --cacert /etc/club/ca.pem "https://$GW_ADDR/healthz" 2>&1)
        [[ "$r" == *'"status":"ok"'* ]] && ok "gateway: https://$GW_ADDR/healthz answers through the socket unit: $r" \
                || bad "gateway: /healthz through the socket: '$r'"
        pp_check "gateway: the first connection started club-gatewayd.service (socket activation)" \
                pp_active gw club-gatewayd.service
        # Enabled, the service also comes up at boot and the bus can start it.
        gw systemctl enable club-gatewayd.service >/dev/null 2>&1
        pp_check "gateway: systemctl enable club-gatewayd" \
                test "$(gw systemctl is-enabled club-gatewayd.service)" = enabled

        local out
        out=$(gw club-gatewayctl users add alice 2>&1)
        [[ "$out" == *"Created user alice"* ]] && ok "club-gatewayctl users add alice" || bad "users add: $out"
        out=$(gw club-gatewayctl keys create --user alice --scope agent --name "$PP_NAME" 2>&1)
        PP_AGENT_KEY=$(grep -oE '\bic-[A-Za-z0-9]{20,}' <<<"$out" | head -1)
        [ -n "$PP_AGENT_KEY" ] && [[ "$out" == *"only time the key is shown"* ]] \
                && ok "club-gatewayctl keys create --scope agent prints the secret once" || bad "keys create (agent): $out"
        out=$(gw club-gatewayctl keys create --user alice --scope inference --name laptop 2>&1)
        PP_INFERENCE_KEY=$(grep -oE '\bic-[A-Za-z0-9]{20,}' <<<"$out" | head -1)
        [ -n "$PP_INFERENCE_KEY" ] && ok "club-gatewayctl keys create --scope inference" || bad "keys create (inference): $out"
        out=$(gw club-gatewayctl keys list 2>&1)
        [[ "$out" != *"$PP_AGENT_KEY"* && "$out" == *"2 API keys"* ]] \
                && ok "keys list shows the prefixes only" || bad "keys list: $out"
}

# --- the agent: a local server, the configuration, clubd enabled ----------------------------
pp_agent_setup() {
        ag sh -c 'cat > /usr/local/bin/club-test-upstream; chmod 755 /usr/local/bin/club-test-upstream' < "$PP_UPSTREAM"
        ag systemd-run --quiet --unit=club-test-upstream --property=DynamicUser=yes \
                /usr/local/bin/club-test-upstream --listen 127.0.0.1:8000 --models "$PP_MODEL" --name pk-upstream
        pp_check "agent: the local LLM server (club-test-upstream) answers on 127.0.0.1:8000" \
                pp_wait 20 ag curl -sf http://127.0.0.1:8000/health
        ag sh -c "cat > /etc/club/clubd.conf.d/50-local.conf" <<EOF
[Agent]
Gateway=https://$GW_ADDR
CAFile=/etc/club/ca.pem

[Upstream]
Name=local
URL=http://127.0.0.1:8000/v1
EOF
        pp_check "agent: clubd --check-config accepts the configuration" ag /usr/libexec/clubd --check-config
        ag systemctl enable --now clubd >/dev/null 2>&1
        pp_check "agent: systemctl enable --now clubd" pp_active ag clubd.service
        local j
        j=$(ag journalctl -u clubd --no-pager -o cat 2>&1)
        [[ "$j" != *"no seccomp support"* && "$j" != *"Failed to load the syscall filter"* && "$j" == *"listening on"* ]] \
                && ok "agent: clubd loaded its syscall filter under the shipped unit" || bad "clubd's sandbox: $(grep -i 'seccomp\|syscall filter' <<<"$j")"
        local s
        s=$(ag clubctl status 2>&1)
        [[ "$s" == *unregistered* ]] && ok "agent: clubctl status says unregistered" || bad "clubctl status: $s"
}

# --- register with the key, piped: it never appears on a command line ------------------------
pp_register() {
        local out rc
        out=$(printf '%s\n' "$PP_AGENT_KEY" | ag clubctl register --key=- --name "$PP_NAME" 2>&1); rc=$?
        [ $rc -eq 0 ] && [[ "$out" == "Registered as $PP_NAME (provider "* ]] \
                && ok "clubctl register --key=- (piped): $(head -1 <<<"$out")" || bad "clubctl register ($rc): $out"
        [[ "$out" != *"$PP_AGENT_KEY"* ]] && ok "clubctl does not print the key" || bad "clubctl printed the key"
        out=$(ag journalctl -u clubd --no-pager -o cat 2>&1)
        grep -q "Registered with https://$GW_ADDR as $PP_NAME: provider [0-9]*, mesh address 100\.96\." <<<"$out" \
                && ok "journalctl -u clubd shows the registration: $(grep -o "Registered with .*" <<<"$out" | tail -1)" \
                || { bad "journalctl -u clubd has no registration"; tail -20 <<<"$out" | sed 's/^/# /'; }
        grep -qF "$PP_AGENT_KEY" <<<"$out" && bad "the key is in clubd's journal" || ok "the key is not in clubd's journal"
        pp_check "agent: online (clubctl status --json), through the tunnel's heartbeats" \
                pp_wait 90 pp_online
        local j
        j=$(ag clubctl status --json)
        PP_PROVIDER_ID=$(pp_json provider_id <<<"$j") PP_MESH_ADDRESS=$(pp_json mesh_address <<<"$j")
        out=$(gw club-gatewayctl providers list --online 2>&1)
        [[ "$out" == *"$PP_NAME"*"$PP_MESH_ADDRESS"* ]] && ok "gateway: providers list --online shows $PP_NAME at $PP_MESH_ADDRESS" \
                || bad "providers list --online: $out"
        out=$(ag wg show club0 2>&1)
        [[ "$out" == *"latest handshake"* ]] && ok "agent: the WireGuard tunnel (club0) has a handshake" \
                || bad "wg show club0: $out"
}
pp_online() { [ "$(ag clubctl status --json | pp_json state)" = online ]; }

# --- a streamed completion: client -> gateway (HTTPS) -> tunnel -> clubd -> upstream ----------
pp_models_listed() {
        ag curl -sf --cacert /etc/club/ca.pem -H "Authorization: Bearer $PP_INFERENCE_KEY" \
                "https://$GW_ADDR/v1/models" | grep -q "\"$PP_MODEL\""
}
pp_stream() {  # pp_stream LABEL
        local label=$1 out before after
        pp_check "$label: the gateway lists $PP_MODEL for the inference key" pp_wait 90 pp_models_listed
        before=$(ag curl -sf http://127.0.0.1:8000/_test/stats | pp_json streams_completed)
        out=$(ag curl -sSN --max-time 60 --cacert /etc/club/ca.pem "https://$GW_ADDR/v1/chat/completions" \
                -H "Authorization: Bearer $PP_INFERENCE_KEY" -H 'Content-Type: application/json' \
                -d "{\"model\":\"$PP_MODEL\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}" 2>&1)
        after=$(ag curl -sf http://127.0.0.1:8000/_test/stats | pp_json streams_completed)
        local chunks
        chunks=$(grep -c '^data: {' <<<"$out")
        if [ "$chunks" -ge 3 ] && [ "$(grep '^data:' <<<"$out" | tail -1)" = "data: [DONE]" ] \
                && grep -q '"id":"chatcmpl-pk-upstream-' <<<"$out"; then
                ok "$label: a streamed completion through the gateway and the tunnel: $chunks chunks from pk-upstream, then [DONE]"
        else
                bad "$label: streamed completion: $(head -c 600 <<<"$out")"
        fi
        [ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt "$before" ] \
                && ok "$label: the agent's upstream streamed it (streams completed $before -> $after)" \
                || bad "$label: the upstream completed no new stream ($before -> $after)"
}

# --- around an upgrade --------------------------------------------------------------------------
# pp_unit_stamp RUN UNIT -> "MainPID ActiveEnterTimestampMonotonic"
pp_unit_stamp() { "$1" systemctl show -p MainPID -p ActiveEnterTimestampMonotonic --value "$2" | paste -sd' '; }
pp_snapshot() {
        PP_SNAP_CLUBD=$(pp_unit_stamp ag clubd.service)
        PP_SNAP_GATEWAYD=$(pp_unit_stamp gw club-gatewayd.service)
        PP_SNAP_SOCKET=$(pp_unit_stamp gw club-gatewayd.socket)
        PP_SNAP_WG_AG=$(pp_unit_stamp ag club-wireguard-go@club0.service)
        PP_SNAP_WG_GW=$(pp_unit_stamp gw club-wireguard-go@club0.service)
        PP_SNAP_HUBKEY=$(gw sha256sum /var/lib/club-gatewayd/wireguard.key)
}
pp_running() { [[ "$1" =~ ^[1-9][0-9]*\ [1-9][0-9]*$ ]]; }   # "MainPID Timestamp" of a running unit
pp_restarted() {  # pp_restarted RUN UNIT OLD-STAMP
        local new; new=$(pp_unit_stamp "$1" "$2")
        pp_active "$1" "$2" && pp_running "$3" && pp_running "$new" && [ "$new" != "$3" ]
}
pp_unchanged() {  # pp_unchanged RUN UNIT OLD-STAMP (a socket has no MainPID, only the timestamp)
        local new; new=$(pp_unit_stamp "$1" "$2")
        pp_active "$1" "$2" && [[ "$3" =~ (^|\ )[1-9][0-9]*$ ]] && [ "$new" = "$3" ]
}
pp_state_kept() {
        pp_check "upgrade restarted clubd (MainPID/ActiveEnterTimestamp changed; active)" \
                pp_restarted ag clubd.service "$PP_SNAP_CLUBD"
        pp_check "upgrade restarted club-gatewayd" pp_restarted gw club-gatewayd.service "$PP_SNAP_GATEWAYD"
        pp_check "upgrade left club-gatewayd.socket alone (systemd kept accepting)" \
                pp_unchanged gw club-gatewayd.socket "$PP_SNAP_SOCKET"
        pp_check "upgrade left wireguard-go running on the agent's machine (the interface stayed up)" \
                pp_unchanged ag club-wireguard-go@club0.service "$PP_SNAP_WG_AG"
        pp_check "upgrade left wireguard-go running on the gateway's machine" \
                pp_unchanged gw club-wireguard-go@club0.service "$PP_SNAP_WG_GW"
        pp_check "upgrade: clubd online again" pp_wait 90 pp_online
        local j
        j=$(ag clubctl status --json)
        [ -n "$PP_PROVIDER_ID" ] && [ -n "$PP_MESH_ADDRESS" ] \
                && [ "$(pp_json provider_id <<<"$j")" = "$PP_PROVIDER_ID" ] && [ "$(pp_json mesh_address <<<"$j")" = "$PP_MESH_ADDRESS" ] \
                && ok "upgrade kept the registration: provider $PP_PROVIDER_ID, mesh address $PP_MESH_ADDRESS" \
                || bad "upgrade: registration changed: $j"
        pp_check "upgrade kept the hub's WireGuard key" \
                test -n "$PP_SNAP_HUBKEY" -a "$(gw sha256sum /var/lib/club-gatewayd/wireguard.key)" = "$PP_SNAP_HUBKEY"
        local out
        out=$(gw club-gatewayctl --no-legend keys list 2>&1)
        [ "$(grep -c active <<<"$out")" -eq 2 ] && ok "upgrade kept the gateway's store (both keys active)" || bad "keys after upgrade: $out"
}
