#!/usr/bin/env bash
# Recovery time: writes a log of N events (default 10 million) straight into
# a fresh data dir with tests/bench/wal_gen.c (the engine's own record
# format, no HTTP), starts clickflow on it and reports how long it takes to
# become ready (GET /readyz), plus the server's own recovery log line and
# the time the log's replay takes without the engine.
#   tests/bench/recovery_bench.sh [BUILD_DIR=build] [N=10000000]
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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
wsport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
t0=$(date +%s.%N)
"$build/server/clickflow" --data-dir "$work/data" --idle-timeout 0 --http-port "$port" \
  --ws-port "$wsport" --snapshot-interval 1h >"$work/server.log" 2>&1 &
pid=$!
until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; echo "clickflow exited"; exit 1; }
  sleep 0.05
done
t1=$(date +%s.%N)
echo "recovery: $n events replayed, ready after $(echo "$t1 - $t0" | bc) s (start to /readyz)"
grep -iE "recover|replay" "$work/server.log" || true
curl -fsS "http://127.0.0.1:$port/api/v1/stats" | python3 -c \
  'import json,sys; s=json.load(sys.stdin); print("stats: accepted=%s watermark=%s" % (s.get("accepted"), s.get("watermark")))'
