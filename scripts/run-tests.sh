#!/usr/bin/env bash
# Run the whole ctest suite of a build directory and close with one line
# "tests: N passed, N failed" counted from ctest's own results.
set -u
build=${1:-build}
log=$(mktemp)
ctest --test-dir "$build" --output-on-failure -j "${HK_TEST_JOBS:-2}" --timeout "${HK_TEST_TIMEOUT:-600}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
rm -f "$log"
if [ -z "$total" ]; then echo "tests: 0 passed, 1 failed"; exit 1; fi
echo "tests: $((total - failed)) passed, $failed failed"
exit $rc
