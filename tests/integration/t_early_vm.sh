#!/bin/bash
# The early VM (docs/architecture.md, "The early VM"): a job offered no pool
# VM boots one of the runner's default shape as it starts, while its
# checkout runs, and its build takes it when it fits.
#
# - Two jobs of the default shape through `buildvm run`: each ran in the VM
#   booted for it (record: build.early_vm.used), read its own commit's
#   source (not the blank disk the VM booted with), in a VM no other job saw
#   (boot ids differ, the first job's marker is not there for the second).
# - A job whose resources are not the default shape: the early VM is freed,
#   the build boots cold and succeeds, the record says why. The app's next
#   job boots its early VM of that shape (the app's last, remembered in
#   state/jobs/<app>/.shape.json) and runs in it; a .shape.json that is not
#   a valid shape within the limits only means the defaults again.
# - A job that fails before its build (an invalid buildvm.json): its early
#   VM is killed and its disks are gone.
# - SIGKILL of `buildvm run` while its checkout hangs on a silent git
#   server: the early VM's VMM dies with it (its parent-death signal).
# - `vm.early_boot: false`: no early VM, a cold boot.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config
VMM_NAME_PREFIX=buildvm-early-

step='if [ -e /tmp/early-marker ]; then echo "MARKER FOUND"; exit 1; fi
echo "job-input: $(cat job.txt)"
echo "boot-id: $(cat /proc/sys/kernel/random/boot_id)"
echo written >/tmp/early-marker'
app=$T/app
mkdir -p "$app"
jq -n --arg step "$step" '{profile: "minimal", steps: [$step], image: {from: "."}}' >"$app/buildvm.json"

commit () { # TEXT: job.txt says TEXT, committed; prints the commit
    echo "$1" >"$app/job.txt"
    pl_commit "$app" "$1"
}

# --- two jobs of the default shape, each in its own early VM
for i in 1 2; do
    c=$(commit "input-of-job-$i")
    pl_job "$T/j$i.json" "early-$i" early "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" "$T/j$i.json"
    assert_eq 0 "$RC" "job $i's exit status ($(tail -n 5 "$T/out"))"
    rec=$(pl_record "early-$i")
    assert_eq true "$(jq -r .build.early_vm.used "$rec")" "job $i ran in its early VM"
    # the app's first job boots the defaults; its second the app's last
    # shape (here the same)
    want=defaults
    [ "$i" = 1 ] || want="last job"
    assert_eq "$want" "$(jq -r .build.early_vm.shape "$rec")" "job $i's early VM's shape"
    "$BUILDVM" logs "early-$i" >"$T/log$i" 2>&1
    assert_contains "$T/log$i" "job-input: input-of-job-$i"
    assert_not_contains "$T/log$i" "MARKER FOUND"
    grep -o 'boot-id: .*' "$T/log$i" >"$T/boot$i"
    [ -s "$T/boot$i" ] || fail "job $i printed no boot id"
    assert_no_leftovers
done
[ "$(cat "$T/boot1")" != "$(cat "$T/boot2")" ] || fail "both jobs ran in one VM: $(cat "$T/boot1")"
note "two jobs, two early VMs: $(jq -c '.build.early_vm' "$(pl_record early-2)")"

# --- a job of another shape: the early VM is freed, the build boots cold
jq '.resources = {memory_mib: 384}' "$app/buildvm.json" >"$T/spec" && mv "$T/spec" "$app/buildvm.json"
c=$(commit "input-of-job-3")
pl_job "$T/j3.json" early-3 early "$app" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j3.json"
assert_eq 0 "$RC" "the other shape's job ($(tail -n 5 "$T/out"))"
rec=$(pl_record early-3)
assert_eq false "$(jq -r .build.early_vm.used "$rec")" "the other shape's job used the early VM"
jq -r .build.early_vm.why "$rec" | grep -q "shape" \
    || fail "the record does not say why: $(jq -c .build.early_vm "$rec")"
[ "$(jq -r .build.boot_ms "$rec")" -gt 0 ] || fail "no cold boot recorded: $(jq -c .build "$rec")"
"$BUILDVM" logs early-3 >"$T/log3" 2>&1
assert_contains "$T/log3" "job-input: input-of-job-3"
assert_no_leftovers

# --- the app's next job: its early VM has the app's last shape, and fits
shape=$BUILDVM_HOME/state/jobs/early/.shape.json
jq -e '.profile == "minimal" and .memory_mib == 384' "$shape" >/dev/null \
    || fail "the app's shape is not remembered: $(cat "$shape" 2>&1)"
