#!/bin/bash
# Output floods are capped (by the agent, and by the runner when the guest
# ignores its cap) with the runner's memory bounded; a build that fills its
# disk fails cleanly.
. "$(dirname "$0")/lib.sh"

# 100 MB of output against a 1 MB cap
peak_rss "$BUILDVM" vm run --log-max 1000000 -- sh -c \
    'yes 0123456789012345678901234567890123456789 | head -c 100000000; echo after-flood'
assert_eq 0 "$RC" "exit status"
assert_contains "$T/out" "further output is dropped"
assert_not_contains "$T/out" "after-flood"
size=$(stat -c %s "$T/out")
[ "$size" -le 1100000 ] || fail "kept $size bytes of output for a 1000000-byte cap"
note "runner peak RSS ${PEAK_KB} KiB"
[ "$PEAK_KB" -lt 65536 ] || fail "runner peak RSS ${PEAK_KB} KiB while the guest printed 100 MB"
assert_no_leftovers

# A hostile guest ignores the agent's cap: here the "VMM" itself floods the
# console with 100 MB. The runner keeps its own cap, drops the rest with one
# marker, and its memory stays bounded.
cat >"$T/flood-vmm" <<'SH'
#!/bin/sh
echo "buildvm-agent: ready"
yes "hostile guest line hostile guest line" | head -c 100000000
SH
chmod +x "$T/flood-vmm"
peak_rss "$BUILDVM" vm run --qemu "$T/flood-vmm" --log-max 1000000 -- true
assert_eq 125 "$RC" "a VMM that exits without a result"
assert_contains "$T/out" "console output exceeded"
[ "$(grep -c 'console output exceeded' "$T/out")" = 1 ] || fail "more than one marker line"
size=$(stat -c %s "$T/out")
[ "$size" -le 1200000 ] || fail "kept $size bytes of console for a ~1 MB cap"
note "runner peak RSS ${PEAK_KB} KiB"
[ "$PEAK_KB" -lt 65536 ] || fail "runner peak RSS ${PEAK_KB} KiB"
assert_no_leftovers

# a build that fills its 64 MiB scratch disk fails cleanly
run "$BUILDVM" vm run --disk 64 -- sh -c 'dd if=/dev/zero of=big bs=1M count=200'
[ "$RC" -ne 0 ] || fail "filling the disk succeeded"
[ "$RC" -ne 125 ] || fail "filling the disk broke the VM instead of failing the build: $(cat "$T/err")"
assert_contains "$T/out" "No space left on device"
assert_no_leftovers

# memory is bounded by the VM, not the host: a balloon dies inside the guest
run "$BUILDVM" vm run --memory 128 -- sh -c 'x=a; while :; do x="$x$x"; done'
[ "$RC" -ne 0 ] || fail "a memory balloon succeeded"
[ "$RC" -ne 125 ] || fail "a memory balloon broke the VM: $(cat "$T/err")"
assert_no_leftovers
