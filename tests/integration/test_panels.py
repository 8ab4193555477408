"""The dashboard panels (SPEC 15): built-in SQL views over the enriched
clicks columns (panel_referrers, panel_utm_sources, panel_browsers,
panel_devices, panel_countries; server/builtin_panels.c). Their rows, read
with pull queries, equal a count made here in Python over the events posted
(bots left out, NULL dimensions as "Direct" / "(none)"), for 1 and 4
shards, across kill -9 with and without a snapshot. They are built in: listed
with "builtin": true, not droppable, not counted by --max-queries.

Countries come from the test MMDB (mmdb_writer.py) by client address: the
events are sent from different loopback addresses (127.0.0.1, .2, .3)."""
import http.client
import json
import os
import random
import shutil
import signal
import tempfile

import mmdb_writer
from harness import Server, run_tests

BASE = 1767225600000  # 2026-01-01T00:00:00Z
RULES = "/usr/share/uap-core/regexes.yaml"

# User agent -> (browser, device) as uap-core classifies them (the same
# strings test_enrichment.py checks one by one); None: a bot.
UAS = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36": ("Chrome", "desktop"),
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1": ("Mobile Safari", "mobile"),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": None,
    "": ("(none)", "(none)"),
}
REFERRERS = [None, "https://news.example/story?id=1", "https://Search.Example:8443/q",
             "https://<img src=x onerror=alert(1)>.example/"]
SOURCES = [None, "newsletter", "twitter"]
# Client address -> country in the test database; .3 is unknown.
ADDRS = {"127.0.0.1": "NZ", "127.0.0.2": "DE", "127.0.0.3": "(none)"}
PANELS = {
    "panel_referrers": "referrer",
    "panel_utm_sources": "utm_source",
    "panel_browsers": "browser",
    "panel_devices": "device",
    "panel_countries": "country",
}


def ref_host(ref):
    """referrer_host as the server derives it (lower-cased host, no port)."""
    if ref is None:
        return "Direct"
    return {"https://news.example/story?id=1": "news.example",
            "https://Search.Example:8443/q": "search.example"}.get(ref)


def make_events(n, seed, first=0):
    rnd = random.Random(seed)
    out = []
    for i in range(first, first + n):
        ua = rnd.choice(list(UAS))
        ref = rnd.choice(REFERRERS)
        src = rnd.choice(SOURCES)
        url = "https://shop.example/p/%d" % rnd.randrange(3) + ("?utm_source=%s" % src if src else "")
        ev = {"user_id": "u%d" % rnd.randrange(20), "page_url": url, "timestamp": BASE + i,
              "event_id": "e%d" % i}
        if ref:
            ev["referrer"] = ref
        out.append((rnd.choice(list(ADDRS)), ua, ev))
    return out


