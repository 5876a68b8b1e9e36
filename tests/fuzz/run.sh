#!/bin/bash
# run.sh - drive the fuzz targets (docs/fuzzing.md); called by the Makefile
#
#   run.sh replay BUILDDIR NAME...          run BUILDDIR/standalone/fuzz_NAME over
#                                           tests/fuzz/corpus/NAME (make fuzz-corpus)
#   run.sh fuzz BUILDDIR SECONDS NAME...    run BUILDDIR/bin/fuzz_NAME under libFuzzer for
#                                           SECONDS each, one target at a time (make fuzz)
#
# `fuzz` writes new inputs to a scratch corpus BUILDDIR/work/NAME/corpus and reads
# the checked-in corpus as a second, read-only directory, so the checked-in one
# only ever changes by a reproducer: any crash, leak, timeout or out-of-memory
# input libFuzzer saves is copied to tests/fuzz/corpus/NAME/crash-*, where it
# stays (with the fix) so that every later `make check` replays it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
corpus=$here/corpus

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

replay() {
    local build=$1; shift
    local passed=0 failed=()
    for name in "$@"; do
        echo "== fuzz_$name over tests/fuzz/corpus/$name"
        if "$build/standalone/fuzz_$name" "$corpus/$name"; then
            passed=$((passed + 1))
        else
            failed+=("$name")
        fi
    done
    echo "fuzz corpus replay: $passed passed, ${#failed[@]} failed"
    if [ ${#failed[@]} -gt 0 ]; then
        echo "failed targets: ${failed[*]}"
        return 1
    fi
}

fuzz() {
    local build=$1 seconds=$2; shift 2
    local found=()
    for name in "$@"; do
        local work=$build/work/$name
        local dict=()
        mkdir -p "$work/corpus" "$work/artifacts"
        if [ -f "$here/$name.dict" ]; then
            dict=(-dict="$here/$name.dict")
        else
            case $name in job|spec|config|policy|jsonx) dict=(-dict="$here/json.dict") ;; esac
        fi
        echo "== fuzz_$name for ${seconds}s (scratch corpus $work/corpus)"
        # -timeout: an input that takes 10 s is a hang worth a reproducer;
        # -rss_limit_mb: the machine is shared, and no parser needs this much
        "$build/bin/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$work/artifacts/" -print_final_stats=1 "${dict[@]}" \
            "$work/corpus" "$corpus/$name" > "$work/log" 2>&1
        local rc=$?
        if [ "$rc" -eq 0 ]; then tail -n 12 "$work/log"; else tail -n 80 "$work/log"; fi
        local saved=0
        for f in "$work"/artifacts/*; do
            [ -f "$f" ] || continue
            local base dest
            base=$(basename "$f")
            case $base in
                crash-*) dest=$base ;;
                *) dest=crash-$base ;;  # leak-, timeout-, oom-, slow-unit-
            esac
            case $base in slow-unit-*) rm -f "$f"; continue ;; esac
            cp "$f" "$corpus/$name/$dest"
            rm -f "$f"
            echo "   reproducer saved: tests/fuzz/corpus/$name/$dest"
            saved=1
        done
        if [ "$rc" -ne 0 ] || [ "$saved" -ne 0 ]; then
            found+=("$name")
        fi
    done
    if [ ${#found[@]} -gt 0 ]; then
        echo "fuzz: targets that failed: ${found[*]} (see $build/work/NAME/log)"
        return 1
    fi
    echo "fuzz: $# targets ran ${seconds}s each without a finding"
}

mode=${1:-}
shift || true
case $mode in
    replay) replay "$@" ;;
    fuzz) fuzz "$@" ;;
    *) echo "usage: $0 replay BUILDDIR NAME... | fuzz BUILDDIR SECONDS NAME..." >&2; exit 2 ;;
esac
