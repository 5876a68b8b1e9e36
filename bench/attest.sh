#!/bin/bash
# bench/attest: what signed provenance costs a deploy and a verifier. An app
# of 2,000 files (8 MB) with a 1,000-package package-lock.json goes through
# `buildvm run` RUNS times; the attest phase (SBOM of every file, the
# statement, the signature, two artifacts and the referrers tag) is compared
# with the push phase of the same jobs, and `buildvm verify` with `skopeo
# inspect` of the same image, both measured in this run:
#
#   attest phase   vs  the same uploads (the SBOM and the envelope as
#                      blobs, the empty config, two artifact manifests,
#                      the referrers tag read and written) from one Python
#                      process to the same registry                target <= 1.5
#                      (the rest is the SBOM, the statement and the signature)
#   attest phase   vs  push phase of the same image             (reported)
#   buildvm verify vs  skopeo inspect of the same reference     target <= 2.0
#                      (verify reads four documents, the image manifest,
#                      the referrers tag, the attestation's manifest and
#                      its envelope, and checks a signature; inspect reads
#                      two or three)
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT

svc_registry bench
REG=$REG_bench_ADDR

app=$B/app
python3 - "$app" <<'PY'
import json, os, random, sys
root = sys.argv[1]
rnd = random.Random(16)
for i in range(2000):
    d = os.path.join(root, "data", "d%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
        f.write(rnd.randbytes(4096))
pkgs = {"": {"name": "bench"}}
for i in range(1000):
    pkgs["node_modules/pkg-%04d" % i] = {"version": "1.0.%d" % i,
        "resolved": "https://registry.invalid/pkg-%04d.tgz" % i,
        "integrity": "sha512-" + "A" * 86 + "=="}
json.dump({"name": "bench", "lockfileVersion": 3, "packages": pkgs}, open(os.path.join(root, "package-lock.json"), "w"))
PY
cat >"$app/buildvm.json" <<'JSON'
{"profile": "minimal",
 "steps": [{"name": "build", "run": "cp -a data dist"}],
 "resources": {"memory_mib": 512, "disk_mib": 512},
 "image": {"from": "dist", "to": "/app"}}
JSON
(cd "$app" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@x commit -qm bench)
commit=$(git -C "$app" rev-parse HEAD)
cat >"$B/runner.json" <<JSON
{"home": "$BUILDVM_HOME", "images": {"dir": "$BUILDVM_IMAGES"}, "registry": {"url": "http://$REG"},
 "attest": {"builder_id": "https://bench.invalid/runner"}}
JSON

echo "bench/attest ($RUNS runs, $(find "$app/data" -type f | wc -l) files, 1000 locked packages)"

# a fresh app each time: every blob is uploaded, every referrers tag is new
for i in $(seq 0 "$RUNS"); do
    jq -n --arg c "$commit" --arg r "file://$app" --arg i "$i" \
        '{id: ("bench-" + $i), app: ("bench" + $i), repo: $r, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"
    "$BUILDVM" run --config "$B/runner.json" "$B/job.json" >/dev/null 2>&1 || { "$BUILDVM" run --config "$B/runner.json" "$B/job.json"; exit 1; }
done
phase_median () {
    local p=$1
    for i in $(seq 1 "$RUNS"); do
        jq -r --arg p "$p" '.phases[$p].ms' "$BUILDVM_HOME/state/jobs/bench$i/bench-$i.json"
    done | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'
}
attest=$(phase_median attest)
push=$(phase_median push)
printf '  %-44s median %6d ms\n' "attest phase" "$attest" "push phase (same jobs)" "$push"
files=$(jq '.components | map(select(.type == "file")) | length' "$BUILDVM_HOME/state/jobs/bench1/bench-1.sbom.cdx.json")
printf '  %-44s %d files, %d packages\n' "SBOM of one job" "$files" \
    "$(jq '.components | map(select(.type == "library")) | length' "$BUILDVM_HOME/state/jobs/bench1/bench-1.sbom.cdx.json")"
printf '  %-44s %s\n' "attest / push (reported)" "$(ratio "$attest" "$([ "$push" -gt 0 ] && echo "$push" || echo 1)")"

# the baseline: the same bytes up the same requests from one Python process
# (http.client, one connection, no JSON work but the manifests'), timed
# inside it, to a fresh repository each run as for each job above
d1=$BUILDVM_HOME/state/jobs/bench1
base=$(python3 - "$REG" "$RUNS" "$(jq -r .image.digest "$d1/bench-1.json")" \
    "$d1/bench-1.sbom.cdx.json" "$d1/bench-1.intoto.dsse.json" <<'PY'
import hashlib, http.client, json, sys, time
reg, runs, subject, sbom, env = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
host, port = reg.split(":")
c = http.client.HTTPConnection(host, int(port))
def req(m, path, body=None, ctype=None):
    c.request(m, path, body=body, headers={"Content-Type": ctype} if ctype else {})
    r = c.getresponse(); r.read(); return r
def blob(repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    req("HEAD", "/v2/%s/blobs/%s" % (repo, d))
    loc = req("POST", "/v2/%s/blobs/uploads/" % repo).getheader("Location")
    loc = loc.split(reg, 1)[-1]
    req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, data, "application/octet-stream")
    return d, len(data)
times = []
blobs = [open(sbom, "rb").read(), open(env, "rb").read()]
for i in range(runs + 1):
    repo = "baseline/r%d" % i
    t0 = time.monotonic()
    ed, el = blob(repo, b"{}")
    refs = []
    for data in blobs:
        d, n = blob(repo, data)
        m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": el},
            "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": n}]}).encode()
        md = "sha256:" + hashlib.sha256(m).hexdigest()
        req("PUT", "/v2/%s/manifests/%s" % (repo, md), m, "application/vnd.oci.image.manifest.v1+json")
        refs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(m)})
    tag = "sha256-" + subject.split(":")[1]
    req("GET", "/v2/%s/manifests/%s" % (repo, tag))
    req("PUT", "/v2/%s/manifests/%s" % (repo, tag), json.dumps({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": refs}).encode(),
        "application/vnd.oci.image.index.v1+json")
    if i > 0:
        times.append((time.monotonic() - t0) * 1000)
times.sort()
print(int(times[len(times) // 2]))
PY
)
printf '  %-44s median %6d ms\n' "the same uploads from Python (baseline)" "$base"
verdict "$(ratio "$attest" "$base")" 1.5 "attest / the same uploads"

ref=$REG/apps/bench1:$commit
median_ms "buildvm verify" "$BUILDVM" verify --config "$B/runner.json" --app bench1 "$ref"
v=$MEDIAN
median_ms "skopeo inspect (baseline)" skopeo inspect --tls-verify=false "docker://$ref"
s=$MEDIAN
verdict "$(ratio "$v" "$s")" 2.0 "verify / skopeo inspect"
