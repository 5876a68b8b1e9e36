#!/bin/bash
# A guest that ends without writing a result header (issue 11, "also from
# reading"). It used to be an internal error, retried: three VM runs for one
# hostile build. Once the agent said it was ready the job's own code ran, so
# a VM that then ends without a header is the build's fault: one run, a
# `failed` record with code `build`, not retried. A VM that never reached the
# agent (here: a guest that reboots before saying ready, as a VMM or kernel
# that fails to start would) stays an internal error and is retried.
. "$(dirname "$0")/lib.sh"

pl_registry

# --- compromised images: the real kernel, a busybox rootfs whose init is not the agent
stage=$T/stage
mkdir -p "$stage"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$stage/bin/busybox"
for a in sh mount cat echo sleep sync reboot; do ln -s busybox "$stage/bin/$a"; done
img=$T/images
mkdir -p "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
mkimage () { # PROFILE INIT-BODY
    printf '#!/bin/sh\nmount -t proc proc /proc; mount -t devtmpfs dev /dev\n%s\nsync\nreboot -f\n' "$2" >"$stage/init"
    chmod 755 "$stage/init"
    mkfs.ext4 -q -d "$stage" "$img/rootfs/$1.ext4" 32M >/dev/null
    jq --arg p "$1" --arg size "$(stat -c %s "$img/rootfs/$1.ext4")" '
        .profile = $p | .rootfs.path = "rootfs/\($p).ext4" | .rootfs.size = ($size | tonumber)
        | .kernel.cmdline |= sub("init=/buildvm/agent"; "init=/init")' \
        "$BUILDVM_IMAGES/minimal.json" >"$img/$1.json"
}
# ready, then gone without a header (the output disk's header stays zero)
mkimage noresult 'echo "buildvm-agent: ready" >/dev/hvc0; echo "evil guest: leaving without a result" >/dev/hvc0'
# never ready: nothing of the job ran
mkimage noboot 'echo "not the agent" >/dev/hvc0'
export BUILDVM_IMAGES=$img
pl_config ".queue = \"spool:$BUILDVM_HOME/spool\" | .serve = {lease_seconds: 10, max_attempts: 3}"

mkapp () { # DIR PROFILE
    mkdir -p "$1"
    jq -n --arg p "$2" '{profile: $p, steps: ["true"], image: {from: "."}}' >"$1/buildvm.json"
    pl_repo "$1"
}
c1=$(mkapp "$T/a1" noresult)
c2=$(mkapp "$T/a2" noboot)
pl_job "$T/j.json" hostile-1 noresult "$T/a1" "$c1"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
pl_job "$T/j.json" noboot-1 noboot "$T/a2" "$c2"
"$BUILDVM" enqueue --config "$CONFIG" "$T/j.json" >/dev/null
sv_start main
sv_wait_done 2 300 || { tail -40 "$T/serve-main.log"; fail "the jobs did not finish"; }
sleep 1
kill -TERM "$SV_PID_main"; wait "$SV_PID_main" || true

# the hostile build: one VM run, a build failure, done (not dead after retries)
assert_eq 1 "$(grep -c "job=hostile-1 app=noresult event=leased" "$T/serve-main.log")" "VM runs of the hostile build"
assert_eq done "$(sv_state hostile-1)" "hostile build: queue state"
rec=$(pl_record hostile-1)
assert_eq failed "$(jq -r .status "$rec")" "hostile build: status"
assert_eq build "$(jq -r .error.code "$rec")" "hostile build: error code"
jq -r .error.message "$rec" | grep -q "ended without a result" || fail "unclear error: $(jq -r .error.message "$rec")"
pl_tag_exists apps/noresult "$c1" && fail "the hostile build was pushed"

# the guest that never reached the agent: internal, retried up to max_attempts
assert_eq 3 "$(grep -c "job=noboot-1 app=noboot event=leased" "$T/serve-main.log")" "attempts of a VM that never reached the agent"
assert_eq dead "$(sv_state noboot-1)" "never-ready guest: queue state"
assert_no_leftovers
