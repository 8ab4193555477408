#!/usr/bin/env bash
# The benchmark command of the README: installs the baselines (wrk,
# nginx-light, goaccess from Debian), builds a release tree in build-bench/,
# runs every scenario and writes the table at the top of BENCHMARKS.md (the
# dated sections below it are kept).
#   tests/bench/run.sh            full run (about 16 minutes on 2 cores)
#   tests/bench/run.sh --smoke    about a second per scenario, writes nothing
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/install-deps.sh --bench
[ -f build-bench/build.ninja ] || meson setup build-bench --buildtype=release -Dbrowser_tests=false >/dev/null
meson compile -C build-bench >/dev/null
out=()
[ "${1:-}" = "--smoke" ] || out=(--out BENCHMARKS.md)
exec python3 tests/bench/run.py --bin build-bench/server/clickflow --tools build-bench/tests/bench "${out[@]}" "$@"
