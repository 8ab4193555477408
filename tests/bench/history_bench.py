#!/usr/bin/env python3
"""History benchmarks (issue 14): rollup latency over 30 days of hourly
results for 10k pages, and history.db bytes per stored result.

  history_bench.py --bin build/server/clickflow [--pages 10000] [--days 30]
                   [--requests 20] [--smoke]

1. Bytes per result, as the server writes them: a replay-mode trace over
   --pages pages and two simulated days (hourly tumbling windows, 2 h
   sliding windows, sessions) is ingested; history.db (+ its -wal) bytes
   after a checkpoint divided by the rows stored.
2. Rollup latency: a history.db holding `pages x days x 24` hourly tumbling
   results (1-3 users each, sketches in the server's encoding) is written
   directly (ingesting 7.2 million windows would take far longer than the
   query), the server is started on it, and GET
   /api/v1/views/tumbling/rollup over all of it is timed, step 1d and 1h.
"""
import argparse
import os
import random
import shutil
import sqlite3
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Server  # noqa: E402

BASE_TS = 1767225600000  # 2026-01-01T00:00:00Z
HOUR = 3600000
DAY = 24 * HOUR

SCHEMA = """
CREATE TABLE views(name TEXT PRIMARY KEY, additive TEXT NOT NULL, sketch_col TEXT);
CREATE TABLE results(view TEXT NOT NULL, wstart INTEGER NOT NULL, wend INTEGER NOT NULL,
  grp TEXT NOT NULL, revision INTEGER NOT NULL, cols TEXT NOT NULL, sketch BLOB,
  PRIMARY KEY (view, wstart, wend, grp, revision)) WITHOUT ROWID;
"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def bytes_per_result(binary, pages, seed):
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="cf-hbench-")
    try:
        srv = Server(["--idle-timeout", "0", "--window", "1h", "--slide-size", "2h",
                      "--slide", "1h", "--history-retention", "0"], data_dir=tmp)
        srv.bin = binary
        srv.start()
        ts = BASE_TS
        n = 0
        batch = []
        while ts < BASE_TS + 2 * DAY:
            ts += rng.randint(0, 2 * (2 * DAY // (pages * 20)) + 1)
            batch.append({"user_id": "u%d" % rng.randint(0, 4999),
                          "page_url": "/page/%d" % rng.randint(0, pages - 1), "timestamp": ts})
            n += 1
            if len(batch) == 5000:
                st, body = srv.request("POST", "/api/v1/events", batch)
                assert st == 202, (st, body)
                batch = []
        if batch:
            srv.request("POST", "/api/v1/events", batch)
        srv.request("POST", "/api/v1/watermark", {"watermark": ts + DAY})
        while True:
            st, body = srv.request("GET", "/api/v1/stats")
            if body["history"]["pending"] == 0:
                break
            time.sleep(0.05)
        srv.stop()
        path = os.path.join(tmp, "data", "history.db")
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = dict(db.execute("SELECT view, count(*) FROM results GROUP BY view").fetchall())
        sk = db.execute("SELECT avg(length(sketch)) FROM results WHERE sketch IS NOT NULL").fetchone()[0]
        db.close()
        size = os.path.getsize(path) + (os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0)
        total = sum(rows.values())
        print("BENCH history_bytes events=%d rows=%d tumbling=%d sliding=%d sessions=%d "
              "db_bytes=%d bytes_per_row=%.1f avg_sketch_bytes=%.1f"
              % (n, total, rows.get("tumbling", 0), rows.get("sliding", 0),
                 rows.get("sessions", 0), size, size / max(1, total), sk or 0), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sketch(users):
    hs = sorted(users)
    return struct.pack("<BI", 0, len(hs)) + b"".join(struct.pack("<Q", h) for h in hs)


def build_db(path, pages, days, seed):
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO views VALUES ('tumbling', 'count', 'unique_users'),"
               " ('sliding', 'count', 'unique_users'), ('sessions', 'page_views', NULL)")
    db.execute("PRAGMA user_version=1")
    names = sorted("/page/%d" % p for p in range(pages))
    user_pool = [rng.getrandbits(64) for _ in range(20000)]

    def rows():
        for h in range(days * 24):
            s = BASE_TS + h * HOUR
            for g in names:
                u = rng.sample(user_pool, rng.randint(1, 3))
                c = len(u) + rng.randint(0, 3)
                yield ("tumbling", s, s + HOUR, g, 0,
                       '{"count":%d,"unique_users":%d}' % (c, len(u)), sketch(u))
    db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def rollup_latency(binary, pages, days, requests, seed, keep=None):
    tmp = keep or tempfile.mkdtemp(prefix="cf-hbench-")
    try:
        t0 = time.monotonic()
        if not os.path.exists(os.path.join(tmp, "data", "history.db")):
            os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
            build_db(os.path.join(tmp, "data", "history.db"), pages, days, seed)
        built = time.monotonic() - t0
        n_rows = pages * days * 24
        srv = Server(["--history-retention", "0"], data_dir=tmp)
        srv.bin = binary
        srv.start()
        try:
            frm, to = BASE_TS, BASE_TS + days * DAY
            for step in ("1d", "1h"):
                lat = []
                items = None
                for _ in range(requests):
                    t = time.monotonic()
                    st, body = srv.request("GET", "/api/v1/views/tumbling/rollup?from=%d&to=%d&step=%s"
                                           % (frm, to, step), timeout=600)
                    lat.append((time.monotonic() - t) * 1000)
                    assert st == 200, (st, body)
                    items = body["items"]
                assert len(items) == (days if step == "1d" else days * 24), len(items)
                print("BENCH history_rollup pages=%d days=%d rows=%d step=%s requests=%d "
                      "p50_ms=%.1f p99_ms=%.1f max_ms=%.1f build_s=%.1f"
                      % (pages, days, n_rows, step, requests, pct(lat, 50), pct(lat, 99), max(lat),
                         built), flush=True)
            # One page over the whole range: the common drill-down.
            st, body = srv.request("GET", "/api/v1/windows?type=tumbling&page_url=%%2Fpage%%2F7"
                                   "&from=%d&to=%d&limit=100000" % (frm, to))
            assert st == 200 and len(body["items"]) == days * 24, (st, len(body["items"]))
        finally:
            srv.stop()
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/server/clickflow")
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: only checks the script runs")
    ap.add_argument("--keep", help="directory for the rollup database, kept and reused (same sizes)")
    ap.add_argument("--skip-bytes", action="store_true", help="only the rollup latency")
    a = ap.parse_args()
    if a.smoke:
        a.pages, a.days, a.requests = 50, 2, 3
    if not a.skip_bytes:
        bytes_per_result(a.bin, min(a.pages, 2000), a.seed)
    rollup_latency(a.bin, a.pages, a.days, a.requests, a.seed, a.keep)


if __name__ == "__main__":
    main()
