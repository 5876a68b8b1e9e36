#!/bin/bash
# A compromised guest agent (root in the guest) writes hostile frames to the
# egress channel itself: an unknown frame type, a 4 GiB length, an OPEN
# before its HELLO, and a HELLO followed by garbage. Each ends the channel
# with the reason in the job log and the record, and nothing else: the job
# still finishes (the guest's result is read), and the runner goes on to the
# next job.
. "$(dirname "$0")/lib.sh"

stage=$T/stage
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,work}
cp /bin/busybox "$stage/bin/busybox"
for a in sh mount cat dd printf tar reboot echo sleep sync; do ln -s busybox "$stage/bin/$a"; done
cat >"$stage/init" <<'SH'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
echo "buildvm-agent: ready" >/dev/hvc0
for d in /sys/block/vd*; do
  case "$(cat "$d/serial")" in
    input) in=/dev/${d##*/} ;;
    output) out=/dev/${d##*/} ;;
    scratch) scratch=/dev/${d##*/} ;;
  esac
done
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name")" = buildvm.egress ] && port=/dev/${p##*/}
done
mount -t ext4 -o ro "$scratch" /work
case=$(cat /work/src/case.txt)
hello='\001\000\000\000\000\000\000\000\000\000\000\004\000\000\000\001'
echo "evil guest: $case on ${port:-no port}" >/dev/hvc0
case $case in
  unknown-type) printf "$hello"'\143\000\000\000\000\000\000\001\000\000\000\000' >"$port" ;;
  length-4g) printf "$hello"'\005\000\000\000\000\000\000\001\377\377\377\377' >"$port" ;;
  open-first) printf '\002\001\000\000\000\000\000\001\000\000\000\016example.com:80' >"$port" ;;
  garbage) { printf "$hello"; dd if=/dev/urandom bs=65536 count=64 2>/dev/null; } >"$port" ;;
esac
sleep 2
# a valid, empty result: an empty tar and a header that says ok
dd if=/dev/zero of="$out" bs=1024 count=1 seek=4 conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/hdr bs=4096 count=1 2>/dev/null
printf 'buildvm-output 1\nstatus ok\nstep 1\nexit 0\nsignal 0\nsteps 1\nentries 0\ntar_bytes 1024\nduration_ms 1\nend\n' | dd of=/tmp/hdr conv=notrunc 2>/dev/null
dd if=/tmp/hdr of="$out" bs=4096 count=1 conv=notrunc 2>/dev/null
sync
reboot -f
SH
chmod 755 "$stage/init"
img=$T/images
mkdir -p "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
mkfs.ext4 -q -d "$stage" "$img/rootfs/evil.ext4" 64M
jq --arg size "$(stat -c %s "$img/rootfs/evil.ext4")" '
    .profile = "evil" | .rootfs.path = "rootfs/evil.ext4" | .rootfs.size = ($size | tonumber)
    | .kernel.cmdline |= sub("init=/buildvm/agent"; "init=/init")' \
    "$BUILDVM_IMAGES/minimal.json" >"$img/evil.json"
export BUILDVM_IMAGES=$img
pl_config 'del(.registry.credentials) | .egress = {allow: ["example.com:80"]}'

app=$T/app
mkdir -p "$app"
printf '{"profile": "evil", "steps": ["true"]}\n' >"$app/buildvm.json"
git init -q -b main "$app"
n=0
for case in ${EVIL_CASES:-garbage unknown-type length-4g open-first}; do
    n=$((n + 1))
    echo "$case" >"$app/case.txt"
    c=$(cd "$app" && git add -A && git -c user.name=t -c user.email=t@x commit -qm "$case" && git rev-parse HEAD)
    pl_job "$T/j.json" "evil-$n" evilapp "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "$case: the job did not finish"; }
    "$BUILDVM" logs --config "$CONFIG" "evil-$n" >"$T/log" 2>&1
    assert_contains "$T/log" "evil guest: $case on /dev/vport"
    assert_contains "$T/log" "[egress] channel closed: protocol error"
    err=$(jq -r .egress.error "$(pl_record "evil-$n")")
    case $err in "protocol error"*) ;; *) fail "$case: egress.error is [$err]" ;; esac
    note "$case: $err"
done
p=$(vmms_of_ours 'buildvm-evil-')
[ -z "$p" ] || fail "VMM processes left behind: $p"
echo PASS
