#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The gateway's store under kill -9: a helper registers providers as fast as it can and
# acknowledges each one on stdout once store_provider_register() has returned; this script
# kills it at a random moment, several times, and after each kill the helper's "check" mode
# reopens the database (recovering the WAL) and verifies that every acknowledged
# registration is there, that no mesh address was handed out twice, and that the database
# passes PRAGMA integrity_check. One round also checks while the writer is running
# (a concurrent reader). No root, no network, no sqlite3 command needed.
#
#   test-store-durability.sh STORE-DURABILITY-HELPER
set -euo pipefail

helper=${1:?usage: $0 STORE-DURABILITY-HELPER}
rounds=${CLUB_DURABILITY_ROUNDS:-6}
dir=$(mktemp -d "${TMPDIR:-/tmp}/test-store-durability.XXXXXX")
trap 'rm -rf "$dir"' EXIT
db=$dir/gateway.db
acks=$dir/acks

"$helper" init "$db"
: >"$acks"

for ((run = 1; run <= rounds; run++)); do
        "$helper" register "$db" "$run" >>"$acks" &
        pid=$!
        # 0.2 s … 0.7 s into the burst
        sleep "0.$((RANDOM % 6 + 2))"
        if ((run == 2)); then
                # A reader while the writer is busy: sees every acknowledged registration.
                "$helper" check-live "$db" "$acks"
        fi
        kill -9 "$pid"
        wait "$pid" 2>/dev/null && { echo "the helper exited by itself" >&2; exit 1; }
        status=$?
        if ((status != 137)); then
                echo "the helper failed (exit status $status)" >&2
                exit 1
        fi
        echo "round $run: killed after $(grep -c '^reg ' "$acks") acknowledged registrations in total"
        "$helper" check "$db" "$acks"
done

# The test means something only if the helper got work done between the kills.
n=$(grep -c '^reg ' "$acks")
if ((n < rounds)); then
        echo "only $n registrations in $rounds rounds: too slow to tell anything" >&2
        exit 1
fi
