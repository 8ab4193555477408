#!/usr/bin/env python3
"""Restart after kill -9 onto a snapshot holding a large dedup table.

  restart_bench.py --bin build-rel/server/clickflow [--before-bin OTHER]
                   [--seconds 8] [--smoke]

The server ingests unique-id 1000-event batches (bench_client, 2
connections) for --seconds with snapshots every 2 s and a 24 h dedup ttl, so
every id stays in the table; after one more snapshot it is killed with
SIGKILL and started again on the same data. Prints the ids accepted, the
count after the restart (must be equal), the seconds to /readyz and the log
and snapshot bytes the data directory held at the kill; with
--before-bin, the same for that binary on a run of its own (each binary
reads only the snapshots it wrote).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Server  # noqa: E402


def snapshots_written(srv):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.http_port) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("clickflow_snapshots_total "):
                return int(float(line.split()[1]))
    raise RuntimeError("no clickflow_snapshots_total in /metrics")


def wait_for_a_snapshot_after_now(srv):
    """Waits until two more snapshots are written: the second began after
    the ingest ended, so it covers every accepted id."""
    first = snapshots_written(srv)
    deadline = time.monotonic() + 120
    while snapshots_written(srv) < first + 2:
        if time.monotonic() > deadline:
            raise RuntimeError("no snapshot within 120 s")
        time.sleep(0.2)   # poll pacing only; nothing is timed by it


def kept_bytes(data):
    """(log bytes, snapshot bytes) in the data directory: what the
    retention keeps behind the newest snapshot."""
    log = snap = 0
    for name in os.listdir(data):
        size = os.path.getsize(os.path.join(data, name))
        if name.startswith("wal-"):
            log += size
        elif name.startswith("snapshot-"):
            snap += size
    return log, snap


def one_run(binary, tools, gen, seconds, root):
    os.environ["CLICKFLOW_BIN"] = binary
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    srv = Server(["--idle-timeout", "0", "--snapshot-interval", "2s", "--dedup-ttl", "24h"],
                 data_dir=root)
    srv.start()
    try:
        bodies = [os.path.join(gen, "batch-%d.json" % k) for k in range(4)]
        subprocess.run([os.path.join(tools, "bench_client"), "--port", str(srv.http_port),
                        "--conns", "2", "--duration", str(seconds), "--events-per-body", "1000"]
                       + bodies, check=True, capture_output=True)
        wait_for_a_snapshot_after_now(srv)
        # Read after the snapshots: bench_client leaves at its deadline
        # without waiting for the requests in flight, which the server may
        # still accept (a count read at once missed one 1000-event batch).
        st, stats = srv.request("GET", "/api/v1/stats")
        accepted = stats["accepted"]
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        kept = kept_bytes(os.path.join(root, "data"))
        t0 = time.monotonic()
        srv.start(timeout=900)
        took = time.monotonic() - t0
        st, stats = srv.request("GET", "/api/v1/stats")
        return accepted, stats["accepted"], took, kept
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--before-bin")
    p.add_argument("--tools", default=None)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    tools = a.tools or os.path.dirname(os.path.abspath(a.bin)).replace("server", "tests/bench")
    seconds = 1 if a.smoke else a.seconds
    tmp = tempfile.mkdtemp(prefix="clickflow-restart-")
    try:
        gen = os.path.join(tmp, "gen")
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), "--out", gen, "--bodies",
                        "4", "--log-lines", "10"], check=True, capture_output=True)
        for name, binary in (("this", a.bin), ("before", a.before_bin)):
            if not binary:
                continue
            sent, after, took, (log, snap) = one_run(binary, tools, gen, seconds,
                                                     os.path.join(tmp, "data"))
            print("RESTART %s ids=%d after=%d seconds=%.2f log_mb=%.1f snapshots_mb=%.1f"
                  % (name, sent, after, took, log / 1e6, snap / 1e6), flush=True)
            if after != sent:
                print("restart lost or doubled events: %d before, %d after" % (sent, after))
                return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
