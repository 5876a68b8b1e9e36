#!/bin/bash
# bench/run.sh [NAME...]: run the benchmarks (all by default) and print
# medians and ratios; each benchmark measures its own baseline in the same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(vm pipeline queue egress attest dockerfile)
for n in "${names[@]}"; do
    if [ -x "$here/$n.sh" ]; then
        "$here/$n.sh"
        echo
    else
        echo "bench: no benchmark \`$n\` yet" >&2
    fi
done
