#!/bin/bash
# Signed provenance and an SBOM for every deploy (issue 16): a real job pushes
# an image with its attestation and SBOM to a real registry; `buildvm verify`
# accepts it, and so do independent checks (openssl on the DSSE PAE bytes, a
# JSON Schema of the in-toto/SLSA v1 layout with python3-jsonschema). Then the
# forgeries: one changed byte, an attestation of another image, a re-tagged
# image, another runner's key, another app, no attestation at all. The build
# prints and writes attestation-shaped text, and the signed statement holds
# none of it.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config '.attest.builder_id = "https://runner.test/t-attest"'
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 >/dev/null

# --- the app: hello-shell, plus lock files and a build that forges
app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
cat >"$app/package-lock.json" <<'EOF'
{"name": "site", "lockfileVersion": 3, "packages": {"": {"name": "site"},
 "node_modules/left-pad": {"version": "1.3.0", "resolved": "https://registry.invalid/left-pad-1.3.0.tgz",
  "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ9ny0TFl2aMsW7gZBTMx1fxR4utQuH79dGJxoVs1k9NMvHg=="}}}
EOF
printf 'six==1.16.0 \\\n    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n' >"$app/requirements.txt"
# attestation-shaped output, made at build time (never literally in the
# spec, which the statement quotes): on the console and in the image
cat >>"$app/build.sh" <<'EOF'
forged=$(echo Rk9SR0VELUJZLVRIRS1CVUlMRA== | base64 -d)
fake="{\"_type\":\"https://in-toto.io/Statement/v1\",\"predicateType\":\"https://slsa.dev/provenance/v1\",\"subject\":[{\"name\":\"$forged\",\"digest\":{\"sha256\":\"$(printf %064d 0)\"}}],\"predicate\":{\"buildDefinition\":{\"externalParameters\":{\"deploy\":{\"app\":\"$forged\"}}}}}"
echo "$fake"
echo "$fake" > dist/provenance.intoto.json
echo "::attestation:: $fake" >&2
EOF
commit=$(pl_repo "$app")
pl_job "$T/job.json" att-1 hello-shell "file://$app" "$commit"

start=$(date +%s)
run "$BUILDVM" run --config "$CONFIG" "$T/job.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "run failed"; }
note "deploy: $(( $(date +%s) - start ))s"
"$BUILDVM" logs --config "$CONFIG" att-1 >"$T/log" 2>&1 || true
assert_contains "$T/log" "WARNING: no signing key was configured"
assert_contains "$T/log" "attest: provenance sha256:"
rec=$(pl_record att-1)
digest=$(jq -r .image.digest "$rec")
hex=${digest#sha256:}
key=$BUILDVM_HOME/state/attest/signing-key.pem
assert_eq "-rw-------" "$(stat -c %A "$key")" "signing key mode"
jq -e '.phases.attest.ms >= 0' "$rec" >/dev/null || fail "attest phase not recorded"
assert_eq "sha256-$hex" "$(jq -r .attestation.referrers "$rec")" "referrers: the fallback tag (distribution 2.8 has no referrers API)"
env_file=$(jq -r .attestation.path "$rec")
[ -s "$env_file" ] || fail "no attestation beside the record"

# --- the runner's own verb
"$BUILDVM" verify --config "$CONFIG" --print-key >"$T/pub.pem" 2>"$T/keyid"
grep -q "BEGIN PUBLIC KEY" "$T/pub.pem" || fail "--print-key"
run "$BUILDVM" verify --config "$CONFIG" --key "$T/pub.pem" --app hello-shell --commit "$commit" \
    --kernel "$(jq -r .kernel.sha256 "$BUILDVM_IMAGES/minimal.json")" \
    --rootfs "$(jq -r .rootfs.sha256 "$BUILDVM_IMAGES/minimal.json")" \
    --builder-id https://runner.test/t-attest "$REG/apps/hello-shell:$commit"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "verify refused the real attestation"; }
assert_contains "$T/out" "verified: $REG/apps/hello-shell@$digest"
assert_contains "$T/out" "commit     $commit (refs/heads/main)"

# --- independent checks: openssl on the PAE bytes, the JSON Schema
curl -fsS -u "$REG_CREDS" -H "Accept: application/vnd.oci.image.index.v1+json" \
    "http://$REG/v2/apps/hello-shell/manifests/sha256-$hex" >"$T/index.json"
att=$(jq -r '.manifests[] | select(.artifactType == "application/vnd.in-toto+json") | .digest' "$T/index.json")
sbom=$(jq -r '.manifests[] | select(.artifactType == "application/vnd.cyclonedx+json") | .digest' "$T/index.json")
[ -n "$att" ] && [ -n "$sbom" ] || { cat "$T/index.json"; fail "the referrers index lacks the attestation or the SBOM"; }
getm () { curl -fsS -u "$REG_CREDS" -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$REG/v2/apps/hello-shell/manifests/$1"; }
getb () { curl -fsSL -u "$REG_CREDS" "http://$REG/v2/apps/hello-shell/blobs/$1"; }
getm "$att" >"$T/att-manifest.json"
assert_eq "$digest" "$(jq -r .subject.digest "$T/att-manifest.json")" "the attestation's subject"
getb "$(jq -r '.layers[0].digest' "$T/att-manifest.json")" >"$T/envelope.json"
cmp -s "$T/envelope.json" "$env_file" || fail "the envelope in the registry differs from the one beside the record"
jq -r .payload "$T/envelope.json" | base64 -d >"$T/statement.json"
jq -r '.signatures[0].sig' "$T/envelope.json" | base64 -d >"$T/sig.der"
ptype=$(jq -r .payloadType "$T/envelope.json")
{ printf 'DSSEv1 %d %s %d ' "${#ptype}" "$ptype" "$(stat -c %s "$T/statement.json")"; cat "$T/statement.json"; } >"$T/pae.bin"
openssl dgst -sha256 -verify "$T/pub.pem" -signature "$T/sig.der" "$T/pae.bin" >/dev/null \
    || fail "openssl does not verify the DSSE signature over the PAE bytes"
python3 -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1])); doc = json.load(open(sys.argv[2]))
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.Draft202012Validator(schema).validate(doc)' \
    "$ROOT/tests/data/attest/statement.schema.json" "$T/statement.json" || fail "the statement does not match the in-toto/SLSA v1 layout"
