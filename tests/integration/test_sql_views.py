"""SPEC 13 views over clicks, compared row by row with a brute-force
reference evaluator on seeded random traces: running views (COUNT, COUNT(x),
COUNT(DISTINCT), SUM, AVG, MIN, MAX per group, NULL keys and arguments,
filters), tumbling and hopping windows with grace periods, revisions and
late events judged at the per-event watermark; for --shards 1 and 4, and
across kill -9 (the log replays every view exactly). Also: a view sees only
the events accepted after it was created, DROP + CREATE starts afresh, and
pull-query WHERE / ORDER BY / LIMIT.
"""
import math
import os
import random
import signal
import tempfile
import time
import urllib.parse

from harness import Server, run_tests
from reference import sql_window_assign
from ws_client import WsClient

BASE = 1767225600000
OOO = 2000              # --out-of-orderness
LATENESS = 5000         # --allowed-lateness (GRACE PERIOD default)
ARGS = ["--idle-timeout", "0", "--out-of-orderness", "%dms" % OOO,
        "--allowed-lateness", "%dms" % LATENESS, "--snapshot-interval", "1h"]

ELEMENTS = [None, None, "buy", "nav", "a", "zz-top", "Nav"]

# name -> (SQL, reference spec)
VIEWS = {
    "by_page": ("CREATE VIEW by_page AS SELECT page_url, COUNT(*) AS n, COUNT(element) AS ne, "
                "SUM(LENGTH(element)) AS s, AVG(LENGTH(element)) AS a, MIN(element) AS mn, "
                "MAX(element) AS mx, COUNT(DISTINCT user_id) AS du FROM clicks GROUP BY page_url",
                dict(keys=["page_url"], window=None)),
    "by_element": ("CREATE VIEW by_element AS SELECT element, COUNT(*) AS n, "
                   "COUNT(DISTINCT page_url) AS dp FROM clicks GROUP BY element",
                   dict(keys=["element"], window=None)),
    "filtered": ("CREATE VIEW filtered AS SELECT page_url, element, COUNT(*) AS n, "
                 "MAX(ROWTIME) AS last FROM clicks WHERE element IS NOT NULL AND page_url <> '/p0' "
                 "GROUP BY page_url, element",
                 dict(keys=["page_url", "element"], window=None,
                      where=lambda e: e.get("element") is not None and e["page_url"] != "/p0")),
    "tumbling": ("CREATE VIEW tumbling AS SELECT page_url, COUNT(*) AS n, "
                 "SUM(LENGTH(element)) AS s, COUNT(DISTINCT user_id) AS du FROM clicks "
                 "WINDOW TUMBLING (SIZE 10 SECONDS) GRACE PERIOD 3 SECONDS GROUP BY page_url",
                 dict(keys=["page_url"], window=(10000, 10000, 3000))),
    "hopping": ("CREATE VIEW hopping AS SELECT user_id, COUNT(*) AS n, MIN(element) AS mn "
                "FROM clicks WINDOW HOPPING (SIZE 20 SECONDS, ADVANCE BY 5 SECONDS) "
                "GROUP BY user_id",
                dict(keys=["user_id"], window=(20000, 5000, LATENESS))),
}


def make_trace(seed, n, start=BASE):
    """Clicks with jittered timestamps: mostly ordered, some a few seconds
    late (late updates), a few far behind (late-dropped)."""
    rng = random.Random(seed)
    t, evs = start, []
    for i in range(n):
        t += rng.randint(0, 700)
        ts = t
        r = rng.random()
        if r < 0.15:
            ts = t - rng.randint(0, 6000)
        elif r < 0.18:
            ts = t - rng.randint(15000, 40000)
        ev = {"user_id": "u%d" % rng.randint(0, 11), "page_url": "/p%d" % rng.randint(0, 5),
              "timestamp": ts, "event_id": "e%d-%d" % (seed, i)}
        el = rng.choice(ELEMENTS)
        if el is not None:
            ev["element"] = el
        evs.append(ev)
    return evs


