# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by the shell tests that drive the real npm `openai` SDK: defines skip(), makes sure the
# pinned SDK is installed (tests/openai/setup.sh) and sets SDK_DIR to where client.mjs runs from.
# A test that cannot get node or the SDK skips (exit 77), or fails under CLUB_TEST_STRICT=1.

skip() {
        if [ "${CLUB_TEST_STRICT:-0}" = 1 ]; then
                echo "FAIL - $* (CLUB_TEST_STRICT=1)"
                exit 1
        fi
        echo "SKIP - $*"
        exit 77
}

SDK_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SDK_DIR=${CLUB_OPENAI_SDK_DIR:-$SDK_SRC}

command -v node >/dev/null 2>&1 || skip "node not found"
bash "$SDK_SRC/setup.sh" "$SDK_DIR"
case $? in
        0) ;;
        77) skip "the openai SDK cannot be installed" ;;
        *) echo "FAIL - tests/openai/setup.sh"; exit 1 ;;
esac
