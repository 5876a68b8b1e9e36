#!/bin/bash
# rootfs/debian.sh STAGING AGENT PKGLIST: a Debian 12 minbase with a build
# toolchain, made with debootstrap from the machine's configured mirror.
#
# The mirror is never written into the project: it is $BUILDVM_DEBIAN_MIRROR,
# else the first `URIs:` of /etc/apt/sources.list.d/*.sources (deb822), else
# the first `deb` line of /etc/apt/sources.list.
set -euo pipefail
root=$1 agent=$2 pkglist=$3
. "$(dirname "$0")/common.sh"

PACKAGES=build-essential,git,python3,python3-pip,python3-venv,nodejs,npm,ca-certificates,make,pkg-config,xz-utils,zstd,file,less
# toolchains (issue 18): Go, Rust, the autotools and cmake, and the -dev
# libraries builds link against most often
PACKAGES+=,golang,rustc,cargo,autoconf,automake,libtool,cmake,python3-dev,default-jdk-headless
PACKAGES+=,zlib1g-dev,libssl-dev,libpq-dev,libcurl4-openssl-dev,libffi-dev,libsqlite3-dev
# the Dockerfile builder (issue 17): buildah runs as root in the guest with
# chroot isolation and the kernel's overlayfs, so no OCI runtime and no
# fuse-overlayfs (its recommends) are installed
PACKAGES+=,buildah

mirror=${BUILDVM_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # the entry whose Suites include plain bookworm (not -security)
        mirror=$(awk '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i=="bookworm") s=1} /^$/{if(s&&u){print u; exit} u="";s=0} END{if(s&&u) print u}' "$f" | head -1)
        [ -n "$mirror" ] && break
    done
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
    echo "debian: no Debian mirror configured: set BUILDVM_DEBIAN_MIRROR" >&2
    exit 1
fi
echo "debian: debootstrap bookworm from $mirror" >&2
# debootstrap's own resolver fails on large package sets (npm pulls in
# hundreds of node-* packages), so it makes the minbase and apt, inside the
# new tree, installs the toolchain with its real resolver.
debootstrap --variant=minbase bookworm "$root" "$mirror" >&2
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
# dpkg need not fsync every file of a tree that becomes an image file, and
# no build reads documentation, manual pages or translations (the copyright
# files stay): both only while apt runs here, not in the image
printf '%s\n' force-unsafe-io 'path-exclude=/usr/share/doc/*' \
    'path-include=/usr/share/doc/*/copyright' 'path-exclude=/usr/share/man/*' \
    'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
    >"$root/etc/dpkg/dpkg.cfg.d/buildvm"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
# the JDK's post-installation runs java, which needs /proc: mounted for apt
# only, and unmounted whatever happens
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" apt-get -q -o Acquire::Retries=3 update >&2
chroot "$root" apt-get -q -o Acquire::Retries=3 install -y --no-install-recommends $(echo "$PACKAGES" | tr , ' ') >&2
chroot "$root" apt-get clean
umount "$root/proc"
trap - EXIT
rm "$root/etc/dpkg/dpkg.cfg.d/buildvm"
# Python's byte code: a .pyc records its source's mtime, which build-image.sh
# sets to the epoch, so every .pyc would be stale and every import compiled
# again in memory (the rootfs is read-only: pip took seconds to start under
# TCG). The image never changes: byte code that is not checked against its
# source (PEP 552), made again here for every module apt installed.
chroot "$root" sh -c 'python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
    /usr/lib/python3 /usr/lib/python3.*' >&2
# nothing of the build machine's apt state, caches or logs belongs in the image
: >"$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*
# the mount points of the tmpfs the agent gives buildah for what it keeps
# outside its storage (the short-name alias cache's lock, without which no
# `FROM node:18` resolves; the blob info cache): the rootfs is read-only
mkdir -p "$root/var/cache/containers" "$root/var/lib/containers"
rootfs_base "$root" "$agent"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package} ${Version}\n' >"$pkglist"