class Reference:
    """The per-event watermark of SPEC 1 (idle timeout 0): an event is judged
    against W = max(earlier timestamps) - OOO; windows per SPEC 4 and 13."""

    def __init__(self):
        self.max_ts = None
        self.views = {}

    def add_view(self, name):
        self.views[name] = {}

    def drop_view(self, name):
        self.views.pop(name, None)

    def watermark(self):
        return None if self.max_ts is None else self.max_ts - OOO

    def event(self, ev):
        w = self.watermark()
        for name, state in self.views.items():
            spec = VIEWS[name][1]
            if spec.get("where") and not spec["where"](ev):
                continue
            key = tuple(ev.get(k) for k in spec["keys"])
            if spec["window"] is None:
                state.setdefault((None, key), {"rows": [], "rev": None})["rows"].append(ev)
                continue
            size, adv, grace = spec["window"]
            sql_window_assign(state, key, ev, size, adv, grace, w)
        if self.max_ts is None or ev["timestamp"] > self.max_ts:
            self.max_ts = ev["timestamp"]

    def rows(self, name):
        spec = VIEWS[name][1]
        w = self.watermark()
        out = []
        for (start, key), cell in self.views[name].items():
            evs = cell["rows"]
            row = dict(zip([k for k in spec["keys"]], key))
            lens = [len(e["element"]) for e in evs if e.get("element") is not None]
            els = [e["element"] for e in evs if e.get("element") is not None]
            row["n"] = len(evs)
            if name == "by_page":
                row.update(ne=len(els), s=sum(lens) if lens else None,
                           a=sum(lens) / len(lens) if lens else None,
                           mn=min(els) if els else None, mx=max(els) if els else None,
                           du=len({e["user_id"] for e in evs}))
            elif name == "by_element":
                row["dp"] = len({e["page_url"] for e in evs})
            elif name == "filtered":
                row["last"] = max(e["timestamp"] for e in evs)
            elif name == "tumbling":
                row.update(s=sum(lens) if lens else None, du=len({e["user_id"] for e in evs}))
            elif name == "hopping":
                row["mn"] = min(els) if els else None
            if spec["window"] is not None:
                size = spec["window"][0]
                fired = cell["rev"] is not None or (w is not None and w >= start + size - 1)
                row.update(WINDOWSTART=start, WINDOWEND=start + size,
                           revision=cell["rev"] if cell["rev"] is not None else 0, final=fired)
            out.append(row)
        return out


def row_key(name, row):
    spec = VIEWS[name][1]
    return (row.get("WINDOWSTART"),) + tuple(str(row[k]) for k in spec["keys"])


def same_value(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def compare(srv, ref, name):
    st, body = srv.request("POST", "/api/v1/query", "SELECT * FROM %s" % name,
                           {"Content-Type": "application/sql"})
    assert st == 200, (name, st, body)
    got = {row_key(name, r): r for r in body["items"]}
    want = {row_key(name, r): r for r in ref.rows(name)}
    assert len(got) == len(body["items"]), (name, "duplicate rows")
    missing = sorted(set(want) - set(got), key=str)[:5]
    extra = sorted(set(got) - set(want), key=str)[:5]
    assert not missing and not extra, (name, "missing", missing, "extra", extra)
    for k, w in want.items():
        g = got[k]
        assert set(g) == set(w), (name, k, g, w)
        for col in w:
            assert same_value(g[col], w[col]), (name, k, col, g, w)
    return len(want)


def post(srv, evs):
    st, body = srv.request("POST", "/api/v1/events", evs)
    assert st == 202 and body["rejected"] == 0, (st, body)


def sql(srv, text):
    st, body = srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})
    assert st == 200, (st, body)


def feed(srv, ref, evs, rng):
    i = 0
    while i < len(evs):
        k = rng.choice([1, 3, 17, 60])
        post(srv, evs[i:i + k])
        for ev in evs[i:i + k]:
            ref.event(ev)
        i += k


def snapshots(root):
    d = os.path.join(root, "data")
    return {n for n in os.listdir(d) if n.startswith("snapshot-") and not n.endswith(".tmp")}


def wait_for_new_snapshot(root, before, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while not (snapshots(root) - before):
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.02)   # polling for a file, not a timing assertion