st=$T/statement.json
assert_eq "$hex" "$(jq -r '.subject[0].digest.sha256' "$st")" "subject digest"
assert_eq "$commit" "$(jq -r '.predicate.buildDefinition.resolvedDependencies[0].digest.gitCommit' "$st")" "git dependency"
assert_eq "$(jq -r .kernel.sha256 "$BUILDVM_IMAGES/minimal.json" | cut -d: -f2)" \
    "$(jq -r '.predicate.runDetails.builder.builderDependencies[] | select(.name == "vm-kernel") | .digest.sha256' "$st")" "kernel digest"
assert_eq "$(git -C "$app" show HEAD:buildvm.json | sha256sum | cut -d' ' -f1)" \
    "$(jq -r '.predicate.buildDefinition.externalParameters.buildSpec.digest.sha256' "$st")" "buildvm.json digest"
jq -e '.predicate.buildDefinition.internalParameters.role.id | startswith("role-")' "$st" >/dev/null || fail "role"
jq -e '.predicate.buildDefinition.resolvedDependencies[] | select(.uri == "pkg:npm/left-pad@1.3.0")' "$st" >/dev/null || fail "npm lock file package"
jq -e '.predicate.buildDefinition.resolvedDependencies[] | select(.name == "base-image") | .digest.sha256' "$st" >/dev/null || fail "base image"
# the build's forgery is nowhere in what was signed
grep -q "FORGED-BY-THE-BUILD" "$st" && fail "attestation-shaped build output reached the signed statement"
grep -q "FORGED-BY-THE-BUILD" "$T/log" || fail "the build did not print its forgery (the test proves nothing)"

# the SBOM: referenced from the provenance, every file with its sha256
getm "$sbom" >"$T/sbom-manifest.json"
getb "$(jq -r '.layers[0].digest' "$T/sbom-manifest.json")" >"$T/sbom.json"
assert_eq "$(sha256sum "$T/sbom.json" | cut -d' ' -f1)" \
    "$(jq -r '.predicate.runDetails.byproducts[] | select(.name == "sbom") | .digest.sha256' "$st")" "SBOM digest in the provenance"
assert_eq "CycloneDX 1.5" "$(jq -r '"\(.bomFormat) \(.specVersion)"' "$T/sbom.json")" "SBOM format"
skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" "docker://$REG/apps/hello-shell:$commit" "oci:$T/layout:app"
umoci unpack --image "$T/layout:app" "$T/bundle" >/dev/null
want_idx=$(sha256sum "$T/bundle/rootfs/app/www/index.html" | cut -d' ' -f1)
assert_eq "$want_idx" "$(jq -r '.components[] | select(.name == "app/www/index.html") | .hashes[0].content' "$T/sbom.json")" "index.html in the SBOM"
jq -e '.components[] | select(.type == "container" and .name == "base/busybox:1.35")' "$T/sbom.json" >/dev/null || fail "base image in the SBOM"
jq -e '.components[] | select(.purl == "pkg:pypi/six@1.16.0")' "$T/sbom.json" >/dev/null || fail "requirements.txt in the SBOM"

