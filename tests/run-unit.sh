#!/bin/bash
# run-unit.sh TEST...: run each unit test binary, report, fail if any failed.
set -u
failed=()
for t in "$@"; do
    echo "== $t"
    if ! "$t"; then
        failed+=("$t")
    fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "unit tests FAILED: ${failed[*]}"
    exit 1
fi
echo "unit tests passed: $#"
