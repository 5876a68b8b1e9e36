#!/bin/bash
# Bad kernel or rootfs paths, a kernel QEMU cannot boot, a missing QEMU: a
# clear error, exit status 125, nothing left behind.
. "$(dirname "$0")/lib.sh"

img=$T/images
mkdir -p "$img"

# no image at all: the message says how to build one
run "$BUILDVM" vm run --images "$img" -- true
assert_eq 125 "$RC" "missing image"
assert_contains "$T/err" "make images"
assert_no_leftovers

# a manifest whose kernel does not exist
sed 's|"path": "kernel/[^"]*"|"path": "kernel/nope/vmlinux"|' "$BUILDVM_IMAGES/minimal.json" >"$img/minimal.json"
ln -s "$BUILDVM_IMAGES/rootfs" "$img/rootfs"
run "$BUILDVM" vm run --images "$img" -- true
assert_eq 125 "$RC" "missing kernel"
assert_contains "$T/err" "kernel"
assert_contains "$T/err" "No such file or directory"
assert_no_leftovers

# a manifest whose rootfs does not exist
rm -f "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
sed 's|"path": "rootfs/[^"]*"|"path": "rootfs/nope.ext4"|' "$BUILDVM_IMAGES/minimal.json" >"$img/minimal.json"
run "$BUILDVM" vm run --images "$img" -- true
assert_eq 125 "$RC" "missing rootfs"
assert_contains "$T/err" "rootfs"
assert_no_leftovers

# a kernel QEMU cannot load: QEMU's own message reaches the user
rm -f "$img/kernel"
mkdir -p "$img/kernel/bad"
head -c 4096 /dev/urandom >"$img/kernel/bad/vmlinux"
# byte 0x1f1 is the x86 boot protocol's setup_sects: a small value would make
# QEMU try to boot the noise, so make it unmistakably not a kernel
printf '\xff' | dd of="$img/kernel/bad/vmlinux" bs=1 seek=$((0x1f1)) conv=notrunc 2>/dev/null
sed 's|"path": "kernel/[^"]*"|"path": "kernel/bad/vmlinux"|' "$BUILDVM_IMAGES/minimal.json" >"$img/minimal.json"
rm -f "$img/rootfs"; ln -s "$BUILDVM_IMAGES/rootfs" "$img/rootfs"
run "$BUILDVM" vm run --images "$img" -- true
assert_eq 125 "$RC" "garbage kernel"
assert_contains "$T/err" "without a result"
assert_no_leftovers

# a rootfs that is not a file system: the kernel cannot mount root and panics;
# panic=-1 reboots at once, so this ends quickly
printf 'not a file system' | dd of="$T/junk.ext4" bs=1M seek=1 conv=notrunc 2>/dev/null
rm -rf "$img"/*; mkdir -p "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
cp "$T/junk.ext4" "$img/rootfs/junk.ext4"
size=$(stat -c %s "$img/rootfs/junk.ext4")
sed -e 's|"path": "rootfs/[^"]*"|"path": "rootfs/junk.ext4"|' -e "s|\"size\": [0-9]*|\"size\": $size|" \
    "$BUILDVM_IMAGES/minimal.json" >"$img/minimal.json"
start=$(date +%s)
run "$BUILDVM" vm run --images "$img" -- true
assert_eq 125 "$RC" "junk rootfs"
[ $(( $(date +%s) - start )) -lt 30 ] || fail "a panicking guest took too long"
assert_no_leftovers

# no QEMU
run "$BUILDVM" vm run --qemu /nonexistent/qemu-system-x86_64 -- true
assert_eq 125 "$RC" "missing QEMU"
assert_contains "$T/err" "QEMU"
assert_contains "$T/err" "/nonexistent/qemu-system-x86_64"
assert_no_leftovers

# an unknown profile name, and a hostile one
run "$BUILDVM" vm run --rootfs nope -- true
assert_eq 125 "$RC" "unknown profile"
assert_contains "$T/err" 'no build VM image `nope` on this host: it has'
run "$BUILDVM" vm run --rootfs ../../etc/passwd -- true
assert_eq 125 "$RC" "hostile profile"
assert_contains "$T/err" "not a valid image profile"
assert_no_leftovers
