#!/bin/bash
# The S3 artifact store against a real Ceph RADOS Gateway on 127.0.0.1
# (tests/services/ceph-rgw.sh, started by with-services.sh or here): a real
# job's artifacts and log go to s3://..., checked with s3cmd as the bucket's
# owner (sealed by buildvm, SSE-KMS by RGW, nothing under a staging name);
# the per-job STS credentials can write inside the commit's prefix and
# nowhere else, the runner's own key can write nothing (RGW refuses, not
# buildvm); a 500 is retried, a store that is down, slower than the job's
# deadline or an STS that refuses leaves nothing visible and the job record
# says what happened; a runner paused past its lease leaves the newer
# attempt's artifacts and index, and nothing of its own.
. "$(dirname "$0")/lib.sh"

if [ -z "${BUILDVM_TEST_S3_DIR:-}" ]; then
    note "no gateway from with-services.sh: starting one (~20 s)"
    svc_ceph_rgw_start
fi
svc_ceph_rgw_wait 300 || fail "the RADOS Gateway did not start"
TOOL=$ROOT/build/test/s3-tool
[ -x "$TOOL" ] || fail "make build/test/s3-tool first"

# a root of our own: lanes share the bucket
root=it-$$-$RANDOM
printf '{"access_key_id": "%s", "secret_access_key": "%s"}\n' "$RGW_RUNNER_KEY" "$RGW_RUNNER_SECRET" >"$T/s3.key"
chmod 600 "$T/s3.key"
spec_for () { # ENDPOINT [ROLE]
    echo "s3://$RGW_BUCKET/$root?endpoint=$1&region=$RGW_REGION&role=${2:-$RGW_ROLE_ARN}&credentials=$T/s3.key&sse=AES256&owner=$RGW_OWNER_ID"
}
SPEC=$(spec_for "$RGW_ENDPOINT")
owner () { s3cmd -c "$RGW_S3CFG" "$@"; }
listing () { owner ls -r "s3://$RGW_BUCKET/$root/$1" 2>/dev/null | awk '{print $4}' | sed "s|^s3://$RGW_BUCKET/$root/||"; }

pl_registry
pl_config ".artifacts = \"$SPEC\""
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 >/dev/null

app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
commit=$(pl_repo "$app")
prefix=apps/hello-shell/$commit

note "a real job: artifacts and log in S3"
pl_job "$T/job.json" s3-1 hello-shell "file://$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/job.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "run failed"; }
rec=$(pl_record s3-1)
assert_eq "$prefix/index.json" "$(jq -r .artifacts.index.path "$rec")" "the record names the index"
listing "$prefix/" >"$T/list"
grep -qx "$prefix/index.json" "$T/list" || { cat "$T/list"; fail "no index in the bucket"; }
grep -qx "$prefix/dist/www/index.html" "$T/list" || { cat "$T/list"; fail "no artifact in the bucket"; }
owner get --force "s3://$RGW_BUCKET/$root/$prefix/dist/www/index.html" "$T/obj" >/dev/null
[ "$(head -c 7 "$T/obj")" = BVMSEAL ] || fail "the stored object is not sealed"
grep -qa "hello from buildvm" "$T/obj" && fail "plaintext in the bucket"
assert_eq AES256 "$(jq -r .artifacts.server_side_encryption.requested "$rec")" "SSE-S3 asked of the store"
assert_eq null "$(jq -r .artifacts.server_side_encryption.confirmed "$rec")" "RGW 16 does not confirm SSE-S3"
owner get --force "s3://$RGW_BUCKET/$root/$prefix/index.json" "$T/index.json" >/dev/null
assert_eq "$(jq -r .artifacts.index.digest "$rec")" "sha256:$(sha256sum "$T/index.json" | cut -d' ' -f1)" "the index's digest"
grep -q "hello from buildvm" "$(pl_artifact "hello-shell/$commit" dist/www/index.html)" || { cat "$T/artifact-err"; fail "artifacts get from S3"; }
listing "logs/apps/hello-shell/s3-1/" | grep -qx "logs/apps/hello-shell/s3-1/log.lz4" || fail "no fleet log in the bucket"
"$BUILDVM" logs --config "$CONFIG" s3-1 >"$T/log" || fail "logs"
rm -f "$(jq -r .log "$rec")"
"$BUILDVM" logs --config "$CONFIG" hello-shell/s3-1 >"$T/log2" || fail "logs APP/JOB from S3 failed"
cmp "$T/log" "$T/log2" || fail "the log from S3 differs"
owner multipart "s3://$RGW_BUCKET" 2>/dev/null | grep -q "$root" && fail "an upload was left incomplete"
note "RGW encrypts at rest too: the index's bytes in RADOS are not its text"
rados -c "$RGW_CEPH_CONF" -p default.rgw.buckets.data ls 2>/dev/null | grep "$root/$prefix/index.json" >"$T/radosobj" || fail "no RADOS object for the index"
rados -c "$RGW_CEPH_CONF" -p default.rgw.buckets.data get "$(head -1 "$T/radosobj")" "$T/raw" 2>/dev/null
[ "$(stat -c %s "$T/raw")" -ge "$(stat -c %s "$T/index.json")" ] || fail "the RADOS object is short"
grep -q '"objects"' "$T/raw" && fail "the index is stored in plaintext in RADOS"

