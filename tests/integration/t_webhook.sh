#!/bin/bash
# t_webhook.sh: `buildvm webhook` on a free port with a spool queue, then with a
# real redis: a signed GitHub push is enqueued (202 and the job id), every
# rejection (wrong, missing, malformed signature; wrong content type; malformed
# JSON; a body over the cap, with and without a length; unknown repository;
# other branch, tag, deletion; other events; wrong method and path) is answered
# and enqueues nothing; replays are refused, also after a restart; a slow client
# does not stop others from being answered, and more than max_connections wait;
# SIGTERM stops the server cleanly.
. "$(dirname "$0")/lib.sh"
[ -x "$BUILDVM" ] || fail "$BUILDVM is not built (make build/buildvm)"
command -v curl >/dev/null || skip "curl is not installed"

COMMIT=3f786850e387550fdab836ed7e6dc881de23001b
COMMIT2=9049f1265b7d61be4a8904a9a27120d2064dab3b
SECRET="wh-$$-$RANDOM$RANDOM"
printf '%s\n' "$SECRET" >"$T/hello.secret"
chmod 600 "$T/hello.secret"
SPOOL=$BUILDVM_HOME/spool

# webhook_config [QUEUE]: $T/runner.json with one app, small limits
webhook_config () {
    jq -n --arg home "$BUILDVM_HOME" --arg secret "$T/hello.secret" --arg queue "${1:-spool:$SPOOL}" '
        {home: $home, queue: $queue,
         webhook: {max_body_bytes: 65536, max_connections: 3, timeout_seconds: 2},
         apps: [{app: "hello", repo: "file:///srv/git/hello.git",
                 match: ["acme/hello", "https://git.example/acme/hello.git"],
                 branches: ["main"], secret_file: $secret}]}' >"$T/runner.json"
}

SERVER_PID=
start_server () {
    PORT=$(svc_free_port)
    URL=http://127.0.0.1:$PORT
    "$BUILDVM" webhook --config "$T/runner.json" --listen "127.0.0.1:$PORT" 2>>"$T/server.log" &
    SERVER_PID=$!
    svc_wait_port "$PORT" 10 || { cat "$T/server.log"; fail "the webhook server did not start"; }
}
stop_server () {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID"
    set +e; wait "$SERVER_PID"; local rc=$?; set -e
    SERVER_PID=
    assert_eq 0 "$rc" "exit status after SIGTERM"
}
trap '_rc=$?; [ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null; _cleanup' EXIT

# push_body FILE REF AFTER [FULL_NAME]: a GitHub push payload; the clone URL
# in it is an attacker's, to show that the config's repo is used
push_body () {
    printf '{"ref": "%s", "before": "%s", "after": "%s", "created": false, "deleted": false,
 "repository": {"id": 1, "name": "hello", "full_name": "%s",
  "clone_url": "https://evil.example/x.git", "private": false},
 "pusher": {"name": "alice", "email": "alice@example.com"},
 "head_commit": {"id": "%s", "message": "update"}}' "$2" "$COMMIT2" "$3" "${4:-acme/hello}" "$3" >"$1"
}
sign () { openssl dgst -sha256 -hmac "${2:-$SECRET}" -r <"$1" | cut -d' ' -f1; }

# post BODY-FILE [CURL-ARGS...]: CODE is the status, $T/resp the answer
post () {
    local body=$1; shift
    CODE=$(curl -s -m 10 -o "$T/resp" -w '%{http_code}' -X POST --data-binary "@$body" "$@" "$URL/webhook")
}
# gh_post DELIVERY BODY-FILE [CURL-ARGS...]: a signed GitHub push
gh_post () {
    local delivery=$1 body=$2; shift 2
    post "$body" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
        -H "X-GitHub-Delivery: $delivery" -H "X-Hub-Signature-256: sha256=$(sign "$body")" "$@"
}
expect () { # STATUS NEEDLE WHAT
    [ "$CODE" = "$1" ] || { cat "$T/resp"; echo; fail "$3: expected $1, got $CODE"; }
    assert_contains "$T/resp" "$2"
}
queued () { find "$SPOOL/new" -name '*.json' 2>/dev/null | wc -l; }

