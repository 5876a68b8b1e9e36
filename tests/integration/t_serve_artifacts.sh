#!/bin/bash
# A successful build with many artifacts, under `buildvm serve` on both queue
# drivers (issue 11, item 5). The record used to carry the whole artifact
# index: with 6,000 artifacts it passed the queue's 1 MiB record cap, the ack
# failed, the worker counted as crashed and the job was built, pushed and
# tagged again, then dead-lettered. Now:
#   - 6,000 artifacts: exactly one build and one push, a small record with a
#     summary (count, bytes, the index's path and digest), status succeeded;
#   - over limits.max_artifacts: one clear failure, not retried;
#   - an ack that fails after the tag: no second build, push or tag.
. "$(dirname "$0")/lib.sh"
trap 'rc=$?; chattr -i "$BUILDVM_HOME/spool/done" 2>/dev/null; (exit $rc); _cleanup' EXIT

pl_registry
svc_redis q
N=6000
app=$T/many
mkdir -p "$app/dist"
echo hello >"$app/dist/hello.txt"
# long-ish names, as real builds have: the old record held ~190 bytes per artifact
jq -n --arg n "$N" '{profile: "minimal", image: {from: "dist"}, artifacts: ["out"],
    steps: ["mkdir -p out && i=0 && while [ $i -lt " + $n + " ]; do echo $i >out/report-part-$i.txt; i=$((i+1)); done"]}' \
    >"$app/buildvm.json"
c=$(pl_repo "$app")

for driver in spool redis; do
    note "driver $driver"
    rm -rf "$BUILDVM_HOME"
    mkdir -p "$BUILDVM_HOME"
    if [ $driver = spool ]; then queue="spool:$BUILDVM_HOME/spool"; else queue="redis://$REDIS_q_ADDR/arts-$RANDOM?group=runners"; fi
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 30, max_attempts: 3}"

    # --- many artifacts: one build, one push, a small record, succeeded
    pl_job "$T/j.json" "$driver-many" many-$driver "$app" "$c"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    sv_start main
    sv_wait_done 1 600 || { tail -30 "$T/serve-main.log"; fail "$driver: the job did not finish"; }
    # the worker exits after the ack; let the daemon reap it (and release it, were it "crashed")
    for _ in $(seq 100); do grep -q "job=$driver-many .*event=worker.exit" "$T/serve-main.log" && break; sleep 0.2; done
    sleep 1
    kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
    assert_eq 1 "$(grep -c "job=$driver-many app=many-$driver event=leased" "$T/serve-main.log")" "$driver: builds"
    assert_eq 1 "$(grep -c "job=$driver-many app=many-$driver event=phase phase=push" "$T/serve-main.log")" "$driver: pushes"
    assert_not_contains "$T/serve-main.log" "event=worker.crashed"
    assert_eq done "$(sv_state "$driver-many")" "$driver: queue state"
    rec=$(pl_record "$driver-many")
    assert_eq succeeded "$(jq -r .status "$rec")" "$driver: record status"
    size=$(stat -c %s "$rec")
    [ "$size" -lt 65536 ] || fail "$driver: the record is $size bytes"
    assert_eq "$N" "$(jq -r .artifacts.count "$rec")" "$driver: artifact count in the record"
    idx=$BUILDVM_HOME/artifacts/$(jq -r .artifacts.index.path "$rec")
    [ -f "$idx" ] || fail "$driver: the record's index path $idx does not exist"
    assert_eq "sha256:$(sha256sum "$idx" | cut -d' ' -f1)" "$(jq -r .artifacts.index.digest "$rec")" "$driver: index digest"
    assert_eq "$N" "$(jq '.objects | length' "$idx")" "$driver: objects in the index"
    assert_eq "$(jq '[.objects[].size] | add' "$idx")" "$(jq .artifacts.bytes "$rec")" "$driver: artifact bytes"
    pl_tag_exists apps/many-$driver "$c" || fail "$driver: not pushed"
    "$BUILDVM" status --config "$CONFIG" "$driver-many" >"$T/status.txt"
    assert_contains "$T/status.txt" "succeeded"
    assert_no_leftovers

    # --- over the cap: one clear failure, not retried, nothing committed
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 30, max_attempts: 3} | .limits.max_artifacts = 1000"
    pl_job "$T/j.json" "$driver-over" over-$driver "$app" "$c"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    sv_start main
    sv_wait_done 2 600 || { tail -30 "$T/serve-main.log"; fail "$driver: the job over the cap did not finish"; }
    sleep 1
    kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
    assert_eq 1 "$(grep -c "job=$driver-over app=over-$driver event=leased" "$T/serve-main.log")" "$driver: attempts over the cap"
    rec=$(pl_record "$driver-over")
    assert_eq failed "$(jq -r .status "$rec")" "$driver: over the cap: status"
    assert_eq limit "$(jq -r .error.code "$rec")" "$driver: over the cap: error code"
    jq -r .error.message "$rec" | grep -q "more than 1000 artifacts (limits.max_artifacts)" \
        || fail "$driver: unclear error: $(jq -r .error.message "$rec")"
    [ ! -e "$BUILDVM_HOME/artifacts/apps/over-$driver" ] || fail "$driver: artifacts committed over the cap"
    pl_tag_exists apps/over-$driver "$c" && fail "$driver: pushed over the cap"
    assert_no_leftovers
done

# --- an ack that fails after the tag is never a rebuild: with the spool's
# done/ refusing new files (immutable, which binds root too), the worker
# retries the ack, gives up without releasing the job, and the next attempt
# acknowledges the recorded success without building, pushing or tagging
note "an ack that fails after the tag"
rm -rf "$BUILDVM_HOME"; mkdir -p "$BUILDVM_HOME"
c_small=$(sv_app "$T/small")
pl_config ".queue = \"spool:$BUILDVM_HOME/spool\" | .serve = {lease_seconds: 3, max_attempts: 3}"
pl_job "$T/j.json" ack-lost small "$T/small" "$c_small"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
chattr +i "$BUILDVM_HOME/spool/done"
sv_start main
for _ in $(seq 300); do grep -q -e "job=ack-lost .*event=ack.failed" -e "job=ack-lost .*event=worker.crashed" "$T/serve-main.log" && break; sleep 0.2; done
chattr -i "$BUILDVM_HOME/spool/done"
sv_wait_done 1 60 || { tail -30 "$T/serve-main.log"; fail "the job with a lost ack did not finish"; }
sleep 1
kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
assert_eq done "$(sv_state ack-lost)" "lost ack: queue state"
assert_eq succeeded "$(jq -r .status "$(pl_record ack-lost)")" "lost ack: record"
assert_eq 1 "$(grep -c "job=ack-lost app=small event=phase phase=build" "$T/serve-main.log")" "lost ack: builds"
assert_eq 1 "$(grep -c "job=ack-lost app=small event=phase phase=tag" "$T/serve-main.log")" "lost ack: tags"
assert_contains "$T/serve-main.log" "event=ack.recovered"
assert_not_contains "$T/serve-main.log" "event=worker.crashed"
assert_no_leftovers
