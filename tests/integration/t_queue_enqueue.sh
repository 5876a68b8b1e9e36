#!/bin/bash
# t_queue_enqueue.sh: `buildvm enqueue` into the default spool and into a real
# redis: the job id on stdout, idempotent re-enqueue, invalid requests refused
# with the field named, nothing enqueued on error; `buildvm jobs` lists the
# queue and this host's job records
. "$(dirname "$0")/lib.sh"
[ -x "$BUILDVM" ] || fail "$BUILDVM is not built (make build/buildvm)"

commit=0123456789abcdef0123456789abcdef01234567
cat >"$T/job.json" <<JSON
{"id": "d-42", "app": "app1", "repo": "file:///srv/app1.git", "commit": "$commit",
 "ref": "refs/heads/main"}
JSON

note "spool: the default queue under BUILDVM_HOME"
run "$BUILDVM" enqueue "$T/job.json"
assert_eq 0 "$RC" "enqueue exit status (stderr: $(cat "$T/err"))"
assert_eq "d-42" "$(cat "$T/out")" "printed job id"
spool=$BUILDVM_HOME/spool
[ -f "$spool/new/app1+d-42.json" ] || fail "no $spool/new/app1+d-42.json"
assert_eq 700 "$(stat -c %a "$spool/new")" "mode of new/"
grep -q "\"commit\":\"$commit\"" "$spool/new/app1+d-42.json" || fail "job file: $(cat "$spool/new/app1+d-42.json")"

note "spool: a second enqueue of the same id adds nothing"
run "$BUILDVM" enqueue "$T/job.json"
assert_eq 0 "$RC" "re-enqueue exit status"
assert_eq "d-42" "$(cat "$T/out")" "re-enqueue prints the id"
assert_contains "$T/err" "job \`d-42\` is already queued"
assert_eq 1 "$(find "$spool/new" -type f | wc -l)" "files in new/"

note "invalid requests: exit 2, the field named, nothing enqueued"
sed "s/$commit/abc/" "$T/job.json" >"$T/bad.json"
sed 's/"d-42"/"d-43"/' "$T/bad.json" >"$T/bad2.json"
run "$BUILDVM" enqueue "$T/bad2.json"
assert_eq 2 "$RC" "invalid commit exit status"
assert_contains "$T/err" "commit"
[ ! -s "$T/out" ] || fail "printed an id for an invalid request: $(cat "$T/out")"
[ ! -e "$spool/new/app1+d-43.json" ] || fail "an invalid request was enqueued"
echo '{"id": "d-44", "app": "app1"' >"$T/trunc.json"
run "$BUILDVM" enqueue "$T/trunc.json"
assert_eq 2 "$RC" "truncated JSON exit status"
assert_contains "$T/err" "not valid JSON"
echo '{"id": "../x", "app": "app1", "repo": "file:///r.git", "commit": "'$commit'", "ref": "refs/heads/main"}' >"$T/badid.json"
run "$BUILDVM" enqueue "$T/badid.json"
assert_eq 2 "$RC" "bad id exit status"
assert_contains "$T/err" "id"
run "$BUILDVM" enqueue "$T/missing.json"
assert_eq 2 "$RC" "missing file exit status"
assert_contains "$T/err" "No such file"
assert_eq 1 "$(find "$spool/new" -type f | wc -l)" "files in new/ after the refusals"

note "spool: ids are unique per app only: another app's d-42 is another job"
sed 's/"app1"/"app2"/; s|app1.git|app2.git|' "$T/job.json" >"$T/job2.json"
run "$BUILDVM" enqueue "$T/job2.json"
assert_eq 0 "$RC" "enqueue of app2's d-42"
assert_not_contains "$T/err" "already"
[ -f "$spool/new/app2+d-42.json" ] || fail "app2's d-42 was not queued (shadowed by app1's)"
assert_eq 2 "$(find "$spool/new" -type f | wc -l)" "files in new/ with two apps' d-42"
# an id alone is ambiguous now, and says so; APP/ID names one
run "$BUILDVM" status d-42
assert_eq 2 "$RC" "status of an ambiguous id"
assert_contains "$T/err" "ambiguous"
assert_contains "$T/err" "app1"
assert_contains "$T/err" "app2"
run "$BUILDVM" status --json app2/d-42
assert_eq 0 "$RC" "status app2/d-42 (stderr: $(cat "$T/err"))"
assert_eq "queued app2 d-42" "$(jq -r '"\(.queue.state) \(.queue.app) \(.queue.job)"' "$T/out")" "status app2/d-42"
run "$BUILDVM" cancel d-42
assert_eq 2 "$RC" "cancel of an ambiguous id"
assert_contains "$T/err" "ambiguous"
run "$BUILDVM" cancel app2/d-42
assert_eq 0 "$RC" "cancel app2/d-42"
# now only app1 has a live d-42, but app2's dead letter still names it
run "$BUILDVM" status --json app1/d-42
assert_eq queued "$(jq -r .queue.state "$T/out")" "app1's d-42 untouched by app2's cancel"
run "$BUILDVM" jobs
assert_contains "$T/out" "app1/d-42"
assert_contains "$T/out" "app2/d-42"
# the jobs this host ran come from its records (`buildvm run` jobs never were
# on the queue); one the queue lists is not listed twice, an unreadable one
# is named
mkdir -p "$BUILDVM_HOME/state/jobs/app3" "$BUILDVM_HOME/state/jobs/app1"
printf '{"app": "app3", "id": "r-1", "attempt": 1, "status": "succeeded", "started_at": "2026-01-02T03:04:00Z", "finished_at": "2026-01-02T03:04:05Z"}\n' \
    >"$BUILDVM_HOME/state/jobs/app3/r-1.json"
