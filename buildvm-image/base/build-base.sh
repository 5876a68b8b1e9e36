#!/bin/bash
# build-base.sh [-f] OUTDIR NAME...: make the runtime base image NAME (a
# recipe buildvm-image/base/NAME.list, e.g. node-18) as an OCI image layout
#   OUTDIR/NAME-<key>/      oci-layout, index.json (tag = the image's tag), blobs/
#   OUTDIR/NAME -> NAME-<key>
# and print "NAME REF DIGEST LAYOUT" per image (REF as in `# image:`).
#
# The image is one layer made from Debian packages: apt, with the machine's
# own configuration (its mirror, its package lists), resolves the recipe's
# packages with an empty dpkg status; the .debs are fetched with
# `apt-get download` (checked against the signed index) into OUTDIR/debs/ and
# unpacked with dpkg-deb - no maintainer script runs, nothing is chrooted
# into, nothing is mounted. What those scripts would have done that a program
# needs at run time is done here: the CA bundle, the loader cache, the users;
# and the alternatives a recipe names (`# links: /usr/bin/cc=gcc`: what
# update-alternatives would have linked, since no postinst runs).
#
# Reproducible: the layer is a tar with sorted names, one mtime
# ($SOURCE_DATE_EPOCH, by default the newest file of the packages), owner 0,
# no atime/ctime, gzip -n; the config and manifest are canonical JSON. The
# key is the sha256 of the recipe, this script, the resolved name=version list
# and the host tools that shape the bytes, so an unchanged recipe with
# unchanged package versions is not rebuilt, and a rebuild gives the same
# digests. -f rebuilds even when the key's layout exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
force=0
if [ "${1:-}" = -f ]; then force=1; shift; fi
out=${1:?usage: build-base.sh [-f] OUTDIR NAME...}
shift
[ $# -gt 0 ] || set -- $(cd "$here" && ls *.list | sed 's/\.list$//')
mkdir -p "$out"
out=$(cd "$out" && pwd)
debs=${BUILDVM_BASE_DEBS:-$out/debs}
mkdir -p "$debs"
# one build at a time per output directory; nothing half-made left behind
exec 9>"$out/.lock"
flock 9
trap 'rm -rf "$out"/.tmp-*.$$.*' EXIT
export LC_ALL=C

die () { echo "build-base: $*" >&2; exit 1; }

# recipe_lines NAME: the package lines of NAME.list and of what it includes
recipe_lines () {
    local f=$here/$1.list line
    [ -f "$f" ] || die "no recipe \`$1\` (have: $(cd "$here" && ls *.list | sed 's/\.list$//' | tr '\n' ' '))"
    while read -r line; do
        line=${line%%#*}
        line=${line//[[:space:]]/}
        case $line in
            '') ;;
            @include*) recipe_lines "${line#@include}" ;;
            *) echo "$line" ;;
        esac
    done <"$f"
}
# header NAME FIELD: the `# FIELD: value` line of the recipe itself
header () { sed -n "s/^# $2: *//p" "$here/$1.list" | head -1; }

# resolve NAME: "package version arch" per line, sorted, for the recipe's
# packages and their dependencies, without the excluded ones
resolve () {
    local name=$1 tmp=$2 want=() p
    : >"$tmp/status"
    recipe_lines "$name" >"$tmp/lines"
    for p in $(cat "$tmp/lines"); do
        case $p in
            !*) # taken as installed: its candidate's stanza in the status file
                apt-cache show --no-all-versions "${p#!}" >"$tmp/stanza" 2>/dev/null \
                    || die "$name: no package \`${p#!}\` in the apt lists (apt-get update?)"
                awk '/^Package:/ {print; print "Status: install ok installed"; next} /^$/ {exit} /^(Version|Architecture|Provides|Multi-Arch):/ {print}' \
                    "$tmp/stanza" >>"$tmp/status"
                echo >>"$tmp/status" ;;
            *) want+=("$p") ;;
        esac
    done
    apt-get -s -q -o Dir::State::status="$tmp/status" -o APT::Install-Recommends=false \
        -o APT::Install-Suggests=false -o Debug::NoLocking=true install "${want[@]}" >"$tmp/sim" 2>&1 \
        || { cat "$tmp/sim" >&2; die "$name: apt cannot resolve the packages (apt-get update?)"; }
    sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*\[\([a-z0-9]*\)\]).*$/\1 \2 \3/p' "$tmp/sim" | sort
}

