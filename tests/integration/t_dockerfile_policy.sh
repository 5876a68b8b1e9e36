#!/bin/bash
# A Dockerfile job's plan (issue 17): the frontend chosen and why, and every
# refusal the plan makes before any VM boots - a FROM the runner does not
# provide, another app's image, an ADD of a host the egress role does not
# allow, a build arg named like a secret or as a granted secret, a secret
# mount of a secret not granted - each one line with the Dockerfile's line,
# its exit status, nothing pushed, no VM. Then a plan that passes: the bases
# are pulled (digests recorded) and written to the scratch disk as an OCI
# layout that skopeo reads; the runner is stopped as the build phase begins
# (BUILDVM_FAULT=build, the test binary), so no VM is needed here.
. "$(dirname "$0")/lib.sh"
need_test_build

pl_registry
pl_config
app=$T/src
mkdir -p "$app"
n=0

# df_run ID EXPECTED-EXIT: commit what is in $app and run it as job ID;
# the output (stdout, stderr and the job log) in $T/all
df_run () {
    local commit
    commit=$(cd "$app" && git add -A && git -c user.name=t -c user.email=t@example.invalid \
        commit -qm "$1" --allow-empty && git rev-parse HEAD)
    COMMIT=$commit
    pl_job "$T/j.json" "$1" df-app "$app" "$commit"
    run "$BUILDVM_TEST" run --config "$CONFIG" "$T/j.json"
    cat "$T/out" "$T/err" >"$T/all"
    "$BUILDVM" logs --config "$CONFIG" "$1" >>"$T/all" 2>&1 || true
    [ "$2" = "$RC" ] || { tail -20 "$T/all"; fail "exit status of $1: expected [$2], got [$RC]"; }
}

# refused ID: no VM booted, nothing pushed, nothing left
refused () {
    local rec
    rec=$(pl_record "$1" df-app)
    [ -f "$rec" ] || fail "no record for $1"
    jq -e '.phases.build == null and .phases.base == null' "$rec" >/dev/null \
        || fail "$1: a phase after the plan ran: $(jq -c .phases "$rec")"
    pl_tag_exists apps/df-app "$COMMIT" && fail "$1: pushed"
    assert_no_leftovers
}


(cd "$app" && git init -q -b main .)

# --- no buildvm.json, a Dockerfile at the root: the Dockerfile frontend; its
# FROM names an image the runner does not provide
printf 'FROM alpine:3\nRUN true\n' >"$app/Dockerfile"
df_run df-1 2
assert_contains "$T/all" 'Dockerfile:1: FROM `alpine:3` is not an image this runner provides (dockerfile.from_map maps node:18, node:18-slim, debian:12'
assert_eq dockerfile "$(jq -r .frontend.kind "$(pl_record df-1 df-app)")" "frontend"
assert_eq "Dockerfile at the root, no buildvm.json" "$(jq -r .frontend.why "$(pl_record df-1 df-app)")" "why"
assert_contains "$T/all" "frontend: dockerfile (Dockerfile at the root, no buildvm.json)"
assert_eq invalid "$(jq -r .error.code "$(pl_record df-1 df-app)")" "error code"
refused df-1

# --- another registry's image, on line 3 after a directive and a comment
printf '# syntax=docker/dockerfile:1\n# the build\nFROM evil.example/x:1 AS b\nFROM scratch\n' >"$app/Dockerfile"
df_run df-2 2
assert_contains "$T/all" 'Dockerfile:3: FROM `evil.example/x:1` is not an image this runner provides'
refused df-2

# --- another app's image: local (apps/), so the role decides, and denies
printf 'FROM apps/other-app/web:1\n' >"$app/Dockerfile"
df_run df-3 3
assert_contains "$T/all" 'Dockerfile:1: FROM `apps/other-app/web:1`'
assert_contains "$T/all" 'denies `registry:PullImage` on `registry:apps/other-app/web:1`'
assert_eq denied "$(jq -r .error.code "$(pl_record df-3 df-app)")" "error code"
refused df-3

# the same through COPY --from, behind a FROM the runner provides
printf 'FROM debian:12\nCOPY --from=apps/other-app/web:1 /srv /srv\n' >"$app/Dockerfile"
df_run df-3b 3
assert_contains "$T/all" 'Dockerfile:2: COPY --from `apps/other-app/web:1`'
refused df-3b

