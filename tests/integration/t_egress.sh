#!/bin/bash
# Egress (issue 13): a build reaches loopback upstreams only through the
# agent's proxy and the runner's broker, with the job's role deciding; each
# refusal is logged in the job log and the record, and the runner goes on.
. "$(dirname "$0")/lib.sh"

# --- upstreams on the host's loopback: plain HTTP, and TLS with a test CA
www=$T/www
mkdir -p "$www"
head -c 3000000 /dev/urandom >"$www/blob"
HTTP_PORT=$(svc_free_port)
mkdir -p "$SVC_DIR/egress-http" "$SVC_DIR/egress-https"
(cd "$www" && exec python3 -m http.server --bind 127.0.0.1 "$HTTP_PORT") >"$T/http.log" 2>&1 &
echo $! >"$SVC_DIR/egress-http/pid"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$T/tls.key" -out "$T/tls.crt" -days 1 2>/dev/null
HTTPS_PORT=$(svc_free_port)
# SECLEVEL=0: busybox's TLS client (the one TLS client of the minimal image)
# offers only signature algorithms OpenSSL 3 refuses at its default level
(cd "$www" && exec openssl s_server -quiet -accept "127.0.0.1:$HTTPS_PORT" -cert "$T/tls.crt" \
    -key "$T/tls.key" -cipher 'DEFAULT:@SECLEVEL=0' -WWW) >"$T/https.log" 2>&1 &
echo $! >"$SVC_DIR/egress-https/pid"
# an upstream that answers without a length, then closes a moment later:
# the client reads to EOF, and the runner's CLOSE comes in after the data
# before it was delivered (the proxy used to leave such a client waiting)
EOF_PORT=$(svc_free_port)
mkdir -p "$SVC_DIR/egress-eof"
python3 - "$EOF_PORT" >"$T/eof.log" 2>&1 <<'PY' &
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        d = c.recv(4096)
        if not d: break
        head += d
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"to-eof\n" * 20000)
    time.sleep(0.7)
    c.sendall(b"the-end\n")
    time.sleep(0.7)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
echo $! >"$SVC_DIR/egress-eof/pid"
svc_wait_port "$HTTP_PORT"
svc_wait_port "$HTTPS_PORT"
svc_wait_port "$EOF_PORT"
cc -static -O2 -o "$T/connect-exec" "$ROOT/tests/lib/connect-exec.c"

# the boundary's egress statement, for this test's ports besides 443 and 80
jq --arg h "$HTTP_PORT" --arg s "$HTTPS_PORT" --arg e "$EOF_PORT" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource)
    = ["net:*:443", "net:*:80", "net:*:\($h)", "net:*:\($s)", "net:*:\($e)"]' "$ROOT/policies/boundary.json" >"$T/boundary.json"

# egress_job ID STEP [RULES-JSON [SPEC-FILTER]]: an artifacts-only minimal
# app (with connect-exec) whose one step is STEP, asking for RULES in its
# buildvm.json; runs it: RC, $T/out, COMMIT, and the job's log in $T/log
egress_job () {
    local id=$1 step=$2 rules=${3:-[]} app=$T/app-$1
    mkdir -p "$app"
    cp "$T/connect-exec" "$app/"
    jq -n --arg step "$step" --argjson rules "$rules" \
        '{profile: "minimal", steps: [$step], artifacts: ["out"], egress: $rules}' | jq "${4:-.}" >"$app/buildvm.json"
    COMMIT=$(pl_repo "$app")
    pl_job "$T/j-$id.json" "$id" "egress-$id" "$app" "$COMMIT"
    run ${RUNNER_ENV:-} "$BUILDVM" run --config "$CONFIG" "$T/j-$id.json"
    "$BUILDVM" logs --config "$CONFIG" "$id" >"$T/log" 2>&1 || true
}
# Nothing of this test's jobs is left: other tests on this machine may run
# VMs of their own meanwhile, so only our job names count.
no_leftovers () {
    local p
    p=$(vmms_of_ours 'buildvm-(http1|tls1|hostile|noallow|strict|audit|none),')
    [ -z "$p" ] || fail "VMM processes left behind: $p"
    [ -z "$(find "$WORK" -mindepth 1 2>/dev/null | head -1)" ] || fail "job files left behind"
}
cfg () { # EGRESS-JSON
    pl_config "del(.registry.credentials) | .policies.boundary = \"$T/boundary.json\" | .egress = $1"
}
art () { pl_artifact "egress-$1/$COMMIT" "out/$2"; } # APP-SUFFIX NAME: decrypted
# the proxy bypass for the host's own loopback names: in the VM they are
# the VM's, so the default NO_PROXY keeps them off the proxy
np="env -u no_proxy -u NO_PROXY"

