"""SPEC 14 stream-stream interval joins in the server: a derived stream and
views over `orders o LEFT JOIN pays p WITHIN 10 SECONDS ... GRACE PERIOD
3 SECONDS` and an INNER join the other way round (default grace), compared
row by row with reference.IntervalJoin on seeded traces of two streams with
disorder beyond the out-of-orderness, duplicates (resent event ids), late
events and NULL keys, for --shards 1 and 4, across kill -9 (log replay) and
from a snapshot under another shard count; the boundaries (|dt| = d joins,
d + 1 does not; a partner just before and just after its buffer is dropped;
the LEFT row exactly at W = ROWTIME + d); bad input; EXPLAIN, stats and
/metrics; and the docs/SQL.md examples, run from the file itself.
"""
import os
import random
import re
import shlex
import signal
import tempfile
import urllib.parse

from harness import Server, run_tests
from reference import IntervalJoin
from test_sql_views import snapshots, wait_for_new_snapshot

ARGS = ["--idle-timeout", "0", "--snapshot-interval", "1h"]
OOO = 5000          # --out-of-orderness default
D, GRACE = 10_000, 3000
ALLOWED = 60_000    # --allowed-lateness default: the INNER join's grace
T0 = 1_780_000_000_000

ORDERS = ("CREATE STREAM orders (oid STRING NOT NULL, k STRING, c STRING, amount BIGINT, "
          "ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'oid')")
PAYS = ("CREATE STREAM pays (pid STRING NOT NULL, k STRING, ts TIMESTAMP) "
        "WITH (TIMESTAMP = 'ts', EVENT_ID = 'pid')")
LEFT_ON = "FROM orders o LEFT JOIN pays p WITHIN 10 SECONDS ON o.k = p.k GRACE PERIOD 3 SECONDS"
MATCHED = ("CREATE STREAM matched AS SELECT o.oid AS oid, p.pid AS pid, o.c AS c, o.amount AS amount "
           + LEFT_ON)
PAIRS = "CREATE VIEW pairs AS SELECT o.oid AS oid, p.pid AS pid, COUNT(*) AS n " + LEFT_ON + \
    " GROUP BY o.oid, p.pid"
PER_C = ("CREATE VIEW per_c AS SELECT c, COUNT(*) AS n, COUNT(pid) AS paid, SUM(amount) AS total "
         "FROM matched GROUP BY c")
INNER = ("CREATE VIEW inner_per_k AS SELECT p.k AS k, COUNT(*) AS n FROM pays p JOIN orders o "
         "WITHIN 10 SECONDS ON p.k = o.k GROUP BY p.k")
ALL = [ORDERS, PAYS, MATCHED, PAIRS, PER_C, INNER]


def sql(srv, text):
    st, body = srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})
    assert st == 200, (st, body)
    return body


def query(srv, text):
    st, body = srv.request("POST", "/api/v1/query", {"sql": text})
    assert st == 200, (text, st, body)
    return body["items"]


