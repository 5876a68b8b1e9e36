#!/bin/bash
# t_webhook_replay.sh: issue 11 item 8. The replay window is per app: a
# tenant's own signed pushes cannot push another app's deliveries out of
# it. After many pushes of app `tenant`, an authentic old push of app
# `hello`, resent under a fresh (unsigned) delivery id, is refused, also
# after a restart, and the queue receives nothing.
. "$(dirname "$0")/lib.sh"
[ -x "$BUILDVM" ] || fail "$BUILDVM is not built (make build/buildvm)"
command -v curl >/dev/null || skip "curl is not installed"

SPOOL=$BUILDVM_HOME/spool
for a in hello tenant; do
    printf 'wh-%s-%s\n' "$a" "$$$RANDOM" >"$T/$a.secret"
    chmod 600 "$T/$a.secret"
done
jq -n --arg home "$BUILDVM_HOME" --arg hs "$T/hello.secret" --arg ts "$T/tenant.secret" \
    --arg queue "spool:$SPOOL" '
    {home: $home, queue: $queue, webhook: {replay_window: 16},
     apps: [{app: "hello", repo: "file:///srv/git/hello.git", match: ["acme/hello"],
             branches: ["main"], secret_file: $hs},
            {app: "tenant", repo: "file:///srv/git/tenant.git", match: ["evil/tenant"],
             branches: ["main"], secret_file: $ts}]}' >"$T/runner.json"

SERVER_PID=
start_server () {
    PORT=$(svc_free_port)
    URL=http://127.0.0.1:$PORT
    "$BUILDVM" webhook --config "$T/runner.json" --listen "127.0.0.1:$PORT" 2>>"$T/server.log" &
    SERVER_PID=$!
    svc_wait_port "$PORT" 10 || { cat "$T/server.log"; fail "the webhook server did not start"; }
}
stop_server () {
    kill -TERM "$SERVER_PID"
    set +e; wait "$SERVER_PID"; set -e
    SERVER_PID=
}
trap '_rc=$?; [ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null; (exit $_rc); _cleanup' EXIT

# push_body FILE REPO BEFORE AFTER
push_body () {
    printf '{"ref": "refs/heads/main", "before": "%s", "after": "%s", "deleted": false,
 "repository": {"full_name": "%s"}, "pusher": {"name": "alice"},
 "head_commit": {"id": "%s", "timestamp": "2026-11-26T11:30:15Z"}}' "$3" "$4" "$2" "$4" >"$1"
}
# gh_post APP DELIVERY BODY: a push signed with APP's secret
gh_post () {
    local sig
    sig=$(openssl dgst -sha256 -hmac "$(cat "$T/$1.secret")" -r <"$3" | cut -d' ' -f1)
    CODE=$(curl -s -m 10 -o "$T/resp" -w '%{http_code}' -X POST --data-binary "@$3" \
        -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
        -H "X-GitHub-Delivery: $2" -H "X-Hub-Signature-256: sha256=$sig" "$URL/webhook")
}
expect () { # STATUS NEEDLE WHAT
    [ "$CODE" = "$1" ] || { cat "$T/resp"; echo; fail "$3: expected $1, got $CODE"; }
    assert_contains "$T/resp" "$2"
}
queued () { find "$SPOOL/new" -name '*.json' 2>/dev/null | wc -l; }
hex () { printf '%040x' "$1"; }

start_server
note "hello pushes commit 1, then commit 2"
push_body "$T/old.json" acme/hello "$(hex 0)" "$(hex 1)"
gh_post hello h-1 "$T/old.json"
expect 202 enqueued "hello's first push"
push_body "$T/new.json" acme/hello "$(hex 1)" "$(hex 2)"
gh_post hello h-2 "$T/new.json"
expect 202 enqueued "hello's second push"

note "the tenant makes many signed pushes of its own app"
for i in $(seq 100 140); do
    push_body "$T/t.json" evil/tenant "$(hex $((i - 1)))" "$(hex "$i")"
    gh_post tenant "t-$i" "$T/t.json"
    expect 202 enqueued "tenant push $i"
done
before=$(queued)

note "hello's captured first push, under a fresh delivery id: refused"
gh_post hello h-1-replayed "$T/old.json"
expect 200 "duplicate delivery" "a replay of another app's old push"
assert_eq "$before" "$(queued)" "jobs after the replay"
[ ! -e "$SPOOL/new/github-h-1-replayed.json" ] || fail "the replay was enqueued"

note "and after a restart"
stop_server
start_server
gh_post hello h-1-replayed-2 "$T/old.json"
expect 200 "duplicate delivery" "a replay after a restart"
assert_eq "$before" "$(queued)" "jobs after the replay after a restart"
grep -q '^[0-9]* hello body:' "$BUILDVM_HOME/state/webhook/deliveries" ||
    fail "no per-app body key in the replay store"

note "hello's own deliveries still work"
push_body "$T/next.json" acme/hello "$(hex 2)" "$(hex 3)"
gh_post hello h-3 "$T/next.json"
expect 202 enqueued "hello's third push"
stop_server
