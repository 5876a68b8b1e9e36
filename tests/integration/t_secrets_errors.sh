#!/bin/bash
# Secrets and hostile text from a compromised guest, through every sink.
#
# The guest here is a stand-in VMM (a script in place of QEMU) that reads the
# job's secrets off the input disk and writes them where a taken-over guest
# could: on the agent's console at every offset of the console's 8 KiB line
# split, in every encoding the redactor knows, at the maximal secret size
# (64 KiB), with `\r\n` inside; on the kernel console (the VMM's stderr),
# whose tail goes into error messages; and in the result header's `message`,
# with escape sequences and invalid UTF-8. No secret, no part of a secret
# longer than a few bytes and no raw escape sequence may reach the job
# record, the job log, the CLI's output, the daemon's log or the queue (spool
# history, redis `last_reason` and dead letters), on either queue driver; the
# record keeps its `error`.
. "$(dirname "$0")/lib.sh"

pl_registry
svc_redis q

# --- the stand-in VMM ------------------------------------------------------------
cat >"$T/vmm" <<'PY'
#!/usr/bin/python3
import base64, binascii, os, subprocess, sys, tarfile
args = sys.argv[1:]
disks = {}
for i, a in enumerate(args):
    if a == "-drive":
        kv = dict(p.split("=", 1) for p in args[i + 1].split(","))
        disks[kv["id"]] = kv["file"]
out, kcon = sys.stdout.buffer, sys.stderr.buffer
def con(b, f=out):
    f.write(b); f.flush()
con(b"buildvm-agent: ready\n")
# the source is on the scratch disk (an ext4 the runner wrote): read it
# without mounting anything
case = subprocess.run(["debugfs", "-R", "cat src/case.txt", disks["scratch"]],
                      capture_output=True, check=True).stdout.decode().strip()
with tarfile.open(disks["input"]) as t:
    sec = {m.name.rsplit("/", 1)[1]: t.extractfile(m).read()
           for m in t.getmembers() if m.name.startswith(".buildvm/secrets/")}
SPLIT = 8192
def forms(v):
    return [v, base64.b64encode(v), base64.urlsafe_b64encode(v).rstrip(b"="),
            binascii.hexlify(v), binascii.hexlify(v).upper(), base64.encodebytes(v).rstrip(b"\n")]
def header(status, message=None):
    h = b"buildvm-output 1\nstatus " + status + b"\nstep 1\nexit 1\nsignal 0\nsteps 1\nentries 0\ntar_bytes 0\nduration_ms 1\n"
    if message is not None:
        h += b"message " + message + b"\n"
    h += b"end\n"
    with open(disks["output"], "r+b") as f:
        f.write(h + b"\0" * (4096 - len(h)))
if case == "stream":
    for name in ("CANARY", "CRLF", "BIG"):
        for f in forms(sec[name]):
            if len(f) < SPLIT:
                # the split falls at every offset inside the form
                for k in range(SPLIT - len(f) + 1, SPLIT):
                    con(b"x" * k + f + b" tail\n")
            else:
                for k in (0, 1, 4095, 8191):
                    con(b"y" * k + f + b" tail\n")
    con(b"pre " + sec["CRLF"] + b" post\r\n")
    header(b"step-failed")
elif case == "msg":
    con(b"kernel: " + sec["CANARY"] + b"\n", kcon)
    header(b"agent-error", b"oops " + sec["CANARY"] + b" end")
elif case == "noresult":
    con(b"[    0.1] kernel: " + sec["CANARY"] + b"\n", kcon)
    con(b"\x1b]0;pwned-title\x07\x1b[2J\x1b[31mred\n", kcon)
    con(b"big: " + sec["BIG"] + b"\n", kcon)
    con(b"[    0.2] last: " + sec["CANARY"] + b"\n", kcon)
elif case == "badutf8":
    header(b"agent-error", b"bad \xc3\x28 \xff\xfe c1-csi \xc2\x9b2J " + sec["CANARY"])
elif case == "esc":
    header(b"agent-error", b"esc \x1b]0;pwned-title\x07\x1b[2J")
