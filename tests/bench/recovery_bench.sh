#!/usr/bin/env bash
# Recovery time: writes a log of N events (default 10 million) straight into
# a fresh data dir with tests/bench/wal_gen.c (the engine's own record
# format, no HTTP), starts clickflow on it and reports how long it takes to
# become ready (GET /readyz), plus the server's own recovery log line and
# the time the log's replay takes without the engine. With BASELINE_BIN (a
# clickflow binary of another commit), the same log is recovered by it too,
# on a copy, in the same run (before/after figures).
#   tests/bench/recovery_bench.sh [BUILD_DIR=build] [N=10000000] [BASELINE_BIN] [CRASH=1]
# Arguments by position, or by name (BUILD_DIR=build-rel N=1000000
# BASELINE_BIN=/tmp/old/clickflow), in any order. Besides the wall time it
# reports the server's CPU seconds until ready (utime + stime of the
# process): on a machine shared with other work, the wall time follows the
# load, the CPU time much less.
# Then, once the server's CPU time stops growing (the shards and the
# history writer have done the log's work), the settled CPU seconds, total
# and per thread by name (cf-shard-N, cf-replay-dec: the decoder, gone by
# then, so the total minus the others; clickflow: the main (recovering)
# thread and the history writer, by thread id), with the minor page faults
# of the process and of each thread (minflt: memory touched for the first
# time, or again after it was given back).
# CRASH=1 also times a recovery after a crash (issue 15): once the first
# recovery is ready and history.db holds every result it fired, the server
# is killed with SIGKILL (no shutdown snapshot) and started again, so the
# whole log is replayed onto a history.db that holds its results.
# Needs a configured build dir (meson setup build && meson compile -C build).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build
n=10000000
baseline=
crash=
pos=0
for arg in "$@"; do
  case $arg in
    BUILD_DIR=*) build=${arg#BUILD_DIR=} ;;
    N=*) n=${arg#N=} ;;
    BASELINE_BIN=*) baseline=${arg#BASELINE_BIN=} ;;
    CRASH=*) crash=${arg#CRASH=} ;;
    *)
      pos=$((pos + 1))
      case $pos in 1) build=$arg ;; 2) n=$arg ;; 3) baseline=$arg ;; esac ;;
  esac
done
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

# settled PID: waits until the process's CPU time stops growing (0.5 s
# apart), then prints it, total and per thread (utime + stime).
settled() {
  local p=$1 prev=-1 c
  while c=$(awk '{print $14 + $15}' "/proc/$p/stat") && [ "$c" != "$prev" ]; do
    prev=$c
    sleep 0.5
  done
  awk -v hz="$(getconf CLK_TCK)" '
    FNR == 1 && FILENAME ~ /\/stat$/ {
      # comm may hold spaces: the fields after the closing parenthesis.
      line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
      cpu = (f[12] + f[13]) / hz
      if (FILENAME ~ /task/) {
        n = FILENAME; sub(/\/stat$/, "", n); sub(/^.*\//, "", n)
        name = names[n] ? names[n] : n
        if (cpu >= 0.01) { per = per sprintf(" %s %.2f (%dk faults)", name, cpu, f[8] / 1000); sum += cpu }
      } else { total = cpu; faults = f[8] }
      next
    }
    FNR == 1 { n = FILENAME; sub(/\/comm$/, "", n); sub(/^.*\//, "", n); names[n] = $0 "[" n "]" }
    END { printf "settled: server CPU %.2f s, %dk minor page faults; per thread:%s; exited threads (decoder) %.2f\n", total, faults / 1000, per, total - sum }
  ' /proc/"$p"/task/*/comm /proc/"$p"/task/*/stat /proc/"$p"/stat
}

# recover BIN DIR LABEL [kill]: starts BIN on DIR, times it to /readyz,
# prints the events/s of recovery and the recovered stats, stops it (with
# kill: waits until the history writer has stored every result and its
# replay positions, then SIGKILL).
recover() {
  local bin=$1 dir=$2 label=$3 how=${4:-}
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
  # utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat")
  s=$(echo "$t1 - $t0" | bc)
  echo "recovery ($label): $n events replayed, ready after $s s (start to /readyz), $(echo "$n / $s" | bc) events/s; server CPU $cpu s, $(echo "$n / $cpu" | bc) events per CPU-second"
  grep -E "info: (recovery|wal):" "$work/server.log" || true
  settled "$pid"
  curl -fsS "http://127.0.0.1:$port/api/v1/stats" | python3 -c \
    'import json,sys; s=json.load(sys.stdin); print("stats: accepted=%s watermark=%s" % (s.get("accepted"), s.get("watermark")))'
  if [ "$how" = kill ]; then
    until curl -fsS "http://127.0.0.1:$port/api/v1/stats" | python3 -c \
        'import json,sys; h=json.load(sys.stdin)["history"]; sys.exit(0 if h and h["pending"] == 0 else 1)'; do
      sleep 0.2
    done
    # Replay positions (a build that has them): stored by the writer after
    # an idle wait; a build without the table has none to wait for.
    until python3 - "$dir/history.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
try:
    rows = db.execute("SELECT n_shards FROM positions WHERE w > %d" % -(1 << 63)).fetchall()
except sqlite3.OperationalError:
    sys.exit(0)
sys.exit(0 if rows and len(rows) == rows[0][0] else 1)
PY
    do
      sleep 0.2
    done
    kill -9 "$pid"
  else
    kill "$pid"
  fi
  wait "$pid" || true
  pid=
}
if [ -n "$baseline" ]; then
  cp -r "$work/data" "$work/data-baseline"
  if [ -n "$crash" ]; then
    recover "$baseline" "$work/data-baseline" "baseline $baseline" kill
    recover "$baseline" "$work/data-baseline" "baseline $baseline, after kill -9"
  else
    recover "$baseline" "$work/data-baseline" "baseline $baseline"
  fi
  rm -rf "$work/data-baseline"
fi
if [ -n "$crash" ]; then
  recover "$build/server/clickflow" "$work/data" "$build" kill
  recover "$build/server/clickflow" "$work/data" "$build, after kill -9"
else
  recover "$build/server/clickflow" "$work/data" "$build"
fi