# --- ADD of a URL whose host the egress role does not allow
printf '{"dockerfile": true, "egress": ["registry.npmjs.org:443"]}\n' >"$app/buildvm.json"
printf 'FROM debian:12\nWORKDIR /app\nADD https://evil.example/x.tgz /app/\n' >"$app/Dockerfile"
df_run df-4 3
assert_contains "$T/all" 'Dockerfile:3: ADD https://evil.example/x.tgz: the role does not allow connecting to evil.example:443 (add it to buildvm.json `egress`)'
assert_eq dockerfile "$(jq -r .frontend.kind "$(pl_record df-4 df-app)")" "frontend"
assert_eq 'buildvm.json "dockerfile"' "$(jq -r .frontend.why "$(pl_record df-4 df-app)")" "why"
refused df-4
# and with no egress rules at all (port 80 by default)
printf '{"dockerfile": true}\n' >"$app/buildvm.json"
printf 'FROM debian:12\nADD http://files.example/a /a\n' >"$app/Dockerfile"
df_run df-4b 3
assert_contains "$T/all" 'Dockerfile:2: ADD http://files.example/a: the role does not allow connecting to files.example:80'
refused df-4b

# --- a build arg named like a secret
printf '{"dockerfile": {"args": {"NODE_ENV": "production", "NPM_TOKEN": "abc"}}}\n' >"$app/buildvm.json"
printf 'FROM debian:12\nARG NPM_TOKEN\n' >"$app/Dockerfile"
df_run df-5 2
assert_contains "$T/all" "build arg \`NPM_TOKEN\` looks like a secret: build args end up in the image's history; grant it as a secret and use RUN --mount=type=secret,id=..."
refused df-5

# --- a build arg named as a granted secret (case aside)
printf '{"dockerfile": {"args": {"deploy_cert": "x"}}, "secrets": ["DEPLOY_CERT"]}\n' >"$app/buildvm.json"
df_run df-6 2
assert_contains "$T/all" 'build arg `deploy_cert` is the name of the secret `DEPLOY_CERT`'
refused df-6

# --- a secret mount of a secret the spec does not grant
printf '{"dockerfile": true, "secrets": ["NPM_TOKEN"]}\n' >"$app/buildvm.json"
printf 'FROM debian:12\nRUN --mount=type=secret,id=NPM_TOKEN true\nRUN --mount=type=secret,id=API_KEY \\\n    cat /run/secrets/API_KEY\n' >"$app/Dockerfile"
df_run df-7 2
assert_contains "$T/all" 'Dockerfile:3: RUN --mount=type=secret,id=API_KEY: secret `API_KEY` is not granted'
refused df-7

# --- a Dockerfile that is not one: the line and the reason
printf 'FROM debian:12\nRUN <<EOF\necho hi\nEOF\n' >"$app/Dockerfile"
df_run df-8 2
assert_contains "$T/all" 'Dockerfile:3: unknown instruction `echo`'
refused df-8

# --- both `dockerfile` and `steps`: an error in buildvm.json
printf '{"dockerfile": true, "profile": "minimal", "steps": ["make"]}\n' >"$app/buildvm.json"
df_run df-9 2
assert_contains "$T/all" '`buildvm.json`: field `steps` must be absent in a Dockerfile build: the Dockerfile describes the build and the image'
jq -e '.phases.plan == null' "$(pl_record df-9 df-app)" >/dev/null || fail "planned a bad spec"
refused df-9

# --- buildvm.json wins over a Dockerfile: the steps frontend (stopped at
# its plan by a limit, so no VM is needed to see it)
printf '{"profile": "minimal", "steps": ["true"], "resources": {"vcpus": 999}}\n' >"$app/buildvm.json"
printf 'FROM alpine:3\n' >"$app/Dockerfile"
df_run df-10 2
assert_contains "$T/all" "frontend: steps (buildvm.json)"
assert_contains "$T/all" "resources.vcpus 999 exceeds the runner limit"
assert_not_contains "$T/all" "Dockerfile:"
assert_eq steps "$(jq -r .frontend.kind "$(pl_record df-10 df-app)")" "frontend"
assert_eq buildvm.json "$(jq -r .frontend.why "$(pl_record df-10 df-app)")" "why"
refused df-10

