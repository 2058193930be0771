#!/usr/bin/env bash
# Builds the benchmark origin (Release, in build-bench/) and runs the benchmark: bench/run.sh --help for options,
# docs/BENCHMARKS.md for the method. Remora is included when build/agent/remora-agent (or --agent PATH,
# or $REMORA_AGENT) answers --help.
# bench/run.sh --callgrind [options] (or bench/callgrind.sh [options]) runs bench/callgrind.py instead: instructions
# per request under valgrind's callgrind, with and without a retry policy (bench/run.sh --callgrind --help).
set -euo pipefail
script=run.py
if [ "${1:-}" = "--callgrind" ]; then
    script=callgrind.py
    shift
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${REMORA_BENCH_BUILD:-$repo/build-bench}"
origin="$build/bench/rm-bench-origin"
mkdir -p "$build"
log="$build/bench-build.log"
if ! { cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DREMORA_WERROR=ON >"$log" 2>&1 &&
       cmake --build "$build" --target rm-bench-origin -j2 >>"$log" 2>&1; }; then
    # the origin is one file: do not let another module's half-written CMakeLists stop the benchmark
    echo "run.sh: the project does not configure or build right now (see $log); compiling the origin alone" >&2
    origin="$build/standalone/rm-bench-origin"
    mkdir -p "$(dirname "$origin")"
    cc -std=gnu11 -O2 -Wall -Wextra -o "$origin" "$repo/bench/origin/grpc_origin.c" $(pkg-config --cflags --libs libnghttp2)
fi
export REMORA_BENCH_ORIGIN="$origin"
exec /usr/bin/python3 "$repo/bench/$script" "$@"
