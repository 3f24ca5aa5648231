#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-man.sh — the man pages and the shipped configuration files cannot silently drift from
# the programs.
#
#   1. Every page renders with man-db and groff without a warning (groff -ww), and lexgrog
#      finds its NAME line (what apropos and lintian read).
#   2. Every option in a program's --help (long and short), and every command of clubctl and
#      club-gatewayctl, appears in that program's page.
#   3. Every configuration key a daemon parses (the { "Section", "Key", … } table in its
#      *-config.c) is documented under its section in the .5 page, and appears, commented
#      out, in the shipped file in conf/; uncommenting every key there gives a configuration
#      the daemon accepts without a single warning.
#
# Usage: test-man.sh SRCROOT MANBUILDDIR CLUBD CLUBCTL [CLUB-GATEWAYD CLUB-GATEWAYCTL]
# Exit: 0 all passed, 1 a check failed, 77 man/groff/lexgrog missing (and not strict).
set -uo pipefail

SRC=$(realpath "$1") MAN=$(realpath "$2"); shift 2
progs=("$@")

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then echo "FAIL - prerequisite missing: $*"; exit 1; fi
        echo "ok - # SKIP $*"; exit 77
}
for t in man groff lexgrog; do command -v $t >/dev/null || skip "$t not installed (man-db, groff-base)"; done

pass=0 fail=0
ok()  { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }

T=$(mktemp -d /tmp/pk-man.XXXXXX)
trap 'rm -rf "$T"' EXIT

# page_of PROGRAM -> the built page, e.g. clubd -> MANBUILDDIR/clubd.8
page_of() { local p; for p in "$MAN/$1".[1-8]; do [ -f "$p" ] && { echo "$p"; return 0; }; done; return 1; }

# Plain text of a page: ASCII, very long lines and no hyphenation, so that an option is never
# split; runs of spaces (justification) squeezed.
render() { groff -man -Tascii -rLL=400n -rHY=0 -P-cbou "$1" 2>/dev/null | tr -s ' '; }

# ---- 1. render and whatis -----------------------------------------------------------------
for page in "$MAN"/*.[1-8]; do
        name=$(basename "$page")
        w=$( { LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=w -E UTF-8 -l "$page" >/dev/null; } 2>&1)
        [ -z "$w" ] && ok "$name renders without warnings (man --warnings=w)" || { bad "$name: warnings"; sed 's/^/# /' <<<"$w"; }
        out=$(lexgrog "$page" 2>&1)
        [ $? -eq 0 ] && grep -q ' - ' <<<"$out" && ok "$name: lexgrog reads its NAME ($(sed 's/^[^:]*: *//' <<<"$out" | head -1))" \
                || bad "$name: lexgrog: $out"
done

# ---- 2. --help against the page ------------------------------------------------------------
for prog in "${progs[@]}"; do
        name=$(basename "$prog")
        page=$(page_of "$name") || { bad "$name: no man page in $MAN"; continue; }
        text=$(render "$page")
        help=$("$prog" --help 2>&1) || { bad "$name --help failed"; continue; }
        missing=()
        # options: --long (up to '=' or a space) and -x
        for o in $(grep -oE '(^|[ ,[])--[a-z][a-z-]*|(^|[ ,[])-[a-zA-Z]([ ,]|$)' <<<"$help" | grep -oE -- '--?[a-zA-Z][a-z-]*' | sort -u); do
                grep -qE -- "(^|[^a-z-])$o([^a-z-]|$)" <<<"$text" || missing+=("$o")
        done
        # commands: the lines indented by exactly two spaces that start with a word, up to the
        # description (after two spaces), e.g. "  register --key-file FILE …" or
        # "  providers drain|undrain ID"
        while read -r a b; do
                [ -n "$a" ] || continue
                if [[ "$b" =~ ^[a-z][a-z|-]*$ ]]; then
                        for sub in ${b//|/ }; do grep -qF "$a $sub" <<<"$text" || missing+=("'$a $sub'"); done
                else
                        grep -qE "(^| )$a( |$)" <<<"$text" || missing+=("'$a'")
                fi
        done < <(grep -E '^  [a-z]' <<<"$help" | sed -E 's/^  //; s/  .*//' | awk '{ print $1, ($2 ~ /^[a-z][a-z|-]*$/ ? $2 : "") }')
        [ ${#missing[@]} -eq 0 ] && ok "$name: every option and command of --help is in $(basename "$page")" \
                || bad "$name: not in $(basename "$page"): ${missing[*]}"
done

# ---- 3. configuration keys -----------------------------------------------------------------
# keys SOURCE -> "Section Key" lines from the parser's table
keys() { grep -oE '\{ *"[A-Za-z]+", *"[A-Za-z]+",' "$1" | sed -E 's/\{ *"([A-Za-z]+)", *"([A-Za-z]+)",/\1 \2/' | sort -u; }
# documented PAGE SECTION KEY: ".B KEY=" between ".SS [SECTION]" and the next .SS/.SH
documented() { awk -v s="[$2]" -v k=".B $3=" '/^\.S[SH]/ { in_s = ($0 == ".SS " s) } in_s && $0 == k { f = 1 } END { exit !f }' "$1"; }
# shipped CONF SECTION KEY: "#KEY=" under "[SECTION]"
shipped() { awk -v s="[$2]" -v k="#$3=" '/^\[/ { in_s = ($0 == s) } in_s && index($0, k) == 1 { f = 1 } END { exit !f }' "$1"; }

check_conf() {  # DAEMON CONFIG-SOURCE PAGE CONF
        local daemon=$1 csrc=$2 page=$3 conf=$4 name miss_doc=() miss_conf=() sec key n=0
        name=$(basename "$daemon")
        while read -r sec key; do
                n=$((n + 1))
                documented "$page" "$sec" "$key" || miss_doc+=("[$sec] $key=")
                # one [Upstream]/[Capability] per server: described in the file's comments
                case $sec in Upstream|Capability) ;; *) shipped "$conf" "$sec" "$key" || miss_conf+=("[$sec] $key=") ;; esac
        done < <(keys "$csrc")
        [ "$n" -gt 10 ] && ok "$name: $n keys found in $(basename "$csrc")" || bad "$name: only $n keys found in $csrc"
        [ ${#miss_doc[@]} -eq 0 ] && ok "$(basename "$page"): documents every key" || bad "$(basename "$page") lacks: ${miss_doc[*]}"
        [ ${#miss_conf[@]} -eq 0 ] && ok "conf/$(basename "$conf"): lists every key" || bad "conf/$(basename "$conf") lacks: ${miss_conf[*]}"
        # uncomment every key that has a default value shown
        sed -E 's/^#([A-Z][A-Za-z]*=.+)$/\1/' "$conf" > "$T/$(basename "$conf")"
        out=$("$daemon" --config "$T/$(basename "$conf")" --check-config 2>&1)
        if [ $? -eq 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && [[ "$out" == *": OK"* ]]; then
                ok "conf/$(basename "$conf"): its defaults, uncommented, pass $name --check-config without a warning"
        else
                bad "conf/$(basename "$conf") uncommented: $out"
        fi
}
for prog in "${progs[@]}"; do
        case $(basename "$prog") in
        clubd) check_conf "$prog" "$SRC/daemons/clubd/clubd-config.c" "$MAN/clubd.conf.5" "$SRC/conf/clubd.conf" ;;
        club-gatewayd) check_conf "$prog" "$SRC/daemons/club-gatewayd/gateway-config.c" "$MAN/club-gatewayd.conf.5" "$SRC/conf/gatewayd.conf" ;;
        esac
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