# --- plain HTTP through the proxy: the bytes arrive intact
# (and a response read to its EOF: the close is ordered after the data)
cfg "{allow: [\"localhost:$HTTP_PORT\", \"localhost:$EOF_PORT\"], allow_addresses: [\"127.0.0.1/32\"]}"
egress_job http1 "mkdir -p out && $np wget -q -O out/blob http://localhost:$HTTP_PORT/blob && echo fetched
  $np timeout 20 wget -q -O out/eof http://localhost:$EOF_PORT/ && echo eof-ok"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err" "$T/log"; fail "the HTTP download through the proxy failed"; }
cmp "$www/blob" "$(art http1 blob)" || fail "the bytes differ"
assert_contains "$T/log" "eof-ok"
python3 -c 'import sys; sys.exit(open(sys.argv[1], "rb").read() != b"to-eof\n" * 20000 + b"the-end\n")' "$(art http1 eof)" \
    || fail "the response read to EOF is not whole"
rec=$(pl_record http1)
jq -e '.egress.connections[0] | .host == "localhost" and .decision == "allow" and .address == "127.0.0.1" and .bytes_in > 3000000 and .mode == "http"' "$rec" >/dev/null \
    || { jq .egress "$rec"; fail "the connection is not in the record"; }
assert_contains "$T/log" "[egress] allow HTTP localhost:$HTTP_PORT (127.0.0.1)"
assert_contains "$T/log" "[egress] closed localhost:$HTTP_PORT (127.0.0.1)"
no_leftovers

# --- TLS through CONNECT, end to end (busybox's ssl_client speaks it in the
# VM; the runner only checks the ClientHello's SNI), and an SNI that is not
# the CONNECT host (domain fronting): refused
cfg "{allow: [\"localhost:$HTTPS_PORT\"], allow_addresses: [\"127.0.0.1/32\"]}"
req='printf "GET /blob HTTP/1.0\r\n\r\n"; sleep 5'
egress_job tls1 "mkdir -p out && ($req) | ./connect-exec 127.0.0.1:3128 localhost:$HTTPS_PORT ssl_client -s 3 -n localhost >out/resp && echo tls-ok;
  ($req) | ./connect-exec 127.0.0.1:3128 localhost:$HTTPS_PORT ssl_client -s 3 -n evil.example >out/fronted; echo fronted=\$?"
[ "$RC" = 0 ] || { cat "$T/out" "$T/log"; fail "the CONNECT job failed"; }
# the body after the response head is the file
if python3 - "$(art tls1 resp)" "$www/blob" <<'PY'
import sys
r = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read()
sys.exit(0 if r.split(b'\r\n\r\n', 1)[-1] == b else 1)
PY
then :; else head -c 300 "$(art tls1 resp)" | od -c | head; cat "$T/log"; fail "the bytes through the TLS tunnel differ"; fi
assert_contains "$T/log" "[egress] allow CONNECT localhost:$HTTPS_PORT (127.0.0.1)"
assert_contains "$T/log" "the TLS SNI \`evil.example\` is not the CONNECT host \`localhost\`"
[ ! -s "$(art tls1 fronted)" ] || fail "bytes came back through a fronted tunnel"
jq -e '[.egress.connections[] | select(.decision == "deny")] | length == 1' "$(pl_record tls1)" >/dev/null \
    || { jq .egress "$(pl_record tls1)"; fail "the SNI refusal is not in the record"; }
no_leftovers

