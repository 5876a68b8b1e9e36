#!/bin/bash
# A compromised Dockerfile builder (issue 17). buildah runs as root in the
# guest, so the image it exports under `oci/` is whatever root there wants:
# this test's guest is an evil init (in place of the agent and buildah) that
# writes a crafted `oci/` layout and a "status ok" header onto the output
# disk of a Dockerfile job. Each lie - a blob that is not its name, a layer
# with `..` or a 2^60-byte sparse entry, a manifest naming a blob the build
# did not write (another app's), an oversized config, diffIDs that do not
# match, two images in one index, names a layout does not have - must be
# refused with its reason, with nothing pushed (no blob, manifest or tag in
# the registry) and nothing left in the work directory. A valid layout from
# the same guest is the control: it is pushed, as the runner's own image.
. "$(dirname "$0")/lib.sh"

pl_registry

# --- the compromised image: the real kernel, a busybox rootfs with evil init
python3 "$ROOT/tests/data/ocilayout/gen.py" "$T/cases" >"$T/gen.out"
# a tiny base image in the registry, for the cases built FROM it
base_blob=$(awk '$1 == "base-blob" {print $2}' "$T/gen.out")
skopeo copy -q --dest-tls-verify=false --dest-creds "$REG_CREDS" "oci:$T/cases/base:1" \
    "docker://$REG/base/tiny:1"
stage=$T/stage
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,evil,work}
cp /bin/busybox "$stage/bin/busybox"
for a in sh mount cat dd stat printf reboot echo sync; do ln -s busybox "$stage/bin/$a"; done
cp "$T/cases"/*.tar "$stage/evil/"
cat >"$stage/init" <<'SH'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
echo "buildvm-agent: ready" >/dev/hvc0
for d in /sys/block/vd*; do
  case "$(cat "$d/serial")" in
    output) out=/dev/${d##*/} ;;
    scratch) scratch=/dev/${d##*/} ;;
  esac
done
mount -t ext4 -o ro "$scratch" /work
case=$(cat /work/src/case.txt)
size=$(stat -c %s "/evil/$case.tar")
echo "evil builder: exporting $case ($size bytes)" >/dev/hvc0
dd if="/evil/$case.tar" of="$out" bs=4096 seek=1 conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/hdr bs=4096 count=1 2>/dev/null
printf 'buildvm-output 1\nstatus ok\nstep 3\nexit 0\nsignal 0\nsteps 3\nentries 1\ntar_bytes %s\nduration_ms 1\nend\n' "$size" | dd of=/tmp/hdr conv=notrunc 2>/dev/null
dd if=/tmp/hdr of="$out" bs=4096 count=1 conv=notrunc 2>/dev/null
sync
reboot -f
SH
chmod 755 "$stage/init"
img=$T/images
mkdir -p "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
mkfs.ext4 -q -d "$stage" "$img/rootfs/evil.ext4" 128M
jq --arg size "$(stat -c %s "$img/rootfs/evil.ext4")" '
    .profile = "evil" | .rootfs.path = "rootfs/evil.ext4" | .rootfs.size = ($size | tonumber)
    | .kernel.cmdline |= sub("init=/buildvm/agent"; "init=/init")' \
    "$BUILDVM_IMAGES/minimal.json" >"$img/evil.json"
export BUILDVM_IMAGES=$img
pl_config

# --- a Dockerfile app, one commit per case (the case name travels in the source)
app=$T/app
mkdir -p "$app"
printf '{"profile": "evil", "dockerfile": {"path": "Dockerfile"}}\n' >"$app/buildvm.json"
printf 'FROM scratch\nCOPY case.txt /case.txt\n' >"$app/Dockerfile"
git init -q -b main "$app"
repo_dir=$REG_main_DIR/data/docker/registry/v2

commit_case () {
    echo "$1" >"$app/case.txt"
    case $1 in
        with_base | base_swapped) printf 'FROM base/tiny:1\nCOPY case.txt /case.txt\n' >"$app/Dockerfile" ;;
        *) printf 'FROM scratch\nCOPY case.txt /case.txt\n' >"$app/Dockerfile" ;;
    esac
    (cd "$app" && git add -A && git -c user.name=t -c user.email=t@x commit -qm "$1" && git rev-parse HEAD)
}

# each case and the reason its refusal must name
declare -A why=(
    [blob_mismatch]="does not match its name"
    [dotdot]="has a \`..\` component"
    [abs_path]="has an absolute path"
    [device]="is a device node"
    [sparse_huge]="declares 1152921504606846976 bytes, over the limit"
    [foreign_blob]="which is not in the build's output"
    [oversized_config]="over the limit of 8388608"
    [diff_ids_count]="has 2 entries but the manifest has 1 layers"
    [diff_id_mismatch]="its uncompressed content is"
    [two_manifests]="names 2 manifests"
    [no_index]="has no \`oci/index.json\`"
    [bad_platform]="not linux/amd64"
    [bad_name]="not a name of an OCI image layout"
    [image_root]="a Dockerfile job's image is its \`oci/\` output"
    [symlink]="links are not allowed under \`oci/\`"
    [base_swapped]="its uncompressed content is"
)
blobs0=$(find "$repo_dir/blobs" -type f | wc -l)

