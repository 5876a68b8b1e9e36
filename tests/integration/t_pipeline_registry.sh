#!/bin/bash
# The registry misbehaves: down, wrong credentials, 500 then 201, 500
# forever. Clear errors, bounded retries, nothing half-tagged.
. "$(dirname "$0")/lib.sh"

pl_registry
app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
# no base image and no program (an image that names no program is not
# checked for one that can start): this test is about our own pushes
jq '.image.base = null | del(.image.entrypoint)' "$app/buildvm.json" >"$T/spec" && mv "$T/spec" "$app/buildvm.json"
commit=$(pl_repo "$app")

# --- down: nothing listens; bounded attempts, bounded time, a clear error
port=$(svc_free_port)
pl_config ".registry.url = \"http://127.0.0.1:$port\""
pl_job "$T/j.json" down-1 hello-shell "$app" "$commit"
start=$(date +%s)
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
elapsed=$(( $(date +%s) - start ))
assert_eq 1 "$RC" "exit status with the registry down"
assert_contains "$T/out" "127.0.0.1:$port"
assert_eq network "$(jq -r .error.code "$(pl_record down-1)")" "error code"
[ "$elapsed" -lt 60 ] || fail "gave up after ${elapsed}s"
[ ! -e "$BUILDVM_HOME/artifacts/apps/hello-shell/$commit" ] || fail "artifacts stored although nothing was pushed"
assert_no_leftovers

# --- wrong credentials: denied, not retried, the password never printed
printf '{"username": "buildvm", "password": "not-the-password"}\n' >"$T/wrong-creds.json"
chmod 600 "$T/wrong-creds.json"
pl_config ".registry.credentials = \"$T/wrong-creds.json\""
pl_job "$T/j.json" creds-1 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" != 0 ] || fail "wrong credentials succeeded"
assert_contains "$T/out" "authentication"
assert_not_contains "$T/out" "not-the-password"
assert_not_contains "$(pl_record creds-1)" "not-the-password"
pl_tag_exists apps/hello-shell "$commit" && fail "tagged with wrong credentials"

# --- a credentials file others can read is refused before anything runs
chmod 644 "$T/wrong-creds.json"
pl_job "$T/j.json" creds-2 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" != 0 ] || fail "a world-readable credentials file was used"
grep -q "group or others" "$T/out" "$T/err" || fail "no clear error about the credentials file mode"

# --- through a faulty proxy: 500 on the first two blob uploads, then fine
python3 "$ROOT/tests/lib/faulty-proxy.py" --upstream "$REG" --port-file "$T/proxy.port" >"$T/proxy.log" 2>&1 &
echo $! >"$SVC_DIR/proxy.pid" 2>/dev/null || true
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
proxy=127.0.0.1:$(cat "$T/proxy.port")
rules () { curl -fs -X POST "http://$proxy/__proxy__/reset" >/dev/null; curl -fs -X POST -d "$1" "http://$proxy/__proxy__/rules" >/dev/null; }
pl_config ".registry.url = \"http://$proxy\""

rules '[{"method": "PUT", "path": "/blobs/uploads/", "action": "status", "status": 500, "count": 2}]'
pl_job "$T/j.json" flaky-1 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out"; fail "500 then 201 did not succeed"; }
pl_tag_exists apps/hello-shell "$commit" || fail "not tagged after the retries"
puts=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^PUT .*/blobs/uploads/"))] | length')
[ "$puts" -ge 4 ] || fail "expected retried blob PUTs, saw $puts"

# --- 500 forever on manifests: bounded attempts, nothing tagged
app2=$T/src2
cp -r "$app" "$app2" && rm -rf "$app2/.git"
echo "changed" >"$app2/CHANGE"
commit2=$(pl_repo "$app2")
rules '[{"method": "PUT", "path": "/manifests/", "action": "status", "status": 500}]'
pl_job "$T/j.json" broken-1 hello-shell "$app2" "$commit2"
start=$(date +%s)
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
elapsed=$(( $(date +%s) - start ))
assert_eq 1 "$RC" "exit status with manifests failing"
assert_contains "$T/out" "500"
mputs=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^PUT .*/manifests/"))] | length')
[ "$mputs" -ge 2 ] && [ "$mputs" -le 5 ] || fail "expected 2..5 manifest attempts, saw $mputs"
[ "$elapsed" -lt 90 ] || fail "took ${elapsed}s"
pl_tag_exists apps/hello-shell "$commit2" && fail "half-tagged: the tag exists"
[ ! -e "$BUILDVM_HOME/artifacts/apps/hello-shell/$commit2" ] || fail "artifacts committed for an image that was never pushed"

# --- 4xx is never retried
rules '[{"method": "PUT", "path": "/manifests/", "action": "status", "status": 400}]'
pl_job "$T/j.json" bad-1 hello-shell "$app2" "$commit2"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" != 0 ] || fail "a 400 succeeded"
mputs=$(curl -fs "http://$proxy/__proxy__/log" | jq '[.[] | select(test("^PUT .*/manifests/"))] | length')
assert_eq 1 "$mputs" "manifest PUTs after a 400"
pl_tag_exists apps/hello-shell "$commit2" && fail "tagged after a 400"
kill "$(cat "$SVC_DIR/proxy.pid")" 2>/dev/null || true
assert_no_leftovers
