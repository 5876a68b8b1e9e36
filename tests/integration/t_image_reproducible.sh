#!/bin/bash
# The build VM's rootfs is reproducible: the minimal profile built twice, in
# two directories at different times, from the same recipe and agent, gives
# the same file system image byte for byte (ctime and atime included, which
# mkfs.ext4 -d copies from the staging tree). The kernel is the cached one.
. "$(dirname "$0")/lib.sh"

agent=$ROOT/build/buildvm-agent
[ -x "$agent" ] || fail "$agent is missing: make all"
[ -d "$BUILDVM_IMAGES/kernel" ] || fail "no cached kernel in $BUILDVM_IMAGES: make images"
for d in a b; do
    mkdir -p "$T/$d"
    ln -s "$BUILDVM_IMAGES/kernel" "$T/$d/kernel"
    "$ROOT/buildvm-image/build-image.sh" "$T/$d" minimal "$agent" >"$T/$d.out" 2>"$T/$d.err" \
        || { cat "$T/$d.err"; fail "build $d failed"; }
    # the second build a second later: a copied clock would show
    sleep 1.1
done
a=$(jq -r .rootfs.sha256 "$T/a/minimal.json")
b=$(jq -r .rootfs.sha256 "$T/b/minimal.json")
note "rootfs digests: $a $b"
[ -n "$a" ] && [ "$a" != null ] || fail "no rootfs digest in the manifest"
assert_eq "$a" "$b" "rootfs digest of a second build"
assert_eq "$a" "sha256:$(sha256sum "$T/a/rootfs/"*.ext4 | cut -d' ' -f1)" "manifest digest of the image file"
# and the image is sound: fsck finds nothing to fix
e2fsck -fn "$T/a/rootfs/"*.ext4 >"$T/fsck" 2>&1 || { cat "$T/fsck"; fail "e2fsck found problems"; }
echo "ok"
