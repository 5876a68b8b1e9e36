#!/bin/bash
# The runtime base images (buildvm-image/base): a rebuild from the same
# recipe and package versions gives the same digests; the layer is clean
# (owner 0, one mtime, no device nodes, no apt state, caches, logs or
# machine-id); the config has PATH and labels naming the packages; a push
# keeps the digest and a second push uploads nothing.
. "$(dirname "$0")/lib.sh"

base=$BUILDVM_IMAGES/base
names=$(cd "$ROOT/buildvm-image/base" && ls *.list | sed 's/\.list$//')
t0=$(date +%s)
"$ROOT/buildvm-image/base/build-base.sh" "$base" >"$T/cached" 2>"$T/cached.err" \
    || { cat "$T/cached.err"; fail "build-base.sh failed"; }
note "cached build: $(( $(date +%s) - t0 ))s"
for n in debian-12 node-18 python-3.11; do grep -q "^$n base/" "$T/cached" || fail "no image $n"; done

# a rebuild into another directory, from the same .debs: the same digests
t0=$(date +%s)
BUILDVM_BASE_DEBS=$base/debs "$ROOT/buildvm-image/base/build-base.sh" -f "$T/again" >"$T/again.out" 2>"$T/again.err" \
    || { cat "$T/again.err"; fail "the rebuild failed"; }
note "rebuild: $(( $(date +%s) - t0 ))s"
while read -r name ref digest layout; do
    assert_eq "$(awk -v n="$name" '$1 == n {print $3}' "$T/cached")" "$digest" "$name: digest of a rebuild"
done <"$T/again.out"

while read -r name ref digest layout; do
    tag=${ref##*:}
    skopeo inspect --raw "oci:$layout:$tag" >"$T/m.json" || fail "$name: skopeo cannot read the layout"
    assert_eq "$digest" "sha256:$(sha256sum <"$T/m.json" | cut -d' ' -f1)" "$name: manifest digest"
    skopeo inspect --config "oci:$layout:$tag" >"$T/c.json"
    created=$(jq -r .created "$T/c.json")
    jq -e '.config.Env | index("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")' "$T/c.json" >/dev/null \
        || fail "$name: no PATH in the config"
    want=$(awk '{print $1 "=" $2}' "$layout/packages" | tr '\n' ' ' | sed 's/ $//')
    assert_eq "$want" "$(jq -r '.config.Labels["org.buildvm.base.packages"]' "$T/c.json")" "$name: package label"
    for l in title description version created; do
        jq -e --arg l "org.opencontainers.image.$l" '.config.Labels[$l] | length > 0' "$T/c.json" >/dev/null \
            || fail "$name: no label org.opencontainers.image.$l"
    done
    assert_eq 1 "$(jq '.layers | length' "$T/m.json")" "$name: layer count"
    layer=$layout/blobs/sha256/$(jq -r '.layers[0].digest' "$T/m.json" | cut -d: -f2)
    tar --numeric-owner --full-time -tvzf "$layer" >"$T/list"
    awk '$2 != "0/0"' "$T/list" | head -3 | grep . && fail "$name: entries not owned by 0/0"
    awk '{print $4 "T" $5}' "$T/list" | sort -u >"$T/times"
    assert_eq "${created%Z}" "$(cat "$T/times")" "$name: every entry's mtime"
    grep -E '^[bcps]' "$T/list" | head -3 | grep . && fail "$name: device nodes, fifos or sockets in the layer"
    grep -E ' \./(var/lib/apt/lists/.|var/cache/.|var/log/.|etc/machine-id)' "$T/list" | head -3 | grep . \
        && fail "$name: apt lists, caches, logs or a machine-id in the layer"
    grep -q ' \./usr/lib/x86_64-linux-gnu/libc\.so\.6$' "$T/list" || fail "$name: no libc"
    grep -q ' \./etc/ssl/certs/ca-certificates\.crt$' "$T/list" || fail "$name: no CA bundle"
done <"$T/cached"

# pushed: the registry holds the very manifest; a second push uploads nothing
pl_registry
svc_base_images "$REG" "$REG_CREDS" >"$T/push1" || fail "push failed"
svc_base_images "$REG" "$REG_CREDS" >"$T/push2" || fail "second push failed"
while read -r name ref digest layout; do
    assert_eq "$digest" "$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/$ref" | jq -r .Digest)" \
        "$name: digest in the registry"
    assert_contains "$T/push2" "base image $REG/$ref is there"
done <"$T/cached"