note "the job's STS credentials: inside the commit's prefix only, enforced by RGW"
"$TOOL" assume "$SPEC" "$prefix/" >"$T/creds" || fail "assume"
{ grep -v '^access_key\|^secret_key' "$RGW_S3CFG"; cat "$T/creds"; } >"$T/s3cfg-job"
echo inside >"$T/f"
s3cmd -c "$T/s3cfg-job" put "$T/f" "s3://$RGW_BUCKET/$root/$prefix/extra" >/dev/null 2>&1 || fail "a put inside the prefix was refused"
for k in "$root/apps/other-app/$commit/x" "$root/apps/hello-shell/0000/x" "$root/x" "x" "$root/logs/apps/hello-shell/x"; do
    if s3cmd -c "$T/s3cfg-job" put "$T/f" "s3://$RGW_BUCKET/$k" >"$T/o" 2>&1; then fail "RGW let the job write $k"; fi
    grep -q "403\|AccessDenied" "$T/o" || { cat "$T/o"; fail "not refused by RGW: $k"; }
done
if s3cmd -c "$T/s3cfg-job" get --force "s3://$RGW_BUCKET/$root/$prefix/index.json" "$T/o2" >/dev/null 2>&1; then fail "the write session could read"; fi
note "the runner's own key may call STS and nothing else"
{ grep -v '^access_key\|^secret_key' "$RGW_S3CFG"; echo "access_key = $RGW_RUNNER_KEY"; echo "secret_key = $RGW_RUNNER_SECRET"; } >"$T/s3cfg-runner"
if s3cmd -c "$T/s3cfg-runner" put "$T/f" "s3://$RGW_BUCKET/$root/$prefix/y" >/dev/null 2>&1; then fail "the runner's key could write"; fi
if s3cmd -c "$T/s3cfg-runner" get --force "s3://$RGW_BUCKET/$root/$prefix/index.json" "$T/o3" >/dev/null 2>&1; then fail "the runner's key could read"; fi

note "a hard link: copied by the store at commit, with a session that may read the prefix"
echo linked >"$T/l"
"$TOOL" put "$SPEC" apps/links/c1/ apps/links/c1/a "$T/l" apps/links/c1/b >/dev/null || fail "a put with a link"
"$TOOL" get "$SPEC" apps/links/c1/ apps/links/c1/b | cmp - "$T/l" || fail "the link's content"
owner get --force "s3://$RGW_BUCKET/$root/apps/links/c1/b" "$T/o4" >/dev/null && cmp "$T/o4" "$T/l" || fail "the owner cannot read the link"

note "STS refusing: the job fails, nothing is visible, the record says why"
echo 2 >>"$app/README.md"
commit2=$(pl_commit "$app" two)
pl_config ".artifacts = \"$(spec_for "$RGW_ENDPOINT" arn:aws:iam:::role/no-such-role)\""
pl_job "$T/job2.json" s3-2 hello-shell "file://$app" "$commit2"
run "$BUILDVM" run --config "$CONFIG" "$T/job2.json"
[ "$RC" != 0 ] || fail "a job whose STS refuses succeeded"
jq -r .error "$(pl_record s3-2)" >"$T/e2"
assert_contains "$T/e2" "STS AssumeRole"
[ -z "$(listing "apps/hello-shell/$commit2/")" ] || fail "something is visible after STS refused"

note "a runner paused past its lease: the newer attempt's artifacts stand, the late one's never show"
fapp=$T/fenced
mkdir -p "$fapp"
printf 'sleep 3\nmkdir -p out\ncat /proc/sys/kernel/random/uuid >out/nonce\necho "nonce=$(cat out/nonce)"\n' >"$fapp/build.sh"
jq -n '{profile: "minimal", steps: ["sh build.sh"], artifacts: ["out"]}' >"$fapp/buildvm.json"
cf=$(pl_repo "$fapp")
pl_config ".artifacts = \"$SPEC\" | .serve = {lease_seconds: 3}"
pl_job "$T/jf.json" fenced-1 fenced "$fapp" "$cf"
"$BUILDVM" enqueue --config "$CONFIG" "$T/jf.json" >/dev/null
sv_takeover fenced-1 fenced
grep -q "job=fenced-1 app=fenced event=fenced\|event=lease.lost" "$T/serve-a.log" || { cat "$T/serve-a.log"; fail "the paused runner was not fenced"; }
kill -TERM "$SV_PID_a" "$SV_PID_b"; wait "$SV_PID_a" "$SV_PID_b" || true
assert_eq 2 "$(jq -r .attempt "$(pl_record fenced-1)")" "the record is the newer attempt's"
listing "apps/fenced/$cf/" | sort >"$T/flist"
printf 'apps/fenced/%s/index.json\napps/fenced/%s/out/nonce\n' "$cf" "$cf" | diff - "$T/flist" || fail "not exactly one index and one artifact under the commit"
owner multipart "s3://$RGW_BUCKET" 2>/dev/null | grep -q "$root/apps/fenced" && fail "the late attempt left an upload"
"$BUILDVM" logs --config "$CONFIG" fenced-1 >"$T/flog" 2>/dev/null || fail "logs of the newer attempt"
grep -q "nonce=$(cat "$(pl_artifact "fenced/$cf" out/nonce)")" "$T/flog" || { cat "$T/flog"; fail "the stored artifact is not the newer attempt's"; }