class Model:
    """What the server must answer: the SPEC 1 clock and watermark per event,
    SPEC 6 dedup by event id, and the two joins of ALL."""

    def __init__(self):
        self.c = None
        self.w = None
        self.seen = set()
        self.left = IntervalJoin(D, GRACE, True)        # matched, pairs
        self.inner = IntervalJoin(D, ALLOWED, False)    # inner_per_k: pays on the left

    def event(self, stream, ev):
        eid = ev["oid"] if stream == "orders" else ev["pid"]
        if eid in self.seen:    # traces span far less than --dedup-ttl
            return False
        self.seen.add(eid)
        k, ts = ev.get("k"), ev["ts"]
        if stream == "orders":
            row = {"oid": ev["oid"], "k": k, "c": ev["c"], "amount": ev.get("amount")}
            self.left.push(0, k, ts, row, self.w)
            self.inner.push(1, k, ts, row, self.w)
        else:
            row = {"pid": ev["pid"], "k": k}
            self.left.push(1, k, ts, row, self.w)
            self.inner.push(0, k, ts, row, self.w)
        self.c = ts if self.c is None else max(self.c, ts)
        self.w = self.c - OOO if self.w is None else max(self.w, self.c - OOO)
        return True

    def settle(self):
        """The marker a request leaves (W after its last event)."""
        self.left.advance(self.w)
        self.inner.advance(self.w)

    def watermark(self, w):
        self.w = w if self.w is None else max(self.w, w)
        self.settle()

    def matched(self):
        return sorted(((o["oid"], p["pid"] if p else None, o["c"], o["amount"]) for o, p in self.left.out),
                      key=repr)

    def pairs(self):
        got = {}
        for o, p in self.left.out:
            key = (o["oid"], p["pid"] if p else None)
            got[key] = got.get(key, 0) + 1
        return got

    def per_c(self):
        got = {}
        for o, p in self.left.out:
            g = got.setdefault(o["c"], {"c": o["c"], "n": 0, "paid": 0, "total": None})
            g["n"] += 1
            g["paid"] += 1 if p else 0
            if o["amount"] is not None:
                g["total"] = (g["total"] or 0) + o["amount"]
        return got

    def inner_per_k(self):
        got = {}
        for p, _ in self.inner.out:
            got[p["k"]] = got.get(p["k"], 0) + 1
        return got


def post(srv, model, stream, evs):
    st, body = srv.request("POST", "/api/v1/streams/%s/events" % stream, evs)
    assert st == 202 and body["rejected"] == 0, (st, body)
    fresh = sum(1 for ev in evs if model.event(stream, ev))
    assert body["accepted"] == fresh and body["duplicates"] == len(evs) - fresh, (body, fresh)
    model.settle()


def check(srv, model, stream_rows=True):
    if stream_rows:
        got = sorted(((r["oid"], r["pid"], r["c"], r["amount"]) for r in query(srv, "SELECT * FROM matched")),
                     key=repr)
        assert got == model.matched(), ("matched", len(got), len(model.matched()),
                                        set(got) ^ set(model.matched()))
    pairs = {(r["oid"], r["pid"]): r["n"] for r in query(srv, "SELECT * FROM pairs")}
    assert pairs == model.pairs(), ("pairs", set(pairs.items()) ^ set(model.pairs().items()))
    assert all(n == 1 for n in pairs.values()), "a pair emitted twice"
    per_c = {r["c"]: r for r in query(srv, "SELECT * FROM per_c")}
    assert per_c == model.per_c(), ("per_c", per_c, model.per_c())
    inner = {r["k"]: r["n"] for r in query(srv, "SELECT * FROM inner_per_k")}
    assert inner == model.inner_per_k(), ("inner_per_k", inner, model.inner_per_k())
    st, stats = srv.request("GET", "/api/v1/stats")
    assert st == 200, stats
    for name, j in (("matched", model.left), ("pairs", model.left), ("inner_per_k", model.inner)):
        s = stats["joins"][name]
        want = j.buffered() if name != "inner_per_k" else j.buffered()
        assert (s["buffered_left"], s["buffered_right"]) == want, (name, s, want)


