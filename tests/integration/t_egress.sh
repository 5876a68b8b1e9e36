#!/bin/bash
# Egress (issue 13): a build reaches loopback upstreams only through the
# agent's proxy and the runner's broker, with the job's role deciding; each
# refusal is logged in the job log and the record, and the runner goes on.
. "$(dirname "$0")/lib.sh"

# --- upstreams on the host's loopback
www=$T/www
mkdir -p "$www"
head -c 3000000 /dev/urandom >"$www/blob"
HTTP_PORT=$(svc_free_port)
mkdir -p "$SVC_DIR/egress-http"
(cd "$www" && exec python3 -m http.server --bind 127.0.0.1 "$HTTP_PORT") >"$T/http.log" 2>&1 &
echo $! >"$SVC_DIR/egress-http/pid"
svc_wait_port "$HTTP_PORT"

# the boundary's egress statement, for this test's ports instead of 443/80
jq --arg p "$HTTP_PORT" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource)
    = ["net:*:443", "net:*:80", "net:*:\($p)"]' "$ROOT/policies/boundary.json" >"$T/boundary.json"

# egress_job ID STEP [RULES-JSON]: an artifacts-only minimal app whose one
# step is STEP, asking for RULES in its buildvm.json; runs it, RC and $T/out
egress_job () {
    local id=$1 step=$2 rules=${3:-[]} app=$T/app-$1 commit
    mkdir -p "$app"
    jq -n --arg step "$step" --argjson rules "$rules" \
        '{profile: "minimal", steps: [$step], artifacts: ["out"], egress: $rules}' >"$app/buildvm.json"
    commit=$(pl_repo "$app")
    pl_job "$T/j-$id.json" "$id" "egress-$id" "$app" "$commit"
    run "$BUILDVM" run --config "$CONFIG" "$T/j-$id.json"
    COMMIT=$commit
}
# joblog ID: the job's log into $T/log
joblog () { "$BUILDVM" logs --config "$CONFIG" "$1" >"$T/log" 2>&1 || true; }

base_cfg () {
    pl_config "del(.registry.credentials) | .policies.boundary = \"$T/boundary.json\" | .egress = $1"
}

# --- plain HTTP through the proxy: the bytes arrive intact
base_cfg "{allow: [\"localhost:$HTTP_PORT\"], allow_addresses: [\"127.0.0.1/32\"]}"
egress_job http1 "mkdir -p out && env -u no_proxy -u NO_PROXY wget -q -O out/blob http://localhost:$HTTP_PORT/blob && echo fetched"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the HTTP download through the proxy failed"; }
cmp "$www/blob" "$BUILDVM_HOME/artifacts/apps/egress-http1/$COMMIT/out/blob" || fail "the bytes differ"
rec=$(pl_record http1)
jq -e '.egress.connections[0] | .host == "localhost" and .decision == "allow" and .address == "127.0.0.1" and .bytes_in > 3000000' "$rec" >/dev/null \
    || { jq .egress "$rec"; fail "the connection is not in the record"; }
joblog http1
assert_contains "$T/log" "[egress] allow HTTP localhost:$HTTP_PORT (127.0.0.1)"
assert_contains "$T/log" "[egress] closed localhost:$HTTP_PORT (127.0.0.1)"
assert_no_leftovers
echo "PASS"
