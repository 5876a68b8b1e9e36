#!/bin/bash
# Encryption at rest (secrets.at_rest, on by default): a real job's artifacts
# and log are sealed with the app's key; `artifacts get` and `logs` open them
# for a reader with the master key; a bit flip, a truncation and another
# app's object are refused with a clear error; the fleet copy of the log in
# the artifact store serves `logs APP/JOB` once the host's own log is gone.
. "$(dirname "$0")/lib.sh"

expect_fail () { # RC MESSAGE CMD...
    local want_rc=$1 want=$2
    shift 2
    run "$@"
    [ "$RC" -eq "$want_rc" ] || { cat "$T/err"; fail "$*: exit $RC, expected $want_rc"; }
    assert_contains "$T/err" "$want"
}

pl_registry
pl_config
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 >/dev/null

app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
commit=$(pl_repo "$app")
pl_job "$T/job.json" seal-1 hello-shell "file://$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/job.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "run failed"; }

adir=$BUILDVM_HOME/artifacts/apps/hello-shell/$commit
obj=$adir/dist/www/index.html
note "the artifact is sealed on disk and opens with the app's key"
[ "$(head -c 7 "$obj")" = BVMSEAL ] || fail "not sealed at rest"
grep -qa "hello from buildvm" "$obj" && fail "plaintext in the store"
grep -q "hello from buildvm" "$(pl_artifact "hello-shell/$commit" dist/www/index.html)" || fail "artifacts get"
assert_eq buildvm-seal-v1 "$(jq -r .artifacts.sealed "$(pl_record seal-1)")" "the record says sealed"

note "the log is sealed, and buildvm logs opens it"
log=$(jq -r .log "$(pl_record seal-1)")
case $log in *.log.lz4.seal) ;; *) fail "log not sealed: $log" ;; esac
[ "$(head -c 7 "$log")" = BVMSEAL ] || fail "log not sealed at rest"
"$BUILDVM" logs --config "$CONFIG" seal-1 >"$T/log" || fail "logs failed"
assert_contains "$T/log" "job succeeded"
assert_contains "$T/log" "created the master key"

note "a bit flip, a truncation: refused, nothing written"
cp "$obj" "$T/orig"
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[len(b)//2]^=1; open(p,"wb").write(b)' "$obj"
expect_fail 2 "corrupt, was tampered with" "$BUILDVM" artifacts get --config "$CONFIG" -o "$T/x" "hello-shell/$commit" dist/www/index.html
[ ! -e "$T/x" ] || fail "a tampered artifact was written out"
head -c $(( $(stat -c %s "$T/orig") - 20 )) "$T/orig" >"$obj"
expect_fail 2 "truncated" "$BUILDVM" artifacts get --config "$CONFIG" "hello-shell/$commit" dist/www/index.html
cp "$T/orig" "$obj"

note "another app's key cannot open it"
other=$BUILDVM_HOME/artifacts/apps/other-app/$commit
mkdir -p "$other/dist/www"
cp "$obj" "$other/dist/www/index.html"
sed "s|apps/hello-shell/|apps/other-app/|g" "$adir/index.json" >"$other/index.json"
expect_fail 2 "wrong app or key" "$BUILDVM" artifacts get --config "$CONFIG" "other-app/$commit" dist/www/index.html

note "a bit flip in the sealed log: buildvm logs refuses it (chunk swaps: tests/unit/test_seal.c)"
cp "$log" "$T/log.orig"
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[-30]^=4; open(p,"wb").write(b)' "$log"
expect_fail 2 "tampered" "$BUILDVM" logs --config "$CONFIG" seal-1
cp "$T/log.orig" "$log"

note "the fleet copy: the log from the artifact store once the host's is gone"
rm -f "$log"
expect_fail 1 "no log for job" "$BUILDVM" logs --config "$CONFIG" seal-1
[ "$(head -c 7 "$BUILDVM_HOME/artifacts/logs/apps/hello-shell/seal-1/log.lz4")" = BVMSEAL ] || fail "fleet log not sealed"
"$BUILDVM" logs --config "$CONFIG" hello-shell/seal-1 >"$T/log2" || fail "logs APP/JOB from the store failed"
cmp "$T/log" "$T/log2" || fail "the fleet copy differs"
assert_no_leftovers