def run_trace(shards, seed, kill=False, snapshot=False, restart_shards=None):
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="clickflow-sqlv-")
    args = ARGS + (["--snapshot-interval", "300ms"] if snapshot else [])
    srv = Server(args + ["--shards", str(shards)], data_dir=root).start()
    ref = Reference()
    first = ["by_page", "by_element", "tumbling", "hopping"]
    sql(srv, ";\n".join(VIEWS[n][0] for n in first))
    for n in first:
        ref.add_view(n)
    evs = make_trace(seed, 700)
    # Events before a view is created do not reach it.
    feed(srv, ref, evs[:300], rng)
    sql(srv, VIEWS["filtered"][0])
    ref.add_view("filtered")
    feed(srv, ref, evs[300:], rng)
    counts = {n: compare(srv, ref, n) for n in VIEWS}
    assert all(c > 3 for c in counts.values()), counts
    assert any(r["revision"] > 0 for r in ref.rows("tumbling")), "trace has no late update"
    if snapshot:
        # A snapshot holding the views' state, then more events in the log
        # after it only.
        wait_for_new_snapshot(root, snapshots(root))
        feed(srv, ref, make_trace(seed + 2, 60, start=ref.max_ts), rng)
    if kill:
        srv.stop(signal.SIGKILL)
        if restart_shards:
            srv = Server(ARGS + ["--shards", str(restart_shards)], data_dir=root)
        srv.start()
        for n in VIEWS:
            compare(srv, ref, n)
        more = make_trace(seed + 1, 200, start=ref.max_ts)
        feed(srv, ref, more, rng)
        for n in VIEWS:
            compare(srv, ref, n)
    srv.stop()


def test_views_match_reference_one_shard():
    run_trace(1, 101)


def test_views_match_reference_four_shards():
    run_trace(4, 202)


def test_views_match_reference_across_kill():
    run_trace(4, 303, kill=True)


def test_views_match_reference_from_snapshot_with_other_shard_count():
    run_trace(4, 404, kill=True, snapshot=True, restart_shards=3)


def test_drop_and_recreate_starts_afresh_and_pull_clauses():
    with Server(ARGS + ["--shards", "2"]) as srv:
        ref = Reference()
        sql(srv, VIEWS["by_page"][0])
        ref.add_view("by_page")
        evs = make_trace(7, 200)
        feed(srv, ref, evs[:100], random.Random(1))
        sql(srv, "DROP VIEW by_page;" + VIEWS["by_page"][0])
        ref.drop_view("by_page")
        ref.add_view("by_page")
        feed(srv, ref, evs[100:], random.Random(2))
        compare(srv, ref, "by_page")
        # The state size each shard holds, summed: one group per page here.
        st, views = srv.request("GET", "/api/v1/views")
        [v] = [x for x in views["items"] if not x["builtin"]]
        assert v["groups"] == len(ref.rows("by_page")) and v["state_bytes"] > 0, v
        rows = sorted(ref.rows("by_page"), key=lambda r: (-r["n"], r["page_url"]))
        q = "SELECT page_url, n FROM by_page WHERE n >= 2 ORDER BY n DESC, page_url LIMIT 3"
        st, body = srv.request("GET", "/api/v1/query?sql=" + urllib.parse.quote(q))
        assert st == 200, body
        want = [{"page_url": r["page_url"], "n": r["n"]} for r in rows if r["n"] >= 2][:3]
        assert body["items"] == want, (body, want)
        # Errors: a pull over a stream, a bad column, not one SELECT.
        for text, word in [("SELECT * FROM clicks", "stream"), ("SELECT nope FROM by_page", "nope"),
                           ("CREATE VIEW x AS SELECT COUNT(*) FROM clicks", "SELECT")]:
            st, body = srv.request("POST", "/api/v1/query", {"sql": text})
            assert st == 400 and word in body["error"] and body["line"] == 1, (text, body)
        st, body = srv.request("GET", "/api/v1/query")
        assert st == 400, body


