#!/usr/bin/env bash
# `heapkit run`: runs a program on libheapkit.so (its stats appear with
# --stats), passes arguments and the exit code through, and fails clearly
# when the program or the library is missing.
# Usage: run_cmd.sh HEAPKIT_BINARY
hk=$1
pass=0; fail=0
ok()  { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

out=$("$hk" run --stats -- /bin/echo hello world 2>"$tmp/err"); rc=$?
[ $rc -eq 0 ] && [ "$out" = "hello world" ] && ok "echo runs with its arguments" || bad "echo: rc=$rc out='$out'"
grep -q "heapkit statistics" "$tmp/err" && ok "--stats prints heapkit's statistics" || bad "--stats: $(head -3 "$tmp/err")"

"$hk" run -- /bin/sh -c 'exit 7' 2>/dev/null; rc=$?
[ $rc -eq 7 ] && ok "exit code passes through" || bad "exit code: $rc"

out=$("$hk" run -- /bin/sh -c 'echo "$LD_PRELOAD"'); 
case "$out" in *libheapkit.so*) ok "LD_PRELOAD names libheapkit.so" ;; *) bad "LD_PRELOAD='$out'" ;; esac

"$hk" run -- /nonexistent/program 2>"$tmp/err"; rc=$?
[ $rc -eq 127 ] && grep -q "/nonexistent/program" "$tmp/err" && ok "missing program: exit 127 with its name" || bad "missing program: rc=$rc $(cat "$tmp/err")"

"$hk" run --lib /nonexistent/lib.so -- /bin/true 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "cannot read the library" "$tmp/err" && ok "missing library: clear error" || bad "missing library: rc=$rc $(cat "$tmp/err")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
