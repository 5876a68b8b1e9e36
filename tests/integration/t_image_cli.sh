#!/bin/bash
# The build VM images a user can choose from, and what a wrong choice says:
# `buildvm image list` names each profile with its toolchains, `image` and
# `doctor` take the directory from `--config` (`images.dir`), and a spec
# whose profile no image has is an invalid spec (exit 2) naming the ones
# there are. No VM boots.
. "$(dirname "$0")/lib.sh"

[ -f "$BUILDVM_IMAGES/minimal.json" ] || fail "no minimal image in $BUILDVM_IMAGES (make images)"

run "$BUILDVM" image list
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "image list failed"; }
assert_eq "PROFILE      ROOTFS                TOOLCHAINS" "$(head -1 "$T/out")" "the header"
grep -qE '^minimal +sha256:[0-9a-f]{12}\.\.\. busybox [0-9.]+$' "$T/out" || { cat "$T/out"; fail "no minimal line"; }
if [ -f "$BUILDVM_IMAGES/debian.json" ]; then
    node=$(jq -r '.packages[] | select(.name == "nodejs") | .version' "$BUILDVM_IMAGES/debian.json")
    grep -E '^debian ' "$T/out" | grep -qF "node ${node%%+*}" || { cat "$T/out"; fail "debian's line lacks node ${node%%+*}"; }
    grep -E '^debian ' "$T/out" | grep -qE 'gcc [0-9.]+, make [0-9.]+' || { cat "$T/out"; fail "debian's line lacks gcc"; }
fi

# a directory of its own with only `minimal`, named by --config
imgs=$T/images
mkdir -p "$imgs"
cp "$BUILDVM_IMAGES/minimal.json" "$imgs/"
ln -s "$BUILDVM_IMAGES/kernel" "$imgs/kernel"
ln -s "$BUILDVM_IMAGES/rootfs" "$imgs/rootfs"
jq -n --arg d "$imgs" '{images: {dir: $d}}' >"$T/cfg.json"
run "$BUILDVM" image list --config "$T/cfg.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "image list --config failed"; }
assert_eq 1 "$(grep -c sha256: "$T/out")" "profiles listed from images.dir"
assert_contains "$T/out" "(in $imgs;"
run "$BUILDVM" image show --config "$T/cfg.json" minimal
assert_eq 0 "$RC" "image show --config"
jq -e '.packages[0].name == "busybox-static"' "$T/out" >/dev/null || fail "image show: no packages"
run "$BUILDVM" image show --config "$T/cfg.json" debian
assert_eq 1 "$RC" "image show of an image not built"
assert_contains "$T/err" "build VM image \`debian\` not found in \`$imgs\` (this host has \`minimal\`): build it with \`make image-debian\`"
run "$BUILDVM" image show --config "$T/cfg.json" --images "$imgs" minimal
assert_eq 2 "$RC" "--config and --images together"
run "$BUILDVM" doctor --config "$T/cfg.json"
assert_contains "$T/out" "ok    image minimal          $imgs/minimal.json"
assert_contains "$T/out" "note  image debian           build VM image \`debian\` not found in \`$imgs\`"

# an empty directory: list says how to build them
jq -n --arg d "$T/none" '{images: {dir: $d}}' >"$T/cfg-none.json"
run "$BUILDVM" image list --config "$T/cfg-none.json"
assert_eq 1 "$RC" "image list of no images"
assert_contains "$T/err" "buildvm image: no build VM images in \`$T/none\`: \`make images image-debian\` in the buildvm source tree builds them"

# a spec naming a profile no image has: invalid (exit 2), before any VM
d=$T/typo
mkdir -p "$d"
printf '{"profile": "debain", "steps": ["true"]}\n' >"$d/buildvm.json"
pl_repo "$d" >/dev/null
run env -C "$d" "$BUILDVM" dry-run --config "$T/cfg.json" --out "$T/out-typo"
assert_eq 2 "$RC" "exit status of a spec naming no image"
assert_contains "$T/out" "error     \`buildvm.json\`: field \`profile\`: no build VM image \`debain\` on this host: it has \`minimal\` (\`buildvm image list\` shows what each provides)"
assert_no_leftovers
