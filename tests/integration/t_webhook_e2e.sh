#!/bin/bash
# t_webhook_e2e.sh: a real `git push` to a local bare repository whose
# post-receive hook posts a signed GitHub-format push event with curl; the
# running `buildvm webhook` enqueues it and a running `buildvm serve` builds the
# app in a VM and pushes its image to the local registry. A push to a branch
# that does not deploy builds nothing.
. "$(dirname "$0")/lib.sh"
[ -x "$BUILDVM" ] || fail "$BUILDVM is not built (make build/buildvm)"
"$BUILDVM" serve --help >/dev/null 2>&1 || skip "buildvm serve is not available yet"
[ -f "$BUILDVM_IMAGES/minimal.json" ] || skip "no VM images in $BUILDVM_IMAGES (make images)"
for tool in curl openssl git skopeo jq; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done

pl_registry
SECRET_FILE=$T/hello.secret
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET_FILE"
chmod 600 "$SECRET_FILE"
BARE=$T/git/hello.git
WEB_PORT=$(svc_free_port)
URL=http://127.0.0.1:$WEB_PORT

note "a bare repository whose post-receive hook posts a signed push event"
mkdir -p "$T/git"
git init -q --bare -b main "$BARE"
cat >"$BARE/hooks/post-receive" <<HOOK
#!/bin/sh
# one event per updated ref, in GitHub's format, signed with the app's secret
while read oldrev newrev ref; do
    body=\$(printf '{"ref": "%s", "before": "%s", "after": "%s", "created": false, "deleted": false, "repository": {"name": "hello", "full_name": "local/hello", "clone_url": "file://$BARE"}, "pusher": {"name": "%s"}, "head_commit": {"id": "%s"}}' \\
        "\$ref" "\$oldrev" "\$newrev" "\$(id -un)" "\$newrev")
    sig=\$(printf '%s' "\$body" | openssl dgst -sha256 -hmac "\$(cat '$SECRET_FILE')" -r | cut -d' ' -f1)
    curl -sS -m 20 -w ' HTTP %{http_code}\n' -H 'Content-Type: application/json' \\
        -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: \$(cat /proc/sys/kernel/random/uuid)" \\
        -H "X-Hub-Signature-256: sha256=\$sig" --data-binary "\$body" '$URL/webhook'
done
HOOK
chmod +x "$BARE/hooks/post-receive"

note "the app: examples/apps/hello-shell without its base image"
work=$T/work-hello
cp -r "$ROOT/examples/apps/hello-shell" "$work"
jq '.image.base = null | del(.image.entrypoint)' "$work/buildvm.json" >"$work/buildvm.json.new"
mv "$work/buildvm.json.new" "$work/buildvm.json"
commit=$(pl_repo "$work")
git -C "$work" remote add origin "$BARE"

pl_config ".queue = \"spool:$BUILDVM_HOME/spool\"
    | .webhook = {listen: \"127.0.0.1:$WEB_PORT\"}
    | .apps = [{app: \"hello\", repo: \"file://$BARE\", match: [\"local/hello\"],
                branches: [\"main\"], secret_file: \"$SECRET_FILE\"}]"

WH_PID= SV_PID=
trap '_rc=$?; [ -z "$WH_PID" ] || kill "$WH_PID" 2>/dev/null; [ -z "$SV_PID" ] || kill "$SV_PID" 2>/dev/null; _cleanup' EXIT
"$BUILDVM" webhook --config "$CONFIG" >"$T/webhook.log" 2>&1 &
WH_PID=$!
svc_wait_port "$WEB_PORT" 10 || { cat "$T/webhook.log"; fail "the webhook server did not start"; }
"$BUILDVM" serve --config "$CONFIG" --concurrency 1 >"$T/serve.log" 2>&1 &
SV_PID=$!

note "git push to main: the hook's event is accepted"
git -C "$work" push -q origin main 2>"$T/push.err" || { cat "$T/push.err"; fail "git push"; }
assert_contains "$T/push.err" "HTTP 202"
assert_contains "$T/push.err" '"message":"enqueued"'
job=$(sed -n 's/.*"job":"\([^"]*\)".*/\1/p' "$T/push.err" | head -1)
[ -n "$job" ] || fail "no job id in the hook's output: $(cat "$T/push.err")"

note "serve builds $job and pushes apps/hello:$commit"
deadline=$(( $(date +%s) + 600 ))
until pl_tag_exists apps/hello "$commit"; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$SV_PID" 2>/dev/null; then
        echo "---- webhook log"; tail -20 "$T/webhook.log"
        echo "---- serve log"; tail -40 "$T/serve.log"
        fail "apps/hello:$commit was not pushed"
    fi
    sleep 2
done
skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/hello:$commit" >"$T/inspect.json"
assert_eq "hello-shell" "$(jq -r '.Labels["org.opencontainers.image.title"]' "$T/inspect.json")" "image label"
for _ in $(seq 100); do [ -f "$(pl_record "$job")" ] && break; sleep 0.3; done
[ -f "$(pl_record "$job")" ] || fail "no job record for $job"
assert_eq succeeded "$(jq -r .status "$(pl_record "$job")")" "the job record's status"
assert_contains "$T/webhook.log" "status=202"

note "a push to a branch that does not deploy: answered, nothing built"
git -C "$work" checkout -q -b feature
echo "feature" >"$work/FEATURE"
git -C "$work" add FEATURE
git -C "$work" -c user.name=t -c user.email=t@example.invalid commit -qm feature
git -C "$work" push -q origin feature 2>"$T/push2.err" || { cat "$T/push2.err"; fail "git push feature"; }
assert_contains "$T/push2.err" "HTTP 200"
assert_contains "$T/push2.err" "ignored: branch \`feature\` does not deploy"
assert_eq 0 "$(find "$BUILDVM_HOME/spool/new" -name '*.json' | wc -l)" "jobs queued after the feature push"

kill -TERM "$WH_PID"; wait "$WH_PID" || fail "webhook exit status"; WH_PID=
kill -TERM "$SV_PID"; wait "$SV_PID" || fail "serve exit status"; SV_PID=
echo "ok"