note "the config is checked before anything listens"
webhook_config
chmod 644 "$T/hello.secret"
run "$BUILDVM" webhook --config "$T/runner.json" --listen 127.0.0.1:1
assert_eq 2 "$RC" "exit status with a readable secret"
assert_contains "$T/err" "is accessible by group or others"
chmod 600 "$T/hello.secret"
run "$BUILDVM" webhook --config "$T/runner.json" --listen localhost:8080
assert_eq 2 "$RC" "exit status with a host name"
assert_contains "$T/err" "must be \`IPv4:PORT\` or \`[IPv6]:PORT\`"
run "$BUILDVM" webhook --help
assert_eq 0 "$RC" "--help"
assert_contains "$T/out" "buildvm webhook [--config FILE] [--listen ADDR:PORT]"

note "spool: a signed push is enqueued with the config's repository"
start_server
CODE=$(curl -s -o "$T/resp" -w '%{http_code}' "$URL/healthz")
expect 200 '"message":"ok"' "healthz"
push_body "$T/push.json" refs/heads/main "$COMMIT"
gh_post d-1 "$T/push.json"
expect 202 '"job":"github-d-1"' "a signed push"
assert_contains "$T/resp" '"message":"enqueued"'
job=$SPOOL/new/hello+github-d-1.json
[ -f "$job" ] || fail "no $job"
assert_eq "file:///srv/git/hello.git" "$(jq -r .repo "$job")" "the job's repo"
assert_eq "$COMMIT hello refs/heads/main webhook d-1 alice" \
    "$(jq -r '"\(.commit) \(.app) \(.ref) \(.trigger) \(.delivery) \(.requested_by)"' "$job")" "the job"

note "replays: the same delivery, and the same body under another delivery id"
gh_post d-1 "$T/push.json"
expect 200 "duplicate delivery" "the same delivery"
gh_post d-1-forged "$T/push.json"
expect 200 "duplicate delivery" "the same body, a new delivery id"
assert_eq 1 "$(queued)" "jobs after the replays"

note "every rejection: a 4xx or 2xx with a reason, nothing enqueued"
push_body "$T/push2.json" refs/heads/main "$COMMIT2"
gh_post d-2 "$T/push2.json" -H "X-Hub-Signature-256: sha256=$(sign "$T/push2.json" wrong-secret)"
expect 401 "header \`X-Hub-Signature-256\` is repeated" "two signatures"
post "$T/push2.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: d-2" -H "X-Hub-Signature-256: sha256=$(sign "$T/push2.json" wrong-secret)"
expect 401 "wrong signature" "a wrong signature"
post "$T/push2.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: d-2"
expect 401 "missing signature" "no signature"
post "$T/push2.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: d-2" -H "X-Hub-Signature: sha1=$(openssl dgst -sha1 -hmac "$SECRET" -r <"$T/push2.json" | cut -d' ' -f1)"
expect 401 "missing signature" "only the sha1 signature"
post "$T/push2.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: d-2" -H "X-Hub-Signature-256: sha256=$(sign "$T/push2.json" | cut -c1-63)"
expect 401 "malformed signature" "a truncated signature"
cp "$T/push2.json" "$T/tampered.json"
sed -i 's/alice/mallory/' "$T/tampered.json"
post "$T/tampered.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: d-2" -H "X-Hub-Signature-256: sha256=$(sign "$T/push2.json")"
expect 401 "wrong signature" "a body changed after signing"
gh_post d-2 "$T/push2.json" -H "Content-Type: application/x-www-form-urlencoded"
expect 415 "unsupported content type" "form encoding"
gh_post d-2 "$T/push2.json" -H "Content-Type: text/plain"
expect 415 "unsupported content type" "text/plain"
printf '{"ref": "refs/heads/main", "after": ' >"$T/bad.json"
gh_post d-2 "$T/bad.json"
expect 400 "malformed payload" "malformed JSON"
printf '{"ref": "refs/heads/main", "ref": "refs/heads/x"}' >"$T/dup.json"
gh_post d-2 "$T/dup.json"
expect 400 "duplicate object key" "duplicate keys"
head -c 100000 /dev/zero | tr '\0' ' ' >"$T/huge.json"
gh_post d-2 "$T/huge.json"
expect 413 "payload too large: the limit is 65536 bytes" "a body over the cap"
# without a length, the connection is closed once the cap is passed
set +e
curl -s -m 10 -o /dev/null -X POST -H "Transfer-Encoding: chunked" -H "Content-Type: application/json" \
    -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: d-2" \
    -H "X-Hub-Signature-256: sha256=$(sign "$T/huge.json")" --data-binary "@$T/huge.json" "$URL/webhook"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a chunked body over the cap was answered"
