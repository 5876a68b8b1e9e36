#!/bin/bash
# bench/queue: jobs per minute for 20 trivial jobs (a shell app on the
# minimal profile) through `buildvm serve` at concurrency 1 and 2, and the
# queue's overhead per job - lease to VM start plus record to ack, less the
# job's own pre-VM phases (checkout, plan, input, and the wait for its
# early VM's boot), as recorded - as a
# fraction of the whole job. The spool queue; REDIS=1 adds the redis driver.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
# the job records under a runner's home (not the attestation and the SBOM
# written beside each)
records () {
    find "$1/state/jobs" -mindepth 2 -maxdepth 2 -name '*.json' \
        ! -name '*.intoto.dsse.json' ! -name '*.sbom.cdx.json' | sort
}
# records_jq HOME [JQ ARGS...] FILTER: FILTER over the array of those records
records_jq () { records "$1" | xargs cat | jq -s "${@:2}"; }
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT
N=${BENCH_JOBS:-20}

svc_registry bench
REG=$REG_bench_ADDR
app=$B/app
mkdir -p "$app"
printf '{"profile": "minimal", "steps": ["echo hello"], "image": {"from": "."}}\n' >"$app/buildvm.json"
(cd "$app" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@x commit -qm bench)
commit=$(git -C "$app" rev-parse HEAD)
drivers=(spool)
if [ -n "${REDIS:-}" ]; then svc_redis bench; drivers+=(redis); fi

echo "bench/queue ($N trivial jobs per run)"
for driver in "${drivers[@]}"; do
    for conc in 1 2; do
        home=$B/home-$driver-$conc
        mkdir -p "$home"
        if [ "$driver" = spool ]; then q="spool:$home/spool"; else q="redis://$REDIS_bench_ADDR/bench-$conc?group=g"; fi
        cat >"$B/runner.json" <<JSON
{"home": "$home", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"},
 "queue": "$q", "serve": {"lease_seconds": 60}}