PY
chmod +x "$T/vmm"

canary="canary-E-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
head -c 49152 /dev/urandom | base64 -w0 | head -c 65536 >"$T/big"
[ "$(stat -c %s "$T/big")" = 65536 ] || fail "the big secret is not 64 KiB"
printf 'crlf-%s\r\nsecond-%s' "$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    "$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/crlf"

setup () { # QUEUE-OR-EMPTY
    rm -rf "$BUILDVM_HOME"
    mkdir -p "$BUILDVM_HOME"
    # no early VM: the stand-in VMM plays a cold boot's guest, not one that
    # waits at its control port for a job (vm.early_boot)
    pl_config ".vm.qemu = \"$T/vmm\" | .jail.enabled = \"off\" | .vm.early_boot = false
               | .queue = \"${1:-spool:$BUILDVM_HOME/spool}\"
               | .serve = {lease_seconds: 10, max_attempts: 2}"
    "$BUILDVM" secrets --config "$CONFIG" init-master-key >/dev/null
    printf %s "$canary" | "$BUILDVM" secrets --config "$CONFIG" set app-e CANARY
    "$BUILDVM" secrets --config "$CONFIG" set app-e BIG <"$T/big"
    "$BUILDVM" secrets --config "$CONFIG" set app-e CRLF <"$T/crlf"
}

# one commit per case; the case name travels in the source tree
app=$T/app
mkdir -p "$app"
printf '{"profile": "minimal", "steps": ["true"], "secrets": ["CANARY", "BIG", "CRLF"]}\n' >"$app/buildvm.json"
git init -q -b main "$app"
declare -A commit
for c in stream msg noresult badutf8 esc; do
    echo "$c" >"$app/case.txt"
    commit[$c]=$(cd "$app" && git add -A && git -c user.name=t -c user.email=t@x commit -qm "$c" && git rev-parse HEAD)
done

# No secret, nor any 16-byte piece of one of its forms, nor a raw escape
# (ESC, C1 CSI) in these files (lz4 logs decompressed, sealed logs opened with
# `buildvm logs`: encryption at rest).
clean () { # WHAT FILE-OR-DIR...
    local what=$1; shift
    find "$@" -type f 2>/dev/null | while read -r f; do
        case $f in
            *.log.lz4.seal) j=${f##*/}; "$BUILDVM" logs --config "$CONFIG" "${j%.log.lz4.seal}" ;;
            *.lz4) lz4 -dc "$f" ;;
            *) cat "$f" ;;
        esac
    done >"$T/sinks.txt"
    [ -s "$T/sinks.txt" ] || fail "$what: nothing to look at in $*"
    python3 - "$T/sinks.txt" "$what" "$canary" "$T/big" "$T/crlf" <<'PY' || fail "$what: a secret or an escape leaked"
import base64, binascii, sys
text = open(sys.argv[1], "rb").read()
what, canary = sys.argv[2], sys.argv[3].encode()
vals = [canary, open(sys.argv[4], "rb").read(), open(sys.argv[5], "rb").read()]
bad = []
w = 16
pieces = set()
for v in vals:
    for f in (v, base64.b64encode(v), base64.urlsafe_b64encode(v).rstrip(b"="),
              binascii.hexlify(v), binascii.hexlify(v).upper()):
        pieces.update(f[i:i + w] for i in range(0, len(f) - w + 1))
for i in range(0, len(text) - w + 1):
    if text[i:i + w] in pieces:
        bad.append("piece %r of a form of a secret at byte %d" % (text[i:i + w], i))
        break
for b in (b"\x1b", b"\xc2\x9b", b"\x9b", b"\xff"):
    if b in text:
        bad.append("raw %r at byte %d" % (b, text.find(b)))
