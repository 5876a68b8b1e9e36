#!/bin/bash
# buildvm dry-run: the example apps build locally on their base images (from
# a registry), with no queue; the OCI layout is readable by skopeo and umoci;
# a base the registry does not have fails before the build; a spec that would
# write outside the app's prefix shows `deny` and exits non-zero; --worktree
# picks up an uncommitted change, and without it the dry-run says the
# changes are not included; a profile no image has names those there
# are, and a shipped one not built says how to build it.
. "$(dirname "$0")/lib.sh"

have_debian=false
[ -f "$BUILDVM_IMAGES/debian.json" ] && have_debian=true

# the registry the examples' base images come from (a dry-run builds on the
# base image as a real run does)
pl_registry
pl_config

for ex in hello-shell hello-c hello-node; do
    profile=$(jq -r .profile "$ROOT/examples/apps/$ex/buildvm.json")
    if [ "$profile" = debian ] && ! $have_debian; then
        note "$ex: needs the debian image (make image-debian); checked below for its message only"
        continue
    fi
    base=$(jq -r .image.base "$ROOT/examples/apps/$ex/buildvm.json")
    svc_base_images "$REG" "$REG_CREDS" "$base" >"$T/push-$ex" 2>&1 \
        || { cat "$T/push-$ex"; fail "$ex: pushing $base failed"; }
    d=$T/$ex
    cp -r "$ROOT/examples/apps/$ex" "$d"
    c=$(pl_repo "$d")
    run env -C "$d" "$BUILDVM" dry-run --config "$CONFIG" --out "$T/out-$ex"
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "$ex: dry-run failed"; }
    assert_contains "$T/out" "allow  registry:PushImage   registry:apps/$ex:$c"
    assert_not_contains "$T/err" "uncommitted change" # a clean working tree
    skopeo inspect "oci:$T/out-$ex/image:$c" >"$T/inspect.json" || fail "$ex: skopeo cannot read the layout"
    assert_eq "$c" "$(jq -r '.Labels["dev.buildvm.commit"]' "$T/inspect.json")" "$ex commit label"
    umoci unpack --image "$T/out-$ex/image:$c" "$T/bundle-$ex" >/dev/null || fail "$ex: umoci cannot unpack"
    case $ex in
        hello-shell)
            [ -f "$T/bundle-$ex/rootfs/app/www/index.html" ] || fail "$ex: the site is missing"
            [ -f "$T/out-$ex/artifacts/apps/$ex/$c/reports/build.txt" ] || fail "$ex: artifact missing" ;;
        hello-c)
            [ -x "$T/bundle-$ex/rootfs/usr/local/bin/hello" ] || fail "$ex: the binary is missing"
            assert_eq "hello, world" "$("$T/bundle-$ex/rootfs/usr/local/bin/hello")" "$ex runs" ;;
        hello-node)
            [ -f "$T/bundle-$ex/rootfs/app/server.js" ] || fail "$ex: server.js is missing" ;;
    esac
    assert_no_leftovers
done

# --- a base image the registry does not have: the dry-run fails before the
# build, as the real run does, and says what to do
d=$T/nobase
cp -r "$ROOT/examples/apps/hello-shell" "$d"
jq '.image.base = "base/nosuch:1"' "$d/buildvm.json" >"$T/s" && mv "$T/s" "$d/buildvm.json"
pl_repo "$d" >/dev/null
run env -C "$d" "$BUILDVM" dry-run --config "$CONFIG" --out "$T/out-nobase"
assert_eq 2 "$RC" "exit status of a base image the registry does not have"
assert_contains "$T/out" "error     base image \`base/nosuch:1\`: "
assert_contains "$T/out" ": a dry-run builds on the base image as a real run does: push it to \`http://$REG\` (buildvm-image/base/push-base.sh), name a registry that has it (\`registry.url\`, --config), or set \`image.base\` to null"
assert_contains "$T/out" "phases    role="
assert_not_contains "$T/out" " build="

