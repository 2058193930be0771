#!/usr/bin/env bash
# Runs every test on a fresh Debian 12 machine: installs what it needs, builds with -Werror,
# checks formatting, runs the unit tests (ctest) and the integration suite (pytest, real clients
# and servers on loopback) against the normal build, then the unit tests and the integration suite
# again against an ASan+UBSan build.
#
#   scripts/test.sh              everything
#   scripts/test.sh --quick      skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
JOBS=$(nproc)

step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "format check (clang-format)"
bash scripts/format.sh --check

step "include graph of agent/src: no cycle, no upward include"
python3 scripts/check-layers.py

step "build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DREMORA_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"

step "unit tests"
ctest --test-dir build --output-on-failure -j"$JOBS"

step "integration tests"
REMORA_AGENT="$ROOT/build/agent/remora-agent" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider

if [ "$QUICK" = 0 ]; then
  step "build (ASan+UBSan, -Werror)"
  cmake -S . -B build-asan -DREMORA_WERROR=ON -DREMORA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-asan -j"$JOBS"

  step "unit tests under ASan+UBSan"
  LSAN_OPTIONS="suppressions=$ROOT/tests/lsan-suppressions.txt" ctest --test-dir build-asan --output-on-failure -j"$JOBS"

  step "integration tests under ASan+UBSan"
  export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan-suppressions.txt"
  REMORA_AGENT="$ROOT/build-asan/agent/remora-agent" REMORA_INIT="$ROOT/build-asan/init/remora-init" REMORA_SANITIZED=1 \
    /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider
fi
echo
echo "all tests passed"
