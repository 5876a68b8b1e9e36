#!/bin/bash
# bench/pipeline: a mid-size app (about 2,000 files, 20 MB) through
# `buildvm run`, RUNS times, with per-phase medians from the job records, and
# four ratios against baselines measured in the same run on the same bytes:
#
#   checkout + input   vs  git clone (file://) of the same commit      target <= 1.5
#   ingest + image     vs  tar -c | gzip -1 | sha256sum of the same tree  target <= 1.1
#   push               vs  curl -T of the same layer to the same registry target <= 1.2
#   job overhead       vs  the bare VM round trip (bench/vm's baseline)
#                      (the job's wall time minus the build steps' own time):
#                      cold (a new app: cold mirror, the early VM), the
#                      commit fetched from a git server as a deploy does:
#                      packed, as a git host keeps it, over git's smart
#                      HTTP (git http-backend on 127.0.0.1)             target <= 2.0
#                      the same from file:// (reported: libgit2's local
#                      transport compresses the loose objects of the
#                      repository on the runner's own cores, the work a
#                      git host does once when it packs)
#                      cold from file:// without the early VM
#                      (vm.early_boot off; reported)
#                      warm mirror (the same app, a new commit), no pool (reported)
#                      warm mirror and a pool VM (`buildvm serve`)      target <= 1.5
#   sealed store write vs  plain store write of the same 64 MiB           target <= 1.3
#                      (encryption at rest: build/bench/store-write, the
#                      `dir:` store with and without store_txn_seal, runs
#                      interleaved in one process; only the store is timed)
#   S3 artifact upload vs  s3cmd put of the same 64 MiB to the same store  target <= 1.2
#                      (bench/s3.sh, against a real RADOS Gateway)
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
SVC_DIR=$B/svc
http_pid=
trap 'svc_stop_all; [ -z "$http_pid" ] || kill "$http_pid" 2>/dev/null; rm -rf "$B"' EXIT

svc_registry bench
REG=$REG_bench_ADDR

# --- the app: 2,000 files in 50 directories, 20 MB, half of it compressible
app=$B/app
python3 - "$app" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))).encode() for _ in range(500)]
for i in range(2000):
    d = os.path.join(root, "data", "d%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    size = 10485 if i % 2 else 10486
    if i % 2:
        data = rnd.randbytes(size)
    else:
        out = bytearray()
        while len(out) < size:
            out += rnd.choice(words) + b" "
        data = bytes(out[:size])
    with open(os.path.join(d, "f%04d.txt" % i), "wb") as f:
        f.write(data)
PY
cat >"$app/buildvm.json" <<'JSON'
{"profile": "minimal",
 "steps": [{"name": "build", "run": "cp -a data dist"}],
 "resources": {"memory_mib": 512, "disk_mib": 512},
 "image": {"from": "dist", "to": "/app"}}
JSON
(cd "$app" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@x commit -qm bench)
commit=$(git -C "$app" rev-parse HEAD)
# the runner's default shape is the app's, as an operator sets it to what
# most apps use: the early VM (booted as each job starts, during its
# checkout) fits; runner-noearly.json is the same runner without it
cat >"$B/runner.json" <<JSON
{"home": "$BUILDVM_HOME", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"},
 "defaults": {"memory_mib": 512, "disk_mib": 512}}
JSON
jq '.vm.early_boot = false' "$B/runner.json" >"$B/runner-noearly.json"
jq '.checkout.allow_addresses = ["127.0.0.1/32"]' "$B/runner.json" >"$B/runner-http.json"

# --- the same commit as a git host serves it: a bare copy, packed (a hosted
# repository is: its fetches reuse the pack's compressed objects instead of
# compressing loose ones, as libgit2's local transport does for file://),
# over git's smart HTTP on 127.0.0.1 (tests/lib/git-http-server.py runs the
# real `git http-backend` for each request)
git clone -q --bare "$app" "$B/git-srv/app.git" && git -C "$B/git-srv/app.git" repack -adq
python3 "$ROOT/tests/lib/git-http-server.py" "$B/git-srv" "$B/http.port" "$B/http.log" &
http_pid=$!
for _ in $(seq 50); do [ -s "$B/http.port" ] && break; sleep 0.1; done
[ -s "$B/http.port" ] || { echo "bench: the git HTTP server did not start" >&2; exit 1; }
http_url=http://127.0.0.1:$(cat "$B/http.port")/app.git

echo "bench/pipeline ($RUNS runs, $(du -sh "$app/data" | cut -f1) in $(find "$app/data" -type f | wc -l) files)"

# --- the pipeline, RUNS times: a fresh app name each time, so the mirror is
# cold and every blob is uploaded; each run also without the early VM
# (apps cold<i>) and fetched from the git server (apps http<i>), interleaved
for i in $(seq 0 "$RUNS"); do
    for v in bench cold http; do
        cfg=$B/runner.json url=file://$app
        case $v in
            cold) cfg=$B/runner-noearly.json ;;
            http) cfg=$B/runner-http.json url=$http_url ;;
        esac
        jq -n --arg c "$commit" --arg r "$url" --arg i "$i" --arg v "$v" \
            '{id: ($v + "-" + $i), app: ($v + $i), repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
        "$BUILDVM" run --config "$cfg" "$B/job.json" >/dev/null || { "$BUILDVM" run --config "$cfg" "$B/job.json"; exit 1; }
    done
