# tests/integration/lib.sh - sourced by every integration test
#
# Gives each test its own BUILDVM_HOME under a temporary directory (removed at
# exit), the path of the binary, and assertions that print what they saw.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILDVM=${BUILDVM:-$ROOT/build/buildvm}
# The same runner with its fault points compiled in (make build/test/buildvm;
# runner/lib/fault.h): the crash tests run it, the production binary has none.
BUILDVM_TEST=${BUILDVM_TEST:-$ROOT/build/test/buildvm}
export BUILDVM_IMAGES=${BUILDVM_IMAGES:-$ROOT/build/images}
T=$(mktemp -d /tmp/buildvm-it.XXXXXX)
export BUILDVM_HOME=$T/home
mkdir -p "$BUILDVM_HOME"
WORK=$BUILDVM_HOME/work

. "$ROOT/tests/lib/services.sh"
SVC_DIR=$T/svc
_cleanup () {
    # a test's own EXIT trap that runs commands first saves the status in _rc
    local rc=${_rc:-$?}
    svc_stop_all 2>/dev/null || true
    # never leave a VMM of ours behind, even when a test failed
    pkill -9 -f "$T" 2>/dev/null || true
    rm -rf "$T"
    exit $rc
}
trap _cleanup EXIT

fail () { echo "FAIL: $*" >&2; exit 1; }
need_test_build () {
    [ -x "$BUILDVM_TEST" ] || fail "$BUILDVM_TEST is missing: make build/test/buildvm (make integration builds it)"
}
skip () { echo "SKIP: $*"; exit 77; }
note () { echo "-- $*"; }

assert_eq () { # EXPECTED ACTUAL WHAT
    [ "$1" = "$2" ] || fail "$3: expected [$1], got [$2]"
}
assert_contains () { # HAYSTACK-FILE NEEDLE
    grep -qF -- "$2" "$1" || { echo "---- $1:"; tail -30 "$1"; fail "$1 does not contain [$2]"; }
}
assert_not_contains () {
    if grep -qF -- "$2" "$1"; then echo "---- $1:"; grep -nF -- "$2" "$1" | head; fail "$1 contains [$2]"; fi
}

# Run a command, record its exit status in $RC, stdout in $T/out, stderr in $T/err.
run () {
    set +e
    "$@" >"$T/out" 2>"$T/err"
    RC=$?
    set -e
}

# QEMUs that were already running when this test started are not ours.
# (Every VMM buildvm starts is named `-name buildvm-<job>`; a jailed one has
# /vm/... paths, so its command line says nothing about this test's files.)
_preexisting_vmms=" $( (pgrep -f 'qemu-system-x86_64 -name buildvm-' || true) | tr '\n' ' ') "

# A VMM started by this test names this test's files: on its command line, in
# its open files, or - jailed, where it sees only /vm/... - as the sources of
# its bind mounts. (Other tests, of other trees, run VMs at the same time.)
_vmm_is_ours () {
    grep -qF "$T/" "/proc/$1/cmdline" "/proc/$1/mountinfo" 2>/dev/null && return 0
    ls -l "/proc/$1/fd" 2>/dev/null | grep -qF "$T/"
}

# The VMMs of this test still running whose name matches an extended regex
# (default: every buildvm VMM), one pid per line: `vmms_of_ours 'buildvm-(a|b),'`.
# Tests run beside each other may use the same job names, so a name alone
# does not make a VMM ours; _vmm_is_ours decides.
vmms_of_ours () {
    local p
    for p in $(pgrep -f "qemu-system-x86_64 -name ${1:-buildvm-}" || true); do
        case $_preexisting_vmms in *" $p "*) continue ;; esac
        _vmm_is_ours "$p" && echo "$p"
    done
    return 0
}

# Nothing of ours is left: no VMM process started since the test began, no
# job directory, no jail uid lock.
assert_no_leftovers () {
    local procs
    # VMM_NAME_PREFIX: a test whose job ids share a prefix looks only at its
    # own VMMs, not at those of tests running beside it on the machine
    procs=$(vmms_of_ours "${VMM_NAME_PREFIX:-buildvm-}" | tr '\n' ' ')
    [ -z "$procs" ] || fail "VMM processes left behind: $procs($(ps -o pid,args -p "$(echo $procs | tr ' ' ,)" | tail -n +2))"
    if [ -d "$WORK" ]; then
        local left
        left=$(find "$WORK" -mindepth 1 | head -5)
        [ -z "$left" ] || fail "job files left behind: $left"
    fi
}

# Max resident set size (KiB) of a process while a command runs: `peak_rss CMD...`
# sets PEAK_KB and RC.
peak_rss () {
    set +e
    "$@" >"$T/out" 2>"$T/err" &
    local pid=$! peak=0 v
    while kill -0 "$pid" 2>/dev/null; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
        sleep 0.1
    done
    wait "$pid"
    RC=$?
    set -e
    PEAK_KB=$peak
}

# --- deploy pipeline helpers ------------------------------------------------------

# pl_registry: a private registry with htpasswd auth; sets REG (host:port),
# REG_CREDS (user:pass) and writes the runner's credentials file (mode 0600).
pl_registry () {
    svc_registry main buildvm "pw-$$"
    REG=$REG_main_ADDR
    REG_CREDS="buildvm:pw-$$"
    printf '{"username": "buildvm", "password": "pw-%s"}\n' "$$" >"$T/registry-creds.json"
    chmod 600 "$T/registry-creds.json"
}