# --- forgeries ---------------------------------------------------------------------
verify_fails () { # REASON ARGS...: verify refuses, saying REASON (shown)
    local reason=$1; shift
    run "$BUILDVM" verify --config "$CONFIG" "$@"
    [ "$RC" != 0 ] || { cat "$T/out"; fail "verify accepted: $*"; }
    assert_contains "$T/err" "$reason"
    note "refused: $(cat "$T/err")"
    [ "$(wc -l <"$T/err")" = 1 ] || { cat "$T/err"; fail "more than one line of reason"; }
}
put_blob () { # FILE: upload, print its digest
    local d loc
    d=sha256:$(sha256sum "$1" | cut -d' ' -f1)
    loc=$(curl -fsS -u "$REG_CREDS" -X POST -D - -o /dev/null "http://$REG/v2/apps/hello-shell/blobs/uploads/" \
        | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
    case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
    curl -fsS -u "$REG_CREDS" -X PUT -H "Content-Type: application/octet-stream" --data-binary "@$1" "$loc" >/dev/null
    echo "$d"
}
put_manifest () { # REF FILE TYPE
    curl -fsS -u "$REG_CREDS" -X PUT -H "Content-Type: $3" --data-binary "@$2" \
        "http://$REG/v2/apps/hello-shell/manifests/$1" >/dev/null
}

# another runner's key
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkey -pubout >"$T/other.pub" 2>/dev/null
verify_fails "does not verify with key" --key "$T/other.pub" "$REG/apps/hello-shell:$commit"
# another app asked for
verify_fails "names app \`hello-shell\`, not \`hello-other\`" --app hello-other "$REG/apps/hello-shell:$commit"
# a re-tagged image: this image under a tag that claims another commit
other_commit=$(printf 'f%.0s' $(seq 40))
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --src-creds "$REG_CREDS" --dest-creds "$REG_CREDS" \
    "docker://$REG/apps/hello-shell:$commit" "docker://$REG/apps/hello-shell:retagged"
verify_fails "names commit \`$commit\`, not \`$other_commit\`" --commit "$other_commit" "$REG/apps/hello-shell:retagged"
# no attestation at all: the image copied into a repository of its own
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --src-creds "$REG_CREDS" --dest-creds "$REG_CREDS" \
    "docker://$REG/apps/hello-shell:$commit" "docker://$REG/apps/unsigned:x"
verify_fails "no attestation" "$REG/apps/unsigned:x"
# ... and with its attestations copied along (as another app could into
# its own repository): the statement names apps/hello-shell, not this one
for m in $(jq -r '.manifests[].digest' "$T/index.json"); do
    getm "$m" >"$T/copy.json"
    for b in $(jq -r '.config.digest, .layers[].digest' "$T/copy.json"); do
        curl -fsS -u "$REG_CREDS" -X POST -o /dev/null \
            "http://$REG/v2/apps/unsigned/blobs/uploads/?mount=$b&from=apps/hello-shell"
    done
    curl -fsS -u "$REG_CREDS" -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
        --data-binary "@$T/copy.json" "http://$REG/v2/apps/unsigned/manifests/$m" >/dev/null
done
curl -fsS -u "$REG_CREDS" -X PUT -H "Content-Type: application/vnd.oci.image.index.v1+json" \
    --data-binary "@$T/index.json" "http://$REG/v2/apps/unsigned/manifests/sha256-$hex" >/dev/null
verify_fails "is for repository \`apps/hello-shell\`, not \`apps/unsigned\`" "$REG/apps/unsigned:x"
run "$BUILDVM" verify --config "$CONFIG" --any-repository --app hello-shell "$REG/apps/unsigned:x"
[ "$RC" = 0 ] || { cat "$T/err"; fail "--any-repository refused a faithful copy (a mirror)"; }

# one changed byte in the statement, re-pushed as the image's only attestation
python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); i = d.index(b"\"app\":\"hello-shell\"") + 7; sys.stdout.buffer.write(d[:i] + b"H" + d[i+1:])' \
    "$T/statement.json" >"$T/tampered.json"
