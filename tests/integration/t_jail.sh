#!/bin/bash
# The jail around a real QEMU (runner/lib/jail.h, docs/security.md): while a
# guest sleeps, the live VMM is read back through /proc - uid, groups,
# no_new_privs, capabilities, seccomp, namespaces, rlimits, descriptors, its
# root, its cgroups - next to a second job, whose files it must not see.
# Afterwards nothing is left: no process, jail directory, cgroup or uid lock.
# A runner killed mid-build takes its VMM with it; the next run cleans up.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || skip "the jail needs root (CI runs the tests as root)"

LOCKS=/run/buildvm/jail-uids
FIRST=2000000000 COUNT=65536

# Start `buildvm vm run` in the background; sets VMM (the QEMU pid) once the
# guest has printed $2.
start_vm () { # NAME MARKER ARGS...
    local name=$1 marker=$2
    shift 2
    "$BUILDVM" vm run "$@" >"$T/$name.out" 2>"$T/$name.err" &
    RUNNER=$!
    VMM=
    for _ in $(seq 1 300); do
        VMM=$(pgrep -P "$RUNNER" -f qemu-system || true)
        [ -n "$VMM" ] && grep -q "$marker" "$T/$name.out" && return 0
        kill -0 "$RUNNER" 2>/dev/null || break
        sleep 0.1
    done
    cat "$T/$name.out" "$T/$name.err"
    fail "$name: no QEMU with a guest that printed [$marker]"
}

field () { grep "^$1:" "/proc/$2/status" | cut -f2- | sed 's/[[:space:]]*$//'; }
# live processes of a uid (a killed one may linger as a zombie until init reaps it)
alive () { ps -u "$1" -o stat= 2>/dev/null | grep -v '^Z' || true; }
cgroup_dir () { # CONTROLLER PID -> the host directory of its v1 cgroup
    local path
    path=$(awk -F: -v c="$1" '$2 == c { print $3 }' "/proc/$2/cgroup")
    [ -n "$path" ] && echo "/sys/fs/cgroup/$1$path"
}

# --- one job, inspected live ----------------------------------------------------
start_vm a guest-a-up -- sh -c 'echo guest-a-up; sleep 8; echo guest-a-done'
A=$VMM RUNNER_A=$RUNNER
start_vm b guest-b-up -- sh -c 'echo guest-b-up; sleep 3; echo guest-b-done'
B=$VMM RUNNER_B=$RUNNER
note "QEMU a: pid $A, QEMU b: pid $B"

uid=$(field Uid "$A" | awk '{print $1}')
[ "$uid" -ge "$FIRST" ] && [ "$uid" -lt $((FIRST + COUNT)) ] || fail "uid $uid is not in the jail range"
assert_eq "$uid	$uid	$uid	$uid" "$(field Uid "$A")" "real, effective, saved, fs uid"
assert_eq "$uid	$uid	$uid	$uid" "$(field Gid "$A")" "gids"
assert_eq "" "$(field Groups "$A")" "supplementary groups"
uid_b=$(field Uid "$B" | awk '{print $1}')
[ "$uid" != "$uid_b" ] || fail "two live jobs share uid $uid"
[ -e "$LOCKS/$uid" ] && [ -e "$LOCKS/$uid_b" ] || fail "no uid locks in $LOCKS"

assert_eq 1 "$(field NoNewPrivs "$A")" "no_new_privs"
for c in CapInh CapPrm CapEff CapBnd CapAmb; do
    assert_eq 0000000000000000 "$(field $c "$A")" "$c"
done
# mode 2 (filter): the jail's filter, then QEMU's own -sandbox on top
assert_eq 2 "$(field Seccomp "$A")" "seccomp mode"
assert_eq 2 "$(field Seccomp_filters "$A")" "seccomp filters (the jail's + QEMU's -sandbox)"
# QEMU is PID 1 of its own PID namespace
assert_eq "$A	1" "$(field NSpid "$A")" "pid namespace"

for ns in mnt pid ipc uts net cgroup; do
    [ "$(readlink "/proc/$A/ns/$ns")" != "$(readlink "/proc/self/ns/$ns")" ] \
        || fail "the VMM shares the $ns namespace with the host"
done
[ "$(readlink "/proc/$A/ns/net")" != "$(readlink "/proc/$B/ns/net")" ] || fail "two jails share a net namespace"
assert_eq "lo" "$(nsenter -t "$A" -n ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ' | sed 's/ $//')" \
    "network interfaces of the VMM"

