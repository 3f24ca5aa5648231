# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by bench/run.sh and bench/two-hop.sh: what both benchmarks do the same way.
#
#   nginx_config NGINX DIR LISTEN SSE-LISTEN UPSTREAM ORIGIN
#           writes DIR/nginx.conf from bench/nginx.conf.in: a streaming reverse proxy listening
#           on LISTEN (forwarding to UPSTREAM) and SSE-LISTEN (forwarding to ORIGIN), all
#           ADDR:PORT, with its temporary paths under DIR
#   nginx_worker MASTER-PID
#           prints the pid of nginx's (only) worker, once it has one; 1 if none comes
#   bench_measure KEY COMMAND…
#           runs COMMAND (a club-bench measurement) and keeps its RESULT line in R[KEY.$ROUND]
#           (an associative array the caller declares); what went wrong goes to the caller's
#           `problem` function, with the last lines of COMMAND's standard error (kept in
#           $BENCH_ERR)
#   bench_report
#           prints the RESULT lines in R, sorted, and the problems in FAILURES (an array the
#           caller declares); returns 1 if there were any
#   field LINE NAME
#           the value of NAME= in a club-bench RESULT line
#   best KEY FIELD ROUNDS
#           the best value of FIELD in R[KEY.1] … R[KEY.ROUNDS] (an associative array the
#           caller declares): the highest req/s (rps), the lowest of anything else
#           (latency, CPU, memory), since whatever else runs on a shared machine can only make
#           a run worse; empty when no round has it
#   calc FMT EXPR A [B]
#           EXPR (awk, over a and b) formatted with FMT, or "n/a" when an input is missing
#   ratio A B
#           A / B to two decimals, or "n/a"

BENCH_SRC=${BENCH_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

nginx_config() {
        local nginx=$1 d=$2 listen=$3 sse_listen=$4 upstream=$5 origin=$6 extra="" m
        mkdir -p "$d" || return 1
        # Modules compiled in need their temporary paths set, or nginx writes under its prefix.
        for m in fastcgi uwsgi scgi; do
                "$nginx" -V 2>&1 | grep -q -- "--without-http_${m}_module" ||
                        extra+="    ${m}_temp_path $d/${m}_temp;"$'\n'
        done
        sed -e "s|@DIR@|$d|g" -e "s|@LISTEN@|$listen|g" -e "s|@SSE_LISTEN@|$sse_listen|g" \
            -e "s|@UPSTREAM@|$upstream|g" -e "s|@ORIGIN@|$origin|g" "$BENCH_SRC/nginx.conf.in" |
                awk -v extra="$extra" '{ if ($0 == "@EXTRA_TEMP_PATHS@") printf "%s", extra; else print }' \
                >"$d/nginx.conf"
}

nginx_worker() {
        local master=$1 i w
        for i in $(seq 1 40); do
                w=$(awk '{print $1}' "/proc/$master/task/$master/children" 2>/dev/null)
                [ -n "$w" ] && { echo "$w"; return 0; }
                sleep 0.05
        done
        return 1
}

bench_measure() {
        local key=$1 line rc
        shift
        line=$(set -o pipefail; "$@" 2>>"$BENCH_ERR" | grep '^RESULT' | tail -1)
        rc=$?
        if [ -z "$line" ]; then
                problem "$key (round $ROUND): no result (exit $rc) — $(tail -2 "$BENCH_ERR" | tr '\n' ' ')"
                return
        elif [ "$rc" != 0 ]; then
                problem "$key (round $ROUND): measurement incomplete: ${line#RESULT }"
        fi
        R[$key.$ROUND]=$line
}

bench_report() {
        local k
        echo
        echo "raw results:"
        for k in $(printf '%s\n' "${!R[@]}" | sort); do
                printf '  %-18s %s\n' "$k" "${R[$k]#RESULT }"
        done
        [ ${#FAILURES[@]} -eq 0 ] && return 0
        echo
        echo "problems (${#FAILURES[@]}):"
        printf '  - %s\n' "${FAILURES[@]}"
        return 1
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }

best() {
        local key=$1 f=$2 rounds=$3 dir=min r v b=""
        [ "$f" = rps ] && dir=max
        for r in $(seq 1 "$rounds"); do
                v=$(field "${R[$key.$r]:-}" "$f")
                case "$v" in ""|-*) continue ;; esac
                if [ -z "$b" ] || awk -v a="$v" -v b="$b" -v d="$dir" 'BEGIN { exit !(d == "max" ? a + 0 > b + 0 : a + 0 < b + 0) }'; then
                        b=$v
                fi
        done
        echo "$b"
}

calc() {
        local fmt=$1 expr=$2 a=${3:-} b=${4-x}
        [ "$a" = n/a ] && a=
        [ "$b" = n/a ] && b=
        if [ -z "$a" ] || [ -z "$b" ]; then echo "n/a"; return; fi
        awk -v a="$a" -v b="$b" "BEGIN { printf \"$fmt\", $expr }"
}

ratio() {
        case "${2:-}" in ""|n/a|0|0.0|0.00|-*) echo "n/a" ;; *) calc '%.2f' 'a / b' "$1" "$2" ;; esac
}
