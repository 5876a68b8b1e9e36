# bench/lib.sh - shared by the benchmarks: medians and ratios measured in one run
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILDVM=${BUILDVM:-$ROOT/build/buildvm}
export BUILDVM_IMAGES=${BUILDVM_IMAGES:-$ROOT/build/images}
RUNS=${BENCH_RUNS:-10}
B=$(mktemp -d /tmp/buildvm-bench.XXXXXX)
export BUILDVM_HOME=$B/home
trap 'rm -rf "$B"' EXIT

# median_ms NAME CMD...: run CMD $RUNS times (after one warm-up), print and
# store the median wall time in milliseconds in MEDIAN.
median_ms () {
    local name=$1; shift
    local i t0 t1 times=()
    "$@" >/dev/null 2>&1 || { echo "bench: $name failed: $*" >&2; "$@" >&2 || true; exit 1; }
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "bench: $name failed on run $i" >&2; exit 1; }
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000000 )))
    done
    MEDIAN=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}')
    printf '  %-44s median %6d ms  (runs: %s)\n' "$name" "$MEDIAN" "${times[*]}"
}

# ratio A B: A/B with two decimals
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# verdict RATIO TARGET LABEL
verdict () {
    if awk -v r="$1" -v t="$2" 'BEGIN { exit !(r <= t) }'; then
        printf '  %-44s %s (target <= %s): met\n' "$3" "$1" "$2"
    else
        printf '  %-44s %s (target <= %s): MISSED\n' "$3" "$1" "$2"
    fi
}
