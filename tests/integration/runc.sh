# runc.sh: start a pushed image with a real OCI runtime, for the tests that
# check an image answers (t_examples_start, t_examples_deps). Sourced after
# lib.sh. The caller's EXIT trap calls stop_containers before _cleanup.

command -v runc >/dev/null || fail "runc is not installed (make deps)"
RUNC_ROOT=$T/runc
started=()

stop_containers () {
    local id
    for id in "${started[@]}"; do
        timeout 10 runc --root "$RUNC_ROOT" kill "$id" KILL 2>/dev/null || true
        timeout 10 runc --root "$RUNC_ROOT" delete --force "$id" 2>/dev/null || true
    done
    started=()
}

wait_http () { # URL SECONDS: the body of the first 200 answer
    local deadline=$(( $(date +%s) + $2 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        curl -fsS --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# runc_serve NAME LAYOUT:TAG: unpack the image with umoci and run it with
# runc - host network (no network namespace), a free port in $PORT, no
# terminal - then wait for its HTTP answer on 127.0.0.1. Sets SERVED_ID,
# SERVED_PORT and SERVED_BODY; fails the test when any step does.
runc_serve () {
    local name=$1 image=$2 b=$T/bundle-$1
    umoci unpack --image "$image" "$b" >/dev/null || fail "$name: umoci cannot unpack"
    SERVED_PORT=$(svc_free_port)
    jq --arg port "$SERVED_PORT" '
        .linux.namespaces |= map(select(.type != "network"))
        | .process.terminal = false
        | .process.env = ([.process.env[] | select(startswith("PORT=") | not)] + ["PORT=" + $port])' \
        "$b/config.json" >"$b/config.json.new" && mv "$b/config.json.new" "$b/config.json"
    SERVED_ID=bvm-it-$$-$name
    started+=("$SERVED_ID")
    timeout 30 runc --root "$RUNC_ROOT" run -d --bundle "$b" "$SERVED_ID" </dev/null >"$T/ctr-$name.log" 2>&1 \
        || { cat "$T/ctr-$name.log"; fail "$name: runc could not start the image"; }
    SERVED_BODY=$(wait_http "http://127.0.0.1:$SERVED_PORT/" 20) \
        || { cat "$T/ctr-$name.log"; runc --root "$RUNC_ROOT" state "$SERVED_ID" || true
             fail "$name: no HTTP answer on 127.0.0.1:$SERVED_PORT"; }
}