limit () { awk -v k="$1" 'index($0, k) == 1 { print $(NF-2), $(NF-1) }' "/proc/$A/limits"; }
assert_eq "1024 1024" "$(limit 'Max open files')" "RLIMIT_NOFILE"
assert_eq "256 256" "$(limit 'Max processes')" "RLIMIT_NPROC"
assert_eq "0 0" "$(limit 'Max core file size')" "RLIMIT_CORE"
# the largest writable disk (the 1024 MiB scratch disk) + 1 MiB
assert_eq "1074790400 1074790400" "$(limit 'Max file size')" "RLIMIT_FSIZE"
note "QEMU threads: $(field Threads "$A") (RLIMIT_NPROC and pids.max 256)"

# Descriptors: stdin /dev/null, stdout and stderr the runner's pipes; the
# rest is what QEMU opened itself, all inside the jail. Nothing of the runner.
for fd in /proc/"$A"/fd/*; do
    target=$(readlink "$fd")
    case "$target" in
        /vm/vmlinux | /vm/rootfs.ext4 | /vm/input.img | /vm/output.img | /vm/scratch.img) ;;
        /dev/null | /dev/urandom | /dev/kvm | pipe:* | anon_inode:*) ;;
        *) fail "the VMM has $fd -> $target open" ;;
    esac
done
assert_eq /dev/null "$(readlink "/proc/$A/fd/0")" "stdin"
readlink "/proc/$A/fd/1" | grep -q '^pipe:' || fail "stdout is not the console pipe"
readlink "/proc/$A/fd/2" | grep -q '^pipe:' || fail "stderr is not the kernel/VMM pipe"

# Its root: the plan and the job's files, nothing else.
assert_eq "input.img output.img rootfs.ext4 scratch.img vmlinux" \
    "$(ls -A "/proc/$A/root/vm" | sort | tr '\n' ' ' | sed 's/ $//')" "/vm in the jail"
assert_eq "fd null stderr stdin stdout urandom zero" \
    "$(ls -A "/proc/$A/root/dev" | sort | tr '\n' ' ' | sed 's/ $//')" "/dev in the jail"
for p in /etc /tmp /run /home /root /var /sys "$T" "$BUILDVM_HOME" "$WORK"; do
    [ ! -e "/proc/$A/root$p" ] || fail "$p is visible in the jail"
done
# The other job: its disks are in a work directory the jail cannot see, and
# a's /vm/output.img is a's own file, not b's.
wd_a=$(dirname "$(ls -d "$WORK"/vm-run.*/output.img | while read -r f; do
    [ "$(stat -c %u "$f")" = "$uid" ] && echo "$f"; done)")
wd_b=$(dirname "$(ls -d "$WORK"/vm-run.*/output.img | while read -r f; do
    [ "$(stat -c %u "$f")" = "$uid_b" ] && echo "$f"; done)")
[ -d "$wd_a" ] && [ -d "$wd_b" ] && [ "$wd_a" != "$wd_b" ] || fail "cannot tell the two jobs' work directories apart"
assert_eq "$(stat -c %i "$wd_a/output.img")" "$(stat -L -c %i "/proc/$A/root/vm/output.img")" "a's output disk"
[ "$(stat -c %i "$wd_b/output.img")" != "$(stat -L -c %i "/proc/$A/root/vm/output.img")" ] || fail "a sees b's disk"
[ ! -e "/proc/$A/root$wd_b" ] || fail "b's work directory is visible to a"
# the job's disks belong to its uid; the shared image files stay root's
assert_eq "$uid 600" "$(stat -c '%u %a' "$wd_a/output.img")" "output disk owner and mode"
assert_eq "$uid 400" "$(stat -c '%u %a' "$wd_a/input.img")" "input disk owner and mode"
assert_eq 0 "$(stat -L -c %u "/proc/$A/root/vm/rootfs.ext4")" "rootfs owner"
# read-only where promised
grep -q ' /vm/rootfs.ext4 ro,' "/proc/$A/mountinfo" || fail "the rootfs is not mounted read-only"
grep -q ' /vm/input.img ro,' "/proc/$A/mountinfo" || fail "the input disk is not mounted read-only"
grep -q ' /vm/output.img rw,' "/proc/$A/mountinfo" || fail "the output disk is not mounted read-write"
grep -Eq '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ro,' "/proc/$A/mountinfo" || fail "the jail's root is not read-only"