note "a 500 on a part, then success: retried; the store down: nothing visible"
python3 "$ROOT/tests/lib/faulty-proxy.py" --upstream "${RGW_ENDPOINT#http://}" --port-file "$T/proxy.port" >"$T/proxy.log" 2>&1 &
mkdir -p "$SVC_DIR/proxy" && echo $! >"$SVC_DIR/proxy/pid"
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
proxy=127.0.0.1:$(cat "$T/proxy.port")
rules () { curl -fs -X POST "http://$proxy/__proxy__/reset" >/dev/null; curl -fs -X POST -d "$1" "http://$proxy/__proxy__/rules" >/dev/null; }
PSPEC=$(spec_for "http://$proxy")
head -c 3000000 /dev/urandom >"$T/blob"
rules '[{"method": "PUT", "path": "partNumber=", "action": "status", "status": 500, "count": 1, "body": "<Error><Code>InternalError</Code></Error>", "ctype": "application/xml"}]'
"$TOOL" put "$PSPEC" apps/flaky/c1/ apps/flaky/c1/blob "$T/blob" >/dev/null || fail "500 then 200 did not succeed"
parts=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^PUT .*partNumber="))] | length')
assert_eq 2 "$parts" "part uploads (one 500, one retry)"
"$TOOL" get "$SPEC" apps/flaky/c1/ apps/flaky/c1/blob | cmp - "$T/blob" || fail "the retried object differs"
note "an expired session mid-upload: assumed again once"
rules '[{"method": "PUT", "path": "partNumber=", "action": "status", "status": 400, "count": 1, "body": "<Error><Code>ExpiredToken</Code></Error>", "ctype": "application/xml"}]'
"$TOOL" put "$PSPEC" apps/flaky/c5/ apps/flaky/c5/blob "$T/blob" >/dev/null || fail "an expired session was not renewed"
sts=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^POST /$"))] | length')
assert_eq 2 "$sts" "AssumeRole calls (the first session, the renewal)"
note "a 403 is not retried"
rules '[{"method": "PUT", "path": "partNumber=", "action": "status", "status": 403, "body": "<Error><Code>AccessDenied</Code></Error>", "ctype": "application/xml"}]'
if "$TOOL" put "$PSPEC" apps/flaky/c2/ apps/flaky/c2/blob "$T/blob" 2>"$T/e3"; then fail "a 403 succeeded"; fi
assert_contains "$T/e3" "AccessDenied"
parts=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^PUT .*partNumber="))] | length')
assert_eq 1 "$parts" "a 403 is tried once"
[ -z "$(listing apps/flaky/c2/)" ] || fail "something is visible after a refused part"
note "the store down (always 503): given up, nothing visible"
rules '[{"action": "status", "status": 503, "body": "<Error><Code>SlowDown</Code></Error>", "ctype": "application/xml"}]'
if "$TOOL" put "$PSPEC" apps/flaky/c3/ apps/flaky/c3/blob "$T/blob" 2>"$T/e4"; then fail "a store that is down succeeded"; fi
assert_contains "$T/e4" "giving up after 5 attempts"
[ -z "$(listing apps/flaky/c3/)" ] || fail "something is visible after the store was down"
note "a slow store past the job's deadline: given up at the deadline, nothing visible"
# the deadline: the transaction's expiry (the job's) plus the store's 60 s of
# slack for its last request, so an expiry 52 s ago leaves 8 s; every part
# upload is held for 60 s
rules '[{"method": "PUT", "path": "partNumber=", "action": "delay", "seconds": 60}]'
start=$(date +%s)
if S3_TOOL_EXPIRES=-52 "$TOOL" put "$PSPEC" apps/flaky/c6/ apps/flaky/c6/blob "$T/blob" 2>"$T/e6"; then fail "an upload past the deadline succeeded"; fi
elapsed=$(( $(date +%s) - start ))
[ "$elapsed" -lt 30 ] || fail "a store slower than the deadline held the upload ${elapsed}s"
note "given up after ${elapsed}s: $(head -c 300 "$T/e6")"
grep -qi "deadline\|timed out\|timeout" "$T/e6" || { cat "$T/e6"; fail "the error does not say the deadline passed"; }
[ -z "$(listing apps/flaky/c6/)" ] || fail "something is visible after the deadline passed"
curl -fs -X POST "http://$proxy/__proxy__/reset" >/dev/null
note "the store unreachable"
if "$TOOL" put "$(spec_for http://127.0.0.1:9)" apps/flaky/c4/ apps/flaky/c4/blob "$T/blob" 2>"$T/e5"; then fail "an unreachable store succeeded"; fi
assert_contains "$T/e5" "STS AssumeRole"
assert_no_leftovers