def post_from(srv, addr, ua, events):
    """POST /api/v1/events from the loopback address addr (the country)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30,
                                      source_address=(addr, 0))
    try:
        conn.request("POST", "/api/v1/events", body=json.dumps(events).encode(),
                     headers={"Content-Type": "application/json", "User-Agent": ua})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 202 and body["rejected"] == 0, (resp.status, body)
        return body
    finally:
        conn.close()


def post_all(srv, sent):
    # One request per (address, user agent) group keeps it quick.
    groups = {}
    for addr, ua, ev in sent:
        groups.setdefault((addr, ua), []).append(ev)
    for (addr, ua), evs in groups.items():
        post_from(srv, addr, ua, evs)


def expected(sent):
    """{panel: {dimension value: (count, distinct users)}} over the humans;
    a referrer whose host ref_host() does not know is left out (check())."""
    counts, users = {p: {} for p in PANELS}, {p: {} for p in PANELS}
    for addr, ua, ev in sent:
        kind = UAS[ua]
        if kind is None:
            continue  # bots stay out of the built-in views
        url = ev["page_url"]
        dims = {"panel_referrers": ref_host(ev.get("referrer")),
                "panel_utm_sources": url.split("utm_source=")[1] if "utm_source=" in url else "(none)",
                "panel_browsers": kind[0], "panel_devices": kind[1], "panel_countries": ADDRS[addr]}
        for p, v in dims.items():
            if v is not None:
                counts[p][v] = counts[p].get(v, 0) + 1
                users[p].setdefault(v, set()).add(ev["user_id"])
    return {p: {v: (c, len(users[p][v])) for v, c in rows.items()} for p, rows in counts.items()}


def pull(srv, view):
    status, body = srv.request("POST", "/api/v1/query", "SELECT * FROM %s" % view,
                               {"Content-Type": "application/sql"})
    assert status == 200, (view, status, body)
    col = PANELS[view]
    return {it[col]: (it["count"], it["visitors"]) for it in body["items"]}


def check(srv, sent):
    want = expected(sent)
    for view in PANELS:
        got = pull(srv, view)
        if view == "panel_referrers":
            # The XSS-looking referrer's host is whatever the URL parser made
            # of it (or NULL): every other row must match exactly, and the
            # rest must add up to the events that carried it.
            odd = {k: v for k, v in got.items() if k not in want[view]}
            n_odd = sum(1 for _, ua, ev in sent if UAS[ua] is not None and
                        ev.get("referrer") and ref_host(ev["referrer"]) is None)
            assert sum(c for c, _ in odd.values()) == n_odd, (odd, n_odd)
            got = {k: v for k, v in got.items() if k in want[view]}
        assert got == want[view], (view, got, want[view])


def geoip_db(tmp):
    db = os.path.join(tmp, "country.mmdb")
    mmdb_writer.write_country_db(db, {"127.0.0.1/32": "NZ", "127.0.0.2/32": "DE"})
    return db


def test_panels_equal_a_python_count():
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = geoip_db(tmp)
        for shards in (1, 4):
            with Server(["--idle-timeout", "0", "--shards", str(shards), "--geoip", db]) as srv:
                for view in PANELS:
                    assert pull(srv, view) == {}, view
                sent = make_events(300, seed=shards)
                post_all(srv, sent)
                check(srv, sent)
                # A retried event is not counted twice.
                post_all(srv, sent[:10])
                check(srv, sent)


def test_panels_survive_kill9_and_snapshots():
    if not os.path.exists(RULES):
        print("skip: no uap-core rules")
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = geoip_db(tmp)
        data = tempfile.mkdtemp(prefix="clickflow-panels-", dir=tmp)
        args = ["--idle-timeout", "0", "--shards", "4", "--geoip", db]
        srv = Server(args, data_dir=data)
        srv.start()
        try:
            sent = make_events(200, seed=7)
            post_all(srv, sent)
            check(srv, sent)
            srv.stop(signal.SIGKILL)
            srv.start()             # the log alone
            check(srv, sent)
            srv.stop(signal.SIGKILL)
            # A snapshot cut between two batches, then kill -9: state from
            # the snapshot, the rest from the log.
            srv.args = args + ["--snapshot-interval", "1s"]
            srv.start()
            mark = len(srv.read_log())
            more = make_events(150, seed=8, first=1000)
            post_all(srv, more[:75])
            while "snapshot at LSN" not in srv.read_log()[mark:]:
                srv.request("GET", "/healthz")  # waits on the server's own log line
            post_all(srv, more[75:])
            srv.stop(signal.SIGKILL)
            srv.args = args
            srv.start()
            check(srv, sent + more)
            # And under another shard count.
            srv.stop()
            srv.args = ["--idle-timeout", "0", "--shards", "1", "--geoip", db]
            srv.start()
            check(srv, sent + more)
        finally:
            srv.stop()


# A data directory written by d77dcb6 with --shards 2 (hash key and the
# shutdown snapshot, shard parts of version 4): the panels' groups where the
# owner hash before the per-view placement put them, every NULL group on one
# shard. Its 120 events are plain_events(0, 120).
OLD_PLACEMENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                             "panels-v4-2shards")


def plain_events(first, n):
    """Events without user agent, GeoIP or (mostly) referrer and UTM: the
    panels' NULL groups take most of them, as direct visits do."""
    out = []
    for i in range(first, first + n):
        ev = {"user_id": "u%d" % (i % 7), "timestamp": BASE + i, "event_id": "o%d" % i,
              "page_url": "https://shop.example/p/%d" % (i % 3) + ("?utm_source=news" if i % 5 == 0 else "")}
        if i % 4 == 0:
            ev["referrer"] = "https://news.example/story"
        out.append(ev)
    return out


def plain_expected(events):
    """{panel: {value: count}} for plain_events (no user agent: "(none)")."""
    want = {p: {} for p in PANELS}
    for ev in events:
        url = ev["page_url"]
        dims = {"panel_referrers": "news.example" if "referrer" in ev else "Direct",
                "panel_utm_sources": url.split("utm_source=")[1] if "utm_source=" in url else "(none)",
                "panel_browsers": "(none)", "panel_devices": "(none)", "panel_countries": "(none)"}
        for p, v in dims.items():
            want[p][v] = want[p].get(v, 0) + 1
    return want