push_body "$T/unknown.json" refs/heads/main "$COMMIT2" acme/unknown
gh_post d-2 "$T/unknown.json"
expect 404 "unknown repository" "an unknown repository"
push_body "$T/branch.json" refs/heads/feature "$COMMIT2"
gh_post d-2 "$T/branch.json"
expect 200 "ignored: branch \`feature\` does not deploy" "another branch"
push_body "$T/tag.json" refs/tags/v1.0 "$COMMIT2"
gh_post d-2 "$T/tag.json"
expect 200 "ignored: tag push" "a tag"
push_body "$T/delete.json" refs/heads/main 0000000000000000000000000000000000000000
gh_post d-2 "$T/delete.json"
expect 200 "ignored: branch deleted" "a deletion"
push_body "$T/evil.json" refs/heads/main 'HEAD~1'
gh_post d-2 "$T/evil.json"
expect 400 "field \`after\` must be 40 lowercase hex digits" "a commit that is not an id"
printf '{"zen": "Keep it logically awesome.", "hook_id": 1}' >"$T/ping.json"
post "$T/ping.json" -H "Content-Type: application/json" -H "X-GitHub-Event: ping" \
    -H "X-GitHub-Delivery: p-1" -H "X-Hub-Signature-256: sha256=$(sign "$T/ping.json")"
expect 200 "pong" "ping"
post "$T/push2.json" -H "Content-Type: application/json"
expect 400 "unknown sender" "no event header"
gh_post "" "$T/push2.json"
expect 400 "X-GitHub-Delivery" "an empty delivery id"
CODE=$(curl -s -o "$T/resp" -w '%{http_code}' "$URL/webhook")
expect 405 "use POST" "GET /webhook"
CODE=$(curl -s -o "$T/resp" -w '%{http_code}' -X POST --data-binary @"$T/push2.json" "$URL/hooks")
expect 404 "not found" "an unknown path"
CODE=$(curl -s -o "$T/resp" -w '%{http_code}' -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)" "$URL/healthz")
assert_eq 431 "$CODE" "40 KB of headers"
hdrs=(); for i in $(seq 120); do hdrs+=(-H "X-H$i: v"); done
CODE=$(curl -s -o "$T/resp" -w '%{http_code}' "${hdrs[@]}" "$URL/healthz")
expect 431 "more than 100 headers" "120 headers"
assert_eq 1 "$(queued)" "jobs after the rejections"

note "a second push is enqueued"
gh_post d-2 "$T/push2.json"
expect 202 '"job":"github-d-2"' "a second push"
assert_eq 2 "$(queued)" "jobs"

note "one log line per request"
assert_contains "$T/server.log" 'status=202 format=github delivery="d-1" app=hello job=github-d-1 result="enqueued"'
assert_contains "$T/server.log" 'status=401'
assert_contains "$T/server.log" 'status=415'
assert_contains "$T/server.log" 'status=413'
assert_not_contains "$T/server.log" "$SECRET"

