#!/bin/sh
# Long fuzzing runs (not in CI): builds every libFuzzer harness of tests/fuzz
# with clang (-fsanitize=fuzzer plus ASan/UBSan) in build-fuzz/, runs each for
# the given time starting from its committed corpus, then merges into
# tests/fuzz/corpus/<name> only the new inputs that add coverage
# (libFuzzer -merge=1), so the committed corpus stays small.
#
#   tests/fuzz/run-long.sh [seconds per harness, default 600] [harness ...]
#   tests/fuzz/run-long.sh 60            # a minute each, every harness
#   tests/fuzz/run-long.sh 3600 wal      # an hour of WAL replay
#
# Crashes are written to build-fuzz/artifacts/<name>-crash-*; the script
# reports them and exits 1 (fix the bug, then commit a minimised reproducer).
# Environment: FUZZ_BUILD (build directory), FUZZ_JOBS (parallel workers per
# harness, default 1: the machine is shared).
set -eu

secs=${1:-600}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-1}
harnesses=${*:-$(sed -n "s/^  '\([a-z_]*\)' : files('fuzz_.*/\1/p" "$root/tests/fuzz/meson.build")}

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dbuildtype=debugoptimized \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
mkdir -p "$build/artifacts"

failed=0
for h in $harnesses; do
    corpus=$root/tests/fuzz/corpus/$h
    bin=$build/tests/fuzz/fuzz_$h
    ninja -C "$build" "tests/fuzz/fuzz_$h" >/dev/null
    mkdir -p "$corpus"
    # New inputs go to a scratch directory first (libFuzzer writes to the
    # first corpus directory it is given): only the merge touches git.
    work=$(mktemp -d "${TMPDIR:-/tmp}/clickflow-fuzz-$h.XXXXXX")
    before=$(ls "$corpus" | wc -l)
    echo "fuzz_$h: ${secs}s from $before corpus inputs"
    # -jobs writes fuzz-<n>.log into the working directory: keep it there.
    if ! (cd "$build/artifacts" && "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
            -jobs="$jobs" -workers="$jobs" -print_final_stats=1 \
            -artifact_prefix="$build/artifacts/$h-" "$work" "$corpus" \
            >"$build/artifacts/$h.log" 2>&1); then
        echo "fuzz_$h: FAILED, see $build/artifacts/$h.log and $build/artifacts/$h-*"
        failed=1
    fi
    "$bin" -merge=1 -max_len=65536 "$corpus" "$work" >>"$build/artifacts/$h.log" 2>&1
    after=$(ls "$corpus" | wc -l)
    echo "fuzz_$h: $((after - before)) new corpus inputs (now $after)"
    rm -rf "$work"
done
exit $failed
