#!/usr/bin/env bash
# Instructions per request of Remora under callgrind, with and without a retry policy on the route: builds the
# origin as bench/run.sh does and runs bench/callgrind.py (bench/callgrind.sh --help for options; method in
# docs/BENCHMARKS.md, "Instructions per request"). Needs valgrind (Debian package valgrind).
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh" --callgrind "$@"
