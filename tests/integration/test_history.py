"""History (SPEC 16): every final result, each revision, in history.db.

A seeded trace spanning several simulated days (replay mode, with late
events that re-fire windows and sessions and events too late to count) is
ingested; the rows of history.db must be exactly the final emissions of the
brute-force reference model (tests/integration/reference.py): nothing
missing, nothing twice. Then:
- after a restart with a tiny --retain-results (memory holds almost
  nothing), GET /api/v1/windows?from=&to= answers what memory answered
  before the restart;
- rollups per hour and per day equal the reference's sums and distinct
  users;
- kill -9 during heavy writing (snapshots every 200 ms) leaves no duplicate
  and no gap;
- a full hand-off queue spills to a file and loses nothing;
- retention (event-time clock) deletes exactly the rows whose window ended
  more than --history-retention before the watermark;
- bad ranges, steps and views are 400 with a reason; --history off writes
  no history.db.

HISTORY_SEED overrides the seed (printed).
"""
import os
import random
import signal
import sqlite3
import time

from harness import Server, run_tests
from history_util import history_path, open_history, wait_retention_cutoff, wait_written
from reference import Reference, Settings

SEED = int(os.environ.get("HISTORY_SEED", random.randrange(1 << 30)))
print("HISTORY_SEED=%d" % SEED, flush=True)

BASE_TS = 1767225600000  # 2026-01-01T00:00:00Z
HOUR = 3600000
DAY = 24 * HOUR
FAR = 1 << 52

SETTINGS = Settings(window_ms=HOUR, slide_size_ms=2 * HOUR, slide_ms=HOUR,
                    session_gap_ms=30 * 60000, allowed_lateness_ms=2 * HOUR,
                    out_of_orderness_ms=5 * 60000)
ARGS = ["--idle-timeout", "0", "--shards", "2", "--window", "1h", "--slide-size", "2h",
        "--slide", "1h", "--session-gap", "30m", "--allowed-lateness", "2h",
        "--out-of-orderness", "5m"]


def make_trace(rng, n, days):
    """n events over `days` simulated days: mostly in order, some late
    within allowed lateness (revisions), a few far too late (dropped)."""
    step = days * DAY // n
    ts = BASE_TS
    evs = []
    for i in range(n):
        ts += rng.randint(0, 2 * step)
        t = ts
        r = rng.random()
        if r < 0.08:
            t = ts - rng.randint(10 * 60000, 150 * 60000)   # late, mostly re-fires
        elif r < 0.10:
            t = ts - rng.randint(5 * HOUR, 10 * HOUR)       # late-dropped for windows
        evs.append({"user_id": "u%d" % rng.randint(0, 39),
                    "page_url": "/p/%d" % rng.randint(0, 14),
                    "ts": t, "event_id": "e%d" % i})
    return evs


def wire(evs):
    return [{"user_id": e["user_id"], "page_url": e["page_url"], "timestamp": e["ts"],
             "event_id": e["event_id"]} for e in evs]


def ingest(srv, ref, evs, batch=50):
    for i in range(0, len(evs), batch):
        part = evs[i:i + batch]
        st, body = srv.request("POST", "/api/v1/events", wire(part))
        assert st == 202, (st, body)
        want = ref.request(part)
        assert (body["accepted"], body["duplicates"]) == want[:2], (body, want)


def raise_wm(srv, ref, wm):
    st, body = srv.request("POST", "/api/v1/watermark", {"watermark": wm})
    assert st == 200, (st, body)
    assert body["watermark"] == ref.raise_watermark(wm)


def db_rows(srv):
    db = open_history(srv)
    try:
        import json
        rows = []
        for view, s, e, g, rev, cols in db.execute(
                "SELECT view, wstart, wend, grp, revision, cols FROM results"):
            c = json.loads(cols)
            if view not in ("sessions", "tumbling", "sliding"):
                rows.append((view, s, e, g, rev, cols))
            elif view == "sessions":
                rows.append((view, s, e, g, rev, c["page_views"], c["distinct_pages"],
                             c["entry_page"], c["exit_page"]))
            else:
                rows.append((view, s, e, g, rev, c["count"], c["unique_users"]))
        return rows
    finally:
        db.close()


