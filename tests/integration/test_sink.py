"""PostgreSQL sink (SPEC 16) against a real PostgreSQL started here (pg.py).

- Every history row reaches PostgreSQL, one table per view, equal to
  history.db and to the reference model's emissions, also when PostgreSQL is
  stopped mid-run while ingest goes on (no 503; the rows wait in the backlog
  on disk, counted in stats and /metrics) and clickflow itself restarts
  while it is down: once it is back every row is there exactly once.
- A malformed --sink URL or a wrong password is a start-up error (exit 2)
  with a clear message; an unreachable server is not.

SINK_SEED overrides the seed (printed).
"""
import json
import os
import random
import sqlite3
import subprocess
import time

from harness import Server, free_port, run_tests
from pg import Postgres
from reference import Reference
from test_history import (ARGS, HOUR, SETTINGS, db_rows, ingest, make_trace, raise_wm, ref_rows,
                          assert_rows_equal)

SEED = int(os.environ.get("SINK_SEED", random.randrange(1 << 30)))
print("SINK_SEED=%d" % SEED, flush=True)

VIEWS = ("tumbling", "sliding", "sessions", "hv_sink")
# A user SQL view: its rows reach PostgreSQL like the built-ins' (own table).
USER_VIEW = ("CREATE VIEW hv_sink AS SELECT page_url, COUNT(*) AS n, COUNT(DISTINCT user_id) AS du"
             " FROM clicks WINDOW TUMBLING (SIZE 1 HOUR) GRACE PERIOD 2 HOURS GROUP BY page_url")


def sqlite_full_rows(srv):
    path = os.path.join(srv.data_dir, "data", "history.db")
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return sorted((v, s, e, g, r, json.dumps(json.loads(c), sort_keys=True),
                       sk.hex() if sk is not None else None)
                      for v, s, e, g, r, c, sk in db.execute(
                          "SELECT view, wstart, wend, grp, revision, cols, sketch FROM results"))
    finally:
        db.close()


def pg_full_rows(pg):
    rows = []
    for v in VIEWS:
        for s, e, g, r, c, sk in pg.query(
                "SELECT wstart, wend, grp, revision, cols::text, coalesce(encode(sketch, 'hex'),"
                " '-') FROM clickflow_%s" % v):
            rows.append((v, int(s), int(e), g, int(r), json.dumps(json.loads(c), sort_keys=True),
                         None if sk == "-" else sk))
    return sorted(rows)


def stats(srv):
    st, body = srv.request("GET", "/api/v1/stats")
    assert st == 200, (st, body)
    return body


def wait_for(srv, pred):
    while True:
        body = stats(srv)
        if pred(body):
            return body
        time.sleep(0.05)  # waiting for a background thread, not a timing assertion


def test_rows_equal_sqlite_across_an_outage():
    rng = random.Random(SEED)
    evs = make_trace(rng, 2400, 3)
    ref = Reference(SETTINGS)
    with Postgres() as pg:
        srv = Server(ARGS + ["--sink", pg.url()])
        srv.start()
        try:
            st, body = srv.request("POST", "/api/v1/sql", USER_VIEW,
                                   {"Content-Type": "application/sql"})
            assert st == 200, (st, body)
            third = len(evs) // 3
            ingest(srv, ref, evs[:third])
            wait_for(srv, lambda b: b["history"]["pending"] == 0 and b["sink"]["sent"] > 0
                     and b["sink"]["backlog_bytes"] == 0)
            pg.stop()
            # Ingest goes on: every request is a 202 (ingest() asserts it).
            ingest(srv, ref, evs[third:2 * third])
            body = wait_for(srv, lambda b: b["history"]["pending"] == 0)
            assert body["sink"]["backlog_bytes"] > 0 and body["sink"]["backlog_rows"] > 0, body["sink"]
            st, text = srv.request("GET", "/metrics")
            assert "clickflow_sink_backlog_bytes %d" % body["sink"]["backlog_bytes"] in text
            # clickflow restarts while PostgreSQL is down: the backlog is on disk.
            assert srv.stop() == 0
            srv.start()
            ingest(srv, ref, evs[2 * third:])
            pg.start()
            raise_wm(srv, ref, max(e["ts"] for e in evs) + 3 * HOUR)
            wait_for(srv, lambda b: b["history"]["pending"] == 0 and b["sink"]["connected"]
                     and b["sink"]["backlog_bytes"] == 0)
            assert_rows_equal([r for r in db_rows(srv) if r[0] != "hv_sink"], ref_rows(ref),
                              "history.db")
            lite = sqlite_full_rows(srv)
            assert any(r[0] == "hv_sink" for r in lite), "no user view rows"
            got = pg_full_rows(pg)
            assert len(got) == len(set((r[0], r[1], r[2], r[3], r[4]) for r in got)), "duplicates"
            assert got == lite, "PostgreSQL has %d rows, history.db %d; first difference %r" % (
                len(got), len(lite), next(((a, b) for a, b in zip(got, lite) if a != b), None))
            assert stats(srv)["sink"]["dropped"] == 0
        finally:
            srv.stop()


def run_exit(args):
    """Runs clickflow until it exits (start-up errors); (code, output)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="clickflow-sink-")
    cmd = [os.environ.get("CLICKFLOW_BIN", "build/server/clickflow"), "--bind", "127.0.0.1",
           "--http-port", str(free_port()), "--ws-port", str(free_port()),
           "--data-dir", os.path.join(d, "data")] + args
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def test_bad_sink_urls_and_passwords_are_startup_errors():
    for url, reason in (("mysql://u:p@127.0.0.1/db", "not a postgresql:// (or postgres://) URL"),
                        ("postgresql://u:p@127.0.0.1:5432/db?sslmode=bogus&x=%zz", "malformed URL"),
                        ("postgresql://u:p@127.0.0.1/db?nosuchoption=1", "malformed URL")):
        code, out = run_exit(["--sink", url])
        assert code == 2 and reason in out, (url, code, out)
        assert "u:p@" not in out, out   # the password is not echoed
    with Postgres() as pg:
        code, out = run_exit(["--sink", pg.url(password="wrong")])
        assert code == 2 and "cannot log in" in out and "password" in out, (code, out)
        # Without --history there is nothing to sink.
        code, out = run_exit(["--sink", pg.url(), "--history", "off"])
        assert code == 2 and "--history on" in out, (code, out)
    # Unreachable now is not an error: the backlog waits for it.
    with Server(["--idle-timeout", "0", "--sink",
                 "postgresql://u:p@127.0.0.1:%d/db" % free_port()]) as srv:
        assert stats(srv)["sink"]["connected"] is False
        assert "not reachable now" in srv.read_log()


if __name__ == "__main__":
    run_tests([test_rows_equal_sqlite_across_an_outage,
               test_bad_sink_urls_and_passwords_are_startup_errors])
