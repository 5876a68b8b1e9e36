#!/bin/bash
# Inflation bombs (issue 11, item 2): a git object that compresses ~1000:1.
#  - a 300 MB buildvm.json of zeros (300 KB of objects) is refused from its
#    object header, before it is inflated: the runner's peak RSS stays low;
#  - a 300 MB source file (within the source caps) against a worker memory
#    cap of 200 MiB fails the one job with "out of memory" - in the worker's
#    export over HTTP, in the fetch process for a local path (libgit2's
#    local transport inflates what it packs) - and under serve the job is
#    failed after ONE attempt, never retried.
. "$(dirname "$0")/lib.sh"

pl_registry
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@x
# bomb_repo DIR SPEC-BLOB EXTRA-MKTREE-LINE: a repository whose main is one
# commit of buildvm.json plus an optional extra entry; prints the commit
bomb_repo () {
    local tree c
    tree=$( { printf '100644 blob %s\tbuildvm.json\n' "$2"; [ -z "$3" ] || printf '%s\n' "$3"; } | GIT_DIR=$1/.git git mktree)
    c=$(GIT_DIR=$1/.git git commit-tree "$tree" -m bomb)
    GIT_DIR=$1/.git git update-ref refs/heads/main "$c"
    echo "$c"
}
git init -q -b main "$T/bomb"
# streamed: neither git nor this test holds the 300 MB
zeros=$(head -c 300M /dev/zero | GIT_DIR=$T/bomb/.git git hash-object -w --stdin)
c_spec=$(bomb_repo "$T/bomb" "$zeros" "")
du -sk "$T/bomb/.git/objects" | awk '{ if ($1 > 2048) exit 1 }' || fail "the bomb is not small on disk"

# --- the spec bomb, served over HTTP: refused from its object header; the
# fetch hashes it as a stream (libgit2's indexer), nothing inflates it whole
python3 "$ROOT/tests/lib/git-http-server.py" "$T" "$T/http.port" "$T/http.log" &
for _ in $(seq 50); do [ -s "$T/http.port" ] && break; sleep 0.1; done
[ -s "$T/http.port" ] || fail "the git HTTP server did not start"
BOMB_URL=http://127.0.0.1:$(cat "$T/http.port")/bomb/.git
# no early VM (vm.early_boot): the peak RSS taken here is the runner's and
# every child it waited for, and a booting QEMU is not what this measures
pl_config '.vm.early_boot = false'
pl_job "$T/j.json" spec-bomb bomb "$BOMB_URL" "$c_spec"
# the largest RSS of the runner and every process it waited for (the fetch)
run /usr/bin/time -f %M -o "$T/maxrss" "$BUILDVM" run --config "$CONFIG" "$T/j.json"
PEAK_KB=$(tail -n 1 "$T/maxrss")
note "spec bomb: rc=$RC peak_rss=${PEAK_KB} KiB"
[ "$RC" != 0 ] || fail "a 300 MB buildvm.json was accepted"
assert_contains "$T/out" "\`buildvm.json\` is 314572800 bytes, over the 262144 bytes allowed"
[ "$PEAK_KB" -lt $((64 * 1024)) ] || fail "peak RSS ${PEAK_KB} KiB reading a refused buildvm.json"
assert_no_leftovers

# --- the source bomb: the worker's memory cap fails the job cleanly
spec=$(printf '{"profile": "minimal", "steps": ["ls -la"], "image": {"from": "."}}' | GIT_DIR=$T/bomb/.git git hash-object -w --stdin)
c_src=$(bomb_repo "$T/bomb" "$spec" "100644 blob $zeros	zeros.bin")
pl_config '.limits.max_worker_memory_mib = 200 | .vm.early_boot = false'
# over HTTP the fetch streams it; the export inflates it in the worker
pl_job "$T/j.json" src-bomb bomb "$BOMB_URL" "$c_src"
peak_rss "$BUILDVM" run --config "$CONFIG" "$T/j.json"
note "source bomb: rc=$RC peak_rss=${PEAK_KB} KiB: $(grep -m1 "error" "$T/out")"
[ "$RC" != 0 ] || fail "a 300 MB blob was inflated under a 200 MiB memory cap"
assert_contains "$T/out" "out of memory"
[ "$PEAK_KB" -lt $((200 * 1024)) ] || fail "peak RSS ${PEAK_KB} KiB over the 200 MiB cap"
assert_no_leftovers

# --- the same under serve: one attempt, failed, not retried (the source
# bomb from a local path: libgit2's local transport packs it in the fetch
# process, which has the same cap)
pl_config ".queue = \"spool:$BUILDVM_HOME/spool\" | .serve = {lease_seconds: 10, max_attempts: 3}
           | .limits.max_worker_memory_mib = 200"
pl_job "$T/j.json" src-bomb-serve bomb "$T/bomb" "$c_src"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
pl_job "$T/j.json" spec-bomb-serve bomb "$BOMB_URL" "$c_spec"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_start main --concurrency 1
sv_wait_done 2 120 || { cat "$T/serve-main.log"; fail "the bomb jobs did not finish"; }
kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
for id in src-bomb-serve spec-bomb-serve; do
    assert_eq 1 "$(grep -c "job=$id app=bomb event=leased" "$T/serve-main.log")" "$id: attempts"
    assert_eq failed "$(jq -r .status "$(pl_record "$id")")" "$id: record"
done
assert_not_contains "$T/serve-main.log" "event=worker.crashed"
jq -r .error "$(pl_record src-bomb-serve)" | grep -qF "out of memory" || fail "the record does not say out of memory"
assert_no_leftovers
