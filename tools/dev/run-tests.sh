#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The whole test suite: installs what it needs (as root), builds, and runs every test —
# unit, fuzz replay, and integration (real WireGuard in namespaces and in a qemu guest, the
# real openai SDK, clubd against real upstreams). Ends with "N passed, N failed, N skipped".
#
#   sudo tools/dev/run-tests.sh            everything
#   tools/dev/run-tests.sh --suite unit    meson test arguments pass through
#
# CLUB_SKIP_DEPS=1 skips the package installation. As root, a test whose prerequisites are
# missing fails instead of skipping (CLUB_TEST_STRICT=1), so nothing is silently left out.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${CLUB_BUILD_DIR:-$top/build}

if [ "$(id -u)" -eq 0 ]; then
        if [ "${CLUB_SKIP_DEPS:-0}" != 1 ]; then
                "$top/tools/dev/install-deps.sh" || exit 1
        fi
        export CLUB_TEST_STRICT=${CLUB_TEST_STRICT:-1}
else
        echo "run-tests.sh: not root: integration tests that need root will be skipped." >&2
fi

"$top/tools/dev/build.sh" "$build" || exit 1

meson test -C "$build" --print-errorlogs --num-processes 2 "$@"
rc=$?

# One summary line, counted from meson's own log.
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
names = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t.get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
    elif r == "SKIP":
        counts["skipped"] += 1
    else:
        counts["failed"] += 1
        names.append(t.get("name"))
if names:
    print("failed: " + ", ".join(names))
print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
PY
exit $rc
