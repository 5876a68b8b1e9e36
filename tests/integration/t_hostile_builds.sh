#!/bin/bash
# Hostile builds (examples/hostile/*), each through `buildvm run` against the
# real registry, each next to an ordinary job running at the same time. Every
# hostile job ends within its deadline with a clear failure reason (or, for
# the escape attempt, with nothing surviving its step); the ordinary job
# finishes normally; the host is unharmed and nothing is left behind.
. "$(dirname "$0")/lib.sh"

pl_registry
# a small log cap, so the flood reaches it well inside its 10 s even when the
# console is slow on a loaded machine (the agent's cap is half of it)
pl_config '.limits.max_log_bytes = 262144'

# the ordinary neighbour
good=$T/good
mkdir -p "$good"
printf '{"profile": "minimal", "steps": ["sleep 3; echo neighbour ok"], "image": {"from": "."}}\n' >"$good/buildvm.json"
good_commit=$(pl_repo "$good")

host_procs_before=$(ps -e --no-headers | wc -l)
n=0
check () { # APP EXPECTED-EXIT-STATUS LOG-NEEDLE MAX-SECONDS
    local app=$1 want=$2 needle=$3 max=$4 dir=$T/$1 c start elapsed
    n=$((n + 1))
    cp -r "$ROOT/examples/hostile/$app" "$dir"
    c=$(pl_repo "$dir")
    pl_job "$T/hostile.json" "hostile-$n" "$app" "$dir" "$c"
    pl_job "$T/good-$n.json" "good-$n" good "$good" "$good_commit"
    "$BUILDVM" run --config "$CONFIG" "$T/good-$n.json" >"$T/good.out" 2>&1 &
    local gpid=$!
    start=$(date +%s)
    run "$BUILDVM" run --config "$CONFIG" "$T/hostile.json"
    elapsed=$(( $(date +%s) - start ))
    wait "$gpid" || { cat "$T/good.out"; fail "$app: the neighbouring job failed"; }
    [ "$elapsed" -le "$max" ] || fail "$app: took ${elapsed}s (at most ${max}s)"
    assert_eq "$want" "$RC" "$app: exit status"
    "$BUILDVM" logs --config "$CONFIG" "hostile-$n" >"$T/log" 2>&1 || true
    grep -qF -- "$needle" "$T/log" "$T/out" || { cat "$T/out"; tail -20 "$T/log"; fail "$app: no [$needle]"; }
    local reason
    reason=$(jq -r '.error.message // "succeeded"' "$(pl_record "hostile-$n")")
    note "$app: ${elapsed}s, exit $RC: $reason"
    assert_no_leftovers
}

check fork-bomb 5 "timed out" 60
check memory-balloon 4 "exit status 137" 90
check endless-loop 5 "timed out" 45
check endless-output 5 "further output is dropped" 45
size=$(stat -c %s "$(ls "$BUILDVM_HOME"/logs/apps/endless-output/*.log* | head -1)")
# the cap, and at most a quarter of it of what was dropped last (joblog.c)
[ "$size" -le 400000 ] || fail "endless-output: the log is $size bytes for a 256 KiB cap"
check fill-disk 4 "No space left on device" 90
check write-host-disks 4 "exit status 1" 60
assert_not_contains "$T/log" "WROTE"
check network 4 "no network" 60
assert_not_contains "$T/log" "REACHED"
check escape-supervision 0 "nothing survived" 60
assert_not_contains "$T/log" "ESCAPED"

# the host: no stray processes accumulated, nothing of ours runs
host_procs_after=$(ps -e --no-headers | wc -l)
[ "$host_procs_after" -le $((host_procs_before + 20)) ] || fail "host process count grew from $host_procs_before to $host_procs_after"
pgrep -f "qemu-system.*$T" && fail "a VMM survived"
true
