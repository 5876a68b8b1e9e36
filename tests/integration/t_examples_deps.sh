#!/bin/bash
# Examples with real dependencies (issue 13, "real examples, real upstreams"):
# hello-express installs express from its package-lock.json with `npm ci`
# from a real npm registry server (verdaccio), hello-wsgi its requirements.txt
# with pip from a PEP 503 index of locally built wheels, both on the host's
# 127.0.0.1 and reached only through the build VM's egress proxy. Each
# deployed image is pulled back with skopeo, unpacked with umoci, started
# with runc and asked over HTTP. Without the grant, the same build fails and
# its log and record say which connection was refused.
. "$(dirname "$0")/lib.sh"

command -v runc >/dev/null || fail "runc is not installed (make deps)"
command -v npm >/dev/null || fail "npm is not installed (make deps)"
[ -f "$BUILDVM_IMAGES/debian.json" ] || fail "no debian build image in $BUILDVM_IMAGES (make image-debian)"
for b in node-18 python-3.11; do
    [ -f "$BUILDVM_IMAGES/base/$b/index.json" ] || [ -x "$ROOT/buildvm-image/base/push-base.sh" ] \
        || fail "no base image layout $BUILDVM_IMAGES/base/$b (make base-images)"
done

# --- a real npm registry: verdaccio (tests/lib/services.sh), its uplink the
# registry this machine's npm is configured with, its storage filled with
# hello-express's lockfile at set-up; the VM's install is then served from
# 127.0.0.1
t0=$(date +%s)
svc_verdaccio "$ROOT/examples/apps/hello-express" \
    || fail "this test needs a real npm registry server (verdaccio) on 127.0.0.1"
note "verdaccio on 127.0.0.1:$NPM_PORT holds the lockfile's packages ($(( $(date +%s) - t0 ))s)"

# --- a PEP 503 simple index with the wheel hello-wsgi needs, built here
PIP_PORT=$(svc_free_port)
idx=$T/pypi
mkdir -p "$idx/files" "$idx/simple/hello-greeting"
whl=$(python3 "$ROOT/tests/lib/mkwheel.py" "$idx/files" hello-greeting 1.0.0 \
    "$ROOT/tests/fixtures/python/hello-greeting/hello_greeting.py")
sum=$(sha256sum "$whl" | cut -d' ' -f1)
printf '<!DOCTYPE html>\n<html><body><a href="hello-greeting/">hello-greeting</a></body></html>\n' >"$idx/simple/index.html"
printf '<!DOCTYPE html>\n<html><body><a href="../../files/%s#sha256=%s">%s</a></body></html>\n' \
    "$(basename "$whl")" "$sum" "$(basename "$whl")" >"$idx/simple/hello-greeting/index.html"
mkdir -p "$SVC_DIR/pypi"
(cd "$idx" && exec python3 -m http.server --bind 127.0.0.1 "$PIP_PORT") >"$SVC_DIR/pypi/log" 2>&1 &
echo $! >"$SVC_DIR/pypi/pid"
svc_wait_port "$PIP_PORT" 20 || fail "the wheel index did not listen on 127.0.0.1:$PIP_PORT"

# --- the runner: a registry with the base images, a boundary that allows the
# two ports, and a runner.json granting them (and 127.0.0.1) to every build
pl_registry
push_base () { # REF (base/node:18): from the layout make base-images made
    local ref=$1 name
    if declare -F svc_base_images >/dev/null; then
        svc_base_images "$REG" "$REG_CREDS" "$ref"
        return
    fi
    name=$(echo "${ref#base/}" | tr : -)
    skopeo copy -q --dest-tls-verify=false --dest-creds "$REG_CREDS" \
        "oci:$BUILDVM_IMAGES/base/$name:${ref##*:}" "docker://$REG/$ref"
}
jq --arg n "$NPM_PORT" --arg p "$PIP_PORT" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource)
    = ["net:*:443", "net:*:80", "net:*:\($n)", "net:*:\($p)"]' "$ROOT/policies/boundary.json" >"$T/boundary.json"