class Trace:
    """Seeded traffic of the two streams: clock steps of 0-800 ms, most events
    up to 15 s behind the clock (past the 5 s out-of-orderness), some 20-40 s
    behind (late for the 10 s + 3 s LEFT join), resent ids, NULL keys."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.now = T0
        self.n = 0
        self.sent = []

    def batch(self):
        rng = self.rng
        stream = rng.choice(["orders", "pays"])
        evs = []
        for _ in range(rng.randrange(1, 9)):
            self.now += rng.randrange(0, 800)
            old = [e for s, e in self.sent[-40:] if s == stream]
            if old and rng.random() < 0.08:
                evs.append(dict(rng.choice(old)))
                continue
            self.n += 1
            lag = rng.randrange(20_000, 40_000) if rng.random() < 0.05 else rng.randrange(0, 15_000)
            ev = {"ts": self.now - lag}
            k = rng.choice(["k%d" % i for i in range(8)] + [None])
            if k is not None:
                ev["k"] = k
            if stream == "orders":
                ev.update(oid="o%d" % self.n, c=rng.choice(["red", "blue", "green"]),
                          amount=rng.choice([None, rng.randrange(1, 100)]))
                if ev["amount"] is None:
                    del ev["amount"]
            else:
                ev["pid"] = "p%d" % self.n
            evs.append(ev)
            self.sent.append((stream, ev))
        return stream, evs


def start(args, root):
    return Server(ARGS + args, data_dir=root).start()


def run_trace(shards, seed, kill=False, snapshot=False, restart_shards=None):
    root = tempfile.mkdtemp(prefix="clickflow-sqljoin-")
    args = (["--snapshot-interval", "300ms"] if snapshot else []) + ["--shards", str(shards)]
    srv = start(args, root)
    model = Model()
    trace = Trace(seed)

    def traffic(n):
        for _ in range(n):
            stream, evs = trace.batch()
            post(srv, model, stream, evs)
    try:
        sql(srv, ";\n".join(ALL))
        traffic(120)
        check(srv, model)
        assert len(model.left.out) > 50 and any(p is None for _, p in model.left.out), model.left.out[:5]
        assert model.left.late > 0 and model.inner.out, "trace has no late event or no INNER pair"
        if snapshot:
            wait_for_new_snapshot(root, snapshots(root))
            traffic(20)
        if kill:
            srv.stop(signal.SIGKILL)
            srv = start(["--shards", str(restart_shards or shards)], root)
            # Derived rows kept for reads are rebuilt by a log replay; a
            # snapshot does not hold them, the views' state it does.
            check(srv, model, stream_rows=not snapshot)
            traffic(60)
            check(srv, model, stream_rows=not snapshot)
    finally:
        srv.stop()


def test_trace_one_shard():
    run_trace(1, 31)


def test_trace_four_shards():
    run_trace(4, 32)


def test_trace_four_shards_across_kill():
    run_trace(4, 33, kill=True)


def test_trace_from_snapshot_with_other_shard_count():
    run_trace(4, 34, kill=True, snapshot=True, restart_shards=2)


def rows(srv):
    return sorted(((r["oid"], r["pid"]) for r in query(srv, "SELECT * FROM matched")), key=repr)


def test_boundaries():
    for shards in ("1", "4"):
        with Server(ARGS + ["--shards", shards]) as srv:
            sql(srv, ";".join([ORDERS, PAYS, MATCHED]))
            model = Model()

            def send(stream, evs):
                post(srv, model, stream, evs)

            def mark(w):
                st, _ = srv.request("POST", "/api/v1/watermark", {"watermark": w})
                assert st == 200
                model.watermark(w)
            t = T0
            # |dt| = d joins, d + 1 does not (both orders of arrival).
            send("orders", [{"oid": "a", "k": "ka", "c": "x", "ts": t},
                            {"oid": "b", "k": "kb", "c": "x", "ts": t}])
            send("pays", [{"pid": "pa", "k": "ka", "ts": t + D}, {"pid": "pb", "k": "kb", "ts": t + D + 1}])
            send("pays", [{"pid": "pc", "k": "kc", "ts": t + D}])
            send("orders", [{"oid": "c", "k": "kc", "c": "x", "ts": t}])
            got = rows(srv)
            assert ("a", "pa") in got and ("c", "pc") in got, got
            assert not any(o == "b" or p == "pb" for o, p in got), got
            # A partner just before and just after its buffer is dropped
            # (W >= ROWTIME + d + grace): order e at t2, payments at t2 + d.
            t2 = t + 100_000
            send("orders", [{"oid": "e", "k": "ke", "c": "x", "ts": t2},
                            {"oid": "f", "k": "kf", "c": "x", "ts": t2}])
            mark(t2 + D + GRACE - 1)
            send("pays", [{"pid": "pe", "k": "ke", "ts": t2 + D}])
            assert ("e", "pe") in rows(srv)
            mark(t2 + D + GRACE)
            send("pays", [{"pid": "pf", "k": "kf", "ts": t2 + D}])
            got = rows(srv)
            assert ("f", "pf") not in got and ("f", None) in got, got
            # LEFT: the NULL row exactly at W = ROWTIME + d, once.
            t3 = t2 + 100_000
            send("orders", [{"oid": "g", "k": "kg", "c": "x", "ts": t3}])
            mark(t3 + D - 1)
            assert ("g", None) not in rows(srv)
            mark(t3 + D)
            assert rows(srv).count(("g", None)) == 1
            mark(t3 + D + 1)
            assert rows(srv).count(("g", None)) == 1
            # ... and a partner within grace still pairs with it.
            send("pays", [{"pid": "pg", "k": "kg", "ts": t3 + 1}])
            assert ("g", "pg") in rows(srv)
            assert rows(srv) == sorted(((o["oid"], p["pid"] if p else None) for o, p in model.left.out),
                                       key=repr)


def test_bad_input_applies_nothing():
    with Server(ARGS) as srv:
        sql(srv, ";".join([ORDERS, PAYS, MATCHED]))
        t = T0
        st, body = srv.request("POST", "/api/v1/streams/pays/events", [
            {"k": "k1", "ts": t},                       # no pid (NOT NULL, the event id)
            {"pid": 7, "k": "k1", "ts": t},             # key of the wrong type
            {"pid": "p2", "k": 12, "ts": t},            # join key of the wrong type
            {"pid": "p3", "k": "k1", "ts": t}])         # fine
        assert st == 202 and body["accepted"] == 1 and body["rejected"] == 3, body
        reasons = {e["index"]: e["error"] for e in body["errors"]}
        assert "pid" in reasons[0] and "pid" in reasons[1] and "k" in reasons[2], reasons
        st, body = srv.request("POST", "/api/v1/streams/orders/events",
                               [{"oid": "o1", "k": "k1", "c": "x", "ts": t}])
        assert st == 202 and body["accepted"] == 1, body
        assert rows(srv) == [("o1", "p3")]
        st, body = srv.request("POST", "/api/v1/streams/refunds/events", [{"oid": "o1"}])
        assert st == 404 and "stream" in body["error"], body
        st, body = srv.request("POST", "/api/v1/sql", "CREATE STREAM x AS SELECT * FROM orders o "
                               "JOIN refunds r WITHIN 1 MINUTE ON o.oid = r.oid",
                               {"Content-Type": "application/sql"})
        assert st == 400 and "refunds" in body["error"], body
        st, body = srv.request("POST", "/api/v1/sql", "CREATE STREAM x AS SELECT * FROM orders o "
                               "JOIN pays p WITHIN 1 MINUTE ON o.amount = p.pid",
                               {"Content-Type": "application/sql"})
        assert st == 400 and "type" in body["error"], body
        st, stats = srv.request("GET", "/api/v1/stats")
        assert stats["joins"]["matched"]["buffered_left"] == 1, stats["joins"]
        assert stats["joins"]["matched"]["buffered_right"] == 1, stats["joins"]


def test_clicks_and_derived_sides():
    """A derived stream on one side and `clicks` on the other, both orders of
    arrival, a view over the join fed by both; against IntervalJoin."""
    for shards in ("1", "3"):
        with Server(ARGS + ["--shards", shards]) as srv:
            sql(srv, ";".join([ORDERS, "CREATE STREAM big AS SELECT oid, k AS buyer, amount, ts FROM orders "
                                       "WHERE amount >= 10",
                               "CREATE STREAM bought AS SELECT c.user_id AS user_id, c.page_url AS page_url, "
                               "b.oid AS oid FROM clicks c JOIN big b WITHIN 1 MINUTE ON c.user_id = b.buyer",
                               "CREATE VIEW per_page AS SELECT page_url, COUNT(*) AS n FROM bought "
                               "GROUP BY page_url"]))
            ref = IntervalJoin(60_000, ALLOWED, False)
            rng = random.Random(int(shards))
            w = None
            c = None
            for i in range(200):
                ts = T0 + i * 700 - rng.randrange(0, 20_000)
                user = "u%d" % rng.randrange(6)
                if rng.random() < 0.5:
                    ev = {"oid": "o%d" % i, "k": user, "c": "x", "amount": rng.randrange(20), "ts": ts}
                    st, body = srv.request("POST", "/api/v1/streams/orders/events", [ev])
                    if ev["amount"] >= 10:
                        ref.push(1, user, ts, {"oid": ev["oid"]}, w)
                    else:
                        ref.advance(w)
                else:
                    ev = {"user_id": user, "page_url": "/p%d" % rng.randrange(4), "timestamp": ts}
                    st, body = srv.request("POST", "/api/v1/events", [ev])
                    ref.push(0, user, ts, {"user_id": user, "page_url": ev["page_url"]}, w)
                assert st == 202 and body["accepted"] == 1, body
                c = ts if c is None else max(c, ts)
                w = c - OOO if w is None else max(w, c - OOO)
                ref.advance(w)
            got = sorted((r["user_id"], r["page_url"], r["oid"]) for r in query(srv, "SELECT * FROM bought"))
            want = sorted((cl["user_id"], cl["page_url"], o["oid"]) for cl, o in ref.out)
            assert got == want and len(want) > 20, (len(got), len(want))
            per_page = {r["page_url"]: r["n"] for r in query(srv, "SELECT * FROM per_page")}
            want_pp = {}
            for cl, _ in ref.out:
                want_pp[cl["page_url"]] = want_pp.get(cl["page_url"], 0) + 1
            assert per_page == want_pp, (per_page, want_pp)


def test_explain_stats_metrics():
    with Server(ARGS + ["--shards", "2"]) as srv:
        sql(srv, ";".join([ORDERS, PAYS, MATCHED]))
        body = sql(srv, "EXPLAIN SELECT o.oid, p.pid " + LEFT_ON)
        plan = body["results"][0]["plan"]
        assert "LEFT stream-stream join with stream pays within 10000 ms on o.k = p.k" in plan["text"], plan
        assert "until W >= ROWTIME + 10000 ms + grace (3000 ms)" in plan["text"], plan["text"]
        assert plan["json"]["join"]["buffers"]["grace_ms"] == 3000, plan["json"]
        assert plan["placement"]["key"] == "o.k", plan["placement"]
        post_ = [{"oid": "o%d" % i, "k": "k%d" % (i % 3), "c": "x", "ts": T0 + i} for i in range(5)]
        st, body = srv.request("POST", "/api/v1/streams/orders/events", post_)
        assert st == 202 and body["accepted"] == 5
        st, stats = srv.request("GET", "/api/v1/stats")
        j = stats["joins"]["matched"]
        assert j["buffered_left"] == 5 and j["buffered_right"] == 0 and j["copies"] == 2, j
        assert j["buffered_bytes"] > 0 and j["keys"] == 3, j
        st, hdrs, text = srv.raw_request("GET", "/metrics")
        text = text.decode()
        assert 'clickflow_join_buffered_events{join="matched",side="left"} 5' in text, text
        assert re.search(r'clickflow_join_buffered_bytes\{join="matched"\} [1-9]', text), text
        # Past every buffer: memory is given back.
        st, _ = srv.request("POST", "/api/v1/watermark", {"watermark": T0 + D + GRACE + 10})
        st, stats = srv.request("GET", "/api/v1/stats")
        j = stats["joins"]["matched"]
        assert j["buffered_events"] == 0 and j["left_unmatched"] == 5, j


def test_long_and_quoted_join_names_in_stats_and_metrics():
    """Join names are unbounded quoted identifiers: one of 400 bytes was
    left out of stats and /metrics with every join after it, and one of
    250 quotes (escaped to 500 bytes) cut its sample line short, running
    it into the next line and breaking the whole scrape."""
    quotes, accents = '"' * 250, "\u00e9" * 200
    with Server(ARGS + ["--shards", "2"]) as srv:
        sql(srv, ";".join([ORDERS, PAYS]))
        for name in (quotes, accents, "after"):
            sql(srv, 'CREATE STREAM "%s" AS SELECT o.oid AS oid %s' % (name.replace('"', '""'), LEFT_ON))
        st, body = srv.request("POST", "/api/v1/streams/orders/events",
                               [{"oid": "o1", "k": "k", "ts": T0}])
        assert st == 202 and body["accepted"] == 1, body
        st, stats = srv.request("GET", "/api/v1/stats")
        assert st == 200 and {quotes, accents, "after"} <= set(stats["joins"]), list(stats["joins"])
        assert stats["joins"][accents]["buffered_left"] == 1, stats["joins"][accents]
        st, _, text = srv.raw_request("GET", "/metrics")
        text = text.decode()
        sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\[\\"n])*",?)*\})? \S+$')
        for line in text.splitlines():
            assert line.startswith("# ") or sample.match(line), line[:200]
        label = quotes.replace('"', '\\"')
        for name in (label, accents, "after"):
            assert 'clickflow_join_buffered_events{join="%s",side="right"} 0\n' % name in text, name[:20]
            assert 'clickflow_join_buffered_events{join="%s",side="left"} 1\n' % name in text, name[:20]


# -- docs/SQL.md: the examples, run as written ----------------------------------------

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "SQL.md")


def doc_block(title):
    """The ```sh block under the heading `title` of docs/SQL.md."""
    text = open(DOCS, encoding="utf-8").read()
    at = text.index(title)
    m = re.search(r"```sh\n(.*?)```", text[at:], re.S)
    return m.group(1)


def doc_commands(block):
    """Each curl command of a block: (method, path, body or None, expected
    JSON from the '# {...}' comment after it, or None)."""
    cmds = []
    joined = re.sub(r"\\\n", " ", block)
    lines = joined.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("curl"):
            # a double-quoted body may span lines
            while line.count('"') % 2:
                i += 1
                line += "\n" + lines[i]
            argv = shlex.split(line.split(" #")[0] if not line.count('"') else line)
            method, url, data = "GET", None, None
            it = iter(argv[1:])
            for a in it:
                if a == "-X":
                    method = next(it)
                elif a in ("-d", "--data-binary"):
                    data = next(it)
                    method = "POST" if method == "GET" else method
                elif a == "-H":
                    next(it)
                elif not a.startswith("-"):
                    url = a
            expect = None
            if i + 1 < len(lines) and lines[i + 1].startswith("# {"):
                expect = lines[i + 1][2:].split("   ")[0]
            path = url[url.index("/"):]
            cmds.append((method, path, data, expect))
        i += 1
    return cmds


def run_doc(srv, title):
    import json
    answers = []
    for method, path, data, expect in doc_commands(doc_block(title)):
        headers = {"Content-Type": "application/sql"} if path.endswith("/sql") else \
            {"Content-Type": "application/json"}
        st, body = srv.request(method, path, data, headers)
        assert st in (200, 202), (path, st, body)
        if isinstance(body, dict) and "accepted" in body:
            assert body["rejected"] == 0, body
        if expect:
            want = json.loads(expect)
            if "items" in want:
                key = lambda r: json.dumps(r, sort_keys=True)
                assert sorted(body["items"], key=key) == sorted(want["items"], key=key), (path, body, want)
            else:
                assert body == want, (path, body, want)
        answers.append((path, body))
    return answers


def test_docs_examples():
    for shards in ("1", "4"):
        with Server(["--idle-timeout", "0", "--shards", shards]) as srv:
            answers = run_doc(srv, "### Orders with payments")
            assert sum(1 for p, _ in answers if "query" in p) >= 2, answers
        with Server(["--shards", shards]) as srv:
            run_doc(srv, "### Tables and a stream-table join: clicks per plan")


if __name__ == "__main__":
    run_tests([test_boundaries, test_bad_input_applies_nothing, test_clicks_and_derived_sides,
               test_explain_stats_metrics, test_long_and_quoted_join_names_in_stats_and_metrics,
               test_trace_one_shard, test_trace_four_shards, test_trace_four_shards_across_kill,
               test_trace_from_snapshot_with_other_shard_count, test_docs_examples])