def test_fired_results_pushed_on_view_topic():
    """Every fired (final) row of a windowed view reaches a client subscribed
    to view:NAME, in {"type": "view", "name", "data": [rows]} messages, and
    the newest revision of each equals the pull query's final rows."""
    with Server(ARGS + ["--shards", "2"]) as srv:
        st, info = srv.request("GET", "/api/v1/info")
        with WsClient(srv.ws_port, info["ws_path"]) as ws:
            ws.send_json({"subscribe": ["view:tumbling", "stats"]})
            while True:
                msg = ws.recv_json()
                if msg.get("type") == "subscribed":
                    assert msg["data"] == ["stats", "view:tumbling"], msg
                    break
            sql(srv, VIEWS["tumbling"][0] + ";" + VIEWS["by_page"][0])
            ref = Reference()
            ref.add_view("tumbling")
            evs = make_trace(55, 400)
            feed(srv, ref, evs, random.Random(3))
            want = {row_key("tumbling", r): r for r in ref.rows("tumbling") if r["final"]}
            assert len(want) > 5, want
            got = {}
            deadline = time.monotonic() + 30
            while len(got) < len(want) or any(got[k]["revision"] < want[k]["revision"]
                                              for k in want if k in got):
                assert time.monotonic() < deadline, (len(got), len(want))
                msg = ws.recv_json(timeout=deadline - time.monotonic())
                if msg.get("type") != "view":
                    continue
                assert msg["name"] == "tumbling", msg     # not by_page: not subscribed
                for r in msg["data"]:
                    assert r["final"] is True, r
                    k = row_key("tumbling", r)
                    if k not in got or r["revision"] > got[k]["revision"]:
                        got[k] = r
            assert set(got) == set(want)
            for k, w in want.items():
                assert got[k] == w, (k, got[k], w)


def test_emit_changes_pushes_interim_rows_emit_final_does_not():
    """EMIT CHANGES (the default) pushes the open windows (final: false)
    every --push-interval once they change; EMIT FINAL pushes nothing until
    a window fires. Both views get the same events; no window fires here."""
    with Server(ARGS + ["--shards", "2", "--push-interval", "100ms"]) as srv:
        st, info = srv.request("GET", "/api/v1/info")
        with WsClient(srv.ws_port, info["ws_path"]) as ws:
            ws.send_json({"subscribe": ["view:chg", "view:fin"]})
            while ws.recv_json().get("type") != "subscribed":
                pass
            body = ("SELECT page_url, COUNT(*) AS n FROM clicks WINDOW TUMBLING (SIZE 1 HOUR) "
                    "GROUP BY page_url")
            sql(srv, "CREATE VIEW chg AS %s EMIT CHANGES; CREATE VIEW fin AS %s EMIT FINAL"
                % (body, body))
            evs = [{"user_id": "u", "page_url": "/p%d" % (i % 3), "timestamp": BASE + i}
                   for i in range(30)]
            post(srv, evs)
            want = {"/p0": 10, "/p1": 10, "/p2": 10}
            got = {}
            deadline = time.monotonic() + 30
            while got != want:
                assert time.monotonic() < deadline, got
                msg = ws.recv_json(timeout=deadline - time.monotonic())
                if msg.get("type") != "view":
                    continue
                assert msg["name"] == "chg", msg     # EMIT FINAL: nothing fired yet
                for r in msg["data"]:
                    assert r["final"] is False and r["WINDOWSTART"] == BASE, r
                    got[r["page_url"]] = r["n"]


def test_enrichment_columns_reach_views():
    """The clicks stream's enrichment (SPEC 15) is readable in views."""
    with Server(ARGS + ["--shards", "2"]) as srv:
        sql(srv, "CREATE VIEW br AS SELECT browser, device, utm_source, COUNT(*) AS n FROM clicks "
                 "GROUP BY browser, device, utm_source")
        ua = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
        st, body = srv.request("POST", "/api/v1/events",
                               [{"user_id": "u", "page_url": "https://x.example/a?utm_source=news",
                                 "timestamp": BASE}] * 2, {"User-Agent": ua})
        assert st == 202, body
        st, body = srv.request("POST", "/api/v1/query", {"sql": "SELECT * FROM br"})
        assert body["items"] == [{"browser": "Chrome", "device": "desktop", "utm_source": "news",
                                  "n": 2}], body


if __name__ == "__main__":
    run_tests([test_views_match_reference_one_shard, test_views_match_reference_four_shards,
               test_views_match_reference_across_kill,
               test_views_match_reference_from_snapshot_with_other_shard_count,
               test_drop_and_recreate_starts_afresh_and_pull_clauses,
               test_fired_results_pushed_on_view_topic,
               test_emit_changes_pushes_interim_rows_emit_final_does_not,
               test_enrichment_columns_reach_views])
