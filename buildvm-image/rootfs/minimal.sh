#!/bin/bash
# rootfs/minimal.sh STAGING AGENT PKGLIST: busybox (Debian's busybox-static)
# plus the agent. Builds in about a second; the tests use it.
set -euo pipefail
root=$1 agent=$2 pkglist=$3
. "$(dirname "$0")/common.sh"

bb=/bin/busybox
if [ ! -x "$bb" ] || ! { ldd "$bb" 2>&1 || true; } | grep -q "not a dynamic executable"; then
    echo "minimal: $bb is not busybox-static (make deps)" >&2
    exit 1
fi
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin}
install -m 0755 "$bb" "$root/bin/busybox"
# one symlink per applet, at the path busybox itself reports
"$bb" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
rootfs_base "$root" "$agent"
dpkg-query -W -f '${Package} ${Version}\n' busybox-static >"$pkglist"
