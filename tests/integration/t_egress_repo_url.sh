#!/bin/bash
# A deploy request's repository URL goes through the egress address rules
# (issue 13): libgit2 connects through a stream of the runner's that
# resolves the host once, checks every answer, and connects to the checked
# address. Loopback, link-local (the metadata address) and RFC 1918 hosts,
# in every spelling, and a name that resolves to loopback are refused with
# one clear line before any connection, the job is not retried and its
# lease is given up; the operator's `checkout.allow_addresses` lets one
# range through.
. "$(dirname "$0")/lib.sh"

python3 "$ROOT/tests/lib/git-http-server.py" "$T" "$T/http.port" "$T/http.log" &
for _ in $(seq 50); do [ -s "$T/http.port" ] && break; sleep 0.1; done
[ -s "$T/http.port" ] || fail "the git HTTP server did not start"
PORT=$(cat "$T/http.port")
c=$(sv_app "$T/app")
git clone -q --bare "$T/app" "$T/app.git"
requests () { if [ -f "$T/http.log" ]; then wc -l <"$T/http.log"; else echo 0; fi; }

# --- buildvm run: each spelling refused, nothing reaches the server
pl_registry
pl_config 'del(.checkout)'
n=0
for host in 127.0.0.1 2130706433 0x7f.1 0177.0.0.1 127.1 '[::ffff:7f00:1]' '[::ffff:127.0.0.1]' '[::1]' localhost \
    169.254.169.254 0xa9fea9fe 10.0.0.1 192.168.1.1 '[fd00:ec2::254]'; do
    n=$((n + 1))
    url="http://$host:$PORT/app.git"
    pl_job "$T/j.json" "url-$n" repourl "$url" "$c"
    before=$(requests)
    run timeout 30 "$BUILDVM" run --config "$CONFIG" "$T/j.json"
    [ "$RC" != 0 ] || fail "$host: a fetch from an internal address succeeded"
    grep -q "the repository host is refused: .*(runner.json \`checkout.allow_addresses\` lists the exceptions)" "$T/out" \
        || { cat "$T/out" "$T/err"; fail "$host: no clear refusal"; }
    assert_eq "$before" "$(requests)" "$host: requests that reached the git server"
    [ "$(jq -r .error.code "$(pl_record "url-$n")")" = denied ] || { jq .error "$(pl_record "url-$n")"; fail "$host: error code"; }
done
assert_contains "$T/out" "refused"
note "$n spellings refused, e.g. $(grep -m1 -o 'the repository host is refused: [^(]*' "$T/out")"
assert_no_leftovers

# --- serve: refused once, not retried, the lease given up; then the
# operator's exception lets the same URL through and the job builds
pl_config ".queue = \"spool:$BUILDVM_HOME/spool\" | .serve = {lease_seconds: 5, max_attempts: 3} | del(.checkout)"
pl_job "$T/j.json" url-serve repourl "http://0x7f.1:$PORT/app.git" "$c"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_start main --concurrency 1
sv_wait_done 1 60 || { cat "$T/serve-main.log"; fail "the refused job did not end"; }
kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true
# finished (its lease given up, acknowledged), failed, never retried
assert_eq done "$(sv_state url-serve)" "the refused job's state on the queue"
assert_eq 1 "$(grep -c 'job=url-serve app=repourl event=leased' "$T/serve-main.log")" "attempts of the refused job"
rec=$(pl_record url-serve)
assert_eq failed "$(jq -r .status "$rec")" "the refused job's record"
jq -r .error.message "$rec" | grep -q "the repository host is refused: address \`127.0.0.1\` is refused: loopback address" \
    || { jq .error "$rec"; fail "the record does not say why"; }
assert_not_contains "$T/serve-main.log" "event=worker.crashed"

pl_config ".checkout.allow_addresses = [\"127.0.0.1/32\"]"
pl_job "$T/j.json" url-allowed repourl "http://0x7f.1:$PORT/app.git" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the allowed repository URL failed"; }
[ "$(requests)" -ge 2 ] || fail "the allowed fetch made no request"
assert_no_leftovers
echo PASS
