#!/bin/bash
# bench/dockerfile: one Dockerfile (examples/apps/docker-c: a gcc:12 build
# stage making a static binary, FROM scratch) built RUNS times each way, in
# one run on the same bytes:
#
#   buildvm   `buildvm run` of the Dockerfile job: the base pulled from the
#             registry onto the scratch disk, the VM (TCG), buildah in it
#             (load the base, bud, export), the layout checked, pushed
#   host      `buildah bud --isolation chroot` on this host, no VM: the same
#             three commands (the base loaded from the same OCI layout into
#             a fresh storage, bud --layers=false, push to an OCI directory)
#
# and their ratio (reported: the issue sets no target); then the overhead
# outside the builder - the job's wall time minus the builder's own time,
# the guest's three buildah commands - against the buildvm.json path's: the
# same program by an equivalent steps build (make in the debian profile, the
# binary as the image's one layer, no base), its wall time minus its steps'.
#
# RUNS defaults to 3 here (BENCH_RUNS): a Dockerfile job under TCG takes
# about a minute.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
RUNS=${BENCH_RUNS:-3}
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT
command -v buildah >/dev/null || { echo "bench/dockerfile: no buildah on this host (make deps)" >&2; exit 1; }
[ -f "$BUILDVM_IMAGES/debian.json" ] || { echo "bench/dockerfile: no debian build image (make image-debian)" >&2; exit 1; }

svc_registry bench
REG=$REG_bench_ADDR
bases=${BUILDVM_BASE_IMAGES:-$BUILDVM_IMAGES/base}
"$ROOT/buildvm-image/base/push-base.sh" "$REG" base/gcc:12 >/dev/null
read -r _ _ _ layout < <("$ROOT/buildvm-image/base/build-base.sh" "$bases" gcc-12 2>/dev/null)

# --- the apps: docker-c as it is (its Dockerfile, detected), and the same
# program as a buildvm.json steps build making the same image
df=$B/df
cp -R "$ROOT/examples/apps/docker-c" "$df"
(cd "$df" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@x commit -qm bench)
steps=$B/steps
cp -R "$ROOT/examples/apps/docker-c" "$steps"
rm "$steps/Dockerfile"
cat >"$steps/buildvm.json" <<'JSON'
{"version": 1, "profile": "debian",
 "steps": [{"name": "build", "run": "make hello check CFLAGS='-O2 -Wall -Wextra -Werror' LDFLAGS=-static"},
           {"name": "install", "run": "mkdir -p out && cp hello out/"}],
 "image": {"from": "out", "to": "/", "entrypoint": ["/hello"], "cmd": ["serve"],
           "env": {"PORT": "8080"}, "user": "1000:1000", "ports": ["8080/tcp"]}}
