#!/bin/sh
# Build the guest kernel: Debian's linux-source-6.1, `make tinyconfig`, plus
# kernel/buildvm.config. The result is cached under OUTDIR/kernel/KEY/ where KEY
# is the sha256 of the fragment together with the source package version, so
# the kernel is rebuilt only when one of them changes.
#
# usage: build-kernel.sh OUTDIR      prints the path of the cached vmlinux
set -eu

here=$(cd "$(dirname "$0")" && pwd)
frag=$here/kernel/buildvm.config
src_tar=${LINUX_SOURCE_TAR:-/usr/src/linux-source-6.1.tar.xz}
out=${1:?usage: build-kernel.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
jobs=${JOBS:-$(nproc)}

if [ ! -r "$src_tar" ]; then
    echo "build-kernel: $src_tar not found (install the linux-source-6.1 package: make deps)" >&2
    exit 1
fi

src_ver=$(dpkg-query -W -f '${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$src_tar")
frag_sha=$(sha256sum "$frag" | cut -d' ' -f1)
key=$(printf '%s\n%s\n' "$frag_sha" "$src_ver" | sha256sum | cut -c1-16)
dir=$out/kernel/$key

if [ -s "$dir/vmlinux" ]; then
    echo "$dir/vmlinux"
    exit 0
fi

# one build at a time (make -j builds two profiles' images at once): the
# second waits here and then finds the first one's kernel
mkdir -p "$out/kernel"
exec 9>"$out/kernel/.lock"
flock 9
if [ -s "$dir/vmlinux" ]; then
    echo "$dir/vmlinux"
    exit 0
fi
src=$out/kernel/linux-source-6.1
if [ ! -f "$src/.buildvm-extracted" ]; then
    rm -rf "$src"
    echo "build-kernel: extracting $src_tar" >&2
    tar -C "$out/kernel" -xf "$src_tar"
    touch "$src/.buildvm-extracted"
fi

obj=$dir/obj
rm -rf "$obj"
mkdir -p "$obj"
log=$dir/build.log
echo "build-kernel: building $key (log: $log)" >&2
{
    make -C "$src" O="$obj" ARCH=x86_64 tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$frag"
    make -C "$src" O="$obj" ARCH=x86_64 olddefconfig
} >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }

# Every option the fragment asks for must have survived olddefconfig: a typo or
# an unmet dependency would otherwise silently produce a different kernel.
bad=0
while IFS= read -r line; do
    case $line in
        "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}
            if grep -q "^$opt=" "$obj/.config"; then
                echo "build-kernel: $opt should be off but is $(grep "^$opt=" "$obj/.config")" >&2; bad=1
            fi ;;
        CONFIG_*=*)
            if ! grep -qx "$line" "$obj/.config"; then
                echo "build-kernel: $line requested but not set (got: $(grep "^${line%%=*}=" "$obj/.config" || echo unset))" >&2; bad=1
            fi ;;
    esac
done <"$frag"
[ $bad -eq 0 ] || exit 1

make -C "$src" O="$obj" ARCH=x86_64 -j"$jobs" vmlinux >>"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
cp "$obj/vmlinux" "$dir/vmlinux.tmp"
cp "$obj/.config" "$dir/config"
echo "$frag_sha" >"$dir/fragment.sha256"
mv "$dir/vmlinux.tmp" "$dir/vmlinux"
rm -rf "$obj"
echo "$dir/vmlinux"
