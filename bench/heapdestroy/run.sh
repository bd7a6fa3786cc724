#!/usr/bin/env bash
# Destroy a private heap of 1 M small blocks vs free them one by one.
# Usage: bench/heapdestroy/run.sh BUILD_DIR [REPS] [BLOCKS]   (default 7 reps, 1000000 blocks)
set -euo pipefail
build=${1:-build}
bin="$build/bench_heapdestroy"
[ -x "$bin" ] || { echo "run.sh: $bin not built (cmake --build $build --target bench_heapdestroy)" >&2; exit 1; }
exec "$bin" "${2:-7}" "${3:-1000000}"
