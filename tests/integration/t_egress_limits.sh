#!/bin/bash
# Egress limits (issue 13): a hostile build floods the proxy with 10,000
# connection attempts, talks to a slow-loris upstream, and downloads past the
# job's byte cap; each is cut off with a clear line in the job log, the
# runner stays responsive (the same job still downloads afterwards), and the
# rate of new connections is capped.
. "$(dirname "$0")/lib.sh"

www=$T/www
mkdir -p "$www" "$SVC_DIR/http" "$SVC_DIR/slow"
head -c 3000000 /dev/urandom >"$www/blob"
echo small >"$www/small"
HTTP_PORT=$(svc_free_port)
(cd "$www" && exec python3 -m http.server --bind 127.0.0.1 "$HTTP_PORT") >"$T/http.log" 2>&1 &
echo $! >"$SVC_DIR/http/pid"
# the slow loris: accepts, reads, never answers (busybox wget has no usable
# timeout of its own here: `-T` with a proxy crashes busybox 1.35)
SLOW_PORT=$(svc_free_port)
python3 - "$SLOW_PORT" >"$T/slow.log" 2>&1 <<'PY' &
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
echo $! >"$SVC_DIR/slow/pid"
# the "10 GB download": an upstream that announces 10 GiB and sends zeros
# until the client goes away (generated, never stored)
BIG_PORT=$(svc_free_port)
mkdir -p "$SVC_DIR/big"
python3 - "$BIG_PORT" >"$T/big.log" 2>&1 <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
zeros = bytes(1 << 20)
def serve(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 << 30))
        while True:
            c.sendall(zeros)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
echo $! >"$SVC_DIR/big/pid"
svc_wait_port "$HTTP_PORT"
svc_wait_port "$SLOW_PORT"
svc_wait_port "$BIG_PORT"
cc -static -O2 -o "$T/egress-flood" "$ROOT/tests/lib/egress-flood.c"
jq --arg h "$HTTP_PORT" --arg s "$SLOW_PORT" --arg b "$BIG_PORT" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource)
    += ["net:*:\($h)", "net:*:\($s)", "net:*:\($b)"]' "$ROOT/policies/boundary.json" >"$T/boundary.json"

job () { # ID STEP
    local app=$T/app-$1
    mkdir -p "$app"
    cp "$T/egress-flood" "$app/"
    jq -n --arg step "$2" '{profile: "minimal", steps: [$step], artifacts: ["out"]}' >"$app/buildvm.json"
    COMMIT=$(pl_repo "$app")
    pl_job "$T/j-$1.json" "$1" "egress-$1" "$app" "$COMMIT"
    T0=$(date +%s)
    # the runner's peak RSS (the broker is a thread of `buildvm run`)
    set +e
    "$BUILDVM" run --config "$CONFIG" "$T/j-$1.json" >"$T/out" 2>"$T/err" &
    local pid=$! v
    HWM=0
    while kill -0 "$pid" 2>/dev/null; do
        v=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$pid/status" 2>/dev/null)
        [ -z "$v" ] || HWM=$v
        sleep 0.2
    done
    wait "$pid"
    RC=$?
    set -e
    T1=$(date +%s)
    "$BUILDVM" logs --config "$CONFIG" "$1" >"$T/log" 2>&1 || true
}
np="env -u no_proxy -u NO_PROXY"

# --- 10,000 refused attempts, a slow loris, a byte cap; then a good download
pl_config "del(.registry.credentials) | .policies.boundary = \"$T/boundary.json\" | .egress = {
    allow: [\"localhost:$HTTP_PORT\", \"localhost:$SLOW_PORT\"], allow_addresses: [\"127.0.0.1/32\"],
    limits: {connects_per_minute: 100000, idle_seconds: 2, bytes_in: 8000000}}"
job hostile "mkdir -p out
./egress-flood 10000 example.com:443
s=\$(cut -d. -f1 /proc/uptime); $np wget -q -O out/slow http://localhost:$SLOW_PORT/ 2>&1; e=\$(cut -d. -f1 /proc/uptime); echo \"slow: gave up after \$((e - s)) s\"
$np wget -q -O out/b1 http://localhost:$HTTP_PORT/blob && echo b1-ok
$np wget -q -O out/b2 http://localhost:$HTTP_PORT/blob && echo b2-ok
$np wget -q -O out/b3 http://localhost:$HTTP_PORT/blob && echo b3-ok
$np wget -q -O out/small http://localhost:$HTTP_PORT/small 2>&1 || echo small-refused"
[ "$RC" = 0 ] || { cat "$T/out"; tail -30 "$T/log"; fail "the hostile job failed"; }
assert_contains "$T/log" "flood: 10000 requests: 403=10000 failed=0"
n=$(grep -c "^\[egress\] deny CONNECT example.com:443: the job's role denies" "$T/log" || true)
assert_eq 10000 "$n" "refusals logged"
assert_contains "$T/log" "idle timeout (egress.limits.idle_seconds)"
s=$(sed -n 's/^slow: gave up after \([0-9]*\) s$/\1/p' "$T/log")
[ -n "$s" ] && [ "$s" -le 10 ] || fail "the slow loris held the build for ${s:-?} s (idle limit 2 s)"
# 8 MB of bytes in: the first two 3 MB downloads fit, the third is cut off
assert_contains "$T/log" "b1-ok"
assert_contains "$T/log" "b2-ok"
assert_not_contains "$T/log" "b3-ok"
assert_contains "$T/log" "the job's egress byte cap (in) is spent"
assert_contains "$T/log" "small-refused"
rec=$(pl_record hostile)
jq -e '.egress.denied >= 10001 and .egress.connections_not_recorded > 9000 and (.egress.connections | length) == 1000
       and .egress.bytes_in <= 8000000 + 65536' "$rec" >/dev/null \
    || { jq '.egress | del(.connections, .role)' "$rec"; fail "the record"; }