# --- neither: the error it always was
rm -f "$app/buildvm.json" "$app/Dockerfile"
echo hi >"$app/README"
df_run df-11 2
assert_contains "$T/all" 'has no `buildvm.json` at its root'
refused df-11

# --- a plan that passes: two FROMs of one base (by its upstream name,
# mapped, and by its own), pulled once each, written as an OCI layout to the
# scratch disk; the runner is killed as the build phase begins
svc_base_images "$REG" "$REG_CREDS" base/debian:12 >/dev/null
printf '{"dockerfile": {"args": {"GREETING": "hi"}}}\n' >"$app/buildvm.json"
printf 'ARG DEB=12\nFROM debian:${DEB} AS one\nRUN echo one\nFROM base/debian:12\nCOPY --from=one /etc/os-release /x\n' >"$app/Dockerfile"
commit=$(pl_commit "$app" ok)
pl_job "$T/j.json" df-ok df-app "$app" "$commit"
set +e
BUILDVM_FAULT=build "$BUILDVM_TEST" run --config "$CONFIG" "$T/j.json" >"$T/out" 2>"$T/err"
RC=$?
set -e
cat "$T/out" "$T/err" >"$T/all"
"$BUILDVM" logs --config "$CONFIG" df-ok >>"$T/all" 2>&1 || true
if [ "$RC" = 2 ] && grep -q "a job needs 1 to" "$T/all"; then
    rm -rf "$WORK"/*
    skip "the plan checks pass; the bases layout is not checked: guest.c does not encode a Dockerfile job's control records yet (branch dfguest)"
fi
[ "$RC" = 137 ] || { tail -30 "$T/all"; fail "the runner was not killed at the build phase: exit $RC"; }
assert_contains "$T/all" "plan: FROM debian:12 -> base/debian:12 (dockerfile.from_map)"
assert_contains "$T/all" "plan: FROM base/debian:12 -> base/debian:12"
assert_contains "$T/all" "base: debian:12 → base/debian:12@sha256:"
# no build VM: the job's early VM (booted during its checkout, blank) is the
# only one it had, and it died with the runner
for _ in $(seq 50); do [ -z "$(vmms_of_ours)" ] && break; sleep 0.1; done
[ -z "$(vmms_of_ours)" ] || fail "a VM outlived the killed runner"
# the job's own work directory (df-ok.<rand>), not its early VM's (df-ok-vm.<rand>)
scratch=$(find "$WORK" -path "*/df-ok.*/scratch.img" | head -1)
[ -n "$scratch" ] || fail "no scratch disk in $WORK"
digest=$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" --raw "docker://$REG/base/debian:12" | sha256sum | cut -d' ' -f1)
mkdir -p "$T/x"
debugfs -R "rdump /bases $T/x" "$scratch" >/dev/null 2>&1 || fail "no bases/ on the scratch disk"
jq -e '.imageLayoutVersion == "1.0.0"' "$T/x/bases/oci-layout" >/dev/null || fail "oci-layout"
assert_eq 2 "$(jq '.manifests | length' "$T/x/bases/index.json")" "bases in index.json"
assert_eq "b0 b1" "$(jq -r '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | join(" ")' "$T/x/bases/index.json")" "ref names"
assert_eq "sha256:$digest" "$(jq -r '.manifests[0].digest' "$T/x/bases/index.json")" "b0's digest"
for b in $(ls "$T/x/bases/blobs/sha256"); do
    assert_eq "$b" "$(sha256sum "$T/x/bases/blobs/sha256/$b" | cut -d' ' -f1)" "blob $b"
done
# one base twice: its manifest, config and layers once
layers=$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" --raw "docker://$REG/base/debian:12" | jq '.layers | length')
assert_eq $((layers + 2)) "$(ls "$T/x/bases/blobs/sha256" | wc -l)" "blobs written once"
skopeo inspect "oci:$T/x/bases:b1" >"$T/inspect.json" || fail "skopeo cannot read bases/"
assert_eq "sha256:$digest" "$(jq -r .Digest "$T/inspect.json")" "skopeo's digest of b1"
# root's, read-only for the build user
debugfs -R "stat /bases/index.json" "$scratch" 2>/dev/null | grep -q "User:     0   Group:     0" \
    || fail "bases/ not owned by root"
rm -rf "$WORK"/*
assert_no_leftovers
echo "t_dockerfile_policy: ok"
