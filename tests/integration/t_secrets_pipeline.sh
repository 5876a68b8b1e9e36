#!/bin/bash
# Per-app build secrets through the pipeline: each app gets its own secrets
# only, as a file or an environment variable; every encoding of a value is
# masked in the log; another app's canary never reaches an app's VM, log,
# outputs, image or record, whether the two build one after the other or at
# the same time; a missing or denied secret fails the job before a VM boots.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config
"$BUILDVM" secrets --config "$CONFIG" init-master-key >/dev/null
canary_a="canary-A-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
canary_b="canary-B-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf %s "$canary_a" | "$BUILDVM" secrets --config "$CONFIG" set app-a CANARY
printf %s "$canary_b" | "$BUILDVM" secrets --config "$CONFIG" set app-b CANARY
printf %s "$canary_a-token" | "$BUILDVM" secrets --config "$CONFIG" set app-a TOKEN

# An app that prints everything it can see, in every encoding, and bakes what
# it was given into its image and artifacts.
mkapp () { # DIR
    mkdir -p "$1"
    cat >"$1/buildvm.json" <<'JSON'
{"profile": "minimal",
 "steps": [{"name": "snoop", "run": "sh snoop.sh"}],
 "secrets": ["CANARY", {"name": "TOKEN", "env": "API_TOKEN"}],
 "image": {"from": "out"},
 "artifacts": ["out"]}
JSON
    cat >"$1/snoop.sh" <<'SH'
set -u
v=$(cat "$BUILDVM_SECRETS/CANARY")
echo "raw: $v"
echo "env: $API_TOKEN"
printf %s "$v" | base64 | sed 's/^/base64: /'
printf %s "$v" | od -An -tx1 | tr -d ' \n' | sed 's/^/hex: /'; echo
echo "split: ${v%????????}"; echo "${v#${v%????????}}"
# at every offset of an 8 KiB line split (the agent's and the runner's
# console lines), raw and in base64: masked whole each time
b=$(printf %s "$v" | base64 -w0)
pad=$(head -c 8192 /dev/zero | tr '\0' x)
for f in "$v" "$b"; do
    i=$((8192 - ${#f}))
    while [ $i -lt 8192 ]; do
        printf '%s%s split\n' "$(printf %s "$pad" | head -c $i)" "$f"
        i=$((i + 1))
    done
done
ls -la /run/secrets
env | sort
mkdir -p out && cp "$BUILDVM_SECRETS/CANARY" out/canary && echo "$API_TOKEN" > out/token
SH
    pl_repo "$1"
}
# app-a also lists TOKEN; app-b has no TOKEN, so give app-b a spec without it
ca=$(mkapp "$T/a")
mkdir -p "$T/b" && cp "$T/a/snoop.sh" "$T/b/"
sed -e 's/, {"name": "TOKEN", "env": "API_TOKEN"}//' "$T/a/buildvm.json" >"$T/b/buildvm.json"
sed -i -e 's/^echo "env: $API_TOKEN"$//' -e 's/ && echo "$API_TOKEN" > out\/token//' "$T/b/snoop.sh"
cb=$(pl_repo "$T/b")

no_canary_of () { # OTHER-CANARY FILE-OR-DIR...
    local c=$1; shift
    if grep -rqaF -- "$c" "$@" 2>/dev/null; then fail "found [$c] in $*"; fi
    if [ -d "$1" ] || [ -f "$1" ]; then
        # compressed logs and layers: look inside them too
        find "$@" -name '*.lz4' -exec lz4 -dc {} \; 2>/dev/null | grep -qaF -- "$c" && fail "found [$c] inside an lz4 log"
        find "$@" -type f -exec sh -c 'gzip -dc "$1" 2>/dev/null' _ {} \; | grep -qaF -- "$c" && fail "found [$c] inside a gzip blob"
    fi
    return 0
}

check_job () { # ID APP OWN-CANARY OTHER-CANARY COMMIT
    local id=$1 app=$2 own=$3 other=$4 c=$5
    "$BUILDVM" logs --config "$CONFIG" "$id" >"$T/log-$id" 2>&1
    assert_contains "$T/log-$id" "raw: ***"
    assert_contains "$T/log-$id" "base64: ***"
    assert_contains "$T/log-$id" "hex: ***"
    assert_not_contains "$T/log-$id" "$own"
    assert_not_contains "$T/log-$id" "$(printf %s "$own" | base64)"
    assert_not_contains "$T/log-$id" "$other"
    local b64
    b64=$(printf %s "$own" | base64 -w0)
    assert_eq "$(( ${#own} + ${#b64} ))" "$(grep -c '^x*\*\*\* split$' "$T/log-$id")" \
        "$id: lines masked whole at every split offset"
    rm -rf "$T/img-$id"
    skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" \
        "docker://$REG/apps/$app:$c" "oci:$T/img-$id:x"
    no_canary_of "$other" "$T/log-$id" "$(pl_record "$id")" "$BUILDVM_HOME/artifacts/apps/$app" \
        "$BUILDVM_HOME/logs/apps/$app" "$T/img-$id"
    # and the image does hold the app's own (it baked it in, as asked)
    find "$T/img-$id/blobs" -type f -exec sh -c 'gzip -dc "$1" 2>/dev/null' _ {} \; | grep -qaF -- "$own" \
        || fail "$id: own secret not in its image"
    # the record names the secrets, never their values
    jq -e '.secrets | map(.name) | index("CANARY") != null' "$(pl_record "$id")" >/dev/null || fail "$id: secrets not recorded"
    grep -qF -- "$own" "$(pl_record "$id")" && fail "$id: the record holds the value"
    # the app's own secret did reach its own outputs (it asked for it)
    assert_eq "$own" "$(cat "$(pl_artifact "$app/$c" out/canary)")" "$id: own secret delivered"
    true
}

# --- one after the other
pl_job "$T/ja.json" sec-a1 app-a "$T/a" "$ca"
pl_job "$T/jb.json" sec-b1 app-b "$T/b" "$cb"
run "$BUILDVM" run --config "$CONFIG" "$T/ja.json"
[ "$RC" = 0 ] || { cat "$T/out"; fail "app-a failed"; }
run "$BUILDVM" run --config "$CONFIG" "$T/jb.json"
[ "$RC" = 0 ] || { cat "$T/out"; fail "app-b failed"; }
check_job sec-a1 app-a "$canary_a" "$canary_b" "$ca"
check_job sec-b1 app-b "$canary_b" "$canary_a" "$cb"
assert_contains "$T/log-sec-a1" "env: ***"
assert_eq "$canary_a-token" "$(cat "$(pl_artifact "app-a/$ca" out/token)")" "env delivery"
assert_no_leftovers

# --- at the same time
pl_job "$T/ja.json" sec-a2 app-a "$T/a" "$ca"
pl_job "$T/jb.json" sec-b2 app-b "$T/b" "$cb"
"$BUILDVM" run --config "$CONFIG" "$T/ja.json" >"$T/a.out" 2>&1 &
pa=$!
"$BUILDVM" run --config "$CONFIG" "$T/jb.json" >"$T/b.out" 2>&1 &
pb=$!
wait $pa || { cat "$T/a.out"; fail "app-a (concurrent) failed"; }
wait $pb || { cat "$T/b.out"; fail "app-b (concurrent) failed"; }
check_job sec-a2 app-a "$canary_a" "$canary_b" "$ca"
check_job sec-b2 app-b "$canary_b" "$canary_a" "$cb"
assert_no_leftovers

# --- a secret the app does not have: fails before boot
mkdir -p "$T/c"
printf '{"profile": "minimal", "steps": ["true"], "secrets": ["NOPE"]}\n' >"$T/c/buildvm.json"
cc=$(pl_repo "$T/c")
pl_job "$T/jc.json" sec-c1 app-a "$T/c" "$cc"
run "$BUILDVM" run --config "$CONFIG" "$T/jc.json"
[ "$RC" != 0 ] || fail "a missing secret succeeded"
assert_contains "$T/out" "NOPE"
jq -e '.phases.build == null' "$(pl_record sec-c1)" >/dev/null || fail "a VM booted with a missing secret"

# --- a secret the role denies: fails before boot, names the action
jq '.Statement |= map(select(.Sid != "ReadOwnSecrets"))' "$ROOT/policies/build-role.json" >"$T/role.json"
pl_config ".policies.role = \"$T/role.json\""
pl_job "$T/ja.json" sec-a3 app-a "$T/a" "$ca"
run "$BUILDVM" run --config "$CONFIG" "$T/ja.json"
assert_eq 3 "$RC" "exit status of a denied secret"
assert_contains "$T/out" "denies \`secrets:GetSecret\` on \`secrets:apps/app-a/CANARY\`"
jq -e '.phases.build == null' "$(pl_record sec-a3)" >/dev/null || fail "a VM booted with a denied secret"
assert_no_leftovers
