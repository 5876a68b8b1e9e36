#!/bin/bash
# bench/s3: the artifact upload to S3 (a real RADOS Gateway on 127.0.0.1,
# tests/services/ceph-rgw.sh) against `s3cmd put` of the same 64 MiB to the
# same bucket, runs interleaved in one run:
#
#   buildvm's upload   vs  s3cmd put                                target <= 1.2
#
# buildvm's side is build/test/s3-tool put: one store transaction as a job's
# artifacts have (STS AssumeRole, sealed, multipart staged, completed, the
# index written), the same code as `buildvm run`. s3cmd uploads with the
# bucket owner's key, 15 MiB multipart chunks, MD5s, no sealing.
# Called by bench/pipeline.sh; alone: bench/run.sh s3.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT
TOOL=${S3_TOOL:-$ROOT/build/test/s3-tool}

svc_ceph_rgw_start
svc_ceph_rgw_wait 180
printf '{"access_key_id": "%s", "secret_access_key": "%s"}\n' "$RGW_RUNNER_KEY" "$RGW_RUNNER_SECRET" >"$B/s3.key"
chmod 600 "$B/s3.key"
spec="s3://$RGW_BUCKET/bench?endpoint=$RGW_ENDPOINT&region=$RGW_REGION&role=$RGW_ROLE_ARN&credentials=$B/s3.key&owner=$RGW_OWNER_ID&sse=AES256"
head -c $((64 << 20)) /dev/urandom >"$B/blob"

echo "bench/s3 ($RUNS runs, 64 MiB, one object)"
ours=() theirs=()
for ((i = 0; i <= RUNS; i++)); do
    t0=$(date +%s%N)
    S3_TOOL_SEAL=1 "$TOOL" put "$spec" "apps/bench/c$i/" "apps/bench/c$i/blob" "$B/blob" >/dev/null
    t1=$(date +%s%N)
    s3cmd -c "$RGW_S3CFG" put "$B/blob" "s3://$RGW_BUCKET/bench-s3cmd/c$i/blob" >/dev/null 2>&1
    t2=$(date +%s%N)
    # the memstore OSD holds everything in memory: drop this run's objects
    s3cmd -c "$RGW_S3CFG" del -r "s3://$RGW_BUCKET/bench/apps/bench/c$i/" "s3://$RGW_BUCKET/bench-s3cmd/c$i/" >/dev/null 2>&1 || true
    [ "$i" -eq 0 ] && continue # warm-up
    ours+=($(( (t1 - t0) / 1000000 )))
    theirs+=($(( (t2 - t1) / 1000000 )))
done
med () { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
ours_ms=$(med "${ours[@]}")
theirs_ms=$(med "${theirs[@]}")
printf '  %-44s median %6d ms  (runs: %s)\n' "buildvm upload (sealed, STS, staged)" "$ours_ms" "${ours[*]}"
printf '  %-44s median %6d ms  (runs: %s)\n' "s3cmd put (baseline)" "$theirs_ms" "${theirs[*]}"
echo "  ratios (same run):"
verdict "$(ratio "$ours_ms" "$theirs_ms")" 1.2 "S3 upload ${ours_ms}ms / s3cmd put ${theirs_ms}ms"
