#!/usr/bin/env bash
# Command-line tests of the trace lab: usage: run_lab_tests.sh HEAPKIT SRCDIR WORKDIR
# Bad traces must fail with "heapkit: FILE:LINE: what" and a non-zero exit;
# JSON output must parse with the right rows and fields; gen must be
# deterministic; the built-in set and the shared traces (when present)
# must replay correctly on every engine.
set -u
hk=$1; src=$2; work=$3
py=${HK_PYTHON3:-python3}
rm -rf "$work"; mkdir -p "$work"
fails=0
ok()   { echo "ok   $1"; }
bad()  { echo "FAIL $1"; fails=$((fails + 1)); }

# 1. bad traces: exit code and FILE:LINE message
check_bad() {  # file line message-fragment
    local f="$src/bad/$1" out rc
    out=$("$hk" replay --engine system "$f" 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qF "heapkit: $f:$2: $3" <<<"$out"; then ok "bad trace $1"
    else bad "bad trace $1 (rc=$rc, stderr: $out)"; fi
}
check_bad header-nonnumeric.rep 2 "bad header: number of ids is not a number"
check_bad header-short.rep 2 "bad header: file ends before the number of ids"
check_bad unknown-op.rep 6 "unknown operation 'x'"
check_bad id-range.rep 6 "id 3 out of range"
check_bad free-unallocated.rep 6 "free of id 1, which is not allocated"
check_bad realloc-unallocated.rep 6 "realloc of id 1, which is not allocated"
check_bad negative-size.rep 5 "negative size"
check_bad absurd-size.rep 5 "size is absurdly large"
check_bad nonnumeric.rep 5 "size is not a number"
check_bad truncated.rep 7 "trace ends after 2 of the 4 operations"
check_bad extra-ops.rep 7 "more operations than the 2"
out=$("$hk" replay "$work/does-not-exist.rep" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "does-not-exist.rep" <<<"$out" && ok "missing file" || bad "missing file ($out)"

# 2. unknown engine: error listing the valid ones
out=$("$hk" replay --engine no-such "$src/traces/small.rep" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "unknown engine 'no-such'" <<<"$out" && grep -q "system" <<<"$out" && ok "unknown engine" || bad "unknown engine ($out)"
"$hk" replay --list >"$work/list.txt" 2>&1 && grep -q '^system' "$work/list.txt" && ok "replay --list" || bad "replay --list"

# 3. JSON: parses, one row per (engine, trace), fields and values that must hold for every engine
"$hk" replay --json --reps 1 "$src"/traces/*.rep >"$work/out.json"; rc=$?
[ $rc -eq 0 ] && ok "replay hand-written traces: exit 0" || bad "replay hand-written traces: exit $rc"
if command -v "$py" >/dev/null 2>&1; then
    if "$py" - "$work/out.json" "$work/list.txt" <<'PYEOF'
import json, sys
rows = json.load(open(sys.argv[1]))
engines = [l.split()[0] for l in open(sys.argv[2]).read().splitlines()[1:] if l.strip()]
# peak live requested bytes, worked out by hand from the traces
peak = {"small": 350, "holes": 8016, "grow": 20000}
assert len(rows) == len(engines) * len(peak), (len(rows), engines)
seen = set()
for r in rows:
    for k in ("engine", "trace", "utilization", "ops_per_sec", "max_op_ns", "ok", "peak_live", "peak_footprint"):
        assert k in r, (k, r)
    assert r["ok"] is True, r
    assert r["peak_live"] == peak[r["trace"]], r
    seen.add((r["engine"], r["trace"]))
    if r["engine"] == "system" and r["peak_footprint"] == 0:
        continue   # sanitizer builds: ASan's malloc leaves mallinfo2 at zero
    assert 0 < r["utilization"] <= 1.0, r
    assert r["peak_footprint"] >= r["peak_live"], r
    assert abs(r["utilization"] - r["peak_live"] / r["peak_footprint"]) < 1e-4, r
    assert r["ops_per_sec"] > 0 and r["max_op_ns"] > 0, r
assert seen == {(e, t) for e in engines for t in peak}, seen
PYEOF
    then ok "JSON rows and fields"; else bad "JSON rows and fields"; fi
else
    echo "skip JSON check (no python3)"
fi

# 4. gen is deterministic; another seed gives other traces
"$hk" gen --out "$work/g1" >/dev/null && "$hk" gen --out "$work/g2" >/dev/null && "$hk" gen --out "$work/g3" --seed 2 >/dev/null
if diff -r "$work/g1" "$work/g2" >/dev/null && [ "$(ls "$work/g1" | wc -l)" -ge 6 ]; then ok "gen deterministic"; else bad "gen deterministic"; fi
if ! diff -r "$work/g1" "$work/g3" >/dev/null; then ok "gen --seed changes the traces"; else bad "gen --seed"; fi
allfree=1
for f in "$work"/g1/*.rep; do
    awk 'NR==3{m=$1} NR>4{n++; if($1=="a")l[$2]=1; else if($1=="f")delete l[$2]} END{c=0; for(k in l)c++; exit !(c==0 && n==m && n>=2000 && n<=30000)}' "$f" || { allfree=0; echo "  $f: not all freed, or op count off"; }
done
[ $allfree = 1 ] && ok "gen traces end with every block freed" || bad "gen traces end with every block freed"

# 5. the built-in set replays correctly on every engine (the lab job, with pictures)
"$hk" lab --out "$work/lab" --reps 1 --check-every 16 >"$work/lab.txt" 2>&1; rc=$?
if [ $rc -eq 0 ] && [ -s "$work/lab/chart.svg" ] && ls "$work"/lab/heapmap-*.svg >/dev/null 2>&1 && ! grep -q FAIL "$work/lab.txt"; then ok "lab on the built-in set"
else bad "lab on the built-in set (rc=$rc)"; cat "$work/lab.txt"; fi
grep -q '<svg' "$work/lab/chart.svg" && grep -q '</svg>' "$work/lab/chart.svg" && ok "chart is SVG" || bad "chart is SVG"

# 6. the shared traces, when the folder exists
if [ -n "${HK_LAB_QUICK:-}" ]; then
    echo "skip shared traces (sanitizer build: too slow; the normal build runs them)"
elif [ -n "${HK_SHARED_TRACES:-}" ] && ls "$HK_SHARED_TRACES"/*.rep >/dev/null 2>&1; then
    "$hk" replay --reps 1 --check-every 16 "$HK_SHARED_TRACES"/*.rep >"$work/shared.txt" 2>&1; rc=$?
    if [ $rc -eq 0 ] && ! grep -q FAIL "$work/shared.txt"; then ok "shared traces on every engine"
    else bad "shared traces on every engine (rc=$rc)"; cat "$work/shared.txt"; fi
else
    echo "skip shared traces (folder not found)"
fi

echo "lab tests: $fails failed"
[ $fails -eq 0 ]
