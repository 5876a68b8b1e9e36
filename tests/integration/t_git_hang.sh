#!/bin/bash
# A git server that accepts the connection and never answers (issue 11,
# item 1). `buildvm run` fails at its checkout deadline with a one-line
# error; under `buildvm serve` a job stuck past its whole-job deadline is
# killed with everything it started, its lease given up with the reason,
# the app's mirror lock freed, and the next job of the same app runs.
. "$(dirname "$0")/lib.sh"

python3 "$ROOT/tests/lib/silent-server.py" --port-file "$T/silent.port" &
for _ in $(seq 50); do [ -s "$T/silent.port" ] && break; sleep 0.1; done
[ -s "$T/silent.port" ] || fail "the silent server did not start"
HUNG=http://127.0.0.1:$(cat "$T/silent.port")/app.git
c_ok=$(sv_app "$T/ok")
pl_registry

# --- buildvm run: the fetch is bounded by limits.max_checkout_seconds
pl_config '.limits.max_checkout_seconds = 2'
pl_job "$T/j.json" hang-run hang "$HUNG" "$c_ok"
start=$(date +%s)
run timeout 30 "$BUILDVM" run --config "$CONFIG" "$T/j.json"
took=$(( $(date +%s) - start ))
[ "$RC" != 124 ] || fail "buildvm run still in the checkout after 30 s with a 2 s checkout deadline"
[ "$RC" != 0 ] || fail "a fetch from a silent server succeeded"
[ "$took" -le 8 ] || fail "the fetch took $took s with a 2 s deadline"
# one line: "fetch of `URL` timed out after 2 s (0 bytes received)" (the
# seconds counted from the fetch's start, a little after the checkout's)
grep -qE "fetch of \`$HUNG\` timed out after (1\.[5-9]|2) s \(0 bytes received\)" "$T/out" \
    || { cat "$T/out"; fail "no one-line timeout error"; }
assert_no_leftovers
note "run: failed after $took s"

# --- serve: a job stuck past serve.job_seconds is killed (the checkout
# deadline is left long so that only the daemon's deadline can stop it;
# job_seconds leaves the next job, a real VM build, time under load)
pl_config ".queue = \"spool:$BUILDVM_HOME/spool\" | .serve = {lease_seconds: 3, max_attempts: 3, job_seconds: 20}
           | .limits.max_checkout_seconds = 600"
pl_job "$T/j.json" hang-serve hang "$HUNG" "$c_ok"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_start main --concurrency 1
start=$(date +%s)
for _ in $(seq 200); do [ "$(sv_state hang-serve)" = dead ] && break; sleep 0.2; done
took=$(( $(date +%s) - start ))
[ "$(sv_state hang-serve)" = dead ] || { cat "$T/serve-main.log"; fail "the hung job is still $(sv_state hang-serve) after $took s (job_seconds 20)"; }
[ "$took" -ge 19 ] || fail "the hung job was stopped after $took s, before its deadline (job_seconds 20)"
[ "$took" -le 30 ] || fail "the hung job was stopped after $took s (job_seconds 20)"
assert_contains "$T/serve-main.log" "job=hang-serve app=hang event=deadline"
"$BUILDVM" jobs --config "$CONFIG" >"$T/jobs.txt"
assert_contains "$T/jobs.txt" "past its deadline of 20 s"
assert_eq 1 "$(grep -c 'job=hang-serve app=hang event=leased' "$T/serve-main.log")" "attempts of the hung job"
# nothing of the killed worker is left running: no fetch, no worker
sleep 1
pgrep -f "buildvm serve --config $CONFIG" | grep -vx "$SV_PID_main" | grep -q . && fail "a worker outlived its deadline kill"

# the next job of the same app takes the mirror lock and runs
pl_job "$T/j.json" after-hang hang "$T/ok" "$c_ok"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_wait_done 2 120 || { cat "$T/serve-main.log"; fail "the job after the hung one did not finish"; }
assert_eq done "$(sv_state after-hang)" "the job after the hung one"
assert_eq succeeded "$(jq -r .status "$(pl_record after-hang)")" "its record"
kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
assert_no_leftovers