# fetch PKGLIST: every .deb of the list in $debs, checked against the sha256
# of the signed index (cached ones too)
fetch () {
    local list=$1 name version arch file hash specs=() missing=()
    while read -r name version arch; do specs+=("$name=$version"); done <"$list"
    apt-get download --print-uris "${specs[@]}" 2>/dev/null | awk '{print $2, $4}' >"$list.uris"
    [ "$(wc -l <"$list.uris")" = "${#specs[@]}" ] || die "apt has no download for some of: ${specs[*]}"
    while read -r file hash; do
        echo "${hash#SHA256:}  $debs/$file" | sha256sum -c --status 2>/dev/null \
            || missing+=("$(echo "${file%_*}" | sed 's/_/=/; s/%3a/:/')")
    done <"$list.uris"
    if [ ${#missing[@]} -gt 0 ]; then
        echo "build-base: downloading ${#missing[@]} package(s)" >&2
        (cd "$debs" && apt-get download -q -o Acquire::Retries=3 -o APT::Sandbox::User=root "${missing[@]}" >/dev/null) || die "downloading packages failed"
    fi
    while read -r file hash; do
        echo "${hash#SHA256:}  $debs/$file" | sha256sum -c --status || die "$file does not match the index's sha256"
    done <"$list.uris"
}

# debfile NAME VERSION ARCH: the cached .deb's path (epoch colon as %3a)
debfile () { echo "$debs/$1_${2//:/%3a}_$3.deb"; }

# unpack ROOT PKGLIST: the root file system from the packages
unpack () {
    local root=$1 list=$2 name version arch f
    mkdir -p "$root"/usr/{bin,sbin,lib,lib64}
    # Debian 12 is merged-/usr: packages still ship /lib and /bin paths
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
    mkdir -p "$root/var/lib/dpkg"
    while read -r name version arch; do
        f=$(debfile "$name" "$version" "$arch")
        dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink --no-same-owner -C "$root"
        # a status file, so that tools that list an image's packages find them
        { dpkg-deb -f "$f" | awk '/^Package:/ {print; print "Status: install ok installed"; next} {print}'
          echo; } >>"$root/var/lib/dpkg/status"
    done <"$list"
}

# finish ROOT: what the maintainer scripts would have done, and no more
finish () {
    local root=$1 crt rel
    # users: root, nobody, and `app` (uid 1000) for images that run unprivileged
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\napp:x:1000:1000:app:/app:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n' >"$root/etc/group"
    [ -f "$root/usr/share/base-files/nsswitch.conf" ] && cp "$root/usr/share/base-files/nsswitch.conf" "$root/etc/nsswitch.conf"
    mkdir -p "$root"/{tmp,var/tmp,root,run,home,proc,sys,dev,app}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"
    # update-ca-certificates: every certificate ca-certificates ships, one bundle
    if [ -d "$root/usr/share/ca-certificates" ]; then
        mkdir -p "$root/etc/ssl/certs"
        : >"$root/etc/ca-certificates.conf"
        : >"$root/etc/ssl/certs/ca-certificates.crt"
        (cd "$root/usr/share/ca-certificates" && find . -name '*.crt' | sed 's|^\./||' | sort) | while read -r rel; do
            echo "$rel" >>"$root/etc/ca-certificates.conf"
            crt=$(basename "$rel" .crt)
            ln -sf "/usr/share/ca-certificates/$rel" "$root/etc/ssl/certs/$crt.pem"
            cat "$root/usr/share/ca-certificates/$rel" >>"$root/etc/ssl/certs/ca-certificates.crt"
        done
        openssl rehash "$root/etc/ssl/certs" 2>/dev/null || true
    fi
    # tzdata: UTC
    if [ -d "$root/usr/share/zoneinfo" ]; then
        ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
        echo Etc/UTC >"$root/etc/timezone"
    fi
    # ldconfig: the loader cache (the loader finds the multiarch paths without
    # it, but the cache is what every Debian system has)
    ldconfig -r "$root" -X 2>/dev/null || true
    # what no running program reads: documentation (the copyright files stay),
    # translations, caches, logs, apt's and debconf's state
    rm -rf "$root"/usr/share/{man,info,lintian,linda,bug,doc-base,locale,menu} "$root"/var/cache/* \
        "$root"/var/log/* "$root"/var/lib/apt "$root"/etc/machine-id "$root"/var/lib/dbus/machine-id
    find "$root/usr/share/doc" \( -type f -o -type l \) ! -name copyright -delete 2>/dev/null || true
    find "$root/usr/share/doc" -depth -type d -empty -delete 2>/dev/null || true
    # never a device node, a fifo or a socket in a base layer
    find "$root" \( -type b -o -type c -o -type p -o -type s \) -delete
}

# links NAME ROOT: the recipe's `# links: LINK=TARGET ...` symbolic links
links () {
    local l link target
    for l in $(header "$1" links); do
        link=${l%%=*} target=${l#*=}
        case $link in /*) ;; *) die "$1: links: \`$link\` is not an absolute path" ;; esac
        case "/$link/$target/" in */../*) die "$1: links: \`$l\` has a .. component" ;; esac
        [ -e "$2$link" ] || [ -L "$2$link" ] && die "$1: links: $link is already in the packages"
        mkdir -p "$2$(dirname "$link")"
        ln -s "$target" "$2$link"
        case $target in /*) l=$2$target ;; *) l=$2$(dirname "$link")/$target ;; esac
        [ -e "$l" ] || die "$1: links: $link -> $target points at nothing in the image"
    done
}

# sha FILE: its sha256, in hex
sha () { sha256sum "$1" | cut -d' ' -f1; }

build_one () {
    local name=$1 tmp ref tag cmd title desc pkgs key dir root sde created layer diff_id
    tmp=$(mktemp -d "$out/.tmp-$name.$$.XXXXXX")
    ref=$(header "$name" image)
    [ -n "$ref" ] || die "$name: the recipe has no \`# image:\` line"
    tag=${ref##*:}
    cmd=$(header "$name" cmd)
    title=$(header "$name" title)
    desc=$(header "$name" description)

    # apt's answer changes only with the recipe or the package lists: keep it
    local lists rkey
    eval "$(apt-config shell lists Dir::State::Lists/d)"
    rkey=$( { recipe_lines "$name"; stat -c '%n %s %Y' "$lists"/*Packages* /etc/apt/sources.list \
        /etc/apt/sources.list.d/* 2>/dev/null || true; } | sha256sum | cut -c1-16)
    mkdir -p "$out/.resolved"
    if [ -s "$out/.resolved/$name-$rkey" ]; then
        cp "$out/.resolved/$name-$rkey" "$tmp/pkgs"
    else
        resolve "$name" "$tmp" >"$tmp/pkgs"
        rm -f "$out/.resolved/$name"-*
        cp "$tmp/pkgs" "$out/.resolved/$name-$rkey"
    fi
    [ -s "$tmp/pkgs" ] || die "$name: apt resolved no packages"
    pkgs=$(awk '{print $1 "=" $2}' "$tmp/pkgs")
    key=$( {
        for f in $(recipe_files "$name") "$here/build-base.sh"; do sha "$f"; done
        echo "$pkgs"
        dpkg-query -W -f '${Package}=${Version}\n' tar gzip dpkg libc-bin openssl
        echo "sde=${SOURCE_DATE_EPOCH:-}"
    } | sha256sum | cut -c1-16)
    dir=$out/$name-$key
    if [ "$force" = 0 ] && [ -f "$dir/index.json" ]; then
        ln -sfn "$name-$key" "$out/$name"
        rm -rf "$tmp"
        report "$name" "$ref" "$dir"
        return 0
    fi
    echo "build-base: building $ref ($name-$key, $(wc -l <"$tmp/pkgs") packages)" >&2
    fetch "$tmp/pkgs"

    root=$tmp/root
    mkdir -m 0755 "$root"
    unpack "$root" "$tmp/pkgs"
    # the packages' own newest file: a date that changes only when they do
    sde=${SOURCE_DATE_EPOCH:-$(find "$root" -type f ! -path "$root/var/lib/dpkg/status" -printf '%T@\n' | cut -d. -f1 | sort -n | tail -1)}
    finish "$root"
    links "$name" "$root"
    created=$(date -u -d "@$sde" +%Y-%m-%dT%H:%M:%SZ)

    mkdir -p "$tmp/layout/blobs/sha256"
    tar -C "$root" --sort=name --format=pax --mtime="@$sde" --owner=0 --group=0 --numeric-owner \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$tmp/layer.tar" .
    diff_id=$(sha "$tmp/layer.tar")
    gzip -n -c "$tmp/layer.tar" >"$tmp/layer.tar.gz"
    layer=$(sha "$tmp/layer.tar.gz")
    mv "$tmp/layer.tar.gz" "$tmp/layout/blobs/sha256/$layer"

    jq -n -S -c --arg created "$created" --arg diff "sha256:$diff_id" --arg cmd "$cmd" \
        --arg title "$title" --arg desc "$desc" --arg ref "$ref" --arg tag "$tag" --arg name "$name" \
        --arg pkgs "$(echo "$pkgs" | tr '\n' ' ' | sed 's/ $//')" \
        --arg pkgsha "sha256:$(echo "$pkgs" | sha256sum | cut -d' ' -f1)" \
        --arg recipe "sha256:$(recipe_lines "$name" | sha256sum | cut -d' ' -f1)" '
        {architecture: "amd64", os: "linux", created: $created,
         config: ({Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                  Labels: {"org.opencontainers.image.title": $title,
                           "org.opencontainers.image.description": $desc,
                           "org.opencontainers.image.version": $tag,
                           "org.opencontainers.image.created": $created,
                           "org.opencontainers.image.vendor": "buildvm",
                           "org.opencontainers.image.base.name": "debian:12",
                           "org.buildvm.base.recipe": $name,
                           "org.buildvm.base.recipe.sha256": $recipe,
                           "org.buildvm.base.packages": $pkgs,
                           "org.buildvm.base.packages.sha256": $pkgsha}}
                 + (if $cmd == "" then {} else {Cmd: ($cmd | split(" "))} end)),
         rootfs: {type: "layers", diff_ids: [$diff]},
         history: [{created: $created, created_by: ("buildvm-image/base/build-base.sh " + $name)}]}' \
        >"$tmp/config.json"
    local cfg
    cfg=$(sha "$tmp/config.json")
    mv "$tmp/config.json" "$tmp/layout/blobs/sha256/$cfg"
    jq -n -S -c --arg cfg "sha256:$cfg" --argjson cfgsize "$(stat -c %s "$tmp/layout/blobs/sha256/$cfg")" \
        --arg layer "sha256:$layer" --argjson layersize "$(stat -c %s "$tmp/layout/blobs/sha256/$layer")" \
        --arg created "$created" --arg ref "$ref" '
        {schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
         config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cfg, size: $cfgsize},
         layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $layer, size: $layersize}],
         annotations: {"org.opencontainers.image.created": $created, "org.opencontainers.image.ref.name": $ref}}' \
        >"$tmp/manifest.json"
    local man
    man=$(sha "$tmp/manifest.json")
    jq -n -S -c --arg d "sha256:$man" --argjson size "$(stat -c %s "$tmp/manifest.json")" --arg tag "$tag" '
        {schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
         digest: $d, size: $size, annotations: {"org.opencontainers.image.ref.name": $tag}}]}' \
        >"$tmp/layout/index.json"
    mv "$tmp/manifest.json" "$tmp/layout/blobs/sha256/$man"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$tmp/layout/oci-layout"
    cp "$tmp/pkgs" "$tmp/layout/packages"

    rm -rf "$dir"
    mv "$tmp/layout" "$dir"
    ln -sfn "$name-$key" "$out/$name"
    # older builds of this recipe are of no use any more
    for old in "$out/$name"-*; do
        case ${old##*/} in "$name"-????????????????) [ "$old" = "$dir" ] || rm -rf "$old" ;; esac
    done
    echo "build-base: $ref: $(du -sh "$dir" | cut -f1) compressed, $(du -sh --apparent-size "$root" | cut -f1) unpacked" >&2
    rm -rf "$tmp"
    report "$name" "$ref" "$dir"
}

# recipe_files NAME: the recipe and every file it includes
recipe_files () {
    echo "$here/$1.list"
    sed -n 's/^@include[[:space:]]*//p' "$here/$1.list" | while read -r inc; do recipe_files "$inc"; done
}

report () { # NAME REF DIR
    echo "$1 $2 $(jq -r '.manifests[0].digest' "$3/index.json") $3"
}

for name in "$@"; do
    build_one "$name"
done
