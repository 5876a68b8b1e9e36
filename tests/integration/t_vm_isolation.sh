#!/bin/bash
# The build user cannot reach the output disk, the input disk, the console
# device or the agent's files, and cannot regain privileges.
. "$(dirname "$0")/lib.sh"

run "$BUILDVM" vm run -- sh -c '
  for d in /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/hvc0 /dev/ttyS0; do
    if echo x 2>/dev/null >"$d"; then echo "WROTE $d"; else echo "denied $d"; fi
    if head -c 1 "$d" >/dev/null 2>&1; then echo "READ $d"; else echo "noread $d"; fi
  done
  if echo x 2>/dev/null >>/buildvm/agent; then echo "WROTE agent"; else echo "denied agent"; fi
  if rm -f /buildvm/agent 2>/dev/null && [ ! -e /buildvm/agent ]; then echo "REMOVED agent"; else echo "denied rm agent"; fi
  if touch /etc/x 2>/dev/null; then echo "WROTE rootfs"; else echo "denied rootfs"; fi
  if ls /run/secrets >/dev/null 2>&1; then echo "secrets dir readable by build"; fi
  grep NoNewPrivs /proc/self/status
  grep CapEff /proc/self/status
'
assert_eq 0 "$RC" "exit status"
cat "$T/out"
assert_not_contains "$T/out" "WROTE"
assert_not_contains "$T/out" "READ"
assert_not_contains "$T/out" "REMOVED"
for d in vda vdb vdc vdd hvc0 ttyS0; do assert_contains "$T/out" "denied /dev/$d"; done
assert_contains "$T/out" "denied agent"
assert_contains "$T/out" "denied rootfs"
assert_contains "$T/out" "NoNewPrivs:	1"
assert_contains "$T/out" "CapEff:	0000000000000000"
assert_no_leftovers
