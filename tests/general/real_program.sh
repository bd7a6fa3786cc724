#!/usr/bin/env bash
# Run a real Debian program on heapkit: the same workload once on the
# system allocator and once with LD_PRELOAD=libheapkit.so and
# HEAPKIT_SHOW_STATS=1; outputs must be identical and heapkit's stats must
# appear on stderr (proof that heapkit served the allocations).
# Usage: real_program.sh python|sort|sqlite|git|shell LIBHEAPKIT.so
# Exit 77 (ctest: skipped) when the program is not installed.
set -u
what=$1
lib=$(readlink -f "$2")
# the text heapkit's stats printer starts with; override if it changes
marker=${HK_STATS_MARKER:-heapkit statistics}
[ -f "$lib" ] || { echo "no library $lib"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C

need() { command -v "$1" >/dev/null || { echo "skip: $1 not installed"; exit 77; }; }

workload() {   # $1: output dir; runs in a fresh work dir, stdout -> $1/out
    local o=$1 w=$1/work
    mkdir -p "$w"
    case $what in
    python)
        /usr/bin/python3 - >"$o/out" <<'PY'
import json, random, hashlib
random.seed(12345)
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(3, 24))) for _ in range(60000)]
words.sort()
d = {w: [len(w), w[::-1], {"k": i}] for i, w in enumerate(words[:30000])}
s = json.dumps(d, sort_keys=True)
back = json.loads(s)
assert back == d
big = [list(range(i % 100)) for i in range(20000)]
print(len(words), words[0], words[-1], len(s), hashlib.sha256(s.encode()).hexdigest(), sum(map(len, big)))
PY
        ;;
    sort)
        # a second proof besides the stats (coreutils close stderr at exit,
        # which heapkit's exit statistics must survive): while sort waits
        # on a fifo, its /proc/PID/maps must show libheapkit.so
        rm -f "$tmp/fifo"; mkfifo "$tmp/fifo"
        sort -k1,1 -k3,3n "$tmp/fifo" >"$o/sorted" &
        local pid=$! n=0
        if [ -n "${LD_PRELOAD:-}" ]; then
            until grep -q "$(basename "$lib")" "/proc/$pid/maps" 2>/dev/null; do
                n=$((n + 1)); [ $n -gt 200 ] && break; sleep 0.05
            done
            [ $n -le 200 ] && echo "sort has $(basename "$lib") mapped" >"$tmp/mapped"
        fi
        cat "$tmp/in.txt" >"$tmp/fifo"
        wait $pid || return 1
        md5sum <"$o/sorted" >"$o/out"
        sort -u -t' ' -k2,2 "$tmp/in.txt" | wc -l >>"$o/out"
        ;;
    sqlite)
        {
            echo "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL);"
            echo "BEGIN;"
            for i in $(seq 1 6000); do echo "INSERT INTO t(name, grp, val) VALUES('name$i', $((i % 37)), $i.5);"; done
            echo "COMMIT;"
            echo "CREATE INDEX ix ON t(grp);"
            echo "SELECT grp, count(*), sum(val), max(name) FROM t GROUP BY grp ORDER BY grp;"
            echo "SELECT count(*) FROM t a JOIN t b ON a.grp = b.grp WHERE a.id < 300;"
        } >"$tmp/script.sql"
        sqlite3 "$w/db.sqlite" <"$tmp/script.sql" >"$o/out"
        ;;
    git)
        (
            cd "$w" || exit 1
            export HOME=$w GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x GIT_COMMITTER_NAME=t \
                   GIT_COMMITTER_EMAIL=t@x GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
            git init -q -b main . && git config gc.auto 0
            for i in $(seq 1 150); do printf 'file %d\n%s\n' "$i" "$(seq 1 $((i % 50)))" >"f$i.txt"; done
            git add . && git commit -q -m first
            sed -i 's/file/FILE/' f1*.txt && git commit -q -am second
            git log --format='%H %s'
            git diff --stat HEAD~1 | tail -1
            git ls-files | wc -l
        ) >"$o/out"
        ;;
    shell)
        # coreutils close stderr at exit, so their stats may not show; bash's do
        ( ls -la / | wc -l; echo "$(seq 1 20000 | sort -r | head -3)"
          awk 'BEGIN{for(i=0;i<100000;i++) a[i]=i*2; s=0; for(k in a) s+=a[k]; print s}'
          bash -c 'declare -A h; for i in $(seq 1 5000); do h[k$i]=$i; done; echo ${#h[@]} ${h[k77]}' ) >"$o/out"
        ;;
    *) echo "unknown workload $what"; exit 2 ;;
    esac
}

case $what in
python) need /usr/bin/python3 ;; sort) need sort; need /usr/bin/python3 ;; sqlite) need sqlite3 ;; git) need git ;; shell) need awk ;;
esac

mkdir -p "$tmp/sys" "$tmp/hk"
if [ "$what" = sort ]; then   # the input, made once on the system allocator (about 6 MB)
    /usr/bin/python3 -c '
import random, sys
random.seed(7)
out = sys.stdout
for i in range(250000):
    out.write("%08x %s %d\n" % (random.getrandbits(32), "x" * random.randint(0, 20), i))
' >"$tmp/in.txt" || exit 1
fi
( unset LD_PRELOAD HEAPKIT_SHOW_STATS; workload "$tmp/sys" ) 2>"$tmp/sys.err"
rc_sys=$?
( export LD_PRELOAD=$lib HEAPKIT_SHOW_STATS=1; workload "$tmp/hk" ) 2>"$tmp/hk.err"
rc_hk=$?
fail=0
if [ $rc_sys -ne 0 ]; then echo "system-allocator run failed ($rc_sys):"; tail -5 "$tmp/sys.err"; fail=1; fi
if [ $rc_hk -ne 0 ]; then echo "heapkit run failed ($rc_hk):"; tail -20 "$tmp/hk.err"; fail=1; fi
if ! [ -s "$tmp/sys/out" ]; then echo "no output from the workload"; fail=1; fi
if ! cmp -s "$tmp/sys/out" "$tmp/hk/out"; then
    echo "outputs differ:"; diff "$tmp/sys/out" "$tmp/hk/out" | head -20; fail=1
fi
if [ "$what" = sort ]; then
    if [ -f "$tmp/mapped" ]; then cat "$tmp/mapped"; else echo "sort never had $(basename "$lib") mapped"; fail=1; fi
fi
if ! grep -qi -- "$marker" "$tmp/hk.err"; then
    echo "heapkit's stats ('$marker') did not appear on stderr: is heapkit really the allocator?"
    head -5 "$tmp/hk.err"; fail=1
fi
echo "$what: $(wc -l <"$tmp/sys/out") output lines, identical; stats lines on stderr: $(grep -ci -- "$marker" "$tmp/hk.err")"
[ $fail -eq 0 ] && echo "ok" || echo "FAIL"
exit $fail