for b in bad[:5]:
    print("%s: %s" % (what, b), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# --- buildvm run ---------------------------------------------------------------
setup ""
for c in stream msg noresult badutf8 esc; do
    note "run: $c"
    pl_job "$T/j-$c.json" "run-$c" app-e "$app" "${commit[$c]}"
    run "$BUILDVM" run --config "$CONFIG" --verbose "$T/j-$c.json"
    [ "$RC" != 0 ] || fail "$c: the job succeeded"
    cp "$T/out" "$T/run-$c.out"
    cp "$T/err" "$T/run-$c.err"
    rec=$(pl_record "run-$c")
    jq -e '.error.message | type == "string" and length > 0' "$rec" >/dev/null \
        || { cat "$rec"; fail "$c: the record lost its error"; }
    grep -q "  error     " "$T/run-$c.out" || fail "$c: no error in the summary"
done
# the masks are there: the stream was redacted, not dropped
"$BUILDVM" logs --config "$CONFIG" run-stream >"$T/log-stream"
[ "$(grep -c '\*\*\* tail$' "$T/log-stream")" -ge 600 ] || fail "the stream's masked lines are missing"
assert_contains "$T/log-stream" "pre *** post"
assert_contains "$T/run-msg.out" "oops *** end"
# a header with invalid UTF-8 or controls is refused, and says why
jq -e '.error.message | test("invalid UTF-8")' "$(pl_record run-badutf8)" >/dev/null || fail "badutf8: not refused as invalid UTF-8"
jq -e '.error.message | test("control character")' "$(pl_record run-esc)" >/dev/null || fail "esc: not refused as a control character"
assert_contains "$T/run-noresult.out" "the VM ended without a result"
clean "run" "$T"/run-*.out "$T"/run-*.err "$BUILDVM_HOME/state/jobs" "$BUILDVM_HOME/logs"

# --- buildvm serve, on each queue driver: retried jobs carry a release reason
for driver in spool redis; do
    note "serve: $driver"
    if [ $driver = spool ]; then queue="spool:$BUILDVM_HOME/spool"; else queue="redis://$REDIS_q_ADDR/jobs-$RANDOM?group=runners"; fi
    setup "$queue"
    n=0
    for c in msg noresult badutf8 esc; do
        pl_job "$T/j.json" "sv-$driver-$c" app-e "$app" "${commit[$c]}"
        "$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
        n=$((n + 1))
    done
    sv_start "e-$driver"
    sv_wait_done $n 240 || fail "$driver: the jobs did not finish"
    kill -TERM "$(eval echo "\$SV_PID_e_$driver")"
    wait "$(eval echo "\$SV_PID_e_$driver")" || true
    for c in msg noresult badutf8 esc; do
        jq -e '.error.message | type == "string" and length > 0' "$(pl_record "sv-$driver-$c")" >/dev/null \
            || fail "$driver $c: the record lost its error"
    done
    assert_contains "$T/serve-e-$driver.log" "oops *** end"
    if [ $driver = spool ]; then
        grep -rqF "oops *** end" "$BUILDVM_HOME/spool" || fail "spool: no redacted release reason"
        clean "serve $driver" "$T/serve-e-$driver.log" "$BUILDVM_HOME/spool" \
            "$BUILDVM_HOME/state/jobs" "$BUILDVM_HOME/logs"
    else
        rc=(redis-cli -h 127.0.0.1 -p "${REDIS_q_ADDR##*:}")
        mkdir -p "$T/redis"
        for k in $("${rc[@]}" --scan); do
            case $("${rc[@]}" TYPE "$k") in
                hash) "${rc[@]}" HGETALL "$k" ;;
                stream) "${rc[@]}" XRANGE "$k" - + ;;
                string) "${rc[@]}" GET "$k" ;;
                list) "${rc[@]}" LRANGE "$k" 0 -1 ;;
                zset) "${rc[@]}" ZRANGE "$k" 0 -1 ;;
                set) "${rc[@]}" SMEMBERS "$k" ;;
            esac
        done >"$T/redis/dump"
        grep -qF "oops *** end" "$T/redis/dump" || fail "redis: no redacted last_reason"
        clean "serve $driver" "$T/serve-e-$driver.log" "$T/redis" \
            "$BUILDVM_HOME/state/jobs" "$BUILDVM_HOME/logs"
    fi
done
assert_no_leftovers
