"""History of user SQL views (SPEC 13, 16): every final result of every
windowed user view (each revision) in history.db, ranged pull queries over
memory and history as one answer, and rollups of user views.

A seeded trace spanning several simulated days (replay mode: --idle-timeout
0, the watermark follows the events, SPEC 1) goes into two user views with
several aggregates (COUNT, SUM, COUNT(x), AVG, two COUNT(DISTINCT), MIN, MAX of
a TIMESTAMP). A brute-force Python reference (per-event watermark, windows,
grace periods, revisions) says what each view holds. Then:
- history.db holds every revision of every fired (window, group) once, and
  the newest revision's columns equal the reference;
- ranged pull queries (WINDOWSTART/WINDOWEND, several comparison forms,
  ORDER BY, LIMIT) before a restart equal the reference, and after a restart
  with --retain-results 1 (memory holds almost nothing) equal the answers
  before it; a query without a range keeps answering from memory only;
- rollups per hour and per day equal the reference's sums, distinct users
  merged from the sketches (two distinct-count columns), AVG from SUM / COUNT; a view with MIN is
  refused with a 400 naming the column; a dropped view's history stays;
- kill -9 during heavy writing leaves no duplicate and no gap;
- retention deletes exactly the old rows of user views too;
- bad ranges, steps and views are 400 with a reason.

HISTV_SEED overrides the seed (printed).
"""
import json
import math
import os
import random
import signal

from harness import Server, run_tests
from reference import sql_window_assign
from history_util import history_path, open_history, wait_retention_cutoff, wait_written

SEED = int(os.environ.get("HISTV_SEED", random.randrange(1 << 30)))
print("HISTV_SEED=%d" % SEED, flush=True)

BASE = 1767225600000  # 2026-01-01T00:00:00Z
HOUR = 3600000
DAY = 24 * HOUR
OOO = 5 * 60000
ARGS = ["--idle-timeout", "0", "--shards", "2", "--out-of-orderness", "5m",
        "--allowed-lateness", "1h"]

# name -> (SQL, keys, (size, advance, grace), row function over the events)
VIEWS = {
    "hv_page": ("CREATE VIEW hv_page AS SELECT page_url, COUNT(*) AS n, SUM(LENGTH(user_id)) AS s,"
                " COUNT(LENGTH(user_id)) AS c, AVG(LENGTH(user_id)) AS a,"
                " COUNT(DISTINCT user_id) AS du, COUNT(DISTINCT URL_PATH(page_url)) AS dp FROM clicks"
                " WINDOW TUMBLING (SIZE 1 HOUR) GRACE PERIOD 2 HOURS GROUP BY page_url",
                ["page_url"], (HOUR, HOUR, 2 * HOUR),
                lambda evs: dict(n=len(evs), s=sum(len(e["user_id"]) for e in evs), c=len(evs),
                                 a=sum(len(e["user_id"]) for e in evs) / len(evs),
                                 du=len({e["user_id"] for e in evs}),
                                 dp=len({e["page_url"] for e in evs}))),
    "hv_user": ("CREATE VIEW hv_user AS SELECT user_id, COUNT(*) AS n, MIN(page_url) AS mn,"
                " MAX(ROWTIME) AS last FROM clicks"
                " WINDOW HOPPING (SIZE 2 HOURS, ADVANCE BY 1 HOUR) GRACE PERIOD 1 HOUR"
                " GROUP BY user_id",
                ["user_id"], (2 * HOUR, HOUR, HOUR),
                lambda evs: dict(n=len(evs), mn=min(e["page_url"] for e in evs),
                                 last=max(e["timestamp"] for e in evs))),
}


def make_trace(rng, n, days, base=BASE, prefix="e"):
    """n events over `days` simulated days: mostly in order, some late within
    the grace periods (revisions), a few far too late (dropped)."""
    step = days * DAY // n
    ts, evs = base, []
    for i in range(n):
        ts += rng.randint(0, 2 * step)
        t = ts
        r = rng.random()
        if r < 0.08:
            t = ts - rng.randint(10 * 60000, 150 * 60000)
        elif r < 0.10:
            t = ts - rng.randint(5 * HOUR, 10 * HOUR)
        evs.append({"user_id": "u%d" % rng.randint(0, 39 if i % 2 else 120),
                    "page_url": "/p/%d" % rng.randint(0, 11), "timestamp": t,
                    "event_id": "%s%d" % (prefix, i)})
    return evs