# --- hostile attempts in one VM, each refused and logged; the job goes on
cat >"$T/probe.sh" <<PROBE
try () { # NAME URL
    if $np wget -q -O /dev/null "\$2" 2>out/\$1.err; then echo "\$1: REACHED"; else echo "\$1: refused: \$(cat out/\$1.err)"; fi
}
mkdir -p out
try role http://example.com/
try port http://localhost:22/
# a CONNECT tunnel to a port the boundary does not allow
if ./connect-exec 127.0.0.1:3128 localhost:22 true >out/cport.out 2>&1; then echo "cport: REACHED"; else echo "cport: refused: \$(head -1 out/cport.out)"; fi
for u in 169.254.169.254 2852039166 0xa9fea9fe 0251.0376.0251.0376 169.254.43518 0xa9.0xfe.0xa9.0xfe '[::ffff:169.254.169.254]' '[::ffff:a9fe:a9fe]'; do
    try "meta-\$u" "http://\$u/latest/meta-data/"
done
# the metadata address by name: an allowed name the runner resolves to it
try meta-name http://metadata.test/latest/meta-data/
# plain-HTTP domain fronting: an allowed host and port, another site's Host
if $np wget -q -O /dev/null --header "Host: evil.example" http://localhost:$HTTP_PORT/blob 2>out/front.err; then echo "front: REACHED"; else echo "front: refused: \$(cat out/front.err)"; fi
if nc -w 3 93.184.216.34 80 </dev/null 2>out/raw.err; then echo "raw: REACHED"; else echo "raw: refused: \$(cat out/raw.err)"; fi
if nc -w 3 10.0.2.2 80 </dev/null 2>out/raw2.err; then echo "raw2: REACHED"; else echo "raw2: refused: \$(cat out/raw2.err)"; fi
PROBE
cfg "{allow: [\"localhost:*\", \"169.254.169.254:80\", \"metadata.test:80\"], allow_addresses: [\"127.0.0.1/32\"]}"
mkdir -p "$T/app-hostile" && cp "$T/probe.sh" "$T/app-hostile/"
# No DNS server here: the runner resolves metadata.test from a hosts file of
# the test's through nss_wrapper (getaddrinfo, as a DNS answer would reach it)
NSS=$(ls /usr/lib/*/libnss_wrapper.so 2>/dev/null | head -1)
[ -n "$NSS" ] || fail "libnss_wrapper.so is missing (Debian's libnss-wrapper: make deps)"
printf '169.254.169.254 metadata.test\n127.0.0.1 localhost\n' >"$T/hosts"
RUNNER_ENV="env LD_PRELOAD=$NSS NSS_WRAPPER_HOSTS=$T/hosts"
egress_job hostile "sh probe.sh"
RUNNER_ENV=
[ "$RC" = 0 ] || { cat "$T/out" "$T/log"; fail "the probe job failed"; }
assert_not_contains "$T/log" "REACHED"
assert_contains "$T/log" "role: refused"
assert_contains "$T/log" "[egress] deny HTTP example.com:80: the job's role denies net:example.com:80"
assert_contains "$T/log" "port: refused"
assert_contains "$T/log" "[egress] deny HTTP localhost:22: the job's role denies net:localhost:22 (not allowed by the permission boundary"
assert_contains "$T/log" "cport: refused: connect-exec: the proxy answered: HTTP/1.1 403 Forbidden"
assert_contains "$T/log" "[egress] deny CONNECT localhost:22: the job's role denies net:localhost:22 (not allowed by the permission boundary"
n=$(grep -c "meta-.*: refused.*403" "$T/log" || true)
assert_eq 9 "$n" "metadata spellings and name refused with 403"
n=$(grep -c "\[egress\] deny HTTP .*link-local" "$T/log" || true)
assert_eq 9 "$n" "metadata spellings and name refused as link-local by the runner"
grep -q "\[egress\] deny HTTP metadata.test:80.*169.254.169.254.*link-local" "$T/log" \
    || { grep egress "$T/log"; fail "the name resolving to the metadata address is not refused for its address"; }
assert_contains "$T/log" "raw: refused: nc: can't connect to remote host (93.184.216.34): Network is unreachable"
assert_contains "$T/log" "raw2: refused"
assert_contains "$T/log" "front: refused: wget: server returned error: HTTP/1.1 403 Forbidden"
assert_contains "$T/log" "[egress] deny HTTP request to localhost: the HTTP Host header names another host than the proxy request"
jq -e '.egress.denied == 13 and .egress.allowed == 1' "$(pl_record hostile)" >/dev/null \
    || { jq .egress "$(pl_record hostile)"; fail "the refusals are not all in the record"; }
no_leftovers

# --- a name that resolves to loopback, without the operator's exception
cfg "{allow: [\"localhost:$HTTP_PORT\"]}"
egress_job noallow "mkdir -p out; $np wget -q -O out/x http://localhost:$HTTP_PORT/blob 2>out/err; cat out/err"
[ "$RC" = 0 ] || { cat "$T/out" "$T/log"; fail "the loopback job failed"; }
assert_contains "$T/log" "403 Forbidden"
assert_contains "$T/log" "loopback address"
[ ! -s "$(art noallow x)" ] || fail "loopback reached without the exception"

# --- fail_on_deny: a refusal fails the build
cfg "{allow: [\"localhost:$HTTP_PORT\"], allow_addresses: [\"127.0.0.1/32\"]}"
egress_job strict "mkdir -p out; $np wget -q -O out/x http://example.com/ || true" '[]' '.fail_on_deny = true'
[ "$RC" != 0 ] || fail "a denied connection with fail_on_deny did not fail the build"
assert_contains "$T/out" "fail_on_deny"
assert_eq denied "$(jq -r .error.code "$(pl_record strict)")" "error code"

# --- audit mode: what the role would deny is allowed, logged, and listed
cfg "{mode: \"audit\", allow_addresses: [\"127.0.0.1/32\"]}"
egress_job audit "mkdir -p out && $np wget -q -O out/blob http://localhost:$HTTP_PORT/blob"
[ "$RC" = 0 ] || { cat "$T/out" "$T/log"; fail "audit mode refused"; }
cmp "$www/blob" "$(art audit blob)" || fail "the bytes differ in audit mode"
assert_contains "$T/log" "audit: the role would deny net:localhost:$HTTP_PORT"
jq -e --arg hp "localhost:$HTTP_PORT" '.egress.mode == "audit" and .egress.allowlist == [$hp] and .egress.connections[0].decision == "audit"' \
    "$(pl_record audit)" >/dev/null || { jq .egress "$(pl_record audit)"; fail "the audit record"; }

# --- a dry run has the same egress, and its plan shows the decisions
cfg "{allow: [\"localhost:$HTTP_PORT\"], allow_addresses: [\"127.0.0.1/32\"]}"
(cd "$T/app-http1" && jq --arg s "mkdir -p out && $np wget -q -O out/blob http://localhost:$HTTP_PORT/blob; $np wget -q -O /dev/null http://example.com/ || true" \
    '.steps = [$s]' buildvm.json >b && mv b buildvm.json && git commit -qam dry)
run sh -c "cd '$T/app-http1' && '$BUILDVM' dry-run --config '$CONFIG'"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the dry run failed"; }
grep -qE "allow +net:Connect +net:localhost:$HTTP_PORT" "$T/out" || { cat "$T/out"; fail "the plan lacks the allowed connection"; }
grep -qE "deny +net:Connect +net:example.com:80" "$T/out" || { cat "$T/out"; fail "the plan lacks the refused connection"; }

# --- without any rule the VM has no channel and no proxy at all
pl_config "del(.registry.credentials)"
egress_job none "mkdir -p out; if wget -q -O out/x http://example.com/ 2>out/err; then echo REACHED; fi; cat out/err; env | grep -i _proxy || echo no-proxy-env"
[ "$RC" = 0 ] || { cat "$T/out" "$T/log"; fail "the job without egress failed"; }
assert_not_contains "$T/log" "REACHED"
assert_contains "$T/log" "no-proxy-env"
jq -e '.egress == null' "$(pl_record none)" >/dev/null || fail "an egress record without egress"
no_leftovers
echo "PASS"
