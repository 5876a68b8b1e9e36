#!/bin/bash
# A step that never ends is killed at its deadline: the result says timeout,
# the VM is gone, no job file is left. A guest that never reaches the agent is
# caught by the boot deadline.
. "$(dirname "$0")/lib.sh"

start=$(date +%s)
run "$BUILDVM" vm run --timeout 3 -- sh -c 'echo started; sleep 1000'
elapsed=$(( $(date +%s) - start ))
assert_eq 124 "$RC" "exit status of a timed-out command"
assert_contains "$T/out" "started"
assert_contains "$T/err" "timed out"
[ "$elapsed" -lt 30 ] || fail "took ${elapsed}s for a 3 s deadline"
assert_no_leftovers

# background processes and setsid escapes die with the step, too
run "$BUILDVM" vm run --timeout 3 -- sh -c '(setsid sh -c "sleep 1000" &); sleep 1000'
assert_eq 124 "$RC" "exit status"
assert_no_leftovers

# an init that never starts the agent: a copy of the image whose kernel
# command line makes an idle shell PID 1
img=$T/images
mkdir -p "$img"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
ln -s "$BUILDVM_IMAGES/rootfs" "$img/rootfs"
sed 's|init=/buildvm/agent|init=/bin/sh|' "$BUILDVM_IMAGES/minimal.json" >"$img/minimal.json"
start=$(date +%s)
run "$BUILDVM" vm run --images "$img" --boot-timeout 5 -- true
elapsed=$(( $(date +%s) - start ))
assert_eq 125 "$RC" "exit status when the VM never boots"
assert_contains "$T/err" "did not reach the guest agent"
[ "$elapsed" -lt 30 ] || fail "boot deadline took ${elapsed}s"
assert_no_leftovers

# a signal to the runner: the VM is killed and reaped, its files removed, and
# `vm run` says it was canceled (exit 130)
"$BUILDVM" vm run -- sleep 1000 >"$T/out" 2>"$T/err" &
pid=$!
for _ in $(seq 100); do pgrep -f 'qemu-system-x86_64 -name buildvm-vm-run' >/dev/null && break; sleep 0.1; done
sleep 1
start=$(date +%s)
kill -TERM $pid
set +e; wait $pid; rc=$?; set -e
assert_eq 130 "$rc" "exit status after SIGTERM"
[ $(( $(date +%s) - start )) -lt 10 ] || fail "SIGTERM took too long"
assert_contains "$T/err" "canceled"
assert_no_leftovers
