#!/bin/bash
# build-image.sh OUTDIR PROFILE AGENT
#
# Make the build VM image for PROFILE (minimal | debian) under OUTDIR:
#   OUTDIR/kernel/<key>/vmlinux            the guest kernel (build-kernel.sh)
#   OUTDIR/rootfs/<profile>-<key>.ext4     the read-only root file system
#   OUTDIR/<profile>.json                  the image manifest the runner reads
#
# The rootfs is made without mounting anything (mkfs.ext4 -d) and is cached
# under a key over the recipe, the agent binary and the host packages it copies
# from, so `make images` is a no-op when nothing changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-image.sh OUTDIR PROFILE AGENT}
profile=${2:?profile}
agent=${3:?agent binary}
recipe=$here/rootfs/$profile.sh
[ -x "$recipe" ] || { echo "build-image: unknown profile \`$profile\` (have: $(cd "$here/rootfs" && ls *.sh | grep -v common | sed 's/\.sh$//' | tr '\n' ' '))" >&2; exit 1; }
mkdir -p "$out/rootfs"
out=$(cd "$out" && pwd)

case $profile in
    minimal) hostpkgs=$(dpkg-query -W -f '${Package}=${Version}\n' busybox-static e2fsprogs) ;;
    *) hostpkgs=$(dpkg-query -W -f '${Package}=${Version}\n' debootstrap e2fsprogs) ;;
esac
key=$( { sha256sum "$recipe" "$here/rootfs/common.sh" "$agent" | cut -d' ' -f1; echo "$hostpkgs"; } | sha256sum | cut -c1-16)
img=$out/rootfs/$profile-$key.ext4
pkglist=$out/rootfs/$profile-$key.packages

if [ ! -s "$img" ]; then
    staging=$out/rootfs/$profile-$key.d
    rm -rf "$staging"
    mkdir -p "$staging"
    echo "build-image: building the $profile rootfs ($key)" >&2
    "$recipe" "$staging" "$agent" "$pkglist.tmp"
    # reproducible: every timestamp is the epoch, the UUID and hash seed are
    # derived from the key, and mkfs is told what time it is
    find "$staging" -exec touch -h -d @0 {} +
    kib=$(du -sk --apparent-size "$staging" | cut -f1)
    inodes=$(find "$staging" | wc -l)
    size_kib=$(( (kib * 5 / 4) + inodes * 4 + 16384 ))
    uuid=$(echo "$key" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
    rm -f "$img.tmp"
    E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L "buildvm-$profile" -U "$uuid" \
        -E "hash_seed=$uuid,root_owner=0:0" -O ^has_journal -m 0 -b 4096 \
        -N $(( inodes + 1024 )) -d "$staging" "$img.tmp" "${size_kib}k"
    # mkfs -d copies each file's ctime and atime, which are when the staging
    # tree was made and read (no tool sets a ctime, and reading a directory
    # moves its atime): set both to the epoch, as mtime is
    find "$staging" -mindepth 1 -printf '%P\n' | sed 's/["\\]/\\&/g' |
        awk '{ printf "sif \"/%s\" ctime @1\nsif \"/%s\" atime @0\n", $0, $0 }' |
        E2FSPROGS_FAKE_TIME=1 debugfs -w -f - "$img.tmp" 2>&1 >/dev/null |
        { grep -v '^debugfs ' || true; } | head -5 | sed 's/^/build-image: debugfs: /' >&2
    mv "$pkglist.tmp" "$pkglist"
    mv "$img.tmp" "$img"
    rm -rf "$staging"
    # older builds of this profile are of no use any more: the manifest below
    # names the new one (a runner mid-job keeps its open file)
    for old in "$out/rootfs/$profile"-*; do
        case $old in "$img"|"$pkglist") ;; *) rm -rf "$old" ;; esac
    done
fi

# the kernel after the rootfs: `make -j` builds both profiles' rootfs while
# one of them builds the kernel (build-kernel.sh holds a lock)
kernel=$("$here/build-kernel.sh" "$out")
kdir=$(dirname "$kernel")

sha() { sha256sum "$1" | cut -d' ' -f1; }
kernel_sha=$(sha "$kernel")
rootfs_sha=$(sha "$img")
agent_sha=$(sha "$agent")
frag_sha=$(cat "$kdir/fragment.sha256")
{
    printf '{\n'
    printf '  "schema": 1,\n'
    printf '  "profile": "%s",\n' "$profile"
    printf '  "kernel": {\n'
    printf '    "path": "%s",\n' "${kernel#$out/}"
    printf '    "sha256": "sha256:%s",\n' "$kernel_sha"
    printf '    "config_fragment_sha256": "sha256:%s",\n' "$frag_sha"
    printf '    "cmdline": "console=ttyS0 quiet panic=-1 reboot=t root=/dev/vda ro rootfstype=ext4 init=/buildvm/agent"\n'
    printf '  },\n'
    printf '  "rootfs": {\n'
    printf '    "path": "%s",\n' "${img#$out/}"
    printf '    "sha256": "sha256:%s",\n' "$rootfs_sha"
    printf '    "format": "ext4",\n'
    printf '    "size": %s\n' "$(stat -c %s "$img")"
    printf '  },\n'
    printf '  "agent_sha256": "sha256:%s",\n' "$agent_sha"
    printf '  "packages": [\n'
    awk 'BEGIN{first=1} { if (!first) printf ",\n"; first=0; printf "    {\"name\": \"%s\", \"version\": \"%s\"}", $1, $2 } END { printf "\n" }' "$pkglist"
    printf '  ]\n'
    printf '}\n'
} >"$out/$profile.json.tmp"
mv "$out/$profile.json.tmp" "$out/$profile.json"
echo "$out/$profile.json"
