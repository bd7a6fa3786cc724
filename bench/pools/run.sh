#!/usr/bin/env bash
# Pools, slabs, tpools and arenas against malloc/free doing the same jobs.
# Usage: bench/pools/run.sh BUILD_DIR [REPS]   (default 5 repetitions)
# Every (job, allocator) pair runs in its own process, interleaved rep by rep;
# the malloc baseline runs under glibc and under mimalloc (LD_PRELOAD; the
# program links heapkit statically, so only malloc changes). Prints medians
# of ops/s (per CPU-second of the benchmark thread), ratios, and peak RSS.
set -euo pipefail
build=${1:-build}
reps=${2:-5}
bin="$build/bench_pools"
[ -x "$bin" ] || { echo "run.sh: $bin not built (cmake --build $build --target bench_pools)" >&2; exit 1; }
mi=${HK_MIMALLOC:-/usr/lib/x86_64-linux-gnu/libmimalloc.so.2}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for rep in $(seq "$reps"); do
  for job in burst churn batch mt arena; do
    case $job in
      arena) impls="arena" ;;
      burst|churn) impls="pool tpool slab none" ;;   # none: the job's own loop, no allocator
      *) impls="pool tpool slab" ;;
    esac
    echo "$("$bin" "$job" malloc) glibc" >> "$raw"
    if [ -r "$mi" ]; then echo "$(LD_PRELOAD="$mi" "$bin" "$job" malloc) mimalloc" >> "$raw"; fi
    for impl in $impls; do echo "$("$bin" "$job" "$impl") heapkit" >> "$raw"; done
  done
done
python3 - "$raw" "$reps" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    job, impl, ops, hwm, start, after, lib = line.split()
    name = f"malloc/{lib}" if impl == "malloc" else impl
    rows[(job, name)].append((float(ops), int(hwm), int(start), int(after)))
print(f"pools benchmark: medians of {sys.argv[2]} runs; ops = alloc+free pairs count 2 (arena: allocations)")
print(f"{'job':6} {'allocator':16} {'Mops/s':>8} {'x glibc':>8} {'x mimalloc':>10} {'peak MiB':>9} {'start MiB':>9} {'after MiB':>9}")
for job in ["burst", "churn", "batch", "mt", "arena"]:
    base = st.median(o for o, *_ in rows.get((job, "malloc/glibc"), [(float("nan"), 0, 0, 0)]))
    mib = rows.get((job, "malloc/mimalloc"))
    mbase = st.median(o for o, *_ in mib) if mib else float("nan")
    for (j, name), v in sorted(rows.items(), key=lambda kv: (kv[0][0], not kv[0][1].startswith("malloc"), kv[0][1])):
        if j != job: continue
        ops = st.median(x[0] for x in v)
        print(f"{job:6} {name:16} {ops/1e6:8.1f} {ops/base:8.2f} {ops/mbase:10.2f} "
              f"{st.median(x[1] for x in v)/1024:9.1f} {st.median(x[2] for x in v)/1024:9.1f} {st.median(x[3] for x in v)/1024:9.1f}")
PY