# cgroups (v1 here; a host without them is reported by doctor, not fatal)
cgs=()
for c in memory pids cpu; do
    d=$(cgroup_dir $c "$A" || true)
    if [ -z "$d" ] || [ ! -d "$d" ]; then note "no $c cgroup for the VMM"; continue; fi
    case "$d" in */buildvm/"$uid") ;; *) fail "$c cgroup $d is not the job's" ;; esac
    grep -qx "$A" "$d/cgroup.procs" || fail "the VMM is not in $d"
    cgs+=("$d")
done
mem=$(cgroup_dir memory "$A" || true)
if [ -n "$mem" ] && [ -d "$mem" ]; then
    # 512 MiB guest + 256 MiB QEMU + 1 GiB TCG translation cache
    tcg=0
    [ "$("$BUILDVM" doctor --accel)" = tcg ] && tcg=1024
    want=$(( (512 + 256 + tcg) * 1024 * 1024 ))
    assert_eq "$want" "$(cat "$mem/memory.limit_in_bytes")" "memory limit"
    note "QEMU memory: $(($(cat "$mem/memory.usage_in_bytes") / 1048576)) MiB charged"
fi
pids=$(cgroup_dir pids "$A" || true)
[ -z "$pids" ] || assert_eq 256 "$(cat "$pids/pids.max")" "pids.max"
cpu=$(cgroup_dir cpu "$A" || true)
[ -z "$cpu" ] || assert_eq 200000 "$(cat "$cpu/cpu.cfs_quota_us")" "cpu quota (1 vCPU + 1)"

# both finish normally, with the guest's output intact
wait "$RUNNER_B" || fail "job b failed: $(cat "$T/b.err")"
wait "$RUNNER_A" || fail "job a failed: $(cat "$T/a.err")"
assert_contains "$T/a.out" guest-a-done
assert_contains "$T/b.out" guest-b-done

# ... and leave nothing behind
assert_no_leftovers
for u in "$uid" "$uid_b"; do
    [ -z "$(alive "$u")" ] || fail "processes of uid $u are left"
    [ ! -e "$LOCKS/$u" ] || fail "the uid lock $LOCKS/$u is left"
done
for d in "${cgs[@]}"; do [ ! -e "$d" ] || fail "cgroup $d is left"; done

# --- the runner dies: its VMM dies with it; the next run cleans up -------------
start_vm c guest-c-up -- sh -c 'echo guest-c-up; sleep 30'
C=$VMM
uid_c=$(field Uid "$C" | awk '{print $1}')
kill -9 "$RUNNER"
wait "$RUNNER" 2>/dev/null || true
for _ in $(seq 1 100); do
    state=$(awk '{print $3}' "/proc/$C/stat" 2>/dev/null || true)
    [ -z "$state" ] || [ "$state" = Z ] && break
    sleep 0.05
done
state=$(awk '{print $3}' "/proc/$C/stat" 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = Z ] || fail "the VMM outlived its killed runner (state $state)"
# the killed runner's lock died with it; its work directory (with the jail's
# mount point) and cgroups wait for the next run
run "$BUILDVM" vm run -- true
assert_eq 0 "$RC" "the next run"
assert_no_leftovers
[ -z "$(alive "$uid_c")" ] || fail "processes of the killed job's uid are left"
for c in memory pids cpu; do
    for d in /sys/fs/cgroup/$c/buildvm/"$uid_c" /sys/fs/cgroup/$c/*/*/buildvm/"$uid_c"; do
        [ ! -e "$d" ] || fail "the killed job's cgroup $d is left"
    done
done

# --- doctor reports every layer -------------------------------------------------
run "$BUILDVM" doctor
assert_eq 0 "$RC" "doctor"
for layer in "jail " "jail uid range" "jail namespaces" "jail root" "jail capabilities" \
    "jail no_new_privs" "jail rlimits" "jail descriptors" "jail seccomp" "jail qemu -sandbox" \
    "jail trial"; do
    grep -q "^ok    $layer" "$T/out" || { cat "$T/out"; fail "doctor: [$layer] is not ok"; }
done
grep -q "^ok    jail cgroup memory" "$T/out" || note "doctor: $(grep 'jail cgroup memory' "$T/out")"
# with the jail off, doctor says so
printf '{"jail": {"enabled": "off"}}' >"$T/runner.json"
run "$BUILDVM" doctor --config "$T/runner.json"
grep -q '^note  jail  *disabled' "$T/out" || { cat "$T/out"; fail "doctor with the jail off"; }