def wait_rollups_clean(srv):
    """Waits until the writer rebuilt every dirty rollup hour, then checks
    the rollup table (schema v2) has exactly one clean row per view and
    UTC hour holding results: rollups then read pre-aggregates only."""
    while True:
        st, body = srv.request("GET", "/api/v1/stats")
        if body["history"]["rollup_dirty"] == 0:
            break
        time.sleep(0.02)  # waiting for the writer, not a timing assertion
    db = open_history(srv)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        hours = set(db.execute("SELECT view, hour FROM rollup WHERE dirty = 0").fetchall())
        want = set(db.execute("SELECT DISTINCT view, wstart / %d * %d FROM results"
                              % (HOUR, HOUR)).fetchall())
        assert db.execute("SELECT count(*) FROM rollup").fetchone()[0] == len(hours)
        assert hours == want, (sorted(hours - want)[:5], sorted(want - hours)[:5])
        return len(hours)
    finally:
        db.close()


def ref_rows(ref):
    rows = [(w["type"], w["start"], w["end"], w["page_url"], w["revision"], w["count"],
             w["unique_users"]) for w in ref.window_emissions]
    rows += [("sessions", s["start"], s["end"], s["user_id"], s["revision"], s["page_views"],
              s["distinct_pages"], s["entry_page"], s["exit_page"])
             for s in ref.session_emissions]
    return rows


def assert_rows_equal(got, want, what):
    assert len(got) == len(set(got)), "%s: duplicate rows" % what
    assert len(want) == len(set(want)), "%s: reference has duplicate emissions" % what
    g, w = set(got), set(want)
    assert g == w, "%s: %d rows, want %d; missing %r; extra %r" % (
        what, len(g), len(w), sorted(w - g)[:5], sorted(g - w)[:5])


def window_items(srv, query):
    st, body = srv.request("GET", "/api/v1/windows?" + query)
    assert st == 200, (st, body)
    return body["items"]


