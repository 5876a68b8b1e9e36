#!/bin/bash
# buildvm run, end to end: a git repository made with git, a real registry
# with auth, a real VM. Verified with independent clients (skopeo, umoci,
# sha256sum). Then a re-run is idempotent, and nothing is left behind.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 >/dev/null

app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
commit=$(pl_repo "$app")
pl_job "$T/job.json" e2e-1 hello-shell "file://$app" "$commit"

run "$BUILDVM" run --config "$CONFIG" "$T/job.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "run failed"; }
assert_contains "$T/out" "succeeded"
assert_contains "$T/out" "$REG/apps/hello-shell:$commit@sha256:"

# --- the image, as an independent client sees it
skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/hello-shell:$commit" >"$T/inspect.json"
skopeo inspect --config --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/hello-shell:$commit" >"$T/config.json"
assert_eq "$commit" "$(jq -r '.Labels["dev.buildvm.commit"]' "$T/inspect.json")" "commit label"
assert_eq "hello-shell" "$(jq -r '.Labels["org.opencontainers.image.title"]' "$T/inspect.json")" "spec label"
assert_eq "2" "$(jq '.Layers | length' "$T/inspect.json")" "base layer + app layer"
assert_eq '["/bin/sh","-c","exec /usr/sbin/httpd -f -p \"${PORT:-8080}\" -h /app/www"]' "$(jq -c .config.Entrypoint "$T/config.json")" "entrypoint"
assert_eq "/app" "$(jq -r .config.WorkingDir "$T/config.json")" "workdir"
assert_eq "1000:1000" "$(jq -r .config.User "$T/config.json")" "user"
assert_eq '{"8080/tcp":{}}' "$(jq -c .config.ExposedPorts "$T/config.json")" "ports"
jq -r '.config.Env[]' "$T/config.json" | grep -qx 'SITE=hello' || fail "image env"
kernel=$(jq -r .kernel.sha256 "$BUILDVM_IMAGES/minimal.json")
assert_eq "$kernel" "$(jq -r '.Labels["dev.buildvm.vm.kernel"]' "$T/inspect.json")" "vm image label"

skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" \
    "docker://$REG/apps/hello-shell:$commit" "oci:$T/layout:app"
umoci unpack --image "$T/layout:app" "$T/bundle" >/dev/null
r=$T/bundle/rootfs
[ -x "$r/bin/busybox" ] || fail "the base layer is missing"
assert_eq "-rw-r--r-- regular file" "$(stat -c '%A %F' "$r/app/www/index.html")" "index.html"
assert_eq "-rwxr-xr-x regular file" "$(stat -c '%A %F' "$r/app/bin/healthcheck")" "healthcheck"
assert_eq "www/index.html" "$(readlink "$r/app/index.html")" "symlink target"
assert_eq "drwxr-xr-x" "$(stat -c %A "$r/app")" "destination directory"
grep -q "<title>hello from buildvm</title>" "$r/app/www/index.html" || fail "site content"

# --- the artifacts and their index
adir=$BUILDVM_HOME/artifacts/apps/hello-shell/$commit
[ -f "$adir/index.json" ] || fail "no artifact index"
assert_eq 2 "$(jq '.objects | length' "$adir/index.json")" "artifact count"
for key in $(jq -r '.objects[].key' "$adir/index.json"); do
    rel=${key#apps/hello-shell/$commit/}
    want=$(jq -r --arg k "$key" '.objects[] | select(.key == $k) | .sha256' "$adir/index.json")
    got=$(sha256sum "$(pl_artifact "hello-shell/$commit" "$rel")" | cut -d' ' -f1)
    assert_eq "$want" "$got" "sha256 of $rel"
    # at rest it is sealed: the store's file is not the plaintext
    [ "$(head -c 7 "$adir/$rel")" = BVMSEAL ] || fail "$rel is not encrypted at rest"
done
cmp "$(pl_artifact "hello-shell/$commit" dist/www/index.html)" "$r/app/www/index.html" \
    || fail "artifact differs from the image's file"
assert_eq buildvm-seal-v1 "$(jq -r .sealed "$adir/index.json")" "the index says sealed"

# --- the record and the log
rec=$(pl_record e2e-1)
assert_eq succeeded "$(jq -r .status "$rec")" "record status"
assert_eq "$commit" "$(jq -r .commit "$rec")" "record commit"
digest=$(jq -r .image.digest "$rec")
assert_eq "$(jq -r .Digest "$T/inspect.json")" "$digest" "record digest"
for p in role log checkout plan input build ingest image push artifacts tag; do
    jq -e --arg p "$p" '.phases[$p].ms >= 0' "$rec" >/dev/null || fail "phase $p not recorded"
done
jq -e '.vm_image.rootfs.sha256 | startswith("sha256:")' "$rec" >/dev/null || fail "vm image digests"
jq -e '.role.id | startswith("role-")' "$rec" >/dev/null || fail "role not recorded"
"$BUILDVM" logs e2e-1 >"$T/log" 2>&1 || true
assert_contains "$T/log" "tests passed"
assert_contains "$T/log" "site built"

assert_no_leftovers

# --- a re-run: same digests, nothing uploaded again, one tag
pl_job "$T/job2.json" e2e-2 hello-shell "file://$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/job2.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "re-run failed"; }
assert_eq "$digest" "$(jq -r .image.digest "$(pl_record e2e-2)")" "re-run digest"
"$BUILDVM" logs e2e-2 >"$T/log2" 2>&1 || true
assert_contains "$T/log2" "push: 0 blob(s) uploaded"
assert_contains "$T/log2" "checkout: already in the mirror"
assert_eq 2 "$(jq '.objects | length' "$adir/index.json")" "artifacts after the re-run"
# (and the referrers tag that lists the image's attestations: t_attest)
tags=$(curl -fs -u "$REG_CREDS" "http://$REG/v2/apps/hello-shell/tags/list" | jq -c ".tags | sort")
assert_eq "$(jq -nc --arg c "$commit" --arg r "sha256-${digest#sha256:}" '[$c, $r] | sort')" "$tags" "tags after the re-run"
assert_no_leftovers