class Reference:
    """SPEC 1 per-event watermark (W = max earlier timestamp - OOO) and the
    windows of SPEC 4/13: a (window, group) fires at W >= end - 1 (revision
    0), fires again for each event within its grace period, and takes no
    event at W >= end - 1 + grace."""

    def __init__(self, names, ooo=OOO, views=VIEWS):
        self.views = {n: {} for n in names}
        self.specs = views
        self.max_ts = None
        self.raised = None
        self.ooo = ooo

    def w(self):
        cands = [x for x in (None if self.max_ts is None else self.max_ts - self.ooo,
                             self.raised) if x is not None]
        return max(cands) if cands else None

    def event(self, ev):
        w = self.w()
        for name, state in self.views.items():
            _, keys, (size, adv, grace), _ = self.specs[name]
            key = tuple(ev[k] for k in keys)
            sql_window_assign(state, key, ev, size, adv, grace, w)
        if self.max_ts is None or ev["timestamp"] > self.max_ts:
            self.max_ts = ev["timestamp"]

    def raise_watermark(self, wm):
        self.raised = wm if self.raised is None else max(self.raised, wm)
        for name, state in self.views.items():
            size = self.specs[name][2][0]
            for (start, _), cell in state.items():
                if cell["rev"] is None and self.raised >= start + size - 1:
                    cell["rev"] = 0

    def rows(self, name):
        """The newest revision of every fired (window, group) as the view's row."""
        _, keys, (size, _, _), fn = self.specs[name]
        out = []
        for (start, key), cell in self.views[name].items():
            if cell["rev"] is None:
                continue
            row = dict(zip(keys, key))
            row.update(fn(cell["rows"]))
            row.update(WINDOWSTART=start, WINDOWEND=start + size, revision=cell["rev"],
                       final=True)
            out.append(row)
        return out

    def stored(self, name):
        """Every revision history must hold: (view, start, end, group, rev)."""
        _, keys, (size, _, _), _ = self.specs[name]
        return {(name, start, start + size, json.dumps(list(key)), r)
                for (start, key), cell in self.views[name].items() if cell["rev"] is not None
                for r in range(cell["rev"] + 1)}


def sql(srv, text, status=200):
    st, body = srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})
    assert st == status, (st, body)
    return body


def query(srv, text, status=200):
    st, body = srv.request("POST", "/api/v1/query", text, {"Content-Type": "application/sql"})
    assert st == status, (text, st, body)
    return body if status != 200 else body["items"]


def ingest(srv, ref, evs, batch=50):
    for i in range(0, len(evs), batch):
        part = evs[i:i + batch]
        st, body = srv.request("POST", "/api/v1/events", part)
        assert st == 202 and body["rejected"] == 0, (st, body)
        for e in part:
            ref.event(e)


def raise_wm(srv, ref, wm):
    st, body = srv.request("POST", "/api/v1/watermark", {"watermark": wm})
    assert st == 200, (st, body)
    ref.raise_watermark(wm)


def db_rows(srv, views):
    """{(view, start, end, group JSON (normalised), revision): cols dict}."""
    db = open_history(srv)
    try:
        out = {}
        for v, s, e, g, r, c in db.execute(
                "SELECT view, wstart, wend, grp, revision, cols FROM results WHERE view IN (%s)"
                % ",".join("'%s'" % v for v in views)):
            k = (v, s, e, json.dumps(json.loads(g)), r)
            assert k not in out, ("duplicate", k)
            out[k] = json.loads(c)
        return out
    finally:
        db.close()


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def assert_rows_match(got, want, what):
    key = lambda r: json.dumps(sorted((k, r[k]) for k in r if k not in ("a",)))
    assert len(got) == len(want), "%s: %d rows, want %d" % (what, len(got), len(want))
    gs = sorted(got, key=key)
    ws = sorted(want, key=key)
    for g, w in zip(gs, ws):
        assert set(g) == set(w) and all(same(g[c], w[c]) for c in w), (what, g, w)


