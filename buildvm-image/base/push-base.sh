#!/bin/bash
# push-base.sh REGISTRY [USER:PASS] [IMAGE...]: build (cached, build-base.sh)
# and push runtime base images to REGISTRY (host:port, plain http), each
# unless the registry has it with the same digest. IMAGE is a recipe name
# (node-18) or the reference it makes (base/node:18); default: every recipe.
# base/busybox:1.35 (examples/base-image.sh, from the host's busybox-static)
# is accepted too, so callers push what a spec's `image.base` names.
#
# The layout directory is $BUILDVM_BASE_IMAGES, else $BUILDVM_IMAGES/base,
# else build/images/base of this tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reg=${1:?usage: push-base.sh HOST:PORT [USER:PASS] [IMAGE...]}
shift
creds=
if [ $# -gt 0 ] && [[ $1 == *:* ]] && [[ $1 != base/* ]]; then creds=$1; shift; fi
out=${BUILDVM_BASE_IMAGES:-${BUILDVM_IMAGES:-$root/build/images}/base}

names=()
for want in "$@"; do
    case $want in
        base/busybox:*) "$root/examples/base-image.sh" "$reg" $creds; continue ;;
        base/*) n=$(grep -l "^# image: $want\$" "$here"/*.list | head -1) \
                    || { echo "push-base: no recipe makes \`$want\`" >&2; exit 1; }
                names+=("$(basename "$n" .list)") ;;
        *) names+=("$want") ;;
    esac
done
[ $# -eq 0 ] && names=($(cd "$here" && ls *.list | sed 's/\.list$//'))
[ ${#names[@]} -gt 0 ] || exit 0

src_creds=(--tls-verify=false)
dst=(--dest-tls-verify=false)
if [ -n "$creds" ]; then src_creds+=(--creds "$creds"); dst+=(--dest-creds "$creds"); fi
"$here/build-base.sh" "$out" "${names[@]}" | while read -r name ref digest layout; do
    tag=${ref##*:}
    have=$(skopeo inspect "${src_creds[@]}" --raw "docker://$reg/$ref" 2>/dev/null | sha256sum | cut -d' ' -f1 || true)
    if [ "sha256:$have" = "$digest" ]; then
        echo "base image $reg/$ref is there ($digest)"
        continue
    fi
    # --preserve-digests: the registry holds the very manifest built here,
    # so its digest is the one build-base.sh printed
    skopeo copy -q --preserve-digests "${dst[@]}" "oci:$layout:$tag" "docker://$reg/$ref"
    echo "pushed base image $reg/$ref ($digest)"
done
