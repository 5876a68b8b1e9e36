#!/bin/bash
# Every bundled example's pushed image starts and answers HTTP: deploy it with
# `buildvm run` (at the commit examples/jobs/ names) onto the base image its
# spec names (pushed by push-base.sh), pull it back with skopeo, unpack it
# with umoci and run it with runc - host network, 127.0.0.1, a free port in
# $PORT - then curl it, kill and delete the container. An example this test
# does not start must be started by t_examples_deps (it fails otherwise).
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config
"$ROOT/examples/make-repos.sh" "$T/repos" >"$T/commits"

. "$(dirname "$0")/runc.sh"
trap '_rc=$?; stop_containers; _cleanup' EXIT

# every bundled example's image is started: here, or by t_examples_deps
# when it installs dependencies (an npm registry, a package index)
here_examples="hello-shell hello-c hello-node"
for ex in $(ls "$ROOT/examples/apps"); do
    case " $here_examples " in *" $ex "*) continue ;; esac
    grep -qE "^for ex in (.* )?$ex( |;)" "$ROOT/tests/integration/t_examples_deps.sh" \
        "$ROOT/tests/integration/t_dockerfile.sh" \
        || fail "example $ex: no test starts its image (add it here, to t_examples_deps or t_dockerfile)"
done

ran=0
for ex in $here_examples; do
    spec=$ROOT/examples/apps/$ex/buildvm.json
    if [ "$(jq -r .profile "$spec")" = debian ] && [ ! -f "$BUILDVM_IMAGES/debian.json" ]; then
        note "$ex: needs the debian image (make image-debian): not started"
        continue
    fi
    commit=$(awk -v a="$ex" '$1 == a {print $2}' "$T/commits")
    assert_eq "$(jq -r .commit "$ROOT/examples/jobs/$ex.json")" "$commit" "$ex: the commit examples/jobs names"
    base=$(jq -r '.image.base // empty' "$spec")
    [ -n "$base" ] || fail "$ex: no base image: nothing would run it"
    svc_base_images "$REG" "$REG_CREDS" "$base" >"$T/push-$ex" 2>&1 \
        || { cat "$T/push-$ex"; fail "$ex: pushing $base failed"; }

    jq --arg r "file://$T/repos/$ex.git" --arg id "start-$ex" '.repo = $r | .id = $id' \
        "$ROOT/examples/jobs/$ex.json" >"$T/job-$ex.json"
    t0=$(date +%s)
    run "$BUILDVM" run --config "$CONFIG" "$T/job-$ex.json"
    [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "$ex: run failed"; }
    note "$ex: built and pushed in $(( $(date +%s) - t0 ))s"

    skopeo copy -q --src-tls-verify=false --src-creds "$REG_CREDS" \
        "docker://$REG/apps/$ex:$commit" "oci:$T/layout-$ex:app" || fail "$ex: skopeo cannot pull the image"
    skopeo inspect --config "oci:$T/layout-$ex:app" >"$T/config-$ex.json"
    # the base's labels name its packages (and pass through to the app image)
    case $base in
        base/busybox:*) ;;
        *) jq -e '.config.Labels["org.buildvm.base.packages"] | test("libc6=")' "$T/config-$ex.json" >/dev/null \
               || fail "$ex: no package list from $base in the image labels" ;;
    esac
    runc_serve "$ex" "$T/layout-$ex:app"
    body=$SERVED_BODY id=$SERVED_ID port=$SERVED_PORT
    case $ex in
        hello-shell) want="<title>hello from buildvm</title>" ;;
        *) want="hello, world" ;;
    esac
    case $body in *"$want"*) ;; *) fail "$ex: answered [$body], not [$want]" ;; esac
    note "$ex: the image answers on 127.0.0.1:$port"
    stop_containers
    runc --root "$RUNC_ROOT" list -q | grep -qx "$id" && fail "$ex: the container was not deleted"
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || fail "no example was started"
assert_no_leftovers