n=0
for case in blob_mismatch dotdot abs_path device sparse_huge foreign_blob oversized_config \
            diff_ids_count diff_id_mismatch two_manifests no_index bad_platform bad_name \
            image_root symlink base_swapped; do
    n=$((n + 1))
    c=$(commit_case "$case")
    pl_job "$T/j.json" "df-$n" evilapp "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" --verbose "$T/j.json"
    [ "$RC" != 0 ] || fail "$case: accepted"
    grep -q "outputs were refused" "$T/out" || { cat "$T/out" "$T/err"; fail "$case: unclear error"; }
    grep -qF -- "${why[$case]}" "$T/out" || { grep -i error "$T/out"; fail "$case: the error does not say [${why[$case]}]"; }
    pl_tag_exists apps/evilapp "$c" && fail "$case: tagged"
    # nothing of it reached the registry: no blob, no manifest, no repository
    [ ! -e "$repo_dir/repositories/apps/evilapp" ] || fail "$case: the registry has apps/evilapp"
    assert_eq "$blobs0" "$(find "$repo_dir/blobs" -type f | wc -l)" "$case: blobs in the registry"
    assert_no_leftovers
    note "$case: $(grep -o 'refused: .*' "$T/out" | head -1 | cut -c1-160)"
done

# --- the controls: a valid layout (plain and gzip layers, on a base) is pushed as the runner's image
for case in valid valid_gzip with_base; do
    n=$((n + 1))
    c=$(commit_case "$case")
    pl_job "$T/j.json" "df-$n" evilapp "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" --verbose "$T/j.json"
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the $case control case failed"; }
    pl_tag_exists apps/evilapp "$c" || fail "the $case control case was not pushed"
    skopeo inspect --tls-verify=false --creds "$REG_CREDS" --config "docker://$REG/apps/evilapp:$c" >"$T/cfg.json"
    # the runner's config: its provenance labels over the builder's forged one
    assert_eq "$c" "$(jq -r '.config.Labels["dev.buildvm.commit"]' "$T/cfg.json")" "$case: commit label"
    assert_eq "/app" "$(jq -r '.config.WorkingDir' "$T/cfg.json")" "$case: WorkingDir kept"
    skopeo inspect --tls-verify=false --creds "$REG_CREDS" --raw "docker://$REG/apps/evilapp:$c" >"$T/man.json"
    assert_eq "application/vnd.oci.image.layer.v1.tar+gzip" "$(jq -r '.layers[-1].mediaType' "$T/man.json")" \
        "$case: the runner compressed the layer"
    if [ "$case" = with_base ]; then
        # the base's layer is the base's own blob, mounted from base/tiny, not uploaded again
        assert_eq 2 "$(jq '.layers | length' "$T/man.json")" "with_base: layers"
        assert_eq "$base_blob" "$(jq -r '.layers[0].digest' "$T/man.json")" "with_base: the base's blob"
        grep -q "push: .* 1 mounted" "$T/err" || { grep "push:" "$T/err" || true; fail "with_base: the base layer was not mounted"; }
        # a real client takes the image whole
        skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" "docker://$REG/apps/evilapp:$c" "oci:$T/pulled:x"
    fi
    assert_no_leftovers
    note "$case: pushed $(jq -r '.layers[0].digest' "$T/man.json")"
done

# --- the provenance names the base by digest, the SBOM the new layer's files only
rec=$(pl_record "df-$n" evilapp)
jq -r .payload "$(jq -r .attestation.path "$rec")" | base64 -d >"$T/statement.json"
jq -e --arg d "$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" --format '{{.Digest}}' "docker://$REG/base/tiny:1")" '
    [.predicate.buildDefinition.resolvedDependencies[] | select(.name == "base-image")]
    | length == 1 and .[0].uri == "base/tiny:1" and ("sha256:" + .[0].digest.sha256) == $d' \
    "$T/statement.json" >/dev/null || { jq .predicate.buildDefinition.resolvedDependencies "$T/statement.json"; fail "the provenance does not name the base"; }
sbom=$(jq -r .attestation.sbom_path "$rec")
grep -q '"app/hello.txt"' "$sbom" || fail "the SBOM lacks the new layer's file"
if grep -q '"bin/sh"' "$sbom"; then fail "the SBOM lists the base layer's files as the build's"; fi

# --- a re-run of the same commit: the same image, the tag where it was
digest=$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" --format '{{.Digest}}' "docker://$REG/apps/evilapp:$c")
pl_job "$T/j.json" "df-rerun" evilapp "$app" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the re-run failed"; }
assert_eq "$digest" "$(skopeo inspect --tls-verify=false --creds "$REG_CREDS" --format '{{.Digest}}' "docker://$REG/apps/evilapp:$c")" "the re-run's image"
assert_no_leftovers

# --- a dry-run writes the image as an OCI layout, base layer included
run env -C "$app" "$BUILDVM" dry-run --config "$CONFIG" --app evilapp --out "$T/dry"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the dry-run failed"; }
ref=$(grep -o 'oci:[^ ]*' "$T/out" | head -1)
skopeo inspect --raw "$ref" >"$T/dry-man.json" || fail "the dry-run's layout does not read: $ref"
assert_eq "$base_blob" "$(jq -r '.layers[0].digest' "$T/dry-man.json")" "dry-run: the base's blob"
assert_eq 2 "$(jq '.layers | length' "$T/dry-man.json")" "dry-run: layers"
umoci unpack --image "${ref#oci:}" "$T/bundle" >/dev/null 2>&1 || fail "umoci cannot unpack the dry-run's image"
[ -f "$T/bundle/rootfs/app/hello.txt" ] && [ -f "$T/bundle/rootfs/bin/sh" ] || fail "the dry-run's image lacks a layer's files"
note "re-run and dry-run: $digest"