JSON
(cd "$steps" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@x commit -qm bench)
cat >"$B/runner.json" <<JSON
{"home": "$BUILDVM_HOME", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"}}
JSON

echo "bench/dockerfile ($RUNS runs; examples/apps/docker-c, FROM gcc:12 ($(du -sh "$layout" | cut -f1) compressed) and scratch)"

# deploy NAME DIR I: one job of the app in DIR, a fresh app name each time
# (a cold mirror, every new blob uploaded); prints its record's path
deploy () {
    local app=b$1$3
    jq -n --arg c "$(git -C "$2" rev-parse HEAD)" --arg r "file://$2" --arg i "$1-$3" --arg a "$app" \
        '{id: $i, app: $a, repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
    "$BUILDVM" run --config "$B/runner.json" "$B/job.json" >"$B/run.out" 2>&1 || { cat "$B/run.out" >&2; exit 1; }
    echo "$BUILDVM_HOME/state/jobs/$app/$1-$3.json"
}
# the first of each is a warm-up (the page cache, the registry), not counted
df_recs='' steps_recs=''
for i in $(seq 0 "$RUNS"); do
    r=$(deploy df "$df" "$i")
    [ "$i" = 0 ] || df_recs="$df_recs $r"
    r=$(deploy st "$steps" "$i")
    [ "$i" = 0 ] || steps_recs="$steps_recs $r"
done

med () { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
df_med () { for r in $df_recs; do jq "$1" "$r"; done | med; }
st_med () { for r in $steps_recs; do jq "$1" "$r"; done | med; }

df_total=$(df_med .duration_ms)
df_builder=$(df_med '[.build.steps[].ms] | add')
df_overhead=$(df_med '.duration_ms - ([.build.steps[].ms] | add)')
echo "  buildvm, the Dockerfile job: per-phase medians (ms):"
for p in checkout plan base input build ingest image startable push; do
    printf '    %-10s %6d\n' "$p" "$(df_med "[.phases[\"$p\"].ms // 0] | add")"
done
printf '    %-10s %6d   (of which boot %d; the builder %d:' total "$df_total" "$(df_med '.build.boot_ms // 0')" "$df_builder"
n=$(jq '.build.steps | length' "${df_recs##* }")
for j in $(seq 0 $((n - 1))); do
    printf '%s %s %d' "$([ "$j" = 0 ] && echo ' ' || echo ',')" "$(jq -r ".build.steps[$j].name" "${df_recs##* }")" "$(df_med ".build.steps[$j].ms")"
done
echo ")"

st_total=$(st_med .duration_ms)
st_overhead=$(st_med '.duration_ms - ([.build.steps[].ms] | add)')
printf '  %-44s median %6d ms  (steps %d, boot %d)\n' "buildvm, the same program by buildvm.json steps" \
    "$st_total" "$(st_med '[.build.steps[].ms] | add')" "$(st_med '.build.boot_ms // 0')"

# --- the host's buildah, no VM: the guest's three commands, a fresh storage
# each run; each command's time in $B/host-<n>.ms
host_build () {
    local s=$B/hb t0 t1 t2 t3 id
    rm -rf "$s" && mkdir -p "$s"
    local ba=(buildah --root "$s/storage" --runroot "$s/run" --storage-driver overlay)
    t0=$(date +%s%N)
    id=$("${ba[@]}" pull -q "oci:$layout:12") && "${ba[@]}" tag "$id" docker.io/library/gcc:12 || return 1
    t1=$(date +%s%N)
    "${ba[@]}" bud --pull=never --isolation chroot --layers=false -t localhost/buildvm-out:latest "$df" || return 1
    t2=$(date +%s%N)
    "${ba[@]}" push -q --disable-compression localhost/buildvm-out:latest "oci:$s/out:latest" || return 1
    t3=$(date +%s%N)
    "${ba[@]}" rmi -a -f >/dev/null 2>&1 || true
    echo $(( (t1 - t0) / 1000000 )) >>"$B/host-1.ms"
    echo $(( (t2 - t1) / 1000000 )) >>"$B/host-2.ms"
    echo $(( (t3 - t2) / 1000000 )) >>"$B/host-3.ms"
}
median_ms "host buildah: load base + bud + push" host_build
host_total=$MEDIAN
# the warm-up's line is the first of each file
host_step () { tail -n +2 "$B/host-$1.ms" | med; }
printf '  %-44s (load %d, bud %d, push %d)\n' "" "$(host_step 1)" "$(host_step 2)" "$(host_step 3)"
rm -rf "$B/hb"

echo "  ratios (same run):"
printf '  %-44s %s\n' "buildvm ${df_total}ms / host buildah ${host_total}ms" "$(ratio "$df_total" "$host_total")"
printf '  %-44s %s\n' "the builder in the VM ${df_builder}ms / on the host" "$(ratio "$df_builder" "$host_total")"
printf '  %-44s %s\n' "overhead outside the builder: Dockerfile ${df_overhead}ms / steps ${st_overhead}ms" "$(ratio "$df_overhead" "$st_overhead")"
printf '  %-44s %s\n' "Dockerfile job ${df_total}ms / steps job ${st_total}ms" "$(ratio "$df_total" "$st_total")"