note "a slow client does not hold the server"
exec 7<>"/dev/tcp/127.0.0.1/$PORT"
printf 'POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n' >&7
start=$(date +%s%N)
CODE=$(curl -s -m 2 -o "$T/resp" -w '%{http_code}' "$URL/healthz")
expect 200 ok "healthz next to a slow client"
[ $(( ($(date +%s%N) - start) / 1000000 )) -lt 1000 ] || fail "healthz took over a second next to a slow client"
# one that keeps trickling bytes is cut at the timeout (2 s) all the same
# (in a subshell: a write to the cut socket raises SIGPIPE)
(for i in 1 2 3 4 5; do printf 'X-Slow: %d\r\n' "$i" >&7 || exit 1; sleep 0.7; done) 2>/dev/null || true
exec 7>&-
assert_contains "$T/server.log" "event=webhook.timeout"

note "more than max_connections (3): the others wait until the slow ones are cut"
exec 7<>"/dev/tcp/127.0.0.1/$PORT" 8<>"/dev/tcp/127.0.0.1/$PORT" 9<>"/dev/tcp/127.0.0.1/$PORT"
for fd in 7 8 9; do printf 'POST /webhook HTTP/1.1\r\nHost: x\r\n' >&$fd; done
sleep 0.3
CODE=$(curl -s -m 1 -o "$T/resp" -w '%{http_code}' "$URL/healthz" || true)
assert_eq 000 "$CODE" "healthz while all connections are taken"
sleep 2.5
CODE=$(curl -s -m 2 -o "$T/resp" -w '%{http_code}' "$URL/healthz")
expect 200 ok "healthz once the slow connections were cut"
exec 7>&- 8>&- 9>&-

note "a restart remembers the deliveries (the queue entry is gone, the replay store is not)"
stop_server
rm -f "$SPOOL/new/hello+github-d-1.json"
start_server
gh_post d-1 "$T/push.json"
expect 200 "duplicate delivery: already received" "a replay after a restart"
assert_eq 1 "$(queued)" "jobs after the replay"
grep -q ' github-d-1$' "$BUILDVM_HOME/state/webhook/deliveries" || fail "no github-d-1 in the replay store"
assert_eq 600 "$(stat -c %a "$BUILDVM_HOME/state/webhook/deliveries")" "mode of the replay store"
assert_eq 700 "$(stat -c %a "$BUILDVM_HOME/state/webhook")" "mode of its directory"
run "$BUILDVM" webhook --config "$T/runner.json" --listen "127.0.0.1:$(svc_free_port)"
assert_eq 1 "$RC" "a second receiver on the same state"
assert_contains "$T/err" "is in use by another buildvm webhook"
stop_server

note "redis: a real redis-server"
addr=${BUILDVM_TEST_REDIS:-}
if [ -z "$addr" ]; then
    svc_redis wh
    addr=$REDIS_wh_ADDR
fi
host=${addr%:*} rport=${addr##*:}
rcli () { redis-cli -h "$host" -p "$rport" "$@"; }
stream=t-webhook-$$
rm -rf "$BUILDVM_HOME/state/webhook"
webhook_config "redis://$addr/$stream?group=g1"
trap '_rc=$?; rcli DEL "$stream" "$stream:job:hello+github-r-1" >/dev/null 2>&1 || true; [ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null; _cleanup' EXIT
start_server
gh_post r-1 "$T/push.json"
expect 202 '"job":"github-r-1"' "redis: a signed push"
assert_eq 1 "$(rcli XLEN "$stream")" "stream length"
assert_eq queued "$(rcli HGET "$stream:job:hello+github-r-1" state)" "job hash state"
gh_post r-1 "$T/push.json"
expect 200 "duplicate delivery" "redis: the same delivery"
post "$T/push2.json" -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
    -H "X-GitHub-Delivery: r-2" -H "X-Hub-Signature-256: sha256=$(sign "$T/push2.json" wrong-secret)"
expect 401 "wrong signature" "redis: a wrong signature"
gh_post r-2 "$T/push2.json" -H "Content-Type: text/plain"
expect 415 "unsupported content type" "redis: a wrong content type"
gh_post r-2 "$T/bad.json"
expect 400 "malformed payload" "redis: malformed JSON"
assert_eq 1 "$(rcli XLEN "$stream")" "stream length after the rejections"
stop_server
echo "ok"