echo '{"app": "app3", "id": "r-2", "status": "fai' >"$BUILDVM_HOME/state/jobs/app3/r-2.json"
printf '{"app": "app1", "id": "d-42", "status": "failed"}\n' >"$BUILDVM_HOME/state/jobs/app1/d-42.json"
run "$BUILDVM" jobs
assert_eq 0 "$RC" "jobs with records"
grep -qE '^ran +app3/r-1 +1 +2026-01-02T03:04:05Z +succeeded$' "$T/out" || { cat "$T/out"; fail "the record of app3/r-1 is not listed"; }
grep -qE '^ran +app3/r-2 .* unreadable$' "$T/out" || { cat "$T/out"; fail "an unreadable record is not named"; }
assert_eq 1 "$(grep -c 'app1/d-42' "$T/out")" "app1/d-42 listed once (queued, not again as ran)"
run "$BUILDVM" jobs --json
assert_eq "succeeded" "$(jq -r '.records[] | select(.app == "app3" and .job == "r-1") | .status' "$T/out")" "jobs --json records"
rm -r "$BUILDVM_HOME/state/jobs/app3" "$BUILDVM_HOME/state/jobs/app1/d-42.json"
# a running job's SINCE is when its attempt was leased, not when the lease
# ends: a lease as `buildvm serve` writes it (spool/cur/KEY.lease)
printf '{"id": "r-9", "app": "app5", "repo": "file:///srv/a.git", "commit": "%s", "ref": "refs/heads/main"}\n' "$commit" >"$T/r9.json"
"$BUILDVM" enqueue "$T/r9.json" >/dev/null
mv "$spool/new/app5+r-9.json" "$spool/cur/"
printf '{"job": "app5+r-9", "owner": "host-a-1", "attempt": 1, "host": "a", "pid": 1, "leased_at": 1767323045000, "lease_until": 1767323105000, "history": []}\n' \
    >"$spool/cur/app5+r-9.lease"
chmod 600 "$spool/cur/app5+r-9.lease"
run "$BUILDVM" jobs
grep -qE '^running +app5/r-9 +1 +2026-01-02T03:04:05Z owner host-a-1$' "$T/out" || { cat "$T/out"; fail "a running job's SINCE is not its start"; }
rm "$spool/cur/app5+r-9.json" "$spool/cur/app5+r-9.lease"
# an id alone that only one app has still works
sed 's/"d-42"/"solo-1"/' "$T/job2.json" >"$T/solo.json"
"$BUILDVM" enqueue "$T/solo.json" >/dev/null
run "$BUILDVM" status --json solo-1
assert_eq 0 "$RC" "status of an unambiguous id alone"
assert_eq "app2" "$(jq -r .queue.app "$T/out")" "its app"
run "$BUILDVM" cancel solo-1
assert_eq 0 "$RC" "cancel of an unambiguous id alone"

note "usage"
run "$BUILDVM" enqueue
assert_eq 2 "$RC" "no argument"
assert_contains "$T/err" "missing JOB.json"
run "$BUILDVM" enqueue "$T/job.json" extra
assert_eq 2 "$RC" "two arguments"
run "$BUILDVM" enqueue --help
assert_eq 0 "$RC" "--help"
assert_contains "$T/out" "buildvm enqueue [--config FILE] JOB.json"

note "redis: a real redis-server"
addr=${BUILDVM_TEST_REDIS:-}
if [ -z "$addr" ]; then
    svc_redis q
    addr=$REDIS_q_ADDR
fi
host=${addr%:*} port=${addr##*:}
rcli () { redis-cli -h "$host" -p "$port" "$@"; }
stream=t-enqueue-$$
printf '{"queue": "redis://%s/%s?group=g1"}\n' "$addr" "$stream" >"$T/runner.json"
trap '_rc=$?; rcli DEL "$stream" "$stream:job:app1+d-42" >/dev/null 2>&1 || true; _cleanup' EXIT
run "$BUILDVM" enqueue --config "$T/runner.json" "$T/job.json"
assert_eq 0 "$RC" "redis enqueue exit status (stderr: $(cat "$T/err"))"
assert_eq "d-42" "$(cat "$T/out")" "redis: printed job id"
assert_eq 1 "$(rcli XLEN "$stream")" "stream length"
assert_eq "app1+d-42" "$(rcli XRANGE "$stream" - + | sed -n 3p)" "the entry's job field (its key: app and id)"
assert_eq "queued" "$(rcli HGET "$stream:job:app1+d-42" state)" "job hash state"
rcli XINFO GROUPS "$stream" | grep -qx g1 || fail "consumer group g1 not created"
run "$BUILDVM" enqueue --config "$T/runner.json" "$T/job.json"
assert_eq 0 "$RC" "redis re-enqueue"
assert_contains "$T/err" "already queued"
assert_eq 1 "$(rcli XLEN "$stream")" "stream length after re-enqueue"
run "$BUILDVM" enqueue --config "$T/runner.json" "$T/bad2.json"
assert_eq 2 "$RC" "redis: invalid request"
assert_eq 1 "$(rcli XLEN "$stream")" "stream length after an invalid request"

note "redis: unreachable"
printf '{"queue": "redis://127.0.0.1:1/%s"}\n' "$stream" >"$T/down.json"
run "$BUILDVM" enqueue --config "$T/down.json" "$T/job.json"
assert_eq 1 "$RC" "unreachable redis exit status"
assert_contains "$T/err" "connect to redis"
echo "ok"
