#!/bin/bash
# base-image.sh REGISTRY [USER:PASS]: push base/busybox:1.35, a tiny base image
# made from Debian's busybox-static with umoci, to REGISTRY (host:port, plain
# http) unless it is there already. The examples build on it: the app layer
# goes on top, shared with the base by a cross-repository blob mount.
set -euo pipefail
reg=${1:?usage: base-image.sh HOST:PORT [USER:PASS]}
creds=${2:-}
ref=docker://$reg/base/busybox:1.35
cred_args=(--dest-tls-verify=false)
[ -z "$creds" ] || cred_args+=(--dest-creds "$creds")
if skopeo inspect --tls-verify=false ${creds:+--creds "$creds"} "$ref" >/dev/null 2>&1; then
    echo "base image $reg/base/busybox:1.35 is there"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umoci init --layout "$tmp/oci"
umoci new --image "$tmp/oci:1.35"
umoci unpack --image "$tmp/oci:1.35" "$tmp/bundle" >/dev/null
root=$tmp/bundle/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,tmp,etc}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
/bin/busybox --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$root/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "app:x:1000:1000:app:/app:/bin/sh" >>"$root/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$root/etc/group"
umoci repack --image "$tmp/oci:1.35" "$tmp/bundle" >/dev/null
umoci config --image "$tmp/oci:1.35" --config.cmd /bin/sh --os linux --architecture amd64 \
    --config.label org.opencontainers.image.title=busybox
skopeo copy -q "${cred_args[@]}" "oci:$tmp/oci:1.35" "$ref"
echo "pushed base image $reg/base/busybox:1.35"
