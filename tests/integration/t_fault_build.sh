#!/bin/bash
# Fault points are test-only (runner/lib/fault.h): the production binary has
# no fault code at all, so no BUILDVM_FAULT in a runner's environment can make
# it kill itself; the test binary, which t_serve_crash.sh runs, has them.
. "$(dirname "$0")/lib.sh"
need_test_build

# whole listings in files: `nm | grep -q` under pipefail fails on SIGPIPE
nm "$BUILDVM" >"$T/prod.nm"; strings "$BUILDVM" >"$T/prod.strings"
nm "$BUILDVM_TEST" >"$T/test.nm"; strings "$BUILDVM_TEST" >"$T/test.strings"
for sym in fault_point fault_set_partner; do
    ! grep -qw "$sym" "$T/prod.nm" || fail "the production binary $BUILDVM defines $sym"
    grep -qw "$sym" "$T/test.nm" || fail "the test binary $BUILDVM_TEST lacks $sym"
done
! grep -q 'fault\.injected' "$T/prod.strings" ||
    fail "the production binary $BUILDVM carries the fault.injected message"
grep -q 'event=fault\.injected' "$T/test.strings" || fail "the test binary lacks its fault message"
echo "ok: fault points only in $BUILDVM_TEST"
