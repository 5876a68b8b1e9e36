#!/bin/bash
# Two real Dockerfile apps through the real runner (issue 17): docker-c (FROM
# gcc:12 AS build, a static binary, FROM scratch; no buildvm.json, so the
# Dockerfile at the root is detected) and docker-node (FROM node:18 AS build,
# npm ci from a real npm registry server, verdaccio on the host's 127.0.0.1,
# reached only through the build VM's egress proxy; then a node:18-slim
# runtime stage; a RUN --mount=type=secret of the app's granted canary). The
# FROM lines map to the base images push-base.sh pushed (runner.json's default
# dockerfile.from_map); the record names the frontend and each base with its
# digest; each image is pulled back with skopeo, started with runc and asked
# over HTTP on 127.0.0.1; the canary is in no blob of the registry (every
# layer decompressed, every config), not in the job's log or its record.
. "$(dirname "$0")/lib.sh"

need_test_build
BUILDVM=$BUILDVM_TEST
command -v npm >/dev/null || fail "npm is not installed (make deps)"
[ -f "$BUILDVM_IMAGES/debian.json" ] || fail "no debian build image in $BUILDVM_IMAGES (make image-debian)"

# --- a real npm registry: verdaccio (tests/lib/services.sh), its storage
# filled with docker-node's lockfile at set-up; the VM's npm ci is then
# served from 127.0.0.1
svc_verdaccio "$ROOT/examples/apps/docker-node" \
    || fail "this test needs a real npm registry server (verdaccio) on 127.0.0.1"

# --- the runner: a registry with the base images the FROM lines map to, the
# npm registry's port allowed by the boundary and granted to every build,
# the app's canary secret
pl_registry
svc_base_images "$REG" "$REG_CREDS" base/gcc:12 base/node:18-build base/node:18 >"$T/push-bases" 2>&1 \
    || { cat "$T/push-bases"; fail "pushing the base images failed"; }
# "pushed base image 127.0.0.1:P/base/node:18 (sha256:...)" or "... is there (sha256:...)"
base_digest () { sed -n "s|^.* $REG/$1 .*(\(sha256:[0-9a-f]*\))\$|\1|p" "$T/push-bases"; }
for b in base/gcc:12 base/node:18-build base/node:18; do
    [ -n "$(base_digest "$b")" ] || { cat "$T/push-bases"; fail "no digest for $b"; }
done
jq --arg n "$NPM_PORT" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource)
    = ["net:*:443", "net:*:80", "net:*:\($n)"]' "$ROOT/policies/boundary.json" >"$T/boundary.json"
