#!/bin/bash
# buildvm serve on both queue drivers: enqueue, lease, run, ack, results;
# jobs / status / cancel; the metrics endpoint; poison messages; a job that
# always fails (dead-lettered after N attempts); SIGTERM during a build (the
# build finishes, the job is acked, the daemon exits 0).
. "$(dirname "$0")/lib.sh"

pl_registry
svc_redis q
c_ok=$(sv_app "$T/ok")
c_slow=$(sv_app "$T/slow" "sleep 4; echo slow done")

for driver in spool redis; do
    note "driver $driver"
    rm -rf "$BUILDVM_HOME"
    mkdir -p "$BUILDVM_HOME"
    if [ $driver = spool ]; then queue="spool:$BUILDVM_HOME/spool"; else queue="redis://$REDIS_q_ADDR/jobs-$RANDOM?group=runners"; fi
    port=$(svc_free_port)
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 10, max_attempts: 2, metrics: \"127.0.0.1:$port\"}"

    # --- three jobs through one daemon
    for i in 1 2 3; do
        pl_job "$T/j.json" "$driver-ok-$i" ok-$driver "$T/ok" "$c_ok"
        id=$("$BUILDVM" enqueue --config "$CONFIG" "$T/j.json")
        assert_eq "$driver-ok-$i" "$id" "enqueue prints the id"
    done
    # a second enqueue of the same id adds nothing
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    # poison: not a valid deploy request, put straight on the queue
    if [ $driver = spool ]; then
        printf '{"id": "poison-1", "app": "Not Valid", "repo": "x"}' >"$BUILDVM_HOME/spool/tmp/poison-1.json"
        mv "$BUILDVM_HOME/spool/tmp/poison-1.json" "$BUILDVM_HOME/spool/new/poison+poison-1.json"
    else
        stream=$(echo "$queue" | sed -E 's|redis://[^/]*/([^?]*).*|\1|')
        redis-cli -h 127.0.0.1 -p "${REDIS_q_ADDR#*:}" XADD "$stream" '*' job poison+poison-1 body 'not json at all' >/dev/null
    fi
    sv_start main
    sv_wait_done 4 90 || { cat "$T/serve-main.log"; fail "$driver: jobs did not finish"; }
    for i in 1 2 3; do
        assert_eq done "$(sv_state "$driver-ok-$i")" "$driver job $i state"
        [ "$(jq -r .status "$(pl_record "$driver-ok-$i")")" = succeeded ] \
            || { jq .error "$(pl_record "$driver-ok-$i")"; cat "$T/serve-main.log"; fail "$driver job $i record: not succeeded"; }
    done
    assert_eq dead "$(sv_state poison-1)" "$driver poison state"

    "$BUILDVM" jobs --config "$CONFIG" >"$T/jobs.txt"
    assert_contains "$T/jobs.txt" "poison-1"
    grep -q "dead.*poison-1" "$T/jobs.txt" || fail "$driver: poison not listed as dead"
    # the queue says done as the worker acks; the daemon counts it when it
    # reaps the worker a moment later
    for _ in $(seq 50); do
        curl -fs "http://127.0.0.1:$port/metrics" >"$T/metrics.txt"
        grep -qF 'buildvm_jobs_total{outcome="succeeded"} 3' "$T/metrics.txt" && break
        sleep 0.1
    done
    assert_contains "$T/metrics.txt" 'buildvm_jobs_total{outcome="succeeded"} 3'
    assert_contains "$T/metrics.txt" 'buildvm_phase_duration_seconds_count{phase="build"} 3'
    assert_contains "$T/metrics.txt" 'buildvm_queue_depth{state="queued"}'
    assert_contains "$T/metrics.txt" 'buildvm_vms_running'
    assert_eq ok "$(curl -fs "http://127.0.0.1:$port/healthz")" "healthz"
    grep -q "job=$driver-ok-1 app=ok-$driver event=leased" "$T/serve-main.log" || fail "no per-event log line"

    # --- with an `apps` table: unknown apps and foreign repositories are refused
    kill -TERM "$SV_PID_main"; wait "$SV_PID_main"
    printf 'not-used' >"$T/secret" && chmod 600 "$T/secret"
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 10, max_attempts: 2, metrics: \"127.0.0.1:$port\"}
               | .apps = [{app: \"ok-$driver\", repo: \"$T/ok\", secret_file: \"$T/secret\"}]"
    pl_job "$T/j.json" "$driver-unknown" stranger "$T/ok" "$c_ok"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    pl_job "$T/j.json" "$driver-foreign" ok-$driver "$T/slow" "$c_slow"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    sv_start main
    sv_wait_done 6 60 || fail "$driver: refused jobs not dead-lettered"
    assert_eq dead "$(sv_state "$driver-unknown")" "$driver: unknown app"
    assert_eq dead "$(sv_state "$driver-foreign")" "$driver: foreign repository"
    "$BUILDVM" jobs --config "$CONFIG" >"$T/jobs.txt"
    assert_contains "$T/jobs.txt" "unknown app \`stranger\`"
    assert_contains "$T/jobs.txt" "not from the requested repository"
    kill -TERM "$SV_PID_main"; wait "$SV_PID_main"
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 10, max_attempts: 2, metrics: \"127.0.0.1:$port\"}"
    sv_start main

    # --- cancel: a queued job is dead at once; a running one is stopped
    pl_job "$T/j.json" "$driver-cancel-q" ok-$driver "$T/ok" "$c_ok"
    kill -STOP "$SV_PID_main"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    "$BUILDVM" cancel --config "$CONFIG" "$driver-cancel-q" >"$T/cancel.out"
    assert_contains "$T/cancel.out" "canceled"
    kill -CONT "$SV_PID_main"
    assert_eq dead "$(sv_state "$driver-cancel-q")" "$driver canceled while queued"
    pl_job "$T/j.json" "$driver-cancel-r" slow-$driver "$T/slow" "$c_slow"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    for _ in $(seq 100); do [ "$(sv_state "$driver-cancel-r")" = running ] && break; sleep 0.1; done
    "$BUILDVM" cancel --config "$CONFIG" "$driver-cancel-r" >"$T/cancel.out"
    assert_contains "$T/cancel.out" "cancel requested"
    for _ in $(seq 100); do [ "$(sv_state "$driver-cancel-r")" = dead ] && break; sleep 0.2; done
    assert_eq dead "$(sv_state "$driver-cancel-r")" "$driver canceled while running"
    pl_tag_exists apps/slow-$driver "$c_slow" && fail "$driver: a canceled job was pushed"

    # --- SIGTERM during a build: it finishes, is acked, the daemon exits 0
    pl_job "$T/j.json" "$driver-term" slow-$driver "$T/slow" "$c_slow"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    for _ in $(seq 100); do [ "$(sv_state "$driver-term")" = running ] && break; sleep 0.1; done
    sleep 1
    kill -TERM "$SV_PID_main"
    wait "$SV_PID_main"
    assert_eq 0 "$?" "$driver: daemon exit status after SIGTERM"
    assert_eq done "$(sv_state "$driver-term")" "$driver: the running job finished"
    assert_eq succeeded "$(jq -r .status "$(pl_record "$driver-term")")" "$driver: its record"
    assert_contains "$T/serve-main.log" "event=serve.draining"

    # --- ^C twice: running jobs are canceled at once and given back (queued
    # again, no attempt spent), and the daemon exits
    sv_start main
    pl_job "$T/j.json" "$driver-int" slow-$driver "$T/slow" "$c_slow"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    for _ in $(seq 100); do [ "$(sv_state "$driver-int")" = running ] && break; sleep 0.1; done
    kill -INT "$SV_PID_main"; sleep 0.3; kill -INT "$SV_PID_main"
    start=$(date +%s)
    wait "$SV_PID_main"
    assert_eq 0 "$?" "$driver: daemon exit status after two SIGINTs"
    [ $(( $(date +%s) - start )) -lt 15 ] || fail "$driver: the second ^C did not cancel at once"
    assert_eq queued "$(sv_state "$driver-int")" "$driver: the canceled job is queued again"
    "$BUILDVM" cancel --config "$CONFIG" "$driver-int" >/dev/null
    assert_no_leftovers

    # --- a job that always fails for a reason that may pass (registry down):
    # retried, then dead-lettered after max_attempts (2)
    pl_config ".queue = \"$queue\" | .serve = {lease_seconds: 10, max_attempts: 2} | .registry.url = \"http://127.0.0.1:$(svc_free_port)\""
    pl_job "$T/j.json" "$driver-retry" ok-$driver "$T/ok" "$c_ok"
    "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
    sv_start main
    for _ in $(seq 300); do [ "$(sv_state "$driver-retry")" = dead ] && break; sleep 0.2; done
    assert_eq dead "$(sv_state "$driver-retry")" "$driver: always-failing job"
    assert_eq 2 "$(grep -c "job=$driver-retry app=ok-$driver event=leased" "$T/serve-main.log")" "$driver: attempts"
    kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
    assert_no_leftovers
done