# pl_config [JQ-FILTER]: write $T/runner.json for this test's home and
# registry, optionally transformed by a jq filter. Sets CONFIG. The tests'
# git servers are on 127.0.0.1, which a repository URL may reach only by the
# operator's exception (checkout.allow_addresses; t_egress_repo_url drops it).
pl_config () {
    CONFIG=$T/runner.json
    jq -n --arg home "$BUILDVM_HOME" --arg url "http://${REG:-127.0.0.1:9}" \
        --arg creds "$T/registry-creds.json" --arg images "$BUILDVM_IMAGES" '
        {home: $home, images: {dir: $images},
         registry: {url: $url, credentials: $creds},
         checkout: {allow_addresses: ["127.0.0.1/32"]}}' | jq "${1:-.}" >"$CONFIG"
}

# pl_repo DIR: make DIR a git repository with everything in it committed on
# main; prints the commit.
pl_repo () { pl_commit "$1" commit; }

# pl_commit DIR MSG: commit everything in DIR, on the branch checked out (a
# new repository on `main` where DIR is not one yet); prints the commit.
pl_commit () {
    [ -d "$1/.git" ] || git -C "$1" init -q -b main . || return
    (cd "$1" && git add -A && git -c user.name=t -c user.email=t@example.invalid commit -qm "$2" \
        && git rev-parse HEAD)
}

# pl_job FILE ID APP REPO COMMIT: write a deploy request.
pl_job () {
    jq -n --arg id "$2" --arg app "$3" --arg repo "$4" --arg commit "$5" \
        '{id: $id, app: $app, repo: $repo, commit: $commit, ref: "refs/heads/main"}' >"$1"
}

# pl_tag_exists REPO TAG: does the registry have it?
pl_tag_exists () {
    skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/$1:$2" >/dev/null 2>&1
}

# pl_artifact APP/COMMIT NAME: a stored artifact's path after `buildvm
# artifacts get` decrypted it (artifacts are encrypted at rest, so the store's
# files are not the build's bytes) into $T/artifacts/APP/COMMIT/NAME; the path
# is printed also when there is no such artifact (then no file is there)
pl_artifact () {
    local out=$T/artifacts/$1/$2
    mkdir -p "$(dirname "$out")"
    rm -f "$out"
    "$BUILDVM" artifacts get --config "$CONFIG" -o "$out" "$1" "$2" 2>"$T/artifact-err" || true
    echo "$out"
}

# pl_record ID [APP]: the job record's path (records are kept per app:
# state/jobs/<app>/<id>.json; without APP, the one app that has ID)
pl_record () {
    if [ -n "${2:-}" ]; then echo "$BUILDVM_HOME/state/jobs/$2/$1.json"; return; fi
    local f
    for f in "$BUILDVM_HOME"/state/jobs/*/"$1.json"; do echo "$f"; return; done
}

# --- daemon helpers -----------------------------------------------------------------

# sv_app DIR [STEP]: a minimal-profile app whose one step is STEP (default a
# short echo), with an image; prints its commit
sv_app () {
    mkdir -p "$1"
    jq -n --arg step "${2:-echo built}" '{profile: "minimal", steps: [$step], image: {from: "."}}' >"$1/buildvm.json"
    pl_repo "$1"
}

# sv_start NAME [ARGS...]: start `buildvm serve` in the background with
# $CONFIG; its pid in SV_PID_<NAME>, its log in $T/serve-NAME.log
sv_start () {
    local name=$1; shift
    "$BUILDVM" serve --config "$CONFIG" --name "$name" "$@" >"$T/serve-$name.log" 2>&1 &
    eval "SV_PID_${name//-/_}=$!"
}

# sv_takeover JOB APP: runner a leases JOB and is paused (with its workers)
# while it runs, past the lease; runner b takes the job over and finishes it;
# then a is resumed, and this waits until it is fenced off (or lost its
# lease), its log in $T/serve-a.log; the record as b left it is
# $T/takeover-record.json. The config's lease must be under 5 s.
sv_takeover () {
    local job=$1 app=$2 workers
    sv_start a
    for _ in $(seq 100); do [ "$(sv_state "$job")" = running ] && break; sleep 0.1; done
    sleep 0.5
    workers=$(pgrep -P "$SV_PID_a" | tr '\n' ' ')
    kill -STOP "$SV_PID_a" $workers
    sleep 5 # past the lease
    sv_start b
    for _ in $(seq 300); do [ "$(sv_state "$job")" = done ] && break; sleep 0.2; done
    [ "$(sv_state "$job")" = done ] || { cat "$T/serve-a.log" "$T/serve-b.log"; "$BUILDVM" status --config "$CONFIG" --json "$job" | jq -c .queue; fail "not taken over and finished"; }
    cp "$(pl_record "$job")" "$T/takeover-record.json" # as it was when b finished
    kill -CONT $workers "$SV_PID_a"
    for _ in $(seq 150); do grep -q "job=$job app=$app event=fenced\|event=lease.lost" "$T/serve-a.log" && break; sleep 0.2; done
    sleep 2
}

# sv_wait_done COUNT [SECONDS]: wait until COUNT jobs are done or dead
sv_wait_done () {
    local want=$1 deadline=$(( $(date +%s) + ${2:-120} )) n
    while :; do
        n=$("$BUILDVM" jobs --config "$CONFIG" --json 2>/dev/null | jq '(.done | length) + (.dead | length)' || echo 0)
        [ "$n" -ge "$want" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || { "$BUILDVM" jobs --config "$CONFIG"; return 1; }
        sleep 0.3
    done
}

# sv_state JOB: the job's state on the queue
sv_state () { "$BUILDVM" status --config "$CONFIG" --json "$1" 2>/dev/null | jq -r '.queue.state // "none"'; }