cmp "$www/blob" "$(pl_artifact "egress-hostile/$COMMIT" out/b2)" || fail "the download after the flood differs"
note "10,000 refusals, a slow loris and the byte cap in $((T1 - T0)) s; broker CPU $(jq .egress.cpu_ms "$rec") ms"

# --- in one job: the concurrent connections (two held by the slow loris,
# the third refused at once), a 10 GiB download against a 20 MB byte cap
# (cut, refused, logged; the runner's memory does not follow it), and the
# rate of new connections
pl_config "del(.registry.credentials) | .policies.boundary = \"$T/boundary.json\" | .egress = {
    allow: [\"localhost:$HTTP_PORT\", \"localhost:$SLOW_PORT\", \"localhost:$BIG_PORT\"], allow_addresses: [\"127.0.0.1/32\"],
    limits: {connects_per_minute: 5, connections: 2, idle_seconds: 2, bytes_in: 20000000}}"
job rate "mkdir -p out
$np wget -q -O /dev/null http://localhost:$SLOW_PORT/ 2>/dev/null & $np wget -q -O /dev/null http://localhost:$SLOW_PORT/ 2>/dev/null &
sleep 1
s=\$(cut -d' ' -f1 /proc/uptime | tr -d .); $np wget -q -O /dev/null http://localhost:$HTTP_PORT/small 2>&1; e=\$(cut -d' ' -f1 /proc/uptime | tr -d .)
echo \"third: answered after \$(((e - s) * 10)) ms\"
wait
s=\$(cut -d. -f1 /proc/uptime); $np wget -q -O /dev/null http://localhost:$BIG_PORT/10g 2>&1 && echo big-REACHED; e=\$(cut -d. -f1 /proc/uptime)
echo \"big: cut after \$((e - s)) s\"
./egress-flood 40 example.com:443"
[ "$RC" = 0 ] || { cat "$T/out"; tail -30 "$T/log"; fail "the rate job failed"; }
# the OPEN past the concurrent limit: refused at once, not queued
assert_contains "$T/log" "wget: server returned error: HTTP/1.1 429 Too Many Requests"
assert_contains "$T/log" "too many concurrent connections (egress.limits.connections)"
ms=$(sed -n 's/^third: answered after \([0-9]*\) ms$/\1/p' "$T/log")
[ -n "$ms" ] && [ "$ms" -le 3000 ] || fail "the connection past the limit was answered after ${ms:-?} ms"
# the 10 GiB download: cut at the cap, with the reason in the log
assert_not_contains "$T/log" "big-REACHED"
assert_contains "$T/log" "[egress] the job's egress byte cap (in) is spent"
assert_contains "$T/log" "the job's egress byte cap is spent (egress.limits.bytes_in)"
rec=$(pl_record rate)
jq -e --arg p "$BIG_PORT" '.egress.bytes_in <= 20000000 + 65536 and .egress.bytes_in > 19000000
    and ([.egress.connections[] | select(.port == ($p | tonumber))][0].reason | test("byte cap"))' "$rec" >/dev/null \
    || { jq '.egress | del(.role)' "$rec"; fail "the byte cap in the record"; }
[ "$HWM" -gt 0 ] && [ "$HWM" -lt $((96 << 10)) ] || fail "the runner's peak RSS was ${HWM} kB while a 10 GiB download was cut at 20 MB"
note "10 GiB download cut at 20 MB after $(sed -n 's/^big: cut after \([0-9]*\) s$/\1/p' "$T/log") s; the runner's peak RSS ${HWM} kB"
n=$(sed -n 's/.* 429=\([0-9]*\).*/\1/p' "$T/log")
[ -n "$n" ] && [ "$n" -ge 30 ] || { grep flood "$T/log"; fail "the rate limit refused ${n:-none} of 40 (limit 5 per minute)"; }
assert_contains "$T/log" "too many new connections per minute (egress.limits.connects_per_minute)"
p=$(vmms_of_ours 'buildvm-(hostile|rate),')
[ -z "$p" ] || fail "VMM processes left behind: $p"
echo PASS
