#!/bin/bash
# Registry tokens scoped per job: the real docker-registry with `auth: token`
# pointed at `buildvm token-server`. A deploy pushes through it with the
# job's ticket; the registry itself refuses app A's token on apps/B, on a
# push to base/, and once it has expired. Tokens and tickets are also made
# here with openssl alone, from the formats in docs/security.md, so the
# registry (not buildvm) is what is shown to decide. Then the token server
# moves to an RSA key whose cert is already in the bundle (the rotation of
# docs/operations.md): RS256 tokens, scoped the same.
. "$(dirname "$0")/lib.sh"

service=buildvm-registry-test
issuer=buildvm-test-issuer
b64url () { base64 -w0 | tr '+/' '-_' | tr -d '='; }
b64url_d () { local s; s=$(tr -- '-_' '+/'); while [ $(( ${#s} % 4 )) != 0 ]; do s="$s="; done; printf '%s' "$s" | base64 -d; }

# --- keys: the token server's P-256 key, its self-signed cert for the
# registry's rootcertbundle, the ticket key shared with the runner
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$T/token.key"
chmod 600 "$T/token.key"
openssl req -x509 -new -key "$T/token.key" -subj /CN=buildvm-token-test -days 2 -out "$T/token.crt" 2>/dev/null
# an RSA key too, its cert in the same bundle: RS256, and the rotation of
# docs/operations.md (the registry trusts both while the server moves over)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/token-rsa.key" 2>/dev/null
chmod 600 "$T/token-rsa.key"
openssl req -x509 -new -key "$T/token-rsa.key" -subj /CN=buildvm-token-rsa -days 2 -out "$T/token-rsa.crt" 2>/dev/null
cat "$T/token.crt" "$T/token-rsa.crt" >"$T/bundle.crt"
head -c 32 /dev/urandom >"$T/ticket.key"
chmod 600 "$T/ticket.key"
# the libtrust key id, computed here from its definition
kid=$(openssl pkey -in "$T/token.key" -pubout -outform DER | openssl dgst -sha256 -binary | head -c 30 \
    | base32 | tr -d '=\n' | sed 's/..../&:/g; s/:$//')

tport=$(svc_free_port)
svc_registry_token tok "http://127.0.0.1:$tport/token" "$service" "$issuer" "$T/bundle.crt"
REG=$REG_tok_ADDR
pl_config "
  .registry.credentials = null | .registry.job_tickets = \"$T/ticket.key\"
  | .token_server = {listen: \"127.0.0.1:$tport\", signing_key: \"$T/token.key\",
                     issuer: \"$issuer\", service: \"$service\", token_seconds: 120}"
# the token server refuses to start without a signing key, or with one others can read
jq 'del(.token_server.signing_key)' "$CONFIG" >"$T/nokey.json"
run "$BUILDVM" token-server --config "$T/nokey.json"
assert_eq 2 "$RC" "exit status without a signing key"
assert_contains "$T/err" "token_server.signing_key"
chmod 644 "$T/token.key"
run "$BUILDVM" token-server --config "$CONFIG"
assert_eq 2 "$RC" "exit status with a readable signing key"
assert_contains "$T/err" "group or others"
chmod 600 "$T/token.key"
mkdir -p "$SVC_DIR/token-server"
"$BUILDVM" token-server --config "$CONFIG" >"$T/token-server.log" 2>&1 &
echo $! >"$SVC_DIR/token-server/pid"
svc_wait_port "$tport" || { cat "$T/token-server.log"; fail "the token server did not start"; }
assert_contains "$T/token-server.log" "kid=$kid"

# ticket APP JOB EXP: a job ticket made with openssl from the documented format
ticket () {
    local p mac
    p=$(jq -cn --arg app "$1" --arg job "$2" --argjson exp "$3" \
        '{app: $app, job: $job, commit: "0123456789abcdef0123456789abcdef01234567", ref: "refs/heads/main", exp: $exp}' | b64url)
    mac=$(printf 'bvt1.%s' "$p" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(xxd -p -c 256 "$T/ticket.key")" -binary | b64url)
    printf 'bvt1.%s.%s' "$p" "$mac"
}
# token USER TICKET SCOPE...: GET the realm; the reply in $T/token.json, status in $code
token () {
    local user=$1 tk=$2 q="service=$service" s
    shift 2
    for s in "$@"; do q="$q&scope=$s"; done
    code=$(curl -s -o "$T/token.json" -w '%{http_code}' -u "$user:$tk" "http://127.0.0.1:$tport/token?$q")
}
# sign CLAIMS-JSON: a JWT made with openssl (ES256: r || s from the DER signature)
sign () {
    local h c r s
    h=$(printf '{"typ":"JWT","alg":"ES256","kid":"%s"}' "$kid" | b64url)
    c=$(printf '%s' "$1" | b64url)
    printf '%s.%s' "$h" "$c" | openssl dgst -sha256 -sign "$T/token.key" -binary >"$T/sig.der"
    read -r r s < <(openssl asn1parse -inform DER -in "$T/sig.der" | awk -F: '/INTEGER/ {printf "%s ", $NF}')
    r=$(printf '%064s' "$r" | tr ' ' 0); s=$(printf '%064s' "$s" | tr ' ' 0)
    printf '%s.%s.%s' "$h" "$c" "$(printf '%s%s' "${r: -64}" "${s: -64}" | xxd -r -p | b64url)"
}
# upload TOKEN REPO: start a blob upload with a token; prints the status
upload () {
    curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $1" \
        "http://$REG/v2/$2/blobs/uploads/"
}
now=$(date +%s)

# --- the base image goes in with a token made here for that (the role never
# pushes to base/), copied from an open registry
if [ -n "${BUILDVM_TEST_REGISTRY_OPEN:-}" ]; then open=$BUILDVM_TEST_REGISTRY_OPEN; else svc_registry seed; open=$REG_seed_ADDR; fi
svc_base_images "$open" base/busybox:1.35 >/dev/null
admin=$(sign "$(jq -cn --arg iss "$issuer" --arg aud "$service" --argjson now "$now" \
    '{iss: $iss, aud: $aud, sub: "test-admin", iat: $now, nbf: $now, exp: ($now + 300),
      access: [{type: "repository", name: "base/busybox", actions: ["pull", "push"]}]}')")
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-registry-token "$admin" \
    "docker://$open/base/busybox:1.35" "docker://$REG/base/busybox:1.35" \
    || fail "pushing the base image with an openssl-signed token"

# --- a real deploy pushes through the token server with the job's ticket
app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
commit=$(pl_repo "$app")
pl_job "$T/job.json" tok-1 hello-shell "file://$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/job.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err" "$T/token-server.log"; fail "the deploy through token auth failed"; }
assert_contains "$T/out" "$REG/apps/hello-shell:$commit@sha256:"
assert_contains "$T/token-server.log" "subject=job:hello-shell/tok-1"
# the base layer was mounted from base/ in one request with both scopes
assert_contains "$T/token-server.log" "granted [apps/hello-shell:pull,push base/busybox:pull] left out []"
assert_not_contains "$T/token-server.log" "status=500"
# a runner whose ticket key is not the token server's: refused there, a clear error
head -c 32 /dev/urandom >"$T/wrong-ticket.key"
chmod 600 "$T/wrong-ticket.key"
jq --arg k "$T/wrong-ticket.key" '.registry.job_tickets = $k' "$CONFIG" >"$T/wrong.json"
pl_job "$T/job2.json" tok-wrong hello-shell "file://$app" "$commit"
run "$BUILDVM" run --config "$T/wrong.json" "$T/job2.json"
[ "$RC" != 0 ] || fail "a deploy with the wrong ticket key succeeded"
assert_contains "$T/out" "job ticket refused: wrong mac"
assert_eq denied "$(jq -r .error.code "$(pl_record tok-wrong)")" "error code"
# an independent client reads the pushed image with a token for it
token hello-shell/tok-2 "$(ticket hello-shell tok-2 $((now + 600)))" "repository:apps/hello-shell:pull"
assert_eq 200 "$code" "token for pull"
skopeo inspect --tls-verify=false --registry-token "$(jq -r .token "$T/token.json")" \
    "docker://$REG/apps/hello-shell:$commit" >"$T/inspect.json" || fail "skopeo cannot read the pushed image"
assert_eq 2 "$(jq '.Layers | length' "$T/inspect.json")" "base layer + app layer"

# --- the token: ES256, the libtrust kid, only the role's scopes
tk_a=$(ticket app-a job-1 $((now + 600)))
token app-a/job-1 "$tk_a" "repository:apps/app-a:push,pull" "repository:apps/app-b:push,pull" \
    "repository:base/busybox:pull,push,delete" "registry:catalog:*"
assert_eq 200 "$code" "token status"
tok_a=$(jq -r .token "$T/token.json")
assert_eq "$tok_a" "$(jq -r .access_token "$T/token.json")" "access_token"
hdr=$(printf '%s' "${tok_a%%.*}" | b64url_d)
assert_eq "ES256 $kid" "$(jq -r '"\(.alg) \(.kid)"' <<<"$hdr")" "JWT header"
claims=$(cut -d. -f2 <<<"$tok_a" | b64url_d)
assert_eq '[{"type":"repository","name":"apps/app-a","actions":["pull","push"]},{"type":"repository","name":"base/busybox","actions":["pull"]}]' \
    "$(jq -c .access <<<"$claims")" "access granted"
assert_contains "$T/token-server.log" "left out [apps/app-b:pull,push base/busybox:push,other]"
assert_eq "job:app-a/job-1 $issuer $service" "$(jq -r '"\(.sub) \(.iss) \(.aud)"' <<<"$claims")" "claims"

# --- the registry decides: app A's token pushes to apps/app-a only
assert_eq 202 "$(upload "$tok_a" apps/app-a)" "upload to apps/app-a with A's token"
assert_eq 401 "$(upload "$tok_a" apps/app-b)" "upload to apps/app-b with A's token"
assert_eq 401 "$(upload "$tok_a" base/busybox)" "upload to base/ with A's token"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $tok_a" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary '{}' \
    "http://$REG/v2/apps/app-b/manifests/latest")
assert_eq 401 "$code" "manifest PUT to apps/app-b with A's token"
# base pull works with A's token
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok_a" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/base/busybox/manifests/1.35")
assert_eq 200 "$code" "base pull with A's token"

# --- expiry: the same claims re-signed here, valid then expired past the
# registry's 60 s leeway
fresh=$(sign "$(jq -c --argjson now "$now" '.iat = $now | .nbf = $now | .exp = ($now + 120)' <<<"$claims")")
assert_eq 202 "$(upload "$fresh" apps/app-a)" "the re-signed token (control)"
old=$(sign "$(jq -c --argjson now "$now" '.iat = ($now - 600) | .nbf = ($now - 600) | .exp = ($now - 120)' <<<"$claims")")
assert_eq 401 "$(upload "$old" apps/app-a)" "an expired token"
# the token server gives none for an expired ticket, nor its token a longer life
token app-a/job-1 "$(ticket app-a job-1 $((now - 1)))" "repository:apps/app-a:push,pull"
assert_eq 401 "$code" "an expired ticket"
token app-a/job-1 "$(ticket app-a job-1 $((now + 30)))" "repository:apps/app-a:push,pull"
assert_eq 200 "$code" "a ticket expiring soon"
exp=$(jq -r .token "$T/token.json" | cut -d. -f2 | b64url_d | jq .exp)
[ "$exp" -le $((now + 31)) ] || fail "the token outlives the job: exp $exp, ticket $((now + 30))"

# --- hostile tickets and requests are refused by the token server
token app-b/job-1 "$tk_a" "repository:apps/app-b:push,pull"
assert_eq 401 "$code" "A's ticket as app B"
token app-a/job-1 "${tk_a%?}x" "repository:apps/app-a:push,pull"
assert_eq 401 "$code" "a ticket with a wrong mac"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$tport/token?service=$service&scope=repository:apps/app-a:pull")
assert_eq 401 "$code" "no ticket"
token app-a/job-1 "$tk_a" "repository:apps/../app-b:push"
assert_eq 400 "$code" "a scope that is not a repository"
assert_not_contains "$T/token-server.log" "$tk_a"

# --- rotation to the RSA key: RS256 tokens the registry accepts, scoped the same
kill "$(cat "$SVC_DIR/token-server/pid")"
wait "$(cat "$SVC_DIR/token-server/pid")" 2>/dev/null || true
jq --arg k "$T/token-rsa.key" '.token_server.signing_key = $k' "$CONFIG" >"$T/rsa.json"
"$BUILDVM" token-server --config "$T/rsa.json" >"$T/token-server-rsa.log" 2>&1 &
echo $! >"$SVC_DIR/token-server/pid"
svc_wait_port "$tport" || { cat "$T/token-server-rsa.log"; fail "the token server did not restart"; }
token app-a/job-1 "$tk_a" "repository:apps/app-a:push,pull" "repository:apps/app-b:push,pull"
assert_eq 200 "$code" "RS256 token status"
tok_r=$(jq -r .token "$T/token.json")
kid_r=$(openssl pkey -in "$T/token-rsa.key" -pubout -outform DER | openssl dgst -sha256 -binary | head -c 30 \
    | base32 | tr -d '=\n' | sed 's/..../&:/g; s/:$//')
assert_eq "RS256 $kid_r" "$(printf '%s' "${tok_r%%.*}" | b64url_d | jq -r '"\(.alg) \(.kid)"')" "RS256 header"
assert_eq 202 "$(upload "$tok_r" apps/app-a)" "upload to apps/app-a with an RS256 token"
assert_eq 401 "$(upload "$tok_r" apps/app-b)" "upload to apps/app-b with an RS256 token"
assert_no_leftovers
