#!/bin/bash
# buildvm vm run: output captured, exit status propagated, the guest is what
# the host/guest contract says (build user, working directory, no network),
# and nothing is left behind after each run.
. "$(dirname "$0")/lib.sh"

for code in 0 1 42; do
    run "$BUILDVM" vm run -- sh -c "echo to-stdout; echo to-stderr >&2; exit $code"
    assert_eq "$code" "$RC" "exit status"
    assert_contains "$T/out" "to-stdout"
    assert_contains "$T/out" "to-stderr"
    assert_no_leftovers
done

run "$BUILDVM" vm run -- sh -c 'id -u; id -g; pwd; echo "HOME=$HOME"; cat /proc/cmdline; ls /sys/class/net; [ -w / ] && echo root-writable || echo root-readonly'
assert_eq 0 "$RC" "exit status"
assert_eq "1000" "$(sed -n 1p "$T/out")" "build uid"
assert_eq "1000" "$(sed -n 2p "$T/out")" "build gid"
assert_eq "/work/src" "$(sed -n 3p "$T/out")" "working directory"
assert_contains "$T/out" "HOME=/work/home"
assert_contains "$T/out" "root-readonly"
# no network device at all: only the loopback interface exists
assert_eq "lo" "$(sed -n 6p "$T/out")" "network interfaces"
assert_eq "" "$(sed -n 7p "$T/out" | grep -v root-readonly || true)" "no other interface"

# arguments arrive as words, not as a shell line
run "$BUILDVM" vm run -- printf '[%s]\n' 'a b' '$HOME' "it's"
assert_eq 0 "$RC" "exit status"
assert_eq '[a b]
[$HOME]
[it'"'"'s]' "$(cat "$T/out")" "argument words"

# a command that does not exist
run "$BUILDVM" vm run -- /no/such/program
assert_eq 127 "$RC" "exit status of a missing program"

# usage errors
run "$BUILDVM" vm run
assert_eq 2 "$RC" "no command"
run "$BUILDVM" vm run --timeout 0 -- true
assert_eq 2 "$RC" "zero timeout"
assert_no_leftovers
