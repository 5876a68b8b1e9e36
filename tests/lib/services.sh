# tests/lib/services.sh - start real services on 127.0.0.1 for the tests
#
# Sourced by tests/with-services.sh and by integration tests that need a
# private instance (to kill it, to make it fail). Every function records what
# it started in $SVC_DIR so svc_stop_all can stop it.

: "${SVC_DIR:=$(mktemp -d /tmp/buildvm-svc.XXXXXX)}"
export SVC_DIR

svc_free_port () {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

svc_wait_port () { # PORT [SECONDS]
    local port=$1 deadline=$(( $(date +%s) + ${2:-20} ))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "services: nothing listens on 127.0.0.1:$port" >&2; return 1; }
        sleep 0.05
    done
}

# svc_registry NAME [USER PASS]: a CNCF distribution registry with its own
# storage. Prints nothing; sets REG_<NAME>_ADDR and writes the pid file.
svc_registry () {
    local name=$1 user=${2:-} pass=${3:-} port dir
    port=$(svc_free_port)
    dir=$SVC_DIR/registry-$name
    mkdir -p "$dir/data"
    {
        echo "version: 0.1"
        echo "log: {level: error, accesslog: {disabled: true}}"
        echo "storage:"
        echo "  filesystem: {rootdirectory: $dir/data}"
        echo "  delete: {enabled: true}"
        echo "http: {addr: 127.0.0.1:$port}"
        if [ -n "$user" ]; then
            htpasswd -Bbn "$user" "$pass" >"$dir/htpasswd"
            echo "auth: {htpasswd: {realm: buildvm-test, path: $dir/htpasswd}}"
        fi
    } >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    svc_wait_port "$port" || { cat "$dir/log" >&2; return 1; }
    eval "REG_${name}_ADDR=127.0.0.1:$port"
    eval "REG_${name}_DIR=$dir"
}

# svc_registry_token NAME REALM SERVICE ISSUER BUNDLE: a registry with the
# token auth of the distribution spec (`auth: token`): a client without a
# token signed by a key whose certificate is in BUNDLE gets a Bearer
# challenge naming REALM. Sets REG_<NAME>_ADDR and REG_<NAME>_DIR.
svc_registry_token () {
    local name=$1 realm=$2 service=$3 issuer=$4 bundle=$5 port dir
    port=$(svc_free_port)
    dir=$SVC_DIR/registry-$name
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<EOF_CONFIG
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
auth:
  token:
    realm: $realm
    service: $service
    issuer: $issuer
    rootcertbundle: $bundle
EOF_CONFIG
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    svc_wait_port "$port" || { cat "$dir/log" >&2; return 1; }
    eval "REG_${name}_ADDR=127.0.0.1:$port"
    eval "REG_${name}_DIR=$dir"
}

# svc_redis NAME: a redis-server with no persistence.
svc_redis () {
    local name=$1 port dir
    port=$(svc_free_port)
    dir=$SVC_DIR/redis-$name
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --daemonize no >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    svc_wait_port "$port" || { cat "$dir/log" >&2; return 1; }
    eval "REDIS_${name}_ADDR=127.0.0.1:$port"
}

# svc_base_images ADDR [USER:PASS] [IMAGE...]: push runtime base images
# (base/debian:12, base/node:18, base/python:3.11, base/busybox:1.35) to the
# registry at ADDR; buildvm-image/base/push-base.sh builds them first if the
# cache under $BUILDVM_IMAGES/base does not have them (that needs the
# machine's apt mirror and a minute or two).
svc_base_images () {
    "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/buildvm-image/base/push-base.sh" "$@"
}

# svc_verdaccio APP-DIR: a real npm registry server (verdaccio) on a free
# port, its uplink the registry this machine's npm is configured with, its
# storage filled with what APP-DIR's package-lock.json names (so that a build
# VM's install is then served from 127.0.0.1). verdaccio is installed once
# into build/test-tools ($BUILDVM_TEST_TOOLS), under a lock: tests that run
# at the same time share the install. Sets NPM_PORT.
VERDACCIO_VERSION=6.8.0
svc_verdaccio () {
    local app=$1 root tools upstream dir tmp
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    tools=${BUILDVM_TEST_TOOLS:-$root/build/test-tools}/verdaccio-$VERDACCIO_VERSION
    upstream=$(npm config get registry)
    dir=$SVC_DIR/verdaccio
    mkdir -p "$dir/storage" "$(dirname "$tools")"
    (
        flock 9
        [ ! -x "$tools/node_modules/.bin/verdaccio" ] || exit 0
        tmp=$(mktemp -d "$tools.tmp.XXXXXX")
        # 6.8.0 is the last release for Node.js 18 (Debian's); node-fetch 3 is ESM-only
        jq -n --arg v "$VERDACCIO_VERSION" '{name: "buildvm-test-verdaccio", version: "0.0.0", private: true,
            dependencies: {verdaccio: $v}, overrides: {"node-fetch": "2.7.0"}}' >"$tmp/package.json"
        echo "-- installing verdaccio $VERDACCIO_VERSION from $upstream into $tools"
        if ! (cd "$tmp" && timeout 600 npm install --no-audit --no-fund --loglevel=error) >"$dir/install.log" 2>&1; then
            tail -20 "$dir/install.log" >&2
            rm -rf "$tmp"
            echo "services: cannot install verdaccio $VERDACCIO_VERSION with npm from $upstream (is the npm registry reachable?)" >&2
            exit 1
        fi
        rm -rf "$tools" && mv "$tmp" "$tools"
    ) 9>"$tools.lock" || return 1
    NPM_PORT=$(svc_free_port)
    cat >"$dir/config.yaml" <<EOF_CONFIG
