#!/bin/bash
# bench/vm: the round trip of `buildvm vm run -- true` against a bare QEMU
# that boots the same kernel and rootfs and reboots at once, measured in the
# same run. Target: the runner adds under 15%.
. "$(dirname "$0")/lib.sh"

manifest=$BUILDVM_IMAGES/minimal.json
kernel=$BUILDVM_IMAGES/$(jq -r .kernel.path "$manifest")
rootfs=$BUILDVM_IMAGES/$(jq -r .rootfs.path "$manifest")
accel=tcg
if [ "$("$BUILDVM" doctor --accel 2>/dev/null || echo tcg)" = kvm ]; then accel=kvm; fi

# The bare VM: same machine, kernel, rootfs and memory, and no job: the
# agent starts as PID 1, mounts /proc, /sys and /dev, finds no job disks and
# reboots at once - the guest's shortest round trip.
bare () {
    qemu-system-x86_64 -M microvm,acpi=off -accel "$accel" -cpu max -smp 1 -m 512M \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$kernel" -append "console=ttyS0 quiet panic=-1 reboot=t root=/dev/vda ro rootfstype=ext4 init=/buildvm/agent" \
        -serial stdio \
        -drive "id=rootfs,file=$rootfs,format=raw,if=none,readonly=on" \
        -device virtio-blk-device,drive=rootfs,serial=rootfs </dev/null
}

echo "bench/vm ($RUNS runs each, accel $accel)"
median_ms "bare qemu boot + reboot" bare
bare_ms=$MEDIAN
median_ms "buildvm vm run -- true" "$BUILDVM" vm run --accel "$accel" -- true
run_ms=$MEDIAN
r=$(ratio "$run_ms" "$bare_ms")
verdict "$r" 1.15 "ratio vm run / bare"