JSON
        for i in $(seq 1 "$N"); do
            jq -n --arg c "$commit" --arg r "file://$app" --arg i "$i" --arg d "$driver$conc" \
                '{id: ("q-" + $d + "-" + $i), app: "bench", repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
            "$BUILDVM" enqueue --config "$B/runner.json" "$B/job.json" >/dev/null
        done
        t0=$(date +%s%N)
        "$BUILDVM" serve --config "$B/runner.json" --concurrency "$conc" --name bench >"$B/serve.log" 2>&1 &
        pid=$!
        while [ "$(grep -c 'event=worker.exit' "$B/serve.log")" -lt "$N" ]; do sleep 0.1; done
        t1=$(date +%s%N)
        kill -TERM $pid; wait $pid
        ms=$(( (t1 - t0) / 1000000 ))
        jpm=$(awk -v n="$N" -v ms="$ms" 'BEGIN { printf "%.1f", n * 60000 / ms }')
        # per job: (lease_to_vm - pre-VM phases) + record_to_ack, over total
        frac=$(for r in $(records "$home"); do
                   id=$(jq -r .id "$r")
                   line=$(grep "job=$id app=bench event=finished" "$B/serve.log")
                   l2v=$(echo "$line" | sed -E 's/.*lease_to_vm_ms=([0-9-]+).*/\1/')
                   r2a=$(echo "$line" | sed -E 's/.*record_to_ack_ms=([0-9-]+).*/\1/')
                   tot=$(echo "$line" | sed -E 's/.*total_ms=([0-9-]+).*/\1/')
                   own=$(jq '[.phases.role.ms, .phases.log.ms, .phases.checkout.ms, .phases.plan.ms, .phases.secrets.ms, .phases.input.ms, .build.early_vm.wait_ms] | map(. // 0) | add' "$r")
                   echo "$l2v $own $r2a $tot"
               done | awk '{ q = ($1 - $2) + $3; if (q < 0) q = 0; print q / $4 }' | sort -n \
                    | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
        printf '  %-6s concurrency %d: %6d ms for %d jobs = %5s jobs/min; queue overhead per job (median) %.1f%%\n' \
            "$driver" "$conc" "$ms" "$N" "$jpm" "$(awk -v f="$frac" 'BEGIN { print f * 100 }')"
    done
done

# --- the pool (issue 14), spool queue, same run: the median time from the
# lease to the agent's first build step (the record's first_step_ms) with
# no pool and with a warm pool of 2 VMs of the app's shape - one job at a
# time, each enqueued once the pool is full again - then jobs/min for N
# jobs queued at once with the pool, its VMs ready before the first
# (t0 at the first enqueue: a warm daemon's steady state).
LAT=${BENCH_LAT_JOBS:-8}
pool_cfg='[{"profile": "minimal", "size": 2}]'
median () { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
# pool_wait PORT WANT: until WANT pool VMs are ready
pool_wait () {
    local i
    for i in $(seq 600); do
        curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null | grep -qE "buildvm_pool_vms\{[^}]*state=\"ready\"\} $2\$" && return 0
        sleep 0.1
    done
    echo "bench: the pool never had $2 ready VMs" >&2; exit 1
}
# bench_serve MODE HOME CONC: runner.json and a daemon (pid in SERVE_PID, metrics port in PORT)
bench_serve () {
    local pool=[]
    [ "$1" = pool ] && pool=$pool_cfg
    PORT=$(svc_free_port)
    mkdir -p "$2"
    cat >"$B/runner.json" <<JSON
{"home": "$2", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"},
 "queue": "spool:$2/spool",
 "serve": {"lease_seconds": 60, "metrics": "127.0.0.1:$PORT", "pool": $pool}}
JSON
    "$BUILDVM" serve --config "$B/runner.json" --concurrency "$3" --name bench >"$B/serve.log" 2>&1 &
    SERVE_PID=$!
}
enqueue () { # ID
    jq -n --arg c "$commit" --arg r "file://$app" --arg i "$1" \
        '{id: $i, app: "bench", repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
    "$BUILDVM" enqueue --config "$B/runner.json" "$B/job.json" >/dev/null
}
exits () { grep -c 'event=worker.exit' "$B/serve.log" || true; }

echo
echo "bench/queue pool: lease to first build step ($LAT jobs one at a time, concurrency 1)"
declare -A FS
for mode in cold pool; do
    home=$B/home-lat-$mode
    bench_serve "$mode" "$home" 1
    for i in $(seq 1 "$LAT"); do
        [ "$mode" = pool ] && pool_wait "$PORT" 2
        enqueue "lat-$mode-$i"
        while [ "$(exits)" -lt "$i" ]; do sleep 0.05; done
    done
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID"
    hits=$(records_jq "$home" '[.[] | select(.build.pool.vm == "hit")] | length')
    FS[$mode]=$(records_jq "$home" -r '.[].first_step_ms' | median)
    printf '  %-6s lease to first step: median %6d ms  (runs: %s; %d in pool VMs)\n' "$mode" "${FS[$mode]}" \
        "$(records_jq "$home" -r '[.[].first_step_ms] | map(tostring) | join(" ")')" "$hits"
done
verdict "$(awk -v a="${FS[pool]}" 'BEGIN { printf "%d", a }')" 200 "lease to first step with a warm pool (ms)"
printf '  %-44s %s\n' "ratio pool / cold" "$(ratio "${FS[pool]}" "${FS[cold]}")"

echo "bench/queue pool: throughput ($N jobs queued at once, pool of 2, VMs ready first)"
for conc in 1 2; do
    home=$B/home-tp-$conc
    bench_serve pool "$home" "$conc"
    pool_wait "$PORT" 2
    t0=$(date +%s%N)
    for i in $(seq 1 "$N"); do enqueue "tp-$conc-$i"; done
    while [ "$(exits)" -lt "$N" ]; do sleep 0.1; done
    t1=$(date +%s%N)
    kill -TERM "$SERVE_PID"; wait "$SERVE_PID"
    ms=$(( (t1 - t0) / 1000000 ))
    hits=$(records_jq "$home" '[.[] | select(.build.pool.vm == "hit")] | length')
    printf '  pool   concurrency %d: %6d ms for %d jobs = %5s jobs/min (%d in pool VMs)\n' "$conc" "$ms" "$N" \
        "$(awk -v n="$N" -v ms="$ms" 'BEGIN { printf "%.1f", n * 60000 / ms }')" "$hits"
done
