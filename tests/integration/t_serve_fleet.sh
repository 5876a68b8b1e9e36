#!/bin/bash
# Two runners on one queue (spool, then redis) with 20 jobs: every job runs
# exactly once to completion and none is lost. Then a runner paused past its
# lease: another takes the job over, and the paused one's late push is fenced
# off (no tag, no record, no ack of its own).
. "$(dirname "$0")/lib.sh"

pl_registry
svc_redis fleet
c=$(sv_app "$T/app" "echo fleet")

for driver in ${FLEET_DRIVERS-spool redis}; do
    rm -rf "$BUILDVM_HOME"; mkdir -p "$BUILDVM_HOME"
    if [ $driver = spool ]; then queue="spool:$BUILDVM_HOME/spool"; else queue="redis://$REDIS_fleet_ADDR/fleet-$RANDOM?group=runners"; fi
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 20}"
    for i in $(seq -w 1 20); do
        pl_job "$T/j.json" "$driver-$i" "fleet-$driver" "$T/app" "$c"
        "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    done
    sv_start a --concurrency 1
    sv_start b --concurrency 1
    sv_wait_done 20 300 || { tail "$T/serve-a.log" "$T/serve-b.log"; fail "$driver: not all jobs finished"; }
    kill -TERM "$SV_PID_a" "$SV_PID_b"; wait "$SV_PID_a" "$SV_PID_b"
    for i in $(seq -w 1 20); do
        id=$driver-$i
        assert_eq done "$(sv_state "$id")" "$id state"
        assert_eq 1 "$(jq -r .attempt "$(pl_record "$id")")" "$id attempt"
        n=$(cat "$T/serve-a.log" "$T/serve-b.log" | grep -c "job=$id app=fleet-$driver event=leased")
        assert_eq 1 "$n" "$id leases"
    done
    na=$(grep -c "event=leased" "$T/serve-a.log"); nb=$(grep -c "event=leased" "$T/serve-b.log")
    note "$driver: runner a ran $na jobs, runner b ran $nb"
    [ $((na + nb)) = 20 ] || fail "$driver: $na + $nb leases for 20 jobs"
    assert_no_leftovers
done

# --- a runner paused past its lease is fenced off
rm -rf "$BUILDVM_HOME"; mkdir -p "$BUILDVM_HOME"
pl_config '.serve = {lease_seconds: 3}'
cs=$(sv_app "$T/slow" "sleep 3; echo slow")
pl_job "$T/j.json" paused-1 paused "$T/slow" "$cs"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_takeover paused-1 paused
assert_eq 2 "$(jq -r .attempt "$T/takeover-record.json")" "the record is the newer attempt's"
digest=$(jq -r .image.digest "$T/takeover-record.json")
rec=$(pl_record paused-1)
grep -q "job=paused-1 app=paused event=fenced" "$T/serve-a.log" || { cat "$T/serve-a.log"; fail "the paused runner was not fenced"; }
assert_eq 2 "$(jq -r .attempt "$rec")" "the late attempt wrote no record"
assert_eq "$digest" "$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/paused:$cs" | jq -r .Digest)" "the tag"
kill -TERM "$SV_PID_a" "$SV_PID_b"; wait "$SV_PID_a" "$SV_PID_b" || true
assert_no_leftovers
