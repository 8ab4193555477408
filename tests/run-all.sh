#!/usr/bin/env bash
# The README's test command: install what is missing, then build and run
# every suite twice: a warnings-as-errors build and an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh --test

run_build() {  # dir, extra meson args...
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  meson compile -C "$dir"
  meson test -C "$dir" --print-errorlogs "${MESON_TEST_ARGS[@]}"
}

MESON_TEST_ARGS=()
echo "== build-ci: -Dwerror=true"
run_build build-ci -Dwerror=true -Dbuildtype=debugoptimized

echo "== build-asan: -Db_sanitize=address,undefined"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# The browser suite checks the page, not memory safety; it runs once above.
MESON_TEST_ARGS=(--no-suite browser --no-suite bench)
run_build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
echo "all suites passed"