cmp -s "$T/tampered.json" "$T/statement.json" && fail "the tampering changed nothing"
jq -c --arg p "$(base64 -w0 "$T/tampered.json")" '.payload = $p' "$T/envelope.json" >"$T/tampered-env.json"
tdig=$(put_blob "$T/tampered-env.json")
jq -c --arg d "$tdig" --argjson s "$(stat -c %s "$T/tampered-env.json")" '.layers[0].digest = $d | .layers[0].size = $s' \
    "$T/att-manifest.json" >"$T/tampered-manifest.json"
tman=sha256:$(sha256sum "$T/tampered-manifest.json" | cut -d' ' -f1)
put_manifest "$tman" "$T/tampered-manifest.json" application/vnd.oci.image.manifest.v1+json
jq -c --arg d "$tman" --argjson s "$(stat -c %s "$T/tampered-manifest.json")" \
    '.manifests |= map(if .artifactType == "application/vnd.in-toto+json" then .digest = $d | .size = $s else . end)' \
    "$T/index.json" >"$T/tampered-index.json"
put_manifest "sha256-$hex" "$T/tampered-index.json" application/vnd.oci.image.index.v1+json
verify_fails "does not verify" "$REG/apps/hello-shell:$commit"
put_manifest "sha256-$hex" "$T/index.json" application/vnd.oci.image.index.v1+json

# an attestation of another image: a second deploy (another commit), whose
# referrers tag is made to list the first image's attestation
echo "changed" >"$app/CHANGE"
commit2=$(pl_commit "$app" two)
pl_job "$T/job2.json" att-2 hello-shell "file://$app" "$commit2"
run "$BUILDVM" run --config "$CONFIG" "$T/job2.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "second run failed"; }
"$BUILDVM" logs --config "$CONFIG" att-2 >"$T/log2" 2>&1 || true
assert_not_contains "$T/log2" "WARNING: no signing key"
digest2=$(jq -r .image.digest "$(pl_record att-2)")
[ "$digest2" != "$digest" ] || fail "the second image has the first one's digest"
run "$BUILDVM" verify --config "$CONFIG" --commit "$commit2" "$REG/apps/hello-shell:$commit2"
[ "$RC" = 0 ] || { cat "$T/err"; fail "verify refused the second image"; }
put_manifest "sha256-${digest2#sha256:}" "$T/index.json" application/vnd.oci.image.index.v1+json
verify_fails "for another image" "$REG/apps/hello-shell:$commit2"
# a tag and a digest that disagree
verify_fails "names $digest2, not $digest" "$REG/apps/hello-shell:$commit2@$digest"

# --- the envelope beside the record, checked as a file: for the image, and
# for the artifact index, the statement's other subject
run "$BUILDVM" verify --config "$CONFIG" --envelope "$env_file" --subject "$digest" --app hello-shell
[ "$RC" = 0 ] || { cat "$T/err"; fail "verify --envelope refused the record's envelope"; }
run "$BUILDVM" verify --config "$CONFIG" --envelope "$env_file" --subject "$(jq -r .artifacts.index.digest "$rec")"
[ "$RC" = 0 ] || { cat "$T/err"; fail "the artifact index is not a subject"; }
verify_fails "for another image" --envelope "$env_file" --subject "$digest2"

# --- a job with artifacts and no image: its provenance is signed beside the record
jq 'del(.image)' "$app/buildvm.json" >"$T/s" && mv "$T/s" "$app/buildvm.json"
commit3=$(pl_commit "$app" three)
pl_job "$T/job3.json" att-3 hello-shell "file://$app" "$commit3"
run "$BUILDVM" run --config "$CONFIG" "$T/job3.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "artifacts-only run failed"; }
rec3=$(pl_record att-3)
run "$BUILDVM" verify --config "$CONFIG" --envelope "$(jq -r .attestation.path "$rec3")" \
    --subject "$(jq -r .artifacts.index.digest "$rec3")" --commit "$commit3"
[ "$RC" = 0 ] || { cat "$T/err"; fail "the artifacts' provenance does not verify"; }

# --- dry-run: what it would attest, unsigned, nothing pushed
git -C "$app" checkout -q HEAD~1 -- buildvm.json
run "$BUILDVM" dry-run --config "$CONFIG" --worktree --out "$T/dry" "$app"
[ -s "$T/dry/provenance.intoto.json" ] || { cat "$T/out" "$T/err"; fail "dry-run wrote no provenance"; }
jq -e '.predicateType == "https://slsa.dev/provenance/v1"' "$T/dry/provenance.intoto.json" >/dev/null || fail "dry-run provenance"
jq -e '.bomFormat == "CycloneDX"' "$T/dry/sbom.cdx.json" >/dev/null || fail "dry-run SBOM"
assert_no_leftovers