def ref_rollup(ref, wtype, frm, to, step):
    """Newest revision of every closed window of wtype in [frm, to], summed
    per step by start; distinct users as a set union (exact: few users)."""
    buckets = {}
    for key, rec in ref.closed.items():
        if key[0] != wtype or rec["start"] < frm or rec["end"] > to:
            continue
        b = buckets.setdefault(rec["start"] // step * step, [0, set()])
        b[0] += rec["count"]
        b[1] |= ref.pairs[key].users
    return [{"start": s, "end": s + step, "count": c, "unique_users": len(u)}
            for s, (c, u) in sorted(buckets.items())]


def test_history_equals_reference_across_restart():
    rng = random.Random(SEED)
    evs = make_trace(rng, 3000, 4)
    ref = Reference(SETTINGS)
    srv = Server(ARGS)
    srv.start()
    try:
        ingest(srv, ref, evs)
        raise_wm(srv, ref, max(e["ts"] for e in evs) + 3 * HOUR)
        wait_written(srv)
        assert any(r["revision"] > 0 for r in ref.window_emissions), "trace has no revision"
        assert_rows_equal(db_rows(srv), ref_rows(ref), "history.db")
        memory = window_items(srv, "state=closed&limit=100000")
        assert len(memory) == len(ref.closed)
        mid_from, mid_to = BASE_TS + DAY + 5 * HOUR, BASE_TS + 2 * DAY + 7 * HOUR
        memory_mid = window_items(srv, "type=tumbling&state=closed&limit=100000")
        memory_mid = [w for w in memory_mid if w["start"] >= mid_from and w["end"] <= mid_to]
        assert srv.stop() == 0
        # Memory keeps one closed result per type and shard now: the
        # answers come from history.db.
        srv.args = ARGS + ["--retain-results", "1"]
        srv.start()
        got = window_items(srv, "state=closed&limit=100000&from=0&to=%d" % FAR)
        assert got == memory, "after restart: %d items, before %d" % (len(got), len(memory))
        got_mid = window_items(srv, "type=tumbling&limit=100000&from=%d&to=%d"
                               % (mid_from, mid_to))
        assert got_mid == memory_mid and memory_mid
        page = memory_mid[0]["page_url"]
        got_page = window_items(srv, "type=tumbling&from=%d&to=%d&page_url=%s"
                                % (mid_from, mid_to, page.replace("/", "%2F")))
        assert got_page == [w for w in memory_mid if w["page_url"] == page][:100]
        # The limit keeps the newest.
        assert window_items(srv, "state=closed&limit=7&from=0&to=%d" % FAR) == memory[:7]
        # Without a range: memory only, as before (a ring of one per shard).
        assert len(window_items(srv, "type=tumbling&state=closed&limit=100000")) <= 2
        # Late revisions replaced earlier ones in aggregated hours: the
        # answers below come from the rebuilt pre-aggregates.
        assert wait_rollups_clean(srv) > 0
        for wtype in ("tumbling", "sliding"):
            for step, name in ((HOUR, "1h"), (DAY, "1d")):
                frm, to = BASE_TS + 3 * HOUR, BASE_TS + 3 * DAY + 11 * HOUR
                st, body = srv.request("GET", "/api/v1/views/%s/rollup?from=%d&to=%d&step=%s"
                                       % (wtype, frm, to, name))
                assert st == 200, (st, body)
                want = ref_rollup(ref, wtype, frm, to, step)
                assert body["items"] == want, (wtype, name, body["items"][:3], want[:3])
        # Sessions: page_views of the newest revision of each (start, end,
        # user) summed per day (a merge that moved a session's window is
        # another key: docs/API.md).
        st, body = srv.request("GET", "/api/v1/views/sessions/rollup?from=0&to=%d&step=1d"
                               % (BASE_TS + 30 * DAY))
        assert st == 200, (st, body)
        newest = {}
        for x in ref.session_emissions:
            k = (x["start"], x["end"], x["user_id"])
            if k not in newest or newest[k]["revision"] < x["revision"]:
                newest[k] = x
        per_day = {}
        for (start, _, _), x in newest.items():
            per_day[start // DAY * DAY] = per_day.get(start // DAY * DAY, 0) + x["page_views"]
        assert body["items"] == [{"start": d, "end": d + DAY, "page_views": v}
                                 for d, v in sorted(per_day.items())], body["items"][:3]
    finally:
        srv.stop()


def test_kill9_during_heavy_writing_no_duplicate_no_gap():
    rng = random.Random(SEED + 1)
    settings = Settings(window_ms=10000, slide_size_ms=20000, slide_ms=5000,
                        session_gap_ms=3000, allowed_lateness_ms=10000,
                        out_of_orderness_ms=2000)
    args = ["--idle-timeout", "0", "--shards", "2", "--window", "10s", "--slide-size", "20s",
            "--slide", "5s", "--session-gap", "3s", "--allowed-lateness", "10s",
            "--out-of-orderness", "2s", "--snapshot-interval", "200ms", "--segment-size", "64k"]
    ref = Reference(settings)
    # The writer lags (a pause before each transaction), so snapshots are
    # taken while fired results still wait for it: a snapshot that did not
    # wait for them would lose them to the next kill.
    srv = Server(args, env={"CLICKFLOW_TEST_HISTORY_STALL_MS": "150"})
    srv.start()
    kills = 0
    try:
        ts = BASE_TS
        n = 0
        for batch_no in range(60):
            evs = []
            for _ in range(200):
                ts += rng.randint(0, 40)
                evs.append({"user_id": "u%d" % rng.randint(0, 99),
                            "page_url": "/p/%d" % rng.randint(0, 199),
                            "ts": ts - rng.randint(0, 1500), "event_id": "k%d" % n})
                n += 1
            # Kill -9 right after some requests: the writer is then busy
            # with the windows this request fired.
            while True:
                try:
                    st, body = srv.request("POST", "/api/v1/events", wire(evs), timeout=10)
                except OSError:
                    st = None
                if st == 202:
                    break
                assert st is None, (st, body)
                srv.start()
            ref.request(evs)
            if batch_no % 12 == 5:
                srv.stop(signal.SIGKILL)
                kills += 1
                srv.start()
        raise_wm(srv, ref, ts + 60000)
        stats = wait_written(srv)
        assert stats["accepted"] == ref.accepted
        assert kills >= 4
        assert_rows_equal(db_rows(srv), ref_rows(ref), "after %d kills" % kills)
    finally:
        srv.stop()


def positions_stored(srv, n_shards):
    """The replay positions the writer stored (None until every shard has
    one): the writer stores them one transaction late, or alone after an
    idle wait."""
    db = open_history(srv)
    try:
        try:
            rows = db.execute("SELECT shard, w FROM positions WHERE w > %d" % -(1 << 63)).fetchall()
        except sqlite3.OperationalError:
            return None     # no positions table yet
        return dict(rows) if len(rows) == n_shards else None
    finally:
        db.close()


def test_crash_after_history_written_replay_skips_stored_rows():
    """kill -9 once history.db holds every result (no snapshot: the whole
    log is replayed). The replay does not offer the results history.db
    holds (replay positions): skipped + offered is every result, nothing
    new is inserted, and the rows are the reference's, none twice, none
    missing. Then more events, kill -9 right after them (rows and positions
    may not be stored yet), and recovery again: still exactly the
    reference."""
    rng = random.Random(SEED + 3)
    settings = Settings(window_ms=10000, slide_size_ms=20000, slide_ms=5000,
                        session_gap_ms=3000, allowed_lateness_ms=10000,
                        out_of_orderness_ms=2000)
    args = ["--idle-timeout", "0", "--shards", "2", "--window", "10s", "--slide-size", "20s",
            "--slide", "5s", "--session-gap", "3s", "--allowed-lateness", "10s",
            "--out-of-orderness", "2s", "--snapshot-interval", "1h"]
    ref = Reference(settings)
    srv = Server(args)
    srv.start()
    try:
        ts = BASE_TS
        n = 0

        def batch(k):
            nonlocal ts, n
            evs = []
            for _ in range(k):
                ts += rng.randint(0, 40)
                evs.append({"user_id": "u%d" % rng.randint(0, 99),
                            "page_url": "/p/%d" % rng.randint(0, 199),
                            "ts": ts - rng.randint(0, 1500), "event_id": "k%d" % n})
                n += 1
            return evs

        for _ in range(20):
            ingest(srv, ref, batch(200), batch=200)
        wait_written(srv)
        while positions_stored(srv, 2) is None:
            time.sleep(0.05)  # waiting for the writer, not a timing assertion
        want = ref_rows(ref)
        assert_rows_equal(db_rows(srv), want, "before the crash")
        srv.stop(signal.SIGKILL)
        srv.start()
        stats = wait_written(srv)
        h = stats["history"]
        assert stats["accepted"] == ref.accepted
        assert h["replay_skipped"] > 0, h
        assert h["replay_skipped"] + h["offered"] == len(want), (h, len(want))
        assert h["inserted"] == 0, h
        assert_rows_equal(db_rows(srv), want, "after recovery")

        for _ in range(10):
            ingest(srv, ref, batch(200), batch=200)
        srv.stop(signal.SIGKILL)
        srv.start()
        raise_wm(srv, ref, ts + 60000)
        stats = wait_written(srv)
        assert stats["accepted"] == ref.accepted
        assert_rows_equal(db_rows(srv), ref_rows(ref), "after the second crash")
        wait_rollups_clean(srv)

        # history.db lost: the whole log is replayed into a new one, every
        # row written while its checkpoints are deferred (recovery), then
        # kill -9 as soon as it is written: the rows that sit only in the
        # WAL are history.db's after the next start, none twice.
        srv.stop(signal.SIGKILL)
        for suffix in ("", "-wal", "-shm"):
            path = history_path(srv) + suffix
            if os.path.exists(path):
                os.unlink(path)
        srv.start()
        wait_written(srv)
        srv.stop(signal.SIGKILL)
        srv.start()
        stats = wait_written(srv)
        assert stats["accepted"] == ref.accepted
        assert_rows_equal(db_rows(srv), ref_rows(ref), "after a recovery into a new history.db")
        wait_rollups_clean(srv)
    finally:
        srv.stop()


def test_full_queue_spills_and_loses_nothing():
    """A writer far behind (a pause per transaction) and a queue of one
    row: results go through the spill file, ingest never waits for the
    writer, and history.db still gets every row once."""
    rng = random.Random(SEED + 3)
    evs = make_trace(rng, 1500, 2)
    ref = Reference(SETTINGS)
    srv = Server(ARGS + ["--history-queue", "1"],
                 env={"CLICKFLOW_TEST_HISTORY_STALL_MS": "100"})
    srv.start()
    try:
        ingest(srv, ref, evs)
        raise_wm(srv, ref, max(e["ts"] for e in evs) + 3 * HOUR)
        stats = wait_written(srv)
        assert stats["history"]["spilled"] > 0, stats["history"]
        assert_rows_equal(db_rows(srv), ref_rows(ref), "after spilling")
        st, text = srv.request("GET", "/metrics")
        assert "clickflow_history_spilled_total %d" % stats["history"]["spilled"] in text
    finally:
        srv.stop()


def test_retention_deletes_exactly_the_old_rows():
    rng = random.Random(SEED + 2)
    evs = make_trace(rng, 1500, 4)
    ref = Reference(SETTINGS)
    srv = Server(ARGS + ["--history-retention", "1d"])
    srv.start()
    try:
        ingest(srv, ref, evs)
        final_wm = max(e["ts"] for e in evs) + 3 * HOUR
        raise_wm(srv, ref, final_wm)
        wait_written(srv)
        cutoff = ref.w - DAY
        body = wait_retention_cutoff(srv, cutoff)
        want = [r for r in ref_rows(ref) if r[2] >= cutoff]
        gone = [r for r in ref_rows(ref) if r[2] < cutoff]
        assert want and gone
        assert_rows_equal(db_rows(srv), want, "after retention")
        assert body["history"]["retention_deleted"] == len(gone)
        st, text = srv.request("GET", "/metrics")
        assert "clickflow_history_retention_deleted_total %d" % len(gone) in text
        # The rollup rows of the deleted hours went too (and partly
        # deleted hours were rebuilt from what is left).
        n_hours = wait_rollups_clean(srv)
        assert n_hours == len({(r[0], r[1] // HOUR * HOUR) for r in want})
    finally:
        srv.stop()


V1_SCHEMA = """
CREATE TABLE views(name TEXT PRIMARY KEY, additive TEXT NOT NULL, sketch_col TEXT);
CREATE TABLE results(view TEXT NOT NULL, wstart INTEGER NOT NULL, wend INTEGER NOT NULL,
  grp TEXT NOT NULL, revision INTEGER NOT NULL, cols TEXT NOT NULL, sketch BLOB,
  PRIMARY KEY (view, wstart, wend, grp, revision)) WITHOUT ROWID;
INSERT INTO views VALUES ('tumbling', 'count', 'unique_users'), ('sliding', 'count', 'unique_users'),
  ('sessions', 'page_views', NULL);
PRAGMA user_version=1;
"""


def test_v1_history_is_upgraded():
    """A schema v1 history.db (no rollup table) with late revisions: the
    server upgrades it at start, builds the hourly pre-aggregates in the
    background, and rollups equal the newest revisions summed by hand."""
    import struct
    rng = random.Random(SEED + 3)
    srv = Server(ARGS)
    os.makedirs(os.path.join(srv.data_dir, "data"), exist_ok=True)
    db = sqlite3.connect(history_path(srv))
    db.executescript(V1_SCHEMA)
    newest = {}
    for h in range(40):
        for p in range(3):
            start = BASE_TS + h * HOUR
            for rev in range(rng.randint(1, 3)):
                users = sorted({rng.getrandbits(64) for _ in range(rng.randint(1, 4) + rev)})
                count = len(users) + rng.randint(0, 5)
                sk = struct.pack("<BI", 0, len(users)) + b"".join(struct.pack("<Q", u) for u in users)
                db.execute("INSERT INTO results VALUES ('tumbling', ?, ?, ?, ?, ?, ?)",
                           (start, start + HOUR, "/p%d" % p, rev,
                            '{"count":%d,"unique_users":%d}' % (count, len(users)), sk))
                newest[(start, p)] = (count, users)
    db.commit()
    db.close()
    srv.start()
    try:
        assert wait_rollups_clean(srv) == 40
        frm, to = BASE_TS, BASE_TS + 40 * HOUR
        for step, name in ((HOUR, "1h"), (DAY, "1d")):
            want = {}
            for (start, _), (count, users) in newest.items():
                b = want.setdefault(start // step * step, [0, set()])
                b[0] += count
                b[1] |= set(users)
            want = [{"start": s, "end": s + step, "count": c, "unique_users": len(u)}
                    for s, (c, u) in sorted(want.items())]
            st, body = srv.request("GET", "/api/v1/views/tumbling/rollup?from=%d&to=%d&step=%s"
                                   % (frm, to, name))
            assert st == 200, (st, body)
            assert body["items"] == want, (name, body["items"][:2], want[:2])
    finally:
        srv.stop()


def test_bad_requests_and_history_off():
    with Server(["--idle-timeout", "0"]) as srv:
        cases = [
            ("/api/v1/views/tumbling/rollup?from=10&to=5&step=1h", "from <= to"),
            ("/api/v1/views/tumbling/rollup?from=0&to=5", "step must be 1h or 1d"),
            ("/api/v1/views/tumbling/rollup?from=0&to=5&step=5m", "step must be 1h or 1d"),
            ("/api/v1/views/tumbling/rollup?to=5&step=1h", "both required"),
            ("/api/v1/views/nosuch/rollup?from=0&to=5&step=1h", "unknown view"),
            ("/api/v1/views/tumbling/rollup?from=x&to=5&step=1h", "RFC 3339"),
            ("/api/v1/views/tumbling/rollup?from=0&to=%d&step=1h" % FAR, "100000 steps"),
            ("/api/v1/windows?from=10&to=5", "from <= to"),
            ("/api/v1/windows?from=yesterday", "RFC 3339"),
        ]
        for path, reason in cases:
            st, body = srv.request("GET", path)
            assert st == 400, (path, st, body)
            assert reason in body["error"], (path, body)
        st, body = srv.request(
            "GET", "/api/v1/views/tumbling/rollup?from=2026-01-01T00:00:00Z"
                   "&to=2026-01-02T00:00:00Z&step=1h")
        assert st == 200 and body["items"] == [], (st, body)
        assert os.path.exists(history_path(srv))
    with Server(["--idle-timeout", "0", "--history", "off"]) as srv:
        st, body = srv.request("GET", "/api/v1/views/tumbling/rollup?from=0&to=5&step=1h")
        assert st == 404 and "history is off" in body["error"], (st, body)
        st, body = srv.request("GET", "/api/v1/windows?from=0&to=5")
        assert st == 200 and body["items"] == [], (st, body)
        st, body = srv.request("GET", "/api/v1/stats")
        assert body["history"] is None
        assert not os.path.exists(history_path(srv))


if __name__ == "__main__":
    run_tests([test_history_equals_reference_across_restart,
               test_v1_history_is_upgraded,
               test_kill9_during_heavy_writing_no_duplicate_no_gap,
               test_crash_after_history_written_replay_skips_stored_rows,
               test_full_queue_spills_and_loses_nothing,
               test_retention_deletes_exactly_the_old_rows,
               test_bad_requests_and_history_off])