def assert_history_matches(srv, ref, names):
    rows = db_rows(srv, names)
    want = set()
    for n in names:
        want |= ref.stored(n)
    assert set(rows) == want, "history.db: missing %r; extra %r" % (
        sorted(want - set(rows))[:5], sorted(set(rows) - want)[:5])
    for n in names:
        keys = VIEWS[n][1]
        for r in ref.rows(n):
            k = (n, r["WINDOWSTART"], r["WINDOWEND"], json.dumps([r[x] for x in keys]),
                 r["revision"])
            cols = {c: v for c, v in r.items()
                    if c not in ("WINDOWSTART", "WINDOWEND", "revision", "final")}
            assert set(rows[k]) == set(cols) and all(same(rows[k][c], cols[c]) for c in cols), (
                k, rows[k], cols)
    return len(rows)


def in_range(rows, lo_start=None, hi_end=None, start_gt=None, start_eq=None):
    return [r for r in rows
            if (lo_start is None or r["WINDOWSTART"] >= lo_start)
            and (hi_end is None or r["WINDOWEND"] <= hi_end)
            and (start_gt is None or r["WINDOWSTART"] > start_gt)
            and (start_eq is None or r["WINDOWSTART"] == start_eq)]


def ref_rollup(ref, frm, to, step):
    buckets = {}
    for (start, key), cell in ref.views["hv_page"].items():
        if cell["rev"] is None or start < frm or start + HOUR > to:
            continue
        b = buckets.setdefault(start // step * step, [0, 0, 0, set(), set()])
        b[0] += len(cell["rows"])
        b[1] += sum(len(e["user_id"]) for e in cell["rows"])
        b[2] += len(cell["rows"])
        b[3] |= {e["user_id"] for e in cell["rows"]}
        b[4] |= {e["page_url"] for e in cell["rows"]}
    return [{"start": s, "end": s + step, "n": n, "s": sm, "c": c, "du": len(u), "dp": len(p),
             "a": sm / c}
            for s, (n, sm, c, u, p) in sorted(buckets.items())]


def test_pull_ranges_and_rollups_equal_reference_across_restart():
    rng = random.Random(SEED)
    evs = make_trace(rng, 2500, 4)
    ref = Reference(VIEWS)
    srv = Server(ARGS + ["--retain-results", "100000"])
    srv.start()
    try:
        for name in VIEWS:
            sql(srv, VIEWS[name][0])
        ingest(srv, ref, evs)
        raise_wm(srv, ref, max(e["timestamp"] for e in evs) + 4 * HOUR)
        wait_written(srv)
        assert any(c["rev"] > 0 for c in ref.views["hv_page"].values() if c["rev"] is not None), \
            "trace has no revision"
        n_stored = assert_history_matches(srv, ref, list(VIEWS))
        assert n_stored > 1000
        lo, hi = BASE + DAY + 5 * HOUR, BASE + 3 * DAY + 7 * HOUR
        queries = [
            ("SELECT * FROM hv_page WHERE WINDOWSTART >= %d AND WINDOWEND <= %d"
             " ORDER BY WINDOWSTART, page_url" % (lo, hi),
             in_range(ref.rows("hv_page"), lo, hi)),
            ("SELECT * FROM hv_page WHERE WINDOWSTART >= 0", ref.rows("hv_page")),
            ("SELECT * FROM hv_user WHERE WINDOWEND <= %d AND WINDOWSTART > %d" % (hi, lo),
             in_range(ref.rows("hv_user"), hi_end=hi, start_gt=lo)),
            ("SELECT * FROM hv_user WHERE %d < WINDOWSTART AND WINDOWEND <= %d" % (lo, hi),
             in_range(ref.rows("hv_user"), hi_end=hi, start_gt=lo)),
            ("SELECT * FROM hv_user WHERE WINDOWSTART = %d" % (lo + 7 * HOUR),
             in_range(ref.rows("hv_user"), start_eq=lo + 7 * HOUR)),
            ("SELECT page_url, n, du, a, WINDOWSTART FROM hv_page WHERE WINDOWSTART BETWEEN %d"
             " AND %d ORDER BY n DESC, WINDOWSTART, page_url LIMIT 25" % (lo, hi), None),
            ("SELECT user_id, last, mn FROM hv_user WHERE WINDOWSTART >= %d AND n > 1"
             " ORDER BY last DESC LIMIT 40" % lo, None),
        ]
        before = []
        for text, want in queries:
            got = query(srv, text)
            if want is not None:
                assert got, text
                assert_rows_match(got, want, text)
            before.append(got)
        # Unranged: memory (everything, here).
        assert len(query(srv, "SELECT * FROM hv_page")) == len(ref.rows("hv_page"))
        assert srv.stop() == 0
        # Memory keeps one fired result per view and shard now: the ranged
        # answers come from history.db, and are the same.
        srv.args = ARGS + ["--retain-results", "1"]
        srv.start()
        for (text, _), want in zip(queries, before):
            assert query(srv, text) == want, text
        assert len(query(srv, "SELECT * FROM hv_page")) <= 2
        # Rollups: sums, merged distinct counts, AVG from SUM / COUNT.
        frm, to = BASE + 3 * HOUR, BASE + 3 * DAY + 11 * HOUR
        for step, sname in ((HOUR, "1h"), (DAY, "1d")):
            st, body = srv.request("GET", "/api/v1/views/hv_page/rollup?from=%d&to=%d&step=%s"
                                   % (frm, to, sname))
            assert st == 200, (st, body)
            want = ref_rollup(ref, frm, to, step)
            assert_rows_match([dict(x, WINDOWSTART=0) for x in body["items"]],
                              [dict(x, WINDOWSTART=0) for x in want], "rollup " + sname)
            assert [x["start"] for x in body["items"]] == [x["start"] for x in want]
        st, body = srv.request("GET", "/api/v1/views/hv_user/rollup?from=%d&to=%d&step=1h"
                               % (frm, to))
        assert st == 400 and "column mn (MIN(page_url))" in body["error"], (st, body)
        # Dropping a view keeps its history until retention: rollups go on,
        # pull queries need the view.
        st, daily = srv.request("GET", "/api/v1/views/hv_page/rollup?from=%d&to=%d&step=1d"
                                % (frm, to))
        sql(srv, "DROP VIEW hv_page")
        st, body = srv.request("GET", "/api/v1/views/hv_page/rollup?from=%d&to=%d&step=1d"
                               % (frm, to))
        assert st == 200 and body == daily, (st, body)
        body = query(srv, "SELECT * FROM hv_page WHERE WINDOWSTART >= 0", status=400)
        assert "hv_page" in body["error"], body
    finally:
        srv.stop()


def test_kill9_during_heavy_writing_no_duplicate_no_gap():
    rng = random.Random(SEED + 1)
    views = {
        "hk": ("CREATE VIEW hk AS SELECT page_url, COUNT(*) AS n, COUNT(DISTINCT user_id) AS du"
               " FROM clicks WINDOW TUMBLING (SIZE 10 SECONDS) GRACE PERIOD 5 SECONDS"
               " GROUP BY page_url", ["page_url"], (10000, 10000, 5000),
               lambda evs: dict(n=len(evs), du=len({e["user_id"] for e in evs}))),
    }
    ref = Reference(views, ooo=2000, views=views)
    args = ["--idle-timeout", "0", "--shards", "2", "--out-of-orderness", "2s",
            "--snapshot-interval", "200ms", "--segment-size", "64k"]
    # The writer lags (a pause per transaction), so snapshots are taken
    # while fired results still wait for it.
    srv = Server(args, env={"CLICKFLOW_TEST_HISTORY_STALL_MS": "150"})
    srv.start()
    kills = 0
    try:
        sql(srv, views["hk"][0])
        ts, n = BASE, 0
        for batch_no in range(60):
            evs = []
            for _ in range(200):
                ts += rng.randint(0, 40)
                evs.append({"user_id": "u%d" % rng.randint(0, 99),
                            "page_url": "/p/%d" % rng.randint(0, 199),
                            # some late enough to re-fire a window (revisions)
                            "timestamp": ts - (rng.randint(2500, 6000) if rng.random() < 0.05
                                               else rng.randint(0, 1500)),
                            "event_id": "k%d" % n})
                n += 1
            while True:
                try:
                    st, body = srv.request("POST", "/api/v1/events", evs, timeout=10)
                except OSError:
                    st = None
                if st == 202:
                    break
                assert st is None, (st, body)
                srv.start()
            for e in evs:
                ref.event(e)
            if batch_no % 12 == 5:
                srv.stop(signal.SIGKILL)
                kills += 1
                srv.start()
        raise_wm(srv, ref, ts + 60000)
        wait_written(srv)
        assert kills >= 4
        rows = db_rows(srv, ["hk"])
        want = ref.stored("hk")
        assert any(k[4] > 0 for k in want), "no revision in the trace"
        assert set(rows) == want, "after %d kills: missing %r; extra %r" % (
            kills, sorted(want - set(rows))[:5], sorted(set(rows) - want)[:5])
        for r in ref.rows("hk"):
            k = ("hk", r["WINDOWSTART"], r["WINDOWEND"], json.dumps([r["page_url"]]), r["revision"])
            assert rows[k] == {"page_url": r["page_url"], "n": r["n"], "du": r["du"]}, (k, rows[k])
    finally:
        srv.stop()


def test_retention_deletes_exactly_the_old_rows_of_user_views():
    rng = random.Random(SEED + 2)
    evs = make_trace(rng, 1500, 4)
    ref = Reference(VIEWS)
    srv = Server(ARGS + ["--history-retention", "1d"])
    srv.start()
    try:
        for name in VIEWS:
            sql(srv, VIEWS[name][0])
        ingest(srv, ref, evs)
        final_wm = max(e["timestamp"] for e in evs) + 4 * HOUR
        raise_wm(srv, ref, final_wm)
        wait_written(srv)
        cutoff = final_wm - DAY
        wait_retention_cutoff(srv, cutoff)
        want = set()
        for n in VIEWS:
            want |= ref.stored(n)
        kept = {k for k in want if k[2] >= cutoff}
        assert kept and want - kept
        rows = db_rows(srv, list(VIEWS))
        assert set(rows) == kept, "missing %r; extra %r" % (sorted(kept - set(rows))[:3],
                                                            sorted(set(rows) - kept)[:3])
        # No row of any view (built-ins too) ended before the cutoff.
        db = open_history(srv)
        try:
            assert db.execute("SELECT count(*) FROM results WHERE wend < ?",
                              (cutoff,)).fetchone()[0] == 0
        finally:
            db.close()
    finally:
        srv.stop()


def test_history_db_removed_under_a_snapshot_is_declared_again():
    """Views restored from a snapshot declare their history again: a
    history.db deleted by hand gets the definitions back before new rows."""
    rng = random.Random(SEED + 4)
    evs = make_trace(rng, 400, 1)
    ref = Reference(VIEWS)
    srv = Server(ARGS)
    srv.start()
    try:
        for name in VIEWS:
            sql(srv, VIEWS[name][0])
        ingest(srv, ref, evs[:200])
        assert srv.stop() == 0      # a clean stop writes a snapshot
        assert "snapshot" in srv.read_log()
        for suffix in ("", "-wal", "-shm"):
            path = history_path(srv, suffix)
            if os.path.exists(path):
                os.remove(path)
        srv.start()
        ingest(srv, ref, evs[200:])
        raise_wm(srv, ref, max(e["timestamp"] for e in evs) + 4 * HOUR)
        wait_written(srv)
        st, body = srv.request("GET", "/api/v1/views/hv_page/rollup?from=0&to=%d&step=1d"
                               % (BASE + 30 * DAY))
        assert st == 200 and body["items"], (st, body)
        st, body = srv.request("GET", "/api/v1/views/hv_user/rollup?from=0&to=5&step=1d")
        assert st == 400 and "column mn" in body["error"], (st, body)
    finally:
        srv.stop()


def test_bad_requests():
    with Server(ARGS) as srv:
        for name in VIEWS:
            sql(srv, VIEWS[name][0])
        cases = [
            ("/api/v1/views/hv_page/rollup?from=10&to=5&step=1h", "from <= to"),
            ("/api/v1/views/hv_page/rollup?from=0&to=5&step=5m", "step must be 1h or 1d"),
            ("/api/v1/views/hv_page/rollup?from=0&to=5", "step must be 1h or 1d"),
            ("/api/v1/views/hv_nosuch/rollup?from=0&to=5&step=1h", "unknown view"),
            ("/api/v1/views/hv_user/rollup?from=0&to=5&step=1d", "cannot be rolled up"),
        ]
        for path, reason in cases:
            st, body = srv.request("GET", path)
            assert st == 400 and reason in body["error"], (path, st, body)
        body = query(srv, "SELECT * FROM hv_nosuch WHERE WINDOWSTART >= 0", status=400)
        assert "hv_nosuch" in body["error"], body
        # A range that holds nothing is an empty answer, not an error (SQL).
        assert query(srv, "SELECT * FROM hv_page WHERE WINDOWSTART >= 10 AND WINDOWEND <= 5") == []
        # A user view named like a built-in is not stored, and its ranged
        # queries do not read the built-in's rows.
        sql(srv, "CREATE VIEW tumbling AS SELECT page_url, COUNT(*) AS n FROM clicks"
                 " WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url")
        st, body = srv.request("POST", "/api/v1/events",
                               [{"user_id": "u", "page_url": "/x", "timestamp": BASE + i * 60000,
                                 "event_id": "t%d" % i} for i in range(5)])
        assert st == 202, (st, body)
        raise_wm(srv, Reference([]), BASE + DAY)
        wait_written(srv)
        rows = query(srv, "SELECT * FROM tumbling WHERE WINDOWSTART >= 0")
        mem = query(srv, "SELECT * FROM tumbling")
        key = lambda r: r["WINDOWSTART"]
        assert sorted(rows, key=key) == sorted(mem, key=key) and len(rows) == 5, rows
        # A view with nothing stored yet: an empty rollup.
        st, body = srv.request("GET", "/api/v1/views/hv_page/rollup?from=0&to=5&step=1h")
        assert st == 200 and body["items"] == [], (st, body)


def test_view_created_again_with_other_sql_reads_none_of_the_old_rows():
    """A view dropped and created again under its name with other SQL is
    another view: its ranged pull queries and rollups never read the old
    one's stored rows (other columns and windows: an old COUNT came back
    as the new STRING column's "2"). The same SQL again keeps them."""
    old = ("CREATE VIEW hv_again AS SELECT page_url, COUNT(*) AS n FROM clicks"
           " WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY page_url")
    with Server(ARGS) as srv:
        sql(srv, old)
        st, body = srv.request("POST", "/api/v1/events",
                               [{"user_id": "u%d" % i, "page_url": "/p%d" % (i % 2),
                                 "timestamp": BASE + i * 600000, "event_id": "a%d" % i} for i in range(12)])
        assert st == 202 and body["rejected"] == 0, (st, body)
        raise_wm(srv, Reference([]), BASE + DAY)
        wait_written(srv)
        stored = query(srv, "SELECT * FROM hv_again WHERE WINDOWSTART >= 0")
        assert len(stored) == 4, stored
        # The same SQL again: the same view, its rows stay.
        sql(srv, "DROP VIEW hv_again")
        sql(srv, old)
        assert query(srv, "SELECT * FROM hv_again WHERE WINDOWSTART >= 0") == stored
        sql(srv, "DROP VIEW hv_again")
        sql(srv, "CREATE VIEW hv_again AS SELECT page_url AS n, COUNT(*) AS c FROM clicks"
                 " WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url")
        assert query(srv, "SELECT * FROM hv_again WHERE WINDOWSTART >= 0") == []
        st, body = srv.request("GET", "/api/v1/views/hv_again/rollup?from=0&to=%d&step=1d" % (BASE + DAY))
        assert st == 200 and body["items"] == [], (st, body)


if __name__ == "__main__":
    run_tests([test_pull_ranges_and_rollups_equal_reference_across_restart,
               test_kill9_during_heavy_writing_no_duplicate_no_gap,
               test_retention_deletes_exactly_the_old_rows_of_user_views,
               test_history_db_removed_under_a_snapshot_is_declared_again,
               test_bad_requests,
               test_view_created_again_with_other_sql_reads_none_of_the_old_rows])