# limits.connections: npm ci of the lockfile's 72 packages has had more than
# the default 32 streams live at once through the proxy (every request is a
# connection of its own, and a stream outlives its exchange for a while), so
# some were refused with 429 and npm retried them
cfg () { # ALLOW-JSON
    pl_config ".policies.boundary = \"$T/boundary.json\"
        | .egress = {allow: $1, allow_addresses: [\"127.0.0.1/32\"], limits: {connections: 256}}"
}

. "$(dirname "$0")/runc.sh"
# _cleanup exits with the status of the command before it, so (exit $rc),
# without errexit (which would end the trap there, leaving verdaccio running)
trap 'rc=$?; stop_containers; set +e; (exit $rc); _cleanup' EXIT

# app EX ENV-JSON: the example as a repository of its own, its buildvm.json's
# env told where the upstream is. The agent's default NO_PROXY keeps
# localhost off the proxy (in the VM it is the VM's); here the upstreams
# are the host's, so it is emptied. Prints the commit.
app () {
    local dir=$T/app-$1
    rm -rf "$dir" && cp -R "$ROOT/examples/apps/$1" "$dir"
    jq --argjson e "$2" '.env += $e + {NO_PROXY: "", no_proxy: ""}' "$ROOT/examples/apps/$1/buildvm.json" >"$dir/buildvm.json"
    pl_repo "$dir"
}
deploy () { # ID EX COMMIT: RC, the job's log in $T/log-ID
    pl_job "$T/j-$1.json" "$1" "$2" "file://$T/app-$2" "$3"
    local t0=$(date +%s)
    run "$BUILDVM" run --config "$CONFIG" "$T/j-$1.json"
    "$BUILDVM" logs --config "$CONFIG" "$1" >"$T/log-$1" 2>&1 || true
    note "$1: $2 ran in $(( $(date +%s) - t0 ))s (rc $RC)"
}

npm_env="{\"NPM_REGISTRY\": \"http://localhost:$NPM_PORT/\"}"
pip_env="{\"PIP_INDEX_URL\": \"http://localhost:$PIP_PORT/simple/\"}"
grant="[\"localhost:$NPM_PORT\", \"localhost:$PIP_PORT\"]"

for ex in hello-express hello-wsgi; do
    spec=$ROOT/examples/apps/$ex/buildvm.json
    case $ex in
        hello-express) env=$npm_env port=$NPM_PORT want="hello, world (express 4.21.2)" ;;
        hello-wsgi) env=$pip_env port=$PIP_PORT want="hello, world (hello-greeting 1.0.0)" ;;
    esac
    base=$(jq -r .image.base "$spec")
    push_base "$base" >"$T/push-$ex" 2>&1 || { cat "$T/push-$ex"; fail "$ex: pushing $base failed"; }
    commit=$(app "$ex" "$env")

    # --- granted: the dependencies come through the proxy
    cfg "$grant"
    deploy "deps-$ex" "$ex" "$commit"
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; tail -40 "$T/log-deps-$ex"; fail "$ex: the deploy failed"; }
    assert_contains "$T/log-deps-$ex" "[egress] allow HTTP localhost:$port (127.0.0.1)"
    assert_not_contains "$T/log-deps-$ex" "[egress] deny"
    rec=$(pl_record "deps-$ex")
    jq -e --argjson p "$port" '.egress.denied == 0 and .egress.allowed > 0
        and ([.egress.connections[] | select(.decision == "allow" and .host == "localhost" and .address == "127.0.0.1")] | length) == .egress.allowed
        and ([.egress.connections[].bytes_in] | add) > 1000' "$rec" >/dev/null \
        || { jq .egress "$rec"; fail "$ex: the proxied connections are not in the record"; }
    note "$ex: $(jq .egress.allowed "$rec") connections through the proxy, $(jq '[.egress.connections[].bytes_in] | add' "$rec") bytes in"

    # --- the pushed image starts and answers
    skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" \
        "docker://$REG/apps/$ex:$commit" "oci:$T/layout-$ex:app" || fail "$ex: skopeo cannot pull the image"
    runc_serve "$ex" "$T/layout-$ex:app"
    body=$SERVED_BODY hport=$SERVED_PORT
    case $body in *"$want"*) ;; *) fail "$ex: answered [$body], not [$want]" ;; esac
    note "$ex: the image answers on 127.0.0.1:$hport: $body"
    stop_containers

    # --- not granted (the channel is there, for the other upstream only): the
    # install is refused, the build fails, and the log and record say why
    case $ex in
        hello-express) cfg "[\"localhost:$PIP_PORT\"]" ;;
        hello-wsgi) cfg "[\"localhost:$NPM_PORT\"]" ;;
    esac
    deploy "nodeps-$ex" "$ex" "$commit"
    [ "$RC" != 0 ] || fail "$ex: the build without the egress grant succeeded"
    assert_contains "$T/out" "build step 1 (\`install\`) failed"
    assert_contains "$T/log-nodeps-$ex" "[egress] deny HTTP localhost:$port: the job's role denies net:localhost:$port"
    case $ex in
        hello-express) assert_contains "$T/log-nodeps-$ex" "403 Forbidden - GET http://localhost:$port/" ;;
        hello-wsgi) assert_contains "$T/log-nodeps-$ex" "No matching distribution found for hello-greeting==1.0.0" ;;
    esac
    jq -e '.egress.denied > 0 and .egress.allowed == 0 and .error.code == "build"' "$(pl_record "nodeps-$ex")" >/dev/null \
        || { jq '{error, egress}' "$(pl_record "nodeps-$ex")"; fail "$ex: the refusal is not in the record"; }
    pl_tag_exists "apps/$ex" "$commit" || fail "$ex: the first deploy's image is gone"
done
# nothing of this test's jobs is left (other trees' tests may run VMs of
# their own meanwhile, so only our job names count)
p=$(vmms_of_ours 'buildvm-(deps|nodeps)-hello-')
[ -z "$p" ] || fail "VMM processes left behind: $p"
[ -z "$(find "$WORK" -mindepth 1 2>/dev/null | head -1)" ] || fail "job files left behind"