storage: $dir/storage
auth:
  htpasswd:
    file: $dir/htpasswd
    max_users: -1
uplinks:
  upstream:
    url: $upstream
    timeout: 60s
packages:
  '**':
    access: \$all
    proxy: upstream
listen: 127.0.0.1:$NPM_PORT
log: {type: stdout, format: pretty, level: warn}
EOF_CONFIG
    node "$tools/node_modules/verdaccio/bin/verdaccio" --config "$dir/config.yaml" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    svc_wait_port "$NPM_PORT" 60 || { cat "$dir/log" >&2; echo "services: verdaccio did not listen on 127.0.0.1:$NPM_PORT" >&2; return 1; }
    mkdir -p "$dir/prefetch"
    cp "$app/package.json" "$app/package-lock.json" "$dir/prefetch/"
    if ! (cd "$dir/prefetch" && timeout 300 npm ci --omit=dev --no-audit --no-fund --ignore-scripts \
        --cache "$dir/npm-cache" --registry "http://127.0.0.1:$NPM_PORT/") >"$dir/prefetch.log" 2>&1; then
        tail -20 "$dir/prefetch.log" >&2; tail -20 "$dir/log" >&2
        echo "services: verdaccio on 127.0.0.1:$NPM_PORT cannot serve $app's lockfile (its uplink: $upstream)" >&2
        return 1
    fi
}

# svc_ceph_rgw_start: a single-node Ceph with a RADOS Gateway
# (tests/services/ceph-rgw.sh), started in the background because it takes
# ~20 s: the tests that need it call svc_ceph_rgw_wait. Exports
# BUILDVM_TEST_S3_DIR; its env file appears when the gateway is ready, its
# failed file if the start failed.
svc_ceph_rgw_start () {
    local dir=$SVC_DIR/ceph-rgw
    mkdir -p "$dir"
    (
        # up to three tries, each in a directory of its own with its own
        # ports and fsid, so that nothing a failed one left (a daemon slow to
        # die, a socket) can meet the next: a start on a loaded machine has
        # been seen to fail (the OSD's first boot, once a "wrong fsid")
        script=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/services/ceph-rgw.sh
        for try in 1 2 3; do
            if "$script" start "$dir/try$try" >>"$dir/start.log" 2>&1; then
                ln -sfn "try$try" "$dir/cluster"
                exit 0
            fi
            "$script" stop "$dir/try$try" >/dev/null 2>&1
            echo "services: ceph-rgw start $try failed" >>"$dir/start.log"
            sleep 2
        done
        touch "$dir/failed"
    ) &
    echo $! >"$dir/starter.pid"
    export BUILDVM_TEST_S3_DIR=$dir
}

# svc_ceph_rgw_wait [SECONDS]: wait for svc_ceph_rgw_start's gateway, then
# source its env (RGW_ENDPOINT, ... see ceph-rgw.sh). 1 if none was started
# or it failed.
svc_ceph_rgw_wait () {
    local dir=${BUILDVM_TEST_S3_DIR:-} deadline=$(( $(date +%s) + ${1:-120} ))
    [ -n "$dir" ] && [ -d "$dir" ] || return 1
    while [ ! -f "$dir/cluster/env" ]; do
        [ ! -f "$dir/failed" ] || { tail -n 40 "$dir/start.log" >&2; grep -E '^(ceph-rgw|services):' "$dir/start.log" >&2; return 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { echo "services: ceph-rgw not ready" >&2; return 1; }
        sleep 0.2
    done
    set -a
    . "$dir/cluster/env"
    set +a
}

svc_stop () { # NAME-DIR under SVC_DIR, e.g. registry-main
    local pidf=$SVC_DIR/$1/pid
    [ -f "$pidf" ] || return 0
    kill "$(cat "$pidf")" 2>/dev/null || true
    wait "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
}

svc_stop_all () {
    local p d
    if [ -d "$SVC_DIR/ceph-rgw" ]; then
        kill "$(cat "$SVC_DIR/ceph-rgw/starter.pid" 2>/dev/null)" 2>/dev/null || true
        for d in "$SVC_DIR"/ceph-rgw/try*; do
            [ -d "$d" ] || continue
            "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/services/ceph-rgw.sh" stop "$d" || true
        done
    fi
    for p in "$SVC_DIR"/*/pid; do
        [ -f "$p" ] || continue
        kill "$(cat "$p")" 2>/dev/null || true
    done
    sleep 0.1
    for p in "$SVC_DIR"/*/pid; do
        [ -f "$p" ] || continue
        kill -9 "$(cat "$p")" 2>/dev/null || true
    done
    rm -rf "$SVC_DIR"
}