# --- a spec that would pull another app's image: deny in the plan, non-zero exit
d=$T/greedy
cp -r "$ROOT/examples/apps/hello-shell" "$d"
jq '.image.base = "apps/someone-else:1"' "$d/buildvm.json" >"$T/s" && mv "$T/s" "$d/buildvm.json"
pl_repo "$d" >/dev/null
run env -C "$d" "$BUILDVM" dry-run --app greedy --out "$T/out-greedy"
assert_eq 3 "$RC" "exit status of a denied plan"
assert_contains "$T/out" "deny   registry:PullImage   registry:apps/someone-else:1"
assert_contains "$T/out" "implicit deny"
# an operator's template that pushes outside apps/<app> is denied the same way
jq '.registry.repository = "shared/{app}"' "$CONFIG" >"$T/cfg.json"
d=$T/shared
cp -r "$ROOT/examples/apps/hello-shell" "$d"
pl_repo "$d" >/dev/null
run env -C "$d" "$BUILDVM" dry-run --config "$T/cfg.json" --out "$T/out-shared"
assert_eq 3 "$RC" "exit status of a denied push"
assert_contains "$T/out" "deny   registry:PushImage   registry:shared/shared:"

# --- --worktree builds uncommitted changes; the default builds HEAD
d=$T/wt
cp -r "$ROOT/examples/apps/hello-shell" "$d"
echo "buildvm-out/" >"$d/.gitignore"
c=$(pl_repo "$d")
sed -i 's/Built in a throwaway VM/UNCOMMITTED CHANGE/' "$d/src/index.html.in"
echo "scratch" >"$d/ignored.tmp" && echo "ignored.tmp" >>"$d/.gitignore"
run env -C "$d" "$BUILDVM" dry-run --config "$CONFIG"
[ "$RC" = 0 ] || { cat "$T/out"; fail "dry-run of HEAD failed"; }
umoci unpack --image "$d/buildvm-out/image:$c" "$T/b-head" >/dev/null
grep -q "Built in a throwaway VM" "$T/b-head/rootfs/app/www/index.html" || fail "HEAD build has the change"
# ...and says the changes are not in it (the edit and .gitignore; not the
# ignored file, not its own buildvm-out/)
assert_contains "$T/err" "buildvm dry-run: 2 uncommitted changes in \`"
assert_contains "$T/err" "are not included: this builds the committed HEAD ${c:0:12} (--worktree builds the working tree as it is)"
# the output directory inside the working tree, not ignored: refused
run env -C "$d" "$BUILDVM" dry-run --worktree --out "$d/out-here"
assert_eq 2 "$RC" "--worktree with an unignored output directory"
assert_contains "$T/err" "add \`out-here/\` to .gitignore"
run env -C "$d" "$BUILDVM" dry-run --config "$CONFIG" --worktree --out "$T/out-wt" --verbose
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "dry-run --worktree failed"; }
umoci unpack --image "$T/out-wt/image:$c" "$T/b-wt" >/dev/null
grep -q "UNCOMMITTED CHANGE" "$T/b-wt/rootfs/app/www/index.html" || fail "--worktree missed the uncommitted change"
assert_contains "$T/out" "(working tree)"
assert_not_contains "$T/err" "uncommitted change"

# --- no image: the message says how to build it
d=$T/noimg
mkdir -p "$d"
printf '{"profile": "nosuch", "steps": ["true"]}\n' >"$d/buildvm.json"
pl_repo "$d" >/dev/null
run env -C "$d" "$BUILDVM" dry-run --out "$T/out-noimg"
assert_eq 2 "$RC" "exit status of a profile no image has"
assert_contains "$T/out" "\`buildvm.json\`: field \`profile\`: no build VM image \`nosuch\` on this host: it has"
if ! $have_debian; then
    d=$T/c
    cp -r "$ROOT/examples/apps/hello-c" "$d"
    pl_repo "$d" >/dev/null
    run env -C "$d" "$BUILDVM" dry-run --out "$T/out-c"
    [ "$RC" != 0 ] || fail "hello-c built without the debian image"
    assert_contains "$T/out" "make image-debian"
fi
assert_no_leftovers
