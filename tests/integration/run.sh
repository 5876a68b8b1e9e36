#!/bin/bash
# run.sh [-j N] [TEST...]: run the integration tests (tests/integration/t_*.sh)
# against the real binary, real services and real VMs. Each test is a bash
# script that sources lib.sh and exits non-zero on failure. A test that must
# skip prints "SKIP: reason" and exits 77; skips are listed at the end.
#
# -j N (default $BUILDVM_TEST_JOBS, else the number of CPUs, at most 4) runs
# N tests at a time. They can share the machine: each has its own
# BUILDVM_HOME, its own registry and redis where it writes, its own job ids,
# and looks only at its own VMMs (lib.sh). The slowest tests start first so
# the lanes end together; a test's output is printed whole when it ends.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
jobs=${BUILDVM_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -le 4 ] || jobs=4
if [ "${1:-}" = "-j" ]; then jobs=$2; shift 2; fi
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    # the slow ones first (measured: minutes under TCG), then the rest by name
    slow="t_examples_deps t_dockerfile t_hostile_builds t_serve t_serve_fleet t_serve_artifacts t_serve_crash
          t_dry_run t_pipeline_hostile_output t_examples_start t_toolchains t_base_images t_git_hang t_egress t_dockerfile_hostile"
    for s in $slow; do [ -f "$here/$s.sh" ] && tests+=("$here/$s.sh"); done
    for t in "$here"/t_*.sh; do
        case " $(echo $slow) " in *" $(basename "$t" .sh) "*) continue ;; esac
        tests+=("$t")
    done
fi
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# one test: its output and status land in $results/NAME.{out,rc,secs}
run_one () {
    local t=$1 name start rc
    name=$(basename "$t" .sh)
    start=$(date +%s.%N)
    bash "$t" >"$results/$name.out" 2>&1
    rc=$?
    printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)" >"$results/$name.secs"
    echo $rc >"$results/$name.rc"
}

report () {
    local name=$1 rc secs
    rc=$(cat "$results/$name.rc") secs=$(cat "$results/$name.secs")
    case $rc in
        0) echo "PASS  $name (${secs}s)" ;;
        77) echo "SKIP  $name: $(grep -m1 '^SKIP:' "$results/$name.out" | cut -c7-)" ;;
        *) echo "FAIL  $name (exit $rc, ${secs}s)"; sed 's/^/    | /' "$results/$name.out" | tail -60 ;;
    esac
}

declare -A running=() # pid -> test name
for t in "${tests[@]}"; do
    while [ ${#running[@]} -ge "$jobs" ]; do
        wait -n 2>/dev/null || true
        for pid in "${!running[@]}"; do
            kill -0 "$pid" 2>/dev/null && continue
            wait "$pid" 2>/dev/null
            report "${running[$pid]}"
            unset "running[$pid]"
        done
    done
    run_one "$t" &
    running[$!]=$(basename "$t" .sh)
done
for pid in "${!running[@]}"; do
    wait "$pid" 2>/dev/null
    report "${running[$pid]}"
done

failed=() skipped=() passed=0
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    case $(cat "$results/$name.rc") in
        0) passed=$((passed + 1)) ;;
        77) skipped+=("$name") ;;
        *) failed+=("$name") ;;
    esac
done
echo
echo "integration: $passed passed, ${#failed[@]} failed, ${#skipped[@]} skipped ($jobs at a time)"
[ ${#skipped[@]} -eq 0 ] || echo "skipped: ${skipped[*]}"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
