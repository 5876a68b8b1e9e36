#!/bin/bash
# demo.sh: the README's main job, end to end, with the embedded defaults.
#
#   1. start a registry (docker-registry) on 127.0.0.1:5000, the runner's
#      default registry, with its storage under $BUILDVM_HOME/registry;
#   2. push the base image the example builds on (push-base.sh: base/busybox
#      from the host's busybox-static, or a runtime base image built from
#      Debian packages and cached under build/images/base);
#   3. make the example's git repository (make-repos.sh) at the commit the
#      deploy request in examples/jobs/ names;
#   4. `buildvm run` that deploy request: fetch, build in a fresh VM, push the
#      per-app image and the artifacts;
#   5. check the result with an independent client (skopeo) and print the
#      pushed image reference and digest.
#
# APP=hello-c or APP=hello-node run the other examples (they need the debian
# image: `make image-debian`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILDVM=${BUILDVM:-$ROOT/build/buildvm}
export BUILDVM_IMAGES=${BUILDVM_IMAGES:-$ROOT/build/images}
APP=${APP:-hello-shell}
REG=127.0.0.1:5000

if [ -n "${BUILDVM_HOME:-}" ]; then home=$BUILDVM_HOME
elif [ "$(id -u)" = 0 ]; then home=/var/lib/buildvm
else home=${XDG_STATE_HOME:-$HOME/.local/state}/buildvm; fi
mkdir -p "$home"

# 1. the registry
started=""
if curl -fs "http://$REG/v2/" >/dev/null 2>&1; then
    echo "demo: using the registry already answering on $REG"
else
    mkdir -p "$home/registry/data"
    cat >"$home/registry/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $home/registry/data}
  delete: {enabled: true}
http: {addr: $REG}
YML
    docker-registry serve "$home/registry/config.yml" >"$home/registry/log" 2>&1 &
    started=$!
    trap 'kill $started 2>/dev/null || true; wait $started 2>/dev/null || true' EXIT
    for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fs "http://$REG/v2/" >/dev/null || { cat "$home/registry/log"; echo "demo: the registry did not start" >&2; exit 1; }
    echo "demo: started a registry on $REG (storage: $home/registry/data)"
fi

# 2. the base image the app's spec names
base=$(jq -r '.image.base // empty' "$ROOT/examples/apps/$APP/buildvm.json")
[ -z "$base" ] || "$ROOT/buildvm-image/base/push-base.sh" "$REG" "$base"

# 3. the app's repository, at the commit the deploy request names
job=$ROOT/examples/jobs/$APP.json
want=$(jq -r .commit "$job")
got=$("$ROOT/examples/make-repos.sh" "$home/examples" "$APP" | awk '{print $2}')
if [ "$got" != "$want" ]; then
    echo "demo: examples/apps/$APP is at $got, but $job names $want" >&2
    echo "demo: (the example changed: update the job file's commit)" >&2
    exit 1
fi
if [ "$home" != /var/lib/buildvm ]; then
    tmpjob=$(mktemp)
    jq --arg r "file://$home/examples/$APP.git" '.repo = $r' "$job" >"$tmpjob"
    job=$tmpjob
fi

# 4. the deploy
echo "demo: buildvm run $job"
"$BUILDVM" run --verbose "$job"

# 5. an independent look at what was pushed
digest=$(skopeo inspect --tls-verify=false "docker://$REG/apps/$APP:$want" | jq -r .Digest)
echo
echo "pushed: $REG/apps/$APP:$want"
echo "digest: $digest"

# 6. its signed provenance, as a consumer of the image checks it
echo
"$BUILDVM" verify --app "$APP" --commit "$want" "$REG/apps/$APP:$want"