def check_plain(srv, events):
    """Each panel's rows count every event once, and each group is held by
    one shard (the groups summed over the shards equal the rows)."""
    want = plain_expected(events)
    _, views = srv.request("GET", "/api/v1/views")
    groups = {v["name"]: v.get("groups") for v in views["items"]}
    for view in PANELS:
        got = {k: c for k, (c, _) in pull(srv, view).items()}
        assert got == want[view], (view, got, want[view])
        assert groups[view] == len(want[view]), (view, groups[view], want[view])


def test_panels_placed_per_view_across_restarts_and_rescales():
    """Issue 15: each view places its groups by a seed of its own, so the
    panels' NULL groups do not all load one shard (test_sql_route checks
    where they go). A snapshot of the old placement (version 4 parts) is
    re-placed on load, so a group the new placement puts on the other shard
    is not split in two by the events after it; the state stays exact
    across a restart, a rescale 2 -> 3 and back to 2."""
    root = tempfile.mkdtemp(prefix="clickflow-placed-")
    shutil.copytree(OLD_PLACEMENT, os.path.join(root, "data"))
    args = ["--idle-timeout", "0", "--shards", "2"]
    srv = Server(args, data_dir=root)
    srv.start()
    try:
        sent = plain_events(0, 120)
        check_plain(srv, sent)
        more = plain_events(120, 80)
        srv.request("POST", "/api/v1/events", more)
        sent += more
        check_plain(srv, sent)
        for shards in ("2", "3", "2"):
            srv.stop()              # a shutdown snapshot of the new placement
            srv.args = ["--idle-timeout", "0", "--shards", shards]
            srv.start()
            check_plain(srv, sent)
            more = plain_events(len(sent), 40)
            status, body = srv.request("POST", "/api/v1/events", more)
            assert status == 202 and body["rejected"] == 0, (status, body)
            sent += more
            check_plain(srv, sent)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_panels_are_builtin():
    with Server(["--idle-timeout", "0", "--max-queries", "1"]) as srv:
        status, body = srv.request("GET", "/api/v1/views")
        assert status == 200
        views = {v["name"]: v for v in body["items"]}
        for view in PANELS:
            assert views[view]["builtin"] is True, views[view]
            assert "FROM clicks" in views[view]["sql"]
        status, body = srv.request("POST", "/api/v1/sql", "DROP VIEW panel_browsers")
        assert status == 400 and "built in" in body["error"], body
        # --max-queries counts only the user's views.
        status, body = srv.request("POST", "/api/v1/sql",
                                   "CREATE VIEW mine AS SELECT page_url, COUNT(*) AS n FROM clicks GROUP BY page_url")
        assert status == 200, body
        status, body = srv.request("POST", "/api/v1/sql",
                                   "CREATE VIEW two AS SELECT page_url, COUNT(*) AS n FROM clicks GROUP BY page_url")
        assert status == 400 and "--max-queries" in body["error"], body
        _, body = srv.request("GET", "/api/v1/views")
        assert [v["builtin"] for v in body["items"] if v["name"] == "mine"] == [False]
        status, text = srv.request("GET", "/healthz")
        assert status == 200
    # --print-builtin-sql prints them.
    import subprocess
    out = subprocess.run([os.environ.get("CLICKFLOW_BIN", "build/server/clickflow"), "--print-builtin-sql"],
                         capture_output=True, text=True, check=True).stdout
    for view in PANELS:
        assert "CREATE VIEW %s AS" % view in out, out


def test_panels_off():
    """--panels off: no panel views (and no SQL readers of clicks, so no
    broadcast of events to every shard); user_traits is still there."""
    with Server(["--idle-timeout", "0", "--shards", "2", "--panels", "off"]) as srv:
        _, body = srv.request("GET", "/api/v1/views")
        assert not [v for v in body["items"] if v["name"].startswith("panel_")], body
        status, body = srv.request("POST", "/api/v1/query", "SELECT * FROM panel_browsers",
                                   {"Content-Type": "application/sql"})
        assert status == 400, (status, body)
        _, tables = srv.request("GET", "/api/v1/tables")
        assert [t["name"] for t in tables["items"]] == ["user_traits"], tables
        assert "panels=off" in srv.read_log()


if __name__ == "__main__":
    run_tests([test_panels_equal_a_python_count, test_panels_survive_kill9_and_snapshots,
               test_panels_placed_per_view_across_restarts_and_rescales,
               test_panels_are_builtin, test_panels_off])
