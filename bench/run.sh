#!/usr/bin/env bash
# Compare heapkit with glibc, mimalloc, jemalloc and tcmalloc on the bench
# workloads (LD_PRELOAD, interleaved repetitions). See docs/benchmarks.md.
# Usage: bench/run.sh [--svg FILE] [--json FILE] [--reps N] [--quick] [BUILD_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/run.py" "$@"