done
recs=$(for i in $(seq 1 "$RUNS"); do echo "$BUILDVM_HOME/state/jobs/bench$i/bench-$i.json"; done)
noearly_recs=$(for i in $(seq 1 "$RUNS"); do echo "$BUILDVM_HOME/state/jobs/cold$i/cold-$i.json"; done)
http_recs=$(for i in $(seq 1 "$RUNS"); do echo "$BUILDVM_HOME/state/jobs/http$i/http-$i.json"; done)

med () { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
phase_med () { for r in $recs; do jq "[.phases[\"$1\"].ms // 0] | add" "$r"; done | med; }
expr_med () { for r in $recs; do jq "$1" "$r"; done | med; }

echo "  per-phase medians (ms):"
for p in role log checkout plan input build ingest image push artifacts tag; do
    printf '    %-10s %6d\n' "$p" "$(phase_med "$p")"
done
build_steps=$(expr_med '[.build.steps[].ms] | add')
boot=$(expr_med '.build.boot_ms')
total=$(expr_med '.duration_ms')
printf '    %-10s %6d   (of which boot %d, build steps %d; the agent, start to result, %d)\n' total "$total" "$boot" "$build_steps" \
    "$(expr_med '.build.agent_ms // 0')"
printf '    %-10s %6d   (%d of %d in the early VM: its boot %d, of which the build phase waited %d)\n' "early VM" \
    "$(expr_med '.phases.boot.ms')" "$(for r in $recs; do jq -r '.build.early_vm.used' "$r"; done | grep -c true)" "$RUNS" \
    "$(expr_med '.build.early_vm.boot_ms // 0')" "$(expr_med '.build.early_vm.wait_ms // 0')"

checkout=$(expr_med '.phases.checkout.ms + .phases.input.ms')
layer=$(expr_med '.phases.ingest.ms + .phases.image.ms')
push=$(expr_med '.phases.push.ms')
overhead=$(expr_med '.duration_ms - ([.build.steps[].ms] | add)')
noearly_overhead=$(for r in $noearly_recs; do jq '.duration_ms - ([.build.steps[].ms] | add)' "$r"; done | med)
noearly_total=$(for r in $noearly_recs; do jq '.duration_ms' "$r"; done | med)
printf '  %-44s median %6d ms  (total %d)\n' "cold, without the early VM: job overhead" "$noearly_overhead" "$noearly_total"
http_med () { for r in $http_recs; do jq "$1" "$r"; done | med; }
http_overhead=$(http_med '.duration_ms - ([.build.steps[].ms] | add)')
printf '  %-44s median %6d ms  (total %d; checkout %d; %d of %d in the early VM, which the build phase waited %d ms for)\n' \
    "cold, from the git server: job overhead" "$http_overhead" "$(http_med .duration_ms)" "$(http_med .phases.checkout.ms)" \
    "$(for r in $http_recs; do jq -r '.build.early_vm.used' "$r"; done | grep -c true)" "$RUNS" "$(http_med '.build.early_vm.wait_ms // 0')"

# --- baselines on the same bytes
median_ms "git clone file:// (baseline)" sh -c "rm -rf '$B/clone' && git clone -q 'file://$app' '$B/clone'"
git_ms=$MEDIAN
median_ms "git clone from the git server (baseline)" sh -c "rm -rf '$B/clone' && git clone -q '$http_url' '$B/clone'"
git_http_ms=$MEDIAN
rm -rf "$B/dist" && cp -a "$app/data" "$B/dist"
median_ms "tar -c | gzip -1 | sha256sum (baseline)" sh -c "tar -C '$B/dist' -c . | gzip -1 | sha256sum >/dev/null"
tar_ms=$MEDIAN
layer_digest=$(jq -r '.image.digest' "$BUILDVM_HOME/state/jobs/bench1/bench-1.json")
blob=$(curl -fs "http://$REG/v2/apps/bench1/manifests/$layer_digest" -H 'Accept: application/vnd.oci.image.manifest.v1+json' | jq -r '.layers[-1].digest')
curl -fs "http://$REG/v2/apps/bench1/blobs/$blob" -o "$B/layer.tar.gz"
n=0
curl_push () {
    n=$((n + 1))
    loc=$(curl -fsi -X POST "http://$REG/v2/curl$n-$RANDOM/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    case $loc in http*) ;; *) loc="http://$REG$loc" ;; esac
    curl -fs -T "$B/layer.tar.gz" "$loc&digest=$blob" -o /dev/null
}
median_ms "curl -T of the layer (baseline)" curl_push
curl_ms=$MEDIAN
manifest=$BUILDVM_IMAGES/minimal.json
kernel=$BUILDVM_IMAGES/$(jq -r .kernel.path "$manifest")
rootfs=$BUILDVM_IMAGES/$(jq -r .rootfs.path "$manifest")
median_ms "bare VM round trip (baseline)" qemu-system-x86_64 -M microvm,acpi=off -accel tcg -cpu max -smp 1 -m 512M \
    -nodefaults -no-user-config -display none -no-reboot -kernel "$kernel" \
    -append "console=ttyS0 quiet panic=-1 reboot=t root=/dev/vda ro rootfstype=ext4 init=/buildvm/agent" \
    -serial null -drive "id=rootfs,file=$rootfs,format=raw,if=none,readonly=on" \
    -device virtio-blk-device,drive=rootfs,serial=rootfs
bare_ms=$MEDIAN
STORE_WRITE=${STORE_WRITE:-$ROOT/build/bench/store-write}
if [ -x "$STORE_WRITE" ]; then "$STORE_WRITE" "$B/seal-store" 64 16 "$RUNS" >"$B/seal.txt"; else echo "plain_ms 1" >"$B/seal.txt"; echo "sealed_ms 1" >>"$B/seal.txt"; echo "  (no $STORE_WRITE: \`make bench\` builds it; the seal ratio is skipped)"; fi
plain_ms=$(awk '$1 == "plain_ms" {print $2}' "$B/seal.txt")
sealed_ms=$(awk '$1 == "sealed_ms" {print $2}' "$B/seal.txt")
printf '  %-44s median %6d ms\n' "store write, 64 MiB in 16 objects (plain)" "$plain_ms" "store write, the same, sealed" "$sealed_ms"

# --- the warm cases (issue 14): the same app again and again, a new commit
# each time (one file changed, as a push would), so the mirror is warm and
# the fetch incremental; first through `buildvm run` (a cold boot), then
# through `buildvm serve` with a pool of one pre-booted VM of the app's
# shape, one job at a time, each enqueued once the pool VM is ready. The
# first job of each fills the mirror and is not counted.
warm_commit () { # -> COMMIT: a new commit on the bench app
    echo "$1" >>"$app/data/d00/f0000.txt"
    git -C "$app" -c user.name=b -c user.email=b@x commit -qam "$1"
    COMMIT=$(git -C "$app" rev-parse HEAD)
}
warm_job () { # ID APP
    jq -n --arg c "$COMMIT" --arg r "file://$app" --arg i "$1" --arg a "$2" \
        '{id: $i, app: $a, repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
}
for i in $(seq 0 "$RUNS"); do
    warm_commit "warm $i"
    warm_job "warm-$i" warm
    "$BUILDVM" run --config "$B/runner.json" "$B/job.json" >/dev/null || { "$BUILDVM" run --config "$B/runner.json" "$B/job.json"; exit 1; }
done
warm_recs=$(for i in $(seq 1 "$RUNS"); do echo "$BUILDVM_HOME/state/jobs/warm/warm-$i.json"; done)
warm_med () { for r in $warm_recs; do jq "$1" "$r"; done | med; }
warm_overhead=$(warm_med '.duration_ms - ([.build.steps[].ms] | add)')
printf '  %-44s median %6d ms  (total %d; checkout %d, input %d, build %d: boot %d, agent %d)\n' "warm mirror, early VM: job overhead" \
    "$warm_overhead" "$(warm_med .duration_ms)" "$(warm_med .phases.checkout.ms)" "$(warm_med .phases.input.ms)" "$(warm_med .phases.build.ms)" "$(warm_med .build.boot_ms)" \
    "$(warm_med '.build.agent_ms // 0')"

PORT=$(svc_free_port)
phome=$B/home-pool
mkdir -p "$phome"
cat >"$B/runner-pool.json" <<JSON
{"home": "$phome", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"},
 "queue": "spool:$phome/spool", "defaults": {"disk_mib": 512},
 "serve": {"lease_seconds": 60, "metrics": "127.0.0.1:$PORT",
           "pool": [{"profile": "minimal", "memory_mib": 512, "size": 1}]}}
JSON
"$BUILDVM" serve --config "$B/runner-pool.json" --concurrency 1 --name bench >"$B/serve.log" 2>&1 &
serve_pid=$!
pool_ready () {
    local i
    for i in $(seq 900); do
        curl -fs "http://127.0.0.1:$PORT/metrics" 2>/dev/null | grep -qE 'buildvm_pool_vms\{[^}]*state="ready"\} 1$' && return 0
        sleep 0.1
    done
    echo "bench: the pool VM was never ready" >&2; exit 1
}
for i in $(seq 0 "$RUNS"); do
    pool_ready
    warm_commit "pool $i"
    warm_job "pool-$i" pool
    "$BUILDVM" enqueue --config "$B/runner-pool.json" "$B/job.json" >/dev/null
    while [ "$(grep -c 'event=worker.exit' "$B/serve.log" || true)" -le "$i" ]; do sleep 0.05; done
done
kill -TERM "$serve_pid"; wait "$serve_pid" || true
pool_recs=$(for i in $(seq 1 "$RUNS"); do echo "$phome/state/jobs/pool/pool-$i.json"; done)
pool_med () { for r in $pool_recs; do jq "$1" "$r"; done | med; }
pool_hits=$(for r in $pool_recs; do jq -r '.build.pool.vm // "none"' "$r"; done | grep -c '^hit$' || true)
pool_overhead=$(pool_med '.duration_ms - ([.build.steps[].ms] | add)')
printf '  %-44s median %6d ms  (total %d; checkout %d, input %d, build %d: disks %d, agent %d; %d of %d in the pool VM)\n' "warm mirror, pool VM: job overhead" \
    "$pool_overhead" "$(pool_med .duration_ms)" "$(pool_med .phases.checkout.ms)" "$(pool_med .phases.input.ms)" "$(pool_med .phases.build.ms)" \
    "$(pool_med '.build.disks_ms // 0')" "$(pool_med '.build.agent_ms // 0')" "$pool_hits" "$RUNS"

echo "  ratios (same run):"
verdict "$(ratio "$checkout" "$git_ms")" 1.5 "checkout+input ${checkout}ms / git clone ${git_ms}ms"
verdict "$(ratio "$layer" "$tar_ms")" 1.1 "layer ${layer}ms / tar|gzip|sha256 ${tar_ms}ms"
verdict "$(ratio "$push" "$curl_ms")" 1.2 "push ${push}ms / curl -T ${curl_ms}ms"
verdict "$(ratio "$http_overhead" "$bare_ms")" 2.0 "job overhead, cold (git server) ${http_overhead}ms / bare VM ${bare_ms}ms"
printf '  %-44s %s\n' "job overhead, cold from file:// ${overhead}ms / bare VM" "$(ratio "$overhead" "$bare_ms")"
printf '  %-44s %s\n' "job overhead, cold from file:// without the early VM ${noearly_overhead}ms / bare VM" "$(ratio "$noearly_overhead" "$bare_ms")"
printf '  %-44s %s\n' "checkout+input from the git server / its git clone ${git_http_ms}ms" "$(ratio "$(http_med '.phases.checkout.ms + .phases.input.ms')" "$git_http_ms")"
printf '  %-44s %s\n' "job overhead, cold from file://: early VM / none" "$(ratio "$overhead" "$noearly_overhead")"
printf '  %-44s %s\n' "job overhead, warm mirror ${warm_overhead}ms / bare VM" "$(ratio "$warm_overhead" "$bare_ms")"
verdict "$(ratio "$pool_overhead" "$bare_ms")" 1.5 "job overhead, warm+pool ${pool_overhead}ms / bare VM"
verdict "$(ratio "$sealed_ms" "$plain_ms")" 1.3 "sealed write ${sealed_ms}ms / plain ${plain_ms}ms"
echo
[ -n "${BENCH_NO_S3:-}" ] || "$ROOT/bench/s3.sh"
