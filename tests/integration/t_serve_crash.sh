#!/bin/bash
# Kill the runner with SIGKILL at each labelled point of a job, then start a
# new one: every job ends with exactly one terminal record, its tag is
# correct, and no VMM process, disk or work directory is left.
. "$(dirname "$0")/lib.sh"
# fault points exist only in the test build
need_test_build
BUILDVM=$BUILDVM_TEST
VMM_NAME_PREFIX=buildvm-job- # the job ids below: job-$point

pl_registry
svc_redis crash
c=$(sv_app "$T/app" "echo crash test")

for driver in spool redis; do
for point in after-lease checkout build after-blobs after-manifest after-tag after-record; do
    rm -rf "$BUILDVM_HOME"; mkdir -p "$BUILDVM_HOME"
    if [ $driver = spool ]; then queue="spool:$BUILDVM_HOME/spool"; else queue="redis://$REDIS_crash_ADDR/crash-$point?group=runners"; fi
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 3, max_attempts: 5}"
    app=crash-$driver-${point}
    pl_job "$T/j.json" "job-$point" "$app" "$T/app" "$c"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null

    BUILDVM_FAULT=$point "$BUILDVM" serve --config "$CONFIG" --name r1 >"$T/serve-1.log" 2>&1 &
    pid=$!
    set +e; wait $pid; rc=$?; set -e
    [ "$rc" = 137 ] || { cat "$T/serve-1.log"; fail "$point: the runner was not killed (exit $rc)"; }
    grep -q "point=$point" "$T/serve-1.log" || fail "$point: the fault point was not reached"
    sleep 0.5 # the workers and VMMs die with their parent (PR_SET_PDEATHSIG)

    # a new runner: it recovers what the dead one left and finishes the job
    sv_start r1
    sv_wait_done 1 120 || { cat "$T/serve-r1.log"; fail "$point: the job never finished"; }
    kill -TERM "$SV_PID_r1"; wait "$SV_PID_r1"

    assert_eq done "$(sv_state "job-$point")" "$point: final state"
    rec=$(pl_record "job-$point")
    assert_eq succeeded "$(jq -r .status "$rec")" "$point: record status"
    terminal=$("$BUILDVM" jobs --config "$CONFIG" --json | jq --arg j "job-$point" '[(.done + .dead)[] | select(.job == $j)] | length')
    assert_eq 1 "$terminal" "$driver/$point: terminal records"
    digest=$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/$app:$c" | jq -r .Digest)
    assert_eq "$(jq -r .image.digest "$rec")" "$digest" "$point: the tag points at the recorded image"
    assert_no_leftovers
    [ -z "$(ls -A "$BUILDVM_HOME/state/serve/r1/journal")" ] || fail "$point: journal entries left"
    note "$driver/$point: recovered, attempt $(jq -r .attempt "$rec")"
done
done
