#!/bin/bash
# The example deploy requests name the commits that examples/make-repos.sh
# makes from examples/apps (the demo depends on it), and examples/runner.json
# loads. Each example builds on a base image the project makes.
. "$(dirname "$0")/lib.sh"

"$ROOT/examples/make-repos.sh" "$T/repos" >"$T/commits"
while read -r app commit; do
    job=$ROOT/examples/jobs/$app.json
    [ -f "$job" ] || fail "no deploy request for example $app"
    assert_eq "$commit" "$(jq -r .commit "$job")" "commit in examples/jobs/$app.json (rerun make-repos.sh and update it)"
    assert_eq "$app" "$(jq -r .app "$job")" "app in examples/jobs/$app.json"
    git -C "$T/repos/$app.git" cat-file -e "$commit^{commit}" || fail "$app: commit not in the made repository"
done <"$T/commits"
[ "$(wc -l <"$T/commits")" -ge 3 ] || fail "fewer than three example apps"

# every example runs on a base image the project makes (push-base.sh pushes it)
while read -r app commit; do
    # a Dockerfile app's bases are its FROM lines (t_dockerfile builds them)
    [ -f "$ROOT/examples/apps/$app/Dockerfile" ] && continue
    base=$(jq -r '.image.base // empty' "$ROOT/examples/apps/$app/buildvm.json")
    [ -n "$base" ] || fail "$app: no base image, so nothing in its image can run it"
    case $base in
        base/busybox:1.35) ;;
        *) grep -qx "# image: $base" "$ROOT"/buildvm-image/base/*.list || fail "$app: no recipe in buildvm-image/base makes $base" ;;
    esac
done <"$T/commits"

# (every example spec is parsed by tests/unit/test_runner.c)
jq --arg h "$BUILDVM_HOME" '.home = $h | del(.work_dir, .log_dir, .cache_dir, .state_dir, .artifacts, .queue, .secrets)' \
    "$ROOT/examples/runner.json" >"$T/runner.json"
"$BUILDVM" doctor --config "$T/runner.json" >"$T/doctor" 2>&1 || true
grep -q "image minimal" "$T/doctor" || { cat "$T/doctor"; fail "examples/runner.json did not load"; }
