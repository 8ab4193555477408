#!/usr/bin/env bash
# Group-commit throughput of the write-ahead log alone, per --fsync policy
# (tests/bench/wal_bench.c), in a temp dir on the same file system as /tmp
# unless DIR is given.
#   tests/bench/wal_bench.sh [BUILD_DIR=build] [THREADS=8] [BYTES=1200] [SECONDS=1] [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ninja -C "$build" server/libclickflow_server.a lib/libclickflow.a >/dev/null
work=$(mktemp -d "${5:-/tmp}/clickflow-walbench-XXXXXX")
trap 'rm -rf "$work"' EXIT
cc -O2 -std=c17 -D_GNU_SOURCE -Ilib -Iserver -o "$work/wal_bench" tests/bench/wal_bench.c \
  "$build/server/libclickflow_server.a" "$build/lib/libclickflow.a" \
  $(pkg-config --cflags --libs libcjson) -lpthread -lm
"$work/wal_bench" "$work" "${2:-8}" "${3:-1200}" "${4:-1}"