pl_config ".policies.boundary = \"$T/boundary.json\"
    | .egress = {allow: [\"localhost:$NPM_PORT\"], allow_addresses: [\"127.0.0.1/32\"], limits: {connections: 256}}"
"$BUILDVM" secrets --config "$CONFIG" init-master-key >/dev/null
canary="canary-df-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf %s "$canary" | "$BUILDVM" secrets --config "$CONFIG" set docker-node npm_canary

. "$(dirname "$0")/runc.sh"
trap 'rc=$?; stop_containers; set +e; (exit $rc); _cleanup' EXIT

# docker-node's registry is the host's verdaccio under the name localhost,
# which the VM's NO_PROXY keeps off the proxy: NPM_NOPROXY gives npm a
# NO_PROXY of its own (any name but the registry's), so it goes through the
# proxy as a real registry's host would
app () { # EX: the example as a repository of its own; prints the commit
    local dir=$T/app-$1
    rm -rf "$dir" && cp -R "$ROOT/examples/apps/$1" "$dir"
    if [ "$1" = docker-node ]; then
        jq --arg r "http://localhost:$NPM_PORT/" --arg e "localhost:$NPM_PORT" '
            .dockerfile.args = {NPM_REGISTRY: $r, NPM_NOPROXY: "none.invalid"} | .egress = [$e]' \
            "$ROOT/examples/apps/$1/buildvm.json" >"$dir/buildvm.json"
    fi
    pl_repo "$dir"
}

for ex in docker-c docker-node; do
    # (T_DOCKERFILE_ONLY=docker-node: one app only, when working on it)
    case ${T_DOCKERFILE_ONLY:-$ex} in "$ex") ;; *) continue ;; esac
    commit=$(app "$ex")
    pl_job "$T/j-$ex.json" "df-$ex" "$ex" "file://$T/app-$ex" "$commit"
    t0=$(date +%s)
    run "$BUILDVM" run --config "$CONFIG" "$T/j-$ex.json"
    secs=$(( $(date +%s) - t0 ))
    "$BUILDVM" logs --config "$CONFIG" "df-$ex" >"$T/log-$ex" 2>&1 || true
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; tail -60 "$T/log-$ex"; fail "$ex: the deploy failed"; }
    rec=$(pl_record "df-$ex")
    note "$ex: built and pushed in ${secs}s ($(jq -r '[(.phases | to_entries[] | select(.value.ms > 500) | "\(.key) \(.value.ms)ms")]
        + [.build.steps[]? | "\(.name) \(.ms)ms"] | join(", ")' "$rec"))"

    # --- the record: which frontend and why, each base by digest
    case $ex in
        docker-c) why="Dockerfile at the root, no buildvm.json"
                  bases='[{"from": "gcc:12", "repository": "base/gcc"}]' ;;
        docker-node) why='buildvm.json "dockerfile"'
                  bases='[{"from": "node:18", "repository": "base/node"}, {"from": "node:18-slim", "repository": "base/node"}]' ;;
    esac
    jq -e --arg why "$why" '.frontend.kind == "dockerfile" and (.frontend.why | contains($why))' "$rec" >/dev/null \
        || { jq .frontend "$rec"; fail "$ex: the record does not say frontend dockerfile ($why)"; }
    jq -e --argjson want "$bases" '[.dockerfile.bases[] | {from, repository}] == $want' "$rec" >/dev/null \
        || { jq .dockerfile "$rec"; fail "$ex: the record's bases are not $bases"; }
    for i in $(seq 0 $(( $(jq '.dockerfile.bases | length' "$rec") - 1 ))); do
        repo=$(jq -r ".dockerfile.bases[$i].repository" "$rec")
        ref=$repo:$(jq -r ".dockerfile.bases[$i].reference" "$rec")
        want=$(base_digest "$ref")
        got=$(jq -r ".dockerfile.bases[$i].digest" "$rec")
        assert_eq "$want" "$got" "$ex: the digest of $ref in the record"
        # "base: node:18 → base/node:18-build@sha256:..."
        grep -qE "$repo(:[^@ ]+)?@$want" "$T/log-$ex" "$T/err" \
            || { grep -n "base" "$T/log-$ex" "$T/err" | head; fail "$ex: neither the log nor stderr names $repo@$want"; }
    done

    # --- the image: pulled back, its config as the Dockerfile says, the
    # runtime base's layers first (mounted from base/..., the same blobs)
    skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" \
        "docker://$REG/apps/$ex:$commit" "oci:$T/layout-$ex:app" || fail "$ex: skopeo cannot pull the image"
    skopeo inspect --config "oci:$T/layout-$ex:app" >"$T/config-$ex.json"
    skopeo inspect --raw "oci:$T/layout-$ex:app" >"$T/manifest-$ex.json"
    case $ex in
        docker-c)
            jq -e '.config.Entrypoint == ["/hello"] and .config.Cmd == ["serve"] and .config.User == "1000:1000"
                and (.config.ExposedPorts | has("8080/tcp")) and (.rootfs.diff_ids | length) == 1' "$T/config-$ex.json" >/dev/null \
                || { jq .config "$T/config-$ex.json"; fail "$ex: the image config is not the Dockerfile's"; }
            want="hello, world" ;;
        docker-node)
            jq -e '.config.Cmd == ["node", "server.js"] and .config.WorkingDir == "/app" and .config.User == "1000:1000"
                and any(.config.Env[]; . == "NODE_ENV=production")' "$T/config-$ex.json" >/dev/null \
                || { jq .config "$T/config-$ex.json"; fail "$ex: the image config is not the Dockerfile's"; }
            skopeo inspect --raw --tls-verify=false --creds "$REG_CREDS" "docker://$REG/base/node:18" >"$T/base-manifest.json"
            [ "$(jq -c '[.layers[].digest]' "$T/base-manifest.json")" = "$(jq -c '[.layers[0].digest]' "$T/manifest-$ex.json")" ] \
                || { jq .layers "$T/base-manifest.json" "$T/manifest-$ex.json"; fail "$ex: the first layer is not base/node:18's blob"; }
            [ "$(jq '.layers | length' "$T/manifest-$ex.json")" -ge 2 ] || fail "$ex: no app layer over the base"
            # npm ci went through the proxy, to the host's verdaccio
            assert_contains "$T/log-$ex" "[egress] allow HTTP localhost:$NPM_PORT (127.0.0.1)"
            jq -e '.egress.allowed > 0 and .egress.denied == 0' "$rec" >/dev/null \
                || { jq .egress "$rec"; fail "$ex: the proxied connections are not in the record"; }
            assert_contains "$T/log-$ex" "1 test passed"
            want="hello from a Dockerfile, world (express 4.21.2)" ;;
    esac
    runc_serve "$ex" "$T/layout-$ex:app"
    case $SERVED_BODY in *"$want"*) ;; *) fail "$ex: answered [$SERVED_BODY], not [$want]" ;; esac
    note "$ex: the image answers on 127.0.0.1:$SERVED_PORT: $SERVED_BODY"
    stop_containers
done

# --- the canary: in no layer (decompressed), no config, no manifest of any
# image in the registry, not in the pulled layout, the log or the record
# (grep's status, not gzip's: grep -q ends the pipe at the first match)
in_gzip () { (set +o pipefail; gzip -dc "$1" 2>/dev/null | grep -qaF -- "$canary"); }
n=0
while IFS= read -r -d '' f; do
    ! in_gzip "$f" || fail "the canary is in the gzip blob $f (decompressed)"
    ! grep -qaF -- "$canary" "$f" || fail "the canary is in the blob $f"
    n=$((n + 1))
done < <(find "$REG_main_DIR/data" "$T/layout-docker-node" -type f -print0)
[ "$n" -ge 4 ] || fail "only $n registry files looked at"
assert_not_contains "$T/log-docker-node" "$canary"
assert_not_contains "$(pl_record df-docker-node)" "$canary"
note "the canary is in none of $n registry and layout files (layers decompressed), the log or the record"
assert_no_leftovers
