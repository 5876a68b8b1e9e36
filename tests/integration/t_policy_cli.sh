#!/bin/bash
# t_policy_cli.sh: `buildvm policy eval|check` against the shipped policies
set -euo pipefail
cd "$(dirname "$0")/../.."
bvm=${BUILDVM:-${BUILD:-build}/buildvm}
[ -x "$bvm" ] || { echo "FAIL: $bvm is not built (make ${BUILD:-build}/buildvm)"; exit 1; }
tmp=$(mktemp -d /tmp/buildvm-t_policy.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail () { echo "FAIL: $*"; exit 1; }

commit=0123456789abcdef0123456789abcdef01234567
cat >"$tmp/job.json" <<JSON
{"id": "d-42", "app": "app1", "repo": "file:///srv/app1.git", "commit": "$commit",
 "ref": "refs/heads/main", "trigger": "manual"}
JSON

# expect STATUS LINE1 LINE2-SUBSTRING -- ARGS...: run `buildvm policy ARGS`
expect () {
    local want_rc=$1 want1=$2 want2=$3 out rc
    shift 4
    set +e
    out=$("$bvm" policy "$@" 2>"$tmp/err")
    rc=$?
    set -e
    [ "$rc" -eq "$want_rc" ] || fail "policy $*: exit $rc, expected $want_rc; stderr: $(cat "$tmp/err")"
    [ "$(sed -n 1p <<<"$out")" = "$want1" ] || fail "policy $*: first line '$(sed -n 1p <<<"$out")', expected '$want1'"
    grep -qF -- "$want2" <<<"$(sed -n 2p <<<"$out")" || fail "policy $*: second line '$(sed -n 2p <<<"$out")' lacks '$want2'"
    [ "$(wc -l <<<"$out")" -eq 2 ] || fail "policy $*: expected two lines, got: $out"
}

# expect_error STATUS STDERR-SUBSTRING -- ARGS...
expect_error () {
    local want_rc=$1 want=$2 rc
    shift 3
    set +e
    "$bvm" policy "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
    [ "$rc" -eq "$want_rc" ] || fail "policy $*: exit $rc, expected $want_rc; stderr: $(cat "$tmp/err")"
    grep -qF -- "$want" "$tmp/err" || fail "policy $*: stderr '$(cat "$tmp/err")' lacks '$want'"
    [ ! -s "$tmp/out" ] || fail "policy $*: printed a decision on error: $(cat "$tmp/out")"
}

role=(--policy policies/build-role.json --boundary policies/boundary.json --job "$tmp/job.json")

# allowed, with the deciding statement
expect 0 allow "allowed by \`policies/build-role.json\` statement \`PushOwnImage\`" -- \
    eval "${role[@]}" --action registry:PushImage --resource registry:apps/app1:latest
expect 0 allow "statement \`PutOwnArtifacts\`" -- \
    eval "${role[@]}" --action artifacts:putobject --resource "artifacts:apps/app1/$commit/dist/app.tgz"
expect 0 allow "statement \`PullBaseImages\`" -- \
    eval "${role[@]}" --action registry:PullImage --resource registry:base/debian:12
expect 0 allow "WriteOwnLogStream" -- \
    eval "${role[@]}" --action logs:PutLogEvents --resource logs:apps/app1/d-42
# denied: implicit, explicit (boundary), the app1/app10 neighbour, escapes
expect 0 deny "implicit deny: no statement allows it" -- \
    eval "${role[@]}" --action registry:PushImage --resource registry:apps/app10:latest
expect 0 deny "implicit deny" -- \
    eval "${role[@]}" --action secrets:GetSecret --resource secrets:apps/app10/db
expect 0 deny "explicit deny by \`policies/boundary.json\` statement \`NeverWriteBaseImages\`" -- \
    eval "${role[@]}" --action registry:PushImage --resource registry:base/debian:12
expect 0 deny "explicit deny: the resource has a \`.\` or \`..\` path segment" -- \
    eval "${role[@]}" --action artifacts:PutObject --resource "artifacts:apps/app1/$commit/../../app2/x"
expect 0 deny "(\`//\`)" -- \
    eval "${role[@]}" --action artifacts:PutObject --resource "artifacts:apps/app1/$commit//x"
# the boundary caps an operator's extension of the template
cat >"$tmp/wide.json" <<'JSON'
{"Version": "2012-10-17",
 "Statement": [{"Sid": "AllArtifacts", "Effect": "Allow", "Action": "artifacts:*", "Resource": "*"}]}
JSON
expect 0 allow "AllArtifacts" -- eval --policy "$tmp/wide.json" --action artifacts:PutObject \
    --resource artifacts:apps/app2/x
expect 0 deny "not allowed by the permission boundary \`policies/boundary.json\`" -- \
    eval --policy "$tmp/wide.json" --boundary policies/boundary.json --job "$tmp/job.json" \
    --action artifacts:PutObject --resource artifacts:apps/app2/x
# egress: the template grants none; a role's egress is capped at the boundary's web ports
expect 0 deny "implicit deny: no statement allows it" -- \
    eval "${role[@]}" --action net:Connect --resource net:registry.npmjs.org:443
cat >"$tmp/egress.json" <<'JSON'
{"Version": "2012-10-17",
 "Statement": [{"Sid": "Registries", "Effect": "Allow", "Action": "net:Connect",
                "Resource": ["net:registry.npmjs.org:443", "net:*.example.com:*"]}]}
JSON
egress=(--policy "$tmp/egress.json" --boundary policies/boundary.json --job "$tmp/job.json")
expect 0 allow "allowed by \`$tmp/egress.json\` statement \`Registries\`" -- \
    eval "${egress[@]}" --action net:Connect --resource net:registry.npmjs.org:443
expect 0 allow "Registries" -- \
    eval "${egress[@]}" --action NET:connect --resource net:a.b.example.com:80
expect 0 deny "implicit deny" -- \
    eval "${egress[@]}" --action net:Connect --resource net:example.com:443
expect 0 deny "not allowed by the permission boundary \`policies/boundary.json\`" -- \
    eval "${egress[@]}" --action net:Connect --resource net:a.example.com:5432
echo '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "net:Connect", "Resource": "net:Registry.npmjs.org:443"}]}' >"$tmp/netcase.json"
expect_error 2 "upper-case letters in a host never match" -- check "$tmp/netcase.json"
echo '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "net:Connect", "Resource": "net:registry.npmjs.org"}]}' >"$tmp/netport.json"
expect_error 2 "it must be \`net:*\` or \`net:<host>:<port>\`" -- check "$tmp/netport.json"
# --context keys feed conditions
cat >"$tmp/cond.json" <<'JSON'
{"Version": "2012-10-17",
 "Statement": [{"Sid": "SignedOnly", "Effect": "Allow", "Action": "registry:PushImage",
                "Resource": "registry:apps/${job:App}:*",
                "Condition": {"Bool": {"req:Signed": "true"}, "StringLike": {"job:Ref": "refs/heads/*"}}}]}
JSON
expect 0 allow "SignedOnly" -- eval --policy "$tmp/cond.json" --job "$tmp/job.json" \
    --action registry:PushImage --resource registry:apps/app1:v1 --context req:Signed=true
expect 0 deny "implicit deny" -- eval --policy "$tmp/cond.json" --job "$tmp/job.json" \
    --action registry:PushImage --resource registry:apps/app1:v1 --context req:Signed=false
expect 0 deny "implicit deny" -- eval --policy "$tmp/cond.json" --job "$tmp/job.json" \
    --action registry:PushImage --resource registry:apps/app1:v1

# check
"$bvm" policy check policies/build-role.json policies/boundary.json >"$tmp/out"
grep -qx "policies/build-role.json: ok (6 statements)" "$tmp/out" || fail "check: $(cat "$tmp/out")"
grep -qx "policies/boundary.json: ok (7 statements)" "$tmp/out" || fail "check: $(cat "$tmp/out")"
echo '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Foo": 1}]}' >"$tmp/bad.json"
expect_error 2 "policy \`$tmp/bad.json\`: unknown statement key \`Foo\` in Statement[0]" -- check "$tmp/bad.json"
echo '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "artifacts:apps/${job:Name}/*"}]}' >"$tmp/var.json"
expect_error 2 "unknown policy variable \`\${job:Name}\`" -- check "$tmp/var.json"
echo '{"Statement": [{"Effect": "Perhaps", "Action": "*", "Resource": "*"}]}' >"$tmp/eff.json"
expect_error 2 "unknown effect \`Perhaps\`" -- check "$tmp/eff.json"
expect_error 2 "unknown statement key \`Foo\`" -- eval --policy "$tmp/bad.json" --action a:b --resource x:y

# usage and policy errors exit 2 with a clear message
expect_error 2 "eval needs --policy FILE" -- eval --action a:b --resource x:y
expect_error 2 "eval needs --action and --resource" -- eval --policy policies/build-role.json
expect_error 2 "must be KEY=VALUE" -- eval "${role[@]}" --action a:b --resource x:y --context novalue
expect_error 2 "comes from --job" -- eval "${role[@]}" --action a:b --resource x:y --context job:App=app2
expect_error 2 "given twice" -- eval --policy policies/build-role.json --action a:b --resource x:y \
    --context req:A=1 --context REQ:a=2
expect_error 2 "uses \`\${job:App}\` but the job has no value for it" -- \
    eval --policy policies/build-role.json --action registry:PushImage --resource registry:apps/a:1
expect_error 2 "No such file" -- eval --policy "$tmp/none.json" --action a:b --resource x:y
echo '{"id": "d-1", "app": "../app2", "commit": "abc"}' >"$tmp/badjob.json"
expect_error 2 "\`\${job:App}\` value \`../app2\` is not allowed" -- \
    eval --policy policies/build-role.json --job "$tmp/badjob.json" --action a:b --resource x:y
echo '{"id": "d-1", "commit": "abc"}' >"$tmp/nojobapp.json"
expect_error 2 "missing required field \`app\`" -- \
    eval --policy policies/build-role.json --job "$tmp/nojobapp.json" --action a:b --resource x:y
expect_error 2 "unknown command \`frob\`" -- frob
expect_error 2 "check needs a FILE" -- check
"$bvm" policy --help | grep -q "buildvm policy eval" || fail "policy --help"
"$bvm" policy eval --help | grep -q -- "--boundary FILE" || fail "policy eval --help"
echo "ok"