c=$(commit "input-of-job-3b")
pl_job "$T/j3b.json" early-3b early "$app" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j3b.json"
assert_eq 0 "$RC" "the second job of the other shape ($(tail -n 5 "$T/out"))"
rec=$(pl_record early-3b)
jq -e '.build.early_vm.used == true and .build.early_vm.shape == "last job"' "$rec" >/dev/null \
    || fail "the app's next job did not run in an early VM of its last shape: $(jq -c .build.early_vm "$rec")"
"$BUILDVM" logs early-3b >"$T/log3b" 2>&1
assert_contains "$T/log3b" "job-input: input-of-job-3b"
assert_no_leftovers

# --- a .shape.json that is no valid shape: the defaults (and a warning)
n=0
for bad in '{"profile": "../../etc/x", "vcpus": 1, "memory_mib": 384, "disk_mib": 1024}' \
           '{"profile": "minimal", "vcpus": 1, "memory_mib": 99999999, "disk_mib": 1024}' \
           '{"profile": "minimal"' "$(head -c 4096 /dev/zero | tr '\0' ' ')"; do
    printf '%s' "$bad" >"$shape"
    n=$((n + 1))
    c=$(commit "input-of-job-bad-$n")
    pl_job "$T/jbad.json" "early-bad-$n" early "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" "$T/jbad.json"
    assert_eq 0 "$RC" "a job after a bad .shape.json ($(tail -n 5 "$T/out"))"
    rec=$(pl_record "$(jq -r .id "$T/jbad.json")")
    assert_eq defaults "$(jq -r .build.early_vm.shape "$rec")" "the early VM's shape after [$bad]"
    assert_contains "$T/err" "event=early_vm.shape.ignored"
    assert_no_leftovers
done

# --- a job that fails before its build: its early VM goes with it
echo '{"profile": "minimal", "steps": [' >"$app/buildvm.json"
c=$(commit "input-of-job-4")
pl_job "$T/j4.json" early-4 early "$app" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j4.json"
[ "$RC" != 0 ] || fail "an invalid buildvm.json built"
rec=$(pl_record early-4)
assert_eq null "$(jq -r .build "$rec")" "a build record for a job that failed in its checkout"
assert_no_leftovers

# --- SIGKILL while the checkout hangs: the early VM's VMM dies with the runner
python3 "$ROOT/tests/lib/silent-server.py" --port-file "$T/silent.port" &
for _ in $(seq 50); do [ -s "$T/silent.port" ] && break; sleep 0.1; done
[ -s "$T/silent.port" ] || fail "the silent server did not start"
pl_job "$T/j5.json" early-5 early "http://127.0.0.1:$(cat "$T/silent.port")/app.git" "$c"
"$BUILDVM" run --config "$CONFIG" "$T/j5.json" >"$T/out5" 2>&1 &
runner=$!
vmm=
for _ in $(seq 100); do
    vmm=$(vmms_of_ours "$VMM_NAME_PREFIX" | head -1)
    [ -n "$vmm" ] && break
    sleep 0.1
done
[ -n "$vmm" ] || { cat "$T/out5"; fail "no early VM while the checkout hangs"; }
kill -KILL "$runner"
wait "$runner" 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$vmm" 2>/dev/null || break; sleep 0.1; done
kill -0 "$vmm" 2>/dev/null && fail "the early VM's VMM $vmm outlived the killed runner"
note "SIGKILL during the checkout: VMM $vmm gone with the runner"
# its work directory is the next start's to reap (serve and vm run do), as
# for every job of a killed runner
rm -rf "$WORK"

# --- vm.early_boot off: a cold boot, no early VM
pl_config '.vm.early_boot = false'
jq -n --arg step "$step" '{profile: "minimal", steps: [$step], image: {from: "."}}' >"$app/buildvm.json"
c=$(commit "input-of-job-6")
pl_job "$T/j6.json" early-6 early "$app" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j6.json"
assert_eq 0 "$RC" "the job with early_boot off"
rec=$(pl_record early-6)
assert_eq null "$(jq -r .build.early_vm "$rec")" "an early VM with early_boot off"
[ "$(jq -r .build.boot_ms "$rec")" -gt 0 ] || fail "no cold boot recorded: $(jq -c .build "$rec")"
assert_no_leftovers
