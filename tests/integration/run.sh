#!/bin/bash
# run.sh [TEST...]: run the integration tests (tests/integration/t_*.sh) against
# the real binary, real services and real VMs. Each test is a bash script that
# sources lib.sh and exits non-zero on failure. A test that must skip prints
# "SKIP: reason" and exits 77; skips are listed at the end.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("$here"/t_*.sh)
failed=() skipped=() passed=0
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    start=$(date +%s.%N)
    out=$(mktemp)
    bash "$t" >"$out" 2>&1
    rc=$?
    secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
    case $rc in
        0) echo "PASS  $name (${secs}s)"; passed=$((passed + 1)) ;;
        77) echo "SKIP  $name: $(grep -m1 '^SKIP:' "$out" | cut -c7-)"; skipped+=("$name") ;;
        *) echo "FAIL  $name (exit $rc, ${secs}s)"; sed 's/^/    | /' "$out" | tail -60; failed+=("$name") ;;
    esac
    rm -f "$out"
done
echo
echo "integration: $passed passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ ${#skipped[@]} -eq 0 ] || echo "skipped: ${skipped[*]}"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
