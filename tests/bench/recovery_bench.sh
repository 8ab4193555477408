#!/usr/bin/env bash
# Recovery time: writes a log of N events (default 10 million) straight into
# a fresh data dir with tests/bench/wal_gen.c (the engine's own record
# format, no HTTP), starts clickflow on it and reports how long it takes to
# become ready (GET /readyz), plus the server's own recovery log line and
# the time the log's replay takes without the engine. With BASELINE_BIN (a
# clickflow binary of another commit), the same log is recovered by it too,
# on a copy, in the same run (before/after figures).
#   tests/bench/recovery_bench.sh [BUILD_DIR=build] [N=10000000] [BASELINE_BIN]
# Needs a configured build dir (meson setup build && meson compile -C build).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
n=${2:-10000000}
ninja -C "$build" server/clickflow >/dev/null

work=$(mktemp -d /tmp/clickflow-recovery-XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
# The generator links the server's static libraries (not a meson target, so
# the bench directory's meson.build stays the bench owner's).
for tool in wal_gen wal_replay; do
  cc -O2 -std=c17 -D_GNU_SOURCE -Ilib -Iserver -o "$work/$tool" "tests/bench/$tool.c" \
    "$build/server/libclickflow_server.a" "$build/lib/libclickflow.a" \
    $(pkg-config --cflags --libs libcjson) -lpthread -lm
done
"$work/wal_gen" "$work/data" "$n"
du -sh "$work/data" | sed 's/^/log on disk: /'
# The log's own share: read + CRC + sequence checks, no engine (page cache warm).
"$work/wal_replay" "$work/data" 2>/dev/null

# recover BIN DIR LABEL: starts BIN on DIR, times it to /readyz, prints the
# events/s of recovery and the recovered stats, stops it.
recover() {
  local bin=$1 dir=$2 label=$3
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  wsport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  t0=$(date +%s.%N)
  "$bin" --data-dir "$dir" --idle-timeout 0 --http-port "$port" \
    --ws-port "$wsport" --snapshot-interval 1h >"$work/server.log" 2>&1 &
  pid=$!
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; echo "clickflow exited"; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  s=$(echo "$t1 - $t0" | bc)
  echo "recovery ($label): $n events replayed, ready after $s s (start to /readyz), $(echo "$n / $s" | bc) events/s"
  grep -iE "recover|replay" "$work/server.log" || true
  curl -fsS "http://127.0.0.1:$port/api/v1/stats" | python3 -c \
    'import json,sys; s=json.load(sys.stdin); print("stats: accepted=%s watermark=%s" % (s.get("accepted"), s.get("watermark")))'
  kill "$pid"; wait "$pid" || true
  pid=
}
if [ -n "${3:-}" ]; then
  cp -r "$work/data" "$work/data-baseline"
  recover "$3" "$work/data-baseline" "baseline $3"
  rm -rf "$work/data-baseline"
fi
recover "$build/server/clickflow" "$work/data" "$build"
